//! The RDMA connection manager: event channels, CM ids, connection set-up and tear-down.

use super::device::Context;
use super::{c_str_lossy, last_error_is_again, set_nonblocking, wait_readable};
use crate::Error;
use rdma_sys::{
    ibv_get_device_name, rdma_accept, rdma_ack_cm_event, rdma_bind_addr, rdma_cm_event,
    rdma_cm_event_type as ev, rdma_cm_id, rdma_conn_param, rdma_connect, rdma_create_event_channel,
    rdma_create_id, rdma_destroy_event_channel, rdma_destroy_id, rdma_disconnect,
    rdma_event_channel, rdma_get_cm_event, rdma_get_src_port, rdma_listen, rdma_migrate_id,
    rdma_port_space, rdma_reject, rdma_resolve_addr, rdma_resolve_route,
};
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Most private data an RC connect request can carry on InfiniBand/RoCE (REQ).
pub const MAX_CONNECT_PRIVATE_DATA: usize = 56;
/// Most private data an RC accept can carry on InfiniBand/RoCE (REP).
pub const MAX_ACCEPT_PRIVATE_DATA: usize = 196;
/// Most private data a reject can carry on InfiniBand/RoCE (REJ).
pub const MAX_REJECT_PRIVATE_DATA: usize = 148;

/// An RDMA CM event channel (`rdma_event_channel`): where the CM delivers the events of the
/// ids created on it.
///
/// Its fd is non-blocking; [`EventChannel::get_event`] waits with a timeout.
pub struct EventChannel {
    ptr: NonNull<rdma_event_channel>,
    /// Held while librdmacm may write the fields of ids on this channel: around
    /// `rdma_get_cm_event` (which rewrites `route`/`verbs` of the event's id on
    /// ADDR_RESOLVED, ROUTE_RESOLVED, ESTABLISHED, CONNECT_REQUEST, ...) and the synchronous
    /// calls that do the same (bind, resolve); and by [`CmId`]'s readers of those fields.
    /// It guards no Rust data, so a poisoned lock is simply taken over.
    fields: Mutex<()>,
}

// SAFETY: librdmacm calls are thread-safe; only Drop destroys the channel.
unsafe impl Send for EventChannel {}
// SAFETY: see Send; the id fields librdmacm writes from rdma_get_cm_event are read only under
// `fields`, which rdma_get_cm_event is called under.
unsafe impl Sync for EventChannel {}

impl EventChannel {
    /// Creates a channel (`rdma_create_event_channel`) with a non-blocking fd.
    pub fn new() -> Result<Arc<Self>, Error> {
        // SAFETY: no preconditions.
        let raw = unsafe { rdma_create_event_channel() };
        let ptr = NonNull::new(raw).ok_or_else(|| Error::last_os("rdma_create_event_channel"))?;
        let chan = Arc::new(EventChannel {
            ptr,
            fields: Mutex::new(()),
        });
        set_nonblocking(chan.fd(), "fcntl(rdma_event_channel, O_NONBLOCK)")?;
        Ok(chan)
    }

