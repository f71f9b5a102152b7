//! Control-message credit (PROTOCOL.md §5.2), the same arithmetic for both roles.
//!
//! Each side counts the messages it sent that occupy a buffer or slot at the peer, learns
//! from the `ack` the peer puts in its own messages how many of them it processed, and may
//! have at most `peer_depth − 1` unprocessed ordinary messages out: the last slot is kept for
//! the final Goodbye or Error. It also counts the peer's messages it processed and reports
//! the count; a pure ack goes out when at least half its own depth is unreported, so a peer
//! blocked on credit is always unblocked. All counters wrap at 2³².

/// One side's control credit and ack bookkeeping.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CtrlFlow {
    /// Messages sent that occupy a buffer or slot at the peer.
    sent: u32,
    /// How many of them the peer reported processed.
    peer_acked: u32,
    /// Peer messages processed here.
    processed: u32,
    /// `processed` as last reported to the peer.
    advertised: u32,
    /// Buffers or slots at the peer.
    peer_depth: u32,
    /// Unreported processed messages that make a pure ack due.
    ack_threshold: u32,
}

impl CtrlFlow {
    /// `peer_depth`: the peer's buffers for our messages; `own_depth`: ours for its messages.
    pub(crate) fn new(peer_depth: u16, own_depth: u16) -> Self {
        CtrlFlow {
            sent: 0,
            peer_acked: 0,
            processed: 0,
            advertised: 0,
            peer_depth: u32::from(peer_depth),
            ack_threshold: u32::from(own_depth).div_ceil(2).max(1),
        }
    }

    /// Our messages the peer has not reported processed.
    pub(crate) fn outstanding(&self) -> u32 {
        self.sent.wrapping_sub(self.peer_acked)
    }

    /// Whether an ordinary message may go now (one slot stays for the final message).
    pub(crate) fn may_send(&self) -> bool {
        // spec: [ctrl.credit]
        self.outstanding() + 1 < self.peer_depth
    }

    /// Whether the final Goodbye or Error may go now.
    pub(crate) fn may_send_final(&self) -> bool {
        // spec: [ctrl.credit]
        self.outstanding() < self.peer_depth
    }

    /// Records a message sent; returns its number and the `ack` value it carries.
    pub(crate) fn on_send(&mut self) -> (u32, u32) {
        let n = self.sent;
        self.sent = self.sent.wrapping_add(1);
        self.advertised = self.processed;
        (n, self.processed)
    }

    /// Records that `processed` was reported without a counted message (an ack riding
    /// elsewhere); returns the count to report.
    pub(crate) fn on_report(&mut self) -> u32 {
        self.advertised = self.processed;
        self.processed
    }

    /// The peer reports `ack` of our messages processed; `false` if that is more than we sent
    /// or less than it reported before.
    #[must_use]
    pub(crate) fn on_peer_ack(&mut self, ack: u32) -> bool {
        // spec: [ctrl.ack]
        if ack.wrapping_sub(self.peer_acked) > self.outstanding() {
            return false;
        }
        self.peer_acked = ack;
        true
    }

    /// The latest count the peer reported.
    pub(crate) fn peer_acked(&self) -> u32 {
        self.peer_acked
    }

    /// Records one peer message processed.
    pub(crate) fn on_processed(&mut self) {
        self.processed = self.processed.wrapping_add(1);
    }

    /// The count last reported to the peer.
    pub(crate) fn advertised(&self) -> u32 {
        self.advertised
    }

    /// Whether a pure ack is due.
    pub(crate) fn ack_due(&self) -> bool {
        // spec: [ctrl.pure-ack]
        self.processed.wrapping_sub(self.advertised) >= self.ack_threshold
    }

    /// Test hook: as if `n` messages had been sent and all acknowledged.
    #[cfg(test)]
    pub(crate) fn skip_sent(&mut self, n: u32) {
        self.sent = n;
        self.peer_acked = n;
    }

    /// Test hook: as if `n` peer messages had been processed and reported.
    #[cfg(test)]
    pub(crate) fn skip_processed(&mut self, n: u32) {
        self.processed = n;
        self.advertised = n;
    }
}

