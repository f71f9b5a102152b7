//! Fuzz harnesses for `rdmaft-protocol`, one plain function per cargo-fuzz target.
//!
//! Each `fuzz_targets/<name>.rs` only forwards libFuzzer's bytes to the function of the same
//! name here, so `cargo test --manifest-path fuzz/Cargo.toml --lib` (stable) replays the seed
//! corpus in `seeds/<name>/` and a few thousand pseudo-random inputs through the very same code.
//!
//! Targets:
//! - [`decode_control`], [`decode_handshake`], [`name`]: decoders and the name check on raw
//!   bytes; successes must round-trip through the encoders and keep their invariants.
//! - [`sender`], [`receiver`]: one state machine driven by an arbitrary sequence of
//!   [`SenderOp`] / [`ReceiverOp`] (raw and well-formed peer messages, application commands,
//!   completions, time), draining `poll_output` after each, with output invariants checked.
//! - [`pair`]: the in-memory simulator of `protocol/tests/sim` (included by path) under a
//!   schedule taken from the input; every run must end cleanly with every file intact.
//!
//! Peer bytes must never panic the protocol crate; every panic here is a finding.

use arbitrary::{Arbitrary, Unstructured};
use rdmaft_protocol::wire::MsgKind;
use rdmaft_protocol::*;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

#[path = "../../protocol/tests/sim/mod.rs"]
mod sim;

/// Upper bound on outputs one drain may produce; more means `poll_output` never settles.
const DRAIN_LIMIT: usize = 10_000;
/// Upper bound on operations per input, so one input cannot run for long.
const MAX_OPS: usize = 4_096;

// ---------------------------------------------------------------------------------------------
// Decoders
// ---------------------------------------------------------------------------------------------

/// `Control::decode` on raw bytes; a decoded message re-encodes to the same bytes and decodes
/// to the same message.
pub fn decode_control(data: &[u8]) {
    let Ok((ack, msg)) = Control::decode(data) else {
        return;
    };
    assert!(
        data.len() <= CTRL_MSG_MAX,
        "decoded a message longer than a buffer"
    );
    let mut buf = [0u8; CTRL_MSG_MAX];
    let n = msg
        .encode(ack, &mut buf)
        .expect("a decoded message must re-encode");
    let again = Control::decode(&buf[..n]).expect("a re-encoded message must decode");
    assert_eq!(again, (ack, msg), "round trip changed the message");
    // Decoding accepts only the canonical form (exact length, zero reserved fields and digest
    // tail), so the bytes come back identical too.
    assert_eq!(
        &buf[..n],
        data,
        "decoding accepted a non-canonical encoding"
    );
    if let Control::FileHeader(h) = msg {
        assert_eq!(validate_name(h.name.as_bytes()), Ok(h.name));
    }
}

/// Local parameter sets the handshake target negotiates against.
fn local_params() -> [Params; 3] {
    [
        Params {
            features: Features::all(),
            chunk_size: 1 << 20,
            window: 64,
            ctrl_depth: 16,
        },
        Params {
            features: Features::RESUME,
            chunk_size: MIN_CHUNK_SIZE,
            window: 1,
            ctrl_depth: MIN_RECEIVER_CTRL_DEPTH,
        },
        Params {
            features: Features::empty(),
            chunk_size: MAX_CHUNK_SIZE,
            window: MAX_WINDOW,
            ctrl_depth: MAX_CTRL_DEPTH,
        },
    ]
}

/// `HelloRepr::decode`, `HandshakeReply::decode`, `negotiate` and `check_reply` on raw bytes.
pub fn decode_handshake(data: &[u8]) {
    let mut buf = [0u8; 256];
    if let Ok(h) = HelloRepr::decode(data) {
        let n = h.encode(&mut buf).expect("hello fits 256 bytes");
        assert!(n <= 56, "hello must fit CM REQ private data");
        assert_eq!(HelloRepr::decode(&buf[..n]), Ok(h), "hello round trip");
    }
    if let Ok(r) = HandshakeReply::decode(data) {
        let n = r.encode(&mut buf).expect("reply fits 256 bytes");
        assert!(n <= 196, "reply must fit CM REP private data");
        assert_eq!(HandshakeReply::decode(&buf[..n]), Ok(r), "reply round trip");
    }
    for local in local_params() {
        if let Ok(agreed) = negotiate(data, &local) {
            check_agreed(data, &local, &agreed);
        }
        if let Ok(neg) = check_reply(data, &local) {
            check_negotiated(&local, &neg);
        }
    }
}

/// A receiver's agreement must be one the sender that sent the hello accepts, and both must
/// end up with the same parameters.
fn check_agreed(hello: &[u8], local: &Params, agreed: &Agreed) {
    let h = HelloRepr::decode(hello).expect("negotiate accepted an undecodable hello");
    assert_eq!(agreed.chunk_size, h.chunk_size.min(local.chunk_size));
    assert_eq!(agreed.window, h.window.min(local.window));
    assert_eq!(agreed.features, h.features & local.features);
    assert!((MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&agreed.chunk_size));
    assert!((1..=MAX_WINDOW).contains(&agreed.window));
    assert!(agreed.ring_len() <= MAX_RING_BYTES);
    let ring = RingInfo {
        addr: 0x7f00_0000_0000,
        len: agreed.ring_len(),
        rkey: 0x1234,
    };
    let (rneg, reply) = agreed.accept(ring, local.ctrl_depth);
    let mut buf = [0u8; 256];
    let n = reply.encode(&mut buf).expect("reply fits");
    let sender_params = Params {
        features: h.features,
        chunk_size: h.chunk_size,
        window: h.window,
        ctrl_depth: h.ctrl_depth,
    };
    let sneg = check_reply(&buf[..n], &sender_params)
        .unwrap_or_else(|e| panic!("sender refuses the receiver's own accept: {e}"));
    assert_eq!(sneg, rneg, "the two sides disagree after the handshake");
}

