//! Deterministic simulated transfers: a sender and a receiver wired through the in-memory RC
//! model of `sim`, under many seeded schedules; every byte that lands is compared.

mod sim;

use rdmaft_protocol::{FileRejectReason, FileStatus};
use sim::{file, transfer, Config, Policy, SimFile};

const CHUNK: u32 = 64;

/// Runs `files` under `seeds` schedules and checks every accepted file arrived intact.
fn check(cfg: &Config, files: &[SimFile], seeds: u64) {
    for seed in 0..seeds {
        let out =
            transfer(cfg, files.to_vec(), seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(
            out.sender_closed && out.receiver_closed,
            "seed {seed}: not closed: {out:?}"
        );
        assert_eq!(out.sender_failure, None);
        assert_eq!(out.receiver_failure, None);
        for (i, f) in files.iter().enumerate() {
            let result = out.sender_results.get(&(i as u64)).copied();
            match f.policy {
                Policy::Reject => {
                    assert_eq!(result, Some(Err(FileRejectReason::EXISTS)), "{}", f.name);
                    assert!(!out.published.contains_key(&f.name));
                }
                Policy::Accept | Policy::Resume(_) => {
                    assert_eq!(
                        result,
                        Some(Ok(FileStatus::OK)),
                        "seed {seed} file {}",
                        f.name
                    );
                    assert_eq!(
                        out.published.get(&f.name),
                        Some(&f.data),
                        "seed {seed}: {} differs",
                        f.name
                    );
                }
            }
        }
    }
}

#[test]
fn empty_file() {
    check(
        &Config::new(CHUNK, 4),
        &[file("empty", 0, Policy::Accept)],
        50,
    );
}

#[test]
fn one_byte_file() {
    check(
        &Config::new(CHUNK, 4),
        &[file("one", 1, Policy::Accept)],
        50,
    );
}

#[test]
fn exactly_one_chunk() {
    check(
        &Config::new(CHUNK, 4),
        &[file("chunk", CHUNK as usize, Policy::Accept)],
        50,
    );
}

#[test]
fn many_chunks_window_one() {
    check(
        &Config::new(CHUNK, 1),
        &[file("big", 20 * CHUNK as usize + 3, Policy::Accept)],
        30,
    );
}

#[test]
fn many_chunks_wide_window() {
    check(
        &Config::new(CHUNK, 16),
        &[file("big", 100 * CHUNK as usize + 17, Policy::Accept)],
        30,
    );
}

#[test]
fn many_files_mixed_sizes_and_answers() {
    let files = vec![
        file("a", 0, Policy::Accept),
        file("dir/b", 1, Policy::Accept),
        file("dir/c", 64, Policy::Reject),
        file("d", 65, Policy::Accept),
        file("e", 0, Policy::Reject),
        file("f", 1000, Policy::Resume(130)),
        file("g", 640, Policy::Accept),
        file("h", 3, Policy::Resume(3)),
        file("i", 129, Policy::Accept),
        file("j", 0, Policy::Accept),
    ];
    for window in [1, 2, 3, 8] {
        check(&Config::new(CHUNK, window), &files, 40);
    }
}

#[test]
fn sizes_are_the_minimum_of_both_sides() {
    let mut cfg = Config::new(256, 32);
    cfg.receiver.chunk_size = 128;
    cfg.sender.window = 3;
    let pair = sim::Pair::new(&cfg, vec![]).unwrap();
    assert_eq!(pair.sender.negotiated().chunk_size, 128);
    assert_eq!(pair.sender.negotiated().window, 3);
    // Both sides agree on everything, the control depths and the ring included.
    assert_eq!(pair.receiver.negotiated(), pair.sender.negotiated());
    check(&cfg, &[file("x", 1000, Policy::Accept)], 20);
}

#[test]
fn credits_are_coalesced() {
    let out = transfer(
        &Config::new(CHUNK, 16),
        vec![file("big", 64 * CHUNK as usize, Policy::Accept)],
        7,
    )
    .unwrap();
    assert_eq!(out.chunks, 64);
    // Answer + result + goodbye + credits; credits come at most every window/4 chunks.
    assert!(
        out.ctrl_to_sender <= 3 + 64 / 4 + 1,
        "too many control messages: {}",
        out.ctrl_to_sender
    );
}

#[test]
fn control_credits_hold_with_a_tiny_sender_depth() {
    // Depth 2 at the sender: the receiver may have one ordinary message outstanding.
    let mut cfg = Config::new(CHUNK, 8);
    cfg.sender.ctrl_depth = 2;
    let files: Vec<_> = (0..12)
        .map(|i| file(&format!("f{i}"), i * 40, Policy::Accept))
        .collect();
    check(&cfg, &files, 60);
}

#[test]
fn idle_sender_times_out_the_receiver_not_the_other_way() {
    let mut cfg = Config::new(CHUNK, 4);
    cfg.idle_timeout_ms = Some(5);
    let mut pair = sim::Pair::new(&cfg, vec![file("a", 10, Policy::Accept)]).unwrap();
    // Nothing but time passes: the receiver waits for the sender and gives up.
    for _ in 0..10 {
        pair.step(sim::Step::Tick).unwrap();
    }
    assert!(pair.receiver.is_ended());
    assert!(matches!(
        pair.outcome.receiver_failure,
        Some(rdmaft_protocol::Failure::TimedOut)
    ));
    // The sender owed nothing, so it did not time out by itself.
    assert!(pair.outcome.sender_failure.is_none());
}
