//! The handshake on raw bytes: `HelloRepr::decode`, `HandshakeReply::decode`, `negotiate` as a
//! receiver and `check_reply` as a sender, each against a few local parameter sets (digests
//! required, a pre-shared key, the smallest and largest limits, a broken set).
//!
//! Every agreement must follow the negotiation rules (PROTOCOL.md §2.4), and every accept the
//! receiver builds from it must be one the sender that sent the hello takes, with the very
//! same parameters on both sides, with and without keys. Transfer groups (§2.7): a join is
//! agreed only with `LANES` (else `UNKNOWN_GROUP`), answered with the group joined and no
//! other, a new group is never 0, and no group travels without `LANES`.

use crate::common::ToyMac;
use rdmaft_protocol::wire::{AcceptRepr, ACCEPT_LEN, HELLO_LEN, REJECT_LEN};
use rdmaft_protocol::*;

/// The receiver's key (with `AUTH_PSK`).
const KEY: ToyMac = ToyMac(7);
/// A key the sender does not share.
const WRONG_KEY: ToyMac = ToyMac(8);
/// The sender's nonce in the hellos `check_reply` is given.
pub(crate) const SENDER_NONCE: [u8; 16] = [3; 16];
/// The receiver's nonce and ring in the accepts built here.
const RECEIVER_NONCE: [u8; 16] = [4; 16];
const RING_ADDR: u64 = 0x7f00_0000_0000;
const RING_RKEY: u32 = 0x1234;

fn all_but_key() -> Features {
    Features::all() - Features::AUTH_PSK
}

/// Receivers' parameters for `negotiate`.
pub(crate) fn receiver_params() -> [Params; 5] {
    let defaults = Params::new(all_but_key(), 1 << 20, 64);
    let strict = Params {
        group: 0,
        features: Features::RESUME | Features::DIGEST_XXH3_128,
        chunk_size: MIN_CHUNK_SIZE,
        window: 1,
        ctrl_depth: min_ctrl_depth(1),
        max_open_files: 1,
        keepalive_ms: 5,
        require_digest: true,
        max_ring_bytes: u64::from(MIN_CHUNK_SIZE),
    };
    let keyed = Params {
        group: 0,
        features: Features::all(),
        chunk_size: 1 << 20,
        window: MAX_WINDOW,
        ctrl_depth: MAX_CTRL_DEPTH,
        max_open_files: MAX_OPEN_FILES,
        keepalive_ms: MAX_KEEPALIVE_MS,
        require_digest: false,
        max_ring_bytes: MAX_RING_BYTES,
    };
    let small_ring = Params {
        max_ring_bytes: 8192 * 4,
        ..Params::new(Features::DIGEST_BLAKE3, 8192, 4)
    };
    let broken = Params {
        window: 0,
        ..defaults
    };
    [defaults, strict, keyed, small_ring, broken]
}

/// The group the harness's joining senders join.
pub(crate) const JOIN: u32 = 0x6a6f_696e;

/// Senders' parameters for `check_reply`, each with its key when it offers `AUTH_PSK`: plain
/// and keyed ones open a group (they offer `LANES`), two join one, the tiny one has none.
pub(crate) fn sender_params() -> [(Params, Option<ToyMac>); 5] {
    let plain = Params::new(all_but_key(), 1 << 20, 64);
    let keyed = Params::new(Features::all(), 1 << 16, 16);
    let join = Params {
        group: JOIN,
        ..plain
    };
    let join_keyed = Params {
        group: JOIN,
        ..keyed
    };
    let tiny = Params {
        ctrl_depth: min_ctrl_depth(1),
        max_open_files: 1,
        keepalive_ms: 1,
        ..Params::new(Features::empty(), MIN_CHUNK_SIZE, 1)
    };
    [
        (plain, None),
        (keyed, Some(KEY)),
        (tiny, None),
        (join, None),
        (join_keyed, Some(KEY)),
    ]
}

