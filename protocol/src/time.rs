//! Time as an input: the state machines never read a clock.

use core::time::Duration;

/// A point in time on the caller's monotonic clock, in nanoseconds from an arbitrary origin.
///
/// The protocol only compares instants and adds durations to them, so any monotonic source works
/// (`std::time::Instant` differences, a simulated clock in tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Instant(u64);

impl Instant {
    /// The origin of the caller's clock.
    pub const ZERO: Instant = Instant(0);

    /// An instant `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Instant(nanos)
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating at the end of time instead of overflowing.
    pub fn saturating_add(self, d: Duration) -> Self {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::Instant;
    use core::time::Duration;

    #[test]
    fn instants_are_nanoseconds() {
        assert_eq!(Instant::from_nanos(1_500).as_nanos(), 1_500);
        assert_eq!(Instant::ZERO.as_nanos(), 0);
        let later = Instant::from_nanos(1_000).saturating_add(Duration::from_micros(2));
        assert_eq!(later.as_nanos(), 3_000);
    }
}
