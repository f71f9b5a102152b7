//! The receiver's engine for one connection: the connection thread's loop (completions →
//! state machine → answers, credits, results) and the writer thread beside it (the file
//! layer: temporary file, write from the ring, digest, verify, publish).

use super::io_thread::{self, IoThread, INLINE_MAX};
use super::round::{self, CtrlScratch, Round};
use super::{Clock, RecvCompletion, RecvLink, Ring, CLOSE_GRACE, IDLE_WAIT};
use crate::digest::Digester;
use crate::fs::compare::{Compared, SyncEntry};
use crate::fs::dest::{Destination, Incoming as TempFile, Refusal};
use crate::fs::direct::{self, AlignedBuf};
use crate::fs::prune::OfferedNames;
use crate::fs::split::SplitFile;
use crate::groups::Group;
use crate::handoff::Stop;
use crate::permits::{Permit, Permits};
use crate::report::list_failure;
use crate::Error;
use rdmaft_protocol::{
    Changes, Config, CtrlBuf, Digest, DigestKind, EntryKind, ErrorCode, Failure, Features,
    FileAnswer, FileRejectReason, FileStatus, Incoming, Negotiated, Part, Receiver, ReceiverEvent,
    ReceiverOutput, SyncCheck, VecStorage,
};
use std::collections::HashMap;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a received entry ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceivedOutcome {
    /// Verified and published under its final name.
    Received,
    /// Refused when offered.
    Rejected(FileRejectReason),
    /// Not published: the status says why (digest mismatch, aborted by the sender, ...).
    Failed(FileStatus),
    /// The connection ended before the file did.
    Unfinished,
    /// (sync) Its data was here already: nothing moved; `Changes` is the metadata updated.
    InSync(Changes),
    /// (dry run) It would have been received, because of `Changes`; nothing changed.
    WouldReceive(Changes),
}

/// One entry a receiver dealt with (the receive callback's argument).
#[derive(Clone, Debug)]
pub struct ReceivedFile {
    /// The sender's address.
    pub peer: String,
    /// The entry's name, relative to the receive directory.
    pub name: String,
    /// Where it is (or would have been) on this host.
    pub path: PathBuf,
    /// File or directory.
    pub kind: EntryKind,
    /// Its size.
    pub size: u64,
    /// How it ended.
    pub outcome: ReceivedOutcome,
    /// More about a failure, for humans.
    pub detail: Option<String>,
    /// (delete, a directory) Entries removed from it because the sender no longer has them
    /// (or, in a dry run, that would be), contents of directories included.
    pub deleted: u64,
}

impl ReceivedFile {
    /// Whether nothing went wrong: it arrived verified, was in sync already, or a dry run
    /// only listed it.
    pub fn is_ok(&self) -> bool {
        matches!(
            self.outcome,
            ReceivedOutcome::Received
                | ReceivedOutcome::InSync(_)
                | ReceivedOutcome::WouldReceive(_)
        )
    }
}

/// The receive callback: runs on the connection's thread for each entry, once.
pub type ReceiveCallback = Arc<dyn Fn(&ReceivedFile) + Send + Sync>;

/// How many entries of a connection ended each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceivedCounts {
    /// Verified and published.
    pub received: u64,
    /// Refused when offered.
    pub rejected: u64,
    /// Not published (digest mismatch, aborted, I/O error, ...).
    pub failed: u64,
    /// The connection ended before they did.
    pub unfinished: u64,
    /// (sync) In sync already: no data moved (their metadata may have been updated).
    pub up_to_date: u64,
    /// (dry run) Would have been received.
    pub would_receive: u64,
    /// (delete) Entries removed because the sender no longer has them (or, in a dry run,
    /// that would be), contents of directories included; not among the entries counted.
    pub deleted: u64,
}

impl ReceivedCounts {
    /// Every entry counted.
    pub fn total(&self) -> u64 {
        self.received + self.rejected + self.failed + self.unfinished + self.ok_without_data()
    }

    /// Entries that ended well with no data: in sync, or listed by a dry run.
    pub fn ok_without_data(&self) -> u64 {
        self.up_to_date + self.would_receive
    }

    fn count(&mut self, outcome: &ReceivedOutcome) {
        let n = match outcome {
            ReceivedOutcome::Received => &mut self.received,
            ReceivedOutcome::Rejected(_) => &mut self.rejected,
            ReceivedOutcome::Failed(_) => &mut self.failed,
            ReceivedOutcome::Unfinished => &mut self.unfinished,
            ReceivedOutcome::InSync(_) => &mut self.up_to_date,
            ReceivedOutcome::WouldReceive(_) => &mut self.would_receive,
        };
        *n += 1;
    }
}

/// What one connection did.
///
/// Counts and the first failures, not a record per entry (a sender may offer any number of
/// files); per-entry detail goes to [`ReceiverOptions::on_file`](crate::ReceiverOptions::on_file).
#[derive(Clone, Debug, Default)]
pub struct ConnectionReport {
    /// The sender's address (empty when unknown).
    pub peer: String,
    /// How many entries ended each way.
    pub counts: ReceivedCounts,
    /// The first entries that did not arrive verified, in the order they ended (at most
    /// [`MAX_LISTED_FAILURES`](crate::MAX_LISTED_FAILURES); the rest are only counted).
    pub failures: Vec<ReceivedFile>,
    /// Whether this was a real transfer: the sender got through the handshake and its key
    /// proof and offered an entry or ended its session cleanly (a port scan, a refused
    /// handshake or a wrong key is not).
    pub transferred: bool,
    /// The RDMA device the connection ran on (empty when unknown).
    pub device: String,
    /// Why it ended badly, if it did.
    pub error: Option<String>,
    /// Files written with `O_DIRECT` (with
    /// [`ReceiverOptions::direct`](crate::ReceiverOptions::direct)).
    pub direct_files: u64,
    /// Why the connection was refused before its session began, as a short label for logs
    /// and metrics: the handshake reject's name (`NOT_ALLOWED`, `NO_RESOURCES`, ... as
    /// [`RejectReason::name`](rdmaft_protocol::RejectReason::name)), or `HANDSHAKE_FAILED`
    /// (the handshake broke off: timeout, bad hello), `REQUEST_FAILED` (the request could
    /// not be taken), `SETUP_FAILED` (accepted, but the connection could not be set up).
    /// `None` once the session began.
    pub refusal: Option<&'static str>,
}

impl ConnectionReport {
    /// Whether the session ended cleanly and every entry arrived verified (or was in sync,
    /// or only listed by a dry run).
    pub fn all_ok(&self) -> bool {
        self.error.is_none()
            && self.counts.received + self.counts.ok_without_data() == self.counts.total()
    }

    /// Adds what another lane of the same transfer received (loopback tests: the lanes'
    /// reports as one).
    pub(crate) fn add_lane(&mut self, lane: ConnectionReport) {
        for (n, m) in [
            (&mut self.counts.received, lane.counts.received),
            (&mut self.counts.rejected, lane.counts.rejected),
            (&mut self.counts.failed, lane.counts.failed),
            (&mut self.counts.unfinished, lane.counts.unfinished),
            (&mut self.counts.up_to_date, lane.counts.up_to_date),
            (&mut self.counts.would_receive, lane.counts.would_receive),
            (&mut self.counts.deleted, lane.counts.deleted),
        ] {
            *n += m;
        }
        for f in lane.failures {
            list_failure(&mut self.failures, f);
        }
        self.transferred |= lane.transferred;
        self.direct_files += lane.direct_files;
        if self.error.is_none() {
            self.error = lane.error;
        }
    }

    /// A connection that ended before its session started, refused for `refusal`.
    pub(crate) fn refused(peer: String, refusal: &'static str, error: String) -> Self {
        ConnectionReport {
            peer,
            refusal: Some(refusal),
            error: Some(error),
            ..ConnectionReport::default()
        }
    }

    /// Counts `file` and, if it failed, lists it (within the bound).
    fn record(&mut self, file: &ReceivedFile) {
        self.counts.count(&file.outcome);
        if !file.is_ok() {
            list_failure(&mut self.failures, file.clone());
        }
    }
}

/// Work for the writer thread.
enum WriteJob {
    Offer(Offer),
    Chunk {
        seq: u64,
        file_id: u64,
        file_offset: u64,
        ring_offset: u64,
        len: u32,
    },
    Complete {
        file_id: u64,
        length: u64,
        digest: Digest,
    },
    Drop {
        file_id: u64,
    },
}

/// An entry offered to the writer.
struct Offer {
    file_id: u64,
    name: String,
    kind: EntryKind,
    size: u64,
    mode: u32,
    mtime: (i64, u32),
    part: Option<Part>,
    refusal: Option<FileRejectReason>,
    /// The header's sync request.
    sync: Option<SyncCheck>,
    /// A link's target (empty for other kinds).
    target: Vec<u8>,
}

/// What the writer did.
enum WriteDone {
    Answer {
        file_id: u64,
        answer: FileAnswer,
        detail: Option<String>,
    },
    Consumed(u64),
    /// Writing failed: ask the sender to stop this file.
    Cancel {
        file_id: u64,
        status: FileStatus,
    },
    /// A complete file's verdict.
    Verified {
        file_id: u64,
        status: FileStatus,
        detail: Option<String>,
        /// A part that verified while other parts of its file are still to come: the
        /// sender hears of it, the receiver's report and callback only of the whole file.
        quiet: bool,
    },
}

