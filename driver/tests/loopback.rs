//! The whole engine (walk, reader, protocol, writer, file layer) over the in-process loopback
//! link: no RDMA needed, so these run on any host.

use rdmaft::fs::dest::{DestOptions, Destination};
use rdmaft::{
    loopback_transfer, FileCallback, FileOutcome, FileReport, ReceivedOutcome, ReceiverOptions,
    SendOptions,
};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rdmaft-loop-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// Pseudo-random bytes (xorshift), reproducible.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Every file and directory under `root`, relative, sorted, with file contents.
fn tree(root: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                out.push((rel, None));
                stack.push(p);
            } else if meta.is_file() {
                out.push((rel, Some(fs::read(&p).unwrap())));
            }
        }
    }
    out.sort();
    out
}

fn options(dest: &Path, chunk: u32, window: u32) -> (SendOptions, ReceiverOptions) {
    let send = SendOptions {
        chunk_size: chunk,
        window,
        ..SendOptions::default()
    };
    let mut recv = ReceiverOptions::new("127.0.0.1:0".parse().unwrap(), dest.to_owned());
    recv.chunk_size = chunk;
    recv.window = window;
    (send, recv)
}

fn sample_tree(src: &Path, chunk: usize) -> PathBuf {
    let t = src.join("tree");
    fs::create_dir_all(t.join("a/b/c")).unwrap();
    fs::create_dir_all(t.join("empty")).unwrap();
    for (i, len) in [0, 1, chunk - 1, chunk, chunk + 1, 5 * chunk + 7]
        .iter()
        .enumerate()
    {
        fs::write(t.join(format!("f{i}")), bytes(*len, i as u64 + 1)).unwrap();
    }
    fs::write(t.join("a/b/c/deep"), bytes(3 * chunk, 99)).unwrap();
    fs::write(t.join("a/x"), b"").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", t.join("link")).unwrap();
    t
}

#[test]
fn a_tree_arrives_identical() {
    for (chunk, window) in [(4096u32, 1u32), (4096, 4), (65536, 16)] {
        let base = scratch(&format!("tree-{chunk}-{window}"));
        let src = base.join("src");
        let dest = base.join("dest");
        fs::create_dir_all(&dest).unwrap();
        let t = sample_tree(&src, chunk as usize);
        let (send, recv) = options(&dest, chunk, window);
        let (report, received) = loopback_transfer(vec![t.clone()], &dest, send, &recv).unwrap();
        assert_eq!(report.error, None, "{report:?}");
        assert!(received.all_ok(), "{received:?}");
        // The symlink: counted and not sent, by policy, which is no failure.
        assert_eq!(report.counts.ignored, 1, "{:?}", report.counts);
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        assert!(report.all_ok(), "{report:?}");
        let mut expected = tree(&src);
        expected.retain(|(n, _)| n != "tree/link");
        assert_eq!(tree(&dest), expected, "chunk {chunk} window {window}");
        assert!(received.failures.is_empty(), "{received:?}");
        assert_eq!(received.counts.received, expected.len() as u64);
        fs::remove_dir_all(&base).unwrap();
    }
}

#[test]
fn many_small_files() {
    let base = scratch("small");
    let src = base.join("src/many");
    let dest = base.join("dest");
    fs::create_dir_all(&dest).unwrap();
    for i in 0..300 {
        let d = src.join(format!("d{}", i % 7));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(format!("f{i}")), bytes(i * 13 % 5000, i as u64)).unwrap();
    }
    let (send, recv) = options(&dest, 4096, 8);
    let (report, received) = loopback_transfer(vec![src.clone()], &dest, send, &recv).unwrap();
    assert!(report.all_ok(), "{:?}", report.error);
    assert!(received.all_ok());
    assert_eq!(
        received.counts.received,
        300 + 7 + 1,
        "files and directories"
    );
    assert_eq!(
        received.peer, "loopback sender",
        "the report says whom it served"
    );
    assert!(
        report.negotiated.is_some(),
        "the report says what was agreed"
    );
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(tree(&dest), tree(&base.join("src")));
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn digests_of_both_kinds_and_none() {
    use rdmaft::protocol::DigestKind;
    for kind in [DigestKind::Xxh3_128, DigestKind::Blake3, DigestKind::None] {
        let base = scratch(&format!("digest-{kind:?}"));
        let src = base.join("src");
        let dest = base.join("dest");
        fs::create_dir_all(&dest).unwrap();
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("f"), bytes(100_000, 5)).unwrap();
        let (mut send, recv) = options(&dest, 4096, 4);
        send.digest = kind;
        let (report, received) =
            loopback_transfer(vec![src.join("f")], &dest, send, &recv).unwrap();
        assert!(report.all_ok() && received.all_ok(), "{kind:?}");
        assert_eq!(fs::read(dest.join("f")).unwrap(), bytes(100_000, 5));
        fs::remove_dir_all(&base).unwrap();
    }
}

