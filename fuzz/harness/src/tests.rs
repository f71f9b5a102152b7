//! Stable replay of the fuzz targets: the committed seeds, then deterministic pseudo-random
//! inputs, through the same harness functions the cargo-fuzz binaries call.
//!
//! `cargo test -p rdmaft-fuzz-harness` runs these (part of `make test`).
//! `generated_seeds_are_committed` checks every seed file matches its generator below (wire
//! messages for the decoders, names, and scenarios written as operations for the state
//! machines, encoded by `encode`); `RDMAFT_WRITE_SEEDS=1` makes it rewrite them instead,
//! and remove seed files no generator makes.

mod encode;

use crate::common::*;
use crate::msg::Msg as PeerMsg;
use crate::names::NamesOp;
use crate::pair::sim;
use crate::receiver::{ImmChoice, LenChoice, ReceiverOp};
use crate::sender::SenderOp;
use crate::*;
use arbitrary::{Arbitrary, Unstructured};
use encode::{Enc, Encode, FileSeed, PairSeed, PolicySeed, SetupSeed, SideSeed};
use rdmaft_protocol::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

fn seeds_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../seeds")
        .join(target)
}

/// The committed seeds of `target`, sorted by name.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = seeds_dir(target);
    let mut out: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.expect("dir entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&path).expect("read seed"))
        })
        .collect();
    out.sort();
    out
}

/// xorshift64*: deterministic inputs without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let len = self.below(max_len + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// A copy of `seed` with a few bytes changed, cut or appended.
    fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut v = seed.to_vec();
        for _ in 0..1 + self.below(3) {
            match self.below(4) {
                0 if !v.is_empty() => {
                    let i = self.below(v.len());
                    v[i] = self.next() as u8;
                }
                1 if !v.is_empty() => {
                    let i = self.below(v.len());
                    v[i] ^= 1 << self.below(8);
                }
                2 => v.truncate(self.below(v.len() + 1)),
                _ => v.push(self.next() as u8),
            }
        }
        v
    }
}

#[test]
fn every_target_has_seeds() {
    for (target, _) in TARGETS {
        assert!(!seeds(target).is_empty(), "no seeds for {target}");
    }
}

#[test]
fn replay_seeds() {
    for (target, harness) in TARGETS {
        for (name, data) in seeds(target) {
            eprintln!("{target}/{name}");
            harness(&data);
        }
    }
}

/// Random bytes and mutated seeds through every decoder target.
#[test]
fn random_decoder_inputs() {
    let mut rng = XorShift(0x5eed_0001);
    for (target, harness) in TARGETS.into_iter().take(3) {
        let seeds = seeds(target);
        for i in 0..4000 {
            let input = if i % 2 == 0 {
                rng.bytes(128)
            } else {
                let (_, seed) = &seeds[rng.below(seeds.len())];
                rng.mutate(seed)
            };
            harness(&input);
        }
    }
}

/// Names from a small alphabet, so the separators, dots and control bytes actually meet.
#[test]
fn random_names() {
    let alphabet: &[&[u8]] = &[
        b".rdmaft-",
        b".RDMAFT-",
        b"a",
        b"/",
        b".",
        b"..",
        b"\0",
        b"\x7f",
        b"\n",
        &[0xc3, 0xa9],
        &[0xff],
        b"b",
    ];
    let mut rng = XorShift(0x5eed_0002);
    for _ in 0..5000 {
        let mut name = Vec::new();
        for _ in 0..rng.below(10) {
            name.extend_from_slice(alphabet[rng.below(alphabet.len())]);
        }
        crate::name(&name);
    }
}

/// Random operation streams (the bytes are the `Unstructured` the harnesses decode), plus
/// mutated seeds.
#[test]
fn random_state_machine_inputs() {
    let mut rng = XorShift(0x5eed_0003);
    for (target, harness, count, max_len) in [
        ("names", names as Harness, 2000, 256),
        ("sender", sender, 3000, 1024),
        ("receiver", receiver, 3000, 1024),
        ("pair", pair, 600, 256),
        ("dest", dest, 1500, 512),
    ] {
        let seeds = seeds(target);
        for i in 0..count {
            let input = if i % 2 == 0 {
                rng.bytes(max_len)
            } else {
                let (_, seed) = &seeds[rng.below(seeds.len())];
                rng.mutate(seed)
            };
            harness(&input);
        }
    }
}

/// Parts the agreement does not allow (§4.1): without `LANES`, or below the chunk size. The
/// sender refuses them as `InvalidMetadata(Part)` and stays open, the receiver fails with
/// `BadPart` (the harnesses' models check which); a whole part of the same file is fine.
#[test]
// spec-test: [part.agreed]
fn parts_the_agreement_does_not_allow() {
    let big = SetupSeed {
        big_chunk: true,
        ..LANES_SEED
    };
    let half = Kind::Part(PartChoice::Half { index: 1 });
    let whole = Kind::Part(PartChoice::Whole { extra: 0, index: 1 });
    for (setup, kind, allowed) in [
        (SetupSeed::PLAIN, whole, false),
        (big, half, false),
        (big, whole, true),
    ] {
        let size = chunks(3, 0);
        let ops = [start_kind(kind, size, 1), SenderOp::Pump];
        let out = crate::sender::run(&encoded(&setup, ops.as_slice())).expect("a sender");
        assert!(!out.failed, "{kind:?}");
        let offer = to_receiver(PeerMsg::FileHeader {
            file: NewId::Next,
            kind,
            size,
            meta: meta(),
            name: Name::Simple(1),
        });
        let ops = [offer, ReceiverOp::Pump];
        let out = crate::receiver::run(&encoded(&setup, ops.as_slice())).expect("a receiver");
        assert_eq!(out.failed, !allowed, "{kind:?} with {setup:?}");
    }
}

// ---- regression tests for protocol findings ----

