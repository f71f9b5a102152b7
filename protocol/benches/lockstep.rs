//! The protocol's pipelining in the lockstep model (one round = one one-way delay, infinitely
//! fast applications, the real state machines; see `tests/model/mod.rs`).
//!
//! Prints one line:
//! `small_files_rtt=<round trips for 1,000 × 1,000 B> bulk_chunks_per_rtt=<at window 64, the
//! worst legal control depths>`.
//!
//! Run: `cargo bench -p rdmaft-protocol --bench lockstep`.

#[path = "../tests/model/mod.rs"]
mod model;

use model::{round_trips, worst_bulk, Setup};

fn main() {
    let small = round_trips(Setup::new(1 << 20, 64), vec![1000; 1000]);
    let limits = [1, 2, 3, 8, 64, rdmaft_protocol::MAX_OPEN_FILES];
    let bulk = worst_bulk(64, &limits);
    println!("small_files_rtt={small} bulk_chunks_per_rtt={bulk:.1}");
}
