//! Support code for rdmaft's end-to-end tests.
//!
//! The Soft-RoCE tests (`tests/softroce.rs`, feature `softroce`) run where an RDMA device
//! exists: inside the test VM started by `tests/softroce/run`, or on a host with an RDMA NIC.
//! They learn which device and address to use from the environment, read here, so that a
//! missing device is a clear failure rather than a silent skip.

use rdmaft::session::next_event;
use rdmaft::verbs::{
    CmEvent, CmEventKind, CmId, CompletionQueue, ConnParams, EventChannel, ProtectionDomain,
    QpCaps, QueuePair,
};
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Environment variable with the RDMA device name (e.g. `rxe0`, `mlx5_0`).
pub const DEVICE_VAR: &str = "RDMAFT_DEVICE";
/// Environment variable with an IP address of that device.
pub const ADDR_VAR: &str = "RDMAFT_ADDR";
/// The address the Soft-RoCE test bed gives rxe0, used when `RDMAFT_ADDR` is unset.
pub const DEFAULT_ADDR: &str = "10.77.0.1";

/// Where the RDMA tests should run: a device and one of its IP addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RdmaEnv {
    /// The device name.
    pub device: String,
    /// An IP address bound to the device's network interface.
    pub addr: IpAddr,
}

/// Reads [`RdmaEnv`] from `RDMAFT_DEVICE` / `RDMAFT_ADDR`; the error says how to fix it.
pub fn rdma_env() -> Result<RdmaEnv, String> {
    let device = std::env::var(DEVICE_VAR).ok();
    let addr = std::env::var(ADDR_VAR).ok();
    parse_rdma_env(device.as_deref(), addr.as_deref())
}

/// Validates the two raw values (`None` = variable unset); split from [`rdma_env`] so it can
/// be tested without touching the process environment.
pub fn parse_rdma_env(device: Option<&str>, addr: Option<&str>) -> Result<RdmaEnv, String> {
    let device = device.map(str::trim).unwrap_or("");
    if device.is_empty() {
        return Err(format!(
            "{DEVICE_VAR} is not set: these tests need an RDMA device. Run them inside the \
             Soft-RoCE VM (`make softroce-test`, or tests/softroce/run CMD), or set \
             {DEVICE_VAR} (and {ADDR_VAR}) to a device of this host"
        ));
    }
    if device.len() > 63 || !device.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
        return Err(format!(
            "{DEVICE_VAR}={device:?} is not a valid device name"
        ));
    }
    let raw = addr.map(str::trim).filter(|a| !a.is_empty());
    let addr_text = raw.unwrap_or(DEFAULT_ADDR);
    let addr: IpAddr = addr_text.parse().map_err(|e| {
        format!("{ADDR_VAR}={addr_text:?} is not an IP address ({e}); use an address of {device}")
    })?;
    if addr.is_unspecified() || addr.is_loopback() || addr.is_multicast() {
        return Err(format!(
            "{ADDR_VAR}={addr} cannot be used: rdma_cm needs a unicast address of {device} \
             (not loopback, unspecified or multicast)"
        ));
    }
    Ok(RdmaEnv {
        device: device.to_owned(),
        addr,
    })
}

/// The path of a program built by `cargo build -p rdmaft-examples` (`send`, `recv`): in the
/// target directory, next to the `deps/` directory holding the running test binary.
pub fn example_bin(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the test binary: {e}"))?;
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or_else(|| format!("the test binary {} has no target directory", exe.display()))?;
    let bin = dir.join(name);
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} not found: build it first with `cargo build -p rdmaft-examples` (make \
             softroce-test does)",
            bin.display()
        ))
    }
}

