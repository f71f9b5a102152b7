//! The verbs resources of one connection, shared by both roles: the CM id on its own event
//! channel, PD, CQ with a completion channel, and the RC QP. Receive buffers, the ring and
//! the slots are registered by the role in this connection's PD and kept beside it, declared
//! after it so that they are deregistered after the QP is gone.

use crate::verbs::{
    Access, CmEvent, CmEventKind, CmId, CompletionChannel, CompletionQueue, DeviceLimits,
    EventChannel, MemoryRegion, Pages, ProtectionDomain, QpCaps, QueuePair,
};
use crate::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Resources exist, the connection is not established: nothing to disconnect.
    Setup,
    /// Established: Drop must disconnect.
    Connected,
    /// We called `rdma_disconnect`; the DISCONNECTED event is still to come.
    Disconnecting,
    /// A DISCONNECTED event was seen (ours or the peer's).
    Closed,
}

/// One connection's resources. Fields drop in declaration order, children first: the QP,
/// then the CQ (which holds its completion channel), PD, CM id and event channel.
#[derive(Debug)]
pub(crate) struct Endpoint {
    qp: QueuePair,
    cq: Arc<CompletionQueue>,
    pd: Arc<ProtectionDomain>,
    id: Arc<CmId>,
    events: Arc<EventChannel>,
    device: String,
    state: State,
}

impl Endpoint {
    /// The device limits of `id`'s context (it must be bound to a device already).
    pub(crate) fn device_limits(id: &Arc<CmId>) -> Result<DeviceLimits, Error> {
        id.context()?.limits()
    }

    /// Creates PD, completion channel, CQ and an RC QP on `id` (whose events arrive on
    /// `events`) with room for `send_wr` sends and `recv_wr` receives.
    pub(crate) fn new(
        id: Arc<CmId>,
        events: Arc<EventChannel>,
        send_wr: u32,
        recv_wr: u32,
    ) -> Result<Self, Error> {
        let ctx = id.context()?;
        let device = ctx.device_name();
        // spec: [pd.own]
        let pd = ProtectionDomain::new(&ctx)?;
        let comp = CompletionChannel::new(&ctx)?;
        let cq_entries = send_wr
            .checked_add(recv_wr)
            .ok_or_else(|| Error::invalid("Endpoint::new", "queue sizes overflow"))?;
        let cq = CompletionQueue::new(&ctx, cq_entries, Some(&comp))?;
        let qp = QueuePair::create(
            &id,
            &pd,
            &cq,
            &cq,
            QpCaps {
                max_send_wr: send_wr,
                max_recv_wr: recv_wr,
                ..QpCaps::default()
            },
        )?;
        Ok(Endpoint {
            qp,
            cq,
            pd,
            id,
            events,
            device,
            state: State::Setup,
        })
    }

    /// Registers `len` bytes of memory on `pages` with `access` in this connection's PD.
    pub(crate) fn register(
        &self,
        len: u64,
        access: Access,
        pages: Pages,
    ) -> Result<MemoryRegion, Error> {
        let len = usize::try_from(len).map_err(|_| {
            Error::invalid("register data memory", format!("{len} bytes do not fit"))
        })?;
        // spec: [pd.own]
        MemoryRegion::with_pages(&self.pd, len, access, pages)
    }

    /// Marks the connection established (Drop will disconnect it).
    pub(crate) fn established(&mut self) {
        self.state = State::Connected;
    }

    pub(crate) fn id(&self) -> &Arc<CmId> {
        &self.id
    }

    pub(crate) fn events(&self) -> &Arc<EventChannel> {
        &self.events
    }

    pub(crate) fn qp(&self) -> &QueuePair {
        &self.qp
    }

    pub(crate) fn cq(&self) -> &Arc<CompletionQueue> {
        &self.cq
    }

    pub(crate) fn device(&self) -> &str {
        &self.device
    }

    pub(crate) fn peer_addr(&self) -> Option<SocketAddr> {
        self.id.peer_addr()
    }

    /// Asks for the connection to close (`rdma_disconnect`) without waiting: the QP goes to
    /// the error state, posted work is flushed, and a DISCONNECTED event follows.
    pub(crate) fn request_disconnect(&mut self) {
        if self.state == State::Connected {
            let _ = self.id.disconnect();
            self.state = State::Disconnecting;
        }
    }