    /// Takes the lock that orders librdmacm's writes of id fields against our reads, and the
    /// calls that read `id->qp` (connect, accept, disconnect) against `rdma_destroy_qp`,
    /// which frees the QP and clears that field.
    pub(crate) fn lock_fields(&self) -> MutexGuard<'_, ()> {
        self.fields.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The channel's fd, borrowed for as long as the channel lives.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the channel owns the fd and closes it only when destroyed, after every
        // borrow of it has ended.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd()) }
    }

    /// The channel's fd (for an external `poll`/`epoll` loop).
    pub fn fd(&self) -> RawFd {
        // SAFETY: the channel is live; `fd` is a plain field.
        unsafe { (*self.ptr.as_ptr()).fd }
    }

    /// Takes the next event, waiting up to `timeout`; `Ok(None)` if none came in time.
    ///
    /// The event is copied out (private data included) and acknowledged before returning,
    /// so no CM id's destruction can block on it. A `ConnectRequest` carries the new id in
    /// [`CmEvent::new_id`]; drop it to destroy the id (after a reject, say).
    pub fn get_event(self: &Arc<Self>, timeout: Duration) -> Result<Option<CmEvent>, Error> {
        let deadline = crate::deadline::deadline(timeout);
        loop {
            let mut raw: *mut rdma_cm_event = ptr::null_mut();
            // Held while librdmacm may rewrite the event's id (see `fields`) and while the
            // event is copied out; never across the wait below.
            let guard = self.lock_fields();
            // SAFETY: the channel is live and non-blocking; `raw` is a valid out-pointer; the
            // id fields it may write are not read concurrently (`guard`).
            let rc = unsafe { rdma_get_cm_event(self.ptr.as_ptr(), &mut raw) };
            if rc == 0 {
                if let Some(event) = NonNull::new(raw) {
                    let event = self.take_event(event);
                    drop(guard);
                    return Ok(Some(event));
                }
                return Err(Error::invalid("rdma_get_cm_event", "returned a null event"));
            }
            if !last_error_is_again() {
                return Err(Error::last_os("rdma_get_cm_event"));
            }
            drop(guard);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !wait_readable(self.fd(), left)? {
                return Ok(None);
            }
        }
    }

    /// Copies an event out and acknowledges it.
    fn take_event(self: &Arc<Self>, raw: NonNull<rdma_cm_event>) -> CmEvent {
        // SAFETY: `raw` is a live event from rdma_get_cm_event, not yet acknowledged.
        let e = unsafe { raw.as_ref() };
        let kind = CmEventKind::from_raw(e.event);
        let mut private_data = Vec::new();
        if kind.carries_conn_param() {
            // SAFETY: for connection events on an RDMA_PS_TCP id the union holds `conn`;
            // rdma_conn_param is plain data (pointer and integers).
            let conn: rdma_conn_param = unsafe { e.param.conn };
            if !conn.private_data.is_null() && conn.private_data_len > 0 {
                // SAFETY: librdmacm guarantees `private_data_len` readable bytes at
                // `private_data` until the event is acknowledged (below).
                let bytes = unsafe {
                    std::slice::from_raw_parts(
                        conn.private_data.cast::<u8>(),
                        usize::from(conn.private_data_len),
                    )
                };
                private_data.extend_from_slice(bytes);
            }
        }
        let new_id = match (kind, NonNull::new(e.id)) {
            // The CM created this id for the incoming request; it is ours to destroy.
            (CmEventKind::ConnectRequest, Some(id)) => Some(Arc::new(CmId {
                ptr: id,
                channel: Arc::clone(self),
                has_qp: AtomicBool::new(false),
            })),
            _ => None,
        };
        let event = CmEvent {
            kind,
            status: e.status,
            private_data,
            id: IdToken(e.id as usize),
            listen_id: NonNull::new(e.listen_id).map(|p| IdToken(p.as_ptr() as usize)),
            new_id,
        };
        // SAFETY: acknowledged exactly once; nothing borrowed from it is used afterwards
        // (the private data was copied).
        let rc = unsafe { rdma_ack_cm_event(raw.as_ptr()) };
        // rdma_ack_cm_event only fails for an invalid event pointer (a bug here). The event
        // is returned either way: dropping it on an error would leave it unacknowledged in
        // our hands, and rdma_destroy_id of its id would then block forever.
        debug_assert_eq!(rc, 0, "rdma_ack_cm_event failed");
        event
    }
}

impl Drop for EventChannel {
    fn drop(&mut self) {
        // SAFETY: destroyed once; every CM id on it holds an Arc to it and is gone, and all
        // events were acknowledged in get_event.
        unsafe { rdma_destroy_event_channel(self.ptr.as_ptr()) };
    }
}

impl fmt::Debug for EventChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventChannel")
            .field("fd", &self.fd())
            .finish()
    }
}

/// Identifies a CM id in events without owning it (compare with [`CmId::token`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdToken(usize);

