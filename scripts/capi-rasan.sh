#!/usr/bin/env bash
# Runs inside the Soft-RoCE VM (make capi-rasan): the C API's lifecycle and leak programs
# against a librdmaft built with Rust's AddressSanitizer (target/capi-rasan), so a use
# after free or a leak inside the library itself is reported, not only in the C program.
# Fails on any sanitizer report, a failed scenario or a missing verdict.
set -euo pipefail
bin=target/capi-rasan/bin
addr=${RDMAFT_ADDR:?run inside tests/softroce/run}
work=$(mktemp -d "${RDMAFT_OUT:-/tmp}/capi-rasan.XXXX")
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0

check() { # NAME LOG VERDICT: exit status already in $rc
    local name=$1 log=$2 verdict=$3
    if [ "$rc" -ne 0 ] || grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:|FAIL:' "$log" \
        || ! grep -qF "$verdict" "$log"; then
        echo "capi-rasan: $name FAILED (exit $rc):" >&2
        cat "$log" >&2
        status=1
    else
        echo "capi-rasan: $name ok ($verdict)"
    fi
}

mkdir -p "$work/lifecycle"
rc=0; timeout 600 "$bin/lifecycle" "$addr" 15420 "$work/lifecycle" > "$work/lifecycle.log" 2>&1 || rc=$?
check lifecycle "$work/lifecycle.log" "lifecycle: ok (0 failures)"

mkdir -p "$work/leak/dest"
head -c 20000 /dev/urandom > "$work/leak/f.bin"
rc=0; timeout 600 "$bin/leakcheck" "$addr" 15430 "$work/leak/f.bin" "$work/leak/dest" 100 \
    > "$work/leakcheck.log" 2>&1 || rc=$?
check leakcheck "$work/leakcheck.log" "leakcheck: 100 rounds, 100 files received"

rm -rf "$work"
exit $status