/// What `check_reply` accepts stays within what the sender proposed.
fn check_negotiated(local: &Params, neg: &Negotiated) {
    assert!(neg.chunk_size >= MIN_CHUNK_SIZE && neg.chunk_size <= local.chunk_size);
    assert!(neg.window >= 1 && neg.window <= local.window);
    assert!(local.features.contains(neg.features));
    assert_eq!(neg.sender_ctrl_depth, local.ctrl_depth);
    assert!((MIN_RECEIVER_CTRL_DEPTH..=MAX_CTRL_DEPTH).contains(&neg.receiver_ctrl_depth));
    assert_eq!(neg.ring.len, neg.ring_len());
    assert!(neg.ring.addr.checked_add(neg.ring.len).is_some());
}

/// `validate_name` on raw bytes; an accepted name cannot leave the receive directory, and
/// fits a file header that decodes back to it.
pub fn name(data: &[u8]) {
    let Ok(name) = validate_name(data) else {
        return;
    };
    assert_eq!(name.as_bytes(), data);
    assert!(!name.is_empty() && name.len() <= MAX_NAME_LEN);
    assert!(!name.starts_with('/'), "absolute name accepted: {name:?}");
    assert!(!name.contains('\0'), "NUL accepted: {name:?}");
    for c in name.split('/') {
        assert!(!c.is_empty(), "empty component accepted: {name:?}");
        assert!(c != "." && c != "..", "dot component accepted: {name:?}");
        assert!(c.len() <= MAX_COMPONENT_LEN);
    }
    let header = Control::FileHeader(wire::FileHeader {
        file_id: 1,
        size: 2,
        mtime_sec: 3,
        mtime_nsec: 4,
        mode: 0o644,
        name,
    });
    let mut buf = [0u8; CTRL_MSG_MAX];
    let n = header.encode(0, &mut buf).expect("a valid name fits");
    assert_eq!(Control::decode(&buf[..n]), Ok((0, header)));
}

// ---------------------------------------------------------------------------------------------
// Shared pieces of the state-machine targets
// ---------------------------------------------------------------------------------------------

/// A file name: mostly valid (so offers get through), sometimes anything.
#[derive(Arbitrary, Debug, Clone)]
pub enum Name {
    /// `f<n>`.
    Simple(u8),
    /// `d<a>/f<b>`.
    Nested(u8, u8),
    /// Any string.
    Raw(String),
}

impl Name {
    fn render(&self) -> String {
        match self {
            Name::Simple(n) => format!("f{n}"),
            Name::Nested(a, b) => format!("d{a}/f{b}"),
            Name::Raw(s) => s.clone(),
        }
    }
}

/// A file size: mostly a few chunks, sometimes anything.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Size {
    /// 0..=255 bytes.
    Small(u8),
    /// 0..=65535 bytes.
    Medium(u16),
    /// Anything, up to `u64::MAX`.
    Huge(u64),
}

impl Size {
    fn get(self) -> u64 {
        match self {
            Size::Small(n) => n.into(),
            Size::Medium(n) => n.into(),
            Size::Huge(n) => n,
        }
    }
}

/// Which file a message or command names.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum FileRef {
    /// The one the peer would name next (the oldest in the state the message is about).
    Next,
    /// A small id (collides with real ones).
    Id(u8),
    /// Any id.
    Raw(u64),
}

/// A count in a message (credit consumed, file length).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Count {
    /// The value a correct peer would send.
    Auto,
    /// A correct base plus a small delta.
    Delta(u8),
    /// Anything.
    Raw(u64),
}

/// A file answer.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Answer {
    /// Accept the whole file.
    Accept,
    /// Accept from `size × n / 255` (resume).
    Resume(u8),
    /// Reject with this reason code.
    Reject(u16),
    /// Anything.
    Raw(RawAnswer),
}

impl Answer {
    fn resolve(self, size: u64) -> FileAnswer {
        match self {
            Answer::Accept => FileAnswer::Accept { offset: 0 },
            Answer::Resume(n) => FileAnswer::Accept {
                offset: (u128::from(size) * u128::from(n) / 255) as u64,
            },
            Answer::Reject(r) => FileAnswer::Reject(FileRejectReason(r)),
            Answer::Raw(a) => a.get(),
        }
    }
}

/// Any file answer. (A local type: the protocol's own `arbitrary` derives do not build yet,
/// see the fuzz/Cargo.toml note.)
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum RawAnswer {
    /// Accept from this offset.
    Accept(u64),
    /// Reject with this reason code.
    Reject(u16),
}

impl RawAnswer {
    fn get(self) -> FileAnswer {
        match self {
            RawAnswer::Accept(offset) => FileAnswer::Accept { offset },
            RawAnswer::Reject(r) => FileAnswer::Reject(FileRejectReason(r)),
        }
    }
}

/// Any digest, tail bytes included (the encoder zeroes them).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct ArbDigest {
    /// 0: none, 1: XXH3-128, 2: BLAKE3 (taken modulo 3).
    kind: u8,
    bytes: [u8; 32],
}

impl ArbDigest {
    fn get(self) -> Digest {
        let kind = match self.kind % 3 {
            0 => DigestKind::None,
            1 => DigestKind::Xxh3_128,
            _ => DigestKind::Blake3,
        };
        Digest {
            kind,
            bytes: self.bytes,
        }
    }
}

/// A well-formed control message built from arbitrary fields; references are resolved against
/// the harness's model of the machine so the fuzzer reaches deep states.
#[derive(Arbitrary, Debug, Clone)]
pub enum Msg {
    /// File offer.
    FileHeader {
        /// File id (`Next`: a fresh one).
        file: FileRef,
        /// Size.
        size: Size,
        /// Seconds.
        mtime_sec: i64,
        /// Nanoseconds (taken modulo 10⁹ unless `raw_meta`).
        mtime_nsec: u32,
        /// Mode (masked to 0o7777 unless `raw_meta`).
        mode: u32,
        /// Keep mtime_nsec and mode as given (mostly invalid).
        raw_meta: bool,
        /// Name.
        name: Name,
    },
    /// Answer to an offer.
    FileAnswer {
        /// File.
        file: FileRef,
        /// Decision.
        answer: Answer,
    },
    /// Consumed-chunk credit.
    Credit {
        /// Cumulative consumed count.
        consumed: Count,
    },
    /// End of a file's data.
    FileEnd {
        /// File.
        file: FileRef,
        /// Length.
        length: Count,
        /// Digest.
        digest: ArbDigest,
    },
    /// Verdict on a file.
    FileResult {
        /// File.
        file: FileRef,
        /// Verdict code.
        status: u16,
    },
    /// Pure ack.
    Ack,
    /// Goodbye.
    Goodbye,
    /// Abort.
    Error {
        /// Code.
        code: u16,
        /// Text (cut to 128 bytes by the encoder).
        text: String,
    },
}

