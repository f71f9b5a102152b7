//! The receiver driven by hand, as a hostile or a careful sender would: each protocol
//! violation fails it (an error message for the peer, a `Failed` event, later inputs refused),
//! and each application misuse changes nothing.

use rdmaft_protocol::*;
use std::time::Duration;

const CHUNK: u32 = 4096;
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

/// A receiver and the sender side of the bookkeeping a test needs.
struct Rx {
    r: Receiver<Store>,
    ctrl: u32,
    /// Receiver messages "processed" by the fake sender, for the ack fields.
    seen: u32,
    sent: Vec<Control<'static>>,
    events: Vec<ReceiverEvent>,
}

fn msg(m: Control<'_>, ack: u32) -> Vec<u8> {
    let mut buf = [0u8; CTRL_MSG_MAX];
    let n = m.encode(ack, &mut buf).unwrap();
    buf[..n].to_vec()
}

fn header(id: u64, size: u64, name: &str) -> Control<'_> {
    Control::FileHeader(wire::FileHeader {
        target: &[],
        sync: None,
        part: None,
        file_id: id,
        kind: EntryKind::File,
        size,
        mtime_sec: 0,
        mtime_nsec: 0,
        mode: 0o600,
        name,
    })
}

fn end(id: u64, length: u64) -> Control<'static> {
    Control::FileEnd(wire::FileEnd {
        file_id: id,
        length,
        digest: Digest::NONE,
    })
}

/// The bytes of the messages [`keep_one`] decoded into `'static` form.
static KEPT: std::sync::Mutex<Vec<&'static [u8]>> = std::sync::Mutex::new(Vec::new());

/// Decodes a message the receiver sent into a `'static` form the tests can keep.
fn keep(bytes: &[u8]) -> Vec<Control<'static>> {
    match Control::decode(bytes).unwrap().1 {
        Control::Batch(b) => b.iter().map(keep_one).collect(),
        one => vec![keep_one(one)],
    }
}