/// The kind of a CM event (`rdma_cm_event_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CmEventKind {
    /// `rdma_resolve_addr` finished.
    AddrResolved,
    /// `rdma_resolve_addr` failed.
    AddrError,
    /// `rdma_resolve_route` finished.
    RouteResolved,
    /// `rdma_resolve_route` failed.
    RouteError,
    /// A peer wants to connect (on a listening id); see [`CmEvent::new_id`].
    ConnectRequest,
    /// A connect response arrived for an id without a QP.
    ConnectResponse,
    /// The connection could not be set up.
    ConnectError,
    /// The peer did not answer.
    Unreachable,
    /// The peer rejected the connection; its private data and reason come with it.
    Rejected,
    /// The connection is up.
    Established,
    /// The connection is down (peer or local disconnect).
    Disconnected,
    /// The device went away.
    DeviceRemoval,
    /// The local address changed.
    AddrChange,
    /// The QP may be reused (time-wait ended).
    TimewaitExit,
    /// Any other event (multicast, ...), with its raw value.
    Other(u32),
}

impl CmEventKind {
    fn from_raw(raw: u32) -> Self {
        match raw {
            ev::RDMA_CM_EVENT_ADDR_RESOLVED => Self::AddrResolved,
            ev::RDMA_CM_EVENT_ADDR_ERROR => Self::AddrError,
            ev::RDMA_CM_EVENT_ROUTE_RESOLVED => Self::RouteResolved,
            ev::RDMA_CM_EVENT_ROUTE_ERROR => Self::RouteError,
            ev::RDMA_CM_EVENT_CONNECT_REQUEST => Self::ConnectRequest,
            ev::RDMA_CM_EVENT_CONNECT_RESPONSE => Self::ConnectResponse,
            ev::RDMA_CM_EVENT_CONNECT_ERROR => Self::ConnectError,
            ev::RDMA_CM_EVENT_UNREACHABLE => Self::Unreachable,
            ev::RDMA_CM_EVENT_REJECTED => Self::Rejected,
            ev::RDMA_CM_EVENT_ESTABLISHED => Self::Established,
            ev::RDMA_CM_EVENT_DISCONNECTED => Self::Disconnected,
            ev::RDMA_CM_EVENT_DEVICE_REMOVAL => Self::DeviceRemoval,
            ev::RDMA_CM_EVENT_ADDR_CHANGE => Self::AddrChange,
            ev::RDMA_CM_EVENT_TIMEWAIT_EXIT => Self::TimewaitExit,
            other => Self::Other(other),
        }
    }

    /// Events whose `param.conn` is filled in (and may carry private data).
    fn carries_conn_param(self) -> bool {
        matches!(
            self,
            Self::ConnectRequest | Self::ConnectResponse | Self::Established | Self::Rejected
        )
    }

    /// The librdmacm name without the `RDMA_CM_EVENT_` prefix, e.g. `ESTABLISHED`.
    pub fn name(self) -> &'static str {
        match self {
            Self::AddrResolved => "ADDR_RESOLVED",
            Self::AddrError => "ADDR_ERROR",
            Self::RouteResolved => "ROUTE_RESOLVED",
            Self::RouteError => "ROUTE_ERROR",
            Self::ConnectRequest => "CONNECT_REQUEST",
            Self::ConnectResponse => "CONNECT_RESPONSE",
            Self::ConnectError => "CONNECT_ERROR",
            Self::Unreachable => "UNREACHABLE",
            Self::Rejected => "REJECTED",
            Self::Established => "ESTABLISHED",
            Self::Disconnected => "DISCONNECTED",
            Self::DeviceRemoval => "DEVICE_REMOVAL",
            Self::AddrChange => "ADDR_CHANGE",
            Self::TimewaitExit => "TIMEWAIT_EXIT",
            Self::Other(_) => "OTHER",
        }
    }
}

impl fmt::Display for CmEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Other(n) => write!(f, "OTHER({n})"),
            k => f.write_str(k.name()),
        }
    }
}

