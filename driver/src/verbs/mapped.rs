//! Memory for RDMA: anonymous mappings of their own, never the allocator's heap.
//!
//! Rings and slots are large (16 MiB each at the defaults) and live exactly as long as their
//! connection. From the global allocator they came back as heap (glibc raises its mmap
//! threshold after the first large free, so later buffers of that size land in malloc arenas
//! that are not given back to the system): a receiver's RSS grew by about one ring over a
//! soak of connections. A mapping of its own is returned with `munmap` when the connection
//! ends, so RSS follows the connections open.
//!
//! Every mapping is `MADV_DONTFORK`: a child forked while a region is registered does not
//! inherit it, so the parent's pinned pages are never copied-on-write under the NIC (which
//! would keep writing into the page the child kept). This is what `ibv_fork_init` asks of
//! registered memory, done per buffer; a forked child cannot use the parent's connections
//! (it never could).

use crate::error::Error;
use std::fmt;
use std::ptr::NonNull;

/// Which pages back a buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pages {
    /// The system's base pages (4 KiB on x86-64).
    #[default]
    Base,
    /// Huge pages (2 MiB on x86-64): fewer translations for the NIC and the CPU on large
    /// rings. Taken from the reserved pool (`MAP_HUGETLB`, `vm.nr_hugepages`) when it has
    /// room, else base pages with transparent huge pages asked for (`MADV_HUGEPAGE`), so a
    /// machine without a reserved pool still works.
    Huge,
}

impl Pages {
    /// [`Pages::Huge`] when `huge` (an options flag), else [`Pages::Base`].
    pub fn huge_if(huge: bool) -> Pages {
        if huge {
            Pages::Huge
        } else {
            Pages::Base
        }
    }
}

/// A zero-filled, page-aligned anonymous mapping that this value owns (unmapped on drop).
pub struct MappedBuf {
    ptr: NonNull<u8>,
    /// The length asked for.
    len: usize,
    /// The length mapped (`len` rounded up to the page size used).
    mapped: usize,
    /// Whether the mapping came from the huge-page pool.
    huge: bool,
}

// SAFETY: MappedBuf uniquely owns its mapping of plain bytes; moving it between threads is
// like moving a Box<[u8]>.
unsafe impl Send for MappedBuf {}
// SAFETY: shared access only hands out &[u8]; writing needs &mut self.
unsafe impl Sync for MappedBuf {}

impl MappedBuf {
    /// Maps `len` zeroed bytes of base pages.
    pub fn new(len: usize) -> Result<Self, Error> {
        Self::with_pages(len, Pages::Base)
    }

    /// Maps `len` zeroed bytes of `pages`.
    pub fn with_pages(len: usize, pages: Pages) -> Result<Self, Error> {
        if len == 0 {
            return Err(Error::invalid("MappedBuf::new", "length must be non-zero"));
        }
        if pages == Pages::Huge {
            if let Some(huge) = huge_page_size() {
                if let Some(buf) = Self::map(len, huge, libc::MAP_HUGETLB) {
                    return Ok(buf);
                }
            }
        }
        let buf = Self::map(len, page_size(), 0).ok_or_else(|| {
            Error::invalid(
                "MappedBuf::new",
                format!(
                    "mmap of {len} bytes failed: {}",
                    std::io::Error::last_os_error()
                ),
            )
        })?;
        if pages == Pages::Huge {
            // Best effort: the kernel may or may not back it with transparent huge pages.
            // SAFETY: the range is exactly our live mapping; madvise only sets a hint on it.
            unsafe { libc::madvise(buf.ptr.as_ptr().cast(), buf.mapped, libc::MADV_HUGEPAGE) };
        }
        Ok(buf)
    }

    /// `mmap`s `len` bytes rounded up to `page`, with `extra` flags; `None` if refused.
    fn map(len: usize, page: usize, extra: libc::c_int) -> Option<Self> {
        let mapped = len.checked_next_multiple_of(page)?;
        // SAFETY: an anonymous private mapping at an address the kernel picks: it aliases
        // no memory of ours, and the arguments are plain values.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return None;
        }
        let ptr = NonNull::new(raw.cast::<u8>())?;
        // Not inherited by children (see the module docs). Failure only leaves the
        // fork hazard the module docs describe, on a kernel too old to have the flag.
        // SAFETY: the range is exactly the mapping just made.
        unsafe { libc::madvise(raw, mapped, libc::MADV_DONTFORK) };
        Some(MappedBuf {
            ptr,
            len,
            mapped,
            huge: extra & libc::MAP_HUGETLB != 0,
        })
    }

    /// Length in bytes (as asked; the mapping may be longer).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false (zero-length buffers are refused); here for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the buffer is on pages of the huge-page pool.
    pub fn is_huge(&self) -> bool {
        self.huge
    }

    /// The first byte's address.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The first byte's address, for writing.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The contents.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` bytes of our live mapping, zeroed by the kernel or
        // written since; `&self` rules out writes through this value meanwhile.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The contents, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in as_slice, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for MappedBuf {
    fn drop(&mut self) {
        // SAFETY: our own mapping, exactly as mapped, unmapped once; nothing refers to it
        // any more (MemoryRegion leaks the buffer instead when deregistration failed).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.mapped) };
    }
}

