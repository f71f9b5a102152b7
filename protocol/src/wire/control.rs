//! Control messages after the handshake, each starting with a [`CtrlHeader`]. The sender's are
//! RDMA-written into the receiver's control ring (at most [`CTRL_MSG_MAX`] bytes each); the
//! receiver's are SENDs into the sender's receive buffers (at most [`RECEIVER_MSG_MAX`]).
//!
//! The received byte count is authoritative: the header's length must equal it exactly, and
//! every fixed body must be exactly its size (plus the declared name / text for the two
//! variable messages).

use super::batch::Batch;
use super::{
    read_prefix, write_with_tail, BufferTooSmall, DecodeError, Features, Field, PROOF_LEN,
};
use crate::codes::{AbortReason, ErrorCode, FileRejectReason, FileStatus};
use crate::name::{validate_syntax, MAX_NAME_LEN};
// spec: [model.big-endian]
use zerocopy::byteorder::network_endian::{I64, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Largest control message, and the size of each slot of the receiver's control ring.
pub const CTRL_MSG_MAX: usize = 4096;
/// Largest message a receiver sends, and the size of each receive buffer the sender posts.
pub const RECEIVER_MSG_MAX: usize = 256;
/// Buffer for one control message; every message fits.
pub type CtrlBuf = [u8; CTRL_MSG_MAX];
/// Longest error text carried in an error message, in bytes.
pub const MAX_ERROR_TEXT: usize = 128;
/// Largest file size: offsets must fit a signed 64-bit `off_t`.
pub const MAX_FILE_SIZE: u64 = i64::MAX as u64;
/// Permission bits a header may carry (no setuid, setgid or sticky bit).
pub const MODE_MASK: u32 = 0o777;

/// PROTOCOL.md §4 "Control header": first 8 bytes of every control message.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct CtrlHeader {
    kind: u8,
    flags: u8,
    length: U16,
    ack: U32,
}
/// Bytes of the header that starts every control message (and every batch).
pub const CTRL_HEADER_LEN: usize = 8;
pub(crate) const HDR: usize = CTRL_HEADER_LEN;
const _: () = assert!(core::mem::size_of::<CtrlHeader>() == HDR);

/// Control message type byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MsgKind {
    /// Sender → receiver: offer a file or directory.
    FileHeader = 0x10,
    /// Receiver → sender: accept (from an offset) or reject an offer.
    FileAnswer = 0x11,
    /// Receiver → sender: cumulative count of consumed chunks.
    Credit = 0x12,
    /// Sender → receiver: all data of a file is written; length and digest.
    FileEnd = 0x13,
    /// Receiver → sender: verdict on a file.
    FileResult = 0x14,
    /// Receiver → sender: acknowledges processed messages, nothing else.
    Ack = 0x15,
    /// Either way: orderly end of the session.
    Goodbye = 0x16,
    /// Either way: abort the session with a code and text.
    Error = 0x17,
    /// Sender → receiver: the rest of a file will not be sent.
    FileAbort = 0x18,
    /// Receiver → sender: please stop sending a file.
    FileCancel = 0x19,
    /// Sender → receiver: proof of the pre-shared key, the first message when agreed.
    Auth = 0x1a,
    /// Either way: nothing else to say, but alive.
    KeepAlive = 0x1b,
    /// Either way, with `BATCH`: several messages in one (PROTOCOL.md §4.9).
    Batch = 0x1c,
}

impl MsgKind {
    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            0x10 => MsgKind::FileHeader,
            0x11 => MsgKind::FileAnswer,
            0x12 => MsgKind::Credit,
            0x13 => MsgKind::FileEnd,
            0x14 => MsgKind::FileResult,
            0x15 => MsgKind::Ack,
            0x16 => MsgKind::Goodbye,
            0x17 => MsgKind::Error,
            0x18 => MsgKind::FileAbort,
            0x19 => MsgKind::FileCancel,
            0x1a => MsgKind::Auth,
            0x1b => MsgKind::KeepAlive,
            0x1c => MsgKind::Batch,
            other => return Err(DecodeError::UnknownType(other)),
        })
    }
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct FileHeaderBody {
    file_id: U64,
    size: U64,
    mtime_sec: I64,
    mtime_nsec: U32,
    mode: U32,
    entry_kind: u8,
    part_shift: u8,
    name_len: U16,
    part_index: U32,
}
const _: () = assert!(core::mem::size_of::<FileHeaderBody>() == 40);

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct FileAnswerBody {
    file_id: U64,
    offset: U64,
    decision: u8,
    reserved: u8,
    reason: U16,
    reserved2: U32,
}
const _: () = assert!(core::mem::size_of::<FileAnswerBody>() == 24);

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct CreditBody {
    consumed: U64,
}
const _: () = assert!(core::mem::size_of::<CreditBody>() == 8);

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct FileEndBody {
    file_id: U64,
    length: U64,
    digest: DigestBlock,
}
const _: () = assert!(core::mem::size_of::<FileEndBody>() == 56);

