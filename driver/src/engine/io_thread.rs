//! The hand-off between an engine and its I/O thread (the sender's reader, the receiver's
//! writer), and the small jobs the engine does itself.
//!
//! Jobs go to the I/O thread in order through one mailbox, its results come back in order
//! through another, in batches ([`RESULT_BATCH`], [`BATCH_BYTES`]). A round's jobs that are
//! all small (a small file's open, its one chunk, its publish) the engine runs itself, on
//! the same state, when the I/O thread is idle: that spares a small file two thread
//! switches on each side, which on a small machine (or in an emulated one) is much of what
//! it costs beyond its system calls. Large jobs still go to the I/O thread, so that reading
//! and writing overlap with the wire.
//!
//! Results keep the jobs' order: the engine runs jobs itself only when every job it handed
//! over has its results handed back (and it has taken its own earlier results), and it
//! takes the I/O thread's results before its own. Written against the `sync` shim and
//! model-checked with loom (`loom_tests`).

use crate::handoff::{Mailbox, Waker};
use crate::sync::{lock, Arc, AtomicU64, Mutex, Ordering};
use std::collections::VecDeque;

/// Results an I/O thread hands back at most at once: it keeps its results while more work
/// is queued (one wake-up of the engine per batch, not per file) and hands them over when
/// its queue runs dry or the batch is this long, so the engine never waits on a busy one.
const RESULT_BATCH: usize = 32;
/// File bytes an I/O thread moves before it hands its results back whatever else is
/// queued: batching pays for small files, but holding a finished chunk back while the
/// next ones are read (or written) would stop the wire and the disk overlapping for
/// large ones.
const BATCH_BYTES: u64 = 128 << 10;
/// The most file bytes a job the engine runs itself may move (a file's open or publish
/// counts its size): small enough that the wire never waits on it.
pub(crate) const INLINE_MAX: u64 = 64 << 10;

/// What an engine and its I/O thread share.
pub(crate) struct Shared<S, J, D> {
    /// The I/O state (open files, digests): the I/O thread's, or the engine's while the
    /// thread is idle.
    state: Mutex<S>,
    jobs: Mailbox<J>,
    done: Mailbox<D>,
    /// Jobs handed over whose results are not all handed back yet.
    pending: AtomicU64,
}

/// The engine's end of the hand-off.
pub(crate) struct IoThread<S, J, D> {
    shared: Arc<Shared<S, J, D>>,
    /// Jobs of this round, handed over (or run) together at its end.
    staged: Vec<J>,
    /// Results of jobs the engine ran itself, not taken yet.
    local: VecDeque<D>,
}

/// The I/O thread is gone (it panicked): no more jobs can be handed over.
#[derive(Debug)]
pub(crate) struct Gone;

impl<S, J, D> IoThread<S, J, D> {
    /// A hand-off over `state`; `waker` is poked when results come back.
    pub(crate) fn new(state: S, waker: Option<Waker>) -> Self {
        IoThread {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                jobs: Mailbox::new(None),
                done: Mailbox::new(waker),
                pending: AtomicU64::new(0),
            }),
            staged: Vec::new(),
            local: VecDeque::new(),
        }
    }

    /// What the I/O thread gets (see [`serve`]).
    pub(crate) fn shared(&self) -> Arc<Shared<S, J, D>> {
        Arc::clone(&self.shared)
    }

    /// Stages `job` for the end of the round.
    pub(crate) fn stage(&mut self, job: J) {
        self.staged.push(job);
    }

    /// Hands the round's jobs over, or runs them here (`run`, results into the engine's own
    /// queue) when every one is `small` and the I/O thread is idle. `Ok(true)` when results
    /// are ready without waiting (the engine then takes them before it sleeps).
    pub(crate) fn hand_over(
        &mut self,
        small: impl Fn(&J) -> bool,
        mut run: impl FnMut(&mut S, J, &mut Vec<D>),
    ) -> Result<bool, Gone> {
        if self.staged.is_empty() {
            return Ok(!self.local.is_empty());
        }
        // Results of our own not taken yet: jobs handed over now could overtake them.
        if !self.local.is_empty() {
            return Ok(true);
        }
        if self.shared.pending.load(Ordering::SeqCst) == 0 && self.staged.iter().all(small) {
            let mut state = lock(&self.shared.state);
            let mut out = Vec::new();
            for job in self.staged.drain(..) {
                run(&mut state, job, &mut out);
            }
            self.local.extend(out);
            return Ok(!self.local.is_empty());
        }
        let n = self.staged.len() as u64;
        self.shared.pending.fetch_add(n, Ordering::SeqCst);
        self.shared
            .jobs
            .push_all(&mut self.staged)
            .map_err(|()| Gone)?;
        Ok(false)
    }

    /// The next result: the I/O thread's first (they are of older jobs), then the engine's.
    pub(crate) fn next_result(&mut self) -> Option<D> {
        self.shared
            .done
            .try_pop()
            .or_else(|| self.local.pop_front())
    }

    /// No more jobs: the I/O thread ends once it has served those queued.
    pub(crate) fn close(&self) {
        self.shared.jobs.close();
    }

    /// No more results are taken.
    pub(crate) fn close_results(&self) {
        self.shared.done.close();
    }
}

