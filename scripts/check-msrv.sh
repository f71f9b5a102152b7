#!/usr/bin/env bash
# Check the declared rust-version of the publishable crates (rdmaft-protocol, rdmaft): build
# them, with their tests and benches, with that toolchain. The workspace's Cargo.lock follows
# the newest releases (some need a newer compiler), so the check resolves its own lock file
# in a scratch copy, as a user on that toolchain would (cargo's MSRV-aware resolver), then
# runs `cargo check --all-targets` there.
set -euo pipefail
cd "$(dirname "$0")/.."

msrv=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml)
[ -n "$msrv" ] || { echo "check-msrv: no rust-version in Cargo.toml" >&2; exit 1; }
rustup toolchain list | grep -q "^$msrv" || rustup toolchain install "$msrv" --profile minimal

scratch=target/msrv
rm -rf "$scratch"
mkdir -p "$scratch"
cp -r protocol driver "$scratch"/
rm -rf "$scratch"/{protocol,driver}/target
# The workspace manifest, with only the two crates as members.
sed 's/^members = .*/members = ["protocol", "driver"]/; /^exclude = /d' Cargo.toml > "$scratch/Cargo.toml"
cd "$scratch"
cargo +stable generate-lockfile --quiet --config 'resolver.incompatible-rust-versions="fallback"'
# Recent blake3 releases need a newer compiler than their manifests declare.
cargo +stable update --quiet -p blake3 --precise 1.8.2
CARGO_TARGET_DIR=target cargo +"$msrv" check --quiet --all-targets
echo "check-msrv: rdmaft-protocol and rdmaft build with rust $msrv"
