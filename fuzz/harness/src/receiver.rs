//! A `Receiver` driven by arbitrary operations against a model of what it must do.
//!
//! Operations: the sender's writes (control messages written into the ring and handed in,
//! raw or well-formed [`Msg`]; chunks; pure acks; any immediate and length), the
//! application's commands (`answer_file`, `chunk_consumed`, `file_verified`, `cancel_file`,
//! `abort`) and time. After each one (unless `Hold`) `poll_output` is drained and every
//! output is checked against the model:
//! - every input's result is the one the model predicts: chunks only for the current
//!   stream's file, once its accept went out, within the credit, with the derived length;
//!   control writes numbered and within the control credit; every field of an arrival
//!   derived, never taken from the peer; violations fail the session and send an error,
//!   usage errors change nothing;
//! - messages fit `RECEIVER_MSG_MAX`, decode, carry the count of sender messages processed,
//!   and keep within the sender's receive buffers (the last one for the final Goodbye or
//!   Error); answers in offer order as decided; results in stream order with the verdict;
//!   cancels only for streaming files; credits cumulative, exactly what was consumed or
//!   skipped; pure acks at half the ring;
//! - events in stream order once a file's chunks are consumed; exactly one final event,
//!   nothing after it; the timer never asks to be called in the past.
//!
//! At the end of every drain, what the model says must have gone out has (credit permitting):
//! answers, results, cancels, credits, acks, keepalives, events and the goodbye.

use crate::common::*;
use crate::msg::{ack_field, build, Msg, Peer};
use arbitrary::{Arbitrary, Unstructured};
use rdmaft_protocol::wire::MsgKind;
use rdmaft_protocol::*;
use std::collections::VecDeque;

/// The immediate of a control write.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum ImmChoice {
    /// The next control message number.
    Next,
    /// Anything.
    Raw(u32),
}

/// The byte count of a write.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum LenChoice {
    /// The message's (or chunk's) own length.
    Exact,
    /// Anything (a control message is then cut or zero-padded to it).
    Raw(u16),
}

/// One input to the receiver.
#[derive(Arbitrary, Debug, Clone)]
pub enum ReceiverOp {
    /// A well-formed control message written into the ring, then handed in.
    Msg {
        /// Its ack count.
        ack: AckChoice,
        /// The message.
        msg: Msg,
        /// The write's immediate.
        imm: ImmChoice,
        /// The write's length.
        len: LenChoice,
    },
    /// Raw bytes written as the next control message, then handed in.
    Raw(Vec<u8>),
    /// Only the write of the next control message (its bytes are then due).
    Announce(LenChoice),
    /// Only the bytes of a well-formed control message (announced or not).
    Deliver {
        /// Its ack count.
        ack: AckChoice,
        /// The message.
        msg: Msg,
    },
    /// Keepalives written and handed in one after another (`count % 32` of them), each
    /// with this ack count: a sender that does not keep up fills the control ring.
    Flood {
        /// The ack count of each.
        ack: AckChoice,
        /// How many.
        count: u8,
    },
    /// `handle_write` with any immediate and length (a control message is then due).
    Write {
        /// Immediate.
        imm: u32,
        /// Byte count.
        len: u32,
    },
    /// `handle_control` on any bytes, announced or not.
    Bytes(Vec<u8>),
    /// The next chunk.
    ChunkNext(LenChoice),
    /// Every chunk of the current stream the credit allows.
    Stream,
    /// A pure ack.
    PureAck {
        /// The count.
        ack: AckChoice,
        /// With one byte (must be empty).
        nonempty: bool,
    },
    /// `answer_file` for the oldest unanswered offer.
    AnswerNext(crate::common::Answer),
    /// `answer_file` for the oldest unanswered offer, as a well-behaved application: accept,
    /// or reject with the refusal.
    AnswerAuto,
    /// `answer_file` for any file.
    Answer {
        /// File.
        file: FileRef,
        /// Decision.
        answer: RawAnswer,
    },
    /// `chunk_consumed` for the oldest unconsumed chunk.
    ConsumeNext,
    /// `chunk_consumed` for every arrived chunk.
    ConsumeAll,
    /// `chunk_consumed` for any sequence number.
    Consume(u64),
    /// `file_verified` for the oldest complete file.
    VerifyNext(u16),
    /// `file_verified` for any file.
    Verify {
        /// File.
        file: FileRef,
        /// Status code.
        status: u16,
    },
    /// `cancel_file`.
    Cancel {
        /// File (`Next`: the current stream's).
        file: FileRef,
        /// Status code.
        status: u16,
    },
    /// `abort` with this code.
    Abort(u16),
    /// A well-behaved sender and application catch up: consumption, verdicts, answers,
    /// chunks, an end, a pure ack (each a separate input, drained).
    Pump,
    /// Time passes (milliseconds), then `handle_timeout`.
    Timeout(u16),
    /// Do not drain after the next operation.
    Hold,
}

/// The harness.
pub fn receiver(data: &[u8]) {
    run(data);
}