/// The receiver took an ordinary message in the last slot of the sender's control credit,
/// which §5.2 keeps for the final Goodbye or Error (issue 17): the same operations as the
/// `control_credit_last_slot` scenario, which closes, but ending in a keepalive.
#[test]
fn an_ordinary_message_in_the_last_control_slot() {
    let setup = SetupSeed {
        open: 1,
        ..SetupSeed::PLAIN
    };
    let bytes = encoded(&setup, unreported_keepalives(PeerMsg::KeepAlive).as_slice());
    let out = crate::receiver::run(&bytes).expect("a receiver");
    assert!(out.failed && !out.closed, "{out:?}");
}

/// `Sender::in_flight` was `posted − peer_consumed`, but a credit may cover the chunks a
/// `FileAbort` promised to skip before the sender skips them (it waits for the aborted
/// file's outstanding reads): then it underflowed (a panic with overflow checks, a huge count
/// without). Found by the `sender` target.
#[test]
fn in_flight_underflow() {
    let depth = min_ctrl_depth(4);
    let neg = Negotiated {
        group: u32::from((Features::empty()).contains(Features::LANES)),

        features: Features::empty(),
        flags: AcceptFlags::empty(),
        chunk_size: 4096,
        window: 4,
        sender_ctrl_depth: depth,
        receiver_ctrl_depth: depth,
        max_open_files: 4,
        keepalive_ms: 1000,
        ring: RingInfo {
            addr: 0x1000,
            len: 4 * 4096 + u64::from(depth) * 4096,
            rkey: 1,
        },
        sender_proof: None,
    };
    let t = Instant::ZERO;
    let mut s = Sender::new(neg, Config::default(), Store::new(), t).unwrap();
    let mut buf = [0u8; CTRL_MSG_MAX];
    let mut drain = |s: &mut Sender<Store>| while s.poll_output(t, &mut buf).is_some() {};
    let info = FileInfo {
        sync: None,
        part: None,
        file_id: 0,
        kind: EntryKind::File,
        size: 10 * 4096,
        mtime_sec: 0,
        mtime_nsec: 0,
        mode: 0o644,
        name: "f",
        target: &[],
    };
    s.start_file(t, &info).unwrap();
    drain(&mut s); // the header
    let msg = |m: Control<'_>| {
        let mut b = [0u8; CTRL_MSG_MAX];
        let n = m.encode(0, &mut b).unwrap();
        b[..n].to_vec()
    };
    let accept = msg(Control::FileAnswer {
        file_id: 0,
        answer: FileAnswer::Accept { offset: 0 },
    });
    s.handle_control(t, &accept).unwrap();
    drain(&mut s); // FileAccepted, reads of chunks 0..4
    s.abort_file(t, 0, AbortReason::READ_ERROR).unwrap();
    drain(&mut s); // FileAbort: chunks 0..10 are promised skipped
                   // The receiver consumed (skipped) them all and says so, legally (PROTOCOL.md §5.1),
                   // before the application reported the four outstanding reads.
    s.handle_control(t, &msg(Control::Credit { consumed: 10 }))
        .unwrap();
    assert_eq!(s.in_flight(), 0, "nothing is in flight");
}

/// Each accepted file takes `ceil(size / chunk)` sequence numbers, up to 2^51 for a file of
/// `i64::MAX` bytes, and an aborted one skips them all; about 8192 such files overflowed the
/// receiver's 64-bit sequence counters (a panic with overflow checks). Now the session's
/// numbers stop at `MAX_SESSION_CHUNKS`: the accept that would pass it is refused (the
/// application rejects the file instead) and nothing panics.
#[test]
// spec-test: [data.seq-space]
fn sequence_numbers_overflow() {
    let depth = min_ctrl_depth(1);
    let neg = Negotiated {
        group: u32::from((Features::empty()).contains(Features::LANES)),

        features: Features::empty(),
        flags: AcceptFlags::empty(),
        chunk_size: 4096,
        window: 1,
        sender_ctrl_depth: depth,
        receiver_ctrl_depth: depth,
        max_open_files: 1,
        keepalive_ms: 1000,
        ring: RingInfo {
            addr: 0x1000,
            len: 4096 + u64::from(depth) * 4096,
            rkey: 1,
        },
        sender_proof: None,
    };
    let t = Instant::ZERO;
    let mut r = Receiver::new(neg, Config::default(), Store::new(), t).unwrap();
    let mut buf = [0u8; CTRL_MSG_MAX];
    let (mut ctrl, mut sent) = (0u32, 0u32);
    for id in 0..10_000u64 {
        let header = Control::FileHeader(wire::FileHeader {
            sync: None,
            part: None,
            file_id: id,
            kind: EntryKind::File,
            size: i64::MAX as u64,
            mtime_sec: 0,
            mtime_nsec: 0,
            mode: 0o644,
            name: "f",
            target: &[],
        });
        let abort = Control::FileAbort {
            file_id: id,
            reason: AbortReason::READ_ERROR,
        };
        for (i, msg) in [header, abort].into_iter().enumerate() {
            let mut b = [0u8; CTRL_MSG_MAX];
            let n = msg.encode(sent, &mut b).unwrap();
            r.handle_write(t, Imm::control(ctrl).encode(), n as u32)
                .unwrap_or_else(|e| panic!("file {id}: {e}"));
            ctrl += 1;
            r.handle_control(t, &b[..n])
                .unwrap_or_else(|e| panic!("file {id}: {e}"));
            if i == 0 {
                match r.answer_file(t, id, FileAnswer::Accept { offset: 0 }) {
                    Ok(()) => {}
                    Err(Error::Usage(UsageError::InvalidAnswer)) => {
                        let limit = MAX_SESSION_CHUNKS / (i64::MAX as u64).div_ceil(4096);
                        assert_eq!(id, limit, "refused at the sequence-space limit");
                        return;
                    }
                    Err(e) => panic!("file {id}: {e}"),
                }
            }
            while let Some(out) = r.poll_output(t, &mut buf) {
                if let ReceiverOutput::Transmit(_) = out {
                    sent += 1;
                }
            }
        }
    }
    panic!("10,000 exabyte-sized files were all accepted");
}

