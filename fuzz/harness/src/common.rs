//! Pieces every state-machine harness shares: the limits, the `Arbitrary` building blocks
//! of files and messages (mostly valid, sometimes anything, so the fuzzer gets through the
//! checks and still tries their edges), the agreement a machine starts from, and a clock.
//!
//! The types are local rather than the protocol crate's `arbitrary` derives: see the note in
//! `fuzz/harness/Cargo.toml`.

use arbitrary::{Arbitrary, Unstructured};
use rdmaft_protocol::*;
use std::time::Duration;

/// Upper bound on outputs one drain may produce; more means `poll_output` never settles.
pub(crate) const DRAIN_LIMIT: usize = 10_000;
/// Upper bound on operations per input, so one input cannot run for long.
pub(crate) const MAX_OPS: usize = 4_096;
/// Most open files an agreement built here allows (the storage below has room for them).
pub(crate) const MAX_FILES: u16 = 8;
/// Storage of the state-machine harnesses: [`MAX_FILES`] file slots, and name slots for a
/// few deep names (raw names may still fill it: `NameTableFull` / `BUSY` are legal then).
pub(crate) type Store = ArrayStorage<{ MAX_FILES as usize }, 256>;

/// A keyed stand-in for the driver's BLAKE3 MAC: keyed and order-sensitive, which is all
/// the handshake needs from it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ToyMac(pub u8);

impl Mac for ToyMac {
    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut out = [self.0; 32];
        for (i, b) in parts.iter().flat_map(|p| p.iter()).enumerate() {
            out[i % 32] = out[i % 32].wrapping_mul(31).wrapping_add(*b ^ self.0);
        }
        out
    }
}

/// Components names are built from: short, and prefixes of each other (`a`, `ab`), so that
/// equal names and directory prefixes meet often.
pub(crate) const COMPONENTS: [&str; 3] = ["a", "b", "ab"];

/// A name of one to three components from [`COMPONENTS`], joined by `/`.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct ShortName {
    pub(crate) parts: [u8; 3],
    pub(crate) depth: u8,
}

impl ShortName {
    pub(crate) fn render(self) -> String {
        let depth = 1 + usize::from(self.depth % 3);
        let parts: Vec<&str> = self.parts[..depth]
            .iter()
            .map(|&p| COMPONENTS[usize::from(p) % COMPONENTS.len()])
            .collect();
        parts.join("/")
    }
}

/// A file name: mostly valid (so offers get through), sometimes anything.
#[derive(Arbitrary, Debug, Clone)]
pub enum Name {
    /// `f<n>`.
    Simple(u8),
    /// `d<a>/f<b>`.
    Nested(u8, u8),
    /// From a small alphabet, so names collide and nest.
    Short(ShortName),
    /// Any string.
    Raw(String),
}

impl Name {
    pub(crate) fn render(&self) -> String {
        match self {
            Name::Simple(n) => format!("f{n}"),
            Name::Nested(a, b) => format!("d{a}/f{b}"),
            Name::Short(s) => s.render(),
            Name::Raw(s) => s.clone(),
        }
    }
}

/// A file size: mostly a few chunks, sometimes anything.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Size {
    /// 0 bytes.
    Empty,
    /// 0..=255 bytes.
    Small(u8),
    /// `n % 8` whole chunks plus `extra % (chunk + 1)` bytes.
    Chunks {
        /// Whole chunks.
        n: u8,
        /// Bytes after them.
        extra: u16,
    },
    /// Anything, up to `u64::MAX` (above `i64::MAX` is invalid metadata).
    Huge(u64),
}

impl Size {
    pub(crate) fn get(self, chunk: u32) -> u64 {
        let chunk = u64::from(chunk);
        match self {
            Size::Empty => 0,
            Size::Small(n) => n.into(),
            Size::Chunks { n, extra } => u64::from(n % 8) * chunk + u64::from(extra) % (chunk + 1),
            Size::Huge(n) => n,
        }
    }
}

/// Entry kind: mostly files.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory (size forced to 0 unless the metadata is raw).
    Directory,
    /// A part of a regular file (kind 3 on the wire, PROTOCOL.md §4.1).
    Part(PartChoice),
    /// A symbolic link (kind 4, `LINKS`) whose target is `len % 65` bytes of
    /// [`LINK_TARGET`] (0: empty, invalid).
    Link {
        /// Target length.
        len: u8,
    },
}

/// The bytes link targets are cut from.
const LINK_TARGET: &[u8; 64] = b"../a/b/../c/./d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z/0/1/";

