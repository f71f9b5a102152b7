//! The receiving side of connection set-up: a listening CM id, and each request accepted
//! (or refused) on the connection's own thread.

use super::endpoint::{next_event, Endpoint};
use super::{check_params, clamp_to_device, ACK_RECEIVES};
use crate::key::{nonce, Key};
use crate::verbs::{
    Access, CmEventKind, CmId, ConnParams, EventChannel, MemoryRegion, Pages,
    MAX_ACCEPT_PRIVATE_DATA, MAX_REJECT_PRIVATE_DATA,
};
use crate::Error;
use rdmaft_protocol::{
    negotiate, reject, Agreed, Mac, Negotiated, Params, RejectReason, RingInfo, RECEIVER_MSG_MAX,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many connection requests the CM queues while nobody takes them.
const BACKLOG: i32 = 64;

/// A receiver listening for rdmaft connections on one address.
#[derive(Debug)]
pub struct Listener {
    addr: SocketAddr,
    id: Arc<CmId>,
    events: Arc<EventChannel>,
}

impl Listener {
    /// Listens on `addr` (port 0 picks a free port; see [`local_addr`](Self::local_addr)).
    pub fn bind(addr: SocketAddr) -> Result<Listener, Error> {
        let events = EventChannel::new()?;
        let id = CmId::new(&events)?;
        id.bind(addr)?;
        id.listen(BACKLOG)?;
        let addr = SocketAddr::new(addr.ip(), id.local_port());
        Ok(Listener { addr, id, events })
    }

    /// The address listened on, with the real port.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Listens again on the same address and port, in place of this listener (after it
    /// failed): this one is destroyed first, since its id still holds the address and a
    /// second bind to it would be refused (`EADDRINUSE`).
    pub fn rebind(self) -> Result<Listener, Error> {
        let addr = self.addr;
        drop(self);
        Listener::bind(addr)
    }

    /// The RDMA device the listener is bound to; `None` when it listens on a wildcard
    /// address (then requests may arrive on any device).
    pub fn device_name(&self) -> Option<String> {
        self.id.device_name()
    }

    /// Waits up to `timeout` for a connection request; `Ok(None)` if none came. The request
    /// moves to an event channel of its own: accept or refuse it on any thread.
    ///
    /// [`Error::ListenerFailed`] means the listener itself failed; any other error concerns
    /// that one request only (no descriptor for its event channel, say): it was dropped,
    /// which the sender sees as a refusal, and the listener goes on.
    pub fn next_request(&self, timeout: Duration) -> Result<Option<Request>, Error> {
        let deadline = crate::deadline::deadline(timeout);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self
                .events
                .get_event(left)
                .map_err(|e| Error::ListenerFailed(Box::new(e)))?;
            match event {
                Some(e) if e.kind == CmEventKind::ConnectRequest => {
                    let Some(mut id) = e.new_id else {
                        continue;
                    };
                    let peer = id.peer_addr();
                    // Its own channel, so its events never mix with new requests.
                    let channel = EventChannel::new()?;
                    id.migrate(&channel)?;
                    return Ok(Some(Request {
                        id,
                        events: channel,
                        hello: e.private_data,
                        peer,
                    }));
                }
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
        }
    }

    /// The listener's event channel fd (readable when a request may be waiting).
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.events.fd()
    }
}

/// A connection request, not answered yet. Dropping it without [`accept`](Self::accept) or
/// [`reject`](Self::reject) destroys the id, which the sender sees as a refusal.
#[derive(Debug)]
pub struct Request {
    id: Arc<CmId>,
    events: Arc<EventChannel>,
    hello: Vec<u8>,
    peer: Option<SocketAddr>,
}

impl Request {
    /// Whether the hello asks to join a transfer group (a lane beyond a transfer's first).
    pub(crate) fn joins_group(&self) -> bool {
        rdmaft_protocol::HelloRepr::decode(&self.hello).is_ok_and(|h| h.group != 0)
    }

    /// The sender's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Refuses the request with `reason` in the reject's private data.
    pub fn reject(self, reason: RejectReason) -> Result<(), Error> {
        send_reject(&self.id, reason)
    }

    /// Negotiates the hello against `local` (clamped to the device; with `key`, the sender
    /// must prove it) and sets the connection up: ring registered, receives posted, accept
    /// sent, ESTABLISHED awaited within `timeout`.
    ///
    /// A bad hello is refused with its reason ([`Error::RequestRejected`]); if resources
    /// cannot be had, the request is refused with `NO_RESOURCES` and the failure returned.
    pub fn accept(
        self,
        local: &Params,
        key: Option<&Key>,
        timeout: Duration,
    ) -> Result<ReceiverConn, Error> {
        self.accept_with(local, key, timeout, Pages::Base, None)
    }

