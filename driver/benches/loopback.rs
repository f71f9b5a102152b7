//! The engine's CPU cost without a NIC (part of `make bench`): a file moves from page cache
//! to page cache through the in-process loopback link (the real engine, file layer, protocol
//! and digest; only the RDMA writes are memcpy), compared with `dd bs=1M` copying the same
//! file on the same machine, and the time split by stage, each stage timed alone over the
//! same bytes: read (file → memory), digest (XXH3-128 over memory), write (memory → file).
//! What remains of the transfer's time is the engine's own (posting, hand-offs, the copy
//! that stands in for the NIC, and the receiver's copy out of the ring, also timed alone).
//! Peak RSS is read after a small and after a large transfer: it must not grow with the
//! file.
//!
//! Then lanes: the same file over one lane and over two (alternating, best of three each;
//! `lanes_ratio` is two lanes' throughput over one's), with the CPU seconds each side's
//! threads used per GiB, and per 1,000 small files from the tree transfer.
//!
//! `cargo bench -p rdmaft --bench loopback` (size: RDMAFT_BENCH_MIB, default 1024).

mod common;

use common::cpu::{self, SideCpu};
use rdmaft::SendOptions;

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

fn make_file(path: &Path, mib: u64) {
    let mut f = File::create(path).unwrap();
    let mut block = vec![0u8; 1 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..mib {
        for b in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
        }
        f.write_all(&block).unwrap();
    }
}

/// Writes back dirty pages, so one timed run does not pay for the previous one's.
fn settle() {
    let _ = Command::new("sync").status();
}

/// Reads `path` through a 1 MiB buffer (into the page cache, not into this process).
fn warm(path: &Path) {
    let mut f = File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    while f.read(&mut buf).unwrap() > 0 {}
}

/// `run`'s seconds and the CPU each side used meanwhile.
fn measured(run: impl FnOnce() -> f64) -> (f64, SideCpu) {
    let before = cpu::snapshot();
    let sampler = cpu::Sampler::start();
    let secs = run();
    (secs, sampler.stop(&before))
}

/// The fastest of three runs, with its CPU.
fn best_of_3(mut run: impl FnMut() -> f64) -> (f64, SideCpu) {
    (0..3)
        .map(|_| measured(&mut run))
        .fold((f64::INFINITY, SideCpu::default()), |a, b| {
            if b.0 < a.0 {
                b
            } else {
                a
            }
        })
}

