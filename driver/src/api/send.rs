//! Sending: start an asynchronous send of files and directory trees, follow its progress,
//! cancel it, wait for its report.

use crate::api::defaults::{
    default_lanes, keepalive_for, DEFAULT_CHUNK_SIZE, DEFAULT_IDLE_TIMEOUT, DEFAULT_PART_SIZE,
    DEFAULT_WINDOW,
};
use crate::engine::send::{
    self as engine, FileCallback, Progress, ProgressSnapshot, SendReport, SyncOptions,
};
use crate::engine::verbs_link::VerbsSendLink;
use crate::engine::work::{Splitting, Work};
use crate::fs::exclude::Excludes;
use crate::fs::shard::Shard;
use crate::fs::tree::Walk;
use crate::handoff::{Once, Stop};
use crate::key::Key;
use crate::sync::thread;
use crate::verbs::Pages;
use crate::Error;
use rdmaft_protocol::{
    min_ctrl_depth, DigestKind, Features, Negotiated, Params, RejectReason, MAX_PART_SHIFT,
};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How to send.
#[derive(Clone)]
pub struct SendOptions {
    /// Buffer (chunk) size to propose; both sides use the smaller one. Rounded down to a
    /// power of two, at least 4 KiB.
    pub chunk_size: u32,
    /// Chunks in flight to propose; both sides use the smaller one.
    pub window: u32,
    /// Files open at once to propose.
    pub max_open_files: u16,
    /// The digest to verify files with (if the receiver supports it; none otherwise).
    pub digest: DigestKind,
    /// A pre-shared key: the receiver must prove it, and we prove it.
    pub key: Option<Key>,
    /// Limit for connecting (address and route resolution, handshake).
    pub connect_timeout: Duration,
    /// The session fails when nothing arrives from the receiver for this long.
    pub idle_timeout: Duration,
    /// Put the slots on huge pages (from the reserved pool when it has room, else
    /// transparent huge pages): fewer page translations for large windows.
    pub huge_pages: bool,
    /// Connections (lanes) to carry the transfer; 0 picks [`default_lanes`]. Entries are
    /// handed to the lanes from one queue, and files larger than a part are split
    /// into parts of [`part_size`](Self::part_size) carried by several lanes at once.
    /// A receiver without lanes gets one.
    pub lanes: u16,
    /// Size of the parts large files are split into when there are several lanes (rounded
    /// down to a power of two, at least the chunk size).
    pub part_size: u64,
    /// More addresses of the same receiver, one per network (rail) it has: lane `n`
    /// connects to the `n`-th of the send's address and these, round robin, so the lanes
    /// use every rail.
    pub more_addrs: Vec<SocketAddr>,
    /// Local addresses (each picks the RDMA port it belongs to) lane `n` connects from,
    /// round robin; empty: the route's choice.
    pub local_addrs: Vec<std::net::IpAddr>,
    /// RDMA devices lane `n` leaves from, round robin (each by its port's RoCE v2 IPv4
    /// address), when `local_addrs` is empty. With neither, and several lanes to one
    /// address (no `more_addrs`), the lanes spread over every local port that reaches it
    /// directly, when there are two or more (see [`crate::ports`]).
    pub devices: Vec<String>,
    /// Send only this shard's share of the paths (see [`Shard`]): N senders, each with
    /// its own index of the same N and the same paths, send the whole once between them.
    /// The report, progress and callbacks cover only this share.
    pub shard: Option<Shard>,
    /// Offer batches (`BATCH`: several control messages per write and per SEND, so a small
    /// file costs about two messages instead of five). On by default; off only to measure
    /// what they save.
    pub batch: bool,
    /// Read files of at least [`DIRECT_MIN_SIZE`](crate::fs::direct::DIRECT_MIN_SIZE)
    /// with `O_DIRECT`, past the page cache (large files on NVMe; where the file system
    /// refuses it, through the cache as usual). [`SendReport::direct_files`] counts them.
    pub direct: bool,
    /// Move only what changed (`send --sync`): each entry is offered for the receiver to
    /// compare with its copy — same size and mtime (or, with
    /// [`SyncOptions::checksum`], same content) is in sync and moves no data; a copy in sync
    /// but for its mode (or, by content, its mtime) gets the sender's. With a content check
    /// files are not split into parts. The receiver must offer `SYNC`.
    pub sync: Option<SyncOptions>,
    /// Leave out entries that match any of these patterns (`send --exclude`; see
    /// [`Excludes`] for how they match). What a receiver has under an excluded name is
    /// kept: a sync's `delete` does not prune a directory in which something was left out.
    pub exclude: Vec<String>,
    /// Send these names (relative to the one path given, a directory), each under its own
    /// name, instead of the paths' trees (`send --files-from`): a directory listed is sent
    /// as itself, not its contents, and the directories' entries come last.
    pub files_from: Option<Vec<String>>,
    /// Send symbolic links inside trees as links, their targets as they read (`send
    /// --links`), instead of skipping them. The receiver must offer `LINKS` (else they are
    /// skipped, with a warning); it refuses a link whose target is absolute or climbs out
    /// of its destination unless it allows unsafe links.
    pub links: bool,
    /// Called once per file when its outcome is known (on one of the send's threads, one
    /// call at a time).
    pub on_file: Option<FileCallback>,
}

