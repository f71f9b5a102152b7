//! The registry on the host (plain threads, a fake job): tokens, a stale token, NULL, double
//! stop, wait after stop, and the gate.

use super::fake::{Body, FakeJob, Work};
use super::*;

/// A registry of one fake job whose single thread runs `body`.
fn one(body: impl FnOnce(Arc<Work>) -> &'static str + Send + 'static) -> Fixture {
    let registry = Registry::new(SEND_TOKENS);
    let work = Work::new();
    let token = registry.mint().unwrap();
    let w = Arc::clone(&work);
    let bodies: Vec<Body> = vec![Box::new(move || body(w))];
    let gate = Gate::new();
    registry.insert(token, FakeJob::spawn(&work, bodies), Arc::clone(&gate));
    Fixture {
        registry: Arc::new(registry),
        work,
        token,
        gate,
    }
}

struct Fixture {
    registry: Arc<Registry<FakeJob>>,
    work: Arc<Work>,
    token: Token,
    gate: Arc<Gate>,
}

#[test]
fn tokens_are_never_null_never_reused_and_split_by_direction() {
    let sends: Registry<FakeJob> = Registry::new(SEND_TOKENS);
    let recvs: Registry<FakeJob> = Registry::new(RECV_TOKENS);
    let s: Vec<u64> = (0..100).map(|_| sends.mint().unwrap().get()).collect();
    let r: Vec<u64> = (0..100).map(|_| recvs.mint().unwrap().get()).collect();
    assert!(s.iter().all(|t| t % 2 == 1), "send tokens are odd");
    assert!(
        r.iter().all(|t| t % 2 == 0 && *t != 0),
        "receive tokens even, not 0"
    );
    assert!(s.windows(2).all(|w| w[0] < w[1]), "a counter: never reused");
    let t = sends.mint().unwrap();
    assert_eq!(Token::from_ptr(t.to_ptr::<u8>()), Some(t));
    assert_eq!(Token::from_ptr(std::ptr::null::<u8>()), None);
}

#[test]
fn tokens_run_out_instead_of_wrapping() {
    let r: Registry<FakeJob> = Registry::new(u64::MAX - 2);
    assert!(r.mint().is_some());
    assert!(r.mint().is_none(), "the next would overflow");
    assert!(r.mint().is_none());
}

#[test]
fn a_stale_or_foreign_token_is_not_found() {
    let f = one(|_| "done");
    let other: Registry<FakeJob> = Registry::new(RECV_TOKENS);
    assert_eq!(other.stop(f.token, false), Stopped::Unknown, "foreign");
    let unknown = f.registry.mint().unwrap();
    assert_eq!(
        f.registry.stop(unknown, false),
        Stopped::Unknown,
        "never started"
    );
    assert_eq!(f.registry.wait(unknown, false), Waited::Unknown);
    assert_eq!(f.registry.with_running(unknown, |_| ()), None);
    assert_eq!(f.registry.stop(f.token, false), Stopped::Now);
    assert_eq!(f.registry.live(), 0);
}

#[test]
fn double_stop_cancels_and_joins_once() {
    let f = one(|w| {
        w.wait_cancelled();
        "cancelled"
    });
    assert!(f.gate.is_open());
    assert_eq!(f.registry.with_running(f.token, |_| 7), Some(7));
    assert_eq!(f.registry.stop(f.token, false), Stopped::Now);
    assert!(!f.gate.is_open(), "no callback starts after a stop");
    assert_eq!((f.work.cancels(), f.work.joins()), (1, 1));
    assert_eq!(f.registry.live(), 0, "stopped and ended: forgotten");
    assert_eq!(f.registry.stop(f.token, false), Stopped::Unknown);
    assert_eq!(f.registry.stop(f.token, true), Stopped::Unknown);
    assert_eq!((f.work.cancels(), f.work.joins()), (1, 1));
}

#[test]
fn waits_give_one_outcome_until_the_stop_then_nothing() {
    let f = one(|_| "done");
    assert_eq!(f.registry.wait(f.token, false), Waited::Ended("done"));
    assert_eq!(f.registry.wait(f.token, false), Waited::Ended("done"));
    assert_eq!(f.work.joins(), 1);
    assert_eq!(f.registry.live(), 1, "ended but not stopped: still there");
    assert_eq!(f.registry.with_running(f.token, |_| ()), None);
    assert_eq!(f.registry.stop(f.token, false), Stopped::Now);
    assert_eq!(f.registry.wait(f.token, false), Waited::Unknown);
    assert_eq!(f.work.joins(), 1);
}

#[test]
fn a_wait_from_the_jobs_own_callback_is_refused() {
    let f = one(|_| "done");
    assert_eq!(f.registry.wait(f.token, true), Waited::OwnCallback);
    assert_eq!(f.registry.stop(f.token, false), Stopped::Now);
}

#[test]
fn a_stop_during_a_wait_cancels_and_the_waiter_gets_the_outcome() {
    let f = one(|w| {
        w.wait_cancelled();
        "cancelled"
    });
    let waiter = {
        let (r, t) = (Arc::clone(&f.registry), f.token);
        std::thread::spawn(move || r.wait(t, false))
    };
    // Whether the waiter got in first or not, nobody hangs and the job is cancelled once.
    assert_eq!(f.registry.stop(f.token, false), Stopped::Now);
    assert_eq!(f.work.joins(), 1, "the stop returned after the join");
    let waited = waiter.join().unwrap();
    assert!(
        matches!(waited, Waited::Ended("cancelled") | Waited::Unknown),
        "{waited:?}"
    );
    assert_eq!(f.work.cancels(), 1);
    assert_eq!(f.registry.live(), 0);
}

#[test]
fn a_stop_from_the_jobs_own_thread_lets_it_go() {
    let registry = Arc::new(Registry::new(SEND_TOKENS));
    let work = Work::new();
    let token = registry.mint().unwrap();
    let (r, w) = (Arc::clone(&registry), Arc::clone(&work));
    let body: Body = Box::new(move || {
        w.wait_published();
        w.record_callback_stop(r.stop(token, true));
        "ended"
    });
    registry.insert(token, FakeJob::spawn(&work, vec![body]), Gate::new());
    work.publish();
    assert_eq!(work.callback_stops(1), [Stopped::Now]);
    assert_eq!(registry.live(), 0);
    assert_eq!(registry.wait(token, false), Waited::Unknown);
    assert_eq!((work.cancels(), work.joins()), (1, 1));
}

/// A running job is reached by `with_running` and `for_each_running`; a stopped one is not.
#[test]
fn only_running_jobs_are_reached() {
    let f = one(|w| {
        w.wait_cancelled();
        "cancelled"
    });
    assert_eq!(f.registry.with_running(f.token, |_| 7), Some(7));
    let mut reached = 0;
    f.registry.for_each_running(|_| reached += 1);
    assert_eq!(reached, 1);
    assert!(format!("{:?}", f.registry).contains("live: 1"));
    assert_eq!(f.registry.stop(f.token, false), Stopped::Now);
    assert_eq!(f.registry.with_running(f.token, |_| 7), None);
    f.registry.for_each_running(|_| reached += 1);
    assert_eq!(reached, 1, "a stopped job is not reached");
    assert!(format!("{:?}", f.registry).contains("live: 0"));
}
