//! Receiving: a receiver listens on an address, serves many connections at once (each on its
//! own thread, so one stalled or hostile sender never holds up another), calls back once per
//! received entry, and stops cleanly.

use super::subnet::Subnet;
use crate::engine::recv::{self as engine, ConnectionReport, ReceiveCallback};
use crate::engine::verbs_link::VerbsRecvLink;
use crate::fs::dest::{DestOptions, Destination, Existing};
use crate::fs::stale::Sweep;
use crate::handoff::Stop;
use crate::key::Key;
use crate::session::{Listener, Request, DEFAULT_HANDSHAKE_TIMEOUT};
use crate::sync::lock_std as lock;
use crate::Error;
use rdmaft_protocol::{min_ctrl_depth, Features, Params, RejectReason};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Called when a connection ends, with what it did (on that connection's thread; for a
/// sender refused by the allow-list, on the listener thread).
pub type ConnectionCallback = Arc<dyn Fn(&ConnectionReport) + Send + Sync>;

/// How to receive.
#[derive(Clone)]
pub struct ReceiverOptions {
    /// Address to listen on (an IP of an RDMA device, or 0.0.0.0 for all).
    pub listen: SocketAddr,
    /// Directory to write into (must exist).
    pub dir: PathBuf,
    /// Largest buffer (chunk) size to agree to (changeable while running).
    pub chunk_size: u32,
    /// Largest window to agree to (changeable while running).
    pub window: u32,
    /// Largest number of files a sender may have open at once.
    pub max_open_files: u16,
    /// A pre-shared key senders must prove.
    pub key: Option<Key>,
    /// Addresses senders may connect from (empty: any). Others are refused before the
    /// handshake (`NOT_ALLOWED`).
    pub allow: Vec<Subnet>,
    /// Refuse senders that cannot send a digest, and files without one.
    pub require_digest: bool,
    /// What to do with names that exist already.
    pub existing: Existing,
    /// `fsync` each file before publishing it and its directory after (and the parent of each
    /// directory created), so that a crash loses no published name.
    pub fsync: bool,
    /// Apply senders' permission bits as sent (never setuid, setgid or sticky). By default
    /// the receiver's umask (read when it starts) is cleared from them, so a sender cannot
    /// make world-writable files or directories unless the umask allows it.
    pub preserve_perms: bool,
    /// Keep what an interrupted transfer wrote of a file (hidden, beside it, as
    /// `.rdmaft-partial-…`) and continue from there when the same file (name, size, mtime)
    /// is sent again; the whole file's digest is still checked.
    pub resume: bool,
    /// A connection fails when nothing arrives from its sender for this long.
    pub idle_timeout: Duration,
    /// Limit for one sender's connection handshake.
    pub handshake_timeout: Duration,
    /// Connections served at once; more are refused (`NO_RESOURCES`).
    pub max_connections: usize,
    /// Called once per entry when its outcome is known.
    pub on_file: Option<ReceiveCallback>,
    /// Called when a connection ends.
    pub on_connection: Option<ConnectionCallback>,
}

impl std::fmt::Debug for ReceiverOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverOptions")
            .field("listen", &self.listen)
            .field("dir", &self.dir)
            .field("chunk_size", &self.chunk_size)
            .field("window", &self.window)
            .field("max_open_files", &self.max_open_files)
            .field("key", &self.key.as_ref().map(|_| ".."))
            .field("allow", &self.allow)
            .field("require_digest", &self.require_digest)
            .field("existing", &self.existing)
            .field("fsync", &self.fsync)
            .field("preserve_perms", &self.preserve_perms)
            .field("resume", &self.resume)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl ReceiverOptions {
    /// Defaults for listening on `listen` and writing into `dir`.
    pub fn new(listen: SocketAddr, dir: PathBuf) -> Self {
        ReceiverOptions {
            listen,
            dir,
            chunk_size: crate::api::send::DEFAULT_CHUNK_SIZE,
            window: crate::api::send::DEFAULT_WINDOW,
            max_open_files: rdmaft_protocol::DEFAULT_OPEN_FILES,
            key: None,
            allow: Vec::new(),
            require_digest: false,
            existing: Existing::Replace,
            fsync: false,
            preserve_perms: false,
            resume: false,
            idle_timeout: crate::api::send::DEFAULT_IDLE_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_connections: 64,
            on_file: None,
            on_connection: None,
        }
    }

    /// How the destination directory is written.
    pub(crate) fn dest_options(&self) -> DestOptions {
        DestOptions {
            existing: self.existing,
            fsync: self.fsync,
            preserve_perms: self.preserve_perms,
            ..DestOptions::default()
        }
    }

    /// The protocol parameters these options offer.
    pub(crate) fn params(&self) -> Params {
        let mut features = Features::DIGEST_XXH3_128 | Features::DIGEST_BLAKE3;
        if self.resume {
            features |= Features::RESUME;
        }
        let mut p = Params::new(features, self.chunk_size, self.window);
        p.max_open_files = self.max_open_files;
        p.ctrl_depth = min_ctrl_depth(self.max_open_files);
        p.keepalive_ms = crate::api::send::keepalive_for(self.idle_timeout);
        p.require_digest = self.require_digest;
        p
    }
}

/// What the threads of a receiver share.
struct Shared {
    options: Mutex<ReceiverOptions>,
    dest: Arc<Destination>,
    stop: Arc<Stop>,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

/// A running receiver.
///
/// Threads: one listener thread, and per connection a connection thread (which runs the
/// callbacks) and a writer thread. [`stop`](Self::stop) may be called from a callback: it
/// then stops and joins everything but the calling connection thread, which ends when the
/// callback returns.
pub struct Receiver {
    shared: Arc<Shared>,
    addr: SocketAddr,
    listener: Option<JoinHandle<()>>,
    sweep: Sweep,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Receiver {
    /// Binds `options.listen` and starts serving. Errors (no such address, no RDMA device,
    /// no such directory, invalid sizes) come back now.
    ///
    /// It also starts removing, on a thread of its own, the temporary files that receivers
    /// killed mid-transfer left anywhere under the directory (see
    /// [`stale_removed`](Self::stale_removed)).
    pub fn start(options: ReceiverOptions) -> Result<Receiver, Error> {
        crate::session::check_params("Receiver", &options.params())?;
        let dest = Destination::open(&options.dir, options.dest_options())
            .map_err(|e| Error::file("receive directory", &options.dir, e))?;
        let listener = Listener::bind(options.listen)?;
        let sweep = dest
            .root()
            .try_clone()
            .and_then(Sweep::start)
            .map_err(|e| Error::Thread {
                what: "sweep",
                source: e,
            })?;
        let addr = listener.local_addr();
        let shared = Arc::new(Shared {
            options: Mutex::new(options),
            dest: Arc::new(dest),
            stop: Arc::new(Stop::new()),
            connections: Mutex::new(Vec::new()),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("rdmaft-listener".into())
                .spawn(move || listen(listener, shared))
                .map_err(|e| Error::Thread {
                    what: "listener",
                    source: e,
                })?
        };
        Ok(Receiver {
            shared,
            addr,
            listener: Some(thread),
            sweep,
        })
    }

    /// How many stale temporary files (`.rdmaft-<pid>-<n>.part` of processes that no longer
    /// exist, owned by this user) the start-up sweep removed from the directory tree, once it
    /// is done; `None` while it runs. The sweep reads every directory under the receive
    /// directory once, as `find DIR -name '.rdmaft-*'` would, so on a large tree it takes a
    /// while: connections are served meanwhile, and [`stop`](Self::stop) ends it early.
    pub fn stale_removed(&self) -> Option<u64> {
        self.sweep.removed()
    }

    /// The address listened on, with the real port.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The largest buffer (chunk) size offered to new connections now.
    pub fn buffer_size(&self) -> u32 {
        lock(&self.shared.options).chunk_size
    }

    /// Changes the largest buffer (chunk) size for connections accepted from now on.
    pub fn set_buffer_size(&self, chunk_size: u32) -> Result<(), Error> {
        let mut o = lock(&self.shared.options);
        let mut next = o.clone();
        next.chunk_size = chunk_size;
        crate::session::check_params("Receiver::set_buffer_size", &next.params())?;
        *o = next;
        Ok(())
    }

    /// Changes the largest window for connections accepted from now on.
    pub fn set_window(&self, window: u32) -> Result<(), Error> {
        let mut o = lock(&self.shared.options);
        let mut next = o.clone();
        next.window = window;
        crate::session::check_params("Receiver::set_window", &next.params())?;
        *o = next;
        Ok(())
    }

    /// Stops: no new connections; running ones end (their senders are told the receiver is
    /// shutting down, unfinished files are removed and reported); every thread is joined
    /// (but the caller's own, when called from a callback) and every resource freed.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.shared.stop.raise();
        self.sweep.stop();
        let me = std::thread::current().id();
        if let Some(t) = self.listener.take() {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
        let threads: Vec<_> = lock(&self.shared.connections).drain(..).collect();
        for t in threads {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// The listener thread: takes requests until stopped; each goes to a thread of its own.
fn listen(listener: Listener, shared: Arc<Shared>) {
    while !shared.stop.is_raised() {
        let request = match listener.next_request(Duration::from_millis(200)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            // The listening id broke (its device went away): nothing more to serve.
            Err(_) => return,
        };
        reap(&shared);
        let running = lock(&shared.connections).len();
        let max = lock(&shared.options).max_connections;
        if shared.stop.is_raised() {
            let _ = request.reject(RejectReason::SHUTTING_DOWN);
            return;
        }
        if running >= max {
            let _ = request.reject(RejectReason::NO_RESOURCES);
            continue;
        }
        if !is_allowed(&shared, request.peer_addr()) {
            let peer = request
                .peer_addr()
                .map_or_else(|| "?".to_owned(), |a| a.to_string());
            let _ = request.reject(RejectReason::NOT_ALLOWED);
            let on_connection = lock(&shared.options).on_connection.clone();
            if let Some(cb) = on_connection {
                cb(&ConnectionReport {
                    files: Vec::new(),
                    error: Some(format!("{peer}: refused: address not allowed")),
                });
            }
            continue;
        }
        let s = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("rdmaft-connection".into())
            .spawn(move || connection(request, s));
        if let Ok(t) = spawned {
            lock(&shared.connections).push(t);
        }
    }
}

/// Whether the allow-list (if any) takes a sender at `peer` (an unknown address: no).
fn is_allowed(shared: &Shared, peer: Option<SocketAddr>) -> bool {
    let options = lock(&shared.options);
    options.allow.is_empty()
        || peer.is_some_and(|p| options.allow.iter().any(|net| net.contains(p.ip())))
}

/// Forgets the threads of connections that ended (joining them: they are done).
fn reap(shared: &Shared) {
    let mut threads = lock(&shared.connections);
    let (done, running): (Vec<_>, Vec<_>) = threads.drain(..).partition(|t| t.is_finished());
    *threads = running;
    drop(threads);
    for t in done {
        let _ = t.join();
    }
}

/// One connection, on its own thread: handshake, then the engine.
fn connection(request: Request, shared: Arc<Shared>) {
    let options = lock(&shared.options).clone();
    let peer = request
        .peer_addr()
        .map_or_else(|| "?".to_owned(), |a| a.to_string());
    let report = match request.accept(
        &options.params(),
        options.key.as_ref(),
        options.handshake_timeout,
    ) {
        Err(e) => ConnectionReport {
            files: Vec::new(),
            error: Some(format!("{peer}: {e}")),
        },
        Ok(conn) => {
            let neg = *conn.negotiated();
            match VerbsRecvLink::new(conn) {
                Err(e) => ConnectionReport {
                    files: Vec::new(),
                    error: Some(e.to_string()),
                },
                Ok(link) => {
                    let setup = engine::RecvSetup {
                        dest: Arc::clone(&shared.dest),
                        dest_root: options.dir.clone(),
                        idle_timeout: options.idle_timeout,
                        on_file: options.on_file.clone(),
                        stop: Arc::clone(&shared.stop),
                    };
                    engine::serve(link, neg, setup)
                }
            }
        }
    };
    if let Some(cb) = &options.on_connection {
        cb(&report);
    }
}
