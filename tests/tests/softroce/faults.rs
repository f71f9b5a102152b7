//! Faults: a peer killed mid-transfer (both directions) and resumed, the destination full, a
//! vanishing or shrinking source, a silent peer; and a soak of many files and connections
//! without growth in file descriptors or memory.

use super::{env, receiver, T};
use rdmaft::{send, FileOutcome, RawSender, ReceivedOutcome, SendOptions};
use rdmaft_tests::{
    example_bin, interrupt, random_bytes, scratch, start_recv, temp_files, tree, Lines, Outcomes,
    RecvProgram,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Size of the largest file being received into `dir` by this process (a transfer in
/// progress): one named `.rdmaft-*` there, or an unnamed (`O_TMPFILE`) one this process
/// holds open in it (`/proc/self/fd/N` names it `DIR/#INODE (deleted)`).
fn part_size(dir: &Path) -> u64 {
    let named = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(".rdmaft-"))
                .filter_map(|e| e.metadata().ok().map(|m| m.len()))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    let unnamed = std::fs::read_dir("/proc/self/fd")
        .map(|fds| {
            fds.flatten()
                .filter(|fd| {
                    std::fs::read_link(fd.path()).is_ok_and(|target| {
                        target.parent() == Some(dir)
                            && target.to_string_lossy().ends_with(" (deleted)")
                    })
                })
                .filter_map(|fd| std::fs::metadata(fd.path()).ok().map(|m| m.len()))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    named.max(unnamed)
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Open file descriptors of this process.
fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// No arguments for `start_recv` beyond the address and directory.
const NO_ARGS: [&str; 0] = [];

/// Threads of this process.
fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_killed_sender_leaves_a_partial_file_that_the_next_send_resumes() {
    let env = env();
    let base = scratch("resume");
    let (dest, src) = (base.join("dest"), base.join("big"));
    std::fs::create_dir_all(&dest).unwrap();
    let data = random_bytes(48 << 20, 61);
    std::fs::write(&src, &data).unwrap();
    // The killed sender's disconnect ends its connection; the idle timeout is only the
    // backstop, long enough that a busy machine's pauses never trip it.
    let r = receiver(&env, &dest, |o| {
        o.resume = true;
        o.idle_timeout = Duration::from_secs(20);
    });
    let to = r.receiver.local_addr();
    // The send program, killed (SIGKILL) once a few MiB have landed.
    let mut sender = Command::new(example_bin("send").unwrap())
        .arg(to.to_string())
        .arg(&src)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("data to land", || part_size(&dest) >= 4 << 20);
    sender.kill().unwrap();
    sender.wait().unwrap();
    let report = r.connections.recv_timeout(T).unwrap();
    assert!(report.error.is_some(), "{report:?}");
    assert_eq!(report.failures[0].outcome, ReceivedOutcome::Unfinished);
    assert!(!dest.join("big").exists(), "nothing under the final name");
    let kept = temp_files(&dest);
    assert!(
        kept.len() == 1 && kept[0].starts_with(".rdmaft-partial-"),
        "{kept:?}"
    );
    // Sent again: only the rest moves, and the result is byte-identical.
    let report = send(to, vec![src.clone()], SendOptions::default())
        .unwrap()
        .wait()
        .unwrap();
    assert!(report.all_ok(), "{report:?}");
    assert!(report.bytes_resumed >= 4 << 20, "{report:?}");
    assert_eq!(report.bytes_resumed % (1 << 20), 0, "whole chunks");
    assert_eq!(report.bytes + report.bytes_resumed, data.len() as u64);
    assert!(std::fs::read(dest.join("big")).unwrap() == data);
    assert!(temp_files(&dest).is_empty());
    // A partial whose bytes changed is caught by the whole-file digest and not published.
    std::fs::remove_file(dest.join("big")).unwrap();
    let mut sender = Command::new(example_bin("send").unwrap())
        .arg(to.to_string())
        .arg(&src)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _ = r.connections.recv_timeout(Duration::from_millis(1)); // the earlier report
    wait_until("data to land", || part_size(&dest) >= 4 << 20);
    sender.kill().unwrap();
    sender.wait().unwrap();
    let _ = r.connections.recv_timeout(T).unwrap();
    let partial = dest.join(&temp_files(&dest)[0]);
    let mut bytes = std::fs::read(&partial).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&partial, &bytes).unwrap();
    let report = send(to, vec![src.clone()], SendOptions::default())
        .unwrap()
        .wait()
        .unwrap();
    assert!(
        matches!(report.failures[0].outcome, FileOutcome::Failed(_)),
        "{report:?}"
    );
    assert!(!dest.join("big").exists());
    assert!(temp_files(&dest).is_empty(), "the bad prefix is dropped");
    r.receiver.stop();
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_killed_receiver_fails_the_send_cleanly() {
    let env = env();
    let base = scratch("killed-recv");
    let dest = base.join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let src = base.join("big");
    std::fs::write(&src, random_bytes(48 << 20, 62)).unwrap();
    let RecvProgram {
        child: mut recv,
        err: _err,
        port,
        ..
    } = start_recv(env.addr, &dest, NO_ARGS, false, T).unwrap();
    let options = SendOptions {
        idle_timeout: Duration::from_secs(5),
        ..SendOptions::default()
    };
    let handle = send(
        std::net::SocketAddr::new(env.addr, port),
        vec![src.clone()],
        options,
    )
    .unwrap();
    wait_until("progress", || handle.progress().bytes_done >= 4 << 20);
    let killed = recv.id();
    recv.kill().unwrap();
    recv.wait().unwrap();
    let started = Instant::now();
    let report = handle.wait().unwrap();
    assert!(started.elapsed() < T);
    assert!(report.error.is_some(), "{report:?}");
    assert_eq!(report.failures[0].outcome, FileOutcome::Unfinished);
    // The next receiver on the directory removes what the killed one left (a named
    // temporary file, where the file system has no O_TMPFILE; one more is planted, deeper),
    // and keeps the temporary files of a live process (this one).
    std::fs::create_dir_all(dest.join("sub")).unwrap();
    let planted = dest.join("sub").join(rdmaft::fs::temp_name_of(killed, 99));
    std::fs::write(&planted, b"left by a killed receiver").unwrap();
    let live = dest.join(rdmaft::fs::temp_name_of(std::process::id(), 99));
    std::fs::write(&live, b"a live receiver's").unwrap();
    let stale = temp_files(&dest).len() - 1;
    let RecvProgram {
        child: mut recv,
        mut err,
        ..
    } = start_recv(env.addr, &dest, NO_ARGS, false, T).unwrap();
    let line = err.wait_for("stale temporary files", T).unwrap();
    assert!(
        line.contains(&format!("removed {stale} stale temporary files")),
        "{line}"
    );
    assert_eq!(
        temp_files(&dest),
        [live.file_name().unwrap().to_str().unwrap()]
    );
    recv.kill().unwrap();
    recv.wait().unwrap();
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_full_destination_fails_one_file_and_later_files_still_arrive() {
    let env = env();
    let base = scratch("full");
    let (dest, src) = (base.join("dest"), base.join("src"));
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::create_dir_all(&src).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&dest)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "mount a 4 MiB tmpfs (the VM runs tests as root)"
    );
    for (name, len) in [("a", 3 << 20), ("b", 3 << 20), ("c", 100_000)] {
        std::fs::write(src.join(name), random_bytes(len, len as u64)).unwrap();
    }
    let r = receiver(&env, &dest, |_| {});
    let paths = ["a", "b", "c"].map(|n| src.join(n)).to_vec();
    let outcomes = Outcomes::default();
    let options = SendOptions {
        on_file: Some(outcomes.callback()),
        ..SendOptions::default()
    };
    let report = send(r.receiver.local_addr(), paths, options)
        .unwrap()
        .wait()
        .unwrap();
    let outcome = |n: &str| outcomes.of(n);
    assert_eq!(outcome("a"), FileOutcome::Sent, "{report:?}");
    assert!(!outcome("b").is_ok(), "{report:?}");
    assert_eq!(outcome("c"), FileOutcome::Sent, "{report:?}");
    assert!(report.error.is_none(), "the session survives: {report:?}");
    assert!(!dest.join("b").exists());
    assert!(temp_files(&dest).is_empty());
    assert!(std::fs::read(dest.join("c")).unwrap() == std::fs::read(src.join("c")).unwrap());
    r.receiver.stop();
    let _ = Command::new("umount").arg(&dest).status();
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn vanishing_and_shrinking_sources_are_reported_and_the_rest_arrive() {
    let env = env();
    let base = scratch("vanish");
    let (dest, src) = (base.join("dest"), base.join("src"));
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("shrinks"), random_bytes(64 << 20, 63)).unwrap();
    std::fs::write(src.join("after"), random_bytes(50_000, 64)).unwrap();
    let r = receiver(&env, &dest, |_| {});
    let paths = vec![src.join("gone"), src.join("shrinks"), src.join("after")];
    let outcomes = Outcomes::default();
    let options = SendOptions {
        on_file: Some(outcomes.callback()),
        ..SendOptions::default()
    };
    let handle = send(r.receiver.local_addr(), paths, options).unwrap();
    wait_until("progress", || handle.progress().bytes_done >= 2 << 20);
    // Cut the file being read to 1 MiB: the sender aborts that file only.
    std::fs::OpenOptions::new()
        .write(true)
        .open(src.join("shrinks"))
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let report = handle.wait().unwrap();
    let outcome = |n: &str| outcomes.of(n);
    assert!(
        matches!(outcome("gone"), FileOutcome::Skipped(_)),
        "{report:?}"
    );
    assert!(
        matches!(&outcome("shrinks"), FileOutcome::Skipped(why)
            if why.starts_with("the source file changed while being sent")),
        "{report:?}"
    );
    assert_eq!(outcome("after"), FileOutcome::Sent, "{report:?}");
    assert!(report.error.is_none(), "{report:?}");
    assert_eq!(
        tree(&dest),
        tree(&src)
            .into_iter()
            .filter(|(n, _)| n == "after")
            .collect::<Vec<_>>()
    );
    r.receiver.stop();
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_silent_sender_is_timed_out() {
    let env = env();
    let base = scratch("silent");
    let r = receiver(&env, &base, |o| o.idle_timeout = Duration::from_secs(2));
    let params = rdmaft::protocol::Params::new(rdmaft::protocol::Features::empty(), 4096, 4);
    let started = Instant::now();
    let raw = RawSender::connect(r.receiver.local_addr(), params, T).unwrap();
    // It sends nothing, not even keepalives.
    let report = r.connections.recv_timeout(T).unwrap();
    let waited = started.elapsed();
    assert!(
        report
            .error
            .as_deref()
            .unwrap_or("")
            .contains("idle timeout"),
        "{report:?}"
    );
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(20),
        "{waited:?}"
    );
    drop(raw);
    r.receiver.stop();
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn soak_many_files_and_connections_without_growth() {
    let env = env();
    let base = scratch("soak");
    let (dest, src) = (base.join("dest"), base.join("src"));
    std::fs::create_dir_all(&dest).unwrap();
    for i in 0..1000 {
        let d = src.join(format!("d{}", i % 20));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), random_bytes(1000 + i, i as u64)).unwrap();
    }
    let r = receiver(&env, &dest, |_| {});
    let to = r.receiver.local_addr();
    // 1,000 small files in one connection.
    let report = send(to, vec![src.clone()], SendOptions::default())
        .unwrap()
        .wait()
        .unwrap();
    assert!(report.all_ok(), "{:?}", report.error);
    assert_eq!(tree(&dest.join("src")), tree(&src));
    let _ = r.connections.recv_timeout(T).unwrap();
    // 50 connections in a row; the first 5 warm up allocator pools.
    let one = base.join("one");
    std::fs::write(&one, random_bytes(20_000, 65)).unwrap();
    let mut at_start = (0, 0);
    for i in 0..50 {
        if i == 5 {
            at_start = (fds(), rss_kib());
        }
        let report = send(to, vec![one.clone()], SendOptions::default())
            .unwrap()
            .wait()
            .unwrap();
        assert!(report.all_ok(), "connection {i}: {report:?}");
        let _ = r.connections.recv_timeout(T).unwrap();
    }
    let at_end = (fds(), rss_kib());
    eprintln!(
        "soak: fds {} -> {}, RSS {} -> {} KiB",
        at_start.0, at_end.0, at_start.1, at_end.1
    );
    assert_eq!(at_end.0, at_start.0, "no file descriptor leaked");
    assert!(
        at_end.1 < at_start.1 + 8 * 1024,
        "RSS grew by 8 MiB or more"
    );
    r.receiver.stop();
    std::fs::remove_dir_all(&base).unwrap();
}

/// Where the sends of a burst wait for each other: each file callback arrives and waits to
/// be released (bounded, so a send that never arrives fails the test instead of hanging it).
#[derive(Default)]
struct Gate {
    /// (files done, files verified, released).
    state: Mutex<(usize, usize, bool)>,
    changed: Condvar,
}

impl Gate {
    fn arrive(&self, ok: bool) {
        let mut s = self.state.lock().unwrap();
        s.0 += 1;
        s.1 += usize::from(ok);
        self.changed.notify_all();
        let deadline = Instant::now() + 2 * T;
        while !s.2 && Instant::now() < deadline {
            s = self.changed.wait_timeout(s, T).unwrap().0;
        }
    }

    /// Waits until `n` have arrived or `timeout` passed; (done, verified).
    fn wait_for(&self, n: usize, timeout: Duration) -> (usize, usize) {
        let deadline = Instant::now() + timeout;
        let mut s = self.state.lock().unwrap();
        while s.0 < n && Instant::now() < deadline {
            s = self
                .changed
                .wait_timeout(s, Duration::from_millis(200))
                .unwrap()
                .0;
        }
        (s.0, s.1)
    }

    fn release(&self) {
        self.state.lock().unwrap().2 = true;
        self.changed.notify_all();
    }
}

/// 50 connections open at once, three times over: each send's file callback waits until
/// all 50 have delivered their file, so every connection (its QP, ring, slots and threads on
/// both sides) is up at the same moment. After each burst the process must come back to the
/// same file descriptors and threads, and its RSS must not creep up burst after burst: the
/// rings and slots are mappings of their own, returned when their connection ends.
#[test]
fn soak_fifty_connections_at_once_without_growth() {
    const N: usize = 50;
    let env = env();
    let base = scratch("soak-wide");
    let dest = base.join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let sources: Vec<PathBuf> = (0..N)
        .map(|i| {
            let p = base.join(format!("s{i}"));
            std::fs::write(&p, random_bytes(200_000, 100 + i as u64)).unwrap();
            p
        })
        .collect();
    let (chunk, window) = (64 << 10, 8);
    let r = receiver(&env, &dest, |o| {
        o.chunk_size = chunk;
        o.window = window;
        o.max_connections = N + 8;
        o.handshake_timeout = T;
        o.idle_timeout = 3 * T;
    });
    let to = r.receiver.local_addr();
    let burst = |round: usize| -> (usize, usize) {
        let gate = Arc::new(Gate::default());
        let handles: Vec<_> = sources
            .iter()
            .map(|src| {
                let gate = Arc::clone(&gate);
                // 50 handshakes at once take a while on emulated CPUs, and a send waiting
                // in its callback sends no keepalives: neither side may time out meanwhile.
                let options = SendOptions {
                    chunk_size: chunk,
                    window,
                    connect_timeout: T,
                    idle_timeout: 3 * T,
                    on_file: Some(Arc::new(move |f| gate.arrive(f.outcome.is_ok()))),
                    ..SendOptions::default()
                };
                send(to, vec![src.clone()], options).unwrap()
            })
            .collect();
        let arrived = gate.wait_for(N, T);
        let at_peak = (fds(), threads());
        gate.release();
        let reports: Vec<_> = handles.into_iter().map(|h| h.wait().unwrap()).collect();
        assert_eq!(
            arrived,
            (N, N),
            "round {round}: (files done, verified) while all were to be up at once; \
             errors: {:?}",
            reports
                .iter()
                .filter_map(|r| r.error.clone())
                .collect::<Vec<_>>()
        );
        for report in reports {
            assert!(report.all_ok(), "round {round}: {report:?}");
        }
        for _ in 0..N {
            let c = r.connections.recv_timeout(T).unwrap();
            assert!(c.all_ok(), "round {round}: {c:?}");
        }
        at_peak
    };
    // The first burst warms up what the process keeps once made (allocator arenas, device
    // contexts). Its threads are gone once they have all exited.
    let threads_before = threads();
    let peak = burst(0);
    wait_until("the threads of burst 0 to end", || {
        threads() <= threads_before
    });
    let (fds0, threads0) = (fds(), threads());
    let rss0 = rss_kib();
    eprintln!(
        "soak-wide: at the peak of burst 0: {} fds, {} threads; after it {fds0} fds, \
         {threads0} threads, RSS {rss0} KiB",
        peak.0, peak.1
    );
    assert!(
        peak.1 >= threads0 + 2 * N,
        "all {N} connections were up at once (threads {} at the peak, {threads0} after)",
        peak.1
    );
    for round in 1..3 {
        let peak = burst(round);
        wait_until("fds and threads back to where they were", || {
            fds() <= fds0 && threads() <= threads0
        });
        eprintln!(
            "soak-wide: burst {round}: peak {} fds, {} threads; after it RSS {} KiB",
            peak.0,
            peak.1,
            rss_kib()
        );
    }
    let rss = rss_kib();
    assert!(
        rss < rss0 + 8 * 1024,
        "RSS grew from {rss0} to {rss} KiB over two bursts of {N} connections"
    );
    r.receiver.stop();
    std::fs::remove_dir_all(&base).unwrap();
}

/// Ctrl-C while `send` is still connecting cancels at once (it once waited out the whole
/// connect timeout): here the receiver's listener never answers, and the connect timeout
/// is two minutes.
#[test]
fn ctrl_c_while_connecting_cancels_at_once() {
    let env = env();
    let base = scratch("ctrl-c-connect");
    std::fs::write(base.join("f"), b"x").unwrap();
    // A listener nobody serves: the request waits in its queue, unanswered.
    let silent = rdmaft::session::Listener::bind(std::net::SocketAddr::new(env.addr, 0)).unwrap();
    let mut sender = Command::new(example_bin("send").unwrap())
        .args(["--connect-timeout", "120"])
        .arg(silent.local_addr().to_string())
        .arg(base.join("f"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = Lines::read(sender.stderr.take().unwrap());
    err.wait_for("send: connecting to", T).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(sender.try_wait().unwrap().is_none(), "still connecting");
    interrupt(&sender);
    // Far less than the connect timeout, however slow the machine.
    let status = rdmaft_tests::wait_child(&mut sender, Duration::from_secs(30)).unwrap();
    let lines = err.drain(T);
    assert_eq!(status.code(), Some(1), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("cancelled while connecting")),
        "{lines:?}"
    );
    drop(silent);
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn ctrl_c_on_either_program_ends_cleanly_and_tells_the_peer() {
    let env = env();
    let base = scratch("ctrl-c");
    let (dest, src) = (base.join("dest"), base.join("big"));
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(&src, random_bytes(48 << 20, 66)).unwrap();

    // Ctrl-C on send: it stops, the receiver hears why, no temporary file is left.
    let r = receiver(&env, &dest, |_| {});
    let mut sender = Command::new(example_bin("send").unwrap())
        .arg(r.receiver.local_addr().to_string())
        .arg(&src)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = Lines::read(sender.stderr.take().unwrap());
    wait_until("data to land", || part_size(&dest) >= 2 << 20);
    interrupt(&sender);
    let status = rdmaft_tests::wait_child(&mut sender, T).unwrap();
    assert_eq!(status.code(), Some(1), "{:?}", err.drain(T));
    let report = r.connections.recv_timeout(T).unwrap();
    let why = report.error.unwrap_or_default();
    assert!(why.contains("peer aborted"), "{why}");
    assert_eq!(report.failures[0].outcome, ReceivedOutcome::Unfinished);
    assert!(temp_files(&dest).is_empty() && !dest.join("big").exists());
    r.receiver.stop();

    // Ctrl-C on recv: it stops, the sender hears why, no temporary file is left.
    let RecvProgram {
        child: mut recv,
        mut err,
        port,
        ..
    } = start_recv(env.addr, &dest, NO_ARGS, false, T).unwrap();
    let handle = send(
        std::net::SocketAddr::new(env.addr, port),
        vec![src.clone()],
        SendOptions::default(),
    )
    .unwrap();
    wait_until("progress", || handle.progress().bytes_done >= 2 << 20);
    interrupt(&recv);
    let status = rdmaft_tests::wait_child(&mut recv, T).unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "recv stops cleanly by itself, not by the signal: {:?}",
        err.drain(T)
    );
    err.wait_for("stopping", T).unwrap();
    let report = handle.wait().unwrap();
    let why = report.error.clone().unwrap_or_default();
    assert!(why.contains("shutting down"), "{report:?}");
    assert!(temp_files(&dest).is_empty() && !dest.join("big").exists());
    std::fs::remove_dir_all(&base).unwrap();
}
