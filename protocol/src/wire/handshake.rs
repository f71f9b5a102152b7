//! Handshake messages, carried in RDMA CM private data (or as the first bytes of a connection
//! for embedders without CM). The hello rides in the connect request (≤ 56 bytes of private
//! data), the accept or reject in the reply (≤ 196 and ≤ 148 bytes). The CM may pad private
//! data with zeros, so trailing bytes after a handshake message are ignored.

use super::{read_prefix, write_with_tail, BufferTooSmall, DecodeError, Features, MAGIC, VERSION};
use crate::codes::RejectReason;
use zerocopy::byteorder::network_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

const KIND_HELLO: u8 = 1;
const KIND_ACCEPT: u8 = 2;
const KIND_REJECT: u8 = 3;

/// First 8 bytes of every handshake message.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct Preamble {
    magic: U32,
    version: U16,
    kind: u8,
    reserved: u8,
}
const _: () = assert!(core::mem::size_of::<Preamble>() == 8);

/// PROTOCOL.md "Hello": sender → receiver, in the connect request.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct Hello {
    pre: Preamble,
    features: U32,
    chunk_size: U32,
    window: U32,
    ctrl_depth: U16,
    reserved: U16,
}
/// Encoded size of the hello.
pub const HELLO_LEN: usize = 24;
const _: () = assert!(core::mem::size_of::<Hello>() == HELLO_LEN);
const _: () = assert!(HELLO_LEN <= 56, "must fit RDMA CM REQ private data");

/// PROTOCOL.md "Accept": receiver → sender, in the connect reply.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct Accept {
    pre: Preamble,
    features: U32,
    chunk_size: U32,
    window: U32,
    ctrl_depth: U16,
    reserved: U16,
    ring_addr: U64,
    ring_len: U64,
    ring_rkey: U32,
    reserved2: U32,
}
/// Encoded size of the accept.
pub const ACCEPT_LEN: usize = 48;
const _: () = assert!(core::mem::size_of::<Accept>() == ACCEPT_LEN);
const _: () = assert!(ACCEPT_LEN <= 196, "must fit RDMA CM REP private data");

/// PROTOCOL.md "Reject": receiver → sender, in the CM reject.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct Reject {
    pre: Preamble,
    reason: U16,
    max_version: U16,
    reserved: U32,
}
/// Encoded size of the reject.
pub const REJECT_LEN: usize = 16;
const _: () = assert!(core::mem::size_of::<Reject>() == REJECT_LEN);
const _: () = assert!(REJECT_LEN <= 148, "must fit RDMA CM REJ private data");

fn preamble(kind: u8) -> Preamble {
    Preamble {
        magic: MAGIC.into(),
        version: VERSION.into(),
        kind,
        reserved: 0,
    }
}

/// Checks magic and version; returns the kind byte.
fn check_preamble(bytes: &[u8]) -> Result<u8, DecodeError> {
    let (pre, _) = read_prefix::<Preamble>(bytes)?;
    if pre.magic.get() != MAGIC {
        return Err(DecodeError::BadMagic(pre.magic.get()));
    }
    if pre.version.get() != VERSION {
        return Err(DecodeError::UnknownVersion(pre.version.get()));
    }
    if pre.reserved != 0 {
        return Err(DecodeError::NonZeroReserved);
    }
    Ok(pre.kind)
}

/// What a sender proposes: its chunk (buffer) size, window and control depth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloRepr {
    /// Capabilities the sender supports.
    pub features: Features,
    /// The sender's buffer (chunk) size in bytes.
    pub chunk_size: u32,
    /// Chunks the sender wants in flight.
    pub window: u32,
    /// Control receive buffers the sender keeps posted.
    pub ctrl_depth: u16,
}