/// Which part an entry of [`Kind::Part`] carries: mostly one the agreement allows, sometimes
/// anything (below the chunk, out of range, past the end, of a directory).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum PartChoice {
    /// Parts of `2^(log2(chunk) + extra % 3)` bytes, number `index` modulo the file's parts:
    /// valid for a non-empty file once `LANES` is agreed.
    Whole {
        /// Part size above the chunk, as a shift.
        extra: u8,
        /// Part number (taken modulo the file's parts).
        index: u8,
    },
    /// Parts of half a chunk: below the smallest shift with 4 KiB chunks, a `BadPart` with
    /// larger ones.
    Half {
        /// Part number (taken modulo the file's parts).
        index: u8,
    },
    /// Any shift and number; `dir` makes it a part of a directory (always invalid).
    Raw {
        /// Shift.
        shift: u8,
        /// Number.
        index: u32,
        /// Of a directory.
        dir: bool,
    },
}

impl PartChoice {
    /// The entry kind and part, for a file of `size` bytes and chunks of `chunk` bytes.
    pub(crate) fn get(self, size: u64, chunk: u32) -> (EntryKind, Part) {
        let log = chunk.trailing_zeros() as u8;
        let within = |shift: u8, index: u8| {
            // At least one part, so the number of an empty file's part is 0 (still invalid).
            let parts = size.div_ceil(1u64 << shift).max(1);
            Part {
                shift,
                index: (u64::from(index) % parts) as u32,
            }
        };
        match self {
            PartChoice::Whole { extra, index } => (EntryKind::File, within(log + extra % 3, index)),
            PartChoice::Half { index } => (EntryKind::File, within(log - 1, index)),
            PartChoice::Raw { shift, index, dir } => {
                let kind = if dir {
                    EntryKind::Directory
                } else {
                    EntryKind::File
                };
                (kind, Part { shift, index })
            }
        }
    }
}

/// Metadata of an offer: valid unless `raw`.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Meta {
    pub(crate) mtime_sec: i64,
    pub(crate) mtime_nsec: u32,
    pub(crate) mode: u32,
    /// Keep nanoseconds, mode and a directory's size as given (mostly invalid).
    pub(crate) raw: bool,
}

/// A header's fields, before the id and name are known.
pub(crate) struct Entry {
    pub(crate) kind: EntryKind,
    pub(crate) part: Option<Part>,
    pub(crate) size: u64,
    pub(crate) mtime_sec: i64,
    pub(crate) mtime_nsec: u32,
    pub(crate) mode: u32,
    /// A link's target (empty for other kinds).
    pub(crate) target: &'static [u8],
}

impl Meta {
    pub(crate) fn entry(self, kind: Kind, size: Size, chunk: u32) -> Entry {
        let mut size = size.get(chunk);
        let mut target: &'static [u8] = &[];
        let (kind, part) = match kind {
            Kind::File => (EntryKind::File, None),
            Kind::Directory => (EntryKind::Directory, None),
            Kind::Part(p) => {
                let (kind, part) = p.get(size, chunk);
                (kind, Some(part))
            }
            Kind::Link { len } => {
                target = &LINK_TARGET[..usize::from(len) % (LINK_TARGET.len() + 1)];
                (EntryKind::Symlink, None)
            }
        };
        if !self.raw && kind == EntryKind::Directory {
            size = 0;
        }
        if !self.raw && kind == EntryKind::Symlink {
            size = target.len() as u64;
        }
        Entry {
            kind,
            part,
            size,
            mtime_sec: self.mtime_sec,
            mtime_nsec: if self.raw {
                self.mtime_nsec
            } else {
                self.mtime_nsec % 1_000_000_000
            },
            mode: if self.raw {
                self.mode
            } else {
                self.mode & 0o777
            },
            target,
        }
    }
}

impl Entry {
    pub(crate) fn header(self, file_id: u64, name: &str) -> FileInfo<'_> {
        FileInfo {
            sync: None,
            part: self.part,
            file_id,
            kind: self.kind,
            size: self.size,
            mtime_sec: self.mtime_sec,
            mtime_nsec: self.mtime_nsec,
            mode: self.mode,
            name,
            target: self.target,
        }
    }
}

/// The id of a new file.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum NewId {
    /// One more than the last one (valid).
    Next,
    /// Skip a few ids (valid).
    Skip(u8),
    /// The last one again (a duplicate).
    Same,
    /// Any id.
    Raw(u64),
}

impl NewId {
    pub(crate) fn resolve(self, last: Option<u64>) -> u64 {
        let base = last.map_or(0, |l| l.wrapping_add(1));
        match self {
            NewId::Next => base,
            NewId::Skip(n) => base.wrapping_add(u64::from(n)),
            NewId::Same => last.unwrap_or(0),
            NewId::Raw(n) => n,
        }
    }
}