    /// [`accept`](Self::accept), with the ring on `pages` (huge pages for large windows)
    /// and, when `groups` is given, transfer groups (`LANES`): the connection opens a group
    /// or joins the live one its hello names (an unknown one is refused with
    /// `UNKNOWN_GROUP`).
    pub(crate) fn accept_with(
        self,
        local: &Params,
        key: Option<&Key>,
        timeout: Duration,
        pages: Pages,
        groups: Option<&crate::groups::Groups>,
    ) -> Result<ReceiverConn, Error> {
        let deadline = crate::deadline::deadline(timeout);
        let peer = self.peer;
        let mut local = *local;
        if key.is_some() {
            local.features |= rdmaft_protocol::Features::AUTH_PSK;
        }
        local
            .features
            .set(rdmaft_protocol::Features::LANES, groups.is_some());
        let prepared = (|| {
            check_params("Receiver", &local)?;
            let limits = Endpoint::device_limits(&self.id)?;
            clamp_to_device(&mut local, &limits);
            Ok::<_, Error>(())
        })();
        if let Err(e) = prepared {
            let _ = send_reject(&self.id, RejectReason::MISCONFIGURED);
            return Err(e);
        }
        let agreed = match negotiate(&self.hello, &local) {
            Ok(agreed) => agreed,
            Err(reason) => {
                send_reject(&self.id, reason)?;
                return Err(Error::RequestRejected { peer, reason });
            }
        };
        let group = match groups {
            Some(groups) if agreed.features.contains(rdmaft_protocol::Features::LANES) => {
                match groups.enter(agreed.join) {
                    Ok(g) => Some(g),
                    Err(reason) => {
                        send_reject(&self.id, reason)?;
                        return Err(Error::RequestRejected { peer, reason });
                    }
                }
            }
            _ => None,
        };
        // Everything that can fail for lack of resources, before anything is promised.
        // Bound in this order so that on an early return the QP (in `ep`) is destroyed
        // before the memory it may use is deregistered (locals drop in reverse order).
        let (ring_mr, send_bufs, ep) = match self.set_up(&agreed, agreed.ring_len(), pages) {
            Ok(setup) => setup,
            Err(e) => {
                // Best effort: the peer learns why; the resource error is what we report.
                let _ = send_reject(&self.id, RejectReason::NO_RESOURCES);
                return Err(e);
            }
        };
        let ring = RingInfo {
            addr: ring_mr.addr(),
            len: ring_mr.len() as u64,
            rkey: ring_mr.rkey(),
        };
        let mac = key.map(|k| k as &dyn Mac);
        let group_id = group.as_ref().map_or(0, |g| g.id());
        // spec: [psk.fresh-nonce]
        let (negotiated, reply) = match agreed.accept(ring, nonce()?, mac, group_id) {
            Ok(done) => done,
            Err(e) => {
                let _ = send_reject(&self.id, RejectReason::MISCONFIGURED);
                return Err(Error::invalid("Receiver", e.to_string()));
            }
        };
        let mut buf = [0u8; MAX_ACCEPT_PRIVATE_DATA];
        let n = reply
            .encode(&mut buf)
            .map_err(|_| Error::invalid("Receiver", "the accept does not fit the private data"))?;
        let endpoint = answer(ep, &buf[..n], deadline, timeout)?;
        Ok(ReceiverConn {
            endpoint,
            send_bufs,
            ring: Arc::new(ring_mr),
            negotiated,
            group,
        })
    }

    /// The connection's resources for `agreed`, with a ring of `ring_len` bytes: endpoint,
    /// ring (remote write only), send buffers, and every receive posted.
    fn set_up(
        &self,
        agreed: &Agreed,
        ring_len: u64,
        pages: Pages,
    ) -> Result<(MemoryRegion, MemoryRegion, Endpoint), Error> {
        let recv_wr = agreed.window + u32::from(agreed.receiver_ctrl_depth) + ACK_RECEIVES;
        let send_wr = u32::from(agreed.sender_ctrl_depth) + 1;
        let ep = Endpoint::new(
            Arc::clone(&self.id),
            Arc::clone(&self.events),
            send_wr,
            recv_wr,
        )?;
        let ring = ep.register(ring_len, Access::LOCAL_WRITE | Access::REMOTE_WRITE, pages)?;
        let send_bufs = ep.register(
            u64::from(agreed.sender_ctrl_depth) * RECEIVER_MSG_MAX as u64,
            Access::empty(),
            Pages::Base,
        )?;
        for _ in 0..recv_wr {
            ep.qp().post_recv_bufferless(crate::engine::wr::RECV)?;
        }
        Ok((ring, send_bufs, ep))
    }

    /// The sender's hello, as it arrived (feature `internals`).
    #[cfg(feature = "internals")]
    pub(crate) fn hello(&self) -> &[u8] {
        &self.hello
    }

