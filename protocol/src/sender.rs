//! The sender role: offers files, writes their chunks into the receiver's ring, ends or aborts
//! each, and writes its control messages into the receiver's control ring.
//!
//! # Driving it
//! Inputs: [`Sender::handle_control`] (a receiver message from a receive completion),
//! [`Sender::handle_write_completed`], [`Sender::handle_timeout`], and the application
//! commands [`Sender::start_file`], [`Sender::data_ready`], [`Sender::finish_file`],
//! [`Sender::abort_file`], [`Sender::close`], [`Sender::abort`]. After every input drain
//! [`Sender::poll_output`] until it returns `None`, then arm a timer for
//! [`Sender::poll_timeout`].
//!
//! Outputs, acted on in the order given:
//! - `Control(c)`: RDMA WRITE WITH IMM of the first `c.len` bytes of the buffer passed to
//!   `poll_output` to `c.remote_addr` with immediate `c.imm` (control slot `c.slot`). The
//!   bytes must stay unchanged until the write completes; local control buffer `c.slot` is
//!   free again once a later output reuses that slot number, which the credit rules only
//!   allow after the receiver processed the message.
//! - `Ack(imm)`: a zero-length RDMA WRITE WITH IMM carrying `imm`.
//! - `Read(r)`: fill local slot `r.slot` with `r.len` bytes of file `r.file_id` at
//!   `r.file_offset`, then call [`Sender::data_ready`] (in sequence order; also when the
//!   file was aborted meanwhile — the slot is then simply free again).
//! - `Write(w)`: RDMA WRITE WITH IMM of local slot `w.slot` (`w.len` bytes) to
//!   `w.remote_addr` with immediate `w.imm`; report completions with
//!   [`Sender::handle_write_completed`] (cumulative: completions arrive in order).
//! - `Event(e)`: tell the application.
//!
//! Data flow per chunk `seq`: requested (a local slot is free) → ready → posted (the
//! receiver granted credit) → completed (the local slot is free again). A file aborted by
//! either side stops being read and posted; its remaining sequence numbers are skipped,
//! which the receiver learns from the `FileAbort` that takes their place in the stream.

use crate::chunks::{slot, FileChunks};
use crate::codes::{AbortReason, ErrorCode, FileRejectReason, FileStatus};
use crate::ending::{Ending, Outcome};
use crate::error::{Error, Failure, UsageError, Violation};
use crate::flow::{CtrlFlow, SlotCursor};
use crate::liveness::Liveness;
use crate::name::validate_name;
use crate::name::MAX_COMPONENT_LEN;
use crate::negotiate::{Negotiated, ParamError};
use crate::open_names::{NameClash, OpenNames};
use crate::queue::Fifo;
use crate::storage::{Entry, FileSlot, SlotIndex, Storage};
use crate::time::Instant;
use crate::wire::{
    BatchBuilder, Changes, Control, CtrlBuf, Digest, EntryKind, Features, FileAnswer, FileEnd,
    FileHeader, Imm, SyncCheck, CTRL_HEADER_LEN, CTRL_MSG_MAX, RECEIVER_MSG_MAX,
};
use crate::Config;

/// Metadata of a file to send: exactly what its header carries.
pub type FileInfo<'a> = FileHeader<'a>;

/// Read file data into a local slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRead {
    /// Chunk sequence number.
    pub seq: u64,
    /// Local slot (`seq % window`).
    pub slot: u32,
    /// The file.
    pub file_id: u64,
    /// Offset in the file.
    pub file_offset: u64,
    /// Bytes to read (the chunk size, less at the end of the file).
    pub len: u32,
}

/// Post an RDMA WRITE WITH IMM of a local slot into the receiver's ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkWrite {
    /// Chunk sequence number.
    pub seq: u64,
    /// Local slot holding the data, and the remote slot it goes to (`seq % window`).
    pub slot: u32,
    /// Remote address: ring address + slot × chunk size.
    pub remote_addr: u64,
    /// Remote key of the ring.
    pub rkey: u32,
    /// Bytes to write.
    pub len: u32,
    /// Immediate data ([`Imm::Chunk`]).
    pub imm: u32,
    /// The file (for the driver's bookkeeping; not sent).
    pub file_id: u64,
    /// Offset in the file (for the driver's bookkeeping; not sent).
    pub file_offset: u64,
}

/// Post an RDMA WRITE WITH IMM of a control message into the receiver's control ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlWrite {
    /// Bytes of the message, at the start of the buffer given to `poll_output`.
    pub len: usize,
    /// Control slot (message number mod the receiver's control depth): the remote slot, and
    /// the local send buffer to stage the bytes in.
    pub slot: u32,
    /// Remote address of the slot.
    pub remote_addr: u64,
    /// Remote key of the ring.
    pub rkey: u32,
    /// Immediate data ([`Imm::Control`]).
    pub imm: u32,
}

