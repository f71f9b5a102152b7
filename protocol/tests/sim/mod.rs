//! An in-memory model of one RC connection between a [`Sender`] and a [`Receiver`], with the
//! applications around them, driven by a caller-chosen schedule.
//!
//! What it models, and so checks:
//! - ordered delivery per direction; RDMA writes land in the receiver's ring at delivery time,
//!   copied from the sender's local slot or control buffer *then* (so reusing either early
//!   corrupts what lands, and the byte comparison or the decoder catches it);
//! - receives: the receiver posts `window + receiver_ctrl_depth + 2` bufferless receives, the
//!   sender `sender_ctrl_depth` buffers of `RECEIVER_MSG_MAX` bytes; a message arriving with
//!   none posted, or too long for the buffer, fails the run (real runs use
//!   `rnr_retry_count = 0`);
//! - completions: a chunk write completes at the sender after it was delivered;
//! - applications that read, consume, verify, abort and cancel at their own (scheduled) pace.
//!
//! Used by the pair tests and by the `pair` fuzz target (included by path).
#![allow(dead_code)]

use rdmaft_protocol::*;
use std::collections::{BTreeMap, VecDeque};
use std::string::String;
use std::vec::Vec;

/// Storage for the sim: room for the largest open-file limit it uses.
pub type SimStorage = ArrayStorage<64, 1024>;

/// Test digest: FNV-1a 64 of the data, repeated to 32 bytes, labelled BLAKE3 (the protocol
/// only carries digests; the driver computes real ones).
pub fn digest_of(data: &[u8]) -> Digest {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut bytes = [0u8; 32];
    for i in 0..4 {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&h.to_be_bytes());
    }
    Digest {
        kind: DigestKind::Blake3,
        bytes,
    }
}

/// What happens to a file, decided by the applications.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Reject,
    /// Pretend the first `n` bytes (rounded down to chunks) are present and verified.
    Resume(u64),
    /// The sender's read of the file's chunk `k` fails: it aborts the file.
    SenderAbortAt(u64),
    /// The receiver cancels the file after consuming its chunk `k`.
    ReceiverCancelAt(u64),
    /// A directory entry.
    Directory,
    /// A symbolic link (`LINKS`): the file's bytes are its target; no data moves.
    Link,
    /// Offered to sync (`SYNC`); the receiver has it: it answers in sync, its mode updated.
    InSync,
    /// Offered to sync by content; the receiver's copy differs: it accepts, saying so.
    SyncChanged,
    /// Offered as a dry run; the receiver answers that it would have it sent.
    DryRun,
    /// A directory offered with `DELETE`: the receiver answers that it removed two entries.
    PrunedDir,
}

impl Policy {
    /// Whether the entry ends at its answer with no data: in sync, or a dry run.
    pub fn ends_at_answer(self) -> bool {
        matches!(self, Policy::InSync | Policy::DryRun | Policy::PrunedDir)
    }
}

/// A file to send: the whole file's bytes, or with `part` one part of them (`LANES`).
#[derive(Clone, Debug)]
pub struct SimFile {
    pub name: String,
    pub data: Vec<u8>,
    pub policy: Policy,
    pub part: Option<Part>,
}

impl SimFile {
    /// The bytes the entry carries: its part's, or the whole file.
    pub fn payload(&self) -> &[u8] {
        match self.part {
            Some(p) => {
                let start = usize::try_from(p.start()).expect("a part of a file in memory");
                let end = start.saturating_add(usize::try_from(p.size()).unwrap_or(usize::MAX));
                &self.data[start.min(self.data.len())..end.min(self.data.len())]
            }
            None => &self.data,
        }
    }
}

pub fn file(name: &str, len: usize, policy: Policy) -> SimFile {
    let data = match policy {
        // A link's target: no NUL.
        Policy::Link => (0..len).map(|i| b'a' + (i % 26) as u8).collect(),
        _ => (0..len).map(|i| (i * 7 + len + name.len()) as u8).collect(),
    };
    SimFile {
        name: name.into(),
        data,
        policy,
        part: None,
    }
}

