//! The open-name rule (PROTOCOL.md §4.1) at both machines, against a reference model: a `Vec`
//! of the open names, where a new name conflicts with an open one when they are equal or one
//! is a directory prefix of the other.
//!
//! Names come from a small alphabet (`a`, `b`, `ab`, one to three deep) so that equal names,
//! prefixes and near-prefixes (`a` and `ab/x`) meet all the time; files are opened and closed
//! in every way the protocol allows (reject, end and result, abort and result). The same
//! operations drive a sender (`start_file` must refuse exactly the conflicting names) and
//! a receiver (an offer's refusal must be `NAME_CONFLICT` exactly for them); a table with no
//! room may say `NameTableFull` / `BUSY`, but only for names without a conflict.

use crate::common::{names_conflict, ShortName, DRAIN_LIMIT, MAX_OPS};
use crate::msg::ack_field;
use arbitrary::{Arbitrary, Unstructured};
use rdmaft_protocol::*;

/// Open files at once in this harness.
const OPEN: u16 = 4;

/// One operation; each side interprets it in its role.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum NamesOp {
    /// Offer an entry of size 0 with this name.
    Start {
        /// Name.
        name: ShortName,
        /// A directory rather than a file.
        dir: bool,
    },
    /// Reject the oldest unanswered entry.
    Reject,
    /// Accept the oldest unanswered entry (its end follows).
    Accept,
    /// Resolve the oldest entry whose stream ended (its result).
    Result,
    /// Abort the `n`-th open entry (sender) / the current stream (receiver).
    Abort(u8),
}