/// A file being written.
struct Target {
    temp: Option<TempFile>,
    /// For a part of a split file: the file its parts share, and which part this is.
    split: Option<(Arc<SplitFile>, Part)>,
    /// Its share of the receiver's open-file budget (a file, not a directory).
    _open: Option<Permit>,
    name: String,
    size: u64,
    /// Bytes of the file written so far, from its start (chunks arrive in order).
    written: u64,
    /// Bytes taken over from a kept partial file (the offset resumed from).
    resumed: u64,
    mode: u32,
    mtime: (i64, u32),
    digest: Digester,
    failed: Option<(FileStatus, String)>,
    /// Written with `O_DIRECT` (until its short last chunk, if any).
    direct: bool,
    /// A link's target: the link is made when its entry ends.
    link: Option<Vec<u8>>,
}

struct Writer {
    dest: Arc<Destination>,
    /// Files open across all of the receiver's connections.
    open_files: Arc<Permits>,
    ring: Arc<dyn Ring>,
    digest_kind: DigestKind,
    /// A chunk copied out of the ring; aligned for direct writes.
    buf: AlignedBuf,
    files: HashMap<u64, Target>,
    /// Write large files with `O_DIRECT` where the file system allows (`--direct`).
    direct: bool,
    /// Files that were.
    direct_files: u64,
    /// Resume was agreed: partial files are kept when a connection ends and taken over when
    /// the same file is offered again.
    resume: bool,
    /// The connection's transfer group (with `LANES`): where split files live.
    group: Option<Arc<Group>>,
    /// With DELETE: the names offered per directory.
    names: Option<Arc<OfferedNames>>,
    /// File data written, across the receiver's connections.
    written: Arc<std::sync::atomic::AtomicU64>,
}

impl Writer {
    fn job(&mut self, job: WriteJob) -> Vec<WriteDone> {
        match job {
            WriteJob::Offer(offer) => vec![self.offer_synced(offer)],
            WriteJob::Chunk {
                seq,
                file_id,
                file_offset,
                ring_offset,
                len,
            } => {
                let mut out = Vec::new();
                if let Some(status) = self.chunk(file_id, file_offset, ring_offset, len) {
                    out.push(WriteDone::Cancel { file_id, status });
                }
                out.push(WriteDone::Consumed(seq));
                out
            }
            WriteJob::Complete {
                file_id,
                length,
                digest,
            } => {
                let (status, detail, quiet) = self.complete(file_id, length, digest);
                vec![WriteDone::Verified {
                    file_id,
                    status,
                    detail,
                    quiet,
                }]
            }
            WriteJob::Drop { file_id } => {
                if let Some(t) = self.files.remove(&file_id) {
                    self.drop_target(t, "dropped");
                }
                Vec::new()
            }
        }
    }

    /// An offer with its sync request: compared with what is here first (unless refused),
    /// and answered in sync, as a dry run's listing, or taken on with the changes said.
    fn offer_synced(&mut self, offer: Offer) -> WriteDone {
        let Some(sync) = offer.sync.filter(|_| offer.refusal.is_none()) else {
            return self.offer(offer);
        };
        if sync.delete {
            return self.offer_pruned(offer, sync);
        }
        let entry = SyncEntry {
            name: &offer.name,
            kind: offer.kind,
            size: offer.size,
            mode: offer.mode,
            mtime: offer.mtime,
            content: sync.content,
            dry_run: sync.dry_run,
            target: &offer.target,
        };
        let answer = match self.dest.compare(&entry) {
            Ok(Compared::InSync(changes)) => FileAnswer::InSync(changes),
            Ok(Compared::Differs(changes)) if sync.dry_run => FileAnswer::WouldSend(changes),
            Ok(Compared::Differs(changes)) => {
                let file_id = offer.file_id;
                return match self.offer(offer) {
                    WriteDone::Answer {
                        answer: FileAnswer::Accept { offset },
                        detail,
                        ..
                    } => WriteDone::Answer {
                        file_id,
                        answer: FileAnswer::AcceptChanged { offset, changes },
                        detail,
                    },
                    other => other,
                };
            }
            Err(refusal) => return refused(offer.file_id, refusal),
        };
        WriteDone::Answer {
            file_id: offer.file_id,
            answer,
            detail: None,
        }
    }

    /// A directory's entry with `DELETE` (after its contents): what its copy holds beyond
    /// the names offered in it is removed (a dry run only counts it), then it gets its
    /// metadata (made if missing).
    fn offer_pruned(&mut self, offer: Offer, sync: SyncCheck) -> WriteDone {
        let file_id = offer.file_id;
        let pruned = (|| {
            let names = self.names.as_ref().ok_or_else(|| {
                Refusal::new(FileRejectReason::UNSUPPORTED, "deletes were not agreed")
            })?;
            let keep = names.take(&offer.name)?;
            let entry = SyncEntry {
                name: &offer.name,
                kind: offer.kind,
                size: offer.size,
                mode: offer.mode,
                mtime: offer.mtime,
                content: None,
                dry_run: sync.dry_run,
                target: &[],
            };
            let changes = match self.dest.compare(&entry)? {
                Compared::Differs(c) if c.contains(Changes::KIND) => {
                    return Err(Refusal::new(
                        FileRejectReason::EXISTS,
                        format!("{}: not a directory here", offer.name),
                    ));
                }
                Compared::InSync(c) | Compared::Differs(c) => c,
            };
            let deleted = self.dest.prune(&offer.name, &keep, sync.dry_run)?;
            // Removing entries changed its mtime: set again, as any directory entry's.
            if !sync.dry_run && (!changes.is_empty() || deleted > 0) {
                self.dest.make_dir(&offer.name, offer.mode, offer.mtime)?;
            }
            Ok(FileAnswer::Pruned { changes, deleted })
        })();
        match pruned {
            Ok(answer) => WriteDone::Answer {
                file_id,
                answer,
                detail: None,
            },
            Err(refusal) => refused(file_id, refusal),
        }
    }

    fn offer(&mut self, offer: Offer) -> WriteDone {
        let Offer {
            file_id,
            name,
            kind,
            size,
            mode,
            mtime,
            part,
            refusal,
            sync: _,
            target,
        } = offer;
        if let Some(reason) = refusal {
            // A refused name says which rule it broke (a reserved prefix, a control
            // character, ...), not only "invalid name".
            let why = match rdmaft_protocol::validate_name(name.as_bytes()) {
                Err(e) => format!("{reason}: {e}"),
                Ok(_) => reason.to_string(),
            };
            return WriteDone::Answer {
                file_id,
                answer: FileAnswer::Reject(reason),
                detail: Some(format!("{name}: {why}")),
            };
        }
        let open = match kind {
            EntryKind::File => match self.open_files.try_take() {
                Some(permit) => Some(permit),
                None => {
                    return WriteDone::Answer {
                        file_id,
                        answer: FileAnswer::Reject(FileRejectReason::BUSY),
                        detail: Some(format!(
                            "{name}: {} files are open across all connections already (the \
                             receiver's budget of file descriptors)",
                            self.open_files.total()
                        )),
                    };
                }
            },
            EntryKind::Directory => None,
            EntryKind::Symlink => {
                // spec: [link.unsafe]
                let unsafe_link = !self.dest.options().unsafe_links
                    && !crate::fs::link::is_safe_link(&name, &target);
                if unsafe_link {
                    let shown = String::from_utf8_lossy(&target);
                    return WriteDone::Answer {
                        file_id,
                        answer: FileAnswer::Reject(FileRejectReason::UNSAFE_LINK),
                        detail: Some(format!(
                            "{name} -> {shown}: the target is absolute or climbs out of the \
                             destination (recv --allow-unsafe-links takes it)"
                        )),
                    };
                }
                None
            }
        };
        if let Some(part) = part {
            return self.offer_part(file_id, name, size, mode, mtime, part, open);
        }
        let begun = match kind {
            EntryKind::Directory | EntryKind::Symlink => Ok((None, 0)),
            EntryKind::File if self.resume => self
                .dest
                .resume_file(&name, size, mode, mtime)
                .map(|(t, kept)| (Some(t), kept)),
            EntryKind::File => self
                .dest
                .begin_file(&name, size, mode)
                .map(|t| (Some(t), 0)),
        };
        let (temp, kept) = match begun {
            Ok(b) => b,
            Err(refusal) => return refused(file_id, refusal),
        };
        let mut digest = Digester::new(self.digest_kind);
        let offset = match &temp {
            // spec: [resume.digest]
            Some(t) if kept > 0 => resume_prefix(t, kept, self.buf.len() as u64, &mut digest),
            _ => 0,
        };
        // After the kept prefix is hashed (through the page cache).
        let direct = self.direct
            && size.saturating_sub(offset) >= direct::DIRECT_MIN_SIZE
            && temp.as_ref().is_some_and(|t| direct::enable(&t.file));
        self.direct_files += u64::from(direct);
        self.accepted(
            file_id,
            Target {
                temp,
                split: None,
                _open: open,
                name,
                size,
                written: offset,
                resumed: offset,
                mode,
                mtime,
                digest,
                failed: None,
                direct,
                link: (kind == EntryKind::Symlink).then_some(target),
            },
        )
    }