/// The harness, reporting how far it got (`None`: no machine was built).
pub(crate) fn run(data: &[u8]) -> Option<Outcome> {
    let mut u = Unstructured::new(data);
    let (neg, config) = setup(&mut u).ok()?;
    let mut r = match Receiver::new(neg, config, Store::new(), Instant::ZERO) {
        Ok(r) => r,
        Err(e) => {
            assert!(
                !valid_setup(&neg, &config),
                "valid agreement refused: {e}: {neg:?} {config:?}"
            );
            assert!(matches!(e, Error::Usage(UsageError::InvalidParameters(_))));
            return None;
        }
    };
    assert!(
        valid_setup(&neg, &config),
        "invalid agreement taken: {neg:?} {config:?}"
    );
    let mut m = Rx::new(neg, config);
    m.drain(&mut r);
    let mut hold = false;
    for _ in 0..MAX_OPS {
        if u.is_empty() {
            break;
        }
        let Ok(op) = ReceiverOp::arbitrary(&mut u) else {
            break;
        };
        match op {
            ReceiverOp::Hold => hold = true,
            ReceiverOp::Pump => {
                m.pump(&mut r);
                hold = false;
            }
            ReceiverOp::Flood { ack, count } => {
                let op = ReceiverOp::Msg {
                    ack,
                    msg: Msg::KeepAlive,
                    imm: ImmChoice::Next,
                    len: LenChoice::Exact,
                };
                for _ in 0..count % 32 {
                    m.step(&mut r, &op);
                    m.drain(&mut r);
                }
                hold = false;
            }
            ReceiverOp::Stream => {
                m.stream(&mut r);
                hold = false;
            }
            op => {
                m.step(&mut r, &op);
                if !std::mem::take(&mut hold) {
                    m.drain(&mut r);
                }
            }
        }
    }
    m.drain(&mut r);
    Some(Outcome {
        resolved: m.files.iter().filter(|f| f.closed).count(),
        closed: m.terminal_seen && m.terminal == Some(Terminal::Closed),
        failed: m.terminal_seen && m.terminal != Some(Terminal::Closed),
    })
}

/// How a file's data stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RxEnd {
    /// With its end: verify this digest.
    Ended(Digest),
    /// Nothing to verify: this result, and the sender's abort reason if it aborted.
    Dropped(FileStatus, Option<AbortReason>),
}

#[derive(Clone, Debug)]
struct RxFile {
    id: u64,
    kind: EntryKind,
    /// Bytes its stream carries: the part's for a part, else the size.
    len: u64,
    name: String,
    refusal: Option<FileRejectReason>,
    decided: Option<FileAnswer>,
    answer_sent: bool,
    first: u64,
    count: u64,
    offset: u64,
    arrived: u64,
    stream: Option<RxEnd>,
    /// A cancel asked for: the status, and whether it went out (or is moot).
    cancel: Option<(FileStatus, bool)>,
    event: bool,
    verdict: Option<FileStatus>,
    result_sent: bool,
    closed: bool,
}

impl RxFile {
    fn name(&self) -> &str {
        &self.name
    }

    fn accepted(&self) -> bool {
        matches!(self.decided, Some(FileAnswer::Accept { .. }))
    }

    fn end_seq(&self) -> u64 {
        self.first + self.count
    }

