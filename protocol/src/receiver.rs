//! The receiver role: answers offers, validates every write against what it derived, returns
//! credits as slots are consumed, reports each file's end for verification, and sends the
//! results.
//!
//! # Driving it
//! Inputs: [`Receiver::handle_write`] for every receive completion of a WRITE WITH IMM (a
//! chunk, a control message, or a pure ack; when it says [`Incoming::Control`], pass the
//! message's bytes to [`Receiver::handle_control`] next, which returns a [`FileOffer`] for a
//! header), [`Receiver::handle_timeout`], and the application commands
//! [`Receiver::answer_file`], [`Receiver::chunk_consumed`], [`Receiver::file_verified`],
//! [`Receiver::cancel_file`], [`Receiver::abort`]. After every input drain
//! [`Receiver::poll_output`] until `None`, then arm a timer for [`Receiver::poll_timeout`].
//!
//! The driver reposts each receive *before* handing its completion in, so the credit this
//! machine grants is always backed by posted receives.

use crate::chunks::{slot, FileChunks};
use crate::codes::{AbortReason, ErrorCode, FileRejectReason, FileStatus};
use crate::ending::{Ending, Outcome};
use crate::error::{Error, Failure, UsageError, Violation};
use crate::flow::{CtrlFlow, SlotCursor};
use crate::liveness::Liveness;
use crate::name::is_reserved;
use crate::negotiate::{Negotiated, ParamError};
use crate::open_names::{NameClash, OpenNames};
use crate::storage::{Entry, FileSlot, SlotIndex, Storage};
use crate::time::Instant;
use crate::wire::{
    imm::{chunk_bits, low30, widen30},
    AcceptFlags, Batch, BatchBuilder, Control, CtrlBuf, Digest, DigestKind, EntryKind, Features,
    FileAnswer, FileEnd, FileHeader, Imm, MsgKind, SyncCheck, CTRL_HEADER_LEN as HDR, CTRL_MSG_MAX,
    RECEIVER_MSG_MAX,
};
use crate::Config;

/// The largest message [`Receiver::poll_output`] sends besides Goodbye and Error: a
/// FileAnswer.
const LARGEST_ORDINARY: usize = 32;

/// A file the sender offers; answer it with [`Receiver::answer_file`], in offer order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileOffer<'a> {
    /// The header, name validated.
    pub header: FileHeader<'a>,
    /// When set, the protocol requires rejecting the offer with this reason: a component of
    /// the name starts with [`crate::RESERVED_PREFIX`], the receiver's own temporary files
    /// (`INVALID_NAME`), the name shares a path with an open one (`NAME_CONFLICT`), or the
    /// open-name table has no room for it now (`BUSY`).
    pub refusal: Option<FileRejectReason>,
}

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

/// What a write completion brought.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A data chunk.
    Chunk(ChunkArrival),
    /// A control message of `len` bytes at `ring_offset` in the ring: pass its bytes to
    /// [`Receiver::handle_control`] before anything else.
    Control {
        /// Byte offset of the control slot in the ring.
        ring_offset: u64,
        /// Bytes of the message.
        len: u32,
    },
    /// A pure ack (already taken into account).
    Ack,
}

/// Something the application should know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiverEvent {
    /// All data of the file is consumed and its end received: verify `length` and `digest`
    /// against what was written (for a resumed file, against the whole file), publish, then
    /// call [`Receiver::file_verified`]. A directory arrives this way too (no data).
    FileComplete {
        /// The file.
        file_id: u64,
        /// Total length (equals the offered size).
        length: u64,
        /// The sender's digest of the whole file.
        digest: Digest,
    },
    /// The file's stream ended with nothing to verify: the sender aborted it, this side
    /// cancelled it, or it came without the required digest. Discard what was written; the
    /// result `status` goes to the sender by itself.
    FileDropped {
        /// The file.
        file_id: u64,
        /// Its result.
        status: FileStatus,
        /// The sender's reason, when the sender aborted it.
        abort: Option<AbortReason>,
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

/// Where one file is, at the receiver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum RState {
    /// Waiting for the application's answer.
    #[default]
    Offered,
    /// Answer decided, not yet sent.
    AnswerQueued(FileAnswer),
    /// Accept sent: its chunks, then its end or abort, are due.
    Receiving,
    /// End received: complete once its chunks are consumed.
    Ended(Digest),
    /// Stream ended with nothing to verify, with this result.
    Dropped(FileStatus),
    /// Complete event given; waiting for the application's verdict.
    Verifying,
    /// Verdict known, result not yet sent.
    Resolved(FileStatus),
    /// Rejected (answer sent) or result sent.
    Closed,
}

