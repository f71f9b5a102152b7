//! The sender driven by hand, as a hostile or a careful receiver would: each protocol
//! violation fails it, each application misuse changes nothing, and its outputs keep to the
//! credit rules.

use rdmaft_protocol::*;
use std::time::Duration;

const CHUNK: u32 = 4096;
const C: u64 = CHUNK as u64;
type Store = ArrayStorage<4, 64>;

fn t(ms: u64) -> Instant {
    Instant::from_nanos(ms * 1_000_000)
}

fn negotiated(window: u32, features: Features) -> Negotiated {
    let ctrl = min_ctrl_depth(4);
    Negotiated {
        group: u32::from(features.contains(Features::LANES)),
        features,
        flags: AcceptFlags::empty(),
        chunk_size: CHUNK,
        window,
        sender_ctrl_depth: ctrl,
        receiver_ctrl_depth: ctrl,
        max_open_files: 4,
        keepalive_ms: 1000,
        ring: RingInfo {
            addr: 0x10000,
            len: u64::from(CHUNK * window) + u64::from(ctrl) * 4096,
            rkey: 1,
        },
        sender_proof: None,
    }
}

fn info(id: u64, size: u64, name: &str) -> FileInfo<'_> {
    FileInfo {
        target: &[],
        sync: None,
        part: None,
        file_id: id,
        kind: EntryKind::File,
        size,
        mtime_sec: 0,
        mtime_nsec: 0,
        mode: 0o644,
        name,
    }
}

/// What the sender put out, kept.
#[derive(Debug, PartialEq)]
enum Out {
    Ctrl(wire::MsgKind, Vec<u8>),
    Ack(u32),
    Read(ChunkRead),
    Write(ChunkWrite),
    Event(SenderEvent),
}

struct Tx<S: Storage = Store> {
    s: Sender<S>,
    /// Sender ring messages the fake receiver has processed (its ack field).
    seen: u32,
    out: Vec<Out>,
}

fn bytes(m: Control<'_>, ack: u32) -> Vec<u8> {
    let mut buf = [0u8; CTRL_MSG_MAX];
    let n = m.encode(ack, &mut buf).unwrap();
    buf[..n].to_vec()
}

impl Tx {
    fn new(neg: Negotiated) -> Tx {
        Self::with_config(neg, Config::default())
    }

    fn with_config(neg: Negotiated, cfg: Config) -> Tx {
        Tx::with_storage(neg, cfg, Store::new())
    }
}

impl<S: Storage> Tx<S> {
    fn with_storage(neg: Negotiated, cfg: Config, storage: S) -> Tx<S> {
        Tx {
            s: Sender::new(neg, cfg, storage, t(0)).unwrap(),
            seen: 0,
            out: vec![],
        }
    }

    fn drain_at(&mut self, now: Instant) -> Vec<Out> {
        let mut buf = [0u8; CTRL_MSG_MAX];
        let mut got = vec![];
        while let Some(o) = self.s.poll_output(now, &mut buf) {
            got.push(match o {
                SenderOutput::Control(c) => {
                    let kind = Control::decode(&buf[..c.len]).unwrap().1.kind();
                    Out::Ctrl(kind, buf[..c.len].to_vec())
                }
                SenderOutput::Ack(imm) => Out::Ack(imm),
                SenderOutput::Read(r) => Out::Read(r),
                SenderOutput::Write(w) => Out::Write(w),
                SenderOutput::Event(e) => Out::Event(e),
            });
        }
        got
    }

    /// Drains; the fake receiver processes every control message at once.
    fn drain(&mut self) -> Vec<Out> {
        let got = self.drain_at(t(1));
        self.seen += got.iter().filter(|o| matches!(o, Out::Ctrl(..))).count() as u32;
        got
    }

    /// The control messages sent, those inside batches each in its place.
    fn kinds(&mut self) -> Vec<wire::MsgKind> {
        self.drain()
            .into_iter()
            .flat_map(|o| match o {
                Out::Ctrl(_, b) => messages(&b),
                _ => vec![],
            })
            .collect()
    }

    fn recv(&mut self, m: Control<'_>) -> Result<(), Error> {
        let b = bytes(m, self.seen);
        self.s.handle_control(t(1), &b)
    }

    /// Starts file `id`, gets it accepted from `offset`, gives a digest-free end.
    fn accepted(&mut self, id: u64, size: u64, offset: u64) {
        let name = format!("f{id}");
        self.s.start_file(t(1), &info(id, size, &name)).unwrap();
        assert!(self.kinds().contains(&wire::MsgKind::FileHeader));
        self.recv(Control::FileAnswer {
            file_id: id,
            answer: FileAnswer::Accept { offset },
        })
        .unwrap();
        let got = self.drain();
        assert!(got.contains(&Out::Event(SenderEvent::FileAccepted {
            file_id: id,
            offset,
            changes: Changes::empty(),
        })));
        self.out.extend(got);
        self.s.finish_file(t(1), id, Digest::NONE).unwrap();
    }

    /// Checks the sender failed with `v`, sent an error with its number, and ended.
    fn assert_failed(&mut self, res: Result<(), Error>, v: Violation) {
        assert_eq!(res, Err(Error::Violation(v)));
        let got = self.drain();
        let error = got.iter().find_map(|o| match o {
            Out::Ctrl(wire::MsgKind::Error, b) => Some(Control::decode(b).unwrap().1),
            _ => None,
        });
        assert!(
            matches!(error, Some(Control::Error { code, detail, .. })
                if code == v.error_code() && detail == v.code()),
            "{got:?}"
        );
        assert_eq!(
            got.last(),
            Some(&Out::Event(SenderEvent::Failed(Failure::Violation(v))))
        );
        assert!(self.s.is_ended());
        assert_eq!(self.s.data_ready(t(9), 0), Err(Error::Closed));
        assert_eq!(self.s.poll_timeout(), None);
    }
}

/// A sender without batches: each control message is its own write.
fn tx() -> Tx {
    Tx::new(negotiated(
        4,
        Features::all() - Features::AUTH_PSK - Features::BATCH,
    ))
}

fn reads(out: &[Out]) -> Vec<u64> {
    out.iter()
        .filter_map(|o| match o {
            Out::Read(r) => Some(r.seq),
            _ => None,
        })
        .collect()
}

fn writes(out: &[Out]) -> Vec<u64> {
    out.iter()
        .filter_map(|o| match o {
            Out::Write(w) => Some(w.seq),
            _ => None,
        })
        .collect()
}

// ---- a whole file ----

#[test]
fn a_file_from_header_to_result() {
    let mut s = tx();
    s.accepted(7, 2 * C + 1, 0);
    let got = std::mem::take(&mut s.out);
    assert_eq!(reads(&got), [0, 1, 2], "read-ahead of the whole window");
    for seq in 0..3 {
        s.s.data_ready(t(1), seq).unwrap();
    }
    let got = s.drain();
    assert_eq!(writes(&got), [0, 1, 2]);
    let Some(Out::Write(last)) = got.iter().rev().find(|o| matches!(o, Out::Write(_))) else {
        panic!()
    };
    assert_eq!((last.len, last.file_offset, last.slot), (1, 2 * C, 2));
    assert_eq!(last.remote_addr, 0x10000 + 2 * C);
    assert_eq!(last.imm, Imm::chunk(2).encode());
    assert!(got
        .iter()
        .any(|o| matches!(o, Out::Ctrl(wire::MsgKind::FileEnd, _))));
    s.recv(Control::FileResult {
        file_id: 7,
        status: FileStatus::OK,
    })
    .unwrap();
    assert_eq!(
        s.drain(),
        [Out::Event(SenderEvent::FileDone {
            file_id: 7,
            status: FileStatus::OK
        })]
    );
    assert_eq!(s.s.open_files(), 0);
    s.s.close(t(1)).unwrap();
    assert_eq!(s.kinds(), [wire::MsgKind::Goodbye]);
    s.recv(Control::Goodbye).unwrap();
    assert_eq!(s.drain(), [Out::Event(SenderEvent::Closed)]);
    assert!(s.s.is_ended());
}