    /// Accepted, answer sent, stream open.
    fn receiving(&self) -> bool {
        self.accepted() && self.answer_sent && self.stream.is_none()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Terminal {
    Closed,
    Failed(Failure),
}

/// What the inputs and outputs so far imply about the receiver.
struct Rx {
    neg: Negotiated,
    idle: Option<std::time::Duration>,
    clock: Clock,
    files: Vec<RxFile>,
    last_id: Option<u64>,
    next_assign: u64,
    /// Next chunk expected (skipped numbers count as arrived), arrived chunks not consumed.
    arrived: u64,
    arrivals: VecDeque<u64>,
    last_credit: u64,
    /// Control writes taken, whether their bytes are due, messages processed, and the
    /// count last reported.
    ctrl: u32,
    control_pending: bool,
    /// The announced message took the sender's last slot of credit (final messages only).
    pending_in_last_slot: bool,
    processed: u32,
    reported: u32,
    /// Messages sent, and how many the sender acknowledged.
    sent: u32,
    peer_acked: u32,
    peer_done: bool,
    auth: Option<[u8; 32]>,
    ended: bool,
    terminal: Option<Terminal>,
    terminal_seen: bool,
    owed_error: Option<(ErrorCode, u16)>,
    last_arrival: Instant,
    last_sent: Instant,
}

impl Peer for Rx {
    fn last_id(&self) -> Option<u64> {
        self.last_id
    }

    fn next_file(&self, _kind: MsgKind) -> Option<u64> {
        self.current()
            .or_else(|| {
                self.files
                    .iter()
                    .find(|f| f.accepted() && f.stream.is_none())
            })
            .map(|f| f.id)
    }

    fn size_of(&self, id: u64) -> u64 {
        self.by_id(id).map_or(0, |f| f.len)
    }

    fn credit(&self) -> (u64, u64) {
        (self.consumed(), self.last_credit)
    }

    fn proof(&self) -> [u8; 32] {
        self.neg.sender_proof.unwrap_or_default()
    }

    fn chunk(&self) -> u32 {
        self.neg.chunk_size
    }
}

#[track_caller]
fn expect<T: PartialEq + std::fmt::Debug>(
    got: &Result<T, Error>,
    expected: &Result<T, Error>,
    what: &str,
) {
    assert_eq!(got, expected, "{what}: the model expects otherwise");
}

/// The full count whose low 30 bits are `low`, at or after `base` (PROTOCOL.md §5.2).
fn widen30(base: u32, low: u32) -> u32 {
    base.wrapping_add(low.wrapping_sub(base) & ((1 << 30) - 1))
}

impl Rx {
    fn new(neg: Negotiated, config: Config) -> Rx {
        Rx {
            neg,
            idle: config.idle_timeout,
            clock: Clock::default(),
            files: Vec::new(),
            last_id: None,
            next_assign: 0,
            arrived: 0,
            arrivals: VecDeque::new(),
            last_credit: 0,
            ctrl: 0,
            control_pending: false,
            pending_in_last_slot: false,
            processed: 0,
            reported: 0,
            sent: 0,
            peer_acked: 0,
            peer_done: false,
            auth: neg.sender_proof,
            ended: false,
            terminal: None,
            terminal_seen: false,
            owed_error: None,
            last_arrival: Instant::ZERO,
            last_sent: Instant::ZERO,
        }
    }

    // ---- model queries ----

    fn by_id(&self, id: u64) -> Option<&RxFile> {
        self.files.iter().find(|f| f.id == id)
    }

    fn by_id_mut(&mut self, id: u64) -> Option<&mut RxFile> {
        self.files.iter_mut().find(|f| f.id == id)
    }

    /// The oldest unresolved file's number: the open-file window's base, and the first file
    /// still in the receiver's table.
    fn head(&self) -> usize {
        self.files
            .iter()
            .position(|f| !f.closed)
            .unwrap_or(self.files.len())
    }

    /// A file still in the receiver's table.
    fn in_table(&self, id: u64) -> Option<&RxFile> {
        self.files[self.head()..].iter().find(|f| f.id == id)
    }

    /// The file whose data stream is current: in answer order, past rejected and ended
    /// files, but not past an answer not yet sent.
    fn current(&self) -> Option<&RxFile> {
        for f in &self.files {
            if !f.answer_sent {
                return None;
            }
            if f.receiving() {
                return Some(f);
            }
        }
        None
    }

    /// Chunks consumed or skipped: everything before the oldest unconsumed arrival.
    fn consumed(&self) -> u64 {
        self.arrivals.front().copied().unwrap_or(self.arrived)
    }

    /// The file whose event comes next: the oldest accepted one without it.
    fn event_due(&self) -> Option<&RxFile> {
        self.files.iter().find(|f| f.accepted() && !f.event)
    }

    fn outstanding(&self) -> u32 {
        self.sent.wrapping_sub(self.peer_acked)
    }

    fn depth(&self) -> u32 {
        self.neg.sender_ctrl_depth.into()
    }

    fn may_send(&self) -> bool {
        self.outstanding() + 1 < self.depth()
    }

    fn credit_step(&self) -> u64 {
        (u64::from(self.neg.window) / 4).max(1)
    }

    fn fail(&mut self, failure: Failure, owed: Option<(ErrorCode, u16)>) {
        if !self.ended {
            self.ended = true;
            self.terminal = Some(Terminal::Failed(failure));
            self.owed_error = owed;
        }
    }

    fn violation<T>(&mut self, v: Violation) -> Result<T, Error> {
        self.fail(Failure::Violation(v), Some((v.error_code(), v.code())));
        Err(Error::Violation(v))
    }

    // ---- inputs ----

    /// A well-behaved application and sender catch up, one drained input at a time.
    fn pump(&mut self, r: &mut Receiver<Store>) {
        let mut ops = Vec::new();
        if !self.arrivals.is_empty() {
            ops.push(ReceiverOp::ConsumeAll);
        }
        let verifying = self
            .files
            .iter()
            .filter(|f| f.event && matches!(f.stream, Some(RxEnd::Ended(_))) && f.verdict.is_none())
            .count();
        ops.extend((0..verifying).map(|_| ReceiverOp::VerifyNext(0)));
        let unanswered = self.files.iter().filter(|f| f.decided.is_none()).count();
        ops.extend((0..unanswered).map(|_| ReceiverOp::AnswerAuto));
        for op in ops {
            self.step(r, &op);
            self.drain(r);
        }
        self.stream(r);
        if let Some(f) = self.current() {
            if f.arrived == f.count {
                let digest = agreed_digest(self.neg.features, f.id as u8);
                let op = ReceiverOp::Msg {
                    ack: AckChoice::All,
                    msg: Msg::FileEnd {
                        file: FileRef::Next,
                        length: Count::Auto,
                        digest: digest_choice(digest),
                    },
                    imm: ImmChoice::Next,
                    len: LenChoice::Exact,
                };
                self.step(r, &op);
                self.drain(r);
            }
        }
        let op = ReceiverOp::PureAck {
            ack: AckChoice::All,
            nonempty: false,
        };
        self.step(r, &op);
        self.drain(r);
    }

    /// The current stream's chunks, as far as the credit allows.
    fn stream(&mut self, r: &mut Receiver<Store>) {
        while let Some(f) = self.current() {
            let credit = self.last_credit + u64::from(self.neg.window);
            if f.arrived == f.count || self.arrived >= credit || self.ended || self.control_pending
            {
                break;
            }
            self.step(r, &ReceiverOp::ChunkNext(LenChoice::Exact));
            self.drain(r);
        }
    }

    fn step(&mut self, r: &mut Receiver<Store>, op: &ReceiverOp) {
        let before = Snapshot::of(r);
        let now = self.clock.now();
        let result: Result<(), Error> = match op {
            ReceiverOp::Msg { ack, msg, imm, len } => {
                let mut buf = [0u8; CTRL_MSG_MAX];
                let ack = ack.resolve(self.sent, self.peer_acked);
                let n = build(self, msg, ack, &mut buf);
                let imm = match imm {
                    ImmChoice::Next => Imm::control(self.ctrl).encode(),
                    ImmChoice::Raw(i) => *i,
                };
                let len = match len {
                    LenChoice::Exact => n,
                    LenChoice::Raw(l) => usize::from(*l),
                };
                match self.write(r, now, imm, len as u32) {
                    Ok(Incoming::Control { .. }) => {
                        self.control(r, now, &buf[..len.min(CTRL_MSG_MAX)])
                    }
                    res => res.map(|_| ()),
                }
            }
            ReceiverOp::Raw(bytes) => {
                let imm = Imm::control(self.ctrl).encode();
                let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
                match self.write(r, now, imm, len) {
                    Ok(Incoming::Control { .. }) => self.control(r, now, bytes),
                    res => res.map(|_| ()),
                }
            }
            ReceiverOp::Write { imm, len } => self.write(r, now, *imm, *len).map(|_| ()),
            ReceiverOp::Announce(len) => {
                let len = match len {
                    LenChoice::Exact => 8,
                    LenChoice::Raw(l) => u32::from(*l),
                };
                let imm = Imm::control(self.ctrl).encode();
                self.write(r, now, imm, len).map(|_| ())
            }
            ReceiverOp::Deliver { ack, msg } => {
                let mut buf = [0u8; CTRL_MSG_MAX];
                let ack = ack.resolve(self.sent, self.peer_acked);
                let n = build(self, msg, ack, &mut buf);
                self.control(r, now, &buf[..n])
            }
            ReceiverOp::Bytes(bytes) => self.control(r, now, bytes),
            ReceiverOp::ChunkNext(len) => {
                let len = match len {
                    LenChoice::Exact => self.derived_len().unwrap_or(self.neg.chunk_size),
                    LenChoice::Raw(l) => u32::from(*l),
                };
                self.write(r, now, Imm::chunk(self.arrived).encode(), len)
                    .map(|_| ())
            }
            ReceiverOp::PureAck { ack, nonempty } => {
                let count = ack.resolve(self.sent, self.peer_acked);
                let len = u32::from(*nonempty);
                self.write(r, now, Imm::ack(count).encode(), len)
                    .map(|_| ())
            }
            ReceiverOp::AnswerNext(answer) => {
                let next = self.files.iter().find(|f| f.decided.is_none());
                let (id, size) = next.map_or((u64::MAX, 0), |f| (f.id, f.len));
                let answer = answer.resolve(size, self.neg.chunk_size);
                self.answer(r, now, id, answer)
            }
            ReceiverOp::AnswerAuto => {
                let next = self.files.iter().find(|f| f.decided.is_none());
                let (id, refusal) = next.map_or((u64::MAX, None), |f| (f.id, f.refusal));
                let answer = match refusal {
                    Some(reason) => FileAnswer::Reject(reason),
                    None => FileAnswer::Accept { offset: 0 },
                };
                self.answer(r, now, id, answer)
            }
            ReceiverOp::Answer { file, answer } => {
                let next = self
                    .files
                    .iter()
                    .find(|f| f.decided.is_none())
                    .map(|f| f.id);
                self.answer(r, now, file.resolve(next), answer.get())
            }
            ReceiverOp::ConsumeNext => {
                let seq = self.arrivals.front().copied().unwrap_or(self.arrived);
                self.consume(r, now, seq)
            }
            ReceiverOp::ConsumeAll => {
                let mut res = Ok(());
                while let Some(&seq) = self.arrivals.front() {
                    res = self.consume(r, now, seq);
                    if res.is_err() {
                        break;
                    }
                }
                res
            }
            ReceiverOp::Consume(seq) => self.consume(r, now, *seq),
            ReceiverOp::VerifyNext(status) => {
                let next = self.verifying().map_or(u64::MAX, |f| f.id);
                self.verify(r, now, next, FileStatus(*status))
            }
            ReceiverOp::Verify { file, status } => {
                let next = self.verifying().map(|f| f.id);
                self.verify(r, now, file.resolve(next), FileStatus(*status))
            }
            ReceiverOp::Cancel { file, status } => {
                let id = file.resolve(self.next_file(MsgKind::FileCancel));
                self.cancel(r, now, id, FileStatus(*status))
            }
            ReceiverOp::Abort(code) => {
                r.abort(now, ErrorCode(*code));
                self.fail(
                    Failure::Aborted(ErrorCode(*code)),
                    Some((ErrorCode(*code), 0)),
                );
                Ok(())
            }
            ReceiverOp::Timeout(ms) => {
                let now = self.clock.advance(*ms);
                r.handle_timeout(now);
                let deadline = self.idle.map(|d| self.last_arrival.saturating_add(d));
                if deadline.is_some_and(|d| now >= d) {
                    self.fail(Failure::TimedOut, Some((ErrorCode::TIMEOUT, 0)));
                }
                Ok(())
            }
            ReceiverOp::Pump | ReceiverOp::Stream | ReceiverOp::Flood { .. } | ReceiverOp::Hold => {
                Ok(())
            }
        };
        if trace() {
            eprintln!("{op:?} -> {result:?}");
        }
        assert_eq!(r.is_ended(), self.ended, "ended after {op:?}");
        match result {
            Err(Error::Usage(_) | Error::Closed) => {
                assert_eq!(
                    Snapshot::of(r),
                    before,
                    "{op:?} was refused but changed things"
                )
            }
            Err(Error::Violation(_)) => assert!(r.is_ended(), "a violation must fail"),
            Ok(()) => {}
        }
        let open = self.files.iter().filter(|f| !f.closed).count() as u64;
        assert_eq!(r.open_files(), open, "open files after {op:?}");
    }

    /// The length of the next chunk, if the current stream owns it.
    fn derived_len(&self) -> Option<u32> {
        let f = self.current()?;
        if !(f.first..f.end_seq()).contains(&self.arrived) {
            return None;
        }
        let chunk = u64::from(self.neg.chunk_size);
        let file_offset = f.offset + (self.arrived - f.first) * chunk;
        // At most a chunk: fits a u32.
        Some((f.len - file_offset).min(chunk) as u32)
    }

    fn verifying(&self) -> Option<&RxFile> {
        self.files
            .iter()
            .find(|f| f.event && matches!(f.stream, Some(RxEnd::Ended(_))) && f.verdict.is_none())
    }

    /// `handle_write`: the result the model predicts, and its effects.
    fn write(
        &mut self,
        r: &mut Receiver<Store>,
        now: Instant,
        imm: u32,
        len: u32,
    ) -> Result<Incoming, Error> {
        let res = r.handle_write(now, imm, len);
        if self.ended {
            expect(&res, &Err(Error::Closed), "write after the end");
            return res;
        }
        if self.control_pending {
            expect(
                &res,
                &Err(Error::Usage(UsageError::ControlPending)),
                "write before the bytes",
            );
            return res;
        }
        self.last_arrival = self.last_arrival.max(now);
        let expected = match Imm::decode(imm) {
            Imm::Chunk(got) => self.chunk_arrives(got, len),
            Imm::Control(got) => {
                let expected = self.ctrl & ((1 << 30) - 1);
                let depth = u32::from(self.neg.receiver_ctrl_depth);
                if got != expected {
                    self.violation(Violation::WrongCtrlSeq { expected, got })
                } else if self.ctrl.wrapping_sub(self.reported) >= depth {
                    self.violation(Violation::CtrlOverrun)
                } else if !(8..=CTRL_MSG_MAX as u32).contains(&len) {
                    self.violation(Violation::BadWriteLength {
                        expected: CTRL_MSG_MAX as u32,
                        got: len,
                    })
                } else {
                    let slot = self.ctrl % depth;
                    self.pending_in_last_slot = self.ctrl.wrapping_sub(self.reported) + 1 == depth;
                    self.ctrl = self.ctrl.wrapping_add(1);
                    self.control_pending = true;
                    Ok(Incoming::Control {
                        ring_offset: self.neg.ctrl_slot_offset(slot),
                        len,
                    })
                }
            }
            Imm::Ack(low) => {
                if len != 0 {
                    self.violation(Violation::BadWriteLength {
                        expected: 0,
                        got: len,
                    })
                } else {
                    let ack = widen30(self.peer_acked, low);
                    if ack.wrapping_sub(self.peer_acked) > self.outstanding() {
                        self.violation(Violation::BadAck)
                    } else {
                        self.peer_acked = ack;
                        Ok(Incoming::Ack)
                    }
                }
            }
        };
        expect(&res, &expected, &format!("write imm {imm:#x} len {len}"));
        res
    }

    fn chunk_arrives(&mut self, got: u32, len: u32) -> Result<Incoming, Error> {
        let seq = self.arrived;
        let expected = (seq & 0x7fff_ffff) as u32;
        if got != expected {
            return self.violation(Violation::WrongSeq { expected, got });
        }
        if self.auth.is_some() {
            return self.violation(Violation::AuthMissing);
        }
        if seq >= self.last_credit + u64::from(self.neg.window) {
            return self.violation(Violation::CreditOverrun);
        }
        let owner = self
            .current()
            .filter(|f| !self.peer_done && (f.first..f.end_seq()).contains(&seq))
            .cloned();
        let Some(f) = owner else {
            return self.violation(Violation::UnexpectedChunk);
        };
        let derived = self.derived_len().expect("the current stream owns it");
        if len != derived {
            return self.violation(Violation::BadWriteLength {
                expected: derived,
                got: len,
            });
        }
        let chunk = u64::from(self.neg.chunk_size);
        let slot = (seq % u64::from(self.neg.window)) as u32;
        let arrival = ChunkArrival {
            seq,
            slot,
            ring_offset: u64::from(slot) * chunk,
            file_id: f.id,
            file_offset: f.offset + (seq - f.first) * chunk,
            len,
        };
        assert!(
            arrival.ring_offset + u64::from(len) <= self.neg.data_len(),
            "a chunk outside the data slots"
        );
        assert!(
            arrival.file_offset + u64::from(len) <= f.len,
            "a chunk past the file's end"
        );
        self.arrived += 1;
        self.arrivals.push_back(seq);
        self.by_id_mut(f.id).expect("known").arrived += 1;
        Ok(Incoming::Chunk(arrival))
    }

    /// `handle_control`: the result the model predicts, and its effects.
    fn control(
        &mut self,
        r: &mut Receiver<Store>,
        now: Instant,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let res = r.handle_control(now, bytes);
        let offer = res.map(|o| o.map(|o| (o.header.file_id, o.refusal)));
        if let Ok(Some(offer)) = res {
            // The offer is the header as it came, name validated.
            let (_, msg) = Control::decode(bytes).expect("an offer from undecodable bytes");
            assert_eq!(Control::FileHeader(offer.header), msg);
            // Valid, or in the receiver's own space and refused as a file.
            let checked = validate_name(offer.header.name.as_bytes());
            if checked == Err(NameError::Reserved) {
                assert_eq!(offer.refusal, Some(FileRejectReason::INVALID_NAME));
            } else {
                assert_eq!(checked, Ok(offer.header.name));
            }
        }
        let plain = res.map(|_| ());
        if self.ended {
            expect(&plain, &Err(Error::Closed), "control after the end");
            return plain;
        }
        if !self.control_pending {
            expect(
                &plain,
                &Err(Error::Usage(UsageError::NoControlPending)),
                "bytes unannounced",
            );
            return plain;
        }
        self.control_pending = false;
        self.processed = self.processed.wrapping_add(1);
        let (ack, msg) = match Control::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                let expected = self.violation(Violation::Decode(e));
                expect(&plain, &expected, "undecodable message");
                return plain;
            }
        };
        if let Control::FileHeader(h) = &msg {
            assert_eq!(metadata_error(h), None, "decoded {h:?}");
        }
        if ack.wrapping_sub(self.peer_acked) > self.outstanding() {
            let expected = self.violation(Violation::BadAck);
            expect(&plain, &expected, "ack beyond the messages sent");
            return plain;
        }
        self.peer_acked = ack;
        let what = format!("{msg:?}");
        // §5.2: the last slot of the sender's credit is for its final Goodbye or Error.
        let final_msg = matches!(msg, Control::Goodbye | Control::Error { .. });
        if self.pending_in_last_slot && !final_msg {
            let expected = self.violation(Violation::CtrlOverrun);
            expect(&plain, &expected, &what);
            return plain;
        }
        if let Some(proof) = self.auth {
            let expected = match msg {
                Control::Auth { proof: p } if p == proof => {
                    self.auth = None;
                    Ok(())
                }
                Control::Auth { .. } => self.violation(Violation::AuthFailed),
                _ => self.violation(Violation::AuthMissing),
            };
            expect(&plain, &expected, &what);
            return plain;
        }
        let open = !self.peer_done;
        let expected = match msg {
            Control::FileHeader(h) if open => {
                let head = self.head();
                if self.files.len() - head >= usize::from(self.neg.max_open_files) {
                    self.violation(Violation::TooManyOpenFiles)
                } else if self.last_id.is_some_and(|l| h.file_id <= l) {
                    self.violation(Violation::DuplicateFileId(h.file_id))
                } else if !part_allowed(&self.neg, h.part) {
                    self.violation(Violation::BadPart)
                } else if h.kind == EntryKind::Symlink
                    && !self.neg.features.contains(Features::LINKS)
                {
                    self.violation(Violation::BadLink)
                } else {
                    let conflict = self.files.iter().any(|f| {
                        !f.closed && f.refusal.is_none() && names_conflict(f.name(), h.name)
                    });
                    let reserved = validate_name(h.name.as_bytes()) == Err(NameError::Reserved);
                    let refusal = match offer {
                        Ok(Some((_, refusal))) => refusal,
                        _ => None,
                    };
                    match refusal {
                        _ if reserved && plain.is_ok() => assert_eq!(
                            refusal,
                            Some(FileRejectReason::INVALID_NAME),
                            "{:?} is in the receiver's own space",
                            h.name
                        ),
                        Some(FileRejectReason::NAME_CONFLICT) => {
                            assert!(conflict, "{:?} refused as a conflict", h.name)
                        }
                        Some(FileRejectReason::BUSY) | None if plain.is_ok() => {
                            assert!(!conflict, "{:?} conflicts with an open name", h.name)
                        }
                        Some(FileRejectReason::BUSY) | None => {}
                        Some(other) => panic!("refusal {other:?}"),
                    }
                    self.last_id = Some(h.file_id);
                    self.files.push(RxFile::new(&h, refusal));
                    Ok(())
                }
            }
            Control::FileEnd(e) if open => match self.current().cloned() {
                Some(f) if f.id == e.file_id => {
                    if self.arrived != f.end_seq() {
                        self.violation(Violation::EndBeforeData)
                    } else if e.length != f.len {
                        self.violation(Violation::EndLengthMismatch)
                    } else if !e.digest.kind.is_agreed(self.neg.features) {
                        self.violation(Violation::DigestNotNegotiated)
                    } else if f.kind != EntryKind::File && e.digest.kind != DigestKind::None {
                        self.violation(Violation::DirectoryDigest)
                    } else {
                        let missing = self.neg.flags.contains(AcceptFlags::DIGEST_REQUIRED)
                            && f.kind == EntryKind::File
                            && e.digest.kind == DigestKind::None;
                        let end = match f.cancel {
                            Some((status, _)) => RxEnd::Dropped(status, None),
                            None if missing => RxEnd::Dropped(FileStatus::DIGEST_REQUIRED, None),
                            None => RxEnd::Ended(e.digest),
                        };
                        self.end_stream(f.id, end);
                        Ok(())
                    }
                }
                _ => self.violation(Violation::UnknownFile(e.file_id)),
            },
            Control::FileAbort { file_id, reason } if open => match self.current().cloned() {
                Some(f) if f.id == file_id => {
                    let status = f.cancel.map_or(FileStatus::ABORTED, |(s, _)| s);
                    self.arrived = f.end_seq();
                    self.end_stream(f.id, RxEnd::Dropped(status, Some(reason)));
                    Ok(())
                }
                _ => self.violation(Violation::UnknownFile(file_id)),
            },
            Control::KeepAlive => Ok(()),
            Control::Goodbye if open => {
                if self.files.iter().any(|f| !f.closed) {
                    self.violation(Violation::GoodbyeWithOpenFiles)
                } else {
                    self.peer_done = true;
                    Ok(())
                }
            }
            Control::Error { code, detail, text } => {
                self.fail(
                    Failure::PeerAborted(code, detail, ErrorText::new(text)),
                    None,
                );
                Ok(())
            }
            other => self.violation(Violation::UnexpectedMessage(other.kind())),
        };
        expect(&plain, &expected, &what);
        if let Ok(Some((id, _))) = offer {
            assert_eq!(Some(id), self.last_id, "offer of another file");
        } else {
            assert!(
                !matches!(msg, Control::FileHeader(_)) || plain.is_err(),
                "a header without an offer"
            );
        }
        plain
    }