#[test]
fn reports_count_every_entry_but_list_only_the_first_failures() {
    use rdmaft::{Existing, ReceivedOutcome, MAX_LISTED_FAILURES};
    use std::sync::{Arc, Mutex};
    let base = scratch("bounded-report");
    let src = base.join("src/many");
    let dest = base.join("dest");
    fs::create_dir_all(&src).unwrap();
    let n = MAX_LISTED_FAILURES + 50;
    for i in 0..n {
        fs::write(src.join(format!("f{i}")), b"x").unwrap();
    }
    // The same names exist at the receiver, which keeps them: every file is refused.
    fs::create_dir_all(&dest).unwrap();
    for i in 0..n {
        fs::write(dest.join(format!("f{i}")), b"old").unwrap();
    }
    let paths: Vec<PathBuf> = (0..n).map(|i| src.join(format!("f{i}"))).collect();
    let (mut send, mut recv) = options(&dest, 4096, 8);
    recv.existing = Existing::Keep;
    let sent_calls = Arc::new(Mutex::new(0u64));
    let received_calls = Arc::new(Mutex::new(0u64));
    let c = Arc::clone(&sent_calls);
    send.on_file = Some(Arc::new(move |_| *c.lock().unwrap() += 1));
    let c = Arc::clone(&received_calls);
    recv.on_file = Some(Arc::new(move |_| *c.lock().unwrap() += 1));
    let (report, received) = loopback_transfer(paths, &dest, send, &recv).unwrap();
    assert_eq!(report.counts.rejected, n as u64, "{:?}", report.counts);
    assert_eq!(report.counts.total(), n as u64, "{:?}", report.counts);
    assert_eq!(report.failures.len(), MAX_LISTED_FAILURES);
    assert!(report.walk_finished);
    assert_eq!(*sent_calls.lock().unwrap(), n as u64, "one callback each");
    assert_eq!(received.counts.rejected, n as u64);
    assert_eq!(received.failures.len(), MAX_LISTED_FAILURES);
    assert!(received
        .failures
        .iter()
        .all(|f| matches!(f.outcome, ReceivedOutcome::Rejected(_))));
    assert_eq!(*received_calls.lock().unwrap(), n as u64);
    assert!(received.transferred);
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn files_beyond_the_open_file_budget_are_refused_busy_and_the_rest_arrive() {
    use rdmaft::protocol::FileRejectReason;
    use rdmaft::ReceivedOutcome;
    let base = scratch("fd-budget");
    let src = base.join("src");
    let dest = base.join("dest");
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dest).unwrap();
    let paths: Vec<PathBuf> = (0..20)
        .map(|i| {
            let p = src.join(format!("f{i}"));
            fs::write(&p, bytes(5000, i)).unwrap();
            p
        })
        .collect();
    let (send, mut recv) = options(&dest, 4096, 8);
    // One file open at a time across the receiver: the sender offers several at once, so
    // the second offer finds the budget spent.
    recv.open_files_limit = Some(1);
    let (report, received) = loopback_transfer(paths, &dest, send, &recv).unwrap();
    assert_eq!(report.error, None, "the session goes on: {report:?}");
    assert_eq!(received.counts.total(), 20, "{:?}", received.counts);
    assert!(received.counts.rejected >= 1, "{:?}", received.counts);
    assert_eq!(received.counts.received + received.counts.rejected, 20);
    for f in &received.failures {
        assert_eq!(f.outcome, ReceivedOutcome::Rejected(FileRejectReason::BUSY));
        let detail = f.detail.as_deref().unwrap_or("");
        assert!(detail.contains("budget of file descriptors"), "{detail}");
    }
    for i in 0..20 {
        let name = dest.join(format!("f{i}"));
        assert!(
            !name.exists() || fs::read(&name).unwrap() == bytes(5000, i),
            "f{i} arrived whole or not at all"
        );
    }
    assert_eq!(
        report.counts.sent, received.counts.received,
        "both sides agree"
    );
    fs::remove_dir_all(&base).unwrap();
}

