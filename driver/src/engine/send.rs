//! The sender's engine: the connection thread's loop (walk → offer → read → post → results)
//! and the reader thread beside it (open, `pread` into the slot, digest).

use super::io_thread::{self, IoThread, INLINE_MAX};
use super::round::{self, CtrlScratch, Round};
use super::work::{Ended, Next, Work, WorkItem};
use super::{Clock, SendCompletion, SendLink, CLOSE_GRACE, IDLE_WAIT};
use crate::digest::Digester;
use crate::fs::direct;
use crate::fs::tree::SourceEntry;
use crate::handoff::Stop;
use crate::verbs::Slot;
use crate::Error;
use rdmaft_protocol::{
    AbortReason, Changes, Config, CtrlBuf, Digest, DigestKind, EntryKind, ErrorCode, Failure,
    Features, FileInfo, FileRejectReason, FileStatus, Negotiated, Sender, SenderEvent,
    SenderOutput, SyncCheck, UsageError, VecStorage,
};
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a file ended, as the sender's report says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileOutcome {
    /// Delivered and verified by the receiver.
    Sent,
    /// The receiver refused it.
    Rejected(FileRejectReason),
    /// It was sent, but the receiver's verdict is a failure (digest mismatch, no space, ...).
    Failed(FileStatus),
    /// Not sent, and that is a failure: an unreadable path or an impossible name, or a
    /// file that could not be read to its end or changed while being sent (nothing is
    /// published under its name).
    Skipped(String),
    /// Not sent, as the documented policy says (a symbolic link or a special file inside a
    /// tree): named and counted, not a failure.
    Ignored(String),
    /// The session ended before the file's result.
    Unfinished,
    /// (sync) The receiver had it already: nothing was sent; `Changes` is the metadata it
    /// updated.
    InSync(Changes),
    /// (dry run) It would have been sent, because of `Changes`.
    WouldSend(Changes),
}

impl FileOutcome {
    /// Whether nothing went wrong: it arrived verified, was in sync already, was ignored by
    /// policy, or a dry run only listed it.
    pub fn is_ok(&self) -> bool {
        matches!(
            self,
            FileOutcome::Sent
                | FileOutcome::Ignored(_)
                | FileOutcome::InSync(_)
                | FileOutcome::WouldSend(_)
        )
    }
}

/// One entry of the report.
#[derive(Clone, Debug)]
pub struct FileReport {
    /// The path on this host.
    pub path: PathBuf,
    /// The name it was sent under (empty for a skipped path).
    pub name: String,
    /// File or directory.
    pub kind: EntryKind,
    /// Its size.
    pub size: u64,
    /// How it ended.
    pub outcome: FileOutcome,
    /// (sync) Why it was sent: how the receiver's copy differed (empty otherwise).
    pub changes: Changes,
    /// (delete, a directory) Entries the receiver removed from it (or, in a dry run, would
    /// remove), contents of directories included.
    pub deleted: u64,
}

/// Progress of a send, readable from any thread while it runs.
#[derive(Debug, Default)]
pub struct Progress {
    pub(crate) bytes_done: AtomicU64,
    pub(crate) bytes_found: AtomicU64,
    pub(crate) files_done: AtomicU64,
    pub(crate) files_found: AtomicU64,
}

/// A snapshot of [`Progress`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgressSnapshot {
    /// Bytes written to the receiver so far.
    pub bytes_done: u64,
    /// Bytes of the files found so far (the walk may still find more).
    pub bytes_total: u64,
    /// Files finished (verified, rejected, failed or skipped).
    pub files_done: u64,
    /// Files found so far.
    pub files_total: u64,
}

impl Progress {
    /// The current counts.
    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            bytes_total: self.bytes_found.load(Ordering::Relaxed),
            files_done: self.files_done.load(Ordering::Relaxed),
            files_total: self.files_found.load(Ordering::Relaxed),
        }
    }
}

/// How many entries ended each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendCounts {
    /// Delivered and verified.
    pub sent: u64,
    /// Refused by the receiver.
    pub rejected: u64,
    /// Sent, but the receiver's verdict is a failure.
    pub failed: u64,
    /// Not sent, a failure (an unreadable path, an impossible name).
    pub skipped: u64,
    /// The session ended before their result.
    pub unfinished: u64,
    /// Not sent by policy (symbolic links and special files inside a tree).
    pub ignored: u64,
    /// (sync) In sync at the receiver already: no data moved (metadata may have).
    pub up_to_date: u64,
    /// (dry run) Would have been sent.
    pub would_send: u64,
    /// (delete) Entries the receiver removed because this side no longer has them (or, in
    /// a dry run, would remove), contents of directories included; not among the entries
    /// counted above.
    pub deleted: u64,
}

impl SendCounts {
    /// Every entry counted.
    pub fn total(&self) -> u64 {
        self.sent + self.rejected + self.failed + self.skipped + self.unfinished + self.ok_unsent()
    }

    /// Entries that ended well without being sent: ignored by policy, in sync already, or
    /// listed by a dry run.
    pub fn ok_unsent(&self) -> u64 {
        self.ignored + self.up_to_date + self.would_send
    }

    /// Entries that should have arrived and did not: rejected, failed, skipped or
    /// unfinished.
    pub fn not_sent(&self) -> u64 {
        self.total() - self.sent - self.ok_unsent()
    }

    pub(crate) fn count(&mut self, outcome: &FileOutcome) {
        let n = match outcome {
            FileOutcome::Sent => &mut self.sent,
            FileOutcome::Rejected(_) => &mut self.rejected,
            FileOutcome::Failed(_) => &mut self.failed,
            FileOutcome::Skipped(_) => &mut self.skipped,
            FileOutcome::Unfinished => &mut self.unfinished,
            FileOutcome::Ignored(_) => &mut self.ignored,
            FileOutcome::InSync(_) => &mut self.up_to_date,
            FileOutcome::WouldSend(_) => &mut self.would_send,
        };
        *n += 1;
    }
}

