//! The in-memory simulator of `protocol/tests/sim` (included by path) end to end: both
//! machines, the RC connection between them and the applications around them, under a
//! schedule taken from the input.
//!
//! Parameters and files come from the front of the input: windows, open-file limits and
//! control depths on both sides (so every credit limit is hit), sometimes keepalives every
//! few milliseconds (so they compete for control credit), sometimes required digests; up to
//! eight files with names from a small set (so the sender waits on open names), sizes up to
//! a few chunks, and every policy the simulator knows (accept, reject, resume, the sender
//! aborting, the receiver cancelling, directories); half the time both sides offer `LANES`
//! and files may then be parts of 4 or 8 KiB (one or two chunks, the last one short); half
//! the time both offer `BATCH`, and then two steps in three run corked (the simulator's
//! drivers feed inputs without sending until the third). The rest of the input is the
//! schedule:
//! `enabled[byte % len]`, then a fixed PRNG once the bytes run out.
//!
//! Every run must end with both sides closed, no failure, no RNR, no stall, every file's
//! result the one `sim::expected_status` gives, every published byte right, and no more
//! receives in use at the receiver than the protocol provides.

use arbitrary::Unstructured;
use rdmaft_protocol::*;
use std::collections::BTreeMap;

#[path = "../../../protocol/tests/sim/mod.rs"]
pub(crate) mod sim;

/// Names files take: equal names, directory prefixes and near-prefixes.
pub(crate) const NAMES: [&str; 8] = ["a", "b", "a/b", "a/c", "b/a", "c", "a/b/c", "ab"];

/// Steps a run may take before it counts as a livelock.
const MAX_STEPS: usize = 1_000_000;

/// The harness.
pub fn pair(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok((cfg, files)) = setup(&mut u) else {
        return;
    };
    let schedule = u.take_rest();
    let mut p = sim::Pair::new(&cfg, files.clone()).unwrap_or_else(|e| {
        panic!(
            "handshake of valid parameters: {e}; {}",
            describe(&cfg, &files)
        )
    });
    let mut bytes = schedule.iter();
    let mut rng = sim::Rng(0x9e37_79b9_7f4a_7c15);
    let result = p.run(
        |enabled| match bytes.next() {
            Some(&b) => enabled[usize::from(b) % enabled.len()],
            None => rng.pick(enabled),
        },
        MAX_STEPS,
    );
    let why = describe(&cfg, &files);
    if let Err(e) = result {
        panic!("pair run failed: {e} (rnr {:?}); {why}", p.rnr);
    }
    let out = &p.outcome;
    assert_eq!(p.rnr, None, "{why}");
    assert_eq!(out.sender_failure, None, "{why}");
    assert_eq!(out.receiver_failure, None, "{why}");
    assert!(
        out.sender_closed && out.receiver_closed,
        "not closed; {why}"
    );
    let window = cfg.sender.window.min(cfg.receiver.window);
    assert!(
        out.receiver_peak_in_use <= window + u32::from(cfg.receiver.ctrl_depth) + 2,
        "{} receives in use at the receiver; {why}",
        out.receiver_peak_in_use
    );
    // Per name, the content of the last file published under it.
    let mut last_ok: BTreeMap<&str, &[u8]> = BTreeMap::new();
    for (i, f) in files.iter().enumerate() {
        let id = i as u64;
        let result = out.sender_results.get(&id).copied();
        if f.policy.ends_at_answer() {
            assert!(
                out.in_sync.contains_key(&id),
                "{} (file {i}); {why}",
                f.name
            );
            assert_eq!(result, None, "{} (file {i}); {why}", f.name);
            continue;
        }
        match sim::expected_status(f, id, out) {
            None => assert_eq!(
                result,
                Some(Err(FileRejectReason::EXISTS)),
                "{} (file {i}); {why}",
                f.name
            ),
            Some(FileStatus::OK) => {
                assert_eq!(
                    result,
                    Some(Ok(FileStatus::OK)),
                    "{} (file {i}); {why}",
                    f.name
                );
                if f.policy == sim::Policy::Directory {
                    assert!(
                        out.directories.contains(&f.name),
                        "{} not created; {why}",
                        f.name
                    );
                } else {
                    last_ok.insert(&f.name, f.payload());
                }
            }
            Some(status) => {
                assert_eq!(result, Some(Ok(status)), "{} (file {i}); {why}", f.name);
                assert_eq!(
                    out.dropped.get(&id),
                    Some(&status),
                    "{} (file {i}); {why}",
                    f.name
                );
            }
        }
    }
    for name in NAMES {
        let published = out.published.get(name).map(Vec::as_slice);
        assert!(
            published == last_ok.get(name).copied(),
            "{name}: published {:?} bytes, expected {:?}; {why}",
            published.map(<[u8]>::len),
            last_ok.get(name).map(|d| d.len())
        );
    }
}