/// What a harness knows about its machine, to resolve [`FileRef::Next`] and [`Count::Auto`].
trait Model {
    /// The file a correct peer would name next in a message of `kind`.
    fn next_file(&mut self, kind: MsgKind) -> u64;
    /// Size of a known file (0 if unknown).
    fn size_of(&self, id: u64) -> u64;
    /// Correct credit value, and the last one accepted.
    fn credit(&self) -> (u64, u64);
}

fn resolve_file(m: &mut impl Model, r: FileRef, kind: MsgKind) -> u64 {
    match r {
        FileRef::Next => m.next_file(kind),
        FileRef::Id(n) => n.into(),
        FileRef::Raw(n) => n,
    }
}

fn resolve_count(auto: u64, base: u64, c: Count) -> u64 {
    match c {
        Count::Auto => auto,
        Count::Delta(d) => base.saturating_add(d.into()),
        Count::Raw(n) => n,
    }
}

/// Encodes `msg` with `ack` into `buf`; returns the length (0 if it does not encode).
fn build(m: &mut impl Model, msg: &Msg, ack: u32, buf: &mut CtrlBuf) -> usize {
    let name;
    let control = match msg {
        Msg::FileHeader {
            file,
            size,
            mtime_sec,
            mtime_nsec,
            mode,
            raw_meta,
            name: n,
        } => {
            name = n.render();
            Control::FileHeader(wire::FileHeader {
                file_id: resolve_file(m, *file, MsgKind::FileHeader),
                size: size.get(),
                mtime_sec: *mtime_sec,
                mtime_nsec: if *raw_meta {
                    *mtime_nsec
                } else {
                    mtime_nsec % 1_000_000_000
                },
                mode: if *raw_meta { *mode } else { mode & 0o7777 },
                name: &name,
            })
        }
        Msg::FileAnswer { file, answer } => {
            let file_id = resolve_file(m, *file, MsgKind::FileAnswer);
            Control::FileAnswer {
                file_id,
                answer: answer.resolve(m.size_of(file_id)),
            }
        }
        Msg::Credit { consumed } => {
            let (auto, last) = m.credit();
            Control::Credit {
                consumed: resolve_count(auto, last, *consumed),
            }
        }
        Msg::FileEnd {
            file,
            length,
            digest,
        } => {
            let file_id = resolve_file(m, *file, MsgKind::FileEnd);
            let size = m.size_of(file_id);
            Control::FileEnd(wire::FileEnd {
                file_id,
                length: resolve_count(size, size, *length),
                digest: digest.get(),
            })
        }
        Msg::FileResult { file, status } => Control::FileResult {
            file_id: resolve_file(m, *file, MsgKind::FileResult),
            status: FileStatus(*status),
        },
        Msg::Ack => Control::Ack,
        Msg::Goodbye => Control::Goodbye,
        Msg::Error { code, text } => Control::Error {
            code: ErrorCode(*code),
            text,
        },
    };
    control.encode(ack, buf).unwrap_or(0)
}

/// Advances the harness clock by `ms` milliseconds.
fn advance(now: &mut u64, ms: u16) -> Instant {
    *now = now.saturating_add(u64::from(ms) * 1_000_000);
    Instant::from_nanos(*now)
}

// ---------------------------------------------------------------------------------------------
// Sender
// ---------------------------------------------------------------------------------------------

/// One input to the sender.
#[derive(Arbitrary, Debug, Clone)]
pub enum SenderOp {
    /// `start_file`.
    StartFile {
        /// Id (small, so duplicates happen).
        file_id: u8,
        /// Size.
        size: Size,
        /// Seconds.
        mtime_sec: i64,
        /// Nanoseconds (mostly valid).
        mtime_nsec: u32,
        /// Mode (mostly valid).
        mode: u32,
        /// Keep mtime_nsec / mode as given.
        raw_meta: bool,
        /// Name.
        name: Name,
    },
    /// `data_ready` for the next requested chunk.
    DataReadyNext,
    /// `data_ready` for any sequence number.
    DataReady(u64),
    /// `finish_file`.
    FinishFile {
        /// File (`Next`: the oldest accepted one not yet finished).
        file: FileRef,
        /// Digest.
        digest: ArbDigest,
    },
    /// `close`.
    Close,
    /// `abort` with this code.
    Abort(u16),
    /// `handle_control` on raw bytes.
    ControlRaw(Vec<u8>),
    /// `handle_control` on a well-formed message.
    Control {
        /// The header's ack field (the sender does not check it).
        ack: u32,
        /// The message.
        msg: Msg,
    },
    /// `handle_write_completed` for the oldest posted write.
    WriteCompletedNext,
    /// `handle_write_completed` for any sequence number.
    WriteCompleted(u64),
    /// Time passes, then `handle_timeout`.
    Timeout(u16),
    /// Do not drain after the next operation.
    Hold,
}

/// The sender harness's model: what the outputs so far imply.
#[derive(Default)]
struct SenderModel {
    window: u64,
    /// Latest size per file id started.
    sizes: BTreeMap<u64, u64>,
    /// Started, answer pending (start order).
    awaiting: VecDeque<u64>,
    /// Accepted, not yet finished by the application.
    accepted: VecDeque<u64>,
    /// Accepted and finished with this digest.
    finished: BTreeMap<u64, Digest>,
    /// File end sent, result pending.
    end_sent: VecDeque<u64>,
    reads: u64,
    ready: u64,
    writes: u64,
    completed: u64,
    credited: u64,
    /// Reads whose write has not been emitted, in order.
    unwritten: VecDeque<ChunkRead>,
    ended: bool,
}