/// What `--sync` asks of a send (PROTOCOL.md §4.1, `SYNC`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncOptions {
    /// Compare content (a digest of each file on both sides) instead of size and mtime.
    pub checksum: bool,
    /// Change nothing at the receiver: report what would be sent, updated or deleted.
    pub dry_run: bool,
    /// Have the receiver remove, in each directory sent, the entries this side no longer
    /// has — only for a directory whose walk found no error (as rsync refuses to delete
    /// after I/O errors). Not with a shard (the others' entries would look gone).
    pub delete: bool,
}

/// What a send did.
///
/// It holds counts and the first failures, not a record per entry: a send of millions of
/// files keeps no per-file state once each has ended. Per-file detail goes to
/// [`SendOptions::on_file`](crate::SendOptions::on_file).
#[derive(Clone, Debug)]
pub struct SendReport {
    /// How many entries ended each way.
    pub counts: SendCounts,
    /// The first entries that did not arrive verified, in the order they ended (at most
    /// [`MAX_LISTED_FAILURES`](crate::MAX_LISTED_FAILURES); the rest are only counted).
    pub failures: Vec<FileReport>,
    /// Whether the walk reached every entry of the paths given (false when the session
    /// ended first: entries after that point are in no count).
    pub walk_finished: bool,
    /// Bytes of file data sent (resumed parts not included).
    pub bytes: u64,
    /// Bytes skipped because the receiver already had them (resumed files).
    pub bytes_resumed: u64,
    /// How long the transfer took, from the start of the connection.
    pub elapsed: Duration,
    /// The parameters both sides agreed on.
    pub negotiated: Option<Negotiated>,
    /// Why the session ended badly, if it did (files then may be `Unfinished`).
    pub error: Option<String>,
    /// Connections (lanes) that carried the transfer.
    pub lanes: usize,
    /// The RDMA device each lane ran on, in lane order (empty over the loopback link).
    pub devices: Vec<String>,
    /// What went wrong without failing the transfer (a lane that could not join: the
    /// others carried its share).
    pub warnings: Vec<String>,
    /// Files (or parts) read with `O_DIRECT` (with [`SendOptions::direct`](crate::SendOptions::direct)).
    pub direct_files: u64,
}

impl SendReport {
    /// A report of nothing yet.
    pub(crate) fn empty() -> SendReport {
        SendReport {
            counts: SendCounts::default(),
            failures: Vec::new(),
            walk_finished: false,
            bytes: 0,
            bytes_resumed: 0,
            elapsed: Duration::ZERO,
            negotiated: None,
            error: None,
            lanes: 0,
            devices: Vec::new(),
            warnings: Vec::new(),
            direct_files: 0,
        }
    }

    /// Whether every entry was reached and arrived verified (or was in sync already, or
    /// ignored by policy, or listed by a dry run), and the session ended cleanly
    /// (unreadable or unsendable entries count as failures).
    pub fn all_ok(&self) -> bool {
        self.error.is_none() && self.walk_finished && self.counts.not_sent() == 0
    }

    /// Megabytes (10⁶ bytes) per second over the whole transfer.
    pub fn mb_per_s(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.bytes as f64 / s / 1e6
        } else {
            0.0
        }
    }

    /// Adds what another lane of the same transfer did: its bytes and, if the report has
    /// none yet, its error.
    pub(crate) fn add_lane(&mut self, lane: SendReport) {
        self.bytes += lane.bytes;
        self.bytes_resumed += lane.bytes_resumed;
        self.direct_files += lane.direct_files;
        self.lanes += lane.lanes;
        self.devices.extend(lane.devices);
        self.warnings.extend(lane.warnings);
        self.elapsed = self.elapsed.max(lane.elapsed);
        if self.error.is_none() {
            self.error = lane.error;
        }
    }
}

/// A per-file callback: runs on the connection's thread after each file's outcome is known.
pub type FileCallback = Arc<dyn Fn(&FileReport) + Send + Sync>;

/// Work for the reader thread.
enum ReadJob {
    /// A file (or a part of one) was accepted: open it, hash what is before `offset` (of
    /// the item), and, if nothing is left to read, give the digest at once.
    Open {
        file_id: u64,
        item: WorkItem,
        offset: u64,
        kind: DigestKind,
        /// Read it with `O_DIRECT` if it is large enough and its file system allows.
        direct: bool,
    },
    /// Fill `slot` with `len` bytes of `file_id` at `offset` (then digest them).
    Read {
        seq: u64,
        slot: Slot,
        file_id: u64,
        offset: u64,
        len: u32,
    },
    /// (`--checksum`) Digest the whole file of `entry` before it is offered (the engine
    /// keeps the item under `key`).
    Digest {
        key: u64,
        entry: SourceEntry,
        kind: DigestKind,
    },
}

/// What the reader did.
enum ReadDone {
    /// `Open` finished; `digest` when the file needs no reads.
    Opened {
        file_id: u64,
        result: Result<Option<Digest>, (AbortReason, String)>,
        /// It is read with `O_DIRECT`.
        direct: bool,
    },
    /// A read finished; `digest` after the file's last chunk.
    Read {
        seq: u64,
        slot: Slot,
        file_id: u64,
        result: Result<Option<Digest>, (AbortReason, String)>,
    },
    /// `Digest` finished.
    Digested {
        key: u64,
        result: Result<Digest, String>,
    },
}

/// An open source at the reader: a file, or the part of one that `start..end` covers.
struct Source {
    file: File,
    /// Read with `O_DIRECT` (reads rounded up to its alignment).
    direct: bool,
    entry: SourceEntry,
    start: u64,
    end: u64,
    digest: Digester,
}

/// The reader's state: the sources it has open.
#[derive(Default)]
struct Reader {
    sources: HashMap<u64, Source>,
}

/// The reader's hand-off: jobs in, results back (small ones run by the engine itself).
type ReaderIo = IoThread<Reader, ReadJob, ReadDone>;