/// Something the application should know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SenderEvent {
    /// The receiver accepted the file; data from `offset` will be requested (the digest
    /// still covers the whole file, the part before `offset` included).
    FileAccepted {
        /// The file.
        file_id: u64,
        /// First byte sent (non-zero when resuming).
        offset: u64,
        /// For a `SYNC` header: how the receiver's copy differs (empty otherwise).
        changes: Changes,
    },
    /// (`SYNC` header) The receiver's copy is the sender's: nothing is sent, and the file
    /// is done. `changes`: the metadata the receiver updated (or would, in a dry run).
    FileInSync {
        /// The file.
        file_id: u64,
        /// Metadata updated (within [`Changes::METADATA`]).
        changes: Changes,
    },
    /// (dry run) The receiver would have the entry sent, because of `changes`; the file is
    /// done.
    FileWouldSend {
        /// The file.
        file_id: u64,
        /// How the receiver's copy differs.
        changes: Changes,
    },
    /// (delete header) The directory is done at the receiver: `deleted` entries not
    /// offered were removed (or would be, in a dry run); `changes` its metadata updated.
    DirectoryPruned {
        /// The directory's entry.
        file_id: u64,
        /// How the receiver's copy differed.
        changes: Changes,
        /// Entries removed.
        deleted: u64,
    },
    /// The receiver refused the file.
    FileRejected {
        /// The file.
        file_id: u64,
        /// Why.
        reason: FileRejectReason,
    },
    /// The receiver asked to stop sending the file; stop reading it (its result follows).
    FileCancelled {
        /// The file.
        file_id: u64,
        /// The result the receiver will give it.
        status: FileStatus,
    },
    /// The receiver's verdict on a file whose data stream ended.
    FileDone {
        /// The file.
        file_id: u64,
        /// Verdict.
        status: FileStatus,
    },
    /// Goodbyes exchanged; the session ended cleanly. Last event.
    Closed,
    /// The session ended badly. Last event.
    Failed(Failure),
}

/// One output of [`Sender::poll_output`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SenderOutput {
    /// Write a control message into the receiver's control ring.
    Control(ControlWrite),
    /// Zero-length write with this immediate (a pure ack).
    Ack(u32),
    /// Fill a local slot with file data.
    Read(ChunkRead),
    /// Post a chunk write.
    Write(ChunkWrite),
    /// Tell the application.
    Event(SenderEvent),
}

/// Events one receiver message can bring: a batch of the smallest messages that make one
/// (a FileResult or FileCancel, 24 bytes) in one receive buffer.
const EVENTS_PER_MESSAGE: usize = (RECEIVER_MSG_MAX - CTRL_HEADER_LEN) / 24;
/// Room for queued events: a batch's worth, twice.
const EVENT_ROOM: usize = 2 * EVENTS_PER_MESSAGE;
/// With `BATCH`, [`Sender::can_start_file`] promises room for a header whose name is at most
/// this long (a longer one may find the batch full: drain and retry).
const HEADER_ROOM: usize = 48 + MAX_COMPONENT_LEN + 40;

/// The outbox's size limit: one control slot with `BATCH`; without it, room for one
/// message only (a second never fits).
fn outbox_limit(neg: &Negotiated) -> usize {
    if neg.features.contains(Features::BATCH) {
        CTRL_MSG_MAX
    } else {
        0
    }
}

/// One step of [`Sender::poll_output`]'s work.
enum Step {
    /// Hand this out.
    Out(SenderOutput),
    /// A message joined the outgoing batch; keep going.
    Queued,
    /// Nothing more to do now (what is queued goes out, credit permitting).
    Idle,
}

/// Where one file is, at the sender.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum SState {
    /// Header waiting for control credit.
    #[default]
    Queued,
    /// Header sent, answer pending.
    AwaitAnswer,
    /// Accepted: its chunks are assigned; its stream is open.
    Accepted,
    /// End sent, result pending.
    EndSent,
    /// Abort sent (remaining chunks being skipped), result pending.
    AbortSent,
    /// Rejected or resolved.
    Closed,
}

/// A file's state at the sender (kept in the caller's [`Storage`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SenderFile {
    id: u64,
    kind: Option<EntryKind>,
    state: SState,
    chunks: FileChunks,
    digest: Option<Digest>,
    abort: Option<AbortReason>,
    /// The receiver cancelled it (it may do so once).
    cancelled: bool,
    /// The header's sync request (its digest left out: only its shape matters here).
    sync: Option<SyncCheck>,
    name_key: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    /// `close` called: goodbye goes out once every file is resolved.
    Closing,
    GoodbyeSent,
}

/// The sender's state machine. See the module docs for the drive loop.
#[derive(Debug)]
pub struct Sender<S: Storage> {
    neg: Negotiated,
    storage: S,
    slots: SlotIndex,
    name_key: [u8; 16],
    names_used: usize,
    live: Liveness,
    flow: CtrlFlow,
    /// The receiver's control-ring slot for our next message.
    ctrl_slot: SlotCursor,
    phase: Phase,
    auth_pending: bool,
    /// Control messages waiting to go, encoded after room for a batch header: with `BATCH`
    /// as many as fit one slot, otherwise one header waiting for credit.
    outbox: [u8; CTRL_MSG_MAX + CTRL_HEADER_LEN],
    out: BatchBuilder,
    /// The outbox holds a FileEnd or FileAbort, which must reach the receiver before the
    /// next chunk (the data stream's order, §3.2).
    out_ordered: bool,
    /// The first file whose header has not gone out (headers in the outbox are `..tail`).
    header_cursor: u64,
    /// The driver is still feeding this round's inputs: a batch with room waits.
    corked: bool,
    /// Files by number (the order of `start_file`): `head..tail` are in the table.
    head: u64,
    tail: u64,
    /// The file whose answer comes next; data goes in this order too.
    answer_cursor: u64,
    /// The file holding chunk `requested`, and the one holding chunk `posted`.
    read_cursor: u64,
    post_cursor: u64,
    last_id: Option<u64>,
    /// First sequence number of the next accepted file.
    next_assign_seq: u64,
    requested: u64,
    ready: u64,
    /// Chunks posted or skipped.
    posted: u64,
    /// Chunks posted, or promised skipped by a `FileAbort` sent (the receiver may credit
    /// those before they are skipped here).
    committed: u64,
    /// One past the newest write reported complete, and the newest chunk posted.
    completed: u64,
    last_posted: Option<u64>,
    /// Chunks the receiver has consumed (from its credits).
    peer_consumed: u64,
    events: Fifo<SenderEvent, EVENT_ROOM>,
    ending: Ending,
}