// ---- scenarios ----

fn meta() -> Meta {
    Meta {
        mtime_sec: 1_700_000_000,
        mtime_nsec: 5,
        mode: 0o644,
        raw: false,
    }
}

fn start(size: Size, name: u8) -> SenderOp {
    SenderOp::Start {
        id: NewId::Next,
        kind: Kind::File,
        size,
        meta: meta(),
        name: Name::Simple(name),
    }
}

/// A `start` of an entry of `kind`.
fn start_kind(kind: Kind, size: Size, name: u8) -> SenderOp {
    SenderOp::Start {
        id: NewId::Next,
        kind,
        size,
        meta: meta(),
        name: Name::Simple(name),
    }
}

/// A `start` of part `index` of parts of `2^extra` chunks.
fn start_part(size: Size, name: u8, extra: u8, index: u8) -> SenderOp {
    start_kind(Kind::Part(PartChoice::Whole { extra, index }), size, name)
}

/// Groups agreed (parts allowed).
const LANES_SEED: SetupSeed = SetupSeed {
    group: Some(0x4c41_4e45),
    ..SetupSeed::PLAIN
};

fn chunks(n: u8, extra: u16) -> Size {
    Size::Chunks { n, extra }
}

fn to_sender(msg: PeerMsg) -> SenderOp {
    SenderOp::Msg {
        ack: AckChoice::All,
        msg,
    }
}

fn short(parts: [u8; 3], depth: u8) -> ShortName {
    ShortName { parts, depth }
}

/// The sender's scenarios: the setup, then operations.
fn sender_scenarios() -> Vec<(&'static str, SetupSeed, Vec<SenderOp>)> {
    use SenderOp::*;
    let plain = SetupSeed::PLAIN;
    let answer = |answer| {
        to_sender(PeerMsg::FileAnswer {
            file: FileRef::Next,
            answer,
        })
    };
    let cancel = to_sender(PeerMsg::FileCancel {
        file: FileRef::Next,
        status: FileStatus::NO_SPACE.0,
    });
    vec![
        (
            "one_file",
            plain,
            vec![
                start(chunks(2, 100), 1),
                Pump,
                Pump,
                Pump,
                Pump,
                Close,
                to_sender(PeerMsg::Goodbye),
            ],
        ),
        (
            "many_files",
            SetupSeed {
                window: 2,
                proof: Some([6; 32]),
                digest_required: true,
                idle: Some(4),
                ..plain
            },
            vec![
                start(chunks(3, 0), 1),
                start(Size::Empty, 2),
                SenderOp::Start {
                    id: NewId::Skip(3),
                    kind: Kind::Directory,
                    size: Size::Empty,
                    meta: meta(),
                    name: Name::Short(short([0, 0, 0], 0)),
                },
                start(chunks(1, 1), 3),
                answer(crate::common::Answer::ResumeChunks(1)),
                answer(crate::common::Answer::Reject(2)),
                answer(crate::common::Answer::Accept),
                Pump,
                Timeout(700),
                Pump,
                Pump,
                Pump,
                Pump,
                Pump,
                Pump,
                Close,
                Pump,
                Pump,
                to_sender(PeerMsg::Goodbye),
            ],
        ),
        (
            "aborts",
            SetupSeed { window: 3, ..plain },
            vec![
                start(chunks(5, 0), 1),
                start(chunks(2, 7), 2),
                start(chunks(1, 0), 3),
                Pump,
                Pump,
                ReadyNext,
                AbortFile {
                    file: FileRef::Next,
                    reason: AbortReason::READ_ERROR.0,
                },
                Pump,
                Pump,
                cancel.clone(),
                Pump,
                Pump,
                Pump,
                Pump,
                Pump,
                Close,
                Pump,
                to_sender(PeerMsg::Goodbye),
            ],
        ),
        (
            // A file of three parts of two 8 KiB chunks: the middle one and the short last
            // one, then a part below the chunk size (refused).
            "parts",
            SetupSeed {
                window: 2,
                big_chunk: true,
                ..LANES_SEED
            },
            vec![
                start_part(chunks(5, 100), 1, 1, 1),
                start_part(chunks(5, 100), 2, 1, 2),
                start_kind(Kind::Part(PartChoice::Half { index: 0 }), chunks(1, 0), 3),
                Pump,
                Pump,
                Pump,
                Pump,
                Pump,
                Pump,
                Pump,
                Close,
                Pump,
                to_sender(PeerMsg::Goodbye),
            ],
        ),
        (
            // Links (LINKS agreed) between files; one with an empty target (refused).
            "links",
            SetupSeed {
                links: true,
                ..plain
            },
            vec![
                start_kind(Kind::Link { len: 9 }, Size::Empty, 1),
                start(chunks(1, 5), 2),
                start_kind(Kind::Link { len: 0 }, Size::Empty, 3),
                start_kind(Kind::Link { len: 64 }, Size::Empty, 4),
                Pump,
                Pump,
                Pump,
                Pump,
                Pump,
                Close,
                Pump,
                to_sender(PeerMsg::Goodbye),
            ],
        ),
        (
            "credit_pressure",
            SetupSeed {
                window: 1,
                open: 1,
                keepalive_ms: 1,
                ..plain
            },
            vec![
                start(chunks(2, 0), 1),
                Timeout(1),
                Timeout(1),
                Timeout(1),
                Timeout(1),
                Timeout(1),
                Timeout(1),
                Timeout(1),
                Timeout(1),
                Timeout(1),
                Timeout(1),
                Msg {
                    ack: AckChoice::Behind(3),
                    msg: PeerMsg::KeepAlive,
                },
                Flood {
                    ack: AckChoice::All,
                    count: 20,
                },
                Timeout(1),
                Pump,
                Hold,
                Pump,
                Pump,
                Pump,
                Close,
                Pump,
                to_sender(PeerMsg::Goodbye),
            ],
        ),
    ]
}

