//! The handshake: negotiation both ways, every reject reason, the sender's checks of the
//! accept, the key proofs, and the checks on hand-built parameters.

use rdmaft_protocol::wire::{AcceptRepr, ACCEPT_LEN, HELLO_LEN};
use rdmaft_protocol::*;

fn params(chunk: u32, window: u32) -> Params {
    Params::new(Features::all() - Features::AUTH_PSK, chunk, window)
}

fn hello_of(p: &Params) -> [u8; HELLO_LEN] {
    hello_with(p, [5; 16])
}

fn hello_with(p: &Params, nonce: [u8; 16]) -> [u8; HELLO_LEN] {
    let mut b = [0u8; HELLO_LEN];
    p.hello(nonce).encode(&mut b).unwrap();
    b
}

/// 4 KiB chunks, a window of 8, and `features`.
fn featured(features: Features) -> Params {
    Params {
        features,
        ..params(4096, 8)
    }
}

/// Keyed BLAKE3-like stand-in: a toy keyed mixer (the driver uses real BLAKE3).
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

#[test]
// spec-test: [hs.chunk.round] [hs.minimum]
fn negotiation_takes_the_minimum_and_rounds_chunks_down() {
    let mut sender = params(64 * 1024 + 5, 8);
    sender.max_open_files = 10;
    sender.ctrl_depth = min_ctrl_depth(10);
    sender.keepalive_ms = 300;
    let receiver = params(48 * 1024, 64);
    let agreed = negotiate(&hello_of(&sender), &receiver).unwrap();
    assert_eq!(agreed.chunk_size, 32 * 1024, "48 KiB rounds down to 32 KiB");
    assert_eq!(agreed.window, 8);
    assert_eq!(agreed.max_open_files, 10);
    assert_eq!(agreed.keepalive_ms, 300);
    assert_eq!(agreed.sender_ctrl_depth, min_ctrl_depth(10));
    assert_eq!(agreed.receiver_ctrl_depth, receiver.ctrl_depth);
    assert_eq!(
        agreed.ring_len(),
        32 * 1024 * 8 + u64::from(receiver.ctrl_depth) * 4096
    );
    assert_eq!(effective_chunk_size(4095), None);
    assert_eq!(effective_chunk_size(4096), Some(4096));
    assert_eq!(effective_chunk_size(8191), Some(4096));
    assert_eq!(effective_chunk_size(u32::MAX), Some(MAX_CHUNK_SIZE));
}

#[test]
// spec-test: [hs.magic] [hs.version] [hs.chunk.round] [hs.limits] [hs.ctrl-depth] [hs.ring-limit] [hs.own-params]
fn negotiation_rejects_with_reasons() {
    let local = params(4096, 8);
    let check = |p: Params, want: RejectReason| {
        assert_eq!(
            negotiate(&hello_of(&p), &local).map(|_| ()),
            Err(want),
            "{p:?}"
        );
    };
    check(params(4095, 8), RejectReason::BAD_CHUNK_SIZE);
    check(params(0, 8), RejectReason::BAD_CHUNK_SIZE);
    check(params(4096, 0), RejectReason::BAD_WINDOW);
    check(params(4096, MAX_WINDOW + 1), RejectReason::BAD_WINDOW);
    let shallow = Params {
        ctrl_depth: min_ctrl_depth(DEFAULT_OPEN_FILES) - 1,
        ..params(4096, 8)
    };
    check(shallow, RejectReason::BAD_CTRL_DEPTH);
    let deep = Params {
        ctrl_depth: MAX_CTRL_DEPTH + 1,
        ..params(4096, 8)
    };
    check(deep, RejectReason::BAD_CTRL_DEPTH);
    let no_files = Params {
        max_open_files: 0,
        ..params(4096, 8)
    };
    check(no_files, RejectReason::BAD_OPEN_FILES);
    let many_files = Params {
        max_open_files: MAX_OPEN_FILES + 1,
        ctrl_depth: MAX_CTRL_DEPTH,
        ..params(4096, 8)
    };
    check(many_files, RejectReason::BAD_OPEN_FILES);
    for keepalive_ms in [0, MAX_KEEPALIVE_MS + 1] {
        check(
            Params {
                keepalive_ms,
                ..params(4096, 8)
            },
            RejectReason::BAD_KEEPALIVE,
        );
    }
    let mut bad_magic = hello_of(&params(4096, 8));
    bad_magic[0] = 0;
    assert_eq!(
        negotiate(&bad_magic, &local).map(|_| ()),
        Err(RejectReason::BAD_MAGIC)
    );
    let mut v9 = hello_of(&params(4096, 8));
    v9[5] = 9;
    assert_eq!(
        negotiate(&v9, &local).map(|_| ()),
        Err(RejectReason::UNSUPPORTED_VERSION)
    );
    assert_eq!(
        negotiate(&hello_of(&params(4096, 8))[..10], &local).map(|_| ()),
        Err(RejectReason::MALFORMED)
    );
    let huge = Params {
        max_ring_bytes: u64::MAX,
        ..params(MAX_CHUNK_SIZE, MAX_WINDOW)
    };
    let mut limited = huge;
    limited.max_ring_bytes = 1 << 20;
    assert_eq!(
        negotiate(&hello_of(&huge), &limited).map(|_| ()),
        Err(RejectReason::MISCONFIGURED),
        "the receiver's own limit makes its proposal invalid"
    );
    let small_limit = Params {
        max_ring_bytes: 4096 * 8,
        ..params(4096, 8)
    };
    assert!(negotiate(&hello_of(&params(8192, 8)), &small_limit).is_ok());
    let smaller_limit = Params {
        max_ring_bytes: 4096 * 8 - 1,
        ..params(4096, 8)
    };
    assert_eq!(
        negotiate(&hello_of(&params(8192, 8)), &smaller_limit).map(|_| ()),
        Err(RejectReason::MISCONFIGURED)
    );
}

