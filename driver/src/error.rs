//! The driver's error type.
//!
//! Every failure is returned to the caller as an [`Error`]; the library never panics on an
//! RDMA failure and never exits the process (the C original called `exit()` on any error).

use rdmaft_protocol::{HandshakeError, RejectReason};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Everything that can go wrong in the driver.
///
/// Failed verbs keep the name of the call and the OS error (errno) it reported, so a message
/// like `rdma_resolve_route failed: No such device (os error 19)` points straight at the cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A libibverbs / librdmacm call failed.
    #[error("{verb} failed: {source}")]
    Verb {
        /// The C function that failed, e.g. `ibv_alloc_pd`.
        verb: &'static str,
        /// The errno it reported.
        #[source]
        source: io::Error,
    },

    /// The host has no RDMA device at all.
    #[error("no RDMA devices found (no RDMA NIC or no kernel RDMA support; for Soft-RoCE load rdma_rxe and add an rxe link)")]
    NoDevices,

    /// The requested device is not in the device list.
    #[error(
        "RDMA device {wanted:?} not found (available: {})",
        list_or_none(available)
    )]
    DeviceNotFound {
        /// The name that was asked for.
        wanted: String,
        /// The names that do exist.
        available: Vec<String>,
    },

    /// A wait for an event or a completion ran past its deadline.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was being waited for.
        what: String,
        /// How long was waited.
        after: Duration,
    },

    /// The connection manager delivered an event other than the one the caller needed.
    #[error(
        "expected RDMA CM event {expected}, got {got} (status {status}{})",
        reason_suffix(reason)
    )]
    UnexpectedCmEvent {
        /// The event that was expected.
        expected: &'static str,
        /// The event that arrived.
        got: &'static str,
        /// The event's status field (a negative errno, or a transport reject reason).
        status: i32,
        /// The errno text for `status`, when it is one.
        reason: Option<String>,
    },

    /// A work request completed with an error status.
    #[error("work request {wr_id} completed with status {status} ({status_text}), vendor error {vendor_err:#x}")]
    WorkCompletion {
        /// The caller's id of the work request.
        wr_id: u64,
        /// The raw `ibv_wc_status`.
        status: u32,
        /// `ibv_wc_status_str` of the status.
        status_text: String,
        /// The provider-specific error code.
        vendor_err: u32,
    },

    /// An argument was rejected before it reached the verbs (range outside a buffer, private
    /// data too long, resources from two different devices, ...).
    #[error("invalid argument to {what}: {why}")]
    InvalidArgument {
        /// The operation that refused the argument.
        what: &'static str,
        /// Why.
        why: String,
    },

    /// The receiver turned our handshake down; `reason` is the code from its reject message.
    #[error(
        "the receiver rejected the connection: {reason} (reject code {}, receiver speaks protocol version ≤ {max_version})",
        reason.0
    )]
    HandshakeRejected {
        /// Why, as the receiver said.
        reason: RejectReason,
        /// The highest protocol version the receiver speaks.
        max_version: u16,
    },

    /// A listener refused one connection request (and told the peer why); the listener
    /// itself is fine and keeps serving.
    #[error(
        "rejected the connection request from {}: {reason}",
        peer_or_unknown(peer)
    )]
    RequestRejected {
        /// The peer that asked, when known.
        peer: Option<SocketAddr>,
        /// The reason sent back in the reject.
        reason: RejectReason,
    },

    /// The receiver's handshake reply could not be decoded or breaks the negotiation rules.
    #[error("handshake with the receiver failed: {0}")]
    Handshake(HandshakeError),

    /// Connection set-up failed in the connection manager, with no rdmaft reply to explain it
    /// (no address route, nobody listening, no answer).
    #[error(
        "connection to {addr} failed: RDMA CM event {event} (status {status}{}){}",
        reason_suffix(reason),
        hint_suffix(hint)
    )]
    ConnectFailed {
        /// Where we tried to connect.
        addr: SocketAddr,
        /// The CM event that ended the attempt, e.g. `REJECTED`.
        event: &'static str,
        /// The event's status (a negative errno, or a transport reject reason).
        status: i32,
        /// The errno text for `status`, when it is one.
        reason: Option<String>,
        /// What usually causes it.
        hint: &'static str,
    },

    /// The listening id itself failed (its event channel broke, its device went away): unlike
    /// a failed request, the listener cannot serve any more.
    #[error("the listener failed: {0}")]
    ListenerFailed(Box<Error>),

    /// The caller cancelled before the connection was up (`SendHandle::cancel`, Ctrl-C).
    #[error("cancelled while connecting")]
    Cancelled,

    /// A check on data received from the peer failed (the smoke test's byte-for-byte checks).
    #[error("check failed: {0}")]
    Check(String),

    /// Registering memory failed because the locked-memory limit is too low.
    #[error(
        "cannot register {needed} bytes of memory for RDMA: the locked-memory limit \
         (RLIMIT_MEMLOCK, `ulimit -l`) is {limit} bytes; raise it (e.g. `ulimit -l unlimited`, \
         or memlock in /etc/security/limits.conf) or lower the buffer size or window"
    )]
    MemlockLimit {
        /// The soft limit, in bytes.
        limit: u64,
        /// The bytes the registration needed.
        needed: u64,
    },

    /// The connection broke under a transfer (the peer went away, or the QP failed).
    #[error("connection to {peer} lost: {detail}")]
    ConnectionLost {
        /// The peer.
        peer: String,
        /// What was seen.
        detail: String,
    },

    /// A local file could not be used (a source, the destination directory, a key file).
    #[error("{what} {}: {source}", path.display())]
    File {
        /// What the file is for, e.g. `source file`.
        what: &'static str,
        /// The path.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A thread could not be started.
    #[error("could not start the {what} thread: {source}")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A call that would wait for the thread it runs on (e.g. waiting for a send from its own
    /// callback).
    #[error("would deadlock: {0}")]
    WouldDeadlock(&'static str),

    /// A helper thread panicked (a bug; reported instead of propagating the panic).
    #[error("{0} thread panicked")]
    ThreadPanicked(&'static str),
}

impl Error {
    /// Builds [`Error::Verb`] from `errno` as left by the failed call.
    pub(crate) fn last_os(verb: &'static str) -> Self {
        Error::Verb {
            verb,
            source: io::Error::last_os_error(),
        }
    }

    /// Builds [`Error::Verb`] from a call that returns the errno value itself (`ibv_post_send`
    /// and friends). Providers differ in the sign (`ENOMEM` or `-ENOMEM`), so either is taken
    /// as the errno; only a 0 return (not a failure) falls back to `errno`.
    pub(crate) fn from_ret(verb: &'static str, ret: i32) -> Self {
        let source = if ret != 0 {
            // unsigned_abs of i32::MIN does not fit back; any value is fine for an unknown
            // code, and the cast cannot panic.
            io::Error::from_raw_os_error(ret.unsigned_abs() as i32)
        } else {
            io::Error::last_os_error()
        };
        Error::Verb { verb, source }
    }

    /// Builds [`Error::Verb`] for a call that returns a provider-specific failure code that is
    /// not an errno (a negative `ibv_poll_cq` result).
    pub(crate) fn provider(verb: &'static str, code: i32) -> Self {
        Error::Verb {
            verb,
            source: io::Error::other(format!("provider error {code}")),
        }
    }

    /// Builds [`Error::File`].
    pub(crate) fn file(what: &'static str, path: &std::path::Path, source: io::Error) -> Self {
        Error::File {
            what,
            path: path.to_owned(),
            source,
        }
    }

    /// Builds [`Error::InvalidArgument`].
    pub(crate) fn invalid(what: &'static str, why: impl Into<String>) -> Self {
        Error::InvalidArgument {
            what,
            why: why.into(),
        }
    }

    /// Builds [`Error::Timeout`].
    pub(crate) fn timeout(what: impl Into<String>, after: Duration) -> Self {
        Error::Timeout {
            what: what.into(),
            after,
        }
    }

    /// True for [`Error::Timeout`]; used to pick the root cause when two threads both fail.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

fn peer_or_unknown(peer: &Option<SocketAddr>) -> String {
    match peer {
        Some(p) => p.to_string(),
        None => "an unknown peer".to_owned(),
    }
}

fn hint_suffix(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!(": {hint}")
    }
}

fn reason_suffix(reason: &Option<String>) -> String {
    match reason {
        Some(r) => format!(": {r}"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdmaft_protocol::ReplyError;

    #[test]
    fn verb_error_names_the_call_and_the_errno() {
        let e = Error::from_ret("ibv_post_send", libc::ENOMEM);
        let text = e.to_string();
        assert!(text.starts_with("ibv_post_send failed: "), "{text}");
        assert!(text.contains("os error 12"), "{text}");
    }

    #[test]
    fn negative_returns_are_errnos_too() {
        let e = Error::from_ret("ibv_post_recv", -libc::ENOMEM).to_string();
        assert!(e.starts_with("ibv_post_recv failed: "), "{e}");
        assert!(e.contains("os error 12"), "{e}");
        // No panic for the extreme value.
        let _ = Error::from_ret("ibv_post_send", i32::MIN).to_string();
    }

    #[test]
    fn poll_cq_failures_are_provider_codes() {
        let e = Error::provider("ibv_poll_cq", -2);
        assert_eq!(e.to_string(), "ibv_poll_cq failed: provider error -2");
    }

    #[test]
    fn device_not_found_lists_the_alternatives() {
        let e = Error::DeviceNotFound {
            wanted: "mlx5_9".into(),
            available: vec!["rxe0".into(), "mlx5_0".into()],
        };
        assert_eq!(
            e.to_string(),
            "RDMA device \"mlx5_9\" not found (available: rxe0, mlx5_0)"
        );
        let none = Error::DeviceNotFound {
            wanted: "rxe0".into(),
            available: vec![],
        };
        assert!(none.to_string().ends_with("(available: none)"));
    }

    #[test]
    fn handshake_errors_say_who_refused_and_why() {
        let e = Error::HandshakeRejected {
            reason: RejectReason::BAD_MAGIC,
            max_version: 1,
        };
        let text = e.to_string();
        assert!(
            text.starts_with("the receiver rejected the connection: not an rdmaft hello"),
            "{text}"
        );
        assert!(text.contains("reject code 1"), "{text}");
        let e = Error::RequestRejected {
            peer: Some("10.77.0.1:5000".parse().unwrap()),
            reason: RejectReason::UNSUPPORTED_VERSION,
        };
        assert_eq!(
            e.to_string(),
            "rejected the connection request from 10.77.0.1:5000: unsupported protocol version"
        );
        let e = Error::Handshake(HandshakeError::Invalid(ReplyError::Window));
        assert_eq!(
            e.to_string(),
            "handshake with the receiver failed: invalid handshake reply: window zero or above \
             the proposal"
        );
        let e = Error::ConnectFailed {
            addr: "10.77.0.1:7471".parse().unwrap(),
            event: "REJECTED",
            status: 8,
            reason: None,
            hint: "nobody listening",
        };
        assert_eq!(
            e.to_string(),
            "connection to 10.77.0.1:7471 failed: RDMA CM event REJECTED (status 8): nobody \
             listening"
        );
    }

    #[test]
    fn cm_event_error_shows_the_reason() {
        let e = Error::UnexpectedCmEvent {
            expected: "ESTABLISHED",
            got: "REJECTED",
            status: 28,
            reason: None,
        };
        assert_eq!(
            e.to_string(),
            "expected RDMA CM event ESTABLISHED, got REJECTED (status 28)"
        );
    }
}
