//! The sender's view of what to send: files and directory trees, as `scp -r` sends them
//! (each under its base name), walked in a fixed order.
//!
//! Entries come in depth-first order, each directory's sorted by name, and each
//! directory's own entry (its mode and mtime) right after everything in it (post-order):
//! so it arrives after its contents, and a receiver that keeps a directory's names until
//! that entry (a sync's `--delete`) holds only the listings of the directories the walk is
//! inside. Symbolic links inside a tree are never followed: with
//! [`Walk::with_links`] each is sent as a link (its target as it reads), otherwise it is
//! reported as skipped, as special files always are. (A path given on the command line is
//! followed if it is a link: that is what the user named.)
//!
//! With a [`Shard`], the walk yields only that shard's share: the files, and the
//! directories' own entries, whose wire names the shard takes. Every shard still descends
//! into every directory (the files in it are spread over all shards), but it needs no
//! `stat` of the other shards' files where the directory listing gives their type. A
//! skipped path is reported by the one shard that owns its would-be name (its raw bytes
//! when it is not UTF-8), and by shard 0 when it has none (a root such as `/`), so that N
//! shards report it once, as one sender would.

use super::exclude::Excludes;
use super::shard::Shard;
use rdmaft_protocol::{validate_name, EntryKind};
use std::ffi::OsStr;
use std::fs::{self, FileType, Metadata};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// An entry to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceEntry {
    /// Where it is on this host.
    pub path: PathBuf,
    /// Its name on the wire (relative, `/`-separated).
    pub name: String,
    /// File, directory or link.
    pub kind: EntryKind,
    /// Size in bytes of the data to send (0 for a directory or a link).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time.
    pub mtime_sec: i64,
    /// Nanoseconds of the modification time.
    pub mtime_nsec: u32,
    /// A link's target, as it reads (empty for other kinds).
    pub target: Vec<u8>,
}

impl SourceEntry {
    /// Whether `meta` (of the file opened for this entry) is still what the walk found:
    /// a regular file of the same size and mtime.
    pub fn is_as_found(&self, meta: &Metadata) -> bool {
        let mtime = (meta.mtime(), u32::try_from(meta.mtime_nsec()).unwrap_or(0));
        meta.is_file() && meta.len() == self.size && mtime == (self.mtime_sec, self.mtime_nsec)
    }
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
    /// A link whose target, beside its name, does not fit a header (PROTOCOL.md §4.1).
    LongTarget(usize),
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Symlink => f.write_str("symbolic link (not followed)"),
            SkipReason::Special => f.write_str("special file (device, FIFO or socket)"),
            SkipReason::Unreadable(e) => write!(f, "unreadable: {e}"),
            SkipReason::BadName(why) => write!(f, "name cannot be sent: {why}"),
            SkipReason::LongTarget(n) => {
                write!(f, "symbolic link target of {n} bytes too long to send")
            }
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
    /// This matched an exclude pattern: not sent, not reported (and, a directory, not
    /// descended into).
    Excluded {
        /// The path.
        path: PathBuf,
    },
}

/// A directory being listed: its wire name, its remaining children (sorted), and its own
/// entry, handed out after them (when it is this walk's to send).
struct Listing {
    name: String,
    children: std::vec::IntoIter<Child>,
    entry: Option<SourceEntry>,
}

/// A path found in a directory listing, with its type when the listing gave it and the walk
/// is a shard's (a shard passes over other shards' files without a `stat` each).
struct Child {
    path: PathBuf,
    file_type: Option<FileType>,
}

/// The walk over the paths to send (an iterator of [`WalkItem`]s).
#[allow(missing_debug_implementations)]
pub struct Walk {
    roots: std::vec::IntoIter<PathBuf>,
    stack: Vec<Listing>,
    /// Only this shard's share, if set.
    shard: Option<Shard>,
    /// What is left out (`--exclude`).
    excludes: Excludes,
    /// With `--files-from`: the names listed, sent without descending.
    listed: Option<ListedNames>,
    /// Send links inside the tree as links (`--links`) instead of skipping them.
    links: bool,
}