impl std::fmt::Debug for SendOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendOptions")
            .field("chunk_size", &self.chunk_size)
            .field("window", &self.window)
            .field("max_open_files", &self.max_open_files)
            .field("digest", &self.digest)
            .field("key", &self.key.as_ref().map(|_| ".."))
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("huge_pages", &self.huge_pages)
            .field("lanes", &self.lanes)
            .field("part_size", &self.part_size)
            .field("more_addrs", &self.more_addrs)
            .field("local_addrs", &self.local_addrs)
            .field("devices", &self.devices)
            .field("shard", &self.shard)
            .field("batch", &self.batch)
            .field("direct", &self.direct)
            .field("sync", &self.sync)
            .field("exclude", &self.exclude)
            .field("files_from", &self.files_from.as_ref().map(Vec::len))
            .field("links", &self.links)
            .finish()
    }
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            window: DEFAULT_WINDOW,
            max_open_files: rdmaft_protocol::DEFAULT_OPEN_FILES,
            digest: DigestKind::Xxh3_128,
            key: None,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            huge_pages: false,
            lanes: 0,
            part_size: DEFAULT_PART_SIZE,
            more_addrs: Vec::new(),
            local_addrs: Vec::new(),
            devices: Vec::new(),
            shard: None,
            batch: true,
            direct: false,
            sync: None,
            exclude: Vec::new(),
            files_from: None,
            links: false,
            on_file: None,
        }
    }
}

impl SendOptions {
    /// Refuses options that cannot go together, and patterns that do not parse.
    pub(crate) fn check(&self, paths: &[PathBuf]) -> Result<(), Error> {
        Excludes::new(&self.exclude).map_err(|e| Error::invalid("exclude", e.to_string()))?;
        if self.sync.is_some_and(|s| s.checksum) && self.digest == DigestKind::None {
            return Err(Error::invalid(
                "sync",
                "--checksum compares digests: it needs one (not --digest none)",
            ));
        }
        if self.files_from.is_some() && paths.len() != 1 {
            return Err(Error::invalid(
                "files_from",
                "the names listed are relative to one directory: give exactly one path",
            ));
        }
        // spec: [sync.delete-whole]
        if self.sync.is_some_and(|s| s.delete) && self.shard.is_some() {
            return Err(Error::invalid(
                "send",
                "--delete with --shard: a shard sends only its share of each directory, so \
                 the other shards' entries would look gone",
            ));
        }
        Ok(())
    }