fn to_receiver(msg: PeerMsg) -> ReceiverOp {
    ReceiverOp::Msg {
        ack: AckChoice::All,
        msg,
        imm: ImmChoice::Next,
        len: LenChoice::Exact,
    }
}

fn offer_part(size: Size, name: Name, extra: u8, index: u8) -> ReceiverOp {
    to_receiver(PeerMsg::FileHeader {
        file: NewId::Next,
        kind: Kind::Part(PartChoice::Whole { extra, index }),
        size,
        meta: meta(),
        name,
    })
}

fn offer(size: Size, name: Name) -> ReceiverOp {
    to_receiver(PeerMsg::FileHeader {
        file: NewId::Next,
        kind: Kind::File,
        size,
        meta: meta(),
        name,
    })
}

/// The receiver's scenarios: the setup, then operations.
fn receiver_scenarios() -> Vec<(&'static str, SetupSeed, Vec<ReceiverOp>)> {
    use ReceiverOp::*;
    let plain = SetupSeed::PLAIN;
    let end = |digest: u8| {
        to_receiver(PeerMsg::FileEnd {
            file: FileRef::Next,
            length: Count::Auto,
            digest: ArbDigest {
                kind: digest,
                bytes: [digest; 32],
            },
        })
    };
    vec![
        (
            "one_file",
            plain,
            vec![
                offer(chunks(2, 100), Name::Simple(1)),
                Pump,
                Pump,
                Pump,
                Pump,
                to_receiver(PeerMsg::Goodbye),
            ],
        ),
        (
            "many_files",
            SetupSeed {
                window: 2,
                proof: Some([6; 32]),
                digest_required: true,
                idle: Some(4),
                ..plain
            },
            vec![
                to_receiver(PeerMsg::Auth {
                    proof: Proof::Right,
                }),
                offer(chunks(3, 0), Name::Short(short([0, 1, 0], 1))),
                offer(Size::Empty, Name::Short(short([0, 0, 0], 0))),
                offer(chunks(1, 1), Name::Simple(3)),
                AnswerNext(crate::common::Answer::ResumeChunks(1)),
                AnswerAuto,
                AnswerNext(crate::common::Answer::Reject(2)),
                Stream,
                ConsumeAll,
                Stream,
                end(0),
                Timeout(700),
                Pump,
                Pump,
                Pump,
                Pump,
                to_receiver(PeerMsg::Goodbye),
            ],
        ),
        (
            // Two parts of one size: a whole-chunk one and the short last one.
            "parts",
            SetupSeed {
                window: 2,
                ..LANES_SEED
            },
            vec![
                offer_part(chunks(5, 100), Name::Simple(1), 1, 0),
                offer_part(chunks(5, 100), Name::Simple(2), 1, 2),
                Pump,
                Pump,
                Pump,
                Pump,
                Pump,
                Pump,
                to_receiver(PeerMsg::Goodbye),
            ],
        ),
        (
            // A link, a file, a link: the links end with no data and no digest.
            "links",
            SetupSeed {
                links: true,
                ..plain
            },
            vec![
                to_receiver(PeerMsg::FileHeader {
                    file: NewId::Next,
                    kind: Kind::Link { len: 12 },
                    size: Size::Empty,
                    meta: meta(),
                    name: Name::Simple(1),
                }),
                offer(chunks(1, 3), Name::Simple(2)),
                AnswerAuto,
                AnswerAuto,
                to_receiver(PeerMsg::FileEnd {
                    file: FileRef::Next,
                    length: Count::Auto,
                    digest: ArbDigest {
                        kind: 0,
                        bytes: [0; 32],
                    },
                }),
                Stream,
                ConsumeAll,
                end(1),
                Pump,
                Pump,
                Pump,
                to_receiver(PeerMsg::Goodbye),
            ],
        ),
        (
            "cancels_and_aborts",
            SetupSeed { window: 3, ..plain },
            vec![
                offer(chunks(5, 0), Name::Simple(1)),
                offer(chunks(2, 7), Name::Simple(2)),
                offer(chunks(1, 0), Name::Simple(3)),
                Pump,
                Cancel {
                    file: FileRef::Next,
                    status: FileStatus::NO_SPACE.0,
                },
                ConsumeNext,
                ChunkNext(LenChoice::Exact),
                to_receiver(PeerMsg::FileAbort {
                    file: FileRef::Next,
                    reason: AbortReason::PEER_CANCELLED.0,
                }),
                ConsumeAll,
                Stream,
                ConsumeNext,
                to_receiver(PeerMsg::FileAbort {
                    file: FileRef::Next,
                    reason: AbortReason::READ_ERROR.0,
                }),
                Pump,
                Pump,
                Pump,
                Pump,
                to_receiver(PeerMsg::Goodbye),
            ],
        ),
        (
            "credit_pressure",
            SetupSeed {
                window: 1,
                open: 1,
                keepalive_ms: 1,
                ..plain
            },
            vec![
                offer(chunks(3, 0), Name::Simple(1)),
                AnswerAuto,
                Timeout(1),
                Timeout(1),
                Timeout(1),
                Timeout(1),
                Timeout(1),
                Timeout(1),
                Timeout(1),
                Timeout(1),
                Timeout(1),
                to_receiver(PeerMsg::KeepAlive),
                Flood {
                    ack: AckChoice::All,
                    count: 20,
                },
                Announce(LenChoice::Exact),
                Deliver {
                    ack: AckChoice::All,
                    msg: PeerMsg::KeepAlive,
                },
                ChunkNext(LenChoice::Exact),
                ConsumeNext,
                PureAck {
                    ack: AckChoice::All,
                    nonempty: false,
                },
                Stream,
                Pump,
                Pump,
                Pump,
                Pump,
                to_receiver(PeerMsg::Goodbye),
            ],
        ),
        (
            // §5.2 at the boundary: D − 1 keepalives nobody reports (not drained), then the
            // last slot of the sender's credit, which only its final message may take.
            "control_credit_last_slot",
            SetupSeed { open: 1, ..plain },
            unreported_keepalives(PeerMsg::Goodbye),
        ),
    ]
}

