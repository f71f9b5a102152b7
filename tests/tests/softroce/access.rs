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
