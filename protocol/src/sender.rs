//! The sender role: offers files, writes their chunks into the receiver's ring, ends them.
//!
//! # Driving it
//! Inputs are the `handle_*` methods and the application commands ([`Sender::start_file`],
//! [`Sender::data_ready`], [`Sender::finish_file`], [`Sender::close`], [`Sender::abort`]).
//! After every input, drain [`Sender::poll_output`] until it returns `None`, then arm a timer
//! for [`Sender::poll_timeout`] and call [`Sender::handle_timeout`] when it fires.
//!
//! Outputs, in the order the driver acts on them:
//! - `Transmit(n)`: SEND the first `n` bytes of the buffer as a control message.
//! - `Read(r)`: fill local slot `r.slot` with `r.len` bytes of file `r.file_id` at
//!   `r.file_offset`, then call [`Sender::data_ready`] (in sequence order).
//! - `Write(w)`: post RDMA WRITE WITH IMM of local slot `w.slot` (`w.len` bytes) to
//!   `w.remote_addr` with immediate `w.imm`; report its completion with
//!   [`Sender::handle_write_completed`] (completions arrive in order on an RC send queue).
//! - `Event(e)`: tell the application.
//!
//! Data flow per chunk `seq`: requested (a local slot is free) → data ready → posted (the
//! receiver granted credit) → completed (the local slot is free again).

use crate::chunks::{slot, FileChunks};
use crate::codes::{ErrorCode, FileRejectReason, FileStatus};
use crate::ending::{Ending, Outcome};
use crate::error::{Error, Failure, UsageError, Violation};
use crate::name::validate_name;
use crate::negotiate::{Negotiated, MAX_OPEN_FILES};
use crate::queue::{Fifo, Table};
use crate::time::Instant;
use crate::wire::{Control, CtrlBuf, Digest, Features, FileAnswer, FileEnd, FileHeader};
use core::time::Duration;

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
    /// Immediate data: the low 32 bits of `seq`.
    pub imm: u32,
    /// The file (for the driver's bookkeeping; not sent).
    pub file_id: u64,
    /// Offset in the file (for the driver's bookkeeping; not sent).
    pub file_offset: u64,
}

/// Something the application should know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SenderEvent {
    /// The receiver accepted the file; data from `offset` will be requested.
    FileAccepted {
        /// The file.
        file_id: u64,
        /// First byte sent (non-zero when resuming).
        offset: u64,
    },
    /// The receiver refused the file.
    FileRejected {
        /// The file.
        file_id: u64,
        /// Why.
        reason: FileRejectReason,
    },
    /// The receiver's verdict on a file whose data was all sent.
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
    /// SEND the first `n` bytes of the buffer passed to `poll_output`.
    Transmit(usize),
    /// Fill a local slot with file data.
    Read(ChunkRead),
    /// Post a chunk write.
    Write(ChunkWrite),
    /// Tell the application.
    Event(SenderEvent),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileState {
    /// Header sent, answer pending.
    AwaitAnswer,
    /// Accepted: its chunks are assigned.
    Data,
    /// End sent, result pending.
    EndSent,
}

#[derive(Clone, Copy, Debug)]
struct OpenFile {
    id: u64,
    chunks: FileChunks,
    digest: Option<Digest>,
    state: FileState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    /// `close` called: goodbye goes out once every file is resolved.
    Closing,
    GoodbyeSent,
}

/// Events one input can queue at most, plus slack for the terminal event path.
const EVENT_CAPACITY: usize = 2 * MAX_OPEN_FILES + 2;

/// The sender's state machine. See the module docs for the drive loop.
#[derive(Debug)]
pub struct Sender {
    neg: Negotiated,
    idle_timeout: Option<Duration>,
    last_activity: Instant,
    phase: Phase,
    files: Table<OpenFile, MAX_OPEN_FILES>,
    /// First sequence number of the next accepted file.
    next_assign_seq: u64,
    requested: u64,
    ready: u64,
    posted: u64,
    completed: u64,
    /// Chunks the receiver has consumed (from its credits).
    peer_consumed: u64,
    /// Receiver control messages processed, and the count last told to the receiver.
    processed: u32,
    advertised: u32,
    events: Fifo<SenderEvent, EVENT_CAPACITY>,
    ending: Ending,
}

