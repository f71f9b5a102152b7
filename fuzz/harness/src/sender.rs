//! A `Sender` driven by arbitrary operations against a model of what it must do.
//!
//! Operations: application commands (`start_file`, `data_ready`, `finish_file`, `abort_file`,
//! `close`, `abort`), write completions, time, and the receiver's messages, raw or
//! well-formed ([`Msg`], resolved against the model so answers, credits and results name the
//! right files). After each one (unless `Hold`) `poll_output` is drained and every output is
//! checked against the model:
//! - control writes go to the next control slot, inside the ring, with the right immediate,
//!   carry the count of receiver messages processed, and keep within the receiver's control
//!   credit (the last slot only for the final Goodbye or Error); the key proof comes first;
//! - headers in `start_file` order within the open-file window; each file's data stream in
//!   answer order: its chunks in order, then its end (all chunks written, the digest given)
//!   or its abort; nothing of a file after its abort;
//! - reads into free local slots only, for the derived file and offset; writes of ready
//!   chunks, exactly as read, inside the data slots, never more than `window` chunks beyond
//!   the last credit;
//! - pure acks at half the sender's buffers; keepalives when nothing was sent for the
//!   agreed interval; the Goodbye only once everything is resolved;
//! - every input's result is the one the model predicts (violations fail the session and
//!   send an error; usage errors change nothing); events in order; exactly one final event,
//!   nothing after it; the timer never asks to be called in the past.
//!
//! At the end of every drain, what the model says must have gone out has (credit permitting):
//! headers, ends and aborts, ready chunks with credit, due acks, keepalives and the goodbye.

use crate::common::*;
use crate::msg::{ack_field, build, Msg, Peer};
use arbitrary::{Arbitrary, Unstructured};
use rdmaft_protocol::wire::MsgKind;
use rdmaft_protocol::*;
use std::collections::VecDeque;

/// One input to the sender.
#[derive(Arbitrary, Debug, Clone)]
pub enum SenderOp {
    /// `start_file`.
    Start {
        /// Id.
        id: NewId,
        /// File or directory.
        kind: Kind,
        /// Size.
        size: Size,
        /// Metadata.
        meta: Meta,
        /// Name.
        name: Name,
    },
    /// `data_ready` for the oldest outstanding read.
    ReadyNext,
    /// `data_ready` for every outstanding read.
    ReadyAll,
    /// `data_ready` for any sequence number.
    Ready(u64),
    /// `finish_file` of the oldest accepted file without a digest, with an agreed digest.
    FinishNext,
    /// `finish_file` of any file with any digest.
    Finish {
        /// File (`Next`: the oldest accepted without a digest).
        file: FileRef,
        /// Digest.
        digest: ArbDigest,
    },
    /// `abort_file`.
    AbortFile {
        /// File (`Next`: the current stream's).
        file: FileRef,
        /// Reason code.
        reason: u16,
    },
    /// `close`.
    Close,
    /// `abort` with this code.
    Abort(u16),
    /// `handle_control` on raw bytes.
    Raw(Vec<u8>),
    /// `handle_control` on a well-formed message.
    Msg {
        /// Its ack count.
        ack: AckChoice,
        /// The message.
        msg: Msg,
    },
    /// `handle_write_completed` for the oldest incomplete write.
    CompleteNext,
    /// `handle_write_completed` for the newest write.
    CompleteAll,
    /// `handle_write_completed` for any sequence number.
    Complete(u64),
    /// A well-behaved receiver and application catch up: reads, completions, a credit,
    /// digests, a result, an answer (each a separate input, drained).
    Pump,
    /// Keepalives from the receiver, one after another (`count % 32` of them), each with
    /// this ack count: pure acks come due, and a receiver that does not keep up blocks the
    /// sender's control credit.
    Flood {
        /// The ack count of each.
        ack: AckChoice,
        /// How many.
        count: u8,
    },
    /// Time passes (milliseconds), then `handle_timeout`.
    Timeout(u16),
    /// Do not drain after the next operation.
    Hold,
}

/// The harness.
pub fn sender(data: &[u8]) {
    run(data);
}

/// The harness, reporting how far it got (`None`: no machine was built).
pub(crate) fn run(data: &[u8]) -> Option<Outcome> {
    let mut u = Unstructured::new(data);
    let (neg, config) = setup(&mut u).ok()?;
    let mut s = match Sender::new(neg, config, Store::new(), Instant::ZERO) {
        Ok(s) => s,
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
    let mut m = Tx::new(neg, config);
    m.drain(&mut s);
    let mut hold = false;
    for _ in 0..MAX_OPS {
        if u.is_empty() {
            break;
        }
        let Ok(op) = SenderOp::arbitrary(&mut u) else {
            break;
        };
        match op {
            SenderOp::Hold => hold = true,
            SenderOp::Pump => {
                for op in m.pump() {
                    m.step(&mut s, &op);
                    m.drain(&mut s);
                }
                hold = false;
            }
            SenderOp::Flood { ack, count } => {
                let op = SenderOp::Msg {
                    ack,
                    msg: Msg::KeepAlive,
                };
                for _ in 0..count % 32 {
                    m.step(&mut s, &op);
                    m.drain(&mut s);
                }
                hold = false;
            }
            op => {
                m.step(&mut s, &op);
                if !std::mem::take(&mut hold) {
                    m.drain(&mut s);
                }
            }
        }
    }
    m.drain(&mut s);
    Some(Outcome {
        resolved: m.files.iter().filter(|f| f.closed).count(),
        closed: m.terminal_seen && m.terminal == Some(Terminal::Closed),
        failed: m.terminal_seen && m.terminal != Some(Terminal::Closed),
    })
}

/// How a file's data stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamEnd {
    End,
    Abort,
}

