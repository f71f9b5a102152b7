//! The chunk arithmetic both roles must agree on (PROTOCOL.md §3): which sequence numbers a
//! file owns, and where each chunk lives in the ring and in the file. Kept in one place so
//! the sender and the receiver cannot derive different answers.

/// The most sequence numbers one session may assign (2^62): far beyond any real transfer
/// (2^74 bytes at the smallest chunk), and low enough that no sequence arithmetic overflows.
pub const MAX_SESSION_CHUNKS: u64 = 1 << 62;

/// The chunks of one file: `count` sequence numbers from `first_seq`, carrying the file's
/// bytes from `offset` (non-zero when resuming) to `size`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FileChunks {
    pub(crate) first_seq: u64,
    pub(crate) count: u64,
    pub(crate) offset: u64,
    pub(crate) size: u64,
}

impl FileChunks {
    /// A file of `size` bytes whose answer has not assigned it any chunks yet.
    pub(crate) const fn unassigned(size: u64) -> Self {
        FileChunks {
            first_seq: 0,
            count: 0,
            offset: 0,
            size,
        }
    }

    /// Assigns the file its chunks from `first_seq`, sending from `offset` (≤ size, checked
    /// by the caller) in chunks of `chunk_size`; `None` if they would end past
    /// [`MAX_SESSION_CHUNKS`].
    pub(crate) fn assign(self, first_seq: u64, offset: u64, chunk_size: u32) -> Option<Self> {
        let count = (self.size - offset).div_ceil(u64::from(chunk_size));
        let end = first_seq.checked_add(count)?;
        (end <= MAX_SESSION_CHUNKS).then_some(FileChunks {
            first_seq,
            count,
            offset,
            size: self.size,
        })
    }

    /// One past the file's last sequence number.
    pub(crate) fn end_seq(&self) -> u64 {
        self.first_seq + self.count
    }

    pub(crate) fn contains(&self, seq: u64) -> bool {
        (self.first_seq..self.end_seq()).contains(&seq)
    }

    /// File offset and length of chunk `seq` (which the file contains).
    pub(crate) fn span(&self, seq: u64, chunk_size: u32) -> (u64, u32) {
        let chunk = u64::from(chunk_size);
        let file_offset = self.offset + (seq - self.first_seq) * chunk;
        // min(chunk, …) ≤ chunk_size, a u32.
        (file_offset, (self.size - file_offset).min(chunk) as u32)
    }
}

/// The ring slot of chunk `seq`.
pub(crate) fn slot(seq: u64, window: u32) -> u32 {
    // seq % window < window, a u32.
    (seq % u64::from(window)) as u32
}
