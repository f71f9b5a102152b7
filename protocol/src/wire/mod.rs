//! Wire format: every message as a `zerocopy` struct with network-endian fields.
//!
//! The layouts are specified byte by byte in `PROTOCOL.md`; each struct quotes its table and
//! asserts its size. Decoding peer bytes never panics: it returns a [`DecodeError`]. Decoded
//! messages are plain validated values (`*Repr` / [`Control`]) so the state machines never
//! look at raw fields.

mod control;
mod handshake;

pub(crate) use control::truncate_text;
pub use control::{
    Control, CtrlBuf, CtrlHeader, Digest, DigestKind, FileAnswer, FileEnd, FileHeader, MsgKind,
    CTRL_MSG_MAX, MAX_ERROR_TEXT,
};
pub use handshake::{
    AcceptRepr, HandshakeReply, HelloRepr, RejectRepr, RingInfo, ACCEPT_LEN, HELLO_LEN, REJECT_LEN,
};

use crate::name::NameError;
use core::fmt;

/// Protocol magic, ASCII `RDFT`, first in every handshake message.
pub const MAGIC: u32 = 0x5244_4654;
/// The protocol version this crate speaks.
pub const VERSION: u16 = 1;

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
    /// An enumerated field holds a value with no meaning.
    BadValue {
        /// The field.
        field: &'static str,
    },
    /// A file name failed validation.
    InvalidName(NameError),
    /// An error text is not UTF-8.
    InvalidText,
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
            DecodeError::BadValue { field } => write!(f, "invalid value in field {field}"),
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