/// Leaves in `dest` what an interrupted transfer of `src` (sent as its base name) would
/// have kept for `--resume`: its first `len` bytes, here `bytes`.
fn plant_partial(dest: &Path, src: &Path, bytes: &[u8]) {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(src).unwrap();
    let mtime = (meta.mtime(), meta.mtime_nsec() as u32);
    let name = src.file_name().unwrap().to_str().unwrap();
    let dest = Destination::open(dest, DestOptions::default()).unwrap();
    let (mut inc, kept) = dest.resume_file(name, meta.len(), 0o644, mtime).unwrap();
    assert_eq!(kept, 0);
    std::io::Write::write_all(&mut inc.file, bytes).unwrap();
    dest.keep_partial(inc, meta.len(), mtime, bytes.len() as u64);
}

#[test]
// spec-test: [resume.digest]
fn resume_takes_a_kept_prefix_only_under_a_digest() {
    use rdmaft::protocol::DigestKind;
    let chunk = 4096;
    let data = bytes(5 * chunk + 7, 11);
    for (kind, prefix_ok) in [
        (DigestKind::Xxh3_128, true),
        (DigestKind::Xxh3_128, false),
        (DigestKind::None, false),
    ] {
        let base = scratch(&format!("resume-{kind:?}-{prefix_ok}"));
        let (src, dest) = (base.join("src"), base.join("dest"));
        fs::create_dir_all(&src).unwrap();
        fs::create_dir_all(&dest).unwrap();
        fs::write(src.join("f"), &data).unwrap();
        let mut prefix = data[..3 * chunk].to_vec();
        if !prefix_ok {
            prefix[100] ^= 0xff;
        }
        plant_partial(&dest, &src.join("f"), &prefix);
        let (mut send, mut recv) = options(&dest, chunk as u32, 4);
        send.digest = kind;
        recv.resume = true;
        let (report, received) =
            loopback_transfer(vec![src.join("f")], &dest, send, &recv).unwrap();
        let what = format!("{kind:?}, prefix ok: {prefix_ok}");
        match (kind, prefix_ok) {
            // Resumed, and the whole file's digest checked the kept bytes.
            (DigestKind::Xxh3_128, true) => {
                assert!(report.all_ok() && received.all_ok(), "{what}: {report:?}");
                assert_eq!(report.bytes_resumed, 3 * chunk as u64, "{what}");
                assert_eq!(fs::read(dest.join("f")).unwrap(), data, "{what}");
            }
            // Resumed, and the digest caught the changed prefix: nothing published.
            (DigestKind::Xxh3_128, false) => {
                assert!(matches!(
                    received.failures[0].outcome,
                    ReceivedOutcome::Failed(_)
                ));
                assert!(!dest.join("f").exists(), "{what}");
            }
            // No digest would check a kept prefix: the file starts over, and arrives whole.
            _ => {
                assert!(report.all_ok() && received.all_ok(), "{what}: {report:?}");
                assert_eq!(report.bytes_resumed, 0, "{what}");
                assert_eq!(fs::read(dest.join("f")).unwrap(), data, "{what}");
            }
        }
        let left: Vec<_> = fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".rdmaft-"))
            .collect();
        assert!(left.is_empty(), "{what}: {left:?}");
        fs::remove_dir_all(&base).unwrap();
    }
}

/// The process's umask, as the receiver reads it.
fn umask() -> u32 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .unwrap();
    u32::from_str_radix(line.trim(), 8).unwrap()
}

