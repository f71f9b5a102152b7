//! Registered memory: memory regions that own their mapping.

use super::mapped::{MappedBuf, Pages};
use super::pd::ProtectionDomain;
use crate::Error;
use rdma_sys::{ibv_access_flags, ibv_dereg_mr, ibv_mr, ibv_reg_mr};
use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::Range;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

bitflags::bitflags! {
    /// What the NIC may do with a memory region (`ibv_access_flags`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Access: u32 {
        /// The local NIC may write it (needed for receives and for remote write/read).
        const LOCAL_WRITE = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0;
        /// The peer may RDMA WRITE into it (with the region's rkey).
        const REMOTE_WRITE = ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0;
        /// The peer may RDMA READ from it.
        const REMOTE_READ = ibv_access_flags::IBV_ACCESS_REMOTE_READ.0;
    }
}

/// A peer's registered buffer as advertised to us: where RDMA WRITEs may go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RemoteBuffer {
    /// The virtual address in the peer's address space.
    pub addr: u64,
    /// The peer's remote key for it.
    pub rkey: u32,
    /// Its length in bytes.
    pub len: u64,
}

/// Bytes registered with RDMA devices by this process now: every live [`MemoryRegion`]
/// (and any whose deregistration failed, which stay registered).
static REGISTERED: AtomicU64 = AtomicU64::new(0);

/// Bytes of memory this process has registered with RDMA devices now (rings, slots,
/// control buffers of every connection, both roles): the pinned memory an operator sizes
/// `LimitMEMLOCK` for.
pub fn registered_bytes() -> u64 {
    REGISTERED.load(Ordering::Relaxed)
}

/// A registered memory region (`ibv_mr`) that owns its buffer.
///
/// Owning the memory ties its lifetime to the registration: the buffer is freed only after
/// `ibv_dereg_mr`, so the NIC can never DMA into freed memory (a work request still using
/// a dropped region fails with a protection error instead).
///
/// The NIC writes into the buffer behind Rust's back (receives, remote writes), so the bytes
/// are reached only by copying ([`copy_out`](Self::copy_out), [`copy_in`](Self::copy_in)),
/// never through a Rust reference. Read the bytes only after the completion that covers
/// them has been polled, and do not change bytes that a posted SEND/WRITE is still reading.
pub struct MemoryRegion {
    mr: NonNull<ibv_mr>,
    /// Unmapped in Drop after a successful deregistration, leaked after a failed one.
    buf: ManuallyDrop<MappedBuf>,
    access: Access,
    pd: Arc<ProtectionDomain>,
}

// SAFETY: the ibv_mr is only read after registration and freed in Drop; the buffer is Send.
unsafe impl Send for MemoryRegion {}
// SAFETY: shared access reads immutable keys and copies bytes out (`copy_out`); writing the
// bytes from Rust needs `&mut self` (`copy_in`), so Rust threads never race on them.
unsafe impl Sync for MemoryRegion {}

impl MemoryRegion {
    /// Maps `len` zeroed bytes of base pages and registers them in `pd` (`ibv_reg_mr`).
    pub fn new(pd: &Arc<ProtectionDomain>, len: usize, access: Access) -> Result<Self, Error> {
        Self::with_pages(pd, len, access, Pages::Base)
    }

    /// Maps `len` zeroed bytes of `pages` and registers them in `pd` (`ibv_reg_mr`).
    pub fn with_pages(
        pd: &Arc<ProtectionDomain>,
        len: usize,
        access: Access,
        pages: Pages,
    ) -> Result<Self, Error> {
        let mut buf = MappedBuf::with_pages(len, pages)?;
        let flags = i32::try_from(access.bits())
            .map_err(|_| Error::invalid("ibv_reg_mr", "access flags out of range"))?;
        // SAFETY: `pd` is live; the buffer is `len` bytes we own and keep (in the returned
        // value) until after ibv_dereg_mr in Drop.
        let raw = unsafe { ibv_reg_mr(pd.as_ptr(), buf.as_mut_ptr().cast(), buf.len(), flags) };
        let mr = NonNull::new(raw).ok_or_else(|| registration_error(len))?;
        REGISTERED.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(MemoryRegion {
            mr,
            buf: ManuallyDrop::new(buf),
            access,
            pd: Arc::clone(pd),
        })
    }