    /// The protocol parameters these options propose.
    pub(crate) fn params(&self) -> Params {
        // Resume is offered always: the receiver decides whether to keep partial files.
        let features = Features::RESUME
            | match self.digest {
                DigestKind::None => Features::empty(),
                DigestKind::Xxh3_128 => Features::DIGEST_XXH3_128,
                DigestKind::Blake3 => Features::DIGEST_BLAKE3,
            };
        let mut p = Params::new(features, self.chunk_size, self.window);
        p.max_open_files = self.max_open_files;
        p.ctrl_depth = min_ctrl_depth(self.max_open_files);
        p.keepalive_ms = keepalive_for(self.idle_timeout);
        if self.lane_count() > 1 {
            p.features |= Features::LANES;
        }
        if self.batch {
            p.features |= Features::BATCH;
        }
        if self.links {
            p.features |= Features::LINKS;
        }
        if let Some(sync) = self.sync {
            p.features |= Features::SYNC;
            if sync.delete {
                p.features |= Features::DELETE;
            }
        }
        p
    }

    /// The local addresses the lanes leave from, round robin (empty: the route's choice):
    /// see [`SendOptions::devices`].
    pub(crate) fn lane_sources(&self, target: IpAddr) -> Result<Vec<IpAddr>, Error> {
        if !self.local_addrs.is_empty() {
            return Ok(self.local_addrs.clone());
        }
        if !self.devices.is_empty() {
            return crate::api::ports::device_addrs(&self.devices);
        }
        if self.lane_count() > 1 && self.more_addrs.is_empty() {
            let found = crate::api::ports::local_ports_reaching(target);
            if found.len() > 1 {
                return Ok(found.into_iter().map(|p| IpAddr::V4(p.addr)).collect());
            }
        }
        Ok(Vec::new())
    }

    /// The lanes asked for (0 meaning the default: [`default_lanes`], or one for a shard,
    /// which is already one of many senders).
    pub fn lane_count(&self) -> u16 {
        match self.lanes {
            0 if self.shard.is_some() => 1,
            0 => default_lanes(),
            n => n,
        }
    }

    /// The lanes of a transfer whose first lane agreed `neg` (one when the receiver has no
    /// groups), and the work they share: the walk over `paths` (with a shard, its share),
    /// large files split into parts over several lanes (parts need `LANES`).
    pub(crate) fn plan(
        &self,
        paths: Vec<PathBuf>,
        neg: &Negotiated,
        progress: &Arc<Progress>,
    ) -> (u16, Arc<Work>) {
        let lanes = if neg.features.contains(Features::LANES) {
            self.lane_count()
        } else {
            1
        };
        // A content check is for whole files.
        let checksum = self.sync.is_some_and(|s| s.checksum);
        let splitting = (lanes > 1 && !checksum).then(|| Splitting {
            shift: self.part_shift(),
        });
        // Checked by `check`.
        let excludes = Excludes::new(&self.exclude).unwrap_or_default();
        let walk = match (&self.files_from, paths.first()) {
            (Some(names), Some(base)) => Walk::listed(base.clone(), names.clone(), self.shard),
            _ => Walk::with_shard(paths, self.shard),
        };
        let work = Work::new(
            walk.excluding(excludes).with_links(self.links),
            splitting,
            Arc::clone(progress),
            self.on_file.clone(),
        );
        (lanes, Arc::new(work))
    }

    /// The settings of lane `lane` of the transfer that shares `work`.
    pub(crate) fn lane_setup(
        &self,
        lane: usize,
        work: &Arc<Work>,
        progress: &Arc<Progress>,
        stop: &Arc<Stop>,
    ) -> engine::SendSetup {
        engine::SendSetup {
            work: Arc::clone(work),
            lane,
            digest: self.digest,
            direct: self.direct,
            idle_timeout: self.idle_timeout,
            progress: Arc::clone(progress),
            stop: Arc::clone(stop),
            sync: self.sync,
            links: self.links,
        }
    }

