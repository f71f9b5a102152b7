//! Sync over the in-process loopback link: what is in sync moves no data, what changed
//! moves, metadata-only changes move none, a dry run changes nothing.

use rdmaft::protocol::Changes;
use rdmaft::{
    loopback_transfer, FileOutcome, FileReport, ReceiverOptions, SendOptions, SendReport,
    SyncOptions,
};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rdmaft-sync-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// Every entry under `root`: relative name → (contents, or `None` for a directory; mode;
/// mtime).
type Listing = BTreeMap<String, (Option<Vec<u8>>, u32, SystemTime)>;

fn listing(root: &Path) -> Listing {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let meta = fs::symlink_metadata(&p).unwrap();
            let data = if meta.is_dir() {
                stack.push(p.clone());
                None
            } else if meta.is_symlink() {
                Some(
                    fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else {
                Some(fs::read(&p).unwrap())
            };
            let mode = meta.permissions().mode() & 0o777;
            out.insert(rel, (data, mode, meta.modified().unwrap()));
        }
    }
    out
}

/// A tree of small and chunk-sized files in two levels, with fixed mtimes.
fn sample(src: &Path) -> PathBuf {
    let t = src.join("t");
    fs::create_dir_all(t.join("d/e")).unwrap();
    for (name, len) in [
        ("a", 10),
        ("b", 5000),
        ("d/c", 0),
        ("d/e/f", 70_000),
        ("g", 3),
    ] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + name.len()) as u8).collect();
        fs::write(t.join(name), data).unwrap();
        set_mtime(&t.join(name), 1_600_000_000);
        fs::set_permissions(t.join(name), fs::Permissions::from_mode(0o640)).unwrap();
    }
    for dir in ["d/e", "d", ""] {
        set_mtime(&t.join(dir), 1_600_000_100);
    }
    t
}

fn set_mtime(path: &Path, secs: u64) {
    let at = SystemTime::UNIX_EPOCH + Duration::new(secs, 123_456_789);
    fs::File::open(path).unwrap().set_modified(at).unwrap();
}

/// Sends `tree` into `dest` with `sync`; the report and every entry's report by name.
fn run(
    tree: &Path,
    dest: &Path,
    sync: Option<SyncOptions>,
    lanes: u16,
) -> (SendReport, BTreeMap<String, FileReport>) {
    let send = SendOptions {
        lanes,
        sync,
        ..SendOptions::default()
    };
    let (report, entries, all_received) = transfer(tree, dest, send, |_| {});
    assert!(all_received);
    (report, entries)
}

/// Sends `tree` into `dest` with `send` (small chunks and parts) and a receiver as `recv`
/// leaves it; the report, every entry's report by name, and whether the receiver got every
/// entry verified.
fn transfer(
    tree: &Path,
    dest: &Path,
    send: SendOptions,
    recv: impl FnOnce(&mut ReceiverOptions),
) -> (SendReport, BTreeMap<String, FileReport>, bool) {
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let on_file = {
        let seen = Arc::clone(&seen);
        Arc::new(move |f: &FileReport| {
            seen.lock().unwrap().insert(f.name.clone(), f.clone());
        })
    };
    let send = SendOptions {
        chunk_size: 4096,
        window: 8,
        part_size: 16 << 10,
        on_file: Some(on_file),
        ..send
    };
    let mut options = ReceiverOptions::new("127.0.0.1:0".parse().unwrap(), dest.to_owned());
    options.chunk_size = 4096;
    options.preserve_perms = true;
    recv(&mut options);
    let (report, received) =
        loopback_transfer(vec![tree.to_owned()], dest, send, &options).unwrap();
    assert_eq!(report.error, None, "{report:?}");
    assert_eq!(
        received.counts.deleted, report.counts.deleted,
        "both sides count the same deletions"
    );
    let seen = seen.lock().unwrap().clone();
    (report, seen, received.all_ok())
}

fn quick() -> Option<SyncOptions> {
    Some(SyncOptions::default())
}

fn checksum() -> Option<SyncOptions> {
    Some(SyncOptions {
        checksum: true,
        ..SyncOptions::default()
    })
}