#[test]
// spec-test: [hs.own-params]
fn a_receiver_with_invalid_parameters_agrees_to_nothing() {
    let hello = hello_of(&params(4096, 8));
    for bad in [params(0, 8), params(4096, 0)] {
        assert_eq!(
            negotiate(&hello, &bad).map(|_| ()),
            Err(RejectReason::MISCONFIGURED)
        );
    }
}

#[test]
// spec-test: [hs.ring-limit]
fn ring_above_the_limit_is_refused_by_both_sides() {
    let mut receiver = params(MAX_CHUNK_SIZE, 64);
    receiver.max_ring_bytes = u64::from(MAX_CHUNK_SIZE) * 64;
    let sender = params(MAX_CHUNK_SIZE, 64);
    assert!(negotiate(&hello_of(&sender), &receiver).is_ok());
    let mut smaller = receiver;
    smaller.window = 16;
    smaller.max_ring_bytes = u64::from(MAX_CHUNK_SIZE) * 16;
    let agreed = negotiate(&hello_of(&sender), &smaller).unwrap();
    assert_eq!(agreed.window, 16);
    // The sender refuses a ring above its own limit.
    let mut tight = params(4096, 8);
    tight.max_ring_bytes = 4096 * 8 - 1;
    assert_eq!(tight.check(), Err(ParamError::RingTooLarge));
}

#[test]
// spec-test: [hs.digest-required]
fn digests_can_be_required() {
    let mut receiver = params(4096, 8);
    receiver.require_digest = true;
    let plain = Params {
        features: Features::RESUME,
        ..params(4096, 8)
    };
    assert_eq!(
        negotiate(&hello_of(&plain), &receiver).map(|_| ()),
        Err(RejectReason::DIGEST_REQUIRED)
    );
    let agreed = negotiate(&hello_of(&params(4096, 8)), &receiver).unwrap();
    assert!(agreed.flags.contains(AcceptFlags::DIGEST_REQUIRED));
    let no_digest = Params {
        features: Features::RESUME,
        require_digest: true,
        ..params(4096, 8)
    };
    assert_eq!(no_digest.check(), Err(ParamError::DigestRequired));
}

fn accept_bytes(a: AcceptRepr) -> [u8; ACCEPT_LEN] {
    let mut b = [0u8; ACCEPT_LEN];
    HandshakeReply::Accept(a).encode(&mut b).unwrap();
    b
}

fn good_accept(local: &Params) -> AcceptRepr {
    let ctrl = min_ctrl_depth(local.max_open_files);
    AcceptRepr {
        group: 0,
        features: Features::RESUME,
        flags: AcceptFlags::empty(),
        chunk_size: 4096,
        window: local.window,
        ctrl_depth: ctrl,
        max_open_files: local.max_open_files,
        keepalive_ms: local.keepalive_ms,
        ring: RingInfo {
            addr: 0x1000,
            len: 4096 * u64::from(local.window) + u64::from(ctrl) * 4096,
            rkey: 7,
        },
        nonce: [0; 16],
        proof: [0; 32],
    }
}