/// Connects to `addr` through the verbs layer with `private_data` as the connect request's
/// private data (any bytes, not necessarily a valid hello) and returns the answer event
/// (ESTABLISHED, REJECTED, ...). Every resource is freed before it returns (an established
/// connection is disconnected by that).
pub fn raw_connect(
    addr: SocketAddr,
    private_data: &[u8],
    timeout: Duration,
) -> Result<CmEvent, String> {
    let deadline = Instant::now() + timeout;
    let ch = EventChannel::new().map_err(|e| e.to_string())?;
    let id = CmId::new(&ch).map_err(|e| e.to_string())?;
    let expect = |want: CmEventKind| -> Result<CmEvent, String> {
        let e = next_event(&ch, deadline, timeout, want.name()).map_err(|e| e.to_string())?;
        if e.kind == want {
            Ok(e)
        } else {
            Err(e.unexpected(want.name()).to_string())
        }
    };
    id.resolve_addr(None, addr, timeout)
        .map_err(|e| e.to_string())?;
    expect(CmEventKind::AddrResolved)?;
    id.resolve_route(timeout).map_err(|e| e.to_string())?;
    expect(CmEventKind::RouteResolved)?;
    let ctx = id.context().map_err(|e| e.to_string())?;
    let pd = ProtectionDomain::new(&ctx).map_err(|e| e.to_string())?;
    let cq = CompletionQueue::new(&ctx, 16, None).map_err(|e| e.to_string())?;
    let qp = QueuePair::create(&id, &pd, &cq, &cq, QpCaps::default()).map_err(|e| e.to_string())?;
    id.connect(&ConnParams {
        private_data,
        ..ConnParams::default()
    })
    .map_err(|e| e.to_string())?;
    let answer = next_event(&ch, deadline, timeout, "the answer").map_err(|e| e.to_string())?;
    if answer.kind == CmEventKind::Established {
        let _ = id.disconnect();
    }
    drop((qp, cq, pd, ctx, id, ch));
    Ok(answer)
}

/// The per-file outcomes of a send, collected by its `on_file` callback (reports keep only
/// counts and failures).
#[derive(Clone, Debug, Default)]
pub struct Outcomes(std::sync::Arc<std::sync::Mutex<Vec<rdmaft::FileReport>>>);

impl Outcomes {
    /// A callback for `SendOptions::on_file` that records into this collection.
    pub fn callback(&self) -> rdmaft::FileCallback {
        let all = std::sync::Arc::clone(&self.0);
        std::sync::Arc::new(move |f: &rdmaft::FileReport| {
            all.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(f.clone())
        })
    }

    /// The outcome of the entry whose path ends with `name`; panics if there is none.
    pub fn of(&self, name: &str) -> rdmaft::FileOutcome {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.iter()
            .find(|f| f.path.ends_with(name))
            .unwrap_or_else(|| panic!("no outcome for {name}: {all:?}"))
            .outcome
            .clone()
    }
}

/// A fresh directory under the system's temporary directory (in the test VM: guest memory).
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rdmaft-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    d
}

/// Reproducible pseudo-random bytes (xorshift64).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Every directory and regular file under `root` (relative names, sorted), with contents.
/// Symlinks and other kinds are listed by name with `Some(b"<other>")`.
pub fn tree(root: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .map(|r| r.to_string_lossy().into_owned())
                .unwrap_or_default();
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {
                    out.push((rel, None));
                    stack.push(p);
                }
                Ok(m) if m.is_file() => out.push((rel, std::fs::read(&p).ok())),
                _ => out.push((rel, Some(b"<other>".to_vec()))),
            }
        }
    }
    out.sort();
    out
}