#[test]
fn modes_lose_the_receivers_umask_unless_preserved() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    for preserve in [false, true] {
        let base = scratch(&format!("modes-{preserve}"));
        let (src, dest) = (base.join("src/open"), base.join("dest"));
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::create_dir_all(&dest).unwrap();
        fs::write(src.join("sub/f"), b"x").unwrap();
        for p in [src.join("sub/f"), src.join("sub"), src.clone()] {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o777)).unwrap();
        }
        let (send, mut recv) = options(&dest, 4096, 4);
        recv.preserve_perms = preserve;
        let (report, received) = loopback_transfer(vec![src], &dest, send, &recv).unwrap();
        assert!(report.all_ok() && received.all_ok(), "{report:?}");
        let expected = if preserve { 0o777 } else { 0o777 & !umask() };
        for p in ["open", "open/sub", "open/sub/f"] {
            assert_eq!(mode(&dest.join(p)), expected, "{p}, preserve {preserve}");
        }
        fs::remove_dir_all(&base).unwrap();
    }
}

/// A link named on the command line is followed, as `scp` does: the target's bytes arrive
/// under the link's name (the reader, which opens without following links, once failed it
/// with ELOOP).
#[test]
fn a_link_named_as_a_root_sends_its_target_under_its_own_name() {
    let base = scratch("root-link");
    let (src, dest) = (base.join("src"), base.join("dest"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dest).unwrap();
    fs::write(src.join("target"), bytes(30_000, 9)).unwrap();
    std::os::unix::fs::symlink(src.join("target"), src.join("link-to-file")).unwrap();
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("dir/inner"), bytes(100, 10)).unwrap();
    std::os::unix::fs::symlink(src.join("dir"), src.join("link-to-dir")).unwrap();
    let (send, recv) = options(&dest, 4096, 4);
    let roots = vec![src.join("link-to-file"), src.join("link-to-dir")];
    let (report, received) = loopback_transfer(roots, &dest, send, &recv).unwrap();
    assert!(report.all_ok(), "{report:?}");
    assert!(received.all_ok(), "{received:?}");
    assert_eq!(
        fs::read(dest.join("link-to-file")).unwrap(),
        bytes(30_000, 9)
    );
    assert!(!dest.join("link-to-file").is_symlink());
    assert_eq!(
        fs::read(dest.join("link-to-dir/inner")).unwrap(),
        bytes(100, 10)
    );
    fs::remove_dir_all(&base).unwrap();
}

/// Modification times of every entry under `root` (directories included), relative.
fn mtimes(root: &Path) -> Vec<(String, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                continue;
            }
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.push((rel, meta.mtime(), meta.mtime_nsec()));
            if meta.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn lanes_carry_one_transfer_and_split_large_files() {
    use std::sync::{Arc, Mutex};
    for lanes in [2u16, 3] {
        let base = scratch(&format!("lanes-{lanes}"));
        let src = base.join("src");
        let dest = base.join("dest");
        fs::create_dir_all(&dest).unwrap();
        let t = sample_tree(&src, 4096);
        // 8 parts of 16 KiB, the last one short; and one file of exactly two parts.
        fs::write(t.join("a/big"), bytes(7 * 16384 + 5, 7)).unwrap();
        fs::write(t.join("two"), bytes(2 * 16384, 8)).unwrap();
        let (mut send, recv) = options(&dest, 4096, 4);
        send.lanes = lanes;
        send.part_size = 16384;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        send.on_file = Some(Arc::new(move |f| s.lock().unwrap().push(f.name.clone())));
        let (report, received) = loopback_transfer(vec![t.clone()], &dest, send, &recv).unwrap();
        assert_eq!(report.error, None, "{report:?}");
        assert_eq!(
            report.lanes,
            usize::from(lanes),
            "every lane carried the transfer"
        );
        let mut expected = tree(&src);
        expected.retain(|(n, _)| n != "tree/link");
        assert_eq!(
            tree(&dest),
            expected,
            "{lanes} lanes: contents, no temporary file left"
        );
        let mut expected_times = mtimes(&src);
        expected_times.retain(|(n, ..)| n != "tree/link");
        assert_eq!(
            mtimes(&dest),
            expected_times,
            "{lanes} lanes: no directory's mtime set before a file landed in it"
        );
        // Per transfer, not per lane or part: every entry once (the symlink as skipped).
        assert_eq!(report.counts.sent, expected.len() as u64, "{report:?}");
        assert_eq!(report.counts.ignored, 1);
        let mut names = seen.lock().unwrap().clone();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a callback ran twice for one entry");
        assert_eq!(names.len(), expected.len() + 1, "{names:?}");
        assert_eq!(
            received.counts.received,
            expected.len() as u64,
            "{received:?}"
        );
        assert!(received.all_ok(), "{received:?}");
        fs::remove_dir_all(&base).unwrap();
    }
}