#[test]
// spec-test: [hs.accept.params] [hs.accept.features] [hs.accept.ring] [hs.accept.digest]
fn sender_checks_the_accept() {
    let local = params(8192, 8);
    let hello = hello_of(&local);
    let ok = good_accept(&local);
    let check = |a: AcceptRepr| check_reply(&accept_bytes(a), &local, &hello, None);
    let neg = check(ok).unwrap();
    assert_eq!((neg.chunk_size, neg.window), (4096, 8));
    assert_eq!(neg.sender_ctrl_depth, local.ctrl_depth);
    assert_eq!(neg.ring, ok.ring);
    let invalid = |a: AcceptRepr, why: ReplyError| {
        assert_eq!(check(a), Err(HandshakeError::Invalid(why)), "{a:?}");
    };
    let relen = |mut a: AcceptRepr| {
        a.ring.len = u64::from(a.chunk_size) * u64::from(a.window) + u64::from(a.ctrl_depth) * 4096;
        a
    };
    invalid(
        relen(AcceptRepr {
            chunk_size: 16384,
            ..ok
        }),
        ReplyError::ChunkSize,
    );
    invalid(
        relen(AcceptRepr {
            chunk_size: 6000,
            ..ok
        }),
        ReplyError::ChunkSize,
    );
    invalid(
        relen(AcceptRepr {
            chunk_size: 2048,
            ..ok
        }),
        ReplyError::ChunkSize,
    );
    assert!(check(relen(AcceptRepr {
        chunk_size: 8192,
        ..ok
    }))
    .is_ok());
    invalid(relen(AcceptRepr { window: 0, ..ok }), ReplyError::Window);
    invalid(relen(AcceptRepr { window: 9, ..ok }), ReplyError::Window);
    invalid(
        AcceptRepr {
            max_open_files: 0,
            ..ok
        },
        ReplyError::OpenFiles,
    );
    invalid(
        AcceptRepr {
            max_open_files: local.max_open_files + 1,
            ..ok
        },
        ReplyError::OpenFiles,
    );
    invalid(
        AcceptRepr {
            keepalive_ms: 0,
            ..ok
        },
        ReplyError::Keepalive,
    );
    invalid(
        AcceptRepr {
            keepalive_ms: local.keepalive_ms + 1,
            ..ok
        },
        ReplyError::Keepalive,
    );
    invalid(
        AcceptRepr {
            features: Features::AUTH_PSK,
            ..ok
        },
        ReplyError::Features,
    );
    invalid(
        relen(AcceptRepr {
            ctrl_depth: min_ctrl_depth(ok.max_open_files) - 1,
            ..ok
        }),
        ReplyError::CtrlDepth,
    );
    invalid(
        relen(AcceptRepr {
            ctrl_depth: MAX_CTRL_DEPTH + 1,
            ..ok
        }),
        ReplyError::CtrlDepth,
    );
    let mut short = ok;
    short.ring.len -= 1;
    invalid(short, ReplyError::RingLayout);
    let mut wrapping = ok;
    wrapping.ring.addr = u64::MAX - 10;
    invalid(wrapping, ReplyError::RingLayout);
    invalid(
        AcceptRepr {
            flags: AcceptFlags::DIGEST_REQUIRED,
            ..ok
        },
        ReplyError::DigestRequired,
    );
    let big = good_accept(&Params { window: 8, ..local });
    assert_eq!(
        check_reply(&accept_bytes(big), &local, &hello, None).map(|n| n.window),
        Ok(8)
    );
    let mut limit = local;
    limit.max_ring_bytes = 4096 * 8 - 1;
    assert_eq!(
        check_reply(&accept_bytes(big), &limit, &hello, None),
        Err(HandshakeError::Invalid(ReplyError::LocalParams)),
        "a sender whose own proposal breaks its limit refuses everything"
    );
    let mut rej = [0u8; 148];
    reject(RejectReason::NO_RESOURCES).encode(&mut rej).unwrap();
    assert!(matches!(
        check_reply(&rej, &local, &hello, None),
        Err(HandshakeError::Rejected(r)) if r.reason == RejectReason::NO_RESOURCES
    ));
    assert!(matches!(
        check_reply(&rej[..4], &local, &hello, None),
        Err(HandshakeError::Decode(_))
    ));
}