/// `--files-from`: names relative to a base directory, each sent under its own name; a
/// directory listed is sent as itself, not its contents, and the directories come last,
/// deepest first, so that their entries follow whatever was listed inside them.
struct ListedNames {
    base: PathBuf,
    names: std::vec::IntoIter<String>,
    dirs: Vec<SourceEntry>,
    dirs_out: Option<std::vec::IntoIter<SourceEntry>>,
}

impl Walk {
    /// A walk over `roots`, each sent under its base name.
    pub fn new(roots: Vec<PathBuf>) -> Walk {
        Walk::with_shard(roots, None)
    }

    /// A walk over `roots` that yields only `shard`'s share of them (everything for
    /// `None`): see the module's documentation.
    pub fn with_shard(roots: Vec<PathBuf>, shard: Option<Shard>) -> Walk {
        Walk {
            roots: roots.into_iter(),
            stack: Vec::new(),
            shard,
            excludes: Excludes::default(),
            listed: None,
            links: false,
        }
    }

    /// A walk over `names` (relative to `base`, as `--files-from` lists them), each sent
    /// under its own name without descending into directories.
    pub fn listed(base: PathBuf, names: Vec<String>, shard: Option<Shard>) -> Walk {
        Walk {
            listed: Some(ListedNames {
                base,
                names: names.into_iter(),
                dirs: Vec::new(),
                dirs_out: None,
            }),
            ..Walk::with_shard(Vec::new(), shard)
        }
    }

    /// The same walk, leaving out what `excludes` matches.
    pub fn excluding(self, excludes: Excludes) -> Walk {
        Walk { excludes, ..self }
    }

    /// The same walk, sending symbolic links inside trees as links (`links`) or skipping
    /// them (the default).
    pub fn with_links(self, links: bool) -> Walk {
        Walk { links, ..self }
    }

    /// Whether the entry of wire name `name` (or the path that would have it) is this
    /// walk's to send or report; `None`: a path with no name, reported by shard 0.
    fn ours(&self, name: Option<&[u8]>) -> bool {
        match (self.shard, name) {
            (None, _) => true,
            (Some(s), Some(name)) => s.takes_bytes(name, None),
            (Some(s), None) => s.index() == 0,
        }
    }

    /// `path` skipped for `reason`, if reporting it is this walk's (by its would-be name).
    fn skipped_if_ours(
        &self,
        name: Option<&[u8]>,
        path: PathBuf,
        reason: SkipReason,
    ) -> Option<WalkItem> {
        self.ours(name).then(|| skipped(path, reason))
    }

    fn visit(&mut self, path: PathBuf, name: String, meta: Metadata) -> Option<WalkItem> {
        let ours = self.ours(Some(name.as_bytes()));
        let ft = meta.file_type();
        if !self.excludes.is_empty() && self.excludes.excludes(&name, ft.is_dir()) {
            return ours.then_some(WalkItem::Excluded { path });
        }
        if let Err(e) = validate_name(name.as_bytes()) {
            return ours.then(|| skipped(path, SkipReason::BadName(e.to_string())));
        }
        if ft.is_symlink() {
            return ours.then(|| self.link(path, name, &meta));
        }
        if ft.is_block_device() || ft.is_char_device() || ft.is_fifo() || ft.is_socket() {
            return ours.then(|| skipped(path, SkipReason::Special));
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
            mtime_nsec: mtime_nsec(&meta),
            target: Vec::new(),
        };
        if !ft.is_dir() {
            return ours.then_some(WalkItem::Entry(entry));
        }
        if let Some(listed) = &mut self.listed {
            // Listed: the directory itself, after everything else.
            if ours {
                listed.dirs.push(entry);
            }
            return None;
        }
        match sorted_children(&path, self.shard.is_some()) {
            Ok(children) => {
                self.stack.push(Listing {
                    name,
                    children: children.into_iter(),
                    entry: ours.then_some(entry),
                });
                None
            }
            Err(e) => ours.then(|| skipped(path, SkipReason::Unreadable(e))),
        }
    }
}

