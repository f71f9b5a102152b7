//! The receiver's listener thread: it takes connection requests, admits or refuses each
//! (stopping, connection limit, allow-list, handshake slots), and hands every admitted one
//! a thread of its own that accepts it and runs its engine.
//!
//! The listener never dies quietly. A request that cannot be taken (no file descriptor for
//! its event channel, say) is refused and reported, and the listener goes on; if the
//! listening id itself fails (its device went away), the listener binds again a few times,
//! and if that fails too the receiver stops accepting loudly: `on_failure` is called and
//! [`Receiver::failure`](super::recv::Receiver::failure) says why.

use super::recv::{ConnectionCallback, ReceiverOptions};
use crate::connections::{Connections, NotStarted};
use crate::engine::recv::{self as engine, ConnectionReport, Handshake};
use crate::engine::verbs_link::VerbsRecvLink;
use crate::error::Error;
use crate::fs::dest::Destination;
use crate::handoff::Stop;
use crate::permits::Permits;
use crate::session::{Listener, Request};
use crate::sync::lock_std as lock;
use crate::verbs::Pages;
use rdmaft_protocol::RejectReason;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections that may be in their handshake at once: each holds a registered ring before
/// its sender has proved the key, so an unauthenticated flood pins at most this many rings.
pub const MAX_HANDSHAKES: u64 = 8;

/// How often, and how far apart, a failed listener is bound again before the receiver gives
/// up.
const REBIND_TRIES: u32 = 5;
const REBIND_PAUSE: Duration = if cfg!(test) {
    Duration::from_millis(10)
} else {
    Duration::from_secs(1)
};

/// How long the listener waits for a request before it looks at the stop flag again.
const POLL: Duration = Duration::from_millis(200);

/// What the threads of a receiver share.
pub(crate) struct Shared {
    pub(crate) options: Mutex<ReceiverOptions>,
    pub(crate) dest: Arc<Destination>,
    pub(crate) stop: Arc<Stop>,
    /// The connections' threads.
    pub(crate) connections: Connections,
    /// Connections between their request and their sender's key proof.
    pub(crate) handshakes: Arc<Permits>,
    /// Open files across all connections (file descriptors).
    pub(crate) open_files: Arc<Permits>,
    /// Why the receiver stopped accepting, when it failed.
    pub(crate) failure: Mutex<Option<String>>,
    /// Live transfer groups (senders with several lanes).
    pub(crate) groups: crate::groups::Groups,
    /// File data written by every connection so far.
    pub(crate) written: Arc<std::sync::atomic::AtomicU64>,
    /// Connections admitted (given a thread) so far.
    pub(crate) admitted: std::sync::atomic::AtomicU64,
}

/// Where the listener thread takes requests from: the CM listener (or a fake in tests).
pub(crate) trait Requests: Send {
    /// A request within `timeout`, if one came. [`Error::ListenerFailed`] means the listener
    /// itself failed; any other error concerns one request only, which was refused.
    fn next_request(&mut self, timeout: Duration) -> Result<Option<Request>, Error>;
    /// Listens again in place of a failed listener.
    fn rebind(&mut self) -> Result<(), Error>;
}

/// The CM listener on `addr`, which a rebind replaces (none while a bind failed).
pub(crate) struct Listening {
    addr: SocketAddr,
    current: Option<Listener>,
}

impl Listening {
    pub(crate) fn new(listener: Listener) -> Self {
        Listening {
            addr: listener.local_addr(),
            current: Some(listener),
        }
    }
}

impl Requests for Listening {
    fn next_request(&mut self, timeout: Duration) -> Result<Option<Request>, Error> {
        match &self.current {
            Some(l) => l.next_request(timeout),
            None => Err(Error::ListenerFailed(Box::new(Error::invalid(
                "rdma_listen",
                format!("not listening on {}", self.addr),
            )))),
        }
    }

    fn rebind(&mut self) -> Result<(), Error> {
        let bound = match self.current.take() {
            Some(old) => old.rebind(),
            None => Listener::bind(self.addr),
        };
        self.current = Some(bound?);
        Ok(())
    }
}