#[test]
fn a_sender_with_invalid_parameters_accepts_nothing() {
    let local = params(8192, 8);
    let hello = hello_of(&local);
    let ok = accept_bytes(good_accept(&local));
    let zero = Params {
        chunk_size: 0,
        ..local
    };
    assert_eq!(
        check_reply(&ok, &zero, &hello, None),
        Err(HandshakeError::Invalid(ReplyError::LocalParams))
    );
    assert_eq!(
        check_reply(&ok, &local, &hello[..10], None),
        Err(HandshakeError::Invalid(ReplyError::LocalParams))
    );
    assert_eq!(
        check_reply(&ok, &local, &hello, Some(&Key(1))),
        Err(HandshakeError::Invalid(ReplyError::LocalParams)),
        "a key without AUTH_PSK in the proposal"
    );
}

/// Runs the handshake with keys on either side; returns both results.
fn keyed(
    sender_key: Option<u8>,
    receiver_key: Option<u8>,
) -> (Result<Negotiated, HandshakeError>, Option<Negotiated>) {
    let mut sp = params(4096, 8);
    let mut rp = params(4096, 8);
    if sender_key.is_some() {
        sp.features |= Features::AUTH_PSK;
    }
    if receiver_key.is_some() {
        rp.features |= Features::AUTH_PSK;
    }
    let hello = hello_of(&sp);
    let agreed = match negotiate(&hello, &rp) {
        Ok(a) => a,
        Err(reason) => {
            let mut b = [0u8; 16];
            reject(reason).encode(&mut b).unwrap();
            return (check_reply(&b, &sp, &hello, None), None);
        }
    };
    let ring = RingInfo {
        addr: 0x10_0000,
        len: agreed.ring_len(),
        rkey: 3,
    };
    let rkey = receiver_key.map(Key);
    let (rneg, reply) = agreed
        .accept(
            ring,
            [8; 16],
            rkey.as_ref().map(|k| k as &dyn Mac),
            group_of(&agreed),
        )
        .unwrap();
    let mut b = [0u8; ACCEPT_LEN];
    reply.encode(&mut b).unwrap();
    let skey = sender_key.map(Key);
    (
        check_reply(&b, &sp, &hello, skey.as_ref().map(|k| k as &dyn Mac)),
        Some(rneg),
    )
}

#[test]
// spec-test: [hs.minimum]
fn both_sides_prove_the_key() {
    let (sender, receiver) = keyed(Some(1), Some(1));
    let sender = sender.unwrap();
    let receiver = receiver.unwrap();
    assert!(sender.features.contains(Features::AUTH_PSK));
    assert!(sender.sender_proof.is_some());
    assert_eq!(
        sender.sender_proof, receiver.sender_proof,
        "the proof the receiver expects"
    );
    assert_eq!(sender, receiver, "both sides agree on everything");
}

#[test]
// spec-test: [psk.required] [psk.receiver-proof]
fn a_wrong_or_missing_key_is_refused_before_any_file() {
    assert_eq!(
        keyed(Some(1), Some(2)).0,
        Err(HandshakeError::Invalid(ReplyError::BadProof))
    );
    assert_eq!(
        keyed(Some(1), None).0,
        Err(HandshakeError::Invalid(ReplyError::AuthNotAgreed))
    );
    let (refused, receiver) = keyed(None, Some(1));
    assert!(receiver.is_none());
    assert!(matches!(
        refused,
        Err(HandshakeError::Rejected(r)) if r.reason == RejectReason::AUTH_REQUIRED
    ));
    let (plain, _) = keyed(None, None);
    assert_eq!(plain.unwrap().sender_proof, None);
}

