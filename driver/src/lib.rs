//! rdmaft: move files between hosts over RDMA.
//!
//! The crate maps the sans-IO state machines of `rdmaft-protocol` onto RDMA CM and verbs.
//! So far it holds the foundation:
//!
//! - [`verbs`]: safe RAII wrappers over libibverbs / librdmacm (device list, PD, CQ and
//!   completion channel, registered memory, CM ids and events, RC queue pairs). All of the
//!   crate's `unsafe` code lives there.
//! - [`session`]: connection set-up with the rdmaft handshake: a [`session::Listener`] that
//!   negotiates and accepts (or rejects, with a reason) each request, and [`session::connect`]
//!   for the sender; each yields a connection owning its QP, CQ and registered memory.
//! - [`smoke`]: a loopback check that a device really moves bytes (SEND/RECV and RDMA WRITE
//!   WITH IMM through an rdma_cm connection), used by `rdmaft-smoke` and the Soft-RoCE tests.
//! - [`Error`]: the one error type; the library never panics on an RDMA failure and never
//!   exits the process.
#![deny(unsafe_code)]

mod deadline;
mod error;
pub mod session;
pub mod smoke;
#[allow(unsafe_code)]
pub mod verbs;

pub use error::Error;
/// The sans-IO protocol crate, re-exported: its types ([`protocol::Params`],
/// [`protocol::Negotiated`], [`protocol::RejectReason`], ...) are part of this API.
pub use rdmaft_protocol as protocol;
