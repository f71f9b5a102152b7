//! What a context pointer handed to C is, and how stop and wait behave on it from any thread.
//!
//! # Design
//!
//! A context pointer is a **token**: a number from a counter that only grows (so it is never
//! reused and never NULL), cast to a pointer. C never dereferences it and neither do we: the
//! token is looked up in a [`Registry`] of shared (`Arc`) contexts. So
//!
//! - a pointer that was already stopped (or NULL, or from the other direction: send tokens
//!   are odd, receive tokens even) is simply not found, and every call on it has a defined
//!   answer ([`Stopped::Unknown`], [`Waited::Unknown`]) instead of touching freed memory;
//! - a thread inside a call holds its own `Arc`, so nothing is freed under it: the registry's
//!   reference goes when the context is both stopped and ended, and the memory when the last
//!   thread using it returns.
//!
//! Why not a plain `Box` or `Arc` pointer: C holds one copy of the pointer for every thread,
//! so no reference count can tell the second `rdmaft_stop_*` (or a wait after the stop) that
//! the first already let go; only a lookup can, and a lookup needs a key that is never
//! reused, which an address is not (the allocator hands it out again).
//!
//! The context itself ([`Context`], private) is a small state machine over the work behind
//! it (a [`Job`]: a send, a receiver): `Running` (nobody joined it yet) → `Joining` (one
//! thread took it out to join it, with no lock held) → `Ended(outcome)` or `Released` (let go
//! unjoined by a stop from the job's own callback). Cancelling does not need the job itself
//! (a [`Canceller`] kept beside it), so a stop can cancel a job that a waiter is joining.
//!
//! # Rules (what the C headers promise)
//!
//! - **Stop during wait**: the stop cancels the job, then waits for the waiter's join to end;
//!   the waiter returns the job's outcome (a cancelled send: `RDMAFT_EUNFINISHED`).
//! - **Stop from the job's own callback**: cancels, and never waits for the calling thread:
//!   a send (whose only thread is the caller) is let go and ends once the callback returns;
//!   a receiver joins its other threads. It does not wait for another thread's join either
//!   (that thread may be joining the caller). A wait from the callback is refused
//!   ([`Waited::OwnCallback`]).
//! - **Double stop**: exactly one stop cancels and joins ([`Stopped::Now`]); a concurrent one
//!   waits for that to finish (unless it is in the job's own callback: it returns at once,
//!   since the first may be joining it), and a later one finds nothing.
//! - **Wait after stop**: finds nothing ([`Waited::Unknown`]); a wait that began before the
//!   stop finished returns the outcome.
//! - After the first stop, the context's [`Gate`] is closed: no new callback starts.
//!
//! Written against the `sync` shim and model-checked with loom (`handle/loom_tests.rs`, run
//! by `make loom`) with a fake job (`handle/fake.rs`); no FFI here.

use crate::sync::{lock, Arc, AtomicBool, Condvar, Mutex, Ordering};
use std::collections::HashMap;
use std::num::NonZeroU64;

/// The first token of a registry of sends: send tokens are odd.
pub(super) const SEND_TOKENS: u64 = 1;
/// The first token of a registry of receivers: receiver tokens are even.
pub(super) const RECV_TOKENS: u64 = 2;

/// The work behind a context, as its lifecycle sees it.
pub(crate) trait Job: Send + 'static {
    /// What joining gives: a send's status; nothing for a receiver.
    type Outcome: Clone + Send + 'static;

    /// A way to ask the job to end that works while another thread joins it, any number of
    /// times, also after it ended.
    fn canceller(&self) -> Canceller;

    /// Waits for the job's threads to end, and its outcome. Called at most once, with no
    /// lock held. `from_callback`: the caller is inside one of the job's own callbacks; the
    /// job must then not wait for the calling thread (a receiver joins its other threads; a
    /// send, whose only thread is the caller, is let go and gives `None`).
    fn join(self, from_callback: bool) -> Option<Self::Outcome>;
}

/// Asks a job to end (see [`Job::canceller`]).
pub(crate) type Canceller = Box<dyn Fn() + Send + Sync>;

/// A context's identity for C: never 0, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Token(NonZeroU64);

impl Token {
    /// The pointer C holds for this token (never dereferenced).
    pub(crate) fn to_ptr<T>(self) -> *mut T {
        // Fits: `Registry::mint` only hands out tokens that fit in a pointer.
        self.0.get() as usize as *mut T
    }

    /// The token C hands back; `None` for NULL.
    pub(crate) fn from_ptr<T>(p: *const T) -> Option<Token> {
        NonZeroU64::new(p as usize as u64).map(Token)
    }

