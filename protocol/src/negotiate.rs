//! Buffer-size negotiation: both sides use the minimum of the two chunk sizes and windows
//! (the rule kept from the original C library), after checking each proposal is sane.

use crate::codes::RejectReason;
use crate::wire::{
    AcceptRepr, DecodeError, Features, HandshakeReply, HelloRepr, RejectRepr, RingInfo, VERSION,
};
use core::fmt;

/// Smallest chunk either side may propose.
pub const MIN_CHUNK_SIZE: u32 = 64;
/// Largest chunk either side may propose (1 GiB).
pub const MAX_CHUNK_SIZE: u32 = 1 << 30;
/// Largest window either side may propose.
pub const MAX_WINDOW: u32 = 1 << 16;
/// Largest ring a receiver will be asked to register (64 GiB).
pub const MAX_RING_BYTES: u64 = 1 << 36;
/// Fewest control receive buffers a sender may keep posted.
pub const MIN_SENDER_CTRL_DEPTH: u16 = 2;
/// Most control receive buffers a side may announce.
pub const MAX_CTRL_DEPTH: u16 = 1024;
/// Most files a sender may have unresolved (header sent, no result or reject yet).
pub const MAX_OPEN_FILES: usize = 4;
/// Fewest control receive buffers a receiver must keep posted: a header and an end per open
/// file, two pure acks, and the goodbye and error (see PROTOCOL.md "Control credits").
pub const MIN_RECEIVER_CTRL_DEPTH: u16 = 2 * MAX_OPEN_FILES as u16 + 4;

/// One side's proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Capabilities this side supports.
    pub features: Features,
    /// Chunk (buffer) size in bytes.
    pub chunk_size: u32,
    /// Chunks in flight.
    pub window: u32,
    /// Control receive buffers this side keeps posted.
    pub ctrl_depth: u16,
}

impl Params {
    /// Checks the proposal is within the protocol's limits.
    pub fn check(&self, min_ctrl_depth: u16) -> Result<(), RejectReason> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(RejectReason::BAD_CHUNK_SIZE);
        }
        if !(1..=MAX_WINDOW).contains(&self.window) {
            return Err(RejectReason::BAD_WINDOW);
        }
        if !(min_ctrl_depth..=MAX_CTRL_DEPTH).contains(&self.ctrl_depth) {
            return Err(RejectReason::BAD_CTRL_DEPTH);
        }
        Ok(())
    }

    /// The hello a sender sends with these parameters.
    pub fn hello(&self) -> HelloRepr {
        HelloRepr {
            features: self.features,
            chunk_size: self.chunk_size,
            window: self.window,
            ctrl_depth: self.ctrl_depth,
        }
    }
}

/// Parameters both sides agreed on; the input to both state machines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// Agreed capabilities.
    pub features: Features,
    /// Agreed chunk size.
    pub chunk_size: u32,
    /// Agreed window.
    pub window: u32,
    /// Control receive buffers the sender keeps posted.
    pub sender_ctrl_depth: u16,
    /// Control receive buffers the receiver keeps posted.
    pub receiver_ctrl_depth: u16,
    /// The receiver's ring.
    pub ring: RingInfo,
}

impl Negotiated {
    /// Bytes the ring must have: `chunk_size × window`.
    pub fn ring_len(&self) -> u64 {
        u64::from(self.chunk_size) * u64::from(self.window)
    }

    /// Checks the agreement is within the protocol's limits. [`negotiate`] + [`Agreed::accept`]
    /// and [`check_reply`] only produce valid ones; this guards hand-built values, so the
    /// state machines can rely on them (no zero window, no ring wrapping the address space).
    pub fn check(&self) -> Result<(), &'static str> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err("chunk size out of range");
        }
        if !(1..=MAX_WINDOW).contains(&self.window) {
            return Err("window out of range");
        }
        if !(MIN_SENDER_CTRL_DEPTH..=MAX_CTRL_DEPTH).contains(&self.sender_ctrl_depth) {
            return Err("sender control depth out of range");
        }
        if !(MIN_RECEIVER_CTRL_DEPTH..=MAX_CTRL_DEPTH).contains(&self.receiver_ctrl_depth) {
            return Err("receiver control depth out of range");
        }
        if self.ring.len != self.ring_len() || self.ring.addr.checked_add(self.ring.len).is_none() {
            return Err("ring length is not chunk size × window, or the ring wraps");
        }
        Ok(())
    }
}

/// The receiver's half-way result: agreed sizes, before the ring exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agreed {
    /// Agreed capabilities.
    pub features: Features,
    /// Agreed chunk size.
    pub chunk_size: u32,
    /// Agreed window.
    pub window: u32,
    /// The sender's control depth.
    pub sender_ctrl_depth: u16,
}

