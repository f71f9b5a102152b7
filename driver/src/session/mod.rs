//! Connection set-up: the rdmaft handshake carried in RDMA CM private data, and the verbs
//! resources of one connection, for both roles (PROTOCOL.md §2, §3.4).
//!
//! - Receiver: a [`Listener`] takes connection requests; each [`Request`] moves to an event
//!   channel of its own and is accepted (or refused) on the connection's own thread, so no
//!   sender's handshake waits for another's. Accepting negotiates the hello, registers the
//!   ring (data slots and control slots, remote write only), posts
//!   `window + ctrl_depth + 2` bufferless receives, answers, and waits for ESTABLISHED.
//! - Sender: [`connect`] resolves the address, posts its `ctrl_depth` receive buffers,
//!   connects with the hello, checks the accept (and the receiver's key proof), and
//!   registers its slots and control send buffers at the *negotiated* sizes.
//!
//! Every wait is bounded. Window and depths are clamped to what the device allows before they
//! are proposed. Each connection has its own protection domain (PROTOCOL.md §6.6).

mod connect;
mod endpoint;
mod listener;

// `connect` itself serves the end-to-end tests and the raw peers (`internals`).
pub(crate) use connect::connect_with;
#[cfg_attr(not(feature = "internals"), allow(unused_imports))]
pub use connect::{connect, SenderConn};
#[allow(unused_imports)]
pub use endpoint::next_event;
pub use listener::{Listener, ReceiverConn, Request};

use crate::verbs::DeviceLimits;
use crate::Error;
use rdmaft_protocol::{min_ctrl_depth, Params, MAX_OPEN_FILES};
use std::time::Duration;

/// The port `send` and `recv` use unless told otherwise (the original library's examples).
pub const DEFAULT_PORT: u16 = 15000;
/// How long a receiver gives one connection request to complete its handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Receives a receiver keeps posted beyond `window + ctrl_depth`: the sender's pure acks in
/// flight (PROTOCOL.md §5.2).
pub(crate) const ACK_RECEIVES: u32 = 2;

/// Checks local parameters against the protocol limits, with a message that names the bad
/// value (the protocol's own check only gives a code).
pub(crate) fn check_params(what: &'static str, p: &Params) -> Result<(), Error> {
    p.check()
        .map_err(|e| Error::invalid(what, format!("{e} ({p:?})")))
}

/// Lowers `p`'s window and depths to what a device with `limits` can hold: a receiver needs
/// `window + ctrl_depth + 2` receives, a sender `ctrl_depth` receives and room to send.
pub(crate) fn clamp_to_device(p: &mut Params, limits: &DeviceLimits) {
    let max_wr = limits.max_qp_wr.min(limits.max_cqe / 2).max(64);
    // Depths: at least their floor for a reduced open-file limit, at most half the queue.
    let half = u16::try_from(max_wr / 2).unwrap_or(u16::MAX);
    if p.ctrl_depth > half {
        p.ctrl_depth = half;
        let open = half
            .saturating_sub(min_ctrl_depth(0))
            .clamp(1, MAX_OPEN_FILES);
        p.max_open_files = p.max_open_files.min(open);
    }
    let room = max_wr
        .saturating_sub(u32::from(p.ctrl_depth) + ACK_RECEIVES)
        .max(1);
    p.window = p.window.min(room);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdmaft_protocol::Features;

    #[test]
    fn parameters_are_clamped_to_the_device() {
        let mut p = Params::new(Features::empty(), 1 << 20, 4096);
        let roomy = DeviceLimits {
            max_qp_wr: 1 << 15,
            max_cqe: 1 << 20,
            max_sge: 4,
            max_mr_size: u64::MAX,
        };
        let before = p;
        clamp_to_device(&mut p, &roomy);
        assert_eq!(p, before, "nothing to clamp");
        let small = DeviceLimits {
            max_qp_wr: 100,
            ..roomy
        };
        clamp_to_device(&mut p, &small);
        assert_eq!(p.ctrl_depth, 50);
        assert_eq!(p.max_open_files, 42);
        assert_eq!(p.window, 100 - 50 - 2);
        assert!(p.check().is_ok(), "{p:?}");
    }

    #[test]
    fn bad_local_params_are_named() {
        let p = Params::new(Features::empty(), 16, 4);
        let err = check_params("connect", &p).unwrap_err().to_string();
        assert!(err.contains("chunk size out of range"), "{err}");
    }
}
