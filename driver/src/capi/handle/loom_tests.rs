//! Model checks of a context's lifecycle (`make loom`: every interleaving within two
//! preemptions), driving the real [`Registry`] with a fake job whose threads are loom's.
//!
//! Each model states the property it checks. Each was seen to fail with the lifecycle broken
//! on purpose, one break at a time:
//! - a stop that cancels only a job it finds in place (the old C API: a waiter had taken the
//!   handle, so the stop cancelled nothing): `stop_during_wait` deadlocks (the waiter waits
//!   for a job nobody cancels), `stop_races_completion`, `waits_then_wait_after_stop` and
//!   `stop_from_own_callback_during_wait` count no cancel;
//! - a stop that does not wait for another thread's join: `stop_during_wait`,
//!   `two_stops_one_cancels_and_joins` and `stop_races_completion` see a stop return before
//!   the join;
//! - a stop from a callback that waits like any other: `two_stops_from_two_callbacks` and
//!   `stop_from_own_callback_during_wait` deadlock;
//! - every stop cancelling: the two `two_stops_*` count two cancels;
//! - forgetting the token when the stop starts: `two_stops_*` (the second returns early);
//! - a waiter that joins after a stop not forgetting the token, or a context never
//!   forgotten: `stop_from_own_callback_during_wait` (and, for the latter, every model:
//!   `waits_then_wait_after_stop` gets the old outcome from a wait after the stop).

use super::fake::{Body, FakeJob, Work};
use super::*;
use crate::sync::thread;

/// A registry holding one fake job made of `bodies` (each given the registry, the work and
/// the token), already published to its threads.
fn start(
    bodies: Vec<Box<dyn FnOnce(Arc<Registry<FakeJob>>, Arc<Work>, Token) -> &'static str + Send>>,
) -> (Arc<Registry<FakeJob>>, Arc<Work>, Token, Arc<Gate>) {
    let registry = Arc::new(Registry::new(SEND_TOKENS));
    let work = Work::new();
    let token = registry.mint().unwrap();
    let bodies: Vec<Body> = bodies
        .into_iter()
        .map(|b| {
            let (r, w) = (Arc::clone(&registry), Arc::clone(&work));
            Box::new(move || b(r, w, token)) as Body
        })
        .collect();
    let gate = Gate::new();
    registry.insert(token, FakeJob::spawn(&work, bodies), Arc::clone(&gate));
    work.publish();
    (registry, work, token, gate)
}

/// A send that only ends when cancelled.
fn until_cancelled(_: Arc<Registry<FakeJob>>, w: Arc<Work>, _: Token) -> &'static str {
    w.wait_cancelled();
    "cancelled"
}

/// Stop during wait: the stop cancels the job although the waiter holds it (joining), and
/// returns only once the job was joined; the waiter gets the job's outcome (or, if the stop
/// finished first, finds nothing); cancel and join happen once; the gate is closed; the
/// registry forgets the context.
#[test]
fn stop_during_wait() {
    loom::model(|| {
        let (registry, work, token, gate) = start(vec![Box::new(until_cancelled)]);
        let stopper = {
            let (registry, work, gate) = (registry.clone(), work.clone(), gate.clone());
            thread::spawn(move || {
                assert_eq!(registry.stop(token, false), Stopped::Now);
                assert_eq!(work.joins(), 1, "stop returns after the job was joined");
                assert!(!gate.is_open());
            })
        };
        let waited = registry.wait(token, false);
        assert!(
            matches!(waited, Waited::Ended("cancelled") | Waited::Unknown),
            "{waited:?}"
        );
        stopper.join().unwrap();
        assert_eq!((work.cancels(), work.joins()), (1, 1));
        assert_eq!(registry.live(), 0);
        assert_eq!(
            registry.wait(token, false),
            Waited::Unknown,
            "wait after stop"
        );
    });
}

/// Two stops at once (not from callbacks): one stops (cancels and joins), the other does
/// nothing more, and neither returns before the job was joined; cancel and join happen
/// once; the registry forgets the context.
#[test]
fn two_stops_one_cancels_and_joins() {
    loom::model(|| {
        let (registry, work, token, _) = start(vec![Box::new(until_cancelled)]);
        let other = {
            let (registry, work) = (registry.clone(), work.clone());
            thread::spawn(move || {
                let s = registry.stop(token, false);
                assert_eq!(work.joins(), 1, "the second stop waits for the first");
                s
            })
        };
        let mine = registry.stop(token, false);
        assert_eq!(work.joins(), 1);
        let theirs = other.join().unwrap();
        let mut both = [mine, theirs];
        both.sort_by_key(|s| *s as u8);
        assert!(
            matches!(
                both,
                [Stopped::Now, Stopped::Already] | [Stopped::Now, Stopped::Unknown]
            ),
            "{both:?}"
        );
        assert_eq!((work.cancels(), work.joins()), (1, 1));
        assert_eq!(registry.live(), 0);
    });
}