/// PROTOCOL.md §2.4: an agreed feature the sender did not offer, also one this crate does
/// not know, makes the sender abandon the connection; with a key, the proofs cover the accept
/// as received, so no bit of it can be changed on the way.
#[test]
// spec-test: [hs.accept.features] [psk.receiver-proof]
fn an_accept_agreeing_unknown_feature_bits_is_refused() {
    let unknown = 1u32 << 31;
    assert!(
        Features::from_bits(unknown).is_none(),
        "bit 31 must be unknown"
    );
    let local = params(8192, 8);
    let hello = hello_of(&local);
    let mut b = accept_bytes(good_accept(&local));
    b[8] |= 0x80;
    assert_eq!(
        check_reply(&b, &local, &hello, None),
        Err(HandshakeError::Invalid(ReplyError::Features))
    );

    let mut sp = params(4096, 8);
    sp.features |= Features::AUTH_PSK;
    let rp = sp;
    let hello = hello_of(&sp);
    let agreed = negotiate(&hello, &rp).unwrap();
    let ring = RingInfo {
        addr: 0x10_0000,
        len: agreed.ring_len(),
        rkey: 3,
    };
    let (_, reply) = agreed
        .accept(ring, [8; 16], Some(&Key(1)), group_of(&agreed))
        .unwrap();
    let HandshakeReply::Accept(sent) = reply else {
        panic!("an accept")
    };
    let sent_bytes = accept_bytes(sent);
    let neg = check_reply(&sent_bytes, &sp, &hello, Some(&Key(1))).unwrap();
    assert_eq!(
        neg.sender_proof,
        Some(Key(1).mac(&[SENDER_LABEL, &hello, &sent_bytes])),
        "the sender's proof covers the accept as received"
    );
    // The bit added on the way, after the receiver's proof.
    let mut tampered = sent_bytes;
    tampered[8] |= 0x80;
    assert_eq!(
        check_reply(&tampered, &sp, &hello, Some(&Key(1))),
        Err(HandshakeError::Invalid(ReplyError::Features))
    );
    // A receiver with the key that agrees to the bit and proves the accept with it.
    let mut odd = sent;
    odd.features = Features::from_bits_retain(sent.features.bits() | unknown);
    odd.proof = Key(1).mac(&[RECEIVER_LABEL, &hello, &accept_bytes(odd)[..72]]);
    assert_eq!(
        check_reply(&accept_bytes(odd), &sp, &hello, Some(&Key(1))),
        Err(HandshakeError::Invalid(ReplyError::Features))
    );
}

#[test]
// spec-test: [psk.required]
fn accept_needs_the_key_exactly_when_agreed() {
    let mut rp = params(4096, 8);
    rp.features |= Features::AUTH_PSK;
    let mut sp = params(4096, 8);
    sp.features |= Features::AUTH_PSK;
    let agreed = negotiate(&hello_of(&sp), &rp).unwrap();
    let ring = RingInfo {
        addr: 0,
        len: agreed.ring_len(),
        rkey: 0,
    };
    assert_eq!(
        agreed.accept(ring, [0; 16], None, 0).map(|_| ()),
        Err(ParamError::KeyMismatch)
    );
    let plain = negotiate(&hello_of(&params(4096, 8)), &params(4096, 8)).unwrap();
    assert_eq!(
        plain.accept(ring, [0; 16], Some(&Key(1)), 0).map(|_| ()),
        Err(ParamError::KeyMismatch)
    );
    let short = RingInfo { len: 1, ..ring };
    assert_eq!(
        plain.accept(short, [0; 16], None, 0).map(|_| ()),
        Err(ParamError::RingLayout)
    );
}

fn base_negotiated() -> Negotiated {
    let ctrl = min_ctrl_depth(4);
    Negotiated {
        group: u32::from((Features::RESUME).contains(Features::LANES)),

        features: Features::RESUME,
        flags: AcceptFlags::empty(),
        chunk_size: 4096,
        window: 4,
        sender_ctrl_depth: ctrl,
        receiver_ctrl_depth: ctrl,
        max_open_files: 4,
        keepalive_ms: 100,
        ring: RingInfo {
            addr: 0x1000,
            len: 4 * 4096 + u64::from(ctrl) * 4096,
            rkey: 1,
        },
        sender_proof: None,
    }
}