/// The result the sender must see for file `id` (`None` for a rejection), given whether the
/// receiving application managed to cancel it.
pub fn expected_status(f: &SimFile, id: u64, out: &Outcome) -> Option<FileStatus> {
    let chunks = (f.payload().len() as u64).div_ceil(CHUNK as u64);
    match f.policy {
        Policy::Reject | Policy::InSync | Policy::DryRun | Policy::PrunedDir => None,
        Policy::SenderAbortAt(k) if k < chunks => Some(FileStatus::ABORTED),
        Policy::ReceiverCancelAt(_) if out.receiver_cancelled.contains(&id) => {
            Some(FileStatus::NO_SPACE)
        }
        _ => Some(FileStatus::OK),
    }
}

/// One step the scheduler may choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Deliver the next sender → receiver write into the receiver's completion queue.
    DeliverToReceiver,
    /// Deliver the next receiver → sender message into the sender's completion queue.
    DeliverToSender,
    /// The receiver's driver polls one completion.
    ReceiverPoll,
    /// The sender's driver polls one completion (receive or write completion).
    SenderPoll,
    /// The sending application finishes one pending read.
    SenderRead,
    /// The receiving application consumes one arrived chunk.
    ReceiverConsume,
    /// The receiving application verifies one complete file.
    ReceiverVerify,
    /// The sending application starts the next file (or closes when none are left).
    SenderStart,
    /// Time passes (1 ms).
    Tick,
}

pub const ALL_STEPS: [Step; 9] = [
    Step::DeliverToReceiver,
    Step::DeliverToSender,
    Step::ReceiverPoll,
    Step::SenderPoll,
    Step::SenderRead,
    Step::ReceiverConsume,
    Step::ReceiverVerify,
    Step::SenderStart,
    Step::Tick,
];

enum Wire {
    Chunk {
        slot: u32,
        len: u32,
        imm: u32,
        seq: u64,
    },
    Ctrl {
        slot: u32,
        len: u32,
        imm: u32,
    },
    Ack {
        imm: u32,
    },
}

enum SenderCqe {
    Recv(Vec<u8>),
    WriteDone(u64),
}

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Files the receiver published, by name: the full content.
    pub published: BTreeMap<String, Vec<u8>>,
    /// Directories the receiver created.
    pub directories: Vec<String>,
    /// The sender's view: file index → final status (or rejection).
    pub sender_results: BTreeMap<u64, Result<FileStatus, FileRejectReason>>,
    /// Files the receiver cancelled, as the sender heard it.
    pub cancelled: Vec<u64>,
    /// Files the receiving application cancelled (before their end arrived).
    pub receiver_cancelled: Vec<u64>,
    /// Entries that ended at their answer (in sync, or a dry run), as the sender heard it:
    /// what changed, and whether it would have been sent.
    pub in_sync: BTreeMap<u64, (Changes, bool)>,
    /// Entries the receiver said it deleted, over all pruned directories.
    pub deleted: u64,
    /// Files the receiver dropped, with their status.
    pub dropped: BTreeMap<u64, FileStatus>,
    pub sender_closed: bool,
    pub receiver_closed: bool,
    pub sender_failure: Option<Failure>,
    pub receiver_failure: Option<Failure>,
    /// Control messages each way, pure acks, and chunk writes.
    pub ctrl_to_receiver: u64,
    pub ctrl_to_sender: u64,
    pub acks_to_receiver: u64,
    pub chunks: u64,
    /// Batches among those control messages, each way.
    pub batches_to_receiver: u64,
    pub batches_to_sender: u64,
    /// Most receives the receiver ever had in use at once.
    pub receiver_peak_in_use: u32,
}

