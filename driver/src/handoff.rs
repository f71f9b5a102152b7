//! The engine's concurrent core: how the thread that owns a connection (it polls the
//! completion queue, drives the protocol state machine and posts work) hands work to the
//! file I/O thread beside it and gets the results back, how a cancel or stop reaches it, and
//! how a result is delivered exactly once.
//!
//! - [`Mailbox`]: a queue one thread pushes to and another pops from, closable, that also
//!   pokes a [`Wake`]r, so a consumer asleep in `poll(2)` (the connection thread, waiting on
//!   its completion channel too) wakes up. Slots travel through it by value, so each is owned
//!   by exactly one thread at any time.
//! - [`Stop`]: a flag set once, waking everyone registered.
//! - [`Once`]: a result cell written at most once and read once.
//!
//! Written against the `sync` shim and model-checked with loom (`tests` below, run by
//! `make loom`); no FFI here.

use crate::sync::{lock, AtomicBool, Condvar, Mutex, Ordering};
use std::collections::VecDeque;

/// A shared waker. Always a `std` `Arc` (loom's cannot hold a trait object); the waker's own
/// state uses the shim.
pub(crate) type Waker = std::sync::Arc<dyn Wake>;

/// Wakes a thread that may be asleep: an eventfd for a connection thread (it sleeps in
/// `poll(2)`), or a condvar in the models.
pub(crate) trait Wake: Send + Sync {
    fn wake(&self);
}

struct Queue<T> {
    items: VecDeque<T>,
    closed: bool,
    /// Consumers blocked in [`Mailbox::pop`]: a push signals the condvar only for them.
    sleepers: usize,
}

/// A closable FIFO between two threads.
///
/// Wake-ups cost a system call each (and, in the Soft-RoCE VM, an emulated context switch),
/// so a push wakes only when it must: the condvar only if a consumer sleeps on it, the
/// waker only when the mailbox goes from empty to non-empty. A consumer using the waker must
/// therefore empty the mailbox (`try_pop` until `None`) before it sleeps again.
pub(crate) struct Mailbox<T> {
    queue: Mutex<Queue<T>>,
    ready: Condvar,
    waker: Option<Waker>,
}

impl<T> Mailbox<T> {
    /// A mailbox; `waker` is also poked when a push finds it empty, and on close.
    pub(crate) fn new(waker: Option<Waker>) -> Self {
        Mailbox {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                closed: false,
                sleepers: 0,
            }),
            ready: Condvar::new(),
            waker,
        }
    }

    /// Adds `item`; gives it back when the mailbox is closed. (The engines hand work over
    /// in batches, [`push_all`](Self::push_all); the models push one at a time.)
    #[cfg(any(test, rdmaft_loom))]
    pub(crate) fn push(&self, item: T) -> Result<(), T> {
        let (sleeping, was_empty) = {
            let mut q = lock(&self.queue);
            if q.closed {
                return Err(item);
            }
            let was_empty = q.items.is_empty();
            q.items.push_back(item);
            (q.sleepers > 0, was_empty)
        };
        if sleeping {
            self.ready.notify_one();
        }
        if was_empty {
            if let Some(w) = &self.waker {
                w.wake();
            }
        }
        Ok(())
    }

    /// Adds every item of `items` (emptying it) with one lock and at most one wake-up: a
    /// thread that batches what it hands over wakes its consumer once per batch, not once
    /// per item. Gives them back (still in `items`) when the mailbox is closed.
    pub(crate) fn push_all(&self, items: &mut Vec<T>) -> Result<(), ()> {
        if items.is_empty() {
            return Ok(());
        }
        let (sleeping, was_empty) = {
            let mut q = lock(&self.queue);
            if q.closed {
                return Err(());
            }
            let was_empty = q.items.is_empty();
            q.items.extend(items.drain(..));
            (q.sleepers > 0, was_empty)
        };
        if sleeping {
            self.ready.notify_one();
        }
        if was_empty {
            if let Some(w) = &self.waker {
                w.wake();
            }
        }
        Ok(())
    }

    /// The oldest item, without waiting.
    pub(crate) fn try_pop(&self) -> Option<T> {
        lock(&self.queue).items.pop_front()
    }

    /// The oldest item, waiting for one; `None` once the mailbox is closed and empty.
    pub(crate) fn pop(&self) -> Option<T> {
        let mut q = lock(&self.queue);
        loop {
            if let Some(item) = q.items.pop_front() {
                return Some(item);
            }
            if q.closed {
                return None;
            }
            q.sleepers += 1;
            q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            q.sleepers -= 1;
        }
    }

    /// Refuses further pushes; items already in stay poppable. Wakes the consumer.
    pub(crate) fn close(&self) {
        lock(&self.queue).closed = true;
        self.ready.notify_all();
        if let Some(w) = &self.waker {
            w.wake();
        }
    }
}

