//! Completion queues and completion channels.

use super::device::Context;
use super::{c_str_lossy, last_error_is_again, set_nonblocking, wait_readable};
use crate::Error;
use rdma_sys::{
    ibv_ack_cq_events, ibv_comp_channel, ibv_cq, ibv_create_comp_channel, ibv_create_cq,
    ibv_destroy_comp_channel, ibv_destroy_cq, ibv_get_cq_event, ibv_poll_cq, ibv_req_notify_cq,
    ibv_wc, ibv_wc_flags, ibv_wc_opcode, ibv_wc_status, ibv_wc_status_str,
};
use std::fmt;
use std::os::fd::{BorrowedFd, RawFd};
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::time::Duration;

/// A completion channel (`ibv_comp_channel`): a file descriptor that becomes readable when
/// an armed CQ gets a completion, so a poller can sleep instead of spinning.
///
/// Its fd is non-blocking; [`CompletionQueue::wait_event`] waits on it with a timeout.
pub struct CompletionChannel {
    ptr: NonNull<ibv_comp_channel>,
    ctx: Arc<Context>,
}

// SAFETY: verbs objects may be used from any thread; only Drop destroys the channel.
unsafe impl Send for CompletionChannel {}
// SAFETY: see Send.
unsafe impl Sync for CompletionChannel {}

impl CompletionChannel {
    /// Creates a channel on `ctx` (`ibv_create_comp_channel`) and makes its fd non-blocking.
    pub fn new(ctx: &Arc<Context>) -> Result<Arc<Self>, Error> {
        // SAFETY: `ctx` is a live, open context.
        let raw = unsafe { ibv_create_comp_channel(ctx.as_ptr()) };
        let ptr = NonNull::new(raw).ok_or_else(|| Error::last_os("ibv_create_comp_channel"))?;
        let chan = Arc::new(CompletionChannel {
            ptr,
            ctx: Arc::clone(ctx),
        });
        set_nonblocking(chan.fd(), "fcntl(comp_channel, O_NONBLOCK)")?;
        Ok(chan)
    }

    /// The channel's file descriptor (for an external `poll`/`epoll` loop).
    pub fn fd(&self) -> RawFd {
        // SAFETY: the channel is live; `fd` is a plain field set at creation.
        unsafe { (*self.ptr.as_ptr()).fd }
    }
}

impl Drop for CompletionChannel {
    fn drop(&mut self) {
        // SAFETY: destroyed once; every CQ using the channel holds an Arc to it and is gone.
        unsafe { ibv_destroy_comp_channel(self.ptr.as_ptr()) };
    }
}

impl fmt::Debug for CompletionChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompletionChannel")
            .field("device", &self.ctx.device_name())
            .field("fd", &self.fd())
            .finish()
    }
}

/// A completion queue (`ibv_cq`), optionally attached to a [`CompletionChannel`].
///
/// Give each CQ its own channel when you want to sleep on it: [`wait_event`] assumes the
/// events it reads are for this CQ (events of other CQs are acknowledged and reported as a
/// wake-up all the same).
///
/// [`wait_event`]: CompletionQueue::wait_event
pub struct CompletionQueue {
    ptr: NonNull<ibv_cq>,
    channel: Option<Arc<CompletionChannel>>,
    ctx: Arc<Context>,
}

// SAFETY: verbs objects may be used from any thread; only Drop destroys the CQ. Concurrent
// ibv_poll_cq / ibv_req_notify_cq on one CQ rely on the provider's CQ lock, which is on by
// default; a provider told to drop its locking (e.g. mlx5 with MLX5_SINGLE_THREADED=1) makes
// sharing a CQ between threads unsound, so do not set such options for rdmaft.
unsafe impl Send for CompletionQueue {}
// SAFETY: see Send.
unsafe impl Sync for CompletionQueue {}

/// How many completions one `ibv_poll_cq` call may return into the stack buffer.
const POLL_BATCH: usize = 32;