/// Body of FileResult, FileAbort and FileCancel: a file and a 16-bit code.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct FileCodeBody {
    file_id: U64,
    code: U16,
    reserved: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<FileCodeBody>() == 16);

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct ErrorBody {
    code: U16,
    detail: U16,
    text_len: U16,
    reserved: U16,
}
const _: () = assert!(core::mem::size_of::<ErrorBody>() == 8);

/// Size of a file header with an `n`-byte name (and, for a content check, its digest block).
const fn header_len(n: usize, content: bool) -> usize {
    HDR + 40 + n + if content { DIGEST_BLOCK_LEN } else { 0 }
}
const _: () = assert!(header_len(MAX_NAME_LEN, true) <= CTRL_MSG_MAX);

/// A digest as the wire carries it (a FileEnd's last 40 bytes, and a content check's block
/// after a header's name): kind, length, reserved, 32 bytes zero-padded.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct DigestBlock {
    digest_kind: u8,
    digest_len: u8,
    reserved: [u8; 6],
    digest: [u8; 32],
}
/// Bytes of a [`DigestBlock`].
const DIGEST_BLOCK_LEN: usize = 40;
const _: () = assert!(core::mem::size_of::<DigestBlock>() == DIGEST_BLOCK_LEN);

impl DigestBlock {
    fn new(d: Digest) -> Self {
        DigestBlock {
            digest_kind: d.kind.to_u8(),
            // Lengths are 0, 16 or 32: always fit a byte.
            digest_len: d.kind.len() as u8,
            reserved: [0; 6],
            digest: d.canonical().bytes,
        }
    }

    fn get(&self) -> Result<Digest, DecodeError> {
        if self.reserved != [0; 6] {
            return Err(DecodeError::NonZeroReserved);
        }
        let kind = DigestKind::from_u8(self.digest_kind)?;
        if usize::from(self.digest_len) != kind.len()
            || self.digest[kind.len()..].iter().any(|&x| x != 0)
        {
            return Err(DecodeError::BadField(Field::Digest));
        }
        Ok(Digest {
            kind,
            bytes: self.digest,
        })
    }
}

/// FileHeader flags (the control header's `flags` byte, PROTOCOL.md §4.1): compare with the
/// receiver's copy (`SYNC`), by content (`CONTENT`, a digest block follows the name),
/// changing nothing (`DRY_RUN`), removing what was not offered (`DELETE`, a directory).
const FLAG_SYNC: u8 = 1;
const FLAG_CONTENT: u8 = 2;
const FLAG_DRY_RUN: u8 = 4;
const FLAG_DELETE: u8 = 8;

/// How a `SYNC` header asks the receiver to compare the entry with its own copy
/// (PROTOCOL.md §4.1, feature `SYNC`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct SyncCheck {
    /// Compare content instead of size and mtime: the digest of the sender's whole file (a
    /// regular file, not a part; a kind agreed, not none).
    pub content: Option<Digest>,
    /// Change nothing: the receiver answers what it would do
    /// ([`FileAnswer::InSync`] or [`FileAnswer::WouldSend`]).
    pub dry_run: bool,
    /// (a directory, with `DELETE` agreed) Remove the entries of the receiver's copy of
    /// this directory that were not offered; answered [`FileAnswer::Pruned`].
    pub delete: bool,
}

bitflags::bitflags! {
    /// How the receiver's copy of an entry differs from the sender's (PROTOCOL.md §4.2), in
    /// the answer to a `SYNC` header.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Changes: u16 {
        /// Nothing under the name.
        const NEW = 1 << 0;
        /// Another size.
        const SIZE = 1 << 1;
        /// Another modification time.
        const MTIME = 1 << 2;
        /// Other content (a content check's digests differ).
        const CONTENT = 1 << 3;
        /// Other permission bits.
        const MODE = 1 << 4;
        /// Something of another kind under the name (a directory where a file comes, ...).
        const KIND = 1 << 5;
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Changes {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Changes::from_bits_retain(u.arbitrary()?))
    }
}

impl SyncCheck {
    /// The request without its digest: what decides which answers fit.
    pub fn shape(self) -> SyncCheck {
        SyncCheck {
            content: None,
            ..self
        }
    }
}

impl Changes {
    /// What an in-sync entry may have had updated: its metadata, no data.
    pub const METADATA: Changes = Changes::MTIME.union(Changes::MODE);
}
const _: () = assert!(HDR + 8 + MAX_ERROR_TEXT <= RECEIVER_MSG_MAX);

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum EntryKind {
    /// A regular file: its data follows.
    File,
    /// A directory: created (with its mode and mtime), never any data; size is 0.
    Directory,
    /// A symbolic link (with `LINKS`): its target follows the name in the header, `size`
    /// is the target's length; never any data.
    Symlink,
}