fn keep_one(msg: Control<'_>) -> Control<'static> {
    match msg {
        Control::Error { code, detail, .. } => Control::Error {
            code,
            detail,
            text: "",
        },
        Control::FileHeader(_) => panic!("the receiver never sends a header"),
        other => {
            // Every other message borrows nothing.
            let mut buf = [0u8; CTRL_MSG_MAX];
            let n = other.encode(0, &mut buf).unwrap();
            let leaked: &'static [u8] = Box::leak(buf[..n].to_vec().into_boxed_slice());
            // Kept on purpose for the whole run; listed in a static so that Miri's leak
            // check sees it is meant.
            KEPT.lock().unwrap().push(leaked);
            Control::decode(leaked).unwrap().1
        }
    }
}

impl Rx {
    fn new(neg: Negotiated) -> Rx {
        Self::with_config(neg, Config::default())
    }

    fn with_config(neg: Negotiated, cfg: Config) -> Rx {
        Rx {
            r: Receiver::new(neg, cfg, Store::new(), t(0)).unwrap(),
            ctrl: 0,
            seen: 0,
            sent: vec![],
            events: vec![],
        }
    }

    /// Writes a control message into the ring, as the sender would.
    fn ctrl(&mut self, m: Control<'_>) -> Result<Option<FileRejectReason>, Error> {
        self.ctrl_at(t(1), m)
    }

    fn ctrl_at(&mut self, now: Instant, m: Control<'_>) -> Result<Option<FileRejectReason>, Error> {
        let bytes = msg(m, self.seen);
        let n = self.ctrl;
        self.ctrl += 1;
        match self
            .r
            .handle_write(now, Imm::control(n).encode(), bytes.len() as u32)?
        {
            Incoming::Control { len, .. } => assert_eq!(len as usize, bytes.len()),
            other => panic!("control write came out as {other:?}"),
        }
        let out = self.r.handle_control(now, &bytes)?;
        self.drain();
        Ok(out.and_then(|o| o.refusal))
    }

    fn chunk(&mut self, seq: u64, len: u32) -> Result<ChunkArrival, Error> {
        let a = self
            .r
            .handle_write(t(1), Imm::chunk(seq).encode(), len)
            .map(|i| match i {
                Incoming::Chunk(a) => a,
                other => panic!("chunk came out as {other:?}"),
            })?;
        self.drain();
        Ok(a)
    }

    fn drain(&mut self) {
        let mut buf = [0u8; CTRL_MSG_MAX];
        while let Some(out) = self.r.poll_output(t(1), &mut buf) {
            match out {
                ReceiverOutput::Transmit(n) => {
                    assert!(n <= RECEIVER_MSG_MAX);
                    self.sent.extend(keep(&buf[..n]));
                    self.seen += 1;
                }
                ReceiverOutput::Event(e) => self.events.push(e),
            }
        }
    }

    fn kinds(&mut self) -> Vec<wire::MsgKind> {
        self.drain();
        self.sent.drain(..).map(|m| m.kind()).collect()
    }

    /// Offers file `id` and accepts it from 0.
    fn receiving(&mut self, id: u64, size: u64) {
        let name = format!("f{id}");
        assert_eq!(self.ctrl(header(id, size, &name)), Ok(None));
        self.r
            .answer_file(t(1), id, FileAnswer::Accept { offset: 0 })
            .unwrap();
        assert!(self.kinds().contains(&wire::MsgKind::FileAnswer));
    }

    /// Checks the receiver failed with `v`, sent an error with its number, and ended.
    fn assert_failed<T: std::fmt::Debug>(&mut self, res: Result<T, Error>, v: Violation) {
        assert_eq!(res.unwrap_err(), Error::Violation(v));
        self.drain();
        let error = self.sent.last().copied();
        assert!(
            matches!(error, Some(Control::Error { code, detail, .. })
                if code == v.error_code() && detail == v.code()),
            "sent {:?}",
            self.sent
        );
        assert_eq!(
            self.events.last(),
            Some(&ReceiverEvent::Failed(Failure::Violation(v)))
        );
        assert!(self.r.is_ended());
        assert_eq!(self.r.handle_write(t(9), 0, 0), Err(Error::Closed));
        assert_eq!(self.r.poll_timeout(), None);
    }
}

fn rx() -> Rx {
    Rx::new(negotiated(4, Features::all() - Features::AUTH_PSK))
}

// ---- chunks ----

#[test]
// spec-test: [data.seq]
fn wrong_seq() {
    let mut r = rx();
    r.receiving(1, 10_000);
    let res = r.chunk(1, CHUNK);
    r.assert_failed(
        res,
        Violation::WrongSeq {
            expected: 0,
            got: 1,
        },
    );
}

#[test]
// spec-test: [credit.window]
fn credit_overrun_write_beyond_window() {
    let mut r = Rx::new(negotiated(2, Features::empty()));
    r.receiving(1, 100_000);
    r.chunk(0, CHUNK).unwrap();
    r.chunk(1, CHUNK).unwrap();
    // Slots 0 and 1 are unconsumed: chunk 2 would overwrite slot 0.
    let res = r.chunk(2, CHUNK);
    r.assert_failed(res, Violation::CreditOverrun);
}

#[test]
// spec-test: [credit.window]
fn consumed_but_unadvertised_credit_is_still_an_overrun() {
    let mut r = rx();
    r.receiving(1, 100_000);
    for seq in 0..4 {
        r.chunk(seq, CHUNK).unwrap();
    }
    r.r.chunk_consumed(t(1), 0).unwrap();
    // Consuming chunk 0 made a credit due; drained, it goes out and chunk 4 may come.
    assert_eq!(r.kinds(), [wire::MsgKind::Credit]);
    r.chunk(4, CHUNK).unwrap();
    let res = r.chunk(5, CHUNK);
    r.assert_failed(res, Violation::CreditOverrun);
}

#[test]
// spec-test: [data.length]
fn bad_chunk_length() {
    let mut r = rx();
    r.receiving(1, u64::from(CHUNK) + 100);
    let a = r.chunk(0, CHUNK).unwrap();
    assert_eq!(
        (a.file_offset, a.len, a.slot, a.ring_offset),
        (0, CHUNK, 0, 0)
    );
    // The second and last chunk carries 100 bytes.
    let res = r.chunk(1, CHUNK);
    r.assert_failed(
        res,
        Violation::BadWriteLength {
            expected: 100,
            got: CHUNK,
        },
    );
}

#[test]
// spec-test: [data.owner]
fn chunk_before_the_answer_was_sent() {
    let mut r = rx();
    let bytes = msg(header(1, 10, "f"), 0);
    r.r.handle_write(t(0), Imm::control(0).encode(), bytes.len() as u32)
        .unwrap();
    r.r.handle_control(t(0), &bytes).unwrap();
    r.r.answer_file(t(0), 1, FileAnswer::Accept { offset: 0 })
        .unwrap();
    // Not drained: the sender cannot know the accept yet.
    let res = r.r.handle_write(t(1), Imm::chunk(0).encode(), 10);
    assert_eq!(res, Err(Error::Violation(Violation::UnexpectedChunk)));
}

#[test]
// spec-test: [data.owner]
fn chunk_past_the_files_end() {
    let mut r = rx();
    r.receiving(1, 10);
    r.chunk(0, 10).unwrap();
    let res = r.chunk(1, 10);
    r.assert_failed(res, Violation::UnexpectedChunk);
}

#[test]
// spec-test: [data.owner]
fn chunk_with_no_file_at_all() {
    let mut r = rx();
    let res = r.chunk(0, 10);
    r.assert_failed(res, Violation::UnexpectedChunk);
}

// ---- control messages in the ring ----

#[test]
// spec-test: [ctrl.seq]
fn control_messages_are_numbered() {
    let mut r = rx();
    let bytes = msg(Control::KeepAlive, 0);
    let res =
        r.r.handle_write(t(1), Imm::control(1).encode(), bytes.len() as u32);
    r.assert_failed(
        res,
        Violation::WrongCtrlSeq {
            expected: 0,
            got: 1,
        },
    );
}

#[test]
// spec-test: [data.length] [msg.length]
fn control_writes_fit_one_slot() {
    for len in [0, 7, CTRL_MSG_MAX as u32 + 1] {
        let mut r = rx();
        let res = r.r.handle_write(t(1), Imm::control(0).encode(), len);
        r.assert_failed(
            res,
            Violation::BadWriteLength {
                expected: CTRL_MSG_MAX as u32,
                got: len,
            },
        );
    }
}

/// Writes `count` keepalives that the receiver processes but never reports (nothing is
/// drained, so its acks never go out): the sender's control credit fills up.
fn unreported_keepalives(r: &mut Rx, count: u32) {
    let bytes = msg(Control::KeepAlive, 0);
    for n in 0..count {
        let i =
            r.r.handle_write(t(1), Imm::control(n).encode(), bytes.len() as u32)
                .unwrap();
        assert!(matches!(i, Incoming::Control { .. }));
        r.r.handle_control(t(1), &bytes).unwrap();
    }
    r.ctrl = count;
}

/// PROTOCOL.md §5.2: with D the receiver's depth, a sender may write an ordinary message while
/// fewer than D − 1 of its messages are unacknowledged, and its final Goodbye or Error while
/// fewer than D are. D − 1 keepalives pass; the D-th message may only be a final one.
#[test]
// spec-test: [ctrl.overrun]
fn an_ordinary_message_may_not_take_the_last_slot_of_the_credit() {
    let mut r = rx();
    let depth = u32::from(r.r.negotiated().receiver_ctrl_depth);
    unreported_keepalives(&mut r, depth - 1);
    let res = r.ctrl(Control::KeepAlive);
    r.assert_failed(res, Violation::CtrlOverrun);
}

#[test]
// spec-test: [ctrl.overrun]
fn the_final_message_takes_the_last_slot_and_nothing_goes_beyond() {
    let mut r = rx();
    let depth = u32::from(r.r.negotiated().receiver_ctrl_depth);
    unreported_keepalives(&mut r, depth - 1);
    // Not drained: the receiver's Goodbye (which would end the session) stays unsent.
    let goodbye = msg(Control::Goodbye, 0);
    let len = goodbye.len() as u32;
    let i =
        r.r.handle_write(t(1), Imm::control(depth - 1).encode(), len);
    assert!(matches!(i, Ok(Incoming::Control { .. })), "{i:?}");
    assert_eq!(
        r.r.handle_control(t(1), &goodbye),
        Ok(None),
        "the last slot is the final message's"
    );
    let res = r.r.handle_write(t(1), Imm::control(depth).encode(), len);
    r.assert_failed(res, Violation::CtrlOverrun);

    let mut r = rx();
    unreported_keepalives(&mut r, depth - 1);
    let error = Control::Error {
        code: ErrorCode::CANCELLED,
        detail: 0,
        text: "stop",
    };
    assert_eq!(r.ctrl(error), Ok(None));
    assert!(matches!(
        r.events.last(),
        Some(ReceiverEvent::Failed(Failure::PeerAborted(
            ErrorCode::CANCELLED,
            ..
        )))
    ));
}

#[test]
fn ring_offsets_of_control_slots() {
    let mut r = rx();
    let neg = *r.r.negotiated();
    let bytes = msg(Control::KeepAlive, 0);
    let first = r.r.handle_write(t(1), Imm::control(0).encode(), 8).unwrap();
    assert_eq!(
        first,
        Incoming::Control {
            ring_offset: neg.data_len(),
            len: 8
        }
    );
    r.r.handle_control(t(1), &bytes).unwrap();
    let second = r.r.handle_write(t(1), Imm::control(1).encode(), 8).unwrap();
    assert_eq!(
        second,
        Incoming::Control {
            ring_offset: neg.data_len() + 4096,
            len: 8
        }
    );
}

#[test]
fn the_bytes_of_an_announced_control_message_come_first() {
    let mut r = rx();
    let bytes = msg(Control::KeepAlive, 0);
    assert_eq!(
        r.r.handle_control(t(1), &bytes),
        Err(Error::Usage(UsageError::NoControlPending))
    );
    r.r.handle_write(t(1), Imm::control(0).encode(), 8).unwrap();
    assert_eq!(
        r.r.handle_write(t(1), Imm::chunk(0).encode(), 8),
        Err(Error::Usage(UsageError::ControlPending))
    );
    assert_eq!(r.r.handle_control(t(1), &bytes), Ok(None));
    assert!(!r.r.is_ended());
}

#[test]
fn undecodable_control_message() {
    let mut r = rx();
    r.r.handle_write(t(1), Imm::control(0).encode(), 8).unwrap();
    let res = r.r.handle_control(t(1), &[0x99, 0, 0, 8, 0, 0, 0, 0]);
    r.assert_failed(res, Violation::Decode(DecodeError::UnknownType(0x99)));
}

#[test]
// spec-test: [msg.unexpected]
fn receiver_gets_sender_bound_messages() {
    let bound_for_the_sender = [
        Control::FileAnswer {
            file_id: 1,
            answer: FileAnswer::Accept { offset: 0 },
        },
        Control::Credit { consumed: 0 },
        Control::FileResult {
            file_id: 1,
            status: FileStatus::OK,
        },
        Control::Ack,
        Control::FileCancel {
            file_id: 1,
            status: FileStatus::NO_SPACE,
        },
        Control::Auth { proof: [0; 32] },
    ];
    for m in bound_for_the_sender {
        let mut r = rx();
        let res = r.ctrl(m);
        r.assert_failed(res, Violation::UnexpectedMessage(m.kind()));
    }
}

// ---- files ----

#[test]
// spec-test: [hdr.id]
fn file_ids_must_increase() {
    let mut r = rx();
    assert_eq!(r.ctrl(header(5, 0, "a")), Ok(None));
    let res = r.ctrl(header(5, 0, "b"));
    r.assert_failed(res, Violation::DuplicateFileId(5));
    let mut r = rx();
    r.ctrl(header(5, 0, "a")).unwrap();
    let res = r.ctrl(header(4, 0, "b"));
    r.assert_failed(res, Violation::DuplicateFileId(4));
}

#[test]
// spec-test: [open.window]
fn too_many_open_files() {
    let mut r = rx();
    for id in 0..4 {
        r.ctrl(header(id, 0, &format!("f{id}"))).unwrap();
    }
    assert_eq!(r.r.open_files(), 4);
    let res = r.ctrl(header(4, 0, "f4"));
    r.assert_failed(res, Violation::TooManyOpenFiles);
}

#[test]
// spec-test: [open.window]
fn the_open_file_window_slides_as_files_resolve() {
    let mut r = rx();
    for id in 0..4 {
        r.ctrl(header(id, 0, &format!("f{id}"))).unwrap();
        r.r.answer_file(t(1), id, FileAnswer::Reject(FileRejectReason::EXISTS))
            .unwrap();
    }
    assert_eq!(r.kinds().len(), 4);
    assert_eq!(r.r.open_files(), 0);
    // All four were rejected: four more fit.
    for id in 4..8 {
        assert_eq!(r.ctrl(header(id, 0, &format!("f{id}"))), Ok(None));
    }
}

#[test]
// spec-test: [name.conflict]
fn conflicting_names_must_be_rejected() {
    let mut r = rx();
    assert_eq!(r.ctrl(header(1, 0, "a/b")), Ok(None));
    assert_eq!(
        r.ctrl(header(2, 0, "a/b")),
        Ok(Some(FileRejectReason::NAME_CONFLICT))
    );
    assert_eq!(
        r.ctrl(header(3, 0, "a")),
        Ok(Some(FileRejectReason::NAME_CONFLICT))
    );
    assert_eq!(r.ctrl(header(4, 0, "a/c")), Ok(None));
    r.r.answer_file(t(1), 1, FileAnswer::Accept { offset: 0 })
        .unwrap();
    // An offer the protocol refuses cannot be accepted.
    assert_eq!(
        r.r.answer_file(t(1), 2, FileAnswer::Accept { offset: 0 }),
        Err(Error::Usage(UsageError::InvalidAnswer))
    );
    r.r.answer_file(t(1), 2, FileAnswer::Reject(FileRejectReason::NAME_CONFLICT))
        .unwrap();
}

/// Issue 17: the receiver keeps `.rdmaft-<host>-<pid>-<n>.part` and `.rdmaft-partial-<hash>` in its
/// destination, so an offer whose name has a component in that space must be rejected
/// (`INVALID_NAME`, PROTOCOL.md §4.1); the session goes on, and such a name holds no place in
/// the open-name table.
#[test]
// spec-test: [name.reserved]
fn names_in_the_receivers_own_space_must_be_rejected() {
    let mut r = rx();
    for (id, name) in [
        (1, ".rdmaft-4242-7.part"),
        (2, "sub/.rdmaft-partial-0123456789abcdef"),
        (3, ".RDMAFT-4242-7.part"),
    ] {
        assert_eq!(
            r.ctrl(header(id, 0, name)),
            Ok(Some(FileRejectReason::INVALID_NAME)),
            "{name}"
        );
        assert_eq!(
            r.r.answer_file(t(1), id, FileAnswer::Accept { offset: 0 }),
            Err(Error::Usage(UsageError::InvalidAnswer)),
            "{name} cannot be accepted"
        );
        r.r.answer_file(t(1), id, FileAnswer::Reject(FileRejectReason::INVALID_NAME))
            .unwrap();
    }
    // The session goes on; "sub" was never taken by the refused "sub/.rdmaft-…".
    assert_eq!(r.ctrl(header(4, 0, "sub")), Ok(None));
    assert_eq!(r.ctrl(header(5, 0, "x.rdmaft-1.part")), Ok(None));
    assert!(!r.r.is_ended());
}

#[test]
fn a_full_name_table_asks_to_try_later() {
    // Four name slots, one always free: "a/b" needs two, "c/d" two more.
    let mut r: Receiver<ArrayStorage<4, 4>> = Receiver::new(
        negotiated(4, Features::empty()),
        Config::default(),
        ArrayStorage::new(),
        t(0),
    )
    .unwrap();
    let mut offer = |n: u32, id: u64, name: &str| {
        let bytes = msg(header(id, 0, name), 0);
        r.handle_write(t(1), Imm::control(n).encode(), bytes.len() as u32)
            .unwrap();
        r.handle_control(t(1), &bytes).unwrap().unwrap().refusal
    };
    assert_eq!(offer(0, 1, "a/b"), None);
    assert_eq!(offer(1, 2, "c/d"), Some(FileRejectReason::BUSY));
    assert_eq!(offer(2, 3, "a/c"), None, "shares the slot of a");
}

#[test]
// spec-test: [end.before-data]
fn end_before_data() {
    let mut r = rx();
    r.receiving(1, u64::from(CHUNK) + 1);
    r.chunk(0, CHUNK).unwrap();
    let res = r.ctrl(end(1, u64::from(CHUNK) + 1));
    r.assert_failed(res, Violation::EndBeforeData);
}

#[test]
// spec-test: [end.length]
fn end_with_wrong_length() {
    let mut r = rx();
    r.receiving(1, 10);
    r.chunk(0, 10).unwrap();
    let res = r.ctrl(end(1, 11));
    r.assert_failed(res, Violation::EndLengthMismatch);
}

#[test]
fn end_for_another_file() {
    let mut r = rx();
    r.receiving(1, 0);
    r.receiving(2, 0);
    let res = r.ctrl(end(2, 0));
    r.assert_failed(res, Violation::UnknownFile(2));
}

#[test]
// spec-test: [end.digest-agreed]
fn end_with_unnegotiated_digest() {
    let mut r = Rx::new(negotiated(4, Features::DIGEST_XXH3_128));
    r.receiving(1, 0);
    let res = r.ctrl(Control::FileEnd(wire::FileEnd {
        file_id: 1,
        length: 0,
        digest: Digest::new(DigestKind::Blake3, &[1; 32]).unwrap(),
    }));
    r.assert_failed(res, Violation::DigestNotNegotiated);
}

#[test]
// spec-test: [end.digest-required]
fn a_required_digest_missing_drops_the_file() {
    let mut neg = negotiated(4, Features::DIGEST_XXH3_128);
    neg.flags = AcceptFlags::DIGEST_REQUIRED;
    let mut r = Rx::new(neg);
    r.receiving(1, 5);
    let a = r.chunk(0, 5).unwrap();
    r.ctrl(end(1, 5)).unwrap();
    assert!(r.events.is_empty(), "nothing before the chunk is consumed");
    r.r.chunk_consumed(t(1), a.seq).unwrap();
    r.drain();
    assert_eq!(
        r.events,
        [ReceiverEvent::FileDropped {
            file_id: 1,
            status: FileStatus::DIGEST_REQUIRED,
            abort: None
        }]
    );
    assert!(r.sent.contains(&Control::FileResult {
        file_id: 1,
        status: FileStatus::DIGEST_REQUIRED
    }));
    // A directory needs none.
    let dir = Control::FileHeader(wire::FileHeader {
        target: &[],
        sync: None,
        part: None,
        file_id: 2,
        kind: EntryKind::Directory,
        size: 0,
        mtime_sec: 0,
        mtime_nsec: 0,
        mode: 0o755,
        name: "d",
    });
    r.ctrl(dir).unwrap();
    r.r.answer_file(t(1), 2, FileAnswer::Accept { offset: 0 })
        .unwrap();
    r.drain();
    r.ctrl(end(2, 0)).unwrap();
    assert!(matches!(
        r.events.last(),
        Some(ReceiverEvent::FileComplete { file_id: 2, .. })
    ));
}

fn link(id: u64, name: &str) -> Control<'_> {
    Control::FileHeader(wire::FileHeader {
        target: b"t",
        sync: None,
        part: None,
        file_id: id,
        kind: EntryKind::Symlink,
        size: 1,
        mtime_sec: 0,
        mtime_nsec: 0,
        mode: 0o777,
        name,
    })
}