#[derive(Clone, Debug)]
struct TxFile {
    id: u64,
    name: String,
    kind: EntryKind,
    size: u64,
    part: Option<Part>,
    /// Bytes its stream carries: the part's for a part, else the size.
    len: u64,
    mtime: (i64, u32),
    mode: u32,
    header_sent: bool,
    answer: Option<FileAnswer>,
    /// Chunks assigned at the accept.
    first: u64,
    count: u64,
    offset: u64,
    /// The digest its end carries (canonical).
    digest: Option<Digest>,
    abort: Option<AbortReason>,
    /// The receiver cancelled it (it may once), with this status.
    cancel: Option<FileStatus>,
    ended: Option<StreamEnd>,
    written: u64,
    /// Rejected, or its result received.
    closed: bool,
}

impl TxFile {
    fn accepted(&self) -> bool {
        matches!(self.answer, Some(FileAnswer::Accept { .. }))
    }

    fn end_seq(&self) -> u64 {
        self.first + self.count
    }
}

/// A local slot in use: from its read until its write completed, or until its file's abort
/// went out (if never written).
#[derive(Clone, Copy, Debug)]
struct SlotUse {
    read: ChunkRead,
    ready: bool,
    written: bool,
}

/// The final event the model expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Terminal {
    Closed,
    Failed(Failure),
}

/// What the outputs and inputs so far imply about the sender.
struct Tx {
    neg: Negotiated,
    idle: Option<std::time::Duration>,
    clock: Clock,
    files: Vec<TxFile>,
    last_id: Option<u64>,
    next_assign: u64,
    /// Control messages written, how many the receiver acknowledged, receiver messages
    /// processed, and the count last reported.
    ctrl: u32,
    peer_acked: u32,
    processed: u32,
    reported: u32,
    auth_sent: bool,
    closing: bool,
    goodbye_sent: bool,
    /// Reads not yet reported ready, in order.
    reads: VecDeque<ChunkRead>,
    last_read: Option<u64>,
    slots: Vec<Option<SlotUse>>,
    /// Writes not yet completed, in order; the sender's completion mark.
    incomplete: VecDeque<u64>,
    completed: u64,
    last_write: Option<u64>,
    peer_consumed: u64,
    /// Chunks written or promised skipped by an abort sent: the most a credit may say.
    committed: u64,
    /// Events due, in order.
    events: VecDeque<SenderEvent>,
    ended: bool,
    terminal: Option<Terminal>,
    terminal_seen: bool,
    owed_error: Option<(ErrorCode, u16)>,
    last_arrival: Instant,
    last_sent: Instant,
}

impl Peer for Tx {
    fn last_id(&self) -> Option<u64> {
        self.last_id
    }

    fn next_file(&self, kind: MsgKind) -> Option<u64> {
        let f = match kind {
            MsgKind::FileAnswer => self.awaiting_answer(),
            MsgKind::FileResult => self.result_due(),
            _ => self.current().or_else(|| {
                self.files
                    .iter()
                    .find(|f| f.accepted() && f.ended.is_none())
            }),
        };
        f.map(|f| f.id)
    }

    fn size_of(&self, id: u64) -> u64 {
        self.by_id(id).map_or(0, |f| f.len)
    }

    fn credit(&self) -> (u64, u64) {
        (self.committed, self.peer_consumed)
    }

    fn proof(&self) -> [u8; 32] {
        self.neg.sender_proof.unwrap_or_default()
    }

    fn chunk(&self) -> u32 {
        self.neg.chunk_size
    }
}

/// Checks `got` is one of `expected`.
#[track_caller]
fn expect(got: Result<(), Error>, expected: &[Result<(), Error>], what: &str) {
    assert!(
        expected.contains(&got),
        "{what}: got {got:?}, the model expects one of {expected:?}"
    );
}

impl Tx {
    fn new(neg: Negotiated, config: Config) -> Tx {
        Tx {
            neg,
            idle: config.idle_timeout,
            clock: Clock::default(),
            files: Vec::new(),
            last_id: None,
            next_assign: 0,
            ctrl: 0,
            peer_acked: 0,
            processed: 0,
            reported: 0,
            auth_sent: false,
            closing: false,
            goodbye_sent: false,
            reads: VecDeque::new(),
            last_read: None,
            slots: vec![None; neg.window as usize],
            incomplete: VecDeque::new(),
            completed: 0,
            last_write: None,
            peer_consumed: 0,
            committed: 0,
            events: VecDeque::new(),
            ended: false,
            terminal: None,
            terminal_seen: false,
            owed_error: None,
            last_arrival: Instant::ZERO,
            last_sent: Instant::ZERO,
        }
    }

    // ---- model queries ----

    fn by_id(&self, id: u64) -> Option<&TxFile> {
        self.files.iter().find(|f| f.id == id)
    }

    fn by_id_mut(&mut self, id: u64) -> Option<&mut TxFile> {
        self.files.iter_mut().find(|f| f.id == id)
    }

    /// The oldest file whose answer is due (its header went out).
    fn awaiting_answer(&self) -> Option<&TxFile> {
        self.files
            .iter()
            .find(|f| f.answer.is_none())
            .filter(|f| f.header_sent)
    }

    /// The file whose result comes next: the oldest answered file not closed (it must have
    /// ended for its result to be valid).
    fn result_due(&self) -> Option<&TxFile> {
        self.files.iter().find(|f| f.answer.is_some() && !f.closed)
    }