pub struct Pair {
    pub sender: Sender<SimStorage>,
    pub receiver: Receiver<SimStorage>,
    pub now: u64,
    files: Vec<SimFile>,
    next_file: usize,
    closed_requested: bool,
    chunk: usize,
    // memory
    local_slots: Vec<u8>,
    local_ctrl: Vec<u8>,
    ring: Vec<u8>,
    // wires and completion queues
    to_receiver: VecDeque<Wire>,
    to_sender: VecDeque<Vec<u8>>,
    receiver_cq: VecDeque<(u32, u32)>,
    sender_cq: VecDeque<SenderCqe>,
    receiver_posted: u32,
    receiver_total: u32,
    sender_posted: u32,
    // applications
    pending_reads: VecDeque<ChunkRead>,
    pending_consume: VecDeque<ChunkArrival>,
    pending_verify: VecDeque<(u64, u64, Digest)>,
    /// Receiver side: file id → (name, buffer being assembled, chunks consumed).
    incoming: BTreeMap<u64, (String, Vec<u8>, u64)>,
    /// Receiver side: the targets of the links accepted, until their result.
    link_targets: BTreeMap<u64, Vec<u8>>,
    /// Sender side: files the application aborted.
    aborted: Vec<u64>,
    pub outcome: Outcome,
    pub rnr: Option<&'static str>,
}

pub struct Config {
    pub sender: Params,
    pub receiver: Params,
    pub idle_timeout_ms: Option<u64>,
}

impl Config {
    /// The same with `BATCH` offered by both sides.
    pub fn batched(&self) -> Config {
        let mut c = Config {
            sender: self.sender,
            receiver: self.receiver,
            idle_timeout_ms: self.idle_timeout_ms,
        };
        c.sender.features |= Features::BATCH;
        c.receiver.features |= Features::BATCH;
        c
    }
}

impl Config {
    /// Chunk 4 KiB and `window`; open files and control depths small so the limits are hit.
    pub fn new(window: u32) -> Config {
        let features = Features::RESUME
            | Features::DIGEST_BLAKE3
            | Features::SYNC
            | Features::DELETE
            | Features::LINKS;
        let mut sender = Params::new(features, MIN_CHUNK_SIZE, window);
        sender.max_open_files = 4;
        sender.ctrl_depth = min_ctrl_depth(4);
        let mut receiver = sender;
        receiver.max_open_files = 8;
        receiver.ctrl_depth = min_ctrl_depth(8);
        Config {
            sender,
            receiver,
            idle_timeout_ms: None,
        }
    }
}

/// Chunk size of [`Config::new`].
pub const CHUNK: usize = MIN_CHUNK_SIZE as usize;

impl Pair {
    /// Handshake through the real encoders, then build both machines.
    pub fn new(cfg: &Config, files: Vec<SimFile>) -> Result<Pair, String> {
        let mut hello = [0u8; 56];
        cfg.sender
            .hello([1; 16])
            .encode(&mut hello)
            .map_err(|e| format!("{e:?}"))?;
        let agreed = negotiate(&hello, &cfg.receiver).map_err(|r| format!("rejected: {r}"))?;
        let ring_len = usize::try_from(agreed.ring_len()).map_err(|e| e.to_string())?;
        let ring = RingInfo {
            addr: 0x1000_0000,
            len: agreed.ring_len(),
            rkey: 0xabcd,
        };
        // With groups: the one joined, or a new one.
        let group = match (agreed.features.contains(Features::LANES), agreed.join) {
            (false, _) => 0,
            (true, 0) => 0x4c41_4e45,
            (true, join) => join,
        };
        let (rneg, reply) = agreed
            .accept(ring, [2; 16], None, group)
            .map_err(|e| e.to_string())?;
        let mut rep = [0u8; 196];
        reply.encode(&mut rep).map_err(|e| format!("{e:?}"))?;
        let sneg = check_reply(&rep, &cfg.sender, &hello, None).map_err(|e| e.to_string())?;
        let config = rdmaft_protocol::Config {
            idle_timeout: cfg.idle_timeout_ms.map(core::time::Duration::from_millis),
            name_hash_key: [9; 16],
        };
        let chunk = sneg.chunk_size as usize;
        let window = sneg.window as usize;
        let receiver_total = rneg.window + u32::from(rneg.receiver_ctrl_depth) + 2;
        Ok(Pair {
            sender: Sender::new(sneg, config, SimStorage::new(), Instant::ZERO)
                .map_err(|e| e.to_string())?,
            receiver: Receiver::new(rneg, config, SimStorage::new(), Instant::ZERO)
                .map_err(|e| e.to_string())?,
            now: 0,
            files,
            next_file: 0,
            closed_requested: false,
            chunk,
            local_slots: vec![0; chunk * window],
            local_ctrl: vec![0; CTRL_MSG_MAX * usize::from(sneg.receiver_ctrl_depth)],
            ring: vec![0; ring_len],
            to_receiver: VecDeque::new(),
            to_sender: VecDeque::new(),
            receiver_cq: VecDeque::new(),
            sender_cq: VecDeque::new(),
            receiver_posted: receiver_total,
            receiver_total,
            sender_posted: u32::from(sneg.sender_ctrl_depth),
            pending_reads: VecDeque::new(),
            pending_consume: VecDeque::new(),
            pending_verify: VecDeque::new(),
            incoming: BTreeMap::new(),
            link_targets: BTreeMap::new(),
            aborted: Vec::new(),
            outcome: Outcome::default(),
            rnr: None,
        })
    }