#[test]
// spec-test: [ctrl.slot]
fn control_writes_go_to_numbered_slots() {
    let mut s = tx();
    let neg = *s.s.negotiated();
    s.s.start_file(t(1), &info(1, 0, "a")).unwrap();
    let mut buf = [0u8; CTRL_MSG_MAX];
    let Some(SenderOutput::Control(c)) = s.s.poll_output(t(1), &mut buf) else {
        panic!()
    };
    assert_eq!(c.slot, 0);
    assert_eq!(c.imm, Imm::control(0).encode());
    assert_eq!(c.remote_addr, neg.ring.addr + neg.data_len());
    assert_eq!(c.rkey, neg.ring.rkey);
    s.s.start_file(t(1), &info(2, 0, "b")).unwrap();
    let Some(SenderOutput::Control(c)) = s.s.poll_output(t(1), &mut buf) else {
        panic!()
    };
    assert_eq!(c.slot, 1);
    assert_eq!(c.remote_addr, neg.ring.addr + neg.data_len() + 4096);
}

// ---- violations ----

#[test]
// spec-test: [violation.error] [answer.order]
fn answer_for_unknown_file() {
    let mut s = tx();
    let res = s.recv(Control::FileAnswer {
        file_id: 3,
        answer: FileAnswer::Accept { offset: 0 },
    });
    s.assert_failed(res, Violation::UnknownFile(3));
}

#[test]
// spec-test: [answer.order]
fn answer_out_of_order() {
    let mut s = tx();
    s.s.start_file(t(1), &info(1, 0, "a")).unwrap();
    s.drain();
    s.s.start_file(t(1), &info(2, 0, "b")).unwrap();
    s.drain();
    let res = s.recv(Control::FileAnswer {
        file_id: 2,
        answer: FileAnswer::Accept { offset: 0 },
    });
    s.assert_failed(res, Violation::AnswerOutOfOrder);
}

#[test]
// spec-test: [answer.resume]
fn bad_resume_offsets() {
    for (features, size, offset) in [
        (Features::RESUME, 3 * C, 4 * C), // beyond the end
        (Features::RESUME, 3 * C, 100),   // not chunk-aligned
        (Features::empty(), 3 * C, C),    // resume not negotiated
    ] {
        let mut s = Tx::new(negotiated(4, features));
        s.s.start_file(t(1), &info(1, size, "a")).unwrap();
        s.drain();
        let res = s.recv(Control::FileAnswer {
            file_id: 1,
            answer: FileAnswer::Accept { offset },
        });
        s.assert_failed(res, Violation::BadResumeOffset);
    }
    let mut s = tx();
    let dir = FileInfo {
        kind: EntryKind::Directory,
        ..info(1, 0, "d")
    };
    s.s.start_file(t(1), &dir).unwrap();
    s.drain();
    assert_eq!(
        s.recv(Control::FileAnswer {
            file_id: 1,
            answer: FileAnswer::Accept { offset: 0 },
        }),
        Ok(())
    );
}

#[test]
fn a_resumed_file_sends_only_the_rest() {
    let mut s = tx();
    s.accepted(1, 3 * C + 5, 2 * C);
    let got = std::mem::take(&mut s.out);
    let offsets: Vec<u64> = got
        .iter()
        .filter_map(|o| match o {
            Out::Read(r) => Some(r.file_offset),
            _ => None,
        })
        .collect();
    assert_eq!(offsets, [2 * C, 3 * C]);
}

#[test]
// spec-test: [credit.check]
fn credit_beyond_data_sent_or_backwards() {
    let mut s = tx();
    let res = s.recv(Control::Credit { consumed: 1 });
    s.assert_failed(res, Violation::BadCredit);
    let mut s = tx();
    s.accepted(1, 3 * C, 0);
    for seq in 0..2 {
        s.s.data_ready(t(1), seq).unwrap();
    }
    assert_eq!(writes(&s.drain()), [0, 1]);
    s.recv(Control::Credit { consumed: 2 }).unwrap();
    let res = s.recv(Control::Credit { consumed: 1 });
    s.assert_failed(res, Violation::BadCredit);
}

#[test]
// spec-test: [result.order]
fn result_for_a_file_not_ended() {
    let mut s = tx();
    s.accepted(1, C, 0);
    let res = s.recv(Control::FileResult {
        file_id: 1,
        status: FileStatus::OK,
    });
    s.assert_failed(res, Violation::UnknownFile(1));
}

#[test]
// spec-test: [result.order]
fn result_for_another_file_than_the_oldest() {
    let mut s = tx();
    s.accepted(1, 0, 0);
    s.accepted(2, 0, 0);
    s.drain();
    let res = s.recv(Control::FileResult {
        file_id: 2,
        status: FileStatus::OK,
    });
    s.assert_failed(res, Violation::UnknownFile(2));
}

#[test]
// spec-test: [msg.unexpected]
fn messages_the_sender_never_receives() {
    let h = Control::FileHeader(info(1, 0, "a"));
    for m in [
        h,
        Control::FileEnd(wire::FileEnd {
            file_id: 1,
            length: 0,
            digest: Digest::NONE,
        }),
        Control::FileAbort {
            file_id: 1,
            reason: AbortReason::CANCELLED,
        },
        Control::Auth { proof: [0; 32] },
        Control::Goodbye,
    ] {
        let mut s = tx();
        let res = s.recv(m);
        s.assert_failed(res, Violation::UnexpectedMessage(m.kind()));
    }
}

#[test]
// spec-test: [ctrl.ack]
fn ack_beyond_messages_sent() {
    let mut s = tx();
    s.seen = 1;
    let res = s.recv(Control::Ack);
    s.assert_failed(res, Violation::BadAck);
}

#[test]
fn undecodable_message() {
    let mut s = tx();
    let res = s.s.handle_control(t(1), &[0x12, 0, 0, 9, 0, 0, 0, 0, 0]);
    s.assert_failed(
        res,
        Violation::Decode(DecodeError::Truncated { need: 8, got: 1 }),
    );
}

// ---- credits ----

#[test]
// spec-test: [credit.window]
fn sender_never_exceeds_its_chunk_credit() {
    let mut s = Tx::new(negotiated(2, Features::empty()));
    s.accepted(1, 10 * C, 0);
    let got = std::mem::take(&mut s.out);
    assert_eq!(reads(&got), [0, 1], "two slots");
    for seq in 0..2 {
        s.s.data_ready(t(1), seq).unwrap();
    }
    assert_eq!(writes(&s.drain()), [0, 1]);
    assert_eq!(s.s.in_flight(), 2);
    // Both writes complete: the slots are free for reading, not yet for writing.
    s.s.handle_write_completed(t(1), 1).unwrap();
    assert_eq!(reads(&s.drain()), [2, 3]);
    for seq in 2..4 {
        s.s.data_ready(t(1), seq).unwrap();
    }
    assert!(writes(&s.drain()).is_empty(), "no credit for chunk 2");
    s.recv(Control::Credit { consumed: 1 }).unwrap();
    assert_eq!(writes(&s.drain()), [2]);
    s.recv(Control::Credit { consumed: 2 }).unwrap();
    assert_eq!(writes(&s.drain()), [3]);
}