impl Sender {
    /// A sender for a negotiated connection (see [`crate::check_reply`]), starting at `now`.
    ///
    /// Fails if `neg` is out of the protocol's limits ([`Negotiated::check`]).
    pub fn new(
        neg: Negotiated,
        idle_timeout: Option<Duration>,
        now: Instant,
    ) -> Result<Self, UsageError> {
        neg.check().map_err(UsageError::InvalidParameters)?;
        Ok(Sender {
            neg,
            idle_timeout,
            last_activity: now,
            phase: Phase::Open,
            files: Table::new(),
            next_assign_seq: 0,
            requested: 0,
            ready: 0,
            posted: 0,
            completed: 0,
            peer_consumed: 0,
            processed: 0,
            advertised: 0,
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

    /// Files opened and not yet resolved.
    pub fn open_files(&self) -> usize {
        self.files.len()
    }

    /// Whether another file may be started now.
    pub fn can_start_file(&self) -> bool {
        self.phase == Phase::Open && !self.files.is_full()
    }

    /// Chunks posted and not yet consumed by the receiver.
    pub fn in_flight(&self) -> u64 {
        self.posted - self.peer_consumed
    }

    // ---- application commands ----

    /// Offers a file: encodes its header into `buf` and returns the length to SEND now.
    pub fn start_file(
        &mut self,
        now: Instant,
        info: &FileInfo<'_>,
        buf: &mut CtrlBuf,
    ) -> Result<usize, Error> {
        self.live()?;
        if self.phase != Phase::Open {
            return Err(UsageError::NotOpen.into());
        }
        if self.files.is_full() {
            return Err(UsageError::TooManyOpenFiles.into());
        }
        if self.files.iter().any(|f| f.id == info.file_id) {
            return Err(UsageError::DuplicateFileId.into());
        }
        validate_name(info.name.as_bytes()).map_err(UsageError::InvalidName)?;
        if info.mode & !0o7777 != 0 || info.mtime_nsec >= 1_000_000_000 {
            return Err(UsageError::InvalidMetadata.into());
        }
        let header = Control::FileHeader(FileHeader {
            file_id: info.file_id,
            size: info.size,
            mtime_sec: info.mtime_sec,
            mtime_nsec: info.mtime_nsec,
            mode: info.mode,
            name: info.name,
        });
        // A validated name (≤ MAX_NAME_LEN) always fits CTRL_MSG_MAX (asserted in wire).
        let n = header
            .encode(self.processed, buf)
            .map_err(|_| UsageError::InvalidName(crate::name::NameError::TooLong))?;
        self.advertised = self.processed;
        let pushed = self.files.push(OpenFile {
            id: info.file_id,
            chunks: FileChunks::unassigned(info.size),
            digest: None,
            state: FileState::AwaitAnswer,
        });
        debug_assert!(pushed, "checked not full above");
        self.last_activity = now;
        Ok(n)
    }

    /// Reports that local slot of chunk `seq` holds its data. Must be called in `seq` order.
    pub fn data_ready(&mut self, now: Instant, seq: u64) -> Result<(), Error> {
        self.live()?;
        if seq != self.ready || seq >= self.requested {
            return Err(UsageError::OutOfOrder.into());
        }
        self.ready += 1;
        self.last_activity = now;
        Ok(())
    }

    /// Gives the digest of an accepted file's whole content; its end is sent once all its
    /// chunks are posted. [`crate::DigestKind::None`] is always allowed.
    pub fn finish_file(&mut self, now: Instant, file_id: u64, digest: Digest) -> Result<(), Error> {
        self.live()?;
        if !digest.kind.is_agreed(self.neg.features) {
            return Err(UsageError::DigestNotNegotiated.into());
        }
        let file = self
            .files
            .iter_mut()
            .find(|f| f.id == file_id && f.state == FileState::Data && f.digest.is_none())
            .ok_or(UsageError::UnknownFile)?;
        file.digest = Some(digest);
        self.last_activity = now;
        Ok(())
    }

    /// Ends the session once every open file is resolved: the goodbye follows the last result.
    pub fn close(&mut self, now: Instant) -> Result<(), Error> {
        self.live()?;
        if self.phase == Phase::Open {
            self.phase = Phase::Closing;
        }
        self.last_activity = now;
        Ok(())
    }

    /// Aborts the session: queues an error message for the peer and fails.
    pub fn abort(&mut self, _now: Instant, code: ErrorCode) {
        self.ending.abort(code);
    }

    // ---- inputs from the connection ----

    /// A control message from the receiver (its buffer already reposted).
    pub fn handle_control(&mut self, now: Instant, bytes: &[u8]) -> Result<(), Error> {
        self.live()?;
        self.room_for_events()?;
        self.last_activity = now;
        let msg = match Control::decode(bytes) {
            Ok((_ack, msg)) => msg,
            Err(e) => return Err(self.violation(Violation::Decode(e))),
        };
        self.processed = self.processed.wrapping_add(1);
        match msg {
            Control::FileAnswer { file_id, answer } => self.on_answer(file_id, answer),
            Control::Credit { consumed } => {
                if consumed < self.peer_consumed || consumed > self.posted {
                    return Err(self.violation(Violation::BadCredit));
                }
                self.peer_consumed = consumed;
                Ok(())
            }
            Control::FileResult { file_id, status } => {
                let first = self.files.get(0).copied();
                match first {
                    Some(f) if f.id == file_id && f.state == FileState::EndSent => {
                        self.files.remove(0);
                        self.event(SenderEvent::FileDone { file_id, status });
                        Ok(())
                    }
                    _ => Err(self.violation(Violation::UnknownFile(file_id))),
                }
            }
            Control::Goodbye if self.phase == Phase::GoodbyeSent => {
                self.ending.close();
                Ok(())
            }
            Control::Error { code, text } => {
                self.ending.peer_aborted(code, text);
                Ok(())
            }
            other => Err(self.violation(Violation::UnexpectedMessage(other.kind()))),
        }
    }

    /// The RDMA write of chunk `seq` completed successfully (in order).
    pub fn handle_write_completed(&mut self, now: Instant, seq: u64) -> Result<(), Error> {
        self.live()?;
        if seq != self.completed || seq >= self.posted {
            return Err(UsageError::OutOfOrder.into());
        }
        self.completed += 1;
        self.last_activity = now;
        Ok(())
    }

    /// Time passed: fails the session if the peer owes progress past the idle timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|deadline| now >= deadline) {
            self.ending.time_out();
        }
    }

    // ---- outputs ----

    /// The next output, or `None` when there is nothing to do until the next input.
    pub fn poll_output(&mut self, buf: &mut CtrlBuf) -> Option<SenderOutput> {
        if let Some((code, text)) = self.ending.take_owed_error() {
            let msg = Control::Error {
                code,
                text: text.as_str(),
            };
            if let Ok(n) = msg.encode(self.processed, buf) {
                return Some(SenderOutput::Transmit(n));
            }
        }
        if let Some(e) = self.events.pop() {
            return Some(SenderOutput::Event(e));
        }
        if let Some(outcome) = self.ending.take_outcome() {
            return Some(SenderOutput::Event(match outcome {
                Outcome::Closed => SenderEvent::Closed,
                Outcome::Failed(f) => SenderEvent::Failed(f),
            }));
        }
        if self.is_ended() {
            return None;
        }
        // After our goodbye the receiver sends only its goodbye, which needs no ack.
        if self.phase != Phase::GoodbyeSent
            && self.processed.wrapping_sub(self.advertised)
                >= ack_threshold(self.neg.sender_ctrl_depth)
        {
            return self.transmit(Control::Ack, buf);
        }
        if let Some(out) = self.poll_data(buf) {
            return Some(out);
        }
        if self.requested < self.completed + u64::from(self.neg.window)
            && self.requested < self.next_assign_seq
        {
            if let Some(read) = self.chunk_read(self.requested) {
                self.requested += 1;
                return Some(SenderOutput::Read(read));
            }
        }
        if self.phase == Phase::Closing && self.files.len() == 0 {
            self.phase = Phase::GoodbyeSent;
            return self.transmit(Control::Goodbye, buf);
        }
        None
    }

    /// When to call [`Sender::handle_timeout`]: set while the peer owes an answer, a credit,
    /// a result or a goodbye.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let idle = self.idle_timeout?;
        if self.is_ended() {
            return None;
        }
        let blocked_on_credit = self.posted < self.ready && self.posted >= self.credit_limit();
        let waiting = self.phase == Phase::GoodbyeSent
            || blocked_on_credit
            || self.completed < self.posted
            || self.files.iter().any(|f| f.state != FileState::Data);
        waiting.then(|| self.last_activity.saturating_add(idle))
    }