    fn instant(&self) -> Instant {
        Instant::from_nanos(self.now * 1_000_000)
    }

    pub fn done(&self) -> bool {
        self.sender.is_ended()
            && self.receiver.is_ended()
            && self.to_receiver.is_empty()
            && self.to_sender.is_empty()
    }

    /// Whether `step` can do anything now.
    pub fn enabled(&self, step: Step) -> bool {
        match step {
            Step::DeliverToReceiver => !self.to_receiver.is_empty(),
            Step::DeliverToSender => !self.to_sender.is_empty(),
            Step::ReceiverPoll => !self.receiver_cq.is_empty(),
            Step::SenderPoll => !self.sender_cq.is_empty(),
            Step::SenderRead => !self.pending_reads.is_empty(),
            Step::ReceiverConsume => !self.pending_consume.is_empty(),
            Step::ReceiverVerify => !self.pending_verify.is_empty(),
            Step::SenderStart => {
                !self.closed_requested
                    && (self.next_file == self.files.len() || self.sender.can_start_file())
            }
            Step::Tick => false,
        }
    }

    /// Runs `step`; disabled steps do nothing. Returns an error on an RNR or a machine error.
    pub fn step(&mut self, step: Step) -> Result<(), String> {
        self.now += 1;
        let now = self.instant();
        // With batches, two steps in three run corked (their outputs wait for the third, or
        // for a full batch, or for an ordering need): the drivers' rounds of inputs.
        let corked = matches!(self.now % 3, 1 | 2);
        self.sender.set_corked(corked);
        self.receiver.set_corked(corked);
        match step {
            Step::DeliverToReceiver => self.deliver_to_receiver()?,
            Step::DeliverToSender => {
                if let Some(bytes) = self.to_sender.pop_front() {
                    if self.sender_posted == 0 {
                        self.rnr = Some("sender");
                        return Err("RNR at the sender".into());
                    }
                    if bytes.len() > RECEIVER_MSG_MAX {
                        return Err("receiver message longer than a receive buffer".into());
                    }
                    self.sender_posted -= 1;
                    self.sender_cq.push_back(SenderCqe::Recv(bytes));
                }
            }
            Step::ReceiverPoll => {
                if let Some((imm, len)) = self.receiver_cq.pop_front() {
                    self.receiver_posted += 1; // reposted before handling
                    let incoming = self
                        .receiver
                        .handle_write(now, imm, len)
                        .map_err(|e| format!("receiver write: {e}"))?;
                    match incoming {
                        Incoming::Chunk(a) => self.pending_consume.push_back(a),
                        Incoming::Control { ring_offset, len } => {
                            let at = ring_offset as usize;
                            let bytes = self.ring[at..at + len as usize].to_vec();
                            self.receiver_control(now, &bytes)?;
                        }
                        Incoming::Ack => {}
                    }
                }
            }
            Step::SenderPoll => match self.sender_cq.pop_front() {
                Some(SenderCqe::Recv(bytes)) => {
                    self.sender_posted += 1;
                    self.sender.handle_control(now, &bytes).map_err(|e| {
                        format!("sender control {:?}: {e}", Control::decode(&bytes))
                    })?;
                }
                Some(SenderCqe::WriteDone(seq)) => {
                    self.sender
                        .handle_write_completed(now, seq)
                        .map_err(|e| format!("write completion: {e}"))?;
                }
                None => {}
            },
            Step::SenderRead => self.sender_read(now)?,
            Step::ReceiverConsume => self.receiver_consume(now)?,
            Step::ReceiverVerify => {
                if let Some((id, length, digest)) = self.pending_verify.pop_front() {
                    let (name, buf, _) =
                        self.incoming.remove(&id).ok_or("verify of unknown file")?;
                    let policy = self.files[id as usize].policy;
                    let dir = matches!(policy, Policy::Directory | Policy::Link);
                    let status = if buf.len() as u64 != length {
                        FileStatus::LENGTH_MISMATCH
                    } else if let Some(target) = self.link_targets.remove(&id) {
                        // A link is "published" with its target as its content.
                        self.outcome.published.insert(name, target);
                        FileStatus::OK
                    } else if dir {
                        self.outcome.directories.push(name);
                        FileStatus::OK
                    } else if digest_of(&buf) != digest {
                        FileStatus::DIGEST_MISMATCH
                    } else {
                        self.outcome.published.insert(name, buf);
                        FileStatus::OK
                    };
                    self.receiver
                        .file_verified(now, id, status)
                        .map_err(|e| format!("verify: {e}"))?;
                }
            }
            Step::SenderStart => {
                if self.next_file == self.files.len() {
                    if !self.closed_requested {
                        self.closed_requested = true;
                        self.sender.close(now).map_err(|e| format!("close: {e}"))?;
                    }
                } else if self.sender.can_start_file() {
                    let id = self.next_file as u64;
                    let f = &self.files[self.next_file];
                    let dir = matches!(f.policy, Policy::Directory | Policy::PrunedDir);
                    let link = f.policy == Policy::Link;
                    let whole_file = !dir && !link && f.part.is_none();
                    let sync = match f.policy {
                        Policy::InSync => Some(SyncCheck::default()),
                        Policy::SyncChanged => Some(SyncCheck {
                            content: whole_file.then(|| digest_of(&f.data)),
                            dry_run: false,
                            delete: false,
                        }),
                        Policy::DryRun => Some(SyncCheck {
                            content: None,
                            dry_run: true,
                            delete: false,
                        }),
                        Policy::PrunedDir => Some(SyncCheck {
                            content: None,
                            dry_run: false,
                            delete: true,
                        }),
                        _ => None,
                    };
                    let info = FileInfo {
                        sync,
                        part: f.part,
                        file_id: id,
                        kind: if dir {
                            EntryKind::Directory
                        } else if link {
                            EntryKind::Symlink
                        } else {
                            EntryKind::File
                        },
                        size: if dir { 0 } else { f.data.len() as u64 },
                        mtime_sec: 1_700_000_000,
                        mtime_nsec: 5,
                        mode: 0o644,
                        name: &f.name,
                        target: if link { &f.data } else { &[] },
                    };
                    match self.sender.start_file(now, &info) {
                        Ok(()) => self.next_file += 1,
                        // A name still open: wait for its result.
                        Err(Error::Usage(UsageError::NameConflict)) => {}
                        Err(e) => return Err(format!("start: {e}")),
                    }
                }
            }
            Step::Tick => {
                self.now += 999;
                let now = self.instant();
                self.sender.handle_timeout(now);
                self.receiver.handle_timeout(now);
            }
        }
        self.drain()
    }

