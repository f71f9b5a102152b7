//! `rdmaft recv` as a service over a real device: started from a config file, it serves
//! Prometheus metrics during a transfer, and a SIGHUP that removes the sender's address
//! from the allow-list applies to the next connection without dropping the one under way.

use super::{env, T};
use rdmaft_tests::{example_bin, random_bytes, scratch, start_recv, wait_child, Lines};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};

/// The metrics page, over plain HTTP.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(
        text.starts_with("HTTP/1.") && text.contains(" 200 "),
        "{text}"
    );
    text
}

/// The value of the sample `name` (with its labels, as printed) in a scrape.
fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig}");
}

#[test]
fn a_service_reloads_its_allow_list_mid_transfer_and_serves_metrics() {
    let env = env();
    let base = scratch("service");
    let (src, dest) = (base.join("src"), base.join("dest"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dest).unwrap();
    let data = random_bytes(64 << 20, 91);
    std::fs::write(src.join("big"), &data).unwrap();
    let config = base.join("recv.toml");
    let write_config = |allow: &str, more: &str| {
        let text = format!("allow = [\"{allow}\"]\nmetrics = \"127.0.0.1:0\"\nwindow = 16\n{more}");
        std::fs::write(&config, text).unwrap();
    };
    write_config(&format!("{}/32", env.addr), "");
    let mut recv = start_recv(
        env.addr,
        &dest,
        [std::ffi::OsStr::new("--config"), config.as_os_str()],
        false,
        T,
    )
    .unwrap();
    let line = recv.err.wait_for("serving metrics on http://", T).unwrap();
    let metrics: SocketAddr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let target = format!("{}:{}", env.addr, recv.port);

    // A transfer under way, held still (SIGSTOP) once it reported progress, so that the
    // scrape and the reload happen while it is connected, whatever the machine's speed.
    let mut send = Command::new(example_bin("rdmaft").unwrap())
        .args(["send", "--json", "--lanes", "1", &target])
        .arg(src.join("big"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut send_out = Lines::read(send.stdout.take().unwrap());
    let mut send_err = Lines::read(send.stderr.take().unwrap());
    send_out.wait_for("\"event\":\"progress\"", T).unwrap();
    signal(&send, "-STOP");
    // The receiver samples its counters every 200 ms.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let during = scrape(metrics);
    assert_eq!(
        sample(&during, "rdmaft_recv_connections_active"),
        Some(1),
        "{during}"
    );
    assert_eq!(
        sample(&during, "rdmaft_recv_connections_total"),
        Some(1),
        "{during}"
    );
    let bytes = sample(&during, "rdmaft_recv_bytes_total").unwrap();
    assert!(bytes > 0 && bytes < 64 << 20, "{during}");
    assert!(sample(&during, "rdmaft_recv_registered_memory_bytes").unwrap() > 0);

    // The sender's address leaves the allow-list; SIGHUP; the held transfer goes on.
    write_config("10.77.0.99/32", "");
    signal(&recv.child, "-HUP");
    recv.err.wait_for("reloaded", T).unwrap();
    signal(&send, "-CONT");
    let status = wait_child(&mut send, T).unwrap();
    assert!(status.success(), "send: {:?}", send_err.drain(T));
    assert_eq!(std::fs::read(dest.join("big")).unwrap(), data);
    recv.err.wait_for("connection ended", T).unwrap();
    let reloaded = recv.err.seen.iter().position(|l| l.contains("reloaded"));
    let ended = recv
        .err
        .seen
        .iter()
        .position(|l| l.contains("connection ended"));
    assert!(reloaded < ended, "{:?}", recv.err.seen);

    // The next connection is refused for its address, and counted so.
    let refused = Command::new(example_bin("rdmaft").unwrap())
        .args(["send", "--lanes", "1", &target])
        .arg(src.join("big"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("not allowed"), "{why}");
    recv.err.wait_for("connection refused", T).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let after = scrape(metrics);
    for (name, value) in [
        ("rdmaft_recv_connections_active", 0),
        ("rdmaft_recv_connections_total", 1),
        ("rdmaft_recv_bytes_total", 64 << 20),
        ("rdmaft_recv_files_total{outcome=\"received\"}", 1),
        ("rdmaft_recv_refusals_total{reason=\"NOT_ALLOWED\"}", 1),
    ] {
        assert_eq!(sample(&after, name), Some(value), "{name} in\n{after}");
    }

    // A reload cannot raise the connection limit past the one it started with (64): it is
    // refused, and says so.
    write_config("10.77.0.99/32", "max-connections = 1000\n");
    signal(&recv.child, "-HUP");
    let line = recv
        .err
        .wait_for("failed, the running settings stay", T)
        .unwrap();
    assert!(line.contains("above the 64"), "{line}");

    // SIGTERM stops it cleanly.
    signal(&recv.child, "-TERM");
    let status = wait_child(&mut recv.child, T).unwrap();
    assert!(status.success(), "{:?}", recv.err.drain(T));
    recv.err.wait_for("stopping", T).unwrap();
    std::fs::remove_dir_all(&base).unwrap();
}
