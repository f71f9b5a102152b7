//! A lockstep model of one connection, to count round trips: one round is one one-way delay;
//! what a side sends in a round arrives at the start of the next; the applications are
//! infinitely fast (a read, a consumption, a verification take no time). Both state
//! machines are the real ones.
//!
//! Used by `tests/lockstep.rs` (the targets, checked) and `benches/lockstep.rs` (the line).
#![allow(dead_code)]

use rdmaft_protocol::*;
use std::collections::VecDeque;

type Store = VecStorage;

/// One side's parameters for the model.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub chunk: u32,
    pub window: u32,
    pub open_files: u16,
    pub sender_ctrl_depth: u16,
    pub receiver_ctrl_depth: u16,
    /// Offer `BATCH` (several control messages per write and per SEND).
    pub batch: bool,
    /// A no-op sync: every header asks to sync (`SYNC`), and the receiver has every file.
    pub noop_sync: bool,
}

impl Setup {
    /// The defaults: 64 open files, the smallest legal control depths.
    pub fn new(chunk: u32, window: u32) -> Setup {
        Setup {
            chunk,
            window,
            open_files: DEFAULT_OPEN_FILES,
            sender_ctrl_depth: min_ctrl_depth(DEFAULT_OPEN_FILES),
            receiver_ctrl_depth: min_ctrl_depth(DEFAULT_OPEN_FILES),
            batch: true,
            noop_sync: false,
        }
    }

    /// The same as a no-op sync: every file is in sync at the receiver.
    pub fn noop_sync(self) -> Setup {
        Setup {
            noop_sync: true,
            ..self
        }
    }

    /// The same without `BATCH`.
    pub fn unbatched(self) -> Setup {
        Setup {
            batch: false,
            ..self
        }
    }
}

/// Messages each way over a whole session: every write the sender posts (chunks, control
/// writes, pure acks) and every SEND of the receiver.
#[derive(Clone, Copy, Debug, Default)]
pub struct Messages {
    pub to_receiver: u64,
    pub to_sender: u64,
}

enum ToReceiver {
    Chunk(u32, u32),
    Ctrl(Vec<u8>, u32),
    Ack(u32),
}

struct Model {
    sender: Sender<Store>,
    receiver: Receiver<Store>,
    /// The entries' data lengths.
    files: Vec<u64>,
    /// Every header asks to sync.
    noop_sync: bool,
    /// The entries are the parts of one file: its size and part shift (with `LANES`).
    split: Option<(u64, u8)>,
    next_file: usize,
    closing: bool,
    to_receiver: VecDeque<ToReceiver>,
    to_sender: VecDeque<Vec<u8>>,
    /// Write completions due: (round, seq).
    completions: VecDeque<(u64, u64)>,
    round: u64,
    chunks_posted: u64,
    messages: Messages,
}

impl Model {
    fn new(s: Setup, files: Vec<u64>) -> Model {
        Model::with_split(s, files, None)
    }

    /// The parts of one file of `size` bytes, parts of `2^shift` bytes: entry `i` is part `i`.
    fn split(s: Setup, size: u64, shift: u8) -> Model {
        let files = (0..Part::count(size, shift))
            .map(|index| Part {
                shift,
                index: index as u32,
            })
            .map(|p| p.len_in(size))
            .collect();
        Model::with_split(s, files, Some((size, shift)))
    }

    fn with_split(s: Setup, files: Vec<u64>, split: Option<(u64, u8)>) -> Model {
        let mut features = Features::DIGEST_XXH3_128;
        if split.is_some() {
            features |= Features::LANES;
        }
        if s.batch {
            features |= Features::BATCH;
        }
        if s.noop_sync {
            features |= Features::SYNC;
        }
        let mut sp = Params::new(features, s.chunk, s.window);
        sp.max_open_files = s.open_files;
        sp.ctrl_depth = s.sender_ctrl_depth;
        let mut rp = sp;
        rp.ctrl_depth = s.receiver_ctrl_depth;
        let mut hello = [0u8; wire::HELLO_LEN];
        sp.hello([0; 16]).encode(&mut hello).unwrap();
        let agreed = negotiate(&hello, &rp).unwrap();
        let ring = RingInfo {
            addr: 1 << 32,
            len: agreed.ring_len(),
            rkey: 1,
        };
        // The receiver opens a group for a hello that offers `LANES`.
        let group = u32::from(agreed.features.contains(Features::LANES));
        let (rneg, reply) = agreed.accept(ring, [0; 16], None, group).unwrap();
        let mut rep = [0u8; wire::ACCEPT_LEN];
        reply.encode(&mut rep).unwrap();
        let sneg = check_reply(&rep, &sp, &hello, None).unwrap();
        let cfg = Config::default();
        Model {
            sender: Sender::new(sneg, cfg, Store::new(s.open_files), Instant::ZERO).unwrap(),
            receiver: Receiver::new(rneg, cfg, Store::new(s.open_files), Instant::ZERO).unwrap(),
            files,
            noop_sync: s.noop_sync,
            split,
            next_file: 0,
            closing: false,
            to_receiver: VecDeque::new(),
            to_sender: VecDeque::new(),
            completions: VecDeque::new(),
            round: 0,
            chunks_posted: 0,
            messages: Messages::default(),
        }
    }

