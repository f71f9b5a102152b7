#!/usr/bin/env bash
# The Soft-RoCE part of `make bench`, run inside the VM (tests/softroce/run): in one boot,
# ib_write_bw and rdmaft side by side, plain and with a 4 ms round trip, then a small sweep
# of chunk size x window. The tree goes twice, with and without batches (`--no-batch`). Data lives in guest memory (/tmp), never in the shared directory.
# Prints a table, then one line of ratios. Results also go to $RDMAFT_OUT/bench.txt.
set -euo pipefail

addr=${RDMAFT_ADDR:?}
dev=${RDMAFT_DEVICE:?}
bin=target/release
work=$(mktemp -d /tmp/rdmaft-bench.XXXXXX)
out=${RDMAFT_OUT:-$work}/bench.txt
BULK_MIB=${RDMAFT_BENCH_BULK_MIB:-256}
TREE_FILES=${RDMAFT_BENCH_TREE_FILES:-2000}
TREE_KIB=${RDMAFT_BENCH_TREE_KIB:-16}

log() { echo "$*" | tee -a "$out"; }

# Sources: one bulk file and a tree of small files in nested folders.
head -c $((BULK_MIB << 20)) /dev/urandom > "$work/bulk"
mkdir -p "$work/tree"
for i in $(seq 0 $((TREE_FILES - 1))); do
    d="$work/tree/d$((i % 10))/e$((i % 7))"
    mkdir -p "$d"
    head -c $((TREE_KIB << 10)) /dev/urandom > "$d/f$i"
done

# ib_write_bw -R (rdma_cm), 1 MiB messages: MB/s (10^6 bytes).
ib_bw() {
    local port=$((18515 + RANDOM % 1000)) n=$((BULK_MIB / 2))
    ib_write_bw -d "$dev" -R -s 1048576 -n "$n" -p "$port" > "$work/ibs.txt" 2>&1 &
    local srv=$!
    sleep 1
    ib_write_bw -d "$dev" -R -s 1048576 -n "$n" -p "$port" "$addr" > "$work/ibc.txt" 2>&1
    wait "$srv" || true
    # The BW average column is in MB/s (2^20 bytes); convert to 10^6.
    awk '/^ *1048576/ { printf "%.1f\n", $4 * 1.048576; exit }' "$work/ibc.txt"
}

# Starts `recv --once` into $1 with more recv options; sets rpid and port.
start_recv() {
    local dest=$1; shift
    "$bin/recv" --once --listen "$addr:0" --dir "$dest" "$@" > /dev/null 2> "$work/recv.err" &
    rpid=$! port=
    for _ in $(seq 1 100); do
        port=$(sed -n 's/.*(port \([0-9]*\)).*/\1/p' "$work/recv.err" | head -n1)
        [ -n "$port" ] && break
        sleep 0.1
    done
}

# `send OPTIONS... $1` to the receiver start_recv started, its output in $work/send.txt.
# A failed send leaves that receiver waiting for its transfer: it is stopped.
send_to_recv() {
    local path=$1; shift
    "$bin/send" "$@" "$addr:$port" "$path" > "$work/send.txt" 2>&1 \
        || { cat "$work/send.txt" >&2; kill "$rpid" 2>/dev/null || true; }
}

# Seconds from $1 to $2 (nanosecond stamps of `date +%s%N`).
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", (b - a) / 1e9 }'; }

# One rdmaft transfer of $1 (a path) with extra send options; prints MB/s (10^6 bytes).
rdmaft_bw() {
    local path=$1; shift
    local dest=$work/dest
    rm -rf "$dest"; mkdir -p "$dest"
    start_recv "$dest" --buffer-size 4M --window 64
    send_to_recv "$path" "$@"
    wait "$rpid" || true
    sed -n 's/.* in \([0-9.]*\) s, \([0-9.]*\) MB\/s.*/\2/p' "$work/send.txt" | tail -n1
}

# `send OPTIONS... PATH` ($2 on) into $1 (kept between calls) through a fresh
# `recv --once`; prints the send's wall time in seconds, the whole command (connecting
# included). Its summary stays in $work/send.txt.
rdmaft_into() {
    local dest=$1 path=$2; shift 2
    mkdir -p "$dest"
    start_recv "$dest" --preserve-perms
    local t0 t1
    t0=$(date +%s%N)
    send_to_recv "$path" "$@"
    t1=$(date +%s%N)
    wait "$rpid" || true
    seconds "$t0" "$t1"
}

# The bytes the last send moved (its summary's "(N bytes)").
sent_bytes() { sed -n 's/.*(\([0-9]*\) bytes).*/\1/p' "$work/send.txt" | tail -n1; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "nan" }'; }

: > "$out"
log "rdmaft bench: $(date -u +%Y-%m-%dT%H:%MZ), $(uname -r), $(nproc) vCPUs, device $dev"
log "bulk ${BULK_MIB} MiB, tree ${TREE_FILES} x ${TREE_KIB} KiB; MB/s = 10^6 bytes/s"
log ""
printf '%-34s %10s\n' "measurement" "MB/s" | tee -a "$out"

