//! Handshake messages, carried in RDMA CM private data (or as the first bytes of a connection
//! for embedders without CM). The hello rides in the connect request (≤ 56 bytes of private
//! data), the accept or reject in the reply (≤ 196 and ≤ 148 bytes). The CM may pad private
//! data with zeros, so trailing bytes after a handshake message are ignored.

use super::{read_prefix, write_with_tail, BufferTooSmall, DecodeError, Features, MAGIC, VERSION};
use crate::codes::RejectReason;
// spec: [model.big-endian]
use zerocopy::byteorder::network_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

const KIND_HELLO: u8 = 1;
const KIND_ACCEPT: u8 = 2;
const KIND_REJECT: u8 = 3;

/// Bytes of each side's nonce (PROTOCOL.md §2.5).
pub const NONCE_LEN: usize = 16;
/// Bytes of a key proof (a MAC).
pub const PROOF_LEN: usize = 32;

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

/// PROTOCOL.md §2.1 "Hello": sender → receiver, in the connect request.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct Hello {
    pre: Preamble,
    features: U32,
    chunk_size: U32,
    window: U32,
    ctrl_depth: U16,
    max_open_files: U16,
    keepalive_ms: U32,
    group: U32,
    nonce: [u8; NONCE_LEN],
}
/// Encoded size of the hello.
pub const HELLO_LEN: usize = 48;
const _: () = assert!(core::mem::size_of::<Hello>() == HELLO_LEN);
const _: () = assert!(HELLO_LEN <= 56, "must fit RDMA CM REQ private data");

/// PROTOCOL.md §2.2 "Accept": receiver → sender, in the connect reply.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct Accept {
    pre: Preamble,
    features: U32,
    flags: U32,
    chunk_size: U32,
    window: U32,
    ctrl_depth: U16,
    max_open_files: U16,
    keepalive_ms: U32,
    ring_addr: U64,
    ring_len: U64,
    ring_rkey: U32,
    group: U32,
    nonce: [u8; NONCE_LEN],
    proof: [u8; PROOF_LEN],
}
/// Encoded size of the accept.
pub const ACCEPT_LEN: usize = 104;
/// Where the receiver's proof starts in the accept: the proof covers the bytes before it.
pub const ACCEPT_PROOF_OFFSET: usize = ACCEPT_LEN - PROOF_LEN;
const _: () = assert!(core::mem::size_of::<Accept>() == ACCEPT_LEN);
const _: () = assert!(ACCEPT_LEN <= 196, "must fit RDMA CM REP private data");

/// PROTOCOL.md §2.3 "Reject": receiver → sender, in the CM reject.
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
    // spec: [hs.magic]
    if pre.magic.get() != MAGIC {
        return Err(DecodeError::BadMagic(pre.magic.get()));
    }
    // spec: [hs.version]
    if pre.version.get() != VERSION {
        return Err(DecodeError::UnknownVersion(pre.version.get()));
    }
    // spec: [model.reserved]
    if pre.reserved != 0 {
        return Err(DecodeError::NonZeroReserved);
    }
    Ok(pre.kind)
}

/// What a sender proposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloRepr {
    /// Capabilities the sender supports.
    pub features: Features,
    /// The sender's buffer (chunk) size in bytes.
    pub chunk_size: u32,
    /// Chunks the sender wants in flight.
    pub window: u32,
    /// Receive buffers the sender keeps posted for the receiver's messages.
    pub ctrl_depth: u16,
    /// Files the sender wants open at once.
    pub max_open_files: u16,
    /// Most milliseconds the sender lets pass without sending anything.
    pub keepalive_ms: u32,
    /// With `LANES` offered: 0 opens a new transfer group, any other value joins that
    /// group (a lane of a transfer already under way). Without `LANES`: 0.
    pub group: u32,
    /// Fresh random bytes (for the key proofs; zero when not offering `AUTH_PSK`).
    pub nonce: [u8; NONCE_LEN],
}

impl HelloRepr {
    /// Decodes a hello. Unknown feature bits are dropped (a newer peer may offer more).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let kind = check_preamble(bytes)?;
        if kind != KIND_HELLO {
            return Err(DecodeError::UnknownType(kind));
        }
        // spec: [hs.padding]
        let (h, _) = read_prefix::<Hello>(bytes)?;
        // spec: [hs.unknown-bits]
        let features = Features::from_bits_truncate(h.features.get());
        // The group field is reserved unless groups are offered.
        if h.group.get() != 0 && !features.contains(Features::LANES) {
            return Err(DecodeError::NonZeroReserved);
        }
        Ok(HelloRepr {
            features,
            chunk_size: h.chunk_size.get(),
            window: h.window.get(),
            ctrl_depth: h.ctrl_depth.get(),
            max_open_files: h.max_open_files.get(),
            keepalive_ms: h.keepalive_ms.get(),
            group: h.group.get(),
            nonce: h.nonce,
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
            max_open_files: self.max_open_files.into(),
            keepalive_ms: self.keepalive_ms.into(),
            group: self.group.into(),
            nonce: self.nonce,
        };
        write_with_tail(&h, &[], buf)
    }
}

