# rdmaft: `make demo` and `make test` (as root on Debian 12; they install
# what is missing via scripts/install-deps.sh).

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

FUZZ_SECONDS ?= 30
SOFTROCE_RUN := tests/softroce/run

.PHONY: deps test spec publishable miri verify tsan capi-rasan loom fuzz mutants mutants-driver mutants-capi mutants-engine mutants-roles mutants-delta capi install bench softroce-test demo

deps:
	@scripts/install-deps.sh

test: deps
	cargo fmt --all -- --check
	$(MAKE) spec
	@# The workspace with the Soft-RoCE tests (a superset of the plain run; it includes the
	@# fuzz harnesses, fuzz/harness), then the protocol's optional features.
	cargo clippy --workspace --all-targets --features rdmaft-tests/softroce,rdmaft/capi -- -D warnings
	cargo clippy -p rdmaft-protocol --all-features --all-targets -- -D warnings
	@# The protocol crate must build without std/alloc (no_std).
	cargo build -p rdmaft-protocol --no-default-features
	cargo test --workspace --features rdmaft/capi
	$(MAKE) publishable
	$(MAKE) miri
	$(MAKE) loom
	$(MAKE) fuzz
	$(MAKE) softroce-test

# PROTOCOL.md's requirements traced to the code and tests that cite them (every one by both,
# no citation of an unknown one, no section changed since its citations were reviewed);
# the checker's own self-test first. Prints spec_rules=N traced=N.
spec:
	python3 scripts/spec-check.py --self-test
	python3 scripts/spec-check.py

# The two library crates as crates.io would take them: documentation without warnings,
# `cargo package` (which builds the packaged sources alone), and the declared rust-version.
publishable:
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p rdmaft-protocol -p rdmaft -p rdmaft-cli \
	    --features rdmaft/capi
	cargo package -p rdmaft-protocol -p rdmaft --allow-dirty
	scripts/check-msrv.sh

# The protocol crate's tests under Miri (undefined behaviour, leaks, out-of-bounds in the
# crate and its zerocopy wire structs): the quick ones here, in `make test` (about a minute);
# `make verify` runs all of them, the lockstep model and the simulated pair too (their long
# loops trimmed under cfg(miri)), which takes far longer, then the sanitizer runs below
# (ThreadSanitizer on the engine, the C programs against an ASan-built library).
MIRI_QUICK := --lib --test wire --test sender --test receiver --test credits --test handshake

miri:
	cargo +nightly miri test -p rdmaft-protocol $(MIRI_QUICK)

verify:
	cargo +nightly miri test -p rdmaft-protocol
	$(MAKE) tsan
	$(MAKE) capi-rasan

# The driver's unit tests and the engine over the loopback link (driver/tests: loopback,
# sync) under ThreadSanitizer, std rebuilt instrumented (-Zbuild-std) in a target directory
# of its own. The build takes minutes (std and every dependency instrumented), hence in
# `make verify`; a data race reported fails the run (halt_on_error).
SAN_TARGET := x86_64-unknown-linux-gnu
tsan:
	RUSTFLAGS="-Zsanitizer=thread" CARGO_TARGET_DIR=target/tsan TSAN_OPTIONS=halt_on_error=1 \
	    cargo +nightly test -Zbuild-std --target $(SAN_TARGET) -p rdmaft --lib --test loopback --test sync

# The C API's lifecycle and leak programs against a librdmaft built with Rust's
# AddressSanitizer (the C programs with gcc's ASan + UBSan, whose runtime serves both): an
# uninstrumented library hides its own use-after-free and leaks from the program's ASan.
# They run in the Soft-RoCE VM (scripts/capi-rasan.sh). Output in target/capi-rasan.
RASAN := target/capi-rasan
capi-rasan:
	RUSTFLAGS="-Zsanitizer=address" CARGO_TARGET_DIR=target/asan cargo +nightly rustc -Zbuild-std \
	    --target $(SAN_TARGET) --release -p rdmaft --features capi --lib --crate-type cdylib
	mkdir -p $(RASAN)/lib $(RASAN)/bin
	cp target/asan/$(SAN_TARGET)/release/librdmaft.so $(RASAN)/lib/
	for p in lifecycle leakcheck; do \
	    cc $(CAPI_CFLAGS) -fsanitize=address,undefined -fno-sanitize-recover=all \
	        -fno-omit-frame-pointer examples/c/$$p.c -L$(RASAN)/lib -lrdmaft \
	        -Wl,-rpath,'$$ORIGIN/../lib' -o $(RASAN)/bin/$$p; \
	done
	$(SOFTROCE_RUN) scripts/capi-rasan.sh

