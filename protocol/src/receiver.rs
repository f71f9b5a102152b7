//! The receiver role: answers offers, validates every chunk against what it derived, returns
//! credits as slots are consumed, and reports each file's end for verification.
//!
//! # Driving it
//! Inputs: [`Receiver::handle_control`] (returns a [`FileOffer`] to answer),
//! [`Receiver::handle_chunk`] (returns where the chunk belongs), and the application commands
//! [`Receiver::answer_file`], [`Receiver::chunk_consumed`], [`Receiver::file_verified`],
//! [`Receiver::abort`]. After every input drain [`Receiver::poll_output`] until `None`, then arm
//! a timer for [`Receiver::poll_timeout`].
//!
//! The driver reposts each receive buffer *before* handing its bytes in, so the counts in the
//! acks this machine sends are always true.

use crate::chunks::{slot, FileChunks};
use crate::codes::{ErrorCode, FileStatus};
use crate::ending::{Ending, Outcome};
use crate::error::{Error, Failure, UsageError, Violation};
use crate::negotiate::{Negotiated, MAX_OPEN_FILES};
use crate::queue::{Fifo, Table};
use crate::time::Instant;
use crate::wire::{Control, CtrlBuf, Digest, Features, FileAnswer, FileHeader};
use core::time::Duration;

/// A file the sender offers, with its validated name; answer it with
/// [`Receiver::answer_file`], in offer order.
pub type FileOffer<'a> = FileHeader<'a>;

/// Where an arrived chunk belongs; consume it, then call [`Receiver::chunk_consumed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkArrival {
    /// Chunk sequence number.
    pub seq: u64,
    /// Ring slot holding the data (`seq % window`).
    pub slot: u32,
    /// Byte offset of the slot in the ring.
    pub ring_offset: u64,
    /// The file.
    pub file_id: u64,
    /// Offset in the file.
    pub file_offset: u64,
    /// Bytes of data in the slot.
    pub len: u32,
}

/// Something the application should know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiverEvent {
    /// All data of the file is consumed and its end received: verify `length` and `digest`
    /// against what was written, publish, then call [`Receiver::file_verified`].
    FileComplete {
        /// The file.
        file_id: u64,
        /// Total length (equals the offered size).
        length: u64,
        /// The sender's digest of the whole file.
        digest: Digest,
    },
    /// Goodbyes exchanged; the session ended cleanly. Last event.
    Closed,
    /// The session ended badly. Last event.
    Failed(Failure),
}

/// One output of [`Receiver::poll_output`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiverOutput {
    /// SEND the first `n` bytes of the buffer passed to `poll_output`.
    Transmit(usize),
    /// Tell the application.
    Event(ReceiverEvent),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileState {
    /// Waiting for the application's answer.
    Offered,
    /// Answer decided, not yet sent.
    AnswerQueued(FileAnswer),
    /// Accept sent: its chunks, then its end, are due.
    Receiving,
    /// End received; waiting for the application to consume the last chunks.
    Ended(Digest),
    /// Complete event given; waiting for the application's verdict.
    Verifying,
    /// Verdict decided, result not yet sent.
    Resolved(FileStatus),
}

#[derive(Clone, Copy, Debug)]
struct OpenFile {
    id: u64,
    chunks: FileChunks,
    state: FileState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    /// The sender said goodbye; ours goes out next.
    PeerDone,
}

const EVENT_CAPACITY: usize = 2 * MAX_OPEN_FILES + 2;

/// The receiver's state machine. See the module docs for the drive loop.
#[derive(Debug)]
pub struct Receiver {
    neg: Negotiated,
    idle_timeout: Option<Duration>,
    last_activity: Instant,
    phase: Phase,
    files: Table<OpenFile, MAX_OPEN_FILES>,
    next_assign_seq: u64,
    arrived: u64,
    consumed: u64,
    /// Consumed count last sent in a credit.
    advertised: u64,
    /// Control messages sent, and the count the sender has acknowledged processing.
    sent: u32,
    peer_acked: u32,
    /// Sender control messages processed (piggybacked as our ack).
    processed: u32,
    events: Fifo<ReceiverEvent, EVENT_CAPACITY>,
    ending: Ending,
}