/// The `entry_kind` byte of a file part (PROTOCOL.md §4.1).
const KIND_PART: u8 = 3;
/// The `entry_kind` byte of a symbolic link (PROTOCOL.md §4.1, `LINKS`).
const KIND_SYMLINK: u8 = 4;

/// Longest symbolic link target a header carries: what fits one control message beside a
/// one-byte name. Name and target together fit one message (`name + target ≤ 4,048`
/// bytes); Linux allows targets of up to 4,095 bytes, a sender reports longer ones unsent.
pub const MAX_LINK_TARGET: usize = CTRL_MSG_MAX - header_len(1, false);

impl EntryKind {
    fn to_u8(self) -> u8 {
        match self {
            EntryKind::File => 1,
            EntryKind::Directory => 2,
            EntryKind::Symlink => KIND_SYMLINK,
        }
    }

    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        match v {
            1 | KIND_PART => Ok(EntryKind::File),
            2 => Ok(EntryKind::Directory),
            KIND_SYMLINK => Ok(EntryKind::Symlink),
            // spec: [hdr.fields]
            _ => Err(DecodeError::BadField(Field::EntryKind)),
        }
    }
}

/// Smallest part size exponent: one page (parts are at least a chunk, PROTOCOL.md §4.1).
pub const MIN_PART_SHIFT: u8 = 12;
/// Largest part size exponent (a part of 2⁶² bytes).
pub const MAX_PART_SHIFT: u8 = 62;

/// Which part of a regular file an entry carries, with `LANES`: bytes
/// `index × 2^shift .. min(size, (index + 1) × 2^shift)` of the file. A file split into parts
/// is sent as several entries of one name, possibly over several lanes of one transfer group;
/// the receiver writes them into one temporary file and publishes it once every part verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Part {
    /// log₂ of the part size ([`MIN_PART_SHIFT`] ..= [`MAX_PART_SHIFT`]).
    pub shift: u8,
    /// The part's number, from 0.
    pub index: u32,
}

impl Part {
    /// The part size, `2^shift` (saturating: a shift from the wire may be out of range).
    pub const fn size(self) -> u64 {
        if self.shift >= 64 {
            u64::MAX
        } else {
            1 << self.shift
        }
    }

    /// Where the part starts in the file (saturating at `u64::MAX`, past any file).
    pub const fn start(self) -> u64 {
        match (self.index as u64).checked_mul(self.size()) {
            Some(s) => s,
            None => u64::MAX,
        }
    }

    /// How many parts of `2^shift` bytes a file of `size` bytes has.
    pub const fn count(size: u64, shift: u8) -> u64 {
        size.div_ceil(Part { shift, index: 0 }.size())
    }

    /// The part's length in a file of `size` bytes (0 when it starts at or past the end).
    pub const fn len_in(self, size: u64) -> u64 {
        let start = self.start();
        if start >= size {
            return 0;
        }
        let left = size - start;
        if left < self.size() {
            left
        } else {
            self.size()
        }
    }
}

/// An entry offered by the sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader<'a> {
    /// Sender-chosen id, unique among the session's open files.
    pub file_id: u64,
    /// File or directory.
    pub kind: EntryKind,
    /// Size in bytes (≤ 2⁶³ − 1, the largest `off_t`; 0 for a directory; for a symbolic
    /// link, the length of its target).
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime_sec: i64,
    /// Modification time, nanoseconds part (< 10⁹).
    pub mtime_nsec: u32,
    /// Permission bits (`0o777` at most: never setuid, setgid or sticky).
    pub mode: u32,
    /// For a part of a regular file (with `LANES`): which part; `size` is then the whole
    /// file's. `None` for a whole file or a directory.
    pub part: Option<Part>,
    /// With `SYNC`: compare with the receiver's copy, which may then answer that the entry
    /// is in sync. `None`: send it.
    pub sync: Option<SyncCheck>,
    /// Validated relative name.
    pub name: &'a str,
    /// A symbolic link's target, as the link holds it (1 ..= [`MAX_LINK_TARGET`] bytes, no
    /// NUL); empty for every other kind.
    pub target: &'a [u8],
}