#[test]
fn completions_are_cumulative_and_in_order() {
    let mut s = tx();
    s.accepted(1, 3 * C, 0);
    for seq in 0..3 {
        s.s.data_ready(t(1), seq).unwrap();
    }
    s.drain();
    let usage = Err(Error::Usage(UsageError::OutOfOrder));
    assert_eq!(s.s.handle_write_completed(t(1), 3), usage, "never posted");
    s.s.handle_write_completed(t(1), 1).unwrap();
    assert_eq!(s.s.handle_write_completed(t(1), 0), usage, "backwards");
    s.s.handle_write_completed(t(1), 2).unwrap();
}

#[test]
// spec-test: [ctrl.credit]
// spec-test: [live.keepalive]
fn control_messages_wait_for_the_receivers_credit() {
    let mut s = tx();
    let depth = u32::from(s.s.negotiated().receiver_ctrl_depth);
    // Keepalives every second while the receiver acknowledges nothing.
    let mut sent = 0;
    for sec in 1..=2 * u64::from(depth) {
        sent += s
            .drain_at(t(sec * 1000))
            .iter()
            .filter(|o| matches!(o, Out::Ctrl(wire::MsgKind::KeepAlive, _)))
            .count() as u32;
    }
    assert_eq!(sent, depth - 1, "the last slot is kept for the goodbye");
    assert_eq!(s.s.poll_timeout(), None);
    s.s.close(t(1)).unwrap();
    let got = s.drain_at(t(99_000));
    assert!(
        matches!(got.as_slice(), [Out::Ctrl(wire::MsgKind::Goodbye, _)]),
        "the goodbye uses the last slot: {got:?}"
    );
    assert!(s.drain_at(t(99_000)).is_empty());
}

#[test]
// spec-test: [ctrl.pure-ack]
fn a_pure_ack_goes_out_at_half_its_buffers() {
    let mut s = tx();
    let depth = u32::from(s.s.negotiated().sender_ctrl_depth);
    s.s.start_file(t(1), &info(1, 0, "a")).unwrap();
    s.drain();
    // The receiver sends keepalives; each is processed, none answered by a message.
    let mut acks = vec![];
    for i in 1..=depth {
        s.recv(Control::KeepAlive).unwrap();
        for o in s.drain() {
            if let Out::Ack(imm) = o {
                acks.push((i, imm));
            }
        }
    }
    let half = depth.div_ceil(2);
    assert_eq!(acks[0], (half, Imm::ack(half).encode()));
    assert_eq!(acks.len() as u32, depth / half);
}

// ---- aborts and cancels ----

#[test]
// spec-test: [data.abort-skip] [credit.check]
fn an_aborted_file_ends_with_an_abort_and_its_numbers_are_skipped() {
    let mut s = Tx::new(negotiated(2, Features::empty()));
    s.accepted(1, 10 * C, 0);
    s.accepted(2, 5, 0);
    s.out.clear();
    s.s.data_ready(t(1), 0).unwrap();
    assert_eq!(writes(&s.drain()), [0]);
    // The read of chunk 1 fails.
    s.s.data_ready(t(1), 1).unwrap();
    s.s.abort_file(t(1), 1, AbortReason::READ_ERROR).unwrap();
    assert_eq!(
        s.s.abort_file(t(1), 1, AbortReason::READ_ERROR),
        Err(Error::Usage(UsageError::UnknownFile)),
        "once"
    );
    let got = s.drain();
    assert!(writes(&got).is_empty(), "chunk 1 is not posted");
    let abort = got.iter().find_map(|o| match o {
        Out::Ctrl(wire::MsgKind::FileAbort, b) => Some(Control::decode(b).unwrap().1),
        _ => None,
    });
    assert_eq!(
        abort,
        Some(Control::FileAbort {
            file_id: 1,
            reason: AbortReason::READ_ERROR
        })
    );
    // The receiver credits the skipped numbers: file 2's chunk is number 10.
    s.recv(Control::Credit { consumed: 10 }).unwrap();
    s.s.handle_write_completed(t(1), 0).unwrap();
    let got = s.drain();
    assert_eq!(reads(&got), [10]);
    s.s.data_ready(t(1), 10).unwrap();
    let got = s.drain();
    assert_eq!(writes(&got), [10]);
    s.recv(Control::FileResult {
        file_id: 1,
        status: FileStatus::ABORTED,
    })
    .unwrap();
    assert!(s.drain().contains(&Out::Event(SenderEvent::FileDone {
        file_id: 1,
        status: FileStatus::ABORTED
    })));
}

#[test]
fn a_file_aborted_before_its_answer_never_sends_data() {
    let mut s = tx();
    s.s.start_file(t(1), &info(1, 5 * C, "a")).unwrap();
    s.drain();
    s.s.abort_file(t(1), 1, AbortReason::SOURCE_CHANGED)
        .unwrap();
    s.recv(Control::FileAnswer {
        file_id: 1,
        answer: FileAnswer::Accept { offset: 0 },
    })
    .unwrap();
    let got = s.drain();
    assert!(reads(&got).is_empty() && writes(&got).is_empty());
    assert!(!got.iter().any(|o| matches!(o, Out::Event(_))), "{got:?}");
    assert!(got
        .iter()
        .any(|o| matches!(o, Out::Ctrl(wire::MsgKind::FileAbort, _))));
}

#[test]
// spec-test: [cancel.answer]
fn the_receiver_cancels_a_file() {
    let mut s = tx();
    s.accepted(1, 10 * C, 0);
    s.out.clear();
    s.s.data_ready(t(1), 0).unwrap();
    assert_eq!(writes(&s.drain()), [0]);
    s.recv(Control::FileCancel {
        file_id: 1,
        status: FileStatus::NO_SPACE,
    })
    .unwrap();
    let got = s.drain();
    assert!(got.contains(&Out::Event(SenderEvent::FileCancelled {
        file_id: 1,
        status: FileStatus::NO_SPACE
    })));
    // The abort goes out at once, in place of the rest of the data.
    let aborts: Vec<_> = got
        .iter()
        .filter_map(|o| match o {
            Out::Ctrl(wire::MsgKind::FileAbort, b) => Some(Control::decode(b).unwrap().1),
            _ => None,
        })
        .collect();
    assert_eq!(
        aborts,
        [Control::FileAbort {
            file_id: 1,
            reason: AbortReason::PEER_CANCELLED
        }]
    );
    // Reads still outstanding finish; nothing more is posted.
    for seq in 1..4 {
        s.s.data_ready(t(1), seq).unwrap();
    }
    let got = s.drain();
    assert!(writes(&got).is_empty() && reads(&got).is_empty(), "{got:?}");
    // A second cancel, after the abort that answered the first (PROTOCOL.md §4.5).
    let res = s.recv(Control::FileCancel {
        file_id: 1,
        status: FileStatus::NO_SPACE,
    });
    s.assert_failed(res, Violation::BadCancel);
}