impl Receiver {
    /// A receiver for a negotiated connection (see [`crate::negotiate()`]), starting at `now`.
    ///
    /// Fails if `neg` is out of the protocol's limits ([`Negotiated::check`]).
    pub fn new(
        neg: Negotiated,
        idle_timeout: Option<Duration>,
        now: Instant,
    ) -> Result<Self, UsageError> {
        neg.check().map_err(UsageError::InvalidParameters)?;
        Ok(Receiver {
            neg,
            idle_timeout,
            last_activity: now,
            phase: Phase::Open,
            files: Table::new(),
            next_assign_seq: 0,
            arrived: 0,
            consumed: 0,
            advertised: 0,
            sent: 0,
            peer_acked: 0,
            processed: 0,
            events: Fifo::new(),
            ending: Ending::default(),
        })
    }

    // ---- getters ----

    /// The negotiated parameters.
    pub fn negotiated(&self) -> &Negotiated {
        &self.neg
    }

    /// Whether the session has ended (cleanly or not).
    pub fn is_ended(&self) -> bool {
        self.ending.is_ended()
    }

    /// Files offered and not yet resolved.
    pub fn open_files(&self) -> usize {
        self.files.len()
    }

    // ---- inputs from the connection ----

    /// A control message from the sender. Returns the offer when it is a file header.
    pub fn handle_control<'a>(
        &mut self,
        now: Instant,
        bytes: &'a [u8],
    ) -> Result<Option<FileOffer<'a>>, Error> {
        self.live()?;
        self.room_for_events()?;
        self.last_activity = now;
        let (ack, msg) = match Control::decode(bytes) {
            Ok(m) => m,
            Err(e) => return Err(self.violation(Violation::Decode(e))),
        };
        if ack.wrapping_sub(self.peer_acked) > self.sent.wrapping_sub(self.peer_acked) {
            return Err(self.violation(Violation::BadAck));
        }
        self.peer_acked = ack;
        self.processed = self.processed.wrapping_add(1);
        match msg {
            Control::FileHeader(h) if self.phase == Phase::Open => {
                if self.files.iter().any(|f| f.id == h.file_id) {
                    return Err(self.violation(Violation::DuplicateFileId(h.file_id)));
                }
                let file = OpenFile {
                    id: h.file_id,
                    chunks: FileChunks::unassigned(h.size),
                    state: FileState::Offered,
                };
                if !self.files.push(file) {
                    return Err(self.violation(Violation::TooManyOpenFiles));
                }
                Ok(Some(h))
            }
            Control::FileEnd(end) if self.phase == Phase::Open => {
                let Some((i, file)) = self
                    .files
                    .find(|f| f.id == end.file_id && f.state == FileState::Receiving)
                else {
                    return Err(self.violation(Violation::UnknownFile(end.file_id)));
                };
                let earlier_still_receiving = self
                    .files
                    .iter()
                    .take(i)
                    .any(|f| f.state == FileState::Receiving);
                if earlier_still_receiving || self.arrived != file.chunks.end_seq() {
                    return Err(self.violation(Violation::EndBeforeData));
                }
                if end.length != file.chunks.size {
                    return Err(self.violation(Violation::EndLengthMismatch));
                }
                if !end.digest.kind.is_agreed(self.neg.features) {
                    return Err(self.violation(Violation::DigestNotNegotiated));
                }
                if let Some(f) = self.files.get_mut(i) {
                    f.state = FileState::Ended(end.digest);
                }
                self.complete_consumed_files();
                Ok(None)
            }
            Control::Ack => Ok(None),
            Control::Goodbye if self.phase == Phase::Open => {
                if self.files.len() != 0 {
                    return Err(self.violation(Violation::GoodbyeWithOpenFiles));
                }
                self.phase = Phase::PeerDone;
                Ok(None)
            }
            Control::Error { code, text } => {
                self.ending.peer_aborted(code, text);
                Ok(None)
            }
            other => Err(self.violation(Violation::UnexpectedMessage(other.kind()))),
        }
    }

    /// A chunk arrived: an RDMA WRITE WITH IMM completion with immediate `imm` and `byte_len`
    /// bytes. Returns where it belongs; every field is derived, not taken from the peer.
    pub fn handle_chunk(
        &mut self,
        now: Instant,
        imm: u32,
        byte_len: u32,
    ) -> Result<ChunkArrival, Error> {
        self.live()?;
        self.last_activity = now;
        let seq = self.arrived;
        // The immediate carries the low 32 bits of the sequence number.
        let expected = seq as u32;
        if imm != expected {
            return Err(self.violation(Violation::WrongSeq { expected, got: imm }));
        }
        if seq >= self.advertised + u64::from(self.neg.window) {
            return Err(self.violation(Violation::CreditOverrun));
        }
        let file = self
            .files
            .iter()
            .find(|f| f.state == FileState::Receiving && f.chunks.contains(seq))
            .copied();
        let Some(file) = file.filter(|_| self.phase == Phase::Open) else {
            return Err(self.violation(Violation::UnexpectedChunk));
        };
        let (file_offset, len) = file.chunks.span(seq, self.neg.chunk_size);
        if byte_len != len {
            return Err(self.violation(Violation::BadChunkLength {
                expected: len,
                got: byte_len,
            }));
        }
        self.arrived += 1;
        let slot = slot(seq, self.neg.window);
        Ok(ChunkArrival {
            seq,
            slot,
            ring_offset: u64::from(slot) * u64::from(self.neg.chunk_size),
            file_id: file.id,
            file_offset,
            len,
        })
    }

    /// Time passed: fails the session if the sender owes progress past the idle timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|deadline| now >= deadline) {
            self.ending.time_out();
        }
    }

    // ---- application commands ----

    /// Answers the oldest unanswered offer: accept from an offset (0 = whole file; more needs
    /// the `RESUME` feature and must not pass the end), or reject.
    pub fn answer_file(
        &mut self,
        now: Instant,
        file_id: u64,
        answer: FileAnswer,
    ) -> Result<(), Error> {
        self.live()?;
        let (i, file) = self
            .files
            .find(|f| f.state == FileState::Offered)
            .ok_or(UsageError::UnknownFile)?;
        if file.id != file_id {
            let offered_later = self
                .files
                .iter()
                .any(|f| f.id == file_id && f.state == FileState::Offered);
            return Err(if offered_later {
                UsageError::OutOfOrder
            } else {
                UsageError::UnknownFile
            }
            .into());
        }
        // A rejected file keeps no chunks; an accepted one takes the next sequence numbers.
        let chunks = match answer {
            FileAnswer::Accept { offset } => {
                if offset > file.chunks.size
                    || (offset > 0 && !self.neg.features.contains(Features::RESUME))
                {
                    return Err(UsageError::InvalidAnswer.into());
                }
                file.chunks
                    .assign(self.next_assign_seq, offset, self.neg.chunk_size)
            }
            FileAnswer::Reject(_) => file.chunks,
        };
        if let Some(f) = self.files.get_mut(i) {
            f.chunks = chunks;
            f.state = FileState::AnswerQueued(answer);
        }
        self.next_assign_seq += chunks.count;
        self.last_activity = now;
        Ok(())
    }

    /// The application is done with the slot of chunk `seq` (in order): it may be reused.
    pub fn chunk_consumed(&mut self, now: Instant, seq: u64) -> Result<(), Error> {
        self.live()?;
        if seq != self.consumed || seq >= self.arrived {
            return Err(UsageError::OutOfOrder.into());
        }
        self.room_for_events()?;
        self.consumed += 1;
        self.last_activity = now;
        self.complete_consumed_files();
        Ok(())
    }

    /// The application's verdict on a completed file (after it verified and published it).
    pub fn file_verified(
        &mut self,
        now: Instant,
        file_id: u64,
        status: FileStatus,
    ) -> Result<(), Error> {
        self.live()?;
        let file = self
            .files
            .iter_mut()
            .find(|f| f.id == file_id && f.state == FileState::Verifying)
            .ok_or(UsageError::UnknownFile)?;
        file.state = FileState::Resolved(status);
        self.last_activity = now;
        Ok(())
    }

    /// Aborts the session: queues an error message for the peer and fails.
    pub fn abort(&mut self, _now: Instant, code: ErrorCode) {
        self.ending.abort(code);
    }

    // ---- outputs ----

    /// The next output, or `None` when there is nothing to do until the next input.
    pub fn poll_output(&mut self, buf: &mut CtrlBuf) -> Option<ReceiverOutput> {
        if let Some((code, text)) = self.ending.take_owed_error() {
            // The last control slot at the sender is kept for this terminal message.
            if self.outstanding() < u32::from(self.neg.sender_ctrl_depth) {
                if let Some(out) = self.transmit(
                    Control::Error {
                        code,
                        text: text.as_str(),
                    },
                    buf,
                ) {
                    return Some(out);
                }
            }
        }
        if let Some(e) = self.events.pop() {
            return Some(ReceiverOutput::Event(e));
        }
        if let Some(outcome) = self.ending.take_outcome() {
            return Some(ReceiverOutput::Event(match outcome {
                Outcome::Closed => ReceiverEvent::Closed,
                Outcome::Failed(f) => ReceiverEvent::Failed(f),
            }));
        }
        if self.is_ended() {
            return None;
        }
        let may_send = self.outstanding() < u32::from(self.neg.sender_ctrl_depth) - 1;
        if may_send {
            if let Some(out) = self.poll_answer(buf) {
                return Some(out);
            }
            if let Some(out) = self.poll_result(buf) {
                return Some(out);
            }
            if self.credit_due() {
                self.advertised = self.consumed;
                return self.transmit(
                    Control::Credit {
                        consumed: self.consumed,
                    },
                    buf,
                );
            }
        }
        if self.phase == Phase::PeerDone
            && self.outstanding() < u32::from(self.neg.sender_ctrl_depth)
        {
            self.ending.close();
            return self.transmit(Control::Goodbye, buf);
        }
        None
    }

    /// When to call [`Receiver::handle_timeout`]: set while the session is open and the
    /// application owes nothing (no unanswered offer, unconsumed chunk or unverified file).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let idle = self.idle_timeout?;
        if self.phase != Phase::Open {
            return None;
        }
        let app_owes = self.consumed < self.arrived
            || self
                .files
                .iter()
                .any(|f| matches!(f.state, FileState::Offered | FileState::Verifying));
        (!app_owes).then(|| self.last_activity.saturating_add(idle))
    }

    // ---- internals ----

    fn poll_answer(&mut self, buf: &mut CtrlBuf) -> Option<ReceiverOutput> {
        let (i, file) = self
            .files
            .find(|f| matches!(f.state, FileState::AnswerQueued(_)))?;
        let FileState::AnswerQueued(answer) = file.state else {
            return None;
        };
        match answer {
            FileAnswer::Accept { .. } => {
                if let Some(f) = self.files.get_mut(i) {
                    f.state = FileState::Receiving;
                }
                // A zero-length file may already be complete (its end can only follow).
            }
            FileAnswer::Reject(_) => self.files.remove(i),
        }
        self.transmit(
            Control::FileAnswer {
                file_id: file.id,
                answer,
            },
            buf,
        )
    }

    /// Results go out in end order: only when the oldest ended file has its verdict.
    fn poll_result(&mut self, buf: &mut CtrlBuf) -> Option<ReceiverOutput> {
        let (i, file) = self.files.find(|f| {
            matches!(
                f.state,
                FileState::Ended(_) | FileState::Verifying | FileState::Resolved(_)
            )
        })?;
        let FileState::Resolved(status) = file.state else {
            return None;
        };
        self.files.remove(i);
        self.transmit(
            Control::FileResult {
                file_id: file.id,
                status,
            },
            buf,
        )
    }

    /// Credits are coalesced: one per quarter window consumed. That alone cannot stall: a
    /// sender blocked on credit has a whole window in flight, and once the application has
    /// consumed it, `window` ≥ a quarter window chunks are fresh.
    fn credit_due(&self) -> bool {
        let fresh = self.consumed - self.advertised;
        fresh >= (u64::from(self.neg.window) / 4).max(1)
    }

    fn complete_consumed_files(&mut self) {
        let consumed = self.consumed;
        let mut completed = [None; MAX_OPEN_FILES];
        for (slot, f) in completed.iter_mut().zip(self.files.iter_mut()) {
            if let FileState::Ended(digest) = f.state {
                if f.chunks.end_seq() <= consumed {
                    f.state = FileState::Verifying;
                    *slot = Some(ReceiverEvent::FileComplete {
                        file_id: f.id,
                        length: f.chunks.size,
                        digest,
                    });
                }
            }
        }
        for e in completed.into_iter().flatten() {
            // room_for_events() guaranteed MAX_OPEN_FILES free entries.
            let pushed = self.events.push(e);
            debug_assert!(pushed, "event queue overflow despite the room check");
        }
    }

    fn outstanding(&self) -> u32 {
        self.sent.wrapping_sub(self.peer_acked)
    }

    fn transmit(&mut self, msg: Control<'_>, buf: &mut CtrlBuf) -> Option<ReceiverOutput> {
        let n = msg.encode(self.processed, buf).ok()?;
        self.sent = self.sent.wrapping_add(1);
        Some(ReceiverOutput::Transmit(n))
    }

    fn room_for_events(&self) -> Result<(), Error> {
        if self.events.free() <= MAX_OPEN_FILES {
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
