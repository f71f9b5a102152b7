//! The receiving side of connection set-up: a listening CM id that negotiates each request.

use super::endpoint::{next_event, Endpoint};
use super::{check_receiver, DEFAULT_HANDSHAKE_TIMEOUT};
use crate::verbs::{
    Access, CmEventKind, CmId, CompletionQueue, ConnParams, EventChannel, MemoryRegion, QueuePair,
    MAX_ACCEPT_PRIVATE_DATA, MAX_REJECT_PRIVATE_DATA,
};
use crate::Error;
use rdmaft_protocol::{negotiate, reject, Negotiated, Params, RejectReason, RingInfo};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How many connection requests the CM queues while nobody is in [`Listener::accept`].
const BACKLOG: i32 = 16;

/// A receiver listening for rdmaft connections on one address.
///
/// Requests are taken one at a time by [`accept`](Self::accept) (concurrent calls are
/// serialised). A request whose hello fails the negotiation is rejected with a reason code
/// the sender can read; that `accept` call returns [`Error::RequestRejected`] and the
/// listener stays usable.
#[derive(Debug)]
pub struct Listener {
    local: Params,
    addr: SocketAddr,
    handshake_timeout: Duration,
    accept_lock: Mutex<()>,
    id: Arc<CmId>,
    events: Arc<EventChannel>,
}

impl Listener {
    /// Listens on `addr` (port 0 picks a free port; see [`local_addr`](Self::local_addr))
    /// with `local` as this receiver's limits: the negotiated chunk size and window are the
    /// minimum of the sender's and these, and `local.ctrl_depth` is how many control receives
    /// each connection keeps posted (at least [`MIN_RECEIVER_CTRL_DEPTH`]).
    ///
    /// [`MIN_RECEIVER_CTRL_DEPTH`]: rdmaft_protocol::MIN_RECEIVER_CTRL_DEPTH
    pub fn bind(addr: SocketAddr, local: Params) -> Result<Listener, Error> {
        check_receiver(&local)?;
        let events = EventChannel::new()?;
        let id = CmId::new(&events)?;
        id.bind(addr)?;
        id.listen(BACKLOG)?;
        let addr = SocketAddr::new(addr.ip(), id.local_port());
        Ok(Listener {
            local,
            addr,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            accept_lock: Mutex::new(()),
            id,
            events,
        })
    }

    /// The address listened on, with the real port.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The RDMA device the listener is bound to; `None` when it listens on a wildcard
    /// address (then requests may arrive on any device).
    pub fn device_name(&self) -> Option<String> {
        self.id.device_name()
    }

    /// The receiver's limits given to [`bind`](Self::bind).
    pub fn params(&self) -> &Params {
        &self.local
    }

