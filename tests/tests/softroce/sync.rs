//! Sync over a real device, with rsync as the oracle: after `--sync --delete` (and, for
//! edits that keep size and mtime, `--checksum`), `rsync -rtp --delete --dry-run
//! --itemize-changes` between the two trees must find nothing left to do; with `--links`,
//! `rsync -rtpl` (links as links, their own mtimes included).

use super::{env, receiver, T};
use rdmaft::{send, SendOptions, SendReport, SyncOptions};
use rdmaft_tests::{random_bytes, scratch, symlink_with_mtime as link};
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// What rsync would still change to make `dest` a copy of `src` (its itemized lines; empty
/// when nothing), comparing content too with `checksum`.
fn rsync_left(src: &Path, dest: &Path, checksum: bool) -> String {
    rsync_left_as(src, dest, if checksum { &["--checksum"] } else { &[] })
}

/// As [`rsync_left`], with more rsync options.
fn rsync_left_as(src: &Path, dest: &Path, more: &[&str]) -> String {
    let mut cmd = Command::new("rsync");
    cmd.args(["-rtp", "--delete", "--dry-run", "--itemize-changes"]);
    cmd.args(more);
    let out = cmd
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", dest.display()))
        .output()
        .unwrap_or_else(|e| panic!("rsync, the oracle of these tests: {e}"));
    assert!(
        out.status.success(),
        "rsync failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without -l rsync names each link it skips: a notice, not a change.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("skipping non-regular file"))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn sync(to: SocketAddr, src: &Path, checksum: bool) -> SendReport {
    sync_with(to, src, checksum, false)
}

/// `send --sync --delete [--checksum] [--links]`.
fn sync_with(to: SocketAddr, src: &Path, checksum: bool, links: bool) -> SendReport {
    let options = SendOptions {
        sync: Some(SyncOptions {
            checksum,
            delete: true,
            dry_run: false,
        }),
        links,
        ..SendOptions::default()
    };
    let report = send(to, vec![src.to_owned()], options)
        .unwrap()
        .wait()
        .unwrap();
    assert!(report.all_ok(), "{report:?}");
    report
}

fn set_mtime(path: &Path, secs: u64) {
    let at = SystemTime::UNIX_EPOCH + Duration::new(secs, 987_654_321);
    fs::File::open(path).unwrap().set_modified(at).unwrap();
}

fn write(path: &Path, len: usize, seed: u64) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, random_bytes(len, seed)).unwrap();
}