    fn deliver_to_receiver(&mut self) -> Result<(), String> {
        let Some(w) = self.to_receiver.pop_front() else {
            return Ok(());
        };
        if self.receiver_posted == 0 {
            self.rnr = Some("receiver");
            return Err("RNR at the receiver".into());
        }
        self.receiver_posted -= 1;
        let in_use = self.receiver_total - self.receiver_posted;
        self.outcome.receiver_peak_in_use = self.outcome.receiver_peak_in_use.max(in_use);
        match w {
            Wire::Chunk {
                slot,
                len,
                imm,
                seq,
            } => {
                let at = slot as usize * self.chunk;
                let src = &self.local_slots[at..at + len as usize];
                self.ring[at..at + len as usize].copy_from_slice(src);
                self.receiver_cq.push_back((imm, len));
                self.sender_cq.push_back(SenderCqe::WriteDone(seq));
            }
            Wire::Ctrl { slot, len, imm } => {
                let neg = *self.receiver.negotiated();
                let src = slot as usize * CTRL_MSG_MAX;
                let at = neg.ctrl_slot_offset(slot) as usize;
                let bytes = self.local_ctrl[src..src + len as usize].to_vec();
                self.ring[at..at + len as usize].copy_from_slice(&bytes);
                self.receiver_cq.push_back((imm, len));
            }
            Wire::Ack { imm } => self.receiver_cq.push_back((imm, 0)),
        }
        Ok(())
    }

