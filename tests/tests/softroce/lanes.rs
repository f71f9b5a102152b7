//! One transfer over several connections (`send --lanes N`): the first lane's handshake opens
//! a transfer group at the receiver, the others join it by number (each proving the key),
//! the entries are spread over the lanes and a large file is split into parts that several
//! lanes carry at once and the receiver publishes whole. A join for a group the receiver
//! does not have is refused with its reason.

use super::{env, receiver, T};
use rdmaft::protocol::{Features, Params, RejectReason};
use rdmaft::session;
use rdmaft::{send, Error, Key, ReceivedOutcome, SendOptions};
use rdmaft_tests::{
    example_bin, random_bytes, scratch, start_recv, temp_files, tree, wait_child, RecvProgram,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A tree with a file of 9 parts of 1 MiB (the last 5 bytes), a file of exactly two parts
/// and small files in nested directories.
fn build(src: &Path) -> PathBuf {
    let t = src.join("tree");
    for i in 0..24usize {
        let d = t.join(format!("d{}/e{}", i % 3, i % 2));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join(format!("f{i}")),
            random_bytes(i * 7919 % 70_000, i as u64),
        )
        .unwrap();
    }
    std::fs::create_dir_all(t.join("empty")).unwrap();
    std::fs::write(t.join("d0/big"), random_bytes((8 << 20) + 5, 77)).unwrap();
    std::fs::write(t.join("two"), random_bytes(2 << 20, 78)).unwrap();
    t
}

#[test]
fn three_lanes_carry_one_keyed_transfer_and_join_split_files() {
    let env = env();
    let base = scratch("lanes-library");
    let (src, dest) = (base.join("src"), base.join("dest"));
    std::fs::create_dir_all(&dest).unwrap();
    let t = build(&src);
    let key = Key::derive(b"the lanes key");
    let rkey = key.clone();
    let r = receiver(&env, &dest, move |o| o.key = Some(rkey));
    let options = SendOptions {
        chunk_size: 256 << 10,
        lanes: 3,
        part_size: 1 << 20,
        key: Some(key),
        ..SendOptions::default()
    };
    let report = send(r.receiver.local_addr(), vec![t], options)
        .unwrap()
        .wait()
        .unwrap();
    assert!(report.all_ok(), "{report:?}");
    assert_eq!(
        report.lanes, 3,
        "every lane joined and carried work: {report:?}"
    );
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(tree(&dest), tree(&src), "the tree, the split files whole");
    assert!(temp_files(&dest).is_empty(), "{:?}", temp_files(&dest));
    // Three connections, each authenticated, one transfer: the last one out says so.
    let conns: Vec<_> = (0..3)
        .map(|_| {
            r.connections
                .recv_timeout(T)
                .expect("a lane's connection ended")
        })
        .collect();
    assert!(
        conns.iter().all(|c| c.transferred && c.all_ok()),
        "{conns:?}"
    );
    let mut devices: Vec<_> = conns.iter().map(|c| c.device.as_str()).collect();
    devices.dedup();
    assert_eq!(devices, [env.device.as_str()], "one device, three lanes");
    // The receiver reports each file once, split or not, never a part.
    let files = r.files.lock().unwrap().clone();
    let mut names: Vec<_> = files.iter().map(|f| f.name.clone()).collect();
    names.sort();
    let mut expected: Vec<_> = tree(&src).into_iter().map(|(n, _)| n).collect();
    expected.sort();
    assert_eq!(names, expected);
    assert!(files.iter().all(|f| f.outcome == ReceivedOutcome::Received));
    r.receiver.stop();
    std::fs::remove_dir_all(&base).unwrap();
}

/// Connects with `LANES` asking to join `group`.
fn join(addr: std::net::SocketAddr, group: u32) -> Result<session::SenderConn, Error> {
    let mut p = Params::new(Features::LANES | Features::RESUME, 65536, 4);
    p.group = group;
    session::connect(addr, p, None, T)
}