/// The I/O thread: serves jobs in order with `run` until the jobs mailbox closes, handing
/// results back in batches (`bytes`: the file bytes a job moves); then `finish` gets the
/// state.
pub(crate) fn serve<S, J, D, R>(
    shared: &Shared<S, J, D>,
    mut run: impl FnMut(&mut S, J, &mut Vec<D>),
    bytes: impl Fn(&J) -> u64,
    finish: impl FnOnce(&mut S) -> R,
) -> R {
    let mut out = Vec::with_capacity(RESULT_BATCH + 1);
    while let Some(first) = shared.jobs.pop() {
        let mut state = lock(&shared.state);
        let mut job = Some(first);
        let (mut moved, mut served) = (0u64, 0u64);
        while let Some(j) = job {
            moved += bytes(&j);
            served += 1;
            run(&mut state, j, &mut out);
            job = if out.len() < RESULT_BATCH && moved < BATCH_BYTES {
                shared.jobs.try_pop()
            } else {
                None
            };
        }
        drop(state);
        let handed = shared.done.push_all(&mut out);
        // Only once its results are in the mailbox: the engine may run jobs itself from
        // here, and takes these results first.
        shared.pending.fetch_sub(served, Ordering::SeqCst);
        if handed.is_err() {
            break;
        }
    }
    finish(&mut lock(&shared.state))
}

#[cfg(all(test, not(rdmaft_loom)))]
mod tests {
    use super::*;

    /// Jobs are numbers; a job's result is its number; a job is small when even.
    fn io() -> IoThread<Vec<u32>, u32, u32> {
        IoThread::new(Vec::new(), None)
    }

    fn run(seen: &mut Vec<u32>, job: u32, out: &mut Vec<u32>) {
        seen.push(job);
        out.push(job);
    }

    fn small(job: &u32) -> bool {
        job % 2 == 0
    }

    #[test]
    fn small_jobs_run_here_while_the_thread_is_idle_and_results_keep_order() {
        let mut io = io();
        assert!(
            !io.hand_over(small, run).unwrap(),
            "nothing staged, nothing ready"
        );
        io.stage(2);
        io.stage(4);
        assert!(io.hand_over(small, run).unwrap(), "results ready at once");
        // An odd job goes to the thread; while it is pending, small ones go there too.
        io.stage(5);
        assert!(
            io.hand_over(small, run).is_ok_and(|ready| ready),
            "own results untaken"
        );
        assert_eq!(io.next_result(), Some(2));
        assert_eq!(io.next_result(), Some(4));
        assert!(!io.hand_over(small, run).unwrap());
        io.stage(6);
        assert!(
            !io.hand_over(small, run).unwrap(),
            "5 is pending: 6 follows it"
        );
        let shared = io.shared();
        io.close();
        let seen = serve(&shared, run, |_| 0, |s| s.clone());
        assert_eq!(seen, [2, 4, 5, 6], "every job once, in order");
        assert_eq!(io.next_result(), Some(5));
        assert_eq!(io.next_result(), Some(6));
        assert_eq!(io.next_result(), None);
        // The thread handed every result back: small jobs run here again.
        io.stage(8);
        assert!(io.hand_over(small, run).unwrap());
        assert_eq!(io.next_result(), Some(8));
    }