impl Model for SenderModel {
    fn next_file(&mut self, kind: MsgKind) -> u64 {
        let q = match kind {
            MsgKind::FileResult => &self.end_sent,
            _ => &self.awaiting,
        };
        q.front().copied().unwrap_or(0)
    }

    fn size_of(&self, id: u64) -> u64 {
        self.sizes.get(&id).copied().unwrap_or(0)
    }

    fn credit(&self) -> (u64, u64) {
        (self.writes, self.credited)
    }
}

fn remove_id(q: &mut VecDeque<u64>, id: u64) -> bool {
    match q.iter().position(|&x| x == id) {
        Some(i) => {
            q.remove(i);
            true
        }
        None => false,
    }
}

impl SenderModel {
    fn drain(&mut self, s: &mut Sender, neg: &Negotiated) {
        let mut buf: CtrlBuf = [0; CTRL_MSG_MAX];
        let chunk = u64::from(neg.chunk_size);
        for _ in 0..DRAIN_LIMIT {
            let Some(out) = s.poll_output(&mut buf) else {
                assert!(s.poll_output(&mut buf).is_none(), "output after None");
                return;
            };
            assert!(!self.ended, "output {out:?} after the final event");
            match out {
                SenderOutput::Transmit(n) => {
                    assert!(n <= CTRL_MSG_MAX);
                    let (_, msg) = Control::decode(&buf[..n])
                        .unwrap_or_else(|e| panic!("sender emitted undecodable bytes: {e}"));
                    match msg {
                        Control::FileEnd(end) => {
                            let digest = self.finished.remove(&end.file_id);
                            let digest = digest.expect("end of a file not finished");
                            assert_eq!(digest.kind, end.digest.kind);
                            assert_eq!(digest.value(), end.digest.value());
                            assert_eq!(end.length, self.size_of(end.file_id));
                            self.end_sent.push_back(end.file_id);
                        }
                        Control::Ack | Control::Goodbye | Control::Error { .. } => {}
                        other => panic!("sender emitted {other:?}"),
                    }
                }
                SenderOutput::Read(r) => {
                    assert_eq!(r.seq, self.reads, "reads out of order");
                    assert!(
                        r.seq < self.completed + self.window,
                        "read into a busy slot"
                    );
                    assert_eq!(u64::from(r.slot), r.seq % self.window);
                    assert!(r.len > 0 && u64::from(r.len) <= chunk);
                    let size = self.size_of(r.file_id);
                    assert!(
                        r.file_offset
                            .checked_add(r.len.into())
                            .is_some_and(|end| end <= size),
                        "read past the end of the file"
                    );
                    self.reads += 1;
                    self.unwritten.push_back(r);
                }
                SenderOutput::Write(w) => {
                    assert_eq!(w.seq, self.writes, "writes out of order");
                    assert!(
                        w.seq < self.ready,
                        "write of a chunk whose data is not ready"
                    );
                    assert!(w.seq < self.credited + self.window, "write without credit");
                    assert!(s.in_flight() <= self.window);
                    let r = self.unwritten.pop_front().expect("write without a read");
                    assert_eq!(
                        (r.seq, r.slot, r.file_id, r.file_offset, r.len),
                        (w.seq, w.slot, w.file_id, w.file_offset, w.len),
                        "write differs from its read"
                    );
                    assert_eq!(w.imm, w.seq as u32);
                    assert!(w.len > 0 && u64::from(w.len) <= chunk);
                    assert!(w.slot < neg.window);
                    assert_eq!(w.rkey, neg.ring.rkey);
                    assert!(w.remote_addr >= neg.ring.addr);
                    let end = w.remote_addr + u64::from(w.len);
                    assert!(
                        end <= neg.ring.addr + neg.ring.len,
                        "write outside the ring"
                    );
                    assert_eq!(w.remote_addr, neg.ring.addr + u64::from(w.slot) * chunk);
                    self.writes += 1;
                }
                SenderOutput::Event(e) => match e {
                    SenderEvent::FileAccepted { file_id, offset } => {
                        assert_eq!(self.awaiting.pop_front(), Some(file_id), "accept order");
                        assert!(offset <= self.size_of(file_id));
                        if !self.finished.contains_key(&file_id) {
                            self.accepted.push_back(file_id);
                        }
                    }
                    SenderEvent::FileRejected { file_id, .. } => {
                        assert!(remove_id(&mut self.awaiting, file_id), "unknown reject");
                    }
                    SenderEvent::FileDone { file_id, .. } => {
                        assert_eq!(self.end_sent.pop_front(), Some(file_id), "result order");
                    }
                    SenderEvent::Closed | SenderEvent::Failed(_) => {
                        assert!(s.is_ended());
                        self.ended = true;
                    }
                },
            }
        }
        panic!("sender poll_output did not settle after {DRAIN_LIMIT} outputs");
    }
}

/// Parameters a state-machine target starts from: small chunk, small window, all features
/// (sometimes fewer), and a ring placed anywhere that does not wrap.
fn negotiated(u: &mut Unstructured<'_>) -> arbitrary::Result<Negotiated> {
    let chunk_size: u32 = *u.choose(&[64, 100, 4096])?;
    let window: u32 = u.int_in_range(1..=8)?;
    let features = if u.ratio(7, 8)? {
        Features::all()
    } else {
        Features::from_bits_truncate(u.arbitrary()?)
    };
    let sender_ctrl_depth: u16 = u.int_in_range(MIN_SENDER_CTRL_DEPTH..=8)?;
    let len = u64::from(chunk_size) * u64::from(window);
    let addr = if u.ratio(1, 4)? {
        u64::MAX - len - u.int_in_range(0..=3u64)?
    } else {
        0x1000_0000
    };
    Ok(Negotiated {
        features,
        chunk_size,
        window,
        sender_ctrl_depth,
        receiver_ctrl_depth: MIN_RECEIVER_CTRL_DEPTH,
        ring: RingInfo {
            addr,
            len,
            rkey: 0xabcd,
        },
    })
}

fn idle_timeout(u: &mut Unstructured<'_>) -> arbitrary::Result<Option<Duration>> {
    Ok(if u.arbitrary()? {
        Some(Duration::from_millis(u.int_in_range(1..=100)?))
    } else {
        None
    })
}