#[test]
fn three_shards_at_once_send_the_tree_once_between_them() {
    use rdmaft::Shard;
    use std::os::unix::fs::PermissionsExt;
    let base = scratch("shards");
    let src = base.join("src");
    let dest = base.join("dest");
    fs::create_dir_all(&dest).unwrap();
    let t = sample_tree(&src, 4096);
    for i in 0..40 {
        let d = t.join(format!("s{}/t{}", i % 5, i % 3));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(format!("f{i}")), bytes(i * 331 % 9000, i as u64)).unwrap();
    }
    fs::set_permissions(t.join("s1"), fs::Permissions::from_mode(0o750)).unwrap();
    let shards: Vec<_> = (0..3)
        .map(|i| {
            let (t, dest) = (t.clone(), dest.clone());
            std::thread::spawn(move || {
                let (mut send, recv) = options(&dest, 4096, 4);
                send.shard = Some(Shard::new(i, 3).unwrap());
                loopback_transfer(vec![t], &dest, send, &recv).unwrap()
            })
        })
        .collect();
    let reports: Vec<_> = shards.into_iter().map(|s| s.join().unwrap()).collect();
    let mut expected = tree(&src);
    expected.retain(|(n, _)| n != "tree/link");
    assert_eq!(tree(&dest), expected);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dest.join("tree/s1")), 0o750);
    let mut sent = 0;
    let mut skipped = 0;
    for (report, received) in &reports {
        assert_eq!(report.error, None, "{report:?}");
        assert!(received.all_ok(), "{received:?}");
        assert!(
            report.counts.sent > 0,
            "every shard has a share: {report:?}"
        );
        sent += report.counts.sent;
        skipped += report.counts.ignored;
    }
    assert_eq!(sent, expected.len() as u64, "each entry sent by one shard");
    assert_eq!(skipped, 1, "the symlink, reported by one shard");
    fs::remove_dir_all(&base).unwrap();
}

/// Whether files in `dir` open with `O_DIRECT` (tmpfs, say, refuses it).
fn takes_direct_io(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let probe = dir.join("probe");
    let ok = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .is_ok();
    let _ = fs::remove_file(&probe);
    ok
}

