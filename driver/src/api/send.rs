//! Sending: start an asynchronous send of files and directory trees, follow its progress,
//! cancel it, wait for its report.

use crate::engine::send::{self as engine, FileCallback, Progress, ProgressSnapshot, SendReport};
use crate::engine::verbs_link::VerbsSendLink;
use crate::fs::shard::Shard;
use crate::handoff::{Once, Stop};
use crate::key::Key;
use crate::verbs::Pages;
use crate::Error;
use rdmaft_protocol::{min_ctrl_depth, DigestKind, Features, Params};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
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
    /// Send only this shard's share of the paths (see [`Shard`]): N senders, each with
    /// its own index of the same N and the same paths, send the whole once between them.
    /// The report, progress and callbacks cover only this share.
    pub shard: Option<Shard>,
    /// Called once per file when its outcome is known, on the send's own thread.
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
            .field("shard", &self.shard)
            .finish()
    }
}

/// Default buffer (chunk) size: 1 MiB.
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;
/// Default window: chunks in flight (16 MiB at the default chunk size).
pub const DEFAULT_WINDOW: u32 = 16;
/// Default idle timeout.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

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
            shard: None,
            on_file: None,
        }
    }
}

impl SendOptions {
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
        p
    }
}

/// The keepalive interval to propose for an idle timeout: an eighth of it, 1 ms to 2 s.
pub(crate) fn keepalive_for(idle: Duration) -> u32 {
    u32::try_from((idle / 8).as_millis())
        .unwrap_or(u32::MAX)
        .clamp(1, 2000)
}

/// A send in progress.
///
/// The send runs on its own thread (which also runs the `on_file` callback) and a reader
/// thread beside it. [`cancel`](Self::cancel) may be called from any thread, the callback
/// included; [`wait`](Self::wait) may not be called from the callback (it would wait for
/// itself: it returns [`Error::WouldDeadlock`] instead). To cancel while another thread is
/// in [`wait`](Self::wait) (which takes the handle), keep a [`SendCanceller`] from
/// [`canceller`](Self::canceller).
#[derive(Debug)]
pub struct SendHandle {
    progress: Arc<Progress>,
    stop: Arc<Stop>,
    result: Arc<Once<Result<SendReport, Error>>>,
    thread: Option<JoinHandle<()>>,
    thread_id: ThreadId,
}

/// Starts sending `paths` (files and directory trees, each under its base name, as
/// `scp -r`) to the receiver at `addr`. Returns at once; errors (connecting included) come
/// from [`SendHandle::wait`].
pub fn send(
    addr: SocketAddr,
    paths: Vec<PathBuf>,
    options: SendOptions,
) -> Result<SendHandle, Error> {
    let progress = Arc::new(Progress::default());
    let stop = Arc::new(Stop::new());
    let result = Arc::new(Once::new());
    let thread = {
        let (progress, stop, result) = (progress.clone(), stop.clone(), result.clone());
        std::thread::Builder::new()
            .name("rdmaft-send".into())
            .spawn(move || {
                let r = run_send(addr, paths, options, progress, stop);
                result.set(r);
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

fn run_send(
    addr: SocketAddr,
    paths: Vec<PathBuf>,
    options: SendOptions,
    progress: Arc<Progress>,
    stop: Arc<Stop>,
) -> Result<SendReport, Error> {
    let started = Instant::now();
    let conn = crate::session::connect_with(
        addr,
        options.params(),
        options.key.as_ref(),
        options.connect_timeout,
        Pages::huge_if(options.huge_pages),
        &|| stop.is_raised(),
    )?;
    let neg = *conn.negotiated();
    let mut link = VerbsSendLink::new(conn)?;
    let slots = link
        .take_slots()
        .ok_or_else(|| Error::invalid("send", "no slots"))?
        .split();
    let setup = engine::SendSetup {
        roots: paths,
        shard: options.shard,
        digest: options.digest,
        idle_timeout: options.idle_timeout,
        progress,
        on_file: options.on_file,
        stop,
    };
    Ok(engine::run(link, neg, slots, setup, started))
}

impl SendHandle {
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

    /// Whether the caller is the send's own thread (a callback): it must not wait then.
    pub fn is_own_thread(&self) -> bool {
        std::thread::current().id() == self.thread_id
    }

    /// Whether the send has ended (its report is ready).
    pub fn is_finished(&self) -> bool {
        self.result.is_set()
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
            if std::thread::current().id() != self.thread_id {
                self.stop.raise();
                let _ = t.join();
            }
        }
    }
}

/// Sends `paths` to `dest` through an in-process loopback connection (no RDMA): the engine,
/// the file layer and the protocol exactly as over a NIC. For tests and the CPU benchmark.
#[doc(hidden)]
pub fn loopback_transfer(
    paths: Vec<PathBuf>,
    dest: &std::path::Path,
    send: SendOptions,
    recv: &crate::api::recv::ReceiverOptions,
) -> Result<(SendReport, crate::engine::recv::ConnectionReport), Error> {
    let pair = crate::engine::loopback::pair(
        &send.params(),
        &recv.params(),
        send.key.as_ref(),
        recv.key.as_ref(),
    )?;
    let destination = Arc::new(
        crate::fs::dest::Destination::open(dest, recv.dest_options())
            .map_err(|e| Error::file("receive directory", dest, e))?,
    );
    let rsetup = crate::engine::recv::RecvSetup {
        dest: destination,
        dest_root: dest.to_owned(),
        idle_timeout: recv.idle_timeout,
        on_file: recv.on_file.clone(),
        stop: Arc::new(Stop::new()),
        handshake: None,
        open_files: crate::permits::Permits::new(recv.open_files(crate::fd_limit::raise())),
    };
    let receiver_neg = pair.receiver_neg;
    let receiver_link = pair.receiver;
    let receiver =
        std::thread::spawn(move || crate::engine::recv::serve(receiver_link, receiver_neg, rsetup));
    let setup = engine::SendSetup {
        roots: paths,
        shard: send.shard,
        digest: send.digest,
        idle_timeout: send.idle_timeout,
        progress: Arc::new(Progress::default()),
        on_file: send.on_file.clone(),
        stop: Arc::new(Stop::new()),
    };
    let report = engine::run(
        pair.sender,
        pair.sender_neg,
        pair.slots.split(),
        setup,
        Instant::now(),
    );
    let received = receiver
        .join()
        .map_err(|_| Error::ThreadPanicked("receiver"))?;
    Ok((report, received))
}
