//! Hostile receivers over a real connection: the real sender (`rdmaft::send`) meets a test
//! peer ([`RawListener`] / [`RawReceiver`]) that answers its connection with a bogus accept,
//! announces memory the sender may not write, or accepts correctly and then says what a
//! correct receiver never would, stays silent, or disconnects mid-file. Each send must end
//! within a bound (never hang, never panic) with an error that names the problem, and no file
//! may be reported verified.

use super::{env, T};
use rdmaft::protocol::wire::{AcceptFlags, Control, FileHeader, HandshakeReply, Imm, RejectRepr};
use rdmaft::protocol::{
    min_ctrl_depth, ErrorCode, Features, FileAnswer, FileStatus, Params, RejectReason, RingInfo,
    RECEIVER_MSG_MAX,
};
use rdmaft::{
    send, AcceptMaterial, Error, FileOutcome, FileReport, RawListener, RawReceiver, RawRequest,
    SendHandle, SendOptions, SendReport,
};
use rdmaft_tests::{random_bytes, scratch};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The sender's idle timeout: short, so a silent receiver is found out quickly.
const IDLE: Duration = Duration::from_secs(3);

/// Every file outcome the sender's `on_file` callback reported, in order.
type Outcomes = Arc<Mutex<Vec<(String, FileOutcome)>>>;

/// Chunks of 4 KiB, a window of 4, four open files, short timeouts; `on_file` records into
/// `outcomes`.
fn options(outcomes: &Outcomes) -> SendOptions {
    let seen = Arc::clone(outcomes);
    SendOptions {
        chunk_size: 4096,
        window: 4,
        max_open_files: 4,
        idle_timeout: IDLE,
        connect_timeout: Duration::from_secs(10),
        on_file: Some(Arc::new(move |f: &FileReport| {
            seen.lock()
                .unwrap()
                .push((f.name.clone(), f.outcome.clone()));
        })),
        ..SendOptions::default()
    }
}

/// What the raw receiver proposes: the same sizes, XXH3 digests and resume.
fn receiver_params() -> Params {
    let mut p = Params::new(Features::DIGEST_XXH3_128 | Features::RESUME, 4096, 4);
    p.max_open_files = 4;
    p.ctrl_depth = min_ctrl_depth(4);
    p
}

/// One source file of `len` bytes in a fresh directory.
fn source(name: &str, len: usize) -> (PathBuf, PathBuf) {
    let dir = scratch(&format!("hostile-receiver-{name}"));
    let file = dir.join("victim");
    std::fs::write(&file, random_bytes(len, len as u64)).unwrap();
    (dir, file)
}

/// Waits for the send to end, failing the test if it has not within `T` (a hang). Meanwhile
/// `raw`'s connection events are served (a disconnect from the sender is answered, as any
/// receiver does), so the sender's close is not left waiting for its confirmation; its
/// completions are left alone (a silent receiver stays silent).
fn finish(handle: SendHandle, mut raw: Option<&mut RawReceiver>) -> Result<SendReport, Error> {
    let started = Instant::now();
    while !handle.is_finished() {
        assert!(started.elapsed() < T, "the send hung for {T:?}");
        if let Some(raw) = raw.as_deref_mut() {
            raw.is_down();
        }
        thread::sleep(Duration::from_millis(20));
    }
    handle.wait()
}

/// The accept bytes: the correct accept, edited.
fn edited(
    m: &AcceptMaterial,
    edit: impl FnOnce(&mut rdmaft::protocol::wire::AcceptRepr),
) -> Vec<u8> {
    let mut a = m.correct();
    edit(&mut a);
    AcceptMaterial::encode(a)
}

/// Starts a send of `file` to `listener` and takes its connection request.
fn start(listener: &RawListener, file: &Path, outcomes: &Outcomes) -> (SendHandle, RawRequest) {
    let handle = send(
        listener.local_addr(),
        vec![file.to_owned()],
        options(outcomes),
    )
    .unwrap();
    let request = listener
        .next_request(T)
        .unwrap()
        .expect("the sender's connection request");
    (handle, request)
}

// ---- the handshake ----