/// Which file a message or command names.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum FileRef {
    /// The one a correct peer (or application) would name next.
    Next,
    /// A small id (collides with real ones).
    Id(u8),
    /// Any id.
    Raw(u64),
}

impl FileRef {
    pub(crate) fn resolve(self, next: Option<u64>) -> u64 {
        match self {
            FileRef::Next => next.unwrap_or(u64::MAX),
            FileRef::Id(n) => n.into(),
            FileRef::Raw(n) => n,
        }
    }
}

/// A count in a message (a credit, a file length).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Count {
    /// The value a correct peer would send.
    Auto,
    /// The last accepted value (or the right one) moved by a little.
    Delta(i8),
    /// Anything.
    Raw(u64),
}

impl Count {
    pub(crate) fn resolve(self, auto: u64, base: u64) -> u64 {
        match self {
            Count::Auto => auto,
            Count::Delta(d) => base.saturating_add_signed(d.into()),
            Count::Raw(n) => n,
        }
    }
}

/// The `ack` count a message carries.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum AckChoice {
    /// Everything the machine sent so far (a peer that keeps up).
    All,
    /// The last count the machine took (acknowledges nothing new).
    Last,
    /// A few less than everything.
    Behind(u8),
    /// Anything.
    Raw(u32),
}

impl AckChoice {
    /// `sent`: the machine's messages so far; `last`: the count it last took.
    pub(crate) fn resolve(self, sent: u32, last: u32) -> u32 {
        match self {
            AckChoice::All => sent,
            AckChoice::Last => last,
            AckChoice::Behind(n) => sent.wrapping_sub(n.into()),
            AckChoice::Raw(n) => n,
        }
    }
}

/// Any digest, tail bytes included (the encoder zeroes them).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct ArbDigest {
    /// 0: none, 1: XXH3-128, 2: BLAKE3 (taken modulo 3).
    pub(crate) kind: u8,
    pub(crate) bytes: [u8; 32],
}

impl ArbDigest {
    pub(crate) fn get(self) -> Digest {
        let kind = match self.kind % 3 {
            0 => DigestKind::None,
            1 => DigestKind::Xxh3_128,
            _ => DigestKind::Blake3,
        };
        Digest {
            kind,
            bytes: self.bytes,
        }
    }
}

impl From<Digest> for ArbDigest {
    fn from(d: Digest) -> ArbDigest {
        let kind = match d.kind {
            DigestKind::None => 0,
            DigestKind::Xxh3_128 => 1,
            DigestKind::Blake3 => 2,
        };
        ArbDigest {
            kind,
            bytes: d.bytes,
        }
    }
}

/// A digest the agreement allows: the strongest agreed kind, from `seed`.
pub(crate) fn agreed_digest(features: Features, seed: u8) -> Digest {
    let kind = if features.contains(Features::DIGEST_BLAKE3) {
        DigestKind::Blake3
    } else if features.contains(Features::DIGEST_XXH3_128) {
        DigestKind::Xxh3_128
    } else {
        DigestKind::None
    };
    Digest::new(kind, &[seed; 32][..kind.len()]).unwrap_or(Digest::NONE)
}

/// Any file answer.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum RawAnswer {
    /// Accept from this offset.
    Accept(u64),
    /// Reject with this reason code.
    Reject(u16),
}

impl RawAnswer {
    pub(crate) fn get(self) -> FileAnswer {
        match self {
            RawAnswer::Accept(offset) => FileAnswer::Accept { offset },
            RawAnswer::Reject(r) => FileAnswer::Reject(FileRejectReason(r)),
        }
    }
}

/// A file answer, resolved against the file's size.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Answer {
    /// Accept the whole file.
    Accept,
    /// Resume after `n` whole chunks (at most the file's whole chunks: valid with `RESUME`).
    ResumeChunks(u8),
    /// Resume from `size × n / 255` (mostly not chunk-aligned).
    Resume(u8),
    /// Reject with this reason code.
    Reject(u16),
    /// Anything.
    Raw(RawAnswer),
}

impl Answer {
    pub(crate) fn resolve(self, size: u64, chunk: u32) -> FileAnswer {
        let chunk = u64::from(chunk);
        match self {
            Answer::Accept => FileAnswer::Accept { offset: 0 },
            Answer::ResumeChunks(n) => FileAnswer::Accept {
                offset: (u64::from(n) * chunk).min(size / chunk * chunk),
            },
            Answer::Resume(n) => FileAnswer::Accept {
                // size × n / 255 ≤ size: fits a u64.
                offset: (u128::from(size) * u128::from(n) / 255) as u64,
            },
            Answer::Reject(r) => FileAnswer::Reject(FileRejectReason(r)),
            Answer::Raw(a) => a.get(),
        }
    }
}

