//! Small files through the loopback link (part of `make bench`), into `/dev/shm` where there
//! is one (else the temporary directory):
//!
//! - 20,000 files of 4 KiB in nested directories (20 × 10 × 100) moved 20 times in one
//!   process, each run timed: the slowest run over the median (`stall_ratio`) shows whether
//!   some thread sleeps out a wait with work queued (a lost wake-up shows as runs of the
//!   median plus multiples of the 0.5 s idle wait);
//! - files per second of the same transfer against `cp -r --preserve=mode,timestamps` of the
//!   same tree into the same file system (`loopback_tree_ratio`, above 1 when the loopback
//!   link is faster), the two alternated so that both see the same load;
//! - one million tiny files moved once in a child process, whose peak RSS (both sides
//!   together) shows what a transfer holds per file (`rss_mib_1m_files`).
//!
//! `cargo bench -p rdmaft --bench small_files` (RDMAFT_BENCH_FILES, RDMAFT_BENCH_RUNS and
//! RDMAFT_BENCH_TINY_FILES change the counts).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A scratch directory in memory when the machine has `/dev/shm`.
fn scratch(name: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    };
    let d = base.join(format!("rdmaft-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `count` files of `size` bytes, 100 to a directory, 10 directories to a parent
/// (`d3/s7/f3712`): a tree, as real ones are, not one flat directory.
fn make_tree(root: &Path, count: usize, size: usize) {
    let block = vec![0x5au8; size];
    for i in 0..count {
        let d = root
            .join(format!("d{}", i / 1000))
            .join(format!("s{}", i / 100 % 10));
        if i % 100 == 0 {
            std::fs::create_dir_all(&d).unwrap();
        }
        std::fs::write(d.join(format!("f{i}")), &block).unwrap();
    }
}

/// `cp -r --preserve=mode,timestamps src dest` (dest fresh, what rdmaft keeps of a file);
/// seconds.
fn cp(src: &Path, dest: &Path) -> f64 {
    let _ = std::fs::remove_dir_all(dest);
    let t = Instant::now();
    let ok = Command::new("cp")
        .args(["-r", "--preserve=mode,timestamps"])
        .arg(src)
        .arg(dest)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "cp -r failed");
    t.elapsed().as_secs_f64()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// The child: moves `count` tiny files once and prints its peak RSS.
fn tiny_files_child(count: usize) {
    let dir = scratch("tiny");
    let src = dir.join("src");
    make_tree(&src, count, 16);
    let before = common::peak_rss_mib();
    let secs = common::transfer(&src, &dir.join("dest"), || {});
    println!(
        "  {count} files of 16 B: {secs:.1} s, {:.0} files/s, peak RSS {:.1} MiB \
         (before the transfer {before:.1} MiB)",
        count as f64 / secs,
        common::peak_rss_mib()
    );
    println!("rss_mib={:.1}", common::peak_rss_mib());
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--tiny-files-child") {
        let count = args.get(i + 1).and_then(|c| c.parse().ok()).unwrap_or(0);
        tiny_files_child(count);
        return;
    }
    let files = env_or("RDMAFT_BENCH_FILES", 20_000);
    let runs = env_or("RDMAFT_BENCH_RUNS", 20);
    let dir = scratch("small");
    let (src, dest) = (dir.join("src"), dir.join("dest"));
    make_tree(&src, files, 4096);
    println!("small-files bench: {files} files of 4 KiB, loopback link, {runs} runs");
    // cp runs between transfers (every fourth), so both see the same load on the machine.
    let mut cps = Vec::new();
    let times: Vec<f64> = (0..runs)
        .map(|i| {
            if i % 4 == 0 {
                cps.push(cp(&src, &dest));
            }
            common::transfer(&src, &dest, || {})
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    let (med, slowest) = (median(&times), times.iter().copied().fold(0.0, f64::max));
    let shown: Vec<String> = times.iter().map(|t| format!("{t:.3}")).collect();
    println!("  rdmaft runs (s): {}", shown.join(" "));
    println!(
        "  rdmaft median {med:.3} s ({:.0} files/s), slowest {slowest:.3} s",
        files as f64 / med
    );
    let cp_med = median(&cps);
    println!(
        "  cp -r --preserve=mode,timestamps median {cp_med:.3} s ({:.0} files/s, {} runs)",
        files as f64 / cp_med,
        cps.len()
    );

    let tiny = env_or("RDMAFT_BENCH_TINY_FILES", 1_000_000);
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--tiny-files-child", &tiny.to_string()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&child.stdout);
    print!(
        "{}",
        out.lines()
            .filter(|l| l.starts_with("  "))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    );
    let rss = out
        .lines()
        .find_map(|l| l.strip_prefix("rss_mib="))
        .unwrap_or("failed");
    assert!(
        child.status.success(),
        "the tiny-files child failed: {}",
        String::from_utf8_lossy(&child.stderr)
    );
    println!(
        "stall_ratio={:.2} loopback_tree_ratio={:.2} rss_mib_{}_files={rss}",
        slowest / med,
        cp_med / med,
        if tiny == 1_000_000 {
            "1m".to_owned()
        } else {
            tiny.to_string()
        }
    );
}
