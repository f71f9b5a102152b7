//! A hostile receiver against the real sender engine, over the loopback link: after a
//! correct handshake the test plays the receiver by hand and says what a correct one never
//! would. The send must end with a clear error in its report (never a panic or a hang),
//! and the files it could not finish are reported `Unfinished`.
//!
//! (Bogus accepts, such as a ring too small or zero sizes, never reach the engine: the
//! handshake's `check_reply` refuses them; `protocol/tests/handshake.rs` covers each. The
//! same cases and these, plus rings the sender may not write and a disconnect mid-file, run
//! over RDMA against `raw_receiver` (feature `internals`) in
//! `tests/tests/softroce/hostile_receiver.rs`.)

use super::loopback::pair;
use super::send::{run, FileOutcome, Progress, SendReport, SendSetup, SyncOptions};
use super::work::Work;
use super::{RecvCompletion, RecvLink};
use crate::fs::tree::Walk;
use crate::handoff::Stop;
use crate::SendOptions;
use rdmaft_protocol::wire::{Control, FileAnswer};
use rdmaft_protocol::{Changes, DigestKind, CTRL_MSG_MAX};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs a send of one 20,000-byte file against a receiver that answers each write with
/// `reply(n_writes_seen)` (message bytes to SEND, if any).
fn against(reply: impl FnMut(u32) -> Option<Vec<u8>> + Send + 'static) -> SendReport {
    against_with(None, reply)
}

/// As [`against`], the send with `sync`.
fn against_with(
    sync: Option<SyncOptions>,
    mut reply: impl FnMut(u32) -> Option<Vec<u8>> + Send + 'static,
) -> SendReport {
    let dir = std::env::temp_dir().join(format!(
        "rdmaft-hostile-receiver-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("f");
    std::fs::write(&file, vec![7u8; 20_000]).unwrap();
    let options = SendOptions {
        chunk_size: 4096,
        window: 4,
        idle_timeout: Duration::from_secs(5),
        sync,
        ..SendOptions::default()
    };
    let mut params = options.params();
    params.max_open_files = 4;
    params.ctrl_depth = rdmaft_protocol::min_ctrl_depth(4);
    let p = pair(&params, &params, None, None, None).unwrap();
    let mut link = p.receiver;
    let peer = std::thread::spawn(move || {
        let (mut writes, mut sent) = (0u32, 0u64);
        let mut c = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !link.is_down() && Instant::now() < deadline {
            c.clear();
            if link.poll(&mut c).is_err() {
                break;
            }
            for done in &c {
                if let RecvCompletion::Write { .. } = done {
                    writes += 1;
                    if let Some(bytes) = reply(writes) {
                        let _ = link.post_message(sent, &bytes);
                        sent += 1;
                    }
                }
            }
            let _ = link.wait(Duration::from_millis(10));
        }
        link.close();
    });
    let progress = Arc::new(Progress::default());
    let work = Arc::new(Work::new(
        Walk::new(vec![file]),
        None,
        Arc::clone(&progress),
        None,
    ));
    let setup = SendSetup {
        work: Arc::clone(&work),
        lane: 0,
        digest: DigestKind::Xxh3_128,
        direct: false,
        idle_timeout: Duration::from_secs(5),
        progress,
        stop: Arc::new(Stop::new()),
        sync,
        links: false,
    };
    let slots = p.slots.split();
    let report = work.report(vec![run(
        p.sender,
        p.sender_neg,
        slots,
        setup,
        Instant::now(),
    )]);
    peer.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    report
}

fn encode(m: Control<'_>) -> Vec<u8> {
    let mut b = vec![0u8; CTRL_MSG_MAX];
    let n = m.encode(0, &mut b).unwrap();
    b.truncate(n);
    b
}

fn accept() -> Vec<u8> {
    encode(Control::FileAnswer {
        file_id: 1,
        answer: FileAnswer::Accept { offset: 0 },
    })
}

fn assert_failed_with(report: &SendReport, text: &str) {
    let error = report.error.as_deref().unwrap_or("");
    assert!(error.contains(text), "{text:?} not in {report:?}");
    assert_eq!(report.counts.sent, 0, "{report:?}");
    assert!(
        !report.failures.is_empty()
            && report
                .failures
                .iter()
                .all(|f| f.outcome == FileOutcome::Unfinished),
        "{report:?}"
    );
}

#[test]
fn credit_beyond_what_was_sent_fails_the_send() {
    let report = against(|n| match n {
        1 => Some(accept()),
        2 => Some(encode(Control::Credit { consumed: 1000 })),
        _ => None,
    });
    assert_failed_with(&report, "credit");
}

#[test]
fn a_result_for_an_unknown_file_fails_the_send() {
    let report = against(|n| match n {
        1 => Some(encode(Control::FileResult {
            file_id: 99,
            status: rdmaft_protocol::FileStatus::OK,
        })),
        _ => None,
    });
    assert_failed_with(&report, "unknown file 99");
}

#[test]
fn a_resume_offset_past_the_file_fails_the_send() {
    let report = against(|n| match n {
        1 => Some(encode(Control::FileAnswer {
            file_id: 1,
            answer: FileAnswer::Accept { offset: 1 << 20 },
        })),
        _ => None,
    });
    assert_failed_with(&report, "resume offset");
}

#[test]
fn garbage_from_the_receiver_fails_the_send() {
    let report = against(|n| (n == 1).then(|| vec![0xee; 40]));
    assert_failed_with(&report, "violated");
}

#[test]
fn a_receiver_that_goes_silent_is_timed_out() {
    let started = Instant::now();
    let report = against(|_| None);
    assert_failed_with(&report, "idle timeout");
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn an_in_sync_answer_to_an_offer_that_did_not_ask_fails_the_send() {
    let report = against(|n| {
        (n == 1).then(|| {
            encode(Control::FileAnswer {
                file_id: 1,
                answer: FileAnswer::InSync(Changes::empty()),
            })
        })
    });
    assert_failed_with(&report, "does not fit");
}

/// A receiver that lies that it has the file only keeps the sender's own file from it:
/// the report says up to date, never sent.
#[test]
fn a_lying_in_sync_answer_only_skips_the_file() {
    let report = against_with(Some(SyncOptions::default()), |n| match n {
        1 => Some(encode(Control::FileAnswer {
            file_id: 1,
            answer: FileAnswer::InSync(Changes::empty()),
        })),
        2 => Some(encode(Control::Goodbye)),
        _ => None,
    });
    assert_eq!(report.error, None, "{report:?}");
    assert_eq!((report.counts.sent, report.counts.up_to_date), (0, 1));
    assert_eq!(report.bytes, 0);
}
