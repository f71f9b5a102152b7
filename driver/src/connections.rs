//! The receiver's connection registry: a thread per admitted connection, counted while it
//! runs, joined by the listener once it ended, and all joined at stop.
//!
//! Admission and stop take the same lock, so no connection thread can start after a stop
//! collected the threads to join: one that did would outlive `Receiver::stop`, writing into
//! the destination and holding device resources after their owner was told they were free.
//! A stop called on a connection's own thread (from a callback) joins every other thread
//! and leaves its own, which ends when the callback returns.
//!
//! Written against the `sync` shim and model-checked with loom (`loom_tests`, `make loom`).

use crate::sync::{lock, thread, Arc, AtomicBool, Mutex, Ordering};

/// The threads serving a receiver's connections.
pub(crate) struct Connections {
    state: Mutex<State>,
}

struct State {
    threads: Vec<Served>,
    /// Set by [`Connections::stop`]: no thread starts after it.
    stopped: bool,
}

/// One connection's thread and whether its work has ended (it is then about to exit, so
/// joining it does not wait on the connection).
struct Served {
    handle: thread::JoinHandle<()>,
    ended: Arc<AtomicBool>,
}

/// Why a connection got no thread.
#[derive(Debug)]
pub(crate) enum NotStarted<J> {
    /// The receiver is stopping: the job comes back, for its sender to be told so.
    Stopping(J),
    /// No thread could be created (the job, dropped with it, refuses its sender).
    NoThread(std::io::Error),
}

/// Sets a connection's `ended` flag as its thread leaves, by return or by panic.
struct EndsOnDrop(Arc<AtomicBool>);

impl Drop for EndsOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Connections {
    pub(crate) fn new() -> Self {
        Connections {
            state: Mutex::new(State {
                threads: Vec::new(),
                stopped: false,
            }),
        }
    }

    /// Runs `run(job)` on a thread of its own, registered for [`stop`](Self::stop) to join,
    /// unless the receiver is stopping (then `job` comes back).
    pub(crate) fn start<J, F>(&self, job: J, run: F) -> Result<(), NotStarted<J>>
    where
        J: Send + 'static,
        F: FnOnce(J) + Send + 'static,
    {
        let mut state = lock(&self.state);
        if state.stopped {
            return Err(NotStarted::Stopping(job));
        }
        let ended = Arc::new(AtomicBool::new(false));
        let flag = EndsOnDrop(Arc::clone(&ended));
        // Spawned under the lock: a stop waits for the thread to be listed.
        let handle = thread::Builder::new()
            .name("rdmaft-connection".into())
            .spawn(move || {
                let _ends = flag;
                run(job);
            })
            .map_err(NotStarted::NoThread)?;
        state.threads.push(Served { handle, ended });
        Ok(())
    }

    /// Connections whose thread is still at work.
    pub(crate) fn running(&self) -> usize {
        let state = lock(&self.state);
        state
            .threads
            .iter()
            .filter(|t| !t.ended.load(Ordering::SeqCst))
            .count()
    }

    /// Joins the threads of connections that ended, and forgets them; never waits on a
    /// connection still at work.
    pub(crate) fn reap(&self) {
        let done: Vec<Served> = {
            let mut state = lock(&self.state);
            let (done, running) = std::mem::take(&mut state.threads)
                .into_iter()
                .partition(|t| t.ended.load(Ordering::SeqCst));
            state.threads = running;
            done
        };
        for t in done {
            let _ = t.handle.join();
        }
    }

    /// Starts no thread from now on and joins every connection's thread, but the caller's
    /// own when it is one of them. A second stop joins what the first left (nothing, unless
    /// the first was called on a connection's thread).
    pub(crate) fn stop(&self) {
        let threads = {
            let mut state = lock(&self.state);
            state.stopped = true;
            std::mem::take(&mut state.threads)
        };
        let me = thread::current().id();
        for t in threads {
            if t.handle.thread().id() != me {
                let _ = t.handle.join();
            }
        }
    }
}