    /// Jobs are file byte counts; the state records each job's place in its batch (the
    /// results not yet handed back when it ran).
    fn place_in_batch(places: &mut Vec<usize>, job: u64, out: &mut Vec<u64>) {
        places.push(out.len());
        out.push(job);
    }

    /// Jobs queued before the thread serves them, all too large to run here.
    fn queued(jobs: impl IntoIterator<Item = u64>) -> IoThread<Vec<usize>, u64, u64> {
        let mut io = IoThread::new(Vec::new(), None);
        for job in jobs {
            io.stage(job);
        }
        assert!(!io.hand_over(|_| false, place_in_batch).unwrap());
        io
    }

    /// A batch ends after `RESULT_BATCH` results or once `BATCH_BYTES` of file bytes have
    /// moved, whichever comes first; every result comes back, in order.
    #[test]
    fn results_come_back_in_batches_cut_by_count_and_by_bytes() {
        let big = BATCH_BYTES / 2;
        let jobs: Vec<u64> = [vec![0; 40], vec![big; 4], vec![1]].concat();
        let mut io = queued(jobs.iter().copied());
        let shared = io.shared();
        io.close();
        let places = serve(&shared, place_in_batch, |j| *j, |s| s.clone());
        let expected: Vec<usize> = [
            (0..RESULT_BATCH).collect::<Vec<_>>(),
            // 8 that move nothing, then two halves of the byte limit.
            (0..10).collect(),
            vec![0, 1],
            vec![0],
        ]
        .concat();
        assert_eq!(places, expected);
        let results: Vec<u64> = std::iter::from_fn(|| io.next_result()).collect();
        assert_eq!(results, jobs);
    }

    /// Once the engine takes no more results, the thread stops after the batch it is on
    /// instead of serving the rest of its queue.
    #[test]
    fn a_thread_whose_results_are_refused_stops_after_its_batch() {
        let io = queued(vec![0; 40]);
        let shared = io.shared();
        io.close();
        io.close_results();
        let places = serve(&shared, place_in_batch, |j| *j, |s| s.clone());
        assert_eq!(places.len(), RESULT_BATCH);
    }
}

/// Model checks of the real `IoThread` with the real `serve` (`make loom`).
#[cfg(all(test, rdmaft_loom))]
mod loom_tests {
    use super::*;
    use crate::sync::thread;

    /// An engine hands a large job (1) to the I/O thread, then stages a small one (2) and
    /// hands it over while the thread may or may not be done with the first: whichever
    /// runs the second, the engine takes the results as 1 then 2, and each job runs once.
    /// (Broken on purpose by lowering `pending` before the results are pushed, the engine
    /// runs job 2 itself and takes its result before job 1's: loom finds it.)
    #[test]
    fn a_job_run_here_never_overtakes_one_handed_over() {
        loom::model(|| {
            let mut io: IoThread<u32, u32, u32> = IoThread::new(0, None);
            let shared = io.shared();
            let run = |runs: &mut u32, job: u32, out: &mut Vec<u32>| {
                *runs += 1;
                out.push(job);
            };
            let thread = thread::spawn(move || serve(&shared, run, |_| 0, |runs| *runs));
            let small = |job: &u32| *job == 2;
            io.stage(1);
            assert!(!io.hand_over(small, run).unwrap());
            io.stage(2);
            io.hand_over(small, run).unwrap();
            let mut taken = Vec::new();
            while taken.len() < 2 {
                match io.next_result() {
                    Some(r) => taken.push(r),
                    None => thread::yield_now(),
                }
            }
            assert_eq!(taken, [1, 2], "results out of order");
            io.close();
            // The state is shared: it counts the runs of both threads.
            assert_eq!(thread.join().unwrap(), 2, "each job runs once");
        });
    }
}
