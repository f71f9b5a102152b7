//! Where a state machine keeps its per-file state and its open-name table.
//!
//! The open-file limit is negotiated (up to [`crate::MAX_OPEN_FILES`]), so the tables are not
//! inline: the caller provides them through [`Storage`], sized for the limit it proposes.
//! Without an allocator that is an [`ArrayStorage`] or a pair of slices; with the `alloc`
//! feature, [`VecStorage`] sizes itself.

use crate::open_names::NameSlot;
use crate::receiver::ReceiverFile;
use crate::sender::SenderFile;

/// Name-table slots to provide per open file: room for names about this many directories
/// deep on average (siblings share their directories' slots).
pub const NAME_SLOTS_PER_FILE: usize = 16;

/// One file's state in the caller's storage.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileSlot(pub(crate) Entry);

#[derive(Clone, Copy, Debug, Default)]
pub(crate) enum Entry {
    #[default]
    Free,
    Sender(SenderFile),
    Receiver(ReceiverFile),
}

impl FileSlot {
    /// An unused slot.
    pub const EMPTY: FileSlot = FileSlot(Entry::Free);
}

/// The tables a state machine works in: at least `max_open_files` file slots, and name
/// slots (about [`NAME_SLOTS_PER_FILE`] per file).
pub trait Storage {
    /// The file slots and the name slots, both writable.
    fn tables(&mut self) -> (&mut [FileSlot], &mut [NameSlot]);
    /// The file slots.
    fn files(&self) -> &[FileSlot];
}

impl Storage for (&mut [FileSlot], &mut [NameSlot]) {
    fn tables(&mut self) -> (&mut [FileSlot], &mut [NameSlot]) {
        (&mut *self.0, &mut *self.1)
    }

    fn files(&self) -> &[FileSlot] {
        self.0
    }
}

/// Storage inline, for `F` open files and `N` name slots; no allocator needed.
#[derive(Clone, Debug)]
pub struct ArrayStorage<const F: usize, const N: usize> {
    files: [FileSlot; F],
    names: [NameSlot; N],
}

impl<const F: usize, const N: usize> ArrayStorage<F, N> {
    /// Empty tables.
    pub const fn new() -> Self {
        ArrayStorage {
            files: [FileSlot::EMPTY; F],
            names: [NameSlot::EMPTY; N],
        }
    }
}

impl<const F: usize, const N: usize> Default for ArrayStorage<F, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const F: usize, const N: usize> Storage for ArrayStorage<F, N> {
    fn tables(&mut self) -> (&mut [FileSlot], &mut [NameSlot]) {
        (&mut self.files, &mut self.names)
    }

    fn files(&self) -> &[FileSlot] {
        &self.files
    }
}

/// Storage on the heap, sized for an open-file limit (feature `alloc`).
#[cfg(feature = "alloc")]
#[derive(Clone, Debug)]
pub struct VecStorage {
    files: alloc::vec::Vec<FileSlot>,
    names: alloc::vec::Vec<NameSlot>,
}

#[cfg(feature = "alloc")]
impl VecStorage {
    /// Tables for `max_open_files` files (rounded up to a power of two, which makes lookups
    /// cheaper).
    pub fn new(max_open_files: u16) -> Self {
        let n = usize::from(max_open_files).next_power_of_two();
        VecStorage {
            files: alloc::vec![FileSlot::EMPTY; n],
            names: alloc::vec![NameSlot::EMPTY; n * NAME_SLOTS_PER_FILE + 1],
        }
    }
}

#[cfg(feature = "alloc")]
impl Storage for VecStorage {
    fn tables(&mut self) -> (&mut [FileSlot], &mut [NameSlot]) {
        (&mut self.files, &mut self.names)
    }

    fn files(&self) -> &[FileSlot] {
        &self.files
    }
}

/// Maps file numbers to slots of a table: any table at least as long as the open-file limit
/// works (file numbers in use span less than the limit); a power-of-two length avoids a
/// division per lookup.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SlotIndex {
    len: u64,
    mask: Option<u64>,
}

impl SlotIndex {
    pub(crate) fn new(len: usize) -> Self {
        let len = (len as u64).max(1);
        SlotIndex {
            len,
            mask: len.is_power_of_two().then(|| len - 1),
        }
    }

    /// The slot of file number `ordinal`.
    pub(crate) fn of(&self, ordinal: u64) -> usize {
        // Both results are below the table's length, a usize.
        match self.mask {
            Some(mask) => (ordinal & mask) as usize,
            None => (ordinal % self.len) as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SlotIndex;

    #[test]
    fn file_numbers_map_onto_any_table_length() {
        let three = SlotIndex::new(3);
        let got: [usize; 7] = core::array::from_fn(|o| three.of(o as u64));
        assert_eq!(got, [0, 1, 2, 0, 1, 2, 0]);
        let four = SlotIndex::new(4);
        let got: [usize; 6] = core::array::from_fn(|o| four.of(o as u64));
        assert_eq!(got, [0, 1, 2, 3, 0, 1]);
        assert_eq!(
            SlotIndex::new(0).of(5),
            0,
            "an empty table still maps somewhere"
        );
    }
}
