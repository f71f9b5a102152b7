//! Calling the C callbacks: only while the context's gate is open (no callback starts after
//! its first stop), and marking the thread as inside a callback of that context meanwhile,
//! so that a stop or a wait called from the callback knows it must not wait for itself.

use super::handle::{Gate, Token};
use std::cell::Cell;

thread_local! {
    /// The token of the context whose callback this thread is running (0: none).
    static INSIDE: Cell<u64> = const { Cell::new(0) };
}

/// Runs `call` (a C callback of the context `token`) unless the context was stopped.
pub(super) fn run(token: Token, gate: &Gate, call: impl FnOnce()) {
    if !gate.is_open() {
        return;
    }
    // A callback may start another context's work, whose callbacks run on other threads;
    // on this thread callbacks do not nest, but restore the outer mark all the same.
    let outer = INSIDE.with(|c| c.replace(token.get()));
    call();
    INSIDE.with(|c| c.set(outer));
}

/// Whether the calling thread is inside a callback of the context `token`.
pub(super) fn inside(token: Token) -> bool {
    INSIDE.with(|c| c.get() == token.get())
}

#[cfg(all(test, not(rdmaft_loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_mark_holds_only_during_an_open_callback() {
        let gate = Gate::new();
        let (a, b) = (
            Token::from_ptr(1 as *const u8),
            Token::from_ptr(3 as *const u8),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let mut ran = 0;
        run(a, &gate, || {
            ran += 1;
            assert!(inside(a));
            assert!(!inside(b));
        });
        assert_eq!(ran, 1);
        assert!(!inside(a), "the mark ends with the callback");
    }
}