#[test]
fn hand_built_agreements_are_checked() {
    let ok = base_negotiated();
    assert_eq!(ok.check(), Ok(()));
    let relen = |mut n: Negotiated| {
        n.ring.len = n.ring_len();
        n
    };
    let bad = [
        (
            relen(Negotiated {
                chunk_size: 6000,
                ..ok
            }),
            ParamError::ChunkSize,
        ),
        (
            relen(Negotiated {
                chunk_size: 2048,
                ..ok
            }),
            ParamError::ChunkSize,
        ),
        (
            relen(Negotiated {
                chunk_size: MAX_CHUNK_SIZE * 2,
                ..ok
            }),
            ParamError::ChunkSize,
        ),
        (relen(Negotiated { window: 0, ..ok }), ParamError::Window),
        (
            Negotiated {
                max_open_files: 0,
                ..ok
            },
            ParamError::OpenFiles,
        ),
        (
            Negotiated {
                keepalive_ms: 0,
                ..ok
            },
            ParamError::Keepalive,
        ),
        (
            Negotiated {
                sender_ctrl_depth: min_ctrl_depth(4) - 1,
                ..ok
            },
            ParamError::CtrlDepth,
        ),
        (
            relen(Negotiated {
                receiver_ctrl_depth: min_ctrl_depth(4) - 1,
                ..ok
            }),
            ParamError::CtrlDepth,
        ),
        (
            relen(Negotiated {
                chunk_size: MAX_CHUNK_SIZE,
                window: 128,
                ..ok
            }),
            ParamError::RingTooLarge,
        ),
        (
            Negotiated {
                ring: RingInfo { len: 1, ..ok.ring },
                ..ok
            },
            ParamError::RingLayout,
        ),
        (
            Negotiated {
                ring: RingInfo {
                    addr: u64::MAX - 100,
                    ..ok.ring
                },
                ..ok
            },
            ParamError::RingLayout,
        ),
        (
            Negotiated {
                flags: AcceptFlags::DIGEST_REQUIRED,
                ..ok
            },
            ParamError::DigestRequired,
        ),
        (
            Negotiated {
                features: Features::AUTH_PSK,
                ..ok
            },
            ParamError::KeyMismatch,
        ),
        (
            Negotiated {
                sender_proof: Some([0; 32]),
                ..ok
            },
            ParamError::KeyMismatch,
        ),
    ];
    for (n, why) in bad {
        assert_eq!(n.check(), Err(why), "{n:?}");
        let cfg = Config::default();
        assert_eq!(
            Sender::new(n, cfg, ArrayStorage::<4, 64>::new(), Instant::ZERO).err(),
            Some(Error::Usage(UsageError::InvalidParameters(why)))
        );
        assert_eq!(
            Receiver::new(n, cfg, ArrayStorage::<4, 64>::new(), Instant::ZERO).err(),
            Some(Error::Usage(UsageError::InvalidParameters(why)))
        );
    }
}

#[test]
// spec-test: [live.timeout-min]
fn machines_check_their_storage_and_idle_timeout() {
    let n = base_negotiated();
    let cfg = Config::default();
    assert_eq!(
        Sender::new(n, cfg, ArrayStorage::<3, 64>::new(), Instant::ZERO).err(),
        Some(Error::Usage(UsageError::InvalidParameters(
            ParamError::Storage
        )))
    );
    assert_eq!(
        Receiver::new(n, cfg, ArrayStorage::<3, 64>::new(), Instant::ZERO).err(),
        Some(Error::Usage(UsageError::InvalidParameters(
            ParamError::Storage
        )))
    );
    let short = Config {
        idle_timeout: Some(core::time::Duration::from_millis(199)),
        ..cfg
    };
    assert_eq!(short.check(&n), Err(ParamError::IdleTimeout));
    assert!(Sender::new(n, short, ArrayStorage::<4, 64>::new(), Instant::ZERO).is_err());
    let enough = Config {
        idle_timeout: Some(core::time::Duration::from_millis(200)),
        ..cfg
    };
    assert_eq!(enough.check(&n), Ok(()));
    assert!(Receiver::new(n, enough, ArrayStorage::<4, 64>::new(), Instant::ZERO).is_ok());
}

#[test]
// spec-test: [hs.ctrl-depth]
fn local_parameters_are_checked_whole() {
    assert_eq!(params(4096, 8).check(), Ok(()));
    let p = params(4096, 8);
    assert_eq!(
        Params {
            chunk_size: 100,
            ..p
        }
        .check(),
        Err(ParamError::ChunkSize)
    );
    assert_eq!(Params { window: 0, ..p }.check(), Err(ParamError::Window));
    assert_eq!(
        Params {
            max_open_files: 0,
            ..p
        }
        .check(),
        Err(ParamError::OpenFiles)
    );
    assert_eq!(
        Params {
            ctrl_depth: min_ctrl_depth(p.max_open_files) - 1,
            ..p
        }
        .check(),
        Err(ParamError::CtrlDepth)
    );
    assert_eq!(
        Params {
            keepalive_ms: 0,
            ..p
        }
        .check(),
        Err(ParamError::Keepalive)
    );
    assert_eq!(
        Params {
            max_ring_bytes: 4096 * 8,
            ..p
        }
        .check(),
        Ok(())
    );
}