    fn end_stream(&mut self, id: u64, end: RxEnd) {
        let f = self.by_id_mut(id).expect("known");
        f.stream = Some(end);
        if let Some((status, _)) = f.cancel {
            f.cancel = Some((status, true));
        }
    }

    fn answer(
        &mut self,
        r: &mut Receiver<Store>,
        now: Instant,
        id: u64,
        answer: FileAnswer,
    ) -> Result<(), Error> {
        let res = r.answer_file(now, id, answer);
        let usage = |u| Err(Error::Usage(u));
        let expected = if self.ended {
            Err(Error::Closed)
        } else {
            match self.files.iter().position(|f| f.decided.is_none()) {
                None => usage(UsageError::UnknownFile),
                Some(o) if self.files[o].id != id => {
                    if self.in_table(id).is_some() {
                        usage(UsageError::OutOfOrder)
                    } else {
                        usage(UsageError::UnknownFile)
                    }
                }
                Some(o) => {
                    let f = &self.files[o];
                    let chunk = u64::from(self.neg.chunk_size);
                    match answer {
                        FileAnswer::Accept { offset } => {
                            let resumable = f.kind == EntryKind::File
                                && self.neg.features.contains(Features::RESUME);
                            if f.refusal.is_some()
                                || offset > f.len
                                || offset % chunk != 0
                                || (offset > 0 && !resumable)
                            {
                                usage(UsageError::InvalidAnswer)
                            } else {
                                let count = chunk_count(f.len, offset, self.neg.chunk_size);
                                let first = self.next_assign;
                                self.next_assign += count;
                                let f = &mut self.files[o];
                                (f.first, f.count, f.offset) = (first, count, offset);
                                f.decided = Some(answer);
                                Ok(())
                            }
                        }
                        // Headers here never ask to sync: no sync answer fits.
                        FileAnswer::AcceptChanged { .. }
                        | FileAnswer::InSync(_)
                        | FileAnswer::WouldSend(_)
                        | FileAnswer::Pruned { .. } => usage(UsageError::InvalidAnswer),
                        FileAnswer::Reject(_) => {
                            self.files[o].decided = Some(answer);
                            Ok(())
                        }
                    }
                }
            }
        };
        expect(&res, &expected, "answer_file");
        res
    }