impl Walk {
    /// The item for the link at `path`: sent as a link with `--links`, else skipped.
    fn link(&self, path: PathBuf, name: String, meta: &Metadata) -> WalkItem {
        if !self.links {
            return skipped(path, SkipReason::Symlink);
        }
        let target = match fs::read_link(&path) {
            Ok(t) => t.into_os_string().into_vec(),
            Err(e) => return skipped(path, SkipReason::Unreadable(e)),
        };
        let entry = SourceEntry {
            path,
            kind: EntryKind::Symlink,
            size: 0,
            mode: meta.mode() & 0o777,
            mtime_sec: meta.mtime(),
            mtime_nsec: mtime_nsec(meta),
            target,
            name,
        };
        if !entry.header_fits() {
            let n = entry.target.len();
            return skipped(entry.path, SkipReason::LongTarget(n));
        }
        WalkItem::Entry(entry)
    }
}

impl SourceEntry {
    /// Whether a link's target and name fit one header (always, for other kinds).
    fn header_fits(&self) -> bool {
        self.kind != EntryKind::Symlink
            || (rdmaft_protocol::wire::is_link_target(&self.target)
                && self.name.len() + self.target.len() <= rdmaft_protocol::MAX_LINK_TARGET + 1)
    }
}

/// The nanoseconds of a file's mtime, as the wire carries them.
fn mtime_nsec(meta: &Metadata) -> u32 {
    u32::try_from(meta.mtime_nsec())
        .unwrap_or(0)
        .min(999_999_999)
}

fn skipped(path: PathBuf, reason: SkipReason) -> WalkItem {
    WalkItem::Skipped { path, reason }
}