    /// Takes `target` on as file `file_id`, from what it holds already (`written`).
    fn accepted(&mut self, file_id: u64, target: Target) -> WriteDone {
        let offset = target.written;
        self.files.insert(file_id, target);
        WriteDone::Answer {
            file_id,
            answer: FileAnswer::Accept { offset },
            detail: None,
        }
    }

    /// A part of a split file: joins (or starts) the file its parts share. A part that
    /// verified in an earlier session is not sent again (with resume and a digest agreed):
    /// it is accepted from its end, and its kept bytes are hashed for the sender's digest
    /// to check.
    #[allow(clippy::too_many_arguments)]
    fn offer_part(
        &mut self,
        file_id: u64,
        name: String,
        size: u64,
        mode: u32,
        mtime: (i64, u32),
        part: Part,
        open: Option<Permit>,
    ) -> WriteDone {
        let begun = match &self.group {
            Some(g) => g.splits.begin(&self.dest, &name, size, part, mode, mtime),
            // The protocol machine refuses parts without LANES; nothing to join here.
            None => Err(crate::fs::dest::Refusal::new(
                FileRejectReason::UNSUPPORTED,
                format!("{name}: a file part outside a transfer group"),
            )),
        };
        let begun = match begun {
            Ok(b) => b,
            Err(refusal) => return refused(file_id, refusal),
        };
        let len = part.len_in(size);
        // Resume offsets are whole chunks: a short last part is sent again.
        let chunk = self.buf.len() as u64;
        let whole_chunks = len / chunk * chunk;
        let mut digest = Digester::new(self.digest_kind);
        let kept = self.resume
            && begun.kept
            && self.digest_kind != DigestKind::None
            && whole_chunks > 0
            && digest
                .update_from_range(begun.file.file(), part.start(), whole_chunks)
                .is_ok();
        if !kept {
            digest = Digester::new(self.digest_kind);
        }
        let offset = if kept { whole_chunks } else { 0 };
        self.accepted(
            file_id,
            Target {
                temp: None,
                split: Some((begun.file, part)),
                _open: open,
                name,
                size: len,
                written: offset,
                resumed: offset,
                mode,
                mtime,
                digest,
                failed: None,
                // Parts share one file at their offsets: through the page cache.
                direct: false,
                link: None,
            },
        )
    }

    /// A file that will not complete: its temporary file removed (or, for a part, its split
    /// file told that this part is missing again).
    fn drop_target(&self, t: Target, why: &str) {
        if let Some(temp) = t.temp {
            self.dest.discard(temp);
        }
        if let (Some((split, part)), Some(group)) = (t.split, &self.group) {
            let why = format!("{}: part {} {why}", t.name, part.index);
            group
                .splits
                .ended(&split, part.index, Err((FileStatus::ABORTED, why)));
        }
    }

    /// Writes one chunk; a failure status when the file cannot take it (then cancelled).
    fn chunk(
        &mut self,
        file_id: u64,
        file_offset: u64,
        ring_offset: u64,
        len: u32,
    ) -> Option<FileStatus> {
        let t = self.files.get_mut(&file_id)?;
        if t.failed.is_some() {
            return None;
        }
        let buf = &mut self.buf.as_mut_slice()[..len as usize];
        // One copy out of the ring (which the peer could write at any time) into a buffer
        // that stays in cache; the digest and the write both read that copy.
        let result = self
            .ring
            .copy_out(ring_offset, buf)
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|()| {
                if file_offset + u64::from(len) == t.size {
                    t.digest.update_last(buf);
                } else {
                    t.digest.update(buf);
                }
                match (&t.temp, &t.split) {
                    (Some(temp), _) => {
                        // Direct writes need an aligned length: a short last chunk goes
                        // through the page cache.
                        if t.direct && buf.len() % direct::DIRECT_ALIGN != 0 {
                            direct::disable(&temp.file)?;
                            t.direct = false;
                        }
                        temp.file.write_all_at(buf, file_offset)
                    }
                    (None, Some((split, part))) => split.write_at(buf, part.start(), file_offset),
                    (None, None) => Ok(()),
                }
            });
        match result {
            Ok(()) => {
                t.written = file_offset + u64::from(len);
                // Only what went into a file counts (not a chunk nothing is written for).
                if t.temp.is_some() || t.split.is_some() {
                    self.written
                        .fetch_add(u64::from(len), std::sync::atomic::Ordering::Relaxed);
                }
                None
            }
            Err(e) => {
                let status = match e.raw_os_error() {
                    Some(libc::ENOSPC) | Some(libc::EDQUOT) => FileStatus::NO_SPACE,
                    _ => FileStatus::IO,
                };
                // Give the space back now: later files may arrive before this one's end.
                if let Some(temp) = &t.temp {
                    let _ = temp.file.set_len(0);
                }
                t.failed = Some((status, format!("{}: {e}", t.name)));
                Some(status)
            }
        }
    }

    /// A file's verdict (and whether it is a part's, not to be reported on its own).
    fn complete(
        &mut self,
        file_id: u64,
        length: u64,
        digest: Digest,
    ) -> (FileStatus, Option<String>, bool) {
        let Some(mut t) = self.files.remove(&file_id) else {
            return (
                FileStatus::IO,
                Some("no such file at the writer".into()),
                false,
            );
        };
        if let Some((split, part)) = t.split.take() {
            let verified = match t.failed.take() {
                Some(failure) => Err(failure),
                None => verify_part(&t, length, digest)
                    .map_err(|(s, why)| (s, format!("{}: part {}: {why}", t.name, part.index))),
            };
            let Some(group) = &self.group else {
                return (FileStatus::IO, Some("a part outside a group".into()), false);
            };
            let end = group.splits.ended(&split, part.index, verified);
            return (end.status, end.detail, !end.report);
        }
        let (status, detail) = self.complete_whole(t, length, digest);
        (status, detail, false)
    }

    fn complete_whole(
        &mut self,
        t: Target,
        length: u64,
        digest: Digest,
    ) -> (FileStatus, Option<String>) {
        if let Some((status, detail)) = t.failed {
            if let Some(temp) = t.temp {
                self.dest.discard(temp);
            }
            return (status, Some(detail));
        }
        if t.resumed > 0 && digest.kind == DigestKind::None {
            if let Some(temp) = t.temp {
                self.dest.discard(temp);
            }
            return (
                FileStatus::DIGEST_REQUIRED,
                Some(format!(
                    "{}: resumed from byte {}, but its end carries no digest to cover the \
                     kept bytes",
                    t.name, t.resumed
                )),
            );
        }
        let Some(temp) = t.temp else {
            if let Some(target) = &t.link {
                return match self.dest.make_link(&t.name, target, t.mtime) {
                    Ok(()) => (FileStatus::OK, None),
                    Err(r) => (FileStatus::IO, Some(r.detail)),
                };
            }
            // A directory.
            return match self.dest.make_dir(&t.name, t.mode, t.mtime) {
                Ok(()) => (FileStatus::OK, None),
                Err(r) => (FileStatus::IO, Some(r.detail)),
            };
        };
        // Whatever reads the file back from here reads through the page cache.
        if t.direct {
            let _ = direct::disable(&temp.file);
        }
        // A fresh unnamed file holds exactly what was written: no `fstat` needed.
        let known = (temp.is_private() && t.resumed == 0).then_some(t.written);
        // spec: [resume.digest]
        let verdict = verify(&temp, known, length, &t.digest, digest);
        match verdict {
            Ok(()) => match self.dest.publish(temp, t.mode, t.mtime) {
                Ok(None) => (FileStatus::OK, None),
                // Published and verified: the file is there; the detail says what --fsync
                // could not promise.
                Ok(Some(e)) => (
                    FileStatus::OK,
                    Some(format!(
                        "{}: published, but syncing its directory failed: {e}",
                        t.name
                    )),
                ),
                Err(e) => (FileStatus::IO, Some(format!("{}: publishing: {e}", t.name))),
            },
            Err((status, why)) => {
                self.dest.discard(temp);
                (status, Some(format!("{}: {why}", t.name)))
            }
        }
    }

    /// Removes what unfinished files left behind, or, with resume agreed, keeps what was
    /// written of them for the next attempt.
    fn discard_all(&mut self) {
        let files: Vec<_> = self.files.drain().map(|(_, t)| t).collect();
        for mut t in files {
            if let Some(temp) = t.temp.take() {
                if self.resume && t.failed.is_none() {
                    self.dest.keep_partial(temp, t.size, t.mtime, t.written);
                    continue;
                }
                self.dest.discard(temp);
            }
            self.drop_target(t, "did not arrive: the connection ended");
        }
    }
}

/// The answer to file `file_id` that the file layer refused.
fn refused(file_id: u64, refusal: crate::fs::dest::Refusal) -> WriteDone {
    WriteDone::Answer {
        file_id,
        answer: FileAnswer::Reject(refusal.reason),
        detail: Some(refusal.detail),
    }
}