/// PROTOCOL.md §4.1: a link goes through a file's life with no data (answer, end of length
/// 0 without a digest, result), and its target reaches the application with the offer.
#[test]
fn a_link_is_offered_with_its_target_and_ends_with_no_data() {
    let mut r = rx();
    let bytes = msg(link(1, "l"), 0);
    r.r.handle_write(t(1), Imm::control(0).encode(), bytes.len() as u32)
        .unwrap();
    r.ctrl = 1;
    let offer = r.r.handle_control(t(1), &bytes).unwrap().expect("an offer");
    assert_eq!(
        (offer.header.kind, offer.header.target, offer.refusal),
        (EntryKind::Symlink, &b"t"[..], None)
    );
    r.r.answer_file(t(1), 1, FileAnswer::Accept { offset: 0 })
        .unwrap();
    r.drain();
    assert_eq!(r.ctrl(end(1, 0)), Ok(None));
    r.drain();
    assert!(r
        .events
        .iter()
        .any(|e| matches!(e, ReceiverEvent::FileComplete { file_id: 1, .. })));
}

/// PROTOCOL.md §4.1, §7: a link without `LINKS` agreed fails the session.
#[test]
// spec-test: [link.agreed]
fn a_link_needs_links_agreed() {
    let mut r = Rx::new(negotiated(
        4,
        Features::all() - Features::AUTH_PSK - Features::LINKS,
    ));
    let res = r.ctrl(link(1, "l"));
    r.assert_failed(res, Violation::BadLink);
}