/// A CM event, copied out and already acknowledged.
#[derive(Debug)]
pub struct CmEvent {
    /// What happened.
    pub kind: CmEventKind,
    /// 0, a negative errno (address/route/connect errors), or a transport reject reason.
    pub status: i32,
    /// The peer's private data (REQ on `ConnectRequest`, REP on `Established` for the active
    /// side, REJ on `Rejected`). On InfiniBand/RoCE it is zero-padded to the message's full
    /// private-data size (56 bytes for a REQ, 196 for a REP), so encode lengths explicitly.
    pub private_data: Vec<u8>,
    /// The id the event is about (for `ConnectRequest`: the new id).
    pub id: IdToken,
    /// For `ConnectRequest`: the listening id that received it.
    pub listen_id: Option<IdToken>,
    /// For `ConnectRequest`: the new id, owned by the receiver of the event.
    pub new_id: Option<Arc<CmId>>,
}

impl CmEvent {
    /// The errno text for a negative `status`, if it is one.
    pub fn status_text(&self) -> Option<String> {
        (self.status < 0).then(|| std::io::Error::from_raw_os_error(-self.status).to_string())
    }

    /// [`Error::UnexpectedCmEvent`] for this event when `expected` was wanted.
    pub fn unexpected(&self, expected: &'static str) -> Error {
        Error::UnexpectedCmEvent {
            expected,
            got: self.kind.name(),
            status: self.status,
            reason: self.status_text(),
        }
    }
}

/// Connection parameters for [`CmId::connect`] / [`CmId::accept`] (`rdma_conn_param`).
#[derive(Clone, Copy, Debug)]
pub struct ConnParams<'a> {
    /// Bytes for the peer (≤ 56 on connect, ≤ 196 on accept).
    pub private_data: &'a [u8],
    /// Outstanding RDMA READs/atomics the peer may issue to us.
    pub responder_resources: u8,
    /// Outstanding RDMA READs/atomics we may issue.
    pub initiator_depth: u8,
    /// Transport retries on lost packets (0..=7).
    pub retry_count: u8,
    /// Retries when the peer has no receive posted (0..=7, 7 = forever). Default 0: a
    /// correct peer never causes RNR, so any RNR must fail loudly instead of stalling.
    pub rnr_retry_count: u8,
}

impl Default for ConnParams<'_> {
    fn default() -> Self {
        ConnParams {
            private_data: &[],
            responder_resources: 1,
            initiator_depth: 1,
            retry_count: 7,
            rnr_retry_count: 0,
        }
    }
}

impl ConnParams<'_> {
    /// The C struct; borrows `private_data`, which librdmacm copies during the call.
    fn to_raw(self, what: &'static str, max_private: usize) -> Result<rdma_conn_param, Error> {
        if self.private_data.len() > max_private {
            return Err(Error::invalid(
                what,
                format!(
                    "{} bytes of private data, at most {max_private} fit",
                    self.private_data.len()
                ),
            ));
        }
        if self.retry_count > 7 || self.rnr_retry_count > 7 {
            return Err(Error::invalid(what, "retry counts must be 0..=7"));
        }
        Ok(rdma_conn_param {
            private_data: if self.private_data.is_empty() {
                ptr::null()
            } else {
                self.private_data.as_ptr().cast()
            },
            // Fits: checked against max_private (< 256) above.
            private_data_len: self.private_data.len() as u8,
            responder_resources: self.responder_resources,
            initiator_depth: self.initiator_depth,
            flow_control: 0,
            retry_count: self.retry_count,
            rnr_retry_count: self.rnr_retry_count,
            srq: 0,
            qp_num: 0,
        })
    }
}

/// An RDMA CM id (`rdma_cm_id`): one endpoint, listening or connected, like a socket.
///
/// Its events arrive on the [`EventChannel`] it was created on (ids for incoming requests
/// arrive on the listener's channel). A [`QueuePair`](super::QueuePair) can be attached
/// with [`QueuePair::create`](super::QueuePair::create); its PD and CQs must come from
/// [`CmId::context`].
pub struct CmId {
    ptr: NonNull<rdma_cm_id>,
    channel: Arc<EventChannel>,
    has_qp: AtomicBool,
}