    /// The file whose data stream is current: the oldest accepted one not ended.
    fn current(&self) -> Option<&TxFile> {
        self.files
            .iter()
            .find(|f| f.accepted() && f.ended.is_none())
    }

    fn open_names(&self) -> impl Iterator<Item = &str> {
        self.files
            .iter()
            .filter(|f| !f.closed)
            .map(|f| f.name.as_str())
    }

    /// The oldest unresolved file's number (the open-file window's base).
    fn window_base(&self) -> usize {
        self.files
            .iter()
            .position(|f| !f.closed)
            .unwrap_or(self.files.len())
    }

    fn outstanding(&self) -> u32 {
        self.ctrl.wrapping_sub(self.peer_acked)
    }

    fn depth(&self) -> u32 {
        self.neg.receiver_ctrl_depth.into()
    }

    fn may_send(&self) -> bool {
        self.outstanding() + 1 < self.depth()
    }

    fn fail(&mut self, failure: Failure, owed: Option<(ErrorCode, u16)>) {
        if !self.ended {
            self.ended = true;
            self.terminal = Some(Terminal::Failed(failure));
            self.owed_error = owed;
        }
    }

    fn violation(&mut self, v: Violation) -> Result<(), Error> {
        self.fail(Failure::Violation(v), Some((v.error_code(), v.code())));
        Err(Error::Violation(v))
    }

    fn event(&mut self, e: SenderEvent) {
        self.events.push_back(e);
    }

    // ---- inputs ----

    /// The inputs a well-behaved receiver and application would give now.
    fn pump(&self) -> Vec<SenderOp> {
        let mut ops = Vec::new();
        if !self.reads.is_empty() {
            ops.push(SenderOp::ReadyAll);
        }
        if !self.incomplete.is_empty() {
            ops.push(SenderOp::CompleteAll);
        }
        if self.committed > self.peer_consumed {
            ops.push(SenderOp::Msg {
                ack: AckChoice::All,
                msg: Msg::Credit {
                    consumed: Count::Auto,
                },
            });
        }
        let unfinished = self
            .files
            .iter()
            .filter(|f| f.accepted() && f.digest.is_none() && f.ended.is_none())
            .count();
        ops.extend((0..unfinished).map(|_| SenderOp::FinishNext));
        if let Some(f) = self.result_due().filter(|f| f.ended.is_some()) {
            // A well-behaved receiver's verdict: a file cut short was not delivered.
            let status = match (f.cancel, f.ended) {
                (Some(status), _) => status,
                (None, Some(StreamEnd::Abort)) => FileStatus::ABORTED,
                _ => FileStatus::OK,
            };
            ops.push(SenderOp::Msg {
                ack: AckChoice::All,
                msg: Msg::FileResult {
                    file: FileRef::Next,
                    status: status.0,
                },
            });
        }
        if self.awaiting_answer().is_some() {
            ops.push(SenderOp::Msg {
                ack: AckChoice::All,
                msg: Msg::FileAnswer {
                    file: FileRef::Next,
                    answer: crate::common::Answer::Accept,
                },
            });
        }
        ops
    }

    /// Gives `op` to the sender and checks its result against the model.
    fn step(&mut self, s: &mut Sender<Store>, op: &SenderOp) {
        let before = Snapshot::of(s);
        let now = self.clock.now();
        let result = match op {
            SenderOp::Start {
                id,
                kind,
                size,
                meta,
                name,
            } => {
                let name = name.render();
                let entry = meta.entry(*kind, *size, self.neg.chunk_size);
                let info = entry.header(id.resolve(self.last_id), &name);
                self.start(s, now, &info)
            }
            SenderOp::ReadyNext => {
                let seq = self.reads.front().map_or(0, |r| r.seq);
                self.ready(s, now, seq)
            }
            SenderOp::ReadyAll => {
                let mut res = Ok(());
                while let Some(seq) = self.reads.front().map(|r| r.seq) {
                    res = self.ready(s, now, seq);
                    if res.is_err() {
                        break;
                    }
                }
                res
            }
            SenderOp::Ready(seq) => self.ready(s, now, *seq),
            SenderOp::FinishNext => {
                let next = self
                    .files
                    .iter()
                    .find(|f| f.accepted() && f.digest.is_none() && f.ended.is_none());
                let id = next.map_or(u64::MAX, |f| f.id);
                let digest = agreed_digest(self.neg.features, id as u8);
                self.finish(s, now, id, digest)
            }
            SenderOp::Finish { file, digest } => {
                let next = self
                    .files
                    .iter()
                    .find(|f| f.accepted() && f.digest.is_none())
                    .map(|f| f.id);
                self.finish(s, now, file.resolve(next), digest.get())
            }
            SenderOp::AbortFile { file, reason } => {
                let id = file.resolve(self.next_file(MsgKind::FileAbort));
                self.abort_file(s, now, id, AbortReason(*reason))
            }
            SenderOp::Close => {
                let res = s.close(now);
                if self.ended {
                    expect(res, &[Err(Error::Closed)], "close");
                } else {
                    expect(res, &[Ok(())], "close");
                    self.closing = true;
                }
                res
            }
            SenderOp::Abort(code) => {
                s.abort(now, ErrorCode(*code));
                self.fail(
                    Failure::Aborted(ErrorCode(*code)),
                    Some((ErrorCode(*code), 0)),
                );
                Ok(())
            }
            SenderOp::Raw(bytes) => self.control(s, now, bytes),
            SenderOp::Msg { ack, msg } => {
                let mut buf = [0u8; CTRL_MSG_MAX];
                let ack = ack.resolve(self.ctrl, self.peer_acked);
                let n = build(self, msg, ack, &mut buf);
                self.control(s, now, &buf[..n])
            }
            SenderOp::CompleteNext => {
                let seq = self.incomplete.front().copied().unwrap_or(self.completed);
                self.complete(s, now, seq)
            }
            SenderOp::CompleteAll => {
                let seq = self.incomplete.back().copied().unwrap_or(self.completed);
                self.complete(s, now, seq)
            }
            SenderOp::Complete(seq) => self.complete(s, now, *seq),
            SenderOp::Timeout(ms) => {
                let now = self.clock.advance(*ms);
                s.handle_timeout(now);
                let deadline = self.idle.map(|d| self.last_arrival.saturating_add(d));
                if deadline.is_some_and(|d| now >= d) {
                    let code = ErrorCode::TIMEOUT;
                    self.fail(Failure::TimedOut, Some((code, 0)));
                }
                Ok(())
            }
            SenderOp::Pump | SenderOp::Flood { .. } | SenderOp::Hold => Ok(()),
        };
        if trace() {
            eprintln!("{op:?} -> {result:?}");
        }
        assert_eq!(s.is_ended(), self.ended, "ended after {op:?}");
        match result {
            Err(Error::Usage(_) | Error::Closed) => {
                assert_eq!(
                    Snapshot::of(s),
                    before,
                    "{op:?} was refused but changed things"
                )
            }
            Err(Error::Violation(_)) => assert!(s.is_ended(), "a violation must fail"),
            Ok(()) => {}
        }
        let open = self.files.iter().filter(|f| !f.closed).count() as u64;
        assert_eq!(s.open_files(), open, "open files after {op:?}");
    }