#[test]
fn a_ring_of_exactly_the_limit_is_legal() {
    let relen = |mut n: Negotiated| {
        n.ring.len = n.ring_len();
        n
    };
    // 1 MiB × 65,536 = 64 GiB = MAX_RING_BYTES exactly.
    let at_limit = relen(Negotiated {
        chunk_size: 1 << 20,
        window: MAX_WINDOW,
        ..base_negotiated()
    });
    assert_eq!(at_limit.data_len(), MAX_RING_BYTES);
    assert_eq!(at_limit.check(), Ok(()));
    let above = relen(Negotiated {
        chunk_size: 2 << 20,
        ..at_limit
    });
    assert_eq!(above.check(), Err(ParamError::RingTooLarge));
}

#[test]
fn every_refusal_has_its_own_text() {
    use rdmaft_protocol::NameError;
    let names = [
        NameError::Empty,
        NameError::TooLong,
        NameError::NotUtf8,
        NameError::Nul,
        NameError::Control,
        NameError::Absolute,
        NameError::ParentDir,
        NameError::EmptyComponent,
        NameError::Reserved,
    ]
    .map(|e| e.to_string());
    let params = [
        ParamError::ChunkSize,
        ParamError::Window,
        ParamError::CtrlDepth,
        ParamError::OpenFiles,
        ParamError::Keepalive,
        ParamError::RingTooLarge,
        ParamError::RingLayout,
        ParamError::DigestRequired,
        ParamError::KeyMismatch,
        ParamError::IdleTimeout,
        ParamError::Storage,
    ]
    .map(|e| e.to_string());
    let replies = [
        ReplyError::ChunkSize,
        ReplyError::Window,
        ReplyError::OpenFiles,
        ReplyError::Keepalive,
        ReplyError::Features,
        ReplyError::CtrlDepth,
        ReplyError::RingLayout,
        ReplyError::DigestRequired,
        ReplyError::AuthNotAgreed,
        ReplyError::BadProof,
        ReplyError::LocalParams,
    ]
    .map(|e| e.to_string());
    let handshakes = [
        HandshakeError::Decode(DecodeError::NonZeroReserved),
        HandshakeError::Invalid(ReplyError::BadProof),
    ]
    .map(|e| e.to_string());
    assert_eq!(
        handshakes,
        [
            "undecodable handshake reply: reserved field is not zero",
            "invalid handshake reply: the receiver's key proof is wrong",
        ]
    );
    for texts in [&names[..], &params[..], &replies[..]] {
        let distinct: std::collections::BTreeSet<_> = texts.iter().collect();
        assert_eq!(distinct.len(), texts.len(), "{texts:?}");
        assert!(texts.iter().all(|t| t.len() > 8), "{texts:?}");
    }
    assert_eq!(
        NameError::ParentDir.to_string(),
        "name has a '..' component"
    );
    assert_eq!(ParamError::Window.to_string(), "window out of range");
}

/// The group a receiver with groups puts a new connection in (none without `LANES`).
fn group_of(agreed: &rdmaft_protocol::Agreed) -> u32 {
    if agreed.features.contains(Features::LANES) {
        7
    } else {
        0
    }
}

