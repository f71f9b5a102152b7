//! Stable replay of the fuzz targets: the committed seeds, then deterministic pseudo-random
//! inputs, through the same harness functions the cargo-fuzz binaries call.
//!
//! `cargo test --manifest-path fuzz/Cargo.toml --lib` runs these (part of `make test`).
//! `generated_seeds_are_committed` checks the generated seed files (decoder messages, names,
//! pair setups) match their generator; `RDMAFT_WRITE_SEEDS=1` makes it rewrite them instead.

use super::*;
use std::fs;
use std::path::PathBuf;

/// A harness function.
type Harness = fn(&[u8]);

/// Each target with its harness.
const TARGETS: [(&str, Harness); 6] = [
    ("decode_control", decode_control),
    ("decode_handshake", decode_handshake),
    ("name", name),
    ("sender", sender),
    ("receiver", receiver),
    ("pair", pair),
];

fn seeds_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target)
}

/// The committed seeds of `target`, sorted by name.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = seeds_dir(target);
    let mut out: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.expect("dir entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&path).expect("read seed"))
        })
        .collect();
    out.sort();
    out
}

/// xorshift64*: deterministic inputs without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let len = self.below(max_len + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// A copy of `seed` with a few bytes changed, cut or appended.
    fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut v = seed.to_vec();
        for _ in 0..1 + self.below(3) {
            match self.below(4) {
                0 if !v.is_empty() => {
                    let i = self.below(v.len());
                    v[i] = self.next() as u8;
                }
                1 if !v.is_empty() => {
                    let i = self.below(v.len());
                    v[i] ^= 1 << self.below(8);
                }
                2 => v.truncate(self.below(v.len() + 1)),
                _ => v.push(self.next() as u8),
            }
        }
        v
    }
}

#[test]
fn every_target_has_seeds() {
    for (target, _) in TARGETS {
        assert!(!seeds(target).is_empty(), "no seeds for {target}");
    }
}

#[test]
fn replay_seeds() {
    for (target, harness) in TARGETS {
        for (name, data) in seeds(target) {
            eprintln!("{target}/{name}");
            harness(&data);
        }
    }
}

/// Random bytes and mutated seeds through every decoder target.
#[test]
fn random_decoder_inputs() {
    let mut rng = XorShift(0x5eed_0001);
    for (target, harness) in TARGETS.into_iter().take(3) {
        let seeds = seeds(target);
        for i in 0..4000 {
            let input = if i % 2 == 0 {
                rng.bytes(96)
            } else {
                let (_, seed) = &seeds[rng.below(seeds.len())];
                rng.mutate(seed)
            };
            harness(&input);
        }
    }
}

/// Names from a small alphabet, so the separators and dots actually meet.
#[test]
fn random_names() {
    let alphabet: &[&[u8]] = &[b"a", b"/", b".", b"..", b"\0", &[0xc3, 0xa9], &[0xff], b"b"];
    let mut rng = XorShift(0x5eed_0002);
    for _ in 0..5000 {
        let mut name = Vec::new();
        for _ in 0..rng.below(10) {
            name.extend_from_slice(alphabet[rng.below(alphabet.len())]);
        }
        super::name(&name);
    }
}

/// Random operation streams (the bytes are the `Unstructured` the harnesses decode), plus
/// mutated seeds.
#[test]
fn random_state_machine_inputs() {
    let mut rng = XorShift(0x5eed_0003);
    for (target, harness, count) in [
        ("sender", sender as Harness, 3000),
        ("receiver", receiver, 3000),
        ("pair", pair, 1000),
    ] {
        let seeds = seeds(target);
        for i in 0..count {
            let input = if i % 2 == 0 {
                rng.bytes(512)
            } else {
                let (_, seed) = &seeds[rng.below(seeds.len())];
                rng.mutate(seed)
            };
            harness(&input);
        }
    }
}

// ---- seed generation ----

/// Checks seed `target/name` holds `data`, or writes it when `RDMAFT_WRITE_SEEDS` is set.
fn write_seed(target: &str, name: &str, data: &[u8]) {
    let dir = seeds_dir(target);
    if std::env::var_os("RDMAFT_WRITE_SEEDS").is_some() {
        fs::create_dir_all(&dir).expect("mkdir seeds");
        fs::write(dir.join(name), data).expect("write seed");
        return;
    }
    let committed =
        fs::read(dir.join(name)).unwrap_or_else(|e| panic!("seed {target}/{name}: {e}"));
    assert_eq!(
        committed, data,
        "seed {target}/{name} differs from its generator; rerun with RDMAFT_WRITE_SEEDS=1"
    );
}

fn encoded(msg: Control<'_>, ack: u32) -> Vec<u8> {
    let mut buf = [0u8; CTRL_MSG_MAX];
    let n = msg.encode(ack, &mut buf).expect("encode");
    buf[..n].to_vec()
}

