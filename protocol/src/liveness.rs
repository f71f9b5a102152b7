//! Liveness (PROTOCOL.md §8): the idle timer and the keepalive timer, for both roles.
//!
//! The idle timer is reset by what *arrives* from the peer (any message, chunk or ack), and
//! by nothing else: local calls prove nothing about the peer. The keepalive timer is reset by
//! anything *sent*; when it runs out the side sends a keepalive, so a peer that is alive but
//! has nothing to say (stalled on its disk, verifying a large file) is never mistaken for a
//! dead one.

use crate::time::Instant;
use core::time::Duration;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Liveness {
    idle_timeout: Option<Duration>,
    keepalive: Duration,
    last_arrival: Instant,
    last_sent: Instant,
}

impl Liveness {
    pub(crate) fn new(idle_timeout: Option<Duration>, keepalive_ms: u32, now: Instant) -> Self {
        Liveness {
            idle_timeout,
            keepalive: Duration::from_millis(u64::from(keepalive_ms)),
            last_arrival: now,
            last_sent: now,
        }
    }

    pub(crate) fn arrived(&mut self, now: Instant) {
        // spec: [live.idle]
        self.last_arrival = self.last_arrival.max(now);
    }

    pub(crate) fn sent(&mut self, now: Instant) {
        self.last_sent = self.last_sent.max(now);
    }

    /// When the peer counts as gone, if an idle timeout is set.
    pub(crate) fn idle_deadline(&self) -> Option<Instant> {
        self.idle_timeout
            .map(|t| self.last_arrival.saturating_add(t))
    }

    /// When a keepalive is due.
    pub(crate) fn keepalive_deadline(&self) -> Instant {
        self.last_sent.saturating_add(self.keepalive)
    }

    pub(crate) fn keepalive_due(&self, now: Instant) -> bool {
        now >= self.keepalive_deadline()
    }

    pub(crate) fn timed_out(&self, now: Instant) -> bool {
        // spec: [live.idle]
        self.idle_deadline().is_some_and(|d| now >= d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_nanos(n * 1_000_000)
    }

    #[test]
    // spec-test: [live.idle]
    fn only_arrivals_reset_the_idle_timer() {
        let mut l = Liveness::new(Some(Duration::from_millis(100)), 30, ms(0));
        assert_eq!(l.idle_deadline(), Some(ms(100)));
        l.sent(ms(90));
        assert!(
            l.timed_out(ms(100)),
            "sending proves nothing about the peer"
        );
        l.arrived(ms(50));
        assert!(!l.timed_out(ms(149)));
        assert!(l.timed_out(ms(150)));
        l.arrived(ms(10));
        assert_eq!(
            l.idle_deadline(),
            Some(ms(150)),
            "time never runs backwards"
        );
        let none = Liveness::new(None, 30, ms(0));
        assert!(!none.timed_out(ms(1_000_000)));
        assert_eq!(none.idle_deadline(), None);
    }

    #[test]
    fn keepalives_follow_the_last_send() {
        let mut l = Liveness::new(None, 30, ms(0));
        assert!(!l.keepalive_due(ms(29)));
        assert!(l.keepalive_due(ms(30)));
        l.arrived(ms(29));
        assert!(l.keepalive_due(ms(30)), "arrivals do not count");
        l.sent(ms(25));
        assert_eq!(l.keepalive_deadline(), ms(55));
    }
}