#[test]
// spec-test: [cancel.check]
fn cancel_twice_or_before_the_answer() {
    let mut s = tx();
    s.accepted(1, 10 * C, 0);
    let cancel = Control::FileCancel {
        file_id: 1,
        status: FileStatus::IO,
    };
    s.recv(cancel).unwrap();
    // Not drained: the abort that answers it has not gone out.
    let res = s.recv(cancel);
    s.assert_failed(res, Violation::BadCancel);
    let mut s = tx();
    s.s.start_file(t(1), &info(1, C, "a")).unwrap();
    s.drain();
    let res = s.recv(cancel);
    s.assert_failed(res, Violation::BadCancel);
    let mut s = tx();
    let res = s.recv(cancel);
    s.assert_failed(res, Violation::UnknownFile(1));
}

#[test]
// spec-test: [cancel.answer]
fn a_cancel_crossing_the_end_is_ignored() {
    let mut s = tx();
    s.accepted(1, 0, 0);
    assert!(s.kinds().contains(&wire::MsgKind::FileEnd));
    s.recv(Control::FileCancel {
        file_id: 1,
        status: FileStatus::IO,
    })
    .unwrap();
    assert!(s.drain().is_empty());
}

/// A cancel that crossed our own end or abort is ignored, but it was the receiver's one
/// cancel for the file: a second is refused (PROTOCOL.md §4.5, §7 #23).
#[test]
// spec-test: [cancel.check]
fn a_second_cancel_after_one_that_crossed_our_end_or_abort_is_refused() {
    let cancel = Control::FileCancel {
        file_id: 1,
        status: FileStatus::IO,
    };
    let mut s = tx();
    s.accepted(1, 0, 0);
    assert!(s.kinds().contains(&wire::MsgKind::FileEnd));
    s.recv(cancel).unwrap();
    assert!(s.drain().is_empty());
    let res = s.recv(cancel);
    s.assert_failed(res, Violation::BadCancel);

    let mut s = tx();
    s.accepted(1, 10 * C, 0);
    s.s.abort_file(t(1), 1, AbortReason::READ_ERROR).unwrap();
    assert!(s.kinds().contains(&wire::MsgKind::FileAbort));
    s.recv(cancel).unwrap();
    assert!(s.drain().iter().all(|o| !matches!(o, Out::Event(_))));
    let res = s.recv(cancel);
    s.assert_failed(res, Violation::BadCancel);
}

/// PROTOCOL.md §4.5: a file the sender aborted, or the receiver cancelled, was not delivered;
/// an OK result for it is refused, never passed to the application as delivered.
#[test]
// spec-test: [result.not-ok]
fn an_ok_result_for_a_file_cut_short_is_refused() {
    let ok = Control::FileResult {
        file_id: 1,
        status: FileStatus::OK,
    };
    // Aborted by the sender.
    let mut s = tx();
    s.accepted(1, 10 * C, 0);
    s.s.abort_file(t(1), 1, AbortReason::READ_ERROR).unwrap();
    assert!(s.kinds().contains(&wire::MsgKind::FileAbort));
    let res = s.recv(ok);
    s.assert_failed(res, Violation::BadResult);
    // Cancelled by the receiver (the cancel crossed the end).
    let mut s = tx();
    s.accepted(1, 0, 0);
    assert!(s.kinds().contains(&wire::MsgKind::FileEnd));
    s.recv(Control::FileCancel {
        file_id: 1,
        status: FileStatus::IO,
    })
    .unwrap();
    let res = s.recv(ok);
    s.assert_failed(res, Violation::BadResult);
    // Aborted, with its true result: passed on.
    let mut s = tx();
    s.accepted(1, 10 * C, 0);
    s.s.abort_file(t(1), 1, AbortReason::READ_ERROR).unwrap();
    s.drain();
    s.recv(Control::FileResult {
        file_id: 1,
        status: FileStatus::ABORTED,
    })
    .unwrap();
    assert!(s.drain().contains(&Out::Event(SenderEvent::FileDone {
        file_id: 1,
        status: FileStatus::ABORTED
    })));
}

/// A cancel's status is the result the file will get (§4.5): OK would report a file cut
/// short as delivered.
#[test]
// spec-test: [cancel.check]
fn a_cancel_with_status_ok_is_refused() {
    let mut s = tx();
    s.accepted(1, 10 * C, 0);
    let res = s.recv(Control::FileCancel {
        file_id: 1,
        status: FileStatus::OK,
    });
    s.assert_failed(res, Violation::BadCancel);
}

// ---- files and names ----

#[test]
// spec-test: [open.window]
fn the_open_file_window() {
    let mut s = tx();
    for id in 0..4 {
        assert!(s.s.can_start_file());
        s.s.start_file(t(1), &info(id, 0, &format!("f{id}")))
            .unwrap();
        s.drain();
    }
    assert!(!s.s.can_start_file());
    assert_eq!(
        s.s.start_file(t(1), &info(9, 0, "g")),
        Err(Error::Usage(UsageError::TooManyOpenFiles))
    );
    s.recv(Control::FileAnswer {
        file_id: 0,
        answer: FileAnswer::Reject(FileRejectReason::EXISTS),
    })
    .unwrap();
    assert_eq!(
        s.drain(),
        [Out::Event(SenderEvent::FileRejected {
            file_id: 0,
            reason: FileRejectReason::EXISTS
        })]
    );
    assert!(s.s.can_start_file());
    assert_eq!(s.s.open_files(), 3);
}

#[test]
fn one_header_at_a_time() {
    let mut s = tx();
    s.s.start_file(t(1), &info(1, 0, "a")).unwrap();
    assert!(!s.s.can_start_file());
    assert_eq!(
        s.s.start_file(t(1), &info(2, 0, "b")),
        Err(Error::Usage(UsageError::OutputsNotDrained))
    );
    s.drain();
    s.s.start_file(t(1), &info(2, 0, "b")).unwrap();
}

