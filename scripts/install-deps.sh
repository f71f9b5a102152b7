#!/usr/bin/env bash
# Installs what `make test` / `make demo` need on Debian 12 (run as root).
# Idempotent and quiet when everything is already present.
set -euo pipefail

say() { echo "install-deps: $*" >&2; }
die() { echo "install-deps: error: $*" >&2; exit 1; }

[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

# Debian packages: RDMA user space (verbs, rdma_cm, perftest), headers for
# rdma-sys (bindgen needs libclang), and QEMU + a Debian kernel for the
# Soft-RoCE VM (the host kernel may have no RDMA). iputils-ping checks netem;
# busybox-static is virtme-ng's fallback for building the guest's initramfs. gcc builds
# the C examples of the C API; its sanitizer runtimes (AddressSanitizer with LeakSanitizer,
# UndefinedBehaviorSanitizer, ThreadSanitizer: Debian 12's gcc-12 pulls them in through
# libgcc-12-dev) run the leak check and the lifecycle tests. They are named here so that a
# trimmed install that lacks one gets it back. rsync is the oracle of the sync tests (what
# it would still change after `send --sync` must be nothing) and the baseline of the bench.
# man-db (with groff-base) renders the generated manual pages in a test; systemd's
# systemd-analyze verifies the receiver's unit file. python3 runs the specification's
# checker (scripts/spec-check.py).
pkgs=(qemu-system-x86 linux-image-amd64 rdma-core ibverbs-providers ibverbs-utils
      rdmacm-utils perftest libibverbs-dev librdmacm-dev clang libclang-dev
      iproute2 kmod iputils-ping jq busybox-static gcc libc6-dev
      libasan8 libubsan1 libtsan2 rsync man-db groff-base systemd python3)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing packages (${missing[*]}); run this script as root"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# virtme-ng boots the kernel over the host filesystem (tests/softroce/run).
if ! command -v vng >/dev/null; then
    say "installing virtme-ng (pip)"
    if ! command -v pip3 >/dev/null; then
        apt-get install -y -qq --no-install-recommends python3-pip >/dev/null || die "could not install python3-pip"
    fi
    # Debian's system python refuses plain `pip install` (PEP 668).
    pip3 install -q virtme-ng 2>/dev/null || pip3 install -q --break-system-packages virtme-ng
    hash -r
    command -v vng >/dev/null || die "virtme-ng installed but vng is not on PATH"
fi

command -v cargo >/dev/null || die "cargo not found (install Rust with rustup first)"

# rustfmt and clippy run in `make test`.
for c in rustfmt clippy; do
    if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
        say "adding rustup component $c"
        rustup component add "$c" || die "could not add rustup component $c"
    fi
done

# Nightly toolchain: cargo-fuzz needs it (fuzz stage only).
if ! rustup toolchain list | grep -q nightly; then
    say "installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal || die "could not install the nightly toolchain"
fi
# Miri (and the standard library's sources it interprets) for the protocol's tests under it.
if ! rustup +nightly component list --installed 2>/dev/null | grep -q '^miri'; then
    say "adding rustup components miri and rust-src (nightly)"
    rustup +nightly component add miri rust-src || die "could not add miri"
fi

# cargo-fuzz (fuzz stage only).
if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz"
    cargo install -q cargo-fuzz --locked || die "could not install cargo-fuzz"
fi