impl CompletionQueue {
    /// Creates a CQ with at least `min_entries` entries (`ibv_create_cq`).
    pub fn new(
        ctx: &Arc<Context>,
        min_entries: u32,
        channel: Option<&Arc<CompletionChannel>>,
    ) -> Result<Arc<Self>, Error> {
        let cqe = i32::try_from(min_entries)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| Error::invalid("ibv_create_cq", "entries must be in 1..=i32::MAX"))?;
        if let Some(ch) = channel {
            if ch.ctx.as_ptr() != ctx.as_ptr() {
                return Err(Error::invalid(
                    "ibv_create_cq",
                    "completion channel belongs to another device context",
                ));
            }
        }
        let chan_ptr = channel.map_or(ptr::null_mut(), |c| c.ptr.as_ptr());
        // SAFETY: `ctx` is live; `chan_ptr` is null or a live channel of the same context
        // (checked above); cq_context is unused (null).
        let raw = unsafe { ibv_create_cq(ctx.as_ptr(), cqe, ptr::null_mut(), chan_ptr, 0) };
        let ptr = NonNull::new(raw).ok_or_else(|| Error::last_os("ibv_create_cq"))?;
        Ok(Arc::new(CompletionQueue {
            ptr,
            channel: channel.cloned(),
            ctx: Arc::clone(ctx),
        }))
    }

    /// The number of entries the provider actually allocated (may exceed the request).
    pub fn capacity(&self) -> u32 {
        // SAFETY: the CQ is live; `cqe` is a plain field.
        let n = unsafe { (*self.ptr.as_ptr()).cqe };
        u32::try_from(n).unwrap_or(0)
    }

    /// The context the CQ belongs to.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// The raw pointer, for the sibling wrappers.
    pub(crate) fn as_ptr(&self) -> *mut ibv_cq {
        self.ptr.as_ptr()
    }

    /// Takes up to `out.len()` completions without blocking (`ibv_poll_cq`); returns how many.
    ///
    /// Failed completions are returned like good ones: check [`WorkCompletion::status`] or
    /// use [`WorkCompletion::ok`].
    pub fn poll(&self, out: &mut [WorkCompletion]) -> Result<usize, Error> {
        let want = out.len().min(POLL_BATCH);
        if want == 0 {
            return Ok(0);
        }
        // SAFETY: ibv_wc is plain old data (integers and a union of integers); all-zero is a
        // valid value.
        let mut wcs: [ibv_wc; POLL_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: the CQ is live and `wcs` has room for `want` (<= POLL_BATCH) entries.
        let n = unsafe { ibv_poll_cq(self.ptr.as_ptr(), want as i32, wcs.as_mut_ptr()) };
        if n < 0 {
            // A provider-specific code, not an errno.
            return Err(Error::provider("ibv_poll_cq", n));
        }
        let n = n as usize;
        for (dst, wc) in out.iter_mut().zip(wcs.iter().take(n)) {
            *dst = WorkCompletion::from_raw(wc);
        }
        Ok(n)
    }

    /// Arms the CQ so the next completion (or next solicited one) signals the channel
    /// (`ibv_req_notify_cq`). Poll once more after arming: a completion that arrived just
    /// before arming does not signal.
    pub fn req_notify(&self, solicited_only: bool) -> Result<(), Error> {
        // SAFETY: the CQ is live.
        let rc = unsafe { ibv_req_notify_cq(self.ptr.as_ptr(), i32::from(solicited_only)) };
        if rc != 0 {
            return Err(Error::from_ret("ibv_req_notify_cq", rc));
        }
        Ok(())
    }

    /// Sleeps until the channel reports an event or `timeout` passes; `Ok(false)` on timeout.
    ///
    /// Every event read is acknowledged at once (`ibv_ack_cq_events`), so dropping the CQ
    /// never blocks on unacknowledged events. The CQ must have been armed with
    /// [`req_notify`](Self::req_notify); errors if the CQ has no channel.
    pub fn wait_event(&self, timeout: Duration) -> Result<bool, Error> {
        let chan = self.channel()?;
        if !wait_readable(chan.fd(), timeout)? {
            return Ok(false);
        }
        self.take_events()
    }

    /// The completion channel's fd, to wait on beside other fds; errors if the CQ has none.
    pub fn channel_as_fd(&self) -> Result<BorrowedFd<'_>, Error> {
        let fd = self.channel()?.fd();
        // SAFETY: the channel (held by this CQ, which the borrow keeps alive) owns the fd and
        // closes it only when destroyed, after every borrow of the CQ has ended.
        Ok(unsafe { BorrowedFd::borrow_raw(fd) })
    }

    fn channel(&self) -> Result<&Arc<CompletionChannel>, Error> {
        self.channel.as_ref().ok_or_else(|| {
            Error::invalid(
                "wait_event",
                "the completion queue has no completion channel",
            )
        })
    }

    /// Reads and acknowledges the events waiting on the channel without blocking; `true` if
    /// there were any. Re-arm with [`req_notify`](Self::req_notify) and poll afterwards.
    pub fn take_events(&self) -> Result<bool, Error> {
        let chan = self.channel()?;
        let mut got = false;
        loop {
            let mut cq: *mut ibv_cq = ptr::null_mut();
            let mut cq_ctx: *mut std::os::raw::c_void = ptr::null_mut();
            // SAFETY: the channel is live and non-blocking; both out-pointers are valid.
            let rc = unsafe { ibv_get_cq_event(chan.ptr.as_ptr(), &mut cq, &mut cq_ctx) };
            if rc != 0 {
                if last_error_is_again() {
                    return Ok(got);
                }
                return Err(Error::last_os("ibv_get_cq_event"));
            }
            got = true;
            // SAFETY: `cq` was just returned by ibv_get_cq_event, so it is a live CQ on this
            // channel: ibv_destroy_cq waits for all of its events to be acknowledged, so it
            // cannot have been freed before this ack.
            unsafe { ibv_ack_cq_events(cq, 1) };
        }
    }
}

