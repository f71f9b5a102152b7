//! Hostile senders over a real connection: a test peer ([`RawSender`]) does a correct
//! handshake, then writes what a correct sender never would. Each case must end with a
//! clear error on the receiver (that connection closed, or that file refused), nothing
//! written outside the directory, no file under its final name that should not be there, no
//! temporary file left, and the receiver still serving the next sender.

use super::{env, receiver, TestReceiver, T};
use rdmaft::protocol::wire::{self, Control, FileEnd};
use rdmaft::protocol::{
    min_ctrl_depth, Digest, DigestKind, EntryKind, Features, FileAnswer, FileRejectReason, Params,
    CTRL_MSG_MAX,
};
use rdmaft::{send, RawSender, ReceivedOutcome, SendOptions};
use rdmaft_tests::{random_bytes, scratch, temp_files, tree};
use std::path::Path;
use std::time::Duration;

/// Chunks of 4 KiB (one raw write each), a window of 4, XXH3 digests.
fn params() -> Params {
    let mut p = Params::new(Features::DIGEST_XXH3_128, 4096, 4);
    p.max_open_files = 4;
    p.ctrl_depth = min_ctrl_depth(4);
    p
}

fn encode(msg: Control<'_>) -> Vec<u8> {
    let mut b = vec![0u8; CTRL_MSG_MAX];
    let n = msg.encode(0, &mut b).unwrap();
    b.truncate(n);
    b
}

fn header(file_id: u64, name: &str, size: u64, mode: u32) -> Vec<u8> {
    encode(Control::FileHeader(wire::FileHeader {
        target: &[],
        sync: None,
        part: None,
        file_id,
        kind: EntryKind::File,
        size,
        mtime_sec: 1_700_000_000,
        mtime_nsec: 0,
        mode,
        name,
    }))
}

/// A link's header (`LINKS`): the target after the name, its length as the size.
fn link_header(file_id: u64, name: &str, target: &str) -> Vec<u8> {
    encode(Control::FileHeader(wire::FileHeader {
        target: target.as_bytes(),
        sync: None,
        part: None,
        file_id,
        kind: EntryKind::Symlink,
        size: target.len() as u64,
        mtime_sec: 1_700_000_000,
        mtime_nsec: 0,
        mode: 0o777,
        name,
    }))
}

fn end(file_id: u64, length: u64, data: &[u8]) -> Vec<u8> {
    let d = xxhash_rust::xxh3::xxh3_128(data).to_be_bytes();
    encode(Control::FileEnd(FileEnd {
        file_id,
        length,
        digest: Digest::new(DigestKind::Xxh3_128, &d).unwrap(),
    }))
}

/// What a misbehaving sender does after its file was accepted.
type Script<'a> = Box<dyn Fn(&mut RawSender) + 'a>;

/// Waits for the receiver's answer to the file just offered; panics on anything else.
fn expect_accept(raw: &mut RawSender) {
    let deadline = std::time::Instant::now() + T;
    while std::time::Instant::now() < deadline {
        let (msgs, link) = raw.messages(Duration::from_millis(200));
        link.unwrap();
        for m in msgs {
            if let Ok((_, Control::FileAnswer { answer, .. })) = Control::decode(&m) {
                assert_eq!(answer, FileAnswer::Accept { offset: 0 });
                return;
            }
        }
    }
    panic!("no answer to the offer");
}