    /// log₂ of the part size: at least the chunk size this side proposes, which bounds
    /// every lane's agreed chunk (the minimum rule), so every lane may carry the parts.
    fn part_shift(&self) -> u8 {
        let chunk = rdmaft_protocol::effective_chunk_size(self.chunk_size)
            .unwrap_or(rdmaft_protocol::MIN_CHUNK_SIZE);
        let size = self.part_size.max(u64::from(chunk)).max(1);
        u8::try_from(size.ilog2())
            .unwrap_or(MAX_PART_SHIFT)
            .min(MAX_PART_SHIFT)
    }
}

/// A send in progress.
///
/// The send runs on its own thread (its first lane) and a reader thread beside it, plus a
/// thread and a reader for each further lane. The `on_file` callback runs on whichever lane
/// ended the entry, one call at a time. [`cancel`](Self::cancel) may be called from any
/// thread, the callback included; [`wait`](Self::wait) may not be called from the callback (it would wait for
/// itself: it returns [`Error::WouldDeadlock`] instead). To cancel while another thread is
/// in [`wait`](Self::wait) (which takes the handle), keep a [`SendCanceller`] from
/// [`canceller`](Self::canceller).
#[derive(Debug)]
pub struct SendHandle {
    progress: Arc<Progress>,
    stop: Arc<Stop>,
    result: Arc<Once<Result<SendReport, Error>>>,
    thread: Option<thread::JoinHandle<()>>,
    thread_id: thread::ThreadId,
}

/// Starts sending `paths` (files and directory trees, each under its base name, as
/// `scp -r`) to the receiver at `addr`. Returns at once; errors (connecting included) come
/// from [`SendHandle::wait`].
pub fn send(
    addr: SocketAddr,
    paths: Vec<PathBuf>,
    options: SendOptions,
) -> Result<SendHandle, Error> {
    SendHandle::spawn(move |progress, stop| run_send(addr, paths, options, progress, stop))
}

/// One send: the first lane connects (its handshake opens the transfer group), the others
/// join the group from threads of their own, and every lane takes its work from one queue.
fn run_send(
    addr: SocketAddr,
    paths: Vec<PathBuf>,
    options: SendOptions,
    progress: Arc<Progress>,
    stop: Arc<Stop>,
) -> Result<SendReport, Error> {
    let started = Instant::now();
    options.check(&paths)?;
    let params = options.params();
    // Lane n's receiver address and local address (the rails, round robin).
    let targets: Vec<SocketAddr> = std::iter::once(addr)
        .chain(options.more_addrs.iter().copied())
        .collect();
    let sources = options.lane_sources(addr.ip())?;
    let connect = |n: usize, params: Params| {
        crate::session::connect_with(
            targets[n % targets.len()],
            (!sources.is_empty()).then(|| sources[n % sources.len()]),
            params,
            options.key.as_ref(),
            options.connect_timeout,
            Pages::huge_if(options.huge_pages),
            &|| stop.is_raised(),
        )
    };
    let first = connect(0, params)?;
    let neg = *first.negotiated();
    let (lanes, work) = options.plan(paths, &neg, &progress);
    let lane = |n: usize, conn: crate::session::SenderConn| -> Result<SendReport, Error> {
        let neg = *conn.negotiated();
        let device = conn.device_name().to_owned();
        // This thread and the reader it starts run near the device, when /sys says where.
        crate::numa::pin_near(&device);
        let mut link = VerbsSendLink::new(conn)?;
        let slots = link
            .take_slots()
            .ok_or_else(|| Error::invalid("send", "no slots"))?
            .split();
        let setup = options.lane_setup(n, &work, &progress, &stop);
        let mut report = engine::run(link, neg, slots, setup, started);
        report.devices = vec![device];
        Ok(report)
    };
    let joined = std::thread::scope(|scope| {
        let others: Vec<_> = (1..usize::from(lanes))
            .map(|n| {
                let (connect, lane) = (&connect, &lane);
                let mut params = params;
                params.group = neg.group;
                scope.spawn(move || lane(n, connect(n, params)?))
            })
            .collect();
        let first = lane(0, first);
        let others: Vec<_> = others.into_iter().map(|t| t.join()).collect();
        (first, others)
    });
    let (first, others) = joined;
    let mut reports = vec![first?];
    let mut warnings = Vec::new();
    for (n, joined) in others.into_iter().enumerate() {
        match joined {
            // A lane that failed before it took any work lost nothing.
            Ok(Ok(mut r)) if r.error.is_some() && work.taken_by(n + 1) == 0 => {
                let why = r.error.take().unwrap_or_default();
                warnings.push(format!("lane {}: {why}", n + 1));
                reports.push(r);
            }
            Ok(Ok(r)) => reports.push(r),
            // The group ended before this lane joined: the others carried everything.
            Ok(Err(Error::HandshakeRejected { reason, .. }))
                if reason == RejectReason::UNKNOWN_GROUP && work.walk_finished() => {}
            Ok(Err(Error::Cancelled)) => {}
            Ok(Err(e)) => warnings.push(format!("lane {}: {e}", n + 1)),
            Err(_) => return Err(Error::ThreadPanicked("send lane")),
        }
    }
    let mut report = work.report(reports);
    // After the lanes' own (the first lane's says what the receiver does not offer).
    report.warnings.extend(warnings);
    report.elapsed = started.elapsed();
    Ok(report)
}