/// PROTOCOL.md §4.1, §4.4: a directory's or a link's end carries no digest; one with a
/// digest (even an agreed kind) is refused, not passed on for "verification".
#[test]
// spec-test: [end.dir-digest]
fn a_directory_or_link_end_with_a_digest_is_refused() {
    let dir = Control::FileHeader(wire::FileHeader {
        target: &[],
        sync: None,
        part: None,
        file_id: 1,
        kind: EntryKind::Directory,
        size: 0,
        mtime_sec: 0,
        mtime_nsec: 0,
        mode: 0o755,
        name: "d",
    });
    for header in [dir, link(1, "l")] {
        let mut r = rx();
        assert_eq!(r.ctrl(header), Ok(None));
        r.r.answer_file(t(1), 1, FileAnswer::Accept { offset: 0 })
            .unwrap();
        r.drain();
        let res = r.ctrl(Control::FileEnd(wire::FileEnd {
            file_id: 1,
            length: 0,
            digest: Digest::new(DigestKind::Blake3, &[1; 32]).unwrap(),
        }));
        r.assert_failed(res, Violation::DirectoryDigest);
        assert!(
            !r.events
                .iter()
                .any(|e| matches!(e, ReceiverEvent::FileComplete { .. })),
            "{:?}",
            r.events
        );
    }
}

#[test]
fn a_complete_file_is_verified_then_resolved() {
    let mut r = rx();
    r.receiving(1, 5);
    let a = r.chunk(0, 5).unwrap();
    let d = Digest::new(DigestKind::Blake3, &[7; 32]).unwrap();
    r.ctrl(Control::FileEnd(wire::FileEnd {
        file_id: 1,
        length: 5,
        digest: d,
    }))
    .unwrap();
    r.r.chunk_consumed(t(1), a.seq).unwrap();
    r.drain();
    assert_eq!(
        r.events,
        [ReceiverEvent::FileComplete {
            file_id: 1,
            length: 5,
            digest: d
        }]
    );
    assert_eq!(r.r.open_files(), 1);
    r.r.file_verified(t(1), 1, FileStatus::DIGEST_MISMATCH)
        .unwrap();
    assert_eq!(
        r.r.file_verified(t(1), 1, FileStatus::OK),
        Err(Error::Usage(UsageError::UnknownFile)),
        "a verdict once"
    );
    r.drain();
    assert!(r.sent.contains(&Control::FileResult {
        file_id: 1,
        status: FileStatus::DIGEST_MISMATCH
    }));
    assert_eq!(r.r.open_files(), 0);
}

#[test]
// spec-test: [data.seq] [data.abort-skip]
fn the_sender_aborts_a_file_in_mid_stream() {
    let mut r = rx();
    r.receiving(1, 10 * u64::from(CHUNK));
    r.receiving(2, 5);
    let a0 = r.chunk(0, CHUNK).unwrap();
    r.ctrl(Control::FileAbort {
        file_id: 1,
        reason: AbortReason::READ_ERROR,
    })
    .unwrap();
    assert!(r.events.is_empty(), "chunk 0 is not consumed yet");
    r.r.chunk_consumed(t(1), a0.seq).unwrap();
    r.drain();
    // The next chunk is file 2's: the rest of file 1's numbers were skipped.
    let b = r.chunk(10, 5).unwrap();
    assert_eq!(b.file_id, 2);
    assert_eq!(
        r.events,
        [ReceiverEvent::FileDropped {
            file_id: 1,
            status: FileStatus::ABORTED,
            abort: Some(AbortReason::READ_ERROR)
        }]
    );
    // Skipped chunks count as consumed: the credit covers them.
    assert!(r.sent.contains(&Control::Credit { consumed: 10 }));
    assert!(r.sent.contains(&Control::FileResult {
        file_id: 1,
        status: FileStatus::ABORTED
    }));
    r.r.chunk_consumed(t(1), 10).unwrap();
}

#[test]
fn abort_of_a_file_that_is_not_the_current_stream() {
    let mut r = rx();
    r.receiving(1, 10);
    r.receiving(2, 10);
    let res = r.ctrl(Control::FileAbort {
        file_id: 2,
        reason: AbortReason::READ_ERROR,
    });
    r.assert_failed(res, Violation::UnknownFile(2));
}

#[test]
fn the_receiver_cancels_a_file() {
    let mut r = rx();
    r.receiving(1, 10 * u64::from(CHUNK));
    let a0 = r.chunk(0, CHUNK).unwrap();
    r.r.cancel_file(t(1), 1, FileStatus::NO_SPACE).unwrap();
    assert_eq!(
        r.r.cancel_file(t(1), 1, FileStatus::NO_SPACE),
        Err(Error::Usage(UsageError::UnknownFile)),
        "once"
    );
    assert_eq!(
        r.r.cancel_file(t(1), 9, FileStatus::NO_SPACE),
        Err(Error::Usage(UsageError::UnknownFile))
    );
    assert_eq!(r.kinds(), [wire::MsgKind::FileCancel]);
    // Chunks already on the way still arrive; then the sender's abort ends the stream.
    let a1 = r.chunk(1, CHUNK).unwrap();
    r.ctrl(Control::FileAbort {
        file_id: 1,
        reason: AbortReason::PEER_CANCELLED,
    })
    .unwrap();
    r.r.chunk_consumed(t(1), a0.seq).unwrap();
    r.r.chunk_consumed(t(1), a1.seq).unwrap();
    r.drain();
    assert_eq!(
        r.events,
        [ReceiverEvent::FileDropped {
            file_id: 1,
            status: FileStatus::NO_SPACE,
            abort: Some(AbortReason::PEER_CANCELLED)
        }]
    );
    assert!(r.sent.contains(&Control::FileResult {
        file_id: 1,
        status: FileStatus::NO_SPACE
    }));
}

#[test]
fn a_cancel_crossing_the_end_still_gets_the_cancel_status() {
    let mut r = rx();
    r.receiving(1, 5);
    let a = r.chunk(0, 5).unwrap();
    r.r.cancel_file(t(1), 1, FileStatus::IO).unwrap();
    r.ctrl(end(1, 5)).unwrap();
    r.r.chunk_consumed(t(1), a.seq).unwrap();
    let kinds = r.kinds();
    assert_eq!(
        kinds,
        [wire::MsgKind::FileResult, wire::MsgKind::Credit],
        "the cancel itself is moot once the stream ended"
    );
    assert_eq!(
        r.events,
        [ReceiverEvent::FileDropped {
            file_id: 1,
            status: FileStatus::IO,
            abort: None
        }]
    );
}

#[test]
fn cancel_needs_an_accepted_streaming_file_and_a_failure_status() {
    let mut r = rx();
    r.ctrl(header(1, 5, "a")).unwrap();
    assert_eq!(
        r.r.cancel_file(t(1), 1, FileStatus::NO_SPACE),
        Err(Error::Usage(UsageError::UnknownFile)),
        "not answered yet"
    );
    r.r.answer_file(t(1), 1, FileAnswer::Accept { offset: 0 })
        .unwrap();
    assert_eq!(
        r.r.cancel_file(t(1), 1, FileStatus::OK),
        Err(Error::Usage(UsageError::UnknownFile))
    );
    r.r.cancel_file(t(1), 1, FileStatus::NO_SPACE).unwrap();
    assert_eq!(
        r.kinds(),
        [wire::MsgKind::FileAnswer, wire::MsgKind::FileCancel],
        "the answer goes first"
    );
}

#[test]
// spec-test: [session.goodbye]
fn goodbye_with_open_files() {
    let mut r = rx();
    r.ctrl(header(1, 0, "a")).unwrap();
    let res = r.ctrl(Control::Goodbye);
    r.assert_failed(res, Violation::GoodbyeWithOpenFiles);
}