impl<S: Storage> Sender<S> {
    /// A sender for a negotiated connection (see [`crate::check_reply`]), starting at `now`,
    /// keeping its tables in `storage` (at least `neg.max_open_files` file slots).
    pub fn new(neg: Negotiated, config: Config, storage: S, now: Instant) -> Result<Self, Error> {
        neg.check()
            .map_err(|e| Error::Usage(UsageError::InvalidParameters(e)))?;
        config
            .check(&neg)
            .map_err(|e| Error::Usage(UsageError::InvalidParameters(e)))?;
        let mut storage = storage;
        let (files, _) = storage.tables();
        if files.len() < usize::from(neg.max_open_files) {
            return Err(UsageError::InvalidParameters(ParamError::Storage).into());
        }
        files.fill(FileSlot::EMPTY);
        let (_, names) = storage.tables();
        names.fill(crate::NameSlot::EMPTY);
        Ok(Sender {
            neg,
            slots: SlotIndex::new(storage.files().len()),
            storage,
            name_key: config.name_hash_key,
            names_used: 0,
            live: Liveness::new(config.idle_timeout, neg.keepalive_ms, now),
            flow: CtrlFlow::new(neg.receiver_ctrl_depth, neg.sender_ctrl_depth),
            ctrl_slot: SlotCursor::new(neg.receiver_ctrl_depth),
            phase: Phase::Open,
            auth_pending: neg.sender_proof.is_some(),
            outbox: [0; CTRL_MSG_MAX + CTRL_HEADER_LEN],
            out: BatchBuilder::new(outbox_limit(&neg)),
            out_ordered: false,
            header_cursor: 0,
            corked: false,
            head: 0,
            tail: 0,
            answer_cursor: 0,
            read_cursor: 0,
            post_cursor: 0,
            last_id: None,
            next_assign_seq: 0,
            requested: 0,
            ready: 0,
            posted: 0,
            committed: 0,
            completed: 0,
            last_posted: None,
            peer_consumed: 0,
            events: Fifo::new(),
            ending: Ending::default(),
        })
    }

    // ---- getters ----

    /// The negotiated parameters.
    pub fn negotiated(&self) -> &Negotiated {
        &self.neg
    }

    /// Whether the session has ended (cleanly or not); no more outputs but queued events.
    pub fn is_ended(&self) -> bool {
        self.ending.is_ended()
    }

    /// Files started and not yet resolved (rejected, or their result received).
    pub fn open_files(&self) -> u64 {
        let mut n = 0;
        for o in self.head..self.tail {
            if self.file(o).is_some_and(|f| f.state != SState::Closed) {
                n += 1;
            }
        }
        n
    }

    /// Whether another file may be started now: the session is open, the previous header
    /// went out (with `BATCH`: the batch being filled has room for another), and the
    /// open-file window has room.
    pub fn can_start_file(&self) -> bool {
        self.phase == Phase::Open
            && !self.is_ended()
            && self.out.fits(HEADER_ROOM)
            && self.tail - self.head < u64::from(self.neg.max_open_files)
    }

    /// Chunks posted and not yet consumed by the receiver.
    ///
    /// After a file abort the receiver may report the aborted file's skipped chunks consumed
    /// before the application has reported its outstanding reads, so this never goes below 0.
    pub fn in_flight(&self) -> u64 {
        self.posted.saturating_sub(self.peer_consumed)
    }

    // ---- application commands ----

    /// Holds a batch that still has room while `corked` (`BATCH` only): a driver corks
    /// before feeding the inputs that arrived together (one poll of completions, the reads
    /// that finished) and uncorks after them, then drains, so that what they produce goes in
    /// as few writes as it fits. Order and credit never wait on it: a batch still goes
    /// before a chunk that must follow it, and when full. Without `BATCH` it changes nothing.
    ///
    /// Returns the previous setting.
    pub fn set_corked(&mut self, corked: bool) -> bool {
        core::mem::replace(&mut self.corked, corked)
    }