/// The hello a sender with `p` sends.
pub(crate) fn hello_bytes(p: &Params) -> [u8; HELLO_LEN] {
    let mut b = [0u8; HELLO_LEN];
    p.hello(SENDER_NONCE).encode(&mut b).expect("a hello fits");
    b
}

/// The accept a receiver with `local` gives to `hello`, when it agrees (for the seeds).
#[cfg(test)]
pub(crate) fn accept_bytes(hello: &[u8], local: &Params) -> Option<[u8; ACCEPT_LEN]> {
    let agreed = negotiate(hello, local).ok()?;
    let key = agreed
        .features
        .contains(Features::AUTH_PSK)
        .then_some(&KEY as &dyn Mac);
    let (_, reply) = agreed
        .accept(ring_of(&agreed), RECEIVER_NONCE, key, group_for(&agreed))
        .ok()?;
    let mut b = [0u8; ACCEPT_LEN];
    reply.encode(&mut b).ok()?;
    Some(b)
}

/// The transfer group a receiver puts the connection in: the one joined, a new one (a
/// fixed number here) when the hello opens one, none without `LANES`.
fn group_for(agreed: &Agreed) -> u32 {
    match (agreed.features.contains(Features::LANES), agreed.join) {
        (false, _) => 0,
        (true, 0) => 0x4c41_4e45,
        (true, join) => join,
    }
}

fn ring_of(agreed: &Agreed) -> RingInfo {
    RingInfo {
        addr: RING_ADDR,
        len: agreed.ring_len(),
        rkey: RING_RKEY,
    }
}

/// The harness.
pub fn decode_handshake(data: &[u8]) {
    let mut buf = [0u8; 256];
    if let Ok(h) = HelloRepr::decode(data) {
        let n = h.encode(&mut buf).expect("a hello fits 256 bytes");
        assert!(
            n == HELLO_LEN && n <= 56,
            "a hello fits CM REQ private data"
        );
        assert_eq!(HelloRepr::decode(&buf[..n]), Ok(h), "hello round trip");
        // Canonical but for unknown feature bits, which are dropped.
        let mut expected = data[..HELLO_LEN].to_vec();
        expected[8..12].copy_from_slice(&h.features.bits().to_be_bytes());
        assert_eq!(&buf[..n], &expected[..], "hello re-encodes differently");
    }
    if let Ok(r) = HandshakeReply::decode(data) {
        let n = r.encode(&mut buf).expect("a reply fits 256 bytes");
        assert!(n <= 196, "a reply fits CM REP private data");
        assert_eq!(HandshakeReply::decode(&buf[..n]), Ok(r), "reply round trip");
        match r {
            // Unknown feature bits are kept (the sender refuses them), so byte for byte.
            HandshakeReply::Accept(_) => {
                assert_eq!(
                    &buf[..n],
                    &data[..ACCEPT_LEN],
                    "accept re-encodes differently"
                )
            }
            // A reject of our version has zero reserved fields, so byte for byte too.
            HandshakeReply::Reject(_) if data[4..6] == VERSION.to_be_bytes() => {
                assert_eq!(
                    &buf[..n],
                    &data[..REJECT_LEN],
                    "reject re-encodes differently"
                )
            }
            HandshakeReply::Reject(_) => {}
        }
    }
    for local in receiver_params() {
        match negotiate(data, &local) {
            Ok(agreed) => check_agreed(data, &local, &agreed),
            Err(reason) => {
                if local.check().is_err() {
                    assert_eq!(reason, RejectReason::MISCONFIGURED);
                } else if let Ok(h) = HelloRepr::decode(data) {
                    // Refused only for the join: a receiver without groups has none to join.
                    let lanes = Params {
                        features: local.features | Features::LANES,
                        ..local
                    };
                    if h.group != 0 && negotiate(data, &lanes).is_ok() {
                        assert_eq!(reason, RejectReason::UNKNOWN_GROUP, "join of {}", h.group);
                    }
                }
            }
        }
    }
    for (local, key) in sender_params() {
        let hello = hello_bytes(&local);
        let key = key.as_ref().map(|k| k as &dyn Mac);
        if let Ok(neg) = check_reply(data, &local, &hello, key) {
            check_negotiated(&local, &neg);
            if key.is_some() {
                // Another key cannot have made the receiver's proof.
                assert_eq!(
                    check_reply(data, &local, &hello, Some(&WRONG_KEY)),
                    Err(HandshakeError::Invalid(ReplyError::BadProof))
                );
            }
        }
        // Its own parameters unusable: nothing is accepted, whatever the reply.
        let wrong_key = if key.is_some() {
            None
        } else {
            Some(&KEY as &dyn Mac)
        };
        assert_eq!(
            check_reply(data, &local, &hello, wrong_key),
            Err(HandshakeError::Invalid(ReplyError::LocalParams))
        );
        assert_eq!(
            check_reply(data, &local, &hello[..HELLO_LEN - 1], key),
            Err(HandshakeError::Invalid(ReplyError::LocalParams))
        );
        // A group to join without offering `LANES`.
        let groupless = Params {
            group: JOIN,
            features: local.features - Features::LANES,
            ..local
        };
        assert_eq!(
            check_reply(data, &groupless, &hello, key),
            Err(HandshakeError::Invalid(ReplyError::LocalParams))
        );
    }
}