/// File bytes a job of the reader moves (for its batches).
fn read_bytes(job: &ReadJob) -> u64 {
    match job {
        ReadJob::Read { len, .. } => u64::from(*len),
        ReadJob::Digest { entry, .. } => entry.size,
        ReadJob::Open { .. } => 0,
    }
}

/// Whether the engine may run `job` itself (see `io_thread`): a small file's open and its
/// reads; never a whole-file digest.
fn is_small_read(job: &ReadJob) -> bool {
    match job {
        ReadJob::Open { item, .. } => item.data_len() <= INLINE_MAX,
        ReadJob::Read { len, .. } => u64::from(*len) <= INLINE_MAX,
        ReadJob::Digest { .. } => false,
    }
}

fn run_read(reader: &mut Reader, job: ReadJob, out: &mut Vec<ReadDone>) {
    out.push(read_job(&mut reader.sources, job));
}

/// Serves one job of the reader.
fn read_job(sources: &mut HashMap<u64, Source>, job: ReadJob) -> ReadDone {
    {
        match job {
            ReadJob::Open {
                file_id,
                item,
                offset,
                kind,
                direct,
            } => {
                let mut went_direct = false;
                let result = open_source(&item, offset, kind, direct).map(|src| {
                    went_direct = src.direct;
                    if offset >= item.data_len() {
                        Some(src.digest.finish())
                    } else {
                        sources.insert(file_id, src);
                        None
                    }
                });
                ReadDone::Opened {
                    file_id,
                    result,
                    direct: went_direct,
                }
            }
            ReadJob::Read {
                seq,
                mut slot,
                file_id,
                offset,
                len,
            } => {
                let result = match sources.get_mut(&file_id) {
                    None => Err((
                        AbortReason::READ_ERROR,
                        "the file could not be opened".into(),
                    )),
                    Some(src) => read_chunk(src, &mut slot, offset, len),
                };
                if !matches!(result, Ok(None)) {
                    sources.remove(&file_id);
                }
                ReadDone::Read {
                    seq,
                    slot,
                    file_id,
                    result,
                }
            }
            ReadJob::Digest { key, entry, kind } => {
                let result = digest_whole(&entry, kind);
                ReadDone::Digested { key, result }
            }
        }
    }
}

/// The digest of `entry`'s whole file, which must still be what the walk found.
fn digest_whole(entry: &SourceEntry, kind: DigestKind) -> Result<Digest, String> {
    let file = open_entry(entry).map_err(|e| e.to_string())?;
    if !entry.is_as_found(&file.metadata().map_err(|e| e.to_string())?) {
        return Err("it changed since it was found".into());
    }
    let mut digest = Digester::new(kind);
    digest
        .update_from_file(&file, entry.size)
        .map_err(|e| e.to_string())?;
    Ok(digest.finish())
}

/// Opens `entry`'s file for reading, never through a link put there since the walk.
fn open_entry(entry: &SourceEntry) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        // (std adds O_CLOEXEC itself.)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&entry.path)
}

fn open_source(
    item: &WorkItem,
    offset: u64,
    kind: DigestKind,
    direct: bool,
) -> Result<Source, (AbortReason, String)> {
    let entry = &item.entry;
    let read_err = |e: io::Error| (AbortReason::READ_ERROR, e.to_string());
    let file = open_entry(entry).map_err(read_err)?;
    // A file sent whole and with data is checked once, after its last read (kind, size,
    // mtime): one `fstat` per small file instead of two. A resumed or empty one is checked
    // now, before its prefix is hashed or its digest given.
    if offset > 0 || entry.size == 0 {
        let meta = file.metadata().map_err(read_err)?;
        if !meta.is_file() || meta.len() != entry.size {
            return Err((
                AbortReason::SOURCE_CHANGED,
                format!("size changed from {} to {}", entry.size, meta.len()),
            ));
        }
    }
    let mut digest = Digester::new(kind);
    // A resumed file's digest still covers the whole file (or part): hash what is not sent.
    let start = item.start();
    digest
        .update_from_range(&file, start, offset)
        .map_err(read_err)?;
    // Only once the prefix is hashed (through the page cache, into an unaligned buffer).
    let direct = direct
        && item.data_len().saturating_sub(offset) >= direct::DIRECT_MIN_SIZE
        && direct::enable(&file);
    Ok(Source {
        file,
        direct,
        entry: entry.clone(),
        start,
        end: start + item.data_len(),
        digest,
    })
}

fn read_chunk(
    src: &mut Source,
    slot: &mut Slot,
    offset: u64,
    len: u32,
) -> Result<Option<Digest>, (AbortReason, String)> {
    let at = src.start + offset;
    let align = if src.direct { direct::DIRECT_ALIGN } else { 1 };
    slot.fill_from(&src.file, at, len as usize, align)
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => (
                AbortReason::SOURCE_CHANGED,
                "the file shrank while being sent".into(),
            ),
            _ => (AbortReason::READ_ERROR, e.to_string()),
        })?;
    if at + u64::from(len) < src.end {
        src.digest.update(slot.bytes());
        return Ok(None);
    }
    src.digest.update_last(slot.bytes());
    // The last chunk: the file must still be what the header said.
    let meta = src
        .file
        .metadata()
        .map_err(|e| (AbortReason::READ_ERROR, e.to_string()))?;
    if !src.entry.is_as_found(&meta) {
        return Err((
            AbortReason::SOURCE_CHANGED,
            "the file changed while being sent".into(),
        ));
    }
    Ok(Some(src.digest.finish()))
}

/// What the engine knows of an offered file (until its outcome is known).
struct Offered {
    item: WorkItem,
    offset: u64,
    /// (sync) How the receiver's copy differed.
    changes: Changes,
}

/// An item ready to offer: its content digest computed when `--checksum` needs one.
struct Ready {
    item: WorkItem,
    content: Option<Digest>,
}

/// Files being digested ahead of their offer (`--checksum`), at most.
const DIGESTS_AHEAD: usize = 16;

