//! Receiving: a receiver listens on an address, serves many connections at once (each on its
//! own thread, so one stalled or hostile sender never holds up another), calls back once per
//! received entry, and stops cleanly.

use super::listen::{listen, Listening, Shared, MAX_HANDSHAKES};
use super::subnet::Subnet;
use crate::engine::recv::{ConnectionReport, ReceiveCallback};
use crate::error::Error;
use crate::fs::dest::{DestOptions, Destination, Existing};
use crate::fs::stale::Sweep;
use crate::handoff::Stop;
use crate::key::Key;
use crate::permits::Permits;
use crate::session::{Listener, DEFAULT_HANDSHAKE_TIMEOUT};
use crate::sync::lock_std as lock;
use rdmaft_protocol::{min_ctrl_depth, Features, Params};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Called when a connection ends, with what it did (on that connection's thread; for a
/// sender refused before its handshake, on the listener thread).
pub type ConnectionCallback = Arc<dyn Fn(&ConnectionReport) + Send + Sync>;

/// Called once, on the listener thread, if the receiver stops accepting connections
/// because listening failed for good (its device went away and binding again failed).
pub type FailureCallback = Arc<dyn Fn(&Error) + Send + Sync>;

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
    /// Put the rings on huge pages (from the reserved pool when it has room, else
    /// transparent huge pages): fewer page translations for large windows.
    pub huge_pages: bool,
    /// Write files of at least [`DIRECT_MIN_SIZE`](crate::fs::direct::DIRECT_MIN_SIZE)
    /// with `O_DIRECT`, past the page cache (large files on NVMe; where the file system
    /// refuses it, through the cache as usual; parts of split files always through it).
    /// [`ConnectionReport::direct_files`] counts them.
    pub direct: bool,
    /// Let senders that sync (`send --delete`) remove, in the directories they send, the
    /// entries they no longer have (on by default; never with no-clobber, never outside
    /// those directories, never the receiver's own temporary or partial files). Off
    /// (`recv --no-delete`): such a sender is told, and deletes nothing.
    pub delete: bool,
    /// Make symbolic links whose target is absolute or climbs out of the destination (`recv
    /// --allow-unsafe-links`). Off by default: such a link is refused (`UNSAFE_LINK`). The
    /// receiver itself never follows a link either way.
    pub allow_unsafe_links: bool,
    /// Take symbolic links from senders that send them (`send --links`; on by default).
    /// Off (`recv --no-links`): `LINKS` is not agreed, and such a sender skips its links,
    /// saying so.
    pub links: bool,
    /// Called once per entry when its outcome is known.
    pub on_file: Option<ReceiveCallback>,
    /// Called when a connection ends.
    pub on_connection: Option<ConnectionCallback>,
    /// Called if the receiver stops accepting connections on its own (see
    /// [`Receiver::failure`]).
    pub on_failure: Option<FailureCallback>,
    /// Files open at once across all connections. `None`: from the file-descriptor limit,
    /// which the receiver raises to its hard limit at start; what the connections
    /// themselves need is set aside first. A file offered beyond it is refused (`BUSY`),
    /// never the connection or the listener.
    pub open_files_limit: Option<u64>,
}

/// File descriptors set aside for the process itself (standard streams, the listener, the
/// device, the destination's directory cache, the start-up sweep) before files get a
/// budget.
const FDS_RESERVED: u64 = 64 + 64;
/// File descriptors a connection holds besides its files (CM event channel, completion
/// channel, eventfd, spare).
const FDS_PER_CONNECTION: u64 = 8;
/// File descriptors an open file may hold: its own and its directory's.
const FDS_PER_FILE: u64 = 2;
/// Files that may be open at once even under a tiny descriptor limit.
const MIN_OPEN_FILES: u64 = 8;

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
            .field("huge_pages", &self.huge_pages)
            .field("direct", &self.direct)
            .field("delete", &self.delete)
            .field("allow_unsafe_links", &self.allow_unsafe_links)
            .field("links", &self.links)
            .field("open_files_limit", &self.open_files_limit)
            .finish()
    }
}

