//! The inverse of the harnesses' input decoding: the bytes `Unstructured` turns into given
//! operations, so scenario seeds are written as operations rather than opaque bytes.
//!
//! It mirrors `arbitrary` 1.x: an enum variant is a little-endian `u32` scaled onto the
//! variants (`(v × count) >> 32`), integers are little-endian, `bool` is one byte's low bit,
//! `int_in_range` reads big-endian bytes as needed and takes them modulo the range.
//! `seed_encoders_round_trip` decodes every scenario and compares, so a change of the
//! harness types shows up there rather than as seeds that silently mean something else.
//! Variable-length fields (`Vec`, `String`) take their lengths from the end of the input
//! and are not encoded: scenarios do without them.

use crate::common::*;
use crate::msg::Msg;
use crate::names::NamesOp;
use crate::receiver::{ImmChoice, LenChoice, ReceiverOp};
use crate::sender::SenderOp;

/// Bytes being built.
#[derive(Default)]
pub(super) struct Enc(pub(super) Vec<u8>);

impl Enc {
    /// Variant `i` of an enum with `n` variants.
    fn variant(&mut self, i: u32, n: u32) {
        assert!(i < n);
        let v = (u64::from(i) << 32).div_ceil(u64::from(n));
        self.u32(u32::try_from(v).expect("below 2^32"));
    }

    pub(super) fn u8(&mut self, x: u8) {
        self.0.push(x);
    }

    fn u16(&mut self, x: u16) {
        self.0.extend(x.to_le_bytes());
    }

    pub(super) fn u32(&mut self, x: u32) {
        self.0.extend(x.to_le_bytes());
    }

    fn u64(&mut self, x: u64) {
        self.0.extend(x.to_le_bytes());
    }

    fn i8(&mut self, x: i8) {
        self.0.extend(x.to_le_bytes());
    }

    fn i64(&mut self, x: i64) {
        self.0.extend(x.to_le_bytes());
    }

    fn bool(&mut self, x: bool) {
        self.0.push(u8::from(x));
    }

    pub(super) fn bytes(&mut self, x: &[u8]) {
        self.0.extend_from_slice(x);
    }

    /// `int_in_range(0..=max)` giving `v`: as many big-endian bytes as `max` needs.
    pub(super) fn in_range(&mut self, v: u64, max: u64) {
        assert!(v <= max);
        let n = (64 - max.leading_zeros()).div_ceil(8) as usize;
        self.0.extend(&v.to_be_bytes()[8 - n..]);
    }

    /// `ratio(1, d)` giving `yes`.
    pub(super) fn ratio_one_in(&mut self, d: u8, yes: bool) {
        self.u8(if yes { 0 } else { 1 });
        let _ = d;
    }
}

/// Something `Unstructured` decodes, encoded.
pub(super) trait Encode {
    fn encode(&self, e: &mut Enc);
}

impl<T: Encode> Encode for [T] {
    fn encode(&self, e: &mut Enc) {
        for x in self {
            x.encode(e);
        }
    }
}

impl Encode for ShortName {
    fn encode(&self, e: &mut Enc) {
        e.bytes(&self.parts);
        e.u8(self.depth);
    }
}

impl Encode for Name {
    fn encode(&self, e: &mut Enc) {
        match self {
            Name::Simple(n) => {
                e.variant(0, 4);
                e.u8(*n);
            }
            Name::Nested(a, b) => {
                e.variant(1, 4);
                e.u8(*a);
                e.u8(*b);
            }
            Name::Short(s) => {
                e.variant(2, 4);
                s.encode(e);
            }
            Name::Raw(_) => panic!("strings are not encoded"),
        }
    }
}

impl Encode for Size {
    fn encode(&self, e: &mut Enc) {
        match *self {
            Size::Empty => e.variant(0, 4),
            Size::Small(n) => {
                e.variant(1, 4);
                e.u8(n);
            }
            Size::Chunks { n, extra } => {
                e.variant(2, 4);
                e.u8(n);
                e.u16(extra);
            }
            Size::Huge(n) => {
                e.variant(3, 4);
                e.u64(n);
            }
        }
    }
}

impl Encode for Kind {
    fn encode(&self, e: &mut Enc) {
        match *self {
            Kind::File => e.variant(0, 4),
            Kind::Directory => e.variant(1, 4),
            Kind::Part(p) => {
                e.variant(2, 4);
                p.encode(e);
            }
            Kind::Link { len } => {
                e.variant(3, 4);
                e.u8(len);
            }
        }
    }
}

