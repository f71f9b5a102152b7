//! A fixed-capacity FIFO, so the state machines queue events without an allocator.

/// FIFO of at most `N` items.
#[derive(Debug)]
pub(crate) struct Fifo<T: Copy, const N: usize> {
    items: [Option<T>; N],
    head: usize,
    len: usize,
}

impl<T: Copy, const N: usize> Fifo<T, N> {
    pub(crate) const fn new() -> Self {
        Fifo {
            items: [None; N],
            head: 0,
            len: 0,
        }
    }

    /// Appends; `false` if full (the item is not stored).
    #[must_use]
    pub(crate) fn push(&mut self, item: T) -> bool {
        if self.len == N {
            return false;
        }
        self.items[(self.head + self.len) % N] = Some(item);
        self.len += 1;
        true
    }

    /// Items that can still be pushed.
    pub(crate) fn free(&self) -> usize {
        N - self.len
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let item = self.items[self.head].take();
        self.head = (self.head + 1) % N;
        self.len -= 1;
        item
    }
}

#[cfg(test)]
mod tests {
    use super::Fifo;

    #[test]
    fn keeps_order_and_refuses_overflow() {
        let mut q: Fifo<u8, 2> = Fifo::new();
        assert!(q.push(1) && q.push(2));
        assert!(!q.push(3));
        assert_eq!(q.pop(), Some(1));
        assert!(q.push(4));
        assert_eq!((q.pop(), q.pop(), q.pop()), (Some(2), Some(4), None));
    }
}

/// An ordered list of at most `N` items kept inline; removal keeps the order.
#[derive(Debug)]
pub(crate) struct Table<T: Copy, const N: usize> {
    items: [Option<T>; N],
    len: usize,
}

impl<T: Copy, const N: usize> Table<T, N> {
    pub(crate) const fn new() -> Self {
        Table {
            items: [None; N],
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len == N
    }

    /// Appends; `false` if full.
    #[must_use]
    pub(crate) fn push(&mut self, item: T) -> bool {
        if self.len == N {
            return false;
        }
        self.items[self.len] = Some(item);
        self.len += 1;
        true
    }

    /// Removes item `i`, shifting the later ones down.
    pub(crate) fn remove(&mut self, i: usize) {
        if i >= self.len {
            return;
        }
        self.items[i..self.len].rotate_left(1);
        self.len -= 1;
        self.items[self.len] = None;
    }

    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        self.items.get(i)?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.items.get_mut(i)?.as_mut()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.items[..self.len].iter().flatten()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.items[..self.len].iter_mut().flatten()
    }

    /// The first item matching `pred`, with its index.
    pub(crate) fn find(&self, pred: impl Fn(&T) -> bool) -> Option<(usize, T)> {
        self.iter()
            .copied()
            .enumerate()
            .find(|(_, item)| pred(item))
    }
}

#[cfg(test)]
mod table_tests {
    use super::Table;

    #[test]
    fn removal_keeps_order() {
        let mut t: Table<u8, 3> = Table::new();
        assert!(t.push(1) && t.push(2) && t.push(3) && !t.push(4));
        t.remove(1);
        assert!(t.iter().copied().eq([1, 3]));
        assert!(t.push(5));
        assert_eq!(t.find(|&x| x == 5), Some((2, 5)));
        assert_eq!(t.find(|&x| x == 2), None);
        t.remove(7);
        assert_eq!(t.len(), 3);
    }
}