    fn consume(&mut self, r: &mut Receiver<Store>, now: Instant, seq: u64) -> Result<(), Error> {
        let res = r.chunk_consumed(now, seq);
        let expected = if self.ended {
            Err(Error::Closed)
        } else if self.arrivals.front() == Some(&seq) {
            self.arrivals.pop_front();
            Ok(())
        } else {
            Err(Error::Usage(UsageError::OutOfOrder))
        };
        expect(&res, &expected, "chunk_consumed");
        res
    }

    fn verify(
        &mut self,
        r: &mut Receiver<Store>,
        now: Instant,
        id: u64,
        status: FileStatus,
    ) -> Result<(), Error> {
        let res = r.file_verified(now, id, status);
        let verifying = self.in_table(id).is_some_and(|f| {
            f.event && matches!(f.stream, Some(RxEnd::Ended(_))) && f.verdict.is_none()
        });
        let expected = if self.ended {
            Err(Error::Closed)
        } else if verifying {
            self.by_id_mut(id).expect("known").verdict = Some(status);
            Ok(())
        } else {
            Err(Error::Usage(UsageError::UnknownFile))
        };
        expect(&res, &expected, "file_verified");
        res
    }

    fn cancel(
        &mut self,
        r: &mut Receiver<Store>,
        now: Instant,
        id: u64,
        status: FileStatus,
    ) -> Result<(), Error> {
        let res = r.cancel_file(now, id, status);
        let ok = self.in_table(id).is_some_and(|f| {
            let queued = f.accepted() && !f.answer_sent;
            (f.receiving() || queued) && f.cancel.is_none() && !status.is_ok()
        });
        let expected = if self.ended {
            Err(Error::Closed)
        } else if ok {
            self.by_id_mut(id).expect("known").cancel = Some((status, false));
            Ok(())
        } else {
            Err(Error::Usage(UsageError::UnknownFile))
        };
        expect(&res, &expected, "cancel_file");
        res
    }

