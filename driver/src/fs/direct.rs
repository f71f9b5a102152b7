//! Direct I/O (`--direct`): large files read and written with `O_DIRECT`, past the page
//! cache, so that a transfer of a data set larger than memory neither evicts what the host
//! keeps cached nor pays for copying every byte into it (NVMe at full speed wants this).
//!
//! `O_DIRECT` wants the memory, the file offset and the length aligned to the device's
//! logical block; `DIRECT_ALIGN` (4096) covers every common one. Chunks are powers of two
//! of at least 4096 bytes and start at multiples of the chunk size, so only a file's last
//! chunk can be short: a reader asks for it rounded up (the file ends first), a writer
//! turns direct I/O off for that one write. Each side decides for itself; nothing of it is
//! on the wire. A file system that refuses the flag (tmpfs, say) is written through the
//! page cache as without `--direct`, and the reports count the files that went direct.

use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
use std::fs::File;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Alignment of memory, offsets and lengths for direct I/O.
pub(crate) const DIRECT_ALIGN: usize = 4096;
/// Files smaller than this go through the page cache even with `--direct`: a few blocks
/// gain nothing from skipping it and pay a device round trip each.
pub const DIRECT_MIN_SIZE: u64 = 1 << 20;

/// Turns direct I/O on for `file`; `false` when its file system does not take it.
pub(crate) fn enable(file: &File) -> bool {
    fcntl_getfl(file)
        .and_then(|flags| fcntl_setfl(file, flags | OFlags::DIRECT))
        .is_ok()
}

/// Turns direct I/O off for `file` (before a write whose length is not aligned).
pub(crate) fn disable(file: &File) -> std::io::Result<()> {
    let flags = fcntl_getfl(file)?;
    fcntl_setfl(file, flags - OFlags::DIRECT)?;
    Ok(())
}

/// One aligned block of an [`AlignedBuf`].
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy)]
#[repr(C, align(4096))]
struct Block([u8; DIRECT_ALIGN]);

/// A zeroed heap buffer whose start is aligned for direct I/O.
pub(crate) struct AlignedBuf {
    blocks: Vec<Block>,
    len: usize,
}

impl AlignedBuf {
    pub(crate) fn new(len: usize) -> Self {
        AlignedBuf {
            blocks: vec![Block([0; DIRECT_ALIGN]); len.div_ceil(DIRECT_ALIGN)],
            len,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.blocks.as_mut_bytes()[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_is_aligned_and_as_long_as_asked() {
        for len in [1, 4096, 4097, 1 << 20] {
            let mut b = AlignedBuf::new(len);
            let s = b.as_mut_slice();
            assert_eq!(s.len(), len);
            assert_eq!(s.as_ptr() as usize % DIRECT_ALIGN, 0, "{len}");
        }
    }
}