/// Takes over `kept` bytes of a partial file: cut to whole chunks (the resume offset must be
/// a multiple of this session's chunk size), hashed from the disk into `digest`, so the
/// whole file's digest is checked at the end. Returns the offset to resume from (0 if the
/// prefix cannot be read: the file then starts over).
///
/// A prefix is resumed only when a digest will cover it: in a session without one
/// (`DigestKind::None` agreed) nothing would ever check the kept bytes, so they are dropped
/// and the file starts over (and a resumed file whose end carries no digest fails, see
/// `Writer::complete`).
fn resume_prefix(temp: &TempFile, kept: u64, chunk: u64, digest: &mut Digester) -> u64 {
    let offset = if digest.kind() == DigestKind::None {
        0
    } else {
        kept / chunk * chunk
    };
    let read = temp
        .file
        .set_len(offset)
        .and_then(|()| digest.update_from_file(&temp.file, offset));
    if read.is_err() || offset == 0 {
        let _ = temp.file.set_len(0);
        *digest = Digester::new(digest.kind());
        return 0;
    }
    offset
}

/// Checks a part against the sender's length and digest (the part's bytes only: the file
/// is still being written by the other parts).
fn verify_part(t: &Target, length: u64, sent: Digest) -> Result<(), (FileStatus, String)> {
    if t.written != length || length != t.size {
        return Err((
            FileStatus::LENGTH_MISMATCH,
            format!("{} bytes written, {length} sent", t.written),
        ));
    }
    if sent.kind != t.digest.kind() {
        return Err((
            FileStatus::DIGEST_MISMATCH,
            "the part's digest is not the agreed one".into(),
        ));
    }
    if t.digest.finish() != sent.canonical() {
        return Err((FileStatus::DIGEST_MISMATCH, "digest mismatch".into()));
    }
    Ok(())
}

/// Checks the written file against the sender's length and digest; `known` is its size
/// when nothing but this writer can have changed it (else it is asked for).
fn verify(
    temp: &TempFile,
    known: Option<u64>,
    length: u64,
    computed: &Digester,
    sent: Digest,
) -> Result<(), (FileStatus, String)> {
    let size = match known {
        Some(size) => size,
        None => temp
            .file
            .metadata()
            .map_err(|e| (FileStatus::IO, e.to_string()))?
            .len(),
    };
    if size != length {
        return Err((
            FileStatus::LENGTH_MISMATCH,
            format!("{size} bytes written, {length} sent"),
        ));
    }
    let ours = computed.finish();
    let ours = if ours.kind == sent.kind {
        ours
    } else {
        // The sender chose another agreed algorithm: read the file back once.
        rehash(temp, sent.kind).map_err(|e| (FileStatus::IO, e.to_string()))?
    };
    if ours != sent.canonical() {
        return Err((FileStatus::DIGEST_MISMATCH, "digest mismatch".into()));
    }
    Ok(())
}

fn rehash(temp: &TempFile, kind: DigestKind) -> io::Result<Digest> {
    let mut d = Digester::new(kind);
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = temp.file.read_at(&mut buf, at)?;
        if n == 0 {
            return Ok(d.finish());
        }
        d.update(&buf[..n]);
        at += n as u64;
    }
}

/// The writer's hand-off: jobs in, results back (small ones run by the engine itself).
type WriterIo = IoThread<Writer, WriteJob, WriteDone>;

fn run_write(w: &mut Writer, job: WriteJob, out: &mut Vec<WriteDone>) {
    out.extend(w.job(job));
}

/// File bytes a job of the writer moves (for its batches).
fn write_bytes(job: &WriteJob) -> u64 {
    match job {
        WriteJob::Chunk { len, .. } => u64::from(*len),
        _ => 0,
    }
}

/// Whether the engine may run `job` itself (see `io_thread`). `resume`: an offer may take
/// over (and hash) a kept partial file; `fsync`: a publish syncs, which would hold the
/// wire up; `offered_size`: the size of an offered file by its number.
fn runs_inline(
    job: &WriteJob,
    resume: bool,
    fsync: bool,
    offered_size: impl Fn(u64) -> Option<u64>,
) -> bool {
    match job {
        // Without a sync comparison (it reads the file here) and not a part (it may hash
        // what an earlier session kept); a file that may be resumed only if small.
        WriteJob::Offer(o) => {
            o.sync.is_none() && o.part.is_none() && (o.size <= INLINE_MAX || !resume)
        }
        WriteJob::Chunk { len, .. } => u64::from(*len) <= INLINE_MAX,
        WriteJob::Complete { file_id, .. } => {
            !fsync && offered_size(*file_id).is_some_and(|size| size <= INLINE_MAX)
        }
        WriteJob::Drop { .. } => true,
    }
}

/// The writer thread's end: what unfinished files left behind is removed (or kept for a
/// resume); how many files it wrote with `O_DIRECT`.
fn writer_finish(w: &mut Writer) -> u64 {
    w.discard_all();
    w.direct_files
}

/// Settings of one connection.
pub(crate) struct RecvSetup {
    pub(crate) dest: Arc<Destination>,
    pub(crate) dest_root: PathBuf,
    pub(crate) idle_timeout: Duration,
    pub(crate) on_file: Option<ReceiveCallback>,
    pub(crate) stop: Arc<Stop>,
    /// The connection's handshake slot, given back once the sender proved the key.
    pub(crate) handshake: Option<Handshake>,
    /// Files open across all of the receiver's connections.
    pub(crate) open_files: Arc<Permits>,
    /// The connection's transfer group (with `LANES` agreed).
    pub(crate) group: Option<Arc<Group>>,
    /// Write large files with `O_DIRECT` (`--direct`).
    pub(crate) direct: bool,
    /// File data written, across the receiver's connections (its metrics).
    pub(crate) written: Arc<std::sync::atomic::AtomicU64>,
}

/// A connection between its request and its sender's key proof: it holds one of the
/// receiver's handshake slots until the proof, which must come by `deadline` (the request's
/// arrival plus `limit`, the handshake timeout, which the accept shares).
#[derive(Debug)]
pub(crate) struct Handshake {
    /// Held, not read: dropping it gives the slot back.
    #[allow(dead_code)]
    pub(crate) slot: Permit,
    pub(crate) deadline: Instant,
    pub(crate) limit: Duration,
}

/// The digest the writer computes as it goes: the one an rdmaft sender uses (it offers only
/// its choice, so the agreement holds at most that one).
fn expected_digest(neg: &Negotiated) -> DigestKind {
    use rdmaft_protocol::Features;
    if neg.features.contains(Features::DIGEST_BLAKE3) {
        DigestKind::Blake3
    } else if neg.features.contains(Features::DIGEST_XXH3_128) {
        DigestKind::Xxh3_128
    } else {
        DigestKind::None
    }
}

