//! The handshake's negotiation (PROTOCOL.md §2.4): both sides use the minimum of the two chunk
//! sizes, windows, open-file limits and keepalive intervals (the buffer-size rule kept from the
//! original C library), after checking each proposal is sane; each side checks the other's.

use crate::auth::{proofs_equal, receiver_proof, sender_proof, Mac};
use crate::codes::RejectReason;
use crate::wire::{
    AcceptFlags, AcceptRepr, DecodeError, Features, HandshakeReply, HelloRepr, RejectRepr,
    RingInfo, ACCEPT_LEN, ACCEPT_PROOF_OFFSET, CTRL_MSG_MAX, HELLO_LEN, NONCE_LEN, PROOF_LEN,
    VERSION,
};
use core::fmt;

/// Smallest chunk size (one page: chunks suit `O_DIRECT` I/O).
pub const MIN_CHUNK_SIZE: u32 = 4096;
/// Largest chunk size (1 GiB).
pub const MAX_CHUNK_SIZE: u32 = 1 << 30;
/// Largest window.
pub const MAX_WINDOW: u32 = 1 << 16;
/// Largest data ring (`chunk × window`) a receiver registers unless it sets a lower limit
/// (64 GiB).
pub const MAX_RING_BYTES: u64 = 1 << 36;
/// Largest open-file limit either side may propose.
pub const MAX_OPEN_FILES: u16 = 4096;
/// The open-file limit this crate proposes by default.
pub const DEFAULT_OPEN_FILES: u16 = 64;
/// Control slots a side must keep beyond its open-file limit: two messages per open file
/// cross each RTT at full pipelining, and credits and acks ride beside them.
pub const CTRL_DEPTH_SLACK: u16 = 8;
/// Largest control depth either side may announce.
pub const MAX_CTRL_DEPTH: u16 = MAX_OPEN_FILES + 4 * CTRL_DEPTH_SLACK;
/// Longest keepalive interval (one hour), milliseconds.
pub const MAX_KEEPALIVE_MS: u32 = 3_600_000;
/// The keepalive interval this crate proposes by default, milliseconds.
pub const DEFAULT_KEEPALIVE_MS: u32 = 1_000;

/// Fewest control slots a side must offer for an open-file limit of `open_files`: enough that
/// small files pipeline at the full open-file limit and no agreement costs bulk throughput.
pub const fn min_ctrl_depth(open_files: u16) -> u16 {
    open_files.saturating_add(CTRL_DEPTH_SLACK)
}

/// The chunk size a proposal stands for: rounded down to a power of two, at most
/// [`MAX_CHUNK_SIZE`]; `None` below [`MIN_CHUNK_SIZE`].
pub fn effective_chunk_size(proposed: u32) -> Option<u32> {
    if proposed < MIN_CHUNK_SIZE {
        return None;
    }
    // spec: [hs.chunk.round]
    let clamped = proposed.min(MAX_CHUNK_SIZE);
    // clamped ≥ 4096, so ilog2 is defined.
    Some(1 << clamped.ilog2())
}

/// Why parameters are unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParamError {
    /// Chunk size below [`MIN_CHUNK_SIZE`] (or, agreed, not a power of two in range).
    ChunkSize,
    /// Window zero or above [`MAX_WINDOW`].
    Window,
    /// Control depth below [`min_ctrl_depth`] of the open-file limit, or above
    /// [`MAX_CTRL_DEPTH`].
    CtrlDepth,
    /// Open-file limit zero or above [`MAX_OPEN_FILES`].
    OpenFiles,
    /// Keepalive interval zero or above [`MAX_KEEPALIVE_MS`].
    Keepalive,
    /// `chunk × window` above the ring limit.
    RingTooLarge,
    /// The ring's length is not the one the parameters need, or it wraps the address space.
    RingLayout,
    /// Digests are required but no digest algorithm is offered.
    DigestRequired,
    /// `AUTH_PSK` is offered but no key was given, or a key was given without `AUTH_PSK`.
    KeyMismatch,
    /// The idle timeout is shorter than two keepalive intervals (a live peer would be failed).
    IdleTimeout,
    /// The caller's storage holds fewer file slots than the open-file limit.
    Storage,
    /// A transfer group without `LANES` agreed, or `LANES` agreed without a group.
    Group,
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamError::ChunkSize => "chunk size out of range",
            ParamError::Window => "window out of range",
            ParamError::CtrlDepth => "control depth out of range for the open-file limit",
            ParamError::OpenFiles => "open-file limit out of range",
            ParamError::Keepalive => "keepalive interval out of range",
            ParamError::RingTooLarge => "ring (chunk × window) above the limit",
            ParamError::RingLayout => "ring length does not match the parameters, or wraps",
            ParamError::DigestRequired => "digests required but no digest algorithm offered",
            ParamError::KeyMismatch => "AUTH_PSK offered without a key, or a key without AUTH_PSK",
            ParamError::IdleTimeout => "idle timeout shorter than two keepalive intervals",
            ParamError::Storage => "storage has fewer file slots than the open-file limit",
            ParamError::Group => "a transfer group without LANES, or LANES without a group",
        })
    }
}

