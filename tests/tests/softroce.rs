//! Tests that need a real RDMA device: run inside the Soft-RoCE VM (`make softroce-test`) or
//! on a host with an RDMA NIC, with `RDMAFT_DEVICE` / `RDMAFT_ADDR` set.
//!
//! Without a device they FAIL with the reason, never skip: a green run must mean that bytes
//! really moved over RDMA. Files live under the temporary directory (guest memory in the VM)
//! and every received file is compared byte for byte with its source.

use rdmaft::protocol::wire::HELLO_LEN;
use rdmaft::protocol::{Features, HandshakeReply, Params, RejectReason};
use rdmaft::session::{self, Listener};
use rdmaft::verbs::{CmEventKind, DeviceList};
use rdmaft::{
    send, ConnectionReport, Error, FileOutcome, ReceivedFile, ReceivedOutcome, Receiver,
    ReceiverOptions, SendOptions, SendReport,
};
use rdmaft_tests::{
    example_bin, random_bytes, raw_connect, rdma_env, scratch, start_recv, temp_files, tree,
    wait_child, RdmaEnv, RecvProgram,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[path = "softroce/access.rs"]
mod access;
#[path = "softroce/batch.rs"]
mod batch;
#[path = "softroce/capi.rs"]
mod capi;
#[path = "softroce/faults.rs"]
mod faults;
#[path = "softroce/hostile.rs"]
mod hostile;
#[path = "softroce/hostile_receiver.rs"]
mod hostile_receiver;
#[path = "softroce/json.rs"]
mod json;
#[path = "softroce/lanes.rs"]
mod lanes;
#[path = "softroce/service.rs"]
mod service;
#[path = "softroce/shards.rs"]
mod shards;
#[path = "softroce/sync.rs"]
mod sync;
#[path = "softroce/verbs.rs"]
mod verbs;

/// Bound on every wait in these tests.
const T: Duration = Duration::from_secs(60);

/// The environment, or a failure that explains how to provide it.
fn env() -> RdmaEnv {
    match rdma_env() {
        Ok(env) => env,
        Err(why) => panic!("no RDMA test environment: {why}"),
    }
}

#[test]
fn device_is_present() {
    let env = env();
    let names = match DeviceList::new() {
        Ok(list) => list.names(),
        Err(e) => panic!("cannot list RDMA devices (wanted {}): {e}", env.device),
    };
    assert!(
        names.contains(&env.device),
        "RDMA device {} not found; devices present: {:?}",
        env.device,
        names
    );
}

// ---- handshake ----

/// A receiver whose listener failed binds again on the same address and port: the failed
/// listener has to let the address go first (a second bind while it holds it is refused).
#[test]
fn a_listener_binds_again_on_its_own_port() {
    let env = env();
    let listener = Listener::bind(SocketAddr::new(env.addr, 0)).unwrap();
    let addr = listener.local_addr();
    assert!(
        Listener::bind(addr).is_err(),
        "a second listener on a port in use"
    );
    let again = listener.rebind().unwrap();
    assert_eq!(again.local_addr(), addr);
    // It listens: a sender connects.
    let server = thread::spawn(move || {
        let request = again.next_request(T).unwrap().expect("a request");
        request.accept(
            &Params::new(Features::DIGEST_XXH3_128, 64 << 10, 4),
            None,
            T,
        )
    });
    let sender = Params::new(Features::DIGEST_XXH3_128, 64 << 10, 4);
    let conn = session::connect(addr, sender, None, T).unwrap();
    let accepted = server.join().unwrap().unwrap();
    drop((conn, accepted));
}

#[test]
fn handshake_negotiates_the_minimum() {
    let env = env();
    let listener = Listener::bind(SocketAddr::new(env.addr, 0)).unwrap();
    let addr = listener.local_addr();
    let server = thread::spawn(move || {
        let request = listener.next_request(T).unwrap().expect("a request");
        let receiver = Params::new(Features::DIGEST_XXH3_128, 64 << 10, 32);
        request.accept(&receiver, None, T)
    });
    let sender = Params::new(Features::DIGEST_XXH3_128, 1 << 20, 4);
    let conn = session::connect(addr, sender, None, T).unwrap();
    let accepted = server.join().unwrap().unwrap();
    let neg = *conn.negotiated();
    assert_eq!((neg.chunk_size, neg.window), (64 << 10, 4));
    assert_eq!(
        neg,
        *accepted.negotiated(),
        "both sides agree on everything"
    );
    assert_eq!(conn.device_name(), env.device);
    drop(accepted);
    conn.disconnect(T).unwrap();
}

#[test]
fn handshake_rejects_bad_hellos_with_reasons() {
    let env = env();
    let listener = Listener::bind(SocketAddr::new(env.addr, 0)).unwrap();
    let addr = listener.local_addr();
    let server = thread::spawn(move || {
        let mut errors = vec![];
        for _ in 0..3 {
            let request = listener.next_request(T).unwrap().expect("a request");
            let receiver = Params::new(Features::empty(), 1 << 20, 16);
            errors.push(
                request
                    .accept(&receiver, None, T)
                    .err()
                    .map(|e| e.to_string()),
            );
        }
        errors
    });
    let mut good = [0u8; HELLO_LEN];
    Params::new(Features::empty(), 1 << 20, 4)
        .hello([0; 16])
        .encode(&mut good)
        .unwrap();
    let mut bad_magic = good;
    bad_magic[0] = b'X';
    let mut zero_window = good;
    zero_window[16..20].copy_from_slice(&[0; 4]);
    for (data, want) in [
        (&b"garbage"[..], RejectReason::BAD_MAGIC),
        (&bad_magic[..], RejectReason::BAD_MAGIC),
        (&zero_window[..], RejectReason::BAD_WINDOW),
    ] {
        let answer = raw_connect(addr, data, T).unwrap();
        assert_eq!(answer.kind, CmEventKind::Rejected);
        match HandshakeReply::decode(&answer.private_data) {
            Ok(HandshakeReply::Reject(r)) => assert_eq!(r.reason, want),
            other => panic!("not an rdmaft reject: {other:?}"),
        }
    }
    let errors = server.join().unwrap();
    assert!(
        errors
            .iter()
            .all(|e| e.as_deref().is_some_and(|e| e.contains("rejected"))),
        "{errors:?}"
    );
}

#[test]
fn connect_to_a_closed_port_fails_cleanly() {
    let env = env();
    let err = session::connect(
        SocketAddr::new(env.addr, 1),
        Params::new(Features::empty(), 1 << 20, 4),
        None,
        T,
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::ConnectFailed { .. }),
        "not a clean connect failure: {err}"
    );
}

