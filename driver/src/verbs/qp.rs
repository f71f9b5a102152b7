//! Reliable-connected queue pairs created on a CM id, and posting work to them.

use super::cm::CmId;
use super::cq::CompletionQueue;
use super::mr::{MemoryRegion, RemoteBuffer};
use super::pd::ProtectionDomain;
use crate::Error;
use rdma_sys::{
    ibv_post_recv, ibv_post_send, ibv_qp, ibv_qp_cap, ibv_qp_init_attr, ibv_qp_type, ibv_recv_wr,
    ibv_send_flags, ibv_send_wr, ibv_sge, ibv_wr_opcode, rdma_create_qp, rdma_destroy_qp,
};
use std::fmt;
use std::ops::Range;
use std::ptr;
use std::sync::Arc;

/// Queue sizes for [`QueuePair::create`] (`ibv_qp_cap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QpCaps {
    /// Most outstanding send-queue work requests.
    pub max_send_wr: u32,
    /// Most outstanding receives.
    pub max_recv_wr: u32,
    /// Scatter/gather entries per send request.
    pub max_send_sge: u32,
    /// Scatter/gather entries per receive.
    pub max_recv_sge: u32,
    /// Bytes a SEND may carry inline (copied at post time).
    pub max_inline_data: u32,
}

impl Default for QpCaps {
    fn default() -> Self {
        QpCaps {
            max_send_wr: 16,
            max_recv_wr: 16,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 0,
        }
    }
}

/// An RC queue pair attached to a CM id (`rdma_create_qp`); librdmacm moves it through
/// INIT/RTR/RTS as the connection is set up.
///
/// Holds its CM id, PD and CQs, so they outlive it; dropping it calls `rdma_destroy_qp`
/// before any of them can go. Disconnect first ([`CmId::disconnect`]) for a clean close.
pub struct QueuePair {
    qp: *mut ibv_qp,
    qp_num: u32,
    caps: QpCaps,
    id: Arc<CmId>,
    pd: Arc<ProtectionDomain>,
    send_cq: Arc<CompletionQueue>,
    recv_cq: Arc<CompletionQueue>,
}

// SAFETY: ibv_post_send/ibv_post_recv are thread-safe because the provider locks each queue
// (the default); a provider told to drop its locking (e.g. mlx5 with MLX5_SINGLE_THREADED=1)
// makes concurrent posting unsound, so do not set such options for rdmaft. Only Drop
// destroys the QP.
unsafe impl Send for QueuePair {}
// SAFETY: see Send.
unsafe impl Sync for QueuePair {}

impl QueuePair {
    /// Creates an RC QP on `id` (`rdma_create_qp`). `pd` and the CQs must come from
    /// [`CmId::context`] of the same id; an id can have one QP at a time.
    pub fn create(
        id: &Arc<CmId>,
        pd: &Arc<ProtectionDomain>,
        send_cq: &Arc<CompletionQueue>,
        recv_cq: &Arc<CompletionQueue>,
        caps: QpCaps,
    ) -> Result<Self, Error> {
        let ctx = pd.context().as_ptr();
        if send_cq.context().as_ptr() != ctx || recv_cq.context().as_ptr() != ctx {
            return Err(Error::invalid(
                "rdma_create_qp",
                "the PD and the CQs belong to different device contexts",
            ));
        }
        if !id.claim_qp() {
            return Err(Error::invalid(
                "rdma_create_qp",
                "the CM id already has a queue pair",
            ));
        }
        let mut attr = ibv_qp_init_attr {
            qp_context: ptr::null_mut(),
            send_cq: send_cq.as_ptr(),
            recv_cq: recv_cq.as_ptr(),
            srq: ptr::null_mut(),
            cap: ibv_qp_cap {
                max_send_wr: caps.max_send_wr,
                max_recv_wr: caps.max_recv_wr,
                max_send_sge: caps.max_send_sge,
                max_recv_sge: caps.max_recv_sge,
                max_inline_data: caps.max_inline_data,
            },
            qp_type: ibv_qp_type::IBV_QPT_RC,
            sq_sig_all: 0,
        };
        // SAFETY: the id, PD and CQs are live; `attr` is fully initialised; librdmacm checks
        // that the PD's context is the id's (EINVAL otherwise).
        let rc = unsafe { rdma_create_qp(id.as_ptr(), pd.as_ptr(), &mut attr) };
        if rc != 0 {
            let err = Error::last_os("rdma_create_qp");
            id.release_qp();
            return Err(err);
        }
        // SAFETY: on success librdmacm stored the new QP in id->qp.
        let qp = unsafe { (*id.as_ptr()).qp };
        if qp.is_null() {
            id.release_qp();
            return Err(Error::invalid(
                "rdma_create_qp",
                "no QP was attached to the id",
            ));
        }
        // SAFETY: `qp` is the live QP just created; qp_num is a plain field.
        let qp_num = unsafe { (*qp).qp_num };
        let c = attr.cap; // the provider writes back the sizes it actually allocated
        Ok(QueuePair {
            qp,
            qp_num,
            caps: QpCaps {
                max_send_wr: c.max_send_wr,
                max_recv_wr: c.max_recv_wr,
                max_send_sge: c.max_send_sge,
                max_recv_sge: c.max_recv_sge,
                max_inline_data: c.max_inline_data,
            },
            id: Arc::clone(id),
            pd: Arc::clone(pd),
            send_cq: Arc::clone(send_cq),
            recv_cq: Arc::clone(recv_cq),
        })
    }

