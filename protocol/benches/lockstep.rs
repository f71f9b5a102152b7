//! The protocol's pipelining in the lockstep model (one round = one one-way delay, infinitely
//! fast applications, the real state machines; see `tests/model/mod.rs`).
//!
//! Prints two lines:
//! `small_files_rtt=<round trips for 1,000 × 1,000 B> bulk_chunks_per_rtt=<at window 64, the
//! worst legal control depths>`, then
//! `parts_chunks_per_rtt=<one file as parts of 16 chunks, window 64, default depths>
//! parts_rtt=<8 parts of 16 chunks> whole_rtt=<the same 128 chunks as one file>`, then
//! `small_file_messages=<to the receiver>+<to the sender> unbatched=<the same without
//! BATCH>`: messages per file each way for the 1,000 small files, amortised, then
//! `noop_sync_rtt=<round trips for a sync of the same 1,000 files, all in sync already>
//! small_files_rtt=<sending them, as above>`.
//!
//! Run: `cargo bench -p rdmaft-protocol --bench lockstep`.

#[path = "../tests/model/mod.rs"]
mod model;

use model::{
    messages_per_file, parts_chunks_per_rtt, parts_round_trips, round_trips, worst_bulk, Setup,
};

fn main() {
    let small = round_trips(Setup::new(1 << 20, 64), vec![1000; 1000]);
    let limits = [1, 2, 3, 8, 64, rdmaft_protocol::MAX_OPEN_FILES];
    let bulk = worst_bulk(64, &limits);
    println!("small_files_rtt={small} bulk_chunks_per_rtt={bulk:.1}");
    let setup = Setup::new(rdmaft_protocol::MIN_CHUNK_SIZE, 64);
    let parts = parts_chunks_per_rtt(setup, 16);
    let split = parts_round_trips(setup, 8, 16);
    let whole = round_trips(
        setup,
        vec![128 * u64::from(rdmaft_protocol::MIN_CHUNK_SIZE)],
    );
    println!("parts_chunks_per_rtt={parts:.1} parts_rtt={split} whole_rtt={whole}");
    let small_setup = Setup::new(1 << 20, 64);
    let (s, r) = messages_per_file(small_setup, vec![1000; 1000]);
    let (us, ur) = messages_per_file(small_setup.unbatched(), vec![1000; 1000]);
    println!("small_file_messages={s:.2}+{r:.2} unbatched={us:.2}+{ur:.2}");
    let noop = round_trips(Setup::new(1 << 20, 64).noop_sync(), vec![1000; 1000]);
    println!("noop_sync_rtt={noop} small_files_rtt={small}");
}
