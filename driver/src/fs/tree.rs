//! The sender's view of what to send: files and directory trees, as `scp -r` sends them
//! (each under its base name), walked in a fixed order.
//!
//! Regular files come first, in depth-first order with each directory's entries sorted by
//! name; the directories follow at the end, deepest first, so that each directory's entry
//! (its mode and mtime) arrives after everything in it. Symbolic links and special files
//! inside a tree are neither followed nor sent: each is reported as skipped. (A path given
//! on the command line is followed if it is a link: that is what the user named.)

use rdmaft_protocol::{validate_name, EntryKind};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// An entry to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceEntry {
    /// Where it is on this host.
    pub path: PathBuf,
    /// Its name on the wire (relative, `/`-separated).
    pub name: String,
    /// File or directory.
    pub kind: EntryKind,
    /// Size in bytes (0 for a directory).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time.
    pub mtime_sec: i64,
    /// Nanoseconds of the modification time.
    pub mtime_nsec: u32,
}

/// Why an entry is not sent.
#[derive(Debug)]
pub enum SkipReason {
    /// A symbolic link inside a tree.
    Symlink,
    /// A device, FIFO or socket.
    Special,
    /// Its metadata or directory listing could not be read.
    Unreadable(io::Error),
    /// Its name cannot go on the wire (not UTF-8, a control character, too long, ...).
    BadName(String),
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Symlink => f.write_str("symbolic link (not followed)"),
            SkipReason::Special => f.write_str("special file (device, FIFO or socket)"),
            SkipReason::Unreadable(e) => write!(f, "unreadable: {e}"),
            SkipReason::BadName(why) => write!(f, "name cannot be sent: {why}"),
        }
    }
}

/// One step of the walk.
#[derive(Debug)]
pub enum WalkItem {
    /// Send this.
    Entry(SourceEntry),
    /// This is not sent.
    Skipped {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: SkipReason,
    },
}

/// A directory being listed: its wire name and its remaining children, sorted.
struct Listing {
    name: String,
    children: std::vec::IntoIter<PathBuf>,
}

/// The walk over the paths to send (an iterator of [`WalkItem`]s).
#[allow(missing_debug_implementations)]
pub struct Walk {
    roots: std::vec::IntoIter<PathBuf>,
    stack: Vec<Listing>,
    /// Directories found so far, in discovery order (parents before children).
    dirs: Vec<SourceEntry>,
    /// Directories being handed out at the end, deepest first.
    dirs_out: Option<std::vec::IntoIter<SourceEntry>>,
}

impl Walk {
    /// A walk over `roots`, each sent under its base name.
    pub fn new(roots: Vec<PathBuf>) -> Walk {
        Walk {
            roots: roots.into_iter(),
            stack: Vec::new(),
            dirs: Vec::new(),
            dirs_out: None,
        }
    }

    fn visit(&mut self, path: PathBuf, name: String, meta: Metadata) -> Option<WalkItem> {
        if let Err(e) = validate_name(name.as_bytes()) {
            return Some(skipped(path, SkipReason::BadName(e.to_string())));
        }
        let ft = meta.file_type();
        if ft.is_symlink() {
            return Some(skipped(path, SkipReason::Symlink));
        }
        if ft.is_block_device() || ft.is_char_device() || ft.is_fifo() || ft.is_socket() {
            return Some(skipped(path, SkipReason::Special));
        }
        let entry = SourceEntry {
            path: path.clone(),
            name: name.clone(),
            kind: if ft.is_dir() {
                EntryKind::Directory
            } else {
                EntryKind::File
            },
            size: if ft.is_dir() { 0 } else { meta.len() },
            mode: meta.mode() & 0o777,
            mtime_sec: meta.mtime(),
            mtime_nsec: u32::try_from(meta.mtime_nsec())
                .unwrap_or(0)
                .min(999_999_999),
        };
        if !ft.is_dir() {
            return Some(WalkItem::Entry(entry));
        }
        match sorted_children(&path) {
            Ok(children) => {
                self.dirs.push(entry);
                self.stack.push(Listing {
                    name,
                    children: children.into_iter(),
                });
                None
            }
            Err(e) => Some(skipped(path, SkipReason::Unreadable(e))),
        }
    }
}

fn skipped(path: PathBuf, reason: SkipReason) -> WalkItem {
    WalkItem::Skipped { path, reason }
}

fn sorted_children(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut children = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<Vec<_>>>()?;
    children.sort();
    Ok(children)
}

/// The name a root path is sent under: its last component (`.` and `..` resolved).
fn root_name(path: &Path) -> Result<String, SkipReason> {
    let base = match path.file_name() {
        Some(n) => n.to_owned(),
        None => fs::canonicalize(path)
            .map_err(SkipReason::Unreadable)?
            .file_name()
            .ok_or_else(|| SkipReason::BadName("the root directory has no name".into()))?
            .to_owned(),
    };
    base.into_string()
        .map_err(|_| SkipReason::BadName("not UTF-8".into()))
}

impl Iterator for Walk {
    type Item = WalkItem;