/// A flag raised once (cancel, stop), waking every registered thread.
pub(crate) struct Stop {
    raised: AtomicBool,
    /// Weak: a stop shared by a receiver's connections must not keep each ended
    /// connection's waker (an eventfd) alive.
    wakers: Mutex<Vec<std::sync::Weak<dyn Wake>>>,
}

impl Stop {
    pub(crate) fn new() -> Self {
        Stop {
            raised: AtomicBool::new(false),
            wakers: Mutex::new(Vec::new()),
        }
    }

    /// Raises the flag and wakes everyone registered; later calls do nothing more.
    pub(crate) fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        let wakers: Vec<Waker> = lock(&self.wakers)
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect();
        for w in wakers {
            w.wake();
        }
    }

    pub(crate) fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// Registers `w` to be woken by [`raise`](Self::raise) for as long as it lives; if
    /// already raised, wakes it now (so a thread registering late still sees the stop).
    pub(crate) fn register(&self, w: Waker) {
        let mut wakers = lock(&self.wakers);
        wakers.retain(|w| w.strong_count() > 0);
        wakers.push(std::sync::Arc::downgrade(&w));
        drop(wakers);
        if self.is_raised() {
            w.wake();
        }
    }
}

impl std::fmt::Debug for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stop")
            .field("raised", &self.is_raised())
            .finish()
    }
}

/// A value set at most once and taken once: a transfer's final report.
pub(crate) struct Once<T> {
    slot: Mutex<OnceState<T>>,
    set: Condvar,
}

enum OnceState<T> {
    Empty,
    Full(T),
    Taken,
}

impl<T> Once<T> {
    pub(crate) fn new() -> Self {
        Once {
            slot: Mutex::new(OnceState::Empty),
            set: Condvar::new(),
        }
    }

    /// Sets the value; `false` (and `v` dropped) if it was set before.
    pub(crate) fn set(&self, v: T) -> bool {
        let mut s = lock(&self.slot);
        if !matches!(*s, OnceState::Empty) {
            return false;
        }
        *s = OnceState::Full(v);
        drop(s);
        self.set.notify_all();
        true
    }

