#!/usr/bin/env bash
# The demo `make demo` runs where an RDMA device is (on this host, or inside the Soft-RoCE
# VM): a real `recv` + `send` of a sample file and a small tree, then a byte-for-byte
# comparison of what arrived. Expects the release programs in target/release and
# RDMAFT_ADDR set to an IP address of the RDMA device.
set -euo pipefail

addr=${RDMAFT_ADDR:?RDMAFT_ADDR must name an IP address of the RDMA device}
bin=target/release
work=$(mktemp -d "${TMPDIR:-/tmp}/rdmaft-demo.XXXXXX")
trap 'kill "$recv_pid" 2>/dev/null || true; rm -rf "$work"' EXIT

src=$work/src dest=$work/dest
mkdir -p "$src/tree/docs/notes" "$src/tree/empty" "$dest"
head -c $((32 << 20)) /dev/urandom > "$src/sample.bin"
for i in $(seq 1 20); do head -c $((i * 1000)) /dev/urandom > "$src/tree/docs/file$i"; done
echo "hello from rdmaft" > "$src/tree/docs/notes/readme.txt"
: > "$src/tree/docs/empty-file"

echo "demo: sending $src/sample.bin (32 MiB) and $src/tree to $addr over RDMA"
"$bin/recv" --once --listen "$addr:0" --dir "$dest" > "$work/recv.out" 2> "$work/recv.err" &
recv_pid=$!
port=
for _ in $(seq 1 100); do
    port=$(sed -n 's/.*(port \([0-9]*\)).*/\1/p' "$work/recv.err" | head -n1)
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { cat "$work/recv.err" >&2; echo "demo: recv did not start" >&2; exit 1; }

"$bin/send" "$addr:$port" "$src/sample.bin" "$src/tree"
wait "$recv_pid"
cat "$work/recv.out"
if diff -r "$src" "$dest" > /dev/null; then
    echo "demo: OK: every received file is identical to its source ($(find "$dest" -type f | wc -l) files)"
else
    diff -r "$src" "$dest" >&2 || true
    echo "demo: FAILED: the received copies differ" >&2
    exit 1
fi
