//! The receiver's credit rules (PROTOCOL.md §5.1), driven by hand.

use rdmaft_protocol::*;

const CHUNK: u32 = 64;

fn receiving(window: u32) -> Receiver {
    let neg = Negotiated {
        features: Features::empty(),
        chunk_size: CHUNK,
        window,
        sender_ctrl_depth: 64,
        receiver_ctrl_depth: MIN_RECEIVER_CTRL_DEPTH,
        ring: RingInfo {
            addr: 0,
            len: u64::from(CHUNK * window),
            rkey: 1,
        },
    };
    let mut r = Receiver::new(neg, None, Instant::ZERO).unwrap();
    let mut buf = [0u8; CTRL_MSG_MAX];
    let header = Control::FileHeader(wire::FileHeader {
        file_id: 1,
        size: 1 << 30,
        mtime_sec: 0,
        mtime_nsec: 0,
        mode: 0,
        name: "big",
    });
    let n = header.encode(0, &mut buf).unwrap();
    r.handle_control(Instant::ZERO, &buf[..n]).unwrap();
    r.answer_file(Instant::ZERO, 1, FileAnswer::Accept { offset: 0 })
        .unwrap();
    assert_eq!(credits(&mut r), Vec::<u64>::new()); // drains the accept
    r
}

/// Drains; returns the `consumed` value of every credit sent.
fn credits(r: &mut Receiver) -> Vec<u64> {
    let mut buf = [0u8; CTRL_MSG_MAX];
    let mut out = vec![];
    while let Some(o) = r.poll_output(&mut buf) {
        if let ReceiverOutput::Transmit(n) = o {
            if let (_, Control::Credit { consumed }) = Control::decode(&buf[..n]).unwrap() {
                out.push(consumed);
            }
        }
    }
    out
}

#[test]
fn credits_wait_for_a_quarter_window() {
    let mut r = receiving(8);
    for seq in 0..4 {
        r.handle_chunk(Instant::ZERO, seq as u32, CHUNK).unwrap();
    }
    r.chunk_consumed(Instant::ZERO, 0).unwrap();
    assert!(
        credits(&mut r).is_empty(),
        "1 < window/4 and the sender is not blocked"
    );
    r.chunk_consumed(Instant::ZERO, 1).unwrap();
    assert_eq!(credits(&mut r), [2]);
}

#[test]
fn a_slow_application_still_gets_batched_credits() {
    let mut r = receiving(8);
    for seq in 0..8 {
        r.handle_chunk(Instant::ZERO, seq as u32, CHUNK).unwrap();
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
fn window_one_credits_every_chunk() {
    let mut r = receiving(1);
    for seq in 0..3u64 {
        r.handle_chunk(Instant::ZERO, seq as u32, CHUNK).unwrap();
        r.chunk_consumed(Instant::ZERO, seq).unwrap();
        assert_eq!(credits(&mut r), [seq + 1]);
    }
}