/// One side's proposal and local limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Capabilities this side supports. `AUTH_PSK` means: this side has a key and requires
    /// the peer to prove it.
    pub features: Features,
    /// Chunk (buffer) size in bytes; rounded down to a power of two.
    pub chunk_size: u32,
    /// Chunks in flight.
    pub window: u32,
    /// Sender: receive buffers it posts for the receiver's messages. Receiver: slots of its
    /// control ring.
    pub ctrl_depth: u16,
    /// Files open at once.
    pub max_open_files: u16,
    /// Most milliseconds this side lets pass without sending anything.
    pub keepalive_ms: u32,
    /// Receiver: refuse senders that cannot send a digest, and file ends without one.
    pub require_digest: bool,
    /// Largest `chunk × window` this side registers.
    pub max_ring_bytes: u64,
    /// Sender, with `LANES`: the transfer group to join (0 opens a new one).
    pub group: u32,
}

impl Params {
    /// A proposal with this crate's defaults for everything but the sizes.
    pub fn new(features: Features, chunk_size: u32, window: u32) -> Params {
        Params {
            features,
            chunk_size,
            window,
            ctrl_depth: min_ctrl_depth(DEFAULT_OPEN_FILES),
            max_open_files: DEFAULT_OPEN_FILES,
            keepalive_ms: DEFAULT_KEEPALIVE_MS,
            require_digest: false,
            max_ring_bytes: MAX_RING_BYTES,
            group: 0,
        }
    }

    /// Checks the proposal against the protocol's limits.
    pub fn check(&self) -> Result<(), ParamError> {
        let chunk = effective_chunk_size(self.chunk_size).ok_or(ParamError::ChunkSize)?;
        check_common(
            self.window,
            self.ctrl_depth,
            self.max_open_files,
            self.keepalive_ms,
        )?;
        // spec: [hs.ring-limit]
        if u64::from(chunk) * u64::from(self.window) > self.max_ring_bytes.min(MAX_RING_BYTES) {
            return Err(ParamError::RingTooLarge);
        }
        if self.require_digest && self.features.digests().is_empty() {
            return Err(ParamError::DigestRequired);
        }
        if self.group != 0 && !self.features.contains(Features::LANES) {
            return Err(ParamError::Group);
        }
        Ok(())
    }

    /// The hello a sender sends with these parameters and its `nonce`.
    pub fn hello(&self, nonce: [u8; NONCE_LEN]) -> HelloRepr {
        HelloRepr {
            features: self.features,
            chunk_size: self.chunk_size,
            window: self.window,
            ctrl_depth: self.ctrl_depth,
            max_open_files: self.max_open_files,
            keepalive_ms: self.keepalive_ms,
            group: self.group,
            nonce,
        }
    }
}

// spec: [hs.limits]
fn check_common(window: u32, ctrl: u16, open: u16, keepalive: u32) -> Result<(), ParamError> {
    if !(1..=MAX_WINDOW).contains(&window) {
        return Err(ParamError::Window);
    }
    if !(1..=MAX_OPEN_FILES).contains(&open) {
        return Err(ParamError::OpenFiles);
    }
    // spec: [hs.ctrl-depth]
    if !(min_ctrl_depth(open)..=MAX_CTRL_DEPTH).contains(&ctrl) {
        return Err(ParamError::CtrlDepth);
    }
    if !(1..=MAX_KEEPALIVE_MS).contains(&keepalive) {
        return Err(ParamError::Keepalive);
    }
    Ok(())
}