#[test]
fn direct_io_moves_large_files_past_the_page_cache() {
    // Under target/, on the build's disk: the temporary directory may be tmpfs.
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("rdmaft-direct-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    let (src, dest) = (base.join("src/d"), base.join("dest"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dest).unwrap();
    let chunk = 256 << 10;
    // A short last chunk, an exact number of chunks, and a file below the threshold.
    fs::write(src.join("big"), bytes((3 << 20) + 5, 1)).unwrap();
    fs::write(src.join("exact"), bytes(2 << 20, 2)).unwrap();
    fs::write(src.join("small"), bytes(10_000, 3)).unwrap();
    let direct = takes_direct_io(&base);
    for on in [true, false] {
        let out = dest.join(format!("{on}"));
        fs::create_dir_all(&out).unwrap();
        let (mut send, mut recv) = options(&out, chunk, 4);
        send.direct = on;
        recv.direct = on;
        let (report, received) = loopback_transfer(vec![src.clone()], &out, send, &recv).unwrap();
        assert!(report.all_ok(), "{report:?}");
        assert!(received.all_ok(), "{received:?}");
        assert_eq!(tree(&out.join("d")), tree(&src), "direct {on}");
        let expected = if on && direct { 2 } else { 0 };
        assert_eq!(
            (report.direct_files, received.direct_files),
            (expected, expected),
            "direct {on}, the file system takes O_DIRECT: {direct}"
        );
    }
    fs::remove_dir_all(&base).unwrap();
}

/// A file that shrinks while it is being sent is not sent, with why; nothing is published
/// under its name, and the files after it still arrive. (It is cut when the file before it
/// is reported: the window keeps it from being read to its end by then.)
#[test]
fn a_file_that_shrinks_while_being_sent_is_reported_and_the_rest_arrive() {
    let base = scratch("shrinks");
    let (t, dest) = (base.join("src/t"), base.join("dest"));
    fs::create_dir_all(&t).unwrap();
    fs::create_dir_all(&dest).unwrap();
    fs::write(t.join("a"), bytes(100, 1)).unwrap();
    fs::write(t.join("b"), bytes(1 << 20, 2)).unwrap();
    fs::write(t.join("c"), bytes(100, 3)).unwrap();
    let outcomes = Arc::new(Mutex::new(BTreeMap::new()));
    let on_file: FileCallback = {
        let (outcomes, b) = (Arc::clone(&outcomes), t.join("b"));
        Arc::new(move |f: &FileReport| {
            if f.name == "t/a" {
                fs::File::options()
                    .write(true)
                    .open(&b)
                    .unwrap()
                    .set_len(4096)
                    .unwrap();
            }
            outcomes
                .lock()
                .unwrap()
                .insert(f.name.clone(), f.outcome.clone());
        })
    };
    let (send, recv) = options(&dest, 4096, 8);
    let send = SendOptions {
        on_file: Some(on_file),
        ..send
    };
    let (report, received) = loopback_transfer(vec![t.clone()], &dest, send, &recv).unwrap();
    let outcomes = outcomes.lock().unwrap().clone();
    assert_eq!(outcomes["t/a"], FileOutcome::Sent);
    assert_eq!(outcomes["t/c"], FileOutcome::Sent);
    assert_eq!(
        outcomes["t/b"],
        FileOutcome::Skipped(
            "the source file changed while being sent: the file shrank while being sent".into()
        ),
        "{report:?}"
    );
    assert_eq!(report.counts.skipped, 1, "{:?}", report.counts);
    assert!(!received.all_ok());
    assert!(
        !dest.join("t/b").exists(),
        "nothing published under its name"
    );
    assert_eq!(fs::read(dest.join("t/c")).unwrap(), bytes(100, 3));
    fs::remove_dir_all(&base).unwrap();
}

/// With the same key on both sides the pair agrees on the key's proof and the tree
/// arrives; a receiver with a key refuses a sender without one.
#[test]
fn a_shared_key_is_agreed_and_a_sender_without_it_is_refused() {
    let base = scratch("key");
    let (t, dest) = (base.join("src/t"), base.join("dest"));
    fs::create_dir_all(&t).unwrap();
    fs::create_dir_all(&dest).unwrap();
    fs::write(t.join("a"), bytes(1000, 5)).unwrap();
    let key = rdmaft::Key::derive(b"a test key of at least thirty-two bytes");
    let (mut send, mut recv) = options(&dest, 4096, 8);
    recv.key = Some(key.clone());
    let refused = loopback_transfer(vec![t.clone()], &dest, send.clone(), &recv);
    let refused = refused.map(|_| ()).unwrap_err().to_string();
    assert!(refused.contains("auth"), "{refused}");
    send.key = Some(key);
    let (report, received) = loopback_transfer(vec![t.clone()], &dest, send, &recv).unwrap();
    assert!(report.all_ok() && received.all_ok(), "{report:?}");
    let features = report.negotiated.unwrap().features;
    assert!(
        features.contains(rdmaft::protocol::Features::AUTH_PSK),
        "{features:?}"
    );
    assert_eq!(fs::read(dest.join("t/a")).unwrap(), bytes(1000, 5));
    fs::remove_dir_all(&base).unwrap();
}