/// Two stops from two callbacks of one receiver-like job (two threads; joining from one
/// joins the other): neither waits for the other (the one that joins would wait for the
/// one that waits), one stops and the other does nothing more; cancel and join happen
/// once; the registry forgets the context.
#[test]
fn two_stops_from_two_callbacks() {
    fn callback(r: Arc<Registry<FakeJob>>, w: Arc<Work>, t: Token) -> &'static str {
        w.wait_published();
        w.record_callback_stop(r.stop(t, true));
        "stopped"
    }
    loom::model(|| {
        let (registry, work, _, _) = start(vec![Box::new(callback), Box::new(callback)]);
        let mut stops = work.callback_stops(2);
        stops.sort_by_key(|s| *s as u8);
        assert_eq!(stops, [Stopped::Now, Stopped::Already]);
        // Each stop was recorded after it returned; the one that joined forgot the context.
        assert_eq!(registry.live(), 0);
        assert_eq!((work.cancels(), work.joins()), (1, 1));
    });
}

/// A stop racing the job's own completion: the job ends once either way; a waiter gets
/// exactly what the job ended with (or nothing, if the stop finished first), and the stop
/// returns after the join.
#[test]
fn stop_races_completion() {
    fn finishing(_: Arc<Registry<FakeJob>>, w: Arc<Work>, _: Token) -> &'static str {
        w.end_with(if w.is_cancelled() {
            "cancelled"
        } else {
            "done"
        })
    }
    loom::model(|| {
        let (registry, work, token, _) = start(vec![Box::new(finishing)]);
        let waiter = {
            let registry = registry.clone();
            thread::spawn(move || registry.wait(token, false))
        };
        assert_eq!(registry.stop(token, false), Stopped::Now);
        assert_eq!(work.joins(), 1);
        let ended = work.ended_with().expect("joined, so ended");
        match waiter.join().unwrap() {
            Waited::Ended(o) => assert_eq!(o, ended),
            Waited::Unknown => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(work.cancels(), 1);
        assert_eq!(registry.live(), 0);
    });
}

/// Two waits at once, then a stop, then a wait: both waits get the one outcome (the job
/// joined once), the stop still stops, and the wait after it finds nothing.
#[test]
fn waits_then_wait_after_stop() {
    loom::model(|| {
        let (registry, work, token, _) = start(vec![Box::new(|_, _, _| "done")]);
        let waiter = {
            let registry = registry.clone();
            thread::spawn(move || registry.wait(token, false))
        };
        assert_eq!(registry.wait(token, false), Waited::Ended("done"));
        assert_eq!(waiter.join().unwrap(), Waited::Ended("done"));
        assert_eq!(work.joins(), 1);
        assert_eq!(registry.stop(token, false), Stopped::Now);
        assert_eq!(registry.wait(token, false), Waited::Unknown);
        assert_eq!(registry.stop(token, false), Stopped::Unknown);
        assert_eq!((work.cancels(), work.joins()), (1, 1));
    });
}

/// A stop from the send's own callback while another thread waits: the callback's stop
/// never waits for (nor joins) its own thread; a wait from the callback is refused; the
/// waiter gets the outcome, or finds the job let go, or nothing; cancel once; the registry
/// forgets the context.
#[test]
fn stop_from_own_callback_during_wait() {
    fn callback(r: Arc<Registry<FakeJob>>, w: Arc<Work>, t: Token) -> &'static str {
        w.wait_published();
        assert_eq!(r.wait(t, true), Waited::OwnCallback);
        w.record_callback_stop(r.stop(t, true));
        "cancelled"
    }
    loom::model(|| {
        let (registry, work, token, _) = start(vec![Box::new(callback)]);
        let waited = registry.wait(token, false);
        assert!(
            matches!(
                waited,
                Waited::Ended("cancelled") | Waited::Released | Waited::Unknown
            ),
            "{waited:?}"
        );
        assert_eq!(work.callback_stops(1), [Stopped::Now]);
        // The stop (if it let the job go) or the waiter (if it joined) forgot the context.
        assert_eq!(registry.live(), 0);
        assert_eq!(work.cancels(), 1);
    });
}
