//! Round-trip counts in the lockstep model (`model/mod.rs`): the pipelining targets of the
//! protocol, checked on the real state machines. `cargo bench --bench lockstep` prints them.

mod model;

use model::{
    bulk_chunks_per_rtt, messages_per_file, parts_chunks_per_rtt, parts_round_trips, round_trips,
    worst_bulk, Setup,
};
use rdmaft_protocol::{MAX_OPEN_FILES, MIN_CHUNK_SIZE};

/// The small files of the round-trip targets: 1,000 of 1,000 bytes. Under Miri (which
/// checks the same code for undefined behaviour, a thousand times slower) 100 of them walk
/// the same paths; the targets hold for them too.
const SMALL_FILES: usize = if cfg!(miri) { 100 } else { 1000 };

fn small_files() -> Vec<u64> {
    vec![1000; SMALL_FILES]
}

#[test]
fn a_thousand_small_files_take_under_forty_round_trips() {
    let rtts = round_trips(Setup::new(1 << 20, 64), small_files());
    assert!(
        rtts <= 40.0,
        "{SMALL_FILES} × 1,000 B took {rtts} round trips"
    );
}

#[test]
fn no_legal_agreement_costs_bulk_throughput() {
    // Under Miri the largest table (4,096 open files, a thousand times slower to build and
    // scan there) is left to the plain run.
    let limits: &[u16] = if cfg!(miri) {
        &[1, 2, 3, 8, 64]
    } else {
        &[1, 2, 3, 8, 64, MAX_OPEN_FILES]
    };
    for window in [1, 4, 64] {
        let rate = worst_bulk(window, limits);
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

#[test]
fn parts_keep_the_pipeline_full() {
    // One file sent as parts of 16 chunks at window 64: a header, answer and end per part,
    // yet as many chunks per round trip as one bulk file.
    let setup = Setup::new(MIN_CHUNK_SIZE, 64);
    let parts = parts_chunks_per_rtt(setup, 16);
    let bulk = bulk_chunks_per_rtt(setup);
    assert!(
        parts >= 0.95 * bulk,
        "parts {parts}, bulk {bulk} chunks per round trip"
    );
    // 8 parts of 16 chunks take as long as the same 128 chunks as one file.
    let split = parts_round_trips(setup, 8, 16);
    let whole = round_trips(setup, vec![128 * u64::from(MIN_CHUNK_SIZE)]);
    assert!(
        split <= whole,
        "8 parts: {split} round trips, one file: {whole}"
    );
}

#[test]
// spec-test: [batch.one]
fn batches_cut_the_messages_per_small_file() {
    // Without batches a small file costs a header, a chunk and an end one way and an answer
    // and a result the other (and a share of credits and acks): five or more.
    let setup = Setup::new(1 << 20, 64);
    let files = small_files();
    let (one_s, one_r) = messages_per_file(setup.unbatched(), files.clone());
    assert!(one_s + one_r >= 5.0, "unbatched: {one_s} + {one_r}");
    // With them: the chunk, and the end sharing a write with other ends or headers; the
    // answers and results share SENDs.
    let (s, r) = messages_per_file(setup, files.clone());
    assert!(s <= 2.2 && r <= 0.5, "batched: {s} + {r} messages per file");
    // And no round trip is lost for it.
    let rtts = round_trips(setup, files.clone());
    let unbatched = round_trips(setup.unbatched(), files);
    assert!(
        rtts <= unbatched,
        "{rtts} round trips, {unbatched} unbatched"
    );
}

#[test]
fn a_noop_sync_costs_no_more_round_trips_than_sending() {
    // Each file in sync ends at its answer: no data, no end, no result.
    let setup = Setup::new(1 << 20, 64);
    let send = round_trips(setup, small_files());
    let noop = round_trips(setup.noop_sync(), small_files());
    assert!(
        noop <= send,
        "no-op sync {noop} round trips, sending {send}"
    );
    let (to_receiver, to_sender) = messages_per_file(setup.noop_sync(), small_files());
    let (send_r, send_s) = messages_per_file(setup, small_files());
    assert!(
        to_receiver < send_r && to_sender <= send_s,
        "no-op sync {to_receiver}+{to_sender} messages per file, sending {send_r}+{send_s}"
    );
}