    fn now(&self) -> Instant {
        Instant::ZERO
    }

    /// One round: deliver what was sent last round, let both sides react fully.
    fn round(&mut self) {
        let now = self.now();
        let to_r: Vec<_> = self.to_receiver.drain(..).collect();
        let to_s: Vec<_> = self.to_sender.drain(..).collect();
        // What arrives in one round is fed in before anything goes out (cork), as a driver
        // does with one poll of completions.
        self.sender.set_corked(true);
        self.receiver.set_corked(true);
        let mut ring_ctrl = Vec::new();
        for w in to_r {
            let (imm, len) = match &w {
                ToReceiver::Chunk(imm, len) => (*imm, *len),
                ToReceiver::Ctrl(bytes, imm) => {
                    ring_ctrl = bytes.clone();
                    (*imm, bytes.len() as u32)
                }
                ToReceiver::Ack(imm) => (*imm, 0),
            };
            match self
                .receiver
                .handle_write(now, imm, len)
                .expect("receiver write")
            {
                Incoming::Chunk(a) => self.receiver.chunk_consumed(now, a.seq).unwrap(),
                Incoming::Control { .. } => {
                    // A batch is handled one message at a time.
                    while self.receiver.control_pending() {
                        let offer = self.receiver.handle_control(now, &ring_ctrl).unwrap();
                        if let Some(offer) = offer {
                            let id = offer.header.file_id;
                            let answer = match offer.header.sync {
                                Some(_) => FileAnswer::InSync(Changes::empty()),
                                None => FileAnswer::Accept { offset: 0 },
                            };
                            self.receiver.answer_file(now, id, answer).unwrap();
                        }
                    }
                }
                Incoming::Ack => {}
            }
            self.drain_receiver();
        }
        for m in to_s {
            self.sender.handle_control(now, &m).expect("sender control");
            self.drain_sender();
        }
        while self
            .completions
            .front()
            .is_some_and(|&(due, _)| due <= self.round)
        {
            let (_, seq) = self.completions.pop_front().unwrap();
            self.sender.handle_write_completed(now, seq).unwrap();
            self.drain_sender();
        }
        self.start_files();
        self.sender.set_corked(false);
        self.receiver.set_corked(false);
        self.drain_sender();
        self.drain_receiver();
        self.round += 1;
    }

    fn start_files(&mut self) {
        let now = self.now();
        loop {
            if self.next_file == self.files.len() {
                if !self.closing {
                    self.closing = true;
                    self.sender.close(now).unwrap();
                }
                return;
            }
            if !self.sender.can_start_file() {
                return;
            }
            let name = format!("f{}", self.next_file);
            let (size, part) = match self.split {
                Some((size, shift)) => (
                    size,
                    Some(Part {
                        shift,
                        index: self.next_file as u32,
                    }),
                ),
                None => (self.files[self.next_file], None),
            };
            let info = FileInfo {
                target: &[],
                sync: self.noop_sync.then(SyncCheck::default),
                part,
                file_id: self.next_file as u64,
                kind: EntryKind::File,
                size,
                mtime_sec: 0,
                mtime_nsec: 0,
                mode: 0o644,
                name: &name,
            };
            self.sender.start_file(now, &info).unwrap();
            self.next_file += 1;
            // Headers gather while the batch has room (without `BATCH`, one at a time).
            if !self.sender.can_start_file() {
                self.drain_sender();
            }
        }
    }

    fn drain_sender(&mut self) {
        let now = self.now();
        let mut buf = [0u8; CTRL_MSG_MAX];
        while let Some(out) = self.sender.poll_output(now, &mut buf) {
            if matches!(
                out,
                SenderOutput::Control(_) | SenderOutput::Ack(_) | SenderOutput::Write(_)
            ) {
                self.messages.to_receiver += 1;
            }
            match out {
                SenderOutput::Control(c) => self
                    .to_receiver
                    .push_back(ToReceiver::Ctrl(buf[..c.len].to_vec(), c.imm)),
                SenderOutput::Ack(imm) => self.to_receiver.push_back(ToReceiver::Ack(imm)),
                SenderOutput::Read(r) => self.sender.data_ready(now, r.seq).unwrap(),
                SenderOutput::Write(w) => {
                    self.chunks_posted += 1;
                    self.to_receiver.push_back(ToReceiver::Chunk(w.imm, w.len));
                    // The NIC's acknowledgement comes back one round trip later.
                    self.completions.push_back((self.round + 2, w.seq));
                }
                SenderOutput::Event(SenderEvent::FileAccepted { file_id, .. }) => {
                    let d = Digest::new(DigestKind::Xxh3_128, &[1; 16]).unwrap();
                    self.sender.finish_file(now, file_id, d).unwrap();
                }
                SenderOutput::Event(SenderEvent::Failed(f)) => panic!("sender failed: {f}"),
                SenderOutput::Event(_) => {}
            }
        }
        // A new file may be startable after the outputs (a result freed a place).
        if self.sender.can_start_file() && self.next_file < self.files.len() {
            self.start_files();
        }
    }