    fn start(
        &mut self,
        s: &mut Sender<Store>,
        now: Instant,
        info: &FileInfo<'_>,
    ) -> Result<(), Error> {
        let can_start = s.can_start_file();
        let res = s.start_file(now, info);
        let conflict = self.open_names().any(|o| names_conflict(o, info.name));
        let usage = |u| Err(Error::Usage(u));
        let expected: Vec<Result<(), Error>> = if self.ended {
            vec![Err(Error::Closed)]
        } else if self.closing {
            vec![usage(UsageError::NotOpen)]
        } else if info.kind == EntryKind::Symlink && !self.neg.features.contains(Features::LINKS) {
            vec![usage(UsageError::InvalidMetadata(Field::EntryKind))]
        } else if self.files.iter().any(|f| !f.header_sent) {
            vec![usage(UsageError::OutputsNotDrained)]
        } else if !can_start {
            vec![usage(UsageError::TooManyOpenFiles)]
        } else if self.last_id.is_some_and(|l| info.file_id <= l) {
            vec![usage(UsageError::DuplicateFileId)]
        } else if let Err(e) = validate_name(info.name.as_bytes()) {
            vec![usage(UsageError::InvalidName(e))]
        } else if let Some(field) = metadata_error(info) {
            vec![usage(UsageError::InvalidMetadata(field))]
        } else if !part_allowed(&self.neg, info.part) {
            vec![usage(UsageError::InvalidMetadata(Field::Part))]
        } else if conflict {
            vec![usage(UsageError::NameConflict)]
        } else {
            vec![Ok(()), usage(UsageError::NameTableFull)]
        };
        expect(res, &expected, "start_file");
        if can_start {
            // The protocol's window: the oldest unresolved file plus the limit.
            let limit = self.window_base() + usize::from(self.neg.max_open_files);
            assert!(
                self.files.len() < limit,
                "start allowed beyond the open-file window"
            );
        }
        if res.is_ok() {
            self.last_id = Some(info.file_id);
            self.files.push(TxFile {
                id: info.file_id,
                name: info.name.to_owned(),
                kind: info.kind,
                size: info.size,
                part: info.part,
                len: data_len(info),
                mtime: (info.mtime_sec, info.mtime_nsec),
                mode: info.mode,
                header_sent: false,
                answer: None,
                first: 0,
                count: 0,
                offset: 0,
                digest: None,
                abort: None,
                cancel: None,
                ended: None,
                written: 0,
                closed: false,
            });
        }
        res
    }

    fn ready(&mut self, s: &mut Sender<Store>, now: Instant, seq: u64) -> Result<(), Error> {
        let res = s.data_ready(now, seq);
        if self.ended {
            expect(res, &[Err(Error::Closed)], "data_ready");
            return res;
        }
        if self.reads.front().is_some_and(|r| r.seq == seq) {
            expect(res, &[Ok(())], "data_ready");
            let read = self.reads.pop_front().expect("front");
            let slot = &mut self.slots[read.slot as usize];
            let u = slot.as_mut().expect("a read slot is in use");
            assert_eq!(u.read.seq, seq);
            u.ready = true;
            let aborted = self
                .by_id(read.file_id)
                .is_some_and(|f| f.ended == Some(StreamEnd::Abort));
            if aborted {
                self.slots[read.slot as usize] = None;
            }
        } else {
            expect(
                res,
                &[Err(Error::Usage(UsageError::OutOfOrder))],
                "data_ready",
            );
        }
        res
    }

    fn finish(
        &mut self,
        s: &mut Sender<Store>,
        now: Instant,
        id: u64,
        digest: Digest,
    ) -> Result<(), Error> {
        let res = s.finish_file(now, id, digest);
        let ok = self
            .by_id(id)
            .is_some_and(|f| !f.closed && f.accepted() && f.ended.is_none() && f.digest.is_none());
        let expected = if self.ended {
            Err(Error::Closed)
        } else if !digest.kind.is_agreed(self.neg.features) {
            Err(Error::Usage(UsageError::DigestNotNegotiated))
        } else if ok {
            Ok(())
        } else {
            Err(Error::Usage(UsageError::UnknownFile))
        };
        expect(res, &[expected], "finish_file");
        if res.is_ok() {
            self.by_id_mut(id).expect("known").digest = Some(digest.canonical());
        }
        res
    }

