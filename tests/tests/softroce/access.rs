//! Access control: a receiver with a key takes only senders that prove it, a sender refuses
//! a receiver that cannot, and an allow-list refuses other addresses; in every refused case
//! nothing lands in the directory.

use super::{env, receiver, T};
use rdmaft::{send, Error, Key, SendOptions, Subnet};
use rdmaft_tests::{random_bytes, scratch};
use std::net::SocketAddr;
use std::path::Path;

/// Sends `file` to `to` with `key`; the error that kept it from starting, if any.
fn send_with(to: SocketAddr, file: &Path, key: Option<Key>) -> Result<(), Error> {
    let options = SendOptions {
        key,
        ..SendOptions::default()
    };
    let report = send(to, vec![file.to_owned()], options)?.wait()?;
    assert!(report.all_ok(), "{report:?}");
    Ok(())
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

#[test]
fn a_key_lets_in_only_senders_that_prove_it() {
    let env = env();
    let base = scratch("keys");
    let dest = base.join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let file = base.join("f");
    std::fs::write(&file, random_bytes(10_000, 41)).unwrap();
    let key = Key::derive(b"the right key");
    let r = receiver(&env, &dest, |o| o.key = Some(key.clone()));
    let to = r.receiver.local_addr();
    // No key: refused in the handshake, before any byte.
    let e = send_with(to, &file, None).unwrap_err();
    assert!(e.to_string().contains("authentication"), "{e}");
    // A wrong key: the receiver's proof fails at the sender, which sends nothing.
    let e = send_with(to, &file, Some(Key::derive(b"a wrong key"))).unwrap_err();
    assert!(e.to_string().contains("key proof is wrong"), "{e}");
    assert!(is_empty(&dest), "nothing lands without the key");
    // The right key: the file arrives.
    send_with(to, &file, Some(key.clone())).unwrap();
    assert_eq!(
        std::fs::read(dest.join("f")).unwrap(),
        std::fs::read(&file).unwrap()
    );
    r.receiver.stop();
    // A sender with a key refuses a receiver without one (it cannot prove the key).
    let open = receiver(&env, &dest, |_| {});
    std::fs::remove_file(dest.join("f")).unwrap();
    let e = send_with(open.receiver.local_addr(), &file, Some(key)).unwrap_err();
    assert!(
        e.to_string().contains("does not prove the pre-shared key"),
        "{e}"
    );
    assert!(is_empty(&dest));
    open.receiver.stop();
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn an_allow_list_refuses_other_addresses() {
    let env = env();
    let base = scratch("allow");
    let dest = base.join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let file = base.join("f");
    std::fs::write(&file, random_bytes(5_000, 42)).unwrap();
    let elsewhere: Subnet = "192.0.2.0/24".parse().unwrap();
    let r = receiver(&env, &dest, |o| o.allow = vec![elsewhere]);
    let e = send_with(r.receiver.local_addr(), &file, None).unwrap_err();
    assert!(e.to_string().contains("not allowed"), "{e}");
    let report = r.connections.recv_timeout(T).unwrap();
    assert!(
        report
            .error
            .as_deref()
            .unwrap_or("")
            .contains("not allowed"),
        "{report:?}"
    );
    assert!(is_empty(&dest));
    r.receiver.stop();
    // The sender's own subnet is let in.
    let here = Subnet::new(env.addr, 24).unwrap();
    let r = receiver(&env, &dest, |o| o.allow = vec![elsewhere, here]);
    send_with(r.receiver.local_addr(), &file, None).unwrap();
    assert!(dest.join("f").is_file());
    r.receiver.stop();
    std::fs::remove_dir_all(&base).unwrap();
}

/// Rings are registered before the sender proves the key: senders that never prove it hold
/// at most `MAX_HANDSHAKES` (8) of them at once, each only until the handshake timeout,
/// and a correct sender gets through afterwards.
#[test]
fn senders_that_never_prove_the_key_hold_at_most_eight_rings() {
    use rdmaft::protocol::{Features, Params};
    use rdmaft::RawSender;
    let env = env();
    let base = scratch("auth-flood");
    let dest = base.join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let key = Key::derive(b"flood key");
    let limit = std::time::Duration::from_secs(20);
    let r = receiver(&env, &dest, |o| {
        o.key = Some(key.clone());
        o.handshake_timeout = limit;
    });
    let to = r.receiver.local_addr();
    let params = Params::new(Features::empty(), 4096, 4);
    // Eight connections that prove nothing: each is let in and holds its ring.
    let silent: Vec<RawSender> = (0..8)
        .map(|i| {
            RawSender::connect_keyed(to, params, Some(&key), T)
                .unwrap_or_else(|e| panic!("silent sender {i}: {e}"))
        })
        .collect();
    // A ninth is not let in while they hold their slots: its connect times out.
    let started = std::time::Instant::now();
    let ninth = RawSender::connect_keyed(to, params, Some(&key), std::time::Duration::from_secs(3));
    assert!(
        started.elapsed() < limit && ninth.is_err(),
        "a ninth connection got a ring while eight were in their handshake"
    );
    // The eight are closed once the handshake time is up, each with the reason. (The
    // ninth's request is let in when their slots come back, and fails at once: its sender
    // is gone.)
    let mut unproved = 0;
    let mut others = Vec::new();
    while unproved < 8 {
        let report = r.connections.recv_timeout(T + limit).unwrap();
        assert!(!report.transferred, "{report:?}");
        let why = report.error.unwrap_or_default();
        if why.contains("did not prove the key") {
            unproved += 1;
        } else {
            others.push(why);
        }
        assert!(
            others.len() <= 1,
            "more reports than connections: {others:?}"
        );
    }
    drop(silent);
    // Then a sender with the key gets through.
    let file = base.join("f");
    std::fs::write(&file, random_bytes(10_000, 44)).unwrap();
    send_with(to, &file, Some(key)).unwrap();
    assert_eq!(
        std::fs::read(dest.join("f")).unwrap(),
        std::fs::read(&file).unwrap()
    );
    r.receiver.stop();
    std::fs::remove_dir_all(&base).unwrap();
}

/// `recv --once` waits for the first real transfer: a sender refused in the handshake (no
/// key, here; a port scan or a wrong key alike) does not end it.
#[test]
fn recv_once_is_not_ended_by_a_refused_sender() {
    use rdmaft_tests::{example_bin, start_recv, wait_child, RecvProgram};
    use std::ffi::OsStr;
    use std::process::Command;
    let env = env();
    let base = scratch("once-refused");
    let dest = base.join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let key_file = base.join("key");
    std::fs::write(&key_file, b"the once key, long enough to be a key").unwrap();
    let file = base.join("f");
    std::fs::write(&file, random_bytes(50_000, 45)).unwrap();
    let args = [
        OsStr::new("--once"),
        OsStr::new("--key-file"),
        key_file.as_os_str(),
    ];
    let RecvProgram {
        child: mut recv,
        mut err,
        port,
        ..
    } = start_recv(env.addr, &dest, args, false, T).unwrap();
    let to = format!("{}:{port}", env.addr);
    let refused = Command::new(example_bin("send").unwrap())
        .arg(&to)
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    // recv saw the refused connection, logged why, and goes on listening.
    let line = err.wait_for("connection refused", T).unwrap();
    assert!(line.contains("AUTH_REQUIRED"), "{line}");
    assert!(
        recv.try_wait().unwrap().is_none(),
        "recv --once ended on a refused handshake: {:?}",
        err.drain(T)
    );
    let sent = Command::new(example_bin("send").unwrap())
        .arg("--key-file")
        .arg(&key_file)
        .arg(&to)
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(sent.status.code(), Some(0), "{sent:?}");
    let status = wait_child(&mut recv, T).unwrap();
    assert_eq!(status.code(), Some(0), "{:?}", err.drain(T));
    assert_eq!(
        std::fs::read(dest.join("f")).unwrap(),
        std::fs::read(&file).unwrap()
    );
    std::fs::remove_dir_all(&base).unwrap();
}