    fn sender_read(&mut self, now: Instant) -> Result<(), String> {
        let Some(r) = self.pending_reads.pop_front() else {
            return Ok(());
        };
        let f = &self.files[r.file_id as usize];
        let k = r.file_offset / self.chunk as u64;
        let fails = matches!(f.policy, Policy::SenderAbortAt(at) if at == k);
        if !fails {
            let at = r.file_offset as usize;
            let src = &f.payload()[at..at + r.len as usize];
            let at = r.slot as usize * self.chunk;
            self.local_slots[at..at + r.len as usize].copy_from_slice(src);
        }
        self.sender
            .data_ready(now, r.seq)
            .map_err(|e| format!("data ready: {e}"))?;
        if fails && !self.aborted.contains(&r.file_id) {
            self.aborted.push(r.file_id);
            self.sender
                .abort_file(now, r.file_id, AbortReason::READ_ERROR)
                .map_err(|e| format!("abort file: {e}"))?;
        }
        Ok(())
    }

    fn receiver_consume(&mut self, now: Instant) -> Result<(), String> {
        let Some(a) = self.pending_consume.pop_front() else {
            return Ok(());
        };
        let mut cancel = false;
        if let Some((_, buf, consumed)) = self.incoming.get_mut(&a.file_id) {
            let at = a.ring_offset as usize;
            let off = a.file_offset as usize;
            buf[off..off + a.len as usize].copy_from_slice(&self.ring[at..at + a.len as usize]);
            let k = a.file_offset / self.chunk as u64;
            cancel = matches!(self.files[a.file_id as usize].policy,
                Policy::ReceiverCancelAt(at) if at == k);
            *consumed += 1;
        }
        self.receiver
            .chunk_consumed(now, a.seq)
            .map_err(|e| format!("consume: {e}"))?;
        if cancel {
            match self
                .receiver
                .cancel_file(now, a.file_id, FileStatus::NO_SPACE)
            {
                Ok(()) => self.outcome.receiver_cancelled.push(a.file_id),
                // Its end already arrived: too late to cancel, it completes normally.
                Err(Error::Usage(UsageError::UnknownFile)) => {}
                Err(e) => return Err(format!("cancel: {e}")),
            }
        }
        Ok(())
    }

    fn receiver_control(&mut self, now: Instant, bytes: &[u8]) -> Result<(), String> {
        // A batch is handled one message at a time.
        while self.receiver.control_pending() {
            self.receiver_message(now, bytes)?;
        }
        Ok(())
    }