    /// The QP number (what the peer addresses).
    pub fn qp_num(&self) -> u32 {
        self.qp_num
    }

    /// The queue sizes the provider actually granted.
    pub fn caps(&self) -> QpCaps {
        self.caps
    }

    /// The CM id the QP belongs to.
    pub fn cm_id(&self) -> &Arc<CmId> {
        &self.id
    }

    /// The send completion queue.
    pub fn send_cq(&self) -> &Arc<CompletionQueue> {
        &self.send_cq
    }

    /// The receive completion queue.
    pub fn recv_cq(&self) -> &Arc<CompletionQueue> {
        &self.recv_cq
    }

    /// Checks `range` against `mr` and this QP's PD; returns the SGE describing it.
    fn sge(
        &self,
        what: &'static str,
        mr: &MemoryRegion,
        range: &Range<usize>,
    ) -> Result<ibv_sge, Error> {
        if !Arc::ptr_eq(mr.pd(), &self.pd) {
            return Err(Error::invalid(
                what,
                "memory region is registered in another PD",
            ));
        }
        if range.start > range.end || range.end > mr.len() {
            return Err(Error::invalid(
                what,
                format!("range {range:?} outside the {}-byte region", mr.len()),
            ));
        }
        let length = u32::try_from(range.len())
            .map_err(|_| Error::invalid(what, "a single SGE is limited to 4 GiB"))?;
        Ok(ibv_sge {
            addr: mr.addr() + range.start as u64,
            length,
            lkey: mr.lkey(),
        })
    }

    /// Posts a receive for `mr[range]` (`ibv_post_recv`). Incoming SENDs land there, and each
    /// RDMA WRITE WITH IMM consumes one receive too (its data goes to the written address).
    pub fn post_recv(
        &self,
        wr_id: u64,
        mr: &MemoryRegion,
        range: Range<usize>,
    ) -> Result<(), Error> {
        let mut sge = self.sge("post_recv", mr, &range)?;
        let mut wr = ibv_recv_wr {
            wr_id,
            next: ptr::null_mut(),
            sg_list: &mut sge,
            num_sge: 1,
        };
        let mut bad: *mut ibv_recv_wr = ptr::null_mut();
        // SAFETY: the QP is live; `wr` and `sge` are valid for the call (the provider copies
        // them); the SGE lies inside a live MR of this QP's PD (checked), and the NIC can
        // only write through that registration, which lives until the MR is dropped.
        let rc = unsafe { ibv_post_recv(self.qp, &mut wr, &mut bad) };
        if rc != 0 {
            return Err(Error::from_ret("ibv_post_recv", rc));
        }
        Ok(())
    }

    /// Posts a receive without a buffer (`ibv_post_recv` with no scatter entry). It completes
    /// for an incoming RDMA WRITE WITH IMM, whose data went to the written address; an
    /// incoming SEND with data would fail it with a length error.
    pub fn post_recv_bufferless(&self, wr_id: u64) -> Result<(), Error> {
        let mut wr = ibv_recv_wr {
            wr_id,
            next: ptr::null_mut(),
            sg_list: ptr::null_mut(),
            num_sge: 0,
        };
        let mut bad: *mut ibv_recv_wr = ptr::null_mut();
        // SAFETY: the QP is live; `wr` is valid for the call (the provider copies it) and
        // names no memory at all.
        let rc = unsafe { ibv_post_recv(self.qp, &mut wr, &mut bad) };
        if rc != 0 {
            return Err(Error::from_ret("ibv_post_recv", rc));
        }
        Ok(())
    }

