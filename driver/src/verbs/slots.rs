//! The sender's registered slot area, split into slots that one thread at a time owns, so
//! file data goes from the page cache straight into the memory the NIC reads, and the digest
//! is computed from those same bytes.
//!
//! Ownership is the safety argument: [`SlotArea::split`] makes exactly one [`Slot`] per slot,
//! a `Slot` is not `Clone`, and every access to a slot's bytes goes through `&mut Slot`
//! (writes) or `&Slot` (reads). The area is registered without remote access (or not
//! registered at all), so the NIC only ever *reads* it (for the RDMA writes the owner posts
//! while holding the slot); nothing else writes it. A shared view of a slot's bytes is
//! therefore sound for as long as it is owned.

use super::mapped::MappedBuf;
use super::mr::{Access, MemoryRegion};
use crate::Error;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::Arc;

/// The memory behind the slots: registered for a NIC, or plain (the loopback link of the
/// tests and the CPU benchmark copies out of it itself).
#[derive(Debug)]
pub enum Backing {
    /// Registered without remote access.
    Registered(MemoryRegion),
    /// Plain heap memory.
    Plain(MappedBuf),
}

impl Backing {
    fn len(&self) -> usize {
        match self {
            Backing::Registered(mr) => mr.len(),
            Backing::Plain(b) => b.len(),
        }
    }

    fn ptr_at(&self, offset: usize) -> *mut u8 {
        match self {
            Backing::Registered(mr) => mr.ptr_at(offset),
            Backing::Plain(b) => b.as_ptr().cast_mut().wrapping_add(offset),
        }
    }
}

/// Memory of `count` slots of `slot_len` bytes that only this process writes.
#[derive(Debug)]
pub struct SlotArea {
    mem: Arc<Backing>,
    slot_len: usize,
    count: u32,
}

impl SlotArea {
    /// Wraps `mr`, which must allow no remote access, as `count` slots of `slot_len` bytes.
    pub fn new(mr: MemoryRegion, slot_len: usize, count: u32) -> Result<Self, Error> {
        if mr
            .access()
            .intersects(Access::REMOTE_WRITE | Access::REMOTE_READ)
        {
            return Err(Error::invalid(
                "SlotArea::new",
                "slots must not be remotely accessible",
            ));
        }
        Self::with_backing(Backing::Registered(mr), slot_len, count)
    }

    /// `count` slots of `slot_len` bytes of plain (unregistered) page-aligned memory.
    pub fn plain(slot_len: usize, count: u32) -> Result<Self, Error> {
        let len = slot_len
            .checked_mul(count as usize)
            .ok_or_else(|| Error::invalid("SlotArea::plain", "too large"))?;
        Self::with_backing(Backing::Plain(MappedBuf::new(len)?), slot_len, count)
    }

    fn with_backing(mem: Backing, slot_len: usize, count: u32) -> Result<Self, Error> {
        let fits = slot_len
            .checked_mul(count as usize)
            .is_some_and(|n| n <= mem.len() && slot_len > 0);
        if !fits {
            return Err(Error::invalid(
                "SlotArea::new",
                "slots do not fit the region",
            ));
        }
        Ok(SlotArea {
            mem: Arc::new(mem),
            slot_len,
            count,
        })
    }

    /// The one handle of every slot, in order.
    pub fn split(self) -> Vec<Slot> {
        (0..self.count)
            .map(|index| Slot {
                mem: Arc::clone(&self.mem),
                index,
                offset: index as usize * self.slot_len,
                len: self.slot_len,
                filled: 0,
            })
            .collect()
    }
}

/// Exclusive access to one slot of a [`SlotArea`].
#[derive(Debug)]
pub struct Slot {
    mem: Arc<Backing>,
    index: u32,
    offset: usize,
    len: usize,
    /// Bytes of the slot holding data from the last fill.
    filled: usize,
}

impl Slot {
    /// The slot's number.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The registered memory and the range of the slot's first `len` bytes (for posting a
    /// write); `None` for plain memory.
    pub fn region(&self, len: usize) -> Option<(&MemoryRegion, Range<usize>)> {
        let len = len.min(self.len);
        match &*self.mem {
            Backing::Registered(mr) => Some((mr, self.offset..self.offset + len)),
            Backing::Plain(_) => None,
        }
    }

    /// Fills the slot's first `len` bytes from `file` at `file_offset` (`pread`, repeated
    /// until done). The file ending early is `UnexpectedEof` (it shrank since it was sized).
    ///
    /// Each read asks for a multiple of `align` bytes (1: exactly what is missing), as
    /// direct I/O needs: a last chunk is asked for rounded up and the file ends first. The
    /// slot's start and length are page multiples, so its memory is aligned too.
    pub fn fill_from(
        &mut self,
        file: &File,
        file_offset: u64,
        len: usize,
        align: usize,
    ) -> io::Result<()> {
        let want = len.div_ceil(align.max(1)) * align.max(1);
        if want > self.len {
            return Err(io::Error::other("read longer than the slot"));
        }
        self.filled = 0;
        let mut done = 0usize;
        while done < len {
            let at = file_offset
                .checked_add(done as u64)
                .and_then(|o| i64::try_from(o).ok())
                .ok_or_else(|| io::Error::other("file offset overflows off_t"))?;
            // SAFETY: `offset + done .. offset + len` lies inside this slot, inside the live
            // region (checked at construction and above). This handle is the slot's only one
            // and `&mut self` excludes every other access from Rust; the NIC only reads the
            // area, and the owner posts no write of this slot while filling it.
            let n = unsafe {
                libc::pread(
                    file.as_raw_fd(),
                    self.mem.ptr_at(self.offset + done).cast(),
                    want - done,
                    at,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            done += n as usize;
        }
        self.filled = len;
        Ok(())
    }

    /// The bytes of the last fill.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the range lies inside the live region; it was written by `fill_from` (so
        // initialised), and while this `&Slot` lives nothing writes it: the handle is unique,
        // writes need `&mut`, and the NIC only reads a region without remote access.
        unsafe { std::slice::from_raw_parts(self.mem.ptr_at(self.offset), self.filled) }
    }
}
