//! Protection domains.

use super::device::Context;
use crate::Error;
use rdma_sys::{ibv_alloc_pd, ibv_dealloc_pd, ibv_pd};
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

/// A protection domain (`ibv_pd`): the scope in which memory regions and QPs may be used
/// together. A QP can only touch memory registered in its own PD.
pub struct ProtectionDomain {
    ptr: NonNull<ibv_pd>,
    ctx: Arc<Context>,
}

// SAFETY: verbs objects may be used from any thread; only Drop deallocates the PD.
unsafe impl Send for ProtectionDomain {}
// SAFETY: see Send.
unsafe impl Sync for ProtectionDomain {}

impl ProtectionDomain {
    /// Allocates a PD on `ctx` (`ibv_alloc_pd`).
    pub fn new(ctx: &Arc<Context>) -> Result<Arc<Self>, Error> {
        // SAFETY: `ctx` is a live, open context.
        let raw = unsafe { ibv_alloc_pd(ctx.as_ptr()) };
        let ptr = NonNull::new(raw).ok_or_else(|| Error::last_os("ibv_alloc_pd"))?;
        Ok(Arc::new(ProtectionDomain {
            ptr,
            ctx: Arc::clone(ctx),
        }))
    }

    /// The context the PD was allocated on.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// The raw pointer, for the sibling wrappers.
    pub(crate) fn as_ptr(&self) -> *mut ibv_pd {
        self.ptr.as_ptr()
    }
}

impl Drop for ProtectionDomain {
    fn drop(&mut self) {
        // SAFETY: the PD is freed once; MRs and QPs using it hold an Arc to it, so none is
        // left. The context is still open (we hold an Arc). Errors cannot be acted on here.
        unsafe { ibv_dealloc_pd(self.ptr.as_ptr()) };
    }
}

impl fmt::Debug for ProtectionDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtectionDomain")
            .field("device", &self.ctx.device_name())
            .finish()
    }
}
