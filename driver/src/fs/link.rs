//! Symbolic links carried as links (`send --links`, PROTOCOL.md §4.1 `LINKS`).
//!
//! The receiver creates a link with the target as sent and never follows it itself: names
//! are resolved beneath the destination without following links, so a link cannot lead a
//! later file outside. What it refuses, unless told otherwise (`recv
//! --allow-unsafe-links`), is a link that would lead *others* outside: an absolute target,
//! one that climbs above the destination from the link's own directory, or one with a `..`
//! after a name (`x/..`). That last rule is stricter than rsync's `--safe-links`, which
//! reads targets lexically and so can be escaped by chaining links (a link `up -> ..` at
//! the top, then `l -> up/..`): with `..` only as a leading run, every link the receiver
//! made resolves, through any other such links, to a place inside the destination.
//!
//! A link is made under a fresh reserved name, given its mtime, then renamed onto its name:
//! what was there is replaced at once (with no-clobber only a free name is taken), and a
//! failed link leaves nothing behind.

use super::dest::{times, Destination, Existing, Refusal};
use super::temp::temp_name;
use rdmaft_protocol::FileRejectReason;
use rustix::fs::{self as rfs, AtFlags, FileType, RenameFlags};
use rustix::io::Errno;

/// Whether a link named `name` (below the destination) with `target` stays inside the
/// destination whatever other links it passes through: the target is relative, its `..`
/// components come first (none after a name, which could be a link), and there are no
/// more of them than directories between the destination and the link.
pub fn is_safe_link(name: &str, target: &[u8]) -> bool {
    if target.first() == Some(&b'/') || target.is_empty() {
        return false;
    }
    // How deep the link's directory is below the destination.
    let mut depth = name.split('/').count() - 1;
    let mut past_names = false;
    for component in target.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." if past_names => return false,
            b".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            _ => past_names = true,
        }
    }
    true
}