/// Parameters both sides agreed on; the input to both state machines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// Agreed capabilities.
    pub features: Features,
    /// Receiver policies.
    pub flags: AcceptFlags,
    /// Agreed chunk size (a power of two).
    pub chunk_size: u32,
    /// Agreed window.
    pub window: u32,
    /// Receive buffers the sender keeps posted (the receiver's credit for its messages).
    pub sender_ctrl_depth: u16,
    /// Slots of the receiver's control ring (the sender's credit for its messages).
    pub receiver_ctrl_depth: u16,
    /// Agreed open-file limit.
    pub max_open_files: u16,
    /// Agreed keepalive interval, milliseconds.
    pub keepalive_ms: u32,
    /// The receiver's ring: data slots, then control slots.
    pub ring: RingInfo,
    /// With `AUTH_PSK`: the sender's proof (the sender sends it, the receiver expects it).
    pub sender_proof: Option<[u8; PROOF_LEN]>,
    /// With `LANES`: the transfer group of this connection (never 0); 0 without.
    pub group: u32,
}

impl Negotiated {
    /// Bytes of data slots: `chunk_size × window`.
    pub fn data_len(&self) -> u64 {
        u64::from(self.chunk_size) * u64::from(self.window)
    }

    /// Bytes of the whole ring: data slots, then `receiver_ctrl_depth` control slots.
    pub fn ring_len(&self) -> u64 {
        ring_len(self.chunk_size, self.window, self.receiver_ctrl_depth)
    }

    /// Offset of control slot `i` in the ring.
    pub fn ctrl_slot_offset(&self, slot: u32) -> u64 {
        self.data_len() + u64::from(slot) * CTRL_MSG_MAX as u64
    }

    /// Checks the agreement is within the protocol's limits. [`negotiate`] + [`Agreed::accept`]
    /// and [`check_reply`] only produce valid ones; this guards hand-built values, so the
    /// state machines can rely on them (no zero window, no ring wrapping the address space).
    pub fn check(&self) -> Result<(), ParamError> {
        if !self.chunk_size.is_power_of_two()
            || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size)
        {
            return Err(ParamError::ChunkSize);
        }
        check_common(
            self.window,
            self.receiver_ctrl_depth,
            self.max_open_files,
            self.keepalive_ms,
        )?;
        if !(min_ctrl_depth(self.max_open_files)..=MAX_CTRL_DEPTH).contains(&self.sender_ctrl_depth)
        {
            return Err(ParamError::CtrlDepth);
        }
        if self.data_len() > MAX_RING_BYTES {
            return Err(ParamError::RingTooLarge);
        }
        if self.ring.len != self.ring_len() || self.ring.addr.checked_add(self.ring.len).is_none() {
            return Err(ParamError::RingLayout);
        }
        if self.flags.contains(AcceptFlags::DIGEST_REQUIRED) && self.features.digests().is_empty() {
            return Err(ParamError::DigestRequired);
        }
        if self.features.contains(Features::AUTH_PSK) != self.sender_proof.is_some() {
            return Err(ParamError::KeyMismatch);
        }
        // spec: [lanes.open]
        if self.features.contains(Features::LANES) != (self.group != 0) {
            return Err(ParamError::Group);
        }
        Ok(())
    }
}

fn ring_len(chunk: u32, window: u32, ctrl_depth: u16) -> u64 {
    u64::from(chunk) * u64::from(window) + u64::from(ctrl_depth) * CTRL_MSG_MAX as u64
}

/// The receiver's half-way result: agreed sizes, before the ring exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agreed {
    /// Agreed capabilities.
    pub features: Features,
    /// Receiver policies.
    pub flags: AcceptFlags,
    /// Agreed chunk size.
    pub chunk_size: u32,
    /// Agreed window.
    pub window: u32,
    /// The sender's control depth.
    pub sender_ctrl_depth: u16,
    /// The receiver's control depth (its control ring slots).
    pub receiver_ctrl_depth: u16,
    /// Agreed open-file limit.
    pub max_open_files: u16,
    /// Agreed keepalive interval, milliseconds.
    pub keepalive_ms: u32,
    /// With `LANES` agreed: the group the hello asks to join, 0 for a new one. The receiver
    /// looks it up (refusing an unknown one with `UNKNOWN_GROUP`) or opens a new group, and
    /// passes the group to [`accept`](Self::accept).
    pub join: u32,
    /// The hello's bytes, for the key proofs.
    hello: [u8; HELLO_LEN],
}