/// `min_ctrl_depth(1) − 1` keepalives without a drain (no ack goes out), then `last`.
fn unreported_keepalives(last: PeerMsg) -> Vec<ReceiverOp> {
    let depth = min_ctrl_depth(1);
    let mut ops = Vec::new();
    for _ in 1..depth {
        ops.push(ReceiverOp::Hold);
        ops.push(to_receiver(PeerMsg::KeepAlive));
    }
    ops.push(to_receiver(last));
    ops
}

/// The names target's scenarios: whether the name table is small, then operations.
fn names_scenarios() -> Vec<(&'static str, bool, Vec<NamesOp>)> {
    use NamesOp::*;
    let s = |parts, depth, dir| Start {
        name: short(parts, depth),
        dir,
    };
    vec![
        (
            "prefixes",
            false,
            vec![
                s([0, 1, 0], 1, false), // a/b
                s([0, 0, 0], 0, true),  // a: conflicts
                s([0, 1, 2], 2, false), // a/b/ab: conflicts
                s([2, 0, 0], 0, false), // ab
                s([0, 2, 0], 1, false), // a/ab
                Accept,
                s([0, 1, 0], 1, false), // a/b again: conflicts
                Result,
                s([0, 1, 0], 1, false), // a/b: free now
                Reject,
                Abort(1),
                Accept,
                Accept,
                Result,
                Result,
                Result,
                s([0, 0, 0], 0, true),
            ],
        ),
        (
            "small_table",
            true,
            vec![
                s([0, 1, 2], 2, false),
                s([1, 2, 0], 2, false),
                s([2, 0, 1], 2, false),
                s([0, 0, 0], 1, false),
                Accept,
                Reject,
                s([0, 1, 1], 2, false),
                Result,
                s([1, 1, 1], 2, false),
                Abort(0),
                Accept,
                Result,
            ],
        ),
    ]
}

/// The pair target's scenarios.
fn pair_scenarios() -> Vec<(&'static str, PairSeed)> {
    let side = |open, keepalive_ms| SideSeed {
        open,
        extra_depth: 0,
        keepalive_ms,
    };
    let chunk = sim::CHUNK as u16;
    let schedule: Vec<u8> = (0..64).map(|i: u8| i.wrapping_mul(37)).collect();
    let seed = |files: Vec<FileSeed>| PairSeed {
        window: 4,
        sender: side(4, None),
        receiver: side(8, None),
        receiver_window: 8,
        digest_required: false,
        lanes: false,
        batch: false,
        files,
        schedule: schedule.clone(),
    };
    vec![
        (
            "one_file",
            seed(vec![(0, 2 * chunk + 5, PolicySeed::Accept, None)]),
        ),
        (
            "mixed",
            seed(vec![
                (2, chunk, PolicySeed::Accept, None),
                (0, 0, PolicySeed::Directory, None),
                (3, 3 * chunk, PolicySeed::Resume(chunk + 9), None),
                (5, 100, PolicySeed::Reject, None),
                (2, 10, PolicySeed::Accept, None),
                (7, chunk + 1, PolicySeed::Accept, None),
            ]),
        ),
        (
            "aborts_and_cancels",
            PairSeed {
                window: 2,
                ..seed(vec![
                    (0, 3 * chunk, PolicySeed::SenderAbortAt(1), None),
                    (1, 2 * chunk, PolicySeed::ReceiverCancelAt(0), None),
                    (5, chunk + 3, PolicySeed::Accept, None),
                    (0, 3 * chunk + 1, PolicySeed::ReceiverCancelAt(2), None),
                ])
            },
        ),
        (
            // Parts of one and two chunks, whole and short, with a resume, an abort and a
            // cancel inside a part.
            "parts",
            PairSeed {
                lanes: true,
                batch: true,
                ..seed(vec![
                    (0, 3 * chunk + 1, PolicySeed::Accept, Some((0, 3))),
                    (1, 3 * chunk, PolicySeed::Accept, Some((1, 0))),
                    (
                        2,
                        2 * chunk + 9,
                        PolicySeed::Resume(chunk + 9),
                        Some((1, 0)),
                    ),
                    (3, 3 * chunk, PolicySeed::SenderAbortAt(0), Some((0, 1))),
                    (
                        4,
                        3 * chunk + 1,
                        PolicySeed::ReceiverCancelAt(1),
                        Some((1, 1)),
                    ),
                    (5, chunk, PolicySeed::Accept, None),
                    (6, 0, PolicySeed::Directory, None),
                ])
            },
        ),
        (
            "tight_credit",
            PairSeed {
                window: 1,
                sender: side(1, Some(1)),
                receiver: side(1, Some(2)),
                receiver_window: 1,
                digest_required: true,
                ..seed(vec![
                    (6, chunk, PolicySeed::Accept, None),
                    (2, 1, PolicySeed::Accept, None),
                    (0, 0, PolicySeed::Directory, None),
                    (4, 2 * chunk, PolicySeed::Accept, None),
                ])
            },
        ),
        (
            // Entries in sync, changed (by content), a dry run, a part in sync, among
            // plain ones.
            "sync",
            PairSeed {
                lanes: true,
                batch: true,
                ..seed(vec![
                    (0, 2 * chunk, PolicySeed::InSync, None),
                    (1, chunk + 3, PolicySeed::SyncChanged, None),
                    (2, 10, PolicySeed::Accept, None),
                    (3, chunk, PolicySeed::DryRun, None),
                    (4, 3 * chunk, PolicySeed::InSync, Some((0, 2))),
                    (5, 0, PolicySeed::Directory, None),
                    (6, 0, PolicySeed::PrunedDir, None),
                ])
            },
        ),
        (
            // Links among files: no data, their targets in the headers.
            "links",
            PairSeed {
                batch: true,
                ..seed(vec![
                    (0, 9, PolicySeed::Link, None),
                    (1, chunk + 3, PolicySeed::Accept, None),
                    (2, 64, PolicySeed::Link, None),
                    (3, 0, PolicySeed::Directory, None),
                ])
            },
        ),
    ]
}

