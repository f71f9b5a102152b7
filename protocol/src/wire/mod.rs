//! Wire format: every message as a `zerocopy` struct with network-endian fields.
//!
//! The layouts are specified byte by byte in `PROTOCOL.md`; each struct quotes its table and
//! asserts its size. Decoding peer bytes never panics: it returns a [`DecodeError`]. Decoded
//! messages are plain validated values (`*Repr` / [`Control`]) so the state machines never
//! look at raw fields.

mod batch;
mod control;
mod handshake;
pub(crate) mod imm;

pub use batch::{Batch, BatchBuilder, BatchIter};
pub(crate) use control::truncate_text;
pub use control::{
    is_link_target, Changes, Control, CtrlBuf, CtrlHeader, Digest, DigestKind, EntryKind,
    FileAnswer, FileEnd, FileHeader, MsgKind, Part, SyncCheck, CTRL_HEADER_LEN, CTRL_MSG_MAX,
    MAX_ERROR_TEXT, MAX_LINK_TARGET, MAX_PART_SHIFT, MIN_PART_SHIFT, RECEIVER_MSG_MAX,
};
pub use handshake::{
    AcceptFlags, AcceptRepr, HandshakeReply, HelloRepr, RejectRepr, RingInfo, ACCEPT_LEN,
    ACCEPT_PROOF_OFFSET, HELLO_LEN, NONCE_LEN, PROOF_LEN, REJECT_LEN,
};
pub use imm::Imm;

use crate::name::NameError;
use core::fmt;

/// Protocol magic, ASCII `RDFT`, first in every handshake message.
pub const MAGIC: u32 = 0x5244_4654;
/// The protocol version this crate speaks.
pub const VERSION: u16 = 2;

bitflags::bitflags! {
    /// Optional capabilities, offered in the hello and agreed (intersected) in the accept.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Features: u32 {
        /// The receiver may answer a file header with a resume offset.
        const RESUME = 1 << 0;
        /// Files may end with an XXH3-128 digest.
        const DIGEST_XXH3_128 = 1 << 1;
        /// Files may end with a BLAKE3-256 digest.
        const DIGEST_BLAKE3 = 1 << 2;
        /// Mutual proof of a pre-shared key (PROTOCOL.md §2.5).
        const AUTH_PSK = 1 << 3;
        /// Transfer groups: one transfer over several connections (lanes) that share a
        /// group, and file parts (PROTOCOL.md §2.7, §4.1).
        const LANES = 1 << 4;
        /// Several control messages per control write and per SEND (PROTOCOL.md §4.9).
        const BATCH = 1 << 5;
        /// Headers may ask the receiver to compare with its copy, which may answer that an
        /// entry is in sync, or what it would do (PROTOCOL.md §4.1, §4.2).
        const SYNC = 1 << 6;
        /// With `SYNC`: a directory's header may ask the receiver to remove the entries of
        /// its copy that were not offered (PROTOCOL.md §4.1, §4.2).
        const DELETE = 1 << 7;
        /// Headers may offer symbolic links (entry kind 4), the target after the name
        /// (PROTOCOL.md §4.1).
        const LINKS = 1 << 8;
    }
}

impl Features {
    /// The digest algorithms among these features.
    pub fn digests(self) -> Features {
        self & (Features::DIGEST_XXH3_128 | Features::DIGEST_BLAKE3)
    }
}

/// A field whose value has no meaning (in [`DecodeError::BadField`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// A file answer's decision / reason / offset combination.
    Decision,
    /// A digest kind byte.
    DigestKind,
    /// A digest length, or digest bytes after the algorithm's length.
    Digest,
    /// `mtime_nsec` ≥ 10⁹.
    MtimeNsec,
    /// Mode bits beyond `0o777`.
    Mode,
    /// A size above `i64::MAX`, a directory with a non-zero size, a link whose size is not
    /// its target's length, or a target on anything but a link.
    Size,
    /// An error text longer than [`MAX_ERROR_TEXT`].
    TextLen,
    /// An entry kind that is neither file, directory, file part nor link.
    EntryKind,
    /// A part's size exponent out of range, or a part that starts at or past the file's end.
    Part,
    /// A link target that is empty, holds a NUL, or with the name does not fit a message.
    Target,
    /// An empty batch, or a batch holding a Goodbye, an Error or another batch.
    Batch,
    /// FileHeader flags: an unknown bit, a sync option without `SYNC`, a content check for
    /// a directory, a part or without a digest, or a delete for a file.
    Flags,
}