#[test]
// spec-test: [lanes.open] [lanes.unknown-group] [lanes.accept-group]
fn lanes_open_a_group_and_join_it_by_number() {
    let ring = |agreed: &rdmaft_protocol::Agreed| RingInfo {
        addr: 0x10_0000,
        len: agreed.ring_len(),
        rkey: 3,
    };
    let opener = params(4096, 8);
    assert!(opener.features.contains(Features::LANES));
    let hello = hello_of(&opener);
    let agreed = negotiate(&hello, &opener).unwrap();
    assert_eq!(agreed.join, 0, "a first lane opens a group");
    // The receiver must name a group when LANES is agreed, and only then.
    assert_eq!(
        agreed.accept(ring(&agreed), [0; 16], None, 0).err(),
        Some(ParamError::Group)
    );
    let (rneg, reply) = agreed.accept(ring(&agreed), [0; 16], None, 77).unwrap();
    assert_eq!(rneg.group, 77);
    let mut b = [0u8; ACCEPT_LEN];
    reply.encode(&mut b).unwrap();
    assert_eq!(check_reply(&b, &opener, &hello, None).unwrap().group, 77);

    // A second lane joins group 77: the accept must carry exactly that group.
    let mut joiner = opener;
    joiner.group = 77;
    let hello = hello_of(&joiner);
    let agreed = negotiate(&hello, &opener).unwrap();
    assert_eq!(agreed.join, 77);
    assert_eq!(
        agreed.accept(ring(&agreed), [0; 16], None, 78).err(),
        Some(ParamError::Group),
        "a join answered with another group"
    );
    let (_, reply) = agreed.accept(ring(&agreed), [0; 16], None, 77).unwrap();
    let HandshakeReply::Accept(sent) = reply else {
        panic!("an accept")
    };
    assert_eq!(
        check_reply(&accept_bytes(sent), &joiner, &hello, None)
            .unwrap()
            .group,
        77
    );
    for wrong in [0, 78] {
        let forged = AcceptRepr {
            group: wrong,
            ..sent
        };
        assert_eq!(
            check_reply(&accept_bytes(forged), &joiner, &hello, None),
            Err(HandshakeError::Invalid(ReplyError::Group)),
            "a joining lane took group {wrong}"
        );
    }
    // A receiver without groups has none to join, and names none.
    let plain = Params {
        features: opener.features - Features::LANES,
        ..opener
    };
    assert_eq!(
        negotiate(&hello, &plain).err(),
        Some(RejectReason::UNKNOWN_GROUP)
    );
    let agreed = negotiate(&hello_of(&opener), &plain).unwrap();
    assert!(!agreed.features.contains(Features::LANES));
    let (_, reply) = agreed.accept(ring(&agreed), [0; 16], None, 0).unwrap();
    let HandshakeReply::Accept(sent) = reply else {
        panic!("an accept")
    };
    let bytes = accept_bytes(AcceptRepr { group: 5, ..sent });
    assert_eq!(
        check_reply(&bytes, &opener, &hello_of(&opener), None),
        Err(HandshakeError::Invalid(ReplyError::Group)),
        "a group without LANES"
    );
    // A group in a hello that does not offer LANES is a reserved field set.
    let mut bad = hello_of(&plain);
    bad[31] = 1;
    assert_eq!(
        negotiate(&bad, &opener).err(),
        Some(RejectReason::MALFORMED)
    );
    assert_eq!(Params { group: 1, ..plain }.check(), Err(ParamError::Group));
}

/// A feature bit this crate does not know.
const UNKNOWN: u32 = 1 << 31;

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
    let mut hello = hello_with(&featured(known), [0; 16]);
    hello[8] |= 0x80;
    assert_eq!(HelloRepr::decode(&hello).unwrap().features, known);
    let receiver = featured(Features::from_bits_retain(known.bits() | UNKNOWN));
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
    let hello = hello_with(&unlimited, [0; 16]);
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
    let hello = hello_with(&featured(Features::RESUME), [0; 16]);
    let ok = featured(Features::RESUME);
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
    let agreed = negotiate(&hello_with(&sender, [0; 16]), &ok).unwrap();
    assert_eq!(agreed.max_open_files, 2);
    assert!((min_ctrl_depth(2)..=MAX_CTRL_DEPTH).contains(&agreed.receiver_ctrl_depth));
}

/// [psk.fresh-nonce] The nonces given go on the wire with `AUTH_PSK`: the hello carries the
/// sender's, the accept the receiver's (zero when `AUTH_PSK` is not agreed), and the proofs
/// cover them, so another nonce gives other proofs.
#[test]
// spec-test: [psk.fresh-nonce]
fn the_nonces_given_go_into_the_handshake_and_its_proofs() {
    let keyed = featured(Features::RESUME | Features::AUTH_PSK);
    let hello = hello_with(&keyed, [1; 16]);
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
    let plain = featured(Features::RESUME);
    let agreed = negotiate(&hello_with(&plain, [0; 16]), &plain).unwrap();
    let (_, a, _) = accept([2; 16], None, &agreed);
    assert_eq!(a.nonce, [0; 16], "no nonce without AUTH_PSK");
}