run_set() {
    local tag=$1
    ib=$(ib_bw)
    printf '%-34s %10s\n' "ib_write_bw -R 1 MiB ($tag)" "$ib" | tee -a "$out"
    bulk=$(rdmaft_bw "$work/bulk")
    printf '%-34s %10s\n' "rdmaft bulk, defaults ($tag)" "$bulk" | tee -a "$out"
    wire=$(rdmaft_bw "$work/bulk" --digest none)
    printf '%-34s %10s\n' "rdmaft bulk, no digest ($tag)" "$wire" | tee -a "$out"
    tree=$(rdmaft_bw "$work/tree")
    printf '%-34s %10s\n' "rdmaft tree, defaults ($tag)" "$tree" | tee -a "$out"
    tree_nb=$(rdmaft_bw "$work/tree" --no-batch)
    printf '%-34s %10s\n' "rdmaft tree, --no-batch ($tag)" "$tree_nb" | tee -a "$out"
}

run_set plain
ib_plain=$ib bulk_plain=$bulk wire_plain=$wire tree_plain=$tree tree_nb_plain=$tree_nb

# What the guest's own file system allows the tree: a local `cp -r` of it (no network, no
# digest, one process), in MB/s as the transfers are counted. `tree_cp_ratio` sets the
# tree's transfer against it: the receiver creates, writes and publishes the same files
# on the same two CPUs that also run the sender and the link.
rm -rf "$work/cp-dest"
t0=$(date +%s%N)
cp -r --preserve=mode,timestamps "$work/tree" "$work/cp-dest"
t1=$(date +%s%N)
cp_tree=$(awk -v b=$((TREE_FILES * (TREE_KIB << 10))) -v s="$(seconds "$t0" "$t1")" 'BEGIN { printf "%.1f", b / s / 1e6 }')
rm -rf "$work/cp-dest"
printf '%-34s %10s\n' "cp -r tree, local (plain)" "$cp_tree" | tee -a "$out"

# Sync: the tree is copied once, then a no-op `send --sync` of it against what rsync, which
# must stat both trees too, takes to find nothing to do (`rsync -a --dry-run`, local, in
# the guest); then 10 of its files are rewritten and synced again: only their bytes move.
log ""
sync_dest=$work/sync-dest
rdmaft_into "$sync_dest" "$work/tree" > /dev/null
noop_s=$(rdmaft_into "$sync_dest" "$work/tree" --sync)
t0=$(date +%s%N)
rsync -a --dry-run "$work/tree/" "$sync_dest/tree/"
t1=$(date +%s%N)
rsync_s=$(seconds "$t0" "$t1")
printf '%-34s %10s\n' "send --sync, nothing to do (s)" "$noop_s" | tee -a "$out"
printf '%-34s %10s\n' "rsync -a --dry-run, local (s)" "$rsync_s" | tee -a "$out"
changed=0
for f in $(find "$work/tree" -type f | sort | head -n 10); do
    head -c $((TREE_KIB << 10)) /dev/urandom > "$f"
    changed=$((changed + (TREE_KIB << 10)))
done
rdmaft_into "$sync_dest" "$work/tree" --sync > /dev/null
resync_bytes=$(sent_bytes)
log "send --sync after 10 files changed: ${resync_bytes} bytes moved, ${changed} bytes changed"

modprobe sch_netem
tc qdisc add dev lo root netem delay 2ms
run_set "4 ms RTT"
ib_rtt=$ib bulk_rtt=$bulk wire_rtt=$wire tree_rtt=$tree tree_nb_rtt=$tree_nb
tc qdisc del dev lo root

log ""
log "sweep (bulk, no digest, plain): chunk x window -> MB/s"
for chunk in 64K 256K 1M 4M; do
    for window in 4 16 64; do
        v=$(rdmaft_bw "$work/bulk" --digest none --buffer-size "$chunk" --window "$window")
        printf '  %-6s x %-4s %10s\n' "$chunk" "$window" "$v" | tee -a "$out"
    done
done

log ""
log "ratio_vs_ib_write_bw=$(ratio "$bulk_plain" "$ib_plain") rtt_ratio=$(ratio "$bulk_rtt" "$ib_rtt") tree_ratio=$(ratio "$tree_plain" "$bulk_plain") tree_rtt_ratio=$(ratio "$tree_rtt" "$bulk_rtt") tree_cp_ratio=$(ratio "$tree_plain" "$cp_tree") wire_ratio=$(ratio "$wire_plain" "$ib_plain") wire_rtt_ratio=$(ratio "$wire_rtt" "$ib_rtt") batch_tree_ratio=$(ratio "$tree_plain" "$tree_nb_plain") batch_tree_rtt_ratio=$(ratio "$tree_rtt" "$tree_nb_rtt") resync_ratio=$(ratio "$rsync_s" "$noop_s") resync_bytes_ratio=$(ratio "$resync_bytes" "$changed")"
rm -rf "$work"