    fn abort_file(
        &mut self,
        s: &mut Sender<Store>,
        now: Instant,
        id: u64,
        reason: AbortReason,
    ) -> Result<(), Error> {
        let res = s.abort_file(now, id, reason);
        let ok = self.by_id(id).is_some_and(|f| {
            !f.closed
                && f.ended.is_none()
                && f.abort.is_none()
                && (f.answer.is_none() || f.accepted())
        });
        let expected = if self.ended {
            Err(Error::Closed)
        } else if ok {
            Ok(())
        } else {
            Err(Error::Usage(UsageError::UnknownFile))
        };
        expect(res, &[expected], "abort_file");
        if res.is_ok() {
            self.by_id_mut(id).expect("known").abort = Some(reason);
        }
        res
    }

    fn complete(&mut self, s: &mut Sender<Store>, now: Instant, seq: u64) -> Result<(), Error> {
        let res = s.handle_write_completed(now, seq);
        let expected = if self.ended {
            Err(Error::Closed)
        } else if seq >= self.completed && self.last_write.is_some_and(|l| seq <= l) {
            Ok(())
        } else {
            Err(Error::Usage(UsageError::OutOfOrder))
        };
        expect(res, &[expected], "handle_write_completed");
        if res.is_ok() {
            self.completed = seq + 1;
            while self.incomplete.front().is_some_and(|&w| w <= seq) {
                self.incomplete.pop_front();
            }
            for slot in &mut self.slots {
                if slot.is_some_and(|u| u.written && u.read.seq <= seq) {
                    *slot = None;
                }
            }
        }
        res
    }