fn main() {
    // `cargo bench` passes --bench; nothing else is taken.
    let mib: u64 = std::env::var("RDMAFT_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let bytes = mib << 20;
    let dir = std::env::temp_dir().join(format!("rdmaft-loopback-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (small, big, dest) = (dir.join("small"), dir.join("big"), dir.join("dest"));
    make_file(&small, 16);
    make_file(&big, mib);

    // Memory: a 16 MiB transfer, then the big one.
    common::transfer(&small, &dest, settle);
    let rss_small = common::peak_rss_mib();

    // Warm the page cache, then time dd and the transfer (best of three each).
    warm(&big);
    let dd = (0..3)
        .map(|_| {
            let _ = std::fs::remove_file(dir.join("dd-copy"));
            settle();
            let t = Instant::now();
            let ok = Command::new("dd")
                .arg(format!("if={}", big.display()))
                .arg(format!("of={}", dir.join("dd-copy").display()))
                .args(["bs=1M", "status=none"])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "dd failed");
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    let _ = std::fs::remove_file(dir.join("dd-copy"));
    let engine = (0..3)
        .map(|_| common::transfer(&big, &dest, settle))
        .fold(f64::INFINITY, f64::min);
    let rss_big = common::peak_rss_mib();

    // Stages alone, over the same bytes in 1 MiB pieces (the default chunk).
    let mut buf = vec![0u8; 1 << 20];
    let mut f = File::open(&big).unwrap();
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut read_secs = 0.0;
    let mut digest_secs = 0.0;
    loop {
        let r = Instant::now();
        let n = f.read(&mut buf).unwrap();
        read_secs += r.elapsed().as_secs_f64();
        if n == 0 {
            break;
        }
        let d = Instant::now();
        hasher.update(&buf[..n]);
        digest_secs += d.elapsed().as_secs_f64();
    }
    std::hint::black_box(hasher.digest128());
    let _ = std::fs::remove_dir_all(&dest);
    settle();
    let w = Instant::now();
    let mut out = File::create(dir.join("write-test")).unwrap();
    for _ in 0..mib {
        out.write_all(&buf).unwrap();
    }
    drop(out);
    let write_secs = w.elapsed().as_secs_f64();
    // The receiver's copy of each chunk out of the ring (16 slots of 1 MiB, the default
    // window) into its own buffer before it digests and writes it: part of the engine's
    // share below, timed alone to show what writing straight from the ring would save.
    let ring = vec![0x5au8; 16 << 20];
    let c = Instant::now();
    for i in 0..mib as usize {
        let at = (i % 16) << 20;
        buf.copy_from_slice(std::hint::black_box(&ring[at..at + (1 << 20)]));
        std::hint::black_box(&mut buf);
    }
    let copy_secs = c.elapsed().as_secs_f64();
    let other = (engine - read_secs - digest_secs - write_secs).max(0.0);

    println!("loopback bench: {mib} MiB file, page cache to page cache, best of 3");
    println!(
        "  dd bs=1M            {:8.3} s  {:8.1} MB/s",
        dd,
        mb_per_s(bytes, dd)
    );
    println!(
        "  rdmaft loopback     {:8.3} s  {:8.1} MB/s  (XXH3-128 digest, defaults)",
        engine,
        mb_per_s(bytes, engine)
    );
    println!("  where the time goes (each stage alone over the same bytes):");
    for (what, secs) in [
        ("read", read_secs),
        ("digest", digest_secs),
        ("write", write_secs),
        ("engine (post, hand-off, ring copy)", other),
    ] {
        println!(
            "    {what:<36} {secs:8.3} s  {:5.1} %",
            100.0 * secs / engine
        );
    }
    println!(
        "      of it, the receiver's copy out of the ring {copy_secs:8.3} s  {:5.1} %",
        100.0 * copy_secs / engine
    );
    println!(
        "  peak RSS: {rss_small:.0} MiB after a 16 MiB transfer, {rss_big:.0} MiB after {mib} MiB"
    );

    // Small files: 2,000 files of 16 KiB in nested folders, the same tree as the VM bench.
    let tree = dir.join("tree");
    let block = vec![0x5au8; 16 << 10];
    for i in 0..2000 {
        let d = tree.join(format!("d{}/e{}", i % 10, i % 7));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), &block).unwrap();
    }
    let one_lane = || SendOptions {
        lanes: 1,
        ..SendOptions::default()
    };
    let (tree_secs, tree_cpu) =
        best_of_3(|| common::transfer_with(&tree, &dest, settle, one_lane()));
    let tree_bytes = 2000 * block.len() as u64;
    println!(
        "  rdmaft loopback tree {:7.3} s  {:8.1} MB/s  {:8.0} files/s  (2000 x 16 KiB, 1 lane)",
        tree_secs,
        mb_per_s(tree_bytes, tree_secs),
        2000.0 / tree_secs
    );

    // Lanes: the big file over 1 and 2 lanes, alternating.
    let mut best = [(f64::INFINITY, SideCpu::default()); 2];
    for _ in 0..3 {
        for (i, lanes) in [1u16, 2].into_iter().enumerate() {
            let options = SendOptions {
                lanes,
                ..SendOptions::default()
            };
            let run = measured(|| common::transfer_with(&big, &dest, settle, options));
            if run.0 < best[i].0 {
                best[i] = run;
            }
        }
    }
    let [(one, one_cpu), (two, two_cpu)] = best;
    let gib = bytes as f64 / f64::from(1u32 << 30);
    println!("  lanes ({mib} MiB file, best of 3 each, alternating):");
    for (what, secs, c) in [("1 lane ", one, one_cpu), ("2 lanes", two, two_cpu)] {
        println!(
            "    {what} {secs:8.3} s  {:8.1} MB/s  CPU per GiB: send {:.3} s, receive {:.3} s",
            mb_per_s(bytes, secs),
            c.send / gib,
            c.recv / gib
        );
    }
    println!(
        "  CPU per 1,000 files (2000 x 16 KiB, 1 lane): send {:.3} s, receive {:.3} s",
        tree_cpu.send / 2.0,
        tree_cpu.recv / 2.0
    );
    println!(
        "cpu_ratio_vs_dd={:.3} lanes_ratio={:.3}",
        dd / engine,
        one / two
    );
    let _ = std::fs::remove_dir_all(&dir);
}