    // ---- outputs ----

    fn drain(&mut self, r: &mut Receiver<Store>) {
        let now = self.clock.now();
        let mut buf: CtrlBuf = [0; CTRL_MSG_MAX];
        for _ in 0..DRAIN_LIMIT {
            let Some(out) = r.poll_output(now, &mut buf) else {
                assert!(r.poll_output(now, &mut buf).is_none(), "output after None");
                self.after_drain(r);
                return;
            };
            if trace() {
                eprintln!("    {out:?}");
            }
            assert!(!self.terminal_seen, "output {out:?} after the final event");
            match out {
                ReceiverOutput::Transmit(n) => {
                    assert!(
                        n <= RECEIVER_MSG_MAX,
                        "a message of {n} bytes overflows the receive buffer"
                    );
                    self.on_transmit(&buf[..n]);
                }
                ReceiverOutput::Event(e) => self.on_event(r, e),
            }
        }
        panic!("receiver poll_output did not settle after {DRAIN_LIMIT} outputs");
    }

    fn on_transmit(&mut self, bytes: &[u8]) {
        let (ack, msg) = Control::decode(bytes)
            .unwrap_or_else(|e| panic!("the receiver sent undecodable bytes: {e}"));
        assert_eq!(ack, self.processed, "ack field of {msg:?}");
        assert_eq!(ack, ack_field(bytes));
        let unreported = self.processed.wrapping_sub(self.reported);
        self.reported = self.processed;
        self.sent = self.sent.wrapping_add(1);
        self.last_sent = self.clock.now();
        let final_msg = matches!(msg, Control::Goodbye | Control::Error { .. });
        let limit = if final_msg {
            self.depth()
        } else {
            self.depth() - 1
        };
        assert!(
            self.outstanding() <= limit,
            "{:?} beyond the sender's receive buffers: {} unacknowledged, depth {}",
            msg.kind(),
            self.outstanding(),
            self.depth()
        );
        if !matches!(msg, Control::Error { .. }) {
            assert!(!self.ended, "{msg:?} after the end");
        }
        match msg {
            Control::FileAnswer { file_id, answer } => {
                let f = self
                    .files
                    .iter_mut()
                    .find(|f| !f.answer_sent)
                    .expect("an answer with no offer waiting");
                assert_eq!(file_id, f.id, "answers out of offer order");
                assert_eq!(Some(answer), f.decided, "an answer not decided");
                f.answer_sent = true;
                if let FileAnswer::Reject(_) = answer {
                    f.closed = true;
                }
            }
            Control::FileResult { file_id, status } => {
                let f = self
                    .files
                    .iter_mut()
                    .find(|f| f.accepted() && !f.result_sent)
                    .expect("a result with no file accepted");
                assert_eq!(file_id, f.id, "results out of stream order");
                assert!(f.event, "a result before the file's event");
                assert_eq!(Some(status), f.verdict, "result differs from the verdict");
                f.result_sent = true;
                f.closed = true;
            }
            Control::FileCancel { file_id, status } => {
                let f = self.by_id_mut(file_id).expect("a cancel of no file");
                assert_eq!(f.cancel, Some((status, false)), "a cancel not asked for");
                assert!(f.receiving(), "a cancel of a file not streaming");
                f.cancel = Some((status, true));
            }
            Control::Credit { consumed } => {
                assert!(consumed > self.last_credit, "credit did not advance");
                assert_eq!(
                    consumed,
                    self.consumed(),
                    "credit differs from what was consumed"
                );
                assert!(
                    consumed - self.last_credit >= self.credit_step(),
                    "credit not coalesced"
                );
                self.last_credit = consumed;
            }
            Control::Ack => assert!(
                unreported >= ack_threshold(self.neg.receiver_ctrl_depth),
                "an ack of only {unreported} messages"
            ),
            Control::KeepAlive => assert!(!self.peer_done, "keepalive after the peer's goodbye"),
            Control::Goodbye => {
                assert!(self.peer_done, "goodbye before the sender's");
                self.ended = true;
                self.terminal = Some(Terminal::Closed);
            }
            Control::Error { code, detail, .. } => {
                assert!(self.ended, "error message while the session is live");
                assert_eq!(
                    self.owed_error.take(),
                    Some((code, detail)),
                    "error message"
                );
            }
            other => panic!("the receiver sent a sender's message: {other:?}"),
        }
    }