impl Destination {
    /// Makes `name` a symbolic link to `target` with `mtime` (never through a symlink,
    /// directories made as files need them). Replaces what is there but a directory; with
    /// no-clobber only a free name is taken.
    pub fn make_link(&self, name: &str, target: &[u8], mtime: (i64, u32)) -> Result<(), Refusal> {
        Self::check_name(name)?;
        let (parent, last) = self.parent_of(name)?;
        let errno = |e| Refusal::from_errno(name, e);
        match rfs::statat(&parent, last, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                return Err(Refusal::new(
                    FileRejectReason::EXISTS,
                    format!("{name} is a directory"),
                ));
            }
            Ok(_) if self.options().existing == Existing::Keep => {
                return Err(Refusal::new(
                    FileRejectReason::EXISTS,
                    format!("{name} exists"),
                ));
            }
            Ok(_) | Err(Errno::NOENT) => {}
            Err(e) => return Err(errno(e)),
        }
        let temp = temp_name();
        rfs::symlinkat(target, &*parent, temp.as_str()).map_err(errno)?;
        let placed = rfs::utimensat(
            &*parent,
            temp.as_str(),
            &times(mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .and_then(|()| match self.options().existing {
            Existing::Replace => rfs::renameat(&*parent, temp.as_str(), &*parent, last),
            Existing::Keep => rfs::renameat_with(
                &*parent,
                temp.as_str(),
                &*parent,
                last,
                RenameFlags::NOREPLACE,
            ),
        });
        if let Err(e) = placed {
            let _ = rfs::unlinkat(&*parent, temp.as_str(), AtFlags::empty());
            return Err(errno(e));
        }
        if self.options().fsync {
            self.sync_dir(&parent).map_err(errno)?;
        }
        Ok(())
    }

    /// The target of the link `last` in `dir` (`EINVAL` when it is not a link).
    pub(super) fn link_target(dir: &impl rustix::fd::AsFd, last: &str) -> Result<Vec<u8>, Errno> {
        rfs::readlinkat(dir, last, Vec::new()).map(|t| t.into_bytes())
    }

    /// Gives the link `last` in `dir` the mtime `mtime`, not following it.
    pub(super) fn touch_link(
        dir: &impl rustix::fd::AsFd,
        last: &str,
        mtime: (i64, u32),
    ) -> Result<(), Errno> {
        rfs::utimensat(dir, last, &times(mtime), AtFlags::SYMLINK_NOFOLLOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::dest::DestOptions;
    use std::os::unix::fs::MetadataExt;

    #[test]
    // spec-test: [link.unsafe]
    fn safe_links_stay_below_the_destination() {
        for (name, target) in [
            ("l", "x"),
            ("l", "./x/y"),
            ("d/l", "../x"),
            ("d/e/l", "../../x"),
            ("d/e/l", "./.././../x"),
            ("d/l", "x//y/"),
        ] {
            assert!(is_safe_link(name, target.as_bytes()), "{name} -> {target}");
        }
        for (name, target) in [
            ("l", "/etc/passwd"),
            ("l", ".."),
            ("l", "../x"),
            ("d/l", "../../x"),
            ("d/l", "x/../../../y"),
            ("d/e/l", "../../../x"),
            ("l", ""),
            // `..` after a name: `up` may be a link (`up -> ..` at the top, then this
            // climbs out), so it is refused even where it reads as inside.
            ("l", "up/.."),
            ("d/l", "x/../y"),
            ("d/l", "e/../../x"),
        ] {
            assert!(!is_safe_link(name, target.as_bytes()), "{name} -> {target}");
        }
    }

    fn dest(name: &str, existing: Existing) -> (std::path::PathBuf, Destination) {
        let dir = crate::fs::scratch_dir("link", name);
        let options = DestOptions {
            existing,
            ..DestOptions::default()
        };
        let d = Destination::open(&dir, options).unwrap();
        (dir, d)
    }

    #[test]
    fn a_link_is_made_replaced_and_never_followed() {
        let (dir, d) = dest("made", Existing::Replace);
        d.make_link("a/l", b"../t", (1_600_000_000, 7)).unwrap();
        let path = dir.join("a/l");
        assert_eq!(std::fs::read_link(&path).unwrap().as_os_str(), "../t");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_600_000_000, 7));
        // Replaced, a file as well as a link; never a directory.
        d.make_link("a/l", b"other", (1, 0)).unwrap();
        assert_eq!(std::fs::read_link(&path).unwrap().as_os_str(), "other");
        std::fs::write(dir.join("a/f"), b"x").unwrap();
        d.make_link("a/f", b"l", (1, 0)).unwrap();
        assert!(std::fs::symlink_metadata(dir.join("a/f"))
            .unwrap()
            .is_symlink());
        std::fs::create_dir(dir.join("a/d")).unwrap();
        let r = d.make_link("a/d", b"l", (1, 0)).unwrap_err();
        assert_eq!(r.reason, FileRejectReason::EXISTS);
        // A link in the way of a directory is not followed.
        std::os::unix::fs::symlink(&dir, dir.join("up")).unwrap();
        assert!(d.make_link("up/l", b"x", (1, 0)).is_err());
        assert!(!dir.join("l").exists());
        // Nothing of ours is left behind.
        let left: Vec<_> = std::fs::read_dir(dir.join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(left.iter().all(|n| !n.starts_with(".rdmaft-")), "{left:?}");
    }

    #[test]
    fn no_clobber_takes_only_a_free_name() {
        let (dir, d) = dest("keep", Existing::Keep);
        std::fs::write(dir.join("f"), b"x").unwrap();
        let r = d.make_link("f", b"t", (1, 0)).unwrap_err();
        assert_eq!(r.reason, FileRejectReason::EXISTS);
        assert_eq!(std::fs::read(dir.join("f")).unwrap(), b"x");
        d.make_link("g", b"t", (1, 0)).unwrap();
        assert!(std::fs::symlink_metadata(dir.join("g"))
            .unwrap()
            .is_symlink());
    }
}