impl FileHeader<'_> {
    /// Bytes this entry carries: the part's length for a part, none for a link (its
    /// target is in the header), else the size.
    pub fn data_len(&self) -> u64 {
        match self.part {
            Some(p) => p.len_in(self.size),
            None if self.kind == EntryKind::Symlink => 0,
            None => self.size,
        }
    }

    /// Checks the metadata the wire constrains (not the name).
    pub fn check_metadata(&self) -> Result<(), Field> {
        // spec: [hdr.fields]
        if self.mtime_nsec >= 1_000_000_000 {
            return Err(Field::MtimeNsec);
        }
        if self.mode & !MODE_MASK != 0 {
            return Err(Field::Mode);
        }
        if self.size > MAX_FILE_SIZE || (self.kind == EntryKind::Directory && self.size != 0) {
            return Err(Field::Size);
        }
        // A link's size is its target's length; only a link has a target.
        let is_link = self.kind == EntryKind::Symlink;
        if (is_link && self.size != self.target.len() as u64)
            || (!is_link && !self.target.is_empty())
        {
            return Err(Field::Size);
        }
        let fits = header_len(self.name.len(), false) + self.target.len() <= CTRL_MSG_MAX;
        // spec: [link.target]
        if is_link && !(is_link_target(self.target) && fits) {
            return Err(Field::Target);
        }
        if let Some(p) = self.part {
            let shift_ok = (MIN_PART_SHIFT..=MAX_PART_SHIFT).contains(&p.shift);
            // A part is a non-empty piece of a regular file.
            // spec: [part.decode]
            if self.kind != EntryKind::File || !shift_ok || p.len_in(self.size) == 0 {
                return Err(Field::Part);
            }
        }
        // A content check is for a whole regular file, with a digest; a delete for a
        // directory.
        // spec: [sync.flags]
        if let Some(d) = self.sync.and_then(|s| s.content) {
            if self.kind != EntryKind::File || self.part.is_some() || d.kind == DigestKind::None {
                return Err(Field::Flags);
            }
        }
        if self.sync.is_some_and(|s| s.delete) && self.kind != EntryKind::Directory {
            return Err(Field::Flags);
        }
        Ok(())
    }
}

/// Whether `target` is one a link header may carry: 1 ..= [`MAX_LINK_TARGET`] bytes, no
/// NUL (it becomes a C string at the receiver).
pub fn is_link_target(target: &[u8]) -> bool {
    (1..=MAX_LINK_TARGET).contains(&target.len()) && !target.contains(&0)
}

/// The receiver's decision on a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum FileAnswer {
    /// Send the file from `offset` (0: all of it; more: resume after verified data).
    Accept {
        /// First byte the sender must send (a multiple of the chunk size).
        offset: u64,
    },
    /// Do not send the file.
    Reject(FileRejectReason),
    /// An accept of a `SYNC` header, saying how the receiver's copy differs (not empty).
    AcceptChanged {
        /// First byte the sender must send.
        offset: u64,
        /// How the receiver's copy differs.
        changes: Changes,
    },
    /// (`SYNC` header) The receiver's copy is the sender's: nothing is sent. `changes`
    /// (within [`Changes::METADATA`]) is the metadata the receiver updated, or with a dry
    /// run would update.
    InSync(Changes),
    /// (dry-run header) The entry would be sent, because of `changes` (not empty).
    WouldSend(Changes),
    /// (delete header) The directory is done: the entries of the receiver's copy that were
    /// not offered were removed (or, in a dry run, would be), and it has the sender's
    /// metadata (`changes`: what was updated, or would be; `NEW` when it was made).
    Pruned {
        /// How the copy differed.
        changes: Changes,
        /// Entries removed (or that would be), directories counting their contents.
        deleted: u64,
    },
}

impl FileAnswer {
    /// The offset to send from, if the answer asks for data.
    pub fn accepted_offset(&self) -> Option<u64> {
        match *self {
            FileAnswer::Accept { offset } | FileAnswer::AcceptChanged { offset, .. } => {
                Some(offset)
            }
            _ => None,
        }
    }

    /// Whether the answer fits a header with this sync request: a plain header gets a
    /// plain accept or a reject; a `SYNC` one may get a change report or `InSync`
    /// (metadata only); a dry run never an accept; a delete only `Pruned` or a reject.
    pub fn fits(&self, sync: Option<SyncCheck>) -> bool {
        let dry_run = sync.is_some_and(|s| s.dry_run);
        let delete = sync.is_some_and(|s| s.delete);
        match *self {
            FileAnswer::Reject(_) => true,
            FileAnswer::Pruned { .. } => delete,
            _ if delete => false,
            FileAnswer::Accept { .. } => !dry_run,
            FileAnswer::AcceptChanged { changes, .. } => {
                sync.is_some() && !dry_run && !changes.is_empty()
            }
            FileAnswer::InSync(c) => sync.is_some() && Changes::METADATA.contains(c),
            FileAnswer::WouldSend(c) => dry_run && !c.is_empty(),
        }
    }
}

/// Digest algorithm of a file end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum DigestKind {
    /// No digest; only the length is checked.
    None,
    /// XXH3, 128-bit (16 bytes), seed 0, the value in big-endian order (PROTOCOL.md §4.4).
    Xxh3_128,
    /// BLAKE3, unkeyed, 256-bit (32 bytes).
    Blake3,
}