    fn next(&mut self) -> Option<WalkItem> {
        loop {
            if let Some(out) = &mut self.dirs_out {
                return out.next().map(WalkItem::Entry);
            }
            if let Some(top) = self.stack.last_mut() {
                let Some(child) = top.children.next() else {
                    self.stack.pop();
                    continue;
                };
                let parent = top.name.clone();
                let component = match child.file_name().map(|n| n.to_str()) {
                    Some(Some(c)) => c.to_owned(),
                    _ => return Some(skipped(child, SkipReason::BadName("not UTF-8".into()))),
                };
                let meta = match fs::symlink_metadata(&child) {
                    Ok(m) => m,
                    Err(e) => return Some(skipped(child, SkipReason::Unreadable(e))),
                };
                if let Some(item) = self.visit(child, format!("{parent}/{component}"), meta) {
                    return Some(item);
                }
                continue;
            }
            if let Some(root) = self.roots.next() {
                let name = match root_name(&root) {
                    Ok(n) => n,
                    Err(reason) => return Some(skipped(root, reason)),
                };
                // A path named by the user is followed if it is a link (as `scp` does): it
                // is sent under the link's name, from where the link points. The reader
                // opens files without following links, so the entry keeps the resolved
                // path (a link swapped in there later is refused, not followed).
                let meta = match fs::metadata(&root) {
                    Ok(m) => m,
                    Err(e) => return Some(skipped(root, SkipReason::Unreadable(e))),
                };
                let is_link = fs::symlink_metadata(&root).is_ok_and(|m| m.file_type().is_symlink());
                let root = if is_link {
                    match fs::canonicalize(&root) {
                        Ok(target) => target,
                        Err(e) => return Some(skipped(root, SkipReason::Unreadable(e))),
                    }
                } else {
                    root
                };
                if let Some(item) = self.visit(root, name, meta) {
                    return Some(item);
                }
                continue;
            }
            // Everything listed: the directories, deepest first.
            let mut dirs = std::mem::take(&mut self.dirs);
            dirs.reverse();
            self.dirs_out = Some(dirs.into_iter());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rdmaft-walk-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn names(items: Vec<WalkItem>) -> (Vec<String>, Vec<(String, String)>) {
        let mut sent = vec![];
        let mut skipped = vec![];
        for i in items {
            match i {
                WalkItem::Entry(e) => sent.push(e.name),
                WalkItem::Skipped { path, reason } => {
                    let n = path.file_name().unwrap().to_string_lossy().into_owned();
                    skipped.push((n, reason.to_string()));
                }
            }
        }
        (sent, skipped)
    }

    #[test]
    fn files_first_then_directories_deepest_first() {
        let d = scratch("order");
        let t = d.join("tree");
        fs::create_dir_all(t.join("b/c")).unwrap();
        fs::create_dir_all(t.join("empty")).unwrap();
        fs::write(t.join("a.txt"), b"aa").unwrap();
        fs::write(t.join("b/c/d"), b"ddd").unwrap();
        fs::write(t.join("b/z"), b"").unwrap();
        fs::write(d.join("single"), b"s").unwrap();
        let items: Vec<_> = Walk::new(vec![t.clone(), d.join("single")]).collect();
        let (sent, skipped) = names(items);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(
            sent,
            [
                "tree/a.txt",
                "tree/b/c/d",
                "tree/b/z",
                "single",
                "tree/empty",
                "tree/b/c",
                "tree/b",
                "tree"
            ]
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn metadata_is_carried() {
        use std::os::unix::fs::PermissionsExt;
        let d = scratch("meta");
        let f = d.join("f");
        fs::write(&f, b"12345").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o4751)).unwrap();
        let mut walk = Walk::new(vec![f]);
        let Some(WalkItem::Entry(e)) = walk.next() else {
            panic!()
        };
        assert_eq!((e.size, e.kind), (5, EntryKind::File));
        assert_eq!(e.mode, 0o751, "setuid is never sent");
        assert!(e.mtime_sec > 1_600_000_000);
        assert!(walk.next().is_none());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn links_and_specials_inside_a_tree_are_skipped() {
        let d = scratch("skip");
        let t = d.join("t");
        fs::create_dir_all(&t).unwrap();
        fs::write(t.join("real"), b"r").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", t.join("link")).unwrap();
        std::os::unix::fs::symlink(&t, t.join("loop")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            t.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        fs::write(t.join("bad\nname"), b"x").unwrap();
        let (sent, skipped) = names(Walk::new(vec![t.clone()]).collect());
        assert_eq!(sent, ["t/real", "t"]);
        let reasons: Vec<_> = skipped.iter().map(|(n, r)| format!("{n}: {r}")).collect();
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert!(reasons.iter().any(|r| r.starts_with("link: symbolic link")));
        assert!(reasons.iter().any(|r| r.starts_with("loop: symbolic link")));
        assert!(reasons.iter().any(|r| r.starts_with("fifo: special file")));
        assert!(reasons.iter().any(|r| r.contains("control character")));
        // A link named as a root is followed.
        let (sent, _) = names(Walk::new(vec![t.join("link")]).collect());
        assert_eq!(sent, ["link"]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn names_in_the_receivers_temporary_space_are_skipped_with_the_reason() {
        let d = scratch("reserved");
        let t = d.join("t");
        fs::create_dir_all(&t).unwrap();
        fs::write(t.join("keep"), b"k").unwrap();
        fs::write(t.join(".rdmaft-4242-7.part"), b"x").unwrap();
        let (sent, skipped) = names(Walk::new(vec![t.clone()]).collect());
        assert_eq!(sent, ["t/keep", "t"]);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        let (name, reason) = &skipped[0];
        assert_eq!(name, ".rdmaft-4242-7.part");
        assert!(
            reason.starts_with("name cannot be sent: ")
                && reason.contains("'.rdmaft-'")
                && reason.contains("reserved for the receiver's temporary files"),
            "{reason}"
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn missing_roots_are_reported() {
        let (sent, skipped) = names(Walk::new(vec![PathBuf::from("/nonexistent/x")]).collect());
        assert!(sent.is_empty());
        assert!(skipped[0].1.starts_with("unreadable"), "{skipped:?}");
    }
}
