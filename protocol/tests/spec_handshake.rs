//! Tests written for requirements of PROTOCOL.md (the handshake, the key proofs and liveness)
//! that no other test covered; each names the requirement it checks.

use rdmaft_protocol::wire::{ACCEPT_LEN, HELLO_LEN};
use rdmaft_protocol::*;

/// A feature bit this crate does not know.
const UNKNOWN: u32 = 1 << 31;

fn params(features: Features) -> Params {
    Params::new(features, 4096, 8)
}

fn hello_of(p: &Params, nonce: [u8; 16]) -> [u8; HELLO_LEN] {
    let mut b = [0u8; HELLO_LEN];
    p.hello(nonce).encode(&mut b).unwrap();
    b
}

/// An agreement of 4 KiB chunks, a window of 4, 4 open files and a 1 s keepalive.
fn negotiated() -> Negotiated {
    let ctrl = min_ctrl_depth(4);
    Negotiated {
        features: Features::empty(),
        flags: AcceptFlags::empty(),
        chunk_size: 4096,
        window: 4,
        sender_ctrl_depth: ctrl,
        receiver_ctrl_depth: ctrl,
        max_open_files: 4,
        keepalive_ms: 1000,
        ring: RingInfo {
            addr: 0x10000,
            len: 4 * 4096 + u64::from(ctrl) * 4096,
            rkey: 1,
        },
        sender_proof: None,
        group: 0,
    }
}

/// A toy keyed MAC: enough to tell proofs over different bytes apart.
struct Key(u8);

impl Mac for Key {
    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut out = [self.0; 32];
        for (i, b) in parts.iter().flat_map(|p| p.iter()).enumerate() {
            out[i % 32] = out[i % 32].wrapping_mul(31).wrapping_add(*b ^ self.0);
        }
        out
    }
}

/// [hs.unknown-bits] A hello's feature bit the receiver does not know is dropped: the decoded
/// hello does not carry it, and the agreement has none even with a receiver whose own
/// features were built with that bit in them.
#[test]
// spec-test: [hs.unknown-bits]
fn a_hellos_unknown_feature_bits_are_dropped_from_the_agreement() {
    assert!(
        Features::from_bits(UNKNOWN).is_none(),
        "bit 31 must be unknown"
    );
    let known = Features::all() - Features::AUTH_PSK;
    let mut hello = hello_of(&params(known), [0; 16]);
    hello[8] |= 0x80;
    assert_eq!(HelloRepr::decode(&hello).unwrap().features, known);
    let receiver = params(Features::from_bits_retain(known.bits() | UNKNOWN));
    let agreed = negotiate(&hello, &receiver).unwrap();
    assert_eq!(agreed.features.bits() & UNKNOWN, 0);
    assert_eq!(agreed.features, known);
}

/// [hs.ring-limit] A ring limit above 64 GiB counts as 64 GiB: a receiver whose own
/// `chunk × window` is 128 GiB agrees to nothing even with no limit of its own, and one of
/// exactly 64 GiB agrees.
#[test]
// spec-test: [hs.ring-limit]
fn a_ring_limit_above_64_gib_counts_as_64_gib() {
    let unlimited = Params {
        max_ring_bytes: u64::MAX,
        ..Params::new(Features::RESUME, 2 << 20, MAX_WINDOW)
    };
    assert_eq!(unlimited.check(), Err(ParamError::RingTooLarge));
    let hello = hello_of(&unlimited, [0; 16]);
    assert_eq!(
        negotiate(&hello, &unlimited).map(|_| ()),
        Err(RejectReason::MISCONFIGURED)
    );
    let at_limit = Params {
        chunk_size: 1 << 20,
        ..unlimited
    };
    let agreed = negotiate(&hello, &at_limit).unwrap();
    assert_eq!(
        u64::from(agreed.chunk_size) * u64::from(agreed.window),
        MAX_RING_BYTES
    );
}

/// [hs.ctrl-depth] A receiver offers no control depth of its own outside
/// `max_open_files + 8 ..= 4128`: with one it agrees to nothing (`MISCONFIGURED`), and with a
/// valid one the depth stays in range for the agreed (smaller) open-file limit.
#[test]
// spec-test: [hs.ctrl-depth]
fn a_receiver_offers_no_control_depth_outside_the_range() {
    let hello = hello_of(&params(Features::RESUME), [0; 16]);
    let ok = params(Features::RESUME);
    for ctrl_depth in [min_ctrl_depth(ok.max_open_files) - 1, MAX_CTRL_DEPTH + 1] {
        let receiver = Params { ctrl_depth, ..ok };
        assert_eq!(
            negotiate(&hello, &receiver).map(|_| ()),
            Err(RejectReason::MISCONFIGURED),
            "depth {ctrl_depth}"
        );
    }
    let sender = Params {
        max_open_files: 2,
        ctrl_depth: min_ctrl_depth(2),
        ..ok
    };
    let agreed = negotiate(&hello_of(&sender, [0; 16]), &ok).unwrap();
    assert_eq!(agreed.max_open_files, 2);
    assert!((min_ctrl_depth(2)..=MAX_CTRL_DEPTH).contains(&agreed.receiver_ctrl_depth));
}