    /// Offers a file, directory or link. Its header goes out through [`Sender::poll_output`].
    ///
    /// File ids must increase from one call to the next. A name that is open already, or
    /// that shares a path with an open name (`a` and `a/b`), is refused until that file is
    /// resolved ([`UsageError::NameConflict`]).
    pub fn start_file(&mut self, _now: Instant, info: &FileInfo<'_>) -> Result<(), Error> {
        self.live()?;
        if self.phase != Phase::Open {
            return Err(UsageError::NotOpen.into());
        }
        let features = self.neg.features;
        let unagreed = (info.sync.is_some() && !features.contains(Features::SYNC))
            || (info.sync.is_some_and(|s| s.delete) && !features.contains(Features::DELETE));
        if unagreed {
            return Err(UsageError::InvalidMetadata(crate::Field::Flags).into());
        }
        if info.kind == EntryKind::Symlink && !features.contains(Features::LINKS) {
            return Err(UsageError::InvalidMetadata(crate::Field::EntryKind).into());
        }
        // The header's encoded size: 48 bytes, the name, a content check's digest block.
        let content = info.sync.is_some_and(|s| s.content.is_some());
        if !self
            .out
            .fits(48 + info.name.len() + info.target.len() + if content { 40 } else { 0 })
        {
            return Err(UsageError::OutputsNotDrained.into());
        }
        // spec: [open.window]
        if self.tail - self.head >= u64::from(self.neg.max_open_files) {
            return Err(UsageError::TooManyOpenFiles.into());
        }
        // spec: [hdr.id]
        if self.last_id.is_some_and(|last| info.file_id <= last) {
            return Err(UsageError::DuplicateFileId.into());
        }
        // spec: [name.reserved]
        validate_name(info.name.as_bytes()).map_err(UsageError::InvalidName)?;
        info.check_metadata().map_err(UsageError::InvalidMetadata)?;
        if info
            .sync
            .and_then(|s| s.content)
            .is_some_and(|d| !d.kind.is_agreed(self.neg.features))
        {
            return Err(UsageError::InvalidMetadata(crate::Field::Flags).into());
        }
        if info.part.is_some_and(|p| !part_allowed(p, &self.neg)) {
            return Err(UsageError::InvalidMetadata(crate::Field::Part).into());
        }
        let header = Control::FileHeader(*info);
        // Check the name before encoding so that nothing changes on refusal.
        let key = self.name_key;
        let (_, names) = self.storage.tables();
        let table = OpenNames::new(names, &mut self.names_used, key);
        match table.check(info.name) {
            // spec: [name.conflict]
            Err(NameClash::Conflict) => return Err(UsageError::NameConflict.into()),
            Err(NameClash::Full) => return Err(UsageError::NameTableFull.into()),
            Ok(()) => {}
        }
        let (_, names) = self.storage.tables();
        let name_key = OpenNames::new(names, &mut self.names_used, key)
            .insert(info.name)
            .map_err(|_| UsageError::NameTableFull)?;
        // It fits (checked above) and its name is valid; the ack field is written when the
        // outbox goes (see `flush_now`).
        if !self.out.push(&header, &mut self.outbox) {
            let (_, names) = self.storage.tables();
            OpenNames::new(names, &mut self.names_used, key).remove(name_key);
            return Err(UsageError::InvalidName(crate::NameError::TooLong).into());
        }
        let o = self.tail;
        self.tail += 1;
        self.last_id = Some(info.file_id);
        *self.slot_mut(o) = FileSlot(Entry::Sender(SenderFile {
            id: info.file_id,
            kind: Some(info.kind),
            state: SState::Queued,
            chunks: FileChunks::unassigned(info.data_len()),
            digest: None,
            abort: None,
            cancelled: false,
            sync: info.sync.map(SyncCheck::shape),
            name_key,
        }));
        Ok(())
    }

    /// Reports that the read of chunk `seq` finished (its local slot holds the data, or the
    /// file was aborted and the data is not needed). Must be called in `seq` order.
    pub fn data_ready(&mut self, _now: Instant, seq: u64) -> Result<(), Error> {
        self.live()?;
        if seq != self.ready || seq >= self.requested {
            return Err(UsageError::OutOfOrder.into());
        }
        self.ready += 1;
        Ok(())
    }

    /// Gives the digest of an accepted file's whole content; its end is sent once all its
    /// chunks are posted. [`crate::DigestKind::None`] is always allowed.
    pub fn finish_file(
        &mut self,
        _now: Instant,
        file_id: u64,
        digest: Digest,
    ) -> Result<(), Error> {
        self.live()?;
        if !digest.kind.is_agreed(self.neg.features) {
            return Err(UsageError::DigestNotNegotiated.into());
        }
        let o = self.find(file_id).ok_or(UsageError::UnknownFile)?;
        let f = self.file_mut(o).ok_or(UsageError::UnknownFile)?;
        if f.state != SState::Accepted || f.digest.is_some() {
            return Err(UsageError::UnknownFile.into());
        }
        f.digest = Some(digest.canonical());
        Ok(())
    }

    /// Abandons one file: it is read and posted no further, and a `FileAbort` takes the
    /// place of its remaining data; the session goes on. Reads already requested must still
    /// be reported with [`Sender::data_ready`]. The file's result (`ABORTED`) follows.
    pub fn abort_file(
        &mut self,
        _now: Instant,
        file_id: u64,
        reason: AbortReason,
    ) -> Result<(), Error> {
        self.live()?;
        let o = self.find(file_id).ok_or(UsageError::UnknownFile)?;
        let f = self.file_mut(o).ok_or(UsageError::UnknownFile)?;
        let streaming = matches!(
            f.state,
            SState::Queued | SState::AwaitAnswer | SState::Accepted
        );
        if !streaming || f.abort.is_some() {
            return Err(UsageError::UnknownFile.into());
        }
        f.abort = Some(reason);
        Ok(())
    }

    /// Ends the session once every open file is resolved: the goodbye follows the last result.
    pub fn close(&mut self, _now: Instant) -> Result<(), Error> {
        self.live()?;
        if self.phase == Phase::Open {
            self.phase = Phase::Closing;
        }
        Ok(())
    }

    /// Aborts the session: queues an error message for the peer and fails.
    pub fn abort(&mut self, _now: Instant, code: ErrorCode) {
        self.ending.abort(code);
    }

    // ---- inputs from the connection ----