    /// The local key, for scatter/gather entries of our own work requests.
    pub fn lkey(&self) -> u32 {
        // SAFETY: the MR is live; lkey is a plain field set at registration.
        unsafe { (*self.mr.as_ptr()).lkey }
    }

    /// The remote key, to hand to a peer that may access this region.
    pub fn rkey(&self) -> u32 {
        // SAFETY: the MR is live; rkey is a plain field set at registration.
        unsafe { (*self.mr.as_ptr()).rkey }
    }

    /// The buffer's address as the NIC sees it (our virtual address).
    pub fn addr(&self) -> u64 {
        self.buf.as_ptr() as u64
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Always false (zero-length regions are refused).
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The whole region as a [`RemoteBuffer`], for advertising it to the peer.
    pub fn remote(&self) -> RemoteBuffer {
        RemoteBuffer {
            addr: self.addr(),
            rkey: self.rkey(),
            len: self.len() as u64,
        }
    }

    /// The PD the region is registered in.
    pub fn pd(&self) -> &Arc<ProtectionDomain> {
        &self.pd
    }

    /// What the NIC may do with the region.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Writes `range` of the region to `file` at `file_offset` (`pwrite`, repeated until all
    /// is written), straight from the registered memory.
    ///
    /// The kernel reads the bytes; no Rust reference to them is formed, so a peer writing the
    /// region meanwhile (which a correct one never does) only changes what lands in the file.
    pub fn write_to_file(
        &self,
        range: Range<usize>,
        file: &std::fs::File,
        file_offset: u64,
    ) -> std::io::Result<()> {
        check_range(
            "MemoryRegion::write_to_file",
            range.start,
            range.len(),
            self.len(),
        )
        .map_err(std::io::Error::other)?;
        let mut done = 0usize;
        while done < range.len() {
            let at = file_offset
                .checked_add(done as u64)
                .and_then(|o| i64::try_from(o).ok())
                .ok_or_else(|| std::io::Error::other("file offset overflows off_t"))?;
            // SAFETY: `range.start + done .. range.end` lies inside the live buffer (checked
            // above); pwrite only reads it. `file` is an open descriptor for the call.
            let n = unsafe {
                libc::pwrite(
                    std::os::fd::AsRawFd::as_raw_fd(file),
                    self.buf.as_ptr().add(range.start + done).cast(),
                    range.len() - done,
                    at,
                )
            };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            done += n as usize;
        }
        Ok(())
    }

    /// The address of byte `offset`, for the slot handles of this module.
    pub(super) fn ptr_at(&self, offset: usize) -> *mut u8 {
        // In bounds by the callers' checks; wrapping_add never creates UB by itself.
        self.buf.as_ptr().cast_mut().wrapping_add(offset)
    }

    /// Copies `dst.len()` bytes starting at `offset` out of the region.
    ///
    /// There is deliberately no `&[u8]` view of the region: the NIC (receives) or the peer
    /// (RDMA WRITE into a remote-writable region) may change the bytes at any time, which a
    /// Rust reference forbids. Copy only after the completion that covers the bytes has been
    /// polled; bytes the NIC is writing during the copy come out unspecified (never UB).
    pub fn copy_out(&self, offset: usize, dst: &mut [u8]) -> Result<(), Error> {
        check_range("MemoryRegion::copy_out", offset, dst.len(), self.len())?;
        // SAFETY: `offset..offset + dst.len()` lies inside the buffer (checked above), which
        // is live while `self` is. No Rust reference to the region's bytes exists (none is
        // ever handed out, and writers need `&mut self`), so the only concurrent writer can be
        // the NIC, outside the Rust memory model; `dst` is a distinct Rust allocation, so the
        // ranges do not overlap. Any byte value is a valid u8.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.buf.as_ptr().add(offset),
                dst.as_mut_ptr(),
                dst.len(),
            )
        };
        Ok(())
    }

    /// Copies `src` into the region starting at `offset` (e.g. to fill a buffer before
    /// posting a SEND or WRITE from it). Do not change bytes a posted SEND/WRITE is still
    /// reading: the peer would get a mix.
    ///
    /// Takes `&mut self` so that two threads can never write (or write and read) the same
    /// bytes at once, which would be a data race.
    pub fn copy_in(&mut self, offset: usize, src: &[u8]) -> Result<(), Error> {
        check_range("MemoryRegion::copy_in", offset, src.len(), self.len())?;
        // SAFETY: the range lies inside the live buffer (checked above); `&mut self` rules out
        // any other Rust access to it during the copy, and `src` cannot overlap the region
        // (no Rust reference into the region exists).
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.as_ptr(),
                self.buf.as_mut_ptr().add(offset),
                src.len(),
            )
        };
        Ok(())
    }
}