    /// How long one request may take from CONNECT_REQUEST to ESTABLISHED (default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub fn set_handshake_timeout(&mut self, timeout: Duration) {
        self.handshake_timeout = timeout;
    }

    /// Waits up to `timeout` for a connection request and sets the connection up; see
    /// [`try_accept`](Self::try_accept). No request in time is [`Error::Timeout`].
    pub fn accept(&self, timeout: Duration) -> Result<Accepted, Error> {
        self.try_accept(timeout)?.ok_or_else(|| {
            Error::timeout(format!("a connection request on {}", self.addr), timeout)
        })
    }

    /// Waits up to `timeout` for a connection request; `Ok(None)` if none came.
    ///
    /// For a request: negotiates its hello. A bad hello is rejected with the reason
    /// ([`Error::RequestRejected`]); otherwise the ring of `chunk × window` bytes is
    /// registered, a QP created with `window + ctrl_depth` control receives posted, the
    /// accept sent, and ESTABLISHED awaited (bounded by the handshake timeout, not by
    /// `timeout`). If the resources cannot be had, the request is rejected with
    /// `NO_RESOURCES` and the failure returned. Either way the listener keeps serving; only
    /// [`Error::ListenerFailed`] means it cannot.
    pub fn try_accept(&self, timeout: Duration) -> Result<Option<Accepted>, Error> {
        let _one_at_a_time = self
            .accept_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let deadline = crate::deadline::deadline(timeout);
        let request = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self
                .events
                .get_event(left)
                .map_err(|e| Error::ListenerFailed(Box::new(e)))?;
            match event {
                Some(e) if e.kind == CmEventKind::ConnectRequest => break e,
                Some(e) if e.kind == CmEventKind::DeviceRemoval => {
                    return Err(Error::ListenerFailed(Box::new(
                        e.unexpected("CONNECT_REQUEST"),
                    )));
                }
                // Stray events about ids already handed off or gone: nothing to do.
                Some(_) => {}
                None if Instant::now() >= deadline => return Ok(None),
                None => {}
            }
        };
        let id = request.new_id.ok_or_else(|| {
            Error::invalid("Listener::accept", "CONNECT_REQUEST without a new CM id")
        })?;
        self.handshake(id, &request.private_data).map(Some)
    }

    /// Negotiates one request on its new `id`, then accepts or rejects it.
    fn handshake(&self, mut id: Arc<CmId>, hello: &[u8]) -> Result<Accepted, Error> {
        let started = Instant::now();
        let deadline = crate::deadline::deadline_from(started, self.handshake_timeout);
        let peer = id.peer_addr();
        let agreed = match negotiate(hello, &self.local) {
            Ok(agreed) => agreed,
            Err(reason) => {
                send_reject(&id, reason)?;
                return Err(Error::RequestRejected { peer, reason });
            }
        };
        // Everything that can fail for lack of resources, before anything is promised.
        let setup = (|| {
            // The connection gets its own event channel, so its events never mix with new
            // requests (and a later concurrent receiver can wait on each connection alone).
            let events = EventChannel::new()?;
            id.migrate(&events)?;
            let recv_bufs = agreed.window + u32::from(self.local.ctrl_depth);
            let send_wr = u32::from(agreed.sender_ctrl_depth) + 1;
            let ep = Endpoint::new(Arc::clone(&id), events, send_wr, recv_bufs)?;
            let ring = ep.register(
                agreed.ring_len(),
                Access::LOCAL_WRITE | Access::REMOTE_WRITE,
            )?;
            Ok::<_, Error>((ring, ep))
        })();
        // The ring is bound first so that it drops last: locals (pattern bindings included)
        // drop in reverse order, and on an early return below the QP (in `ep`) must be
        // destroyed before the ring it may be written through is deregistered.
        let (ring_mr, mut ep) = match setup {
            Ok(setup) => setup,
            Err(e) => {
                // Best effort: the peer learns why; the resource error is what we report.
                let _ = send_reject(&id, RejectReason::NO_RESOURCES);
                return Err(e);
            }
        };
        drop(id);
        let ring = RingInfo {
            addr: ring_mr.addr(),
            len: ring_mr.len() as u64,
            rkey: ring_mr.rkey(),
        };
        let (negotiated, reply) = agreed.accept(ring, self.local.ctrl_depth);
        let mut buf = [0u8; MAX_ACCEPT_PRIVATE_DATA];
        let n = reply.encode(&mut buf).map_err(|_| {
            Error::invalid(
                "Listener::accept",
                "the accept does not fit the private data",
            )
        })?;
        ep.id().accept(&ConnParams {
            private_data: &buf[..n],
            ..ConnParams::default()
        })?;
        let e = next_event(
            ep.events(),
            deadline,
            self.handshake_timeout,
            "the sender to complete the connection (ESTABLISHED)",
        )?;
        if e.kind != CmEventKind::Established {
            return Err(e.unexpected("ESTABLISHED"));
        }
        ep.established();
        Ok(Accepted {
            endpoint: ep,
            ring: ring_mr,
            negotiated,
        })
    }
}

/// Rejects a request with the encoded reject for `reason` in the private data.
fn send_reject(id: &CmId, reason: RejectReason) -> Result<(), Error> {
    let mut buf = [0u8; MAX_REJECT_PRIVATE_DATA];
    let n = reject(reason)
        .encode(&mut buf)
        .map_err(|_| Error::invalid("rdma_reject", "the reject does not fit the private data"))?;
    id.reject(&buf[..n])
}

/// A connection a [`Listener`] accepted: established, with its ring registered and its
/// receives posted.
///
/// Dropping it disconnects (without waiting) and frees everything; use
/// [`disconnect`](Self::disconnect) to wait for the peer's confirmation.
#[derive(Debug)]
pub struct Accepted {
    // Dropped first: the QP goes before the ring it may write is deregistered.
    endpoint: Endpoint,
    ring: MemoryRegion,
    negotiated: Negotiated,
}

impl Accepted {
    /// The parameters both sides agreed on (the ring included).
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// The sender's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.endpoint.peer_addr()
    }

    /// Our address on this connection.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The RDMA device the connection runs on.
    pub fn device_name(&self) -> &str {
        self.endpoint.device()
    }

    /// The receive ring the sender writes chunks into (`window` slots of `chunk` bytes,
    /// remote-writable; its address, length and rkey are `negotiated().ring`).
    pub fn ring(&self) -> &MemoryRegion {
        &self.ring
    }

    /// The control receive buffers: `window + receiver_ctrl_depth` buffers of
    /// `CTRL_MSG_MAX` bytes, buffer `i` at offset `i × CTRL_MSG_MAX`, each posted as a
    /// receive with work request id `i`.
    pub fn ctrl_buffers(&self) -> &MemoryRegion {
        self.endpoint.ctrl()
    }

    /// The connection's RC queue pair.
    pub fn queue_pair(&self) -> &QueuePair {
        self.endpoint.qp()
    }

    /// The completion queue of both the send and the receive side.
    pub fn completion_queue(&self) -> &Arc<CompletionQueue> {
        self.endpoint.cq()
    }

    /// True once the connection is known to be closed.
    pub fn is_closed(&self) -> bool {
        self.endpoint.is_closed()
    }

    /// Waits up to `timeout` for the sender to disconnect.
    pub fn wait_disconnected(&mut self, timeout: Duration) -> Result<(), Error> {
        self.endpoint.wait_disconnected(timeout)
    }

    /// Disconnects, waits up to `timeout` for the confirmation, and frees everything.
    pub fn disconnect(mut self, timeout: Duration) -> Result<(), Error> {
        self.endpoint.disconnect(timeout)
    }
}
