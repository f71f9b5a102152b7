//! Round-trip counts in the lockstep model (`model/mod.rs`): the pipelining targets of the
//! protocol, checked on the real state machines. `cargo bench --bench lockstep` prints them.

mod model;

use model::{round_trips, worst_bulk, Setup};
use rdmaft_protocol::{MAX_OPEN_FILES, MIN_CHUNK_SIZE};

#[test]
fn a_thousand_small_files_take_under_forty_round_trips() {
    let rtts = round_trips(Setup::new(1 << 20, 64), vec![1000; 1000]);
    assert!(rtts <= 40.0, "1,000 × 1,000 B took {rtts} round trips");
}

#[test]
fn no_legal_agreement_costs_bulk_throughput() {
    let limits = [1, 2, 3, 8, 64, MAX_OPEN_FILES];
    for window in [1, 4, 64] {
        let rate = worst_bulk(window, &limits);
        assert!(
            rate >= 0.95 * f64::from(window),
            "window {window}: {rate} chunks per round trip"
        );
    }
}

#[test]
fn the_model_counts_round_trips() {
    // One empty file: header, answer, end, result, goodbye, goodbye: three round trips.
    let rtts = round_trips(Setup::new(MIN_CHUNK_SIZE, 4), vec![0]);
    assert!((2.5..=3.5).contains(&rtts), "{rtts}");
}