impl SendHandle {
    /// Runs `job` (the whole send) on a thread of its own; the handle waits for its
    /// result, cancels it through the stop it is given, and reads the progress it keeps.
    pub(crate) fn spawn(
        job: impl FnOnce(Arc<Progress>, Arc<Stop>) -> Result<SendReport, Error> + Send + 'static,
    ) -> Result<SendHandle, Error> {
        let progress = Arc::new(Progress::default());
        let stop = Arc::new(Stop::new());
        let result = Arc::new(Once::new());
        let thread = {
            let (progress, stop, result) = (progress.clone(), stop.clone(), result.clone());
            thread::Builder::new()
                .name("rdmaft-send".into())
                .spawn(move || {
                    result.set(job(progress, stop));
                })
                .map_err(|e| Error::Thread {
                    what: "send",
                    source: e,
                })?
        };
        let thread_id = thread.thread().id();
        Ok(SendHandle {
            progress,
            stop,
            result,
            thread: Some(thread),
            thread_id,
        })
    }

    /// Bytes and files done so far.
    pub fn progress(&self) -> ProgressSnapshot {
        self.progress.snapshot()
    }

    /// Asks the send to stop: the receiver is told (an error message, then a disconnect),
    /// unfinished files end `Unfinished`, and [`wait`](Self::wait) returns the report. While
    /// the send is still connecting, it gives up within 100 ms and `wait` returns
    /// [`Error::Cancelled`].
    pub fn cancel(&self) {
        self.stop.raise();
    }

    /// A cancel for this send that lives apart from the handle: it works while another
    /// thread is in [`wait`](Self::wait), and after the send ended (then it does nothing).
    pub fn canceller(&self) -> SendCanceller {
        SendCanceller {
            stop: Arc::clone(&self.stop),
        }
    }

    /// Whether the caller is one of the send's own threads (a callback, on whichever lane
    /// it runs): it must not wait then.
    pub fn is_own_thread(&self) -> bool {
        thread::current().id() == self.thread_id
            || crate::engine::work::in_callback_of(&self.progress)
    }

    /// Whether the send has ended (its report is ready).
    pub fn is_finished(&self) -> bool {
        self.result.is_set()
    }

    /// Waits up to `timeout` for the send to end; whether it has (its report is ready).
    /// A progress display waits with this between updates, and so learns of the end at
    /// once instead of at its next tick.
    #[cfg(not(rdmaft_loom))]
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.result.wait_set(timeout)
    }

    /// Waits for the send to end; its report (which says per file what happened), or the
    /// error that kept it from starting (connecting, handshake).
    pub fn wait(mut self) -> Result<SendReport, Error> {
        if self.is_own_thread() {
            return Err(Error::WouldDeadlock(
                "SendHandle::wait from the send's own callback",
            ));
        }
        let r = self.result.take();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                return Err(Error::ThreadPanicked("send"));
            }
        }
        r.unwrap_or(Err(Error::ThreadPanicked("send")))
    }
}