#[test]
fn a_second_sync_moves_nothing_and_a_change_moves_only_itself() {
    for lanes in [1, 2] {
        let base = scratch(&format!("again-{lanes}"));
        let (src, dest) = (base.join("src"), base.join("dest"));
        fs::create_dir_all(&dest).unwrap();
        let t = sample(&src);
        // The first sync sends everything: every file is new.
        let (first, entries) = run(&t, &dest, quick(), lanes);
        assert!(first.all_ok(), "{first:?}");
        assert_eq!(first.counts.sent, 8, "{:?}", first.counts);
        assert!(entries["t/a"].changes.contains(Changes::NEW));
        assert_eq!(listing(&dest.join("t")), listing(&t));
        // Again: nothing moves.
        let (again, entries) = run(&t, &dest, quick(), lanes);
        assert!(again.all_ok(), "{again:?}");
        assert_eq!(again.bytes, 0, "{again:?}");
        assert_eq!(again.counts.up_to_date, 8, "{:?}", again.counts);
        assert_eq!(
            entries["t/d/e/f"].outcome,
            FileOutcome::InSync(Changes::empty()),
            "a file split into parts is in sync as a whole"
        );
        // One file grows: only its bytes move.
        fs::write(t.join("b"), vec![9u8; 6000]).unwrap();
        set_mtime(&t.join("b"), 1_600_000_000);
        set_mtime(&t, 1_600_000_100);
        let (third, entries) = run(&t, &dest, quick(), lanes);
        assert_eq!(third.bytes, 6000, "{third:?}");
        assert_eq!(entries["t/b"].outcome, FileOutcome::Sent);
        assert!(entries["t/b"].changes.contains(Changes::SIZE));
        // Its directory's mtime changed at the receiver when b was replaced: set again.
        assert_eq!(entries["t"].outcome, FileOutcome::Sent);
        assert_eq!(entries["t"].changes, Changes::MTIME);
        assert_eq!(third.counts.sent, 2, "{:?}", third.counts);
        assert_eq!(listing(&dest.join("t")), listing(&t));
        fs::remove_dir_all(&base).unwrap();
    }
}

