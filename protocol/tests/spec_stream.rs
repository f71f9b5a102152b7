//! Tests written for requirements of PROTOCOL.md (the data stream, control messages, batches
//! and flow control) that no other test covered; each names the requirement it checks.

use rdmaft_protocol::*;

const CHUNK: u32 = 4096;
type Store = ArrayStorage<4, 64>;

fn t(ms: u64) -> Instant {
    Instant::from_nanos(ms * 1_000_000)
}

fn negotiated(features: Features) -> Negotiated {
    let ctrl = min_ctrl_depth(4);
    Negotiated {
        group: u32::from(features.contains(Features::LANES)),
        features,
        flags: AcceptFlags::empty(),
        chunk_size: CHUNK,
        window: 4,
        sender_ctrl_depth: ctrl,
        receiver_ctrl_depth: ctrl,
        max_open_files: 4,
        keepalive_ms: 1000,
        ring: RingInfo {
            addr: 0x10000,
            len: u64::from(CHUNK * 4) + u64::from(ctrl) * 4096,
            rkey: 1,
        },
        sender_proof: None,
    }
}

fn msg(m: Control<'_>, ack: u32) -> Vec<u8> {
    let mut buf = [0u8; CTRL_MSG_MAX];
    let n = m.encode(ack, &mut buf).unwrap();
    buf[..n].to_vec()
}

/// Drains the sender; returns the control messages it wrote (each decoded: kind, detail of
/// an error) and counts them in `seen`, as a receiver that processes each at once would.
fn drain(s: &mut Sender<Store>, seen: &mut u32) -> Vec<(wire::MsgKind, Option<u16>)> {
    let mut buf = [0u8; CTRL_MSG_MAX];
    let mut written = vec![];
    while let Some(out) = s.poll_output(t(1), &mut buf) {
        if let SenderOutput::Control(c) = out {
            *seen += 1;
            let m = Control::decode(&buf[..c.len]).unwrap().1;
            let detail = match m {
                Control::Error { detail, .. } => Some(detail),
                _ => None,
            };
            written.push((m.kind(), detail));
        }
    }
    written
}

/// [data.seq-space] Every accepted file of `i64::MAX` bytes takes 2⁵¹ sequence numbers: the
/// session's 2⁶² are used up by 2,048 of them (each aborted, so that the next can be offered),
/// and the sender fails on the accept of one more (`SeqSpaceExhausted`).
#[test]
// spec-test: [data.seq-space]
fn a_sender_fails_on_an_accept_past_the_sequence_space() {
    let mut s = Sender::new(
        negotiated(Features::empty()),
        Config::default(),
        Store::new(),
        t(0),
    )
    .unwrap();
    let mut seen = 0;
    let size = i64::MAX as u64;
    let limit = MAX_SESSION_CHUNKS / size.div_ceil(u64::from(CHUNK));
    assert_eq!(limit, 2048);
    for id in 0..=limit {
        let info = FileInfo {
            target: &[],
            sync: None,
            part: None,
            file_id: id,
            kind: EntryKind::File,
            size,
            mtime_sec: 0,
            mtime_nsec: 0,
            mode: 0o644,
            name: "f",
        };
        s.start_file(t(1), &info).unwrap();
        drain(&mut s, &mut seen);
        s.abort_file(t(1), id, AbortReason::READ_ERROR).unwrap();
        let accept = Control::FileAnswer {
            file_id: id,
            answer: FileAnswer::Accept { offset: 0 },
        };
        let res = s.handle_control(t(1), &msg(accept, seen));
        if id == limit {
            let v = Violation::SeqSpaceExhausted;
            assert_eq!(res, Err(Error::Violation(v)));
            let written = drain(&mut s, &mut seen);
            assert_eq!(written, [(wire::MsgKind::Error, Some(v.code()))]);
            assert!(s.is_ended());
            return;
        }
        res.unwrap();
        let written = drain(&mut s, &mut seen);
        assert!(
            written.contains(&(wire::MsgKind::FileAbort, None)),
            "file {id}: {written:?}"
        );
        let result = Control::FileResult {
            file_id: id,
            status: FileStatus::ABORTED,
        };
        s.handle_control(t(1), &msg(result, seen)).unwrap();
        drain(&mut s, &mut seen);
        assert_eq!(s.open_files(), 0, "file {id}");
    }
    unreachable!("the loop returns at the limit");
}

/// [batch.one] A batch is one message for the receiver's acks, and its slot counts as
/// processed only after its last inner message: an answer sent between the batch's two
/// headers reports nothing processed yet, the one after them reports one message.
#[test]
// spec-test: [batch.one]
fn a_batch_is_reported_processed_once_after_its_last_message() {
    let mut r = Receiver::new(
        negotiated(Features::BATCH),
        Config::default(),
        Store::new(),
        t(0),
    )
    .unwrap();
    let header = |file_id, name| {
        Control::FileHeader(wire::FileHeader {
            target: &[],
            sync: None,
            part: None,
            file_id,
            kind: EntryKind::File,
            size: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
            mode: 0o600,
            name,
        })
    };
    let mut bytes = [0u8; CTRL_MSG_MAX];
    let mut b = wire::BatchBuilder::new(CTRL_MSG_MAX);
    assert!(b.push(&header(1, "a"), &mut bytes));
    assert!(b.push(&header(2, "b"), &mut bytes));
    let n = b.finish(&mut bytes);
    let i = r
        .handle_write(t(1), Imm::control(0).encode(), n as u32)
        .unwrap();
    assert!(matches!(i, Incoming::Control { .. }), "{i:?}");
    let mut buf = [0u8; CTRL_MSG_MAX];
    // The ack field of the next message the receiver sends.
    let mut next_ack = |r: &mut Receiver<Store>| match r.poll_output(t(1), &mut buf) {
        Some(ReceiverOutput::Transmit(len)) => Control::decode(&buf[..len]).unwrap().0,
        other => panic!("expected a message, got {other:?}"),
    };
    for (id, ack) in [(1, 0), (2, 1)] {
        let offer = r.handle_control(t(1), &bytes[..n]).unwrap().unwrap();
        assert_eq!(offer.header.file_id, id);
        r.answer_file(t(1), id, FileAnswer::Reject(FileRejectReason::EXISTS))
            .unwrap();
        assert_eq!(next_ack(&mut r), ack, "the answer to file {id}");
    }
    assert!(!r.control_pending());
}
