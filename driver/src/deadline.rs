//! Deadlines from caller-supplied timeouts, without overflow.

use std::time::{Duration, Instant};

/// How far ahead a deadline is put when `now + timeout` is not representable: about a
/// century, which no wait outlives.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `Instant::now() + timeout`, clamped to a far-future instant when the sum overflows
/// (`Instant + Duration` panics on overflow, and timeouts come from callers, e.g.
/// `--timeout 18446744073709551615`).
pub(crate) fn deadline(timeout: Duration) -> Instant {
    deadline_from(Instant::now(), timeout)
}

/// [`deadline`] counted from `start`.
pub(crate) fn deadline_from(start: Instant, timeout: Duration) -> Instant {
    [timeout, FAR_FUTURE, Duration::from_secs(24 * 60 * 60)]
        .into_iter()
        .find_map(|d| start.checked_add(d))
        // Unreachable in practice (a monotonic clock a day from overflow); never panics.
        .unwrap_or(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_timeouts_clamp_instead_of_panicking() {
        let now = Instant::now();
        let d = deadline(Duration::MAX);
        assert!(d >= now + Duration::from_secs(365 * 24 * 60 * 60));
        assert!(deadline_from(now, Duration::MAX) > now);
        assert!(deadline_from(now, Duration::new(u64::MAX, 999_999_999)) > now);
    }

    #[test]
    fn ordinary_timeouts_are_exact() {
        let now = Instant::now();
        assert_eq!(deadline_from(now, Duration::ZERO), now);
        assert_eq!(
            deadline_from(now, Duration::from_millis(1500)),
            now + Duration::from_millis(1500)
        );
        assert!(deadline(Duration::from_secs(10)) > now);
    }
}