#[test]
fn a_mode_change_moves_no_data() {
    let base = scratch("mode");
    let (src, dest) = (base.join("src"), base.join("dest"));
    fs::create_dir_all(&dest).unwrap();
    let t = sample(&src);
    run(&t, &dest, None, 1);
    fs::set_permissions(t.join("d/c"), fs::Permissions::from_mode(0o600)).unwrap();
    let (report, entries) = run(&t, &dest, quick(), 1);
    assert_eq!(report.bytes, 0, "{report:?}");
    assert_eq!(entries["t/d/c"].outcome, FileOutcome::InSync(Changes::MODE));
    assert_eq!(
        fs::metadata(dest.join("t/d/c"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(listing(&dest.join("t")), listing(&t));
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn quick_trusts_size_and_mtime_and_checksum_reads_the_content() {
    let base = scratch("content");
    let (src, dest) = (base.join("src"), base.join("dest"));
    fs::create_dir_all(&dest).unwrap();
    let t = sample(&src);
    run(&t, &dest, None, 1);
    // Same size, same mtime, other bytes: the quick check cannot see it (as rsync's).
    fs::write(t.join("a"), b"0123456789").unwrap();
    set_mtime(&t.join("a"), 1_600_000_000);
    set_mtime(&t, 1_600_000_100);
    let (report, entries) = run(&t, &dest, quick(), 1);
    assert_eq!(report.bytes, 0);
    assert_eq!(
        entries["t/a"].outcome,
        FileOutcome::InSync(Changes::empty())
    );
    // By content: only that file moves.
    let (report, entries) = run(&t, &dest, checksum(), 2);
    assert_eq!(report.bytes, 10, "{report:?}");
    assert_eq!(entries["t/a"].outcome, FileOutcome::Sent);
    assert!(entries["t/a"].changes.contains(Changes::CONTENT));
    assert_eq!(report.counts.up_to_date, 6, "{:?}", report.counts);
    assert_eq!(
        entries["t"].changes,
        Changes::MTIME,
        "a's directory changed"
    );
    assert_eq!(fs::read(dest.join("t/a")).unwrap(), b"0123456789");
    // A touched file whose content is the same: by content, only its mtime is updated.
    set_mtime(&t.join("g"), 1_700_000_000);
    set_mtime(&t, 1_600_000_100);
    let (report, entries) = run(&t, &dest, checksum(), 1);
    assert_eq!(report.bytes, 0, "{report:?}");
    assert_eq!(entries["t/g"].outcome, FileOutcome::InSync(Changes::MTIME));
    assert_eq!(listing(&dest.join("t")), listing(&t));
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_dry_run_changes_nothing_and_says_what_it_would_do() {
    let base = scratch("dry");
    let (src, dest) = (base.join("src"), base.join("dest"));
    fs::create_dir_all(&dest).unwrap();
    let t = sample(&src);
    run(&t, &dest, None, 1);
    fs::write(t.join("new"), b"fresh").unwrap();
    fs::write(t.join("b"), vec![1u8; 10]).unwrap();
    fs::set_permissions(t.join("g"), fs::Permissions::from_mode(0o600)).unwrap();
    let before = listing(&dest);
    let dry = Some(SyncOptions {
        dry_run: true,
        ..SyncOptions::default()
    });
    let (report, entries) = run(&t, &dest, dry, 1);
    assert!(report.all_ok(), "{report:?}");
    assert_eq!(report.bytes, 0);
    assert_eq!(listing(&dest), before, "a dry run changes nothing");
    assert_eq!(
        entries["t/new"].outcome,
        FileOutcome::WouldSend(Changes::NEW)
    );
    assert!(
        matches!(entries["t/b"].outcome, FileOutcome::WouldSend(c) if c.contains(Changes::SIZE))
    );
    assert_eq!(
        entries["t/g"].outcome,
        FileOutcome::InSync(Changes::MODE),
        "its mode would be updated"
    );
    assert_eq!(
        report.counts.would_send, 2,
        "new and b: {:?}",
        report.counts
    );
    // A dry run into a directory that is not there creates nothing either.
    let empty = base.join("empty");
    fs::create_dir_all(&empty).unwrap();
    let (report, _) = run(&t, &empty, dry, 1);
    assert_eq!(report.counts.would_send, 9, "{:?}", report.counts);
    assert!(listing(&empty).is_empty());
    fs::remove_dir_all(&base).unwrap();
}

fn deleting(dry_run: bool) -> Option<SyncOptions> {
    Some(SyncOptions {
        delete: true,
        dry_run,
        ..SyncOptions::default()
    })
}

#[test]
// spec-test: [sync.delete-scope]
fn delete_removes_what_the_source_no_longer_has_and_nothing_else() {
    for lanes in [1, 2] {
        let base = scratch(&format!("delete-{lanes}"));
        let (src, dest) = (base.join("src"), base.join("dest"));
        fs::create_dir_all(&dest).unwrap();
        let t = sample(&src);
        run(&t, &dest, None, 1);
        // The source loses a file and a directory and renames another.
        fs::remove_file(t.join("g")).unwrap();
        fs::rename(t.join("d/e"), t.join("d/renamed")).unwrap();
        fs::create_dir_all(t.join("gone/deeper")).unwrap();
        run(&t, &dest, None, 1);
        fs::remove_dir_all(t.join("gone")).unwrap();
        // The receiver has things of its own in the tree, and beside it.
        fs::write(dest.join("t/d/extra"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", dest.join("t/link")).unwrap();
        fs::write(dest.join("t/.rdmaft-partial-0123456789abcdef"), b"kept").unwrap();
        fs::write(dest.join("outside"), b"not sent, not touched").unwrap();
        let stale = listing(&dest);
        // And the source a new directory.
        fs::create_dir(t.join("fresh")).unwrap();
        set_mtime(&t.join("fresh"), 1_600_000_100);
        set_mtime(&t, 1_600_000_100);
        // A dry run counts and changes nothing: g, d/e with f, gone with deeper, extra,
        // link.
        let (dry, entries) = run(&t, &dest, deleting(true), lanes);
        assert_eq!(dry.counts.deleted, 7, "{:?}", dry.counts);
        assert_eq!(listing(&dest), stale, "a dry run deletes nothing");
        // Its directories: one it would make, one it would give its mtime, one as it is.
        let outcome =
            |entries: &BTreeMap<String, FileReport>, name: &str| entries[name].outcome.clone();
        assert_eq!(
            outcome(&entries, "t/fresh"),
            FileOutcome::WouldSend(Changes::NEW)
        );
        assert_eq!(outcome(&entries, "t"), FileOutcome::InSync(Changes::MTIME));
        let in_sync = FileOutcome::InSync(Changes::empty());
        assert_eq!(outcome(&entries, "t/d/renamed"), in_sync);
        let (report, entries) = run(&t, &dest, deleting(false), lanes);
        assert!(report.all_ok(), "{report:?}");
        assert_eq!(outcome(&entries, "t/fresh"), FileOutcome::Sent);
        assert_eq!(outcome(&entries, "t"), FileOutcome::Sent);
        assert_eq!(outcome(&entries, "t/d/renamed"), in_sync);
        assert_eq!(report.counts.deleted, 7, "{:?}", report.counts);
        assert_eq!(entries["t"].deleted, 4, "g, gone, gone/deeper, link");
        assert_eq!(entries["t/d"].deleted, 3, "e, e/f, extra");
        let want = listing(&t);
        let mut got = listing(&dest.join("t"));
        assert_eq!(
            got.remove(".rdmaft-partial-0123456789abcdef").map(|e| e.0),
            Some(Some(b"kept".to_vec())),
            "the receiver's own partial file stays"
        );
        // Directory mtimes too: set again after the deletes.
        assert_eq!(got, want);
        assert_eq!(
            fs::read(dest.join("outside")).unwrap(),
            b"not sent, not touched"
        );
        assert!(
            fs::symlink_metadata("/etc").unwrap().is_dir(),
            "the link's target stays"
        );
        fs::remove_dir_all(&base).unwrap();
    }
}

#[test]
// spec-test: [sync.delete-whole]
fn a_directory_whose_walk_failed_keeps_what_the_receiver_has() {
    use std::os::unix::ffi::OsStrExt;
    let base = scratch("walk-error");
    let (src, dest) = (base.join("src"), base.join("dest"));
    fs::create_dir_all(&dest).unwrap();
    let t = sample(&src);
    run(&t, &dest, None, 1);
    fs::write(dest.join("t/d/extra"), b"x").unwrap();
    fs::write(dest.join("t/e-extra"), b"x").unwrap();
    // A name that cannot be sent (not UTF-8): d's walk is not complete.
    let bad = std::ffi::OsStr::from_bytes(b"bad-\xff");
    fs::write(t.join("d").join(bad), b"?").unwrap();
    let (report, _) = run(&t, &dest, deleting(false), 1);
    assert_eq!(report.counts.skipped, 1, "{:?}", report.counts);
    assert!(
        dest.join("t/d/extra").exists(),
        "not pruned after an error in d"
    );
    assert!(
        !dest.join("t/e-extra").exists(),
        "t itself was walked whole"
    );
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_receiver_may_refuse_deletes_and_the_sender_says_so() {
    let base = scratch("no-delete");
    let (src, dest) = (base.join("src"), base.join("dest"));
    fs::create_dir_all(&dest).unwrap();
    let t = sample(&src);
    run(&t, &dest, None, 1);
    fs::write(dest.join("t/extra"), b"x").unwrap();
    // Over two lanes: the receiver's refusal is told once.
    let send = SendOptions {
        sync: deleting(false),
        lanes: 2,
        ..SendOptions::default()
    };
    let mut recv = ReceiverOptions::new("127.0.0.1:0".parse().unwrap(), dest.clone());
    recv.delete = false;
    let (report, received) = loopback_transfer(vec![t.clone()], &dest, send, &recv).unwrap();
    assert!(received.all_ok(), "{received:?}");
    assert_eq!(report.error, None);
    assert_eq!(report.counts.deleted, 0);
    assert_eq!(
        report.warnings.len(),
        1,
        "one warning, from the first lane: {:?}",
        report.warnings
    );
    assert!(
        report.warnings[0].contains("refuses deletes"),
        "{:?}",
        report.warnings
    );
    assert!(dest.join("t/extra").exists());
    fs::remove_dir_all(&base).unwrap();
}

#[test]
// spec-test: [sync.delete-whole]
fn delete_with_a_shard_is_refused() {
    let base = scratch("shard");
    let send = SendOptions {
        sync: deleting(false),
        shard: Some("0/2".parse().unwrap()),
        ..SendOptions::default()
    };
    let recv = ReceiverOptions::new("127.0.0.1:0".parse().unwrap(), base.clone());
    let err = loopback_transfer(vec![base.clone()], &base, send, &recv);
    assert!(err.is_err(), "{err:?}");
    fs::remove_dir_all(&base).unwrap();
}

#[test]
// spec-test: [sync.delete-whole]
fn excluded_entries_are_not_sent_and_their_copies_are_not_deleted() {
    let base = scratch("exclude");
    let (src, dest) = (base.join("src"), base.join("dest"));
    fs::create_dir_all(&dest).unwrap();
    let t = sample(&src);
    fs::write(t.join("d/scratch.tmp"), b"tmp").unwrap();
    fs::create_dir_all(t.join("build/obj")).unwrap();
    fs::write(t.join("build/obj/x.o"), b"o").unwrap();
    // Those writes made `t` and `t/d` "now", which the receiver's copies also are while
    // files are published into them: give the source its sample times back.
    for dir in ["d", ""] {
        set_mtime(&t.join(dir), 1_600_000_100);
    }
    // The receiver has an excluded name already, and something the source lost.
    fs::create_dir_all(dest.join("t/d")).unwrap();
    fs::write(dest.join("t/d/old.tmp"), b"keep me").unwrap();
    fs::create_dir_all(dest.join("t/d/e")).unwrap();
    fs::write(dest.join("t/d/e/gone"), b"delete me").unwrap();
    // Made within the same clock tick as the source's, the receiver's directories could have
    // their mtimes to the nanosecond and count as in sync: make them older.
    for dir in ["t", "t/d", "t/d/e"] {
        set_mtime(&dest.join(dir), 1_000_000_000);
    }
    let send = SendOptions {
        exclude: vec!["*.tmp".into(), "build/".into()],
        sync: deleting(false),
        ..SendOptions::default()
    };
    let recv = ReceiverOptions::new("127.0.0.1:0".parse().unwrap(), dest.clone());
    let (report, _) = loopback_transfer(vec![t.clone()], &dest, send, &recv).unwrap();
    assert!(report.all_ok(), "{report:?}");
    assert_eq!(
        report.counts.sent, 8,
        "the sample and nothing excluded: {report:?}"
    );
    assert!(!dest.join("t/d/scratch.tmp").exists() && !dest.join("t/build").exists());
    assert_eq!(fs::read(dest.join("t/d/old.tmp")).unwrap(), b"keep me");
    assert!(
        !dest.join("t/d/e/gone").exists(),
        "e had nothing left out: pruned"
    );
    // A pattern that cannot parse is refused before anything moves.
    let bad = SendOptions {
        exclude: vec!["a[".into()],
        ..SendOptions::default()
    };
    assert!(loopback_transfer(vec![t.clone()], &dest, bad, &recv).is_err());
    // A content check without a digest to compare is refused too.
    let no_digest = SendOptions {
        sync: checksum(),
        digest: rdmaft::protocol::DigestKind::None,
        ..SendOptions::default()
    };
    assert!(loopback_transfer(vec![t], &dest, no_digest, &recv).is_err());
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn files_from_sends_the_names_listed_under_their_own_names() {
    let base = scratch("files-from");
    let (src, dest) = (base.join("src"), base.join("dest"));
    fs::create_dir_all(&dest).unwrap();
    let t = sample(&src);
    // As `find . -newer X` might print them: a directory, files in it and elsewhere.
    let names = ["./d", "./d/e/f", "a", "d/c", "nothere"];
    let send = SendOptions {
        files_from: Some(names.iter().map(|s| s.to_string()).collect()),
        ..SendOptions::default()
    };
    let recv = ReceiverOptions::new("127.0.0.1:0".parse().unwrap(), dest.clone());
    let (report, _) = loopback_transfer(vec![t.clone()], &dest, send, &recv).unwrap();
    assert_eq!(report.counts.sent, 4, "{report:?}");
    assert_eq!(
        report.counts.skipped, 1,
        "the name that is not there: {report:?}"
    );
    let got = listing(&dest);
    let names: Vec<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(names, ["a", "d", "d/c", "d/e", "d/e/f"]);
    assert_eq!(got["d/e/f"].0, listing(&t)["d/e/f"].0);
    // The listed directory got its mode and mtime after what was listed inside it.
    assert_eq!(got["d"].2, listing(&t)["d"].2);
    fs::remove_dir_all(&base).unwrap();
}

/// A symbolic link at `path` to `target`, with mtime `secs` (its own, not its target's,
/// which `touch -h` sets).
fn link(target: &str, path: &Path, secs: i64) {
    let _ = fs::remove_file(path);
    std::os::unix::fs::symlink(target, path).unwrap();
    let status = std::process::Command::new("touch")
        .args(["-h", "-d", &format!("@{secs}.000000005")])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

fn with_links(sync: Option<SyncOptions>) -> SendOptions {
    SendOptions {
        links: true,
        sync,
        ..SendOptions::default()
    }
}

#[test]
fn links_go_as_links_and_stay_in_sync() {
    let base = scratch("links");
    let (src, dest) = (base.join("src"), base.join("dest"));
    fs::create_dir_all(&dest).unwrap();
    let t = sample(&src);
    link("a", &t.join("rel"), 1_600_000_050);
    link("../g", &t.join("d/up"), 1_600_000_051);
    link("nowhere", &t.join("dangling"), 1_600_000_052);
    link("d", &t.join("dirlink"), 1_600_000_053);
    for dir in ["d", ""] {
        set_mtime(&t.join(dir), 1_600_000_100);
    }
    // Without --links they are named, not sent, and no failure.
    let (report, _, _) = transfer(&t, &dest, SendOptions::default(), |_| {});
    assert!(report.all_ok(), "{report:?}");
    assert_eq!(report.counts.ignored, 4, "{:?}", report.counts);
    assert!(fs::symlink_metadata(dest.join("t/rel")).is_err());
    // With --links: each arrives as a link to the same target, with its own mtime.
    let (report, entries, all) = transfer(&t, &dest, with_links(quick()), |_| {});
    assert!(report.all_ok() && all, "{report:?}");
    assert_eq!(entries["t/d/up"].outcome, FileOutcome::Sent);
    assert_eq!(entries["t/d/up"].changes, Changes::NEW);
    assert_eq!(listing(&dest.join("t")), listing(&t));
    // Again: in sync, nothing moves.
    let (again, entries, _) = transfer(&t, &dest, with_links(quick()), |_| {});
    assert_eq!(again.bytes, 0, "{again:?}");
    assert_eq!(
        entries["t/rel"].outcome,
        FileOutcome::InSync(Changes::empty())
    );
    assert_eq!(again.counts.up_to_date, 12, "{:?}", again.counts);
    // A link retargeted is replaced, one touched only gets its mtime, one removed is
    // deleted.
    link("b", &t.join("rel"), 1_600_000_050);
    link("nowhere", &t.join("dangling"), 1_600_000_099);
    fs::remove_file(t.join("dirlink")).unwrap();
    set_mtime(&t, 1_600_000_100);
    let sync = deleting(false);
    let (third, entries, all) = transfer(&t, &dest, with_links(sync), |_| {});
    assert!(third.all_ok() && all, "{third:?}");
    assert_eq!(entries["t/rel"].outcome, FileOutcome::Sent);
    assert_eq!(entries["t/rel"].changes, Changes::CONTENT);
    assert_eq!(
        entries["t/dangling"].outcome,
        FileOutcome::InSync(Changes::MTIME)
    );
    assert_eq!(entries["t"].deleted, 1);
    assert_eq!(listing(&dest.join("t")), listing(&t));
    fs::remove_dir_all(&base).unwrap();
}

#[test]
// spec-test: [link.unsafe]
fn unsafe_links_are_refused_unless_the_receiver_allows_them() {
    let base = scratch("unsafe-links");
    let (src, dest) = (base.join("src"), base.join("dest"));
    fs::create_dir_all(&dest).unwrap();
    let t = src.join("t");
    fs::create_dir_all(t.join("d")).unwrap();
    link("/etc/passwd", &t.join("abs"), 1_600_000_000);
    // t/d/out: two levels down, three up.
    link("../../../outside", &t.join("d/out"), 1_600_000_000);
    // Two up from t/d is the destination itself: safe.
    link("../../t/abs", &t.join("d/in"), 1_600_000_000);
    let (report, entries, all) = transfer(&t, &dest, with_links(None), |_| {});
    assert!(!report.all_ok() && !all, "{report:?}");
    let unsafe_link = FileOutcome::Rejected(rdmaft::protocol::FileRejectReason::UNSAFE_LINK);
    assert_eq!(entries["t/abs"].outcome, unsafe_link);
    assert_eq!(entries["t/d/out"].outcome, unsafe_link);
    assert_eq!(entries["t/d/in"].outcome, FileOutcome::Sent);
    assert!(fs::symlink_metadata(dest.join("t/abs")).is_err());
    assert!(fs::symlink_metadata(dest.join("t/d/out")).is_err());
    // A receiver that takes no links: they are skipped, with a warning, and no failure.
    let two_lanes = SendOptions {
        lanes: 2,
        ..with_links(None)
    };
    let (report, entries, all) = transfer(&t, &dest, two_lanes, |r| r.links = false);
    assert!(report.all_ok() && all, "{report:?}");
    assert_eq!(report.counts.ignored, 3, "{:?}", report.counts);
    assert!(
        matches!(&entries["t/abs"].outcome, FileOutcome::Ignored(why) if why.contains("links")),
        "{:?}",
        entries["t/abs"]
    );
    assert_eq!(report.warnings.len(), 1, "told once: {:?}", report.warnings);
    assert!(
        report.warnings[0].contains("symbolic links"),
        "{:?}",
        report.warnings
    );
    assert!(fs::symlink_metadata(dest.join("t/abs")).is_err());
    // Allowed: made as sent, and still never followed by the receiver.
    let (report, _, all) = transfer(&t, &dest, with_links(None), |r| r.allow_unsafe_links = true);
    assert!(report.all_ok() && all, "{report:?}");
    assert_eq!(
        fs::read_link(dest.join("t/abs")).unwrap().as_os_str(),
        "/etc/passwd"
    );
    assert_eq!(
        fs::read_link(dest.join("t/d/out")).unwrap().as_os_str(),
        "../../../outside"
    );
    fs::remove_dir_all(&base).unwrap();
}

/// `--checksum` of a lone file (no directory for the walk's end to wait for): it is
/// offered once its digest is in, and found in sync the second time.
#[test]
fn checksum_of_a_lone_file_waits_for_its_digest() {
    let base = scratch("checksum-lone");
    let (src, dest) = (base.join("src"), base.join("dest"));
    fs::create_dir_all(&dest).unwrap();
    let t = sample(&src);
    let (report, entries) = run(&t.join("b"), &dest, checksum(), 1);
    assert_eq!(entries["b"].outcome, FileOutcome::Sent, "{report:?}");
    assert_eq!(report.bytes, 5000);
    let (report, entries) = run(&t.join("b"), &dest, checksum(), 1);
    assert_eq!(
        entries["b"].outcome,
        FileOutcome::InSync(Changes::empty()),
        "{report:?}"
    );
    assert_eq!(
        fs::read(dest.join("b")).unwrap(),
        fs::read(t.join("b")).unwrap()
    );
    fs::remove_dir_all(&base).unwrap();
}