/// Settings of one lane of a send.
pub(crate) struct SendSetup {
    /// The transfer's work, shared by its lanes.
    pub(crate) work: Arc<Work>,
    /// This lane's number (0 for the first).
    pub(crate) lane: usize,
    pub(crate) digest: DigestKind,
    /// Read large files with `O_DIRECT` (`--direct`).
    pub(crate) direct: bool,
    pub(crate) idle_timeout: Duration,
    pub(crate) progress: Arc<Progress>,
    pub(crate) stop: Arc<Stop>,
    /// Offer entries to sync (`--sync`): the receiver answers for what it has.
    pub(crate) sync: Option<SyncOptions>,
    /// Links were asked for (`--links`): say so if the receiver does not take them.
    pub(crate) links: bool,
}

/// Runs one lane of a send over `link` (already connected, `neg` agreed, `slots` the data
/// slots) until its session ends; returns the lane's report (bytes and error: the entries'
/// outcomes go to the shared [`Work`]).
pub(crate) fn run<L: SendLink>(
    link: L,
    neg: Negotiated,
    slots: Vec<Slot>,
    setup: SendSetup,
    started: Instant,
) -> SendReport {
    let mut report = SendReport {
        negotiated: Some(neg),
        lanes: 1,
        ..SendReport::empty()
    };
    let clock = Clock::start();
    let config = Config {
        idle_timeout: Some(setup.idle_timeout),
        name_hash_key: crate::key::nonce().unwrap_or([7; 16]),
    };
    let machine = match Sender::new(
        neg,
        config,
        VecStorage::new(neg.max_open_files),
        clock.now(),
    ) {
        Ok(m) => m,
        Err(e) => {
            report.error = Some(format!("could not start the protocol: {e}"));
            return report;
        }
    };
    if setup.sync.is_some() && !neg.features.contains(Features::SYNC) {
        // Sending everything instead would not be what was asked (a dry run least of all).
        report.error = Some("the receiver does not offer sync (SYNC)".into());
        return report;
    }
    let deletes = setup.sync.is_some_and(|s| s.delete);
    if deletes && !neg.features.contains(Features::DELETE) && setup.lane == 0 {
        report.warnings.push(
            "the receiver refuses deletes (recv --no-delete, or no-clobber): nothing was \
             deleted there"
                .into(),
        );
    }
    if setup.links && !neg.features.contains(Features::LINKS) && setup.lane == 0 {
        report
            .warnings
            .push("the receiver does not take symbolic links (LINKS): links were skipped".into());
    }
    let io: ReaderIo = IoThread::new(Reader::default(), Some(link.waker()));
    setup.stop.register(link.waker());
    let reader_thread = {
        let shared = io.shared();
        std::thread::Builder::new()
            .name("rdmaft-reader".into())
            .spawn(move || io_thread::serve(&shared, run_read, read_bytes, |_| ()))
    };
    let reader_thread = match reader_thread {
        Ok(t) => t,
        Err(e) => {
            report.error = Some(format!("could not start the reader thread: {e}"));
            return report;
        }
    };
    let mut engine = Engine {
        link,
        machine,
        clock,
        slots: slots.into_iter().map(Some).collect(),
        io,
        ctrl: CtrlScratch::default(),
        closing: false,
        held: None,
        deletes: deletes && neg.features.contains(Features::DELETE),
        links: neg.features.contains(Features::LINKS),
        ready: VecDeque::new(),
        digesting: HashMap::new(),
        gave_up: HashMap::new(),
        next_digest_key: 0,
        offered: HashMap::new(),
        next_id: 1,
        digest: pick_digest(setup.digest, &neg),
        setup,
        report,
        chunk_bytes: HashMap::new(),
        cancelled: false,
    };
    let outcome = engine.run();
    // What the last round made (an abort's message above all) leaves before the reader
    // is joined, which may wait for a slow read.
    let _ = engine.link.flush();
    engine.io.close();
    engine.io.close_results();
    let _ = reader_thread.join();
    engine.finish(outcome, started)
}

/// The digest to use: the asked one if agreed, else none.
fn pick_digest(asked: DigestKind, neg: &Negotiated) -> DigestKind {
    if asked.is_agreed(neg.features) {
        asked
    } else {
        DigestKind::None
    }
}

struct Engine<L: SendLink> {
    link: L,
    machine: Sender<VecStorage>,
    clock: Clock,
    /// Slot `i`, when the engine holds it (the reader has the others).
    slots: Vec<Option<Slot>>,
    /// The hand-off to the reader thread.
    io: ReaderIo,
    /// The buffer control messages are encoded into (see `drain`).
    ctrl: CtrlScratch,
    /// The session's goodbye was started: the work has nothing more for this lane.
    closing: bool,
    /// An item taken but not offered yet (its name is still open, or no room).
    held: Option<Ready>,
    /// Directories are offered with `DELETE` (asked for and agreed).
    deletes: bool,
    /// Links are offered as links (`LINKS` agreed).
    links: bool,
    /// Items digested (`--checksum`) and waiting for their offer, in order.
    ready: VecDeque<Ready>,
    /// Items at the reader being digested, by key.
    digesting: HashMap<u64, WorkItem>,
    next_digest_key: u64,
    offered: HashMap<u64, Offered>,
    /// Why the reader gave up on a file it was sending (unreadable, or changed since the
    /// walk), for its report: its result says only that the sender aborted it.
    gave_up: HashMap<u64, String>,
    next_id: u64,
    digest: DigestKind,
    setup: SendSetup,
    report: SendReport,
    /// Chunk lengths of posted writes, by sequence number, for the byte count.
    chunk_bytes: HashMap<u64, u32>,
    cancelled: bool,
}

impl<L: SendLink> Round for Engine<L> {
    type Completion = SendCompletion;

    fn start_round(&mut self) -> Result<(), Error> {
        if self.setup.stop.is_raised() && !self.cancelled {
            self.cancelled = true;
            self.machine.abort(self.clock.now(), ErrorCode::CANCELLED);
        }
        self.offer_files()
    }

    fn drain(&mut self) -> Result<(), Error> {
        let mut buf = self.ctrl.take();
        let r = self.drain_into(&mut buf);
        self.ctrl.put(buf);
        r
    }