    /// The next connection event, without waiting; a DISCONNECTED is answered (the CM expects
    /// the peer's disconnect request to be answered) and marks the connection closed.
    pub(crate) fn poll_event(&mut self) -> Result<Option<CmEventKind>, Error> {
        let Some(e) = self.events.get_event(Duration::ZERO)? else {
            return Ok(None);
        };
        if e.kind == CmEventKind::Disconnected {
            if self.state == State::Connected {
                let _ = self.id.disconnect();
            }
            self.state = State::Closed;
        }
        Ok(Some(e.kind))
    }

    /// True once a DISCONNECTED event was seen.
    pub(crate) fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Waits up to `timeout` for the connection to close (a DISCONNECTED event). When the
    /// peer closed it, this answers the peer's disconnect request, as the CM expects.
    pub(crate) fn wait_disconnected(&mut self, timeout: Duration) -> Result<(), Error> {
        if self.state == State::Closed {
            return Ok(());
        }
        let deadline = crate::deadline::deadline(timeout);
        loop {
            let e = next_event(&self.events, deadline, timeout, "the peer to disconnect")?;
            match e.kind {
                CmEventKind::Disconnected => {
                    if self.state == State::Connected {
                        // The peer disconnected first: answer its request (the DREP), or it
                        // waits for its own DISCONNECTED until the CM's timeout.
                        let _ = self.id.disconnect();
                    }
                    self.state = State::Closed;
                    return Ok(());
                }
                // Nothing to do about these on an established connection.
                CmEventKind::AddrChange | CmEventKind::Established => {}
                _ => return Err(e.unexpected("DISCONNECTED")),
            }
        }
    }

    /// Disconnects (`rdma_disconnect`: the QP goes to the error state, posted work is
    /// flushed) and waits up to `timeout` for the DISCONNECTED event that confirms it.
    pub(crate) fn disconnect(&mut self, timeout: Duration) -> Result<(), Error> {
        match self.state {
            State::Closed => return Ok(()),
            State::Setup => {
                self.state = State::Closed;
                return Ok(());
            }
            State::Connected | State::Disconnecting => {}
        }
        // If the peer disconnected first this fails, and its DISCONNECTED is already queued:
        // the wait below picks it up, so the error only matters if that event never comes.
        let requested = self.id.disconnect();
        self.state = State::Disconnecting;
        match self.wait_disconnected(timeout) {
            Ok(()) => Ok(()),
            Err(e) => Err(requested.err().unwrap_or(e)),
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if self.state == State::Connected {
            // Tell the peer without waiting for its answer; destroying the id (after the QP,
            // see the field order) cleans up whatever the answer would have done.
            let _ = self.id.disconnect();
        }
    }
}

/// The next connection event on `ch` before `deadline`, skipping TIMEWAIT_EXIT (which says
/// nothing about the connection's state); a timeout is an error naming `what`, with `total`
/// as the time waited.
pub fn next_event(
    ch: &Arc<EventChannel>,
    deadline: Instant,
    total: Duration,
    what: &str,
) -> Result<CmEvent, Error> {
    next_event_unless(ch, deadline, total, what, &|| false)
}

/// How often a wait for a connection event looks whether it was cancelled.
const CANCEL_POLL: Duration = Duration::from_millis(100);

/// [`next_event`], giving up with [`Error::Cancelled`] as soon as `cancelled()` says so
/// (looked at least every 100 ms).
pub(crate) fn next_event_unless(
    ch: &Arc<EventChannel>,
    deadline: Instant,
    total: Duration,
    what: &str,
    cancelled: &dyn Fn() -> bool,
) -> Result<CmEvent, Error> {
    loop {
        if cancelled() {
            return Err(Error::Cancelled);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match ch.get_event(left.min(CANCEL_POLL))? {
            Some(e) if e.kind == CmEventKind::TimewaitExit => {}
            Some(e) => return Ok(e),
            None if left.is_zero() || Instant::now() >= deadline => {
                return Err(Error::timeout(what, total));
            }
            None => {}
        }
    }
}
