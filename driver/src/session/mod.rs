//! Connection set-up: the rdmaft handshake carried in RDMA CM private data, and the verbs
//! resources of one connection. The file transfer runs on what this module sets up.
//!
//! - Receiver: [`Listener::bind`] an address, then [`Listener::accept`] connections one by
//!   one. Each request's hello is [`negotiate`](rdmaft_protocol::negotiate)d against the
//!   listener's [`Params`]; a bad hello is rejected with a reason code (the caller gets
//!   [`Error::RequestRejected`] and the listener keeps serving), a good one gets a receive
//!   ring of `chunk × window` bytes, a QP with `window + ctrl_depth` control receives posted,
//!   and an accept that carries the ring. The result is an [`Accepted`] connection.
//! - Sender: [`connect`] resolves the address, creates its QP with `ctrl_depth` control
//!   receives posted, sends the hello in the connect request, checks the receiver's reply
//!   ([`check_reply`](rdmaft_protocol::check_reply)) and registers its local slot area of the
//!   *negotiated* `chunk × window` bytes (allocated after the reply, so a receiver that
//!   lowers the sizes also lowers the sender's memory). The result is a [`Connected`]
//!   connection; a reject comes back as [`Error::HandshakeRejected`] with the reason.
//!
//! Every wait is bounded: [`Listener::accept`] by its timeout (then, per request, by the
//! listener's handshake timeout), [`connect`] by its timeout as a whole, and
//! `disconnect`/`wait_disconnected` by theirs. Dropping a connection disconnects it without
//! waiting and frees everything children first: QP, registered memory, CQ, completion
//! channel, PD, CM id, event channel.
//!
//! ```no_run
//! use rdmaft::session::{self, Listener};
//! use std::time::Duration;
//!
//! let t = Duration::from_secs(10);
//! let listener = Listener::bind("10.77.0.1:0".parse()?, session::receiver_params(64 << 10, 16))?;
//! let addr = listener.local_addr();
//! let server = std::thread::spawn(move || listener.accept(t));
//! let conn = session::connect(addr, session::sender_params(1 << 20, 4), t)?;
//! assert_eq!(conn.negotiated().chunk_size, 64 << 10);
//! let accepted = server.join().expect("listener thread")?;
//! assert_eq!(accepted.negotiated().ring, conn.negotiated().ring);
//! conn.disconnect(t)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod connect;
mod endpoint;
mod listener;

pub use connect::{connect, Connected};
pub use listener::{Accepted, Listener};

use crate::Error;
use rdmaft_protocol::{
    Features, Params, MAX_CHUNK_SIZE, MAX_CTRL_DEPTH, MAX_WINDOW, MIN_CHUNK_SIZE,
    MIN_RECEIVER_CTRL_DEPTH, MIN_SENDER_CTRL_DEPTH,
};
use std::time::Duration;

/// The port `send` and `recv` use unless told otherwise.
pub const DEFAULT_PORT: u16 = 7471;
/// Default buffer (chunk) size: 1 MiB.
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;
/// Default window: chunks in flight.
pub const DEFAULT_WINDOW: u32 = 16;
/// Control receive buffers a sender keeps posted (the receiver's messages to it).
pub const SENDER_CTRL_DEPTH: u16 = 16;
/// Control receive buffers a receiver keeps posted besides the `window` the chunks consume.
pub const RECEIVER_CTRL_DEPTH: u16 = if MIN_RECEIVER_CTRL_DEPTH > 16 {
    MIN_RECEIVER_CTRL_DEPTH
} else {
    16
};
/// Capabilities this driver offers. None yet: the features (resume, digests) are offered
/// once the data path implements them.
pub const FEATURES: Features = Features::empty();
/// How long a listener gives one connection request to complete its handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A sender's proposal: `chunk_size` and `window` with this driver's control depth and
/// features. [`connect`] checks the values.
pub fn sender_params(chunk_size: u32, window: u32) -> Params {
    Params {
        features: FEATURES,
        chunk_size,
        window,
        ctrl_depth: SENDER_CTRL_DEPTH,
    }
}

/// A receiver's limits: `chunk_size` and `window` with this driver's control depth and
/// features. [`Listener::bind`] checks the values.
pub fn receiver_params(chunk_size: u32, window: u32) -> Params {
    Params {
        features: FEATURES,
        chunk_size,
        window,
        ctrl_depth: RECEIVER_CTRL_DEPTH,
    }
}

/// Checks local parameters against the protocol limits, with a message that names the bad
/// value and the allowed range (the protocol's own check only gives a reason code).
pub(crate) fn check_params(what: &'static str, p: &Params, min_ctrl: u16) -> Result<(), Error> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&p.chunk_size) {
        return Err(Error::invalid(
            what,
            format!(
                "buffer (chunk) size {} B is outside {MIN_CHUNK_SIZE} ..= {MAX_CHUNK_SIZE} B",
                p.chunk_size
            ),
        ));
    }
    if !(1..=MAX_WINDOW).contains(&p.window) {
        return Err(Error::invalid(
            what,
            format!("window {} is outside 1 ..= {MAX_WINDOW}", p.window),
        ));
    }
    if !(min_ctrl..=MAX_CTRL_DEPTH).contains(&p.ctrl_depth) {
        return Err(Error::invalid(
            what,
            format!(
                "control depth {} is outside {min_ctrl} ..= {MAX_CTRL_DEPTH}",
                p.ctrl_depth
            ),
        ));
    }
    // The protocol's own check must agree (it is what the peer applies).
    p.check(min_ctrl)
        .map_err(|reason| Error::invalid(what, reason.to_string()))
}

/// [`check_params`] for a sender.
fn check_sender(p: &Params) -> Result<(), Error> {
    check_params("connect", p, MIN_SENDER_CTRL_DEPTH)
}

/// [`check_params`] for a receiver.
fn check_receiver(p: &Params) -> Result<(), Error> {
    check_params("Listener::bind", p, MIN_RECEIVER_CTRL_DEPTH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_the_protocol_checks() {
        let s = sender_params(DEFAULT_CHUNK_SIZE, DEFAULT_WINDOW);
        check_sender(&s).unwrap();
        let r = receiver_params(DEFAULT_CHUNK_SIZE, DEFAULT_WINDOW);
        check_receiver(&r).unwrap();
        assert!(r.ctrl_depth >= MIN_RECEIVER_CTRL_DEPTH);
        assert!(s.ctrl_depth >= MIN_SENDER_CTRL_DEPTH);
    }

    #[test]
    fn bad_local_params_name_the_value_and_the_range() {
        let err = check_sender(&sender_params(16, 4)).unwrap_err().to_string();
        assert!(
            err.contains("buffer (chunk) size 16 B is outside 64"),
            "{err}"
        );
        let err = check_receiver(&receiver_params(4096, 0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("window 0 is outside 1 ..= 65536"), "{err}");
        let mut p = receiver_params(4096, 4);
        p.ctrl_depth = 2;
        let err = check_receiver(&p).unwrap_err().to_string();
        assert!(err.contains("control depth 2 is outside 12"), "{err}");
        p.ctrl_depth = 2;
        assert!(check_sender(&p).is_ok(), "a sender may use 2");
    }
}