    // ---- internals ----

    /// The data cursor: end the current file, or post its next ready chunk.
    fn poll_data(&mut self, buf: &mut CtrlBuf) -> Option<SenderOutput> {
        let (i, file) = self.files.find(|f| f.state == FileState::Data)?;
        if self.posted == file.chunks.end_seq() {
            let digest = file.digest?;
            if let Some(f) = self.files.get_mut(i) {
                f.state = FileState::EndSent;
            }
            let end = FileEnd {
                file_id: file.id,
                length: file.chunks.size,
                digest,
            };
            return self.transmit(Control::FileEnd(end), buf);
        }
        if self.posted < self.ready && self.posted < self.credit_limit() {
            let seq = self.posted;
            let (file_offset, len) = file.chunks.span(seq, self.neg.chunk_size);
            let slot = slot(seq, self.neg.window);
            self.posted += 1;
            return Some(SenderOutput::Write(ChunkWrite {
                seq,
                slot,
                remote_addr: self.neg.ring.addr + u64::from(slot) * u64::from(self.neg.chunk_size),
                rkey: self.neg.ring.rkey,
                len,
                // The immediate carries the low 32 bits; the receiver expects them in order.
                imm: seq as u32,
                file_id: file.id,
                file_offset,
            }));
        }
        None
    }

