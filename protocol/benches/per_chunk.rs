//! Per-chunk cost of the two state machines in steady state, with no I/O (DESIGN.md §5: under
//! 50 ns per chunk, nothing allocated per chunk).
//!
//! One huge file (`u64::MAX / 2` bytes, so the per-file path never comes up) is accepted in
//! setup; chunk 1 MiB, window 64. One iteration is one chunk:
//! - sender: `data_ready` → drain (`Write`) → `handle_write_completed` → drain (the next
//!   `Read`), plus a credit from the receiver every window/4 chunks (one message encoded once,
//!   its count patched in place) and the pure acks that causes;
//! - receiver: `handle_write` → `chunk_consumed` → drain (a credit every window/4 chunks), plus
//!   the sender's pure ack (an immediate) every half of the sender's control depth.
//!
//! After the criterion measurement, a counting global allocator checks that 100 000 further
//! chunks of each allocate nothing.
//!
//! Run: `cargo bench -p rdmaft-protocol --bench per_chunk` (times read as ns per chunk).

use criterion::{black_box, Criterion, Throughput};
use rdmaft_protocol::{
    min_ctrl_depth, AcceptFlags, ArrayStorage, Config, Control, CtrlBuf, EntryKind, Features,
    FileAnswer, FileInfo, Imm, Incoming, Instant, Negotiated, Receiver, ReceiverOutput, RingInfo,
    Sender, SenderEvent, SenderOutput, CTRL_MSG_MAX,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Counts every allocation (and reallocation) made through the global allocator.
struct CountingAlloc;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so it
// upholds `GlobalAlloc`'s contract exactly as `System` does; the counter has no effect on it.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const CHUNK: u32 = 1 << 20;
const WINDOW: u32 = 64;
const OPEN_FILES: u16 = 4;
const SENDER_CTRL_DEPTH: u16 = min_ctrl_depth(OPEN_FILES);
const RECEIVER_CTRL_DEPTH: u16 = min_ctrl_depth(OPEN_FILES);
const FILE_SIZE: u64 = i64::MAX as u64;
type Store = ArrayStorage<4, 64>;
const FILE_ID: u64 = 1;
/// Chunks between two credits (the receiver's coalescing: a quarter window).
const CREDIT_EVERY: u64 = WINDOW as u64 / 4;
/// Receiver messages between two acks from the sender (its threshold: half its depth).
const ACK_EVERY: u32 = (SENDER_CTRL_DEPTH as u32).div_ceil(2);
const NOW: Instant = Instant::ZERO;

fn negotiated() -> Negotiated {
    Negotiated {
        group: u32::from((Features::all() - Features::AUTH_PSK).contains(Features::LANES)),

        features: Features::all() - Features::AUTH_PSK,
        flags: AcceptFlags::empty(),
        chunk_size: CHUNK,
        window: WINDOW,
        sender_ctrl_depth: SENDER_CTRL_DEPTH,
        receiver_ctrl_depth: RECEIVER_CTRL_DEPTH,
        max_open_files: OPEN_FILES,
        keepalive_ms: 1000,
        ring: RingInfo {
            addr: 0x7f00_0000_0000,
            len: u64::from(CHUNK) * u64::from(WINDOW) + u64::from(RECEIVER_CTRL_DEPTH) * 4096,
            rkey: 0x1234,
        },
        sender_proof: None,
    }
}

fn encode(msg: Control<'_>, ack: u32) -> Vec<u8> {
    let mut buf = [0u8; CTRL_MSG_MAX];
    let n = msg.encode(ack, &mut buf).expect("encode");
    buf[..n].to_vec()
}

/// A sender in steady state on one endless file.
struct SenderBench {
    sender: Sender<Store>,
    buf: CtrlBuf,
    /// A credit message; bytes 8..16 hold the consumed count (big-endian).
    credit: Vec<u8>,
    /// Next chunk to report ready.
    seq: u64,
}

impl SenderBench {
    fn new() -> Self {
        let mut sender = Sender::new(negotiated(), Config::default(), Store::new(), NOW).unwrap();
        let mut buf = [0u8; CTRL_MSG_MAX];
        let info = FileInfo {
            target: &[],
            sync: None,
            part: None,
            file_id: FILE_ID,
            kind: EntryKind::File,
            size: FILE_SIZE,
            mtime_sec: 1_700_000_000,
            mtime_nsec: 0,
            mode: 0o644,
            name: "big",
        };
        sender.start_file(NOW, &info).expect("start");
        assert!(matches!(
            sender.poll_output(NOW, &mut buf),
            Some(SenderOutput::Control(_))
        ));
        let accept = encode(
            Control::FileAnswer {
                file_id: FILE_ID,
                answer: FileAnswer::Accept { offset: 0 },
            },
            1,
        );
        sender.handle_control(NOW, &accept).expect("accept");
        let mut reads = 0;
        while let Some(out) = sender.poll_output(NOW, &mut buf) {
            match out {
                SenderOutput::Read(_) => reads += 1,
                SenderOutput::Event(SenderEvent::FileAccepted { .. }) => {}
                other => panic!("unexpected output in setup: {other:?}"),
            }
        }
        assert_eq!(reads, WINDOW, "a full window of reads after the accept");
        let credit = encode(Control::Credit { consumed: 0 }, 1);
        assert_eq!(credit.len(), 16);
        SenderBench {
            sender,
            buf,
            credit,
            seq: 0,
        }
    }

    fn drain(&mut self) {
        while let Some(out) = self.sender.poll_output(NOW, &mut self.buf) {
            match out {
                SenderOutput::Write(w) => {
                    // The write completes at once (the fastest possible link).
                    black_box(&w);
                    self.sender
                        .handle_write_completed(NOW, w.seq)
                        .expect("completion");
                }
                SenderOutput::Read(r) => {
                    black_box(&r);
                }
                SenderOutput::Control(c) => {
                    black_box(c);
                }
                SenderOutput::Ack(imm) => {
                    black_box(imm);
                }
                SenderOutput::Event(e) => panic!("unexpected event {e:?}"),
            }
        }
    }

    #[inline]
    fn chunk(&mut self) {
        self.sender.data_ready(NOW, self.seq).expect("data ready");
        self.drain();
        self.seq += 1;
        if self.seq % CREDIT_EVERY == 0 {
            self.credit[8..16].copy_from_slice(&self.seq.to_be_bytes());
            self.sender
                .handle_control(NOW, &self.credit)
                .expect("credit");
            self.drain();
        }
    }
}

/// A receiver in steady state on one endless file.
struct ReceiverBench {
    receiver: Receiver<Store>,
    buf: CtrlBuf,
    /// Next chunk to arrive.
    seq: u64,
    /// Messages the receiver sent, and the count last acknowledged.
    sent: u32,
    acked: u32,
}

impl ReceiverBench {
    fn new() -> Self {
        let mut receiver =
            Receiver::new(negotiated(), Config::default(), Store::new(), NOW).unwrap();
        let header = encode(
            Control::FileHeader(rdmaft_protocol::wire::FileHeader {
                sync: None,
                part: None,
                file_id: FILE_ID,
                kind: EntryKind::File,
                size: FILE_SIZE,
                mtime_sec: 1_700_000_000,
                mtime_nsec: 0,
                mode: 0o644,
                name: "big",
                target: &[],
            }),
            0,
        );
        let imm = Imm::control(0).encode();
        let at = receiver.handle_write(NOW, imm, header.len() as u32);
        assert!(matches!(at, Ok(Incoming::Control { .. })));
        let offer = receiver.handle_control(NOW, &header).expect("header");
        assert!(offer.is_some());
        receiver
            .answer_file(NOW, FILE_ID, FileAnswer::Accept { offset: 0 })
            .expect("answer");
        let mut bench = ReceiverBench {
            receiver,
            buf: [0u8; CTRL_MSG_MAX],
            seq: 0,
            sent: 0,
            acked: 0,
        };
        bench.drain();
        assert_eq!(bench.sent, 1, "the answer goes out in setup");
        bench
    }

    fn drain(&mut self) {
        while let Some(out) = self.receiver.poll_output(NOW, &mut self.buf) {
            match out {
                ReceiverOutput::Transmit(n) => {
                    black_box(n);
                    self.sent += 1;
                }
                ReceiverOutput::Event(e) => panic!("unexpected event {e:?}"),
            }
        }
    }

    #[inline]
    fn chunk(&mut self) {
        let arrival = self
            .receiver
            .handle_write(NOW, Imm::chunk(self.seq).encode(), CHUNK)
            .expect("chunk");
        black_box(&arrival);
        self.receiver
            .chunk_consumed(NOW, self.seq)
            .expect("consumed");
        self.drain();
        self.seq += 1;
        if self.sent - self.acked >= ACK_EVERY {
            let imm = Imm::ack(self.sent).encode();
            self.receiver.handle_write(NOW, imm, 0).expect("ack");
            self.acked = self.sent;
            self.drain();
        }
    }
}

fn bench_per_chunk(c: &mut Criterion) {
    let mut group = c.benchmark_group("per_chunk");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(3));
    let mut sender = SenderBench::new();
    group.bench_function("sender", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            for _ in 0..iters {
                sender.chunk();
            }
            start.elapsed()
        })
    });
    let mut receiver = ReceiverBench::new();
    group.bench_function("receiver", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            for _ in 0..iters {
                receiver.chunk();
            }
            start.elapsed()
        })
    });
    group.finish();
}

/// Allocations made by `n` steady-state chunks of `step`, after a warm-up.
fn allocations(n: u64, mut step: impl FnMut()) -> usize {
    for _ in 0..1000 {
        step();
    }
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..n {
        step();
    }
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

fn check_no_allocations() {
    const N: u64 = 100_000;
    // The counter itself works: one boxed value is one allocation.
    assert_eq!(allocations(1, || drop(black_box(Box::new(0u64)))), 1);
    let mut sender = SenderBench::new();
    let sender_allocs = allocations(N, || sender.chunk());
    let mut receiver = ReceiverBench::new();
    let receiver_allocs = allocations(N, || receiver.chunk());
    println!(
        "allocations in {N} steady-state chunks: sender {sender_allocs}, receiver {receiver_allocs}"
    );
    assert_eq!(sender_allocs, 0, "the sender allocated in steady state");
    assert_eq!(receiver_allocs, 0, "the receiver allocated in steady state");
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_per_chunk(&mut c);
    c.final_summary();
    check_no_allocations();
}