/// Waits until `count` receiver messages that `want` picks have arrived; panics after `T`.
fn await_messages(raw: &mut RawSender, count: usize, want: impl Fn(&Control<'_>) -> bool) {
    let deadline = std::time::Instant::now() + T;
    let mut seen = 0;
    while seen < count {
        assert!(
            std::time::Instant::now() < deadline,
            "{seen} of {count} messages"
        );
        let (msgs, link) = raw.messages(Duration::from_millis(200));
        link.unwrap();
        seen += msgs
            .iter()
            .filter(|m| Control::decode(m).is_ok_and(|(_, c)| want(&c)))
            .count();
    }
}

/// Runs `script` as a fresh connection and returns the receiver's report of it.
fn attack(r: &TestReceiver, script: impl FnOnce(&mut RawSender)) -> rdmaft::ConnectionReport {
    attack_with(r, params(), script)
}

/// As [`attack`], offering `params` in the handshake.
fn attack_with(
    r: &TestReceiver,
    params: Params,
    script: impl FnOnce(&mut RawSender),
) -> rdmaft::ConnectionReport {
    let mut raw = RawSender::connect(r.receiver.local_addr(), params, T).unwrap();
    script(&mut raw);
    // The receiver closes the connection after a violation (its error message first).
    let (_msgs, _) = raw.messages(Duration::from_secs(5));
    drop(raw);
    r.connections
        .recv_timeout(T)
        .expect("the receiver reports the connection")
}

/// What the receiving directory must look like after every case.
fn assert_clean(dest: &Path, outside: &Path, expected: &[(String, Option<Vec<u8>>)]) {
    assert_eq!(tree(dest), expected, "only what was expected arrived");
    assert!(temp_files(dest).is_empty(), "no temporary file left");
    assert!(tree(outside).is_empty(), "nothing written outside");
}

#[test]
fn hostile_senders_are_refused_and_the_receiver_keeps_serving() {
    let env = env();
    let base = scratch("hostile");
    let (dest, outside) = (base.join("dest"), base.join("outside"));
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let r = receiver(&env, &dest, |_| {});
    let long = "n".repeat(4001);
    let long_component = format!("d/{}", "c".repeat(256));
    let outside_name = format!("{}/evil", outside.display());

    // Each case closes the connection with a violation naming the problem.
    let violations: Vec<(&str, Vec<Vec<u8>>, &str)> = vec![
        (
            "dot-dot",
            vec![header(0, "../evil", 5, 0o644)],
            "invalid file name",
        ),
        (
            "absolute",
            vec![header(0, &outside_name, 5, 0o644)],
            "invalid file name",
        ),
        (
            "NUL",
            vec![header(0, "a\0b", 5, 0o644)],
            "invalid file name",
        ),
        (
            "control",
            vec![header(0, "a\x1bb", 5, 0o644)],
            "invalid file name",
        ),
        (
            "too long",
            vec![header(0, &long, 5, 0o644)],
            "invalid file name",
        ),
        (
            "long part",
            vec![header(0, &long_component, 5, 0o644)],
            "invalid file name",
        ),
        (
            "dot",
            vec![header(0, "a/./b", 5, 0o644)],
            "invalid file name",
        ),
        ("setuid", vec![header(0, "suid", 5, 0o4755)], "field mode"),
        (
            "link without LINKS",
            vec![link_header(0, "l", "t")],
            "symbolic link without LINKS agreed",
        ),
        ("sticky", vec![header(0, "sticky", 5, 0o1777)], "field mode"),
        ("end first", vec![end(0, 5, b"hello")], "unknown file"),
        (
            "garbage",
            vec![vec![0xff; 200]],
            "bad length: declared 65535",
        ),
        (
            "unknown kind",
            vec![{
                let mut m = header(0, "x", 5, 0o644);
                m[0] = 0x7f; // the message type
                m
            }],
            "unknown message type",
        ),
        (
            "bad length",
            vec![{
                let mut m = header(0, "x", 5, 0o644);
                m[2..4].copy_from_slice(&4000u16.to_be_bytes()); // the declared length
                m
            }],
            "length",
        ),
    ];
    for (case, messages, expected) in violations {
        let report = attack(&r, |raw| {
            for (n, m) in messages.iter().enumerate() {
                raw.control(n as u32, m).unwrap();
            }
        });
        let error = report.error.unwrap_or_default();
        assert!(error.contains(expected), "{case}: {error:?}");
        assert!(error.contains("violated"), "{case}: {error:?}");
        assert_clean(&dest, &outside, &[]);
    }

    // Two open entries on one path: the second is refused, the first stays open.
    for (first, second) in [("dup", "dup"), ("a", "a/b"), ("a/b", "a")] {
        let report = attack(&r, |raw| {
            raw.control(0, &header(0, first, 5, 0o644)).unwrap();
            raw.control(1, &header(1, second, 5, 0o644)).unwrap();
        });
        let refused = report.failures.iter().any(|f| {
            f.name == second
                && f.outcome == ReceivedOutcome::Rejected(FileRejectReason::NAME_CONFLICT)
        });
        assert!(refused, "{first} then {second}: {report:?}");
        // Accepting `a/b` created directory `a` (inside, empty); nothing else may remain.
        if first == "a/b" {
            std::fs::remove_dir(dest.join("a")).unwrap();
        }
        assert_clean(&dest, &outside, &[]);
    }

    // Links (LINKS agreed): one that would lead outside the directory is refused, the
    // session goes on; a safe one is made, and a file offered through it is refused (the
    // receiver never follows a link, even its own).
    let mut with_links = params();
    with_links.features |= Features::LINKS;
    let outside_target = outside.display().to_string();
    let report = attack_with(&r, with_links, |raw| {
        raw.control(0, &link_header(0, "abs", &outside_target))
            .unwrap();
        raw.control(1, &link_header(1, "d/up", "../../outside"))
            .unwrap();
        raw.control(2, &link_header(2, "here", ".")).unwrap();
        await_messages(raw, 3, |m| matches!(m, Control::FileAnswer { .. }));
        raw.control(
            3,
            &encode(Control::FileEnd(FileEnd {
                file_id: 2,
                length: 0,
                digest: Digest::NONE,
            })),
        )
        .unwrap();
        // Once the link is there (its result), a file through it.
        await_messages(raw, 1, |m| matches!(m, Control::FileResult { .. }));
        raw.control(4, &header(3, "here/x", 5, 0o644)).unwrap();
    });
    for name in ["abs", "d/up"] {
        let refused = report.failures.iter().any(|f| {
            f.name == name && f.outcome == ReceivedOutcome::Rejected(FileRejectReason::UNSAFE_LINK)
        });
        assert!(refused, "{name}: {report:?}");
    }
    let through = report.failures.iter().find(|f| f.name == "here/x");
    assert!(
        through.is_some_and(|f| f.outcome != ReceivedOutcome::Received),
        "a file through a link is refused: {report:?}"
    );
    assert_eq!(
        std::fs::read_link(dest.join("here")).unwrap().as_os_str(),
        "."
    );
    std::fs::remove_file(dest.join("here")).unwrap();
    // `d` was made for `d/up` before the link was refused: empty, inside.
    let _ = std::fs::remove_dir(dest.join("d"));
    assert_clean(&dest, &outside, &[]);

    // Data cases: the file is accepted, then the sender misbehaves.
    let data = random_bytes(4096, 52);
    let cases: Vec<(&str, Script<'_>, &str)> = vec![
        (
            "wrong seq",
            Box::new(|raw| raw.chunk(1, &data).unwrap()),
            "chunk sequence 1, expected 0",
        ),
        (
            "chunk too long",
            Box::new(|raw| {
                raw.chunk(0, &data).unwrap();
                raw.chunk(1, &data).unwrap(); // the file has 4096 + 100 bytes
            }),
            "write of 4096 bytes, expected 100",
        ),
        (
            "end early",
            Box::new(|raw| raw.control(1, &end(0, 4196, &data)).unwrap()),
            "file end before all its data",
        ),
        (
            "chunk past the file",
            Box::new(|raw| {
                raw.chunk(0, &data).unwrap();
                raw.chunk(1, &data[..100]).unwrap();
                raw.chunk(2, &data).unwrap();
            }),
            "chunk while no file expects data",
        ),
        (
            "end length",
            Box::new(|raw| {
                raw.chunk(0, &data).unwrap();
                raw.chunk(1, &data[..100]).unwrap();
                raw.control(1, &end(0, 9999, &data)).unwrap();
            }),
            "file end length differs",
        ),
    ];
    for (case, script, expected) in cases {
        let report = attack(&r, |raw| {
            raw.control(0, &header(0, "victim", 4196, 0o644)).unwrap();
            expect_accept(raw);
            script(raw);
        });
        let error = report.error.unwrap_or_default();
        assert!(error.contains(expected), "{case}: {error:?}");
        assert_clean(&dest, &outside, &[]);
    }

    // A wrong digest fails that file only: nothing is published, the session goes on.
    let report = attack(&r, |raw| {
        raw.control(0, &header(0, "tampered", 4096, 0o644)).unwrap();
        expect_accept(raw);
        raw.chunk(0, &data).unwrap();
        raw.control(1, &end(0, 4096, b"other bytes")).unwrap();
    });
    let file = report
        .failures
        .iter()
        .find(|f| f.name == "tampered")
        .unwrap();
    assert!(
        matches!(file.outcome, ReceivedOutcome::Failed(_)),
        "{:?}",
        file.outcome
    );
    assert_clean(&dest, &outside, &[]);

    // Symlinks planted in the destination are never followed, as a directory component or
    // as the file itself.
    std::os::unix::fs::symlink(&outside, dest.join("planted-dir")).unwrap();
    std::fs::write(outside.join("target"), b"precious").unwrap();
    std::os::unix::fs::symlink(outside.join("target"), dest.join("planted-file")).unwrap();
    let src = base.join("src");
    std::fs::create_dir_all(src.join("planted-dir")).unwrap();
    std::fs::write(src.join("planted-dir/x"), b"through the link").unwrap();
    std::fs::write(src.join("planted-file"), b"replaces the link").unwrap();
    let report = send(
        r.receiver.local_addr(),
        vec![src.join("planted-dir"), src.join("planted-file")],
        SendOptions::default(),
    )
    .unwrap()
    .wait()
    .unwrap();
    assert_eq!(
        std::fs::read(outside.join("target")).unwrap(),
        b"precious",
        "the link's target is untouched"
    );
    assert!(
        !outside.join("x").exists(),
        "nothing written through the link"
    );
    let into_dir = report
        .failures
        .iter()
        .find(|f| f.name == "planted-dir/x")
        .unwrap();
    assert!(!into_dir.outcome.is_ok(), "{:?}", into_dir.outcome);
    // The file name that was a link is now a regular file with the sent bytes.
    let meta = std::fs::symlink_metadata(dest.join("planted-file")).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(
        std::fs::read(dest.join("planted-file")).unwrap(),
        b"replaces the link"
    );
    assert!(temp_files(&dest).is_empty());
    let _ = r.connections.recv_timeout(T);

    // And the receiver still serves a correct sender.
    std::fs::remove_file(dest.join("planted-dir")).unwrap();
    let good = base.join("good");
    std::fs::write(&good, random_bytes(10_000, 53)).unwrap();
    let report = send(
        r.receiver.local_addr(),
        vec![good.clone()],
        SendOptions::default(),
    )
    .unwrap()
    .wait()
    .unwrap();
    assert!(report.all_ok(), "{report:?}");
    assert_eq!(
        std::fs::read(dest.join("good")).unwrap(),
        std::fs::read(&good).unwrap()
    );
    r.receiver.stop();
    std::fs::remove_dir_all(&base).unwrap();
}

/// PROTOCOL.md §6.6: every connection has a protection domain of its own, so a sender that
/// learnt another connection's ring address and key still cannot write into that ring: the
/// receiver's device refuses the write (a remote access error at the writer), and the other
/// connection goes on unharmed. With one domain shared by both, the write would succeed.
#[test]
// spec-test: [pd.own]
fn a_sender_cannot_write_into_another_connections_ring() {
    let env = env();
    let base = scratch("hostile-pd");
    let dest = base.join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let r = receiver(&env, &dest, |_| {});
    let mut victim = RawSender::connect(r.receiver.local_addr(), params(), T).unwrap();
    let mut thief = RawSender::connect(r.receiver.local_addr(), params(), T).unwrap();
    let ring = victim.negotiated().ring;
    assert_ne!(ring.rkey, thief.negotiated().ring.rkey, "two rings");
    let bytes = header(0, "stolen", 5, 0o644);
    thief
        .write_to(
            ring,
            wire::Imm::control(0).encode(),
            victim.control_offset(0),
            &bytes,
        )
        .unwrap();
    let (_, link) = thief.messages(Duration::from_secs(10));
    let err = link.expect_err("a write into another connection's ring completed");
    assert!(
        err.to_string().contains("does not let us write"),
        "not refused for its key: {err}"
    );
    // The victim's connection still works: its own offer is answered.
    victim.control(0, &header(0, "mine", 5, 0o644)).unwrap();
    expect_accept(&mut victim);
    drop(thief);
    drop(victim);
    std::fs::remove_dir_all(&base).unwrap();
}