    fn receiver_message(&mut self, now: Instant, bytes: &[u8]) -> Result<(), String> {
        let offer = self
            .receiver
            .handle_control(now, bytes)
            .map_err(|e| format!("receiver control: {e}"))?;
        let Some(offer) = offer else { return Ok(()) };
        let h = offer.header;
        let policy = self
            .files
            .get(h.file_id as usize)
            .map(|f| f.policy)
            .unwrap_or(Policy::Reject);
        let chunk = self.chunk as u64;
        let answer = match (offer.refusal, policy) {
            (Some(reason), _) => FileAnswer::Reject(reason),
            (None, Policy::Reject) => FileAnswer::Reject(FileRejectReason::EXISTS),
            (None, Policy::InSync) => FileAnswer::InSync(Changes::MODE),
            (None, Policy::DryRun) => FileAnswer::WouldSend(Changes::NEW),
            (None, Policy::PrunedDir) => FileAnswer::Pruned {
                changes: Changes::MTIME,
                deleted: 2,
            },
            (None, Policy::SyncChanged) => FileAnswer::AcceptChanged {
                offset: 0,
                changes: Changes::SIZE | Changes::CONTENT,
            },
            (None, Policy::Resume(n)) => FileAnswer::Accept {
                offset: n.min(h.data_len()) / chunk * chunk,
            },
            (None, _) => FileAnswer::Accept { offset: 0 },
        };
        if let Some(offset) = answer.accepted_offset() {
            // A resumed file's prefix is already on disk: copy it from the source.
            let mut buf = vec![0u8; h.data_len() as usize];
            let src = self.files[h.file_id as usize].payload();
            buf[..offset as usize].copy_from_slice(&src[..offset as usize]);
            self.incoming.insert(h.file_id, (h.name.into(), buf, 0));
            if h.kind == EntryKind::Symlink {
                self.link_targets.insert(h.file_id, h.target.to_vec());
            }
        }
        self.receiver
            .answer_file(now, h.file_id, answer)
            .map_err(|e| format!("answer: {e}"))
    }

    /// Drains both machines' outputs onto the wires and into the applications.
    pub fn drain(&mut self) -> Result<(), String> {
        let now = self.instant();
        let mut buf = [0u8; CTRL_MSG_MAX];
        while let Some(out) = self.sender.poll_output(now, &mut buf) {
            match out {
                SenderOutput::Control(c) => {
                    let (_, msg) = Control::decode(&buf[..c.len])
                        .map_err(|e| format!("sender emitted garbage: {e}"))?;
                    if matches!(msg, Control::Batch(_)) {
                        self.outcome.batches_to_receiver += 1;
                    }
                    let neg = self.sender.negotiated();
                    assert_eq!(c.remote_addr, neg.ring.addr + neg.ctrl_slot_offset(c.slot));
                    let at = c.slot as usize * CTRL_MSG_MAX;
                    self.local_ctrl[at..at + c.len].copy_from_slice(&buf[..c.len]);
                    self.to_receiver.push_back(Wire::Ctrl {
                        slot: c.slot,
                        len: c.len as u32,
                        imm: c.imm,
                    });
                    self.outcome.ctrl_to_receiver += 1;
                }
                SenderOutput::Ack(imm) => {
                    self.to_receiver.push_back(Wire::Ack { imm });
                    self.outcome.acks_to_receiver += 1;
                }
                SenderOutput::Read(r) => self.pending_reads.push_back(r),
                SenderOutput::Write(w) => {
                    let neg = self.sender.negotiated();
                    assert_eq!(
                        w.remote_addr,
                        neg.ring.addr + u64::from(w.slot) * u64::from(neg.chunk_size)
                    );
                    assert!(w.len <= neg.chunk_size && w.len > 0);
                    self.to_receiver.push_back(Wire::Chunk {
                        slot: w.slot,
                        len: w.len,
                        imm: w.imm,
                        seq: w.seq,
                    });
                    self.outcome.chunks += 1;
                }
                SenderOutput::Event(e) => self.sender_event(now, e)?,
            }
        }
        while let Some(out) = self.receiver.poll_output(now, &mut buf) {
            match out {
                ReceiverOutput::Transmit(n) => {
                    let (_, msg) = Control::decode(&buf[..n])
                        .map_err(|e| format!("receiver emitted garbage: {e}"))?;
                    if matches!(msg, Control::Batch(_)) {
                        self.outcome.batches_to_sender += 1;
                    }
                    self.to_sender.push_back(buf[..n].to_vec());
                    self.outcome.ctrl_to_sender += 1;
                }
                ReceiverOutput::Event(ReceiverEvent::FileComplete {
                    file_id,
                    length,
                    digest,
                }) => {
                    self.pending_verify.push_back((file_id, length, digest));
                }
                ReceiverOutput::Event(ReceiverEvent::FileDropped {
                    file_id, status, ..
                }) => {
                    self.incoming.remove(&file_id);
                    self.outcome.dropped.insert(file_id, status);
                }
                ReceiverOutput::Event(ReceiverEvent::Closed) => self.outcome.receiver_closed = true,
                ReceiverOutput::Event(ReceiverEvent::Failed(f)) => {
                    self.outcome.receiver_failure = Some(f)
                }
            }
        }
        Ok(())
    }