impl ReceiverOptions {
    /// Defaults for listening on `listen` and writing into `dir`.
    pub fn new(listen: SocketAddr, dir: PathBuf) -> Self {
        ReceiverOptions {
            listen,
            dir,
            chunk_size: crate::api::defaults::DEFAULT_CHUNK_SIZE,
            window: crate::api::defaults::DEFAULT_WINDOW,
            max_open_files: rdmaft_protocol::DEFAULT_OPEN_FILES,
            key: None,
            allow: Vec::new(),
            require_digest: false,
            existing: Existing::Replace,
            fsync: false,
            preserve_perms: false,
            resume: false,
            idle_timeout: crate::api::defaults::DEFAULT_IDLE_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_connections: 64,
            huge_pages: false,
            direct: false,
            delete: true,
            allow_unsafe_links: false,
            links: true,
            on_file: None,
            on_connection: None,
            on_failure: None,
            open_files_limit: None,
        }
    }

    /// Files open at once across all connections: the limit given, or what the
    /// file-descriptor limit `fd_limit` leaves after the connections' own descriptors, at
    /// two descriptors a file (the file, and its directory, which an open file keeps open
    /// even when the directory cache has let it go).
    pub(crate) fn open_files(&self, fd_limit: u64) -> u64 {
        self.open_files_limit.unwrap_or_else(|| {
            let reserve = FDS_RESERVED + FDS_PER_CONNECTION * self.max_connections as u64;
            (fd_limit.saturating_sub(reserve) / FDS_PER_FILE).max(MIN_OPEN_FILES)
        })
    }

    /// How the destination directory is written.
    pub(crate) fn dest_options(&self) -> DestOptions {
        DestOptions {
            existing: self.existing,
            fsync: self.fsync,
            preserve_perms: self.preserve_perms,
            unsafe_links: self.allow_unsafe_links,
            ..DestOptions::default()
        }
    }

    /// The protocol parameters these options offer.
    pub(crate) fn params(&self) -> Params {
        // Batches and sync cost the receiver nothing to agree to; the sender decides whether
        // it wants them.
        let mut features =
            Features::DIGEST_XXH3_128 | Features::DIGEST_BLAKE3 | Features::BATCH | Features::SYNC;
        // Unsafe links are refused one by one (`allow_unsafe_links`).
        if self.links {
            features |= Features::LINKS;
        }
        if self.resume {
            features |= Features::RESUME;
        }
        if self.delete && self.existing != Existing::Keep {
            features |= Features::DELETE;
        }
        let mut p = Params::new(features, self.chunk_size, self.window);
        p.max_open_files = self.max_open_files;
        p.ctrl_depth = min_ctrl_depth(self.max_open_files);
        p.keepalive_ms = crate::api::defaults::keepalive_for(self.idle_timeout);
        p.require_digest = self.require_digest;
        p
    }
}

/// What a running receiver can change without a restart ([`Receiver::reload`]): who may
/// connect and the limits each new connection gets. The rest of [`ReceiverOptions`] (the
/// address, the directory and how it is written) is fixed at start.
#[derive(Clone, Debug)]
pub struct ReceiverLimits {
    /// [`ReceiverOptions::allow`].
    pub allow: Vec<Subnet>,
    /// [`ReceiverOptions::key`].
    pub key: Option<Key>,
    /// [`ReceiverOptions::require_digest`].
    pub require_digest: bool,
    /// [`ReceiverOptions::chunk_size`].
    pub chunk_size: u32,
    /// [`ReceiverOptions::window`].
    pub window: u32,
    /// [`ReceiverOptions::max_connections`]: lowering it refuses new connections until
    /// enough running ones end; it cannot rise above its value at start.
    pub max_connections: usize,
    /// [`ReceiverOptions::idle_timeout`].
    pub idle_timeout: Duration,
}

impl ReceiverLimits {
    /// The limits `options` set.
    pub fn of(options: &ReceiverOptions) -> Self {
        ReceiverLimits {
            allow: options.allow.clone(),
            key: options.key.clone(),
            require_digest: options.require_digest,
            chunk_size: options.chunk_size,
            window: options.window,
            max_connections: options.max_connections,
            idle_timeout: options.idle_timeout,
        }
    }

    /// Sets these limits in `options`.
    pub fn apply(self, options: &mut ReceiverOptions) {
        options.allow = self.allow;
        options.key = self.key;
        options.require_digest = self.require_digest;
        options.chunk_size = self.chunk_size;
        options.window = self.window;
        options.max_connections = self.max_connections;
        options.idle_timeout = self.idle_timeout;
    }
}