#[test]
fn goodbye_is_answered_and_closes() {
    let mut r = rx();
    r.ctrl(Control::Goodbye).unwrap();
    assert_eq!(r.kinds(), [wire::MsgKind::Goodbye]);
    assert_eq!(r.events, [ReceiverEvent::Closed]);
    assert!(r.r.is_ended());
}

#[test]
// spec-test: [msg.unexpected]
fn a_second_goodbye_or_a_header_after_goodbye() {
    let abort = Control::FileAbort {
        file_id: 1,
        reason: AbortReason::READ_ERROR,
    };
    for m in [Control::Goodbye, header(1, 0, "a"), end(1, 0), abort] {
        let mut r = rx();
        r.r.handle_write(t(1), Imm::control(0).encode(), 8).unwrap();
        r.r.handle_control(t(1), &msg(Control::Goodbye, 0)).unwrap();
        // Not drained: our goodbye is not out yet, the phase is PeerDone.
        let bytes = msg(m, 0);
        r.r.handle_write(t(1), Imm::control(1).encode(), bytes.len() as u32)
            .unwrap();
        let res = r.r.handle_control(t(1), &bytes);
        r.assert_failed(res, Violation::UnexpectedMessage(m.kind()));
    }
}

// ---- acks ----

#[test]
fn ack_beyond_messages_sent() {
    let mut r = rx();
    r.seen = 1; // claims to have processed a message never sent
    let res = r.ctrl(Control::KeepAlive);
    r.assert_failed(res, Violation::BadAck);
}

#[test]
// spec-test: [data.length] [ctrl.ack]
fn pure_acks_are_checked_and_empty() {
    let mut r = rx();
    r.receiving(1, 0); // one message (the answer) sent
    assert_eq!(
        r.r.handle_write(t(1), Imm::ack(1).encode(), 0),
        Ok(Incoming::Ack)
    );
    let res = r.r.handle_write(t(1), Imm::ack(3).encode(), 0);
    r.assert_failed(res, Violation::BadAck);
    let mut r = rx();
    let res = r.r.handle_write(t(1), Imm::ack(0).encode(), 1);
    r.assert_failed(
        res,
        Violation::BadWriteLength {
            expected: 0,
            got: 1,
        },
    );
}

#[test]
// spec-test: [ctrl.pure-ack]
fn a_pure_ack_goes_out_at_half_the_ring() {
    let mut r = rx();
    let depth = u32::from(r.r.negotiated().receiver_ctrl_depth);
    for i in 0..depth.div_ceil(2) {
        r.ctrl(Control::KeepAlive).unwrap();
        let kinds = r.kinds();
        if i + 1 < depth.div_ceil(2) {
            assert!(kinds.is_empty(), "after {} messages: {kinds:?}", i + 1);
        } else {
            assert_eq!(kinds, [wire::MsgKind::Ack]);
        }
    }
}

#[test]
fn messages_wait_for_the_senders_credit() {
    let mut r = rx();
    let depth = u32::from(r.r.negotiated().sender_ctrl_depth);
    let mut buf = [0u8; CTRL_MSG_MAX];
    // Keepalives every second while the sender acknowledges nothing: the receiver sends
    // depth − 1 of them and then waits.
    let mut sent = 0;
    for s in 1..=2 * u64::from(depth) {
        while let Some(out) = r.r.poll_output(t(s * 1000), &mut buf) {
            assert!(matches!(out, ReceiverOutput::Transmit(8)));
            sent += 1;
        }
    }
    assert_eq!(sent, depth - 1);
    assert_eq!(
        r.r.poll_timeout(),
        None,
        "no keepalive is due without credit"
    );
    // A pure ack of everything frees the credit.
    r.r.handle_write(t(40_000), Imm::ack(sent).encode(), 0)
        .unwrap();
    assert!(r.r.poll_output(t(40_000), &mut buf).is_some());
}

// ---- liveness ----

#[test]
// spec-test: [live.idle]
fn only_arrivals_keep_the_receiver_from_timing_out() {
    let cfg = Config {
        idle_timeout: Some(Duration::from_millis(5000)),
        name_hash_key: [0; 16],
    };
    let mut r = Rx::with_config(negotiated(4, Features::empty()), cfg);
    r.ctrl_at(t(4000), Control::KeepAlive).unwrap();
    // Local calls do not count.
    r.r.handle_timeout(t(8999));
    assert!(!r.r.is_ended());
    r.r.handle_timeout(t(9000));
    assert!(r.r.is_ended());
    r.drain();
    assert!(matches!(
        r.sent.last(),
        Some(Control::Error { code, .. }) if *code == ErrorCode::TIMEOUT
    ));
    assert_eq!(
        r.events.last(),
        Some(&ReceiverEvent::Failed(Failure::TimedOut))
    );
}

#[test]
// spec-test: [live.keepalive]
fn keepalives_go_out_when_nothing_else_did() {
    let mut r = rx();
    let mut buf = [0u8; CTRL_MSG_MAX];
    assert_eq!(r.r.poll_timeout(), Some(t(1000)));
    assert_eq!(r.r.poll_output(t(999), &mut buf), None);
    assert_eq!(
        r.r.poll_output(t(1000), &mut buf),
        Some(ReceiverOutput::Transmit(8))
    );
    assert_eq!(Control::decode(&buf[..8]).unwrap().1, Control::KeepAlive);
    assert_eq!(r.r.poll_timeout(), Some(t(2000)));
}

#[test]
fn peer_error_ends_the_receiver_without_a_reply() {
    let mut r = rx();
    r.ctrl(Control::Error {
        code: ErrorCode::CANCELLED,
        detail: 3,
        text: "user hit ^C",
    })
    .unwrap();
    assert!(r.sent.is_empty(), "no error answers an error");
    assert!(matches!(
        r.events.last(),
        Some(ReceiverEvent::Failed(Failure::PeerAborted(code, 3, text)))
            if *code == ErrorCode::CANCELLED && text.as_str() == "user hit ^C"
    ));
}

#[test]
fn local_abort_sends_an_error() {
    let mut r = rx();
    r.r.abort(t(1), ErrorCode::SHUTTING_DOWN);
    r.drain();
    assert!(matches!(
        r.sent.last(),
        Some(Control::Error { code, detail: 0, .. }) if *code == ErrorCode::SHUTTING_DOWN
    ));
    assert_eq!(
        r.events.last(),
        Some(&ReceiverEvent::Failed(Failure::Aborted(
            ErrorCode::SHUTTING_DOWN
        )))
    );
}

// ---- application misuse ----

#[test]
fn receiver_usage_errors_change_nothing() {
    let mut r = rx();
    r.ctrl(header(1, 10, "a")).unwrap();
    r.ctrl(header(2, 10, "b")).unwrap();
    let usage = |e| Err(Error::Usage(e));
    assert_eq!(
        r.r.answer_file(t(1), 2, FileAnswer::Accept { offset: 0 }),
        usage(UsageError::OutOfOrder)
    );
    assert_eq!(
        r.r.answer_file(t(1), 9, FileAnswer::Accept { offset: 0 }),
        usage(UsageError::UnknownFile)
    );
    assert_eq!(r.r.chunk_consumed(t(1), 0), usage(UsageError::OutOfOrder));
    assert_eq!(
        r.r.file_verified(t(1), 1, FileStatus::OK),
        usage(UsageError::UnknownFile)
    );
    r.r.answer_file(t(1), 1, FileAnswer::Accept { offset: 0 })
        .unwrap();
    assert_eq!(
        r.r.answer_file(t(1), 1, FileAnswer::Accept { offset: 0 }),
        usage(UsageError::OutOfOrder),
        "file 1 is answered; file 2 is next"
    );
    let a = r.chunk(0, 10);
    assert!(a.is_err(), "the answer was not sent yet: {a:?}");
}