impl Agreed {
    /// Bytes of ring to register: data slots, then control slots.
    pub fn ring_len(&self) -> u64 {
        ring_len(self.chunk_size, self.window, self.receiver_ctrl_depth)
    }

    /// Completes the handshake once the ring is registered: the negotiated parameters and the
    /// reply to send. `nonce` is fresh randomness; `key` must be given exactly when
    /// `AUTH_PSK` was agreed (that is, when the receiver's own parameters offered it);
    /// `group` is the connection's transfer group with `LANES` agreed (non-zero, and equal to
    /// [`join`](Self::join) when that is non-zero), 0 without.
    pub fn accept(
        &self,
        ring: RingInfo,
        nonce: [u8; NONCE_LEN],
        key: Option<&dyn Mac>,
        group: u32,
    ) -> Result<(Negotiated, HandshakeReply), ParamError> {
        let auth = self.features.contains(Features::AUTH_PSK);
        // spec: [psk.required]
        if auth != key.is_some() {
            return Err(ParamError::KeyMismatch);
        }
        if self.join != 0 && group != self.join {
            return Err(ParamError::Group);
        }
        let mut accept = AcceptRepr {
            features: self.features,
            flags: self.flags,
            chunk_size: self.chunk_size,
            window: self.window,
            ctrl_depth: self.receiver_ctrl_depth,
            max_open_files: self.max_open_files,
            keepalive_ms: self.keepalive_ms,
            ring,
            group,
            nonce: if auth { nonce } else { [0; NONCE_LEN] },
            proof: [0; PROOF_LEN],
        };
        let mut sender_proof_expected = None;
        if let Some(key) = key {
            let mut bytes = [0u8; ACCEPT_LEN];
            let reply = HandshakeReply::Accept(accept);
            reply
                .encode(&mut bytes)
                .map_err(|_| ParamError::RingLayout)?;
            accept.proof = receiver_proof(key, &self.hello, &bytes[..ACCEPT_PROOF_OFFSET]);
            HandshakeReply::Accept(accept)
                .encode(&mut bytes)
                .map_err(|_| ParamError::RingLayout)?;
            sender_proof_expected = Some(sender_proof(key, &self.hello, &bytes));
        }
        let neg = Negotiated {
            features: self.features,
            flags: self.flags,
            chunk_size: self.chunk_size,
            window: self.window,
            sender_ctrl_depth: self.sender_ctrl_depth,
            receiver_ctrl_depth: self.receiver_ctrl_depth,
            max_open_files: self.max_open_files,
            keepalive_ms: self.keepalive_ms,
            ring,
            sender_proof: sender_proof_expected,
            group,
        };
        neg.check()?;
        Ok((neg, HandshakeReply::Accept(accept)))
    }
}

/// A reject reply for `reason`.
pub fn reject(reason: RejectReason) -> HandshakeReply {
    HandshakeReply::Reject(RejectRepr {
        reason,
        max_version: VERSION,
    })
}