/// A `Sender` driven by arbitrary operations; nothing may panic and the outputs keep their
/// invariants (writes inside the ring, in order, credited and ready; reads into free slots).
pub fn sender(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let (Ok(neg), Ok(idle)) = (negotiated(&mut u), idle_timeout(&mut u)) else {
        return;
    };
    let mut now = 0u64;
    let mut s = match Sender::new(neg, idle, Instant::ZERO) {
        Ok(machine) => machine,
        // Only an agreement outside the protocol's limits may be refused.
        Err(_) => return assert!(neg.check().is_err(), "valid agreement refused: {neg:?}"),
    };
    let mut m = SenderModel {
        window: neg.window.into(),
        ..SenderModel::default()
    };
    let mut hold = false;
    let mut buf: CtrlBuf = [0; CTRL_MSG_MAX];
    for _ in 0..MAX_OPS {
        if u.is_empty() {
            break;
        }
        let Ok(op) = SenderOp::arbitrary(&mut u) else {
            break;
        };
        let t = Instant::from_nanos(now);
        let was_ended = s.is_ended();
        let result: Result<(), Error> = match &op {
            SenderOp::StartFile {
                file_id,
                size,
                mtime_sec,
                mtime_nsec,
                mode,
                raw_meta,
                name,
            } => {
                let name = name.render();
                let info = FileInfo {
                    file_id: (*file_id).into(),
                    size: size.get(),
                    mtime_sec: *mtime_sec,
                    mtime_nsec: if *raw_meta {
                        *mtime_nsec
                    } else {
                        mtime_nsec % 1_000_000_000
                    },
                    mode: if *raw_meta { *mode } else { mode & 0o7777 },
                    name: &name,
                };
                let r = s.start_file(t, &info, &mut buf);
                if let Ok(n) = r {
                    let msg = Control::decode(&buf[..n]).expect("start_file emitted garbage");
                    let Control::FileHeader(h) = msg.1 else {
                        panic!("start_file emitted {msg:?}");
                    };
                    assert_eq!(
                        (h.file_id, h.size, h.mtime_sec, h.mtime_nsec, h.mode, h.name),
                        (
                            info.file_id,
                            info.size,
                            info.mtime_sec,
                            info.mtime_nsec,
                            info.mode,
                            info.name
                        )
                    );
                    m.sizes.insert(info.file_id, info.size);
                    m.awaiting.push_back(info.file_id);
                }
                r.map(|_| ())
            }
            SenderOp::DataReadyNext => {
                let r = s.data_ready(t, m.ready);
                if r.is_ok() {
                    m.ready += 1;
                }
                r
            }
            SenderOp::DataReady(seq) => {
                let r = s.data_ready(t, *seq);
                if r.is_ok() {
                    assert_eq!(*seq, m.ready);
                    m.ready += 1;
                }
                r
            }
            SenderOp::FinishFile { file, digest } => {
                let id = match file {
                    FileRef::Next => m.accepted.front().copied().unwrap_or(0),
                    FileRef::Id(n) => (*n).into(),
                    FileRef::Raw(n) => *n,
                };
                let r = s.finish_file(t, id, digest.get());
                if r.is_ok() {
                    // The acceptance event may still be queued (after a `Hold`).
                    assert!(
                        remove_id(&mut m.accepted, id) || m.awaiting.contains(&id),
                        "finish of a file not accepted"
                    );
                    m.finished.insert(id, digest.get());
                }
                r
            }
            SenderOp::Close => s.close(t),
            SenderOp::Abort(code) => {
                s.abort(t, ErrorCode(*code));
                Ok(())
            }
            SenderOp::ControlRaw(bytes) => control_to_sender(&mut s, &mut m, t, bytes),
            SenderOp::Control { ack, msg } => {
                let n = build(&mut m, msg, *ack, &mut buf);
                control_to_sender(&mut s, &mut m, t, &buf[..n])
            }
            SenderOp::WriteCompletedNext => {
                let r = s.handle_write_completed(t, m.completed);
                if r.is_ok() {
                    m.completed += 1;
                }
                r
            }
            SenderOp::WriteCompleted(seq) => {
                let r = s.handle_write_completed(t, *seq);
                if r.is_ok() {
                    assert_eq!(*seq, m.completed);
                    m.completed += 1;
                }
                r
            }
            SenderOp::Timeout(ms) => {
                s.handle_timeout(advance(&mut now, *ms));
                Ok(())
            }
            SenderOp::Hold => {
                hold = true;
                continue;
            }
        };
        if was_ended {
            assert!(
                matches!(result, Ok(()) | Err(Error::Closed)),
                "input after the end gave {result:?}"
            );
        }
        if let Err(Error::Violation(_)) = result {
            assert!(s.is_ended(), "a violation must fail the session");
        }
        assert!(s.in_flight() <= m.window);
        if !std::mem::take(&mut hold) {
            m.drain(&mut s, &neg);
        }
    }
    m.drain(&mut s, &neg);
}

fn control_to_sender(
    s: &mut Sender,
    m: &mut SenderModel,
    t: Instant,
    bytes: &[u8],
) -> Result<(), Error> {
    let res = s.handle_control(t, bytes);
    if res.is_ok() {
        let (_, msg) = Control::decode(bytes).expect("the sender took an undecodable message");
        if let Control::Credit { consumed } = msg {
            assert!(
                consumed >= m.credited && consumed <= m.writes,
                "bad credit taken"
            );
            m.credited = consumed;
        }
    }
    res
}

// ---------------------------------------------------------------------------------------------
// Receiver
// ---------------------------------------------------------------------------------------------

/// The ack count in a message to the receiver.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum AckChoice {
    /// Everything the receiver sent so far.
    All,
    /// The last ack given (acknowledges nothing new).
    Last,
    /// Anything.
    Raw(u32),
}

/// Length of a chunk completion.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum ChunkLen {
    /// The length the receiver derives.
    Expected,
    /// Anything.
    Raw(u32),
}

