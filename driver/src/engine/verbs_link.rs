//! The links over verbs: what the engine posts becomes work requests on the connection's QP,
//! its completions come from the CQ, and its waits sleep in `poll(2)` on the completion
//! channel, the connection's CM event channel and an eventfd the I/O thread pokes.

use super::{wr, RecvCompletion, RecvLink, Ring, SendCompletion, SendLink};
use crate::handoff::{Wake, Waker};
use crate::session::{ReceiverConn, SenderConn};
use crate::verbs::{RemoteBuffer, SendWr, Slot, WcOpcode, WcStatus, WorkCompletion};
use crate::Error;
use rdmaft_protocol::{ChunkWrite, ControlWrite, CTRL_MSG_MAX, RECEIVER_MSG_MAX};
use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags};
use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

/// A waker over an eventfd: the engine's thread sleeps in `poll(2)` on it.
#[derive(Debug)]
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    pub(crate) fn new() -> Result<Arc<EventFd>, Error> {
        let fd = eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC).map_err(|e| {
            Error::Verb {
                verb: "eventfd",
                source: e.into(),
            }
        })?;
        Ok(Arc::new(EventFd(fd)))
    }

    /// Clears pending wake-ups.
    pub(crate) fn drain(&self) {
        let mut b = [0u8; 8];
        let _ = rustix::io::read(&self.0, &mut b);
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Wake for EventFd {
    fn wake(&self) {
        // A full counter (impossible in practice) means a wake is pending anyway.
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }
}

/// Sleeps until one of `fds` is readable or `timeout` passes.
fn wait_fds(fds: &[BorrowedFd<'_>], timeout: Duration) -> Result<(), Error> {
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(fd, PollFlags::IN))
        .collect();
    let ms = i32::try_from(timeout.as_millis().max(1)).unwrap_or(i32::MAX);
    match poll(&mut pfds, ms) {
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
        Err(e) => Err(Error::Verb {
            verb: "poll",
            source: e.into(),
        }),
    }
}

/// The error for a failed completion, or `None` for a flush after the connection went down
/// (expected at teardown). It names the work request by what it was (not by its id) and, for
/// a write the receiver refused, says whose memory was wrong.
fn completion_error(wc: &WorkCompletion, closing: bool, peer: &str) -> Option<Error> {
    if wc.status == WcStatus::FLUSHED {
        if closing {
            return None;
        }
        return Some(Error::ConnectionLost {
            peer: peer.to_owned(),
            detail: "the connection went down (work flushed)".into(),
        });
    }
    let (what, write) = work_name(wc.wr_id);
    let hint = if write && wc.status == WcStatus::REMOTE_ACCESS {
        ": the receiver does not let us write where its accept said (its ring's address, \
         length or key is wrong)"
    } else {
        ""
    };
    Some(Error::ConnectionLost {
        peer: peer.to_owned(),
        detail: format!(
            "{what} failed: {} (status {}, vendor error {:#x}){hint}",
            wc.status.text(),
            wc.status.0,
            wc.vendor_err
        ),
    })
}

/// What a work request was, for messages, and whether it was an RDMA write.
fn work_name(wr_id: u64) -> (String, bool) {
    let n = wr::number(wr_id);
    match wr::kind(wr_id) {
        wr::CHUNK => (format!("the RDMA write of chunk {n}"), true),
        wr::CONTROL => ("an RDMA write of a control message".into(), true),
        wr::ACK => ("an RDMA write of an ack".into(), true),
        wr::SEND => (format!("the SEND of message {n}"), false),
        wr::RECV => ("a receive".into(), false),
        _ => (format!("work request {wr_id}"), false),
    }
}

/// Posted work requests whose completion is not known yet, oldest first. The sender signals
/// only some (every chunk, whose slot waits for it, and the last request of each chain); on
/// a reliable-connected QP requests complete in order, so a completion also completes every
/// request posted before it. An id names the oldest request in flight that has it: ids
/// repeat only across chains (a control slot is reused once the receiver has taken its
/// message, which an earlier chain carried), and an earlier chain's completions come first.
/// Within a chain they are distinct: chunks carry their sequence number, acks a count, and
/// a chain holds at most one message per control slot (the receiver's credits).
#[derive(Debug, Default)]
struct InFlight(VecDeque<u64>);

impl InFlight {
    fn posted(&mut self, wr_ids: impl IntoIterator<Item = u64>) {
        self.0.extend(wr_ids);
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// The requests a completion of `wr_id` ends, oldest first, `wr_id` last; none when
    /// `wr_id` is not in flight.
    fn through(&mut self, wr_id: u64) -> std::collections::vec_deque::Drain<'_, u64> {
        let n = self
            .0
            .iter()
            .position(|&id| id == wr_id)
            .map_or(0, |i| i + 1);
        self.0.drain(..n)
    }
}

/// The sender's link over a [`SenderConn`].
#[derive(Debug)]
pub(crate) struct VerbsSendLink {
    conn: SenderConn,
    remote: RemoteBuffer,
    wake: Arc<EventFd>,
    /// Requests made since the last [`flush`](SendLink::flush): posted together, one
    /// doorbell (one system call on Soft-RoCE) for a round's writes.
    pending: Vec<SendWr>,
    in_flight: InFlight,
    /// Acks posted (their work requests' numbers).
    acks: u64,
    capacity: usize,
    stash: Vec<WorkCompletion>,
    closing: bool,
    down: bool,
    peer: String,
}

impl VerbsSendLink {
    pub(crate) fn new(conn: SenderConn) -> Result<Self, Error> {
        let ring = conn.negotiated.ring;
        let capacity = conn.endpoint.qp().caps().max_send_wr as usize;
        let peer = conn
            .peer_addr()
            .map_or_else(|| "the receiver".into(), |a| a.to_string());
        conn.endpoint.cq().req_notify(false)?;
        Ok(VerbsSendLink {
            conn,
            remote: RemoteBuffer {
                addr: ring.addr,
                rkey: ring.rkey,
                len: ring.len,
            },
            wake: EventFd::new()?,
            pending: Vec::with_capacity(capacity),
            in_flight: InFlight::default(),
            acks: 0,
            capacity,
            stash: Vec::new(),
            closing: false,
            down: false,
            peer,
        })
    }

    /// Points later writes at `remote` instead; returns the ring they went to. Only the
    /// hostile-peer tests' sender does this (to aim at another connection's ring).
    #[cfg(feature = "internals")]
    pub(crate) fn aim_at(&mut self, remote: RemoteBuffer) -> RemoteBuffer {
        std::mem::replace(&mut self.remote, remote)
    }

    /// The slots, for the engine (taken once).
    pub(crate) fn take_slots(&mut self) -> Option<crate::verbs::SlotArea> {
        self.conn.slots.take()
    }

    fn offset_of(&self, remote_addr: u64) -> Result<u64, Error> {
        remote_addr
            .checked_sub(self.remote.addr)
            .ok_or_else(|| Error::invalid("post", "remote address below the ring"))
    }

    /// Posted or pending requests not known complete.
    fn outstanding(&self) -> usize {
        self.pending.len() + self.in_flight.len()
    }
}

impl SendLink for VerbsSendLink {
    fn post_control(&mut self, c: &ControlWrite, bytes: &[u8]) -> Result<(), Error> {
        let at = c.slot as usize * CTRL_MSG_MAX;
        self.conn.ctrl_bufs.copy_in(at, bytes)?;
        let remote_offset = self.offset_of(c.remote_addr)?;
        let wr = self.conn.endpoint.qp().write_with_imm_wr(
            wr::CONTROL | u64::from(c.slot),
            &self.conn.ctrl_bufs,
            at..at + bytes.len(),
            &self.remote,
            remote_offset,
            c.imm,
        )?;
        self.pending.push(wr);
        Ok(())
    }

    fn post_ack(&mut self, imm: u32) -> Result<(), Error> {
        self.acks = self.acks.wrapping_add(1);
        let id = ack_id(self.acks);
        let wr = self.conn.endpoint.qp().imm_only_wr(id, &self.remote, imm)?;
        self.pending.push(wr);
        Ok(())
    }

    fn post_chunk(&mut self, w: &ChunkWrite, slot: &Slot) -> Result<(), Error> {
        let (mr, range) = slot
            .region(w.len as usize)
            .ok_or_else(|| Error::invalid("post_chunk", "slot memory is not registered"))?;
        let remote_offset = self.offset_of(w.remote_addr)?;
        let wr = self.conn.endpoint.qp().write_with_imm_wr(
            wr::CHUNK | w.seq,
            mr,
            range,
            &self.remote,
            remote_offset,
            w.imm,
        )?;
        // Its slot is refilled only after its own completion.
        self.pending.push(wr.signaled(true));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        let Some(last) = self.pending.pop() else {
            return Ok(());
        };
        // The chain's last request is signaled, so every request in it is seen to end.
        self.pending.push(last.signaled(true));
        let (posted, result) = match self.conn.endpoint.qp().post_list(&self.pending) {
            Ok(()) => (self.pending.len(), Ok(())),
            Err((posted, e)) => (posted, Err(e)),
        };
        // A failed post ends the session: what it did not post is forgotten, what it did is
        // still waited for (an abort's chain, or the flush of a broken QP, ends it).
        self.in_flight
            .posted(self.pending.drain(..).take(posted).map(|w| w.wr_id()));
        result
    }

    fn send_room(&self) -> usize {
        self.capacity.saturating_sub(self.outstanding())
    }

    fn is_idle(&self) -> bool {
        self.outstanding() == 0
    }

    fn poll(&mut self, out: &mut Vec<SendCompletion>) -> Result<(), Error> {
        self.flush()?;
        let cq = std::sync::Arc::clone(self.conn.endpoint.cq());
        let mut batch = [WorkCompletion::default(); 32];
        loop {
            let mut wcs = std::mem::take(&mut self.stash);
            let n = cq.poll(&mut batch)?;
            wcs.extend_from_slice(&batch[..n]);
            if wcs.is_empty() {
                return Ok(());
            }
            for wc in wcs {
                if wr::kind(wc.wr_id) != wr::RECV {
                    // The unsignaled requests before this one ended well.
                    let mut ended = self.in_flight.through(wc.wr_id);
                    ended.next_back();
                    out.extend(ended.map(send_done));
                }
                if !wc.status.is_success() {
                    if let Some(e) = completion_error(&wc, self.closing || self.down, &self.peer) {
                        return Err(e);
                    }
                    continue;
                }
                if wr::kind(wc.wr_id) != wr::RECV {
                    out.push(send_done(wc.wr_id));
                    continue;
                }
                let i = wr::number(wc.wr_id) as usize;
                let len = (wc.byte_len as usize).min(RECEIVER_MSG_MAX);
                let mut bytes = [0u8; RECEIVER_MSG_MAX];
                self.conn
                    .recv_bufs
                    .copy_out(i * RECEIVER_MSG_MAX, &mut bytes[..len])?;
                // Reposted before the message is processed (PROTOCOL.md §3.4).
                self.conn.endpoint.qp().post_recv(
                    wc.wr_id,
                    &self.conn.recv_bufs,
                    i * RECEIVER_MSG_MAX..(i + 1) * RECEIVER_MSG_MAX,
                )?;
                out.push(SendCompletion::Message(bytes, len));
            }
        }
    }

    fn wait(&mut self, timeout: Duration) -> Result<(), Error> {
        self.flush()?;
        let cq = std::sync::Arc::clone(self.conn.endpoint.cq());
        cq.req_notify(false)?;
        // A completion that came before the arming does not signal: look once more.
        let mut batch = [WorkCompletion::default(); 32];
        let n = cq.poll(&mut batch)?;
        if n > 0 {
            self.stash.extend_from_slice(&batch[..n]);
            return Ok(());
        }
        let events = std::sync::Arc::clone(self.conn.endpoint.events());
        let fds = [cq.channel_as_fd()?, self.wake.fd(), events.as_fd()];
        wait_fds(&fds, timeout)?;
        cq.take_events()?;
        self.wake.drain();
        Ok(())
    }

    fn waker(&self) -> Waker {
        self.wake.clone()
    }

    fn close(&mut self) {
        // What the round made still goes (a failed post shows in the close's own checks).
        let _ = self.flush();
        self.closing = true;
        self.conn.endpoint.request_disconnect();
    }

    fn is_down(&mut self) -> bool {
        while let Ok(Some(kind)) = self.conn.endpoint.poll_event() {
            if kind == crate::verbs::CmEventKind::Disconnected {
                self.down = true;
            }
        }
        self.down || self.conn.endpoint.is_closed()
    }

    fn peer(&self) -> String {
        self.peer.clone()
    }
}

/// The work request id of ack number `n`: numbered, so that no two in one chain share an
/// id (`InFlight::through`).
fn ack_id(n: u64) -> u64 {
    wr::ACK | (n & wr::NUMBER)
}

/// What a successful send-queue request tells the engine.
fn send_done(wr_id: u64) -> SendCompletion {
    match wr::kind(wr_id) {
        wr::CHUNK => SendCompletion::ChunkDone(wr::number(wr_id)),
        _ => SendCompletion::Sent,
    }
}

/// The receiver's link over a [`ReceiverConn`].
#[derive(Debug)]
pub(crate) struct VerbsRecvLink {
    conn: ReceiverConn,
    wake: Arc<EventFd>,
    outstanding: usize,
    capacity: usize,
    depth: u64,
    stash: Vec<WorkCompletion>,
    closing: bool,
    down: bool,
    peer: String,
}

impl VerbsRecvLink {
    pub(crate) fn new(conn: ReceiverConn) -> Result<Self, Error> {
        let capacity = conn.endpoint.qp().caps().max_send_wr as usize;
        let depth = u64::from(conn.negotiated.sender_ctrl_depth);
        let peer = conn
            .peer_addr()
            .map_or_else(|| "the sender".into(), |a| a.to_string());
        conn.endpoint.cq().req_notify(false)?;
        Ok(VerbsRecvLink {
            conn,
            wake: EventFd::new()?,
            outstanding: 0,
            capacity,
            depth,
            stash: Vec::new(),
            closing: false,
            down: false,
            peer,
        })
    }
}

impl RecvLink for VerbsRecvLink {
    fn post_message(&mut self, n: u64, bytes: &[u8]) -> Result<(), Error> {
        let at = (n % self.depth) as usize * RECEIVER_MSG_MAX;
        self.conn.send_bufs.copy_in(at, bytes)?;
        self.conn.endpoint.qp().post_send(
            wr::SEND | n,
            &self.conn.send_bufs,
            at..at + bytes.len(),
            true,
        )?;
        self.outstanding += 1;
        Ok(())
    }

    fn send_room(&self) -> usize {
        self.capacity.saturating_sub(self.outstanding)
    }

    fn is_idle(&self) -> bool {
        self.outstanding == 0
    }

    fn poll(&mut self, out: &mut Vec<RecvCompletion>) -> Result<(), Error> {
        let cq = std::sync::Arc::clone(self.conn.endpoint.cq());
        let mut batch = [WorkCompletion::default(); 32];
        loop {
            let mut wcs = std::mem::take(&mut self.stash);
            let n = cq.poll(&mut batch)?;
            wcs.extend_from_slice(&batch[..n]);
            if wcs.is_empty() {
                return Ok(());
            }
            for wc in wcs {
                let recv = wr::kind(wc.wr_id) == wr::RECV;
                if !recv {
                    self.outstanding = self.outstanding.saturating_sub(1);
                }
                if !wc.status.is_success() {
                    if let Some(e) = completion_error(&wc, self.closing || self.down, &self.peer) {
                        return Err(e);
                    }
                    continue;
                }
                if !recv {
                    out.push(RecvCompletion::Sent);
                    continue;
                }
                // Reposted before the completion is handed in (PROTOCOL.md §3.4).
                self.conn
                    .endpoint
                    .qp()
                    .post_recv_bufferless(crate::engine::wr::RECV)?;
                match (wc.opcode, wc.imm) {
                    (WcOpcode::RecvRdmaWithImm, Some(imm)) => out.push(RecvCompletion::Write {
                        imm,
                        len: wc.byte_len,
                    }),
                    _ => {
                        return Err(Error::ConnectionLost {
                            peer: self.peer.clone(),
                            detail: "the sender used a SEND; rdmaft senders only write".into(),
                        })
                    }
                }
            }
        }
    }

    fn ring(&self) -> Arc<dyn Ring> {
        self.conn.ring.clone()
    }

    fn wait(&mut self, timeout: Duration) -> Result<(), Error> {
        let cq = std::sync::Arc::clone(self.conn.endpoint.cq());
        cq.req_notify(false)?;
        let mut batch = [WorkCompletion::default(); 32];
        let n = cq.poll(&mut batch)?;
        if n > 0 {
            self.stash.extend_from_slice(&batch[..n]);
            return Ok(());
        }
        let events = std::sync::Arc::clone(self.conn.endpoint.events());
        let fds = [cq.channel_as_fd()?, self.wake.fd(), events.as_fd()];
        wait_fds(&fds, timeout)?;
        cq.take_events()?;
        self.wake.drain();
        Ok(())
    }

    fn waker(&self) -> Waker {
        self.wake.clone()
    }

    fn close(&mut self) {
        self.closing = true;
        self.conn.endpoint.request_disconnect();
    }

    fn is_down(&mut self) -> bool {
        while let Ok(Some(kind)) = self.conn.endpoint.poll_event() {
            if kind == crate::verbs::CmEventKind::Disconnected {
                self.down = true;
            }
        }
        self.down || self.conn.endpoint.is_closed()
    }

    fn peer(&self) -> String {
        self.peer.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(wr_id: u64, status: WcStatus) -> String {
        let wc = WorkCompletion {
            wr_id,
            status,
            ..WorkCompletion::default()
        };
        completion_error(&wc, false, "10.0.0.1:7")
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn a_refused_write_names_the_receivers_ring() {
        let err = failed(wr::CONTROL | 3, WcStatus::REMOTE_ACCESS);
        assert!(
            err.starts_with(
                "connection to 10.0.0.1:7 lost: an RDMA write of a control message failed: \
                 remote access error (status 10"
            ),
            "{err}"
        );
        assert!(err.contains("its ring's address, length or key"), "{err}");
        let err = failed(wr::CHUNK | 5, WcStatus::REMOTE_ACCESS);
        assert!(err.contains("the RDMA write of chunk 5 failed"), "{err}");
        // Other failures say what failed, without the hint.
        let err = failed(wr::SEND | 2, WcStatus::RNR_RETRY_EXCEEDED);
        assert!(err.contains("the SEND of message 2 failed"), "{err}");
        assert!(!err.contains("ring"), "{err}");
    }

    #[test]
    fn a_flush_is_expected_only_when_closing() {
        let wc = WorkCompletion {
            wr_id: wr::RECV,
            status: WcStatus::FLUSHED,
            ..WorkCompletion::default()
        };
        assert!(completion_error(&wc, true, "p").is_none());
        let err = completion_error(&wc, false, "p").unwrap().to_string();
        assert!(err.contains("work flushed"), "{err}");
    }

    #[test]
    fn a_completion_ends_the_requests_posted_before_it() {
        let mut f = InFlight::default();
        f.posted([wr::CONTROL | 1, wr::CHUNK | 7, wr::ACK, wr::CONTROL | 2]);
        let ended: Vec<u64> = f.through(wr::CHUNK | 7).collect();
        assert_eq!(ended, [wr::CONTROL | 1, wr::CHUNK | 7]);
        assert_eq!(f.len(), 2);
        // A request not in flight ends nothing.
        assert_eq!(f.through(wr::CHUNK | 9).count(), 0);
        assert_eq!(f.len(), 2);
        // An id posted again (a control slot reused) is its oldest request first.
        f.posted([wr::CONTROL | 1]);
        let ended: Vec<u64> = f.through(wr::CONTROL | 2).collect();
        assert_eq!(ended, [wr::ACK, wr::CONTROL | 2]);
        let ended: Vec<u64> = f.through(wr::CONTROL | 1).collect();
        assert_eq!(ended, [wr::CONTROL | 1]);
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn an_ended_chunk_frees_its_slot_and_other_requests_are_only_sent() {
        assert!(matches!(
            send_done(wr::CHUNK | 5),
            SendCompletion::ChunkDone(5)
        ));
        for other in [wr::CONTROL | 5, wr::ACK, wr::SEND | 5] {
            assert!(matches!(send_done(other), SendCompletion::Sent));
        }
    }

    #[test]
    fn acks_are_numbered_so_one_chain_never_repeats_an_id() {
        for n in [1, 2, 0x00ff_ffff_ffff_ffff] {
            assert_eq!(wr::kind(ack_id(n)), wr::ACK);
            assert_eq!(wr::number(ack_id(n)), n);
        }
        assert_ne!(ack_id(1), ack_id(2));
    }
}
