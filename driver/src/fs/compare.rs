//! The receiver's side of sync (PROTOCOL.md §4.1, `SYNC`): how its copy of an entry compares
//! with the sender's header — quickly (size and mtime, to the nanosecond) or by content (a
//! digest of the whole file) — and the metadata-only update of a file whose data is in sync.
//!
//! Names are resolved as everywhere in the destination: one component at a time beneath it,
//! never through a symlink. A comparison creates nothing (a missing directory means the
//! entry is new), and a dry run changes nothing.

use super::dest::{times, Destination, Existing, Refusal};
use crate::digest::Digester;
use rdmaft_protocol::{Changes, Digest, EntryKind};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use std::fs::File;
use std::os::fd::AsFd;

/// A sender's entry, as the receiver compares it.
#[derive(Clone, Copy, Debug)]
pub struct SyncEntry<'a> {
    /// Its name below the destination.
    pub name: &'a str,
    /// File (or part of one: the whole file is compared), directory or link.
    pub kind: EntryKind,
    /// The whole file's size.
    pub size: u64,
    /// The sender's permission bits.
    pub mode: u32,
    /// The sender's mtime.
    pub mtime: (i64, u32),
    /// Compare content with this digest of the sender's file instead of the mtime.
    pub content: Option<Digest>,
    /// A link's target (empty for other kinds).
    pub target: &'a [u8],
    /// Change nothing.
    pub dry_run: bool,
}

/// What the comparison found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compared {
    /// The receiver's copy has the sender's data; `Changes` is the metadata updated (or, in
    /// a dry run, that would be).
    InSync(Changes),
    /// The entry must be sent: how the copy differs.
    Differs(Changes),
}

impl Destination {
    /// Compares `entry` with what the destination holds under its name, and in sync but
    /// for its mode (or, with a content check, its mtime) gives the copy the sender's.
    /// With no-clobber an existing file's metadata is left alone: it differs, and the
    /// offer that follows is refused (`EXISTS`).
    pub fn compare(&self, entry: &SyncEntry<'_>) -> Result<Compared, Refusal> {
        Self::check_name(entry.name)?;
        let errno = |e| Refusal::from_errno(entry.name, e);
        let (parent, last) = match self.find_parent(entry.name) {
            Ok(found) => found,
            Err(Errno::NOENT) => return Ok(Compared::Differs(Changes::NEW)),
            // A file or a symlink where a directory should be.
            Err(Errno::NOTDIR | Errno::LOOP) => return Ok(Compared::Differs(Changes::KIND)),
            Err(e) => return Err(errno(e)),
        };
        let st = match rfs::statat(&parent, last, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(Compared::Differs(Changes::NEW)),
            Err(e) => return Err(errno(e)),
        };
        let want = match entry.kind {
            EntryKind::File => FileType::RegularFile,
            EntryKind::Directory => FileType::Directory,
            EntryKind::Symlink => FileType::Symlink,
        };
        if FileType::from_raw_mode(st.st_mode) != want {
            return Ok(Compared::Differs(Changes::KIND));
        }
        let meta = self.metadata_changes(&st, entry);
        if entry.kind == EntryKind::Symlink {
            return self.compare_link(&parent, last, entry, meta);
        }
        if entry.kind == EntryKind::Directory {
            // No-clobber leaves a directory that exists as it is. Otherwise one whose mode
            // or mtime differs is taken as any directory entry is (they are set then); a
            // dry run says it would update them.
            return Ok(match meta {
                _ if self.options().existing == Existing::Keep => {
                    Compared::InSync(Changes::empty())
                }
                m if m.is_empty() || entry.dry_run => Compared::InSync(m),
                m => Compared::Differs(m),
            });
        }
        if st.st_size as u64 != entry.size {
            return Ok(Compared::Differs(Changes::SIZE | (meta & Changes::MTIME)));
        }
        let file = match entry.content {
            // Quick: size and mtime decide; only the mode may be updated.
            None if meta.contains(Changes::MTIME) => return Ok(Compared::Differs(meta)),
            None if meta.is_empty() => return Ok(Compared::InSync(meta)),
            None => None,
            Some(sent) => {
                let file = open_file_beneath(&parent, last).map_err(errno)?;
                let mut digest = Digester::new(sent.kind);
                digest
                    .update_from_file(&file, entry.size)
                    .map_err(|e| Refusal::io(entry.name, "reading it to compare", e))?;
                if digest.finish() != sent.canonical() {
                    return Ok(Compared::Differs(Changes::CONTENT | meta));
                }
                Some(file)
            }
        };
        if meta.is_empty() {
            return Ok(Compared::InSync(meta));
        }
        if self.options().existing == Existing::Keep {
            return Ok(Compared::Differs(meta));
        }
        if !entry.dry_run {
            let file = match file {
                Some(f) => f,
                None => open_file_beneath(&parent, last).map_err(errno)?,
            };
            self.apply(&file, entry).map_err(errno)?;
        }
        Ok(Compared::InSync(meta))
    }

    /// A link of the same target is in sync, its mtime set if it differs (a link's mode
    /// means nothing on Linux); one of another target is replaced.
    fn compare_link(
        &self,
        dir: &impl AsFd,
        last: &str,
        entry: &SyncEntry<'_>,
        meta: Changes,
    ) -> Result<Compared, Refusal> {
        let errno = |e| Refusal::from_errno(entry.name, e);
        let meta = meta & Changes::MTIME;
        if Self::link_target(dir, last).map_err(errno)? != entry.target {
            return Ok(Compared::Differs(Changes::CONTENT | meta));
        }
        if meta.is_empty() {
            return Ok(Compared::InSync(meta));
        }
        if self.options().existing == Existing::Keep {
            return Ok(Compared::Differs(meta));
        }
        if !entry.dry_run {
            Self::touch_link(dir, last, entry.mtime).map_err(errno)?;
        }
        Ok(Compared::InSync(meta))
    }

    /// How the copy's mode and mtime differ from the entry's (the mode after this
    /// destination's policy, as it would be applied).
    fn metadata_changes(&self, st: &Stat, entry: &SyncEntry<'_>) -> Changes {
        let mut c = Changes::empty();
        if st.st_mode & 0o777 != self.perms(entry.mode).bits() {
            c |= Changes::MODE;
        }
        let mtime = (st.st_mtime as i64, st.st_mtime_nsec as u32);
        if mtime != entry.mtime {
            c |= Changes::MTIME;
        }
        c
    }

    /// Gives the open file or directory the entry's mode and mtime.
    fn apply(&self, fd: &impl AsFd, entry: &SyncEntry<'_>) -> Result<(), Errno> {
        rfs::fchmod(fd, self.perms(entry.mode))?;
        rfs::futimens(fd, &times(entry.mtime))
    }
}

/// Opens the regular file `name` in `dir` for reading, never through a symlink.
fn open_file_beneath(dir: &impl AsFd, name: &str) -> Result<File, Errno> {
    let fd = rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )?;
    // Not a FIFO or device put there since the stat (NONBLOCK kept the open from hanging).
    if FileType::from_raw_mode(rfs::fstat(&fd)?.st_mode) != FileType::RegularFile {
        return Err(Errno::NOTSUP);
    }
    Ok(File::from(fd))
}