#[test]
fn resume_needs_the_feature_alignment_and_fits_the_file() {
    let big = 3 * u64::from(CHUNK) + 5;
    for (features, offset, ok) in [
        (Features::RESUME, u64::from(CHUNK), true),
        (Features::RESUME, 3 * u64::from(CHUNK), true),
        (Features::RESUME, 100, false),
        (Features::RESUME, 4 * u64::from(CHUNK), false),
        (Features::empty(), u64::from(CHUNK), false),
        (Features::empty(), 0, true),
    ] {
        let mut r = Rx::new(negotiated(4, features));
        r.ctrl(header(1, big, "a")).unwrap();
        let res = r.r.answer_file(t(1), 1, FileAnswer::Accept { offset });
        if ok {
            assert_eq!(res, Ok(()), "{features:?} {offset}");
        } else {
            assert_eq!(
                res,
                Err(Error::Usage(UsageError::InvalidAnswer)),
                "{features:?} {offset}"
            );
        }
    }
}

#[test]
fn a_resumed_file_takes_only_its_remaining_chunks() {
    let mut r = Rx::new(negotiated(4, Features::RESUME));
    r.ctrl(header(1, 3 * u64::from(CHUNK) + 5, "a")).unwrap();
    r.r.answer_file(
        t(1),
        1,
        FileAnswer::Accept {
            offset: 2 * u64::from(CHUNK),
        },
    )
    .unwrap();
    r.drain();
    let a = r.chunk(0, CHUNK).unwrap();
    assert_eq!(a.file_offset, 2 * u64::from(CHUNK));
    let b = r.chunk(1, 5).unwrap();
    assert_eq!(b.file_offset, 3 * u64::from(CHUNK));
    r.ctrl(end(1, 3 * u64::from(CHUNK) + 5)).unwrap();
}

// ---- authentication ----

#[test]
fn without_a_key_a_session_is_authenticated_from_the_start() {
    assert!(rx().r.is_authenticated());
}

#[test]
// spec-test: [violation.error]
// spec-test: [psk.first] [psk.sender-proof]
fn with_a_key_the_proof_comes_first() {
    let mut neg = negotiated(4, Features::AUTH_PSK);
    neg.sender_proof = Some([4; 32]);
    let mut r = Rx::new(neg);
    let res = r.ctrl(header(1, 0, "a"));
    r.assert_failed(res, Violation::AuthMissing);
    let mut r = Rx::new(neg);
    let res = r.ctrl(Control::Auth { proof: [5; 32] });
    r.assert_failed(res, Violation::AuthFailed);
    let mut r = Rx::new(neg);
    let res = r.chunk(0, 1);
    r.assert_failed(res, Violation::AuthMissing);
    let mut r = Rx::new(neg);
    assert!(!r.r.is_authenticated(), "no proof yet");
    assert_eq!(r.ctrl(Control::Auth { proof: [4; 32] }), Ok(None));
    assert!(r.r.is_authenticated(), "proved");
    assert_eq!(r.ctrl(header(1, 0, "a")), Ok(None));
    let res = r.ctrl(Control::Auth { proof: [4; 32] });
    r.assert_failed(res, Violation::UnexpectedMessage(wire::MsgKind::Auth));
}

#[test]
fn answers_name_their_file_among_many_open() {
    let mut r = rx();
    for (id, name) in [(1, "a"), (2, "b"), (3, "c"), (4, "d")] {
        assert_eq!(r.ctrl(header(id, 0, name)).unwrap(), None);
    }
    let accept = FileAnswer::Accept { offset: 0 };
    // Later files are open but not next: out of order; ids never offered: unknown.
    for id in [2, 3, 4] {
        assert_eq!(
            r.r.answer_file(t(1), id, accept),
            Err(Error::Usage(UsageError::OutOfOrder)),
            "file {id}"
        );
    }
    for id in [0, 5, 99] {
        assert_eq!(
            r.r.answer_file(t(1), id, accept),
            Err(Error::Usage(UsageError::UnknownFile)),
            "file {id}"
        );
    }
    for id in 1..=4 {
        r.r.answer_file(t(1), id, accept).unwrap();
    }
}

fn part_header(id: u64, size: u64, shift: u8, index: u32) -> Control<'static> {
    Control::FileHeader(wire::FileHeader {
        sync: None,
        part: Some(Part { shift, index }),
        ..match header(id, size, "big") {
            Control::FileHeader(h) => h,
            _ => unreachable!(),
        }
    })
}

#[test]
// spec-test: [end.length]
fn a_part_carries_only_its_own_bytes() {
    // 3 chunks and a byte in all; part 1 of 2-chunk parts is chunks 2 and 3 (one byte).
    let size = 2 * u64::from(CHUNK) + 1;
    let mut r = rx();
    assert_eq!(r.ctrl(part_header(1, size, 13, 1)), Ok(None));
    r.r.answer_file(t(1), 1, FileAnswer::Accept { offset: 0 })
        .unwrap();
    assert!(r.kinds().contains(&wire::MsgKind::FileAnswer));
    let only = r.chunk(0, 1).unwrap();
    assert_eq!(
        (only.file_offset, only.len),
        (0, 1),
        "offsets within the part"
    );
    assert_eq!(
        r.ctrl(end(1, 1)),
        Ok(None),
        "the end carries the part's length"
    );
    r.r.chunk_consumed(t(1), 0).unwrap();
    r.drain();
    assert!(r.events.iter().any(|e| matches!(
        e,
        ReceiverEvent::FileComplete {
            file_id: 1,
            length: 1,
            ..
        }
    )));
    // Its end must say the part's length, not the file's.
    let mut r = rx();
    assert_eq!(r.ctrl(part_header(1, size, 12, 0)), Ok(None));
    r.r.answer_file(t(1), 1, FileAnswer::Accept { offset: 0 })
        .unwrap();
    assert!(r.kinds().contains(&wire::MsgKind::FileAnswer));
    r.chunk(0, CHUNK).unwrap();
    let res = r.ctrl(end(1, size));
    r.assert_failed(res, Violation::EndLengthMismatch);
}

#[test]
// spec-test: [part.agreed]
fn parts_need_lanes_and_whole_chunks() {
    let mut r = Rx::new(negotiated(
        4,
        Features::all() - Features::AUTH_PSK - Features::LANES,
    ));
    let res = r.ctrl(part_header(1, 1 << 20, 12, 0));
    r.assert_failed(res, Violation::BadPart);
    // A part smaller than a chunk would split chunks between parts.
    let mut r = rx();
    let res = r.ctrl(part_header(1, 1 << 20, 11, 0));
    r.assert_failed(res, Violation::Decode(DecodeError::BadField(Field::Part)));
    let mut big = negotiated(4, Features::all() - Features::AUTH_PSK);
    big.chunk_size = 1 << 16;
    big.ring.len = u64::from(big.chunk_size) * 4 + u64::from(big.receiver_ctrl_depth) * 4096;
    let mut r = Rx::new(big);
    let res = r.ctrl(part_header(1, 1 << 20, 15, 0));
    r.assert_failed(res, Violation::BadPart);
}

// ---- batches (`BATCH`) ----