    /// The token's number (0 is never a token).
    pub(crate) fn get(self) -> u64 {
        self.0.get()
    }
}

/// A gate as the context and the callback wrappers share it (loom's `Arc` in the models).
pub(crate) type SharedGate = Arc<Gate>;

/// Whether a context's callbacks may start: closed by its first stop. Shared with the
/// callback wrappers (which the job holds), so it is apart from the context itself.
#[derive(Debug)]
pub(crate) struct Gate {
    open: AtomicBool,
}

impl Gate {
    pub(crate) fn new() -> SharedGate {
        Arc::new(Gate {
            open: AtomicBool::new(true),
        })
    }

    /// Whether a callback may start now.
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
    }
}

/// What a stop did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// This call stopped the context: it closed the gate, cancelled the job, and joined it
    /// or (unless called from the job's own callback) waited until another thread had.
    Now,
    /// Another call had stopped it or was stopping it; this one did nothing more.
    Already,
    /// No such context: NULL, stopped before, or not a token of this registry.
    Unknown,
}

/// What a wait gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Waited<O> {
    /// The job ended with this outcome.
    Ended(O),
    /// A stop from the job's own callback let it go before anyone joined it: it ends on its
    /// own and its outcome is not known.
    Released,
    /// Refused: the caller is inside the job's own callback (it would wait for itself).
    OwnCallback,
    /// No such context: NULL, stopped before, or not a token of this registry.
    Unknown,
}

enum Run<J: Job> {
    /// Nobody joined the job yet.
    Running(J),
    /// A thread (a waiter or a stopper) took the job out and joins it.
    Joining,
    /// Joined.
    Ended(J::Outcome),
    /// Let go by a stop from its own callback.
    Released,
}

struct Life<J: Job> {
    run: Run<J>,
    /// A stop was called.
    stopped: bool,
}

impl<J: Job> Life<J> {
    /// Stopped and ended: the registry may forget the context.
    fn is_over(&self) -> bool {
        self.stopped && matches!(self.run, Run::Ended(_) | Run::Released)
    }
}

/// One context: the job, its state, and what stop and wait need beside it.
struct Context<J: Job> {
    life: Mutex<Life<J>>,
    /// Signalled when the run leaves `Joining`.
    ended: Condvar,
    cancel: Canceller,
    gate: Arc<Gate>,
}

impl<J: Job> Context<J> {
    /// Joins the job taken out of `Running` (no lock held), records the result and wakes
    /// whoever waits for it; whether the context is now over.
    fn join(&self, job: J, from_callback: bool) -> bool {
        let outcome = job.join(from_callback);
        let mut life = lock(&self.life);
        life.run = match outcome {
            Some(o) => Run::Ended(o),
            None => Run::Released,
        };
        let over = life.is_over();
        drop(life);
        self.ended.notify_all();
        over
    }

    /// See [`Registry::stop`]; also whether the context is over.
    fn stop(&self, from_callback: bool) -> (Stopped, bool) {
        let mut life = lock(&self.life);
        let first = !life.stopped;
        life.stopped = true;
        let taken = match std::mem::replace(&mut life.run, Run::Joining) {
            Run::Running(job) => Some(job),
            other => {
                life.run = other;
                None
            }
        };
        drop(life);
        if first {
            self.gate.close();
            (self.cancel)();
        }
        let stopped = if first {
            Stopped::Now
        } else {
            Stopped::Already
        };
        if let Some(job) = taken {
            return (stopped, self.join(job, from_callback));
        }
        let mut life = lock(&self.life);
        // Someone else joins. From the job's own callback, waiting could be waiting for
        // ourselves (the joiner may be joining this thread): return, the joiner finishes.
        while matches!(life.run, Run::Joining) && !from_callback {
            life = self.ended.wait(life).unwrap_or_else(|p| p.into_inner());
        }
        (stopped, life.is_over())
    }

    /// See [`Registry::wait`]; also whether the context is over.
    fn wait(&self, from_callback: bool) -> (Waited<J::Outcome>, bool) {
        if from_callback {
            return (Waited::OwnCallback, false);
        }
        let mut life = lock(&self.life);
        loop {
            match std::mem::replace(&mut life.run, Run::Joining) {
                Run::Running(job) => {
                    drop(life);
                    let over = self.join(job, false);
                    let life = lock(&self.life);
                    let waited = match &life.run {
                        Run::Ended(o) => Waited::Ended(o.clone()),
                        _ => Waited::Released,
                    };
                    return (waited, over);
                }
                Run::Joining => {
                    life = self.ended.wait(life).unwrap_or_else(|p| p.into_inner());
                }
                Run::Ended(o) => {
                    life.run = Run::Ended(o.clone());
                    return (Waited::Ended(o), life.is_over());
                }
                Run::Released => {
                    life.run = Run::Released;
                    return (Waited::Released, life.is_over());
                }
            }
        }
    }
}

