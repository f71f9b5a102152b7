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