    /// A receiver message: the result the model predicts, and its effects.
    fn control(&mut self, s: &mut Sender<Store>, now: Instant, bytes: &[u8]) -> Result<(), Error> {
        let res = s.handle_control(now, bytes);
        if self.ended {
            expect(res, &[Err(Error::Closed)], "handle_control after the end");
            return res;
        }
        if self.events.len() >= 2 {
            expect(
                res,
                &[Err(Error::Usage(UsageError::OutputsNotDrained))],
                "undrained events",
            );
            return res;
        }
        self.last_arrival = self.last_arrival.max(now);
        let (ack, msg) = match Control::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                let expected = self.violation(Violation::Decode(e));
                expect(res, &[expected], "undecodable message");
                return res;
            }
        };
        if ack.wrapping_sub(self.peer_acked) > self.outstanding() {
            let expected = self.violation(Violation::BadAck);
            expect(res, &[expected], "ack beyond the messages written");
            return res;
        }
        self.peer_acked = ack;
        self.processed = self.processed.wrapping_add(1);
        let what = format!("{msg:?}");
        let expected: Vec<Result<(), Error>> = match msg {
            Control::FileAnswer { file_id, answer } => vec![self.on_answer(file_id, answer)],
            Control::Credit { consumed } => {
                if consumed < self.peer_consumed || consumed > self.committed {
                    vec![self.violation(Violation::BadCredit)]
                } else {
                    self.peer_consumed = consumed;
                    vec![Ok(())]
                }
            }
            Control::FileResult { file_id, status } => {
                let due = self
                    .result_due()
                    .filter(|f| f.id == file_id && f.ended.is_some());
                let cut_short =
                    due.is_some_and(|f| f.ended == Some(StreamEnd::Abort) || f.cancel.is_some());
                if cut_short && status.is_ok() {
                    vec![self.violation(Violation::BadResult)]
                } else if due.is_some() {
                    self.by_id_mut(file_id).expect("known").closed = true;
                    self.event(SenderEvent::FileDone { file_id, status });
                    vec![Ok(())]
                } else {
                    vec![self.violation(Violation::UnknownFile(file_id))]
                }
            }
            Control::FileCancel { file_id, status } => self.on_cancel(file_id, status),
            Control::Ack | Control::KeepAlive => vec![Ok(())],
            Control::Goodbye if self.goodbye_sent => {
                self.ended = true;
                self.terminal = Some(Terminal::Closed);
                vec![Ok(())]
            }
            Control::Error { code, detail, text } => {
                self.fail(
                    Failure::PeerAborted(code, detail, ErrorText::new(text)),
                    None,
                );
                vec![Ok(())]
            }
            other => vec![self.violation(Violation::UnexpectedMessage(other.kind()))],
        };
        expect(res, &expected, &what);
        if let Err(Error::Violation(v)) = res {
            // Where the model allowed more than one violation.
            let _ = self.violation(v);
        }
        res
    }

    fn on_answer(&mut self, file_id: u64, answer: FileAnswer) -> Result<(), Error> {
        let cursor = self.files.iter().position(|f| f.answer.is_none());
        let Some(o) = cursor.filter(|&o| self.files[o].header_sent) else {
            return self.violation(Violation::UnknownFile(file_id));
        };
        if self.files[o].id != file_id {
            let later = self
                .files
                .iter()
                .any(|f| f.id == file_id && f.header_sent && f.answer.is_none());
            return self.violation(if later {
                Violation::AnswerOutOfOrder
            } else {
                Violation::UnknownFile(file_id)
            });
        }
        let chunk = u64::from(self.neg.chunk_size);
        let f = self.files[o].clone();
        // Headers here never ask to sync: only a plain accept or a reject fits.
        if !answer.fits(None) {
            return self.violation(Violation::BadSync);
        }
        match answer {
            FileAnswer::Accept { offset } => {
                let resumable =
                    f.kind == EntryKind::File && self.neg.features.contains(Features::RESUME);
                if offset > f.len || offset % chunk != 0 || (offset > 0 && !resumable) {
                    return self.violation(Violation::BadResumeOffset);
                }
                let count = chunk_count(f.len, offset, self.neg.chunk_size);
                let first = self.next_assign;
                self.next_assign += count;
                let file = &mut self.files[o];
                file.answer = Some(answer);
                (file.first, file.count, file.offset) = (first, count, offset);
                // A directory or a link: no data, no digest.
                if file.kind != EntryKind::File {
                    file.digest = Some(Digest::NONE);
                }
                if f.abort.is_none() {
                    self.event(SenderEvent::FileAccepted {
                        file_id,
                        offset,
                        changes: Changes::empty(),
                    });
                }
            }
            FileAnswer::Reject(reason) => {
                let file = &mut self.files[o];
                file.answer = Some(answer);
                file.closed = true;
                self.event(SenderEvent::FileRejected { file_id, reason });
            }
            // Refused above: no sync answer fits a header that did not ask.
            FileAnswer::AcceptChanged { .. }
            | FileAnswer::InSync(_)
            | FileAnswer::WouldSend(_)
            | FileAnswer::Pruned { .. } => {
                return self.violation(Violation::BadSync);
            }
        }
        Ok(())
    }

    fn on_cancel(&mut self, file_id: u64, status: FileStatus) -> Vec<Result<(), Error>> {
        let Some(f) = self.by_id(file_id).cloned() else {
            return vec![self.violation(Violation::UnknownFile(file_id))];
        };
        if f.closed {
            // Whether the sender still holds a closed file in its table is not the model's
            // business: either answer is a violation (`control` records the one given).
            let unknown = Err(Error::Violation(Violation::UnknownFile(file_id)));
            let bad = Err(Error::Violation(Violation::BadCancel));
            return vec![unknown, bad];
        }
        // At most once per file (§4.5), also when the first crossed our end or abort, and
        // never with the status OK.
        if f.cancel.is_some() || !f.accepted() || status.is_ok() {
            return vec![self.violation(Violation::BadCancel)];
        }
        let file = self.by_id_mut(file_id).expect("known");
        file.cancel = Some(status);
        if f.ended.is_none() {
            file.abort = Some(AbortReason::PEER_CANCELLED);
            self.event(SenderEvent::FileCancelled { file_id, status });
        }
        vec![Ok(())]
    }

    // ---- outputs ----

    /// Drains the sender, checking every output, then what must have gone out.
    fn drain(&mut self, s: &mut Sender<Store>) {
        let now = self.clock.now();
        let mut buf: CtrlBuf = [0; CTRL_MSG_MAX];
        for _ in 0..DRAIN_LIMIT {
            let Some(out) = s.poll_output(now, &mut buf) else {
                assert!(s.poll_output(now, &mut buf).is_none(), "output after None");
                self.after_drain(s);
                return;
            };
            if trace() {
                eprintln!("    {out:?}");
            }
            assert!(!self.terminal_seen, "output {out:?} after the final event");
            match out {
                SenderOutput::Control(c) => self.on_control(c, &buf[..c.len.min(CTRL_MSG_MAX)]),
                SenderOutput::Ack(imm) => {
                    assert!(
                        !self.ended && !self.goodbye_sent,
                        "pure ack after the goodbye"
                    );
                    assert_eq!(Imm::decode(imm), Imm::ack(self.processed), "pure ack count");
                    let unreported = self.processed.wrapping_sub(self.reported);
                    assert!(
                        unreported >= ack_threshold(self.neg.sender_ctrl_depth),
                        "pure ack of only {unreported} messages: more than two could be in flight"
                    );
                    self.reported = self.processed;
                    self.last_sent = now;
                }
                SenderOutput::Read(r) => self.on_read(r),
                SenderOutput::Write(w) => self.on_write(w),
                SenderOutput::Event(e) => self.on_event(s, e),
            }
        }
        panic!("sender poll_output did not settle after {DRAIN_LIMIT} outputs");
    }

    fn on_control(&mut self, c: ControlWrite, bytes: &[u8]) {
        let neg = self.neg;
        let n = self.ctrl;
        assert!(
            (8..=CTRL_MSG_MAX).contains(&c.len),
            "control write of {} bytes",
            c.len
        );
        assert_eq!(c.slot, n % self.depth(), "control slot");
        assert_eq!(c.imm, Imm::control(n).encode(), "control immediate");
        assert_eq!(c.rkey, neg.ring.rkey);
        assert_eq!(c.remote_addr, neg.ring.addr + neg.ctrl_slot_offset(c.slot));
        assert!(
            c.remote_addr + c.len as u64 <= neg.ring.addr + neg.ring.len,
            "control write outside the ring"
        );
        let (ack, msg) = Control::decode(bytes)
            .unwrap_or_else(|e| panic!("the sender wrote undecodable bytes: {e}"));
        assert_eq!(ack, self.processed, "ack field of {msg:?}");
        assert_eq!(ack, ack_field(bytes));
        self.ctrl = self.ctrl.wrapping_add(1);
        self.reported = self.processed;
        self.last_sent = self.clock.now();
        let final_msg = matches!(msg, Control::Goodbye | Control::Error { .. });
        let limit = if final_msg {
            self.depth()
        } else {
            self.depth() - 1
        };
        assert!(
            self.outstanding() <= limit,
            "{:?} beyond the control credit: {} unacknowledged, depth {}",
            msg.kind(),
            self.outstanding(),
            self.depth()
        );
        if !matches!(msg, Control::Error { .. }) {
            assert!(!self.ended, "{msg:?} after the end");
            assert!(!self.goodbye_sent, "{msg:?} after the goodbye");
        }
        if neg.sender_proof.is_some()
            && !matches!(msg, Control::Auth { .. } | Control::Error { .. })
        {
            assert!(self.auth_sent, "{msg:?} before the key proof");
        }
        match msg {
            Control::Auth { proof } => {
                assert_eq!(Some(proof), neg.sender_proof, "wrong or unexpected proof");
                assert!(
                    n == 0 && !self.auth_sent,
                    "the proof is the first message, once"
                );
                self.auth_sent = true;
            }
            Control::FileHeader(h) => {
                let base = self.window_base();
                let o = self
                    .files
                    .iter()
                    .position(|f| !f.header_sent)
                    .expect("a header of no file started");
                assert!(
                    o < base + usize::from(neg.max_open_files),
                    "header {o} beyond the open-file window ({base} + {})",
                    neg.max_open_files
                );
                let f = &mut self.files[o];
                assert_eq!(
                    (
                        h.file_id,
                        h.kind,
                        h.size,
                        h.part,
                        (h.mtime_sec, h.mtime_nsec),
                        h.mode,
                        h.name
                    ),
                    (
                        f.id,
                        f.kind,
                        f.size,
                        f.part,
                        f.mtime,
                        f.mode,
                        f.name.as_str()
                    ),
                    "header differs from start_file"
                );
                f.header_sent = true;
            }
            Control::FileEnd(e) => {
                let f = self.current().expect("an end with no stream open").clone();
                assert_eq!(
                    e.file_id, f.id,
                    "end of a file that is not the current stream"
                );
                assert_eq!(f.abort, None, "end of an aborted file");
                assert_eq!(f.written, f.count, "end before all chunks were written");
                assert_eq!(e.length, f.len, "end length: the data length");
                assert_eq!(Some(e.digest), f.digest, "end without the digest given");
                self.by_id_mut(f.id).expect("known").ended = Some(StreamEnd::End);
            }
            Control::FileAbort { file_id, reason } => {
                let f = self
                    .current()
                    .expect("an abort with no stream open")
                    .clone();
                assert_eq!(
                    file_id, f.id,
                    "abort of a file that is not the current stream"
                );
                assert_eq!(Some(reason), f.abort, "abort reason");
                self.by_id_mut(f.id).expect("known").ended = Some(StreamEnd::Abort);
                self.committed = self.committed.max(f.end_seq());
                for slot in &mut self.slots {
                    if slot.is_some_and(|u| u.read.file_id == f.id && u.ready && !u.written) {
                        *slot = None;
                    }
                }
            }
            Control::KeepAlive => {}
            Control::Goodbye => {
                assert!(self.closing, "goodbye without close");
                assert!(
                    self.files.iter().all(|f| f.closed),
                    "goodbye with files open"
                );
                self.goodbye_sent = true;
            }
            Control::Error { code, detail, .. } => {
                assert!(self.ended, "error message while the session is live");
                assert_eq!(
                    self.owed_error.take(),
                    Some((code, detail)),
                    "error message"
                );
            }
            other => panic!("the sender wrote a receiver's message: {other:?}"),
        }
    }

    fn on_read(&mut self, r: ChunkRead) {
        assert!(!self.ended, "read after the end");
        assert!(
            self.last_read.is_none_or(|l| r.seq > l),
            "reads out of order"
        );
        let chunk = u64::from(self.neg.chunk_size);
        let f = self
            .files
            .iter()
            .find(|f| f.accepted() && (f.first..f.end_seq()).contains(&r.seq))
            .unwrap_or_else(|| panic!("read of chunk {} that no accepted file owns", r.seq));
        assert_eq!(r.file_id, f.id, "read for the wrong file");
        assert!(
            f.abort.is_none() && f.ended.is_none(),
            "read of an aborted file"
        );
        assert_eq!(
            r.file_offset,
            f.offset + (r.seq - f.first) * chunk,
            "read offset"
        );
        assert_eq!(
            u64::from(r.len),
            (f.len - r.file_offset).min(chunk),
            "read length"
        );
        assert!(r.len > 0);
        assert_eq!(
            u64::from(r.slot),
            r.seq % u64::from(self.neg.window),
            "read slot"
        );
        let slot = &mut self.slots[r.slot as usize];
        assert!(
            slot.is_none(),
            "read of chunk {} into slot {} still holding {:?}",
            r.seq,
            r.slot,
            slot
        );
        *slot = Some(SlotUse {
            read: r,
            ready: false,
            written: false,
        });
        self.last_read = Some(r.seq);
        self.reads.push_back(r);
    }

    fn on_write(&mut self, w: ChunkWrite) {
        let neg = self.neg;
        assert!(!self.ended, "write after the end");
        assert!(
            self.last_write.is_none_or(|l| w.seq > l),
            "writes out of order"
        );
        assert!(
            w.seq < self.peer_consumed + u64::from(neg.window),
            "write of chunk {} beyond the credit ({} consumed, window {})",
            w.seq,
            self.peer_consumed,
            neg.window
        );
        let f = self.current().expect("a write with no stream open").clone();
        assert_eq!(
            w.file_id, f.id,
            "write of a file that is not the current stream"
        );
        assert!(f.abort.is_none(), "write of an aborted file");
        assert_eq!(w.seq, f.first + f.written, "chunks of a file out of order");
        let slot = self.slots[w.slot as usize].expect("write of a slot never read");
        assert_eq!(
            slot.read.seq, w.seq,
            "write of a slot holding another chunk"
        );
        assert!(slot.ready, "write of a chunk whose data is not ready");
        assert!(!slot.written);
        let r = slot.read;
        assert_eq!(
            (r.slot, r.file_id, r.file_offset, r.len),
            (w.slot, w.file_id, w.file_offset, w.len),
            "write differs from its read"
        );
        assert_eq!(w.imm, Imm::chunk(w.seq).encode());
        assert_eq!(w.rkey, neg.ring.rkey);
        let chunk = u64::from(neg.chunk_size);
        assert_eq!(w.remote_addr, neg.ring.addr + u64::from(w.slot) * chunk);
        assert!(w.len > 0 && u64::from(w.len) <= chunk);
        assert!(
            w.remote_addr + u64::from(w.len) <= neg.ring.addr + neg.data_len(),
            "write outside the data slots"
        );
        self.slots[w.slot as usize] = Some(SlotUse {
            written: true,
            ..slot
        });
        self.by_id_mut(f.id).expect("known").written += 1;
        self.last_write = Some(w.seq);
        self.incomplete.push_back(w.seq);
        self.committed = self.committed.max(w.seq + 1);
        self.last_sent = self.clock.now();
    }

    fn on_event(&mut self, s: &Sender<Store>, e: SenderEvent) {
        match e {
            SenderEvent::Closed | SenderEvent::Failed(_) => {
                assert!(
                    self.events.is_empty(),
                    "final event before {:?}",
                    self.events
                );
                let got = match e {
                    SenderEvent::Failed(f) => Terminal::Failed(f),
                    _ => Terminal::Closed,
                };
                assert_eq!(Some(got), self.terminal, "final event");
                assert!(s.is_ended());
                self.terminal_seen = true;
            }
            e => assert_eq!(self.events.pop_front(), Some(e), "events out of order"),
        }
    }

    /// What must hold once `poll_output` said `None`.
    fn after_drain(&mut self, s: &Sender<Store>) {
        let now = self.clock.now();
        assert!(
            self.events.is_empty(),
            "events not given: {:?}",
            self.events
        );
        assert_eq!(s.is_ended(), self.ended);
        if self.ended {
            assert!(self.terminal_seen, "ended without a final event");
            assert_eq!(s.poll_timeout(), None, "a timer after the end");
            assert!(
                self.owed_error.is_none() || self.outstanding() >= self.depth(),
                "error message not sent though credit allows"
            );
            return;
        }
        if let Some(t) = s.poll_timeout() {
            assert!(t > now, "timer in the past: {t:?} at {now:?}");
        }
        // An aborted file's outstanding reads hold its place in the stream (the application
        // must still report them): its skip, and the stream's progress, wait for them.
        let stream_free = !self.reads.iter().any(|r| {
            self.by_id(r.file_id)
                .is_some_and(|f| f.ended == Some(StreamEnd::Abort))
        });
        if stream_free {
            // Every skip an abort promised is done: the chunks in flight are the ones
            // written or skipped and not yet credited.
            assert_eq!(
                s.in_flight(),
                self.committed - self.peer_consumed,
                "in_flight"
            );
        }
        if !self.goodbye_sent {
            let unreported = self.processed.wrapping_sub(self.reported);
            assert!(
                unreported < ack_threshold(self.neg.sender_ctrl_depth),
                "pure ack due ({unreported} unreported) but not sent"
            );
        }
        let keepalive = std::time::Duration::from_millis(self.neg.keepalive_ms.into());
        let auth_done = self.neg.sender_proof.is_none() || self.auth_sent;
        if self.may_send() {
            assert!(auth_done, "key proof not sent though credit allows");
            if !self.goodbye_sent {
                assert!(
                    self.last_sent.saturating_add(keepalive) > now,
                    "keepalive due but not sent"
                );
            }
            assert!(
                self.files.iter().all(|f| f.header_sent),
                "header not sent though credit allows"
            );
            if let Some(f) = self.current().filter(|_| stream_free) {
                assert!(
                    f.abort.is_none(),
                    "abort of {} not sent though credit allows",
                    f.id
                );
                assert!(
                    f.written < f.count || f.digest.is_none(),
                    "end of {} not sent though credit allows",
                    f.id
                );
            }
        }
        if let Some(f) = self
            .current()
            .filter(|f| f.abort.is_none() && auth_done && stream_free && f.written < f.count)
        {
            let next = f.first + f.written;
            let slot = self.slots[(next % u64::from(self.neg.window)) as usize];
            let ready = slot.is_some_and(|u| u.read.seq == next && u.ready && !u.written);
            let credit = next < self.peer_consumed + u64::from(self.neg.window);
            assert!(
                !(ready && credit),
                "chunk {next} ready with credit but not written"
            );
        }
        if self.closing
            && !self.goodbye_sent
            && self.outstanding() < self.depth()
            && self.reads.is_empty()
            && self.files.iter().all(|f| f.closed)
        {
            panic!("goodbye not sent though everything is resolved");
        }
    }
}

/// What a refused input must leave unchanged. (Not `in_flight`: it underflows while a
/// credit is ahead of the chunks an abort skips, see `tests::in_flight_underflow`.)
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    open_files: u64,
    can_start: bool,
    timeout: Option<Instant>,
    ended: bool,
}

impl Snapshot {
    fn of(s: &Sender<Store>) -> Snapshot {
        Snapshot {
            open_files: s.open_files(),
            can_start: s.can_start_file(),
            timeout: s.poll_timeout(),
            ended: s.is_ended(),
        }
    }
}