/// Parameters, then up to eight files, from the front of the input.
pub(crate) fn setup(
    u: &mut Unstructured<'_>,
) -> arbitrary::Result<(sim::Config, Vec<sim::SimFile>)> {
    let mut cfg = sim::Config::new(u.int_in_range(1..=8)?);
    for (p, max_open) in [(&mut cfg.sender, 6), (&mut cfg.receiver, 8)] {
        p.max_open_files = u.int_in_range(1..=max_open)?;
        p.ctrl_depth = min_ctrl_depth(p.max_open_files) + u.int_in_range(0..=4)?;
        if u.ratio(1, 8)? {
            p.keepalive_ms = u.int_in_range(1..=8)?;
        }
    }
    cfg.receiver.window = u.int_in_range(1..=8)?;
    cfg.receiver.require_digest = u.ratio(1, 4)?;
    let lanes = u.ratio(1, 2)?;
    if lanes {
        cfg.sender.features |= Features::LANES;
        cfg.receiver.features |= Features::LANES;
    }
    if u.ratio(1, 2)? {
        cfg = cfg.batched();
    }
    let n: usize = u.int_in_range(0..=8)?;
    let mut files = Vec::with_capacity(n);
    for _ in 0..n {
        let name = NAMES[u.int_in_range(0..=NAMES.len() - 1)?];
        let len: usize = u.int_in_range(0..=3 * sim::CHUNK + 1)?;
        let chunks = len.div_ceil(sim::CHUNK) as u64;
        let (len, policy) = match u.int_in_range(0..=14u8)? {
            14 => (len.clamp(1, 64), sim::Policy::Link),
            13 => (0, sim::Policy::PrunedDir),
            10 => (len, sim::Policy::InSync),
            11 => (len, sim::Policy::SyncChanged),
            12 => (len, sim::Policy::DryRun),
            3 => (len, sim::Policy::Reject),
            4 => (len, sim::Policy::Resume(u.int_in_range(0..=len as u64)?)),
            5 => (len, sim::Policy::SenderAbortAt(u.int_in_range(0..=chunks)?)),
            6 => (
                len,
                sim::Policy::ReceiverCancelAt(u.int_in_range(0..=chunks)?),
            ),
            7 => (0, sim::Policy::Directory),
            _ => (len, sim::Policy::Accept),
        };
        let mut file = sim::file(name, len, policy);
        if lanes && len > 0 && policy != sim::Policy::Link && u.ratio(1, 2)? {
            let shift = MIN_PART_SHIFT + u.int_in_range(0..=1)?;
            let parts = (len as u64).div_ceil(1 << shift);
            file.part = Some(Part {
                shift,
                index: u.int_in_range(0..=parts as u32 - 1)?,
            });
        }
        files.push(file);
    }
    Ok((cfg, files))
}

fn describe(cfg: &sim::Config, files: &[sim::SimFile]) -> String {
    let side = |p: &Params| {
        format!(
            "window {} open {} depth {} keepalive {}",
            p.window, p.max_open_files, p.ctrl_depth, p.keepalive_ms
        )
    };
    format!(
        "sender {}, receiver {} digests required {} features {:?}; files {:?}",
        side(&cfg.sender),
        side(&cfg.receiver),
        cfg.receiver.require_digest,
        cfg.sender.features & cfg.receiver.features,
        files
            .iter()
            .map(|f| (&f.name, f.data.len(), f.policy, f.part))
            .collect::<Vec<_>>()
    )
}