/// A file's state at the receiver (kept in the caller's [`Storage`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ReceiverFile {
    id: u64,
    kind: Option<EntryKind>,
    state: RState,
    chunks: FileChunks,
    /// One past the last chunk that arrived, once the stream ended.
    stream_end: u64,
    /// A cancel the application asked for: the result it gets, and whether it was sent.
    cancel: Option<(FileStatus, bool)>,
    abort: Option<AbortReason>,
    refusal: Option<FileRejectReason>,
    /// The header's sync request (its digest left out: only its shape matters here).
    sync: Option<SyncCheck>,
    /// Open-name table key; 0 when the name is not in the table.
    name_key: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    /// The sender said goodbye; ours goes out next.
    PeerDone,
}

/// The receiver's state machine. See the module docs for the drive loop.
#[derive(Debug)]
pub struct Receiver<S: Storage> {
    neg: Negotiated,
    storage: S,
    slots: SlotIndex,
    name_key: [u8; 16],
    names_used: usize,
    live: Liveness,
    flow: CtrlFlow,
    phase: Phase,
    /// The sender's proof still expected (with `AUTH_PSK`).
    auth: Option<[u8; 32]>,
    /// Files by number (header order): `head..tail` are in the table.
    head: u64,
    tail: u64,
    open: u64,
    /// Next offer the application answers; next answer to send.
    decide_cursor: u64,
    answer_cursor: u64,
    /// Data order: the file whose stream is current; whose chunks are being consumed; whose
    /// event comes next; whose result comes next.
    data_cursor: u64,
    consume_cursor: u64,
    event_cursor: u64,
    result_cursor: u64,
    last_id: Option<u64>,
    next_assign_seq: u64,
    /// Next chunk expected (skipped chunks of aborted files count as arrived).
    arrived: u64,
    consumed: u64,
    /// Consumed count last sent in a credit.
    advertised: u64,
    /// Number of the next control message (mod 2³²) and its ring slot; whether its bytes
    /// are due, and whether it took the sender's last slot of credit, which only a final
    /// Goodbye or Error may take (§5.2).
    ctrl_expected: u32,
    ctrl_slot: SlotCursor,
    control_pending: bool,
    pending_in_last_slot: bool,
    /// In a batch being handled: where its next message starts in the body.
    batch_next: Option<usize>,
    /// The driver is still feeding this round's inputs: ordinary messages wait (`BATCH`).
    corked: bool,
    cancels_queued: u32,
    ending: Ending,
}

