//! The receiver's file layer (`rdmaft::fs::dest::Destination`) driven by fuzzed operation
//! sequences in a scratch directory, against a model of what it must hold.
//!
//! Operations: begin a file (fresh or resumed), write into it, publish it, keep its prefix
//! for a resume, discard it; make a directory; make a link; prune a directory (`--delete`);
//! and, as another process on the host could, plant a file or a symlink pointing out of
//! the destination. Names come from a small alphabet so that they meet, nest and collide,
//! plus names in the receiver's reserved space (`.rdmaft-…`).
//!
//! After every operation: whether it succeeded is what the model predicts (a name through
//! a file or a symlink, onto a directory, taken under no-clobber, reserved: refused;
//! otherwise done); the directory's entries (kinds, file contents, link targets), reserved
//! names aside, are the model's; nothing outside the destination changed. A resumed file
//! starts with exactly the prefix that was kept. At the end, once every open file is
//! discarded, no temporary file is left, and the partial files are those the model kept.

use arbitrary::{Arbitrary, Unstructured};
use rdmaft::fs::dest::{DestOptions, Destination, Existing, Incoming, EARLY_CHECK_MIN};
use rdmaft_protocol::{validate_name, NameError};
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Name components: four ordinary ones, two in the receiver's reserved space.
const PARTS: [&str; 6] = ["a", "b", "c", "l", ".rdmaft-partial-0", ".RDMAFT-x.part"];
/// Files open at once, at most.
const SLOTS: usize = 4;
/// Operations per input, at most.
const MAX_OPS: usize = 48;

#[derive(Arbitrary, Debug)]
struct Setup {
    /// Named temporary files (`.rdmaft-….part`) instead of unnamed ones.
    named_temps: bool,
    /// `Existing::Keep` (`recv --no-clobber`).
    no_clobber: bool,
}

/// A name: `depth` + 1 components picked from [`PARTS`] (the reserved ones only when
/// `reserved`).
#[derive(Arbitrary, Debug, Clone, Copy)]
struct NameSel {
    depth: u8,
    parts: [u8; 3],
    reserved: bool,
}

impl NameSel {
    fn name(self) -> String {
        let n = if self.reserved { PARTS.len() } else { 4 };
        let depth = usize::from(self.depth % 3) + 1;
        self.parts[..depth]
            .iter()
            .map(|p| PARTS[usize::from(*p) % n])
            .collect::<Vec<_>>()
            .join("/")
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Planted {
    /// A symlink to the directory outside the destination (relative: up and out).
    LinkOut,
    /// A symlink to the same directory, absolute.
    LinkOutAbsolute,
    /// A regular file.
    File(u8),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Begin {
        name: NameSel,
        size: u8,
        mtime: u8,
        resume: bool,
    },
    Write {
        slot: u8,
        offset: u16,
        len: u8,
        byte: u8,
    },
    Publish {
        slot: u8,
    },
    Keep {
        slot: u8,
        written: u16,
    },
    Discard {
        slot: u8,
    },
    MakeDir {
        name: NameSel,
    },
    MakeLink {
        name: NameSel,
        target: u8,
    },
    Prune {
        dir: NameSel,
        keep: u8,
    },
    Plant {
        name: NameSel,
        what: Planted,
    },
}

/// An entry as the model has it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// A directory, with an identity: a directory removed and made again is another one.
    Dir(u64),
    File(Vec<u8>),
    Link(Vec<u8>),
}

impl Entry {
    fn same_kind(&self, other: &Entry) -> bool {
        match (self, other) {
            (Entry::Dir(_), Entry::Dir(_)) => true,
            _ => self == other,
        }
    }
}

/// A file being written: what it must hold, and where it goes.
struct Slot {
    incoming: Incoming,
    name: String,
    size: u64,
    mtime: (i64, u32),
    data: Vec<u8>,
    /// The identity of its directory when it began (`None`: the root).
    parent: Option<u64>,
}

#[derive(Default)]
struct Model {
    entries: BTreeMap<String, Entry>,
    /// Kept prefixes by (name, size, mtime).
    partials: BTreeMap<(String, u64, (i64, u32)), Vec<u8>>,
    next_dir: u64,
}

impl Model {
    /// The directories above `name`, outermost first.
    fn parents(name: &str) -> Vec<&str> {
        name.match_indices('/').map(|(i, _)| &name[..i]).collect()
    }

    /// Whether a directory above `name` is a file or a link (so nothing may be made
    /// through it).
    fn blocked(&self, name: &str) -> bool {
        Self::parents(name)
            .iter()
            .any(|p| matches!(self.entries.get(*p), Some(Entry::File(_) | Entry::Link(_))))
    }