    fn drain_receiver(&mut self) {
        let now = self.now();
        let mut buf = [0u8; CTRL_MSG_MAX];
        while let Some(out) = self.receiver.poll_output(now, &mut buf) {
            match out {
                ReceiverOutput::Transmit(n) => {
                    self.messages.to_sender += 1;
                    self.to_sender.push_back(buf[..n].to_vec());
                }
                ReceiverOutput::Event(ReceiverEvent::FileComplete { file_id, .. }) => self
                    .receiver
                    .file_verified(now, file_id, FileStatus::OK)
                    .unwrap(),
                ReceiverOutput::Event(ReceiverEvent::Failed(f)) => panic!("receiver failed: {f}"),
                ReceiverOutput::Event(_) => {}
            }
        }
    }

    fn done(&self) -> bool {
        self.sender.is_ended() && self.receiver.is_ended()
    }
}

/// Round trips (two rounds each) to move `files` (sizes in bytes) and close the session.
pub fn round_trips(setup: Setup, files: Vec<u64>) -> f64 {
    let mut m = Model::new(setup, files);
    while !m.done() {
        m.round();
        assert!(m.round < 1_000_000, "no progress");
    }
    m.round as f64 / 2.0
}

/// Messages each way per file, amortised over a whole session moving `files`.
pub fn messages_per_file(setup: Setup, files: Vec<u64>) -> (f64, f64) {
    let n = files.len() as f64;
    let mut m = Model::new(setup, files);
    while !m.done() {
        m.round();
        assert!(m.round < 1_000_000, "no progress");
    }
    (
        m.messages.to_receiver as f64 / n,
        m.messages.to_sender as f64 / n,
    )
}

/// Round trips to move one file of `parts × part_chunks` chunks as `parts` parts (each of
/// `part_chunks` chunks, a power of two) over the session, and close it.
pub fn parts_round_trips(setup: Setup, parts: u64, part_chunks: u32) -> f64 {
    let shift = (setup.chunk * part_chunks).ilog2() as u8;
    let mut m = Model::split(setup, parts << shift, shift);
    while !m.done() {
        m.round();
        assert!(m.round < 1_000_000, "no progress");
    }
    m.round as f64 / 2.0
}

/// Chunks posted per round trip in steady state, for one file too large to finish.
pub fn bulk_chunks_per_rtt(setup: Setup) -> f64 {
    steady_chunks_per_rtt(Model::new(setup, vec![u64::from(setup.chunk) * 1_000_000]))
}

/// Chunks posted per round trip in steady state, for one file too large to finish sent as
/// parts of `part_chunks` chunks (a power of two): a header, an answer and an end per part.
pub fn parts_chunks_per_rtt(setup: Setup, part_chunks: u32) -> f64 {
    let shift = (setup.chunk * part_chunks).ilog2() as u8;
    steady_chunks_per_rtt(Model::split(
        setup,
        u64::from(setup.chunk) * 1_000_000,
        shift,
    ))
}

/// Rounds counted in steady state, after 40 to get there (fewer under Miri, which runs the
/// model a thousand times slower; the rate is steady by then).
const STEADY_ROUNDS: usize = if cfg!(miri) { 40 } else { 400 };

/// Chunks posted per round trip from round 40 on, over [`STEADY_ROUNDS`] rounds.
fn steady_chunks_per_rtt(mut m: Model) -> f64 {
    for _ in 0..40 {
        m.round();
    }
    let (start_round, start_chunks) = (m.round, m.chunks_posted);
    for _ in 0..STEADY_ROUNDS {
        m.round();
    }
    let rtts = (m.round - start_round) as f64 / 2.0;
    (m.chunks_posted - start_chunks) as f64 / rtts
}

/// The smallest legal control depths for every open-file limit in `limits`, and the bulk
/// rate at window `window` for each.
pub fn worst_bulk(window: u32, limits: &[u16]) -> f64 {
    limits
        .iter()
        .map(|&open| {
            let setup = Setup {
                chunk: MIN_CHUNK_SIZE,
                window,
                open_files: open,
                sender_ctrl_depth: min_ctrl_depth(open),
                receiver_ctrl_depth: min_ctrl_depth(open),
                batch: true,
                noop_sync: false,
            };
            bulk_chunks_per_rtt(setup)
        })
        .fold(f64::INFINITY, f64::min)
}