impl HelloRepr {
    /// Decodes a hello. Unknown feature bits are dropped (a newer peer may offer more).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let kind = check_preamble(bytes)?;
        if kind != KIND_HELLO {
            return Err(DecodeError::UnknownType(kind));
        }
        let (h, _) = read_prefix::<Hello>(bytes)?;
        if h.reserved.get() != 0 {
            return Err(DecodeError::NonZeroReserved);
        }
        Ok(HelloRepr {
            features: Features::from_bits_truncate(h.features.get()),
            chunk_size: h.chunk_size.get(),
            window: h.window.get(),
            ctrl_depth: h.ctrl_depth.get(),
        })
    }

    /// Encodes into `buf`, returning [`HELLO_LEN`].
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let h = Hello {
            pre: preamble(KIND_HELLO),
            features: self.features.bits().into(),
            chunk_size: self.chunk_size.into(),
            window: self.window.into(),
            ctrl_depth: self.ctrl_depth.into(),
            reserved: 0.into(),
        };
        write_with_tail(&h, &[], buf)
    }
}

/// Where the sender may RDMA-write: the receiver's ring of `window` slots of `chunk_size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct RingInfo {
    /// Remote virtual address of slot 0.
    pub addr: u64,
    /// Ring length in bytes; always `chunk_size × window`.
    pub len: u64,
    /// Remote key of the ring's memory region.
    pub rkey: u32,
}

/// The receiver's answer: the agreed parameters and its ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcceptRepr {
    /// Agreed capabilities (intersection).
    pub features: Features,
    /// Agreed chunk size (minimum of both).
    pub chunk_size: u32,
    /// Agreed window (minimum of both).
    pub window: u32,
    /// Control receive buffers the receiver keeps posted.
    pub ctrl_depth: u16,
    /// The receive ring.
    pub ring: RingInfo,
}

impl AcceptRepr {
    fn encode(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let a = Accept {
            pre: preamble(KIND_ACCEPT),
            features: self.features.bits().into(),
            chunk_size: self.chunk_size.into(),
            window: self.window.into(),
            ctrl_depth: self.ctrl_depth.into(),
            reserved: 0.into(),
            ring_addr: self.ring.addr.into(),
            ring_len: self.ring.len.into(),
            ring_rkey: self.ring.rkey.into(),
            reserved2: 0.into(),
        };
        write_with_tail(&a, &[], buf)
    }
}

/// A refused connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejectRepr {
    /// Why.
    pub reason: RejectReason,
    /// Highest protocol version the receiver speaks.
    pub max_version: u16,
}

/// The receiver's reply to a hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeReply {
    /// Connection accepted with these parameters.
    Accept(AcceptRepr),
    /// Connection refused.
    Reject(RejectRepr),
}

impl HandshakeReply {
    /// Decodes an accept or reject. A reject is decoded even from a peer of another version,
    /// so the sender can report why it was turned away.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (pre, _) = read_prefix::<Preamble>(bytes)?;
        if pre.magic.get() != MAGIC {
            return Err(DecodeError::BadMagic(pre.magic.get()));
        }
        if pre.kind == KIND_REJECT {
            let (r, _) = read_prefix::<Reject>(bytes)?;
            return Ok(HandshakeReply::Reject(RejectRepr {
                reason: RejectReason(r.reason.get()),
                max_version: r.max_version.get(),
            }));
        }
        let kind = check_preamble(bytes)?;
        if kind != KIND_ACCEPT {
            return Err(DecodeError::UnknownType(kind));
        }
        let (a, _) = read_prefix::<Accept>(bytes)?;
        if a.reserved.get() != 0 || a.reserved2.get() != 0 {
            return Err(DecodeError::NonZeroReserved);
        }
        Ok(HandshakeReply::Accept(AcceptRepr {
            features: Features::from_bits_truncate(a.features.get()),
            chunk_size: a.chunk_size.get(),
            window: a.window.get(),
            ctrl_depth: a.ctrl_depth.get(),
            ring: RingInfo {
                addr: a.ring_addr.get(),
                len: a.ring_len.get(),
                rkey: a.ring_rkey.get(),
            },
        }))
    }

    /// Encodes into `buf`, returning the bytes written.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        match self {
            HandshakeReply::Accept(a) => a.encode(buf),
            HandshakeReply::Reject(r) => {
                let msg = Reject {
                    pre: preamble(KIND_REJECT),
                    reason: r.reason.0.into(),
                    max_version: r.max_version.into(),
                    reserved: 0.into(),
                };
                write_with_tail(&msg, &[], buf)
            }
        }
    }
}