impl fmt::Debug for MappedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedBuf")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("mapped", &self.mapped)
            .field("huge", &self.huge)
            .finish()
    }
}

/// The system page size.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n)
        .ok()
        .filter(|n| n.is_power_of_two())
        .unwrap_or(4096)
}

/// The default huge page size (`Hugepagesize` in /proc/meminfo), if the system has one.
fn huge_page_size() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: usize = info
        .lines()
        .find_map(|l| l.strip_prefix("Hugepagesize:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024).filter(|n| n.is_power_of_two())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_page_aligned_and_zeroed() {
        let page = page_size();
        assert!(page >= 4096 && page.is_power_of_two());
        for len in [1, 100, 4096, 4097, 1 << 20] {
            let buf = MappedBuf::new(len).unwrap();
            assert_eq!(buf.len(), len);
            assert_eq!(buf.as_ptr() as usize % page, 0, "len {len}");
            assert!(buf.as_slice().iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn buffers_are_writable_and_keep_their_bytes() {
        let mut buf = MappedBuf::new(64).unwrap();
        buf.as_mut_slice()
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = i as u8);
        assert_eq!(buf.as_slice()[63], 63);
    }

    #[test]
    fn zero_length_is_an_error_not_a_panic() {
        assert!(matches!(
            MappedBuf::new(0),
            Err(Error::InvalidArgument { .. })
        ));
    }

    /// The memory goes back to the system when the buffer is dropped: its range is no
    /// longer mapped. Checked in a forked child, where no other thread can map the range
    /// again between the drop and the check (the test threads of this process could).
    #[test]
    fn dropping_unmaps() {
        // SAFETY: the child makes only system calls (mmap, a memset, munmap, mincore) and
        // leaves with _exit, never returning into the test harness or allocating.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let unmapped = MappedBuf::new(8 << 20).ok().is_some_and(|mut buf| {
                buf.as_mut_slice().fill(1);
                let at = buf.as_ptr().cast_mut().cast::<libc::c_void>();
                drop(buf);
                let mut resident = [0u8; 1];
                // SAFETY: mincore only reads the mapping state of the range (ENOMEM when
                // it is not mapped); `resident` has room for its one page.
                let rc = unsafe { libc::mincore(at, page_size(), resident.as_mut_ptr()) };
                rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOMEM)
            });
            // SAFETY: ends the child at once, as fork's child must.
            unsafe { libc::_exit(i32::from(!unmapped)) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(rc, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the range was still mapped after the drop (child status {status:#x})"
        );
    }

    /// Huge pages are an opt-in that always gives a buffer, from the pool or not.
    #[test]
    fn huge_pages_fall_back_to_base_pages() {
        let mut buf = MappedBuf::with_pages(3 << 20, Pages::Huge).unwrap();
        assert_eq!(buf.len(), 3 << 20);
        buf.as_mut_slice().fill(7);
        assert!(buf.as_slice().iter().all(|&b| b == 7));
        let align = if buf.is_huge() {
            huge_page_size().unwrap()
        } else {
            page_size()
        };
        assert_eq!(buf.as_ptr() as usize % align, 0);
    }

    /// A child forked while the buffer exists does not inherit it: the kernel lists the
    /// mapping with `dc` ("do not copy on fork", `MADV_DONTFORK`) in /proc/self/smaps.
    #[test]
    fn children_do_not_inherit_the_mapping() {
        let buf = MappedBuf::new(1 << 20).unwrap();
        let at = buf.as_ptr() as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut ours = false;
        let mut flags = None;
        for line in smaps.lines() {
            let range = line
                .split_once(' ')
                .and_then(|(r, _)| r.split_once('-'))
                .and_then(|(lo, hi)| {
                    Some((
                        usize::from_str_radix(lo, 16).ok()?,
                        usize::from_str_radix(hi, 16).ok()?,
                    ))
                });
            if let Some((lo, hi)) = range {
                ours = lo <= at && at < hi;
            } else if let Some(f) = line.strip_prefix("VmFlags:").filter(|_| ours) {
                flags = Some(f.to_owned());
            }
        }
        let flags = flags.expect("our mapping in /proc/self/smaps");
        assert!(
            flags.split_whitespace().any(|f| f == "dc"),
            "no dc flag: {flags}"
        );
    }
}