/// The control-ring slot of the sender's next message: `n mod depth` for the message's full
/// number `n` (PROTOCOL.md §3.3), advanced by one per message. Not derived from the 32-bit
/// message counter: 2³² is not a multiple of most depths (the default 72, say), so
/// `(n mod 2³²) mod depth` would jump after 2³² messages onto a slot whose message may still
/// be unread. Both roles keep one, so they agree on every slot.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SlotCursor {
    next: u32,
    depth: u32,
}

impl SlotCursor {
    /// The cursor at message 0 of a ring of `depth` slots (at least 1).
    pub(crate) fn new(depth: u16) -> Self {
        SlotCursor {
            next: 0,
            depth: u32::from(depth).max(1),
        }
    }

    /// The slot of the next message; moves past it.
    pub(crate) fn advance(&mut self) -> u32 {
        let slot = self.next;
        self.next = if slot + 1 >= self.depth { 0 } else { slot + 1 };
        slot
    }

    /// Test hook: the cursor at message `n`.
    #[cfg(test)]
    pub(crate) fn at(depth: u16, n: u64) -> Self {
        let mut c = SlotCursor::new(depth);
        // n mod depth < depth ≤ u16::MAX.
        c.next = (n % u64::from(c.depth)) as u32;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::{CtrlFlow, SlotCursor};

    #[test]
    // spec-test: [ctrl.slot]
    fn the_slot_cursor_goes_round_the_ring() {
        let mut c = SlotCursor::new(3);
        let slots: [u32; 7] = core::array::from_fn(|_| c.advance());
        assert_eq!(slots, [0, 1, 2, 0, 1, 2, 0]);
        let mut one = SlotCursor::new(1);
        assert_eq!((one.advance(), one.advance()), (0, 0));
        let mut far = SlotCursor::at(72, (1 << 32) + 31);
        assert_eq!(far.advance(), 71, "(2^32 + 31) mod 72");
        assert_eq!(far.advance(), 0);
    }

    #[test]
    // spec-test: [ctrl.credit]
    fn ordinary_messages_leave_the_last_slot_free() {
        let mut f = CtrlFlow::new(3, 8);
        assert!(f.may_send());
        f.on_send();
        assert!(f.may_send());
        f.on_send();
        assert!(!f.may_send(), "2 of 3 out: only the final message may go");
        assert!(f.may_send_final());
        f.on_send();
        assert!(!f.may_send_final());
        assert!(f.on_peer_ack(2));
        assert_eq!(f.outstanding(), 1);
        assert!(f.may_send());
    }

    #[test]
    // spec-test: [ctrl.ack]
    fn acks_may_not_exceed_what_was_sent_or_go_back() {
        let mut f = CtrlFlow::new(8, 8);
        f.on_send();
        f.on_send();
        assert!(!f.on_peer_ack(3));
        assert!(f.on_peer_ack(2));
        assert!(f.on_peer_ack(2), "repeating the same count is fine");
        assert!(!f.on_peer_ack(1), "going back is not");
        assert_eq!(f.peer_acked(), 2);
    }

    #[test]
    fn counters_wrap() {
        let mut f = CtrlFlow::new(8, 8);
        f.sent = u32::MAX;
        f.peer_acked = u32::MAX;
        let (n, _) = f.on_send();
        assert_eq!(n, u32::MAX);
        assert_eq!(f.outstanding(), 1);
        assert!(f.on_peer_ack(0));
        assert_eq!(f.outstanding(), 0);
    }

    #[test]
    // spec-test: [ctrl.pure-ack]
    fn a_pure_ack_is_due_at_half_our_depth() {
        let mut f = CtrlFlow::new(8, 5);
        for _ in 0..2 {
            f.on_processed();
        }
        assert!(!f.ack_due(), "2 < ceil(5 / 2)");
        f.on_processed();
        assert!(f.ack_due());
        assert_eq!(f.on_report(), 3);
        assert!(!f.ack_due());
        f.on_processed();
        let (_, ack) = f.on_send();
        assert_eq!(ack, 4, "every message carries the count");
        assert_eq!(f.advertised(), 4);
        let one = CtrlFlow::new(8, 1);
        assert_eq!(one.ack_threshold, 1);
    }
}