/// Serves one connection over `link` until its session ends; returns its report.
pub(crate) fn serve<L: RecvLink>(link: L, neg: Negotiated, setup: RecvSetup) -> ConnectionReport {
    let mut report = ConnectionReport {
        peer: link.peer(),
        ..ConnectionReport::default()
    };
    let clock = Clock::start();
    let config = Config {
        idle_timeout: Some(setup.idle_timeout),
        name_hash_key: crate::key::nonce().unwrap_or([3; 16]),
    };
    let machine = match Receiver::new(
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
    setup.stop.register(link.waker());
    // With DELETE, the names offered per directory: a group's lanes share them.
    let names = neg.features.contains(Features::DELETE).then(|| {
        setup
            .group
            .as_ref()
            .map_or_else(Default::default, |g| Arc::clone(&g.offered))
    });
    let writer_state = Writer {
        names: names.clone(),
        group: setup.group.clone(),
        dest: Arc::clone(&setup.dest),
        open_files: Arc::clone(&setup.open_files),
        ring: link.ring(),
        digest_kind: expected_digest(&neg),
        buf: AlignedBuf::new(neg.chunk_size as usize),
        files: HashMap::new(),
        direct: setup.direct,
        direct_files: 0,
        resume: neg.features.contains(rdmaft_protocol::Features::RESUME),
        written: Arc::clone(&setup.written),
    };
    let io: WriterIo = IoThread::new(writer_state, Some(link.waker()));
    let writer_thread = {
        let shared = io.shared();
        std::thread::Builder::new()
            .name("rdmaft-writer".into())
            .spawn(move || io_thread::serve(&shared, run_write, write_bytes, writer_finish))
    };
    let writer_thread = match writer_thread {
        Ok(t) => t,
        Err(e) => {
            report.error = Some(format!("could not start the writer thread: {e}"));
            return report;
        }
    };
    let peer = link.peer();
    let ring = link.ring();
    let mut engine = Engine {
        ring,
        link,
        machine,
        clock,
        io,
        ctrl: CtrlScratch::default(),
        sent: 0,
        offers: HashMap::new(),
        setup,
        report,
        peer,
        stopping: false,
        names,
    };
    let outcome = engine.run();
    engine.io.close();
    let direct_files = writer_thread.join().unwrap_or(0);
    engine.io.close_results();
    let mut report = engine.finish(outcome);
    report.direct_files = direct_files;
    report
}

struct Engine<L: RecvLink> {
    link: L,
    /// The link's ring, where chunks and control messages land.
    ring: Arc<dyn Ring>,
    machine: Receiver<VecStorage>,
    clock: Clock,
    /// The hand-off to the writer thread.
    io: WriterIo,
    /// The buffer control messages are encoded into and copied out of the ring into (see
    /// `drain`).
    ctrl: CtrlScratch,
    /// Messages sent (the send buffer of message `n` is `n mod depth`).
    sent: u64,
    /// Entries offered whose outcome is not known yet.
    offers: HashMap<u64, ReceivedFile>,
    setup: RecvSetup,
    report: ConnectionReport,
    peer: String,
    stopping: bool,
    /// With DELETE: where offered names are noted (see `fs/prune.rs`).
    names: Option<Arc<OfferedNames>>,
}

impl<L: RecvLink> Round for Engine<L> {
    type Completion = RecvCompletion;

    fn start_round(&mut self) -> Result<(), Error> {
        if self.setup.stop.is_raised() && !self.stopping {
            self.stopping = true;
            self.machine
                .abort(self.clock.now(), ErrorCode::SHUTTING_DOWN);
        }
        self.check_handshake();
        Ok(())
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

    fn poll(&mut self, into: &mut Vec<RecvCompletion>) -> Result<(), Error> {
        self.link.poll(into)
    }

    fn set_corked(&mut self, corked: bool) {
        self.machine.set_corked(corked);
    }

    fn completion(&mut self, c: RecvCompletion) -> Result<(), Error> {
        match c {
            RecvCompletion::Write { imm, len } => {
                let ring = Arc::clone(&self.ring);
                self.write(&*ring, imm, len)
            }
            _ => Ok(()),
        }
    }

    fn io_result(&mut self) -> Result<bool, Error> {
        match self.io.next_result() {
            Some(d) => self.writer_done(d).map(|()| true),
            None => Ok(false),
        }
    }

    fn end_round(&mut self) -> Result<(), Error> {
        Ok(())
    }

    fn tick(&mut self) {
        self.machine.handle_timeout(self.clock.now());
    }

    fn link_lost(&mut self) -> Option<Error> {
        (self.link.is_down() && !self.machine.is_ended()).then(|| Error::ConnectionLost {
            peer: self.peer.clone(),
            detail: "the sender disconnected".into(),
        })
    }

    fn hand_over(&mut self) -> Result<bool, Error> {
        let offers = &self.offers;
        let fsync = self.setup.dest.options().fsync;
        let resume = self
            .machine
            .negotiated()
            .features
            .contains(Features::RESUME);
        let small =
            |job: &WriteJob| runs_inline(job, resume, fsync, |id| offers.get(&id).map(|f| f.size));
        self.io
            .hand_over(small, run_write)
            .map_err(|_| Error::ThreadPanicked("writer"))
    }

    fn wait(&mut self) -> Result<(), Error> {
        let wait = self
            .machine
            .poll_timeout()
            .map_or(IDLE_WAIT, |t| self.clock.until(t).min(IDLE_WAIT));
        self.link.wait(wait)
    }
}

impl<L: RecvLink> Engine<L> {
    fn run(&mut self) -> Result<(), Error> {
        round::run(self)
    }

    /// Gives the handshake slot back once the sender proved the key; ends the session if
    /// the proof is late (a sender holding a ring without proving the key).
    fn check_handshake(&mut self) {
        let Some(h) = &self.setup.handshake else {
            return;
        };
        if self.machine.is_authenticated() {
            self.setup.handshake = None;
        } else if Instant::now() >= h.deadline && !self.machine.is_ended() {
            let limit = h.limit;
            self.report.error.get_or_insert_with(|| {
                format!(
                    "the sender did not prove the key within {} s of its request",
                    limit.as_secs_f64()
                )
            });
            self.setup.handshake = None;
            self.machine.abort(self.clock.now(), ErrorCode::TIMEOUT);
        }
    }

    fn write(&mut self, ring: &dyn Ring, imm: u32, len: u32) -> Result<(), Error> {
        let now = self.clock.now();
        match self.machine.handle_write(now, imm, len) {
            Ok(Incoming::Chunk(a)) => self.push(WriteJob::Chunk {
                seq: a.seq,
                file_id: a.file_id,
                file_offset: a.file_offset,
                ring_offset: a.ring_offset,
                len: a.len,
            }),
            Ok(Incoming::Control { ring_offset, len }) => {
                let mut buf = self.ctrl.take();
                let r = self.control(ring, now, ring_offset, &mut buf[..len as usize]);
                self.ctrl.put(buf);
                r
            }
            Ok(Incoming::Ack) => Ok(()),
            Err(e) => protocol_result(e),
        }
    }

    /// A control message at `ring_offset` (`bytes` long): copied out of the ring and handled.
    fn control(
        &mut self,
        ring: &dyn Ring,
        now: rdmaft_protocol::Instant,
        ring_offset: u64,
        bytes: &mut [u8],
    ) -> Result<(), Error> {
        ring.copy_out(ring_offset, bytes)?;
        // A batch is handled one message per call, all from this one copy.
        while self.machine.control_pending() {
            self.control_message(now, bytes)?;
        }
        Ok(())
    }

    /// One message of a control write: an offer goes to the writer.
    fn control_message(
        &mut self,
        now: rdmaft_protocol::Instant,
        bytes: &[u8],
    ) -> Result<(), Error> {
        match self.machine.handle_control(now, bytes) {
            Ok(Some(offer)) => {
                let h = offer.header;
                self.report.transferred = true;
                if let Some(names) = &self.names {
                    names.record(h.name);
                }
                self.offers.insert(
                    h.file_id,
                    ReceivedFile {
                        peer: self.peer.clone(),
                        name: h.name.to_owned(),
                        path: self.setup.dest_root.join(h.name),
                        kind: h.kind,
                        size: h.size,
                        outcome: ReceivedOutcome::Unfinished,
                        detail: None,
                        deleted: 0,
                    },
                );
                self.push(WriteJob::Offer(Offer {
                    file_id: h.file_id,
                    name: h.name.to_owned(),
                    kind: h.kind,
                    size: h.size,
                    mode: h.mode,
                    mtime: (h.mtime_sec, h.mtime_nsec),
                    part: h.part,
                    refusal: offer.refusal,
                    sync: h.sync,
                    target: h.target.to_vec(),
                }))
            }
            Ok(None) => Ok(()),
            Err(e) => protocol_result(e),
        }
    }

    /// Stages `job` for the writer; the round's jobs go together at its end (one wake-up).
    fn push(&mut self, job: WriteJob) -> Result<(), Error> {
        self.io.stage(job);
        Ok(())
    }

    fn writer_done(&mut self, d: WriteDone) -> Result<(), Error> {
        let now = self.clock.now();
        let r = match d {
            WriteDone::Answer {
                file_id,
                answer,
                detail,
            } => {
                match answer {
                    FileAnswer::Reject(reason) => {
                        self.resolve(file_id, ReceivedOutcome::Rejected(reason), detail);
                    }
                    FileAnswer::InSync(c) => {
                        self.resolve(file_id, ReceivedOutcome::InSync(c), None)
                    }
                    FileAnswer::Pruned { changes, deleted } => {
                        self.report.counts.deleted += deleted;
                        if let Some(f) = self.offers.get_mut(&file_id) {
                            f.deleted = deleted;
                        }
                        self.resolve(file_id, ReceivedOutcome::InSync(changes), None);
                    }
                    FileAnswer::WouldSend(c) => {
                        self.resolve(file_id, ReceivedOutcome::WouldReceive(c), None);
                    }
                    FileAnswer::Accept { .. } | FileAnswer::AcceptChanged { .. } => {}
                }
                self.machine.answer_file(now, file_id, answer)
            }
            WriteDone::Consumed(seq) => self.machine.chunk_consumed(now, seq),
            WriteDone::Cancel { file_id, status } => {
                match self.machine.cancel_file(now, file_id, status) {
                    // Its end arrived meanwhile: the verdict goes with the completion.
                    Err(rdmaft_protocol::Error::Usage(_)) => Ok(()),
                    other => other,
                }
            }
            WriteDone::Verified {
                file_id,
                status,
                detail,
                quiet,
            } => {
                let outcome = if status.is_ok() {
                    ReceivedOutcome::Received
                } else {
                    ReceivedOutcome::Failed(status)
                };
                // The verdict is queued first: if the callback stops the receiver, the
                // sender still learns that this file arrived.
                let r = self.machine.file_verified(now, file_id, status);
                if quiet {
                    self.offers.remove(&file_id);
                } else {
                    self.resolve(file_id, outcome, detail);
                }
                r
            }
        };
        match r {
            Ok(()) => Ok(()),
            Err(e) => protocol_result(e),
        }
    }

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
                ReceiverOutput::Transmit(n) => {
                    self.link.post_message(self.sent, &buf[..n])?;
                    self.sent += 1;
                }
                ReceiverOutput::Event(ReceiverEvent::FileComplete {
                    file_id,
                    length,
                    digest,
                }) => self.push(WriteJob::Complete {
                    file_id,
                    length,
                    digest,
                })?,
                ReceiverOutput::Event(ReceiverEvent::FileDropped {
                    file_id, status, ..
                }) => {
                    self.push(WriteJob::Drop { file_id })?;
                    self.resolve(file_id, ReceivedOutcome::Failed(status), None);
                }
                ReceiverOutput::Event(ReceiverEvent::Closed) => {}
                // The first cause stays: a local abort after an error is only its echo.
                ReceiverOutput::Event(ReceiverEvent::Failed(f)) => {
                    self.report
                        .error
                        .get_or_insert_with(|| describe_failure(&f));
                }
            }
        }
    }

    fn resolve(&mut self, file_id: u64, outcome: ReceivedOutcome, detail: Option<String>) {
        let Some(mut f) = self.offers.remove(&file_id) else {
            return;
        };
        f.outcome = outcome;
        f.detail = detail;
        self.ended(&f);
    }

    /// An entry's outcome is known: the callback, then the report.
    fn ended(&mut self, f: &ReceivedFile) {
        if let Some(cb) = &self.setup.on_file {
            cb(f);
        }
        self.report.record(f);
    }

    fn finish(mut self, outcome: Result<(), Error>) -> ConnectionReport {
        if let Err(e) = outcome {
            self.report.error.get_or_insert(e.to_string());
            if !self.machine.is_ended() {
                self.machine
                    .abort(self.clock.now(), ErrorCode::LOCAL_FAILURE);
                let _ = self.drain();
            }
        }
        let deadline = Instant::now() + CLOSE_GRACE;
        let mut c = Vec::new();
        // After the goodbyes the sender disconnects; after an error ours must go out first.
        while !self.link.is_down() && Instant::now() < deadline {
            if self.report.error.is_some() && self.link.is_idle() {
                break;
            }
            c.clear();
            if self.link.poll(&mut c).is_err() {
                break;
            }
            let _ = self.link.wait(Duration::from_millis(20));
        }
        self.link.close();
        if self.report.error.is_none() {
            self.report.transferred = true;
        }
        let mut unfinished: Vec<_> = self.offers.drain().collect();
        unfinished.sort_unstable_by_key(|(id, _)| *id);
        for (_, f) in unfinished {
            self.ended(&f);
        }
        self.report
    }
}