/// A receiver's counters since it started ([`Receiver::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Connections admitted past the allow-list and the limits into their handshake (each
    /// lane counts); one that then fails its handshake or key proof is also reported as
    /// refused ([`ConnectionReport::refusal`](crate::ConnectionReport::refusal)).
    pub admitted: u64,
    /// Connections being served now.
    pub active: usize,
    /// File data written so far (as it arrives, before verification).
    pub bytes_written: u64,
    /// Memory this process has registered with RDMA devices now ([`crate::registered_bytes`]).
    pub registered_bytes: u64,
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
    /// `max_connections` at start: the file descriptors were budgeted for that many.
    started_max_connections: usize,
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
        let fd_limit = crate::fd_limit::raise();
        let max_connections = options.max_connections;
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
            open_files: Permits::new(options.open_files(fd_limit)),
            groups: crate::groups::Groups::new(options.resume),
            options: Mutex::new(options),
            dest: Arc::new(dest),
            stop: Arc::new(Stop::new()),
            connections: crate::connections::Connections::new(),
            handshakes: Permits::new(MAX_HANDSHAKES),
            failure: Mutex::new(None),
            written: Arc::default(),
            admitted: Default::default(),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("rdmaft-listener".into())
                .spawn(move || listen(Listening::new(listener), shared))
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
            started_max_connections: max_connections,
        })
    }

    /// How many stale temporary files (`.rdmaft-<host>-<pid>-<n>.part` of processes that no longer
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

    /// Why the receiver stopped accepting connections on its own, if it did (listening
    /// failed and binding again failed): it then serves the connections it has, accepts
    /// no more, and should be stopped.
    pub fn failure(&self) -> Option<String> {
        lock(&self.shared.failure).clone()
    }

    /// Connections being served now (their handshake or their session under way).
    pub fn active_connections(&self) -> usize {
        self.shared.connections.running()
    }

    /// Files that may be open at once across all connections.
    pub fn open_files_limit(&self) -> u64 {
        self.shared.open_files.total()
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

    /// The limits new connections are admitted under now (see [`reload`](Self::reload)).
    pub fn limits(&self) -> ReceiverLimits {
        ReceiverLimits::of(&lock(&self.shared.options))
    }

    /// Changes the allow-list, the key and the limits for connections admitted from now on
    /// (an operator's reload, SIGHUP for `rdmaft recv`): connections under way keep what
    /// they were admitted with and are not dropped. Invalid sizes are refused and nothing
    /// changes; so is a `max_connections` above the one the receiver started with (the
    /// open-file budget was set aside for that many connections' descriptors).
    pub fn reload(&self, limits: ReceiverLimits) -> Result<(), Error> {
        if limits.max_connections > self.started_max_connections {
            return Err(Error::invalid(
                "Receiver::reload",
                format!(
                    "max_connections {} is above the {} the receiver started with (its file                      descriptors were budgeted for those); a restart can raise it",
                    limits.max_connections, self.started_max_connections
                ),
            ));
        }
        let mut o = lock(&self.shared.options);
        let mut next = o.clone();
        limits.apply(&mut next);
        crate::session::check_params("Receiver::reload", &next.params())?;
        *o = next;
        Ok(())
    }

    /// What the receiver has done so far, for metrics.
    pub fn stats(&self) -> ReceiverStats {
        use std::sync::atomic::Ordering::Relaxed;
        ReceiverStats {
            admitted: self.shared.admitted.load(Relaxed),
            active: self.active_connections(),
            bytes_written: self.shared.written.load(Relaxed),
            registered_bytes: crate::verbs::registered_bytes(),
        }
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
        self.shared.connections.stop();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_budget_leaves_the_connections_their_descriptors() {
        let mut o = ReceiverOptions::new("127.0.0.1:0".parse().unwrap(), "/".into());
        o.max_connections = 64;
        // 4096 descriptors: 128 for the process, 8 per connection, 2 per file.
        assert_eq!(o.open_files(4096), (4096 - 128 - 8 * 64) / 2);
        // A tiny limit still lets a few files through; a given limit is taken as it is.
        assert_eq!(o.open_files(100), MIN_OPEN_FILES);
        o.open_files_limit = Some(3);
        assert_eq!(o.open_files(4096), 3);
    }
}
