//! # rdmaft
//!
//! Move files between hosts over RDMA (RoCE and InfiniBand through librdmacm and
//! libibverbs), with the `rdmaft` protocol (`rdmaft-protocol`, re-exported as [`protocol`]).
//!
//! ## Sending
//! ```no_run
//! use rdmaft::{send, SendOptions};
//! let handle = send("10.77.0.1:15000".parse()?, vec!["data/".into()], SendOptions::default())?;
//! // ... handle.progress() from any thread, handle.cancel() to stop ...
//! let report = handle.wait()?;
//! println!("{} bytes in {:?}, all verified: {}", report.bytes, report.elapsed, report.all_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Receiving
//! ```no_run
//! use rdmaft::{Receiver, ReceiverOptions};
//! use std::sync::Arc;
//! let mut options = ReceiverOptions::new("10.77.0.1:15000".parse()?, "/srv/incoming".into());
//! options.on_file = Some(Arc::new(|f| println!("{}: {:?}", f.name, f.outcome)));
//! let receiver = Receiver::start(options)?;
//! // ... serves any number of senders at once ...
//! receiver.stop();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Threads
//! A send runs on its own thread plus a reader thread, and a thread and a reader per further
//! lane; it calls `on_file` on one of them at a time.
//! A receiver runs a listener thread and, per connection, a connection thread (which calls
//! the callbacks) and a writer thread. `SendHandle::cancel` and `Receiver::stop` may be
//! called from the callbacks; they do not wait for the calling thread.
//!
//! ## Errors
//! Every failure is an [`Error`] value naming the failed verb and errno where there is one;
//! the library never exits the process and never panics on peer input.
#![deny(unsafe_code)]

mod api;
#[cfg(feature = "capi")]
#[allow(unsafe_code)]
pub mod capi;
mod connections;
mod deadline;
mod digest;
mod engine;
mod error;
mod fd_limit;
pub mod fs;
mod groups;
mod handoff;
mod key;
mod numa;
mod permits;
mod report;
#[cfg(feature = "internals")]
pub mod session;
// Without `internals`, what only the end-to-end tests use is unused.
#[cfg(not(feature = "internals"))]
#[allow(dead_code)]
mod session;
mod sync;
#[cfg(feature = "internals")]
#[allow(unsafe_code)]
pub mod verbs;
#[cfg(not(feature = "internals"))]
#[allow(unsafe_code, dead_code)]
mod verbs;

pub use api::defaults::{
    default_lanes, DEFAULT_CHUNK_SIZE, DEFAULT_IDLE_TIMEOUT, DEFAULT_PART_SIZE, DEFAULT_WINDOW,
    MAX_DEFAULT_LANES,
};
pub use api::loopback::{loopback_send, loopback_transfer, LoopbackReceiver};
pub use api::ports;
pub use api::recv::{
    ConnectionCallback, FailureCallback, Receiver, ReceiverLimits, ReceiverOptions, ReceiverStats,
};
pub use api::send::{send, SendCanceller, SendHandle, SendOptions};
pub use api::subnet::Subnet;
/// A sender that writes anything (for the hostile-peer tests; not a stable API).
#[cfg(feature = "internals")]
pub use engine::raw_peer::RawSender;
/// A receiver that answers anything (for the hostile-peer tests; not a stable API).
#[cfg(feature = "internals")]
pub use engine::raw_receiver::{AcceptMaterial, RawListener, RawReceiver, RawRequest, RawWrite};
pub use engine::recv::{
    ConnectionReport, ReceiveCallback, ReceivedCounts, ReceivedFile, ReceivedOutcome,
};
pub use engine::send::{
    FileCallback, FileOutcome, FileReport, Progress, ProgressSnapshot, SendCounts, SendReport,
    SyncOptions,
};
pub use error::Error;
pub use fs::dest::Existing;
pub use fs::shard::{InvalidShard, Shard};
pub use key::Key;
/// The sans-IO protocol crate, re-exported.
pub use rdmaft_protocol as protocol;
pub use report::MAX_LISTED_FAILURES;
pub use session::DEFAULT_PORT;
pub use verbs::registered_bytes;