impl Agreed {
    /// Bytes of ring to register.
    pub fn ring_len(&self) -> u64 {
        u64::from(self.chunk_size) * u64::from(self.window)
    }

    /// Completes the handshake once the ring is registered: the negotiated parameters and the
    /// reply to send. `receiver_ctrl_depth` is how many control receives the receiver posted.
    pub fn accept(&self, ring: RingInfo, receiver_ctrl_depth: u16) -> (Negotiated, HandshakeReply) {
        let neg = Negotiated {
            features: self.features,
            chunk_size: self.chunk_size,
            window: self.window,
            sender_ctrl_depth: self.sender_ctrl_depth,
            receiver_ctrl_depth,
            ring,
        };
        let reply = HandshakeReply::Accept(AcceptRepr {
            features: self.features,
            chunk_size: self.chunk_size,
            window: self.window,
            ctrl_depth: receiver_ctrl_depth,
            ring,
        });
        (neg, reply)
    }
}

/// A reject reply for `reason`.
pub fn reject(reason: RejectReason) -> HandshakeReply {
    HandshakeReply::Reject(RejectRepr {
        reason,
        max_version: VERSION,
    })
}

/// Receiver: decides on a sender's hello against the local proposal.
///
/// On success the caller registers a ring of [`Agreed::ring_len`] bytes and calls
/// [`Agreed::accept`]; on failure it sends [`reject`] of the reason.
pub fn negotiate(hello: &[u8], local: &Params) -> Result<Agreed, RejectReason> {
    let h = HelloRepr::decode(hello).map_err(|e| match e {
        DecodeError::BadMagic(_) => RejectReason::BAD_MAGIC,
        DecodeError::UnknownVersion(_) => RejectReason::UNSUPPORTED_VERSION,
        _ => RejectReason::MALFORMED,
    })?;
    let theirs = Params {
        features: h.features,
        chunk_size: h.chunk_size,
        window: h.window,
        ctrl_depth: h.ctrl_depth,
    };
    theirs.check(MIN_SENDER_CTRL_DEPTH)?;
    let agreed = Agreed {
        features: h.features & local.features,
        chunk_size: h.chunk_size.min(local.chunk_size),
        window: h.window.min(local.window),
        sender_ctrl_depth: h.ctrl_depth,
    };
    if agreed.ring_len() > MAX_RING_BYTES {
        return Err(RejectReason::RING_TOO_LARGE);
    }
    Ok(agreed)
}

/// Why a sender's handshake failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// The receiver refused.
    Rejected(RejectRepr),
    /// The reply could not be decoded.
    Decode(DecodeError),
    /// The reply decoded but breaks the negotiation rules; the text says which.
    Invalid(&'static str),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Rejected(r) => {
                write!(f, "receiver rejected the connection: {}", r.reason)
            }
            HandshakeError::Decode(e) => write!(f, "undecodable handshake reply: {e}"),
            HandshakeError::Invalid(why) => write!(f, "invalid handshake reply: {why}"),
        }
    }
}

/// Sender: checks the receiver's reply against what it proposed.
pub fn check_reply(reply: &[u8], local: &Params) -> Result<Negotiated, HandshakeError> {
    let a = match HandshakeReply::decode(reply).map_err(HandshakeError::Decode)? {
        HandshakeReply::Reject(r) => return Err(HandshakeError::Rejected(r)),
        HandshakeReply::Accept(a) => a,
    };
    let invalid = |why| Err(HandshakeError::Invalid(why));
    if a.chunk_size != a.chunk_size.min(local.chunk_size) || a.chunk_size < MIN_CHUNK_SIZE {
        return invalid("chunk size above the proposal or below the minimum");
    }
    if a.window == 0 || a.window > local.window {
        return invalid("window zero or above the proposal");
    }
    if !local.features.contains(a.features) {
        return invalid("features not offered");
    }
    if !(MIN_RECEIVER_CTRL_DEPTH..=MAX_CTRL_DEPTH).contains(&a.ctrl_depth) {
        return invalid("receiver control depth out of range");
    }
    let neg = Negotiated {
        features: a.features,
        chunk_size: a.chunk_size,
        window: a.window,
        sender_ctrl_depth: local.ctrl_depth,
        receiver_ctrl_depth: a.ctrl_depth,
        ring: a.ring,
    };
    if a.ring.len != neg.ring_len() {
        return invalid("ring length is not chunk size × window");
    }
    if a.ring.addr.checked_add(a.ring.len).is_none() {
        return invalid("ring wraps the address space");
    }
    Ok(neg)
}