fn encoded<T: Encode + ?Sized>(prefix: &impl Encode, ops: &T) -> Vec<u8> {
    let mut e = Enc::default();
    prefix.encode(&mut e);
    ops.encode(&mut e);
    e.0
}

impl Encode for bool {
    fn encode(&self, e: &mut Enc) {
        e.u8(u8::from(*self));
    }
}

/// Decodes operations the way a harness does.
fn decode_ops<'a, T: Arbitrary<'a>>(u: &mut Unstructured<'a>) -> Vec<T> {
    let mut ops = Vec::new();
    while !u.is_empty() {
        ops.push(T::arbitrary(u).expect("an operation"));
    }
    ops
}

/// The scenarios decode to what they were written as, and go where they should.
#[test]
fn seed_encoders_round_trip() {
    for (name, setup, ops) in sender_scenarios() {
        let bytes = encoded(&setup, ops.as_slice());
        let mut u = Unstructured::new(&bytes);
        let (neg, config) = crate::common::setup(&mut u).expect("setup");
        check_setup(name, &setup, &neg, &config);
        let got: Vec<SenderOp> = decode_ops(&mut u);
        assert_eq!(format!("{got:?}"), format!("{ops:?}"), "sender/{name}");
        let out = crate::sender::run(&bytes).expect("a sender");
        assert!(out.closed, "sender/{name} did not close: {out:?}");
    }
    for (name, setup, ops) in receiver_scenarios() {
        let bytes = encoded(&setup, ops.as_slice());
        let mut u = Unstructured::new(&bytes);
        let (neg, config) = crate::common::setup(&mut u).expect("setup");
        check_setup(name, &setup, &neg, &config);
        let got: Vec<ReceiverOp> = decode_ops(&mut u);
        assert_eq!(format!("{got:?}"), format!("{ops:?}"), "receiver/{name}");
        let out = crate::receiver::run(&bytes).expect("a receiver");
        assert!(out.closed, "receiver/{name} did not close: {out:?}");
    }
    for (name, small, ops) in names_scenarios() {
        let bytes = encoded(&small, ops.as_slice());
        let mut u = Unstructured::new(&bytes);
        assert_eq!(u.arbitrary::<bool>().unwrap(), small);
        let got: Vec<NamesOp> = decode_ops(&mut u);
        assert_eq!(format!("{got:?}"), format!("{ops:?}"), "names/{name}");
    }
    for (name, seed) in pair_scenarios() {
        let mut e = Enc::default();
        seed.encode(&mut e);
        let mut u = Unstructured::new(&e.0);
        let (cfg, files) = crate::pair::setup(&mut u).expect("setup");
        assert_eq!(
            u.take_rest(),
            seed.schedule.as_slice(),
            "pair/{name}: schedule"
        );
        assert_eq!(cfg.sender.window, u32::from(seed.window));
        assert_eq!(cfg.receiver.window, u32::from(seed.receiver_window));
        assert_eq!(cfg.receiver.require_digest, seed.digest_required);
        assert_eq!(
            cfg.sender.features.contains(Features::BATCH),
            seed.batch,
            "pair/{name}"
        );
        for (p, s) in [(&cfg.sender, seed.sender), (&cfg.receiver, seed.receiver)] {
            assert_eq!(p.max_open_files, u16::from(s.open), "pair/{name}");
            assert_eq!(
                p.ctrl_depth,
                min_ctrl_depth(s.open.into()) + u16::from(s.extra_depth)
            );
            if let Some(ms) = s.keepalive_ms {
                assert_eq!(p.keepalive_ms, u32::from(ms));
            }
        }
        assert_eq!(files.len(), seed.files.len());
        for (f, &(n, len, policy, part)) in files.iter().zip(&seed.files) {
            let part = part.map(|(extra, index)| Part {
                shift: MIN_PART_SHIFT + extra,
                index,
            });
            assert_eq!(f.part, part, "pair/{name}");
            assert_eq!(f.name, crate::pair::NAMES[usize::from(n)], "pair/{name}");
            let (len, policy) = match policy {
                PolicySeed::Accept => (len, sim::Policy::Accept),
                PolicySeed::Reject => (len, sim::Policy::Reject),
                PolicySeed::Resume(n) => (len, sim::Policy::Resume(n.into())),
                PolicySeed::SenderAbortAt(k) => (len, sim::Policy::SenderAbortAt(k.into())),
                PolicySeed::ReceiverCancelAt(k) => (len, sim::Policy::ReceiverCancelAt(k.into())),
                PolicySeed::Directory => (0, sim::Policy::Directory),
                PolicySeed::InSync => (len, sim::Policy::InSync),
                PolicySeed::SyncChanged => (len, sim::Policy::SyncChanged),
                PolicySeed::DryRun => (len, sim::Policy::DryRun),
                PolicySeed::PrunedDir => (0, sim::Policy::PrunedDir),
                PolicySeed::Link => (len.clamp(1, 64), sim::Policy::Link),
            };
            assert_eq!(
                (f.data.len(), f.policy),
                (usize::from(len), policy),
                "pair/{name}"
            );
        }
    }
}

fn check_setup(name: &str, s: &SetupSeed, neg: &Negotiated, config: &Config) {
    assert!(valid_setup(neg, config), "{name}: {neg:?}");
    assert_eq!(neg.features.contains(Features::LINKS), s.links, "{name}");
    let chunk = if s.big_chunk { 8192 } else { 4096 };
    assert_eq!(neg.chunk_size, chunk, "{name}");
    assert_eq!(neg.window, u32::from(s.window), "{name}");
    assert_eq!(neg.max_open_files, u16::from(s.open), "{name}");
    let open = u16::from(s.open);
    assert_eq!(
        neg.sender_ctrl_depth,
        min_ctrl_depth(open) + u16::from(s.extra_depth.0)
    );
    assert_eq!(
        neg.receiver_ctrl_depth,
        min_ctrl_depth(open) + u16::from(s.extra_depth.1)
    );
    assert_eq!(neg.sender_proof, s.proof, "{name}");
    assert_eq!(
        neg.flags.contains(AcceptFlags::DIGEST_REQUIRED),
        s.digest_required
    );
    assert_eq!(neg.keepalive_ms, u32::from(s.keepalive_ms), "{name}");
    assert_eq!(neg.group, s.group.unwrap_or(0), "{name}");
    assert_eq!(
        neg.features.contains(Features::LANES),
        s.group.is_some(),
        "{name}"
    );
    let keepalive = std::time::Duration::from_millis(s.keepalive_ms.into());
    assert_eq!(
        config.idle_timeout,
        s.idle.map(|m| keepalive * u32::from(m)),
        "{name}"
    );
}