#[test]
fn a_join_for_an_unknown_or_finished_group_is_refused() {
    let env = env();
    let base = scratch("lanes-unknown-group");
    let r = receiver(&env, &base, |_| {});
    let addr = r.receiver.local_addr();
    let refused = |group: u32| match join(addr, group) {
        Err(Error::HandshakeRejected { reason, .. }) => reason,
        Err(e) => panic!("group {group}: refused without the reason: {e}"),
        Ok(_) => panic!("group {group}: joined"),
    };
    // A group never opened.
    assert_eq!(refused(0x5eed_5eed), RejectReason::UNKNOWN_GROUP);
    // A group while it lives, then after its connections ended.
    let first = join(addr, 0).unwrap();
    let group = first.negotiated().group;
    assert_ne!(group, 0, "an accept with LANES names the group");
    let second = join(addr, group).unwrap();
    assert_eq!(second.negotiated().group, group);
    drop((first, second));
    let deadline = Instant::now() + T;
    loop {
        match join(addr, group) {
            Err(Error::HandshakeRejected { reason, .. }) => {
                assert_eq!(reason, RejectReason::UNKNOWN_GROUP);
                break;
            }
            Err(e) => panic!("refused without the reason: {e}"),
            // The receiver has not noticed the disconnects yet.
            Ok(conn) => drop(conn),
        }
        assert!(
            Instant::now() < deadline,
            "the finished group stayed joinable"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    r.receiver.stop();
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn send_lanes_and_recv_once_move_a_tree_and_exit_together() {
    let env = env();
    let base = scratch("lanes-programs");
    let (src, dest) = (base.join("src"), base.join("dest"));
    std::fs::create_dir_all(&dest).unwrap();
    let t = build(&src);
    let RecvProgram {
        child: mut recv,
        err: _err,
        port,
        ..
    } = start_recv(env.addr, &dest, ["--once"], false, T).unwrap();
    let send = Command::new(example_bin("send").unwrap())
        .args(["--lanes", "3", "--part-size", "1M", "--buffer-size", "256K"])
        .arg(format!("{}:{port}", env.addr))
        .arg(&t)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&send.stdout);
    assert_eq!(send.status.code(), Some(0), "{send:?}");
    assert!(stdout.contains(", 3 lanes"), "{stdout}");
    // `--once` waits for the transfer's last lane, not its first.
    let status = wait_child(&mut recv, T).unwrap();
    assert!(status.success(), "recv: {status}");
    assert_eq!(tree(&dest), tree(&src));
    assert!(temp_files(&dest).is_empty());
    std::fs::remove_dir_all(&base).unwrap();
}

/// The second rail of the test bed (rxe1), if there is one.
fn second_rail() -> (String, std::net::IpAddr) {
    let device = std::env::var("RDMAFT_DEVICE2").expect("RDMAFT_DEVICE2: the bed's second device");
    let addr = std::env::var("RDMAFT_ADDR2")
        .expect("RDMAFT_ADDR2: the second device's address")
        .parse()
        .expect("RDMAFT_ADDR2 is an IP address");
    (device, addr)
}

#[test]
fn one_transfer_runs_over_two_devices() {
    let env = env();
    let (device2, addr2) = second_rail();
    let base = scratch("lanes-two-devices");
    let (src, dest) = (base.join("src"), base.join("dest"));
    std::fs::create_dir_all(&dest).unwrap();
    let t = build(&src);
    // Listening on every address: each rail's address reaches the receiver on its device.
    let r = receiver(&env, &dest, |o| o.listen = "0.0.0.0:0".parse().unwrap());
    let port = r.receiver.local_addr().port();
    let options = SendOptions {
        chunk_size: 256 << 10,
        lanes: 2,
        part_size: 1 << 20,
        more_addrs: vec![std::net::SocketAddr::new(addr2, port)],
        ..SendOptions::default()
    };
    let report = send(std::net::SocketAddr::new(env.addr, port), vec![t], options)
        .unwrap()
        .wait()
        .unwrap();
    assert!(report.all_ok(), "{report:?}");
    assert_eq!(
        report.devices,
        [env.device.clone(), device2.clone()],
        "{report:?}"
    );
    assert_eq!(tree(&dest), tree(&src));
    let mut devices: Vec<_> = (0..2)
        .map(|_| {
            let c = r
                .connections
                .recv_timeout(T)
                .expect("a lane's connection ended");
            assert!(c.transferred && c.all_ok(), "{c:?}");
            c.device
        })
        .collect();
    devices.sort();
    let mut expected = vec![env.device.clone(), device2];
    expected.sort();
    assert_eq!(
        devices, expected,
        "the receiver served one lane on each device"
    );
    r.receiver.stop();
    std::fs::remove_dir_all(&base).unwrap();
}

/// `send` reads the ports from `/sys`: each of the bed's devices with its address, and only
/// the first on the first's subnet. Lanes named by device leave from each of them.
#[test]
fn lanes_leave_from_the_devices_named_and_found_in_sys() {
    let env = env();
    let (device2, addr2) = second_rail();
    let named = [env.device.clone(), device2.clone()];
    assert_eq!(
        rdmaft::ports::device_addrs(&named).unwrap(),
        [env.addr, addr2],
        "{:?}",
        rdmaft::ports::roce_ports(Path::new("/sys/class/infiniband"))
    );
    let reach: Vec<_> = rdmaft::ports::local_ports_reaching(env.addr)
        .into_iter()
        .map(|p| p.device)
        .collect();
    assert_eq!(reach, named[..1], "the second device is on another subnet");
    assert!(matches!(
        rdmaft::ports::device_addrs(&["nosuch0".to_owned()]),
        Err(Error::DeviceNotFound { ref available, .. }) if available.contains(&device2)
    ));
    let base = scratch("lanes-devices");
    let (src, dest) = (base.join("src"), base.join("dest"));
    std::fs::create_dir_all(&dest).unwrap();
    let t = build(&src);
    let r = receiver(&env, &dest, |o| o.listen = "0.0.0.0:0".parse().unwrap());
    let port = r.receiver.local_addr().port();
    let options = SendOptions {
        chunk_size: 256 << 10,
        lanes: 2,
        part_size: 1 << 20,
        more_addrs: vec![std::net::SocketAddr::new(addr2, port)],
        devices: named.to_vec(),
        ..SendOptions::default()
    };
    let report = send(std::net::SocketAddr::new(env.addr, port), vec![t], options)
        .unwrap()
        .wait()
        .unwrap();
    assert!(report.all_ok(), "{report:?}");
    assert_eq!(report.devices, named, "{report:?}");
    assert_eq!(tree(&dest), tree(&src));
    for _ in 0..2 {
        let c = r
            .connections
            .recv_timeout(T)
            .expect("a lane's connection ended");
        assert!(c.transferred && c.all_ok(), "{c:?}");
    }
    // A device that is not there fails the send before anything moves.
    let options = SendOptions {
        devices: vec!["nosuch0".into()],
        ..SendOptions::default()
    };
    let err = send(r.receiver.local_addr(), vec![src.clone()], options)
        .unwrap()
        .wait()
        .unwrap_err();
    assert!(matches!(err, Error::DeviceNotFound { .. }), "{err}");
    r.receiver.stop();
    std::fs::remove_dir_all(&base).unwrap();
}

/// A transfer over lanes cut short keeps the parts that verified; the next transfer of the
/// file checks them against its own digests instead of sending them again.
#[test]
fn a_cancelled_transfer_over_lanes_resumes_part_by_part() {
    let env = env();
    let base = scratch("lanes-resume");
    let (src, dest) = (base.join("src"), base.join("dest"));
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::create_dir_all(&src).unwrap();
    let data = random_bytes(24 << 20, 31);
    std::fs::write(src.join("big"), &data).unwrap();
    let r = receiver(&env, &dest, |o| o.resume = true);
    let to = r.receiver.local_addr();
    let options = || SendOptions {
        chunk_size: 256 << 10,
        lanes: 2,
        part_size: 1 << 20,
        ..SendOptions::default()
    };
    let handle = send(to, vec![src.join("big")], options()).unwrap();
    let deadline = Instant::now() + T;
    while handle.progress().bytes_done < 12 << 20 {
        assert!(
            !handle.is_finished(),
            "the transfer ended before it was cut"
        );
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    handle.cancel();
    let cut = handle.wait().unwrap();
    assert!(!cut.all_ok(), "{cut:?}");
    assert!(!dest.join("big").exists(), "nothing under the final name");
    for _ in 0..2 {
        r.connections
            .recv_timeout(T)
            .expect("a lane's connection ended");
    }
    let report = send(to, vec![src.join("big")], options())
        .unwrap()
        .wait()
        .unwrap();
    assert!(report.all_ok(), "{report:?}");
    assert!(
        report.bytes_resumed > 0,
        "verified parts were sent again: {report:?}"
    );
    assert_eq!(report.bytes + report.bytes_resumed, data.len() as u64);
    assert!(std::fs::read(dest.join("big")).unwrap() == data);
    assert!(temp_files(&dest).is_empty());
    r.receiver.stop();
    std::fs::remove_dir_all(&base).unwrap();
}