/// The paths in `dir`, sorted; with `types`, each with its type where the listing gives it
/// (without, no `stat` is spent on it where the listing does not: the walk makes its own).
fn sorted_children(dir: &Path, types: bool) -> io::Result<Vec<Child>> {
    let mut children = fs::read_dir(dir)?
        .map(|e| {
            e.map(|e| Child {
                file_type: if types { e.file_type().ok() } else { None },
                path: e.path(),
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    children.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(children)
}

/// The bytes of the wire name `parent/component` would have (for a component that is not
/// UTF-8: which shard reports it).
fn would_be_name(parent: &str, component: &OsStr) -> Vec<u8> {
    let mut name = Vec::with_capacity(parent.len() + 1 + component.len());
    name.extend_from_slice(parent.as_bytes());
    name.push(b'/');
    name.extend_from_slice(component.as_bytes());
    name
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

impl Walk {
    /// The step for `child` of the directory of wire name `parent`: an item, or `None` to
    /// go on (a directory being descended into, another shard's path).
    fn child(&mut self, parent: &str, child: Child) -> Option<WalkItem> {
        let Child { path, file_type } = child;
        let component = match path.file_name().map(|n| (n, n.to_str())) {
            Some((_, Some(c))) => c,
            raw => {
                let name = raw.map(|(n, _)| would_be_name(parent, n));
                let reason = SkipReason::BadName("not UTF-8".into());
                return self.skipped_if_ours(name.as_deref(), path, reason);
            }
        };
        let name = format!("{parent}/{component}");
        // Another shard's file (or link, or special file): not even a `stat`.
        if file_type.is_some_and(|t| !t.is_dir()) && !self.ours(Some(name.as_bytes())) {
            return None;
        }
        match fs::symlink_metadata(&path) {
            Ok(meta) => self.visit(path, name, meta),
            Err(e) => self.skipped_if_ours(Some(name.as_bytes()), path, SkipReason::Unreadable(e)),
        }
    }

    /// The step for a path named by the user (as [`child`](Self::child)).
    fn root(&mut self, root: PathBuf) -> Option<WalkItem> {
        let name = match root_name(&root) {
            Ok(n) => n,
            Err(reason) => {
                let base = root.file_name().map(|n| n.as_bytes().to_vec());
                return self.skipped_if_ours(base.as_deref(), root, reason);
            }
        };
        // A path named by the user is followed if it is a link (as `scp` does): it is sent
        // under the link's name, from where the link points. The reader opens files without
        // following links, so the entry keeps the resolved path (a link swapped in there
        // later is refused, not followed).
        let meta = match fs::metadata(&root) {
            Ok(m) => m,
            Err(e) => {
                return self.skipped_if_ours(Some(name.as_bytes()), root, SkipReason::Unreadable(e))
            }
        };
        let is_link = fs::symlink_metadata(&root).is_ok_and(|m| m.file_type().is_symlink());
        let root = if is_link {
            match fs::canonicalize(&root) {
                Ok(target) => target,
                Err(e) => {
                    return self.skipped_if_ours(
                        Some(name.as_bytes()),
                        root,
                        SkipReason::Unreadable(e),
                    )
                }
            }
        } else {
            root
        };
        self.visit(root, name, meta)
    }
}

impl Walk {
    /// The step for the next listed name (`--files-from`): `None` when the list and its
    /// directories are done, `Some(None)` to go on.
    fn next_listed(&mut self) -> Option<Option<WalkItem>> {
        let listed = self.listed.as_mut()?;
        if let Some(out) = &mut listed.dirs_out {
            return out.next().map(|e| Some(WalkItem::Entry(e)));
        }
        let Some(raw) = listed.names.next() else {
            // Deepest first: a directory's entry after the directories listed inside it.
            let mut dirs = std::mem::take(&mut listed.dirs);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.name.matches('/').count()));
            listed.dirs_out = Some(dirs.into_iter());
            return Some(None);
        };
        let path = listed.base.join(&raw);
        // As find prints them: "./a/b" is "a/b".
        let name = raw
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_owned();
        if let Err(e) = validate_name(name.as_bytes()) {
            let ours = self.ours(Some(name.as_bytes()));
            return Some(ours.then(|| skipped(path, SkipReason::BadName(e.to_string()))));
        }
        Some(match fs::symlink_metadata(&path) {
            Ok(meta) => self.visit(path, name, meta),
            Err(e) => self.skipped_if_ours(Some(name.as_bytes()), path, SkipReason::Unreadable(e)),
        })
    }
}

impl Iterator for Walk {
    type Item = WalkItem;

    fn next(&mut self) -> Option<WalkItem> {
        loop {
            let item = if let Some(top) = self.stack.last_mut() {
                let Some(child) = top.children.next() else {
                    // Everything in it is out: now its own entry.
                    let done = self.stack.pop().and_then(|l| l.entry);
                    match done {
                        Some(entry) => return Some(WalkItem::Entry(entry)),
                        None => continue,
                    }
                };
                let parent = top.name.clone();
                self.child(&parent, child)
            } else if let Some(root) = self.roots.next() {
                self.root(root)
            } else if self.listed.is_some() {
                match self.next_listed()? {
                    Some(item) => return Some(item),
                    None => continue,
                }
            } else {
                return None;
            };
            if item.is_some() {
                return item;
            }
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

    /// What a walk sent (wire names) and skipped (base name, reason).
    type Names = (Vec<String>, Vec<(String, String)>);

    fn names(items: Vec<WalkItem>) -> Names {
        let mut sent = vec![];
        let mut skipped = vec![];
        for i in items {
            match i {
                WalkItem::Entry(e) => sent.push(e.name),
                WalkItem::Skipped { path, reason } => {
                    let n = path.file_name().unwrap_or(path.as_os_str());
                    let n = n.to_string_lossy().into_owned();
                    skipped.push((n, reason.to_string()));
                }
                WalkItem::Excluded { path } => {
                    let n = path.file_name().unwrap_or(path.as_os_str());
                    skipped.push((n.to_string_lossy().into_owned(), "excluded".into()));
                }
            }
        }
        (sent, skipped)
    }

    #[test]
    fn an_entry_is_as_found_until_its_size_kind_or_mtime_changes() {
        let d = scratch("as-found");
        let f = d.join("f");
        fs::write(&f, b"12345").unwrap();
        let Some(WalkItem::Entry(e)) = Walk::new(vec![f.clone()]).next() else {
            panic!()
        };
        assert!(e.is_as_found(&fs::metadata(&f).unwrap()));
        fs::write(&f, b"123456").unwrap();
        assert!(!e.is_as_found(&fs::metadata(&f).unwrap()), "another size");
        fs::write(&f, b"12345").unwrap();
        let earlier = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(9);
        fs::File::open(&f).unwrap().set_modified(earlier).unwrap();
        assert!(!e.is_as_found(&fs::metadata(&f).unwrap()), "another mtime");
        assert!(!e.is_as_found(&fs::metadata(&d).unwrap()), "a directory");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn excluded_entries_and_directories_are_left_out() {
        let d = scratch("exclude");
        let t = d.join("t");
        fs::create_dir_all(t.join("keep")).unwrap();
        fs::create_dir_all(t.join("skip/deep")).unwrap();
        fs::write(t.join("keep/a.txt"), b"a").unwrap();
        fs::write(t.join("keep/b.tmp"), b"b").unwrap();
        fs::write(t.join("skip/deep/c"), b"c").unwrap();
        let excludes = Excludes::new(&["*.tmp", "skip/"]).unwrap();
        let walk = Walk::new(vec![t.clone()]).excluding(excludes);
        let (sent, skipped) = names(walk.collect());
        assert_eq!(sent, ["t/keep/a.txt", "t/keep", "t"]);
        assert_eq!(
            skipped,
            [
                ("b.tmp".to_owned(), "excluded".to_owned()),
                ("skip".to_owned(), "excluded".to_owned())
            ],
            "not descended into"
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn listed_names_go_under_their_own_names_directories_last() {
        let d = scratch("listed");
        fs::create_dir_all(d.join("a/b")).unwrap();
        fs::write(d.join("a/b/f"), b"f").unwrap();
        fs::write(d.join("top"), b"t").unwrap();
        let names = ["a", "./a/b", "a/b/f", "top", "../escape", "/abs"];
        let walk = Walk::listed(d.clone(), names.map(String::from).to_vec(), None);
        let (sent, skipped) = names_of(walk);
        assert_eq!(
            sent,
            ["a/b/f", "top", "a/b", "a"],
            "deepest directories first"
        );
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped
            .iter()
            .all(|(_, why)| why.contains("cannot be sent")));
        fs::remove_dir_all(&d).unwrap();
    }

    fn names_of(walk: Walk) -> Names {
        names(walk.collect())
    }

    #[test]
    fn each_directory_comes_right_after_its_contents() {
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
                "tree/b/c",
                "tree/b/z",
                "tree/b",
                "tree/empty",
                "tree",
                "single"
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

    /// A link goes only if its name and target fit one header (4048 bytes together) and
    /// the target is one a header may carry (not empty); every other kind always fits.
    #[test]
    fn a_link_fits_a_header_only_with_its_name() {
        let max = rdmaft_protocol::MAX_LINK_TARGET;
        let entry = |kind, name: &str, target: Vec<u8>| SourceEntry {
            path: PathBuf::from(name),
            name: name.to_owned(),
            kind,
            size: target.len() as u64,
            mode: 0o777,
            mtime_sec: 0,
            mtime_nsec: 0,
            target,
        };
        let link = |name: &str, len: usize| entry(EntryKind::Symlink, name, vec![b'x'; len]);
        assert!(link("l", max).header_fits());
        assert!(!link("l", max + 1).header_fits());
        assert!(link("ll", max - 1).header_fits());
        assert!(!link("ll", max).header_fits());
        assert!(!link("l", 0).header_fits(), "an empty target");
        assert!(entry(EntryKind::File, "f", Vec::new()).header_fits());
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

    /// Each of `count` sharded walks over `roots`: what it sends and what it skips.
    fn shares(roots: &[PathBuf], count: u32) -> Vec<Names> {
        (0..count)
            .map(|i| {
                let shard = Shard::new(i, count).unwrap();
                names(Walk::with_shard(roots.to_vec(), Some(shard)).collect())
            })
            .collect()
    }

    #[test]
    fn shards_split_the_walk_once_between_them() {
        use std::os::unix::ffi::OsStrExt;
        let d = scratch("shards");
        let t = d.join("tree");
        for i in 0..12 {
            let sub = t.join(format!("d{}/e{}", i % 4, i % 3));
            fs::create_dir_all(&sub).unwrap();
            fs::write(sub.join(format!("f{i}")), vec![b'x'; i]).unwrap();
        }
        fs::create_dir_all(t.join("empty")).unwrap();
        fs::write(t.join("d0/empty-file"), b"").unwrap();
        for i in 0..6 {
            std::os::unix::fs::symlink("/etc/passwd", t.join(format!("d1/link{i}"))).unwrap();
            fs::write(t.join(format!("d2/bad\n{i}")), b"x").unwrap();
            let mut raw = format!("raw{i}").into_bytes();
            raw.push(0xff); // not UTF-8
            fs::write(t.join("d3").join(OsStr::from_bytes(&raw)), b"x").unwrap();
        }
        let roots = vec![t.clone(), d.join("missing")];
        let (all_sent, all_skipped) = names(Walk::new(roots.clone()).collect());
        assert_eq!(all_skipped.len(), 19, "{all_skipped:?}");
        for count in [1, 2, 3, 5] {
            let shares = shares(&roots, count);
            let mut sent: Vec<String> = shares.iter().flat_map(|s| s.0.clone()).collect();
            let mut skipped: Vec<_> = shares.iter().flat_map(|s| s.1.clone()).collect();
            let (mut want_sent, mut want_skipped) = (all_sent.clone(), all_skipped.clone());
            for v in [&mut sent, &mut want_sent] {
                v.sort();
            }
            for v in [&mut skipped, &mut want_skipped] {
                v.sort();
            }
            assert_eq!(sent, want_sent, "{count} shards send each entry once");
            assert_eq!(
                skipped, want_skipped,
                "{count} shards report each skip once"
            );
            for (share, _) in &shares {
                // Each share keeps the order: a directory after everything in it.
                let in_order: Vec<_> = all_sent.iter().filter(|n| share.contains(n)).collect();
                assert_eq!(share.iter().collect::<Vec<_>>(), in_order);
            }
        }
        let three = shares(&roots, 3);
        assert!(three.iter().all(|(sent, _)| !sent.is_empty()), "{three:?}");
        fs::remove_dir_all(&d).unwrap();
    }

    /// A name that is not UTF-8 is reported by the shard its wire name would go to, as a
    /// sendable entry of that name would be: the skips spread over the shards like the
    /// entries do.
    #[test]
    fn a_name_that_is_not_utf8_is_reported_by_the_shard_of_its_would_be_name() {
        use std::os::unix::ffi::OsStrExt;
        let d = scratch("raw-names");
        let t = d.join("tree");
        fs::create_dir_all(&t).unwrap();
        let raws: Vec<Vec<u8>> = (0..6)
            .map(|i| [format!("raw{i}").as_bytes(), &[0xff]].concat())
            .collect();
        for raw in &raws {
            fs::write(t.join(OsStr::from_bytes(raw)), b"x").unwrap();
        }
        let shares = shares(&[t], 3);
        for raw in &raws {
            let wire = [b"tree/".as_slice(), raw].concat();
            let shown = String::from_utf8_lossy(raw).into_owned();
            for (i, (_, skipped)) in (0u32..).zip(&shares) {
                let reported = skipped.iter().any(|(n, _)| *n == shown);
                let owner = Shard::new(i, 3).unwrap().takes_bytes(&wire, None);
                assert_eq!(reported, owner, "{shown:?} in shard {i}");
            }
        }
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_root_without_a_name_is_reported_by_shard_0() {
        let shares = shares(&[PathBuf::from("/")], 3);
        let reported: Vec<_> = shares.iter().map(|(_, skipped)| skipped.len()).collect();
        assert_eq!(reported, [1, 0, 0]);
        assert!(shares.iter().all(|(sent, _)| sent.is_empty()));
    }

    #[test]
    fn missing_roots_are_reported() {
        let (sent, skipped) = names(Walk::new(vec![PathBuf::from("/nonexistent/x")]).collect());
        assert!(sent.is_empty());
        assert!(skipped[0].1.starts_with("unreadable"), "{skipped:?}");
    }
}