/// A receiver's agreement follows the rules, and the accept built from it is one the sender
/// of the hello takes, ending with the same parameters on both sides.
fn check_agreed(hello: &[u8], local: &Params, agreed: &Agreed) {
    assert!(local.check().is_ok(), "agreed with invalid own parameters");
    let h = HelloRepr::decode(hello).expect("negotiate accepted an undecodable hello");
    let theirs = effective_chunk_size(h.chunk_size).expect("their chunk size was refused");
    let ours = effective_chunk_size(local.chunk_size).expect("our chunk size is valid");
    assert_eq!(
        agreed.chunk_size,
        theirs.min(ours),
        "chunk: the minimum rule"
    );
    assert!(agreed.chunk_size.is_power_of_two());
    assert!((MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&agreed.chunk_size));
    assert_eq!(agreed.window, h.window.min(local.window), "window: minimum");
    assert!((1..=MAX_WINDOW).contains(&agreed.window));
    assert_eq!(
        agreed.max_open_files,
        h.max_open_files.min(local.max_open_files)
    );
    assert!((1..=MAX_OPEN_FILES).contains(&agreed.max_open_files));
    assert_eq!(agreed.keepalive_ms, h.keepalive_ms.min(local.keepalive_ms));
    assert!((1..=MAX_KEEPALIVE_MS).contains(&agreed.keepalive_ms));
    assert_eq!(
        agreed.features,
        h.features & local.features,
        "features: intersection"
    );
    assert_eq!(agreed.join, h.group, "the group asked to join");
    assert!(
        h.group == 0 || agreed.features.contains(Features::LANES),
        "a join agreed without LANES"
    );
    assert_eq!(agreed.sender_ctrl_depth, h.ctrl_depth);
    assert_eq!(agreed.receiver_ctrl_depth, local.ctrl_depth);
    assert!(
        (min_ctrl_depth(h.max_open_files)..=MAX_CTRL_DEPTH).contains(&agreed.sender_ctrl_depth),
        "sender depth {} for {} open files",
        agreed.sender_ctrl_depth,
        h.max_open_files
    );
    assert!((min_ctrl_depth(agreed.max_open_files)..=MAX_CTRL_DEPTH)
        .contains(&agreed.receiver_ctrl_depth));
    assert_eq!(
        agreed.flags.contains(AcceptFlags::DIGEST_REQUIRED),
        local.require_digest
    );
    if local.require_digest {
        assert!(
            !agreed.features.digests().is_empty(),
            "digests required, none agreed"
        );
    }
    if local.features.contains(Features::AUTH_PSK) {
        assert!(
            agreed.features.contains(Features::AUTH_PSK),
            "key not required"
        );
    }
    let data = u64::from(agreed.chunk_size) * u64::from(agreed.window);
    assert!(
        data <= local.max_ring_bytes.min(MAX_RING_BYTES),
        "ring above the limit"
    );
    assert_eq!(
        agreed.ring_len(),
        data + u64::from(agreed.receiver_ctrl_depth) * CTRL_MSG_MAX as u64,
        "ring_len formula"
    );

    let auth = agreed.features.contains(Features::AUTH_PSK);
    let ring = ring_of(agreed);
    // The key must be given exactly when `AUTH_PSK` was agreed.
    let mismatched = if auth { None } else { Some(&KEY as &dyn Mac) };
    assert_eq!(
        agreed.accept(ring, RECEIVER_NONCE, mismatched, group_for(agreed)),
        Err(ParamError::KeyMismatch)
    );
    let key = auth.then_some(&KEY as &dyn Mac);
    let lanes = agreed.features.contains(Features::LANES);
    let group = group_for(agreed);
    // Any group but the one joined, and no group at all, are refused with `LANES`; any
    // group is refused without it.
    let other = group.wrapping_add(1).max(1);
    let refused = if lanes {
        [(agreed.join != 0).then_some(other), Some(0)]
    } else {
        [Some(other), None]
    };
    for g in refused.into_iter().flatten() {
        assert_eq!(
            agreed.accept(ring, RECEIVER_NONCE, key, g).map(|_| ()),
            Err(ParamError::Group),
            "accept into group {g} (joined {}, LANES {lanes})",
            agreed.join
        );
    }
    let (rneg, reply) = agreed
        .accept(ring, RECEIVER_NONCE, key, group)
        .unwrap_or_else(|e| panic!("accept of a valid agreement failed: {e}"));
    assert_eq!(rneg.group, group);
    assert_eq!(rneg.check(), Ok(()), "the receiver's agreement is invalid");
    assert_eq!(rneg.ring_len(), agreed.ring_len());
    assert_eq!(rneg.sender_proof.is_some(), auth);
    let mut buf = [0u8; 256];
    let n = reply.encode(&mut buf).expect("an accept fits");
    assert_eq!(n, ACCEPT_LEN);
    assert_eq!(HandshakeReply::decode(&buf[..n]), Ok(reply));

    // The sender that sent this hello, with its key when it offered AUTH_PSK.
    let sender = Params {
        group: h.group,
        features: h.features,
        chunk_size: h.chunk_size,
        window: h.window,
        ctrl_depth: h.ctrl_depth,
        max_open_files: h.max_open_files,
        keepalive_ms: h.keepalive_ms,
        require_digest: false,
        max_ring_bytes: MAX_RING_BYTES,
    };
    let sender_auth = h.features.contains(Features::AUTH_PSK);
    let sender_key = sender_auth.then_some(&KEY as &dyn Mac);
    let got = check_reply(&buf[..n], &sender, hello, sender_key);
    if sender.check().is_err() {
        // Only its ring limit can make the hello's sender invalid: the receiver checked the
        // rest.
        assert_eq!(sender.check(), Err(ParamError::RingTooLarge));
        assert_eq!(got, Err(HandshakeError::Invalid(ReplyError::LocalParams)));
        return;
    }
    if sender_auth && !auth {
        assert_eq!(got, Err(HandshakeError::Invalid(ReplyError::AuthNotAgreed)));
        return;
    }
    let sneg = got.unwrap_or_else(|e| panic!("the sender refuses the receiver's own accept: {e}"));
    assert_eq!(sneg, rneg, "the two sides disagree after the handshake");
    check_negotiated(&sender, &sneg);
    if auth {
        assert_eq!(
            check_reply(&buf[..n], &sender, hello, Some(&WRONG_KEY)),
            Err(HandshakeError::Invalid(ReplyError::BadProof)),
            "a proof made with another key was taken"
        );
    }
    check_other_groups(&reply, &sender, hello, sender_key);
}