impl DigestKind {
    /// Digest length in bytes.
    pub const fn len(self) -> usize {
        match self {
            DigestKind::None => 0,
            DigestKind::Xxh3_128 => 16,
            DigestKind::Blake3 => 32,
        }
    }

    /// Whether a file end may carry this kind under the agreed features (none always may).
    pub fn is_agreed(self, features: Features) -> bool {
        match self {
            DigestKind::None => true,
            DigestKind::Xxh3_128 => features.contains(Features::DIGEST_XXH3_128),
            DigestKind::Blake3 => features.contains(Features::DIGEST_BLAKE3),
        }
    }

    /// Whether this kind carries no bytes.
    pub const fn is_empty(self) -> bool {
        self.len() == 0
    }

    const fn to_u8(self) -> u8 {
        match self {
            DigestKind::None => 0,
            DigestKind::Xxh3_128 => 1,
            DigestKind::Blake3 => 2,
        }
    }

    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        match v {
            0 => Ok(DigestKind::None),
            1 => Ok(DigestKind::Xxh3_128),
            2 => Ok(DigestKind::Blake3),
            _ => Err(DecodeError::BadField(Field::DigestKind)),
        }
    }
}

/// A file digest: the algorithm and its bytes (unused tail bytes are zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Digest {
    /// Algorithm.
    pub kind: DigestKind,
    /// Value in the first `kind.len()` bytes, zero after.
    pub bytes: [u8; 32],
}

impl Digest {
    /// No digest.
    pub const NONE: Digest = Digest {
        kind: DigestKind::None,
        bytes: [0; 32],
    };

    /// A digest of `kind` from its bytes; `None` if the length is not `kind.len()`.
    pub fn new(kind: DigestKind, value: &[u8]) -> Option<Self> {
        if value.len() != kind.len() {
            return None;
        }
        let mut bytes = [0; 32];
        bytes[..value.len()].copy_from_slice(value);
        Some(Digest { kind, bytes })
    }

    /// The digest value.
    pub fn value(&self) -> &[u8] {
        &self.bytes[..self.kind.len()]
    }

    /// The same digest with the bytes past the algorithm's length zeroed (its wire form).
    pub fn canonical(&self) -> Digest {
        let mut bytes = [0; 32];
        bytes[..self.kind.len()].copy_from_slice(self.value());
        Digest {
            kind: self.kind,
            bytes,
        }
    }
}

/// End of a file's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileEnd {
    /// The file.
    pub file_id: u64,
    /// Total file length (equals the entry's data length: the size, or a part's length).
    pub length: u64,
    /// Digest of the whole file.
    pub digest: Digest,
}