    fn chunk_read(&self, seq: u64) -> Option<ChunkRead> {
        let file = self
            .files
            .iter()
            .find(|f| f.state == FileState::Data && f.chunks.contains(seq))?;
        let (file_offset, len) = file.chunks.span(seq, self.neg.chunk_size);
        Some(ChunkRead {
            seq,
            slot: slot(seq, self.neg.window),
            file_id: file.id,
            file_offset,
            len,
        })
    }

    fn credit_limit(&self) -> u64 {
        self.peer_consumed + u64::from(self.neg.window)
    }

    fn on_answer(&mut self, file_id: u64, answer: FileAnswer) -> Result<(), Error> {
        let Some((i, file)) = self.files.find(|f| f.state == FileState::AwaitAnswer) else {
            return Err(self.violation(Violation::UnknownFile(file_id)));
        };
        if file.id != file_id {
            return Err(self.violation(Violation::AnswerOutOfOrder));
        }
        match answer {
            FileAnswer::Accept { offset } => {
                if offset > file.chunks.size
                    || (offset > 0 && !self.neg.features.contains(Features::RESUME))
                {
                    return Err(self.violation(Violation::BadResumeOffset));
                }
                let chunks = file
                    .chunks
                    .assign(self.next_assign_seq, offset, self.neg.chunk_size);
                self.next_assign_seq = chunks.end_seq();
                if let Some(f) = self.files.get_mut(i) {
                    f.chunks = chunks;
                    f.state = FileState::Data;
                }
                self.event(SenderEvent::FileAccepted { file_id, offset });
            }
            FileAnswer::Reject(reason) => {
                self.files.remove(i);
                self.event(SenderEvent::FileRejected { file_id, reason });
            }
        }
        Ok(())
    }

    fn transmit(&mut self, msg: Control<'_>, buf: &mut CtrlBuf) -> Option<SenderOutput> {
        // Only fixed-size messages go through here; they always fit CTRL_MSG_MAX.
        let n = msg.encode(self.processed, buf).ok()?;
        self.advertised = self.processed;
        Some(SenderOutput::Transmit(n))
    }

    fn event(&mut self, e: SenderEvent) {
        // room_for_events() ran before the input that queues this.
        let pushed = self.events.push(e);
        debug_assert!(pushed, "event queue overflow despite the room check");
    }

    fn room_for_events(&self) -> Result<(), Error> {
        if self.events.free() < 2 {
            return Err(UsageError::OutputsNotDrained.into());
        }
        Ok(())
    }

    fn live(&self) -> Result<(), Error> {
        self.ending.live()
    }

    fn violation(&mut self, v: Violation) -> Error {
        self.ending.violation(v)
    }
}

/// Processed-but-unacknowledged receiver messages that make the sender send a pure ack: half
/// the sender's control depth, so the receiver (which may use depth − 1 for ordinary
/// messages) is never left waiting.
pub(crate) fn ack_threshold(sender_ctrl_depth: u16) -> u32 {
    u32::from(sender_ctrl_depth / 2).max(1)
}