    /// Waits for the value and takes it; `None` if another caller took it.
    pub(crate) fn take(&self) -> Option<T> {
        let mut s = lock(&self.slot);
        loop {
            match std::mem::replace(&mut *s, OnceState::Taken) {
                OnceState::Full(v) => return Some(v),
                OnceState::Taken => return None,
                OnceState::Empty => {
                    *s = OnceState::Empty;
                    s = self.set.wait(s).unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }

    /// Whether the value was set (taken or not).
    pub(crate) fn is_set(&self) -> bool {
        !matches!(*lock(&self.slot), OnceState::Empty)
    }

    /// Waits up to `timeout` for the value to be set; whether it was (taken or not).
    #[cfg(not(rdmaft_loom))]
    pub(crate) fn wait_set(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut s = lock(&self.slot);
        while matches!(*s, OnceState::Empty) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            s = match self.set.wait_timeout(s, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }
}

impl<T> std::fmt::Debug for Once<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Once").field("set", &self.is_set()).finish()
    }
}

/// A waker for models and tests: counts wake-ups and lets a thread wait for one.
#[cfg(any(test, rdmaft_loom))]
pub(crate) struct CondWake {
    count: Mutex<u64>,
    cv: Condvar,
}

#[cfg(any(test, rdmaft_loom))]
impl CondWake {
    pub(crate) fn new() -> Self {
        CondWake {
            count: Mutex::new(0),
            cv: Condvar::new(),
        }
    }

    /// Waits until the count moves past `seen`; returns the new count.
    #[cfg_attr(not(rdmaft_loom), allow(dead_code))]
    pub(crate) fn wait_past(&self, seen: u64) -> u64 {
        let mut c = lock(&self.count);
        while *c == seen {
            c = self.cv.wait(c).unwrap_or_else(|p| p.into_inner());
        }
        *c
    }

    pub(crate) fn count(&self) -> u64 {
        *lock(&self.count)
    }
}

#[cfg(any(test, rdmaft_loom))]
impl Wake for CondWake {
    fn wake(&self) {
        *lock(&self.count) += 1;
        self.cv.notify_all();
    }
}

#[cfg(all(test, not(rdmaft_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    /// A timed wait ends when the value comes (taken or not), or at its timeout without it.
    #[test]
    fn a_timed_wait_ends_when_the_value_is_set() {
        use std::time::{Duration, Instant};
        let once = Arc::new(Once::new());
        let t = Instant::now();
        assert!(!once.wait_set(Duration::from_millis(20)));
        assert!(
            t.elapsed() >= Duration::from_millis(20),
            "waited out its timeout"
        );
        let setter = {
            let once = Arc::clone(&once);
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(20));
                once.set(7)
            })
        };
        // Without the set's wake this waits out the hour (and the suite's time limit).
        assert!(once.wait_set(Duration::from_secs(3600)));
        assert!(setter.join().unwrap());
        assert_eq!(once.take(), Some(7));
        assert!(once.wait_set(Duration::ZERO), "taken is still set");
    }

    #[test]
    fn mailbox_keeps_order_and_refuses_after_close() {
        let m = Mailbox::new(None);
        m.push(1).unwrap();
        m.push(2).unwrap();
        m.close();
        assert_eq!(m.push(3), Err(3));
        assert_eq!(m.pop(), Some(1));
        assert_eq!(m.try_pop(), Some(2));
        assert_eq!(m.pop(), None);
    }

    #[test]
    fn pushes_wake_the_consumer_and_the_waker() {
        let wake = Arc::new(CondWake::new());
        let m = Arc::new(Mailbox::new(Some(wake.clone() as Waker)));
        let consumer = {
            let m = Arc::clone(&m);
            thread::spawn(move || (m.pop(), m.pop()))
        };
        m.push("a").unwrap();
        m.close();
        assert_eq!(consumer.join().unwrap(), (Some("a"), None));
        assert_eq!(wake.count(), 2, "one push and the close");
    }

    #[test]
    fn only_a_push_into_an_empty_mailbox_wakes() {
        let wake = Arc::new(CondWake::new());
        let m = Mailbox::new(Some(wake.clone() as Waker));
        m.push(1).unwrap();
        m.push(2).unwrap();
        m.push(3).unwrap();
        assert_eq!(wake.count(), 1, "the consumer has not emptied it yet");
        while m.try_pop().is_some() {}
        m.push(4).unwrap();
        assert_eq!(wake.count(), 2, "empty again: this push wakes");
    }

    #[test]
    fn a_batch_wakes_once_and_keeps_its_order() {
        let wake = Arc::new(CondWake::new());
        let m = Mailbox::new(Some(wake.clone() as Waker));
        let mut batch = vec![1, 2, 3];
        m.push_all(&mut batch).unwrap();
        assert!(batch.is_empty());
        m.push_all(&mut batch).unwrap();
        assert_eq!(
            wake.count(),
            1,
            "one wake for the batch, none for an empty one"
        );
        m.push(4).unwrap();
        let got: Vec<_> = std::iter::from_fn(|| m.try_pop()).collect();
        assert_eq!(got, [1, 2, 3, 4]);
        m.close();
        let mut late = vec![5];
        assert!(m.push_all(&mut late).is_err());
        assert_eq!(late, [5], "a refused batch is given back");
    }

    #[test]
    fn stop_wakes_late_registrants() {
        let s = Stop::new();
        let early = Arc::new(CondWake::new());
        s.register(early.clone());
        s.raise();
        assert!(s.is_raised());
        assert_eq!(early.count(), 1);
        let late = Arc::new(CondWake::new());
        s.register(late.clone());
        assert_eq!(late.count(), 1);
    }

    #[test]
    fn stop_does_not_keep_ended_wakers_alive() {
        let s = Stop::new();
        for _ in 0..10 {
            let w = Arc::new(CondWake::new());
            s.register(w.clone());
            assert_eq!(
                Arc::strong_count(&w),
                1,
                "the stop holds no strong reference"
            );
        }
        let kept = Arc::new(CondWake::new());
        s.register(kept.clone());
        assert_eq!(lock(&s.wakers).len(), 1, "dead wakers are pruned");
        s.raise();
        assert_eq!(kept.count(), 1);
    }

    #[test]
    fn once_is_set_once_and_taken_once() {
        let o = Arc::new(Once::new());
        let taker = {
            let o = Arc::clone(&o);
            thread::spawn(move || o.take())
        };
        assert!(o.set(1));
        assert!(!o.set(2));
        assert_eq!(taker.join().unwrap(), Some(1));
        assert_eq!(o.take(), None);
        assert!(o.is_set());
    }
}

/// Model checks of the core (`RUSTFLAGS="--cfg rdmaft_loom" cargo test --release -p rdmaft
/// --lib handoff`, with `LOOM_MAX_PREEMPTIONS=2`): every interleaving of the threads within
/// the bound.
#[cfg(all(test, rdmaft_loom))]
mod loom_tests {
    use super::*;
    use crate::sync::{thread, Arc};