impl Field {
    /// The field's name as the specification writes it.
    pub fn name(self) -> &'static str {
        match self {
            Field::Decision => "decision",
            Field::DigestKind => "digest_kind",
            Field::Digest => "digest",
            Field::MtimeNsec => "mtime_nsec",
            Field::Mode => "mode",
            Field::Size => "size",
            Field::TextLen => "text_len",
            Field::EntryKind => "entry_kind",
            Field::Part => "part",
            Field::Target => "target",
            Field::Batch => "batch",
            Field::Flags => "flags",
        }
    }
}

/// Why peer bytes could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the message needs.
    Truncated {
        /// Bytes the message needs.
        need: usize,
        /// Bytes present.
        got: usize,
    },
    /// A handshake message did not start with [`MAGIC`].
    BadMagic(u32),
    /// A handshake message of a version this crate does not speak.
    UnknownVersion(u16),
    /// An unknown message type byte.
    UnknownType(u8),
    /// The length field disagrees with the bytes received or the message's own layout.
    BadLength {
        /// The length the message declares (or the layout requires).
        declared: usize,
        /// The length actually present.
        actual: usize,
    },
    /// A reserved field or flag bit is not zero.
    NonZeroReserved,
    /// A field holds a value with no meaning.
    BadField(Field),
    /// A file name failed validation.
    InvalidName(NameError),
    /// An error text is not UTF-8.
    InvalidText,
}

impl DecodeError {
    /// A stable number for the error, carried as the detail of an error message.
    pub fn code(&self) -> u16 {
        match self {
            DecodeError::Truncated { .. } => 1,
            DecodeError::BadMagic(_) => 2,
            DecodeError::UnknownVersion(_) => 3,
            DecodeError::UnknownType(_) => 4,
            DecodeError::BadLength { .. } => 5,
            DecodeError::NonZeroReserved => 6,
            DecodeError::BadField(_) => 7,
            DecodeError::InvalidName(_) => 8,
            DecodeError::InvalidText => 9,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { need, got } => {
                write!(f, "truncated message: need {need} bytes, got {got}")
            }
            DecodeError::BadMagic(m) => write!(f, "bad magic {m:#010x}"),
            DecodeError::UnknownVersion(v) => write!(f, "unknown protocol version {v}"),
            DecodeError::UnknownType(t) => write!(f, "unknown message type {t:#04x}"),
            DecodeError::BadLength { declared, actual } => {
                write!(f, "bad length: declared {declared}, actual {actual}")
            }
            DecodeError::NonZeroReserved => f.write_str("reserved field is not zero"),
            DecodeError::BadField(field) => write!(f, "invalid value in field {}", field.name()),
            DecodeError::InvalidName(e) => write!(f, "invalid file name: {e}"),
            DecodeError::InvalidText => f.write_str("error text is not UTF-8"),
        }
    }
}

/// The caller's buffer cannot hold the encoded message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferTooSmall {
    /// Bytes the message needs.
    pub need: usize,
}

/// Reads a fixed-layout `T` from the front of `bytes`, returning it and the rest.
fn read_prefix<T>(bytes: &[u8]) -> Result<(T, &[u8]), DecodeError>
where
    T: zerocopy::FromBytes + zerocopy::KnownLayout + zerocopy::Immutable,
{
    T::read_from_prefix(bytes).map_err(|_| DecodeError::Truncated {
        need: core::mem::size_of::<T>(),
        got: bytes.len(),
    })
}

/// Writes `value` followed by `tail` at the front of `buf`, returning the bytes written.
fn write_with_tail<T>(value: &T, tail: &[u8], buf: &mut [u8]) -> Result<usize, BufferTooSmall>
where
    T: zerocopy::IntoBytes + zerocopy::Immutable,
{
    let head = value.as_bytes();
    let need = head.len() + tail.len();
    let Some(out) = buf.get_mut(..need) else {
        return Err(BufferTooSmall { need });
    };
    let (h, t) = out.split_at_mut(head.len());
    h.copy_from_slice(head);
    t.copy_from_slice(tail);
    Ok(need)
}