# Model-check the driver's concurrent structures with loom (every `loom_tests` module: the
# engine's hand-off core and its I/O-thread hand-off, the loopback link's waits with the
# engines' loop, the permits, the lanes' shared work queue, the receiver's transfer groups
# and connection registry, the send handle's wait, cancel and drop, the C API contexts'
# lifecycle, hence the capi feature): every interleaving within two preemptions, release
# mode, its own target directory (the cfg changes every dependency's build).
loom:
	RUSTFLAGS="--cfg rdmaft_loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
	    cargo test --release -p rdmaft --features capi --lib loom_tests

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

# The C ABI (driver/src/capi, driver/include): librdmaft.so and librdmaft.a from the rdmaft
# crate, and the C examples built against them with -Wall -Werror (leakcheck also with
# AddressSanitizer, whose LeakSanitizer reports leaks at exit; lifecycle twice, with
# ASan+UBSan and with TSan). Output in target/capi.
CAPI := target/capi
CAPI_CFLAGS := -std=gnu11 -Wall -Wextra -Werror -O2 -g -Idriver/include

capi:
	cargo rustc --release -p rdmaft --features capi --lib --crate-type cdylib,staticlib
	mkdir -p $(CAPI)/lib $(CAPI)/bin
	cp target/release/librdmaft.so target/release/librdmaft.a $(CAPI)/lib/
	for p in client server; do \
	    cc $(CAPI_CFLAGS) examples/c/$$p.c -L$(CAPI)/lib -lrdmaft \
	        -Wl,-rpath,'$$ORIGIN/../lib' -o $(CAPI)/bin/$$p; \
	done
	@# The static library too: a program linked with it needs only the system libraries.
	cc $(CAPI_CFLAGS) examples/c/client.c $(CAPI)/lib/librdmaft.a \
	    -lrdmacm -libverbs -lpthread -ldl -lm -o $(CAPI)/bin/client-static
	cc $(CAPI_CFLAGS) -fsanitize=address examples/c/leakcheck.c -L$(CAPI)/lib -lrdmaft \
	    -Wl,-rpath,'$$ORIGIN/../lib' -o $(CAPI)/bin/leakcheck
	@# The context rules (stop during wait, from callbacks, twice) under the sanitizers:
	@# AddressSanitizer + UndefinedBehaviorSanitizer, and ThreadSanitizer.
	cc $(CAPI_CFLAGS) -fsanitize=address,undefined -fno-sanitize-recover=all \
	    -fno-omit-frame-pointer examples/c/lifecycle.c -L$(CAPI)/lib -lrdmaft \
	    -Wl,-rpath,'$$ORIGIN/../lib' -o $(CAPI)/bin/lifecycle-asan
	cc $(CAPI_CFLAGS) -fsanitize=thread examples/c/lifecycle.c -L$(CAPI)/lib -lrdmaft \
	    -Wl,-rpath,'$$ORIGIN/../lib' -o $(CAPI)/bin/lifecycle-tsan