/// The generated seeds: one valid encoding of each message for the decoders, a few names, and
/// pair setups (the bytes `pair_setup` reads, then a short schedule). Checked against the
/// committed files, so a wire-format change cannot silently leave stale seeds behind.
#[test]
fn generated_seeds_are_committed() {
    let header = |name| {
        Control::FileHeader(wire::FileHeader {
            file_id: 7,
            size: 1000,
            mtime_sec: 1_700_000_000,
            mtime_nsec: 123,
            mode: 0o644,
            name,
        })
    };
    let blake = Digest::new(DigestKind::Blake3, &[0xab; 32]).unwrap();
    let xxh = Digest::new(DigestKind::Xxh3_128, &[0xcd; 16]).unwrap();
    let end = |digest| {
        Control::FileEnd(wire::FileEnd {
            file_id: 7,
            length: 1000,
            digest,
        })
    };
    let controls: [(&str, Control<'_>); 12] = [
        ("file_header", header("dir/sub/file.txt")),
        ("file_header_unicode", header("ünï/cødé")),
        (
            "answer_accept",
            Control::FileAnswer {
                file_id: 7,
                answer: FileAnswer::Accept { offset: 0 },
            },
        ),
        (
            "answer_resume",
            Control::FileAnswer {
                file_id: 7,
                answer: FileAnswer::Accept { offset: 640 },
            },
        ),
        (
            "answer_reject",
            Control::FileAnswer {
                file_id: 7,
                answer: FileAnswer::Reject(FileRejectReason::EXISTS),
            },
        ),
        ("credit", Control::Credit { consumed: 12 }),
        ("end_none", end(Digest::NONE)),
        ("end_xxh3", end(xxh)),
        ("end_blake3", end(blake)),
        (
            "result_ok",
            Control::FileResult {
                file_id: 7,
                status: FileStatus::OK,
            },
        ),
        ("goodbye", Control::Goodbye),
        (
            "error",
            Control::Error {
                code: ErrorCode::PROTOCOL_VIOLATION,
                text: "chunk sequence 9, expected 8",
            },
        ),
    ];
    for (name, msg) in controls {
        write_seed("decode_control", name, &encoded(msg, 3));
    }
    write_seed("decode_control", "ack", &encoded(Control::Ack, 5));

    let mut buf = [0u8; 256];
    let hello = Params {
        features: Features::all(),
        chunk_size: 1 << 20,
        window: 64,
        ctrl_depth: 16,
    }
    .hello();
    let n = hello.encode(&mut buf).unwrap();
    write_seed("decode_handshake", "hello", &buf[..n]);
    let mut padded = buf[..n].to_vec();
    padded.resize(56, 0);
    write_seed("decode_handshake", "hello_padded", &padded);
    let agreed = negotiate(&buf[..n], &local_params()[0]).unwrap();
    let ring = RingInfo {
        addr: 0x7f00_0000_0000,
        len: agreed.ring_len(),
        rkey: 0x1234,
    };
    let (_, accept) = agreed.accept(ring, 16);
    let n = accept.encode(&mut buf).unwrap();
    write_seed("decode_handshake", "accept", &buf[..n]);
    let n = reject(RejectReason::BAD_WINDOW).encode(&mut buf).unwrap();
    write_seed("decode_handshake", "reject", &buf[..n]);

    for (i, n) in [
        &b"a.txt"[..],
        b"dir/sub/f",
        b"..hidden/x..",
        "ünï/cødé".as_bytes(),
        b"a/../b",
        b"/etc/passwd",
        b"a//b",
    ]
    .into_iter()
    .enumerate()
    {
        write_seed("name", &format!("name{i}"), n);
    }

    // pair: chunk, window, sender depth, receiver chunk, window, depth (one byte each, offsets
    // into their ranges), file count, then per file a big-endian u16 length (mod 1101) and a
    // policy byte (0/1 accept, 2 reject, 3 resume + a byte), then the schedule.
    let setups: [(&str, Vec<u8>); 4] = [
        ("one_file", vec![0, 3, 2, 0, 3, 4, 1, 0x01, 0x00, 0]),
        (
            "mixed",
            vec![
                0, 1, 0, 64, 7, 0, 5, 0, 0, 0, 0, 1, 1, 0x02, 0x00, 2, 0x04, 0x41, 3, 100, 0x03,
                0x00, 0,
            ],
        ),
        (
            "tiny_depth",
            vec![
                192, 7, 0, 192, 7, 8, 3, 0x04, 0x4c, 0, 0x00, 65, 1, 0x00, 0, 3, 0,
            ],
        ),
        (
            "window_one",
            vec![0, 0, 6, 0, 0, 0, 2, 0x02, 0x81, 1, 0x01, 0x00, 3, 255],
        ),
    ];
    for (name, mut bytes) in setups {
        bytes.extend((0..64).map(|i: u8| i.wrapping_mul(37)));
        write_seed("pair", name, &bytes);
    }

    // sender / receiver: plain pseudo-random op streams; the fuzzer's own finds are added by
    // hand from a run (`deep*` files: inputs that reach file results and goodbyes).
    let mut rng = XorShift(0x5eed_0004);
    for target in ["sender", "receiver"] {
        for i in 0..2 {
            let bytes: Vec<u8> = (0..256).map(|_| rng.next() as u8).collect();
            write_seed(target, &format!("random{i}"), &bytes);
        }
    }
}