/// The key proof in an `Auth` message.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Proof {
    /// The one the agreement expects.
    Right,
    /// Any bytes.
    Raw([u8; 32]),
}

/// The agreement a state machine starts from, its local settings, and whether `new` must
/// accept them. Mostly valid: small chunks, windows, open-file limits and depths (so the
/// limits are hit), all digest features, half the time transfer groups, sometimes a key, a required digest, a ring at the
/// top of the address space, an idle timeout; rarely one field broken.
pub(crate) fn setup(u: &mut Unstructured<'_>) -> arbitrary::Result<(Negotiated, Config)> {
    // 8 KiB a quarter of the time: parts of 4 KiB are then below the chunk (`BadPart`).
    let chunk_size: u32 = if u.ratio(3, 4)? { 4096 } else { 8192 };
    let window: u32 = u.int_in_range(1..=8)?;
    let max_open_files: u16 = u.int_in_range(1..=MAX_FILES)?;
    let sender_ctrl_depth = min_ctrl_depth(max_open_files) + u.int_in_range(0..=3)?;
    let receiver_ctrl_depth = min_ctrl_depth(max_open_files) + u.int_in_range(0..=3)?;
    let mut features = if u.ratio(7, 8)? {
        Features::RESUME | Features::DIGEST_XXH3_128 | Features::DIGEST_BLAKE3
    } else {
        // Batches change what goes out, not what the machines accept; the pair target
        // covers them end to end, so these models stay one message per write.
        Features::from_bits_truncate(u.arbitrary()?) - Features::AUTH_PSK - Features::BATCH
    };
    // Links half the time (without, a link is a violation or a usage error).
    if u.ratio(1, 2)? {
        features |= Features::LINKS;
    }
    // Transfer groups half the time: parts are then allowed, and the group is never 0.
    let group = if u.ratio(1, 2)? {
        features |= Features::LANES;
        u.arbitrary::<u32>()?.max(1)
    } else {
        features -= Features::LANES;
        0
    };
    let sender_proof = if u.ratio(1, 4)? {
        features |= Features::AUTH_PSK;
        Some(u.arbitrary()?)
    } else {
        None
    };
    let mut flags = AcceptFlags::empty();
    if !features.digests().is_empty() && u.ratio(1, 4)? {
        flags |= AcceptFlags::DIGEST_REQUIRED;
    }
    let keepalive_ms: u32 = u.int_in_range(1..=1000)?;
    let len = u64::from(chunk_size) * u64::from(window)
        + u64::from(receiver_ctrl_depth) * CTRL_MSG_MAX as u64;
    let addr = if u.ratio(1, 4)? {
        u64::MAX - len - u.int_in_range(0..=3u64)?
    } else {
        0x1000_0000
    };
    let mut neg = Negotiated {
        group,
        features,
        flags,
        chunk_size,
        window,
        sender_ctrl_depth,
        receiver_ctrl_depth,
        max_open_files,
        keepalive_ms,
        ring: RingInfo {
            addr,
            len,
            rkey: u.arbitrary()?,
        },
        sender_proof,
    };
    if u.ratio(1, 32)? {
        // One field outside the protocol's limits: `new` must refuse it.
        match u.int_in_range(0..=6u8)? {
            0 => neg.window = 0,
            // A group without `LANES`, or `LANES` without a group.
            6 => neg.group = u32::from(neg.group == 0),
            1 => neg.chunk_size = 4095,
            2 => neg.ring.len += 1,
            3 => neg.receiver_ctrl_depth = min_ctrl_depth(max_open_files) - 1,
            4 => neg.sender_proof = None,
            _ => neg.max_open_files = MAX_FILES + 1,
        }
    }
    let keepalive = Duration::from_millis(keepalive_ms.into());
    let idle_timeout = match u.int_in_range(0..=7u8)? {
        0..=3 => None,
        7 => Some(keepalive * 2 - Duration::from_nanos(1)), // too short: refused
        _ => Some(keepalive * u.int_in_range(2..=10)?),
    };
    let config = Config {
        idle_timeout,
        name_hash_key: u.arbitrary()?,
    };
    Ok((neg, config))
}

/// Whether a machine must accept `neg` and `config` with [`Store`]'s tables.
pub(crate) fn valid_setup(neg: &Negotiated, config: &Config) -> bool {
    neg.check().is_ok() && config.check(neg).is_ok() && neg.max_open_files <= MAX_FILES
}

