//! The receiver's side of `--delete` (PROTOCOL.md §4.1, `DELETE`): the names a sender
//! offered, kept per directory until that directory's own entry comes (after its contents),
//! and the removal then of what the receiver's copy holds beyond them.
//!
//! Memory is bounded per directory, not per tree: a directory's names are kept from its
//! first entry's header until its own entry, so what is held at once is the listings of the
//! directories a depth-first walk is inside (and, with lanes, of the one whose entry
//! waits for the other lanes' files), at most [`MAX_NAMES_PER_DIR`] names each.
//!
//! Removal never leaves the destination and never follows a symlink (a link is removed,
//! not what it points to); names in the receiver's reserved space (its temporary and
//! partial files) are never removed.

use super::dest::{open_dir_beneath, Destination, Refusal};
use super::temp::reserved_component;
use crate::sync::lock_std;
use rdmaft_protocol::FileRejectReason;
use rustix::fs::{self as rfs, AtFlags, Dir, FileType};
use rustix::io::Errno;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Mutex;

/// Names kept for one directory, at most; a directory with more offered is not pruned (its
/// entry is refused, saying why) rather than holding an unbounded set.
pub const MAX_NAMES_PER_DIR: usize = 1 << 20;

/// The names offered per directory (by the sessions of one transfer: the lanes of a group
/// share one).
#[derive(Default)]
pub(crate) struct OfferedNames {
    dirs: Mutex<HashMap<String, Listing>>,
}

/// One directory's offered names, or the fact that there were too many to keep.
enum Listing {
    Names(HashSet<String>),
    TooMany,
}

impl OfferedNames {
    /// Notes that `name` was offered: its last component is one of its directory's.
    pub(crate) fn record(&self, name: &str) {
        let (dir, last) = name.rsplit_once('/').unwrap_or(("", name));
        let mut dirs = lock_std(&self.dirs);
        let listing = dirs
            .entry(dir.to_owned())
            .or_insert_with(|| Listing::Names(HashSet::new()));
        if let Listing::Names(names) = listing {
            if names.len() >= MAX_NAMES_PER_DIR {
                *listing = Listing::TooMany;
            } else if !names.contains(last) {
                names.insert(last.to_owned());
            }
        }
    }

    /// Takes directory `dir`'s names (its own entry came); `Err` when there were too many
    /// to keep. A directory nothing was offered in has none.
    pub(crate) fn take(&self, dir: &str) -> Result<HashSet<String>, Refusal> {
        match lock_std(&self.dirs).remove(dir) {
            None => Ok(HashSet::new()),
            Some(Listing::Names(names)) => Ok(names),
            Some(Listing::TooMany) => Err(Refusal::new(
                FileRejectReason::TOO_LARGE,
                format!(
                    "{dir}: more than {MAX_NAMES_PER_DIR} entries offered, too many to \
                     track: nothing in it deleted"
                ),
            )),
        }
    }
}

impl Destination {
    /// Removes from directory `dir` (beneath the destination) every entry whose name is not
    /// in `keep`, directories with their contents; with `dry_run` only counts them. Returns
    /// the entries removed (or that would be), contents included. A directory that is not
    /// there has nothing to remove.
    pub fn prune(&self, dir: &str, keep: &HashSet<String>, dry_run: bool) -> Result<u64, Refusal> {
        Self::check_name(dir)?;
        let errno = |e| Refusal::from_errno(dir, e);
        let fd = match self.find_parent(dir) {
            Ok((parent, last)) => match open_dir_beneath(&*parent, last) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => return Ok(0),
                Err(e) => return Err(errno(e)),
            },
            Err(Errno::NOENT) => return Ok(0),
            Err(e) => return Err(errno(e)),
        };
        // A name that is not UTF-8 cannot have been offered: it is extra too. One in the
        // reserved space is the receiver's own.
        let extra: Vec<Vec<u8>> = names_in(&fd)
            .map_err(errno)?
            .into_iter()
            .filter(|n| match std::str::from_utf8(n) {
                // spec: [sync.delete-scope]
                Ok(n) => !keep.contains(n) && reserved_component(n).is_none(),
                Err(_) => true,
            })
            .collect();
        let mut removed = 0;
        for name in &extra {
            removed += remove(&fd, name, dry_run).map_err(|e| {
                let shown = String::from_utf8_lossy(name);
                Refusal::from_errno(&format!("{dir}/{shown}: removing it"), e)
            })?;
        }
        if !extra.is_empty() && !dry_run {
            // A cached directory may be one just removed.
            self.forget_dirs();
        }
        Ok(removed)
    }
}

/// The names in directory `fd` (not `.` and `..`), as bytes.
fn names_in(fd: &OwnedFd) -> Result<Vec<Vec<u8>>, Errno> {
    let mut names = Vec::new();
    for entry in Dir::read_from(fd)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

/// Removes `name` from `dir` (a directory with its contents, never following a link);
/// returns how many entries went (or would go).
fn remove(dir: &impl AsFd, name: &[u8], dry_run: bool) -> Result<u64, Errno> {
    let name = OsStr::from_bytes(name);
    // spec: [sync.delete-scope]
    let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        if !dry_run {
            rfs::unlinkat(dir, name, AtFlags::empty())?;
        }
        return Ok(1);
    }
    let sub = open_dir_beneath(dir, name)?;
    let mut removed = 1;
    for child in names_in(&sub)? {
        removed += remove(&sub, &child, dry_run)?;
    }
    if !dry_run {
        rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    }
    Ok(removed)
}