/// Cancels one send from any thread, as [`SendHandle::cancel`] does, without holding the
/// handle: what a caller keeps when another thread waits on the handle.
#[derive(Clone, Debug)]
pub struct SendCanceller {
    stop: Arc<Stop>,
}

impl SendCanceller {
    /// Asks the send to stop (see [`SendHandle::cancel`]); later calls do nothing more.
    pub fn cancel(&self) {
        self.stop.raise();
    }
}

impl Drop for SendHandle {
    /// Dropping a running send cancels it and waits for it to end.
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            // From a callback: cancel, but do not wait for the thread running it.
            self.stop.raise();
            if !self.is_own_thread() {
                let _ = t.join();
            }
        }
    }
}

/// Model checks of the real `SendHandle` (`make loom`) around a stand-in for the send: a
/// job that, like a lane, registers a waker with the stop and runs until it is raised.
#[cfg(all(test, rdmaft_loom))]
mod loom_tests {
    use super::*;
    use crate::handoff::{CondWake, Waker};
    use loom::sync::atomic::{AtomicBool, Ordering};

    /// The stand-in: waits for the stop (a lane polls it between rounds and sleeps in its
    /// wait, which the stop's waker ends), then ends cancelled; `ended` records its end.
    fn until_stopped(
        ended: crate::sync::Arc<AtomicBool>,
    ) -> impl FnOnce(Arc<Progress>, Arc<Stop>) -> Result<SendReport, Error> + Send + 'static {
        move |_progress, stop| {
            let wake = Arc::new(CondWake::new());
            stop.register(wake.clone() as Waker);
            loop {
                let before = wake.count();
                if stop.is_raised() {
                    break;
                }
                wake.wait_past(before);
            }
            ended.store(true, Ordering::SeqCst);
            Err(Error::Cancelled)
        }
    }

    /// A cancel from another thread (through a canceller) ends a wait in progress: the
    /// cancel is never lost, whenever it lands against the job's start and the wait.
    #[test]
    fn a_cancel_from_another_thread_ends_a_wait() {
        loom::model(|| {
            let ended = crate::sync::Arc::new(AtomicBool::new(false));
            let handle = SendHandle::spawn(until_stopped(ended.clone())).unwrap();
            let canceller = handle.canceller();
            let other = thread::spawn(move || canceller.cancel());
            assert!(matches!(handle.wait(), Err(Error::Cancelled)));
            assert!(ended.load(Ordering::SeqCst));
            other.join().unwrap();
        });
    }

    /// Dropping the handle of a running send cancels it and returns only once the send's
    /// thread ended (nothing of the send outlives its handle).
    #[test]
    fn dropping_a_running_send_cancels_it_and_waits_for_its_end() {
        loom::model(|| {
            let ended = crate::sync::Arc::new(AtomicBool::new(false));
            let handle = SendHandle::spawn(until_stopped(ended.clone())).unwrap();
            drop(handle);
            assert!(
                ended.load(Ordering::SeqCst),
                "the send ran on after its handle was dropped"
            );
        });
    }

    /// A send that ended by itself gives its report to `wait`, also when a cancel races
    /// its end, and a wait on another thread than the send's own is never refused.
    #[test]
    fn a_send_that_ends_by_itself_reports_whatever_a_racing_cancel_does() {
        loom::model(|| {
            let handle = SendHandle::spawn(|_, _| Ok(SendReport::empty())).unwrap();
            let canceller = handle.canceller();
            let other = thread::spawn(move || canceller.cancel());
            assert!(!handle.is_own_thread());
            assert!(handle.wait().is_ok());
            other.join().unwrap();
        });
    }
}