/// The receiver's registered memory the sender writes into: `window` data slots of
/// `chunk_size` bytes, then the control ring of `ctrl_depth` slots of
/// [`CTRL_MSG_MAX`](super::CTRL_MSG_MAX) bytes, under one remote key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct RingInfo {
    /// Remote virtual address of data slot 0.
    pub addr: u64,
    /// Length in bytes: `chunk_size × window + ctrl_depth × CTRL_MSG_MAX`.
    pub len: u64,
    /// Remote key of the memory region.
    pub rkey: u32,
}

bitflags::bitflags! {
    /// Receiver policies announced in the accept (not negotiated).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct AcceptFlags: u32 {
        /// Every file end must carry a digest; an end without one gets the result
        /// `DIGEST_REQUIRED` and the file is not published.
        const DIGEST_REQUIRED = 1 << 0;
    }
}

/// The receiver's answer: the agreed parameters and its ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcceptRepr {
    /// Agreed capabilities (intersection). Decoded as sent, bits unknown to this crate
    /// included.
    pub features: Features,
    /// Receiver policies.
    pub flags: AcceptFlags,
    /// Agreed chunk size.
    pub chunk_size: u32,
    /// Agreed window (minimum of both).
    pub window: u32,
    /// Slots of the receiver's control ring.
    pub ctrl_depth: u16,
    /// Agreed open-file limit (minimum of both).
    pub max_open_files: u16,
    /// Agreed keepalive interval (minimum of both), milliseconds.
    pub keepalive_ms: u32,
    /// The receiver's ring.
    pub ring: RingInfo,
    /// With `LANES` agreed: the transfer group this connection belongs to (never 0).
    /// Without: 0.
    pub group: u32,
    /// The receiver's nonce (zero without `AUTH_PSK`).
    pub nonce: [u8; NONCE_LEN],
    /// The receiver's key proof (zero without `AUTH_PSK`).
    pub proof: [u8; PROOF_LEN],
}

impl AcceptRepr {
    fn encode(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let a = Accept {
            pre: preamble(KIND_ACCEPT),
            features: self.features.bits().into(),
            flags: self.flags.bits().into(),
            chunk_size: self.chunk_size.into(),
            window: self.window.into(),
            ctrl_depth: self.ctrl_depth.into(),
            max_open_files: self.max_open_files.into(),
            keepalive_ms: self.keepalive_ms.into(),
            ring_addr: self.ring.addr.into(),
            ring_len: self.ring.len.into(),
            ring_rkey: self.ring.rkey.into(),
            group: self.group.into(),
            nonce: self.nonce,
            proof: self.proof,
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
    /// so the sender can report why it was turned away; one of this version with non-zero
    /// reserved fields is refused like any other message.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (pre, _) = read_prefix::<Preamble>(bytes)?;
        if pre.magic.get() != MAGIC {
            return Err(DecodeError::BadMagic(pre.magic.get()));
        }
        // spec: [hs.reject.any-version]
        if pre.kind == KIND_REJECT {
            let (r, _) = read_prefix::<Reject>(bytes)?;
            // Our version's reserved fields must be zero (§1); another version's reject is
            // read for its reason and version only, whatever it keeps in the rest.
            // spec: [hs.reject.any-version]
            if pre.version.get() == VERSION && (pre.reserved != 0 || r.reserved.get() != 0) {
                return Err(DecodeError::NonZeroReserved);
            }
            return Ok(HandshakeReply::Reject(RejectRepr {
                reason: RejectReason(r.reason.get()),
                max_version: r.max_version.get(),
            }));
        }
        let kind = check_preamble(bytes)?;
        if kind != KIND_ACCEPT {
            return Err(DecodeError::UnknownType(kind));
        }
        // spec: [hs.padding]
        let (a, _) = read_prefix::<Accept>(bytes)?;
        let flags = AcceptFlags::from_bits(a.flags.get()).ok_or(DecodeError::NonZeroReserved)?;
        Ok(HandshakeReply::Accept(AcceptRepr {
            // Kept as sent, unknown bits included: the sender refuses an agreement on a
            // feature it did not offer (`check_reply`), and an accept re-encodes exactly.
            features: Features::from_bits_retain(a.features.get()),
            flags,
            chunk_size: a.chunk_size.get(),
            window: a.window.get(),
            ctrl_depth: a.ctrl_depth.get(),
            max_open_files: a.max_open_files.get(),
            keepalive_ms: a.keepalive_ms.get(),
            ring: RingInfo {
                addr: a.ring_addr.get(),
                len: a.ring_len.get(),
                rkey: a.ring_rkey.get(),
            },
            // Checked against the agreement by the sender (`check_reply`).
            group: a.group.get(),
            nonce: a.nonce,
            proof: a.proof,
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