    fn is_ended(&self) -> bool {
        self.machine.is_ended()
    }

    fn poll(&mut self, into: &mut Vec<SendCompletion>) -> Result<(), Error> {
        self.link.poll(into)
    }

    fn set_corked(&mut self, corked: bool) {
        self.machine.set_corked(corked);
    }

    fn completion(&mut self, c: SendCompletion) -> Result<(), Error> {
        self.on_completion(c)
    }

    fn io_result(&mut self) -> Result<bool, Error> {
        match self.io.next_result() {
            Some(d) => self.read_done(d).map(|()| true),
            None => Ok(false),
        }
    }

    /// Results made room in the open-file window: offer what fits, in this round's batch.
    fn end_round(&mut self) -> Result<(), Error> {
        self.offer_files()
    }

    fn tick(&mut self) {
        self.machine.handle_timeout(self.clock.now());
    }

    fn link_lost(&mut self) -> Option<Error> {
        (self.link.is_down() && !self.machine.is_ended()).then(|| Error::ConnectionLost {
            peer: self.link.peer(),
            detail: "the receiver disconnected".into(),
        })
    }

    fn hand_over(&mut self) -> Result<bool, Error> {
        // The round's writes leave before the reads this may run itself.
        self.link.flush()?;
        self.io
            .hand_over(is_small_read, run_read)
            .map_err(|_| Error::ThreadPanicked("reader"))
    }

    fn wait(&mut self) -> Result<(), Error> {
        let wait = self
            .machine
            .poll_timeout()
            .map_or(IDLE_WAIT, |t| self.clock.until(t).min(IDLE_WAIT));
        self.link.wait(wait)
    }
}

impl<L: SendLink> Engine<L> {
    fn run(&mut self) -> Result<(), Error> {
        round::run(self)
    }