/// Set by [`crate::set_trace`] (the `inspect` example); never by the fuzz binaries.
static TRACE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Prints each operation and output of the state-machine harnesses from now on.
pub fn set_trace(on: bool) {
    TRACE.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether to print each operation and output (`RDMAFT_FUZZ_TRACE=1` in the tests, or
/// [`set_trace`]).
pub(crate) fn trace() -> bool {
    TRACE.load(std::sync::atomic::Ordering::Relaxed)
        || (cfg!(test) && std::env::var_os("RDMAFT_FUZZ_TRACE").is_some())
}

/// How far a state-machine run got: files resolved, and how it ended (for the tests, which
/// check the scenario seeds go where they should).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) resolved: usize,
    pub(crate) closed: bool,
    pub(crate) failed: bool,
}

/// The harness clock, in nanoseconds: operations happen at `now`; only `advance` moves it.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Clock(u64);

impl Clock {
    pub(crate) fn now(self) -> Instant {
        Instant::from_nanos(self.0)
    }

    pub(crate) fn advance(&mut self, ms: u16) -> Instant {
        self.0 = self.0.saturating_add(u64::from(ms) * 1_000_000);
        self.now()
    }
}

/// `ceil(depth / 2)`, at least 1: the unreported messages that make a pure ack due (§5.2).
pub(crate) fn ack_threshold(depth: u16) -> u32 {
    u32::from(depth).div_ceil(2).max(1)
}

/// Chunks a file of `size` bytes sent from `offset` takes.
pub(crate) fn chunk_count(size: u64, offset: u64, chunk: u32) -> u64 {
    (size - offset).div_ceil(u64::from(chunk))
}

/// Whether two names share a path (PROTOCOL.md §4.1): equal, or one is a directory prefix
/// of the other.
pub(crate) fn names_conflict(a: &str, b: &str) -> bool {
    let below = |x: &str, dir: &str| {
        x.len() > dir.len() && x.starts_with(dir) && x.as_bytes()[dir.len()] == b'/'
    };
    a == b || below(a, b) || below(b, a)
}

/// The error `check_metadata` / `start_file` must give for these fields, if any.
pub(crate) fn metadata_error(h: &FileInfo<'_>) -> Option<Field> {
    if h.mtime_nsec >= 1_000_000_000 {
        Some(Field::MtimeNsec)
    } else if h.mode & !0o777 != 0 {
        Some(Field::Mode)
    } else if h.size > i64::MAX as u64 || (h.kind == EntryKind::Directory && h.size != 0) {
        Some(Field::Size)
    } else if (h.kind != EntryKind::Symlink && !h.target.is_empty())
        || (h.kind == EntryKind::Symlink && h.size != h.target.len() as u64)
    {
        // Only a link has a target, and its size is the target's length.
        Some(Field::Size)
    } else if h.kind == EntryKind::Symlink
        && (h.target.is_empty()
            || h.target.len() + h.name.len() > 4096 - 48
            || h.target.contains(&0))
    {
        Some(Field::Target)
    } else if h.part.is_some_and(|p| {
        // A non-empty piece of a regular file, its shift in 12 ..= 62 (§4.1).
        !(12..=62).contains(&p.shift)
            || h.kind != EntryKind::File
            || u128::from(p.index) << p.shift >= u128::from(h.size)
    }) {
        Some(Field::Part)
    } else {
        None
    }
}

/// Whether the agreement allows a part (§4.1): `LANES` agreed, and a part no smaller than a
/// chunk. Otherwise the sender refuses it (`InvalidMetadata(Part)`), the receiver fails
/// (`BadPart`).
pub(crate) fn part_allowed(neg: &Negotiated, part: Option<Part>) -> bool {
    part.is_none_or(|p| {
        let size = 1u128.checked_shl(p.shift.into());
        neg.features.contains(Features::LANES) && size.is_none_or(|s| s >= neg.chunk_size.into())
    })
}

/// Bytes an entry with valid metadata carries: a part's own (the last part may be short),
/// none for a link, else its size.
pub(crate) fn data_len(h: &FileInfo<'_>) -> u64 {
    if h.kind == EntryKind::Symlink && h.part.is_none() {
        return 0;
    }
    match h.part {
        Some(p) => {
            let start = u128::from(p.index) << p.shift;
            let end = (start + (1u128 << p.shift)).min(u128::from(h.size));
            u64::try_from(end.saturating_sub(start)).expect("within the size")
        }
        None => h.size,
    }
}
