//! The credit rules (PROTOCOL.md §5.1 chunks, §5.2 control messages), driven by hand.

use rdmaft_protocol::*;

const CHUNK: u32 = 4096;

fn receiving(window: u32) -> Receiver<ArrayStorage<4, 64>> {
    let ctrl = min_ctrl_depth(4);
    let neg = Negotiated {
        group: u32::from((Features::empty()).contains(Features::LANES)),

        features: Features::empty(),
        flags: AcceptFlags::empty(),
        chunk_size: CHUNK,
        window,
        sender_ctrl_depth: MAX_CTRL_DEPTH,
        receiver_ctrl_depth: ctrl,
        max_open_files: 4,
        keepalive_ms: 1000,
        ring: RingInfo {
            addr: 0,
            len: u64::from(CHUNK * window) + u64::from(ctrl) * 4096,
            rkey: 1,
        },
        sender_proof: None,
    };
    let mut r = Receiver::new(neg, Config::default(), ArrayStorage::new(), Instant::ZERO).unwrap();
    let mut buf = [0u8; CTRL_MSG_MAX];
    let header = Control::FileHeader(wire::FileHeader {
        target: &[],
        sync: None,
        part: None,
        file_id: 1,
        kind: EntryKind::File,
        size: 1 << 40,
        mtime_sec: 0,
        mtime_nsec: 0,
        mode: 0,
        name: "big",
    });
    let n = header.encode(0, &mut buf).unwrap();
    r.handle_write(Instant::ZERO, Imm::control(0).encode(), n as u32)
        .unwrap();
    r.handle_control(Instant::ZERO, &buf[..n]).unwrap();
    r.answer_file(Instant::ZERO, 1, FileAnswer::Accept { offset: 0 })
        .unwrap();
    assert_eq!(credits(&mut r), Vec::<u64>::new()); // drains the accept
    r
}

/// Drains; returns the `consumed` value of every credit sent.
fn credits(r: &mut Receiver<ArrayStorage<4, 64>>) -> Vec<u64> {
    let mut buf = [0u8; CTRL_MSG_MAX];
    let mut out = vec![];
    while let Some(o) = r.poll_output(Instant::ZERO, &mut buf) {
        if let ReceiverOutput::Transmit(n) = o {
            if let (_, Control::Credit { consumed }) = Control::decode(&buf[..n]).unwrap() {
                out.push(consumed);
            }
        }
    }
    out
}

fn arrive(r: &mut Receiver<ArrayStorage<4, 64>>, seq: u64) {
    let i = r
        .handle_write(Instant::ZERO, Imm::chunk(seq).encode(), CHUNK)
        .unwrap();
    assert!(matches!(i, Incoming::Chunk(a) if a.seq == seq));
}

#[test]
// spec-test: [credit.send]
fn credits_wait_for_a_quarter_window() {
    let mut r = receiving(8);
    for seq in 0..4 {
        arrive(&mut r, seq);
    }
    r.chunk_consumed(Instant::ZERO, 0).unwrap();
    assert!(credits(&mut r).is_empty(), "1 < window/4");
    r.chunk_consumed(Instant::ZERO, 1).unwrap();
    assert_eq!(credits(&mut r), [2]);
}

#[test]
// spec-test: [credit.send]
fn a_slow_application_still_gets_batched_credits() {
    let mut r = receiving(8);
    for seq in 0..8 {
        arrive(&mut r, seq);
    }
    // The sender has used its whole window and the application consumes one by one: a
    // credit every 2 chunks (window / 4), not one per chunk.
    for seq in 0..8 {
        r.chunk_consumed(Instant::ZERO, seq).unwrap();
        let expected: &[u64] = if (seq + 1) % 2 == 0 { &[seq + 1] } else { &[] };
        assert_eq!(credits(&mut r), expected, "after consuming chunk {seq}");
    }
}

#[test]
// spec-test: [credit.send]
fn small_windows_credit_every_chunk() {
    for window in [1, 2, 3, 7] {
        let mut r = receiving(window);
        let every = u64::from(window / 4).max(1);
        for seq in 0..10u64 {
            arrive(&mut r, seq);
            r.chunk_consumed(Instant::ZERO, seq).unwrap();
            let expected: Vec<u64> = if (seq + 1) % every == 0 {
                vec![seq + 1]
            } else {
                vec![]
            };
            assert_eq!(credits(&mut r), expected, "window {window} chunk {seq}");
        }
    }
}

/// §5.2 at the boundary, with both real machines and no acks at all: the sender writes
/// ordinary messages until its credit leaves only the last slot, then its final Error takes
/// that slot; the receiver refuses none of them.
#[test]
// spec-test: [ctrl.credit]
fn a_correct_sender_fills_the_control_credit_and_is_never_refused() {
    let ctrl = min_ctrl_depth(4);
    let neg = Negotiated {
        group: u32::from((Features::empty()).contains(Features::LANES)),

        features: Features::empty(),
        flags: AcceptFlags::empty(),
        chunk_size: CHUNK,
        window: 4,
        sender_ctrl_depth: ctrl,
        receiver_ctrl_depth: ctrl,
        max_open_files: 4,
        keepalive_ms: 1,
        ring: RingInfo {
            addr: 0,
            len: u64::from(CHUNK * 4) + u64::from(ctrl) * 4096,
            rkey: 1,
        },
        sender_proof: None,
    };
    let config = Config::default();
    let store = ArrayStorage::<4, 64>::new;
    let mut s = Sender::new(neg, config, store(), Instant::ZERO).unwrap();
    let mut r = Receiver::new(neg, config, store(), Instant::ZERO).unwrap();
    let mut buf = [0u8; CTRL_MSG_MAX];
    let mut written = Vec::new();
    // A keepalive each millisecond; the receiver's answers (its acks) are never delivered.
    for ms in 1..=3 * u64::from(ctrl) {
        let now = Instant::from_nanos(ms * 1_000_000);
        if ms == 3 * u64::from(ctrl) {
            s.abort(now, ErrorCode::CANCELLED);
        }
        while let Some(out) = s.poll_output(now, &mut buf) {
            if let SenderOutput::Control(c) = out {
                let i = r.handle_write(now, c.imm, c.len as u32);
                assert!(matches!(i, Ok(Incoming::Control { .. })), "{i:?}");
                r.handle_control(now, &buf[..c.len]).unwrap();
                written.push(Control::decode(&buf[..c.len]).unwrap().1.kind());
            }
        }
    }
    let keepalives = written.iter().filter(|k| **k == wire::MsgKind::KeepAlive);
    assert_eq!(keepalives.count(), usize::from(ctrl) - 1);
    assert_eq!(written.last(), Some(&wire::MsgKind::Error), "{written:?}");
    assert_eq!(written.len(), usize::from(ctrl));
}