impl Drop for CompletionQueue {
    fn drop(&mut self) {
        // SAFETY: destroyed once; QPs using the CQ hold an Arc to it and are gone; all channel
        // events were acknowledged in wait_event. Errors cannot be acted on here.
        unsafe { ibv_destroy_cq(self.ptr.as_ptr()) };
    }
}

impl fmt::Debug for CompletionQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompletionQueue")
            .field("capacity", &self.capacity())
            .field("has_channel", &self.channel.is_some())
            .finish()
    }
}

/// The status of a work completion (`ibv_wc_status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct WcStatus(pub u32);

impl WcStatus {
    /// `IBV_WC_SUCCESS`.
    pub const SUCCESS: WcStatus = WcStatus(ibv_wc_status::IBV_WC_SUCCESS);
    /// `IBV_WC_RNR_RETRY_EXC_ERR`: the peer had no receive posted (and RNR retry is 0).
    pub const RNR_RETRY_EXCEEDED: WcStatus = WcStatus(ibv_wc_status::IBV_WC_RNR_RETRY_EXC_ERR);
    /// `IBV_WC_WR_FLUSH_ERR`: the QP went to the error state (e.g. after a disconnect).
    pub const FLUSHED: WcStatus = WcStatus(ibv_wc_status::IBV_WC_WR_FLUSH_ERR);
    /// `IBV_WC_REM_ACCESS_ERR`: the peer refused an RDMA access (the remote address, length
    /// or key does not match memory it registered for remote access).
    pub const REMOTE_ACCESS: WcStatus = WcStatus(ibv_wc_status::IBV_WC_REM_ACCESS_ERR);

    /// True for `IBV_WC_SUCCESS`.
    pub fn is_success(self) -> bool {
        self == Self::SUCCESS
    }

    /// The libibverbs text for the status (`ibv_wc_status_str`).
    pub fn text(self) -> String {
        // SAFETY: ibv_wc_status_str returns a pointer to a static string for any value
        // (unknown values map to "unknown").
        unsafe { c_str_lossy(ibv_wc_status_str(self.0)) }
    }
}

/// What kind of work request a completion is for (`ibv_wc_opcode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WcOpcode {
    /// A SEND finished on the sender side.
    Send,
    /// An RDMA WRITE (with or without immediate) finished on the writer side.
    RdmaWrite,
    /// An RDMA READ finished.
    RdmaRead,
    /// A receive consumed by an incoming SEND.
    Recv,
    /// A receive consumed by an incoming RDMA WRITE WITH IMM.
    RecvRdmaWithImm,
    /// Any other opcode, or none (failed completions carry no valid opcode).
    #[default]
    Other,
}