    /// Offers as many files as the machine takes now (with `--checksum`, each regular file
    /// once the reader has its digest).
    fn offer_files(&mut self) -> Result<(), Error> {
        while !self.closing && self.machine.can_start_file() {
            let next = match self.held.take().or_else(|| self.ready.pop_front()) {
                Some(next) => next,
                None if self.digesting.len() >= DIGESTS_AHEAD => return Ok(()),
                None => match self.setup.work.next(self.setup.lane, &self.link.waker()) {
                    Next::Item(item) if self.needs_digest(&item) => {
                        let key = self.next_digest_key;
                        self.next_digest_key += 1;
                        let (entry, kind) = (item.entry.clone(), self.digest);
                        self.io.stage(ReadJob::Digest { key, entry, kind });
                        self.digesting.insert(key, item);
                        continue;
                    }
                    Next::Item(item) => Ready {
                        item,
                        content: None,
                    },
                    Next::Wait => return Ok(()),
                    // Digests still to come have files to offer.
                    Next::Done if !self.digesting.is_empty() => return Ok(()),
                    Next::Done => {
                        self.closing = true;
                        let _ = self.machine.close(self.clock.now());
                        return Ok(());
                    }
                },
            };
            if !self.offer(next)? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Whether this is a dry run.
    fn dry_run(&self) -> bool {
        self.setup.sync.is_some_and(|s| s.dry_run)
    }

    /// Whether `item` is offered with its content digest (`--checksum`: a whole regular
    /// file, with a digest agreed).
    fn needs_digest(&self, item: &WorkItem) -> bool {
        self.setup.sync.is_some_and(|s| s.checksum)
            && item.entry.kind == EntryKind::File
            && item.part.is_none()
            && self.digest != DigestKind::None
    }

    /// Offers one item; `false` when no more can be offered now (it is held for later).
    fn offer(&mut self, next: Ready) -> Result<bool, Error> {
        let id = self.next_id;
        let entry = &next.item.entry;
        if entry.kind == EntryKind::Symlink && !self.links {
            // Sent as a link only where the receiver takes links; else skipped, as without
            // `--links` (the warning at the start says why).
            let why = "symbolic link (the receiver does not take links)".to_owned();
            self.setup
                .work
                .resolved(next.item, FileOutcome::Ignored(why).into());
            return Ok(true);
        }
        let delete = self.deletes && entry.kind == EntryKind::Directory && next.item.prune;
        let sync = self.setup.sync.map(|s| SyncCheck {
            content: next.content,
            dry_run: s.dry_run,
            delete,
        });
        let info = FileInfo {
            file_id: id,
            kind: entry.kind,
            // A link's size is its target's length (its data is in the header).
            size: match entry.kind {
                EntryKind::Symlink => entry.target.len() as u64,
                _ => entry.size,
            },
            mtime_sec: entry.mtime_sec,
            mtime_nsec: entry.mtime_nsec,
            mode: entry.mode,
            part: next.item.part,
            sync,
            name: &entry.name,
            target: &entry.target,
        };
        match self.machine.start_file(self.clock.now(), &info) {
            Ok(()) => {
                self.next_id += 1;
                let offered = Offered {
                    item: next.item,
                    offset: 0,
                    changes: Changes::empty(),
                };
                self.offered.insert(id, offered);
                // Headers gather while the batch has room; a full one goes now.
                if !self.machine.can_start_file() {
                    self.drain()?;
                }
                Ok(true)
            }
            // A long name that does not fit the batch being filled: send it, then retry.
            Err(rdmaft_protocol::Error::Usage(UsageError::OutputsNotDrained)) => {
                self.held = Some(next);
                let corked = self.machine.set_corked(false);
                self.drain()?;
                self.machine.set_corked(corked);
                Ok(self.machine.can_start_file())
            }
            // Still open under that name (or its directory's contents are): later.
            Err(rdmaft_protocol::Error::Usage(
                UsageError::NameConflict | UsageError::NameTableFull,
            )) => {
                self.held = Some(next);
                Ok(false)
            }
            Err(e) => {
                // Taken from the work, so given back as ended: other lanes wait for it.
                self.setup
                    .work
                    .resolved(next.item, FileOutcome::Unfinished.into());
                Err(Error::invalid("start_file", e.to_string()))
            }
        }
    }

    fn on_completion(&mut self, c: SendCompletion) -> Result<(), Error> {
        let now = self.clock.now();
        match c {
            SendCompletion::Message(bytes, len) => {
                match self.machine.handle_control(now, &bytes[..len]) {
                    // A violation or a closed session: the machine says so in its events.
                    Ok(()) | Err(rdmaft_protocol::Error::Violation(_)) => Ok(()),
                    Err(rdmaft_protocol::Error::Closed) => Ok(()),
                    Err(e) => Err(Error::invalid("handle_control", e.to_string())),
                }
            }
            SendCompletion::ChunkDone(seq) => {
                if let Some(len) = self.chunk_bytes.remove(&seq) {
                    self.report.bytes += u64::from(len);
                    self.setup
                        .progress
                        .bytes_done
                        .fetch_add(u64::from(len), Ordering::Relaxed);
                }
                match self.machine.handle_write_completed(now, seq) {
                    Ok(()) | Err(rdmaft_protocol::Error::Closed) => Ok(()),
                    Err(e) => Err(Error::invalid("handle_write_completed", e.to_string())),
                }
            }
            SendCompletion::Sent => Ok(()),
        }
    }

    fn read_done(&mut self, d: ReadDone) -> Result<(), Error> {
        let now = self.clock.now();
        match d {
            ReadDone::Opened {
                file_id,
                result,
                direct,
            } => {
                self.report.direct_files += u64::from(direct);
                match result {
                    Ok(Some(digest)) => self.finish_file(file_id, digest),
                    Ok(None) => Ok(()),
                    Err((reason, detail)) => self.give_up(file_id, reason, &detail),
                }
            }
            ReadDone::Read {
                seq,
                slot,
                file_id,
                result,
            } => {
                let i = slot.index() as usize;
                self.slots[i] = Some(slot);
                match self.machine.data_ready(now, seq) {
                    Ok(()) | Err(rdmaft_protocol::Error::Closed) => {}
                    Err(e) => return Err(Error::invalid("data_ready", e.to_string())),
                }
                match result {
                    Ok(Some(digest)) => self.finish_file(file_id, digest),
                    Ok(None) => Ok(()),
                    Err((reason, detail)) => self.give_up(file_id, reason, &detail),
                }
            }
            ReadDone::Digested { key, result } => {
                let Some(item) = self.digesting.remove(&key) else {
                    return Ok(());
                };
                match result {
                    Ok(digest) => self.ready.push_back(Ready {
                        item,
                        content: Some(digest),
                    }),
                    Err(e) => {
                        let outcome = FileOutcome::Skipped(format!("unreadable: {e}"));
                        self.setup.work.resolved(item, outcome.into());
                    }
                }
                Ok(())
            }
        }
    }

    fn finish_file(&mut self, file_id: u64, digest: Digest) -> Result<(), Error> {
        match self.machine.finish_file(self.clock.now(), file_id, digest) {
            // Aborted meanwhile (by the receiver's cancel): nothing to finish.
            Ok(()) | Err(rdmaft_protocol::Error::Closed) => Ok(()),
            Err(rdmaft_protocol::Error::Usage(UsageError::UnknownFile)) => Ok(()),
            Err(e) => Err(Error::invalid("finish_file", e.to_string())),
        }
    }

    /// The reader could not go on with `file_id`: the file is aborted, and reported as not
    /// sent, with why (not as a failure at the receiver).
    fn give_up(&mut self, file_id: u64, reason: AbortReason, detail: &str) -> Result<(), Error> {
        // The first cause: reads queued behind a failed one fail for want of the file.
        self.gave_up
            .entry(file_id)
            .or_insert_with(|| format!("{reason}: {detail}"));
        self.abort_file(file_id, reason)
    }

    fn abort_file(&mut self, file_id: u64, reason: AbortReason) -> Result<(), Error> {
        match self.machine.abort_file(self.clock.now(), file_id, reason) {
            Ok(()) | Err(rdmaft_protocol::Error::Closed) => Ok(()),
            // Already aborted, or its end was sent: its result tells the rest.
            Err(rdmaft_protocol::Error::Usage(UsageError::UnknownFile)) => Ok(()),
            Err(e) => Err(Error::invalid("abort_file", e.to_string())),
        }
    }

    /// Drains the machine's outputs; stops early (keeping the output) when the send queue is
    /// full.
    fn drain_into(&mut self, buf: &mut CtrlBuf) -> Result<(), Error> {
        let now = self.clock.now();
        loop {
            if self.link.send_room() == 0 {
                return Ok(());
            }
            let Some(out) = self.machine.poll_output(now, buf) else {
                return Ok(());
            };
            match out {
                SenderOutput::Control(c) => self.link.post_control(&c, &buf[..c.len])?,
                SenderOutput::Ack(imm) => self.link.post_ack(imm)?,
                SenderOutput::Read(r) => {
                    let slot = self.slots[r.slot as usize].take().ok_or_else(|| {
                        Error::invalid("engine", format!("slot {} is not free", r.slot))
                    })?;
                    let job = ReadJob::Read {
                        seq: r.seq,
                        slot,
                        file_id: r.file_id,
                        offset: r.file_offset,
                        len: r.len,
                    };
                    self.io.stage(job);
                }
                SenderOutput::Write(w) => {
                    let slot = self.slots[w.slot as usize].as_ref().ok_or_else(|| {
                        Error::invalid("engine", format!("slot {} is at the reader", w.slot))
                    })?;
                    self.link.post_chunk(&w, slot)?;
                    self.chunk_bytes.insert(w.seq, w.len);
                }
                SenderOutput::Event(e) => self.event(e)?,
            }
        }
    }

    fn event(&mut self, e: SenderEvent) -> Result<(), Error> {
        match e {
            SenderEvent::FileAccepted {
                file_id,
                offset,
                changes,
            } => {
                let Some(f) = self.offered.get_mut(&file_id) else {
                    return Ok(());
                };
                f.offset = offset;
                f.changes = changes;
                self.report.bytes_resumed += offset;
                self.setup
                    .progress
                    .bytes_done
                    .fetch_add(offset, Ordering::Relaxed);
                if f.item.entry.kind == EntryKind::File {
                    let job = ReadJob::Open {
                        file_id,
                        item: f.item.clone(),
                        offset,
                        kind: self.digest,
                        direct: self.setup.direct,
                    };
                    self.io.stage(job);
                }
                Ok(())
            }
            SenderEvent::FileRejected { file_id, reason } => {
                self.resolve(file_id, FileOutcome::Rejected(reason));
                Ok(())
            }
            SenderEvent::FileInSync { file_id, changes } => {
                self.resolve(file_id, FileOutcome::InSync(changes));
                Ok(())
            }
            SenderEvent::FileWouldSend { file_id, changes } => {
                self.resolve(file_id, FileOutcome::WouldSend(changes));
                Ok(())
            }
            SenderEvent::DirectoryPruned {
                file_id,
                changes,
                deleted,
            } => {
                let Some(f) = self.offered.remove(&file_id) else {
                    return Ok(());
                };
                // As a directory entry without DELETE: made there or given its metadata
                // (sent), else in sync; a dry run would make a missing one.
                let outcome = match changes {
                    c if c.is_empty() => FileOutcome::InSync(c),
                    _ if !self.dry_run() => FileOutcome::Sent,
                    c if c.contains(Changes::NEW) => FileOutcome::WouldSend(c),
                    c => FileOutcome::InSync(c),
                };
                let end = Ended {
                    outcome,
                    changes,
                    deleted,
                };
                self.setup.work.resolved(f.item, end);
                Ok(())
            }
            SenderEvent::FileCancelled { .. } => Ok(()),
            SenderEvent::FileDone { file_id, status } => {
                let gave_up = self.gave_up.remove(&file_id);
                let outcome = match gave_up {
                    _ if status.is_ok() => FileOutcome::Sent,
                    Some(why) => FileOutcome::Skipped(why),
                    None => FileOutcome::Failed(status),
                };
                self.resolve(file_id, outcome);
                Ok(())
            }
            SenderEvent::Closed => Ok(()),
            SenderEvent::Failed(f) => {
                // The first cause stays: a local abort after an error is only its echo.
                let cancelled = self.cancelled;
                self.report
                    .error
                    .get_or_insert_with(|| describe_failure(&f, cancelled));
                Ok(())
            }
        }
    }

    fn resolve(&mut self, file_id: u64, outcome: FileOutcome) {
        let Some(f) = self.offered.remove(&file_id) else {
            return;
        };
        let end = Ended {
            outcome,
            changes: f.changes,
            deleted: 0,
        };
        self.setup.work.resolved(f.item, end);
    }

    /// Closes the connection (after the goodbyes, or to end a failed session) and waits a
    /// little for the peer's confirmation and the flush of what was posted.
    fn finish(mut self, outcome: Result<(), Error>, started: Instant) -> SendReport {
        if let Err(e) = outcome {
            self.report.error.get_or_insert(e.to_string());
            // Best effort: tell the receiver why.
            if !self.machine.is_ended() {
                self.machine
                    .abort(self.clock.now(), ErrorCode::LOCAL_FAILURE);
                let _ = self.drain();
            }
        }
        let deadline = Instant::now() + CLOSE_GRACE;
        // What was posted (an error message above all) goes out before the disconnect.
        let mut c = Vec::new();
        while !self.link.is_idle() && !self.link.is_down() && Instant::now() < deadline {
            c.clear();
            if self.link.poll(&mut c).is_err() {
                break;
            }
            let _ = self.link.wait(Duration::from_millis(20));
        }
        self.link.close();
        while !self.link.is_down() && Instant::now() < deadline {
            c.clear();
            if self.link.poll(&mut c).is_err() {
                break;
            }
            let _ = self.link.wait(Duration::from_millis(20));
        }
        // Items taken but never resolved: they end unfinished, and are told so.
        let mut unfinished: Vec<_> = self.offered.drain().map(|(id, f)| (id, f.item)).collect();
        unfinished.sort_unstable_by_key(|(id, _)| *id);
        let waiting = self.held.take().into_iter().chain(self.ready.drain(..));
        unfinished.extend(waiting.map(|r| (u64::MAX, r.item)));
        // Items the reader was digesting when the session ended.
        unfinished.extend(self.digesting.drain().map(|(_, item)| (u64::MAX, item)));
        for (_, item) in unfinished {
            self.setup
                .work
                .resolved(item, FileOutcome::Unfinished.into());
        }
        self.report.elapsed = started.elapsed();
        self.report
    }
}

fn describe_failure(f: &Failure, cancelled: bool) -> String {
    match f {
        Failure::Aborted(ErrorCode::CANCELLED) if cancelled => "cancelled".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counts' sums take each kind once: what ended well unsent, what did not arrive.
    #[test]
    fn counts_add_up() {
        let c = SendCounts {
            sent: 1,
            rejected: 2,
            failed: 3,
            skipped: 4,
            unfinished: 5,
            ignored: 6,
            up_to_date: 7,
            would_send: 8,
            deleted: 100,
        };
        assert_eq!(c.ok_unsent(), 6 + 7 + 8);
        assert_eq!(c.total(), 36, "every entry, deletions not among them");
        assert_eq!(c.not_sent(), 2 + 3 + 4 + 5);
    }

    /// The lanes' reports add up: bytes, resumed bytes, direct files, lanes and devices
    /// summed, the longest time, the first error.
    #[test]
    fn lane_reports_add_up() {
        let lane = |bytes, resumed, direct, secs, error: Option<&str>| {
            let mut r = SendReport::empty();
            r.bytes = bytes;
            r.bytes_resumed = resumed;
            r.direct_files = direct;
            r.lanes = 1;
            r.devices = vec![format!("dev{bytes}")];
            r.elapsed = Duration::from_secs(secs);
            r.error = error.map(str::to_owned);
            r.warnings = vec![format!("warned by {bytes}")];
            r
        };
        // Numbers whose sums differ from their products.
        let mut total = lane(10, 1, 1, 3, None);
        total.add_lane(lane(20, 2, 2, 5, Some("first")));
        total.add_lane(lane(30, 4, 0, 4, Some("second")));
        assert_eq!((total.bytes, total.bytes_resumed), (60, 7));
        assert_eq!((total.direct_files, total.lanes), (3, 3));
        assert_eq!(total.devices, ["dev10", "dev20", "dev30"]);
        assert_eq!(total.elapsed, Duration::from_secs(5));
        assert_eq!(total.error.as_deref(), Some("first"));
        assert_eq!(
            total.warnings,
            ["warned by 10", "warned by 20", "warned by 30"]
        );
    }

    fn scratch(name: &str) -> PathBuf {
        crate::fs::scratch_dir("send", name)
    }

    /// The walk's entry for the file `f` of `d`, of `size` bytes.
    fn entry(d: &std::path::Path, size: u64) -> SourceEntry {
        SourceEntry {
            path: d.join("f"),
            name: "f".into(),
            kind: EntryKind::File,
            size,
            mode: 0o644,
            mtime_sec: 0,
            mtime_nsec: 0,
            target: Vec::new(),
        }
    }

    /// A file is opened where the walk found it, never through a link put there since.
    #[test]
    fn a_link_swapped_in_after_the_walk_is_not_followed() {
        let d = scratch("open");
        std::fs::write(d.join("secret"), b"not to be sent").unwrap();
        std::os::unix::fs::symlink(d.join("secret"), d.join("f")).unwrap();
        let err = open_entry(&entry(&d, 14)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    fn opened(d: &std::path::Path, size: u64, offset: u64) -> Result<Source, AbortReason> {
        let item = WorkItem::for_test(entry(d, size), None);
        open_source(&item, offset, DigestKind::Xxh3_128, false).map_err(|(reason, _)| reason)
    }

    /// A file whose size changed since the walk is refused when it is opened if it is
    /// resumed or was empty (its prefix or its digest would be of other bytes), and after
    /// its last read otherwise (one `fstat` per file).
    #[test]
    fn a_file_changed_since_the_walk_is_refused_once_and_in_time() {
        let d = scratch("changed");
        std::fs::write(d.join("f"), [1u8; 12]).unwrap();
        assert_eq!(
            opened(&d, 10, 3).err(),
            Some(AbortReason::SOURCE_CHANGED),
            "resumed"
        );
        assert_eq!(
            opened(&d, 0, 0).err(),
            Some(AbortReason::SOURCE_CHANGED),
            "was empty"
        );
        let mut src = opened(&d, 10, 0).expect("checked after the last read only");
        let mut slot = crate::verbs::SlotArea::plain(4096, 1)
            .unwrap()
            .split()
            .remove(0);
        let late = read_chunk(&mut src, &mut slot, 0, 10).map_err(|(reason, _)| reason);
        assert_eq!(late.err(), Some(AbortReason::SOURCE_CHANGED), "grew");
        // A file that shrank under its reads.
        let mut src = opened(&d, 12, 0).unwrap();
        std::fs::write(d.join("f"), [1u8; 5]).unwrap();
        let short = read_chunk(&mut src, &mut slot, 0, 12).map_err(|(reason, _)| reason);
        assert_eq!(short.err(), Some(AbortReason::SOURCE_CHANGED), "shrank");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The engine runs a small file's open and reads itself, never a whole-file digest;
    /// a read moves its length of file bytes, a digest the file's size, an open none.
    #[test]
    fn small_reads_run_on_the_engine_and_count_their_bytes() {
        let d = std::path::Path::new("/nonexistent");
        let open = |size| ReadJob::Open {
            file_id: 1,
            item: WorkItem::for_test(entry(d, size), None),
            offset: 0,
            kind: DigestKind::Xxh3_128,
            direct: false,
        };
        let mut slots = crate::verbs::SlotArea::plain(4096, 2).unwrap().split();
        let mut read = |len| ReadJob::Read {
            seq: 0,
            slot: slots.pop().unwrap(),
            file_id: 1,
            offset: 0,
            len,
        };
        let (small, large) = (read(INLINE_MAX as u32), read(INLINE_MAX as u32 + 1));
        let digest = ReadJob::Digest {
            key: 1,
            entry: entry(d, 7),
            kind: DigestKind::Xxh3_128,
        };
        assert!(is_small_read(&open(4096)), "a 4 KiB file");
        assert!(is_small_read(&open(INLINE_MAX)));
        assert!(!is_small_read(&open(INLINE_MAX + 1)));
        assert!(is_small_read(&small));
        assert!(!is_small_read(&large));
        assert!(!is_small_read(&digest));
        assert_eq!(read_bytes(&small), INLINE_MAX);
        assert_eq!(read_bytes(&digest), 7);
        assert_eq!(read_bytes(&open(5)), 0);
    }

    /// A cancel the user asked for is told as such; any other failure in its own words.
    #[test]
    fn a_failure_is_told_in_its_own_words_and_a_cancel_as_a_cancel() {
        let cancel = Failure::Aborted(ErrorCode::CANCELLED);
        assert_eq!(describe_failure(&cancel, true), "cancelled");
        assert_eq!(describe_failure(&cancel, false), cancel.to_string());
        assert_eq!(
            describe_failure(&Failure::TimedOut, true),
            Failure::TimedOut.to_string()
        );
    }

    /// Throughput over the whole transfer; none for a transfer that took no time.
    #[test]
    fn megabytes_per_second() {
        let mut r = SendReport::empty();
        r.bytes = 5_000_000;
        r.elapsed = Duration::from_secs(2);
        assert_eq!(r.mb_per_s(), 2.5);
        r.elapsed = Duration::ZERO;
        assert_eq!(r.mb_per_s(), 0.0);
    }
}