/// One input to the receiver.
#[derive(Arbitrary, Debug, Clone)]
pub enum ReceiverOp {
    /// `handle_control` on raw bytes.
    ControlRaw(Vec<u8>),
    /// `handle_control` on a well-formed message.
    Control {
        /// The header's ack field.
        ack: AckChoice,
        /// The message.
        msg: Msg,
    },
    /// `handle_chunk` for the next sequence number.
    ChunkNext(ChunkLen),
    /// `handle_chunk` with any immediate and length.
    Chunk {
        /// Immediate data.
        imm: u32,
        /// Byte length.
        len: u32,
    },
    /// `answer_file` for the oldest unanswered offer.
    AnswerNext(Answer),
    /// `answer_file` for any id.
    Answer {
        /// File.
        file_id: u8,
        /// Decision.
        answer: RawAnswer,
    },
    /// `chunk_consumed` for the oldest unconsumed chunk.
    ConsumeNext,
    /// `chunk_consumed` for any sequence number.
    Consume(u64),
    /// `file_verified` for the oldest complete file, with this status code.
    VerifyNext(u16),
    /// `file_verified` for any id.
    Verify {
        /// File.
        file_id: u8,
        /// Verdict code.
        status: u16,
    },
    /// `abort` with this code.
    Abort(u16),
    /// Time passes, then `handle_timeout`.
    Timeout(u16),
    /// Do not drain after the next operation.
    Hold,
}

#[derive(Clone, Copy, Debug)]
struct RxFile {
    id: u64,
    size: u64,
    offset: u64,
    first_seq: u64,
    chunks: u64,
    ended: bool,
}

/// The receiver harness's model.
#[derive(Default)]
struct ReceiverModel {
    window: u64,
    /// Offers not yet answered, in order: (id, size).
    offered: VecDeque<(u64, u64)>,
    /// Accepted files, in answer order, until their result goes out.
    accepted: Vec<RxFile>,
    next_assign_seq: u64,
    arrived: u64,
    consumed: u64,
    /// Complete files awaiting the verdict.
    complete: VecDeque<u64>,
    /// Files given a verdict before their completion event was drained.
    verified_early: Vec<u64>,
    /// Control messages sent, and the ack count the receiver last took.
    sent: u32,
    acked: u32,
    last_credit: u64,
    fresh_id: u64,
    ended: bool,
}

impl Model for ReceiverModel {
    fn next_file(&mut self, kind: MsgKind) -> u64 {
        match kind {
            MsgKind::FileHeader => {
                self.fresh_id += 1;
                1000 + self.fresh_id
            }
            MsgKind::FileEnd => self.accepted.iter().find(|f| !f.ended).map_or(0, |f| f.id),
            _ => self.accepted.first().map_or(0, |f| f.id),
        }
    }

    fn size_of(&self, id: u64) -> u64 {
        self.accepted
            .iter()
            .find(|f| f.id == id)
            .map(|f| f.size)
            .or_else(|| self.offered.iter().find(|f| f.0 == id).map(|f| f.1))
            .unwrap_or(0)
    }

    fn credit(&self) -> (u64, u64) {
        (self.consumed, self.last_credit)
    }
}

impl ReceiverModel {
    fn file_of(&self, seq: u64) -> Option<&RxFile> {
        self.accepted
            .iter()
            .find(|f| (f.first_seq..f.first_seq + f.chunks).contains(&seq))
    }

    fn expected_len(&self, chunk: u64) -> u32 {
        match self.file_of(self.arrived) {
            Some(f) => {
                let off = f.offset + (self.arrived - f.first_seq) * chunk;
                (f.size - off).min(chunk) as u32
            }
            None => chunk as u32,
        }
    }

    fn drain(&mut self, r: &mut Receiver, neg: &Negotiated) {
        let mut buf: CtrlBuf = [0; CTRL_MSG_MAX];
        for _ in 0..DRAIN_LIMIT {
            let Some(out) = r.poll_output(&mut buf) else {
                assert!(r.poll_output(&mut buf).is_none(), "output after None");
                return;
            };
            assert!(!self.ended, "output {out:?} after the final event");
            match out {
                ReceiverOutput::Transmit(n) => {
                    assert!(n <= CTRL_MSG_MAX);
                    let (_, msg) = Control::decode(&buf[..n])
                        .unwrap_or_else(|e| panic!("receiver emitted undecodable bytes: {e}"));
                    self.sent = self.sent.wrapping_add(1);
                    // Control credits: never more unacknowledged messages than the sender
                    // keeps receives posted, or the sender would see an RNR.
                    let outstanding = self.sent.wrapping_sub(self.acked);
                    assert!(
                        outstanding <= u32::from(neg.sender_ctrl_depth),
                        "receiver has {outstanding} messages outstanding, sender depth {}",
                        neg.sender_ctrl_depth
                    );
                    match msg {
                        Control::Credit { consumed } => {
                            assert!(consumed > self.last_credit, "credit did not advance");
                            assert!(consumed <= self.consumed, "credit beyond consumption");
                            self.last_credit = consumed;
                        }
                        Control::FileResult { file_id, .. } => {
                            let i = self.accepted.iter().position(|f| f.id == file_id);
                            let i = i.expect("result for a file never accepted");
                            assert!(self.accepted[i].ended);
                            self.accepted.remove(i);
                        }
                        Control::FileAnswer { .. } | Control::Goodbye | Control::Error { .. } => {}
                        other => panic!("receiver emitted {other:?}"),
                    }
                }
                ReceiverOutput::Event(e) => match e {
                    ReceiverEvent::FileComplete {
                        file_id, length, ..
                    } => {
                        let f = self.accepted.iter().find(|f| f.id == file_id);
                        let f = f.expect("completion of a file never accepted");
                        assert!(f.ended, "complete before its end");
                        assert_eq!(length, f.size);
                        assert!(f.first_seq + f.chunks <= self.consumed, "complete early");
                        if let Some(i) = self.verified_early.iter().position(|&x| x == file_id) {
                            self.verified_early.remove(i);
                        } else {
                            self.complete.push_back(file_id);
                        }
                    }
                    ReceiverEvent::Closed | ReceiverEvent::Failed(_) => {
                        assert!(r.is_ended());
                        self.ended = true;
                    }
                },
            }
        }
        panic!("receiver poll_output did not settle after {DRAIN_LIMIT} outputs");
    }
}

