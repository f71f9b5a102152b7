//! Tests that need the private state of both roles: what happens after 2³² control messages,
//! which no test can reach by sending them (test hooks skip the counters ahead).

use crate::{
    min_ctrl_depth, AcceptFlags, ArrayStorage, Config, CtrlBuf, Features, Incoming, Instant,
    Negotiated, Receiver, ReceiverOutput, RingInfo, Sender, SenderOutput, CTRL_MSG_MAX,
    DEFAULT_OPEN_FILES,
};

/// The default control depth: 2³² is not a multiple of it.
const DEPTH: u16 = min_ctrl_depth(DEFAULT_OPEN_FILES);
type Store = ArrayStorage<64, 1024>;

fn negotiated() -> Negotiated {
    Negotiated {
        group: u32::from((Features::empty()).contains(Features::LANES)),

        features: Features::empty(),
        flags: AcceptFlags::empty(),
        chunk_size: 4096,
        window: 4,
        sender_ctrl_depth: DEPTH,
        receiver_ctrl_depth: DEPTH,
        max_open_files: DEFAULT_OPEN_FILES,
        keepalive_ms: 1000,
        ring: RingInfo {
            addr: 0x10000,
            len: 4 * 4096 + u64::from(DEPTH) * CTRL_MSG_MAX as u64,
            rkey: 1,
        },
        sender_proof: None,
    }
}

/// Keepalives (and the acks they bring) between the two roles from message
/// 2³² − 2·depth − 3 to 2³² + 3·depth: each message goes to slot `n mod depth` at both, as
/// PROTOCOL.md §3.3 says, and not to `(n mod 2³²) mod depth`.
#[test]
// spec-test: [ctrl.slot]
fn control_slots_stay_n_mod_depth_past_two_to_the_32_messages() {
    let depth = u64::from(DEPTH);
    assert_ne!(
        (1u64 << 32) % depth,
        0,
        "the test needs a depth 2^32 is not a multiple of"
    );
    let neg = negotiated();
    let config = Config::default();
    let mut s = Sender::new(neg, config, Store::new(), Instant::ZERO).unwrap();
    let mut r = Receiver::new(neg, config, Store::new(), Instant::ZERO).unwrap();
    let start = (1u64 << 32) - 2 * depth - 3;
    s.skip_control_messages(start);
    r.skip_control_messages(start);
    let end = (1u64 << 32) + 3 * depth;
    let (mut n, mut ms) = (start, 0u64);
    let mut buf: CtrlBuf = [0; CTRL_MSG_MAX];
    let mut rbuf: CtrlBuf = [0; CTRL_MSG_MAX];
    while n < end {
        ms += u64::from(neg.keepalive_ms);
        assert!(ms < 100 * end.saturating_sub(start) * 1000, "no progress");
        let now = Instant::from_nanos(ms * 1_000_000);
        while let Some(out) = s.poll_output(now, &mut buf) {
            match out {
                SenderOutput::Control(c) => {
                    let spec = (n % depth) as u32;
                    assert_eq!(c.slot, spec, "sender's slot of message {n}");
                    assert_eq!(c.remote_addr, neg.ring.addr + neg.ctrl_slot_offset(spec));
                    match r.handle_write(now, c.imm, c.len as u32) {
                        Ok(Incoming::Control { ring_offset, .. }) => assert_eq!(
                            ring_offset,
                            neg.ctrl_slot_offset(spec),
                            "receiver's slot of message {n}"
                        ),
                        other => panic!("message {n} came in as {other:?}"),
                    }
                    r.handle_control(now, &buf[..c.len]).unwrap();
                    n += 1;
                }
                SenderOutput::Ack(imm) => {
                    assert_eq!(r.handle_write(now, imm, 0), Ok(Incoming::Ack));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        while let Some(out) = r.poll_output(now, &mut rbuf) {
            match out {
                ReceiverOutput::Transmit(len) => s.handle_control(now, &rbuf[..len]).unwrap(),
                ReceiverOutput::Event(e) => panic!("unexpected {e:?}"),
            }
        }
    }
}