// SAFETY: librdmacm calls are thread-safe; only Drop destroys the id. The fields we read
// directly (`route.addr.*`, `verbs`) are written by librdmacm inside rdma_get_cm_event on the
// id's channel and inside bind/resolve; all of those, and all our reads, happen under the
// channel's `fields` lock. `channel` itself changes only in `migrate`, which takes `&mut`.
unsafe impl Send for CmId {}
// SAFETY: see Send.
unsafe impl Sync for CmId {}

/// Converts a timeout to the `int` milliseconds librdmacm takes.
fn timeout_ms(t: Duration) -> i32 {
    t.as_millis().clamp(1, i32::MAX as u128) as i32
}

/// A socket address in the C layout `rdma_bind_addr`/`rdma_resolve_addr` read.
fn to_sockaddr(addr: SocketAddr) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid (AF_UNSPEC) value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { ptr::write(ptr::addr_of_mut!(storage).cast(), sin) };
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { ptr::write(ptr::addr_of_mut!(storage).cast(), sin6) };
        }
    }
    storage
}

/// Reads a socket address librdmacm stored in an id (`AF_INET`/`AF_INET6`; `None` for any
/// other family, e.g. before the address is known).
fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in; sockaddr_storage is
            // larger than and suitably aligned for it.
            let sin: libc::sockaddr_in = unsafe { ptr::read(ptr::addr_of!(*storage).cast()) };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6: libc::sockaddr_in6 = unsafe { ptr::read(ptr::addr_of!(*storage).cast()) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

impl CmId {
    /// Creates an id for reliable connections (`rdma_create_id`, `RDMA_PS_TCP`).
    pub fn new(channel: &Arc<EventChannel>) -> Result<Arc<Self>, Error> {
        let mut raw: *mut rdma_cm_id = ptr::null_mut();
        // SAFETY: the channel is live; `raw` is a valid out-pointer; no user context.
        let rc = unsafe {
            rdma_create_id(
                channel.ptr.as_ptr(),
                &mut raw,
                ptr::null_mut(),
                rdma_port_space::RDMA_PS_TCP,
            )
        };
        if rc != 0 {
            return Err(Error::last_os("rdma_create_id"));
        }
        let ptr = NonNull::new(raw).ok_or_else(|| Error::last_os("rdma_create_id"))?;
        Ok(Arc::new(CmId {
            ptr,
            channel: Arc::clone(channel),
            has_qp: AtomicBool::new(false),
        }))
    }

    /// The token that events about this id carry.
    pub fn token(&self) -> IdToken {
        IdToken(self.ptr.as_ptr() as usize)
    }

    /// The channel this id's events arrive on.
    pub fn channel(&self) -> &Arc<EventChannel> {
        &self.channel
    }

    /// Binds to a local address (`rdma_bind_addr`); port 0 picks a free port (see
    /// [`local_port`](Self::local_port)). Binding to an RDMA device's IP binds the id to it.
    pub fn bind(&self, addr: SocketAddr) -> Result<(), Error> {
        let mut sa = to_sockaddr(addr);
        let _fields = self.channel.lock_fields();
        // SAFETY: the id is live; `sa` is a properly initialised sockaddr of addr's family;
        // the id fields librdmacm fills in (src address, verbs) are not read concurrently.
        let rc = unsafe { rdma_bind_addr(self.ptr.as_ptr(), ptr::addr_of_mut!(sa).cast()) };
        if rc != 0 {
            return Err(Error::last_os("rdma_bind_addr"));
        }
        Ok(())
    }

    /// Starts listening (`rdma_listen`); requests arrive as `ConnectRequest` events.
    pub fn listen(&self, backlog: i32) -> Result<(), Error> {
        // SAFETY: the id is live.
        if unsafe { rdma_listen(self.ptr.as_ptr(), backlog) } != 0 {
            return Err(Error::last_os("rdma_listen"));
        }
        Ok(())
    }

    /// The local port (host order) after bind/resolve (`rdma_get_src_port`).
    pub fn local_port(&self) -> u16 {
        let _fields = self.channel.lock_fields();
        // SAFETY: the id is live; rdma_get_src_port reads the id's address fields, which
        // librdmacm writes only under the channel's `fields` lock (held here).
        u16::from_be(unsafe { rdma_get_src_port(self.ptr.as_ptr()) })
    }

    /// Starts resolving `dst` to an RDMA device and address (`rdma_resolve_addr`); finishes
    /// with an `AddrResolved` (or `AddrError`) event.
    pub fn resolve_addr(
        &self,
        src: Option<SocketAddr>,
        dst: SocketAddr,
        timeout: Duration,
    ) -> Result<(), Error> {
        let mut src_sa = src.map(to_sockaddr);
        let src_ptr = src_sa
            .as_mut()
            .map_or(ptr::null_mut(), |s| ptr::addr_of_mut!(*s).cast());
        let mut dst_sa = to_sockaddr(dst);
        let _fields = self.channel.lock_fields();
        // SAFETY: the id is live; src is null or a valid sockaddr, dst a valid sockaddr; both
        // are only read during the call. The id's address fields it stores are not read
        // concurrently (`_fields`).
        let rc = unsafe {
            rdma_resolve_addr(
                self.ptr.as_ptr(),
                src_ptr,
                ptr::addr_of_mut!(dst_sa).cast(),
                timeout_ms(timeout),
            )
        };
        if rc != 0 {
            return Err(Error::last_os("rdma_resolve_addr"));
        }
        Ok(())
    }

    /// Starts resolving the route (`rdma_resolve_route`); finishes with `RouteResolved`.
    pub fn resolve_route(&self, timeout: Duration) -> Result<(), Error> {
        let _fields = self.channel.lock_fields();
        // SAFETY: the id is live; route fields it may store are not read concurrently.
        if unsafe { rdma_resolve_route(self.ptr.as_ptr(), timeout_ms(timeout)) } != 0 {
            return Err(Error::last_os("rdma_resolve_route"));
        }
        Ok(())
    }

    /// Sends a connect request (`rdma_connect`); finishes with `Established` (or `Rejected`,
    /// `Unreachable`, `ConnectError`). Private data ≤ [`MAX_CONNECT_PRIVATE_DATA`].
    pub fn connect(&self, params: &ConnParams<'_>) -> Result<(), Error> {
        let mut raw = params.to_raw("rdma_connect", MAX_CONNECT_PRIVATE_DATA)?;
        let _fields = self.channel.lock_fields();
        // SAFETY: the id is live; `raw` and the private data it points to outlive the call.
        // rdma_connect reads `id->qp`, which rdma_destroy_qp frees and clears: the `fields`
        // lock (also taken by QueuePair::drop) keeps them apart.
        if unsafe { rdma_connect(self.ptr.as_ptr(), &mut raw) } != 0 {
            return Err(Error::last_os("rdma_connect"));
        }
        Ok(())
    }

    /// Accepts a connect request on this (new) id (`rdma_accept`); the passive side then
    /// gets `Established`. Private data ≤ [`MAX_ACCEPT_PRIVATE_DATA`].
    pub fn accept(&self, params: &ConnParams<'_>) -> Result<(), Error> {
        let mut raw = params.to_raw("rdma_accept", MAX_ACCEPT_PRIVATE_DATA)?;
        let _fields = self.channel.lock_fields();
        // SAFETY: the id is live; `raw` and the private data it points to outlive the call;
        // `id->qp` is read under the `fields` lock, as in connect.
        if unsafe { rdma_accept(self.ptr.as_ptr(), &mut raw) } != 0 {
            return Err(Error::last_os("rdma_accept"));
        }
        Ok(())
    }

    /// Rejects a connect request (`rdma_reject`) with a reason in the private data
    /// (≤ [`MAX_REJECT_PRIVATE_DATA`]).
    pub fn reject(&self, private_data: &[u8]) -> Result<(), Error> {
        if private_data.len() > MAX_REJECT_PRIVATE_DATA {
            return Err(Error::invalid(
                "rdma_reject",
                format!(
                    "{} bytes of private data, at most {MAX_REJECT_PRIVATE_DATA} fit",
                    private_data.len()
                ),
            ));
        }
        let data = if private_data.is_empty() {
            ptr::null()
        } else {
            private_data.as_ptr().cast()
        };
        // SAFETY: the id is live; `data` is null or `private_data.len()` readable bytes
        // (≤ 148, so the u8 length is exact).
        let rc = unsafe { rdma_reject(self.ptr.as_ptr(), data, private_data.len() as u8) };
        if rc != 0 {
            return Err(Error::last_os("rdma_reject"));
        }
        Ok(())
    }

    /// Disconnects (`rdma_disconnect`): moves the QP to the error state (posted work is
    /// flushed) and both sides get a `Disconnected` event.
    pub fn disconnect(&self) -> Result<(), Error> {
        let _fields = self.channel.lock_fields();
        // SAFETY: the id is live; rdma_disconnect moves `id->qp` to the error state, read
        // under the `fields` lock so that the QP cannot be destroyed meanwhile.
        if unsafe { rdma_disconnect(self.ptr.as_ptr()) } != 0 {
            return Err(Error::last_os("rdma_disconnect"));
        }
        Ok(())
    }

    /// Moves the id, with any events of it not yet read, to another event channel
    /// (`rdma_migrate_id`); its later events arrive there.
    ///
    /// A listener uses this to give each accepted connection its own channel, so that the
    /// connection's events (ESTABLISHED, DISCONNECTED) do not mix with new requests. The id
    /// must not be shared yet (no QP, no [`context`](Self::context), no other clone): the
    /// call refuses otherwise. Nobody may read the old channel during the call. Taking
    /// `&mut` also means no reader holds the old channel's `fields` lock for this id while
    /// the id switches to the new channel's lock.
    pub fn migrate(self: &mut Arc<Self>, channel: &Arc<EventChannel>) -> Result<(), Error> {
        let Some(id) = Arc::get_mut(self) else {
            return Err(Error::invalid(
                "rdma_migrate_id",
                "the CM id is shared (it has a QP, a context or another owner); migrate it \
                 first",
            ));
        };
        // SAFETY: the id and the channel are live; all events read from the old channel were
        // acknowledged in get_event (rdma_migrate_id waits for that). On success the id's
        // events go to `channel`, which the id then keeps alive instead of the old one.
        let rc = unsafe { rdma_migrate_id(id.ptr.as_ptr(), channel.ptr.as_ptr()) };
        if rc != 0 {
            return Err(Error::last_os("rdma_migrate_id"));
        }
        id.channel = Arc::clone(channel);
        Ok(())
    }

    /// The local address of the id (after bind, address resolution, or for an id from a
    /// `ConnectRequest`); `None` while it has none.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        let _fields = self.channel.lock_fields();
        // SAFETY: the id is live; route.addr.src_addr is plain data librdmacm fills in when
        // the address becomes known (a zeroed storage reads as AF_UNSPEC, i.e. None), only
        // while the channel's `fields` lock is held, as it is here.
        let storage = unsafe { (*self.ptr.as_ptr()).route.addr.src_addr_union.src_storage };
        from_sockaddr(&storage)
    }

    /// The peer's address (after address resolution, or for an id from a
    /// `ConnectRequest`); `None` while it has none.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        let _fields = self.channel.lock_fields();
        // SAFETY: as in local_addr, for route.addr.dst_addr (lock held).
        let storage = unsafe { (*self.ptr.as_ptr()).route.addr.dst_addr_union.dst_storage };
        from_sockaddr(&storage)
    }

    /// The device context the id is bound to (after bind to a device address, address
    /// resolution, or for a `ConnectRequest` id). PDs and CQs for this id's QP must be made
    /// from it. The context keeps the id alive.
    pub fn context(self: &Arc<Self>) -> Result<Arc<Context>, Error> {
        let fields = self.channel.lock_fields();
        // SAFETY: the id is live; `verbs` is a plain field librdmacm sets only under the
        // channel's `fields` lock (held here).
        let verbs = unsafe { (*self.ptr.as_ptr()).verbs };
        drop(fields);
        let ptr = NonNull::new(verbs).ok_or_else(|| {
            Error::invalid(
                "CmId::context",
                "the CM id is not bound to an RDMA device yet (bind to a device address or \
                 resolve an address first)",
            )
        })?;
        Ok(Context::from_cm(ptr, Arc::clone(self)))
    }

    /// The name of the device the id is bound to, if any.
    pub fn device_name(&self) -> Option<String> {
        let _fields = self.channel.lock_fields();
        // SAFETY: the id is live and `verbs` is read under the `fields` lock; a non-null
        // `verbs` is an open context (librdmacm keeps it open while the id exists) whose
        // `device` has a NUL-terminated name.
        unsafe {
            let verbs = (*self.ptr.as_ptr()).verbs;
            if verbs.is_null() {
                None
            } else {
                Some(c_str_lossy(ibv_get_device_name((*verbs).device)))
            }
        }
    }

    /// The raw pointer, for the sibling wrappers.
    pub(crate) fn as_ptr(&self) -> *mut rdma_cm_id {
        self.ptr.as_ptr()
    }

    /// Marks the id as having a QP; false if it already had one.
    pub(crate) fn claim_qp(&self) -> bool {
        self.has_qp
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Runs `f` holding the lock that keeps the id's QP from being destroyed (tests use it
    /// to check that [`QueuePair`](super::QueuePair)'s drop waits for it).
    #[doc(hidden)]
    pub fn with_qp_lock<T>(&self, f: impl FnOnce() -> T) -> T {
        let _fields = self.channel.lock_fields();
        f()
    }

    /// Marks the id's QP as destroyed.
    pub(crate) fn release_qp(&self) {
        self.has_qp.store(false, Ordering::Release);
    }
}

