//! # rdmaft-protocol
//!
//! The sans-IO core of rdmaft, a file mover over RDMA: the wire format, the handshake with its
//! negotiation, and the state machines of the two roles. No I/O, no clock, no threads, no
//! allocator: the driver (crate `rdmaft`) feeds in what happened on the connection, with the
//! time, and carries out what comes out. The specification, enough to write a compatible peer
//! in C, is `PROTOCOL.md` beside this crate.
//!
//! ## Shape of a session
//! 1. **Handshake** in RDMA CM private data: the sender's [`HelloRepr`] (≤ 56 bytes) proposes
//!    chunk size, window, open-file limit, keepalive and features; the receiver
//!    [`negotiate()`]s (minimum of both), registers a ring of data slots and control slots,
//!    and answers with an accept carrying the ring (or a reject with a [`RejectReason`]). The
//!    sender checks it with [`check_reply`]. With a pre-shared key both sides prove it
//!    ([`Mac`]) without an extra round trip.
//! 2. **Files**: everything the sender says is an RDMA WRITE WITH IMMEDIATE: chunk `seq`
//!    into data slot `seq % window`, control messages into the control ring; the [`Imm`]
//!    tells them apart. The receiver answers each header (accept / resume / reject), returns
//!    cumulative credits as it consumes slots, and gives each file a result after its end
//!    (length and digest) or its abort; it SENDs its messages. Many files are open at once,
//!    so small files pipeline.
//! 3. **Goodbye** both ways, or an error message from either side.
//!
//! ## Driving a state machine
//! [`Sender`] and [`Receiver`] take inputs through `handle_*` methods and application
//! commands, and give outputs through `poll_output`. The rule (after str0m): *after every
//! input, drain `poll_output` until it returns `None`, then arm a timer for `poll_timeout`*.
//! Their per-file tables live in caller-provided [`Storage`] sized for the open-file limit.
//!
//! With `BATCH` agreed, control messages travel several to a write or SEND
//! ([`wire::Batch`]). Two more rules then: hand the receiver's [`Receiver::handle_control`]
//! the same bytes again while [`Receiver::control_pending`] says a batch has more; and to
//! batch what arrives together, `set_corked(true)` before feeding one poll's worth of
//! inputs and `set_corked(false)` (then drain) after them — corked, a batch with room waits.
//! Without `BATCH` both are no-ops.
//!
//! ```
//! use rdmaft_protocol::{ArrayStorage, CtrlBuf, Instant, Sender, SenderOutput, CTRL_MSG_MAX};
//! fn drain(sender: &mut Sender<ArrayStorage<64, 1024>>, now: Instant) {
//!     let mut buf: CtrlBuf = [0; CTRL_MSG_MAX];
//!     while let Some(out) = sender.poll_output(now, &mut buf) {
//!         match out {
//!             SenderOutput::Control(c) => { /* WRITE WITH IMM buf[..c.len] to c.remote_addr */ }
//!             SenderOutput::Ack(imm) => { /* zero-length WRITE WITH IMM */ }
//!             SenderOutput::Read(r) => { /* read file data into local slot r.slot */ }
//!             SenderOutput::Write(w) => { /* WRITE WITH IMM of local slot w.slot */ }
//!             SenderOutput::Event(e) => { /* tell the application */ }
//!         }
//!     }
//!     let _deadline: Option<Instant> = sender.poll_timeout();
//! }
//! ```
//!
//! ## Errors
//! Peer bytes never panic: decoding returns a [`DecodeError`], a protocol breach a
//! [`Violation`] (the machine fails and queues an error message for the peer, with the
//! violation's number), local misuse a [`UsageError`] (nothing changes).
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
// derive(arbitrary::Arbitrary) expands to `::std` paths (a thread-local recursion guard); the
// feature is for fuzzing only, so the library itself stays no_std.
#[cfg(feature = "arbitrary")]
extern crate std;

mod auth;
mod chunks;
mod codes;
mod ending;
mod error;
mod flow;
mod liveness;
mod name;
mod negotiate;
mod open_names;
mod queue;
mod receiver;
mod sender;
mod siphash;
mod storage;
#[cfg(test)]
mod tests;
mod time;
pub mod wire;

pub use auth::{Mac, RECEIVER_LABEL, SENDER_LABEL};
pub use chunks::MAX_SESSION_CHUNKS;
pub use codes::{AbortReason, ErrorCode, FileRejectReason, FileStatus, RejectReason};
pub use error::{Error, ErrorText, Failure, UsageError, Violation};
pub use name::{validate_name, NameError, MAX_COMPONENT_LEN, MAX_NAME_LEN, RESERVED_PREFIX};
pub use negotiate::{
    check_reply, effective_chunk_size, min_ctrl_depth, negotiate, reject, Agreed, HandshakeError,
    Negotiated, ParamError, Params, ReplyError, CTRL_DEPTH_SLACK, DEFAULT_KEEPALIVE_MS,
    DEFAULT_OPEN_FILES, MAX_CHUNK_SIZE, MAX_CTRL_DEPTH, MAX_KEEPALIVE_MS, MAX_OPEN_FILES,
    MAX_RING_BYTES, MAX_WINDOW, MIN_CHUNK_SIZE,
};
pub use open_names::NameSlot;
pub use receiver::{ChunkArrival, FileOffer, Incoming, Receiver, ReceiverEvent, ReceiverOutput};
pub use sender::{
    ChunkRead, ChunkWrite, ControlWrite, FileInfo, Sender, SenderEvent, SenderOutput,
};
#[cfg(feature = "alloc")]
pub use storage::VecStorage;
pub use storage::{ArrayStorage, FileSlot, Storage, NAME_SLOTS_PER_FILE};
pub use time::Instant;
pub use wire::{
    AcceptFlags, Changes, Control, CtrlBuf, DecodeError, Digest, DigestKind, EntryKind, Features,
    Field, FileAnswer, HandshakeReply, HelloRepr, Imm, Part, RingInfo, SyncCheck, CTRL_MSG_MAX,
    MAGIC, MAX_LINK_TARGET, MAX_PART_SHIFT, MIN_PART_SHIFT, RECEIVER_MSG_MAX, VERSION,
};

use core::time::Duration;

/// Local settings of a state machine that the peer does not see.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Fail the session when nothing arrived from the peer for this long (`None`: never).
    /// Must be at least two keepalive intervals, or a live peer could be failed.
    pub idle_timeout: Option<Duration>,
    /// Key of the open-name table's hashes; pick it at random for each session so that a
    /// peer cannot craft colliding names.
    pub name_hash_key: [u8; 16],
}

impl Config {
    /// Checks the settings against the agreed parameters.
    pub fn check(&self, neg: &Negotiated) -> Result<(), ParamError> {
        let keepalive = Duration::from_millis(u64::from(neg.keepalive_ms));
        match self.idle_timeout {
            // spec: [live.timeout-min]
            Some(idle) if idle < keepalive * 2 => Err(ParamError::IdleTimeout),
            _ => Ok(()),
        }
    }
}