#[test]
fn destroying_a_qp_waits_for_the_cm_calls_that_read_it() {
    let env = env();
    let listener = Listener::bind(SocketAddr::new(env.addr, 0)).unwrap();
    let addr = listener.local_addr();
    let server = thread::spawn(move || {
        let request = listener.next_request(T).unwrap().expect("a request");
        request.accept(&Params::new(Features::empty(), 65536, 4), None, T)
    });
    let conn = session::connect(addr, Params::new(Features::empty(), 65536, 4), None, T).unwrap();
    let _accepted = server.join().unwrap().unwrap();
    // While the id's QP lock is held (as rdma_disconnect holds it), dropping the connection
    // (which destroys the QP) must wait.
    let id = conn.cm_id();
    let (tx, rx) = mpsc::channel();
    id.with_qp_lock(|| {
        let dropper = thread::spawn(move || {
            drop(conn);
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "the QP was destroyed while its id was in use"
        );
        dropper
    })
    .join()
    .unwrap();
    rx.recv_timeout(T)
        .expect("the drop finished once the lock was free");
}

// ---- transfers through the library ----

/// A receiver on a free port writing into `dir`, recording every callback.
struct TestReceiver {
    receiver: Receiver,
    files: Arc<Mutex<Vec<ReceivedFile>>>,
    connections: mpsc::Receiver<ConnectionReport>,
}

fn receiver(env: &RdmaEnv, dir: &Path, tune: impl FnOnce(&mut ReceiverOptions)) -> TestReceiver {
    let files = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let mut options = ReceiverOptions::new(SocketAddr::new(env.addr, 0), dir.to_owned());
    let seen = Arc::clone(&files);
    options.on_file = Some(Arc::new(move |f| seen.lock().unwrap().push(f.clone())));
    let tx = Mutex::new(tx);
    options.on_connection = Some(Arc::new(move |r| {
        let _ = tx.lock().unwrap().send(r.clone());
    }));
    tune(&mut options);
    let receiver = Receiver::start(options).unwrap();
    // The start-up sweep of the directory runs on a thread of its own, holding a descriptor:
    // let it end, so tests that count threads and descriptors see a settled process.
    let deadline = Instant::now() + T;
    while receiver.stale_removed().is_none() {
        assert!(Instant::now() < deadline, "the start-up sweep did not end");
        thread::sleep(Duration::from_millis(10));
    }
    TestReceiver {
        receiver,
        files,
        connections: rx,
    }
}

fn send_all(to: SocketAddr, paths: Vec<PathBuf>, chunk: u32) -> SendReport {
    let options = SendOptions {
        chunk_size: chunk,
        ..SendOptions::default()
    };
    send(to, paths, options).unwrap().wait().unwrap()
}

/// The sample source: a file of each interesting size and a tree.
fn sample(src: &Path, chunk: usize) -> Vec<PathBuf> {
    let files = [
        ("zero", 0),
        ("one", 1),
        ("chunk", chunk),
        ("chunk-plus-one", chunk + 1),
    ];
    let mut paths = vec![];
    for (name, len) in files {
        std::fs::write(src.join(name), random_bytes(len, len as u64 + 1)).unwrap();
        paths.push(src.join(name));
    }
    let t = src.join("tree");
    std::fs::create_dir_all(t.join("a/b/c")).unwrap();
    std::fs::create_dir_all(t.join("empty-dir")).unwrap();
    std::fs::write(t.join("a/b/c/deep"), random_bytes(2 * chunk + 3, 7)).unwrap();
    std::fs::write(t.join("a/empty-file"), b"").unwrap();
    std::fs::write(t.join("top"), random_bytes(999, 8)).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", t.join("a/link")).unwrap();
    paths.push(t);
    paths
}

#[test]
fn files_and_trees_arrive_identical_at_every_buffer_size() {
    let env = env();
    for chunk in [4 << 10, 64 << 10, 1 << 20, 10 << 20] {
        let base = scratch(&format!("sizes-{chunk}"));
        let (src, dest) = (base.join("src"), base.join("dest"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&dest).unwrap();
        let paths = sample(&src, chunk as usize);
        let r = receiver(&env, &dest, |o| o.chunk_size = chunk);
        let report = send_all(r.receiver.local_addr(), paths, chunk);
        let conn = r.connections.recv_timeout(T).expect("the connection ended");
        assert_eq!(report.error, None, "chunk {chunk}");
        assert!(conn.all_ok(), "chunk {chunk}: {conn:?}");
        // The symlink is counted, not sent, and no failure (the documented policy).
        assert_eq!(report.counts.ignored, 1, "{:?}", report.counts);
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        assert_eq!(report.counts.not_sent(), 0, "{:?}", report.counts);
        assert!(report.all_ok(), "{report:?}");
        let mut expected = tree(&src);
        expected.retain(|(n, _)| n != "tree/a/link");
        assert_eq!(tree(&dest), expected, "chunk {chunk}");
        assert_eq!(
            r.files.lock().unwrap().len(),
            expected.len(),
            "one callback per entry"
        );
        assert!(r
            .files
            .lock()
            .unwrap()
            .iter()
            .all(|f| f.outcome == ReceivedOutcome::Received));
        r.receiver.stop();
        std::fs::remove_dir_all(&base).unwrap();
    }
}

#[test]
fn a_64_mib_random_file() {
    let env = env();
    let base = scratch("big");
    let (src, dest) = (base.join("src"), base.join("dest"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dest).unwrap();
    let data = random_bytes(64 << 20, 42);
    std::fs::write(src.join("big"), &data).unwrap();
    let r = receiver(&env, &dest, |_| {});
    let report = send_all(r.receiver.local_addr(), vec![src.join("big")], 1 << 20);
    assert!(report.all_ok(), "{report:?}");
    assert_eq!(report.bytes, 64 << 20);
    println!(
        "64 MiB: {:.2} s, {:.1} MB/s",
        report.elapsed.as_secs_f64(),
        report.mb_per_s()
    );
    assert!(
        std::fs::read(dest.join("big")).unwrap() == data,
        "64 MiB differ"
    );
    r.receiver.stop();
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn two_senders_at_once_into_one_receiver() {
    let env = env();
    let base = scratch("two");
    let dest = base.join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let mut paths = vec![];
    for i in 0..2 {
        let d = base.join(format!("src{i}/set{i}"));
        std::fs::create_dir_all(&d).unwrap();
        for j in 0..20 {
            std::fs::write(
                d.join(format!("f{j}")),
                random_bytes(50_000 + j * 999, i * 100 + j as u64),
            )
            .unwrap();
        }
        std::fs::write(d.join("big"), random_bytes(8 << 20, i + 7)).unwrap();
        paths.push(d);
    }
    let r = receiver(&env, &dest, |_| {});
    let to = r.receiver.local_addr();
    let senders: Vec<_> = paths
        .iter()
        .map(|p| send(to, vec![p.clone()], SendOptions::default()).unwrap())
        .collect();
    for s in senders {
        let report = s.wait().unwrap();
        assert!(report.all_ok(), "{report:?}");
    }
    for (i, p) in paths.iter().enumerate() {
        assert_eq!(tree(&dest.join(format!("set{i}"))), tree(p));
    }
    r.receiver.stop();
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn receiver_stops_while_idle() {
    let env = env();
    let dest = scratch("stop-idle");
    let r = receiver(&env, &dest, |_| {});
    let started = Instant::now();
    r.receiver.stop();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        started.elapsed()
    );
    std::fs::remove_dir_all(&dest).unwrap();
}

#[test]
fn receiver_stops_while_a_transfer_runs() {
    let env = env();
    let base = scratch("stop-busy");
    let (src, dest) = (base.join("src"), base.join("dest"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(src.join("big"), random_bytes(200 << 20, 3)).unwrap();
    let r = receiver(&env, &dest, |_| {});
    let s = send(
        r.receiver.local_addr(),
        vec![src.join("big")],
        SendOptions::default(),
    )
    .unwrap();
    while s.progress().bytes_done < (4 << 20) {
        assert!(!s.is_finished(), "the transfer ended before the stop");
        thread::sleep(Duration::from_millis(50));
    }
    r.receiver.stop();
    let report = s.wait().unwrap();
    let err = report.error.clone().unwrap_or_default();
    assert!(
        err.contains("shutting down"),
        "the sender is told why: {err:?}"
    );
    assert_eq!(report.failures[0].outcome, FileOutcome::Unfinished);
    assert!(!dest.join("big").exists(), "no half file under its name");
    assert!(temp_files(&dest).is_empty(), "{:?}", temp_files(&dest));
    let files = r.files.lock().unwrap();
    assert_eq!(files.len(), 1, "the unfinished file is reported once");
    assert_eq!(files[0].outcome, ReceivedOutcome::Unfinished);
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_send_can_be_cancelled() {
    let env = env();
    let base = scratch("cancel");
    let (src, dest) = (base.join("src"), base.join("dest"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(src.join("big"), random_bytes(200 << 20, 4)).unwrap();
    let r = receiver(&env, &dest, |_| {});
    let s = send(
        r.receiver.local_addr(),
        vec![src.join("big")],
        SendOptions::default(),
    )
    .unwrap();
    while s.progress().bytes_done < (4 << 20) {
        thread::sleep(Duration::from_millis(50));
    }
    s.cancel();
    let report = s.wait().unwrap();
    assert_eq!(report.error.as_deref(), Some("cancelled"));
    let conn = r.connections.recv_timeout(T).expect("the connection ended");
    assert!(
        conn.error
            .as_deref()
            .is_some_and(|e| e.contains("cancelled")),
        "the receiver is told: {conn:?}"
    );
    assert!(!dest.join("big").exists());
    assert!(temp_files(&dest).is_empty());
    r.receiver.stop();
    std::fs::remove_dir_all(&base).unwrap();
}

// ---- the programs ----

#[test]
fn send_and_recv_programs_move_a_tree() {
    let env = env();
    let base = scratch("programs");
    let (src, dest) = (base.join("src"), base.join("dest"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dest).unwrap();
    let paths = sample(&src, 65536);
    let RecvProgram {
        child: mut recv,
        mut err,
        out,
        port,
    } = start_recv(env.addr, &dest, ["--once"], true, T).unwrap();
    let mut out = out.unwrap();
    let warned = err.seen.iter().any(|l| l.contains("anyone who can reach"));
    assert!(warned, "recv warns that it has no key: {:?}", err.seen);
    let send = Command::new(example_bin("send").unwrap())
        .arg(format!("{}:{port}", env.addr))
        .args(&paths)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&send.stdout);
    let stderr = String::from_utf8_lossy(&send.stderr);
    // The symlink is not sent, named and counted, and that is no failure (as rsync -r):
    // status 0.
    assert_eq!(send.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("not sent") && stderr.contains("tree/a/link"),
        "{stderr}"
    );
    assert!(
        stdout.contains("files verified")
            && stdout.contains("MB/s")
            && stdout.contains("1 not sent by policy"),
        "{stdout}"
    );
    // ...but recv got everything that was sent, verified.
    let status = wait_child(&mut recv, T).unwrap();
    assert!(
        status.success(),
        "recv: {:?} {:?}",
        out.drain(T),
        err.drain(T)
    );
    out.wait_for("received tree/a/b/c/deep", T).unwrap();
    let mut expected = tree(&src);
    expected.retain(|(n, _)| n != "tree/a/link");
    assert_eq!(tree(&dest), expected);
    // Again without the symlink: status 0, nothing left out.
    std::fs::remove_file(src.join("tree/a/link")).unwrap();
    // `_err` keeps reading its stderr (a closed pipe would fail its next line).
    let RecvProgram {
        child: mut recv,
        err: _err,
        port,
        ..
    } = start_recv(env.addr, &dest, ["--once"], false, T).unwrap();
    let send = Command::new(example_bin("send").unwrap())
        .arg(format!("{}:{port}", env.addr))
        .args(&paths)
        .output()
        .unwrap();
    assert_eq!(send.status.code(), Some(0), "{send:?}");
    assert!(!String::from_utf8_lossy(&send.stdout).contains("not sent by policy"));
    assert!(wait_child(&mut recv, T).unwrap().success());
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn send_to_nobody_fails_with_a_clear_message() {
    let env = env();
    let base = scratch("nobody");
    std::fs::write(base.join("f"), b"x").unwrap();
    let send = Command::new(example_bin("send").unwrap())
        .arg(format!("{}:1", env.addr))
        .arg(base.join("f"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&send.stderr);
    assert_eq!(send.status.code(), Some(1));
    assert!(stderr.contains("send: error: connection to"), "{stderr}");
    std::fs::remove_dir_all(&base).unwrap();
}