/// A batch of `msgs` with `ack`.
fn batch_bytes(msgs: &[Control<'_>], ack: u32) -> Vec<u8> {
    let mut buf = [0u8; CTRL_MSG_MAX + 8];
    let mut b = wire::BatchBuilder::new(CTRL_MSG_MAX);
    for m in msgs {
        assert!(b.push(m, &mut buf));
    }
    let n = b.finish(&mut buf);
    buf[4..8].copy_from_slice(&ack.to_be_bytes());
    buf[..n].to_vec()
}

impl Rx {
    /// Writes a batch into the ring and announces it; returns its bytes.
    fn announce_batch(&mut self, msgs: &[Control<'_>]) -> Vec<u8> {
        let bytes = batch_bytes(msgs, self.seen);
        let n = self.ctrl;
        self.ctrl += 1;
        let i = self
            .r
            .handle_write(t(1), Imm::control(n).encode(), bytes.len() as u32)
            .unwrap();
        assert!(matches!(i, Incoming::Control { .. }));
        bytes
    }
}

#[test]
// spec-test: [batch.one]
fn a_batch_is_handled_one_message_per_call() {
    let mut r = rx();
    let bytes = r.announce_batch(&[header(1, 0, "a"), header(2, 0, "b"), Control::KeepAlive]);
    let mut offers = vec![];
    let mut calls = 0;
    while r.r.control_pending() {
        calls += 1;
        if let Some(o) = r.r.handle_control(t(1), &bytes).unwrap() {
            offers.push(o.header.file_id);
        }
        if r.r.control_pending() {
            // Not processed yet: the slot's bytes are still being read.
            assert_eq!(
                r.r.handle_write(t(1), Imm::control(1).encode(), 8),
                Err(Error::Usage(UsageError::ControlPending))
            );
        }
    }
    assert_eq!((calls, offers), (3, vec![1, 2]));
    assert_eq!(
        r.r.handle_control(t(1), &bytes),
        Err(Error::Usage(UsageError::NoControlPending))
    );
    // The batch counts as one message: the next message's ack says 1.
    for id in [1, 2] {
        r.r.answer_file(t(1), id, FileAnswer::Accept { offset: 0 })
            .unwrap();
    }
    let mut buf = [0u8; CTRL_MSG_MAX];
    let Some(ReceiverOutput::Transmit(n)) = r.r.poll_output(t(1), &mut buf) else {
        panic!("the answers go out")
    };
    let (ack, sent) = Control::decode(&buf[..n]).unwrap();
    assert_eq!(ack, 1);
    let Control::Batch(b) = sent else {
        panic!("two answers go as one batch: {sent:?}")
    };
    assert_eq!(b.iter().count(), 2);
}

#[test]
fn answers_results_and_credits_share_sends() {
    let mut r = rx();
    // Two one-chunk files: headers, answers, chunks, ends.
    for id in [1, 2] {
        r.ctrl(header(id, u64::from(CHUNK), &format!("f{id}")))
            .unwrap();
    }
    r.r.set_corked(true);
    for id in [1, 2] {
        r.r.answer_file(t(1), id, FileAnswer::Accept { offset: 0 })
            .unwrap();
    }
    r.drain();
    assert!(r.sent.is_empty(), "held while corked: {:?}", r.sent);
    r.r.set_corked(false);
    let before = r.seen;
    r.drain();
    assert_eq!(r.seen - before, 1, "both answers in one SEND");
    assert_eq!(
        r.kinds(),
        [wire::MsgKind::FileAnswer, wire::MsgKind::FileAnswer]
    );
    r.r.set_corked(true);
    for (id, seq) in [(1, 0), (2, 1)] {
        let a = r.chunk(seq, CHUNK).unwrap();
        r.r.chunk_consumed(t(1), a.seq).unwrap();
        r.ctrl(end(id, u64::from(CHUNK))).unwrap();
    }
    // The drain gives the files' completion events; verdicts follow.
    r.drain();
    for id in [1, 2] {
        r.r.file_verified(t(1), id, FileStatus::OK).unwrap();
    }
    r.r.set_corked(false);
    let before = r.seen;
    let kinds = r.kinds();
    assert_eq!(
        r.seen - before,
        1,
        "results and credit in one SEND: {kinds:?}"
    );
    assert!(kinds.contains(&wire::MsgKind::Credit), "{kinds:?}");
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == wire::MsgKind::FileResult)
            .count(),
        2
    );
}

#[test]
// spec-test: [batch.agreed] [batch.last-slot]
fn a_batch_may_not_take_the_last_slot_nor_come_unagreed() {
    let mut r = rx();
    let depth = u32::from(r.r.negotiated().receiver_ctrl_depth);
    unreported_keepalives(&mut r, depth - 1);
    let bytes = r.announce_batch(&[Control::KeepAlive, Control::KeepAlive]);
    let res = r.r.handle_control(t(1), &bytes);
    r.assert_failed(res, Violation::CtrlOverrun);

    let mut plain = Rx::new(negotiated(
        4,
        Features::all() - Features::AUTH_PSK - Features::BATCH,
    ));
    let bytes = plain.announce_batch(&[Control::KeepAlive, Control::KeepAlive]);
    let res = plain.r.handle_control(t(1), &bytes);
    plain.assert_failed(res, Violation::UnexpectedMessage(wire::MsgKind::Batch));
}

#[test]
fn a_bad_message_inside_a_batch_fails_the_session() {
    let mut r = rx();
    // A FileEnd for a file never offered, after a good header.
    let bytes = r.announce_batch(&[header(1, 0, "a"), end(7, 0)]);
    assert!(r.r.handle_control(t(1), &bytes).unwrap().is_some());
    let res = r.r.handle_control(t(1), &bytes);
    r.assert_failed(res, Violation::UnknownFile(7));
}

// ---- sync (`SYNC`) ----

fn sync_header(id: u64, size: u64, name: &str, dry_run: bool) -> Control<'_> {
    let Control::FileHeader(mut h) = header(id, size, name) else {
        unreachable!()
    };
    h.sync = Some(SyncCheck {
        content: None,
        dry_run,
        delete: false,
    });
    Control::FileHeader(h)
}

#[test]
// spec-test: [sync.agreed]
fn a_sync_header_without_sync_agreed_fails_the_session() {
    let mut r = Rx::new(negotiated(
        4,
        Features::all() - Features::AUTH_PSK - Features::SYNC,
    ));
    let res = r.ctrl(sync_header(1, 10, "a", false));
    r.assert_failed(res, Violation::BadSync);
}

#[test]
fn an_entry_in_sync_closes_at_its_answer() {
    let mut r = rx();
    r.ctrl(sync_header(1, 10, "a", false)).unwrap();
    r.ctrl(sync_header(2, 10, "b", true)).unwrap();
    r.r.answer_file(t(1), 1, FileAnswer::InSync(Changes::MTIME))
        .unwrap();
    r.r.answer_file(t(1), 2, FileAnswer::WouldSend(Changes::NEW))
        .unwrap();
    r.drain();
    assert_eq!(
        r.sent,
        [
            Control::FileAnswer {
                file_id: 1,
                answer: FileAnswer::InSync(Changes::MTIME)
            },
            Control::FileAnswer {
                file_id: 2,
                answer: FileAnswer::WouldSend(Changes::NEW)
            }
        ]
    );
    // Nothing more is due for either: no data, no end, no result; the names are free.
    assert_eq!(r.ctrl(sync_header(3, 10, "a", false)), Ok(None));
    let res = r.chunk(0, 10);
    r.assert_failed(res, Violation::UnexpectedChunk);
}

#[test]
// spec-test: [answer.sync]
fn the_application_answers_only_what_fits_the_header() {
    let bad = Err(Error::Usage(UsageError::InvalidAnswer));
    let changed = FileAnswer::AcceptChanged {
        offset: 0,
        changes: Changes::SIZE,
    };
    // (header sync request, answer, fits)
    for (sync, dry_run, answer, ok) in [
        (false, false, FileAnswer::InSync(Changes::empty()), false),
        (false, false, changed, false),
        (true, false, changed, true),
        (true, false, FileAnswer::InSync(Changes::SIZE), false),
        (true, false, FileAnswer::WouldSend(Changes::SIZE), false),
        (true, true, FileAnswer::Accept { offset: 0 }, false),
        (true, true, changed, false),
        (true, true, FileAnswer::WouldSend(Changes::SIZE), true),
        (true, true, FileAnswer::InSync(Changes::MODE), true),
    ] {
        let mut r = rx();
        let h = if sync {
            sync_header(1, 10, "a", dry_run)
        } else {
            header(1, 10, "a")
        };
        r.ctrl(h).unwrap();
        let res = r.r.answer_file(t(1), 1, answer);
        if ok {
            assert_eq!(res, Ok(()), "{sync} {dry_run} {answer:?}");
        } else {
            assert_eq!(res, bad, "{sync} {dry_run} {answer:?}");
        }
    }
    // A refused name gets a reject, whatever it asked.
    let mut r = rx();
    assert_eq!(
        r.ctrl(sync_header(1, 10, ".rdmaft-x", false)),
        Ok(Some(FileRejectReason::INVALID_NAME))
    );
    assert_eq!(
        r.r.answer_file(t(1), 1, FileAnswer::InSync(Changes::empty())),
        bad
    );
}

#[test]
fn a_changed_file_is_received_like_any_other() {
    let mut r = rx();
    r.ctrl(sync_header(1, 10, "a", false)).unwrap();
    r.r.answer_file(
        t(1),
        1,
        FileAnswer::AcceptChanged {
            offset: 0,
            changes: Changes::NEW,
        },
    )
    .unwrap();
    r.drain();
    let a = r.chunk(0, 10).unwrap();
    assert_eq!((a.file_id, a.len), (1, 10));
}