impl Drop for CmId {
    fn drop(&mut self) {
        // SAFETY: destroyed once. Its QP (if any) holds an Arc to the id, so it was destroyed
        // first; all its events were acknowledged in get_event. Errors cannot be acted on.
        unsafe { rdma_destroy_id(self.ptr.as_ptr()) };
    }
}

impl fmt::Debug for CmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CmId")
            .field("token", &self.token())
            .field("device", &self.device_name())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_data_limits_are_enforced_before_the_call() {
        let long = [0u8; 57];
        let p = ConnParams {
            private_data: &long,
            ..ConnParams::default()
        };
        let Err(err) = p.to_raw("rdma_connect", MAX_CONNECT_PRIVATE_DATA) else {
            panic!("57 bytes of REQ private data were accepted");
        };
        assert!(err.to_string().contains("57 bytes"), "{err}");
        let raw = p.to_raw("rdma_accept", MAX_ACCEPT_PRIVATE_DATA).unwrap();
        assert_eq!(raw.private_data_len, 57);
        assert_eq!(raw.rnr_retry_count, 0, "RNR must be loud by default");
    }

    #[test]
    fn sockaddr_layout_is_network_order() {
        let sa = to_sockaddr("10.77.0.1:7471".parse().unwrap());
        // SAFETY: to_sockaddr wrote a sockaddr_in into the storage for a V4 address.
        let sin: libc::sockaddr_in = unsafe { ptr::read(ptr::addr_of!(sa).cast()) };
        assert_eq!(sin.sin_family, libc::AF_INET as libc::sa_family_t);
        assert_eq!(u16::from_be(sin.sin_port), 7471);
        assert_eq!(sin.sin_addr.s_addr.to_ne_bytes(), [10, 77, 0, 1]);
    }

    #[test]
    fn sockaddr_round_trips() {
        for text in ["10.77.0.1:7471", "[fd00::7]:9", "0.0.0.0:0"] {
            let addr: SocketAddr = text.parse().unwrap();
            assert_eq!(from_sockaddr(&to_sockaddr(addr)), Some(addr), "{text}");
        }
        // SAFETY: all-zero sockaddr_storage is valid plain data (AF_UNSPEC).
        let unspec: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        assert_eq!(from_sockaddr(&unspec), None);
    }

    #[test]
    fn event_names() {
        assert_eq!(CmEventKind::from_raw(9), CmEventKind::Established);
        assert_eq!(CmEventKind::Established.to_string(), "ESTABLISHED");
        assert_eq!(CmEventKind::from_raw(99).to_string(), "OTHER(99)");
    }
}