/// The listener thread: takes requests until stopped (or until listening fails for good).
/// A panic in it (a user callback's: `on_connection` runs here for refusals) stops the
/// receiver from accepting as loudly as a failure does.
pub(crate) fn listen(requests: impl Requests, shared: Arc<Shared>) {
    let serving = std::panic::AssertUnwindSafe(|| serve(requests, &shared));
    if std::panic::catch_unwind(serving).is_err() {
        lock(&shared.failure).get_or_insert_with(|| {
            "the receiver stopped accepting connections: its listener thread panicked (in a \
             callback?)"
                .to_owned()
        });
    }
}

/// The listener's loop.
fn serve(mut requests: impl Requests, shared: &Arc<Shared>) {
    while !shared.stop.is_raised() {
        let request = match requests.next_request(POLL) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(Error::ListenerFailed(why)) => {
                if rebind(&mut requests, shared) {
                    continue;
                }
                fail(shared, Error::ListenerFailed(why));
                return;
            }
            Err(e) => {
                report(
                    shared,
                    ConnectionReport::refused(String::new(), "REQUEST_FAILED", e.to_string()),
                );
                continue;
            }
        };
        admit(request, shared);
    }
}

/// Binds again after the listener failed; whether it listens again.
fn rebind(requests: &mut impl Requests, shared: &Shared) -> bool {
    for _ in 0..REBIND_TRIES {
        if shared.stop.is_raised() {
            return false;
        }
        if requests.rebind().is_ok() {
            return true;
        }
        std::thread::sleep(REBIND_PAUSE);
    }
    false
}

/// The receiver stops accepting: `on_failure` hears why, and so does `Receiver::failure`.
fn fail(shared: &Shared, error: Error) {
    let text = format!("the receiver stopped accepting connections: {error}");
    lock(&shared.failure).get_or_insert(text);
    let on_failure = lock(&shared.options).on_failure.clone();
    if let Some(cb) = on_failure {
        cb(&error);
    }
}

/// Refuses `request` with `reason` and reports it.
fn refuse(request: Request, reason: RejectReason, why: &str, shared: &Shared) {
    let peer = peer_name(request.peer_addr());
    let _ = request.reject(reason);
    report(
        shared,
        ConnectionReport::refused(
            peer.clone(),
            reason.name().unwrap_or("UNKNOWN"),
            format!("{peer}: refused: {why}"),
        ),
    );
}

fn report(shared: &Shared, report: ConnectionReport) {
    let on_connection: Option<ConnectionCallback> = lock(&shared.options).on_connection.clone();
    if let Some(cb) = on_connection {
        cb(&report);
    }
}

fn peer_name(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "?".to_owned(), |a| a.to_string())
}