#[test]
// spec-test: [hdr.id] [name.reserved] [name.conflict]
fn sender_usage_errors() {
    let mut s = tx();
    let usage = |e| Err(Error::Usage(e));
    s.s.start_file(t(1), &info(5, 0, "a/b")).unwrap();
    s.drain();
    assert_eq!(
        s.s.start_file(t(1), &info(5, 0, "c")),
        usage(UsageError::DuplicateFileId)
    );
    assert_eq!(
        s.s.start_file(t(1), &info(4, 0, "c")),
        usage(UsageError::DuplicateFileId)
    );
    assert_eq!(
        s.s.start_file(t(1), &info(6, 0, "a")),
        usage(UsageError::NameConflict)
    );
    assert_eq!(
        s.s.start_file(t(1), &info(6, 0, "a/b/c")),
        usage(UsageError::NameConflict)
    );
    assert_eq!(
        s.s.start_file(t(1), &info(6, 0, "d/.rdmaft-1-2.part")),
        usage(UsageError::InvalidName(NameError::Reserved)),
        "the receiver's temporary-name space"
    );
    assert_eq!(
        s.s.start_file(t(1), &info(6, 0, "../x")),
        usage(UsageError::InvalidName(NameError::ParentDir))
    );
    let setuid = FileInfo {
        mode: 0o4755,
        ..info(6, 0, "x")
    };
    assert_eq!(
        s.s.start_file(t(1), &setuid),
        usage(UsageError::InvalidMetadata(Field::Mode))
    );
    let dir = FileInfo {
        kind: EntryKind::Directory,
        ..info(6, 1, "x")
    };
    assert_eq!(
        s.s.start_file(t(1), &dir),
        usage(UsageError::InvalidMetadata(Field::Size))
    );
    // A link needs LINKS agreed, and its size is its target's length.
    let link = FileInfo {
        kind: EntryKind::Symlink,
        target: b"t",
        ..info(6, 1, "l")
    };
    let mut plain = Tx::new(negotiated(4, Features::SYNC));
    assert_eq!(
        plain.s.start_file(t(1), &link),
        usage(UsageError::InvalidMetadata(Field::EntryKind))
    );
    assert_eq!(
        s.s.start_file(t(1), &FileInfo { size: 2, ..link }),
        usage(UsageError::InvalidMetadata(Field::Size))
    );
    assert_eq!(s.s.data_ready(t(1), 0), usage(UsageError::OutOfOrder));
    assert_eq!(
        s.s.finish_file(t(1), 5, Digest::NONE),
        usage(UsageError::UnknownFile),
        "not accepted yet"
    );
    assert_eq!(
        s.s.abort_file(t(1), 9, AbortReason::CANCELLED),
        usage(UsageError::UnknownFile)
    );
    assert_eq!(
        s.s.handle_write_completed(t(1), 0),
        usage(UsageError::OutOfOrder)
    );
    let plain = Tx::new(negotiated(4, Features::empty()));
    let mut plain = plain;
    plain.accepted(1, 0, 0);
    let mut p2 = Tx::new(negotiated(4, Features::empty()));
    p2.s.start_file(t(1), &info(1, 0, "a")).unwrap();
    p2.drain();
    p2.recv(Control::FileAnswer {
        file_id: 1,
        answer: FileAnswer::Accept { offset: 0 },
    })
    .unwrap();
    let blake = Digest::new(DigestKind::Blake3, &[0; 32]).unwrap();
    assert_eq!(
        p2.s.finish_file(t(1), 1, blake),
        usage(UsageError::DigestNotNegotiated)
    );
    p2.s.finish_file(t(1), 1, Digest::NONE).unwrap();
    assert_eq!(
        p2.s.finish_file(t(1), 1, Digest::NONE),
        usage(UsageError::UnknownFile),
        "once"
    );
    assert!(!s.s.is_ended() && !p2.s.is_ended());
}

#[test]
fn outputs_must_be_drained() {
    let mut s = tx();
    s.accepted(1, 0, 0);
    s.accepted(2, 0, 0);
    s.drain();
    // Two results, not drained in between: the second input is refused.
    s.recv(Control::FileResult {
        file_id: 1,
        status: FileStatus::OK,
    })
    .unwrap();
    s.recv(Control::FileResult {
        file_id: 2,
        status: FileStatus::OK,
    })
    .unwrap();
    assert_eq!(
        s.recv(Control::KeepAlive),
        Err(Error::Usage(UsageError::OutputsNotDrained))
    );
    assert_eq!(s.drain().len(), 2);
}

#[test]
fn closing_waits_for_open_files() {
    let mut s = tx();
    s.accepted(1, 0, 0);
    s.s.close(t(1)).unwrap();
    assert!(!s.kinds().contains(&wire::MsgKind::Goodbye));
    assert!(!s.s.can_start_file());
    assert_eq!(
        s.s.start_file(t(1), &info(2, 0, "b")),
        Err(Error::Usage(UsageError::NotOpen))
    );
    s.recv(Control::FileResult {
        file_id: 1,
        status: FileStatus::OK,
    })
    .unwrap();
    assert!(s.kinds().contains(&wire::MsgKind::Goodbye));
}

// ---- liveness and errors ----

#[test]
// spec-test: [live.idle]
fn only_arrivals_keep_the_sender_from_timing_out() {
    let cfg = Config {
        idle_timeout: Some(Duration::from_millis(5000)),
        name_hash_key: [0; 16],
    };
    let mut s = Tx::with_config(negotiated(4, Features::empty()), cfg);
    s.s.start_file(t(3000), &info(1, 0, "a")).unwrap();
    s.drain_at(t(3000));
    s.s.handle_timeout(t(4999));
    assert!(
        !s.s.is_ended(),
        "local calls do not count, but the deadline is 5000"
    );
    s.s.handle_timeout(t(5000));
    assert!(s.s.is_ended());
    let got = s.drain_at(t(5000));
    assert!(got
        .iter()
        .any(|o| matches!(o, Out::Ctrl(wire::MsgKind::Error, _))));
    assert_eq!(
        got.last(),
        Some(&Out::Event(SenderEvent::Failed(Failure::TimedOut)))
    );
}

#[test]
fn an_arrival_moves_the_deadline() {
    let cfg = Config {
        idle_timeout: Some(Duration::from_millis(5000)),
        name_hash_key: [0; 16],
    };
    let mut s = Tx::with_config(negotiated(4, Features::empty()), cfg);
    let b = bytes(Control::KeepAlive, 0);
    s.s.handle_control(t(4000), &b).unwrap();
    s.s.handle_timeout(t(8999));
    assert!(!s.s.is_ended());
    assert_eq!(
        s.s.poll_timeout(),
        Some(t(1000)),
        "the keepalive comes first"
    );
}

#[test]
fn peer_error_and_local_abort() {
    let mut s = tx();
    s.recv(Control::Error {
        code: ErrorCode::SHUTTING_DOWN,
        detail: 0,
        text: "bye",
    })
    .unwrap();
    let got = s.drain();
    assert!(
        !got.iter().any(|o| matches!(o, Out::Ctrl(..))),
        "no reply to an error"
    );
    assert!(matches!(
        got.last(),
        Some(Out::Event(SenderEvent::Failed(Failure::PeerAborted(code, 0, _))))
            if *code == ErrorCode::SHUTTING_DOWN
    ));
    let mut s = tx();
    s.s.abort(t(1), ErrorCode::CANCELLED);
    let got = s.drain();
    assert!(matches!(&got[0], Out::Ctrl(wire::MsgKind::Error, _)));
    assert_eq!(
        got.last(),
        Some(&Out::Event(SenderEvent::Failed(Failure::Aborted(
            ErrorCode::CANCELLED
        ))))
    );
}