# Installs the rdmaft command (bin/rdmaft, its manual pages rdmaft(1), rdmaft-send(1),
# rdmaft-recv(1), and bash/zsh/fish completions, generated from its option definitions),
# the C library, its headers and a pkg-config file (rdmaft.pc) under PREFIX.
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
install: capi
	cargo build --release -p rdmaft-cli
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 \
	    $(DESTDIR)$(PREFIX)/share/bash-completion/completions \
	    $(DESTDIR)$(PREFIX)/share/zsh/site-functions $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	install -m 0755 target/release/rdmaft $(DESTDIR)$(PREFIX)/bin/
	rm -rf target/docs && target/release/rdmaft docs --man target/docs/man --completions target/docs/completions >/dev/null
	install -m 0644 target/docs/man/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 0644 target/docs/completions/rdmaft.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/rdmaft
	install -m 0644 target/docs/completions/_rdmaft $(DESTDIR)$(PREFIX)/share/zsh/site-functions/
	install -m 0644 target/docs/completions/rdmaft.fish $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 0755 $(CAPI)/lib/librdmaft.so $(DESTDIR)$(LIBDIR)/
	install -m 0644 $(CAPI)/lib/librdmaft.a $(DESTDIR)$(LIBDIR)/
	install -m 0644 driver/include/rdmaft.h driver/include/rdmaft_send.h \
	    driver/include/rdmaft_recv.h $(DESTDIR)$(PREFIX)/include/
	sed -e 's|@PREFIX@|$(PREFIX)|; s|@LIBDIR@|$(LIBDIR)|; s|@VERSION@|$(shell cargo pkgid -p rdmaft | sed 's/.*[#@]//')|' \
	    driver/rdmaft.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/rdmaft.pc
	@# The receiver as a service: the unit (ExecStart at the installed binary) and an
	@# example config for /etc/rdmaft/recv.toml.
	install -d $(DESTDIR)$(PREFIX)/lib/systemd/system $(DESTDIR)$(PREFIX)/share/doc/rdmaft
	sed -e 's|@BINDIR@|$(PREFIX)/bin|' cli/service/rdmaft-recv.service \
	    > $(DESTDIR)$(PREFIX)/lib/systemd/system/rdmaft-recv.service
	install -m 0644 cli/service/recv.toml $(DESTDIR)$(PREFIX)/share/doc/rdmaft/recv.toml

# Mutation testing of the whole protocol crate (not part of `make test`: it rebuilds once per
# mutant). The fuzz harnesses' tests count too (--test-package). Results in mutants.out/;
# the survivors we judged equivalent are listed in protocol/MUTANTS.md.
mutants:
	@command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked
	cargo mutants --package rdmaft-protocol \
	    --test-package rdmaft-protocol --test-package rdmaft-fuzz-harness $(MUTANTS_ARGS)

# Mutation testing of the driver code that runs without RDMA (not part of `make test`): the
# file layer (driver/src/fs) and the parsing of addresses and port ranges (api/subnet.rs,
# api/ports.rs), against the driver's unit tests and its loopback and sync tests (the
# engine over the loopback link). Results in target/mutants-driver/mutants.out; the survivors, each
# explained, in driver/MUTANTS.md. MUTANTS_DRIVER_ARGS adds options (say `--file ...`).
MUTANTS_DRIVER_FILES := $(foreach f,compare exclude shard link perms prune split stale temp tree dest,\
    --file driver/src/fs/$(f).rs) --file driver/src/api/subnet.rs --file driver/src/api/ports.rs
mutants-driver:
	@command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked
	cargo mutants --package rdmaft --features capi $(MUTANTS_DRIVER_FILES) -o target/mutants-driver \
	    $(MUTANTS_DRIVER_ARGS) -- --lib --test loopback --test sync --test spec_entries

# Mutation testing of the C API's argument handling, statuses and contexts (driver/src/capi)
# and the defaults both sides share (api/defaults.rs), against the driver's unit tests (the
# C API's run with a stand-in job; the C programs themselves run in the VM). Results in
# target/mutants-capi/mutants.out; the survivors in driver/MUTANTS.md.
MUTANTS_CAPI_FILES := $(foreach f,callback handle mod recv send,--file driver/src/capi/$(f).rs) \
    --file driver/src/api/defaults.rs
mutants-capi:
	@command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked
	cargo mutants --package rdmaft --features capi $(MUTANTS_CAPI_FILES) -o target/mutants-capi \
	    $(MUTANTS_DRIVER_ARGS) -- --lib

# Mutation testing of the engine's shared parts, over the loopback link: the lanes' work
# queue, the round loop and the engine/I-O-thread hand-off (the roles' own files are
# mutants-roles), with the unit, loopback and sync tests; the loom models' own code is left
# out. Results in target/mutants-engine.
MUTANTS_ENGINE_FILES := $(foreach f,work round io_thread,--file driver/src/engine/$(f).rs)
mutants-engine:
	@command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked
	cargo mutants --package rdmaft --features capi $(MUTANTS_ENGINE_FILES) -o target/mutants-engine \
	    --exclude-re loom_tests $(MUTANTS_DRIVER_ARGS) -- --lib --test loopback --test sync --test spec_entries

# The same over the roles' own engine files (sender, receiver) and the loopback link that
# stands in for the NIC in the host tests: about 490 mutants, 80 minutes or more here.
# Results in target/mutants-roles; the survivors in driver/MUTANTS.md.
MUTANTS_ROLES_FILES := $(foreach f,send recv loopback,--file driver/src/engine/$(f).rs)
mutants-roles:
	@command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked
	cargo mutants --package rdmaft --features capi $(MUTANTS_ROLES_FILES) -o target/mutants-roles \
	    --exclude-re loom_tests $(MUTANTS_DRIVER_ARGS) -- --lib --test loopback --test sync --test spec_entries

# The driver's mutation score on today's code without a full run of each (hours here): the
# lines changed since each full run recorded in driver/mutants-runs.json, and the mutants
# those runs missed, each re-run; scripts/mutants-compose.py counts the rest from the
# records. About 40 minutes here. Results in target/mutants-delta.
MUTANTS_DELTA_FILES := $(MUTANTS_DRIVER_FILES) $(MUTANTS_CAPI_FILES) $(MUTANTS_ENGINE_FILES) \
    $(MUTANTS_ROLES_FILES)
MUTANTS_DELTA_RUN := --package rdmaft --features capi $(MUTANTS_DELTA_FILES) --exclude-re loom_tests
MUTANTS_DELTA_TESTS := -- --lib --test loopback --test sync --test spec_entries
mutants-delta:
	@command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked
	python3 scripts/mutants-compose.py plan driver/mutants-runs.json
	-cargo mutants $(MUTANTS_DELTA_RUN) --in-diff target/mutants-delta/changes.diff \
	    -o target/mutants-delta/in-diff $(MUTANTS_DELTA_TESTS)
	-python3 scripts/mutants-compose.py rerun $(MUTANTS_DELTA_RUN) \
	    -o target/mutants-delta/rerun $(MUTANTS_DELTA_TESTS)
	MUTANTS_SURVIVORS=1 python3 scripts/mutants-compose.py compose driver/mutants-runs.json \
	    target/mutants-delta/in-diff/mutants.out/outcomes.json \
	    target/mutants-delta/rerun/mutants.out/outcomes.json

# Build the Soft-RoCE test binary on the host, run it inside the VM (the whole suite gets
# 25 minutes: about 10 on an idle 2-core host, more when it is shared)
# (tests/softroce/run: QEMU + Debian kernel with rxe0 at 10.77.0.1). The plain
# build comes first so compile errors are readable; the JSON pass only looks
# up the binary's path. It runs from tests/, as `cargo test` would run it.
SOFTROCE_JQ := select(.reason == "compiler-artifact" and .target.name == "softroce" and (.target.kind | index("test")) and .executable != null) | .executable

softroce-test: capi
	cargo build -p rdmaft-examples -p rdmaft-cli
	cargo test -p rdmaft-tests --features softroce --no-run
	@bin=$$(cargo test -p rdmaft-tests --features softroce --no-run --message-format=json \
	    | jq -r '$(SOFTROCE_JQ)' | tail -n1); \
	[ -n "$$bin" ] || { echo "softroce-test: error: no test binary named softroce" >&2; exit 1; }; \
	echo "=================================================================="; \
	echo "  Soft-RoCE tests: $${bin#$(CURDIR)/}"; \
	echo "  run INSIDE a QEMU VM (rxe0 at 10.77.0.1), not on this host"; \
	echo "=================================================================="; \
	RDMAFT_VM_TIMEOUT=$${RDMAFT_VM_TIMEOUT:-1500} \
	    $(SOFTROCE_RUN) sh -c 'cd tests && exec "$$0" "$$@"' "$$bin" --test-threads=1 --nocapture

# Benchmarks (not part of `make test`): the protocol's per-chunk cost (criterion) and its
# lockstep round-trip model, the engine's CPU cost over the loopback link against dd, then,
# in one VM boot, ib_write_bw against rdmaft (bulk, tree, plain and 4 ms RTT, a chunk x
# window sweep). The last line printed is the ratios line. Method and results: BENCHMARKS.md.
BENCH_LOGS := target/bench-logs

bench: deps
	mkdir -p $(BENCH_LOGS)
	cargo bench -p rdmaft-protocol --bench per_chunk -- --noplot | tee $(BENCH_LOGS)/per_chunk.log
	cargo bench -p rdmaft-protocol --bench lockstep | tee $(BENCH_LOGS)/lockstep.log
	cargo bench -p rdmaft --bench loopback | tee $(BENCH_LOGS)/loopback.log
	cargo bench -p rdmaft --bench small_files | tee $(BENCH_LOGS)/small_files.log
	cargo build --release -p rdmaft-examples -p rdmaft-cli
	$(SOFTROCE_RUN) scripts/bench-vm.sh | tee $(BENCH_LOGS)/vm.log
	@# The last line: every ratio the benches printed (host and VM), in one run.
	@grep -hoE '\b([a-z_]*ratio[a-z_]*|small_file_messages|noop_sync_rtt)=[0-9.a-z+]*' $(BENCH_LOGS)/*.log | tr '\n' ' ' | sed 's/ $$/\n/'

# A real transfer of a sample file and a small tree with the send and recv programs, and a
# byte-for-byte comparison: on this host's RDMA device if there is one, else in the VM.
demo: deps
	cargo build --release -p rdmaft-examples -p rdmaft-cli
	@if env=$$(scripts/host-rdma-env.sh 2>/dev/null); then \
	    echo "demo: using this host's RDMA device ($$env)"; \
	    env $$env scripts/demo.sh; \
	else \
	    echo "demo: no usable RDMA device on this host; running inside the Soft-RoCE VM"; \
	    $(SOFTROCE_RUN) scripts/demo.sh; \
	fi
