//! Tests written for requirements of PROTOCOL.md (its `**Requirements:**` lists) that no
//! other test covered directly: each names the requirement it checks.

use rdmaft::fs::dest::{DestOptions, Destination, Existing};
use rdmaft::fs::temp_name_of;
use std::fs;
use std::io::Write;

/// [name.exclusive]: the receiver creates its files exclusively. Its temporary files never
/// open a file that is there already (here: someone's files under the very names this
/// process would give its next temporary files), and with no-clobber the second of two
/// files for one path (as two names a case-insensitive file system maps to one path are)
/// fails instead of replacing the first.
#[test]
// spec-test: [name.exclusive]
fn files_are_created_exclusively() {
    let pid = std::process::id();
    let d = std::env::temp_dir().join(format!("rdmaft-spec-entries-{pid}"));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    // This is the only test of this binary that makes temporary files: its process starts
    // them at 0.
    let planted: Vec<String> = (0..64).map(|n| temp_name_of(pid, n)).collect();
    for p in &planted {
        fs::write(d.join(p), p.as_bytes()).unwrap();
    }
    let options = DestOptions {
        existing: Existing::Keep,
        unnamed_temp_files: false,
        ..DestOptions::default()
    };
    let dest = Destination::open(&d, options).unwrap();
    let mut first = dest.begin_file("f", 5, 0o644).unwrap();
    let mut second = dest.begin_file("f", 6, 0o644).unwrap();
    first.file.write_all(b"first").unwrap();
    second.file.write_all(b"second").unwrap();
    dest.publish(first, 0o644, (0, 0)).unwrap();
    let err = dest.publish(second, 0o644, (0, 0)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists, "{err}");
    assert_eq!(fs::read(d.join("f")).unwrap(), b"first");
    for p in &planted {
        assert_eq!(fs::read(d.join(p)).unwrap(), p.as_bytes(), "{p} untouched");
    }
    assert_eq!(fs::read_dir(&d).unwrap().count(), planted.len() + 1);
    fs::remove_dir_all(&d).unwrap();
}
