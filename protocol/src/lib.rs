//! # rdmaft-protocol
//!
//! The sans-IO core of rdmaft, a file mover over RDMA: the wire format, the handshake with its
//! buffer-size negotiation, and the state machines of the two roles. No I/O, no clock, no
//! threads, no allocator: the driver (crate `rdmaft`) feeds in what happened on the
//! connection, with the time, and carries out what comes out. The specification, enough to
//! write a compatible peer in C, is `PROTOCOL.md` beside this crate.
//!
//! ## Shape of a session
//! 1. **Handshake** in RDMA CM private data: the sender's [`HelloRepr`] (≤ 56 bytes) proposes
//!    chunk size, window and features; the receiver [`negotiate()`]s (minimum of both sizes),
//!    registers a ring of `window × chunk` bytes and answers with an accept carrying the ring,
//!    or a reject with a [`RejectReason`]. The sender checks it with [`check_reply`].
//! 2. **Files**: the sender offers a file header, the receiver answers accept / resume / reject,
//!    the sender RDMA-WRITE-WITH-IMMs chunk `seq` into ring slot `seq % window` (imm = `seq`),
//!    the receiver returns cumulative credits as it consumes slots, the sender ends the file
//!    with its length and digest, the receiver verifies and answers with a result.
//! 3. **Goodbye** both ways, or an error message from either side.
//!
//! ## Driving a state machine
//! [`Sender`] and [`Receiver`] take inputs through `handle_*` methods and application
//! commands, and give outputs through `poll_output`. The rule (after str0m): *after every
//! input, drain `poll_output` until it returns `None`, then arm a timer for `poll_timeout`*.
//!
//! ```
//! use rdmaft_protocol::{Instant, Sender, SenderOutput, CtrlBuf, CTRL_MSG_MAX};
//! fn drain(sender: &mut Sender) {
//!     let mut buf: CtrlBuf = [0; CTRL_MSG_MAX];
//!     while let Some(out) = sender.poll_output(&mut buf) {
//!         match out {
//!             SenderOutput::Transmit(n) => { /* post a SEND of buf[..n] */ }
//!             SenderOutput::Read(r) => { /* read file data into local slot r.slot */ }
//!             SenderOutput::Write(w) => { /* post RDMA WRITE WITH IMM w.imm */ }
//!             SenderOutput::Event(e) => { /* tell the application */ }
//!         }
//!     }
//!     let _deadline: Option<Instant> = sender.poll_timeout();
//! }
//! ```
//!
//! ## Errors
//! Peer bytes never panic: decoding returns a [`DecodeError`], a protocol breach a
//! [`Violation`] (the machine fails and queues an error message for the peer), local misuse a
//! [`UsageError`] (nothing changes).
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// derive(arbitrary::Arbitrary) expands to `::std` paths (a thread-local recursion guard); the
// feature is for fuzzing only, so the library itself stays no_std.
#[cfg(feature = "arbitrary")]
extern crate std;

mod chunks;
mod codes;
mod ending;
mod error;
mod name;
mod negotiate;
mod queue;
mod receiver;
mod sender;
mod time;
pub mod wire;

pub use codes::{ErrorCode, FileRejectReason, FileStatus, RejectReason};
pub use error::{Error, ErrorText, Failure, UsageError, Violation};
pub use name::{validate_name, NameError, MAX_COMPONENT_LEN, MAX_NAME_LEN};
pub use negotiate::{
    check_reply, negotiate, reject, Agreed, HandshakeError, Negotiated, Params, MAX_CHUNK_SIZE,
    MAX_CTRL_DEPTH, MAX_OPEN_FILES, MAX_RING_BYTES, MAX_WINDOW, MIN_CHUNK_SIZE,
    MIN_RECEIVER_CTRL_DEPTH, MIN_SENDER_CTRL_DEPTH,
};
pub use receiver::{ChunkArrival, FileOffer, Receiver, ReceiverEvent, ReceiverOutput};
pub use sender::{ChunkRead, ChunkWrite, FileInfo, Sender, SenderEvent, SenderOutput};
pub use time::Instant;
pub use wire::{
    Control, CtrlBuf, DecodeError, Digest, DigestKind, Features, FileAnswer, HandshakeReply,
    HelloRepr, RingInfo, CTRL_MSG_MAX, MAGIC, VERSION,
};