impl Encode for PartChoice {
    fn encode(&self, e: &mut Enc) {
        match *self {
            PartChoice::Whole { extra, index } => {
                e.variant(0, 3);
                e.u8(extra);
                e.u8(index);
            }
            PartChoice::Half { index } => {
                e.variant(1, 3);
                e.u8(index);
            }
            PartChoice::Raw { shift, index, dir } => {
                e.variant(2, 3);
                e.u8(shift);
                e.u32(index);
                e.bool(dir);
            }
        }
    }
}

impl Encode for Meta {
    fn encode(&self, e: &mut Enc) {
        e.i64(self.mtime_sec);
        e.u32(self.mtime_nsec);
        e.u32(self.mode);
        e.bool(self.raw);
    }
}

impl Encode for NewId {
    fn encode(&self, e: &mut Enc) {
        match *self {
            NewId::Next => e.variant(0, 4),
            NewId::Skip(n) => {
                e.variant(1, 4);
                e.u8(n);
            }
            NewId::Same => e.variant(2, 4),
            NewId::Raw(n) => {
                e.variant(3, 4);
                e.u64(n);
            }
        }
    }
}

impl Encode for FileRef {
    fn encode(&self, e: &mut Enc) {
        match *self {
            FileRef::Next => e.variant(0, 3),
            FileRef::Id(n) => {
                e.variant(1, 3);
                e.u8(n);
            }
            FileRef::Raw(n) => {
                e.variant(2, 3);
                e.u64(n);
            }
        }
    }
}

impl Encode for Count {
    fn encode(&self, e: &mut Enc) {
        match *self {
            Count::Auto => e.variant(0, 3),
            Count::Delta(d) => {
                e.variant(1, 3);
                e.i8(d);
            }
            Count::Raw(n) => {
                e.variant(2, 3);
                e.u64(n);
            }
        }
    }
}

impl Encode for AckChoice {
    fn encode(&self, e: &mut Enc) {
        match *self {
            AckChoice::All => e.variant(0, 4),
            AckChoice::Last => e.variant(1, 4),
            AckChoice::Behind(n) => {
                e.variant(2, 4);
                e.u8(n);
            }
            AckChoice::Raw(n) => {
                e.variant(3, 4);
                e.u32(n);
            }
        }
    }
}

impl Encode for ArbDigest {
    fn encode(&self, e: &mut Enc) {
        e.u8(self.kind);
        e.bytes(&self.bytes);
    }
}

impl Encode for RawAnswer {
    fn encode(&self, e: &mut Enc) {
        match *self {
            RawAnswer::Accept(o) => {
                e.variant(0, 2);
                e.u64(o);
            }
            RawAnswer::Reject(r) => {
                e.variant(1, 2);
                e.u16(r);
            }
        }
    }
}

impl Encode for Answer {
    fn encode(&self, e: &mut Enc) {
        match *self {
            Answer::Accept => e.variant(0, 5),
            Answer::ResumeChunks(n) => {
                e.variant(1, 5);
                e.u8(n);
            }
            Answer::Resume(n) => {
                e.variant(2, 5);
                e.u8(n);
            }
            Answer::Reject(r) => {
                e.variant(3, 5);
                e.u16(r);
            }
            Answer::Raw(a) => {
                e.variant(4, 5);
                a.encode(e);
            }
        }
    }
}

impl Encode for Proof {
    fn encode(&self, e: &mut Enc) {
        match self {
            Proof::Right => e.variant(0, 2),
            Proof::Raw(b) => {
                e.variant(1, 2);
                e.bytes(b);
            }
        }
    }
}

