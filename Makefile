# rdmaft: `make demo` and `make test` (as root on Debian 12; they install
# what is missing via scripts/install-deps.sh).

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

FUZZ_SECONDS ?= 30
SOFTROCE_RUN := tests/softroce/run

.PHONY: deps test loom fuzz softroce-test demo

deps:
	@scripts/install-deps.sh

test: deps
	cargo fmt --all -- --check
	@# The workspace with the Soft-RoCE tests (a superset of the plain run), then what
	@# --workspace leaves out: the protocol's fuzzing feature and the fuzz crate.
	cargo clippy --workspace --all-targets --features rdmaft-tests/softroce -- -D warnings
	cargo clippy -p rdmaft-protocol --all-features --all-targets -- -D warnings
	cargo clippy --manifest-path fuzz/Cargo.toml --lib --tests -- -D warnings
	@# The protocol crate must build without std/alloc (no_std).
	cargo build -p rdmaft-protocol --no-default-features
	cargo test --workspace
	cargo test --manifest-path fuzz/Cargo.toml --lib
	$(MAKE) loom
	$(MAKE) fuzz
	$(MAKE) softroce-test

# Model-check the engine's concurrent core (driver/src/handoff.rs) with loom: every
# interleaving within two preemptions, release mode, its own target directory (the cfg
# changes every dependency's build).
loom:
	RUSTFLAGS="--cfg rdmaft_loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
	    cargo test --release -p rdmaft --lib handoff::loom_tests

# Build all cargo-fuzz targets, then run each for FUZZ_SECONDS.
# No fuzz/ crate or no targets is an error: the fuzz stage must not pass empty.
# libFuzzer writes new inputs into the first corpus dir, so that is a scratch dir under
# target/ (logs in target/fuzz-logs); the committed seeds (fuzz/seeds/<target>) are only read.
fuzz:
	@[ -f fuzz/Cargo.toml ] || { echo "fuzz: error: fuzz/Cargo.toml missing" >&2; exit 1; }
	cargo +nightly fuzz build
	@targets=$$(cargo +nightly fuzz list); \
	[ -n "$$targets" ] || { echo "fuzz: error: no fuzz targets in fuzz/" >&2; exit 1; }; \
	mkdir -p target/fuzz-logs; \
	for t in $$targets; do \
	    echo "=== fuzz: $$t for $(FUZZ_SECONDS)s (log: target/fuzz-logs/$$t.log) ==="; \
	    mkdir -p "target/fuzz-corpus/$$t"; \
	    if ! cargo +nightly fuzz run "$$t" "target/fuzz-corpus/$$t" "fuzz/seeds/$$t" \
	        -- -max_total_time=$(FUZZ_SECONDS) > "target/fuzz-logs/$$t.log" 2>&1; then \
	        cat "target/fuzz-logs/$$t.log"; \
	        echo "fuzz: error: target $$t failed (crash input under fuzz/artifacts/$$t)" >&2; \
	        exit 1; \
	    fi; \
	    grep -E '^Done [0-9]+ runs' "target/fuzz-logs/$$t.log" || { \
	        cat "target/fuzz-logs/$$t.log"; echo "fuzz: error: $$t did not report its runs" >&2; exit 1; }; \
	done

# Build the Soft-RoCE test binary on the host, run it inside the VM
# (tests/softroce/run: QEMU + Debian kernel with rxe0 at 10.77.0.1). The plain
# build comes first so compile errors are readable; the JSON pass only looks
# up the binary's path. It runs from tests/, as `cargo test` would run it.
SOFTROCE_JQ := select(.reason == "compiler-artifact" and .target.name == "softroce" and (.target.kind | index("test")) and .executable != null) | .executable

softroce-test:
	cargo build -p rdmaft-examples
	cargo test -p rdmaft-tests --features softroce --no-run
	@bin=$$(cargo test -p rdmaft-tests --features softroce --no-run --message-format=json \
	    | jq -r '$(SOFTROCE_JQ)' | tail -n1); \
	[ -n "$$bin" ] || { echo "softroce-test: error: no test binary named softroce" >&2; exit 1; }; \
	echo "=================================================================="; \
	echo "  Soft-RoCE tests: $${bin#$(CURDIR)/}"; \
	echo "  run INSIDE a QEMU VM (rxe0 at 10.77.0.1), not on this host"; \
	echo "=================================================================="; \
	$(SOFTROCE_RUN) sh -c 'cd tests && exec "$$0" "$$@"' "$$bin" --test-threads=1 --nocapture

# A real transfer of a sample file and a small tree with the send and recv programs, and a
# byte-for-byte comparison: on this host's RDMA device if there is one, else in the VM.
demo: deps
	cargo build --release -p rdmaft-examples
	@if env=$$(scripts/host-rdma-env.sh 2>/dev/null); then \
	    echo "demo: using this host's RDMA device ($$env)"; \
	    env $$env scripts/demo.sh; \
	else \
	    echo "demo: no usable RDMA device on this host; running inside the Soft-RoCE VM"; \
	    $(SOFTROCE_RUN) scripts/demo.sh; \
	fi