#[cfg(all(test, not(rdmaft_loom)))]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_connection_runs_is_counted_and_is_reaped_once_ended() {
        let connections = Connections::new();
        let (go, wait) = mpsc::channel::<()>();
        let (done, ended) = mpsc::channel();
        connections
            .start(7, move |job| {
                wait.recv().unwrap();
                done.send(job).unwrap();
            })
            .unwrap();
        assert_eq!(connections.running(), 1);
        connections.reap();
        assert_eq!(connections.running(), 1, "a running connection is kept");
        go.send(()).unwrap();
        assert_eq!(ended.recv().unwrap(), 7);
        // The flag falls as the thread leaves: wait for it, then reap.
        while connections.running() != 0 {
            std::thread::yield_now();
        }
        connections.reap();
        assert!(lock(&connections.state).threads.is_empty());
    }

    #[test]
    fn after_stop_no_connection_starts_and_its_job_comes_back() {
        let connections = Connections::new();
        connections.start((), |()| ()).unwrap();
        connections.stop();
        assert!(lock(&connections.state).threads.is_empty());
        match connections.start("request", |_| panic!("ran after stop")) {
            Err(NotStarted::Stopping(job)) => assert_eq!(job, "request"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_panicking_connection_counts_as_ended() {
        let connections = Connections::new();
        connections
            .start((), |()| panic!("a connection panics"))
            .unwrap();
        while connections.running() != 0 {
            std::thread::yield_now();
        }
        connections.reap();
        assert!(lock(&connections.state).threads.is_empty());
    }
}

/// Model checks of the real `Connections` (`make loom`): admission racing stop, the
/// listener's reap racing a connection's end, and a stop from a connection's own thread
/// beside the owner's stop.
#[cfg(all(test, rdmaft_loom))]
mod loom_tests {
    use super::*;
    use crate::sync::{AtomicU64, Condvar};

    /// A connection admitted while the receiver stops either is refused (its job comes
    /// back) or has run to its end by the time `stop` returns: no connection thread
    /// outlives the stop. (Broken on purpose by checking `stopped` in a lock section of its
    /// own before spawning, a connection starts after the stop's drain and is still
    /// running when the stop returns: loom finds it.)
    #[test]
    fn no_connection_thread_outlives_a_stop() {
        loom::model(|| {
            let connections = Arc::new(Connections::new());
            let finished = Arc::new(AtomicU64::new(0));
            let listener = {
                let connections = Arc::clone(&connections);
                let finished = Arc::clone(&finished);
                thread::spawn(move || {
                    let started = connections.start(1u64, move |n| {
                        finished.fetch_add(n, Ordering::SeqCst);
                    });
                    match started {
                        Ok(()) => true,
                        Err(NotStarted::Stopping(job)) => {
                            assert_eq!(job, 1, "the job comes back");
                            false
                        }
                        Err(NotStarted::NoThread(e)) => panic!("{e}"),
                    }
                })
            };
            connections.stop();
            let ran_then = finished.load(Ordering::SeqCst);
            let started = listener.join().unwrap();
            if started {
                assert_eq!(ran_then, 1, "a connection thread outlived the stop");
            }
            assert_eq!(connections.running(), 0);
        });
    }

    /// The listener's reap never waits on a connection still at work (it would stop
    /// admitting while one transfer runs): here the connection waits for the listener, so
    /// a reap that joined it would deadlock. It is counted while it works, and the stop
    /// after its end joins it. (Broken on purpose by setting `ended` before the work,
    /// reap joins a working connection: loom reports the deadlock.)
    #[test]
    fn reap_never_waits_on_a_working_connection() {
        loom::model(|| {
            let connections = Connections::new();
            let gate = Arc::new((Mutex::new(false), Condvar::new()));
            let g = Arc::clone(&gate);
            connections
                .start((), move |()| {
                    let (open, cv) = &*g;
                    let mut open = lock(open);
                    while !*open {
                        open = cv.wait(open).unwrap();
                    }
                })
                .unwrap();
            connections.reap();
            assert_eq!(connections.running(), 1, "a working connection is counted");
            *lock(&gate.0) = true;
            gate.1.notify_all();
            // The end races this reap: joined now or by the stop, never lost.
            connections.reap();
            connections.stop();
            assert_eq!(connections.running(), 0);
            assert!(lock(&connections.state).threads.is_empty());
        });
    }

    /// A connection's callback that stops the receiver, racing the owner's stop: both
    /// return, neither joins its own thread (that would never end), and no thread is left
    /// listed. (Broken on purpose by joining every thread, the callback's stop joins its
    /// own thread: loom reports the deadlock.)
    #[test]
    fn a_stop_from_a_connection_and_one_from_the_owner_both_return() {
        loom::model(|| {
            let connections = Arc::new(Connections::new());
            let c = Arc::clone(&connections);
            connections.start((), move |()| c.stop()).unwrap();
            connections.stop();
            assert!(lock(&connections.state).threads.is_empty());
        });
    }
}
