//! Tests that need a real RDMA device: run inside the Soft-RoCE VM (`make softroce-test`) or
//! on a host with an RDMA NIC, with `RDMAFT_DEVICE` / `RDMAFT_ADDR` set.
//!
//! Without a device they FAIL with the reason, never skip: a green run must mean that bytes
//! really moved over RDMA.

use rdmaft::protocol::wire::HELLO_LEN;
use rdmaft::protocol::{HandshakeReply, RejectReason};
use rdmaft::session::{self, Accepted, Listener};
use rdmaft::smoke::{self, SmokeOptions};
use rdmaft::verbs::{CmEventKind, DeviceList, WcOpcode};
use rdmaft::Error;
use rdmaft_tests::{
    example_bin, raw_connect, rdma_env, wait_child, wait_completion, Lines, RdmaEnv,
};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

/// Bound on every wait in these tests.
const T: Duration = Duration::from_secs(15);

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

#[test]
fn smoke_loopback_moves_bytes() {
    let env = env();
    // Port 0: the listener picks a free port, so parallel runs cannot collide.
    let opts = SmokeOptions::new(Some(&env.device), env.addr, 0);
    let report = match smoke::run_with(&opts, &|line| println!("smoke: {line}")) {
        Ok(report) => report,
        Err(e) => panic!("smoke check on {} at {} failed: {e}", env.device, env.addr),
    };
    assert_eq!(report.device, env.device);
    assert_eq!(report.listener_device, env.device);
    assert_eq!(report.connector_device, env.device);
    assert_eq!(report.addr, env.addr);
    assert_ne!(report.port, 0);
    assert!(report.send_bytes > 0);
    assert_eq!(report.recv_bytes, report.send_bytes, "SEND/RECV bytes");
    assert!(report.write_bytes > 64 * 1024, "the write spans many MTUs");
    assert_eq!(
        report.write_verified_bytes, report.write_bytes,
        "RDMA WRITE WITH IMM bytes"
    );
    assert!(report.reply_bytes > 0);
    assert!(report.steps.iter().any(|s| s == "teardown ok"));
}

/// A listener on the test address with the given limits, on a free port.
fn listener(env: &RdmaEnv, chunk: u32, window: u32) -> Listener {
    let addr = SocketAddr::new(env.addr, 0);
    match Listener::bind(addr, session::receiver_params(chunk, window)) {
        Ok(l) => l,
        Err(e) => panic!("cannot listen on {addr}: {e}"),
    }
}