    fn sender_event(&mut self, now: Instant, e: SenderEvent) -> Result<(), String> {
        match e {
            SenderEvent::FileAccepted {
                file_id, offset, ..
            } => {
                let data = self.files[file_id as usize].payload();
                assert!(offset <= data.len() as u64);
                let policy = self.files[file_id as usize].policy;
                let d = if matches!(policy, Policy::Directory | Policy::Link) {
                    return Ok(());
                } else {
                    digest_of(data)
                };
                self.sender
                    .finish_file(now, file_id, d)
                    .map_err(|e| format!("finish: {e}"))?;
            }
            SenderEvent::FileRejected { file_id, reason } => {
                self.outcome.sender_results.insert(file_id, Err(reason));
            }
            SenderEvent::FileInSync { file_id, changes } => {
                self.outcome.in_sync.insert(file_id, (changes, false));
            }
            SenderEvent::FileWouldSend { file_id, changes } => {
                self.outcome.in_sync.insert(file_id, (changes, true));
            }
            SenderEvent::DirectoryPruned {
                file_id,
                changes,
                deleted,
            } => {
                self.outcome.in_sync.insert(file_id, (changes, false));
                self.outcome.deleted += deleted;
            }
            SenderEvent::FileCancelled { file_id, .. } => self.outcome.cancelled.push(file_id),
            SenderEvent::FileDone { file_id, status } => {
                self.outcome.sender_results.insert(file_id, Ok(status));
            }
            SenderEvent::Closed => self.outcome.sender_closed = true,
            SenderEvent::Failed(f) => self.outcome.sender_failure = Some(f),
        }
        Ok(())
    }

    /// Runs with a schedule from `choose` (given the enabled steps) until both sides ended or
    /// nothing is enabled. `Err` on a machine error, an RNR, or a stall.
    pub fn run(
        &mut self,
        mut choose: impl FnMut(&[Step]) -> Step,
        max_steps: usize,
    ) -> Result<(), String> {
        for _ in 0..max_steps {
            if self.done() {
                return Ok(());
            }
            let enabled: Vec<Step> = ALL_STEPS
                .iter()
                .copied()
                .filter(|s| self.enabled(*s))
                .collect();
            if enabled.is_empty() {
                // A corked side may hold what unblocks the other: uncork, as a driver's
                // round ends.
                self.sender.set_corked(false);
                self.receiver.set_corked(false);
                self.drain()?;
                if ALL_STEPS.iter().any(|s| self.enabled(*s)) {
                    continue;
                }
                return Err(format!(
                    "stalled: nothing enabled; sender ended={} receiver ended={}",
                    self.sender.is_ended(),
                    self.receiver.is_ended()
                ));
            }
            let step = choose(&enabled);
            self.step(step)?;
        }
        Err("did not finish within the step budget".into())
    }
}

/// A small deterministic PRNG (xorshift64*), so schedules are reproducible from a seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

/// Runs files through a pair under a random schedule from `seed`; returns the outcome.
pub fn transfer(cfg: &Config, files: Vec<SimFile>, seed: u64) -> Result<Outcome, String> {
    let mut pair = Pair::new(cfg, files)?;
    let mut rng = Rng(seed | 1);
    pair.run(|enabled| rng.pick(enabled), 1_000_000)?;
    Ok(pair.outcome)
}