/// [psk.fresh-nonce] The nonces given go on the wire with `AUTH_PSK`: the hello carries the
/// sender's, the accept the receiver's (zero when `AUTH_PSK` is not agreed), and the proofs
/// cover them, so another nonce gives other proofs.
#[test]
// spec-test: [psk.fresh-nonce]
fn the_nonces_given_go_into_the_handshake_and_its_proofs() {
    let keyed = params(Features::RESUME | Features::AUTH_PSK);
    let hello = hello_of(&keyed, [1; 16]);
    assert_eq!(HelloRepr::decode(&hello).unwrap().nonce, [1; 16]);
    let agreed = negotiate(&hello, &keyed).unwrap();
    let ring = RingInfo {
        addr: 0x10_0000,
        len: agreed.ring_len(),
        rkey: 3,
    };
    let accept = |nonce: [u8; 16], key: Option<&dyn Mac>, agreed: &Agreed| {
        let (neg, reply) = agreed.accept(ring, nonce, key, 0).unwrap();
        let mut b = [0u8; ACCEPT_LEN];
        reply.encode(&mut b).unwrap();
        let HandshakeReply::Accept(a) = reply else {
            panic!("an accept")
        };
        (neg, a, b)
    };
    let (neg_a, a, bytes_a) = accept([2; 16], Some(&Key(1)), &agreed);
    assert_eq!(a.nonce, [2; 16]);
    let (neg_b, b, _) = accept([3; 16], Some(&Key(1)), &agreed);
    assert_eq!(b.nonce, [3; 16]);
    assert_ne!(a.proof, b.proof, "the receiver's proof covers its nonce");
    assert_ne!(neg_a.sender_proof, neg_b.sender_proof);
    let sender = check_reply(&bytes_a, &keyed, &hello, Some(&Key(1))).unwrap();
    assert_eq!(sender.sender_proof, neg_a.sender_proof);
    let mut other_hello = hello;
    other_hello[32..48].copy_from_slice(&[4; 16]);
    assert_eq!(
        check_reply(&bytes_a, &keyed, &other_hello, Some(&Key(1))),
        Err(HandshakeError::Invalid(ReplyError::BadProof)),
        "the proofs cover the sender's nonce"
    );
    let plain = params(Features::RESUME);
    let agreed = negotiate(&hello_of(&plain, [0; 16]), &plain).unwrap();
    let (_, a, _) = accept([2; 16], None, &agreed);
    assert_eq!(a.nonce, [0; 16], "no nonce without AUTH_PSK");
}

/// [live.keepalive] A sender sends no keepalive after its Goodbye, however long the
/// receiver's Goodbye takes (no idle timeout set), and asks for no timer.
#[test]
// spec-test: [live.keepalive]
fn a_sender_sends_no_keepalive_after_its_goodbye() {
    let t = |ms: u64| Instant::from_nanos(ms * 1_000_000);
    let neg = negotiated();
    let mut s = Sender::new(neg, Config::default(), ArrayStorage::<4, 64>::new(), t(0)).unwrap();
    let mut buf = [0u8; CTRL_MSG_MAX];
    let mut written = |s: &mut Sender<ArrayStorage<4, 64>>, now| {
        let mut kinds = vec![];
        while let Some(out) = s.poll_output(now, &mut buf) {
            if let SenderOutput::Control(c) = out {
                kinds.push(Control::decode(&buf[..c.len]).unwrap().1.kind());
            }
        }
        kinds
    };
    assert_eq!(written(&mut s, t(1000)), [wire::MsgKind::KeepAlive]);
    s.close(t(1500)).unwrap();
    assert_eq!(written(&mut s, t(1500)), [wire::MsgKind::Goodbye]);
    assert_eq!(s.poll_timeout(), None, "no keepalive is due");
    for ms in [2500, 10_000, 100_000] {
        assert_eq!(written(&mut s, t(ms)), [], "at {ms} ms");
    }
    assert!(!s.is_ended(), "still waiting for the receiver's Goodbye");
}

/// [error.codes] An Error of a code this crate does not know decodes with that code and its
/// detail, and goes to the receiver's failure as sent.
#[test]
// spec-test: [error.codes]
fn an_error_of_an_unknown_code_is_carried() {
    let code = ErrorCode(0xbeef);
    assert_eq!(code.name(), None, "0xbeef must be unknown");
    let mut buf = [0u8; CTRL_MSG_MAX];
    let msg = Control::Error {
        code,
        detail: 0x1234,
        text: "from the future",
    };
    let n = msg.encode(0, &mut buf).unwrap();
    assert_eq!(Control::decode(&buf[..n]), Ok((0, msg)));
    let neg = negotiated();
    let now = Instant::from_nanos(1_000_000);
    let mut r = Receiver::new(neg, Config::default(), ArrayStorage::<4, 64>::new(), now).unwrap();
    let i = r
        .handle_write(now, Imm::control(0).encode(), n as u32)
        .unwrap();
    assert!(matches!(i, Incoming::Control { .. }), "{i:?}");
    assert_eq!(r.handle_control(now, &buf[..n]), Ok(None));
    let mut out = [0u8; CTRL_MSG_MAX];
    let mut failed = None;
    while let Some(o) = r.poll_output(now, &mut out) {
        if let ReceiverOutput::Event(ReceiverEvent::Failed(f)) = o {
            failed = Some(f);
        }
    }
    assert!(
        matches!(failed, Some(Failure::PeerAborted(c, 0x1234, ref text))
            if c == code && text.as_str() == "from the future"),
        "{failed:?}"
    );
}
