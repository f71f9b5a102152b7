//! The sending side of connection set-up: connect with the hello, check the reply.

use super::check_sender;
use super::endpoint::{next_event, Endpoint};
use crate::verbs::{
    Access, CmEvent, CmEventKind, CmId, CompletionQueue, ConnParams, EventChannel, MemoryRegion,
    QueuePair, RemoteBuffer,
};
use crate::Error;
use rdmaft_protocol::wire::HELLO_LEN;
use rdmaft_protocol::{
    check_reply, HandshakeError, HandshakeReply, Negotiated, Params, MAX_CTRL_DEPTH,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connects to a receiver at `addr`, proposing `local`, all within `timeout`.
///
/// Steps: resolve the address and route to an RDMA device; create PD, CQ and an RC QP with
/// `local.ctrl_depth` control receives posted (the receiver may answer as soon as the
/// connection is up); connect with the hello in the private data; on ESTABLISHED check the
/// reply with [`check_reply`]; then register the local slot area of the *negotiated*
/// `chunk × window` bytes, the source of the chunk writes.
///
/// Errors: [`Error::HandshakeRejected`] when the receiver refused (with its reason),
/// [`Error::Handshake`] when its reply is undecodable or breaks the rules (the connection is
/// then closed), [`Error::ConnectFailed`] when the connection manager gave up (no route,
/// nobody listening, no answer), [`Error::Timeout`], or the failed verb.
pub fn connect(addr: SocketAddr, local: Params, timeout: Duration) -> Result<Connected, Error> {
    check_sender(&local)?;
    let deadline = crate::deadline::deadline(timeout);
    let left = || deadline.saturating_duration_since(Instant::now());
    let events = EventChannel::new()?;
    let id = CmId::new(&events)?;

    id.resolve_addr(None, addr, left())?;
    let e = next_event(
        &events,
        deadline,
        timeout,
        "address resolution (ADDR_RESOLVED)",
    )?;
    if e.kind != CmEventKind::AddrResolved {
        return Err(failed(
            addr,
            &e,
            "is it an IP address of an RDMA device, or routed through one?",
        ));
    }
    id.resolve_route(left())?;
    let e = next_event(
        &events,
        deadline,
        timeout,
        "route resolution (ROUTE_RESOLVED)",
    )?;
    if e.kind != CmEventKind::RouteResolved {
        return Err(failed(addr, &e, "no route to it over an RDMA device"));
    }

    // The send queue holds up to `window` chunk writes plus the control messages the
    // receiver's credit allows (at most MAX_CTRL_DEPTH; its real depth comes in the reply).
    let send_wr = local.window + u32::from(MAX_CTRL_DEPTH);
    let mut ep = Endpoint::new(id, events, send_wr, u32::from(local.ctrl_depth))?;
    let mut hello = [0u8; HELLO_LEN];
    let n = local
        .hello()
        .encode(&mut hello)
        .map_err(|_| Error::invalid("connect", "the hello does not fit its buffer"))?;
    ep.id().connect(&ConnParams {
        private_data: &hello[..n],
        ..ConnParams::default()
    })?;
    let e = next_event(
        ep.events(),
        deadline,
        timeout,
        "the receiver's answer (ESTABLISHED or REJECTED)",
    )?;
    match e.kind {
        CmEventKind::Established => ep.established(),
        CmEventKind::Rejected => return Err(rejected(addr, &e)),
        CmEventKind::Unreachable | CmEventKind::ConnectError => {
            return Err(failed(addr, &e, "the receiver did not answer"));
        }
        _ => return Err(e.unexpected("ESTABLISHED")),
    }
    let negotiated = match check_reply(&e.private_data, &local) {
        Ok(negotiated) => negotiated,
        Err(HandshakeError::Rejected(r)) => {
            // A reject where an accept belongs: the connection is up, close it.
            let _ = ep.disconnect(left());
            return Err(Error::HandshakeRejected {
                reason: r.reason,
                max_version: r.max_version,
            });
        }
        Err(other) => {
            let _ = ep.disconnect(left());
            return Err(Error::Handshake(other));
        }
    };
    // Allocated now rather than at the proposal's size: the receiver may have lowered it.
    let slots = ep.register(negotiated.ring_len(), Access::empty())?;
    Ok(Connected {
        endpoint: ep,
        slots,
        negotiated,
    })
}

/// The error for a REJECTED event: the receiver's reason when its private data holds an
/// rdmaft reject, else a CM-level refusal (typically nobody listening on the port).
fn rejected(addr: SocketAddr, e: &CmEvent) -> Error {
    match HandshakeReply::decode(&e.private_data) {
        Ok(HandshakeReply::Reject(r)) => Error::HandshakeRejected {
            reason: r.reason,
            max_version: r.max_version,
        },
        _ => failed(
            addr,
            e,
            "refused without an rdmaft reply: is an rdmaft receiver listening on that port?",
        ),
    }
}

fn failed(addr: SocketAddr, e: &CmEvent, hint: &'static str) -> Error {
    Error::ConnectFailed {
        addr,
        event: e.kind.name(),
        status: e.status,
        reason: e.status_text(),
        hint,
    }
}

/// A connection to a receiver, established and negotiated, with the local slot area
/// registered and the control receives posted.
///
/// Dropping it disconnects (without waiting) and frees everything; use
/// [`disconnect`](Self::disconnect) to wait for the receiver's confirmation.
#[derive(Debug)]
pub struct Connected {
    // Dropped first: the QP goes before the slots it may read are deregistered.
    endpoint: Endpoint,
    slots: MemoryRegion,
    negotiated: Negotiated,
}

impl Connected {
    /// The parameters both sides agreed on (the receiver's ring included).
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// The receiver's address.
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

    /// The receiver's ring, as a target for RDMA WRITE WITH IMM.
    pub fn remote_ring(&self) -> RemoteBuffer {
        let ring = self.negotiated.ring;
        RemoteBuffer {
            addr: ring.addr,
            rkey: ring.rkey,
            len: ring.len,
        }
    }

    /// The local slot area: `window` slots of `chunk` bytes (the negotiated sizes), slot
    /// `i` at offset `i × chunk`, the source of the chunk writes.
    pub fn slots(&self) -> &MemoryRegion {
        &self.slots
    }

    /// The local slot area, mutably (to read file data into it).
    pub fn slots_mut(&mut self) -> &mut MemoryRegion {
        &mut self.slots
    }

    /// The control receive buffers: `sender_ctrl_depth` buffers of `CTRL_MSG_MAX` bytes,
    /// buffer `i` at offset `i × CTRL_MSG_MAX`, each posted as a receive with work request
    /// id `i`.
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

    /// Waits up to `timeout` for the receiver to disconnect.
    pub fn wait_disconnected(&mut self, timeout: Duration) -> Result<(), Error> {
        self.endpoint.wait_disconnected(timeout)
    }

    /// Disconnects, waits up to `timeout` for the confirmation, and frees everything.
    pub fn disconnect(mut self, timeout: Duration) -> Result<(), Error> {
        self.endpoint.disconnect(timeout)
    }
}