#[test]
fn bogus_accepts_fail_the_handshake_with_their_reason() {
    let env = env();
    let (dir, file) = source("accepts", 10_000);
    let listener = RawListener::bind(SocketAddr::new(env.addr, 0)).unwrap();
    type Reply = Box<dyn Fn(&AcceptMaterial) -> Vec<u8>>;
    let cases: Vec<(&str, Reply, &str)> = vec![
        (
            "wrong magic",
            Box::new(|m| {
                let mut b = edited(m, |_| {});
                b[0] ^= 0xff;
                b
            }),
            "bad magic",
        ),
        (
            "wrong version",
            Box::new(|m| {
                let mut b = edited(m, |_| {});
                b[4..6].copy_from_slice(&9u16.to_be_bytes());
                b
            }),
            "unknown protocol version 9",
        ),
        (
            "empty",
            Box::new(|_| Vec::new()),
            "undecodable handshake reply",
        ),
        (
            "zero chunk size",
            Box::new(|m| edited(m, |a| a.chunk_size = 0)),
            "chunk size",
        ),
        (
            "chunk above the proposal",
            Box::new(|m| edited(m, |a| a.chunk_size = 1 << 20)),
            "chunk size",
        ),
        (
            "zero window",
            Box::new(|m| edited(m, |a| a.window = 0)),
            "window zero or above the proposal",
        ),
        (
            "window above the proposal",
            Box::new(|m| edited(m, |a| a.window = 64)),
            "window zero or above the proposal",
        ),
        (
            "zero open files",
            Box::new(|m| edited(m, |a| a.max_open_files = 0)),
            "open-file limit zero",
        ),
        (
            "zero keepalive",
            Box::new(|m| edited(m, |a| a.keepalive_ms = 0)),
            "keepalive interval zero",
        ),
        (
            "control depth below the floor",
            Box::new(|m| edited(m, |a| a.ctrl_depth = 1)),
            "receiver control depth out of range",
        ),
        (
            "a feature never offered",
            Box::new(|m| edited(m, |a| a.features |= Features::DIGEST_BLAKE3)),
            "features that were not offered",
        ),
        (
            "a key never offered",
            Box::new(|m| edited(m, |a| a.features |= Features::AUTH_PSK)),
            "features that were not offered",
        ),
        (
            "a feature unknown to the sender",
            Box::new(|m| edited(m, |a| a.features |= Features::from_bits_retain(1 << 30))),
            "features that were not offered",
        ),
        (
            "digests required without one",
            Box::new(|m| {
                edited(m, |a| {
                    a.features = Features::RESUME;
                    a.flags = AcceptFlags::DIGEST_REQUIRED;
                })
            }),
            "digests required but none agreed",
        ),
        (
            "reserved flag bits",
            Box::new(|m| {
                let mut b = edited(m, |_| {});
                b[15] |= 0x80; // bit 7 of the flags word (big-endian, at 12..16): reserved
                b
            }),
            "reserved field is not zero",
        ),
        (
            "a ring shorter than agreed",
            Box::new(|m| edited(m, |a| a.ring.len -= 4096)),
            "ring length does not match",
        ),
        (
            "a ring that wraps the address space",
            Box::new(|m| edited(m, |a| a.ring.addr = u64::MAX - 4096)),
            "ring length does not match the parameters, or wraps",
        ),
        (
            "a reject where the accept belongs",
            Box::new(|_| {
                let mut b = vec![0u8; 64];
                let reject = HandshakeReply::Reject(RejectRepr {
                    reason: RejectReason::NOT_ALLOWED,
                    max_version: 2,
                });
                let n = reject.encode(&mut b).unwrap();
                b.truncate(n);
                b
            }),
            "sender's address is not allowed",
        ),
    ];
    for (case, reply, expected) in cases {
        let outcomes = Outcomes::default();
        let (handle, request) = start(&listener, &file, &outcomes);
        let mut raw = request
            .accept(&receiver_params(), None, |m| reply(m), T)
            .unwrap_or_else(|e| panic!("{case}: the connection was not established: {e}"));
        let err = match finish(handle, Some(&mut raw)) {
            Err(e) => e.to_string(),
            Ok(report) => panic!("{case}: the send went ahead: {report:?}"),
        };
        println!("{case}: {err}");
        assert!(err.contains(expected), "{case}: {err}");
        assert!(
            err.contains("handshake") || err.contains("rejected"),
            "{case}: {err}"
        );
        assert!(
            outcomes.lock().unwrap().is_empty(),
            "{case}: no file may be reported: {:?}",
            outcomes.lock().unwrap()
        );
        // The sender closes the connection it refused; nothing was written into the ring.
        assert!(
            raw.wait_down(T),
            "{case}: the sender left the connection up"
        );
        let (writes, _) = raw.writes(Duration::ZERO);
        assert!(writes.is_empty(), "{case}: the sender wrote {writes:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn refusals_name_the_receivers_reason() {
    let env = env();
    let (dir, file) = source("refusals", 10_000);
    let listener = RawListener::bind(SocketAddr::new(env.addr, 0)).unwrap();
    let mut reject = vec![0u8; 64];
    let n = HandshakeReply::Reject(RejectRepr {
        reason: RejectReason::SHUTTING_DOWN,
        max_version: 2,
    })
    .encode(&mut reject)
    .unwrap();
    reject.truncate(n);
    for (case, private_data, expected) in [
        ("an rdmaft reject", reject, "receiver is shutting down"),
        ("garbage", vec![0xee; 40], "refused without an rdmaft reply"),
    ] {
        let outcomes = Outcomes::default();
        let (handle, request) = start(&listener, &file, &outcomes);
        request.reject(&private_data).unwrap();
        let err = match finish(handle, None) {
            Err(e) => e.to_string(),
            Ok(report) => panic!("{case}: the send went ahead: {report:?}"),
        };
        println!("{case}: {err}");
        assert!(err.contains(expected), "{case}: {err}");
        assert!(outcomes.lock().unwrap().is_empty(), "{case}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_request_never_answered_ends_the_connect() {
    let env = env();
    let (dir, file) = source("unanswered", 10_000);
    let listener = RawListener::bind(SocketAddr::new(env.addr, 0)).unwrap();
    let outcomes = Outcomes::default();
    let mut options = options(&outcomes);
    options.connect_timeout = Duration::from_secs(5);
    let handle = send(listener.local_addr(), vec![file.clone()], options).unwrap();
    // Taken, and held unanswered until the sender gives up.
    let request = listener.next_request(T).unwrap().expect("a request");
    let err = match finish(handle, None) {
        Err(e) => e.to_string(),
        Ok(report) => panic!("the send went ahead: {report:?}"),
    };
    println!("unanswered: {err}");
    // The sender's own limit, or the CM's (whichever comes first), named as such.
    assert!(
        err.contains("timed out after 5s waiting for the receiver's answer")
            || err.contains("the receiver did not answer"),
        "{err}"
    );
    assert!(outcomes.lock().unwrap().is_empty());
    drop(request);
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- memory the sender may not write ----

/// Accepts with `reply` over a ring of `ring_len` bytes and asserts that the sender's first
/// write (the file's header, a control message) fails with a remote access error, reported as
/// the receiver's fault, the file unfinished.
fn assert_write_refused(
    case: &str,
    ring_len: impl FnOnce(&Params) -> Option<u64>,
    reply: impl FnOnce(&AcceptMaterial) -> Vec<u8>,
) {
    let env = env();
    let (dir, file) = source(case, 10_000);
    let listener = RawListener::bind(SocketAddr::new(env.addr, 0)).unwrap();
    let outcomes = Outcomes::default();
    let (handle, request) = start(&listener, &file, &outcomes);
    let params = receiver_params();
    let mut raw = request
        .accept(&params, ring_len(&params), reply, T)
        .unwrap();
    let report = finish(handle, Some(&mut raw)).expect("the handshake itself succeeds");
    let error = report.error.clone().unwrap_or_default();
    println!("{case}: {error}");
    assert!(
        error.contains("an RDMA write of a control message failed: remote access error"),
        "{case}: {report:?}"
    );
    assert!(
        error.contains("its ring's address, length or key is wrong"),
        "{case}: {report:?}"
    );
    assert_unfinished(case, &report, &outcomes);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// No file was reported verified: the one file ended `Unfinished`, told once through
/// `on_file`.
fn assert_unfinished(case: &str, report: &SendReport, outcomes: &Outcomes) {
    let outcomes = outcomes.lock().unwrap();
    assert_eq!(
        *outcomes,
        [("victim".to_owned(), FileOutcome::Unfinished)],
        "{case}: {report:?}"
    );
    assert!(!report.all_ok(), "{case}");
}

#[test]
fn a_ring_smaller_than_agreed_refuses_the_first_write() {
    // The accept announces the agreed length; only the data slots are registered, so the
    // first control message (the file's header, past the data slots) lands outside.
    assert_write_refused(
        "small-ring",
        |p| Some(u64::from(p.chunk_size) * u64::from(p.window)),
        |m| AcceptMaterial::encode(m.correct()),
    );
}

#[test]
fn an_rkey_for_other_memory_refuses_the_first_write() {
    assert_write_refused(
        "wrong-rkey",
        |_| None,
        |m| {
            edited(m, |a| {
                a.ring.rkey = m.private.rkey;
            })
        },
    );
}

#[test]
fn a_ring_address_outside_the_registered_memory_refuses_the_first_write() {
    assert_write_refused(
        "outside",
        |_| None,
        |m| {
            edited(m, |a| {
                a.ring = RingInfo {
                    addr: m.ring.addr + m.ring.len,
                    ..a.ring
                };
            })
        },
    );
}

// ---- a correct handshake, then a receiver that misbehaves ----

/// Accepts correctly, waits for the sender's file header (returning its file id), then runs
/// `script`; returns the send's report and the outcomes reported.
fn after_header(
    name: &str,
    len: usize,
    script: impl FnOnce(&mut RawReceiver, u64),
) -> (SendReport, Outcomes, Duration) {
    let env = env();
    let (dir, file) = source(name, len);
    let listener = RawListener::bind(SocketAddr::new(env.addr, 0)).unwrap();
    let outcomes = Outcomes::default();
    let started = Instant::now();
    let (handle, request) = start(&listener, &file, &outcomes);
    let mut raw = request
        .accept(
            &receiver_params(),
            None,
            |m| AcceptMaterial::encode(m.correct()),
            T,
        )
        .unwrap();
    let id = next_header(&mut raw);
    script(&mut raw, id);
    let report = finish(handle, Some(&mut raw)).expect("the handshake itself succeeds");
    let elapsed = started.elapsed();
    drop(raw);
    std::fs::remove_dir_all(&dir).unwrap();
    (report, outcomes, elapsed)
}

/// The file id of the sender's next FileHeader.
fn next_header(raw: &mut RawReceiver) -> u64 {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        let (writes, link) = raw.writes(Duration::from_millis(200));
        link.unwrap();
        for w in writes {
            if let Ok((_, Control::FileHeader(FileHeader { file_id, .. }))) =
                Control::decode(&w.bytes)
            {
                return file_id;
            }
        }
    }
    panic!("no file header from the sender");
}

/// A receiver message, its `ack` counting every control message seen so far.
fn message(raw: &RawReceiver, msg: Control<'_>) -> Vec<u8> {
    let mut b = vec![0u8; RECEIVER_MSG_MAX];
    let n = msg.encode(raw.controls_seen(), &mut b).unwrap();
    b.truncate(n);
    b
}

fn accept(raw: &mut RawReceiver, file_id: u64) {
    let m = message(
        raw,
        Control::FileAnswer {
            file_id,
            answer: FileAnswer::Accept { offset: 0 },
        },
    );
    raw.send(&m).unwrap();
}

/// The send failed with `text` in its error, and the file is unfinished.
fn assert_failed(case: &str, report: &SendReport, outcomes: &Outcomes, text: &str) {
    let error = report.error.as_deref().unwrap_or("");
    println!("{case}: {error}");
    assert!(error.contains(text), "{case}: {text:?} not in {report:?}");
    assert_unfinished(case, report, outcomes);
}

#[test]
fn credit_for_chunks_never_sent_fails_the_send() {
    let (report, outcomes, _) = after_header("credit", 10_000, |raw, id| {
        accept(raw, id);
        let m = message(raw, Control::Credit { consumed: 1000 });
        raw.send(&m).unwrap();
    });
    assert_failed(
        "credit",
        &report,
        &outcomes,
        "peer violated the protocol: credit went backwards or beyond the data sent",
    );
}

#[test]
fn a_result_for_an_unknown_file_fails_the_send() {
    let (report, outcomes, _) = after_header("result-unknown", 10_000, |raw, _| {
        let m = message(
            raw,
            Control::FileResult {
                file_id: 99,
                status: FileStatus::OK,
            },
        );
        raw.send(&m).unwrap();
    });
    assert_failed(
        "result for file 99",
        &report,
        &outcomes,
        "message for unknown file 99",
    );
}

#[test]
fn a_verdict_before_the_file_was_sent_is_not_taken() {
    // An OK result for the accepted file before its data and end: the file must not be
    // reported verified. The file is larger than the window (4 chunks of 4 KiB) and the
    // receiver never returns credit, so the sender cannot have ended the file when the
    // result arrives (with a file that fits the window it could, and then an OK result is
    // a legal verdict).
    let mut file_id = 0;
    let (report, outcomes, _) = after_header("result-early", 100_000, |raw, id| {
        file_id = id;
        accept(raw, id);
        let m = message(
            raw,
            Control::FileResult {
                file_id: id,
                status: FileStatus::OK,
            },
        );
        raw.send(&m).unwrap();
    });
    let text = format!("message for unknown file {file_id}");
    assert_failed("early result", &report, &outcomes, &text);
}

#[test]
fn an_answer_for_a_file_never_offered_fails_the_send() {
    let (report, outcomes, _) = after_header("answer-unknown", 10_000, |raw, _| {
        accept(raw, 42);
    });
    assert_failed(
        "answer for file 42",
        &report,
        &outcomes,
        "message for unknown file 42",
    );
}

#[test]
fn garbage_from_the_receiver_fails_the_send() {
    let mut unknown_type = [0u8; 16];
    unknown_type[0] = 0x7f; // no such message type
    unknown_type[2..4].copy_from_slice(&16u16.to_be_bytes());
    for (case, bytes, text) in [
        (
            "garbage",
            vec![0xee; 40],
            "peer violated the protocol: bad length: declared 61166, actual 40",
        ),
        (
            "unknown type",
            unknown_type.to_vec(),
            "peer violated the protocol: unknown message type 0x7f",
        ),
    ] {
        let (report, outcomes, _) = after_header(case, 10_000, |raw, _| {
            raw.send(&bytes).unwrap();
        });
        assert_failed(case, &report, &outcomes, text);
    }
}

#[test]
fn other_impossible_messages_fail_the_send() {
    type Say = fn(&RawReceiver, u64) -> Vec<u8>;
    let cases: [(&str, Say, &str); 3] = [
        (
            "goodbye",
            |raw, _| message(raw, Control::Goodbye),
            "peer violated the protocol: unexpected Goodbye message",
        ),
        (
            "ack",
            |_, _| {
                // Acknowledges 1000 control messages; the sender wrote one.
                let mut b = vec![0u8; RECEIVER_MSG_MAX];
                let n = Control::KeepAlive.encode(1000, &mut b).unwrap();
                b.truncate(n);
                b
            },
            "peer violated the protocol: ack beyond the messages sent",
        ),
        (
            "error",
            |raw, _| {
                message(
                    raw,
                    Control::Error {
                        code: ErrorCode::LOCAL_FAILURE,
                        detail: 0,
                        text: "disk on fire\x1b[2J",
                    },
                )
            },
            // The peer's text is shown, its control characters escaped.
            "peer aborted: local failure: disk on fire\\u{1b}[2J",
        ),
    ];
    for (case, say, text) in cases {
        let (report, outcomes, _) = after_header(case, 10_000, |raw, id| {
            let m = say(raw, id);
            raw.send(&m).unwrap();
        });
        assert_failed(case, &report, &outcomes, text);
    }
}

#[test]
fn a_silent_receiver_is_timed_out() {
    // Accepted and connected, then nothing: not even an answer to the file.
    let (report, outcomes, elapsed) = after_header("silent", 10_000, |_, _| {});
    assert_failed(
        "silence",
        &report,
        &outcomes,
        "peer made no progress within the idle timeout",
    );
    assert!(
        elapsed >= IDLE,
        "failed before the idle timeout: {elapsed:?}"
    );
}

#[test]
fn a_receiver_that_disconnects_mid_file_fails_the_send() {
    // 16 chunks with a window of 4: the sender writes four, then waits for credit that
    // never comes; the receiver disconnects once it has seen data.
    let (report, outcomes, _) = after_header("disconnect", 16 * 4096, |raw, id| {
        accept(raw, id);
        let deadline = Instant::now() + T;
        let mut chunks = 0;
        while chunks == 0 {
            assert!(Instant::now() < deadline, "no chunk from the sender");
            let (writes, link) = raw.writes(Duration::from_millis(200));
            link.unwrap();
            chunks += writes
                .iter()
                .filter(|w| matches!(w.imm, Imm::Chunk(_)))
                .count();
        }
        raw.disconnect();
    });
    assert_failed("disconnect", &report, &outcomes, "lost");
    assert!(report.bytes < 16 * 4096, "mid-file: {report:?}");
}