    fn parent_id(&self, name: &str) -> Option<u64> {
        match Self::parents(name).last() {
            None => None,
            Some(p) => match self.entries.get(*p) {
                Some(Entry::Dir(id)) => Some(*id),
                _ => Some(u64::MAX),
            },
        }
    }

    /// Makes the missing directories above `name` (as the destination does).
    fn make_parents(&mut self, name: &str) {
        for p in Self::parents(name) {
            if !self.entries.contains_key(p) {
                self.next_dir += 1;
                self.entries.insert(p.to_owned(), Entry::Dir(self.next_dir));
            }
        }
    }

    /// Removes `name` and everything below it, with the partial files kept there.
    fn remove_tree(&mut self, name: &str) {
        let below = format!("{name}/");
        self.entries
            .retain(|k, _| k != name && !k.starts_with(&below));
        self.partials.retain(|(k, _, _), _| !k.starts_with(&below));
    }
}

static RUNS: AtomicU64 = AtomicU64::new(0);

/// The harness.
pub fn dest(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return;
    };
    let mut ops = Vec::new();
    while ops.len() < MAX_OPS {
        match Op::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    let base = std::env::temp_dir().join(format!(
        "rdmaft-fuzz-dest-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&base);
    let (root, outside) = (base.join("dest"), base.join("outside"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(outside.join("dir")).unwrap();
    std::fs::write(outside.join("sentinel"), b"outside").unwrap();
    let outside_before = listing(&outside);
    run(&setup, ops, &root, &outside);
    assert_eq!(
        listing(&outside),
        outside_before,
        "something outside changed"
    );
    std::fs::remove_dir_all(&base).unwrap();
}

fn run(setup: &Setup, ops: Vec<Op>, root: &Path, outside: &Path) {
    let options = DestOptions {
        existing: if setup.no_clobber {
            Existing::Keep
        } else {
            Existing::Replace
        },
        unnamed_temp_files: !setup.named_temps,
        ..DestOptions::default()
    };
    let dest = Destination::open(root, options).unwrap();
    let keep_existing = setup.no_clobber;
    let mut model = Model::default();
    let mut slots: Vec<Slot> = Vec::new();
    let pick = |slots: &Vec<Slot>, n: u8| (!slots.is_empty()).then(|| usize::from(n) % slots.len());
    for op in ops {
        if crate::common::trace() {
            eprintln!("dest: {op:?}");
        }
        match op {
            Op::Begin {
                name,
                size,
                mtime,
                resume,
            } => {
                if slots.len() >= SLOTS {
                    continue;
                }
                let name = name.name();
                let valid = valid(&name);
                // Two writers never share a name (the protocol's open-name rule).
                if slots.iter().any(|s| s.name == name) {
                    continue;
                }
                // Some above the size from which a name's present holder is looked at first.
                let size = if size >= 0xf0 {
                    u64::from(size) << 13
                } else {
                    u64::from(size) * 97
                };
                let mtime = (1_700_000_000 + i64::from(mtime % 4), 0);
                let expect_ok = valid
                    && !model.blocked(&name)
                    && match model.entries.get(&name) {
                        None => true,
                        // A small file being replaced fails at its publish instead.
                        Some(Entry::Dir(_)) => !keep_existing && size < EARLY_CHECK_MIN,
                        Some(_) => !keep_existing,
                    };
                let got = if resume {
                    dest.resume_file(&name, size, 0o644, mtime)
                } else {
                    dest.begin_file(&name, size, 0o644).map(|i| (i, 0))
                };
                assert_eq!(got.is_ok(), expect_ok, "begin {name}: {got:?}");
                let Ok((incoming, len)) = got else {
                    continue;
                };
                model.make_parents(&name);
                let mut data = Vec::new();
                let kept = resume
                    .then(|| model.partials.remove(&(name.clone(), size, mtime)))
                    .flatten();
                match kept {
                    Some(prefix) if prefix.len() as u64 <= size => {
                        assert_eq!(len, prefix.len() as u64, "{name}: resumed length");
                        let mut got = vec![0; prefix.len()];
                        incoming.file.read_exact_at(&mut got, 0).unwrap();
                        assert_eq!(got, prefix, "{name}: the resumed prefix");
                        data = prefix;
                    }
                    _ => assert_eq!(len, 0, "{name}: nothing was kept to resume"),
                }
                let parent = model.parent_id(&name);
                slots.push(Slot {
                    incoming,
                    name,
                    size,
                    mtime,
                    data,
                    parent,
                });
            }
            Op::Write {
                slot,
                offset,
                len,
                byte,
            } => {
                let Some(i) = pick(&slots, slot) else {
                    continue;
                };
                let s = &mut slots[i];
                let offset = usize::from(offset % 4096);
                // A write of nothing does not extend the file: none is made.
                if len == 0 {
                    continue;
                }
                let bytes = vec![byte; usize::from(len)];
                s.incoming.file.write_all_at(&bytes, offset as u64).unwrap();
                if s.data.len() < offset + bytes.len() {
                    s.data.resize(offset + bytes.len(), 0);
                }
                s.data[offset..offset + bytes.len()].copy_from_slice(&bytes);
            }
            Op::Publish { slot } => {
                let Some(i) = pick(&slots, slot) else {
                    continue;
                };
                let s = slots.swap_remove(i);
                let same_parent = model.parent_id(&s.name) == s.parent;
                let expect_ok = same_parent
                    && !model.blocked(&s.name)
                    && match model.entries.get(&s.name) {
                        None => true,
                        Some(Entry::Dir(_)) => false,
                        Some(_) => !keep_existing,
                    };
                let got = dest.publish(s.incoming, 0o644, s.mtime);
                assert_eq!(got.is_ok(), expect_ok, "publish {}: {got:?}", s.name);
                if got.is_ok() {
                    model.entries.insert(s.name, Entry::File(s.data));
                }
            }
            Op::Keep { slot, written } => {
                let Some(i) = pick(&slots, slot) else {
                    continue;
                };
                let s = slots.swap_remove(i);
                let written = u64::from(written % 8192);
                dest.keep_partial(s.incoming, s.size, s.mtime, written);
                // Kept only where its directory still is.
                if written > 0 && model.parent_id(&s.name) == s.parent && !model.blocked(&s.name) {
                    let mut prefix = s.data;
                    prefix.resize(written as usize, 0);
                    model.partials.insert((s.name, s.size, s.mtime), prefix);
                }
            }
            Op::Discard { slot } => {
                let Some(i) = pick(&slots, slot) else {
                    continue;
                };
                dest.discard(slots.swap_remove(i).incoming);
            }
            Op::MakeDir { name } => {
                let name = name.name();
                let expect_ok = valid(&name)
                    && !model.blocked(&name)
                    && matches!(model.entries.get(&name), None | Some(Entry::Dir(_)));
                let got = dest.make_dir(&name, 0o755, (1_700_000_000, 0));
                assert_eq!(got.is_ok(), expect_ok, "make_dir {name}: {got:?}");
                if got.is_ok() {
                    model.make_parents(&name);
                    if !model.entries.contains_key(&name) {
                        model.next_dir += 1;
                        model.entries.insert(name, Entry::Dir(model.next_dir));
                    }
                }
            }
            Op::MakeLink { name, target } => {
                let name = name.name();
                let target = match target % 4 {
                    0 => b"a".to_vec(),
                    1 => b"../a".to_vec(),
                    2 => b"/etc/passwd".to_vec(),
                    _ => b"b/c".to_vec(),
                };
                let expect_ok = valid(&name)
                    && !model.blocked(&name)
                    && match model.entries.get(&name) {
                        None => true,
                        Some(Entry::Dir(_)) => false,
                        Some(_) => !keep_existing,
                    };
                let got = dest.make_link(&name, &target, (1_700_000_000, 0));
                assert_eq!(got.is_ok(), expect_ok, "make_link {name}: {got:?}");
                if got.is_ok() {
                    model.make_parents(&name);
                    model.entries.insert(name, Entry::Link(target));
                }
            }
            Op::Prune { dir, keep } => {
                let dir = dir.name();
                let keep: std::collections::HashSet<String> = PARTS[..4]
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| keep & (1 << i) != 0)
                    .map(|(_, p)| (*p).to_owned())
                    .collect();
                let through_link = model.blocked(&dir)
                    || matches!(
                        model.entries.get(&dir),
                        Some(Entry::File(_) | Entry::Link(_))
                    );
                let expect_ok = valid(&dir) && !through_link;
                let got = dest.prune(&dir, &keep, false);
                assert_eq!(got.is_ok(), expect_ok, "prune {dir:?}: {got:?}");
                if let Ok(removed) = got {
                    let prefix = format!("{dir}/");
                    let extra: Vec<String> = model
                        .entries
                        .keys()
                        .filter_map(|k| k.strip_prefix(&prefix))
                        .filter(|rest| !rest.contains('/') && !keep.contains(*rest))
                        .map(|rest| format!("{prefix}{rest}"))
                        .collect();
                    let mut least = 0;
                    for name in &extra {
                        let below = format!("{name}/");
                        least += 1 + model
                            .entries
                            .keys()
                            .filter(|k| k.starts_with(&below))
                            .count();
                        model.remove_tree(name);
                    }
                    assert!(
                        removed >= least as u64,
                        "prune {dir:?}: {removed} < {least}"
                    );
                }
            }
            Op::Plant { name, what } => {
                let name = name.name();
                let parent_ok = Model::parents(&name)
                    .last()
                    .is_none_or(|p| matches!(model.entries.get(*p), Some(Entry::Dir(_))));
                if !valid(&name) || !parent_ok || model.entries.contains_key(&name) {
                    continue;
                }
                let path = root.join(&name);
                let entry = match what {
                    Planted::LinkOut => {
                        let up = "../".repeat(name.matches('/').count() + 1);
                        let target = format!("{up}outside");
                        std::os::unix::fs::symlink(&target, &path).unwrap();
                        Entry::Link(target.into_bytes())
                    }
                    Planted::LinkOutAbsolute => {
                        std::os::unix::fs::symlink(outside, &path).unwrap();
                        Entry::Link(outside.as_os_str().as_encoded_bytes().to_vec())
                    }
                    Planted::File(b) => {
                        std::fs::write(&path, [b; 3]).unwrap();
                        Entry::File(vec![b; 3])
                    }
                };
                model.entries.insert(name, entry);
            }
        }
        check(root, &model);
    }
    for s in slots {
        dest.discard(s.incoming);
    }
    drop(dest);
    check(root, &model);
    let (temps, partials) = reserved(root);
    assert_eq!(temps, Vec::<PathBuf>::new(), "temporary files left behind");
    assert_eq!(partials, model.partials.len(), "partial files");
}

/// Whether the protocol would let `name` through (the destination's callers check that
/// first; reserved names the destination refuses itself too).
fn valid(name: &str) -> bool {
    let got = validate_name(name.as_bytes());
    // A sanity check that the alphabet only makes valid or reserved names.
    assert!(
        matches!(got, Ok(_) | Err(NameError::Reserved)),
        "{name}: {got:?}"
    );
    got.is_ok()
}

/// The directory's entries (reserved names aside) against the model.
fn check(root: &Path, model: &Model) {
    let mut found = BTreeMap::new();
    walk(root, "", &mut found);
    let same = found.len() == model.entries.len()
        && found
            .iter()
            .zip(&model.entries)
            .all(|((a, ea), (b, eb))| a == b && ea.same_kind(eb));
    assert!(
        same,
        "the directory differs from the model:\n found {}\n model {}",
        summary(&found),
        summary(&model.entries)
    );
}

/// Entries with their kinds and sizes (contents would drown the message).
fn summary(entries: &BTreeMap<String, Entry>) -> String {
    let show = |e: &Entry| match e {
        Entry::Dir(_) => "dir".to_owned(),
        Entry::File(d) => format!("file of {} bytes ({:?}...)", d.len(), &d[..d.len().min(4)]),
        Entry::Link(t) => format!("link to {}", String::from_utf8_lossy(t)),
    };
    entries
        .iter()
        .map(|(k, e)| format!("{k}: {}", show(e)))
        .collect::<Vec<_>>()
        .join("; ")
}

fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Entry>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.to_ascii_lowercase().starts_with(".rdmaft-") {
            continue;
        }
        let rel = format!("{prefix}{name}");
        let path = e.path();
        let ft = std::fs::symlink_metadata(&path).unwrap().file_type();
        if ft.is_dir() {
            out.insert(rel.clone(), Entry::Dir(0));
            walk(&path, &format!("{rel}/"), out);
        } else if ft.is_symlink() {
            let t = std::fs::read_link(&path).unwrap();
            out.insert(rel, Entry::Link(t.into_os_string().into_encoded_bytes()));
        } else {
            out.insert(rel, Entry::File(std::fs::read(&path).unwrap()));
        }
    }
}

/// The receiver's own files left under `root`: temporary files, and how many partial ones.
fn reserved(root: &Path) -> (Vec<PathBuf>, usize) {
    let (mut temps, mut partials) = (Vec::new(), 0);
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().to_ascii_lowercase();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                dirs.push(e.path());
            } else if name.starts_with(".rdmaft-partial-") {
                partials += 1;
            } else if name.starts_with(".rdmaft-") {
                temps.push(e.path());
            }
        }
    }
    (temps, partials)
}

/// Every entry under `dir`, with file contents (to see that nothing outside changed).
fn listing(dir: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    walk(dir, "", &mut out);
    out
}