#[test]
fn handshake_negotiates_the_minimum() {
    let env = env();
    let listener = listener(&env, 64 << 10, 16);
    let addr = listener.local_addr();
    assert_ne!(addr.port(), 0);
    let server = thread::spawn(move || listener.accept(T));

    let mut conn = match session::connect(addr, session::sender_params(1 << 20, 4), T) {
        Ok(c) => c,
        Err(e) => panic!("connect to {addr}: {e}"),
    };
    let mut acc: Accepted = match server.join().expect("listener thread panicked") {
        Ok(a) => a,
        Err(e) => panic!("accept on {addr}: {e}"),
    };

    let neg = *conn.negotiated();
    assert_eq!(neg.chunk_size, 65536, "minimum of 64 KiB and 1 MiB");
    assert_eq!(neg.window, 4, "minimum of 16 and 4");
    assert_eq!(neg.ring.len, 262144);
    assert_eq!(neg.ring_len(), 262144);
    assert_eq!(*acc.negotiated(), neg, "both sides agree, ring included");
    assert_eq!(neg.sender_ctrl_depth, session::SENDER_CTRL_DEPTH);
    assert_eq!(neg.receiver_ctrl_depth, session::RECEIVER_CTRL_DEPTH);
    // The ring the sender was told about is the receiver's registered ring.
    let ring = acc.ring();
    assert_eq!(ring.addr(), neg.ring.addr);
    assert_eq!(ring.len() as u64, neg.ring.len);
    assert_eq!(ring.rkey(), neg.ring.rkey);
    assert_eq!(conn.slots().len(), 262144, "slots use the negotiated size");
    assert_eq!(conn.device_name(), env.device);
    assert_eq!(acc.device_name(), env.device);
    assert_eq!(acc.peer_addr().map(|a| a.ip()), Some(env.addr));
    assert_eq!(conn.peer_addr(), Some(addr));

    // The ring is writable with the advertised rkey, and the receiver has receives posted
    // (rnr_retry_count is 0, so a missing receive would fail the write): write chunk 1 into
    // slot 1 with imm 1.
    let chunk = neg.chunk_size as usize;
    let sent: Vec<u8> = (0..chunk).map(|i| (i % 251) as u8).collect();
    conn.slots_mut()
        .copy_in(chunk, &sent)
        .unwrap_or_else(|e| panic!("fill slot 1: {e}"));
    let remote = conn.remote_ring();
    conn.queue_pair()
        .post_write_with_imm(
            7,
            conn.slots(),
            chunk..2 * chunk,
            &remote,
            chunk as u64,
            1,
            true,
        )
        .unwrap_or_else(|e| panic!("post write: {e}"));
    let wc = wait_completion(conn.completion_queue(), T).unwrap_or_else(|e| panic!("sender: {e}"));
    assert_eq!((wc.wr_id, wc.opcode), (7, WcOpcode::RdmaWrite));
    let wc = wait_completion(acc.completion_queue(), T).unwrap_or_else(|e| panic!("receiver: {e}"));
    assert_eq!(wc.opcode, WcOpcode::RecvRdmaWithImm);
    assert_eq!(wc.imm, Some(1));
    assert_eq!(wc.wr_id, 0, "the first posted control receive was consumed");
    let mut ring_bytes = vec![0u8; 2 * chunk];
    acc.ring()
        .copy_out(0, &mut ring_bytes)
        .unwrap_or_else(|e| panic!("read the ring: {e}"));
    assert_eq!(
        &ring_bytes[chunk..],
        &sent[..],
        "slot 1 holds the written chunk"
    );
    assert!(
        ring_bytes[..chunk].iter().all(|&b| b == 0),
        "slot 0 untouched"
    );
    let mut slot_bytes = vec![0u8; chunk];
    conn.slots()
        .copy_out(chunk, &mut slot_bytes)
        .unwrap_or_else(|e| panic!("read slot 1: {e}"));
    assert_eq!(slot_bytes, sent);
    assert!(
        acc.ring()
            .copy_out(neg.ring_len() as usize, &mut [0u8; 1])
            .is_err(),
        "copy_out past the ring is refused"
    );

    // Each side handles its own events, as in real use: the receiver answers the sender's
    // disconnect request while the sender waits for that answer.
    let receiver = thread::spawn(move || acc.wait_disconnected(T).map(|()| acc.is_closed()));
    conn.disconnect(T)
        .unwrap_or_else(|e| panic!("sender disconnect: {e}"));
    match receiver.join().expect("receiver thread panicked") {
        Ok(closed) => assert!(closed, "the receiver's connection is closed"),
        Err(e) => panic!("receiver did not see the disconnect: {e}"),
    }
}

#[test]
fn handshake_rejects_a_bad_hello() {
    let env = env();
    let listener = listener(&env, 64 << 10, 16);
    let addr = listener.local_addr();
    let server = thread::spawn(move || {
        let first = listener.accept(T).map(|_| ());
        let second = listener.accept(T).map(|_| ());
        let third = listener.accept(T).map(|mut acc| {
            let n = *acc.negotiated();
            let _ = acc.wait_disconnected(T);
            n
        });
        (first, second, third)
    });

    let mut hello = [0u8; HELLO_LEN];
    let n = session::sender_params(1 << 20, 4)
        .hello()
        .encode(&mut hello)
        .expect("hello fits");
    assert_eq!(n, HELLO_LEN);

    let mut bad_magic = hello;
    bad_magic[0] ^= 0xff;
    let mut version_9 = hello;
    version_9[4..6].copy_from_slice(&9u16.to_be_bytes());
    for (name, data, want) in [
        ("bad magic", bad_magic, RejectReason::BAD_MAGIC),
        ("version 9", version_9, RejectReason::UNSUPPORTED_VERSION),
    ] {
        let answer = raw_connect(addr, &data, T).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(answer.kind, CmEventKind::Rejected, "{name}: {answer:?}");
        match HandshakeReply::decode(&answer.private_data) {
            Ok(HandshakeReply::Reject(r)) => {
                assert_eq!(r.reason, want, "{name}");
                assert_eq!(r.max_version, rdmaft::protocol::VERSION);
            }
            other => panic!("{name}: reject private data decodes to {other:?}"),
        }
    }

    // The listener keeps serving: a valid hello still connects.
    let conn = session::connect(addr, session::sender_params(1 << 20, 4), T)
        .unwrap_or_else(|e| panic!("valid connect after the rejects: {e}"));
    assert_eq!(conn.negotiated().chunk_size, 65536);
    conn.disconnect(T)
        .unwrap_or_else(|e| panic!("disconnect: {e}"));

    let (first, second, third) = server.join().expect("listener thread panicked");
    for (got, want) in [
        (first, RejectReason::BAD_MAGIC),
        (second, RejectReason::UNSUPPORTED_VERSION),
    ] {
        match got {
            Err(Error::RequestRejected { peer, reason }) => {
                assert_eq!(reason, want);
                assert_eq!(peer.map(|p| p.ip()), Some(env.addr));
            }
            other => panic!("expected a RequestRejected({want:?}), got {other:?}"),
        }
    }
    let neg = third.unwrap_or_else(|e| panic!("third accept: {e}"));
    assert_eq!((neg.chunk_size, neg.window), (65536, 4));
}