#[test]
fn after_a_sync_rsync_finds_nothing_left_to_do() {
    let env = env();
    let base = scratch("sync-oracle");
    let src = base.join("src/tree");
    let dest = base.join("dest");
    fs::create_dir_all(&dest).unwrap();
    // 60 files of up to 300 KB in nested directories, one empty directory, varied modes.
    let mut files = Vec::new();
    for i in 0..60usize {
        let dir = ["", "a", "a/b", "c", "c/d/e"][i % 5];
        let p = src.join(dir).join(format!("f{i}"));
        write(&p, (i * 5021) % 300_000, i as u64);
        let mode = if i % 7 == 0 { 0o600 } else { 0o644 };
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        files.push(p);
    }
    fs::create_dir_all(src.join("empty")).unwrap();
    let r = receiver(&env, &dest, |o| o.preserve_perms = true);
    let to = r.receiver.local_addr();
    let copy = dest.join("tree");

    let first = sync(to, &src, false);
    assert_eq!(first.counts.sent, 60 + 7, "60 files, 7 directories");
    assert_eq!(rsync_left(&src, &copy, true), "", "the first sync");
    // Nothing changed: nothing moves.
    let again = sync(to, &src, false);
    assert_eq!((again.bytes, again.counts.up_to_date), (0, 67), "{again:?}");

    // Changes of every kind rsync tells apart.
    let size_of = |p: &PathBuf| fs::metadata(p).unwrap().len();
    write(&src.join("new-file"), 4321, 99); // new
                                            // (File i is in directory ["", "a", "a/b", "c", "c/d/e"][i % 5].)
    let grown = &files[5];
    write(grown, 7777, 98); // another size
    let touched = &files[10];
    set_mtime(touched, 1_700_000_000); // another mtime, same content
    fs::set_permissions(&files[15], fs::Permissions::from_mode(0o640)).unwrap(); // mode
    fs::remove_file(&files[6]).unwrap(); // removed
    fs::remove_dir_all(src.join("c/d")).unwrap(); // a directory removed
    fs::rename(src.join("a/b"), src.join("a/renamed")).unwrap(); // a directory renamed
                                                                 // Same size, same mtime, other bytes: only a content check sees it.
    let sneaky = &files[8];
    let mtime = fs::metadata(sneaky).unwrap().modified().unwrap();
    write(sneaky, size_of(sneaky) as usize, 97);
    fs::File::open(sneaky).unwrap().set_modified(mtime).unwrap();
    let moved_dir: u64 = fs::read_dir(src.join("a/renamed"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let expected_bytes = 4321 + 7777 + size_of(touched) + moved_dir;
    let removed_dir_entries = fs::read_dir(copy.join("c/d"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);

    let second = sync(to, &src, false);
    assert_eq!(rsync_left(&src, &copy, false), "", "after --sync --delete");
    assert_eq!(second.bytes, expected_bytes, "{second:?}");
    // f6, c/d with what it held (e and its files), a/b and its 12 files.
    assert_eq!(
        second.counts.deleted,
        1 + (1 + removed_dir_entries + 12) + (1 + 12),
        "{:?}",
        second.counts
    );
    // The quick check trusts size and mtime, as rsync's does; by content both see it.
    assert_ne!(rsync_left(&src, &copy, true), "", "rsync -c sees the edit");
    let third = sync(to, &src, true);
    assert_eq!(third.bytes, size_of(sneaky), "{third:?}");
    assert_eq!(rsync_left(&src, &copy, true), "", "after --checksum");
    r.receiver.stop();
    let conn = r.connections.recv_timeout(T).expect("a connection ended");
    assert!(conn.all_ok(), "{conn:?}");
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn links_sync_as_rsync_l_carries_them() {
    let env = env();
    let base = scratch("sync-links");
    let src = base.join("src/tree");
    let dest = base.join("dest");
    fs::create_dir_all(&dest).unwrap();
    for i in 0..6u64 {
        write(
            &src.join(["", "a", "a/b"][i as usize % 3])
                .join(format!("f{i}")),
            1000,
            i,
        );
    }
    link("f0", &src.join("to-file"), 1_600_000_001);
    link("../f0", &src.join("a/up"), 1_600_000_002);
    link("b", &src.join("a/to-dir"), 1_600_000_003);
    link("nowhere", &src.join("a/b/dangling"), 1_600_000_004);
    let r = receiver(&env, &dest, |o| o.preserve_perms = true);
    let to = r.receiver.local_addr();
    let copy = dest.join("tree");

    let first = sync_with(to, &src, false, true);
    assert_eq!(
        first.counts.sent,
        6 + 4 + 3,
        "6 files, 4 links, 3 directories"
    );
    assert_eq!(rsync_left_as(&src, &copy, &["-l"]), "", "the first sync");
    let again = sync_with(to, &src, false, true);
    assert_eq!((again.bytes, again.counts.up_to_date), (0, 13), "{again:?}");

    // A link retargeted, one touched, one removed, one new.
    link("f1", &src.join("to-file"), 1_600_000_001);
    link("b", &src.join("a/to-dir"), 1_700_000_000);
    fs::remove_file(src.join("a/b/dangling")).unwrap();
    link("../../f0", &src.join("a/b/new"), 1_600_000_005);
    assert_ne!(rsync_left_as(&src, &copy, &["-l"]), "");
    let second = sync_with(to, &src, false, true);
    assert_eq!(second.bytes, 0, "links move no data: {second:?}");
    assert_eq!(second.counts.deleted, 1, "{:?}", second.counts);
    assert_eq!(rsync_left_as(&src, &copy, &["-l"]), "", "after the changes");
    // Without --links a sync skips them, and its --delete removes the copies (as rsync -r
    // without -l does).
    let plain = sync_with(to, &src, false, false);
    assert_eq!(plain.counts.ignored, 4, "{:?}", plain.counts);
    assert_eq!(
        rsync_left(&src, &copy, false),
        "",
        "rsync -r skips links too"
    );
    assert!(fs::symlink_metadata(copy.join("to-file")).is_err());
    r.receiver.stop();
    let conn = r.connections.recv_timeout(T).expect("a connection ended");
    assert!(conn.all_ok(), "{conn:?}");
    fs::remove_dir_all(&base).unwrap();
}