    /// Refuses the request with any bytes as the reject's private data (feature
    /// `internals`, for the hostile-receiver tests).
    #[cfg(feature = "internals")]
    pub(crate) fn reject_raw(self, private_data: &[u8]) -> Result<(), Error> {
        self.id.reject(private_data)
    }

    /// Accepts with whatever accept bytes `reply` makes (feature `internals`, for the
    /// hostile-receiver tests): negotiates like [`accept`](Self::accept), registers a ring
    /// of `ring_len` bytes (a correct receiver's is `agreed.ring_len()`), then calls
    /// `reply(agreed, ring, send buffers)` — the send buffers being registered memory of this
    /// connection that the sender may not write — and answers with its bytes. The returned
    /// connection's `negotiated` is what a correct accept with this ring would have said.
    #[cfg(feature = "internals")]
    pub(crate) fn accept_raw(
        self,
        local: &Params,
        ring_len: Option<u64>,
        reply: impl FnOnce(&Agreed, RingInfo, RingInfo) -> Vec<u8>,
        timeout: Duration,
    ) -> Result<(ReceiverConn, Agreed), Error> {
        let deadline = crate::deadline::deadline(timeout);
        let agreed = negotiate(&self.hello, local).map_err(|reason| Error::RequestRejected {
            peer: self.peer,
            reason,
        })?;
        let (ring_mr, send_bufs, ep) = self.set_up(
            &agreed,
            ring_len.unwrap_or_else(|| agreed.ring_len()),
            Pages::Base,
        )?;
        let info = |mr: &MemoryRegion| RingInfo {
            addr: mr.addr(),
            len: mr.len() as u64,
            rkey: mr.rkey(),
        };
        let ring = info(&ring_mr);
        let bytes = reply(&agreed, ring, info(&send_bufs));
        let endpoint = answer(ep, &bytes, deadline, timeout)?;
        let negotiated = Negotiated {
            group: u32::from(agreed.features.contains(rdmaft_protocol::Features::LANES)),

            features: agreed.features,
            flags: agreed.flags,
            chunk_size: agreed.chunk_size,
            window: agreed.window,
            sender_ctrl_depth: agreed.sender_ctrl_depth,
            receiver_ctrl_depth: agreed.receiver_ctrl_depth,
            max_open_files: agreed.max_open_files,
            keepalive_ms: agreed.keepalive_ms,
            ring,
            sender_proof: None,
        };
        Ok((
            ReceiverConn {
                endpoint,
                send_bufs,
                ring: Arc::new(ring_mr),
                negotiated,
                group: None,
            },
            agreed,
        ))
    }
}

/// Sends the accept's `private_data` and waits until `deadline` for ESTABLISHED.
fn answer(
    mut ep: Endpoint,
    private_data: &[u8],
    deadline: Instant,
    timeout: Duration,
) -> Result<Endpoint, Error> {
    ep.id().accept(&ConnParams {
        private_data,
        ..ConnParams::default()
    })?;
    let e = next_event(
        ep.events(),
        deadline,
        timeout,
        "the sender to complete the connection (ESTABLISHED)",
    )?;
    if e.kind != CmEventKind::Established {
        return Err(e.unexpected("ESTABLISHED"));
    }
    ep.established();
    Ok(ep)
}

/// Rejects a request with the encoded reject for `reason` in the private data.
fn send_reject(id: &CmId, reason: RejectReason) -> Result<(), Error> {
    let mut buf = [0u8; MAX_REJECT_PRIVATE_DATA];
    let n = reject(reason)
        .encode(&mut buf)
        .map_err(|_| Error::invalid("rdma_reject", "the reject does not fit the private data"))?;
    id.reject(&buf[..n])
}

/// An accepted connection: established, ring registered, receives posted.
///
/// Dropping it disconnects (without waiting) and frees everything, the QP first.
#[derive(Debug)]
pub struct ReceiverConn {
    // Dropped first: the QP goes before the ring it may write is deregistered.
    pub(crate) endpoint: Endpoint,
    /// `sender_ctrl_depth` send buffers of 256 bytes (message `n` uses buffer `n mod depth`).
    pub(crate) send_bufs: MemoryRegion,
    /// The ring: data slots, then control slots.
    pub(crate) ring: Arc<MemoryRegion>,
    pub(crate) negotiated: Negotiated,
    /// The connection's place in its transfer group (with `LANES` agreed).
    pub(crate) group: Option<Arc<crate::groups::Group>>,
}

impl ReceiverConn {
    /// The parameters both sides agreed on (the ring included).
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// The sender's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.endpoint.peer_addr()
    }

    /// The RDMA device the connection runs on.
    pub fn device_name(&self) -> &str {
        self.endpoint.device()
    }

    /// Disconnects, waits up to `timeout` for the confirmation, and frees everything.
    pub fn disconnect(mut self, timeout: Duration) -> Result<(), Error> {
        self.endpoint.disconnect(timeout)
    }
}