#[test]
fn connect_to_a_closed_port_fails_cleanly() {
    let env = env();
    // Bind and drop a listener: its port is then (almost certainly) free and unlistened.
    let port = listener(&env, 4096, 1).local_addr().port();
    let addr = SocketAddr::new(env.addr, port);
    match session::connect(addr, session::sender_params(4096, 1), T) {
        Err(e @ Error::ConnectFailed { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&addr.to_string()), "{text}");
        }
        other => panic!("expected ConnectFailed, got {other:?}"),
    }
}

#[test]
fn send_and_recv_programs_negotiate() {
    let env = env();
    let recv_bin = example_bin("recv").unwrap_or_else(|e| panic!("{e}"));
    let send_bin = example_bin("send").unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("rdmaft-recv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("payload.bin");
    std::fs::write(&file, vec![7u8; 100_000]).expect("temp file");
    let ip = env.addr.to_string();
    let port = "17481";

    let mut recv = Command::new(&recv_bin)
        .args([
            "--addr",
            &ip,
            "--port",
            port,
            "--buffer-size",
            "64K",
            "--window",
            "16",
        ])
        .arg("--once")
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", recv_bin.display()));
    let mut recv_out = Lines::read(recv.stdout.take().expect("piped"));
    let mut recv_err = Lines::read(recv.stderr.take().expect("piped"));
    if let Err(e) = recv_out.wait_for("listening on", T) {
        let _ = wait_child(&mut recv, Duration::ZERO);
        panic!("recv did not start: {e}; stderr: {:?}", recv_err.drain(T));
    }

    // A bad hello is rejected with its reason, and recv --once keeps serving.
    let recv_addr: SocketAddr = format!("{ip}:{port}").parse().expect("address");
    let mut bad_hello = [0u8; HELLO_LEN];
    session::sender_params(1 << 20, 4)
        .hello()
        .encode(&mut bad_hello)
        .expect("hello fits");
    bad_hello[0] ^= 0xff;
    let answer = raw_connect(recv_addr, &bad_hello, T).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer.kind, CmEventKind::Rejected, "{answer:?}");
    let rejected = recv_out
        .wait_for("rejected ", T)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        rejected.starts_with(&format!("rejected {ip}:"))
            && rejected.ends_with(": not an rdmaft hello (bad magic)"),
        "{rejected}"
    );

    // A missing file is an error before any connection: exit 1, no panic.
    let missing = Command::new(&send_bin)
        .arg(&ip)
        .arg(dir.join("no-such-file"))
        .args(["--port", port])
        .output()
        .expect("run send");
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.starts_with("send: error: cannot read"), "{err}");

    let mut send = Command::new(&send_bin)
        .arg(&ip)
        .arg(&file)
        .args(["--port", port, "--buffer-size", "1M", "--window", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", send_bin.display()));
    let mut send_out = Lines::read(send.stdout.take().expect("piped"));
    let mut send_err = Lines::read(send.stderr.take().expect("piped"));
    let send_status = wait_child(&mut send, T).unwrap_or_else(|e| panic!("send: {e}"));
    let send_stdout = send_out.drain(T).to_vec();
    let send_stderr = send_err.drain(T).to_vec();
    println!("send stdout: {send_stdout:?}\nsend stderr: {send_stderr:?}");
    assert_eq!(
        send_status.code(),
        Some(3),
        "send exits 3 after the handshake"
    );
    let connected = format!("connected to {ip}:{port}");
    assert!(
        send_stdout
            .iter()
            .any(|l| l.starts_with(&connected)
                && l.ends_with("chunk 65536 B, window 4, ring 262144 B")),
        "{send_stdout:?}"
    );
    assert_eq!(
        send_stderr,
        ["send: handshake ok; file data transfer is not implemented yet"]
    );

    let recv_status = wait_child(&mut recv, T).unwrap_or_else(|e| panic!("recv --once: {e}"));
    let recv_stdout = recv_out.drain(T).to_vec();
    let recv_stderr = recv_err.drain(T).to_vec();
    println!("recv stdout: {recv_stdout:?}\nrecv stderr: {recv_stderr:?}");
    assert_eq!(recv_status.code(), Some(0), "recv --once exits 0");
    let accepted = format!("accepted {ip}:");
    assert!(
        recv_stdout
            .iter()
            .any(|l| l.starts_with(&accepted)
                && l.ends_with(": chunk 65536 B, window 4, ring 262144 B")),
        "{recv_stdout:?}"
    );
    assert!(
        recv_stdout.iter().any(|l| l.starts_with("closed ")),
        "{recv_stdout:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