/// The harness.
pub fn names(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(small_table) = u.arbitrary::<bool>() else {
        return;
    };
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MAX_OPS {
        match NamesOp::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    if small_table {
        // Room for few directory prefixes: full tables happen.
        sender_side(&ops, ArrayStorage::<{ OPEN as usize }, 8>::new);
        receiver_side(&ops, ArrayStorage::<{ OPEN as usize }, 8>::new);
    } else {
        sender_side(&ops, ArrayStorage::<{ OPEN as usize }, 64>::new);
        receiver_side(&ops, ArrayStorage::<{ OPEN as usize }, 64>::new);
    }
}

fn agreement() -> Negotiated {
    let depth = min_ctrl_depth(OPEN);
    Negotiated {
        group: u32::from((Features::empty()).contains(Features::LANES)),

        features: Features::empty(),
        flags: AcceptFlags::empty(),
        chunk_size: MIN_CHUNK_SIZE,
        window: 1,
        sender_ctrl_depth: depth,
        receiver_ctrl_depth: depth,
        max_open_files: OPEN,
        keepalive_ms: 1000,
        ring: RingInfo {
            addr: 0x1000_0000,
            len: u64::from(MIN_CHUNK_SIZE) + u64::from(depth) * CTRL_MSG_MAX as u64,
            rkey: 1,
        },
        sender_proof: None,
    }
}

fn config() -> Config {
    Config {
        idle_timeout: None,
        name_hash_key: [0x5a; 16],
    }
}

fn conflicts(open: &[(u64, String)], name: &str) -> bool {
    open.iter().any(|(_, o)| names_conflict(o, name))
}

fn encode(msg: Control<'_>, ack: u32) -> Vec<u8> {
    let mut buf = [0u8; CTRL_MSG_MAX];
    let n = msg.encode(ack, &mut buf).expect("encodes");
    buf[..n].to_vec()
}

// ---- sender ----

#[derive(Debug)]
struct TxFile {
    id: u64,
    kind: EntryKind,
    header_sent: bool,
    accepted: bool,
    ended: bool,
    /// Its stream ended with an abort: its result is `ABORTED`, never OK.
    aborted: bool,
    closed: bool,
}

struct TxSide<S: Storage> {
    s: Sender<S>,
    files: Vec<TxFile>,
    /// Open names, by file id (the reference model).
    open: Vec<(u64, String)>,
    /// Control messages the sender wrote, and how many the fake receiver acknowledged.
    written: u32,
    acked: u32,
}

fn sender_side<S: Storage>(ops: &[NamesOp], storage: fn() -> S) {
    let now = Instant::ZERO;
    let s = Sender::new(agreement(), config(), storage(), now).expect("valid agreement");
    let mut x = TxSide {
        s,
        files: Vec::new(),
        open: Vec::new(),
        written: 0,
        acked: 0,
    };
    let mut next_id = 0u64;
    for op in ops {
        match *op {
            NamesOp::Start { name, dir } => {
                let name = name.render();
                let kind = if dir {
                    EntryKind::Directory
                } else {
                    EntryKind::File
                };
                let info = FileInfo {
                    sync: None,
                    part: None,
                    file_id: next_id,
                    kind,
                    size: 0,
                    mtime_sec: 0,
                    mtime_nsec: 0,
                    mode: 0o755,
                    name: &name,
                    target: &[],
                };
                let conflict = conflicts(&x.open, &name);
                let room = x.s.can_start_file();
                match x.s.start_file(now, &info) {
                    Ok(()) => {
                        assert!(!conflict, "sender started {name:?} while {:?} open", x.open);
                        x.open.push((next_id, name));
                        x.files.push(TxFile {
                            id: next_id,
                            kind,
                            header_sent: false,
                            accepted: false,
                            ended: false,
                            aborted: false,
                            closed: false,
                        });
                        next_id += 1;
                    }
                    Err(Error::Usage(UsageError::NameConflict)) => assert!(
                        conflict,
                        "sender refused {name:?} as a conflict with {:?} open",
                        x.open
                    ),
                    Err(Error::Usage(UsageError::NameTableFull)) => {
                        assert!(!conflict, "a conflict reported as a full table: {name:?}")
                    }
                    Err(Error::Usage(UsageError::TooManyOpenFiles)) => assert!(!room),
                    Err(e) => panic!("start_file({name:?}): {e}"),
                }
            }
            NamesOp::Reject | NamesOp::Accept => {
                let Some(f) = x
                    .files
                    .iter()
                    .find(|f| f.header_sent && !f.accepted && !f.closed)
                else {
                    continue;
                };
                let (id, answer) = match op {
                    NamesOp::Accept => (f.id, FileAnswer::Accept { offset: 0 }),
                    _ => (f.id, FileAnswer::Reject(FileRejectReason::EXISTS)),
                };
                x.deliver(Control::FileAnswer {
                    file_id: id,
                    answer,
                });
                let f = x.file(id);
                match answer {
                    FileAnswer::Accept { .. } => f.accepted = true,
                    _ => x.close(id),
                }
            }
            NamesOp::Result => {
                // Results come in stream order: the oldest accepted file must have ended.
                let Some(f) = x.files.iter().find(|f| f.accepted && !f.closed) else {
                    continue;
                };
                if !f.ended {
                    continue;
                }
                let (id, aborted) = (f.id, f.aborted);
                let status = if aborted {
                    FileStatus::ABORTED
                } else {
                    FileStatus::OK
                };
                x.deliver(Control::FileResult {
                    file_id: id,
                    status,
                });
                x.close(id);
            }
            NamesOp::Abort(n) => {
                let open: Vec<u64> = x
                    .files
                    .iter()
                    .filter(|f| !f.closed && !f.ended)
                    .map(|f| f.id)
                    .collect();
                if open.is_empty() {
                    continue;
                }
                let id = open[usize::from(n) % open.len()];
                // Once per file: a second abort of the same file is a usage error.
                match x.s.abort_file(now, id, AbortReason::CANCELLED) {
                    Ok(()) | Err(Error::Usage(UsageError::UnknownFile)) => {}
                    Err(e) => panic!("abort_file: {e}"),
                }
            }
        }
        x.drain();
    }
}

impl<S: Storage> TxSide<S> {
    fn file(&mut self, id: u64) -> &mut TxFile {
        self.files
            .iter_mut()
            .find(|f| f.id == id)
            .expect("known file")
    }

    fn close(&mut self, id: u64) {
        self.file(id).closed = true;
        self.open.retain(|(o, _)| *o != id);
    }

    /// A receiver message that acknowledges everything; must be taken.
    fn deliver(&mut self, msg: Control<'_>) {
        self.acked = self.written;
        let bytes = encode(msg, self.written);
        self.s
            .handle_control(Instant::ZERO, &bytes)
            .unwrap_or_else(|e| panic!("sender refused {msg:?}: {e}"));
    }

    /// Drains; the fake receiver acknowledges what the sender wrote, so credit never runs out.
    fn drain(&mut self) {
        let mut buf = [0u8; CTRL_MSG_MAX];
        for _ in 0..DRAIN_LIMIT {
            let Some(out) = self.s.poll_output(Instant::ZERO, &mut buf) else {
                if self.written == self.acked {
                    return;
                }
                // The receiver acknowledges what it processed (its messages carry the count).
                self.deliver(Control::Ack);
                continue;
            };
            match out {
                SenderOutput::Control(c) => {
                    self.written += 1;
                    let (_, msg) = Control::decode(&buf[..c.len]).expect("decodes");
                    match msg {
                        Control::FileHeader(h) => {
                            let f = self.file(h.file_id);
                            assert!(!f.header_sent);
                            f.header_sent = true;
                        }
                        Control::FileEnd(e) => self.file(e.file_id).ended = true,
                        Control::FileAbort { file_id, .. } => {
                            let f = self.file(file_id);
                            (f.ended, f.aborted) = (true, true);
                        }
                        other => panic!("unexpected {:?}", other.kind()),
                    }
                }
                SenderOutput::Ack(_) => {}
                SenderOutput::Event(SenderEvent::FileAccepted { file_id, .. }) => {
                    if self.file(file_id).kind == EntryKind::File {
                        self.s
                            .finish_file(Instant::ZERO, file_id, Digest::NONE)
                            .expect("finish");
                    }
                }
                SenderOutput::Event(
                    SenderEvent::FileRejected { .. } | SenderEvent::FileDone { .. },
                ) => {}
                other => panic!("unexpected sender output {other:?}"),
            }
        }
        panic!("sender poll_output did not settle");
    }
}

// ---- receiver ----

#[derive(Debug)]
struct RxFile {
    id: u64,
    refusal: Option<FileRejectReason>,
    answer: Option<FileAnswer>,
    answer_sent: bool,
    ended: bool,
    closed: bool,
}

struct RxSide<S: Storage> {
    r: Receiver<S>,
    files: Vec<RxFile>,
    open: Vec<(u64, String)>,
    /// Control messages written into the ring, and the receiver's count of them last
    /// reported.
    ctrl: u32,
    reported: u32,
    /// Receiver messages, and how many the fake sender acknowledged.
    sent: u32,
    acked: u32,
}

fn receiver_side<S: Storage>(ops: &[NamesOp], storage: fn() -> S) {
    let now = Instant::ZERO;
    let r = Receiver::new(agreement(), config(), storage(), now).expect("valid agreement");
    let mut x = RxSide {
        r,
        files: Vec::new(),
        open: Vec::new(),
        ctrl: 0,
        reported: 0,
        sent: 0,
        acked: 0,
    };
    let mut next_id = 0u64;
    for op in ops {
        match *op {
            NamesOp::Start { name, dir } => {
                // The sender's open-file window: the oldest unresolved file plus the limit.
                let h = x
                    .files
                    .iter()
                    .position(|f| !f.closed)
                    .unwrap_or(x.files.len());
                if x.files.len() >= h + usize::from(OPEN) {
                    continue;
                }
                let name = name.render();
                let header = wire::FileHeader {
                    sync: None,
                    part: None,
                    file_id: next_id,
                    kind: if dir {
                        EntryKind::Directory
                    } else {
                        EntryKind::File
                    },
                    size: 0,
                    mtime_sec: 0,
                    mtime_nsec: 0,
                    mode: 0o755,
                    name: &name,
                    target: &[],
                };
                let conflict = conflicts(&x.open, &name);
                let bytes = encode(Control::FileHeader(header), x.sent);
                let offer = x.write(&bytes).expect("an offer");
                assert_eq!(offer.header, header);
                match offer.refusal {
                    None => {
                        assert!(!conflict, "receiver took {name:?} while {:?} open", x.open);
                        x.open.push((next_id, name));
                    }
                    Some(FileRejectReason::NAME_CONFLICT) => assert!(
                        conflict,
                        "receiver refused {name:?} as a conflict with {:?} open",
                        x.open
                    ),
                    Some(FileRejectReason::BUSY) => {
                        assert!(!conflict, "a conflict refused as BUSY: {name:?}")
                    }
                    Some(other) => panic!("refusal {other:?}"),
                }
                x.files.push(RxFile {
                    id: next_id,
                    refusal: offer.refusal,
                    answer: None,
                    answer_sent: false,
                    ended: false,
                    closed: false,
                });
                next_id += 1;
            }
            NamesOp::Reject | NamesOp::Accept => {
                let Some(f) = x.files.iter().find(|f| f.answer.is_none()) else {
                    continue;
                };
                let (id, refusal) = (f.id, f.refusal);
                let accept = FileAnswer::Accept { offset: 0 };
                let answer = match (op, refusal) {
                    (NamesOp::Accept, None) => accept,
                    (NamesOp::Accept, Some(reason)) => {
                        assert_eq!(
                            x.r.answer_file(now, id, accept),
                            Err(Error::Usage(UsageError::InvalidAnswer)),
                            "a refused offer accepted"
                        );
                        FileAnswer::Reject(reason)
                    }
                    (_, reason) => FileAnswer::Reject(reason.unwrap_or(FileRejectReason::EXISTS)),
                };
                x.r.answer_file(now, id, answer).expect("answer in order");
                x.file(id).answer = Some(answer);
            }
            NamesOp::Result | NamesOp::Abort(_) => {
                // The current stream: the oldest accepted file (answer sent) not ended.
                let current = x.files.iter().find(|f| {
                    f.answer_sent && matches!(f.answer, Some(FileAnswer::Accept { .. })) && !f.ended
                });
                let Some(id) = current.map(|f| f.id) else {
                    continue;
                };
                let msg = if matches!(op, NamesOp::Result) {
                    Control::FileEnd(wire::FileEnd {
                        file_id: id,
                        length: 0,
                        digest: Digest::NONE,
                    })
                } else {
                    Control::FileAbort {
                        file_id: id,
                        reason: AbortReason::CANCELLED,
                    }
                };
                let bytes = encode(msg, x.sent);
                assert!(x.write(&bytes).is_none());
                x.file(id).ended = true;
            }
        }
        x.drain();
    }
}

impl<S: Storage> RxSide<S> {
    fn file(&mut self, id: u64) -> &mut RxFile {
        self.files
            .iter_mut()
            .find(|f| f.id == id)
            .expect("known file")
    }

    /// Writes a control message into the ring and hands in its bytes, as the sender's driver
    /// would; must be taken.
    fn write<'a>(&mut self, bytes: &'a [u8]) -> Option<FileOffer<'a>> {
        let depth = u32::from(self.r.negotiated().receiver_ctrl_depth);
        assert!(
            self.ctrl.wrapping_sub(self.reported) + 1 < depth,
            "the receiver leaves its sender without control credit"
        );
        let len = u32::try_from(bytes.len()).expect("short");
        self.acked = ack_field(bytes);
        let now = Instant::ZERO;
        match self
            .r
            .handle_write(now, Imm::control(self.ctrl).encode(), len)
        {
            Ok(Incoming::Control { .. }) => {}
            other => panic!("control write: {other:?}"),
        }
        self.ctrl += 1;
        self.r
            .handle_control(now, bytes)
            .unwrap_or_else(|e| panic!("receiver refused {:?}: {e}", Control::decode(bytes)))
    }

    fn drain(&mut self) {
        let mut buf = [0u8; CTRL_MSG_MAX];
        let depth = self.r.negotiated().sender_ctrl_depth;
        for _ in 0..DRAIN_LIMIT {
            let Some(out) = self.r.poll_output(Instant::ZERO, &mut buf) else {
                // The sender's pure ack, at half its receive buffers (PROTOCOL.md §5.2).
                if self.sent.wrapping_sub(self.acked) < u32::from(depth).div_ceil(2) {
                    return;
                }
                self.acked = self.sent;
                let imm = Imm::ack(self.sent).encode();
                match self.r.handle_write(Instant::ZERO, imm, 0) {
                    Ok(Incoming::Ack) => continue,
                    other => panic!("pure ack: {other:?}"),
                }
            };
            match out {
                ReceiverOutput::Transmit(n) => {
                    self.sent += 1;
                    self.reported = ack_field(&buf[..n]);
                    let (_, msg) = Control::decode(&buf[..n]).expect("decodes");
                    match msg {
                        Control::FileAnswer { file_id, answer } => {
                            let f = self.file(file_id);
                            assert_eq!(f.answer, Some(answer));
                            f.answer_sent = true;
                            if let FileAnswer::Reject(_) = answer {
                                self.close(file_id);
                            }
                        }
                        Control::FileResult { file_id, .. } => self.close(file_id),
                        Control::Ack => {}
                        other => panic!("unexpected {:?}", other.kind()),
                    }
                }
                ReceiverOutput::Event(ReceiverEvent::FileComplete { file_id, .. }) => {
                    self.r
                        .file_verified(Instant::ZERO, file_id, FileStatus::OK)
                        .expect("verify");
                }
                ReceiverOutput::Event(ReceiverEvent::FileDropped { .. }) => {}
                other => panic!("unexpected receiver output {other:?}"),
            }
        }
        panic!("receiver poll_output did not settle");
    }

    fn close(&mut self, id: u64) {
        let f = self.file(id);
        assert!(!f.closed);
        f.closed = true;
        self.open.retain(|(o, _)| *o != id);
    }
}