impl<S: Storage> Receiver<S> {
    /// A receiver for a negotiated connection (see [`crate::negotiate()`]), starting at `now`,
    /// keeping its tables in `storage` (at least `neg.max_open_files` file slots).
    pub fn new(neg: Negotiated, config: Config, storage: S, now: Instant) -> Result<Self, Error> {
        neg.check()
            .map_err(|e| Error::Usage(UsageError::InvalidParameters(e)))?;
        config
            .check(&neg)
            .map_err(|e| Error::Usage(UsageError::InvalidParameters(e)))?;
        let mut storage = storage;
        let (files, names) = storage.tables();
        if files.len() < usize::from(neg.max_open_files) {
            return Err(UsageError::InvalidParameters(ParamError::Storage).into());
        }
        files.fill(FileSlot::EMPTY);
        names.fill(crate::NameSlot::EMPTY);
        Ok(Receiver {
            neg,
            slots: SlotIndex::new(storage.files().len()),
            storage,
            name_key: config.name_hash_key,
            names_used: 0,
            live: Liveness::new(config.idle_timeout, neg.keepalive_ms, now),
            flow: CtrlFlow::new(neg.sender_ctrl_depth, neg.receiver_ctrl_depth),
            phase: Phase::Open,
            auth: neg.sender_proof,
            head: 0,
            tail: 0,
            open: 0,
            decide_cursor: 0,
            answer_cursor: 0,
            data_cursor: 0,
            consume_cursor: 0,
            event_cursor: 0,
            result_cursor: 0,
            last_id: None,
            next_assign_seq: 0,
            arrived: 0,
            consumed: 0,
            advertised: 0,
            ctrl_expected: 0,
            ctrl_slot: SlotCursor::new(neg.receiver_ctrl_depth),
            control_pending: false,
            pending_in_last_slot: false,
            batch_next: None,
            corked: false,
            cancels_queued: 0,
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

    /// Whether the sender has proved the pre-shared key (always, when none was agreed):
    /// until then it has sent nothing but its proof, and the receiver should bound how
    /// long it waits for it.
    pub fn is_authenticated(&self) -> bool {
        self.auth.is_none()
    }

    /// Files offered and not yet resolved.
    pub fn open_files(&self) -> u64 {
        self.open
    }

    // ---- inputs from the connection ----

    /// A receive completion of an RDMA WRITE WITH IMMEDIATE: immediate `imm` (host order)
    /// and `byte_len` bytes. Every field of the result is derived, not taken from the peer.
    pub fn handle_write(
        &mut self,
        now: Instant,
        imm: u32,
        byte_len: u32,
    ) -> Result<Incoming, Error> {
        self.live()?;
        if self.control_pending {
            return Err(UsageError::ControlPending.into());
        }
        self.live.arrived(now);
        match Imm::decode(imm) {
            Imm::Chunk(got) => self.on_chunk(got, byte_len).map(Incoming::Chunk),
            Imm::Control(got) => {
                let expected = low30(self.ctrl_expected);
                // spec: [ctrl.seq]
                if got != expected {
                    return Err(self.violation(Violation::WrongCtrlSeq { expected, got }));
                }
                // A correct sender has fewer than D − 1 unacknowledged messages out before an
                // ordinary one and fewer than D before its final one, and it knows of at most
                // the count we reported: D − 1 unreported is the final message's slot.
                let unreported = self.ctrl_expected.wrapping_sub(self.flow.advertised());
                let depth = u32::from(self.neg.receiver_ctrl_depth);
                // spec: [ctrl.overrun]
                if unreported >= depth {
                    return Err(self.violation(Violation::CtrlOverrun));
                }
                // spec: [data.length] [msg.length]
                if !(8..=CTRL_MSG_MAX as u32).contains(&byte_len) {
                    return Err(self.violation(Violation::BadWriteLength {
                        expected: CTRL_MSG_MAX as u32,
                        got: byte_len,
                    }));
                }
                // spec: [ctrl.slot]
                let slot = self.ctrl_slot.advance();
                self.ctrl_expected = self.ctrl_expected.wrapping_add(1);
                self.control_pending = true;
                self.pending_in_last_slot = unreported + 1 == depth;
                Ok(Incoming::Control {
                    ring_offset: self.neg.ctrl_slot_offset(slot),
                    len: byte_len,
                })
            }
            Imm::Ack(low) => {
                if byte_len != 0 {
                    return Err(self.violation(Violation::BadWriteLength {
                        expected: 0,
                        got: byte_len,
                    }));
                }
                let ack = widen30(self.flow.peer_acked(), low);
                if !self.flow.on_peer_ack(ack) {
                    return Err(self.violation(Violation::BadAck));
                }
                Ok(Incoming::Ack)
            }
        }
    }

    /// The bytes of the control message [`Receiver::handle_write`] announced. Returns the
    /// offer when it is a file header.
    ///
    /// A batch (`BATCH`) is handled one message per call: while
    /// [`Receiver::control_pending`] says so, call again with the same bytes. The slot counts
    /// as processed (and may be acknowledged) only after its last message.
    pub fn handle_control<'a>(
        &mut self,
        _now: Instant,
        bytes: &'a [u8],
    ) -> Result<Option<FileOffer<'a>>, Error> {
        self.live()?;
        if !self.control_pending {
            return Err(UsageError::NoControlPending.into());
        }
        let msg = match self.batch_next {
            None => self.open_control(bytes)?,
            Some(at) => {
                let body = bytes.get(HDR..).unwrap_or_default();
                match Batch::rechecked(body).at(at) {
                    Ok((msg, next)) => {
                        self.batch_moved(next, body.len());
                        msg
                    }
                    Err(e) => return Err(self.violation(Violation::Decode(e))),
                }
            }
        };
        self.dispatch(msg)
    }

    /// Whether the control write announced last still holds messages to handle (the rest of
    /// a batch).
    pub fn control_pending(&self) -> bool {
        self.control_pending && !self.is_ended()
    }

    /// Decodes an announced control write: a lone message, or the first of a batch.
    fn open_control<'a>(&mut self, bytes: &'a [u8]) -> Result<Control<'a>, Error> {
        // spec: [batch.agreed]
        let batch = self.neg.features.contains(Features::BATCH)
            && bytes.first() == Some(&(MsgKind::Batch as u8));
        if !batch {
            self.control_pending = false;
            self.flow.on_processed();
        }
        let (ack, msg) = match Control::decode(bytes) {
            Ok(m) => m,
            Err(e) => return Err(self.violation(Violation::Decode(e))),
        };
        if !self.flow.on_peer_ack(ack) {
            return Err(self.violation(Violation::BadAck));
        }
        // spec: [batch.last-slot]
        let is_final = matches!(msg, Control::Goodbye | Control::Error { .. });
        // spec: [ctrl.overrun]
        if self.pending_in_last_slot && !is_final {
            return Err(self.violation(Violation::CtrlOverrun));
        }
        match msg {
            Control::Batch(b) if batch => match b.at(0) {
                Ok((first, next)) => {
                    self.batch_moved(next, b.body().len());
                    Ok(first)
                }
                Err(e) => Err(self.violation(Violation::Decode(e))),
            },
            other => Ok(other),
        }
    }

    /// A batch's message was taken; `next` is where the one after it starts. After the last
    /// the write is done: its slot counts as processed.
    fn batch_moved(&mut self, next: usize, body_len: usize) {
        // spec: [batch.one]
        if next >= body_len {
            self.batch_next = None;
            self.control_pending = false;
            self.flow.on_processed();
        } else {
            self.batch_next = Some(next);
        }
    }

    /// Acts on one control message (alone or from a batch).
    fn dispatch<'a>(&mut self, msg: Control<'a>) -> Result<Option<FileOffer<'a>>, Error> {
        if let Some(expected) = self.auth {
            return match msg {
                Control::Auth { proof } if crate::auth::proofs_equal(&expected, &proof) => {
                    self.auth = None;
                    Ok(None)
                }
                // spec: [psk.sender-proof]
                Control::Auth { .. } => Err(self.violation(Violation::AuthFailed)),
                // spec: [psk.first]
                _ => Err(self.violation(Violation::AuthMissing)),
            };
        }
        match msg {
            Control::FileHeader(h) if self.phase == Phase::Open => self.on_header(h).map(Some),
            Control::FileEnd(end) if self.phase == Phase::Open => self.on_end(end).map(|()| None),
            Control::FileAbort { file_id, reason } if self.phase == Phase::Open => {
                self.on_abort(file_id, reason).map(|()| None)
            }
            Control::KeepAlive => Ok(None),
            Control::Goodbye if self.phase == Phase::Open => {
                // spec: [session.goodbye]
                if self.open != 0 {
                    return Err(self.violation(Violation::GoodbyeWithOpenFiles));
                }
                self.phase = Phase::PeerDone;
                Ok(None)
            }
            Control::Error { code, detail, text } => {
                self.ending.peer_aborted(code, detail, text);
                Ok(None)
            }
            // spec: [msg.unexpected]
            other => Err(self.violation(Violation::UnexpectedMessage(other.kind()))),
        }
    }

    /// Time passed: fails the session if nothing arrived from the sender within the idle
    /// timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.is_ended() && self.live.timed_out(now) {
            self.ending.time_out();
        }
    }

    /// Holds ordinary messages (answers, results, cancels, credits, acks) while `corked`
    /// (`BATCH` only): a driver corks before feeding the inputs that arrived together (one
    /// poll of completions, the results its I/O threads handed back) and uncorks after them,
    /// then drains, so that what they produce goes in as few SENDs as it fits. Without
    /// `BATCH` it changes nothing.
    ///
    /// Returns the previous setting.
    pub fn set_corked(&mut self, corked: bool) -> bool {
        core::mem::replace(&mut self.corked, corked)
    }

    // ---- application commands ----

    /// Answers the oldest unanswered offer: accept from an offset (0 = whole file; more needs
    /// the `RESUME` feature, a multiple of the chunk size, and not past the end), or reject.
    /// An offer with a [`FileOffer::refusal`] must be rejected.
    pub fn answer_file(
        &mut self,
        _now: Instant,
        file_id: u64,
        answer: FileAnswer,
    ) -> Result<(), Error> {
        self.live()?;
        let o = self.decide_cursor;
        let f = self
            .file(o)
            .copied()
            .filter(|f| f.state == RState::Offered)
            .ok_or(UsageError::UnknownFile)?;
        if f.id != file_id {
            let later = self.find(file_id).is_some();
            return Err(if later {
                UsageError::OutOfOrder
            } else {
                UsageError::UnknownFile
            }
            .into());
        }
        let mut chunks = f.chunks;
        let refused = f.refusal.is_some() && !matches!(answer, FileAnswer::Reject(_));
        // spec: [answer.sync]
        if refused || !answer.fits(f.sync) {
            return Err(UsageError::InvalidAnswer.into());
        }
        if let Some(offset) = answer.accepted_offset() {
            let chunk = u64::from(self.neg.chunk_size);
            let resumable =
                f.kind == Some(EntryKind::File) && self.neg.features.contains(Features::RESUME);
            if offset > f.chunks.size || offset % chunk != 0 || (offset > 0 && !resumable) {
                return Err(UsageError::InvalidAnswer.into());
            }
            // spec: [data.seq-space]
            chunks = f
                .chunks
                .assign(self.next_assign_seq, offset, self.neg.chunk_size)
                .ok_or(UsageError::InvalidAnswer)?;
            self.next_assign_seq = chunks.end_seq();
        }
        if let Some(file) = self.file_mut(o) {
            file.chunks = chunks;
            file.state = RState::AnswerQueued(answer);
        }
        self.decide_cursor += 1;
        Ok(())
    }

    /// The application is done with the slot of chunk `seq` (in order): it may be reused.
    pub fn chunk_consumed(&mut self, _now: Instant, seq: u64) -> Result<(), Error> {
        self.live()?;
        if seq != self.consumed || seq >= self.arrived {
            return Err(UsageError::OutOfOrder.into());
        }
        self.consumed += 1;
        self.settle();
        Ok(())
    }

    /// The application's verdict on a completed file (after it verified and published it).
    pub fn file_verified(
        &mut self,
        _now: Instant,
        file_id: u64,
        status: FileStatus,
    ) -> Result<(), Error> {
        self.live()?;
        let o = self.find(file_id).ok_or(UsageError::UnknownFile)?;
        let f = self.file_mut(o).ok_or(UsageError::UnknownFile)?;
        if f.state != RState::Verifying {
            return Err(UsageError::UnknownFile.into());
        }
        f.state = RState::Resolved(status);
        Ok(())
    }

    /// Asks the sender to stop sending an accepted file (the disk filled up, say); the file
    /// gets `status` as its result once its stream ends. Chunks already on their way still
    /// arrive and must be consumed (and discarded).
    pub fn cancel_file(
        &mut self,
        _now: Instant,
        file_id: u64,
        status: FileStatus,
    ) -> Result<(), Error> {
        self.live()?;
        let o = self.find(file_id).ok_or(UsageError::UnknownFile)?;
        let f = self.file_mut(o).ok_or(UsageError::UnknownFile)?;
        let streaming = matches!(
            f.state,
            RState::Receiving
                | RState::AnswerQueued(
                    FileAnswer::Accept { .. } | FileAnswer::AcceptChanged { .. }
                )
        );
        if !streaming || f.cancel.is_some() || status.is_ok() {
            return Err(UsageError::UnknownFile.into());
        }
        f.cancel = Some((status, false));
        self.cancels_queued += 1;
        Ok(())
    }

    /// Aborts the session: queues an error message for the peer and fails.
    pub fn abort(&mut self, _now: Instant, code: ErrorCode) {
        self.ending.abort(code);
    }

    // ---- outputs ----

    /// The next output, or `None` when there is nothing to do until the next input.
    pub fn poll_output(&mut self, now: Instant, buf: &mut CtrlBuf) -> Option<ReceiverOutput> {
        if let Some(&(code, detail, text)) = self.ending.owed_error() {
            if self.flow.may_send_final() {
                self.ending.error_sent();
                let msg = Control::Error {
                    code,
                    detail,
                    text: text.as_str(),
                };
                return self.transmit(now, msg, buf);
            }
        }
        if let Some(e) = self.poll_event() {
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
        let held = self.corked && self.neg.features.contains(Features::BATCH);
        if self.flow.may_send() && !held {
            if let Some(msg) = self.next_message() {
                if self.neg.features.contains(Features::BATCH) && msg != Control::Ack {
                    return Some(self.transmit_batch(now, msg, buf));
                }
                return self.transmit(now, msg, buf);
            }
        }
        if self.phase == Phase::PeerDone && self.flow.may_send_final() {
            self.ending.close();
            return self.transmit(now, Control::Goodbye, buf);
        }
        // spec: [live.keepalive]
        if self.phase == Phase::Open && self.live.keepalive_due(now) && self.flow.may_send() {
            return self.transmit(now, Control::KeepAlive, buf);
        }
        None
    }

    /// When to call [`Receiver::handle_timeout`] (and drain): the idle deadline, or when a
    /// keepalive is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_ended() {
            return None;
        }
        let keepalive = (self.phase == Phase::Open && self.flow.may_send())
            .then(|| self.live.keepalive_deadline());
        match (self.live.idle_deadline(), keepalive) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---- internals: inputs ----

    fn on_chunk(&mut self, got: u32, byte_len: u32) -> Result<ChunkArrival, Error> {
        let seq = self.arrived;
        let expected = chunk_bits(seq);
        // spec: [data.seq]
        if got != expected {
            return Err(self.violation(Violation::WrongSeq { expected, got }));
        }
        // spec: [psk.first]
        if self.auth.is_some() {
            return Err(self.violation(Violation::AuthMissing));
        }
        // spec: [credit.window]
        if seq >= self.advertised + u64::from(self.neg.window) {
            return Err(self.violation(Violation::CreditOverrun));
        }
        self.skip_closed_at_data_cursor();
        let o = self.data_cursor;
        // spec: [data.owner]
        let file = self
            .file(o)
            .copied()
            .filter(|f| f.state == RState::Receiving && f.chunks.contains(seq));
        let Some(file) = file.filter(|_| self.phase == Phase::Open) else {
            return Err(self.violation(Violation::UnexpectedChunk));
        };
        let (file_offset, len) = file.chunks.span(seq, self.neg.chunk_size);
        // spec: [data.length]
        if byte_len != len {
            return Err(self.violation(Violation::BadWriteLength {
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

    fn on_header<'a>(&mut self, h: FileHeader<'a>) -> Result<FileOffer<'a>, Error> {
        self.settle();
        // spec: [open.window]
        if self.tail - self.head >= u64::from(self.neg.max_open_files) {
            return Err(self.violation(Violation::TooManyOpenFiles));
        }
        // spec: [hdr.id]
        if self.last_id.is_some_and(|last| h.file_id <= last) {
            return Err(self.violation(Violation::DuplicateFileId(h.file_id)));
        }
        // spec: [part.agreed]
        if h.part
            .is_some_and(|p| !crate::sender::part_allowed(p, &self.neg))
        {
            return Err(self.violation(Violation::BadPart));
        }
        let features = self.neg.features;
        // spec: [sync.agreed]
        let unagreed = (h.sync.is_some() && !features.contains(Features::SYNC))
            || (h.sync.is_some_and(|s| s.delete) && !features.contains(Features::DELETE));
        if unagreed {
            return Err(self.violation(Violation::BadSync));
        }
        // spec: [link.agreed]
        if h.kind == EntryKind::Symlink && !features.contains(Features::LINKS) {
            return Err(self.violation(Violation::BadLink));
        }
        let content = h.sync.and_then(|s| s.content);
        if content.is_some_and(|d| !d.kind.is_agreed(self.neg.features)) {
            return Err(self.violation(Violation::DigestNotNegotiated));
        }
        let key = self.name_key;
        let (_, names) = self.storage.tables();
        // spec: [name.reserved]
        let (refusal, name_key) = if is_reserved(h.name) {
            // It could name one of our own temporary files: never touch it.
            (Some(FileRejectReason::INVALID_NAME), 0)
        } else {
            match OpenNames::new(names, &mut self.names_used, key).insert(h.name) {
                Ok(k) => (None, k),
                // spec: [name.conflict]
                Err(NameClash::Conflict) => (Some(FileRejectReason::NAME_CONFLICT), 0),
                Err(NameClash::Full) => (Some(FileRejectReason::BUSY), 0),
            }
        };
        let o = self.tail;
        self.tail += 1;
        self.open += 1;
        self.last_id = Some(h.file_id);
        *self.slot_mut(o) = FileSlot(Entry::Receiver(ReceiverFile {
            id: h.file_id,
            kind: Some(h.kind),
            state: RState::Offered,
            chunks: FileChunks::unassigned(h.data_len()),
            refusal,
            sync: h.sync.map(SyncCheck::shape),
            name_key,
            ..ReceiverFile::default()
        }));
        Ok(FileOffer { header: h, refusal })
    }

    /// The current data file, if it is receiving and has id `file_id`.
    fn current_stream(&mut self, file_id: u64) -> Result<(u64, ReceiverFile), Error> {
        self.skip_closed_at_data_cursor();
        let o = self.data_cursor;
        match self.file(o).copied() {
            Some(f) if f.state == RState::Receiving && f.id == file_id => Ok((o, f)),
            _ => Err(self.violation(Violation::UnknownFile(file_id))),
        }
    }

    fn on_end(&mut self, end: FileEnd) -> Result<(), Error> {
        let (o, f) = self.current_stream(end.file_id)?;
        // spec: [end.before-data]
        if self.arrived != f.chunks.end_seq() {
            return Err(self.violation(Violation::EndBeforeData));
        }
        // spec: [end.length]
        if end.length != f.chunks.size {
            return Err(self.violation(Violation::EndLengthMismatch));
        }
        // spec: [end.digest-agreed]
        if !end.digest.kind.is_agreed(self.neg.features) {
            return Err(self.violation(Violation::DigestNotNegotiated));
        }
        // Only a regular file (or part) has data to digest.
        // spec: [end.dir-digest]
        if f.kind != Some(EntryKind::File) && end.digest.kind != DigestKind::None {
            return Err(self.violation(Violation::DirectoryDigest));
        }
        // spec: [end.digest-required]
        let missing_digest = self.neg.flags.contains(AcceptFlags::DIGEST_REQUIRED)
            && f.kind == Some(EntryKind::File)
            && end.digest.kind == DigestKind::None;
        let state = match f.cancel {
            Some((status, _)) => RState::Dropped(status),
            None if missing_digest => RState::Dropped(FileStatus::DIGEST_REQUIRED),
            None => RState::Ended(end.digest),
        };
        self.end_stream(o, state, f.chunks.end_seq());
        Ok(())
    }

    fn on_abort(&mut self, file_id: u64, reason: AbortReason) -> Result<(), Error> {
        let (o, f) = self.current_stream(file_id)?;
        let status = f.cancel.map_or(FileStatus::ABORTED, |(s, _)| s);
        let stream_end = self.arrived;
        // The rest of the file's chunks will not come: the next chunk is the next file's.
        // spec: [data.abort-skip]
        self.arrived = f.chunks.end_seq();
        if let Some(file) = self.file_mut(o) {
            file.abort = Some(reason);
        }
        self.end_stream(o, RState::Dropped(status), stream_end);
        Ok(())
    }

    fn end_stream(&mut self, o: u64, state: RState, stream_end: u64) {
        if let Some(f) = self.file_mut(o) {
            f.state = state;
            f.stream_end = stream_end;
            let unsent_cancel = matches!(f.cancel, Some((_, false)));
            if let Some((status, _)) = f.cancel {
                f.cancel = Some((status, true));
            }
            if unsent_cancel {
                self.cancels_queued -= 1;
            }
        }
        self.data_cursor += 1;
        self.settle();
    }

    // ---- internals: outputs ----

    /// The next ordinary message: answers, results, cancels, credit, ack, in that order.
    fn next_message(&mut self) -> Option<Control<'static>> {
        if let Some(f) = self.file(self.answer_cursor).copied() {
            if let RState::AnswerQueued(answer) = f.state {
                let o = self.answer_cursor;
                self.answer_cursor += 1;
                if answer.accepted_offset().is_some() {
                    if let Some(file) = self.file_mut(o) {
                        file.state = RState::Receiving;
                    }
                } else {
                    // Rejected, or in sync (or a dry run): no data, no result.
                    self.close_file(o);
                    self.settle();
                }
                return Some(Control::FileAnswer {
                    file_id: f.id,
                    answer,
                });
            }
        }
        if let Some(msg) = self.poll_result() {
            return Some(msg);
        }
        if let Some(msg) = self.poll_cancel() {
            return Some(msg);
        }
        // spec: [credit.send]
        if self.consumed - self.advertised >= (u64::from(self.neg.window) / 4).max(1) {
            self.advertised = self.consumed;
            return Some(Control::Credit {
                consumed: self.consumed,
            });
        }
        if self.flow.ack_due() {
            return Some(Control::Ack);
        }
        None
    }

    /// Results go out in data order, each once its file's event was given.
    fn poll_result(&mut self) -> Option<Control<'static>> {
        self.settle();
        let o = self.result_cursor;
        if o >= self.event_cursor {
            return None;
        }
        let f = *self.file(o)?;
        let RState::Resolved(status) = f.state else {
            return None;
        };
        // Closing it lets settle() move the result cursor past it.
        self.close_file(o);
        self.settle();
        Some(Control::FileResult {
            file_id: f.id,
            status,
        })
    }

    fn poll_cancel(&mut self) -> Option<Control<'static>> {
        if self.cancels_queued == 0 {
            return None;
        }
        for o in self.data_cursor..self.answer_cursor {
            let Some(f) = self.file_mut(o) else { continue };
            if let (RState::Receiving, Some((status, false))) = (f.state, f.cancel) {
                f.cancel = Some((status, true));
                let file_id = f.id;
                self.cancels_queued -= 1;
                return Some(Control::FileCancel { file_id, status });
            }
        }
        None
    }

    /// Complete and dropped files, in data order, once all their chunks are consumed.
    fn poll_event(&mut self) -> Option<ReceiverEvent> {
        self.settle();
        while self.event_cursor < self.consume_cursor {
            let o = self.event_cursor;
            let f = *self.file(o)?;
            self.event_cursor += 1;
            match f.state {
                RState::Ended(digest) => {
                    if let Some(file) = self.file_mut(o) {
                        file.state = RState::Verifying;
                    }
                    return Some(ReceiverEvent::FileComplete {
                        file_id: f.id,
                        length: f.chunks.size,
                        digest,
                    });
                }
                RState::Dropped(status) => {
                    if let Some(file) = self.file_mut(o) {
                        file.state = RState::Resolved(status);
                    }
                    return Some(ReceiverEvent::FileDropped {
                        file_id: f.id,
                        status,
                        abort: f.abort,
                    });
                }
                _ => {}
            }
        }
        None
    }

    fn transmit(
        &mut self,
        now: Instant,
        msg: Control<'_>,
        buf: &mut CtrlBuf,
    ) -> Option<ReceiverOutput> {
        let (_, ack) = self.flow.on_send();
        // Receiver messages are fixed-size or short texts: they always fit.
        let n = msg.encode(ack, buf).ok()?;
        self.live.sent(now);
        Some(ReceiverOutput::Transmit(n))
    }

    /// Sends `first` with every ordinary message ready behind it in one SEND (`BATCH`): what
    /// is ready now goes now, so batching adds no wait. A pure Ack is left out: the batch's
    /// own `ack` reports the same count.
    fn transmit_batch(
        &mut self,
        now: Instant,
        first: Control<'static>,
        buf: &mut CtrlBuf,
    ) -> ReceiverOutput {
        let mut batch = BatchBuilder::new(RECEIVER_MSG_MAX);
        let mut next = Some(first);
        while let Some(msg) = next {
            // Ordinary messages are at most LARGEST_ORDINARY bytes: the check below keeps
            // room for this one.
            let pushed = batch.push(&msg, buf);
            debug_assert!(pushed, "an ordinary receiver message fits");
            next = if batch.fits(LARGEST_ORDINARY) {
                self.next_message().filter(|m| *m != Control::Ack)
            } else {
                None
            };
        }
        let n = batch.finish(buf);
        let (_, ack) = self.flow.on_send();
        buf[4..8].copy_from_slice(&ack.to_be_bytes());
        self.live.sent(now);
        ReceiverOutput::Transmit(n)
    }

    // ---- internals: cursors ----

    /// Moves the data-order cursors past what is finished, consumption past skipped chunks,
    /// and the head past closed files.
    fn settle(&mut self) {
        self.skip_closed_at_data_cursor();
        // Consumption: past files whose stream ended and whose arrived chunks are consumed.
        while self.consume_cursor < self.data_cursor {
            let Some(f) = self.file(self.consume_cursor).copied() else {
                break;
            };
            // A rejected file has no chunks and a stream end of 0: it passes at once.
            if self.consumed < f.stream_end {
                break;
            }
            if f.chunks.count > 0 {
                // Chunks of an aborted file that never came count as consumed.
                self.consumed = self.consumed.max(f.chunks.end_seq());
            }
            self.consume_cursor += 1;
        }
        while self.result_cursor < self.event_cursor
            && self
                .file(self.result_cursor)
                .is_some_and(|f| f.state == RState::Closed)
        {
            self.result_cursor += 1;
        }
        while self.head < self.result_cursor
            && self
                .file(self.head)
                .is_some_and(|f| f.state == RState::Closed)
        {
            let o = self.head;
            *self.slot_mut(o) = FileSlot::EMPTY;
            self.head += 1;
        }
    }

    fn skip_closed_at_data_cursor(&mut self) {
        while self.data_cursor < self.answer_cursor
            && self
                .file(self.data_cursor)
                .is_some_and(|f| f.state == RState::Closed)
        {
            self.data_cursor += 1;
        }
    }

    fn close_file(&mut self, o: u64) {
        let key = self.name_key;
        let Some(f) = self.file_mut(o) else { return };
        f.state = RState::Closed;
        let name_key = f.name_key;
        self.open -= 1;
        if name_key != 0 {
            let (_, names) = self.storage.tables();
            OpenNames::new(names, &mut self.names_used, key).remove(name_key);
        }
    }

    fn file(&self, o: u64) -> Option<&ReceiverFile> {
        if o < self.head || o >= self.tail {
            return None;
        }
        match &self.storage.files().get(self.slots.of(o))?.0 {
            Entry::Receiver(f) => Some(f),
            _ => None,
        }
    }

    fn file_mut(&mut self, o: u64) -> Option<&mut ReceiverFile> {
        if o < self.head || o >= self.tail {
            return None;
        }
        let at = self.slots.of(o);
        let (files, _) = self.storage.tables();
        match &mut files.get_mut(at)?.0 {
            Entry::Receiver(f) => Some(f),
            _ => None,
        }
    }

    fn slot_mut(&mut self, o: u64) -> &mut FileSlot {
        let at = self.slots.of(o);
        let (files, _) = self.storage.tables();
        &mut files[at]
    }

    /// The number of the file with id `file_id` (ids increase with the number).
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

    /// Test hook: as if `n` control messages had been received, processed and reported.
    #[cfg(test)]
    pub(crate) fn skip_control_messages(&mut self, n: u64) {
        // The counters run mod 2³² by design; the slot is the full number's.
        self.flow.skip_processed(n as u32);
        self.ctrl_expected = n as u32;
        self.ctrl_slot = SlotCursor::at(self.neg.receiver_ctrl_depth, n);
    }

    fn live(&self) -> Result<(), Error> {
        self.ending.live()
    }

    fn violation(&mut self, v: Violation) -> Error {
        self.ending.violation(v)
    }
}