#[test]
// spec-test: [psk.first]
fn with_a_key_the_proof_is_the_first_message() {
    let mut neg = negotiated(4, Features::AUTH_PSK);
    neg.sender_proof = Some([6; 32]);
    let mut s = Tx::new(neg);
    s.s.start_file(t(1), &info(1, 0, "a")).unwrap();
    let got = s.drain();
    let kinds: Vec<_> = got
        .iter()
        .filter_map(|o| match o {
            Out::Ctrl(k, b) => Some((*k, b.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(kinds[0].0, wire::MsgKind::Auth);
    assert_eq!(
        Control::decode(&kinds[0].1).unwrap().1,
        Control::Auth { proof: [6; 32] }
    );
    assert_eq!(kinds[1].0, wire::MsgKind::FileHeader);
}

#[test]
fn results_pass_over_a_rejected_file_between_accepted_ones() {
    let mut s = tx();
    s.accepted(1, 0, 0);
    s.s.start_file(t(1), &info(2, 10, "f2")).unwrap();
    s.drain();
    s.recv(Control::FileAnswer {
        file_id: 2,
        answer: FileAnswer::Reject(FileRejectReason::EXISTS),
    })
    .unwrap();
    s.drain();
    s.accepted(3, 0, 0);
    s.drain();
    for id in [1, 3] {
        s.recv(Control::FileResult {
            file_id: id,
            status: FileStatus::OK,
        })
        .unwrap();
        let got = s.drain();
        assert!(
            got.contains(&Out::Event(SenderEvent::FileDone {
                file_id: id,
                status: FileStatus::OK
            })),
            "{got:?}"
        );
    }
    // A second result for the last file is refused.
    let res = s.recv(Control::FileResult {
        file_id: 3,
        status: FileStatus::OK,
    });
    s.assert_failed(res, Violation::UnknownFile(3));
}

/// A sender with batches (`BATCH`).
fn batching() -> Tx {
    Tx::new(negotiated(4, Features::all() - Features::AUTH_PSK))
}

/// The messages of a control write: a batch's, or the one.
fn messages(bytes: &[u8]) -> Vec<wire::MsgKind> {
    match Control::decode(bytes).unwrap().1 {
        Control::Batch(b) => b.iter().map(|m| m.kind()).collect(),
        one => vec![one.kind()],
    }
}

fn control_writes(out: &[Out]) -> Vec<Vec<wire::MsgKind>> {
    out.iter()
        .filter_map(|o| match o {
            Out::Ctrl(_, b) => Some(messages(b)),
            _ => None,
        })
        .collect()
}

#[test]
fn headers_gather_in_one_batch() {
    let mut s = batching();
    for id in 1..=3 {
        assert!(s.s.can_start_file(), "room for header {id}");
        s.s.start_file(t(1), &info(id, 0, &format!("f{id}")))
            .unwrap();
    }
    let out = s.drain();
    use wire::MsgKind::FileHeader as H;
    assert_eq!(control_writes(&out), [vec![H, H, H]], "{out:?}");
    // All three count as sent: their answers are taken.
    for id in 1..=3 {
        s.recv(Control::FileAnswer {
            file_id: id,
            answer: FileAnswer::Accept { offset: 0 },
        })
        .unwrap();
    }
    assert_eq!(
        s.drain()
            .iter()
            .filter(|o| matches!(o, Out::Event(SenderEvent::FileAccepted { .. })))
            .count(),
        3
    );
}

#[test]
fn an_end_goes_before_the_next_files_chunk() {
    let mut s = batching();
    s.accepted(1, 100, 0);
    s.accepted(2, 100, 0);
    let mut out = vec![];
    for seq in 0..2 {
        s.s.data_ready(t(1), seq).unwrap();
        out.extend(s.drain());
    }
    let order: Vec<String> = out
        .iter()
        .filter_map(|o| match o {
            Out::Write(w) => Some(format!("chunk {}", w.seq)),
            Out::Ctrl(_, b) => Some(format!("{:?}", messages(b))),
            _ => None,
        })
        .collect();
    assert_eq!(
        order,
        ["chunk 0", "[FileEnd]", "chunk 1", "[FileEnd]"],
        "{out:?}"
    );
}

#[test]
fn a_cork_holds_a_batch_until_the_round_ends() {
    let mut s = batching();
    s.s.set_corked(true);
    s.s.start_file(t(1), &info(1, 0, "a")).unwrap();
    assert!(control_writes(&s.drain()).is_empty(), "held while corked");
    s.s.start_file(t(1), &info(2, 0, "b")).unwrap();
    s.s.set_corked(false);
    use wire::MsgKind::FileHeader as H;
    assert_eq!(control_writes(&s.drain()), [vec![H, H]]);
    // Without batches a cork changes nothing.
    let mut plain = tx();
    plain.s.set_corked(true);
    plain.s.start_file(t(1), &info(1, 0, "a")).unwrap();
    assert_eq!(control_writes(&plain.drain()), [vec![H]]);
}

#[test]
// spec-test: [batch.agreed]
fn a_batch_of_answers_and_results_gives_every_event() {
    let mut s = batching();
    s.accepted(1, 0, 0);
    s.accepted(2, 0, 0);
    s.drain();
    let mut buf = [0u8; CTRL_MSG_MAX + 8];
    let mut b = wire::BatchBuilder::new(RECEIVER_MSG_MAX);
    for id in [1, 2] {
        let result = Control::FileResult {
            file_id: id,
            status: FileStatus::OK,
        };
        assert!(b.push(&result, &mut buf));
    }
    let n = b.finish(&mut buf);
    buf[4..8].copy_from_slice(&s.seen.to_be_bytes());
    s.s.handle_control(t(1), &buf[..n]).unwrap();
    let done: Vec<_> = s
        .drain()
        .into_iter()
        .filter(|o| matches!(o, Out::Event(SenderEvent::FileDone { .. })))
        .collect();
    assert_eq!(done.len(), 2, "{done:?}");
    // The same batch to a sender that did not agree to batches is a violation.
    let mut plain = tx();
    plain.accepted(1, 0, 0);
    plain.drain();
    buf[4..8].copy_from_slice(&plain.seen.to_be_bytes());
    let res = plain.s.handle_control(t(1), &buf[..n]);
    plain.assert_failed(res, Violation::UnexpectedMessage(wire::MsgKind::Batch));
}

#[test]
fn a_full_batch_goes_and_the_next_message_starts_another() {
    let mut s = batching();
    // Names long enough that two headers do not fit one 4096-byte slot.
    let long_a = vec!["a".repeat(200); 11].join("/");
    let long_b = vec!["b".repeat(200); 11].join("/");
    s.s.start_file(t(1), &info(1, 0, &long_a)).unwrap();
    assert!(s.s.can_start_file());
    assert_eq!(
        s.s.start_file(t(1), &info(2, 0, &long_b)),
        Err(Error::Usage(UsageError::OutputsNotDrained)),
        "it does not fit: drain first"
    );
    use wire::MsgKind::FileHeader as H;
    assert_eq!(control_writes(&s.drain()), [vec![H]]);
    s.s.start_file(t(1), &info(2, 0, &long_b)).unwrap();
    assert_eq!(control_writes(&s.drain()), [vec![H]]);
}

/// A name of exactly `len` bytes: components of at most 200 `a`s, joined by `/`.
fn name_of(len: usize) -> String {
    let mut name = String::new();
    while name.len() < len {
        if !name.is_empty() {
            name.push('/');
        }
        let left = len - name.len();
        // Never leave a single byte: it would be a separator and an empty component.
        let take = if left > 200 && left - 200 == 1 {
            199
        } else {
            left.min(200)
        };
        name.extend(std::iter::repeat('a').take(take));
    }
    assert_eq!(name.len(), len);
    name
}

/// The name of a first header that leaves `room` bytes in its batch for the next message
/// (of `CTRL_MSG_MAX`: the batch's 8-byte header, the header's 48 bytes, the name).
fn first_name_leaving(room: usize) -> String {
    name_of(CTRL_MSG_MAX - 8 - 48 - room)
}

#[test]
fn a_header_that_fills_the_batch_to_its_last_byte_joins_it_and_one_byte_more_waits() {
    use wire::MsgKind::FileHeader as H;
    let content = SyncCheck {
        content: Some(Digest::new(DigestKind::Xxh3_128, &[1; 16]).unwrap()),
        dry_run: false,
        delete: false,
    };
    let target = [b't'; 100];
    let plain = info(2, 0, "second");
    let link = FileInfo {
        kind: EntryKind::Symlink,
        target: &target,
        size: target.len() as u64,
        ..plain
    };
    let checked = FileInfo {
        sync: Some(content),
        ..plain
    };
    // A header's size: 48 bytes, the name, a link's target, a content check's 40 bytes.
    for (second, size) in [(plain, 54), (link, 154), (checked, 94)] {
        for short in [0, 1] {
            let mut s = batching();
            let first = first_name_leaving(size - short);
            s.s.start_file(t(1), &info(1, 0, &first)).unwrap();
            let res = s.s.start_file(t(1), &second);
            if short == 0 {
                assert_eq!(res, Ok(()), "{:?} in exactly its room", second.kind);
                assert_eq!(control_writes(&s.drain()), [vec![H, H]]);
            } else {
                assert_eq!(
                    res,
                    Err(Error::Usage(UsageError::OutputsNotDrained)),
                    "{:?} a byte short",
                    second.kind
                );
                assert_eq!(control_writes(&s.drain()), [vec![H]]);
                s.s.start_file(t(1), &second).unwrap();
                assert_eq!(control_writes(&s.drain()), [vec![H]]);
            }
        }
    }
}

#[test]
fn room_for_a_file_is_room_for_a_one_component_name_with_a_content_check() {
    // `can_start_file` promises 48 + 255 + 40 bytes: a header whose name is one whole
    // component, with a content check's digest.
    let component = "b".repeat(255);
    let biggest = FileInfo {
        sync: Some(SyncCheck {
            content: Some(Digest::new(DigestKind::Blake3, &[2; 32]).unwrap()),
            dry_run: false,
            delete: false,
        }),
        ..info(2, 0, &component)
    };
    for room in [342, 343] {
        let mut s = batching();
        let first = first_name_leaving(room);
        s.s.start_file(t(1), &info(1, 0, &first)).unwrap();
        assert_eq!(s.s.can_start_file(), room == 343, "{room} bytes left");
        if s.s.can_start_file() {
            s.s.start_file(t(1), &biggest).unwrap();
        }
    }
}

/// Room for 24 open files: enough to bring two batches of results.
type Wide = ArrayStorage<24, 256>;

/// A batching sender with `n` empty files sent and ended, waiting for their results.
fn ended_files(n: u64) -> Tx<Wide> {
    let base = negotiated(4, Features::all() - Features::AUTH_PSK);
    let ctrl = min_ctrl_depth(24);
    let neg = Negotiated {
        max_open_files: 24,
        sender_ctrl_depth: ctrl,
        receiver_ctrl_depth: ctrl,
        ring: RingInfo {
            len: u64::from(CHUNK * 4) + u64::from(ctrl) * 4096,
            ..base.ring
        },
        ..base
    };
    let mut s = Tx::with_storage(neg, Config::default(), Wide::new());
    for id in 1..=n {
        s.accepted(id, 0, 0);
    }
    // Their ends go out.
    s.drain();
    s
}

/// A receiver's batch of results for `ids` (at most ten: 24 bytes each in 256).
fn results(ids: impl IntoIterator<Item = u64>, ack: u32) -> Vec<u8> {
    let mut buf = [0u8; CTRL_MSG_MAX];
    let mut b = wire::BatchBuilder::new(RECEIVER_MSG_MAX);
    for id in ids {
        let result = Control::FileResult {
            file_id: id,
            status: FileStatus::OK,
        };
        assert!(b.push(&result, &mut buf), "result {id} fits");
    }
    let n = b.finish(&mut buf);
    buf[4..8].copy_from_slice(&ack.to_be_bytes());
    buf[..n].to_vec()
}

fn files_done(out: &[Out]) -> usize {
    out.iter()
        .filter(|o| matches!(o, Out::Event(SenderEvent::FileDone { .. })))
        .count()
}

#[test]
fn two_full_batches_of_results_may_wait_and_a_message_more_may_not() {
    // Ten results fill a receiver's batch (8 + 10 x 24 of 256 bytes); a batch's worth of
    // events may wait undrained when the next message comes, so two batches go in.
    let mut s = ended_files(20);
    for ids in [1..=10, 11..=20] {
        let b = results(ids, s.seen);
        s.s.handle_control(t(1), &b).unwrap();
    }
    assert_eq!(files_done(&s.drain()), 20);
    // Eleven waiting are more than a batch's worth: the next message must wait for a drain.
    let mut s = ended_files(12);
    let b = results(1..=10, s.seen);
    s.s.handle_control(t(1), &b).unwrap();
    s.recv(Control::FileResult {
        file_id: 11,
        status: FileStatus::OK,
    })
    .unwrap();
    let twelfth = Control::FileResult {
        file_id: 12,
        status: FileStatus::OK,
    };
    assert_eq!(
        s.recv(twelfth),
        Err(Error::Usage(UsageError::OutputsNotDrained))
    );
    assert_eq!(files_done(&s.drain()), 11);
    s.recv(twelfth).unwrap();
    assert_eq!(files_done(&s.drain()), 1);
}

// ---- sync (SYNC) ----

fn sync_info(id: u64, name: &str, dry_run: bool) -> FileInfo<'_> {
    FileInfo {
        sync: Some(SyncCheck {
            content: None,
            dry_run,
            delete: false,
        }),
        ..info(id, 3 * C, name)
    }
}

#[test]
fn a_file_in_sync_ends_at_its_answer_with_nothing_sent() {
    let mut s = tx();
    s.s.start_file(t(1), &sync_info(1, "a", false)).unwrap();
    assert_eq!(s.kinds(), [wire::MsgKind::FileHeader]);
    s.s.start_file(t(1), &sync_info(2, "b", false)).unwrap();
    assert_eq!(s.kinds(), [wire::MsgKind::FileHeader]);
    s.recv(Control::FileAnswer {
        file_id: 1,
        answer: FileAnswer::InSync(Changes::MODE),
    })
    .unwrap();
    s.recv(Control::FileAnswer {
        file_id: 2,
        answer: FileAnswer::AcceptChanged {
            offset: 0,
            changes: Changes::MTIME,
        },
    })
    .unwrap();
    let got = s.drain();
    assert_eq!(
        got[..2],
        [
            Out::Event(SenderEvent::FileInSync {
                file_id: 1,
                changes: Changes::MODE
            }),
            Out::Event(SenderEvent::FileAccepted {
                file_id: 2,
                offset: 0,
                changes: Changes::MTIME
            })
        ]
    );
    // Only the second file's chunks are read: the first one's need none.
    assert_eq!(reads(&got), [0, 1, 2]);
    assert!(got
        .iter()
        .all(|o| !matches!(o, Out::Read(r) if r.file_id == 1)));
    assert_eq!(s.s.open_files(), 1);
}

#[test]
fn a_dry_run_ends_at_its_answer() {
    let mut s = tx();
    s.s.start_file(t(1), &sync_info(1, "a", true)).unwrap();
    s.drain();
    s.recv(Control::FileAnswer {
        file_id: 1,
        answer: FileAnswer::WouldSend(Changes::SIZE),
    })
    .unwrap();
    assert_eq!(
        s.drain(),
        [Out::Event(SenderEvent::FileWouldSend {
            file_id: 1,
            changes: Changes::SIZE
        })]
    );
    assert_eq!(s.s.open_files(), 0);
}

#[test]
// spec-test: [answer.sync]
fn an_answer_that_does_not_fit_the_header_fails_the_session() {
    let plain = |id| info(id, C, "p");
    let quick = |id| sync_info(id, "q", false);
    let dry = |id| sync_info(id, "d", true);
    type Make = fn(u64) -> FileInfo<'static>;
    let cases: [(Make, FileAnswer); 6] = [
        (plain, FileAnswer::InSync(Changes::empty())),
        (
            plain,
            FileAnswer::AcceptChanged {
                offset: 0,
                changes: Changes::NEW,
            },
        ),
        (plain, FileAnswer::WouldSend(Changes::NEW)),
        (quick, FileAnswer::WouldSend(Changes::NEW)),
        (dry, FileAnswer::Accept { offset: 0 }),
        (
            dry,
            FileAnswer::AcceptChanged {
                offset: 0,
                changes: Changes::SIZE,
            },
        ),
    ];
    for (make, answer) in cases {
        let mut s = tx();
        s.s.start_file(t(1), &make(1)).unwrap();
        s.drain();
        let res = s.recv(Control::FileAnswer { file_id: 1, answer });
        s.assert_failed(res, Violation::BadSync);
    }
}

#[test]
fn a_sync_header_needs_sync_agreed_and_a_content_check_an_agreed_digest() {
    let mut s = Tx::new(negotiated(4, Features::RESUME | Features::DIGEST_XXH3_128));
    assert_eq!(
        s.s.start_file(t(1), &sync_info(1, "a", false)),
        Err(UsageError::InvalidMetadata(Field::Flags).into())
    );
    let mut s = Tx::new(negotiated(4, Features::SYNC | Features::DIGEST_XXH3_128));
    let mut content = sync_info(1, "a", false);
    content.sync = Some(SyncCheck {
        content: Some(Digest::new(DigestKind::Blake3, &[1; 32]).unwrap()),
        dry_run: false,
        delete: false,
    });
    assert_eq!(
        s.s.start_file(t(1), &content),
        Err(UsageError::InvalidMetadata(Field::Flags).into())
    );
    content.sync = Some(SyncCheck {
        content: Some(Digest::new(DigestKind::Xxh3_128, &[1; 16]).unwrap()),
        dry_run: false,
        delete: false,
    });
    s.s.start_file(t(1), &content).unwrap();
    let sent = s.drain();
    let [Out::Ctrl(wire::MsgKind::FileHeader, b)] = &sent[..] else {
        panic!("{sent:?}")
    };
    assert_eq!(
        Control::decode(b).unwrap().1,
        Control::FileHeader(content),
        "the digest goes with the header"
    );
}

fn delete_info(id: u64) -> FileInfo<'static> {
    FileInfo {
        kind: EntryKind::Directory,
        sync: Some(SyncCheck {
            delete: true,
            ..SyncCheck::default()
        }),
        ..info(id, 0, "d")
    }
}

#[test]
fn a_pruned_directory_ends_at_its_answer() {
    let mut s = tx();
    s.s.start_file(t(1), &delete_info(1)).unwrap();
    s.drain();
    s.recv(Control::FileAnswer {
        file_id: 1,
        answer: FileAnswer::Pruned {
            changes: Changes::MTIME,
            deleted: 12,
        },
    })
    .unwrap();
    assert_eq!(
        s.drain(),
        [Out::Event(SenderEvent::DirectoryPruned {
            file_id: 1,
            changes: Changes::MTIME,
            deleted: 12
        })]
    );
    assert_eq!(s.s.open_files(), 0);
    // A delete gets no other answer; no other header gets this one.
    let mut s = tx();
    s.s.start_file(t(1), &delete_info(1)).unwrap();
    s.drain();
    let res = s.recv(Control::FileAnswer {
        file_id: 1,
        answer: FileAnswer::InSync(Changes::empty()),
    });
    s.assert_failed(res, Violation::BadSync);
    let mut s = tx();
    s.s.start_file(t(1), &sync_info(1, "a", false)).unwrap();
    s.drain();
    let res = s.recv(Control::FileAnswer {
        file_id: 1,
        answer: FileAnswer::Pruned {
            changes: Changes::empty(),
            deleted: 0,
        },
    });
    s.assert_failed(res, Violation::BadSync);
    // Without DELETE agreed it is not offered.
    let mut s = Tx::new(negotiated(4, Features::SYNC));
    assert_eq!(
        s.s.start_file(t(1), &delete_info(1)),
        Err(UsageError::InvalidMetadata(Field::Flags).into())
    );
}

// ---- the sequence space and liveness ----

/// [data.seq-space] Every accepted file of `i64::MAX` bytes takes 2⁵¹ sequence numbers: the
/// session's 2⁶² are used up by 2,048 of them (each aborted, so that the next can be offered),
/// and the sender fails on the accept of one more (`SeqSpaceExhausted`).
#[test]
// spec-test: [data.seq-space]
fn a_sender_fails_on_an_accept_past_the_sequence_space() {
    let mut tx = Tx::new(negotiated(4, Features::empty()));
    let size = i64::MAX as u64;
    let limit = MAX_SESSION_CHUNKS / size.div_ceil(C);
    assert_eq!(limit, 2048);
    for id in 0..=limit {
        tx.s.start_file(t(1), &info(id, size, "f")).unwrap();
        tx.drain();
        tx.s.abort_file(t(1), id, AbortReason::READ_ERROR).unwrap();
        let res = tx.recv(Control::FileAnswer {
            file_id: id,
            answer: FileAnswer::Accept { offset: 0 },
        });
        if id == limit {
            return tx.assert_failed(res, Violation::SeqSpaceExhausted);
        }
        res.unwrap();
        let got = tx.drain();
        assert!(
            got.iter()
                .any(|o| matches!(o, Out::Ctrl(wire::MsgKind::FileAbort, _))),
            "file {id}: {got:?}"
        );
        tx.recv(Control::FileResult {
            file_id: id,
            status: FileStatus::ABORTED,
        })
        .unwrap();
        tx.drain();
        assert_eq!(tx.s.open_files(), 0, "file {id}");
    }
    unreachable!("the loop returns at the limit");
}

/// [live.keepalive] A sender sends no keepalive after its Goodbye, however long the
/// receiver's Goodbye takes (no idle timeout set), and asks for no timer.
#[test]
// spec-test: [live.keepalive]
fn a_sender_sends_no_keepalive_after_its_goodbye() {
    let mut tx = Tx::new(negotiated(4, Features::empty()));
    let written = |tx: &mut Tx, ms| -> Vec<wire::MsgKind> {
        tx.drain_at(t(ms))
            .into_iter()
            .filter_map(|o| match o {
                Out::Ctrl(kind, _) => Some(kind),
                _ => None,
            })
            .collect()
    };
    assert_eq!(written(&mut tx, 1000), [wire::MsgKind::KeepAlive]);
    tx.s.close(t(1500)).unwrap();
    assert_eq!(written(&mut tx, 1500), [wire::MsgKind::Goodbye]);
    assert_eq!(tx.s.poll_timeout(), None, "no keepalive is due");
    for ms in [2500, 10_000, 100_000] {
        assert_eq!(written(&mut tx, ms), [], "at {ms} ms");
    }
    assert!(!tx.s.is_ended(), "still waiting for the receiver's Goodbye");
}