// ---- seed generation ----

fn control(msg: Control<'_>, ack: u32) -> Vec<u8> {
    let mut buf = [0u8; CTRL_MSG_MAX];
    let n = msg.encode(ack, &mut buf).expect("encode");
    buf[..n].to_vec()
}

/// Every seed: target → file name → bytes.
fn generated_seeds() -> BTreeMap<&'static str, BTreeMap<String, Vec<u8>>> {
    let mut all: BTreeMap<&'static str, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    let mut put = |target: &'static str, name: &str, data: Vec<u8>| {
        all.entry(target).or_default().insert(name.to_owned(), data);
    };

    // decode_control: one valid encoding of each message.
    let header = |name, kind, size| {
        Control::FileHeader(wire::FileHeader {
            sync: None,
            part: None,
            file_id: 7,
            kind,
            size,
            mtime_sec: 1_700_000_000,
            mtime_nsec: 123,
            mode: 0o644,
            name,
            target: &[],
        })
    };
    let blake = Digest::new(DigestKind::Blake3, &[0xab; 32]).unwrap();
    let xxh = Digest::new(DigestKind::Xxh3_128, &[0xcd; 16]).unwrap();
    let end = |digest| {
        Control::FileEnd(wire::FileEnd {
            file_id: 7,
            length: 1000,
            digest,
        })
    };
    let controls: Vec<(&str, Control<'_>)> = vec![
        (
            "file_header",
            header("dir/sub/file.txt", EntryKind::File, 1000),
        ),
        (
            "file_header_unicode",
            header("ünï/cødé", EntryKind::File, 0),
        ),
        ("directory", header("dir/sub", EntryKind::Directory, 0)),
        (
            "file_part",
            match header("dir/sub/file.txt", EntryKind::File, 3 << 20) {
                Control::FileHeader(h) => Control::FileHeader(wire::FileHeader {
                    sync: None,
                    part: Some(Part {
                        shift: 20,
                        index: 2,
                    }),
                    ..h
                }),
                _ => unreachable!("a header"),
            },
        ),
        (
            "answer_accept",
            Control::FileAnswer {
                file_id: 7,
                answer: FileAnswer::Accept { offset: 0 },
            },
        ),
        (
            "answer_resume",
            Control::FileAnswer {
                file_id: 7,
                answer: FileAnswer::Accept { offset: 8192 },
            },
        ),
        (
            "answer_reject",
            Control::FileAnswer {
                file_id: 7,
                answer: FileAnswer::Reject(FileRejectReason::NAME_CONFLICT),
            },
        ),
        (
            "header_sync_content",
            match header("dir/sub/file.txt", EntryKind::File, 1000) {
                Control::FileHeader(h) => Control::FileHeader(wire::FileHeader {
                    sync: Some(SyncCheck {
                        content: Some(blake),
                        dry_run: true,
                        delete: false,
                    }),
                    ..h
                }),
                _ => unreachable!("a header"),
            },
        ),
        (
            "header_link",
            match header("dir/sub/link", EntryKind::File, 0) {
                Control::FileHeader(h) => Control::FileHeader(wire::FileHeader {
                    kind: EntryKind::Symlink,
                    size: 9,
                    target: b"../target",
                    sync: Some(SyncCheck::default()),
                    ..h
                }),
                _ => unreachable!("a header"),
            },
        ),
        (
            "answer_unsafe_link",
            Control::FileAnswer {
                file_id: 7,
                answer: FileAnswer::Reject(FileRejectReason::UNSAFE_LINK),
            },
        ),
        (
            "answer_changed",
            Control::FileAnswer {
                file_id: 7,
                answer: FileAnswer::AcceptChanged {
                    offset: 0,
                    changes: Changes::SIZE | Changes::MTIME,
                },
            },
        ),
        (
            "answer_in_sync",
            Control::FileAnswer {
                file_id: 7,
                answer: FileAnswer::InSync(Changes::MODE),
            },
        ),
        (
            "header_delete",
            match header("dir/sub", EntryKind::Directory, 0) {
                Control::FileHeader(h) => Control::FileHeader(wire::FileHeader {
                    sync: Some(SyncCheck {
                        delete: true,
                        ..SyncCheck::default()
                    }),
                    ..h
                }),
                _ => unreachable!("a header"),
            },
        ),
        (
            "answer_pruned",
            Control::FileAnswer {
                file_id: 7,
                answer: FileAnswer::Pruned {
                    changes: Changes::MTIME,
                    deleted: 42,
                },
            },
        ),
        (
            "answer_would_send",
            Control::FileAnswer {
                file_id: 7,
                answer: FileAnswer::WouldSend(Changes::NEW),
            },
        ),
        ("credit", Control::Credit { consumed: 12 }),
        ("end_none", end(Digest::NONE)),
        ("end_xxh3", end(xxh)),
        ("end_blake3", end(blake)),
        (
            "result_ok",
            Control::FileResult {
                file_id: 7,
                status: FileStatus::OK,
            },
        ),
        (
            "abort",
            Control::FileAbort {
                file_id: 7,
                reason: AbortReason::SOURCE_CHANGED,
            },
        ),
        (
            "cancel",
            Control::FileCancel {
                file_id: 7,
                status: FileStatus::NO_SPACE,
            },
        ),
        ("auth", Control::Auth { proof: [0x5a; 32] }),
        ("ack", Control::Ack),
        ("goodbye", Control::Goodbye),
        ("keepalive", Control::KeepAlive),
        (
            "error",
            Control::Error {
                code: ErrorCode::PROTOCOL_VIOLATION,
                detail: 10,
                text: "chunk sequence 9, expected 8",
            },
        ),
    ];
    for (name, msg) in controls {
        put("decode_control", name, control(msg, 3));
    }
    // A batch each way: the sender's ends and headers, the receiver's answers and results.
    let mut batch = |name, msgs: &[Control<'_>]| {
        let mut buf = [0u8; CTRL_MSG_MAX + 8];
        let mut b = rdmaft_protocol::wire::BatchBuilder::new(CTRL_MSG_MAX);
        for m in msgs {
            assert!(b.push(m, &mut buf));
        }
        let n = b.finish(&mut buf);
        buf[7] = 3;
        put("decode_control", name, buf[..n].to_vec());
    };
    batch(
        "batch_sender",
        &[
            Control::FileEnd(wire::FileEnd {
                file_id: 4,
                length: 9,
                digest: Digest::NONE,
            }),
            Control::FileHeader(wire::FileHeader {
                sync: None,
                file_id: 5,
                kind: EntryKind::File,
                part: None,
                size: 10,
                mtime_sec: 1,
                mtime_nsec: 2,
                mode: 0o644,
                name: "d/e",
                target: &[],
            }),
        ],
    );
    batch(
        "batch_receiver",
        &[
            Control::FileAnswer {
                file_id: 5,
                answer: FileAnswer::Accept { offset: 0 },
            },
            Control::FileResult {
                file_id: 4,
                status: FileStatus::OK,
            },
            Control::Credit { consumed: 2 },
        ],
    );

    // decode_handshake: hellos, and the accepts the harness's receivers give them.
    use crate::decode_handshake::{accept_bytes, hello_bytes, receiver_params, sender_params};
    let receivers = receiver_params();
    let [(plain, _), (keyed, _), (tiny, _), (join, _), _] = sender_params();
    put("decode_handshake", "hello", hello_bytes(&plain).to_vec());
    let mut padded = hello_bytes(&plain).to_vec();
    padded.resize(56, 0);
    put("decode_handshake", "hello_padded", padded);
    put(
        "decode_handshake",
        "hello_keyed",
        hello_bytes(&keyed).to_vec(),
    );
    put(
        "decode_handshake",
        "hello_tiny",
        hello_bytes(&tiny).to_vec(),
    );
    put(
        "decode_handshake",
        "hello_join",
        hello_bytes(&join).to_vec(),
    );
    let accepts = [
        ("accept", &plain, &receivers[0]),
        ("accept_join", &join, &receivers[0]),
        ("accept_keyed", &keyed, &receivers[2]),
        ("accept_tiny", &tiny, &receivers[0]),
    ];
    for (name, sender, receiver) in accepts {
        let accept = accept_bytes(&hello_bytes(sender), receiver).expect("an agreement");
        put("decode_handshake", name, accept.to_vec());
    }
    let mut buf = [0u8; 64];
    let n = reject(RejectReason::BAD_WINDOW).encode(&mut buf).unwrap();
    put("decode_handshake", "reject", buf[..n].to_vec());

    // name: valid and invalid names.
    let names: [&[u8]; 10] = [
        b"a.txt",
        b"dir/sub/f",
        b"..hidden/x..",
        "ünï/cødé".as_bytes(),
        b"a/../b",
        b"/etc/passwd",
        b"a//b",
        b"a\nb",
        b"./a",
        b"d/.rdmaft-1-2.part",
    ];
    for (i, n) in names.into_iter().enumerate() {
        put("name", &format!("name{i}"), n.to_vec());
    }

    // The state machines: scenarios written as operations, and plain pseudo-random bytes.
    for (name, small, ops) in names_scenarios() {
        put("names", name, encoded(&small, ops.as_slice()));
    }
    for (name, setup, ops) in sender_scenarios() {
        put("sender", name, encoded(&setup, ops.as_slice()));
    }
    for (name, setup, ops) in receiver_scenarios() {
        put("receiver", name, encoded(&setup, ops.as_slice()));
    }
    for (name, seed) in pair_scenarios() {
        let mut e = Enc::default();
        seed.encode(&mut e);
        put("pair", name, e.0);
    }
    let mut rng = XorShift(0x5eed_0004);
    for target in ["names", "sender", "receiver", "dest"] {
        for i in 0..2 {
            let bytes: Vec<u8> = (0..256).map(|_| rng.next() as u8).collect();
            put(target, &format!("random{i}"), bytes);
        }
    }
    all
}

/// The seed files are exactly what the generator makes (`RDMAFT_WRITE_SEEDS=1` rewrites
/// them), so a wire-format or harness change cannot silently leave stale seeds behind.
#[test]
fn generated_seeds_are_committed() {
    let write = std::env::var_os("RDMAFT_WRITE_SEEDS").is_some();
    let generated = generated_seeds();
    for (target, _) in TARGETS {
        assert!(generated.contains_key(target), "no generator for {target}");
    }
    for (target, files) in &generated {
        let dir = seeds_dir(target);
        if write {
            if dir.exists() {
                fs::remove_dir_all(&dir).expect("clear seeds");
            }
            fs::create_dir_all(&dir).expect("mkdir seeds");
            for (name, data) in files {
                fs::write(dir.join(name), data).expect("write seed");
            }
            continue;
        }
        let committed: BTreeMap<String, Vec<u8>> = seeds(target).into_iter().collect();
        let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            names(&committed),
            names(files),
            "seeds/{target} differs from its generator; rerun with RDMAFT_WRITE_SEEDS=1"
        );
        for (name, data) in files {
            assert!(
                committed[name] == *data,
                "seed {target}/{name} differs from its generator; rerun with RDMAFT_WRITE_SEEDS=1"
            );
        }
    }
}