impl Encode for Msg {
    fn encode(&self, e: &mut Enc) {
        const N: u32 = 12;
        match self {
            Msg::FileHeader {
                file,
                kind,
                size,
                meta,
                name,
            } => {
                e.variant(0, N);
                file.encode(e);
                kind.encode(e);
                size.encode(e);
                meta.encode(e);
                name.encode(e);
            }
            Msg::FileAnswer { file, answer } => {
                e.variant(1, N);
                file.encode(e);
                answer.encode(e);
            }
            Msg::Credit { consumed } => {
                e.variant(2, N);
                consumed.encode(e);
            }
            Msg::FileEnd {
                file,
                length,
                digest,
            } => {
                e.variant(3, N);
                file.encode(e);
                length.encode(e);
                digest.encode(e);
            }
            Msg::FileResult { file, status } => {
                e.variant(4, N);
                file.encode(e);
                e.u16(*status);
            }
            Msg::FileAbort { file, reason } => {
                e.variant(5, N);
                file.encode(e);
                e.u16(*reason);
            }
            Msg::FileCancel { file, status } => {
                e.variant(6, N);
                file.encode(e);
                e.u16(*status);
            }
            Msg::Auth { proof } => {
                e.variant(7, N);
                proof.encode(e);
            }
            Msg::Ack => e.variant(8, N),
            Msg::Goodbye => e.variant(9, N),
            Msg::KeepAlive => e.variant(10, N),
            Msg::Error { .. } => panic!("strings are not encoded"),
        }
    }
}

impl Encode for SenderOp {
    fn encode(&self, e: &mut Enc) {
        const N: u32 = 18;
        match self {
            SenderOp::Start {
                id,
                kind,
                size,
                meta,
                name,
            } => {
                e.variant(0, N);
                id.encode(e);
                kind.encode(e);
                size.encode(e);
                meta.encode(e);
                name.encode(e);
            }
            SenderOp::ReadyNext => e.variant(1, N),
            SenderOp::ReadyAll => e.variant(2, N),
            SenderOp::Ready(seq) => {
                e.variant(3, N);
                e.u64(*seq);
            }
            SenderOp::FinishNext => e.variant(4, N),
            SenderOp::Finish { file, digest } => {
                e.variant(5, N);
                file.encode(e);
                digest.encode(e);
            }
            SenderOp::AbortFile { file, reason } => {
                e.variant(6, N);
                file.encode(e);
                e.u16(*reason);
            }
            SenderOp::Close => e.variant(7, N),
            SenderOp::Abort(code) => {
                e.variant(8, N);
                e.u16(*code);
            }
            SenderOp::Raw(_) => panic!("byte vectors are not encoded"),
            SenderOp::Msg { ack, msg } => {
                e.variant(10, N);
                ack.encode(e);
                msg.encode(e);
            }
            SenderOp::CompleteNext => e.variant(11, N),
            SenderOp::CompleteAll => e.variant(12, N),
            SenderOp::Complete(seq) => {
                e.variant(13, N);
                e.u64(*seq);
            }
            SenderOp::Pump => e.variant(14, N),
            SenderOp::Flood { ack, count } => {
                e.variant(15, N);
                ack.encode(e);
                e.u8(*count);
            }
            SenderOp::Timeout(ms) => {
                e.variant(16, N);
                e.u16(*ms);
            }
            SenderOp::Hold => e.variant(17, N),
        }
    }
}

impl Encode for ImmChoice {
    fn encode(&self, e: &mut Enc) {
        match *self {
            ImmChoice::Next => e.variant(0, 2),
            ImmChoice::Raw(i) => {
                e.variant(1, 2);
                e.u32(i);
            }
        }
    }
}

impl Encode for LenChoice {
    fn encode(&self, e: &mut Enc) {
        match *self {
            LenChoice::Exact => e.variant(0, 2),
            LenChoice::Raw(l) => {
                e.variant(1, 2);
                e.u16(l);
            }
        }
    }
}