    /// Posts a SEND of `mr[range]` (`ibv_post_send`); the peer needs a posted receive.
    /// Unsignaled sends produce no completion unless they fail.
    pub fn post_send(
        &self,
        wr_id: u64,
        mr: &MemoryRegion,
        range: Range<usize>,
        signaled: bool,
    ) -> Result<(), Error> {
        let wr = self.local_wr("post_send", wr_id, mr, &range, ibv_wr_opcode::IBV_WR_SEND)?;
        self.post_list(&[wr.signaled(signaled)]).map_err(|(_, e)| e)
    }

    /// A zero-length RDMA WRITE WITH IMM to `remote`, checked and unsignaled, for
    /// [`post_list`](Self::post_list).
    pub fn imm_only_wr(
        &self,
        wr_id: u64,
        remote: &RemoteBuffer,
        imm: u32,
    ) -> Result<SendWr, Error> {
        let target = (remote_target("imm_only_wr", remote, 0, 0)?, remote.rkey);
        Ok(SendWr {
            wr_id,
            sge: None,
            opcode: ibv_wr_opcode::IBV_WR_RDMA_WRITE_WITH_IMM,
            signaled: false,
            write: Some((target, imm)),
        })
    }

    /// A request of `opcode` reading `mr[range]` (checked against `mr` and this QP's PD),
    /// unsignaled and without a remote target.
    fn local_wr(
        &self,
        what: &'static str,
        wr_id: u64,
        mr: &MemoryRegion,
        range: &Range<usize>,
        opcode: u32,
    ) -> Result<SendWr, Error> {
        let sge = self.sge(what, mr, range)?;
        Ok(SendWr {
            wr_id,
            sge: Some((sge.addr, sge.length, sge.lkey)),
            opcode,
            signaled: false,
            write: None,
        })
    }

    /// An RDMA WRITE WITH IMM of `mr[range]` to `remote` at `remote_offset`, checked and
    /// unsignaled, for [`post_list`](Self::post_list). `mr` must stay registered until the
    /// request completes (as for any post): the caller keeps it alive past the post.
    pub fn write_with_imm_wr(
        &self,
        wr_id: u64,
        mr: &MemoryRegion,
        range: Range<usize>,
        remote: &RemoteBuffer,
        remote_offset: u64,
        imm: u32,
    ) -> Result<SendWr, Error> {
        let what = "write_with_imm_wr";
        let opcode = ibv_wr_opcode::IBV_WR_RDMA_WRITE_WITH_IMM;
        let mut wr = self.local_wr(what, wr_id, mr, &range, opcode)?;
        let len = wr.sge.map_or(0, |(_, len, _)| len);
        let target = (
            remote_target(what, remote, remote_offset, len)?,
            remote.rkey,
        );
        wr.write = Some((target, imm));
        Ok(wr)
    }

    /// Posts `wrs` in order as one chain (one `ibv_post_send`, one doorbell): perftest's
    /// post list. On an error, also how many requests were posted before the failing one.
    pub fn post_list(&self, wrs: &[SendWr]) -> Result<(), (usize, Error)> {
        if wrs.is_empty() {
            return Ok(());
        }
        let mut sges: Vec<ibv_sge> = wrs
            .iter()
            .map(|w| {
                let (addr, length, lkey) = w.sge.unwrap_or_default();
                ibv_sge { addr, length, lkey }
            })
            .collect();
        let mut chain: Vec<ibv_send_wr> = wrs.iter().map(SendWr::raw).collect();
        let (first, first_sge) = (chain.as_mut_ptr(), sges.as_mut_ptr());
        let n = wrs.len();
        for (i, w) in wrs.iter().enumerate() {
            // SAFETY: i < n, the length of both vectors, which nothing else touches until
            // the post, so these pointers into them stay valid.
            unsafe {
                let wr = first.add(i);
                (*wr).next = if i + 1 < n {
                    first.add(i + 1)
                } else {
                    ptr::null_mut()
                };
                if w.sge.is_some() {
                    (*wr).sg_list = first_sge.add(i);
                    (*wr).num_sge = 1;
                }
            }
        }
        let mut bad: *mut ibv_send_wr = ptr::null_mut();
        // SAFETY: the QP is live; the chain's requests and SGEs are valid for the call (the
        // provider copies them; `next` links each to the following element of `chain`, the
        // last to null); each SGE lies inside a MR of this QP's PD (checked when the request
        // was made) that the caller keeps registered until the request completes. Remote
        // addresses are checked by the peer's NIC against its rkey, not trusted here.
        let rc = unsafe { ibv_post_send(self.qp, first, &mut bad) };
        if rc != 0 {
            // `bad` points into `chain` at the first request not posted (compared as
            // addresses only); anything else counts as none posted.
            let posted = (bad as usize)
                .checked_sub(first as usize)
                .map(|bytes| bytes / std::mem::size_of::<ibv_send_wr>())
                .filter(|&i| i < n)
                .unwrap_or(0);
            return Err((posted, Error::from_ret("ibv_post_send", rc)));
        }
        Ok(())
    }
}