    /// A message from the receiver (its receive buffer already reposted).
    ///
    /// Events from earlier messages must be drained first: at most one message's worth may
    /// wait (with `BATCH`, a batch's worth).
    pub fn handle_control(&mut self, now: Instant, bytes: &[u8]) -> Result<(), Error> {
        self.live()?;
        let waiting = EVENT_ROOM - self.events.free();
        let room = if self.batching() {
            EVENT_ROOM - EVENTS_PER_MESSAGE
        } else {
            1
        };
        if waiting > room {
            return Err(UsageError::OutputsNotDrained.into());
        }
        self.live.arrived(now);
        let (ack, msg) = match Control::decode(bytes) {
            Ok(m) => m,
            Err(e) => return Err(self.violation(Violation::Decode(e))),
        };
        if !self.flow.on_peer_ack(ack) {
            return Err(self.violation(Violation::BadAck));
        }
        // spec: [batch.one]
        self.flow.on_processed();
        match msg {
            // spec: [batch.agreed]
            Control::Batch(batch) if self.batching() => {
                for msg in batch.iter() {
                    self.on_message(msg)?;
                }
                Ok(())
            }
            msg => self.on_message(msg),
        }
    }

    /// Acts on one receiver message (alone or from a batch).
    fn on_message(&mut self, msg: Control<'_>) -> Result<(), Error> {
        match msg {
            Control::FileAnswer { file_id, answer } => self.on_answer(file_id, answer),
            Control::Credit { consumed } => {
                // spec: [credit.check]
                if consumed < self.peer_consumed || consumed > self.committed.max(self.posted) {
                    return Err(self.violation(Violation::BadCredit));
                }
                self.peer_consumed = consumed;
                Ok(())
            }
            Control::FileResult { file_id, status } => self.on_result(file_id, status),
            Control::FileCancel { file_id, status } => self.on_cancel(file_id, status),
            Control::Ack | Control::KeepAlive => Ok(()),
            Control::Goodbye if self.phase == Phase::GoodbyeSent => {
                self.ending.close();
                Ok(())
            }
            Control::Error { code, detail, text } => {
                self.ending.peer_aborted(code, detail, text);
                Ok(())
            }
            // spec: [msg.unexpected]
            other => Err(self.violation(Violation::UnexpectedMessage(other.kind()))),
        }
    }

    /// The RDMA writes up to and including chunk `seq` completed successfully.
    pub fn handle_write_completed(&mut self, _now: Instant, seq: u64) -> Result<(), Error> {
        self.live()?;
        if seq < self.completed || !self.last_posted.is_some_and(|last| seq <= last) {
            return Err(UsageError::OutOfOrder.into());
        }
        self.completed = seq + 1;
        Ok(())
    }

