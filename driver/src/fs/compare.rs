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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::dest::DestOptions;
    use rdmaft_protocol::DigestKind;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    const MTIME: (i64, u32) = (1_700_000_000, 123_456_789);

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rdmaft-compare-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A destination in `d` that applies modes as sent (no umask in the way).
    fn open(d: &Path, existing: Existing) -> Destination {
        let options = DestOptions {
            existing,
            preserve_perms: true,
            ..DestOptions::default()
        };
        Destination::open(d, options).unwrap()
    }

    fn set_mtime(path: &Path, (sec, nsec): (i64, u32)) {
        let at = std::time::UNIX_EPOCH + std::time::Duration::new(sec as u64, nsec);
        std::fs::File::open(path).unwrap().set_modified(at).unwrap();
    }

    fn mtime_of(path: &Path) -> (i64, u32) {
        let st = rfs::lstat(path).unwrap();
        (st.st_mtime as i64, st.st_mtime_nsec as u32)
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    /// A file `name` in `d` with `body`, mode 0o644 and [`MTIME`].
    fn file(d: &Path, name: &str, body: &[u8]) -> PathBuf {
        let p = d.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        set_mtime(&p, MTIME);
        p
    }

    fn entry(name: &str, kind: EntryKind, size: u64) -> SyncEntry<'_> {
        SyncEntry {
            name,
            kind,
            size,
            mode: 0o644,
            mtime: MTIME,
            content: None,
            target: &[],
            dry_run: false,
        }
    }

    #[test]
    fn a_missing_name_is_new_and_another_kind_differs_in_kind() {
        let d = scratch("new");
        let dest = open(&d, Existing::Replace);
        let e = entry("f", EntryKind::File, 1);
        assert_eq!(dest.compare(&e).unwrap(), Compared::Differs(Changes::NEW));
        let e = entry("no/f", EntryKind::File, 1);
        assert_eq!(dest.compare(&e).unwrap(), Compared::Differs(Changes::NEW));
        std::fs::create_dir(d.join("f")).unwrap();
        let e = entry("f", EntryKind::File, 1);
        assert_eq!(dest.compare(&e).unwrap(), Compared::Differs(Changes::KIND));
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Quick: size and mtime decide. Another size differs in size (and in mtime when that
    /// differs too, never in mode); another mtime differs; only another mode is updated
    /// and in sync (not in a dry run, not with no-clobber, which leaves it differing).
    #[test]
    fn a_quick_comparison_goes_by_size_and_mtime_and_updates_only_the_mode() {
        let d = scratch("quick");
        let dest = open(&d, Existing::Replace);
        let p = file(&d, "f", b"abc");
        let e = entry("f", EntryKind::File, 3);
        assert_eq!(
            dest.compare(&e).unwrap(),
            Compared::InSync(Changes::empty())
        );
        let other_mode = SyncEntry { mode: 0o600, ..e };
        let bigger = SyncEntry {
            size: 4,
            ..other_mode
        };
        assert_eq!(
            dest.compare(&bigger).unwrap(),
            Compared::Differs(Changes::SIZE)
        );
        let later = SyncEntry {
            mtime: (MTIME.0, MTIME.1 + 1),
            ..bigger
        };
        assert_eq!(
            dest.compare(&later).unwrap(),
            Compared::Differs(Changes::SIZE | Changes::MTIME)
        );
        let touched = SyncEntry {
            mtime: (MTIME.0 + 1, MTIME.1),
            ..e
        };
        assert_eq!(
            dest.compare(&touched).unwrap(),
            Compared::Differs(Changes::MTIME)
        );
        let both = SyncEntry {
            mode: 0o600,
            ..touched
        };
        assert_eq!(
            dest.compare(&both).unwrap(),
            Compared::Differs(Changes::MTIME | Changes::MODE)
        );
        let dry = SyncEntry {
            dry_run: true,
            ..other_mode
        };
        assert_eq!(dest.compare(&dry).unwrap(), Compared::InSync(Changes::MODE));
        assert_eq!(mode_of(&p), 0o644, "a dry run changes nothing");
        let keep = open(&d, Existing::Keep);
        assert_eq!(
            keep.compare(&other_mode).unwrap(),
            Compared::Differs(Changes::MODE)
        );
        assert_eq!(mode_of(&p), 0o644, "no-clobber changes nothing");
        assert_eq!(
            dest.compare(&other_mode).unwrap(),
            Compared::InSync(Changes::MODE)
        );
        assert_eq!(mode_of(&p), 0o600, "the mode was updated");
        assert_eq!(mtime_of(&p), MTIME);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// With a digest: the content decides, and the mtime is updated like the mode.
    #[test]
    fn a_content_comparison_goes_by_the_digest_and_updates_the_mtime() {
        let d = scratch("content");
        let dest = open(&d, Existing::Replace);
        let p = file(&d, "f", b"abc");
        let sum = |b: &[u8]| {
            let mut h = Digester::new(DigestKind::Xxh3_128);
            h.update(b);
            h.finish()
        };
        let later = (MTIME.0 + 5, 0);
        let same = SyncEntry {
            content: Some(sum(b"abc")),
            mtime: later,
            ..entry("f", EntryKind::File, 3)
        };
        let other = SyncEntry {
            content: Some(sum(b"abd")),
            ..same
        };
        assert_eq!(
            dest.compare(&other).unwrap(),
            Compared::Differs(Changes::CONTENT | Changes::MTIME)
        );
        assert_eq!(
            dest.compare(&same).unwrap(),
            Compared::InSync(Changes::MTIME)
        );
        assert_eq!(mtime_of(&p), later, "the mtime was updated");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A directory that exists is in sync once it has the entry's mode and mtime (set by
    /// its entry, so it differs until then; a dry run says it would update them); with
    /// no-clobber it is left as it is.
    #[test]
    fn a_directory_differs_in_its_metadata_unless_no_clobber() {
        let d = scratch("dir");
        std::fs::create_dir(d.join("s")).unwrap();
        std::fs::set_permissions(d.join("s"), std::fs::Permissions::from_mode(0o755)).unwrap();
        set_mtime(&d.join("s"), MTIME);
        let dest = open(&d, Existing::Replace);
        let e = SyncEntry {
            mode: 0o755,
            ..entry("s", EntryKind::Directory, 0)
        };
        assert_eq!(
            dest.compare(&e).unwrap(),
            Compared::InSync(Changes::empty())
        );
        let other = SyncEntry { mode: 0o700, ..e };
        assert_eq!(
            dest.compare(&other).unwrap(),
            Compared::Differs(Changes::MODE)
        );
        let dry = SyncEntry {
            dry_run: true,
            ..other
        };
        assert_eq!(dest.compare(&dry).unwrap(), Compared::InSync(Changes::MODE));
        let keep = open(&d, Existing::Keep);
        assert_eq!(
            keep.compare(&other).unwrap(),
            Compared::InSync(Changes::empty())
        );
        assert_eq!(mode_of(&d.join("s")), 0o755);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A link goes by its target; its mtime is updated, its mode means nothing.
    #[test]
    fn a_link_goes_by_its_target_and_only_its_mtime_is_updated() {
        let d = scratch("link");
        std::os::unix::fs::symlink("there", d.join("l")).unwrap();
        let dest = open(&d, Existing::Replace);
        let later = (MTIME.0 + 7, 0);
        let e = SyncEntry {
            target: b"there",
            mode: 0o600,
            mtime: later,
            ..entry("l", EntryKind::Symlink, 5)
        };
        let elsewhere = SyncEntry {
            target: b"elsewhere",
            size: 9,
            ..e
        };
        assert_eq!(
            dest.compare(&elsewhere).unwrap(),
            Compared::Differs(Changes::CONTENT | Changes::MTIME)
        );
        let keep = open(&d, Existing::Keep);
        assert_eq!(keep.compare(&e).unwrap(), Compared::Differs(Changes::MTIME));
        assert_eq!(dest.compare(&e).unwrap(), Compared::InSync(Changes::MTIME));
        assert_eq!(mtime_of(&d.join("l")), later, "the link's own mtime");
        assert_eq!(
            dest.compare(&e).unwrap(),
            Compared::InSync(Changes::empty())
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The descriptor a content comparison reads from: never through a link, never a FIFO
    /// (without hanging on it), and not inherited by children.
    #[test]
    fn files_are_opened_beneath_without_following_links_or_blocking() {
        let d = scratch("open");
        file(&d, "f", b"abc");
        std::os::unix::fs::symlink("f", d.join("l")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            d.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let dir = File::open(&d).unwrap();
        let f = open_file_beneath(&dir, "f").unwrap();
        let flags = rustix::io::fcntl_getfd(&f).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        assert_eq!(open_file_beneath(&dir, "l").unwrap_err(), Errno::LOOP);
        assert_eq!(open_file_beneath(&dir, "fifo").unwrap_err(), Errno::NOTSUP);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