/// The sender refuses the receiver's accept with its group changed: 0 or another than it
/// joined with `LANES`, any without. A new group may be any other number, but not under a
/// key proof made for the first.
fn check_other_groups(
    reply: &HandshakeReply,
    sender: &Params,
    hello: &[u8],
    key: Option<&dyn Mac>,
) {
    let HandshakeReply::Accept(a) = *reply else {
        panic!("accept() replied {reply:?}");
    };
    let lanes = a.features.contains(Features::LANES);
    for g in [0, a.group.wrapping_add(1).max(1), JOIN] {
        if g == a.group {
            continue;
        }
        let mut buf = [0u8; ACCEPT_LEN];
        let n = HandshakeReply::Accept(AcceptRepr { group: g, ..a })
            .encode(&mut buf)
            .expect("an accept fits");
        let got = check_reply(&buf[..n], sender, hello, key);
        let group_ok = lanes && g != 0 && (sender.group == 0 || sender.group == g);
        match got {
            Ok(neg) => {
                assert!(
                    group_ok,
                    "group {g} taken (joined {}, LANES {lanes})",
                    sender.group
                );
                assert!(
                    key.is_none(),
                    "group {g} taken under a proof made for {}",
                    a.group
                );
                assert_eq!(neg.group, g);
            }
            Err(e) if group_ok => assert_eq!(
                e,
                HandshakeError::Invalid(ReplyError::BadProof),
                "group {g} (joined {})",
                sender.group
            ),
            Err(e) => assert_eq!(
                e,
                HandshakeError::Invalid(ReplyError::Group),
                "group {g} (joined {}, LANES {lanes})",
                sender.group
            ),
        }
    }
}