    fn on_event(&mut self, r: &Receiver<Store>, e: ReceiverEvent) {
        let (id, end) = match e {
            ReceiverEvent::Closed | ReceiverEvent::Failed(_) => {
                let got = match e {
                    ReceiverEvent::Failed(f) => Terminal::Failed(f),
                    _ => Terminal::Closed,
                };
                assert_eq!(Some(got), self.terminal, "final event");
                assert!(r.is_ended());
                self.terminal_seen = true;
                return;
            }
            ReceiverEvent::FileComplete {
                file_id,
                length,
                digest,
            } => {
                let f = self.by_id(file_id).expect("completion of no file");
                assert_eq!(length, f.len, "completion length: the data length");
                (file_id, RxEnd::Ended(digest))
            }
            ReceiverEvent::FileDropped {
                file_id,
                status,
                abort,
            } => (file_id, RxEnd::Dropped(status, abort)),
        };
        let f = self.event_due().expect("an event with no file due").clone();
        assert_eq!(id, f.id, "events out of stream order");
        assert_eq!(f.stream, Some(end), "event differs from the stream's end");
        assert!(
            self.arrivals.front().is_none_or(|&s| s >= f.end_seq()),
            "event before the file's chunks were consumed"
        );
        let file = self.by_id_mut(id).expect("known");
        file.event = true;
        if let RxEnd::Dropped(status, _) = end {
            file.verdict = Some(status);
        }
    }