/// The port in `recv`'s start-up line (`recv: listening on ADDR (port N), ...`).
pub fn listening_port(line: &str) -> Result<u16, String> {
    line.split("(port ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("no port in {line:?}"))
}

/// The `recv` program, started and listening.
#[derive(Debug)]
pub struct RecvProgram {
    /// The process.
    pub child: Child,
    /// Its standard error, line by line.
    pub err: Lines,
    /// Its standard output, line by line, when it was asked for (else discarded).
    pub out: Option<Lines>,
    /// The port it listens on.
    pub port: u16,
}

/// Starts `recv --listen ADDR:0 --dir DIR ARGS...` and waits up to `timeout` for it to say
/// where it listens. `stdout`: keep its standard output (else it is discarded).
pub fn start_recv<S: AsRef<std::ffi::OsStr>>(
    addr: IpAddr,
    dir: &Path,
    args: impl IntoIterator<Item = S>,
    stdout: bool,
    timeout: Duration,
) -> Result<RecvProgram, String> {
    let mut child = std::process::Command::new(example_bin("recv")?)
        .arg("--listen")
        .arg(format!("{addr}:0"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdout(if stdout {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start recv: {e}"))?;
    let mut err = Lines::read(child.stderr.take().ok_or("no stderr")?);
    let out = child.stdout.take().map(Lines::read);
    let line = err.wait_for("listening on", timeout)?;
    let port = listening_port(&line)?;
    Ok(RecvProgram {
        child,
        err,
        out,
        port,
    })
}

/// Names under `root` that look like rdmaft's temporary files.
pub fn temp_files(root: &Path) -> Vec<String> {
    tree(root)
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| {
            n.rsplit('/')
                .next()
                .is_some_and(|b| b.starts_with(".rdmaft-"))
        })
        .collect()
}

/// A child process's output lines, read on background threads so that a test can wait for
/// a line with a deadline.
#[derive(Debug)]
pub struct Lines {
    rx: mpsc::Receiver<String>,
    /// Every line seen so far, in order.
    pub seen: Vec<String>,
}

impl Lines {
    /// Starts reading `out` (a child's stdout or stderr) line by line.
    pub fn read(out: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits up to `timeout` for a line containing `needle`; returns it.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return Ok(line.clone());
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Err(_) => {
                    return Err(format!(
                        "no line containing {needle:?} within {timeout:?}; lines: {:?}",
                        self.seen
                    ))
                }
            }
        }
    }

    /// Collects the remaining lines until the stream ends (or `timeout` passes).
    pub fn drain(&mut self, timeout: Duration) -> &[String] {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => return &self.seen,
            }
        }
    }
}

/// Sends SIGINT (what Ctrl-C sends) to a child.
pub fn interrupt(child: &Child) {
    let ok = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -INT");
}

/// Waits up to `timeout` for `child` to exit; kills it (and says so) if it does not.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Result<ExitStatus, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "process {} did not exit within {timeout:?}; killed",
                child.id()
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Makes `path` a symbolic link to `target` (replacing what is there) with its own mtime
/// `secs` (and 123 ms), not its target's.
pub fn symlink_with_mtime(target: &str, path: &Path, secs: i64) {
    let _ = std::fs::remove_file(path);
    std::os::unix::fs::symlink(target, path).unwrap();
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 123_000_000,
    };
    let times = rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wait_for_a_needle_and_keep_the_rest() {
        let mut lines = Lines::read(&b"one\ntwo\nthree\n"[..]);
        assert_eq!(lines.wait_for("tw", Duration::from_secs(5)).unwrap(), "two");
        assert_eq!(lines.drain(Duration::from_secs(5)), ["one", "two", "three"]);
        assert!(lines.wait_for("four", Duration::from_millis(50)).is_err());
        assert_eq!(lines.wait_for("one", Duration::ZERO).unwrap(), "one");
    }

    #[test]
    fn good_values() {
        let env = parse_rdma_env(Some("rxe0"), Some("10.77.0.1")).unwrap();
        assert_eq!(env.device, "rxe0");
        assert_eq!(env.addr, "10.77.0.1".parse::<IpAddr>().unwrap());
        let v6 = parse_rdma_env(Some("mlx5_0"), Some(" fd00::7 ")).unwrap();
        assert_eq!(v6.addr, "fd00::7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn address_defaults_to_the_test_bed() {
        for addr in [None, Some(""), Some("  ")] {
            let env = parse_rdma_env(Some("rxe0"), addr).unwrap();
            assert_eq!(env.addr.to_string(), DEFAULT_ADDR);
        }
    }

    #[test]
    fn missing_device_is_an_error_that_says_what_to_do() {
        for device in [None, Some(""), Some(" ")] {
            let err = parse_rdma_env(device, Some("10.77.0.1")).unwrap_err();
            assert!(err.contains("RDMAFT_DEVICE is not set"), "{err}");
            assert!(err.contains("softroce"), "{err}");
        }
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(parse_rdma_env(Some("rxe0"), Some("10.77.0")).is_err());
        assert!(parse_rdma_env(Some("rxe0"), Some("rxe0")).is_err());
        assert!(parse_rdma_env(Some("rxe0"), Some("127.0.0.1"))
            .unwrap_err()
            .contains("loopback"));
        assert!(parse_rdma_env(Some("rxe0"), Some("0.0.0.0")).is_err());
        assert!(parse_rdma_env(Some("../rxe0"), None).is_err());
        assert!(parse_rdma_env(Some("rx e0"), None).is_err());
    }
}