    /// A slot is owned by one side at a time: the poller hands slots to the I/O thread, which
    /// gives each back once; the poller sleeps between completions and never misses one.
    #[test]
    fn slots_round_trip_without_lost_wakeups() {
        loom::model(|| {
            let wake = std::sync::Arc::new(CondWake::new());
            let to_io: Arc<Mailbox<u32>> = Arc::new(Mailbox::new(None));
            let back: Arc<Mailbox<u32>> = Arc::new(Mailbox::new(Some(wake.clone() as Waker)));
            let io = {
                let (to_io, back) = (Arc::clone(&to_io), Arc::clone(&back));
                thread::spawn(move || {
                    while let Some(slot) = to_io.pop() {
                        back.push(slot).unwrap();
                    }
                })
            };
            to_io.push(0).unwrap();
            to_io.push(1).unwrap();
            let mut got = Vec::new();
            while got.len() < 2 {
                // The poller's loop: note the wake count, take what is there, then sleep
                // until the count moves (a push after the drain moves it: no lost wakeup).
                let before = wake.count();
                while let Some(s) = back.try_pop() {
                    got.push(s);
                }
                if got.len() < 2 {
                    wake.wait_past(before);
                }
            }
            to_io.close();
            io.join().unwrap();
            got.sort();
            assert_eq!(got, [0, 1]);
        });
    }

    /// The I/O thread hands its results back in batches while the poller drains and
    /// sleeps: no batch is lost and the poller never sleeps with one waiting.
    #[test]
    fn batches_round_trip_without_lost_wakeups() {
        loom::model(|| {
            let wake = std::sync::Arc::new(CondWake::new());
            let back: Arc<Mailbox<u32>> = Arc::new(Mailbox::new(Some(wake.clone() as Waker)));
            let io = {
                let back = Arc::clone(&back);
                thread::spawn(move || {
                    back.push_all(&mut vec![0, 1]).unwrap();
                    back.push_all(&mut vec![2]).unwrap();
                })
            };
            let mut got = Vec::new();
            while got.len() < 3 {
                let before = wake.count();
                while let Some(s) = back.try_pop() {
                    got.push(s);
                }
                if got.len() < 3 {
                    wake.wait_past(before);
                }
            }
            io.join().unwrap();
            assert_eq!(got, [0, 1, 2]);
        });
    }

    /// A stop raised while a thread registers its waker: the thread is woken, whichever
    /// comes first (a late registrant is woken by `register` itself). Without that re-check
    /// in `register`, the interleaving "raise reads the empty list, then the register
    /// pushes" leaves the thread asleep: the model fails.
    #[test]
    fn a_stop_raised_while_a_thread_registers_wakes_it() {
        loom::model(|| {
            let stop = Arc::new(Stop::new());
            let wake = std::sync::Arc::new(CondWake::new());
            let registrant = {
                let (stop, wake) = (Arc::clone(&stop), std::sync::Arc::clone(&wake));
                thread::spawn(move || stop.register(wake))
            };
            stop.raise();
            registrant.join().unwrap();
            assert!(stop.is_raised());
            assert!(wake.count() >= 1, "the registered thread was never woken");
        });
    }

    /// A send's report is set once by its thread while two callers wait for it (the C
    /// API's wait and stop can both be waiting): exactly one caller gets it, the other
    /// `None`, and neither waits forever.
    #[test]
    fn a_report_goes_to_exactly_one_of_two_waiters() {
        loom::model(|| {
            let report: Arc<Once<u32>> = Arc::new(Once::new());
            let setter = {
                let report = Arc::clone(&report);
                thread::spawn(move || assert!(report.set(7)))
            };
            let other = {
                let report = Arc::clone(&report);
                thread::spawn(move || report.take())
            };
            let mine = report.take();
            let theirs = other.join().unwrap();
            setter.join().unwrap();
            let got: Vec<u32> = mine.into_iter().chain(theirs).collect();
            assert_eq!(got, [7], "taken exactly once");
            assert!(!report.set(8), "set at most once");
        });
    }

    /// Closing while the producer pushes: every item accepted before the close is delivered,
    /// and the consumer ends.
    #[test]
    fn close_races_push() {
        loom::model(|| {
            let m: Arc<Mailbox<u8>> = Arc::new(Mailbox::new(None));
            let producer = {
                let m = Arc::clone(&m);
                thread::spawn(move || m.push(7).is_ok())
            };
            let closer = {
                let m = Arc::clone(&m);
                thread::spawn(move || m.close())
            };
            let accepted = producer.join().unwrap();
            closer.join().unwrap();
            let mut got = Vec::new();
            while let Some(x) = m.pop() {
                got.push(x);
            }
            assert_eq!(got.len(), usize::from(accepted));
        });
    }
}