/// A decoded control message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control<'a> {
    /// Offer a file or directory.
    FileHeader(FileHeader<'a>),
    /// Answer an offer.
    FileAnswer {
        /// The file.
        file_id: u64,
        /// Decision.
        answer: FileAnswer,
    },
    /// Chunks consumed so far (cumulative).
    Credit {
        /// Count of data chunks the receiver has consumed (or skipped) since the session
        /// began.
        consumed: u64,
    },
    /// All data of a file sent.
    FileEnd(FileEnd),
    /// Verdict on a file.
    FileResult {
        /// The file.
        file_id: u64,
        /// Verdict.
        status: FileStatus,
    },
    /// Acknowledgement only (receiver → sender).
    Ack,
    /// Orderly end.
    Goodbye,
    /// Abort the session.
    Error {
        /// Why.
        code: ErrorCode,
        /// A finer code: for [`ErrorCode::PROTOCOL_VIOLATION`] the [`crate::Violation`]
        /// number, else 0.
        detail: u16,
        /// Human-readable detail (≤ [`MAX_ERROR_TEXT`] bytes).
        text: &'a str,
    },
    /// The sender will send no more of this file.
    FileAbort {
        /// The file.
        file_id: u64,
        /// Why.
        reason: AbortReason,
    },
    /// The receiver asks the sender to stop sending this file.
    FileCancel {
        /// The file.
        file_id: u64,
        /// The result the file will get.
        status: FileStatus,
    },
    /// The sender's proof of the pre-shared key.
    Auth {
        /// MAC over the handshake (PROTOCOL.md §2.5).
        proof: [u8; PROOF_LEN],
    },
    /// Liveness only.
    KeepAlive,
    /// Several messages in one (`BATCH`).
    Batch(Batch<'a>),
}

impl<'a> Control<'a> {
    /// The message's type.
    pub fn kind(&self) -> MsgKind {
        match self {
            Control::FileHeader(_) => MsgKind::FileHeader,
            Control::FileAnswer { .. } => MsgKind::FileAnswer,
            Control::Credit { .. } => MsgKind::Credit,
            Control::FileEnd(_) => MsgKind::FileEnd,
            Control::FileResult { .. } => MsgKind::FileResult,
            Control::Ack => MsgKind::Ack,
            Control::Goodbye => MsgKind::Goodbye,
            Control::Error { .. } => MsgKind::Error,
            Control::FileAbort { .. } => MsgKind::FileAbort,
            Control::FileCancel { .. } => MsgKind::FileCancel,
            Control::Auth { .. } => MsgKind::Auth,
            Control::KeepAlive => MsgKind::KeepAlive,
            Control::Batch(_) => MsgKind::Batch,
        }
    }

    /// Decodes one control message; returns the header's `ack` count and the message.
    pub fn decode(bytes: &'a [u8]) -> Result<(u32, Control<'a>), DecodeError> {
        let (hdr, body) = read_prefix::<CtrlHeader>(bytes)?;
        let declared = usize::from(hdr.length.get());
        // spec: [msg.length]
        if declared != bytes.len() {
            return Err(DecodeError::BadLength {
                declared,
                actual: bytes.len(),
            });
        }
        let kind = MsgKind::from_u8(hdr.kind)?;
        // Only a FileHeader has flags.
        // spec: [model.reserved]
        if hdr.flags != 0 && kind != MsgKind::FileHeader {
            return Err(DecodeError::NonZeroReserved);
        }
        let msg = match kind {
            MsgKind::FileHeader => {
                let (b, rest) = read_prefix::<FileHeaderBody>(body)?;
                let flags = hdr.flags;
                let sync_bits = FLAG_CONTENT | FLAG_DRY_RUN | FLAG_DELETE;
                // spec: [sync.flags]
                if flags & !(FLAG_SYNC | sync_bits) != 0
                    || (flags & sync_bits != 0 && flags & FLAG_SYNC == 0)
                {
                    return Err(DecodeError::BadField(Field::Flags));
                }
                let name_len = usize::from(b.name_len.get());
                let block = if flags & FLAG_CONTENT != 0 {
                    DIGEST_BLOCK_LEN
                } else {
                    0
                };
                // A link's target follows its name; its length is the header's size.
                let target_len = match b.entry_kind {
                    // spec: [link.target]
                    KIND_SYMLINK => usize::try_from(b.size.get())
                        .ok()
                        .filter(|&n| n <= MAX_LINK_TARGET)
                        .ok_or(DecodeError::BadField(Field::Target))?,
                    _ => 0,
                };
                exact(rest.len(), name_len + target_len + block)?;
                let (name, rest) = rest.split_at(name_len);
                let (target, block) = rest.split_at(target_len);
                let content = match block.is_empty() {
                    true => None,
                    false => Some(read_prefix::<DigestBlock>(block)?.0.get()?),
                };
                let sync = (flags & FLAG_SYNC != 0).then_some(SyncCheck {
                    content,
                    dry_run: flags & FLAG_DRY_RUN != 0,
                    delete: flags & FLAG_DELETE != 0,
                });
                let part = (b.entry_kind == KIND_PART).then_some(Part {
                    shift: b.part_shift,
                    index: b.part_index.get(),
                });
                // The part fields are reserved for other kinds.
                if part.is_none() && (b.part_shift != 0 || b.part_index.get() != 0) {
                    return Err(DecodeError::NonZeroReserved);
                }
                let header = FileHeader {
                    file_id: b.file_id.get(),
                    kind: EntryKind::from_u8(b.entry_kind)?,
                    part,
                    size: b.size.get(),
                    mtime_sec: b.mtime_sec.get(),
                    mtime_nsec: b.mtime_nsec.get(),
                    mode: b.mode.get(),
                    sync,
                    // A name in the receiver's reserved space decodes: the receiver rejects
                    // that file (`FileOffer::refusal`), not the whole session.
                    // spec: [name.valid]
                    name: validate_syntax(name).map_err(DecodeError::InvalidName)?,
                    target,
                };
                header.check_metadata().map_err(DecodeError::BadField)?;
                Control::FileHeader(header)
            }
            MsgKind::FileAnswer => {
                let b = fixed::<FileAnswerBody>(body)?;
                if b.reserved != 0 || b.reserved2.get() != 0 {
                    return Err(DecodeError::NonZeroReserved);
                }
                let bad = DecodeError::BadField(Field::Decision);
                let changes = || Changes::from_bits(b.reason.get()).ok_or(bad);
                let answer = match (b.decision, b.reason.get(), b.offset.get()) {
                    (1, 0, offset) => FileAnswer::Accept { offset },
                    (1, _, offset) => FileAnswer::AcceptChanged {
                        offset,
                        changes: changes()?,
                    },
                    (2, reason, 0) => FileAnswer::Reject(FileRejectReason(reason)),
                    (3, _, 0) if Changes::METADATA.contains(changes()?) => {
                        FileAnswer::InSync(changes()?)
                    }
                    (4, c, 0) if c != 0 => FileAnswer::WouldSend(changes()?),
                    (5, _, deleted) => FileAnswer::Pruned {
                        changes: changes()?,
                        deleted,
                    },
                    _ => return Err(bad),
                };
                Control::FileAnswer {
                    file_id: b.file_id.get(),
                    answer,
                }
            }
            MsgKind::Credit => Control::Credit {
                consumed: fixed::<CreditBody>(body)?.consumed.get(),
            },
            MsgKind::FileEnd => {
                let b = fixed::<FileEndBody>(body)?;
                Control::FileEnd(FileEnd {
                    file_id: b.file_id.get(),
                    length: b.length.get(),
                    digest: b.digest.get()?,
                })
            }
            MsgKind::FileResult => {
                let (file_id, code) = file_code(body)?;
                Control::FileResult {
                    file_id,
                    status: FileStatus(code),
                }
            }
            MsgKind::FileAbort => {
                let (file_id, code) = file_code(body)?;
                Control::FileAbort {
                    file_id,
                    reason: AbortReason(code),
                }
            }
            MsgKind::FileCancel => {
                let (file_id, code) = file_code(body)?;
                Control::FileCancel {
                    file_id,
                    status: FileStatus(code),
                }
            }
            MsgKind::Auth => Control::Auth {
                proof: fixed::<[u8; PROOF_LEN]>(body)?,
            },
            MsgKind::Ack => no_body(body, Control::Ack)?,
            MsgKind::Goodbye => no_body(body, Control::Goodbye)?,
            MsgKind::KeepAlive => no_body(body, Control::KeepAlive)?,
            MsgKind::Batch => Control::Batch(Batch::check(body)?),
            MsgKind::Error => {
                let (b, text) = read_prefix::<ErrorBody>(body)?;
                let text_len = usize::from(b.text_len.get());
                // spec: [error.codes]
                if text_len > MAX_ERROR_TEXT {
                    return Err(DecodeError::BadField(Field::TextLen));
                }
                exact(text.len(), text_len)?;
                if b.reserved.get() != 0 {
                    return Err(DecodeError::NonZeroReserved);
                }
                // spec: [error.codes]
                Control::Error {
                    code: ErrorCode(b.code.get()),
                    detail: b.detail.get(),
                    text: core::str::from_utf8(text).map_err(|_| DecodeError::InvalidText)?,
                }
            }
        };
        Ok((hdr.ack.get(), msg))
    }

    /// Encodes with the given `ack` count; returns the bytes written.
    ///
    /// Error texts longer than [`MAX_ERROR_TEXT`] are cut at a character boundary. Names and
    /// metadata are written as given: callers validate them first (the sender state machine
    /// does).
    pub fn encode(&self, ack: u32, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let content = match self {
            Control::FileHeader(h) => h.sync.and_then(|s| s.content),
            _ => None,
        };
        let (body_len, tail): (usize, &[u8]) = match self {
            Control::FileHeader(h) => (40, h.name.as_bytes()),
            Control::FileAnswer { .. } => (24, &[]),
            Control::Credit { .. } => (8, &[]),
            Control::FileEnd(_) => (56, &[]),
            Control::FileResult { .. } | Control::FileAbort { .. } | Control::FileCancel { .. } => {
                (16, &[])
            }
            Control::Auth { .. } => (PROOF_LEN, &[]),
            Control::Ack | Control::Goodbye | Control::KeepAlive => (0, &[]),
            Control::Error { text, .. } => (8, truncate_text(text, MAX_ERROR_TEXT).as_bytes()),
            Control::Batch(b) => (0, b.body()),
        };
        // After a header's name: a link's target, or a content check's digest block.
        let after_name = match self {
            Control::FileHeader(h) if content.is_some() => DIGEST_BLOCK_LEN + h.target.len(),
            Control::FileHeader(h) => h.target.len(),
            _ => 0,
        };
        let total = HDR + body_len + tail.len() + after_name;
        let length = u16::try_from(total).map_err(|_| BufferTooSmall { need: total })?;
        if buf.len() < total {
            return Err(BufferTooSmall { need: total });
        }
        let flags = match self {
            Control::FileHeader(h) => h.sync.map_or(0, |s| {
                FLAG_SYNC
                    | if s.content.is_some() { FLAG_CONTENT } else { 0 }
                    | if s.dry_run { FLAG_DRY_RUN } else { 0 }
                    | if s.delete { FLAG_DELETE } else { 0 }
            }),
            _ => 0,
        };
        let hdr = CtrlHeader {
            kind: self.kind() as u8,
            flags,
            length: length.into(),
            ack: ack.into(),
        };
        let (head, rest) = buf.split_at_mut(HDR);
        head.copy_from_slice(hdr.as_bytes());
        match *self {
            Control::FileHeader(h) => {
                let name_len =
                    u16::try_from(h.name.len()).map_err(|_| BufferTooSmall { need: total })?;
                let b = FileHeaderBody {
                    file_id: h.file_id.into(),
                    size: h.size.into(),
                    mtime_sec: h.mtime_sec.into(),
                    mtime_nsec: h.mtime_nsec.into(),
                    mode: h.mode.into(),
                    entry_kind: if h.part.is_some() {
                        KIND_PART
                    } else {
                        h.kind.to_u8()
                    },
                    part_shift: h.part.map_or(0, |p| p.shift),
                    name_len: name_len.into(),
                    part_index: h.part.map_or(0, |p| p.index).into(),
                };
                let mut n = write_with_tail(&b, tail, rest)?;
                rest[n..n + h.target.len()].copy_from_slice(h.target);
                n += h.target.len();
                if let Some(d) = content {
                    write_with_tail(&DigestBlock::new(d), &[], &mut rest[n..])?;
                }
            }
            Control::FileAnswer { file_id, answer } => {
                let (decision, offset, reason) = match answer {
                    FileAnswer::Accept { offset } => (1, offset, 0),
                    FileAnswer::AcceptChanged { offset, changes } => (1, offset, changes.bits()),
                    FileAnswer::Reject(r) => (2, 0, r.0),
                    FileAnswer::InSync(c) => (3, 0, c.bits()),
                    FileAnswer::WouldSend(c) => (4, 0, c.bits()),
                    FileAnswer::Pruned { changes, deleted } => (5, deleted, changes.bits()),
                };
                let b = FileAnswerBody {
                    file_id: file_id.into(),
                    offset: offset.into(),
                    decision,
                    reserved: 0,
                    reason: reason.into(),
                    reserved2: 0.into(),
                };
                write_with_tail(&b, &[], rest)?;
            }
            Control::Credit { consumed } => {
                let b = CreditBody {
                    consumed: consumed.into(),
                };
                write_with_tail(&b, &[], rest)?;
            }
            Control::FileEnd(e) => {
                let b = FileEndBody {
                    file_id: e.file_id.into(),
                    length: e.length.into(),
                    digest: DigestBlock::new(e.digest),
                };
                write_with_tail(&b, &[], rest)?;
            }
            Control::FileResult { file_id, status } => {
                write_file_code(file_id, status.0, rest)?;
            }
            Control::FileAbort { file_id, reason } => {
                write_file_code(file_id, reason.0, rest)?;
            }
            Control::FileCancel { file_id, status } => {
                write_file_code(file_id, status.0, rest)?;
            }
            Control::Auth { proof } => {
                write_with_tail(&proof, &[], rest)?;
            }
            Control::Ack | Control::Goodbye | Control::KeepAlive => {}
            Control::Batch(b) => {
                write_with_tail(&[0u8; 0], b.body(), rest)?;
            }
            Control::Error { code, detail, .. } => {
                let b = ErrorBody {
                    code: code.0.into(),
                    detail: detail.into(),
                    // tail is at most MAX_ERROR_TEXT (128) bytes.
                    text_len: (tail.len() as u16).into(),
                    reserved: 0.into(),
                };
                write_with_tail(&b, tail, rest)?;
            }
        }
        Ok(total)
    }
}

fn file_code(body: &[u8]) -> Result<(u64, u16), DecodeError> {
    let b = fixed::<FileCodeBody>(body)?;
    if b.reserved != [0; 6] {
        return Err(DecodeError::NonZeroReserved);
    }
    Ok((b.file_id.get(), b.code.get()))
}

fn write_file_code(file_id: u64, code: u16, rest: &mut [u8]) -> Result<usize, BufferTooSmall> {
    let b = FileCodeBody {
        file_id: file_id.into(),
        code: code.into(),
        reserved: [0; 6],
    };
    write_with_tail(&b, &[], rest)
}

fn no_body<'a>(body: &[u8], msg: Control<'a>) -> Result<Control<'a>, DecodeError> {
    exact(body.len(), 0)?;
    Ok(msg)
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub(crate) fn truncate_text(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn exact(actual: usize, declared: usize) -> Result<(), DecodeError> {
    if actual == declared {
        Ok(())
    } else {
        Err(DecodeError::BadLength { declared, actual })
    }
}

/// Decodes a body that must be exactly `T`.
fn fixed<T>(body: &[u8]) -> Result<T, DecodeError>
where
    T: FromBytes + KnownLayout + Immutable,
{
    let (b, rest) = read_prefix::<T>(body)?;
    exact(body.len(), body.len() - rest.len())?;
    Ok(b)
}