impl Encode for ReceiverOp {
    fn encode(&self, e: &mut Enc) {
        const N: u32 = 23;
        match self {
            ReceiverOp::Msg { ack, msg, imm, len } => {
                e.variant(0, N);
                ack.encode(e);
                msg.encode(e);
                imm.encode(e);
                len.encode(e);
            }
            ReceiverOp::Raw(_) | ReceiverOp::Bytes(_) => panic!("byte vectors are not encoded"),
            ReceiverOp::Announce(len) => {
                e.variant(2, N);
                len.encode(e);
            }
            ReceiverOp::Deliver { ack, msg } => {
                e.variant(3, N);
                ack.encode(e);
                msg.encode(e);
            }
            ReceiverOp::Flood { ack, count } => {
                e.variant(4, N);
                ack.encode(e);
                e.u8(*count);
            }
            ReceiverOp::Write { imm, len } => {
                e.variant(5, N);
                e.u32(*imm);
                e.u32(*len);
            }
            ReceiverOp::ChunkNext(len) => {
                e.variant(7, N);
                len.encode(e);
            }
            ReceiverOp::Stream => e.variant(8, N),
            ReceiverOp::PureAck { ack, nonempty } => {
                e.variant(9, N);
                ack.encode(e);
                e.bool(*nonempty);
            }
            ReceiverOp::AnswerNext(a) => {
                e.variant(10, N);
                a.encode(e);
            }
            ReceiverOp::AnswerAuto => e.variant(11, N),
            ReceiverOp::Answer { file, answer } => {
                e.variant(12, N);
                file.encode(e);
                answer.encode(e);
            }
            ReceiverOp::ConsumeNext => e.variant(13, N),
            ReceiverOp::ConsumeAll => e.variant(14, N),
            ReceiverOp::Consume(seq) => {
                e.variant(15, N);
                e.u64(*seq);
            }
            ReceiverOp::VerifyNext(status) => {
                e.variant(16, N);
                e.u16(*status);
            }
            ReceiverOp::Verify { file, status } => {
                e.variant(17, N);
                file.encode(e);
                e.u16(*status);
            }
            ReceiverOp::Cancel { file, status } => {
                e.variant(18, N);
                file.encode(e);
                e.u16(*status);
            }
            ReceiverOp::Abort(code) => {
                e.variant(19, N);
                e.u16(*code);
            }
            ReceiverOp::Pump => e.variant(20, N),
            ReceiverOp::Timeout(ms) => {
                e.variant(21, N);
                e.u16(*ms);
            }
            ReceiverOp::Hold => e.variant(22, N),
        }
    }
}

impl Encode for NamesOp {
    fn encode(&self, e: &mut Enc) {
        const N: u32 = 5;
        match *self {
            NamesOp::Start { name, dir } => {
                e.variant(0, N);
                name.encode(e);
                e.bool(dir);
            }
            NamesOp::Reject => e.variant(1, N),
            NamesOp::Accept => e.variant(2, N),
            NamesOp::Result => e.variant(3, N),
            NamesOp::Abort(n) => {
                e.variant(4, N);
                e.u8(n);
            }
        }
    }
}

/// The agreement `common::setup` decodes (always a valid one).
#[derive(Clone, Copy, Debug)]
pub(super) struct SetupSeed {
    pub(super) big_chunk: bool,
    pub(super) window: u8,
    pub(super) open: u8,
    pub(super) extra_depth: (u8, u8),
    pub(super) proof: Option<[u8; 32]>,
    pub(super) digest_required: bool,
    pub(super) keepalive_ms: u16,
    /// With `LANES`: the group (non-zero).
    pub(super) group: Option<u32>,
    pub(super) high_ring: bool,
    /// Idle timeout in keepalive intervals (2 ..= 10).
    pub(super) idle: Option<u8>,
    /// `LINKS` agreed.
    pub(super) links: bool,
}

impl SetupSeed {
    pub(super) const PLAIN: SetupSeed = SetupSeed {
        big_chunk: false,
        window: 4,
        open: 4,
        extra_depth: (0, 0),
        proof: None,
        digest_required: false,
        keepalive_ms: 1000,
        group: None,
        high_ring: false,
        idle: None,
        links: false,
    };
}

impl Encode for SetupSeed {
    fn encode(&self, e: &mut Enc) {
        // ratio(3, 4): 1 + b % 4 <= 3.
        e.u8(if self.big_chunk { 3 } else { 0 });
        e.in_range(u64::from(self.window - 1), 7);
        e.in_range(u64::from(self.open - 1), u64::from(MAX_FILES - 1));
        e.in_range(self.extra_depth.0.into(), 3);
        e.in_range(self.extra_depth.1.into(), 3);
        e.ratio_one_in(8, false); // not the "some features" branch: the usual digests
        e.ratio_one_in(2, self.links);
        e.ratio_one_in(2, self.group.is_some());
        if let Some(g) = self.group {
            e.u32(g);
        }
        e.ratio_one_in(4, self.proof.is_some());
        if let Some(p) = self.proof {
            e.bytes(&p);
        }
        e.ratio_one_in(4, self.digest_required);
        e.in_range(u64::from(self.keepalive_ms - 1), 999);
        e.ratio_one_in(4, self.high_ring);
        if self.high_ring {
            e.in_range(1, 3);
        }
        e.u32(0xabcd); // rkey
        e.ratio_one_in(32, false); // nothing broken
        match self.idle {
            None => e.in_range(0, 7),
            Some(m) => {
                e.in_range(4, 7);
                e.in_range(u64::from(m - 2), 8);
            }
        }
        e.bytes(&[0x11; 16]); // name hash key
    }
}