#[test]
fn a_content_check_needs_an_agreed_digest() {
    let mut r = Rx::new(negotiated(
        4,
        Features::SYNC | Features::DIGEST_XXH3_128 | Features::RESUME,
    ));
    let Control::FileHeader(mut h) = header(1, 10, "a") else {
        unreachable!()
    };
    h.sync = Some(SyncCheck {
        content: Some(Digest::new(DigestKind::Blake3, &[3; 32]).unwrap()),
        dry_run: false,
        delete: false,
    });
    let res = r.ctrl(Control::FileHeader(h));
    r.assert_failed(res, Violation::DigestNotNegotiated);
    // The agreed kind is compared by the application: the header reaches it whole.
    let mut r = Rx::new(negotiated(4, Features::SYNC | Features::DIGEST_XXH3_128));
    let d = Digest::new(DigestKind::Xxh3_128, &[3; 16]).unwrap();
    h.sync = Some(SyncCheck {
        content: Some(d),
        dry_run: false,
        delete: false,
    });
    let bytes = msg(Control::FileHeader(h), 0);
    r.r.handle_write(t(1), Imm::control(0).encode(), bytes.len() as u32)
        .unwrap();
    let offer = r.r.handle_control(t(1), &bytes).unwrap().unwrap();
    assert_eq!(offer.header.sync.and_then(|s| s.content), Some(d));
}

#[test]
// spec-test: [sync.agreed]
fn a_delete_needs_delete_agreed_and_is_answered_pruned() {
    let dir = |id| {
        Control::FileHeader(wire::FileHeader {
            target: &[],
            sync: Some(SyncCheck {
                delete: true,
                ..SyncCheck::default()
            }),
            part: None,
            file_id: id,
            kind: EntryKind::Directory,
            size: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
            mode: 0o700,
            name: "d",
        })
    };
    let mut r = Rx::new(negotiated(4, Features::SYNC | Features::RESUME));
    let res = r.ctrl(dir(1));
    r.assert_failed(res, Violation::BadSync);
    let mut r = rx();
    r.ctrl(dir(1)).unwrap();
    assert_eq!(
        r.r.answer_file(t(1), 1, FileAnswer::InSync(Changes::empty())),
        Err(Error::Usage(UsageError::InvalidAnswer))
    );
    let pruned = FileAnswer::Pruned {
        changes: Changes::NEW,
        deleted: 0,
    };
    r.r.answer_file(t(1), 1, pruned).unwrap();
    r.drain();
    assert_eq!(
        r.sent,
        [Control::FileAnswer {
            file_id: 1,
            answer: pruned
        }]
    );
    // Closed: the name is free again.
    assert_eq!(r.ctrl(dir(2)), Ok(None));
}

/// The bytes of a plain empty file's header named `name`.
fn header_bytes_named(name: &str) -> Vec<u8> {
    msg(header(1, 0, name), 0)
}

/// Writes `bytes` into a fresh receiver as its first control message; returns why the
/// name was refused, after checking that the session failed (error sent, `Failed`, ended).
fn refused_name(bytes: &[u8]) -> NameError {
    let mut r = Receiver::new(
        negotiated(4, Features::all() - Features::AUTH_PSK),
        Config::default(),
        Store::new(),
        t(0),
    )
    .unwrap();
    r.handle_write(t(1), Imm::control(0).encode(), bytes.len() as u32)
        .unwrap();
    let res = r.handle_control(t(1), bytes);
    let Err(Error::Violation(v @ Violation::Decode(DecodeError::InvalidName(why)))) = res else {
        panic!("{res:?}");
    };
    let mut buf = [0u8; CTRL_MSG_MAX];
    let (mut error_sent, mut failed) = (false, false);
    while let Some(out) = r.poll_output(t(1), &mut buf) {
        match out {
            ReceiverOutput::Transmit(n) => {
                error_sent |= matches!(
                    Control::decode(&buf[..n]),
                    Ok((_, Control::Error { code, detail, .. }))
                        if code == v.error_code() && detail == v.code()
                );
            }
            ReceiverOutput::Event(e) => {
                failed |= e == ReceiverEvent::Failed(Failure::Violation(v));
            }
        }
    }
    assert!(error_sent && failed && r.is_ended(), "{why:?}");
    why
}

/// [name.valid]: every kind of bad name in a header fails the receiver's session
/// (`InvalidName`), not only the file.
#[test]
// spec-test: [name.valid]
fn a_header_with_a_bad_name_fails_the_receivers_session() {
    let long = "a".repeat(MAX_NAME_LEN + 1);
    let long_component = format!("d/{}", "a".repeat(MAX_COMPONENT_LEN + 1));
    for (name, why) in [
        ("", NameError::Empty),
        (long.as_str(), NameError::TooLong),
        (long_component.as_str(), NameError::TooLong),
        ("a\u{1}b", NameError::Control),
        ("a\u{7f}", NameError::Control),
        ("/etc/passwd", NameError::Absolute),
        ("a//b", NameError::EmptyComponent),
        ("a/./b", NameError::EmptyComponent),
        ("a/../b", NameError::ParentDir),
    ] {
        assert_eq!(refused_name(&header_bytes_named(name)), why, "{name:?}");
    }
    // Not UTF-8: a header's name bytes patched after encoding.
    let mut bytes = header_bytes_named("ab");
    let at = bytes.len() - 2;
    bytes[at] = 0xff;
    assert_eq!(refused_name(&bytes), NameError::NotUtf8);
    // The longest name and component are fine.
    let mut longest = vec![b'a'; MAX_NAME_LEN];
    for i in (MAX_COMPONENT_LEN..MAX_NAME_LEN).step_by(MAX_COMPONENT_LEN + 1) {
        longest[i] = b'/';
    }
    let longest = String::from_utf8(longest).unwrap();
    let mut r = Receiver::new(
        negotiated(4, Features::all() - Features::AUTH_PSK),
        Config::default(),
        Store::new(),
        t(0),
    )
    .unwrap();
    let bytes = header_bytes_named(&longest);
    r.handle_write(t(1), Imm::control(0).encode(), bytes.len() as u32)
        .unwrap();
    assert!(r.handle_control(t(1), &bytes).unwrap().is_some());
}

/// [batch.one] A batch is one message for the receiver's acks, and its slot counts as
/// processed only after its last inner message: an answer sent between the batch's two
/// headers reports nothing processed yet, the one after them reports one message.
#[test]
// spec-test: [batch.one]
fn a_batch_is_reported_processed_once_after_its_last_message() {
    let mut r = Rx::new(negotiated(4, Features::BATCH));
    let bytes = r.announce_batch(&[header(1, 0, "a"), header(2, 0, "b")]);
    let mut buf = [0u8; CTRL_MSG_MAX];
    // The ack field of the next message the receiver sends.
    let mut next_ack = |r: &mut Receiver<Store>| match r.poll_output(t(1), &mut buf) {
        Some(ReceiverOutput::Transmit(len)) => Control::decode(&buf[..len]).unwrap().0,
        other => panic!("expected a message, got {other:?}"),
    };
    for (id, ack) in [(1, 0), (2, 1)] {
        let offer = r.r.handle_control(t(1), &bytes).unwrap().unwrap();
        assert_eq!(offer.header.file_id, id);
        r.r.answer_file(t(1), id, FileAnswer::Reject(FileRejectReason::EXISTS))
            .unwrap();
        assert_eq!(next_ack(&mut r.r), ack, "the answer to file {id}");
    }
    assert!(!r.r.control_pending());
}

// ---- errors ----

/// [error.codes] An Error of a code this crate does not know decodes with that code and its
/// detail, and goes to the receiver's failure as sent.
#[test]
// spec-test: [error.codes]
fn an_error_of_an_unknown_code_is_carried() {
    let code = ErrorCode(0xbeef);
    assert_eq!(code.name(), None, "0xbeef must be unknown");
    let error = Control::Error {
        code,
        detail: 0x1234,
        text: "from the future",
    };
    assert_eq!(Control::decode(&msg(error, 0)), Ok((0, error)));
    let mut r = Rx::new(negotiated(4, Features::empty()));
    assert_eq!(r.ctrl(error), Ok(None));
    assert!(
        matches!(r.events.last(), Some(ReceiverEvent::Failed(Failure::PeerAborted(c, 0x1234, text)))
            if *c == code && text.as_str() == "from the future"),
        "{:?}",
        r.events
    );
}