/// The error for a failed `ibv_reg_mr` of `len` bytes: when the locked-memory limit is below
/// what is needed (the usual cause of `ENOMEM` for non-root users), an error that names both.
fn registration_error(len: usize) -> Error {
    let err = Error::last_os("ibv_reg_mr");
    let errno = std::io::Error::last_os_error().raw_os_error();
    if matches!(
        errno,
        Some(libc::ENOMEM) | Some(libc::EPERM) | Some(libc::EAGAIN)
    ) {
        if let Some(limit) = memlock_limit() {
            if (len as u64) > limit {
                return Error::MemlockLimit {
                    limit,
                    needed: len as u64,
                };
            }
        }
    }
    err
}

/// The soft `RLIMIT_MEMLOCK` in bytes, or `None` when unlimited or unknown.
pub fn memlock_limit() -> Option<u64> {
    // SAFETY: rlimit is plain data; all-zero is valid for getrlimit to overwrite.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `lim` is a valid out-pointer.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    (rc == 0 && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// Checks that `len` bytes at `offset` lie inside a region of `total` bytes (overflow-safe).
fn check_range(what: &'static str, offset: usize, len: usize, total: usize) -> Result<(), Error> {
    match offset.checked_add(len) {
        Some(end) if end <= total => Ok(()),
        _ => Err(Error::invalid(
            what,
            format!("{len} bytes at offset {offset} overrun the {total}-byte region"),
        )),
    }
}

impl Drop for MemoryRegion {
    fn drop(&mut self) {
        // SAFETY: deregistered once, before `buf` is unmapped below, and while the PD is
        // alive (we hold an Arc).
        let rc = unsafe { ibv_dereg_mr(self.mr.as_ptr()) };
        if rc == 0 {
            REGISTERED.fetch_sub(self.buf.len() as u64, Ordering::Relaxed);
            // SAFETY: dropped once, here; `self` is never used again.
            unsafe { ManuallyDrop::drop(&mut self.buf) };
        }
        // Else still registered: the NIC may yet write into the buffer, so it must never be
        // unmapped (the pages could be mapped again for something else). Leaking it is the
        // only safe choice left.
    }
}

impl fmt::Debug for MemoryRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryRegion")
            .field("addr", &format_args!("{:#x}", self.addr()))
            .field("access", &self.access)
            .field("len", &self.len())
            .field("lkey", &self.lkey())
            .field("rkey", &self.rkey())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_ranges_are_checked_without_overflow() {
        assert!(check_range("t", 0, 4096, 4096).is_ok());
        assert!(check_range("t", 4096, 0, 4096).is_ok());
        assert!(check_range("t", 100, 28, 128).is_ok());
        assert!(check_range("t", 100, 29, 128).is_err());
        assert!(check_range("t", 4097, 0, 4096).is_err());
        let err = check_range("t", usize::MAX, 2, 4096).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        assert!(check_range("t", 1, usize::MAX, usize::MAX).is_err());
    }

    #[test]
    fn access_flags_match_libibverbs() {
        assert_eq!(Access::LOCAL_WRITE.bits(), 1);
        assert_eq!(Access::REMOTE_WRITE.bits(), 2);
        assert_eq!(Access::REMOTE_READ.bits(), 4);
    }
}
