//! A fake job for the models and tests: its threads run bodies the test gives (plain
//! threads, or loom's), and it counts cancels and joins. FFI cannot be modelled; what the
//! lifecycle needs from a job (a cancel that works apart from it, one join that never waits
//! for the calling thread) can.

use super::{Canceller, Job, Stopped};
use crate::sync::{lock, thread, Arc, Condvar, Mutex};

#[derive(Default)]
struct Counts {
    cancels: usize,
    joins: usize,
    /// The context's token reached the job's threads (in C: the start call returned and the
    /// program handed the pointer on).
    published: bool,
    /// What each stop made from a callback gave.
    callback_stops: Vec<Stopped>,
    /// What the job's thread ended with (for the racing model).
    ended_with: Option<&'static str>,
}

/// What a fake job's threads and the test share.
pub(super) struct Work {
    counts: Mutex<Counts>,
    changed: Condvar,
}

impl Work {
    pub(super) fn new() -> Arc<Work> {
        Arc::new(Work {
            counts: Mutex::new(Counts::default()),
            changed: Condvar::new(),
        })
    }

    fn update(&self, f: impl FnOnce(&mut Counts)) {
        f(&mut lock(&self.counts));
        self.changed.notify_all();
    }

    fn wait_until(&self, done: impl Fn(&Counts) -> bool) {
        let mut c = lock(&self.counts);
        while !done(&c) {
            c = self.changed.wait(c).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub(super) fn cancels(&self) -> usize {
        lock(&self.counts).cancels
    }

    pub(super) fn joins(&self) -> usize {
        lock(&self.counts).joins
    }

    #[cfg_attr(not(rdmaft_loom), allow(dead_code))]
    pub(super) fn is_cancelled(&self) -> bool {
        self.cancels() > 0
    }

    /// Blocks until the job was cancelled: a transfer that only ends when stopped.
    pub(super) fn wait_cancelled(&self) {
        self.wait_until(|c| c.cancels > 0);
    }

    pub(super) fn publish(&self) {
        self.update(|c| c.published = true);
    }

    pub(super) fn wait_published(&self) {
        self.wait_until(|c| c.published);
    }

    pub(super) fn record_callback_stop(&self, s: Stopped) {
        self.update(|c| c.callback_stops.push(s));
    }

    /// Waits until `n` stops from callbacks have returned; what they gave.
    pub(super) fn callback_stops(&self, n: usize) -> Vec<Stopped> {
        self.wait_until(|c| c.callback_stops.len() >= n);
        lock(&self.counts).callback_stops.clone()
    }

    #[cfg_attr(not(rdmaft_loom), allow(dead_code))]
    pub(super) fn end_with(&self, outcome: &'static str) -> &'static str {
        self.update(|c| c.ended_with = Some(outcome));
        outcome
    }

    #[cfg_attr(not(rdmaft_loom), allow(dead_code))]
    pub(super) fn ended_with(&self) -> Option<&'static str> {
        lock(&self.counts).ended_with
    }
}

/// A thread body of a fake job; its return value is the job's outcome.
pub(super) type Body = Box<dyn FnOnce() -> &'static str + Send>;

/// A job made of threads running the given bodies.
pub(super) struct FakeJob {
    work: Arc<Work>,
    threads: Vec<thread::JoinHandle<&'static str>>,
}

impl FakeJob {
    pub(super) fn spawn(work: &Arc<Work>, bodies: Vec<Body>) -> FakeJob {
        FakeJob {
            work: Arc::clone(work),
            threads: bodies.into_iter().map(thread::spawn).collect(),
        }
    }
}

impl Job for FakeJob {
    type Outcome = &'static str;

    fn canceller(&self) -> Canceller {
        let work = Arc::clone(&self.work);
        Box::new(move || work.update(|c| c.cancels += 1))
    }

    /// Joins every thread but the caller's own (which is let go, as a real send's or
    /// receiver's is); the outcome is the last joined thread's, `None` if there was none.
    fn join(self, from_callback: bool) -> Option<&'static str> {
        let me = thread::current().id();
        let mut outcome = None;
        let mut own = false;
        for t in self.threads {
            if t.thread().id() == me {
                own = true;
                continue;
            }
            outcome = Some(t.join().expect("a fake job's thread panicked"));
        }
        assert_eq!(
            own, from_callback,
            "from_callback must say whether the caller is one of the job's threads"
        );
        self.work.update(|c| c.joins += 1);
        outcome
    }
}