/// One send-queue work request, checked against its QP when made ([`QueuePair::imm_only_wr`],
/// [`QueuePair::write_with_imm_wr`]), posted with others by [`QueuePair::post_list`]. Plain
/// data: it names local memory by address and lkey, which the NIC checks against live
/// registrations.
#[derive(Clone, Copy, Debug)]
pub struct SendWr {
    wr_id: u64,
    /// The local bytes: (address, length, lkey).
    sge: Option<(u64, u32, u32)>,
    opcode: u32,
    signaled: bool,
    /// For writes: ((remote address, rkey), immediate).
    write: Option<((u64, u32), u32)>,
}

impl SendWr {
    /// The request's id (its completion's `wr_id`).
    pub fn wr_id(&self) -> u64 {
        self.wr_id
    }

    /// The same request, signaled or not.
    pub fn signaled(mut self, signaled: bool) -> Self {
        self.signaled = signaled;
        self
    }

    /// The verbs request, without scatter list or next (set by `post_list`).
    fn raw(&self) -> ibv_send_wr {
        // SAFETY: ibv_send_wr is plain data (integers, raw pointers, unions of those); the
        // all-zero value is valid and means "no next, no scatter entry, no flags".
        let mut wr: ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = self.wr_id;
        wr.opcode = self.opcode;
        if self.signaled {
            wr.send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
        }
        if let Some(((remote_addr, rkey), imm)) = self.write {
            wr.imm_data_invalidated_rkey_union.imm_data = imm.to_be();
            wr.wr.rdma.remote_addr = remote_addr;
            wr.wr.rdma.rkey = rkey;
        }
        wr
    }
}

/// The remote address of `len` bytes at `offset` into `remote`, after checking that they lie
/// inside it and that the target range does not wrap the address space (a [`RemoteBuffer`]
/// is plain public data, e.g. decoded from a peer's message).
fn remote_target(
    what: &'static str,
    remote: &RemoteBuffer,
    offset: u64,
    len: u32,
) -> Result<u64, Error> {
    offset
        .checked_add(u64::from(len))
        .filter(|&end| end <= remote.len)
        .and_then(|end| remote.addr.checked_add(end))
        .and_then(|_| remote.addr.checked_add(offset))
        .ok_or_else(|| {
            Error::invalid(
                what,
                format!(
                    "{len} bytes at offset {offset} overrun the {}-byte remote buffer at {:#x}",
                    remote.len, remote.addr
                ),
            )
        })
}

impl Drop for QueuePair {
    fn drop(&mut self) {
        // rdma_destroy_qp frees the QP and clears `id->qp`, which rdma_connect, rdma_accept
        // and rdma_disconnect read: another thread holding the id may be inside one of them.
        // They all run under the channel's `fields` lock, so taking it here orders the free
        // after them (and them after it, when they then find no QP).
        let _fields = self.id.channel().lock_fields();
        // SAFETY: the QP is destroyed once, through its own id, while the id, PD and CQs are
        // still alive (we hold Arcs; they drop after this body), and no librdmacm call that
        // reads `id->qp` runs concurrently (the lock above).
        unsafe { rdma_destroy_qp(self.id.as_ptr()) };
        self.id.release_qp();
    }
}

impl fmt::Debug for QueuePair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueuePair")
            .field("qp_num", &self.qp_num)
            .field("caps", &self.caps)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_targets_are_bounds_and_overflow_checked() {
        let r = RemoteBuffer {
            addr: 0x1000,
            rkey: 9,
            len: 4096,
        };
        assert_eq!(remote_target("t", &r, 0, 4096).unwrap(), 0x1000);
        assert_eq!(remote_target("t", &r, 96, 4000).unwrap(), 0x1060);
        assert!(remote_target("t", &r, 97, 4000).is_err());
        assert!(remote_target("t", &r, u64::MAX, 2).is_err());
        // A buffer the peer claims ends past the address space: no overflow panic.
        let wrap = RemoteBuffer {
            addr: u64::MAX - 10,
            rkey: 9,
            len: u64::MAX,
        };
        assert!(remote_target("t", &wrap, 50, 100).is_err());
        assert!(remote_target("t", &wrap, 0, 11).is_err());
        assert_eq!(remote_target("t", &wrap, 0, 10).unwrap(), u64::MAX - 10);
        let err = remote_target("t", &wrap, 50, 100).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    }
}
