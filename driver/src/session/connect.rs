//! The sending side of connection set-up: connect with the hello, check the accept.

use super::endpoint::{next_event_unless, Endpoint};
use super::{check_params, clamp_to_device, ACK_RECEIVES};
use crate::key::{nonce, Key};
use crate::verbs::{
    Access, CmEvent, CmEventKind, CmId, ConnParams, EventChannel, MemoryRegion, Pages, SlotArea,
};
use crate::Error;
use rdmaft_protocol::wire::HELLO_LEN;
use rdmaft_protocol::{
    check_reply, HandshakeError, HandshakeReply, Mac, Negotiated, Params, CTRL_MSG_MAX,
    RECEIVER_MSG_MAX,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Connects to a receiver at `addr`, proposing `local` (clamped to the device), all within
/// `timeout`. With `key`, `local` gets `AUTH_PSK` and the receiver must prove the key.
///
/// Steps: resolve the address and route to an RDMA device; create PD, CQ and an RC QP with
/// `ctrl_depth` receive buffers posted (the receiver may answer as soon as the connection is
/// up); connect with the hello in the private data; on ESTABLISHED check the accept; then
/// register the slots (`window × chunk`) and the control send buffers
/// (`receiver ctrl_depth × 4096`) at the negotiated sizes.
///
/// Errors: [`Error::HandshakeRejected`] when the receiver refused (with its reason),
/// [`Error::Handshake`] when its reply is undecodable or breaks the rules (the connection is
/// then closed), [`Error::ConnectFailed`] when the connection manager gave up (no route,
/// nobody listening, no answer), [`Error::Timeout`], or the failed verb.
pub fn connect(
    addr: SocketAddr,
    local: Params,
    key: Option<&Key>,
    timeout: Duration,
) -> Result<SenderConn, Error> {
    connect_with(addr, None, local, key, timeout, Pages::Base, &|| false)
}

/// [`connect`] from local address `src` (which picks the RDMA port; `None`: the route's),
/// with the slots on `pages` (huge pages for large windows), giving up with
/// [`Error::Cancelled`] as soon as `cancelled()` says so (looked at every 100 ms while it
/// waits for the network).
pub(crate) fn connect_with(
    addr: SocketAddr,
    src: Option<std::net::IpAddr>,
    local: Params,
    key: Option<&Key>,
    timeout: Duration,
    pages: Pages,
    cancelled: &dyn Fn() -> bool,
) -> Result<SenderConn, Error> {
    let mut local = local;
    if key.is_some() {
        local.features |= rdmaft_protocol::Features::AUTH_PSK;
    }
    check_params("connect", &local)?;
    let deadline = crate::deadline::deadline(timeout);
    let left = || deadline.saturating_duration_since(Instant::now());
    let events = EventChannel::new()?;
    let id = CmId::new(&events)?;

    id.resolve_addr(src.map(|ip| SocketAddr::new(ip, 0)), addr, left())?;
    let e = next_event_unless(
        &events,
        deadline,
        timeout,
        "address resolution (ADDR_RESOLVED)",
        cancelled,
    )?;
    if e.kind != CmEventKind::AddrResolved {
        return Err(failed(
            addr,
            &e,
            "is it an IP address of an RDMA device, or routed through one?",
        ));
    }
    id.resolve_route(left())?;
    let e = next_event_unless(
        &events,
        deadline,
        timeout,
        "route resolution (ROUTE_RESOLVED)",
        cancelled,
    )?;
    if e.kind != CmEventKind::RouteResolved {
        return Err(failed(addr, &e, "no route to it over an RDMA device"));
    }

    let limits = Endpoint::device_limits(&id)?;
    clamp_to_device(&mut local, &limits);
    // The send queue holds the window's chunk writes, control writes and acks; the engine
    // waits for room when the receiver's control ring is deeper than this.
    let send_wr =
        (local.window + 2 * u32::from(local.ctrl_depth) + ACK_RECEIVES).min(limits.max_qp_wr);
    let recv_wr = u32::from(local.ctrl_depth);
    let mut ep = Endpoint::new(id, events, send_wr, recv_wr)?;
    // Registered before any receive is posted, kept until after the QP is gone.
    let recv_bufs = ep.register(
        u64::from(recv_wr) * RECEIVER_MSG_MAX as u64,
        Access::LOCAL_WRITE,
        Pages::Base,
    )?;
    for i in 0..recv_wr as usize {
        ep.qp().post_recv(
            crate::engine::wr::RECV | i as u64,
            &recv_bufs,
            i * RECEIVER_MSG_MAX..(i + 1) * RECEIVER_MSG_MAX,
        )?;
    }
    let mut hello = [0u8; HELLO_LEN];
    // spec: [psk.fresh-nonce]
    let n = local
        .hello(if key.is_some() { nonce()? } else { [0; 16] })
        .encode(&mut hello)
        .map_err(|_| Error::invalid("connect", "the hello does not fit its buffer"))?;
    ep.id().connect(&ConnParams {
        private_data: &hello[..n],
        ..ConnParams::default()
    })?;
    let e = next_event_unless(
        ep.events(),
        deadline,
        timeout,
        "the receiver's answer (ESTABLISHED or REJECTED)",
        cancelled,
    )?;
    match e.kind {
        CmEventKind::Established => ep.established(),
        CmEventKind::Rejected => return Err(rejected(addr, &e)),
        CmEventKind::Unreachable | CmEventKind::ConnectError => {
            return Err(failed(addr, &e, "the receiver did not answer"));
        }
        _ => return Err(e.unexpected("ESTABLISHED")),
    }
    let mac = key.map(|k| k as &dyn Mac);
    let negotiated = match check_reply(&e.private_data, &local, &hello, mac) {
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
    let slots = ep.register(negotiated.data_len(), Access::empty(), pages)?;
    let slots = SlotArea::new(slots, negotiated.chunk_size as usize, negotiated.window)?;
    let ctrl_bufs = ep.register(
        u64::from(negotiated.receiver_ctrl_depth) * CTRL_MSG_MAX as u64,
        Access::empty(),
        Pages::Base,
    )?;
    Ok(SenderConn {
        endpoint: ep,
        recv_bufs,
        ctrl_bufs,
        slots: Some(slots),
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

/// A connection to a receiver, established and negotiated.
///
/// Dropping it disconnects (without waiting) and frees everything, the QP first.
#[derive(Debug)]
pub struct SenderConn {
    // Dropped first: the QP goes before the memory it may use is deregistered.
    pub(crate) endpoint: Endpoint,
    /// `sender_ctrl_depth` receive buffers of 256 bytes, buffer `i` posted with wr_id `i`.
    pub(crate) recv_bufs: MemoryRegion,
    /// `receiver_ctrl_depth` control send buffers of 4096 bytes.
    pub(crate) ctrl_bufs: MemoryRegion,
    /// The data slots (taken by the engine, which hands them to the reader).
    pub(crate) slots: Option<SlotArea>,
    pub(crate) negotiated: Negotiated,
}

impl SenderConn {
    /// The parameters both sides agreed on (the receiver's ring included).
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// The receiver's address.
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

    /// The connection's CM id (for tests of the verbs layer).
    pub fn cm_id(&self) -> std::sync::Arc<crate::verbs::CmId> {
        std::sync::Arc::clone(self.endpoint.id())
    }
}