/// Admits `request` to a thread of its own, or refuses it.
fn admit(request: Request, shared: &Arc<Shared>) {
    reap(shared);
    if shared.stop.is_raised() {
        let _ = request.reject(RejectReason::SHUTTING_DOWN);
        return;
    }
    let running = shared.connections.running();
    let max = lock(&shared.options).max_connections;
    if running >= max {
        let why = format!("{max} connections are being served already");
        return refuse(request, RejectReason::NO_RESOURCES, &why, shared);
    }
    // The last quarter of the connections is kept for transfers' first lanes: a sender's
    // further lanes are a speed-up it can do without (it carries on with fewer), while a
    // first lane refused is a transfer refused.
    if request.joins_group() && running >= max - max / 4 {
        let why = format!("{running} of {max} connections taken: lanes beyond the first wait");
        return refuse(request, RejectReason::NO_RESOURCES, &why, shared);
    }
    if !is_allowed(shared, request.peer_addr()) {
        return refuse(
            request,
            RejectReason::NOT_ALLOWED,
            "address not allowed",
            shared,
        );
    }
    // A burst of senders waits here a little (their requests queue in the CM backlog);
    // an unauthenticated flood gets no more than MAX_HANDSHAKES rings.
    let wait = lock(&shared.options).handshake_timeout;
    let Some(slot) = shared
        .handshakes
        .take_within(wait, || shared.stop.is_raised())
    else {
        if shared.stop.is_raised() {
            let _ = request.reject(RejectReason::SHUTTING_DOWN);
            return;
        }
        let why = format!(
            "{} connections are still in their handshake",
            shared.handshakes.total()
        );
        return refuse(request, RejectReason::NO_RESOURCES, &why, shared);
    };
    // The handshake timeout counts from here: the accept and the key proof share it.
    let handshake = Handshake {
        slot,
        deadline: Instant::now() + wait,
        limit: wait,
    };
    let s = Arc::clone(shared);
    match shared
        .connections
        .start((request, handshake), move |(r, h)| connection(r, h, s))
    {
        Ok(()) => {
            shared
                .admitted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        // A stop came while the handshake slot was awaited.
        Err(NotStarted::Stopping((request, _))) => {
            let _ = request.reject(RejectReason::SHUTTING_DOWN);
        }
        // The request went down with the job: the sender sees a refusal.
        Err(NotStarted::NoThread(e)) => report(
            shared,
            ConnectionReport::refused(
                String::new(),
                "NO_RESOURCES",
                format!("no thread for a connection: {e}"),
            ),
        ),
    }
}

/// Whether the allow-list (if any) takes a sender at `peer` (an unknown address: no).
fn is_allowed(shared: &Shared, peer: Option<SocketAddr>) -> bool {
    let options = lock(&shared.options);
    options.allow.is_empty()
        || peer.is_some_and(|p| options.allow.iter().any(|net| net.contains(p.ip())))
}

/// Forgets the threads of connections that ended (joining them: they are done), and the
/// split files kept for a resume past their time.
fn reap(shared: &Shared) {
    shared.groups.expire_kept();
    shared.connections.reap();
}

/// One connection, on its own thread: handshake, then the engine (which gives the
/// handshake permit back once the sender has proved the key).
fn connection(request: Request, handshake: Handshake, shared: Arc<Shared>) {
    let options = lock(&shared.options).clone();
    let peer = peer_name(request.peer_addr());
    let mut group = None;
    let mut device = String::new();
    let mut report = match request.accept_with(
        &options.params(),
        options.key.as_ref(),
        handshake.deadline.saturating_duration_since(Instant::now()),
        Pages::huge_if(options.huge_pages),
        Some(&shared.groups),
    ) {
        Err(e) => {
            let refusal = match &e {
                Error::RequestRejected { reason, .. } => reason.name().unwrap_or("UNKNOWN"),
                _ => "HANDSHAKE_FAILED",
            };
            ConnectionReport::refused(peer.clone(), refusal, format!("{peer}: {e}"))
        }
        Ok(mut conn) => {
            let neg = *conn.negotiated();
            group = conn.group.take();
            device = conn.device_name().to_owned();
            // This thread and the writer it starts run near the device, when /sys says.
            crate::numa::pin_near(&device);
            match VerbsRecvLink::new(conn) {
                Err(e) => ConnectionReport::refused(peer.clone(), "SETUP_FAILED", e.to_string()),
                Ok(link) => {
                    let setup = engine::RecvSetup {
                        dest: Arc::clone(&shared.dest),
                        dest_root: options.dir.clone(),
                        idle_timeout: options.idle_timeout,
                        on_file: options.on_file.clone(),
                        stop: Arc::clone(&shared.stop),
                        handshake: Some(handshake),
                        open_files: Arc::clone(&shared.open_files),
                        group: group.clone(),
                        direct: options.direct,
                        written: Arc::clone(&shared.written),
                    };
                    engine::serve(link, neg, setup)
                }
            }
        }
    };
    drop(group);
    report.device = device;
    report_to(&options, &report);
}

fn report_to(options: &ReceiverOptions, report: &ConnectionReport) {
    if let Some(cb) = &options.on_connection {
        cb(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::dest::DestOptions;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A listener that fails as told.
    struct Failing {
        /// Errors to give, first to last, before the listener fails for good.
        script: Vec<Error>,
        rebinds_left: u32,
        rebinds: Arc<AtomicU32>,
    }

    impl Requests for Failing {
        fn next_request(&mut self, _timeout: Duration) -> Result<Option<Request>, Error> {
            match self.script.pop() {
                Some(e) => Err(e),
                None => Err(Error::ListenerFailed(Box::new(Error::invalid(
                    "rdma_get_cm_event",
                    "device removed",
                )))),
            }
        }

        fn rebind(&mut self) -> Result<(), Error> {
            self.rebinds.fetch_add(1, Ordering::SeqCst);
            if self.rebinds_left == 0 {
                return Err(Error::invalid("rdma_bind_addr", "no such device"));
            }
            self.rebinds_left -= 1;
            Ok(())
        }
    }

    fn shared(dir: &std::path::Path) -> (Arc<Shared>, Arc<Mutex<Vec<String>>>) {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let mut options = ReceiverOptions::new("127.0.0.1:0".parse().unwrap(), dir.to_owned());
        let h = Arc::clone(&heard);
        options.on_failure = Some(Arc::new(move |e: &Error| {
            lock(&h).push(format!("failure: {e}"))
        }));
        let h = Arc::clone(&heard);
        options.on_connection = Some(Arc::new(move |r: &ConnectionReport| {
            lock(&h).push(format!("refused: {}", r.error.clone().unwrap_or_default()))
        }));
        let shared = Arc::new(Shared {
            groups: crate::groups::Groups::new(options.resume),
            options: Mutex::new(options),
            dest: Arc::new(Destination::open(dir, DestOptions::default()).unwrap()),
            stop: Arc::new(Stop::new()),
            connections: Connections::new(),
            handshakes: Permits::new(MAX_HANDSHAKES),
            open_files: Permits::new(16),
            failure: Mutex::new(None),
            written: Arc::default(),
            admitted: Default::default(),
        });
        (shared, heard)
    }

    /// A panic in a callback the listener thread runs stops the receiver loudly.
    #[test]
    fn a_panicking_callback_is_a_failure_not_a_silent_death() {
        let dir = std::env::temp_dir().join(format!("rdmaft-listen-panic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (shared, _) = shared(&dir);
        lock(&shared.options).on_connection = Some(Arc::new(|_: &ConnectionReport| {
            panic!("a callback that panics")
        }));
        let failing = Failing {
            script: vec![Error::invalid(
                "rdma_create_event_channel",
                "too many open files",
            )],
            rebinds_left: 0,
            rebinds: Arc::new(AtomicU32::new(0)),
        };
        listen(failing, Arc::clone(&shared));
        let failure = lock(&shared.failure).clone().unwrap_or_default();
        assert!(failure.contains("panicked"), "{failure:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A request that cannot be taken is reported and the listener goes on; a listener
    /// that fails is bound again; one that cannot be bound again stops the receiver loudly.
    #[test]
    fn the_listener_reports_refusals_rebinds_and_fails_loudly() {
        let dir = std::env::temp_dir().join(format!("rdmaft-listen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (shared, heard) = shared(&dir);
        let rebinds = Arc::new(AtomicU32::new(0));
        let failing = Failing {
            script: vec![Error::invalid(
                "rdma_create_event_channel",
                "too many open files",
            )],
            rebinds_left: 1,
            rebinds: Arc::clone(&rebinds),
        };
        listen(failing, Arc::clone(&shared));
        let heard = lock(&heard).clone();
        assert!(
            heard[0].starts_with("refused:") && heard[0].contains("too many open files"),
            "{heard:?}"
        );
        assert!(
            heard.last().unwrap().starts_with("failure:")
                && heard.last().unwrap().contains("device removed"),
            "{heard:?}"
        );
        // One rebind that worked, then REBIND_TRIES that did not.
        assert_eq!(rebinds.load(Ordering::SeqCst), 1 + REBIND_TRIES);
        let failure = lock(&shared.failure).clone().unwrap_or_default();
        assert!(failure.contains("stopped accepting"), "{failure}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
