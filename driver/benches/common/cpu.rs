//! CPU time per side of a loopback transfer: both sides run in this process, so their
//! threads are told apart by name (`rdmaft-lo-send*` and `rdmaft-reader` send,
//! `rdmaft-lo-recv*` and `rdmaft-writer` receive). A sampler reads every thread's
//! `/proc/self/task/*/stat` every 5 ms and keeps each thread's last reading, so a thread
//! that ends loses at most its last 5 ms.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// CPU seconds of each side.
#[derive(Clone, Copy, Debug, Default)]
pub struct SideCpu {
    pub send: f64,
    pub recv: f64,
}

/// Samples thread CPU times until [`stop`](Self::stop).
pub struct Sampler {
    run: Arc<AtomicBool>,
    seen: Arc<Mutex<HashMap<u32, (String, f64)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

/// (name, CPU seconds) of thread `tid` of this process.
fn thread_cpu(tid: u32, hz: f64) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat[open + 1..close].to_owned();
    // After ") ": state is field 3; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((name, (utime + stime) / hz))
}

impl Sampler {
    pub fn start() -> Sampler {
        let run = Arc::new(AtomicBool::new(true));
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let (r, s) = (Arc::clone(&run), Arc::clone(&seen));
        let thread = std::thread::spawn(move || {
            let hz = ticks_per_second();
            while r.load(Ordering::Relaxed) {
                if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
                    for e in dir.flatten() {
                        let Some(tid) = e.file_name().to_str().and_then(|t| t.parse().ok()) else {
                            continue;
                        };
                        if let Some(v) = thread_cpu(tid, hz) {
                            s.lock().unwrap().insert(tid, v);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Sampler {
            run,
            seen,
            thread: Some(thread),
        }
    }

    /// The CPU seconds each side's threads used since [`start`](Self::start) (threads that
    /// existed before it count only what they used since).
    pub fn stop(mut self, before: &HashMap<u32, (String, f64)>) -> SideCpu {
        self.run.store(false, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut out = SideCpu::default();
        for (tid, (name, secs)) in self.seen.lock().unwrap().iter() {
            let base = before.get(tid).map_or(0.0, |(_, s)| *s);
            let used = (secs - base).max(0.0);
            if name.starts_with("rdmaft-lo-send") || name.starts_with("rdmaft-reader") {
                out.send += used;
            } else if name.starts_with("rdmaft-lo-recv") || name.starts_with("rdmaft-writer") {
                out.recv += used;
            }
        }
        out
    }
}

/// Every thread's (name, CPU seconds) now.
pub fn snapshot() -> HashMap<u32, (String, f64)> {
    let hz = ticks_per_second();
    let mut out = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            if let Some(tid) = e.file_name().to_str().and_then(|t| t.parse().ok()) {
                if let Some(v) = thread_cpu(tid, hz) {
                    out.insert(tid, v);
                }
            }
        }
    }
    out
}
