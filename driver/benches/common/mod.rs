//! What the loopback benches share: one timed transfer, and the peak RSS.

#[allow(dead_code)] // Not every bench measures CPU time.
pub mod cpu;

use rdmaft::{loopback_transfer, ReceiverOptions, SendOptions};
use std::path::Path;
use std::time::Instant;

/// One transfer of `src` into a fresh `dest` through the loopback link, with the defaults;
/// seconds. `before` runs after `dest` is made and before the clock starts.
pub fn transfer(src: &Path, dest: &Path, before: impl FnOnce()) -> f64 {
    transfer_with(src, dest, before, SendOptions::default())
}

/// [`transfer`] with `send` as the sender's options.
pub fn transfer_with(src: &Path, dest: &Path, before: impl FnOnce(), send: SendOptions) -> f64 {
    let _ = std::fs::remove_dir_all(dest);
    std::fs::create_dir_all(dest).unwrap();
    before();
    let recv = ReceiverOptions::new("127.0.0.1:0".parse().unwrap(), dest.to_owned());
    let t = Instant::now();
    let (report, received) = loopback_transfer(vec![src.to_owned()], dest, send, &recv).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(report.all_ok() && received.all_ok(), "{report:?}");
    secs
}

/// Peak resident set of this process so far, in MiB (VmHWM).
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}