/// A protocol error from an input: a violation or a closed session is the machine's to
/// report (through its events); anything else is a bug in this engine.
fn protocol_result(e: rdmaft_protocol::Error) -> Result<(), Error> {
    match e {
        rdmaft_protocol::Error::Violation(_) | rdmaft_protocol::Error::Closed => Ok(()),
        rdmaft_protocol::Error::Usage(u) => Err(Error::invalid("receiver engine", u.to_string())),
    }
}

fn describe_failure(f: &Failure) -> String {
    f.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::dest::DestOptions;
    use std::io::Write;
    use std::path::Path;

    /// The offer of file 1, `f`, of `size` bytes: whole, no sync check, nothing refused.
    fn file_offer(size: u64) -> Offer {
        Offer {
            file_id: 1,
            name: "f".into(),
            kind: EntryKind::File,
            size,
            mode: 0o644,
            mtime: MTIME,
            part: None,
            refusal: None,
            sync: None,
            target: Vec::new(),
        }
    }

    fn offered(size: u64, part: Option<Part>, sync: Option<SyncCheck>) -> WriteJob {
        WriteJob::Offer(Offer {
            part,
            sync,
            ..file_offer(size)
        })
    }

    fn chunk(len: u32) -> WriteJob {
        WriteJob::Chunk {
            seq: 0,
            file_id: 1,
            file_offset: 0,
            ring_offset: 0,
            len,
        }
    }

    fn complete(file_id: u64) -> WriteJob {
        WriteJob::Complete {
            file_id,
            length: 0,
            digest: Digest::NONE,
        }
    }

    /// The engine runs a job itself only when it is small and cannot read or sync much:
    /// an offer with no sync check, not a part, small when it may be resumed; a chunk up to
    /// `INLINE_MAX`; the publish of a small file without `--fsync`; any drop.
    #[test]
    fn only_small_jobs_that_read_and_sync_nothing_run_on_the_engine() {
        let sizes = |id| {
            [(1, INLINE_MAX), (2, INLINE_MAX + 1)]
                .into_iter()
                .find(|(i, _)| *i == id)
                .map(|(_, s)| s)
        };
        let inline = |job: &WriteJob, resume, fsync| runs_inline(job, resume, fsync, sizes);
        let part = Some(Part {
            shift: 16,
            index: 0,
        });
        assert!(
            inline(&offered(4096, None, None), true, false),
            "a 4 KiB file"
        );
        assert!(inline(&offered(INLINE_MAX, None, None), true, false));
        assert!(!inline(&offered(INLINE_MAX + 1, None, None), true, false));
        assert!(inline(&offered(INLINE_MAX + 1, None, None), false, false));
        assert!(!inline(&offered(1, part, None), false, false));
        assert!(!inline(
            &offered(1, None, Some(SyncCheck::default())),
            false,
            false
        ));
        assert!(inline(&chunk(INLINE_MAX as u32), true, true));
        assert!(!inline(&chunk(INLINE_MAX as u32 + 1), true, false));
        assert!(inline(&complete(1), true, false));
        assert!(
            !inline(&complete(1), true, true),
            "a sync holds the wire up"
        );
        assert!(!inline(&complete(2), false, false));
        assert!(!inline(&complete(3), false, false), "not offered");
        assert!(inline(&WriteJob::Drop { file_id: 1 }, true, true));
    }

    /// A chunk moves its length of file bytes; other jobs none (for the writer's batches).
    #[test]
    fn only_chunks_count_as_bytes_written() {
        assert_eq!(write_bytes(&chunk(4096)), 4096);
        assert_eq!(write_bytes(&offered(1 << 20, None, None)), 0);
        assert_eq!(write_bytes(&complete(1)), 0);
    }

    /// A peer's violation and a closed session are the machine's to report; an API misuse
    /// is this engine's error.
    #[test]
    fn only_a_misuse_of_the_machine_is_the_engines_error() {
        use rdmaft_protocol::{Error as PErr, UsageError};
        assert!(protocol_result(PErr::Closed).is_ok());
        let e = protocol_result(PErr::Usage(UsageError::NotOpen)).unwrap_err();
        assert!(e.to_string().contains("receiver engine"), "{e}");
        assert_eq!(
            describe_failure(&Failure::TimedOut),
            Failure::TimedOut.to_string()
        );
    }

    /// Each outcome counts once, under its own name; the totals add them up.
    #[test]
    fn counts_add_up_each_outcome_once() {
        let outcomes = [
            ReceivedOutcome::Received,
            ReceivedOutcome::Rejected(FileRejectReason::EXISTS),
            ReceivedOutcome::Failed(FileStatus::IO),
            ReceivedOutcome::Unfinished,
            ReceivedOutcome::InSync(Changes::MODE),
            ReceivedOutcome::WouldReceive(Changes::METADATA),
        ];
        let mut c = ReceivedCounts::default();
        for (i, outcome) in outcomes.iter().enumerate() {
            for _ in 0..=i {
                c.count(outcome);
            }
        }
        let each = (
            c.received,
            c.rejected,
            c.failed,
            c.unfinished,
            c.up_to_date,
            c.would_receive,
        );
        assert_eq!(each, (1, 2, 3, 4, 5, 6));
        assert_eq!(c.ok_without_data(), 5 + 6);
        assert_eq!(c.total(), 21);
        assert_eq!(c.deleted, 0, "not an entry's outcome");
    }

    /// A ring with nothing in it (these tests write no chunks through it).
    struct NoRing;

    impl Ring for NoRing {
        fn copy_out(&self, _: u64, _: &mut [u8]) -> Result<(), Error> {
            Err(Error::invalid("NoRing", "no chunks in this test"))
        }
    }

    const CHUNK: usize = 4096;
    const SIZE: u64 = 3 * CHUNK as u64;
    const MTIME: (i64, u32) = (1_700_000_000, 0);

    fn writer(dir: &Path, digest_kind: DigestKind) -> Writer {
        Writer {
            names: None,
            group: None,
            dest: Arc::new(Destination::open(dir, DestOptions::default()).unwrap()),
            open_files: crate::permits::Permits::new(16),
            ring: Arc::new(NoRing),
            digest_kind,
            buf: AlignedBuf::new(CHUNK),
            files: HashMap::new(),
            direct: false,
            direct_files: 0,
            resume: true,
            written: Arc::default(),
        }
    }

    /// A writer whose temporary files are named ones (the fallback), which other processes
    /// can see.
    fn writer_with_named_temp_files(dir: &Path) -> Writer {
        let mut w = writer(dir, DigestKind::Xxh3_128);
        let options = DestOptions {
            unnamed_temp_files: false,
            ..DestOptions::default()
        };
        w.dest = Arc::new(Destination::open(dir, options).unwrap());
        w
    }

    /// Leaves a partial file of `f` with its first two chunks, as an interrupted transfer.
    fn keep_two_chunks(w: &Writer, data: &[u8]) {
        let (mut inc, _) = w.dest.resume_file("f", SIZE, 0o644, MTIME).unwrap();
        inc.file.write_all(&data[..2 * CHUNK]).unwrap();
        w.dest.keep_partial(inc, SIZE, MTIME, 2 * CHUNK as u64);
    }

    fn offer(w: &mut Writer) -> FileAnswer {
        let done = w.job(WriteJob::Offer(file_offer(SIZE)));
        match done.as_slice() {
            [WriteDone::Answer { answer, .. }] => *answer,
            _ => panic!("one answer expected"),
        }
    }

    /// Writes the rest of the file (from `offset`) as chunks would, then ends it with
    /// `digest`; the verdict.
    fn finish(w: &mut Writer, data: &[u8], offset: usize, digest: Digest) -> FileStatus {
        let t = w.files.get_mut(&1).unwrap();
        let temp = t.temp.as_ref().unwrap();
        temp.file
            .write_all_at(&data[offset..], offset as u64)
            .unwrap();
        t.digest.update(&data[offset..]);
        t.written = SIZE;
        let done = w.job(WriteJob::Complete {
            file_id: 1,
            length: SIZE,
            digest,
        });
        match done.as_slice() {
            [WriteDone::Verified { status, .. }] => *status,
            _ => panic!("one verdict expected"),
        }
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("rdmaft-writer-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_refused_name_says_which_rule_it_broke() {
        let d = scratch("refused-name");
        let mut w = writer(&d, DigestKind::None);
        let done = w.job(WriteJob::Offer(Offer {
            name: ".rdmaft-77-1.part".into(),
            refusal: Some(FileRejectReason::INVALID_NAME),
            ..file_offer(1)
        }));
        match done.as_slice() {
            [WriteDone::Answer {
                answer: FileAnswer::Reject(FileRejectReason::INVALID_NAME),
                detail: Some(detail),
                ..
            }] => assert!(detail.contains("reserved"), "{detail}"),
            _ => panic!("a refusal expected"),
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    // spec-test: [resume.digest]
    fn a_kept_prefix_is_resumed_only_where_a_digest_covers_it() {
        let d = scratch("resume");
        let data: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
        let mut bad = data.clone();
        bad[10] ^= 0xff;
        // A session without a digest: the kept bytes are dropped, the file starts over.
        let mut w = writer(&d, DigestKind::None);
        keep_two_chunks(&w, &bad);
        assert_eq!(offer(&mut w), FileAnswer::Accept { offset: 0 });
        assert_eq!(finish(&mut w, &data, 0, Digest::NONE), FileStatus::OK);
        assert_eq!(std::fs::read(d.join("f")).unwrap(), data);
        std::fs::remove_file(d.join("f")).unwrap();
        // A session with one resumes; an end without a digest would leave the kept bytes
        // unchecked, so it fails.
        let mut w = writer(&d, DigestKind::Xxh3_128);
        keep_two_chunks(&w, &bad);
        let offset = 2 * CHUNK;
        assert_eq!(
            offer(&mut w),
            FileAnswer::Accept {
                offset: offset as u64
            }
        );
        assert_eq!(
            finish(&mut w, &data, offset, Digest::NONE),
            FileStatus::DIGEST_REQUIRED
        );
        assert!(!d.join("f").exists(), "nothing published");
        // With the digest, the bad prefix is caught; a good one passes.
        for (prefix, status) in [(&bad, FileStatus::DIGEST_MISMATCH), (&data, FileStatus::OK)] {
            let mut w = writer(&d, DigestKind::Xxh3_128);
            keep_two_chunks(&w, prefix);
            offer(&mut w);
            let digest = digest_of(DigestKind::Xxh3_128, &data);
            assert_eq!(finish(&mut w, &data, offset, digest), status);
        }
        assert_eq!(std::fs::read(d.join("f")).unwrap(), data);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Without resume agreed a kept partial file is neither taken over nor touched: the
    /// file starts at 0 in a temporary file of its own.
    #[test]
    fn a_kept_prefix_is_left_alone_without_resume() {
        let d = scratch("no-resume");
        let data: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
        let mut w = writer(&d, DigestKind::Xxh3_128);
        keep_two_chunks(&w, &data);
        let kept = |d: &Path| {
            std::fs::read_dir(d)
                .unwrap()
                .filter(|e| {
                    let name = e.as_ref().unwrap().file_name();
                    name.to_string_lossy().starts_with(".rdmaft-partial-")
                })
                .count()
        };
        assert_eq!(kept(&d), 1);
        w.resume = false;
        assert_eq!(offer(&mut w), FileAnswer::Accept { offset: 0 });
        assert_eq!(kept(&d), 1, "the partial file is still there");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A file dropped before its end leaves nothing: with named temporary files too.
    #[test]
    fn a_dropped_file_leaves_no_temporary_file() {
        let d = scratch("drop");
        let mut w = writer_with_named_temp_files(&d);
        assert_eq!(offer(&mut w), FileAnswer::Accept { offset: 0 });
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            1,
            "its temporary file"
        );
        assert!(w.job(WriteJob::Drop { file_id: 1 }).is_empty());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "nothing left");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The lanes' reports add up as one; a refused connection says who and why.
    #[test]
    fn lane_reports_add_up_and_a_refusal_names_its_peer() {
        let lane = |received, failed, transferred, direct_files, error: Option<&str>| {
            let mut r = ConnectionReport::default();
            r.counts.received = received;
            r.counts.failed = failed;
            r.counts.deleted = 1;
            r.transferred = transferred;
            r.direct_files = direct_files;
            r.error = error.map(str::to_owned);
            r
        };
        let mut total = lane(2, 0, false, 1, None);
        total.add_lane(lane(3, 1, true, 2, Some("first")));
        total.add_lane(lane(0, 0, false, 0, Some("second")));
        assert_eq!((total.counts.received, total.counts.failed), (5, 1));
        assert_eq!(total.counts.deleted, 3);
        assert!(total.transferred, "one lane moved data");
        assert_eq!(total.direct_files, 3);
        assert_eq!(
            total.error.as_deref(),
            Some("first"),
            "the first error kept"
        );
        let r = ConnectionReport::refused("10.0.0.9:1".into(), "not allowed", "why".into());
        assert_eq!(r.peer, "10.0.0.9:1");
        assert_eq!(r.refusal, Some("not allowed"));
        assert_eq!(r.error.as_deref(), Some("why"));
        assert!(!r.all_ok());
    }

    /// A directory in sync whose prune removes entries gets the sender's mtime back
    /// (removing them changed it).
    #[test]
    fn a_pruned_directory_keeps_the_senders_mtime() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let d = scratch("prune-mtime");
        std::fs::create_dir_all(d.join("p")).unwrap();
        std::fs::write(d.join("p/gone"), b"g").unwrap();
        let mut w = writer(&d, DigestKind::Xxh3_128);
        let mode = 0o755 & !crate::fs::perms::process_umask();
        std::fs::set_permissions(d.join("p"), std::fs::Permissions::from_mode(mode)).unwrap();
        let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(MTIME.0 as u64);
        std::fs::File::open(d.join("p"))
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        w.names = Some(Arc::default());
        let answer = prune(&mut w, "p");
        assert!(
            matches!(answer, FileAnswer::Pruned { deleted: 1, changes } if changes.is_empty()),
            "in sync but for the entry removed: {answer:?}"
        );
        let meta = std::fs::metadata(d.join("p")).unwrap();
        assert_eq!(
            meta.mtime(),
            MTIME.0,
            "the mtime set again after the removal"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A named temporary file can be written by other processes (an unnamed one cannot):
    /// its length is asked of the file system at the end, and bytes added behind the
    /// writer's back fail the file instead of being published with it.
    #[test]
    fn a_named_temporary_file_grown_behind_the_writers_back_is_not_published() {
        let d = scratch("grown");
        let data: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
        let mut w = writer_with_named_temp_files(&d);
        assert_eq!(offer(&mut w), FileAnswer::Accept { offset: 0 });
        let temp = std::fs::read_dir(&d)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let digest = digest_of(DigestKind::Xxh3_128, &data);
        let t = w.files.get_mut(&1).unwrap();
        t.temp
            .as_ref()
            .unwrap()
            .file
            .write_all_at(&data, 0)
            .unwrap();
        t.digest.update(&data);
        t.written = SIZE;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&temp)
            .unwrap()
            .write_all(b"planted")
            .unwrap();
        let done = w.job(WriteJob::Complete {
            file_id: 1,
            length: SIZE,
            digest,
        });
        assert!(
            matches!(
                done.as_slice(),
                [WriteDone::Verified { status, .. }] if *status == FileStatus::LENGTH_MISMATCH
            ),
            "{:?}",
            done.len()
        );
        assert!(!d.join("f").exists(), "nothing published");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A connection that ends with files unfinished keeps what they hold for a resume only
    /// where resume was agreed and the file had not failed; else nothing is left.
    #[test]
    fn unfinished_files_are_kept_only_to_be_resumed() {
        for (resume, failed, kept) in [(true, false, 1), (false, false, 0), (true, true, 0)] {
            let d = scratch(&format!("unfinished-{resume}-{failed}"));
            let mut w = writer(&d, DigestKind::Xxh3_128);
            w.resume = resume;
            assert_eq!(offer(&mut w), FileAnswer::Accept { offset: 0 });
            let t = w.files.get_mut(&1).unwrap();
            t.temp
                .as_ref()
                .unwrap()
                .file
                .write_all_at(&[1; 100], 0)
                .unwrap();
            t.written = 100;
            if failed {
                t.failed = Some((FileStatus::IO, "failed".into()));
            }
            w.discard_all();
            let left: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
            assert_eq!(
                left.len(),
                kept,
                "resume {resume}, failed {failed}: {left:?}"
            );
            std::fs::remove_dir_all(&d).unwrap();
        }
    }

    /// The digest of `data` by `kind`.
    fn digest_of(kind: DigestKind, data: &[u8]) -> Digest {
        let mut d = Digester::new(kind);
        d.update(data);
        d.finish()
    }

    /// A sender may end a file with another agreed algorithm than the one the writer
    /// computed: the file is read back once and checked with that one.
    #[test]
    fn a_file_digested_with_another_agreed_algorithm_is_read_back_and_checked() {
        let d = scratch("other-kind");
        let data: Vec<u8> = (0..SIZE).map(|i| (i % 253) as u8).collect();
        let mut other = data.clone();
        other[5] ^= 1;
        for (sent, status) in [
            (digest_of(DigestKind::Blake3, &data), FileStatus::OK),
            (
                digest_of(DigestKind::Blake3, &other),
                FileStatus::DIGEST_MISMATCH,
            ),
        ] {
            let mut w = writer(&d, DigestKind::Xxh3_128);
            assert_eq!(offer(&mut w), FileAnswer::Accept { offset: 0 });
            assert_eq!(finish(&mut w, &data, 0, sent), status);
        }
        assert_eq!(std::fs::read(d.join("f")).unwrap(), data);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A part is checked on its own: its length against the sender's and its size, its
    /// digest against the agreed kind and value.
    #[test]
    fn a_parts_length_and_digest_are_checked() {
        let data = [9u8; 100];
        let part = |written: u64, size: u64| {
            let mut digest = Digester::new(DigestKind::Xxh3_128);
            digest.update(&data[..written as usize]);
            Target {
                temp: None,
                split: None,
                _open: None,
                name: "p".into(),
                size,
                written,
                resumed: 0,
                mode: 0o644,
                mtime: MTIME,
                digest,
                failed: None,
                direct: false,
                link: None,
            }
        };
        let good = digest_of(DigestKind::Xxh3_128, &data);
        assert!(verify_part(&part(100, 100), 100, good).is_ok());
        let status = |r: Result<(), (FileStatus, String)>| r.unwrap_err().0;
        assert_eq!(
            status(verify_part(&part(60, 100), 100, good)),
            FileStatus::LENGTH_MISMATCH,
            "fewer bytes written than sent"
        );
        assert_eq!(
            status(verify_part(&part(100, 100), 60, good)),
            FileStatus::LENGTH_MISMATCH,
            "fewer sent than the part holds"
        );
        assert_eq!(
            status(verify_part(
                &part(100, 100),
                100,
                digest_of(DigestKind::Blake3, &data)
            )),
            FileStatus::DIGEST_MISMATCH,
            "another kind"
        );
        assert_eq!(
            status(verify_part(
                &part(100, 100),
                100,
                digest_of(DigestKind::Xxh3_128, &[8u8; 100])
            )),
            FileStatus::DIGEST_MISMATCH
        );
    }

    /// A ring holding one file's bytes, chunk after chunk.
    struct FileRing(Vec<u8>);

    impl Ring for FileRing {
        fn copy_out(&self, offset: u64, dst: &mut [u8]) -> Result<(), Error> {
            let at = offset as usize;
            dst.copy_from_slice(&self.0[at..at + dst.len()]);
            Ok(())
        }
    }

    /// Chunks taken from the ring: written at their offsets, digested (the last in one
    /// piece with the rest), and counted in the bytes received; the file then verifies.
    #[test]
    fn chunks_from_the_ring_are_written_digested_and_counted() {
        let d = scratch("chunks");
        let data: Vec<u8> = (0..SIZE).map(|i| (i % 241) as u8).collect();
        let mut w = writer(&d, DigestKind::Xxh3_128);
        w.ring = Arc::new(FileRing(data.clone()));
        assert_eq!(offer(&mut w), FileAnswer::Accept { offset: 0 });
        for (seq, at) in (0..SIZE).step_by(CHUNK).enumerate() {
            let done = w.job(WriteJob::Chunk {
                seq: seq as u64,
                file_id: 1,
                file_offset: at,
                ring_offset: at,
                len: CHUNK as u32,
            });
            assert!(matches!(done.as_slice(), [WriteDone::Consumed(s)] if *s == seq as u64));
        }
        let counted = w.written.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(counted, SIZE, "the bytes received");
        let done = w.job(WriteJob::Complete {
            file_id: 1,
            length: SIZE,
            digest: digest_of(DigestKind::Xxh3_128, &data),
        });
        assert!(
            matches!(done.as_slice(), [WriteDone::Verified { status, .. }] if *status == FileStatus::OK),
            "{} results",
            done.len()
        );
        assert_eq!(std::fs::read(d.join("f")).unwrap(), data);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A part an earlier transfer verified and kept is accepted again from its last whole
    /// chunk (a short end is sent again) with its kept bytes hashed: what comes then
    /// completes it.
    #[test]
    fn a_kept_part_is_resumed_from_its_last_whole_chunk() {
        let d = scratch("kept-part");
        let part = Part {
            shift: 13,
            index: 2,
        };
        let size = 2 * part.size() + 5000;
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mine = data[part.start() as usize..].to_vec();
        let groups = crate::groups::Groups::new(true);
        let mut w = writer(&d, DigestKind::Xxh3_128);
        {
            // An earlier transfer verified this part, and ended before the others.
            let earlier = groups.enter(0).unwrap();
            let b = earlier
                .splits
                .begin(&w.dest, "f", size, part, 0o644, MTIME)
                .unwrap();
            b.file.file().write_all_at(&mine, part.start()).unwrap();
            earlier.splits.ended(&b.file, part.index, Ok(()));
        }
        w.group = Some(groups.enter(0).unwrap());
        w.ring = Arc::new(FileRing(mine.clone()));
        let done = w.job(offered(size, Some(part), None));
        let offset = match done.as_slice() {
            [WriteDone::Answer {
                answer: FileAnswer::Accept { offset },
                ..
            }] => *offset,
            _ => panic!("an accept expected"),
        };
        assert_eq!(offset, CHUNK as u64, "the whole chunks of 5000 bytes");
        let rest = (mine.len() - CHUNK) as u32;
        w.job(WriteJob::Chunk {
            seq: 0,
            file_id: 1,
            file_offset: offset,
            ring_offset: offset,
            len: rest,
        });
        let done = w.job(WriteJob::Complete {
            file_id: 1,
            length: mine.len() as u64,
            digest: digest_of(DigestKind::Xxh3_128, &mine),
        });
        assert!(
            matches!(done.as_slice(), [WriteDone::Verified { status, .. }] if *status == FileStatus::OK),
            "the kept bytes and the rest make the part"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A directory's DELETE offer, as a hostile sender may make it.
    fn prune(w: &mut Writer, name: &str) -> FileAnswer {
        let done = w.job(WriteJob::Offer(Offer {
            sync: Some(SyncCheck {
                delete: true,
                ..SyncCheck::default()
            }),
            part: None,
            file_id: 1,
            name: name.into(),
            kind: EntryKind::Directory,
            size: 0,
            mode: 0o755,
            mtime: MTIME,
            refusal: None,
            target: Vec::new(),
        }));
        match done.as_slice() {
            [WriteDone::Answer { answer, .. }] => *answer,
            _ => panic!("one answer expected"),
        }
    }

    /// Whatever a sender names, a prune stays beneath the destination, follows no link
    /// and leaves the receiver's own files.
    #[test]
    // spec-test: [sync.delete-scope]
    fn a_prune_never_leaves_the_destination_nor_takes_the_receivers_files() {
        let base = scratch("prune-hostile");
        let (dest, outside) = (base.join("dest"), base.join("outside"));
        std::fs::create_dir_all(dest.join("d")).unwrap();
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        std::fs::write(outside.join("precious"), b"p").unwrap();
        std::fs::write(outside.join("sub/also"), b"a").unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("link")).unwrap();
        std::fs::write(dest.join("d/.rdmaft-partial-0123456789abcdef"), b"kept").unwrap();
        std::fs::write(dest.join("d/gone"), b"g").unwrap();
        let mut w = writer(&dest, DigestKind::Xxh3_128);
        w.names = Some(Arc::default());
        // Through the link, or the link as a directory: refused, nothing removed.
        for name in ["link", "link/sub"] {
            let answer = prune(&mut w, name);
            assert!(
                matches!(answer, FileAnswer::Reject(_)),
                "{name}: {answer:?}"
            );
        }
        assert!(outside.join("precious").exists() && outside.join("sub/also").exists());
        // A reserved name, as a directory to prune: refused.
        assert_eq!(
            prune(&mut w, "d/.rdmaft-partial-0123456789abcdef"),
            FileAnswer::Reject(FileRejectReason::INVALID_NAME)
        );
        // The destination's own directory: what was not offered goes, the partial stays.
        let answer = prune(&mut w, "d");
        assert!(
            matches!(answer, FileAnswer::Pruned { deleted: 1, .. }),
            "{answer:?}"
        );
        assert!(!dest.join("d/gone").exists());
        assert!(dest.join("d/.rdmaft-partial-0123456789abcdef").exists());
        // A directory that is not there is made; nothing else happens.
        let made = prune(&mut w, "d2");
        assert!(
            matches!(made, FileAnswer::Pruned { deleted: 0, changes } if changes.contains(Changes::NEW)),
            "{made:?}"
        );
        assert!(dest.join("d2").is_dir() && dest.join("link").is_symlink());
        w.names = None;
        assert!(
            matches!(
                prune(&mut w, "d"),
                FileAnswer::Reject(FileRejectReason::UNSUPPORTED)
            ),
            "no DELETE agreed, no prune"
        );
        assert!(outside.join("precious").exists() && outside.join("sub/also").exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