/// A `Receiver` driven by arbitrary operations; nothing may panic, every chunk lands inside
/// the ring, and the receiver never overruns the sender's control receives.
pub fn receiver(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let (Ok(neg), Ok(idle)) = (negotiated(&mut u), idle_timeout(&mut u)) else {
        return;
    };
    let chunk = u64::from(neg.chunk_size);
    let mut now = 0u64;
    let mut r = match Receiver::new(neg, idle, Instant::ZERO) {
        Ok(machine) => machine,
        // Only an agreement outside the protocol's limits may be refused.
        Err(_) => return assert!(neg.check().is_err(), "valid agreement refused: {neg:?}"),
    };
    let mut m = ReceiverModel {
        window: neg.window.into(),
        ..ReceiverModel::default()
    };
    let mut hold = false;
    let mut buf: CtrlBuf = [0; CTRL_MSG_MAX];
    for _ in 0..MAX_OPS {
        if u.is_empty() {
            break;
        }
        let Ok(op) = ReceiverOp::arbitrary(&mut u) else {
            break;
        };
        let t = Instant::from_nanos(now);
        let was_ended = r.is_ended();
        let result: Result<(), Error> = match &op {
            ReceiverOp::ControlRaw(bytes) => control_to_receiver(&mut r, &mut m, t, bytes),
            ReceiverOp::Control { ack, msg } => {
                let ack = match ack {
                    AckChoice::All => m.sent,
                    AckChoice::Last => m.acked,
                    AckChoice::Raw(a) => *a,
                };
                let n = build(&mut m, msg, ack, &mut buf);
                control_to_receiver(&mut r, &mut m, t, &buf[..n])
            }
            ReceiverOp::ChunkNext(len) => {
                let len = match len {
                    ChunkLen::Expected => m.expected_len(chunk),
                    ChunkLen::Raw(n) => *n,
                };
                let imm = m.arrived as u32;
                chunk_to_receiver(&mut r, &mut m, &neg, t, imm, len)
            }
            ReceiverOp::Chunk { imm, len } => {
                chunk_to_receiver(&mut r, &mut m, &neg, t, *imm, *len)
            }
            ReceiverOp::AnswerNext(answer) => {
                let (id, size) = m.offered.front().copied().unwrap_or((0, 0));
                answer_to_receiver(&mut r, &mut m, t, id, answer.resolve(size))
            }
            ReceiverOp::Answer { file_id, answer } => {
                answer_to_receiver(&mut r, &mut m, t, (*file_id).into(), answer.get())
            }
            ReceiverOp::ConsumeNext => {
                let res = r.chunk_consumed(t, m.consumed);
                if res.is_ok() {
                    m.consumed += 1;
                }
                res
            }
            ReceiverOp::Consume(seq) => {
                let res = r.chunk_consumed(t, *seq);
                if res.is_ok() {
                    assert_eq!(*seq, m.consumed);
                    m.consumed += 1;
                }
                res
            }
            ReceiverOp::VerifyNext(status) => {
                let id = m.complete.front().copied().unwrap_or(0);
                let res = r.file_verified(t, id, FileStatus(*status));
                if res.is_ok() && !remove_id(&mut m.complete, id) {
                    m.verified_early.push(id);
                }
                res
            }
            ReceiverOp::Verify { file_id, status } => {
                let id = u64::from(*file_id);
                let res = r.file_verified(t, id, FileStatus(*status));
                if res.is_ok() {
                    // The completion event may still be queued (after a `Hold`).
                    if !remove_id(&mut m.complete, id) {
                        m.verified_early.push(id);
                    }
                }
                res
            }
            ReceiverOp::Abort(code) => {
                r.abort(t, ErrorCode(*code));
                Ok(())
            }
            ReceiverOp::Timeout(ms) => {
                r.handle_timeout(advance(&mut now, *ms));
                Ok(())
            }
            ReceiverOp::Hold => {
                hold = true;
                continue;
            }
        };
        if was_ended {
            assert!(
                matches!(result, Ok(()) | Err(Error::Closed)),
                "input after the end gave {result:?}"
            );
        }
        if let Err(Error::Violation(_)) = result {
            assert!(r.is_ended(), "a violation must fail the session");
        }
        if !std::mem::take(&mut hold) {
            m.drain(&mut r, &neg);
        }
    }
    m.drain(&mut r, &neg);
}