/// Receiver: decides on a sender's hello against the local parameters.
///
/// On success the caller registers a ring of [`Agreed::ring_len`] bytes and calls
/// [`Agreed::accept`]; on failure it sends [`reject`] of the reason. Invalid local parameters
/// give [`RejectReason::MISCONFIGURED`] whatever the hello says.
pub fn negotiate(hello: &[u8], local: &Params) -> Result<Agreed, RejectReason> {
    // spec: [hs.own-params]
    if local.check().is_err() {
        return Err(RejectReason::MISCONFIGURED);
    }
    let h = HelloRepr::decode(hello).map_err(|e| match e {
        // spec: [hs.magic]
        DecodeError::BadMagic(_) => RejectReason::BAD_MAGIC,
        // spec: [hs.version]
        DecodeError::UnknownVersion(_) => RejectReason::UNSUPPORTED_VERSION,
        _ => RejectReason::MALFORMED,
    })?;
    // spec: [hs.chunk.round]
    let their_chunk = effective_chunk_size(h.chunk_size).ok_or(RejectReason::BAD_CHUNK_SIZE)?;
    // spec: [hs.limits]
    check_common(h.window, h.ctrl_depth, h.max_open_files, h.keepalive_ms).map_err(
        |e| match e {
            ParamError::Window => RejectReason::BAD_WINDOW,
            ParamError::OpenFiles => RejectReason::BAD_OPEN_FILES,
            // spec: [hs.ctrl-depth]
            ParamError::CtrlDepth => RejectReason::BAD_CTRL_DEPTH,
            _ => RejectReason::BAD_KEEPALIVE,
        },
    )?;
    // spec: [hs.unknown-bits]
    let features = h.features & local.features;
    // spec: [psk.required]
    if local.features.contains(Features::AUTH_PSK) && !features.contains(Features::AUTH_PSK) {
        return Err(RejectReason::AUTH_REQUIRED);
    }
    // A receiver without groups has none to join.
    // spec: [lanes.unknown-group]
    if h.group != 0 && !features.contains(Features::LANES) {
        return Err(RejectReason::UNKNOWN_GROUP);
    }
    let mut flags = AcceptFlags::empty();
    if local.require_digest {
        // spec: [hs.digest-required]
        if features.digests().is_empty() {
            return Err(RejectReason::DIGEST_REQUIRED);
        }
        flags |= AcceptFlags::DIGEST_REQUIRED;
    }
    // Checked by local.check() above.
    let our_chunk = effective_chunk_size(local.chunk_size).ok_or(RejectReason::MISCONFIGURED)?;
    let mut raw = [0u8; HELLO_LEN];
    raw.copy_from_slice(&hello[..HELLO_LEN]);
    // spec: [hs.minimum]
    let agreed = Agreed {
        features,
        flags,
        chunk_size: their_chunk.min(our_chunk),
        window: h.window.min(local.window),
        sender_ctrl_depth: h.ctrl_depth,
        receiver_ctrl_depth: local.ctrl_depth,
        max_open_files: h.max_open_files.min(local.max_open_files),
        keepalive_ms: h.keepalive_ms.min(local.keepalive_ms),
        join: if features.contains(Features::LANES) {
            h.group
        } else {
            0
        },
        hello: raw,
    };
    let data = u64::from(agreed.chunk_size) * u64::from(agreed.window);
    // spec: [hs.ring-limit]
    if data > local.max_ring_bytes.min(MAX_RING_BYTES) {
        return Err(RejectReason::RING_TOO_LARGE);
    }
    Ok(agreed)
}

/// Why a receiver's accept is unacceptable to the sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReplyError {
    /// Chunk size not a power of two, below the minimum, or above the proposal.
    ChunkSize,
    /// Window zero or above the proposal.
    Window,
    /// Open-file limit zero or above the proposal.
    OpenFiles,
    /// Keepalive interval zero or above the proposal.
    Keepalive,
    /// A feature that was not offered (a bit unknown to this crate included).
    Features,
    /// The receiver's control depth is out of range for the open-file limit.
    CtrlDepth,
    /// The ring's length is not `chunk × window + ctrl_depth × 4096`, or it wraps.
    RingLayout,
    /// Digests required but none agreed.
    DigestRequired,
    /// The sender requires the key proof and the receiver did not agree to `AUTH_PSK`.
    AuthNotAgreed,
    /// The receiver's key proof is wrong: it does not hold the key.
    BadProof,
    /// The sender's own parameters are invalid, or `AUTH_PSK` without a key.
    LocalParams,
    /// The group is 0 with `LANES` agreed, not the one asked to join, or non-zero without
    /// `LANES`.
    Group,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplyError::ChunkSize => {
                "chunk size not a power of two in range, or above the proposal"
            }
            ReplyError::Window => "window zero or above the proposal",
            ReplyError::OpenFiles => "open-file limit zero or above the proposal",
            ReplyError::Keepalive => "keepalive interval zero or above the proposal",
            ReplyError::Features => "agreed features that were not offered",
            ReplyError::CtrlDepth => "receiver control depth out of range",
            ReplyError::RingLayout => "ring length does not match the parameters, or wraps",
            ReplyError::DigestRequired => "digests required but none agreed",
            ReplyError::AuthNotAgreed => "the receiver does not prove the pre-shared key",
            ReplyError::BadProof => "the receiver's key proof is wrong",
            ReplyError::LocalParams => "the sender's own parameters are invalid",
            ReplyError::Group => "transfer group missing, not the one joined, or unexpected",
        })
    }
}

/// Why a sender's handshake failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// The receiver refused.
    Rejected(RejectRepr),
    /// The reply could not be decoded.
    Decode(DecodeError),
    /// The reply decoded but breaks the negotiation rules.
    Invalid(ReplyError),
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