impl WcOpcode {
    fn from_raw(op: u32) -> Self {
        match op {
            ibv_wc_opcode::IBV_WC_SEND => WcOpcode::Send,
            ibv_wc_opcode::IBV_WC_RDMA_WRITE => WcOpcode::RdmaWrite,
            ibv_wc_opcode::IBV_WC_RDMA_READ => WcOpcode::RdmaRead,
            ibv_wc_opcode::IBV_WC_RECV => WcOpcode::Recv,
            ibv_wc_opcode::IBV_WC_RECV_RDMA_WITH_IMM => WcOpcode::RecvRdmaWithImm,
            _ => WcOpcode::Other,
        }
    }
}

/// One completion, copied out of the CQ (a safe `ibv_wc`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkCompletion {
    /// The id the poster gave the work request.
    pub wr_id: u64,
    /// Success or the reason it failed.
    pub status: WcStatus,
    /// What finished (meaningful only on success).
    pub opcode: WcOpcode,
    /// Bytes received (receive completions only).
    pub byte_len: u32,
    /// Immediate data in host byte order, when the peer sent one.
    pub imm: Option<u32>,
    /// The local QP number.
    pub qp_num: u32,
    /// Provider-specific error detail for failed completions.
    pub vendor_err: u32,
}

impl WorkCompletion {
    fn from_raw(wc: &ibv_wc) -> Self {
        let with_imm = wc.wc_flags & ibv_wc_flags::IBV_WC_WITH_IMM.0 != 0;
        let success = wc.status == ibv_wc_status::IBV_WC_SUCCESS;
        WorkCompletion {
            wr_id: wc.wr_id,
            status: WcStatus(wc.status),
            opcode: if success {
                WcOpcode::from_raw(wc.opcode)
            } else {
                WcOpcode::Other
            },
            byte_len: wc.byte_len,
            imm: (success && with_imm).then(|| {
                // SAFETY: with IBV_WC_WITH_IMM set the union holds imm_data (network order);
                // both members are u32, so any bit pattern is valid anyway.
                u32::from_be(unsafe { wc.imm_data_invalidated_rkey_union.imm_data })
            }),
            qp_num: wc.qp_num,
            vendor_err: wc.vendor_err,
        }
    }

    /// `Ok(self)` on success, else [`Error::WorkCompletion`] with the status text.
    pub fn ok(self) -> Result<Self, Error> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(Error::WorkCompletion {
                wr_id: self.wr_id,
                status: self.status.0,
                status_text: self.status.text(),
                vendor_err: self.vendor_err,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_comes_from_libibverbs() {
        assert_eq!(WcStatus::SUCCESS.text(), "success");
        assert!(WcStatus::RNR_RETRY_EXCEEDED.text().contains("RNR"));
    }

    #[test]
    fn immediate_data_is_converted_from_network_order() {
        // SAFETY: ibv_wc is plain old data; all-zero is a valid value.
        let mut wc: ibv_wc = unsafe { std::mem::zeroed() };
        wc.wr_id = 5;
        wc.status = ibv_wc_status::IBV_WC_SUCCESS;
        wc.opcode = ibv_wc_opcode::IBV_WC_RECV_RDMA_WITH_IMM;
        wc.wc_flags = ibv_wc_flags::IBV_WC_WITH_IMM.0;
        wc.imm_data_invalidated_rkey_union.imm_data = 0x0102_0304u32.to_be();
        let c = WorkCompletion::from_raw(&wc);
        assert_eq!(c.imm, Some(0x0102_0304));
        assert_eq!(c.opcode, WcOpcode::RecvRdmaWithImm);
        assert_eq!(c.wr_id, 5);
        // Without the flag the union is not immediate data.
        wc.wc_flags = 0;
        assert_eq!(WorkCompletion::from_raw(&wc).imm, None);
        // A failed completion carries no immediate or opcode.
        wc.wc_flags = ibv_wc_flags::IBV_WC_WITH_IMM.0;
        wc.status = ibv_wc_status::IBV_WC_WR_FLUSH_ERR;
        let c = WorkCompletion::from_raw(&wc);
        assert_eq!((c.imm, c.opcode), (None, WcOpcode::Other));
    }

    #[test]
    fn failed_completion_becomes_an_error() {
        let wc = WorkCompletion {
            wr_id: 7,
            status: WcStatus::RNR_RETRY_EXCEEDED,
            ..WorkCompletion::default()
        };
        let err = wc.ok().unwrap_err().to_string();
        assert!(
            err.starts_with("work request 7 completed with status 13"),
            "{err}"
        );
        assert!(WorkCompletion::default().ok().is_ok());
    }
}