    /// Time passed: fails the session if nothing arrived from the receiver within the idle
    /// timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.is_ended() && self.live.timed_out(now) {
            self.ending.time_out();
        }
    }

    // ---- outputs ----

    /// The next output, or `None` when there is nothing to do until the next input.
    ///
    /// With `BATCH`, control messages gather in one batch while other outputs come out, and
    /// the batch goes when a chunk must follow it, when it is full, or when there is nothing
    /// else to do: what is ready now goes now.
    pub fn poll_output(&mut self, now: Instant, buf: &mut CtrlBuf) -> Option<SenderOutput> {
        loop {
            match self.poll_step(now, buf) {
                Step::Out(out) => return Some(out),
                Step::Queued => {}
                Step::Idle => return self.flush(now, buf),
            }
        }
    }

    fn poll_step(&mut self, now: Instant, buf: &mut CtrlBuf) -> Step {
        if let Some(&(code, detail, text)) = self.ending.owed_error() {
            if self.flow.may_send_final() {
                self.ending.error_sent();
                // The session is over: what was queued goes no further.
                self.out = BatchBuilder::new(outbox_limit(&self.neg));
                self.out_ordered = false;
                let msg = Control::Error {
                    code,
                    detail,
                    text: text.as_str(),
                };
                return self.send_alone(now, msg, buf);
            }
        }
        if let Some(e) = self.events.pop() {
            return Step::Out(SenderOutput::Event(e));
        }
        if let Some(outcome) = self.ending.take_outcome() {
            return Step::Out(SenderOutput::Event(match outcome {
                Outcome::Closed => SenderEvent::Closed,
                Outcome::Failed(f) => SenderEvent::Failed(f),
            }));
        }
        if self.is_ended() {
            return Step::Idle;
        }
        self.advance_head();
        if self.auth_pending {
            let Some(proof) = self.neg.sender_proof else {
                return Step::Idle;
            };
            if !self.flow.may_send() {
                return Step::Idle;
            }
            self.auth_pending = false;
            return self.send_alone(now, Control::Auth { proof }, buf);
        }
        // After our goodbye the receiver sends only its goodbye, which needs no ack.
        // spec: [ctrl.pure-ack]
        if self.phase != Phase::GoodbyeSent && self.flow.ack_due() {
            // A queued batch carries the same count in its own ack field.
            if self.batching() && self.out.count() > 0 && self.flow.may_send() {
                return Step::Out(self.flush_now(now, buf));
            }
            self.live.sent(now);
            let processed = self.flow.on_report();
            return Step::Out(SenderOutput::Ack(Imm::ack(processed).encode()));
        }
        if self.out.count() > 0 && !self.batching() && self.flow.may_send() {
            return Step::Out(self.flush_now(now, buf));
        }
        loop {
            if let Some(step) = self.poll_data(now, buf) {
                return step;
            }
            let before = self.ready;
            if let Some(read) = self.poll_read() {
                return Step::Out(SenderOutput::Read(read));
            }
            // Skipping an aborted file's reads may let the data stream skip it too.
            if self.ready == before {
                break;
            }
        }
        self.advance_head();
        if self.phase == Phase::Closing
            && self.out.count() == 0
            && self.head == self.tail
            && self.flow.may_send_final()
        {
            self.phase = Phase::GoodbyeSent;
            return self.send_alone(now, Control::Goodbye, buf);
        }
        // spec: [live.keepalive]
        if self.phase != Phase::GoodbyeSent
            && self.out.count() == 0
            && self.live.keepalive_due(now)
            && self.flow.may_send()
        {
            return self.queue(now, Control::KeepAlive, buf);
        }
        Step::Idle
    }

    /// When to call [`Sender::handle_timeout`] (and drain): the idle deadline, or when a
    /// keepalive is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_ended() {
            return None;
        }
        let keepalive = (self.phase != Phase::GoodbyeSent && self.flow.may_send())
            .then(|| self.live.keepalive_deadline());
        match (self.live.idle_deadline(), keepalive) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---- internals: output ----

    /// Whether control messages travel in batches (`BATCH` agreed).
    fn batching(&self) -> bool {
        self.neg.features.contains(Features::BATCH)
    }

    /// Sends a message that never joins a batch (Auth, Goodbye, Error) by itself. The callers
    /// checked its credit.
    fn send_alone(&mut self, now: Instant, msg: Control<'_>, buf: &mut CtrlBuf) -> Step {
        // Only messages of fixed size or short texts come here; they fit CTRL_MSG_MAX.
        match msg.encode(0, buf) {
            Ok(n) => Step::Out(self.control_write(now, n, buf)),
            Err(_) => Step::Idle,
        }
    }

    /// Puts an ordinary message in the outbox; the caller checked its credit. Without
    /// `BATCH` it goes at once; with it, it waits for more unless the outbox is full, and
    /// then the full outbox goes and this message starts the next one.
    fn queue(&mut self, now: Instant, msg: Control<'_>, buf: &mut CtrlBuf) -> Step {
        let ordered = matches!(msg, Control::FileEnd(_) | Control::FileAbort { .. });
        if self.out.push(&msg, &mut self.outbox) {
            self.out_ordered |= ordered;
            if self.batching() {
                return Step::Queued;
            }
            return Step::Out(self.flush_now(now, buf));
        }
        let full = self.flush_now(now, buf);
        let pushed = self.out.push(&msg, &mut self.outbox);
        debug_assert!(pushed, "a message always fits an empty outbox");
        self.out_ordered = ordered;
        Step::Out(full)
    }

    /// The outbox, if it holds anything and may go now.
    fn flush(&mut self, now: Instant, buf: &mut CtrlBuf) -> Option<SenderOutput> {
        let may_go = self.out.count() > 0
            && !self.corked
            && !self.auth_pending
            && !self.is_ended()
            && self.flow.may_send();
        may_go.then(|| self.flush_now(now, buf))
    }

    /// Sends the outbox (one message, or a batch); the caller checked its credit.
    fn flush_now(&mut self, now: Instant, buf: &mut CtrlBuf) -> SenderOutput {
        let n = self.out.finish(&mut self.outbox);
        buf[..n].copy_from_slice(&self.outbox[..n]);
        self.out_ordered = false;
        for o in self.header_cursor..self.tail {
            if let Some(f) = self.file_mut(o) {
                if f.state == SState::Queued {
                    f.state = SState::AwaitAnswer;
                }
            }
        }
        self.header_cursor = self.tail;
        self.control_write(now, n, buf)
    }

    /// Numbers the message in `buf[..n]`, writes its ack field, and describes the write.
    fn control_write(&mut self, now: Instant, n: usize, buf: &mut CtrlBuf) -> SenderOutput {
        let (number, ack) = self.flow.on_send();
        buf[4..8].copy_from_slice(&ack.to_be_bytes());
        self.live.sent(now);
        // spec: [ctrl.slot]
        let slot = self.ctrl_slot.advance();
        SenderOutput::Control(ControlWrite {
            len: n,
            slot,
            remote_addr: self.neg.ring.addr + self.neg.ctrl_slot_offset(slot),
            rkey: self.neg.ring.rkey,
            imm: Imm::control(number).encode(),
        })
    }

    /// The data stream: the current file's next chunk, its end or its abort.
    fn poll_data(&mut self, now: Instant, buf: &mut CtrlBuf) -> Option<Step> {
        while self.post_cursor < self.answer_cursor {
            let o = self.post_cursor;
            let f = self.file(o)?;
            let (id, chunks, end) = (f.id, f.chunks, f.chunks.end_seq());
            match (f.state, f.abort) {
                (SState::Accepted, Some(reason)) => {
                    if !self.flow.may_send() {
                        return None;
                    }
                    if let Some(file) = self.file_mut(o) {
                        file.state = SState::AbortSent;
                    }
                    self.committed = self.committed.max(end);
                    let abort = Control::FileAbort {
                        file_id: id,
                        reason,
                    };
                    return Some(self.queue(now, abort, buf));
                }
                (SState::Accepted, None) => {
                    if self.posted == end {
                        let digest = self.file(o)?.digest?;
                        if !self.flow.may_send() {
                            return None;
                        }
                        // The next call's last arm moves the cursor past it.
                        if let Some(file) = self.file_mut(o) {
                            file.state = SState::EndSent;
                        }
                        let msg = Control::FileEnd(FileEnd {
                            file_id: id,
                            length: chunks.size,
                            digest,
                        });
                        return Some(self.queue(now, msg, buf));
                    }
                    // spec: [credit.window]
                    let credit_limit = self.peer_consumed + u64::from(self.neg.window);
                    if self.posted >= self.ready || self.posted >= credit_limit {
                        return None;
                    }
                    // A queued end or abort goes before the next chunk.
                    if self.out_ordered {
                        return self
                            .flow
                            .may_send()
                            .then(|| Step::Out(self.flush_now(now, buf)));
                    }
                    let seq = self.posted;
                    self.posted += 1;
                    self.committed = self.committed.max(self.posted);
                    self.last_posted = Some(seq);
                    self.live.sent(now);
                    return Some(Step::Out(SenderOutput::Write(
                        self.chunk_write(id, &chunks, seq),
                    )));
                }
                // Ended, aborted (its result may already be in), or rejected (no chunks):
                // skip what was not posted; chunks still being read wait for their read.
                _ => {
                    // spec: [data.abort-skip]
                    self.posted = self.posted.max(self.ready.min(end));
                    if self.posted < end {
                        return None;
                    }
                    self.post_cursor += 1;
                }
            }
        }
        None
    }

    fn chunk_write(&self, file_id: u64, chunks: &FileChunks, seq: u64) -> ChunkWrite {
        let (file_offset, len) = chunks.span(seq, self.neg.chunk_size);
        let slot = slot(seq, self.neg.window);
        ChunkWrite {
            seq,
            slot,
            remote_addr: self.neg.ring.addr + u64::from(slot) * u64::from(self.neg.chunk_size),
            rkey: self.neg.ring.rkey,
            len,
            imm: Imm::chunk(seq).encode(),
            file_id,
            file_offset,
        }
    }

    /// Read-ahead: the next chunk whose local slot is free.
    fn poll_read(&mut self) -> Option<ChunkRead> {
        while self.read_cursor < self.answer_cursor {
            let f = self.file(self.read_cursor)?;
            let (id, chunks, aborted) = (
                f.id,
                f.chunks,
                f.abort.is_some() || f.state == SState::Closed,
            );
            let end = chunks.end_seq();
            // Rejected files have no chunks: they pass here.
            if self.requested >= end {
                self.read_cursor += 1;
                continue;
            }
            if aborted {
                // No more reads for it; once its outstanding reads are in, skip the rest.
                if self.ready < self.requested {
                    return None;
                }
                // The check above then moves the cursor past it.
                self.requested = end;
                self.ready = end;
                continue;
            }
            if self.requested >= self.released() + u64::from(self.neg.window) {
                return None;
            }
            let seq = self.requested;
            self.requested += 1;
            let (file_offset, len) = chunks.span(seq, self.neg.chunk_size);
            return Some(ChunkRead {
                seq,
                slot: slot(seq, self.neg.window),
                file_id: id,
                file_offset,
                len,
            });
        }
        None
    }

    /// Chunks below this have their local slot free: written and completed, or skipped.
    fn released(&self) -> u64 {
        match self.last_posted {
            Some(last) if self.completed <= last => self.completed,
            _ => self.posted,
        }
    }

    // ---- internals: inputs ----

    fn on_answer(&mut self, file_id: u64, answer: FileAnswer) -> Result<(), Error> {
        let o = self.answer_cursor;
        // spec: [answer.order]
        let Some(f) = self
            .file(o)
            .copied()
            .filter(|f| f.state == SState::AwaitAnswer)
        else {
            return Err(self.violation(Violation::UnknownFile(file_id)));
        };
        // spec: [answer.order]
        if f.id != file_id {
            let later = self
                .find(file_id)
                .is_some_and(|p| self.file(p).is_some_and(|g| g.state == SState::AwaitAnswer));
            let v = if later {
                Violation::AnswerOutOfOrder
            } else {
                Violation::UnknownFile(file_id)
            };
            return Err(self.violation(v));
        }
        // spec: [answer.sync]
        if !answer.fits(f.sync) {
            return Err(self.violation(Violation::BadSync));
        }
        match answer {
            FileAnswer::Accept { offset } | FileAnswer::AcceptChanged { offset, .. } => {
                let changes = match answer {
                    FileAnswer::AcceptChanged { changes, .. } => changes,
                    _ => Changes::empty(),
                };
                let chunk = u64::from(self.neg.chunk_size);
                let resumable =
                    f.kind == Some(EntryKind::File) && self.neg.features.contains(Features::RESUME);
                // spec: [answer.resume]
                if offset > f.chunks.size || offset % chunk != 0 || (offset > 0 && !resumable) {
                    return Err(self.violation(Violation::BadResumeOffset));
                }
                // spec: [data.seq-space]
                let Some(chunks) =
                    f.chunks
                        .assign(self.next_assign_seq, offset, self.neg.chunk_size)
                else {
                    return Err(self.violation(Violation::SeqSpaceExhausted));
                };
                self.next_assign_seq = chunks.end_seq();
                // A directory or a link has no data and no digest: its end goes as is.
                let no_data = f.kind != Some(EntryKind::File);
                if let Some(file) = self.file_mut(o) {
                    file.chunks = chunks;
                    file.state = SState::Accepted;
                    if no_data {
                        file.digest = Some(Digest::NONE);
                    }
                }
                if f.abort.is_none() {
                    self.event(SenderEvent::FileAccepted {
                        file_id,
                        offset,
                        changes,
                    });
                }
            }
            FileAnswer::Reject(reason) => {
                self.close_file(o);
                self.event(SenderEvent::FileRejected { file_id, reason });
            }
            FileAnswer::InSync(changes) => {
                self.close_file(o);
                self.event(SenderEvent::FileInSync { file_id, changes });
            }
            FileAnswer::WouldSend(changes) => {
                self.close_file(o);
                self.event(SenderEvent::FileWouldSend { file_id, changes });
            }
            FileAnswer::Pruned { changes, deleted } => {
                self.close_file(o);
                self.event(SenderEvent::DirectoryPruned {
                    file_id,
                    changes,
                    deleted,
                });
            }
        }
        self.answer_cursor += 1;
        self.advance_head();
        Ok(())
    }

    fn on_result(&mut self, file_id: u64, status: FileStatus) -> Result<(), Error> {
        // Results come in file order and every file before the head is closed (the head
        // moves past rejected and resulted files): the result must be the head's.
        let o = self.head;
        let ended = self
            .file(o)
            .copied()
            .filter(|f| f.id == file_id && matches!(f.state, SState::EndSent | SState::AbortSent));
        // spec: [result.order]
        let Some(f) = ended.filter(|_| o < self.answer_cursor) else {
            return Err(self.violation(Violation::UnknownFile(file_id)));
        };
        // A file whose stream was cut short was not delivered, whatever the receiver says:
        // its result is ABORTED or the cancel's status (§4.5), never OK.
        // spec: [result.not-ok]
        if status.is_ok() && (f.state == SState::AbortSent || f.cancelled) {
            return Err(self.violation(Violation::BadResult));
        }
        self.close_file(o);
        self.advance_head();
        self.event(SenderEvent::FileDone { file_id, status });
        Ok(())
    }

    fn on_cancel(&mut self, file_id: u64, status: FileStatus) -> Result<(), Error> {
        let Some(o) = self.find(file_id) else {
            return Err(self.violation(Violation::UnknownFile(file_id)));
        };
        let Some(f) = self.file(o).copied() else {
            return Err(self.violation(Violation::UnknownFile(file_id)));
        };
        // A receiver cancels a file at most once (§4.5), also when the first one crossed
        // our end or abort.
        let streamed = matches!(
            f.state,
            SState::Accepted | SState::EndSent | SState::AbortSent
        );
        // Its status is the file's result (§4.5): a file cut short is never OK.
        // spec: [cancel.check]
        if f.cancelled || !streamed || status.is_ok() {
            return Err(self.violation(Violation::BadCancel));
        }
        let Some(file) = self.file_mut(o) else {
            return Err(self.violation(Violation::UnknownFile(file_id)));
        };
        file.cancelled = true;
        // Crossed with our own end or abort: the result follows anyway.
        // spec: [cancel.answer]
        if f.state == SState::Accepted {
            file.abort = Some(AbortReason::PEER_CANCELLED);
            self.event(SenderEvent::FileCancelled { file_id, status });
        }
        Ok(())
    }

    /// Closes file `o`: frees its name.
    fn close_file(&mut self, o: u64) {
        let key = self.name_key;
        let Some(f) = self.file_mut(o) else { return };
        f.state = SState::Closed;
        let name_key = f.name_key;
        let (_, names) = self.storage.tables();
        OpenNames::new(names, &mut self.names_used, key).remove(name_key);
    }

    /// Moves past closed files the data cursors are done with.
    fn advance_head(&mut self) {
        while self.head < self.post_cursor.min(self.read_cursor)
            && self
                .file(self.head)
                .is_some_and(|f| f.state == SState::Closed)
        {
            let o = self.head;
            *self.slot_mut(o) = FileSlot::EMPTY;
            self.head += 1;
        }
    }

    // ---- internals: table ----

    fn file(&self, o: u64) -> Option<&SenderFile> {
        if o < self.head || o >= self.tail {
            return None;
        }
        match &self.storage.files().get(self.slots.of(o))?.0 {
            Entry::Sender(f) => Some(f),
            _ => None,
        }
    }

    fn file_mut(&mut self, o: u64) -> Option<&mut SenderFile> {
        if o < self.head || o >= self.tail {
            return None;
        }
        let at = self.slots.of(o);
        let (files, _) = self.storage.tables();
        match &mut files.get_mut(at)?.0 {
            Entry::Sender(f) => Some(f),
            _ => None,
        }
    }

    fn slot_mut(&mut self, o: u64) -> &mut FileSlot {
        let at = self.slots.of(o);
        let (files, _) = self.storage.tables();
        &mut files[at]
    }

    /// The number of the open file with id `file_id` (ids increase with the number).
    fn find(&self, file_id: u64) -> Option<u64> {
        let (mut lo, mut hi) = (self.head, self.tail);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let id = self.file(mid)?.id;
            if id == file_id {
                return Some(mid);
            }
            if id < file_id {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        None
    }

    /// Test hook: as if `n` control messages had been written and acknowledged.
    #[cfg(test)]
    pub(crate) fn skip_control_messages(&mut self, n: u64) {
        // The counters run mod 2³² by design; the slot is the full number's.
        self.flow.skip_sent(n as u32);
        self.ctrl_slot = SlotCursor::at(self.neg.receiver_ctrl_depth, n);
    }

    fn event(&mut self, e: SenderEvent) {
        // handle_control checked for room before the input that queues this.
        let pushed = self.events.push(e);
        debug_assert!(pushed, "event queue overflow despite the room check");
    }

    fn live(&self) -> Result<(), Error> {
        self.ending.live()
    }

    fn violation(&mut self, v: Violation) -> Error {
        self.ending.violation(v)
    }
}

/// Whether a file part may be offered in this session: groups agreed, and parts no smaller
/// than a chunk (so every part but the last is whole chunks, and resume offsets stay
/// chunk-aligned in the file).
pub(crate) fn part_allowed(part: crate::Part, neg: &Negotiated) -> bool {
    // spec: [part.agreed]
    neg.features.contains(Features::LANES) && u32::from(part.shift) >= neg.chunk_size.ilog2()
}
