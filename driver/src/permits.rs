//! Counted permits for what a receiver shares between its connections and must bound: file
//! descriptors for open files, and connections still in their handshake (which hold a
//! registered ring before the sender proved the key). A caller either takes one now or
//! waits a bounded time for one; without one it refuses the work with a named reason.

use crate::sync::{lock, Condvar, Mutex};
// A std `Arc` also under loom (loom's cannot be a method receiver); the count uses the shim.
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A pool of `n` permits.
#[derive(Debug)]
pub(crate) struct Permits {
    /// Free permits, and callers waiting in [`take_within`](Permits::take_within).
    free: Mutex<Counts>,
    returned: Condvar,
    total: u64,
}

#[derive(Debug)]
struct Counts {
    free: u64,
    /// A permit given back signals the condvar only for them: a notify is a system call
    /// even with nobody waiting, and a receiver gives a permit back per file.
    waiters: u64,
}

/// One permit, given back when dropped.
#[derive(Debug)]
pub(crate) struct Permit(Arc<Permits>);

impl Permits {
    pub(crate) fn new(total: u64) -> Arc<Permits> {
        Arc::new(Permits {
            free: Mutex::new(Counts {
                free: total,
                waiters: 0,
            }),
            returned: Condvar::new(),
            total,
        })
    }

    /// A permit if one is free.
    pub(crate) fn try_take(self: &Arc<Self>) -> Option<Permit> {
        let mut counts = lock(&self.free);
        counts.free = counts.free.checked_sub(1)?;
        Some(Permit(Arc::clone(self)))
    }

    /// A permit, waiting up to `timeout` for one to come back; `None` also as soon as
    /// `give_up()` says so (checked at least every `POLL`).
    pub(crate) fn take_within(
        self: &Arc<Self>,
        timeout: Duration,
        give_up: impl Fn() -> bool,
    ) -> Option<Permit> {
        const POLL: Duration = Duration::from_millis(50);
        let deadline = Instant::now() + timeout;
        let mut counts = lock(&self.free);
        loop {
            if let Some(n) = counts.free.checked_sub(1) {
                counts.free = n;
                return Some(Permit(Arc::clone(self)));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || give_up() {
                return None;
            }
            counts.waiters += 1;
            counts = match self.returned.wait_timeout(counts, left.min(POLL)) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
            counts.waiters -= 1;
        }
    }

    /// How many there are in all.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// How many are free now.
    #[cfg(test)]
    pub(crate) fn free(&self) -> u64 {
        lock(&self.free).free
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = lock(&self.0.free);
        counts.free += 1;
        let waiting = counts.waiters > 0;
        drop(counts);
        if waiting {
            self.0.returned.notify_one();
        }
    }
}

#[cfg(all(test, not(rdmaft_loom)))]
mod tests {
    use super::*;

    #[test]
    fn permits_run_out_and_come_back() {
        let p = Permits::new(2);
        let a = p.try_take().expect("first");
        let b = p.try_take().expect("second");
        assert!(p.try_take().is_none(), "only two");
        drop(a);
        assert_eq!(p.free(), 1);
        let c = p.try_take().expect("given back");
        drop((b, c));
        assert_eq!((p.free(), p.total()), (2, 2));
    }

    #[test]
    fn an_empty_pool_gives_nothing() {
        assert!(Permits::new(0).try_take().is_none());
        let waited = Instant::now();
        assert!(Permits::new(0)
            .take_within(Duration::from_millis(30), || false)
            .is_none());
        assert!(waited.elapsed() >= Duration::from_millis(30));
        assert!(Permits::new(0)
            .take_within(Duration::from_secs(3600), || true)
            .is_none());
    }

    #[test]
    fn a_waiter_gets_the_permit_given_back() {
        let p = Permits::new(1);
        let held = p.try_take().unwrap();
        let waiter = {
            let p = Arc::clone(&p);
            std::thread::spawn(move || p.take_within(Duration::from_secs(60), || false).is_some())
        };
        std::thread::sleep(Duration::from_millis(20));
        drop(held);
        assert!(waiter.join().unwrap(), "the waiter got the permit back");
    }
}

/// Model check: threads taking and returning permits never hold more than there are, and
/// every permit comes back.
#[cfg(all(test, rdmaft_loom))]
mod loom_tests {
    use super::*;
    use crate::sync::{thread, AtomicU64, Ordering};

    #[test]
    fn never_more_permits_out_than_the_pool_holds() {
        loom::model(|| {
            let p = Permits::new(1);
            let out = crate::sync::Arc::new(AtomicU64::new(0));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let (p, out) = (Arc::clone(&p), crate::sync::Arc::clone(&out));
                    thread::spawn(move || {
                        if let Some(permit) = p.try_take() {
                            let held = out.fetch_add(1, Ordering::SeqCst) + 1;
                            assert!(held <= 1, "{held} permits out of 1");
                            out.fetch_sub(1, Ordering::SeqCst);
                            drop(permit);
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(lock(&p.free).free, 1, "every permit came back");
        });
    }
}