/// One side's parameters in a pair setup.
#[derive(Clone, Copy, Debug)]
pub(super) struct SideSeed {
    pub(super) open: u8,
    pub(super) extra_depth: u8,
    pub(super) keepalive_ms: Option<u8>,
}

/// A policy in a pair setup.
#[derive(Clone, Copy, Debug)]
pub(super) enum PolicySeed {
    Accept,
    Reject,
    Resume(u16),
    SenderAbortAt(u8),
    ReceiverCancelAt(u8),
    Directory,
    InSync,
    SyncChanged,
    DryRun,
    PrunedDir,
    Link,
}

/// A file in a pair setup: name index, length, policy, and with `lanes` maybe a part (shift
/// above 12: 0 or 1, number).
pub(super) type FileSeed = (u8, u16, PolicySeed, Option<(u8, u32)>);

/// What `pair::setup` decodes, then the schedule.
#[derive(Clone, Debug)]
pub(super) struct PairSeed {
    pub(super) window: u8,
    pub(super) sender: SideSeed,
    pub(super) receiver: SideSeed,
    pub(super) receiver_window: u8,
    pub(super) digest_required: bool,
    /// Both sides offer `LANES` (parts allowed).
    pub(super) lanes: bool,
    /// Both sides offer `BATCH`.
    pub(super) batch: bool,
    pub(super) files: Vec<FileSeed>,
    pub(super) schedule: Vec<u8>,
}

impl Encode for PairSeed {
    fn encode(&self, e: &mut Enc) {
        e.in_range(u64::from(self.window - 1), 7);
        for (side, max_open) in [(self.sender, 6), (self.receiver, 8)] {
            e.in_range(u64::from(side.open - 1), max_open - 1);
            e.in_range(side.extra_depth.into(), 4);
            e.ratio_one_in(8, side.keepalive_ms.is_some());
            if let Some(ms) = side.keepalive_ms {
                e.in_range(u64::from(ms - 1), 7);
            }
        }
        e.in_range(u64::from(self.receiver_window - 1), 7);
        e.ratio_one_in(4, self.digest_required);
        e.ratio_one_in(2, self.lanes);
        e.ratio_one_in(2, self.batch);
        e.in_range(self.files.len() as u64, 8);
        let chunk = crate::pair::sim::CHUNK as u64;
        for &(name, len, policy, part) in &self.files {
            let len = u64::from(len);
            e.in_range(name.into(), 7);
            e.in_range(len, 3 * chunk + 1);
            let chunks = len.div_ceil(chunk);
            match policy {
                PolicySeed::Accept => e.in_range(0, 14),
                PolicySeed::Reject => e.in_range(3, 14),
                PolicySeed::Resume(n) => {
                    e.in_range(4, 14);
                    e.in_range(n.into(), len);
                }
                PolicySeed::SenderAbortAt(k) => {
                    e.in_range(5, 14);
                    e.in_range(k.into(), chunks);
                }
                PolicySeed::ReceiverCancelAt(k) => {
                    e.in_range(6, 14);
                    e.in_range(k.into(), chunks);
                }
                PolicySeed::Directory => e.in_range(7, 14),
                PolicySeed::InSync => e.in_range(10, 14),
                PolicySeed::SyncChanged => e.in_range(11, 14),
                PolicySeed::DryRun => e.in_range(12, 14),
                PolicySeed::PrunedDir => e.in_range(13, 14),
                PolicySeed::Link => e.in_range(14, 14),
            }
            // No parts of directories and links.
            let directory = matches!(
                policy,
                PolicySeed::Directory | PolicySeed::PrunedDir | PolicySeed::Link
            );
            if self.lanes && len > 0 && !directory {
                e.ratio_one_in(2, part.is_some());
                if let Some((extra, index)) = part {
                    e.in_range(extra.into(), 1);
                    let parts = len.div_ceil(chunk << extra);
                    e.in_range(index.into(), parts - 1);
                }
            }
        }
        e.bytes(&self.schedule);
    }
}