/// Sender: checks the receiver's `reply` against what it proposed (`local`, sent as the
/// `hello` bytes). With `AUTH_PSK` in `local.features`, `key` checks the receiver's proof and
/// yields the sender's ([`Negotiated::sender_proof`]), both over the accept's bytes as
/// received (so every bit of it is covered, also one this crate does not know).
pub fn check_reply(
    reply: &[u8],
    local: &Params,
    hello: &[u8],
    key: Option<&dyn Mac>,
) -> Result<Negotiated, HandshakeError> {
    let invalid = |why| Err(HandshakeError::Invalid(why));
    let wants_auth = local.features.contains(Features::AUTH_PSK);
    if local.check().is_err() || wants_auth != key.is_some() || hello.len() < HELLO_LEN {
        return invalid(ReplyError::LocalParams);
    }
    let a = match HandshakeReply::decode(reply).map_err(HandshakeError::Decode)? {
        HandshakeReply::Reject(r) => return Err(HandshakeError::Rejected(r)),
        HandshakeReply::Accept(a) => a,
    };
    let max_chunk = effective_chunk_size(local.chunk_size).unwrap_or(MIN_CHUNK_SIZE);
    // spec: [hs.accept.params]
    if !a.chunk_size.is_power_of_two() || !(MIN_CHUNK_SIZE..=max_chunk).contains(&a.chunk_size) {
        return invalid(ReplyError::ChunkSize);
    }
    if !(1..=local.window).contains(&a.window) {
        return invalid(ReplyError::Window);
    }
    // spec: [hs.accept.params]
    if !(1..=local.max_open_files).contains(&a.max_open_files) {
        return invalid(ReplyError::OpenFiles);
    }
    if !(1..=local.keepalive_ms).contains(&a.keepalive_ms) {
        return invalid(ReplyError::Keepalive);
    }
    // spec: [hs.accept.features]
    if !local.features.contains(a.features) {
        return invalid(ReplyError::Features);
    }
    // spec: [hs.accept.ring]
    if !(min_ctrl_depth(a.max_open_files)..=MAX_CTRL_DEPTH).contains(&a.ctrl_depth) {
        return invalid(ReplyError::CtrlDepth);
    }
    // chunk ≤ ours and window ≤ ours: the ring is within our own (checked) ring limit.
    // spec: [hs.accept.ring]
    if a.ring.len != ring_len(a.chunk_size, a.window, a.ctrl_depth)
        || a.ring.addr.checked_add(a.ring.len).is_none()
    {
        return invalid(ReplyError::RingLayout);
    }
    // spec: [hs.accept.digest]
    if a.flags.contains(AcceptFlags::DIGEST_REQUIRED) && a.features.digests().is_empty() {
        return invalid(ReplyError::DigestRequired);
    }
    // spec: [lanes.accept-group]
    let group_ok = if a.features.contains(Features::LANES) {
        a.group != 0 && (local.group == 0 || a.group == local.group)
    } else {
        // A join needs the group: a receiver without `LANES` cannot have taken it.
        a.group == 0 && local.group == 0
    };
    // spec: [lanes.accept-group]
    if !group_ok {
        return invalid(ReplyError::Group);
    }
    let mut proof = None;
    if let Some(key) = key {
        // spec: [psk.receiver-proof]
        if !a.features.contains(Features::AUTH_PSK) {
            return invalid(ReplyError::AuthNotAgreed);
        }
        // The decode read a whole accept, so the reply holds ACCEPT_LEN bytes.
        let received =
            reply
                .get(..ACCEPT_LEN)
                .ok_or(HandshakeError::Decode(DecodeError::Truncated {
                    need: ACCEPT_LEN,
                    got: reply.len(),
                }))?;
        let hello = &hello[..HELLO_LEN];
        let expected = receiver_proof(key, hello, &received[..ACCEPT_PROOF_OFFSET]);
        // spec: [psk.receiver-proof]
        if !proofs_equal(&expected, &a.proof) {
            return invalid(ReplyError::BadProof);
        }
        proof = Some(sender_proof(key, hello, received));
    }
    Ok(Negotiated {
        features: a.features,
        flags: a.flags,
        chunk_size: a.chunk_size,
        window: a.window,
        sender_ctrl_depth: local.ctrl_depth,
        receiver_ctrl_depth: a.ctrl_depth,
        max_open_files: a.max_open_files,
        keepalive_ms: a.keepalive_ms,
        ring: a.ring,
        sender_proof: proof,
        group: a.group,
    })
}