struct Tokens<J: Job> {
    /// The next token to hand out.
    next: u64,
    live: HashMap<Token, Arc<Context<J>>>,
}

/// The live contexts of one kind, by token.
///
/// Lock order: the registry's lock is never held while a context's is taken, nor while a
/// job is cancelled or joined.
pub(crate) struct Registry<J: Job> {
    tokens: Mutex<Tokens<J>>,
}

impl<J: Job> Registry<J> {
    /// A registry whose tokens are `first`, `first + 2`, ... (see [`SEND_TOKENS`]).
    pub(crate) fn new(first: u64) -> Self {
        Registry {
            tokens: Mutex::new(Tokens {
                next: first,
                live: HashMap::new(),
            }),
        }
    }

    /// A new token; `None` once they are used up (not in practice with 64-bit pointers).
    pub(crate) fn mint(&self) -> Option<Token> {
        let mut t = lock(&self.tokens);
        let token = NonZeroU64::new(t.next).map(Token)?;
        // Every token, and the next one, must fit in a pointer.
        let next = t.next.checked_add(2)?;
        usize::try_from(next).ok()?;
        t.next = next;
        Some(token)
    }

    /// Makes `job` the context of `token` (from [`mint`](Self::mint)); `gate` is the one its
    /// callbacks check.
    pub(crate) fn insert(&self, token: Token, job: J, gate: SharedGate) {
        let context = Arc::new(Context {
            cancel: job.canceller(),
            life: Mutex::new(Life {
                run: Run::Running(job),
                stopped: false,
            }),
            ended: Condvar::new(),
            gate,
        });
        lock(&self.tokens).live.insert(token, context);
    }

    fn get(&self, token: Token) -> Option<Arc<Context<J>>> {
        lock(&self.tokens).live.get(&token).cloned()
    }

    fn forget_if(&self, token: Token, over: bool) {
        if over {
            lock(&self.tokens).live.remove(&token);
        }
    }

    /// `rdmaft_stop_*`. The first stop closes the gate, cancels the job and joins it (or,
    /// when a waiter is joining it, waits until it has), then the token is forgotten. A
    /// concurrent stop waits for that too; from the job's own callback (`from_callback`) no
    /// stop waits for another thread's join, and a send is let go unjoined.
    pub(crate) fn stop(&self, token: Token, from_callback: bool) -> Stopped {
        let Some(context) = self.get(token) else {
            return Stopped::Unknown;
        };
        let (stopped, over) = context.stop(from_callback);
        self.forget_if(token, over);
        stopped
    }

    /// `rdmaft_send_wait`: waits until the job ended and gives its outcome (the same to every
    /// waiter, and to every later wait until the context is stopped). Refused from the job's
    /// own callback.
    pub(crate) fn wait(&self, token: Token, from_callback: bool) -> Waited<J::Outcome> {
        let Some(context) = self.get(token) else {
            return Waited::Unknown;
        };
        let (waited, over) = context.wait(from_callback);
        // A stop that came during the join left the forgetting to the joiner.
        self.forget_if(token, over);
        waited
    }

    /// `f` on the job of `token` if it is running and not stopped.
    pub(crate) fn with_running<R>(&self, token: Token, f: impl FnOnce(&J) -> R) -> Option<R> {
        let context = self.get(token)?;
        let life = lock(&context.life);
        match &life.run {
            Run::Running(job) if !life.stopped => Some(f(job)),
            _ => None,
        }
    }

    /// `f` on every job that is running and not stopped.
    pub(crate) fn for_each_running(&self, mut f: impl FnMut(&J)) {
        let live: Vec<Token> = lock(&self.tokens).live.keys().copied().collect();
        for token in live {
            self.with_running(token, &mut f);
        }
    }

    /// How many contexts are live (started and not yet stopped and ended).
    #[cfg(test)]
    pub(crate) fn live(&self) -> usize {
        lock(&self.tokens).live.len()
    }
}

impl<J: Job> std::fmt::Debug for Registry<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = lock(&self.tokens);
        f.debug_struct("Registry")
            .field("next", &t.next)
            .field("live", &t.live.len())
            .finish()
    }
}

#[cfg(test)]
mod fake;
#[cfg(all(test, rdmaft_loom))]
mod loom_tests;
#[cfg(all(test, not(rdmaft_loom)))]
mod tests;