/// What `check_reply` accepts stays within what the sender proposed, and is an agreement
/// both state machines take.
fn check_negotiated(local: &Params, neg: &Negotiated) {
    let ours = effective_chunk_size(local.chunk_size).expect("valid own chunk size");
    assert!(neg.chunk_size.is_power_of_two());
    assert!((MIN_CHUNK_SIZE..=ours).contains(&neg.chunk_size));
    assert!((1..=local.window).contains(&neg.window));
    assert!((1..=local.max_open_files).contains(&neg.max_open_files));
    assert!((1..=local.keepalive_ms).contains(&neg.keepalive_ms));
    assert!(
        local.features.contains(neg.features),
        "a feature not offered"
    );
    assert_eq!(neg.sender_ctrl_depth, local.ctrl_depth);
    assert!(
        (min_ctrl_depth(neg.max_open_files)..=MAX_CTRL_DEPTH).contains(&neg.receiver_ctrl_depth)
    );
    assert_eq!(neg.ring.len, neg.ring_len());
    assert!(
        neg.ring.addr.checked_add(neg.ring.len).is_some(),
        "ring wraps"
    );
    assert!(neg.data_len() <= local.max_ring_bytes.min(MAX_RING_BYTES));
    if neg.flags.contains(AcceptFlags::DIGEST_REQUIRED) {
        assert!(!neg.features.digests().is_empty());
    }
    assert_eq!(
        neg.sender_proof.is_some(),
        local.features.contains(Features::AUTH_PSK)
    );
    assert_eq!(
        neg.check(),
        Ok(()),
        "check_reply produced an invalid agreement"
    );
    assert_eq!(Config::default().check(neg), Ok(()));
    if neg.features.contains(Features::LANES) {
        assert_ne!(neg.group, 0, "LANES without a group");
        if local.group != 0 {
            assert_eq!(neg.group, local.group, "put into another group than joined");
        }
    } else {
        assert_eq!(neg.group, 0, "a group without LANES");
        assert_eq!(local.group, 0, "a join taken without LANES");
    }
}