    fn after_drain(&mut self, r: &Receiver<Store>) {
        let now = self.clock.now();
        assert_eq!(r.is_ended(), self.ended);
        if let Some(f) = self.event_due() {
            let consumed = self.arrivals.front().is_none_or(|&s| s >= f.end_seq());
            assert!(
                f.stream.is_none() || !consumed,
                "event of {} due but not given",
                f.id
            );
        }
        if self.ended {
            assert!(self.terminal_seen, "ended without a final event");
            assert_eq!(r.poll_timeout(), None, "a timer after the end");
            assert!(
                self.owed_error.is_none() || self.outstanding() >= self.depth(),
                "error message not sent though credit allows"
            );
            return;
        }
        if let Some(t) = r.poll_timeout() {
            assert!(t > now, "timer in the past: {t:?} at {now:?}");
        }
        if self.may_send() {
            if let Some(f) = self.files.iter().find(|f| !f.answer_sent) {
                assert!(
                    f.decided.is_none(),
                    "answer to {} not sent though credit allows",
                    f.id
                );
            }
            if let Some(f) = self.files.iter().find(|f| f.accepted() && !f.result_sent) {
                assert!(
                    !(f.event && f.verdict.is_some()),
                    "result of {} not sent though credit allows",
                    f.id
                );
            }
            for f in &self.files {
                let due = f.receiving() && matches!(f.cancel, Some((_, false)));
                assert!(!due, "cancel of {} not sent though credit allows", f.id);
            }
            assert!(
                self.consumed() - self.last_credit < self.credit_step(),
                "credit due ({} consumed, {} sent) but not sent",
                self.consumed(),
                self.last_credit
            );
            let unreported = self.processed.wrapping_sub(self.reported);
            assert!(
                unreported < ack_threshold(self.neg.receiver_ctrl_depth),
                "ack due ({unreported} unreported) but not sent"
            );
            if !self.peer_done {
                let keepalive = std::time::Duration::from_millis(self.neg.keepalive_ms.into());
                assert!(
                    self.last_sent.saturating_add(keepalive) > now,
                    "keepalive due but not sent"
                );
            }
        }
        assert!(
            !(self.peer_done && self.outstanding() < self.depth()),
            "goodbye not sent though credit allows"
        );
    }
}

impl RxFile {
    fn new(h: &wire::FileHeader<'_>, refusal: Option<FileRejectReason>) -> RxFile {
        RxFile {
            id: h.file_id,
            kind: h.kind,
            len: data_len(h),
            name: h.name.to_owned(),
            refusal,
            decided: None,
            answer_sent: false,
            first: 0,
            count: 0,
            offset: 0,
            arrived: 0,
            stream: None,
            cancel: None,
            event: false,
            verdict: None,
            result_sent: false,
            closed: false,
        }
    }
}

/// An [`ArbDigest`] choice that yields `d`.
fn digest_choice(d: Digest) -> ArbDigest {
    ArbDigest::from(d)
}

/// What a refused input must leave unchanged.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    open_files: u64,
    timeout: Option<Instant>,
    ended: bool,
}

impl Snapshot {
    fn of(r: &Receiver<Store>) -> Snapshot {
        Snapshot {
            open_files: r.open_files(),
            timeout: r.poll_timeout(),
            ended: r.is_ended(),
        }
    }
}