fn control_to_receiver(
    r: &mut Receiver,
    m: &mut ReceiverModel,
    t: Instant,
    bytes: &[u8],
) -> Result<(), Error> {
    let res = r.handle_control(t, bytes);
    // The receiver takes the ack once the message decoded and the ack was in range.
    let took_ack = match &res {
        Ok(_) => true,
        Err(Error::Violation(v)) => !matches!(v, Violation::Decode(_) | Violation::BadAck),
        Err(_) => false,
    };
    let decoded = Control::decode(bytes);
    if took_ack {
        let (ack, msg) = decoded.expect("the receiver took an undecodable message");
        m.acked = ack;
        if let (Ok(_), Control::FileEnd(end)) = (&res, msg) {
            let f = m.accepted.iter_mut().find(|f| f.id == end.file_id);
            let f = f.expect("end accepted for a file never accepted");
            assert!(!f.ended);
            assert_eq!(end.length, f.size);
            assert_eq!(
                m.arrived,
                f.first_seq + f.chunks,
                "end accepted before its data"
            );
            f.ended = true;
        }
    }
    match res {
        Ok(Some(offer)) => {
            assert_eq!(validate_name(offer.name.as_bytes()), Ok(offer.name));
            assert!(offer.mode & !0o7777 == 0 && offer.mtime_nsec < 1_000_000_000);
            m.offered.push_back((offer.file_id, offer.size));
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    }
}

fn chunk_to_receiver(
    r: &mut Receiver,
    m: &mut ReceiverModel,
    neg: &Negotiated,
    t: Instant,
    imm: u32,
    len: u32,
) -> Result<(), Error> {
    let a = r.handle_chunk(t, imm, len)?;
    let chunk = u64::from(neg.chunk_size);
    assert_eq!(a.seq, m.arrived, "arrivals out of order");
    assert_eq!(a.seq as u32, imm);
    assert_eq!(a.len, len);
    assert!(
        a.len > 0 && u64::from(a.len) <= chunk,
        "bad chunk length {}",
        a.len
    );
    assert!(a.slot < neg.window, "slot {} outside the window", a.slot);
    assert_eq!(u64::from(a.slot), a.seq % m.window);
    assert_eq!(a.ring_offset, u64::from(a.slot) * chunk);
    assert!(
        a.ring_offset + u64::from(a.len) <= neg.ring_len(),
        "chunk outside the ring"
    );
    assert!(
        a.seq < m.consumed + m.window,
        "chunk accepted into an unconsumed slot"
    );
    let f = *m.file_of(a.seq).expect("chunk accepted for no file");
    assert_eq!(a.file_id, f.id);
    assert_eq!(a.file_offset, f.offset + (a.seq - f.first_seq) * chunk);
    assert!(
        a.file_offset + u64::from(a.len) <= f.size,
        "chunk past the end of the file"
    );
    m.arrived += 1;
    Ok(())
}

fn answer_to_receiver(
    r: &mut Receiver,
    m: &mut ReceiverModel,
    t: Instant,
    id: u64,
    answer: FileAnswer,
) -> Result<(), Error> {
    let res = r.answer_file(t, id, answer);
    if res.is_ok() {
        let (oid, size) = m.offered.pop_front().expect("answer without an offer");
        assert_eq!(oid, id, "answer accepted out of order");
        if let FileAnswer::Accept { offset } = answer {
            assert!(offset <= size);
            let chunks = (size - offset).div_ceil(chunk_of(r));
            m.accepted.push(RxFile {
                id,
                size,
                offset,
                first_seq: m.next_assign_seq,
                chunks,
                ended: false,
            });
            m.next_assign_seq += chunks;
        }
    }
    res
}

fn chunk_of(r: &Receiver) -> u64 {
    u64::from(r.negotiated().chunk_size)
}

// ---------------------------------------------------------------------------------------------
// Pair
// ---------------------------------------------------------------------------------------------

/// The simulator run end to end: parameters and files from the first bytes, the schedule from
/// the rest (`enabled[byte % len]`, then a fixed PRNG once the bytes run out). Every run must
/// end with both sides closed, no error, no RNR, no stall, and every accepted file published
/// byte for byte.
pub fn pair(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok((cfg, files)) = pair_setup(&mut u) else {
        return;
    };
    let schedule = u.take_rest();
    let mut p = sim::Pair::new(&cfg, files.clone()).expect("handshake of valid parameters");
    let mut bytes = schedule.iter();
    let mut rng = sim::Rng(0x9e37_79b9_7f4a_7c15);
    let result = p.run(
        |enabled| match bytes.next() {
            Some(&b) => enabled[usize::from(b) % enabled.len()],
            None => rng.pick(enabled),
        },
        1_000_000,
    );
    let describe = || {
        format!(
            "chunk {}/{} window {}/{} depth {}/{} files {:?}",
            cfg.sender.chunk_size,
            cfg.receiver.chunk_size,
            cfg.sender.window,
            cfg.receiver.window,
            cfg.sender.ctrl_depth,
            cfg.receiver.ctrl_depth,
            files
                .iter()
                .map(|f| (&f.name, f.data.len(), f.policy))
                .collect::<Vec<_>>()
        )
    };
    if let Err(e) = result {
        panic!("pair run failed: {e} (rnr {:?}); {}", p.rnr, describe());
    }
    let out = &p.outcome;
    assert!(p.rnr.is_none());
    assert_eq!(out.sender_failure, None, "{}", describe());
    assert_eq!(out.receiver_failure, None, "{}", describe());
    assert!(
        out.sender_closed && out.receiver_closed,
        "not closed; {}",
        describe()
    );
    for (i, f) in files.iter().enumerate() {
        let result = out.sender_results.get(&(i as u64)).copied();
        match f.policy {
            sim::Policy::Reject => {
                assert_eq!(result, Some(Err(FileRejectReason::EXISTS)), "{}", f.name);
                assert!(!out.published.contains_key(&f.name), "{} published", f.name);
            }
            sim::Policy::Accept | sim::Policy::Resume(_) => {
                assert_eq!(
                    result,
                    Some(Ok(FileStatus::OK)),
                    "{}; {}",
                    f.name,
                    describe()
                );
                assert!(
                    out.published.get(&f.name) == Some(&f.data),
                    "{} differs; {}",
                    f.name,
                    describe()
                );
            }
        }
    }
}

/// Parameters (each one byte) and up to six files (two size bytes, a policy byte, and for a
/// resume one more byte) from the front of the input.
fn pair_setup(u: &mut Unstructured<'_>) -> arbitrary::Result<(sim::Config, Vec<sim::SimFile>)> {
    let mut cfg = sim::Config::new(u.int_in_range(64..=256)?, u.int_in_range(1..=8)?);
    cfg.sender.ctrl_depth = u.int_in_range(MIN_SENDER_CTRL_DEPTH..=8)?;
    cfg.receiver.chunk_size = u.int_in_range(64..=256)?;
    cfg.receiver.window = u.int_in_range(1..=8)?;
    cfg.receiver.ctrl_depth = u.int_in_range(MIN_RECEIVER_CTRL_DEPTH..=20)?;
    let n: usize = u.int_in_range(0..=6)?;
    let mut files = Vec::with_capacity(n);
    for i in 0..n {
        let len: usize = u.int_in_range(0..=1100)?;
        let policy = match u.int_in_range(0..=3u8)? {
            0 | 1 => sim::Policy::Accept,
            2 => sim::Policy::Reject,
            _ => sim::Policy::Resume(u.int_in_range(0..=255u64)? * len as u64 / 200),
        };
        let name = if i % 2 == 0 {
            format!("f{i}")
        } else {
            format!("d/f{i}")
        };
        files.push(sim::file(&name, len, policy));
    }
    Ok((cfg, files))
}

// ---------------------------------------------------------------------------------------------
// Stable replay
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests;
