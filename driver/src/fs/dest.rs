//! Where the receiver writes: the destination directory, and every name resolved beneath it
//! one component at a time with `O_NOFOLLOW`, so no symlink (planted by anyone) is ever
//! followed and nothing is created outside the directory.
//!
//! A file's data goes to a temporary file in the file's final directory (unnamed where the
//! file system allows it, else created exclusively under a reserved name: `fs/temp.rs`);
//! only after its digest matched does it get its mtime and its final name, and its mode
//! unless it was created with it (an unnamed file, which nobody can open, where the kernel
//! gives it exactly those bits). A file therefore never appears under its final name
//! unverified, and a failed one leaves nothing behind. Names in the receiver's reserved space ([`RESERVED_PREFIX`], its temporary and
//! partial files) are refused.
//!
//! Modes: the sender's permission bits less the receiver's umask (read once, when the
//! destination opens), or as sent with [`DestOptions::preserve_perms`]; never setuid, setgid
//! or sticky. Directories are made as files need them; a directory's own entry (which a
//! sender sends after everything in it) gives it its mode and mtime, except that with
//! no-clobber a directory that existed before is left as it was.

use super::temp::{partial_name, reserved_component, take_partial, TempFiles, TempName};
use rdmaft_protocol::FileRejectReason;
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::ops::Deref;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

pub use super::temp::RESERVED_PREFIX;

/// Why the receiver refuses an entry: the reason for the peer, and a detail for the log.
#[derive(Debug)]
pub struct Refusal {
    /// The reason sent in the file answer.
    pub reason: FileRejectReason,
    /// What happened, for humans.
    pub detail: String,
    /// The system's error, when one caused it.
    pub errno: Option<Errno>,
}

impl Refusal {
    pub(crate) fn new(reason: FileRejectReason, detail: impl Into<String>) -> Self {
        Refusal {
            reason,
            errno: None,
            detail: detail.into(),
        }
    }

    /// A failed read or write of `name` while `doing` something.
    pub(crate) fn io(name: &str, doing: &str, e: io::Error) -> Self {
        Refusal {
            reason: FileRejectReason::IO,
            errno: e.raw_os_error().map(Errno::from_raw_os_error),
            detail: format!("{name}: {doing}: {e}"),
        }
    }

    pub(super) fn from_errno(what: &str, e: Errno) -> Self {
        let reason = match e {
            Errno::ACCESS | Errno::PERM | Errno::ROFS => FileRejectReason::PERMISSION_DENIED,
            Errno::NOSPC | Errno::DQUOT => FileRejectReason::NO_SPACE,
            Errno::LOOP => FileRejectReason::PERMISSION_DENIED,
            Errno::NOTDIR | Errno::EXIST | Errno::ISDIR => FileRejectReason::EXISTS,
            Errno::NAMETOOLONG => FileRejectReason::INVALID_NAME,
            Errno::FBIG => FileRejectReason::TOO_LARGE,
            _ => FileRejectReason::IO,
        };
        let detail = if e == Errno::LOOP {
            format!("{what}: a symbolic link is in the way (never followed)")
        } else {
            format!("{what}: {}", io::Error::from(e))
        };
        Refusal {
            reason,
            detail,
            errno: Some(e),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason, self.detail)
    }
}

/// How the destination treats names that exist already.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Existing {
    /// Replace an existing file (atomically, by a rename); give an existing directory the
    /// sender's mode and mtime.
    #[default]
    Replace,
    /// Refuse the file (`EXISTS`); leave an existing directory as it is.
    Keep,
}

/// How a destination writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestOptions {
    /// What to do with names that exist already.
    pub existing: Existing,
    /// `fsync` each file before publishing it and its directory after, and the parent of
    /// each directory the receiver creates, so that a crash loses no published name.
    pub fsync: bool,
    /// Apply the sender's permission bits as sent (never setuid, setgid or sticky) instead
    /// of clearing the receiver's umask from them.
    pub preserve_perms: bool,
    /// Receive into unnamed (`O_TMPFILE`) files where the file system allows it (the
    /// default); `false`: always into named temporary files (`.rdmaft-<host>-<pid>-<n>.part`).
    pub unnamed_temp_files: bool,
    /// Make symbolic links whose target is absolute or climbs out of the destination
    /// (`recv --allow-unsafe-links`); by default they are refused (`UNSAFE_LINK`).
    pub unsafe_links: bool,
}

impl Default for DestOptions {
    fn default() -> Self {
        DestOptions {
            existing: Existing::Replace,
            fsync: false,
            preserve_perms: false,
            unnamed_temp_files: true,
            unsafe_links: false,
        }
    }
}

/// The receive directory.
#[derive(Debug)]
pub struct Destination {
    root: OwnedFd,
    options: DestOptions,
    /// The permission bits to clear from the sender's (the process's umask when the
    /// destination was opened; 0 with `preserve_perms`).
    umask: u32,
    /// The process's umask when the destination was opened: what the kernel clears from the
    /// mode a file is created with (where no default ACL takes its place).
    process_umask: u32,
    temp: TempFiles,
    /// Directories already opened beneath the root, by relative path: the files of a tree
    /// mostly share parents, and opening one component by component costs two system calls
    /// per level per file. A cached descriptor keeps naming the directory it was opened as
    /// (never a symlink put there later).
    dirs: Mutex<HashMap<String, Arc<Dir>>>,
    /// With [`Existing::Keep`]: directories this destination created (device and inode)
    /// whose own entry has not come yet. A sender sends a directory's entry after its
    /// contents, so the directory is usually made for its first file; its entry must still
    /// give it its mode and mtime, while one that existed before is left alone.
    created: Mutex<HashSet<(u64, u64)>>,
    /// Directories synced, for the tests.
    #[cfg(test)]
    synced: Mutex<Vec<(u64, u64)>>,
}

/// Directories kept open per destination; past this the cache starts over.
const DIR_CACHE_MAX: usize = 64;

/// Created directories remembered (16 bytes each) until their entry comes; past this the
/// set starts over, and the entries of the directories forgotten leave them as created
/// (mode 0o755 less the umask, mtime of the last change).
const CREATED_MAX: usize = 1 << 20;

/// A file being received: its temporary file, open for writing.
#[derive(Debug)]
pub struct Incoming {
    parent: Arc<Dir>,
    final_name: String,
    temp: TempName,
    /// The temporary file (open for reading and writing).
    pub file: File,
}

impl Incoming {
    /// Whether no other process can reach the file: an unnamed (`O_TMPFILE`) file is known
    /// only through this descriptor, so what was written to it is all it holds.
    pub fn is_private(&self) -> bool {
        matches!(self.temp, TempName::Unnamed(_))
    }
}

/// A directory beneath the root as the cache keeps it (it reads as its descriptor).
#[derive(Debug)]
pub(super) struct Dir {
    fd: OwnedFd,
    /// Whether it has no default ACL, found when first asked.
    plain: OnceLock<bool>,
}

impl Deref for Dir {
    type Target = OwnedFd;

    fn deref(&self) -> &OwnedFd {
        &self.fd
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Dir {
    /// Whether a file created here gets the mode it is created with less the umask: the
    /// directory has no default ACL, which would take the umask's place (a file system
    /// without extended attributes has none).
    fn is_plain(&self) -> bool {
        *self.plain.get_or_init(|| {
            matches!(
                rfs::fgetxattr(&self.fd, "system.posix_acl_default", &mut []),
                Err(Errno::NODATA | Errno::OPNOTSUPP)
            )
        })
    }
}

/// Files below this size skip the checks that only spare a doomed file's data the trip, each
/// a system call per file: the free-space check (a small file that does not fit fails its
/// write with `NO_SPACE` all the same) and, when existing files are replaced, the look at
/// what has the name now (a directory there fails the publish all the same, nothing left
/// behind). Large ones are refused before a byte moves.
pub const EARLY_CHECK_MIN: u64 = 1 << 20;

impl Destination {
    /// Opens `dir` (which must exist and be a directory; a symlink naming it is followed,
    /// since the user chose it). The umask applied to senders' modes is read now.
    pub fn open(dir: &Path, options: DestOptions) -> io::Result<Destination> {
        let root = rfs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let process_umask = super::perms::process_umask();
        Ok(Destination {
            root,
            options,
            umask: if options.preserve_perms {
                0
            } else {
                process_umask
            },
            process_umask,
            temp: TempFiles::new(options.unnamed_temp_files),
            dirs: Mutex::new(HashMap::new()),
            created: Mutex::new(HashSet::new()),
            #[cfg(test)]
            synced: Mutex::new(Vec::new()),
        })
    }

    /// The destination directory.
    pub(crate) fn root(&self) -> &OwnedFd {
        &self.root
    }

    /// How it writes.
    pub fn options(&self) -> DestOptions {
        self.options
    }

    /// The permission bits to apply for a sender's `mode`.
    pub(super) fn perms(&self, mode: u32) -> Mode {
        Mode::from_raw_mode(mode & 0o777 & !self.umask)
    }

    /// The refusal of a name in the receiver's reserved space.
    pub(super) fn check_name(name: &str) -> Result<(), Refusal> {
        match reserved_component(name) {
            Some(c) => Err(Refusal::new(
                FileRejectReason::INVALID_NAME,
                format!(
                    "{name}: {c:?} is in the receiver's reserved name space \
                     (\"{RESERVED_PREFIX}*\", its temporary and partial files)"
                ),
            )),
            None => Ok(()),
        }
    }

    /// `fsync`s directory `dir`.
    pub(super) fn sync_dir(&self, dir: &OwnedFd) -> Result<(), Errno> {
        rfs::fsync(dir)?;
        #[cfg(test)]
        crate::sync::lock_std(&self.synced).push(dev_ino(dir)?);
        Ok(())
    }

    /// With no-clobber, the directories this destination created (see `created`), locked
    /// from a `mkdirat` until what it made is remembered, or until a directory's entry
    /// looked its directory up: else one connection's entry could find a directory another
    /// connection (another shard's sender) just made for a file, not yet remembered, and
    /// take it for one that existed before.
    fn created_lock(&self) -> Option<MutexGuard<'_, HashSet<(u64, u64)>>> {
        (self.options.existing == Existing::Keep).then(|| crate::sync::lock_std(&self.created))
    }

    /// The directory holding `name`'s last component, opened beneath the root without
    /// following symlinks; missing directories are created (mode 0o755, then the umask).
    pub(super) fn parent_of<'n>(&self, name: &'n str) -> Result<(Arc<Dir>, &'n str), Refusal> {
        let dir_path = name.rsplit_once('/').map_or("", |(d, _)| d);
        if let Some(dir) = crate::sync::lock_std(&self.dirs).get(dir_path) {
            let last = name.rsplit('/').next().unwrap_or(name);
            return Ok((Arc::clone(dir), last));
        }
        let (dir, last) = self.open_parent(name)?;
        Ok((self.cache_dir(dir_path, dir), last))
    }

    /// The directory holding `name`'s last component, looked up beneath the root without
    /// following symlinks and without creating anything (`NOENT` when one is missing).
    pub(super) fn find_parent<'n>(&self, name: &'n str) -> Result<(Arc<Dir>, &'n str), Errno> {
        let (dir_path, last) = name.rsplit_once('/').unwrap_or(("", name));
        if let Some(dir) = crate::sync::lock_std(&self.dirs).get(dir_path) {
            return Ok((Arc::clone(dir), last));
        }
        let mut dir = open_dir_beneath(&self.root, ".")?;
        if !dir_path.is_empty() {
            for component in dir_path.split('/') {
                dir = open_dir_beneath(&dir, component)?;
            }
        }
        Ok((self.cache_dir(dir_path, dir), last))
    }

    /// Keeps `dir`, opened as `dir_path`, for the next names in it (a sync compares every
    /// file of a directory, as a transfer writes them).
    fn cache_dir(&self, dir_path: &str, dir: OwnedFd) -> Arc<Dir> {
        let dir = Arc::new(Dir {
            fd: dir,
            plain: OnceLock::new(),
        });
        let mut dirs = crate::sync::lock_std(&self.dirs);
        if dirs.len() >= DIR_CACHE_MAX {
            dirs.clear();
        }
        dirs.insert(dir_path.to_owned(), Arc::clone(&dir));
        dir
    }

    /// Forgets the cached directories (one was removed or replaced under us).
    pub(super) fn forget_dirs(&self) {
        crate::sync::lock_std(&self.dirs).clear();
    }

    /// [`parent_of`](Self::parent_of) without the cache.
    fn open_parent<'n>(&self, name: &'n str) -> Result<(OwnedFd, &'n str), Refusal> {
        let mut parts = name.split('/').collect::<Vec<_>>();
        // The name was validated: at least one component, none empty, `.` or `..`.
        let last = parts
            .pop()
            .ok_or_else(|| Refusal::new(FileRejectReason::INVALID_NAME, "empty name"))?;
        let mut dir =
            open_dir_beneath(&self.root, ".").map_err(|e| Refusal::from_errno("destination", e))?;
        for (i, component) in parts.iter().enumerate() {
            let shown = parts[..=i].join("/");
            dir = match open_dir_beneath(&dir, *component) {
                Ok(d) => d,
                Err(Errno::NOENT) => {
                    let errno = |e| Refusal::from_errno(&shown, e);
                    let mut created = self.created_lock();
                    let made = match rfs::mkdirat(&dir, *component, Mode::from_raw_mode(0o755)) {
                        Ok(()) => true,
                        Err(Errno::EXIST) => false,
                        Err(e) => return Err(errno(e)),
                    };
                    let d = open_dir_beneath(&dir, *component).map_err(errno)?;
                    if made {
                        // With no-clobber, remembered as ours; with fsync, its name synced.
                        if let Some(created) = created.as_mut() {
                            if created.len() >= CREATED_MAX {
                                created.clear();
                            }
                            created.insert(dev_ino(&d).map_err(errno)?);
                        }
                        drop(created);
                        if self.options.fsync {
                            self.sync_dir(&dir).map_err(errno)?;
                        }
                    }
                    d
                }
                Err(e) => return Err(refusal_at(&dir, component, &shown, e)),
            };
        }
        Ok((dir, last))
    }

    /// Prepares to receive file `name` of `size` bytes and the sender's `mode`: the name
    /// checked (never one in the receiver's reserved space, [`RESERVED_PREFIX`]),
    /// directories created, the final name checked, space checked, a temporary file created
    /// in the final directory (an unnamed one with its final permission bits where it gets
    /// exactly those, which spares the publish a `fchmod`).
    pub fn begin_file(&self, name: &str, size: u64, mode: u32) -> Result<Incoming, Refusal> {
        self.begin(name, size, mode, None)
            .map(|(incoming, _)| incoming)
    }

    /// As [`begin_file`](Self::begin_file), but takes over the partial file an interrupted
    /// earlier transfer of the same `name`, `size` and `mtime` left (see
    /// [`keep_partial`](Self::keep_partial)), if there is one: the returned length is how
    /// much of it is there (0 for a fresh file). Taking it is a rename, so two connections
    /// never write one partial file; a partial file that is not a regular file with a single
    /// link owned by this process's effective user is removed, never taken over.
    pub fn resume_file(
        &self,
        name: &str,
        size: u64,
        mode: u32,
        mtime: (i64, u32),
    ) -> Result<(Incoming, u64), Refusal> {
        self.begin(name, size, mode, Some(mtime))
    }

    fn begin(
        &self,
        name: &str,
        size: u64,
        mode: u32,
        resume: Option<(i64, u32)>,
    ) -> Result<(Incoming, u64), Refusal> {
        Self::check_name(name)?;
        match self.begin_in_parent(name, size, mode, resume) {
            // A cached directory may have been removed since: look it up afresh, once.
            Err(r) if r.errno == Some(Errno::NOENT) => {
                self.forget_dirs();
                self.begin_in_parent(name, size, mode, resume)
            }
            other => other,
        }
    }

    fn begin_in_parent(
        &self,
        name: &str,
        size: u64,
        mode: u32,
        resume: Option<(i64, u32)>,
    ) -> Result<(Incoming, u64), Refusal> {
        let (parent, last) = self.parent_of(name)?;
        // With no-clobber an existing name is the common case, and its refusal is the answer.
        let look = self.options.existing == Existing::Keep || size >= EARLY_CHECK_MIN;
        match look.then(|| rfs::statat(&parent, last, AtFlags::SYMLINK_NOFOLLOW)) {
            None => {}
            Some(Ok(st))
                if rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory =>
            {
                return Err(Refusal::new(
                    FileRejectReason::EXISTS,
                    format!("{name} is a directory"),
                ));
            }
            Some(Ok(_)) if self.options.existing == Existing::Keep => {
                return Err(Refusal::new(
                    FileRejectReason::EXISTS,
                    format!("{name} exists"),
                ));
            }
            Some(Ok(_) | Err(Errno::NOENT)) => {}
            Some(Err(e)) => return Err(Refusal::from_errno(name, e)),
        }
        let vfs = (size >= EARLY_CHECK_MIN)
            .then(|| rfs::fstatvfs(&parent).ok())
            .flatten();
        if let Some(vfs) = vfs {
            let free = vfs.f_bavail.saturating_mul(vfs.f_frsize);
            if size > free {
                return Err(Refusal::new(
                    FileRejectReason::NO_SPACE,
                    format!("{name}: {size} bytes, {free} free"),
                ));
            }
        }
        if let Some(mtime) = resume {
            let partial = partial_name(last, size, mtime);
            if let Some((file, temp, len)) = take_partial(&parent, &partial, size) {
                let incoming = Incoming {
                    parent,
                    final_name: last.to_owned(),
                    temp,
                    file,
                };
                return Ok((incoming, len));
            }
        }
        let (file, temp) = self
            .temp
            .create(&parent, self.exact_mode(&parent, mode))
            .map_err(|e| {
                // A directory removed since it was cached refuses an unnamed file with EPERM:
                // say NOENT, so that `begin` looks it up afresh.
                let removed = rfs::fstat(&*parent).is_ok_and(|st| st.st_nlink == 0);
                Refusal::from_errno(name, if removed { Errno::NOENT } else { e })
            })?;
        Ok((
            Incoming {
                parent,
                final_name: last.to_owned(),
                temp,
                file,
            },
            0,
        ))
    }

    /// The permission bits to create a file of the sender's `mode` with in `dir`, where it
    /// gets exactly those: none of them is in the umask the kernel clears (the process's,
    /// read when the destination opened: an application that changes its umask while
    /// receiving may get fewer bits, never more) and no default ACL takes the umask's place.
    /// `None` otherwise: the publish sets them.
    fn exact_mode(&self, dir: &Dir, mode: u32) -> Option<Mode> {
        let perms = self.perms(mode);
        (perms.as_raw_mode() & self.process_umask == 0 && dir.is_plain()).then_some(perms)
    }

    /// Gives a verified file its mode and mtime and its final name: linked (an unnamed
    /// file) or renamed (a named one) onto it; with no-clobber only if the name is still
    /// free. With fsync, the file is synced before and its directory after.
    ///
    /// `Err` when the file did not get its name (nothing is left of it); `Ok(Some(e))` when
    /// it did but syncing its directory then failed (`e`): the file is there, verified, but
    /// a crash could still lose its name.
    pub fn publish(
        &self,
        incoming: Incoming,
        mode: u32,
        mtime: (i64, u32),
    ) -> io::Result<Option<io::Error>> {
        let named = (|| {
            let perms = self.perms(mode);
            // An unnamed file created with its bits has them already.
            if !matches!(incoming.temp, TempName::Unnamed(Some(given)) if given == perms) {
                rfs::fchmod(&incoming.file, perms)?;
            }
            rfs::futimens(&incoming.file, &times(mtime))?;
            if self.options.fsync {
                incoming.file.sync_all()?;
            }
            self.temp.publish(
                &incoming.parent,
                &incoming.file,
                &incoming.temp,
                &incoming.final_name,
                self.options.existing,
            )?;
            Ok(())
        })();
        if let Err(e) = named {
            self.discard(incoming);
            return Err(e);
        }
        if self.options.fsync {
            return Ok(self.sync_dir(&incoming.parent).err().map(io::Error::from));
        }
        Ok(None)
    }

    /// Keeps the first `written` bytes of an unfinished file (a prefix the sender may send
    /// again) under a hidden name derived from its final name, size and mtime, beside it, for
    /// [`resume_file`](Self::resume_file); nothing is kept when nothing was written. The
    /// prefix is not trusted: a resumed file is published only if the digest of the whole
    /// file, kept prefix included, matches the sender's.
    pub fn keep_partial(&self, incoming: Incoming, size: u64, mtime: (i64, u32), written: u64) {
        // A file created with the sender's bits (say 0o444) is kept as a temporary file
        // is: owner read and write only, so that the next transfer can open it to go on.
        let private = match incoming.temp {
            TempName::Unnamed(Some(mode)) if mode.as_raw_mode() != 0o600 => {
                rfs::fchmod(&incoming.file, Mode::from_raw_mode(0o600)).is_ok()
            }
            _ => true,
        };
        let kept = written > 0
            && private
            && incoming.file.set_len(written).is_ok()
            && self
                .temp
                .publish(
                    &incoming.parent,
                    &incoming.file,
                    &incoming.temp,
                    &partial_name(&incoming.final_name, size, mtime),
                    Existing::Replace,
                )
                .is_ok();
        if !kept {
            self.discard(incoming);
        }
    }

    /// Removes a temporary file that will not be published (an unnamed one goes with its
    /// descriptor).
    pub fn discard(&self, incoming: Incoming) {
        if let TempName::Named(temp) = &incoming.temp {
            let _ = rfs::unlinkat(&incoming.parent, temp.as_str(), AtFlags::empty());
        }
    }

    /// Creates directory `name` if missing (never through a symlink) and gives it its mode
    /// and mtime; with no-clobber a directory that existed before (not made by this
    /// destination) is left as it is.
    pub fn make_dir(&self, name: &str, mode: u32, mtime: (i64, u32)) -> Result<(), Refusal> {
        Self::check_name(name)?;
        let (parent, last) = self.parent_of(name)?;
        let errno = |e| Refusal::from_errno(name, e);
        let mut created = self.created_lock();
        let made = match rfs::mkdirat(&parent, last, Mode::from_raw_mode(0o700)) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(e) => return Err(errno(e)),
        };
        let dir =
            open_dir_beneath(&parent, last).map_err(|e| refusal_at(&parent, last, name, e))?;
        if let (false, Some(created)) = (made, created.as_mut()) {
            if !created.remove(&dev_ino(&dir).map_err(errno)?) {
                return Ok(());
            }
        }
        drop(created);
        if made && self.options.fsync {
            self.sync_dir(&parent).map_err(errno)?;
        }
        rfs::fchmod(&dir, self.perms(mode)).map_err(errno)?;
        rfs::futimens(&dir, &times(mtime)).map_err(errno)?;
        if self.options.fsync {
            self.sync_dir(&dir).map_err(errno)?;
        }
        Ok(())
    }
}

/// The device and inode of an open file.
fn dev_ino(fd: &OwnedFd) -> Result<(u64, u64), Errno> {
    let st = rfs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// The refusal for failing to open `component` of `dir` as a directory: a symlink there is
/// reported as such (the kernel says `ENOTDIR` or `ELOOP`).
fn refusal_at(dir: &OwnedFd, component: &str, shown: &str, e: Errno) -> Refusal {
    let is_link = rfs::statat(dir, component, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Symlink);
    if is_link {
        return Refusal::from_errno(shown, Errno::LOOP);
    }
    Refusal::from_errno(shown, e)
}

/// Opens directory `name` in `dir`, refusing to follow a symlink (`ELOOP`) or to open
/// anything but a directory (`ENOTDIR`).
pub(super) fn open_dir_beneath(
    dir: &impl AsFd,
    name: impl rustix::path::Arg,
) -> Result<OwnedFd, Errno> {
    // spec: [link.unsafe]
    rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

pub(super) fn times((sec, nsec): (i64, u32)) -> Timestamps {
    let t = Timespec {
        tv_sec: sec,
        tv_nsec: i64::from(nsec),
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::temp::LinkVia;
    use std::io::Write;
    use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
    use std::path::PathBuf;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rdmaft-dest-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A destination in `d`, with unnamed temporary files or not, and umask 0o022 whatever
    /// the process's is.
    fn open(d: &Path, existing: Existing, unnamed: bool) -> Destination {
        let options = DestOptions {
            existing,
            unnamed_temp_files: unnamed,
            ..DestOptions::default()
        };
        let mut dest = Destination::open(d, options).unwrap();
        dest.umask = 0o022;
        dest
    }

    /// Both temporary-file strategies: unnamed (`O_TMPFILE`, where `d`'s file system has
    /// it) and named (the fallback).
    const BOTH: [bool; 2] = [true, false];

    /// Whether the file system of `d` takes `O_TMPFILE` (asked directly, not through the
    /// code under test).
    fn has_tmpfile(d: &Path) -> bool {
        let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
        rfs::open(d, flags, Mode::from_raw_mode(0o600)).is_ok()
    }

    fn listing(d: &Path) -> Vec<String> {
        let mut v: Vec<_> = walk(d, d);
        v.sort();
        v
    }

    fn walk(root: &Path, d: &Path) -> Vec<String> {
        let mut out = vec![];
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if p.is_dir() && !p.is_symlink() {
                out.extend(walk(root, &p));
            }
        }
        out
    }

    fn reserved(d: &Path) -> Vec<String> {
        listing(d)
            .into_iter()
            .filter(|n| n.contains(RESERVED_PREFIX))
            .collect()
    }

    #[test]
    fn a_file_appears_only_when_published() {
        for unnamed in BOTH {
            let d = scratch(&format!("publish-{unnamed}"));
            let dest = open(&d, Existing::Replace, unnamed);
            let mut inc = dest.begin_file("a/b/f", 3, 0o644).unwrap();
            inc.file.write_all(b"abc").unwrap();
            let names = listing(&d);
            assert!(names.iter().all(|n| !n.ends_with("/f")), "{names:?}");
            if unnamed && has_tmpfile(&d) {
                assert!(matches!(inc.temp, TempName::Unnamed(_)));
                assert_eq!(names, ["a", "a/b"], "no name at all while it arrives");
            } else {
                assert!(
                    names.iter().any(|n| n.starts_with("a/b/.rdmaft-")),
                    "{names:?}"
                );
            }
            dest.publish(inc, 0o4640, (1_600_000_000, 5)).unwrap();
            assert_eq!(listing(&d), ["a", "a/b", "a/b/f"]);
            let meta = std::fs::metadata(d.join("a/b/f")).unwrap();
            assert_eq!(meta.permissions().mode() & 0o7777, 0o640, "no setuid");
            assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_600_000_000, 5));
            assert_eq!(std::fs::read(d.join("a/b/f")).unwrap(), b"abc");
            std::fs::remove_dir_all(&d).unwrap();
        }
    }

    #[test]
    fn both_ways_of_linking_a_descriptor_publish() {
        let d = scratch("link-via");
        if !has_tmpfile(&d) {
            return; // Nothing to link on this file system.
        }
        // Each way this process may use (AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH before
        // Linux 6.10; /proc/self/fd needs /proc).
        let root = rfs::open(&d, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let usable: Vec<LinkVia> = [LinkVia::EmptyPath, LinkVia::ProcFd]
            .into_iter()
            .filter(|&via| crate::fs::temp::link_works(via, &root))
            .collect();
        assert!(!usable.is_empty() || !Path::new("/proc/self/fd").exists());
        for via in usable {
            for existing in [Existing::Replace, Existing::Keep] {
                let dest = open(&d, existing, true);
                dest.temp.force_link_via(via);
                let name = format!("{via:?}-{existing:?}");
                let mut inc = dest.begin_file(&name, 2, 0o644).unwrap();
                assert!(matches!(inc.temp, TempName::Unnamed(_)));
                inc.file.write_all(b"ok").unwrap();
                dest.publish(inc, 0o644, (0, 0)).unwrap();
                assert_eq!(std::fs::read(d.join(&name)).unwrap(), b"ok", "{name}");
            }
        }
        assert!(reserved(&d).is_empty(), "{:?}", reserved(&d));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn discarded_files_leave_nothing() {
        for unnamed in BOTH {
            let d = scratch(&format!("discard-{unnamed}"));
            let dest = open(&d, Existing::Replace, unnamed);
            let inc = dest.begin_file("x", 0, 0o644).unwrap();
            dest.discard(inc);
            assert!(listing(&d).is_empty());
            std::fs::remove_dir_all(&d).unwrap();
        }
    }

    /// Only an unnamed file is private (nobody else can have written to it); a directory is
    /// the only thing a destination opens, and its root is not inherited by children.
    #[test]
    fn only_unnamed_files_are_private_and_the_root_must_be_a_directory() {
        for unnamed in BOTH {
            let d = scratch(&format!("private-{unnamed}"));
            let dest = open(&d, Existing::Replace, unnamed);
            let inc = dest.begin_file("f", 1, 0o644).unwrap();
            assert_eq!(inc.is_private(), matches!(inc.temp, TempName::Unnamed(_)));
            let flags = rustix::io::fcntl_getfd(&inc.file).unwrap();
            assert!(
                flags.contains(rustix::io::FdFlags::CLOEXEC),
                "children inherit it"
            );
            if !unnamed {
                assert!(!inc.is_private(), "a named temporary file is reachable");
            }
            dest.discard(inc);
            let flags = rustix::io::fcntl_getfd(&dest.root).unwrap();
            assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
            std::fs::write(d.join("file"), b"x").unwrap();
            let err = Destination::open(&d.join("file"), DestOptions::default()).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(Errno::NOTDIR.raw_os_error()));
            std::fs::remove_dir_all(&d).unwrap();
        }
    }

    /// A file never replaces a directory, whatever the policy: a large one (or any with
    /// no-clobber) is refused at once; a small one being replaced fails its publish, with
    /// nothing left behind. The directory is untouched.
    #[test]
    fn a_file_over_a_directory_is_refused() {
        for unnamed in BOTH {
            for existing in [Existing::Replace, Existing::Keep] {
                let d = scratch(&format!("over-dir-{existing:?}-{unnamed}"));
                std::fs::create_dir(d.join("sub")).unwrap();
                std::fs::write(d.join("sub/inside"), b"kept").unwrap();
                let dest = open(&d, existing, unnamed);
                let err = dest.begin_file("sub", EARLY_CHECK_MIN, 0o644).unwrap_err();
                assert_eq!(err.reason, FileRejectReason::EXISTS);
                assert!(err.detail.contains("is a directory"), "{err}");
                match dest.begin_file("sub", 1, 0o644) {
                    Err(err) => {
                        assert_eq!(existing, Existing::Keep);
                        assert_eq!(err.reason, FileRejectReason::EXISTS);
                        assert!(err.detail.contains("is a directory"), "{err}");
                    }
                    Ok(mut inc) => {
                        assert_eq!(existing, Existing::Replace, "not looked at");
                        inc.file.write_all(b"x").unwrap();
                        let err = dest.publish(inc, 0o644, (0, 0)).unwrap_err();
                        assert_eq!(err.raw_os_error(), Some(libc::EISDIR), "{err}");
                    }
                }
                assert_eq!(std::fs::read(d.join("sub/inside")).unwrap(), b"kept");
                assert_eq!(listing(&d), ["sub", "sub/inside"]);
                std::fs::remove_dir_all(&d).unwrap();
            }
        }
    }

    /// What the sender hears for each failure of the file system (the reject's reason),
    /// and that the text says what happened.
    #[test]
    fn errnos_map_to_the_reject_reasons_the_sender_hears() {
        let cases = [
            (Errno::ACCESS, FileRejectReason::PERMISSION_DENIED),
            (Errno::PERM, FileRejectReason::PERMISSION_DENIED),
            (Errno::ROFS, FileRejectReason::PERMISSION_DENIED),
            (Errno::LOOP, FileRejectReason::PERMISSION_DENIED),
            (Errno::NOSPC, FileRejectReason::NO_SPACE),
            (Errno::DQUOT, FileRejectReason::NO_SPACE),
            (Errno::NOTDIR, FileRejectReason::EXISTS),
            (Errno::EXIST, FileRejectReason::EXISTS),
            (Errno::ISDIR, FileRejectReason::EXISTS),
            (Errno::NAMETOOLONG, FileRejectReason::INVALID_NAME),
            (Errno::FBIG, FileRejectReason::TOO_LARGE),
            (Errno::IO, FileRejectReason::IO),
            (Errno::NOMEM, FileRejectReason::IO),
        ];
        for (e, reason) in cases {
            let r = Refusal::from_errno("a/b", e);
            assert_eq!((r.reason, r.errno), (reason, Some(e)), "{e:?}");
            assert!(r.detail.starts_with("a/b: "), "{}", r.detail);
        }
        let r = Refusal::from_errno("l", Errno::LOOP);
        assert!(r.detail.contains("symbolic link"), "{}", r.detail);
        let r = Refusal::from_errno("f", Errno::NOSPC);
        assert!(!r.detail.contains("symbolic link"), "{}", r.detail);
    }

    #[test]
    fn reserved_names_are_refused() {
        let d = scratch("reserved");
        let dest = open(&d, Existing::Replace, true);
        let temp = super::super::temp::temp_name_of(std::process::id(), 0);
        for name in [
            temp.as_str(),
            ".rdmaft-partial-0123456789abcdef",
            "sub/.rdmaft-1-2.part",
            ".rdmaft-x/f",
            "a/.rdmaft-/b",
        ] {
            let err = dest.begin_file(name, 1, 0o644).unwrap_err();
            assert_eq!(err.reason, FileRejectReason::INVALID_NAME, "{name}");
            assert!(err.detail.contains("reserved"), "{err}");
            let err = dest.resume_file(name, 1, 0o644, (0, 0)).unwrap_err();
            assert_eq!(err.reason, FileRejectReason::INVALID_NAME, "{name}");
            let err = dest.make_dir(name, 0o755, (0, 0)).unwrap_err();
            assert_eq!(err.reason, FileRejectReason::INVALID_NAME, "{name}");
        }
        assert!(listing(&d).is_empty(), "nothing made for them");
        // Names that only look alike are fine.
        for name in ["rdmaft-1-2.part", "x.rdmaft-1", ".rdmaft"] {
            let inc = dest.begin_file(name, 1, 0o644).unwrap();
            dest.publish(inc, 0o644, (0, 0)).unwrap();
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The attack the reserved names stop: a sender names its file after another
    /// connection's pending temporary file, so that publishing it (replace mode) swaps its
    /// bytes in under that file, which is then published under the victim's name.
    #[test]
    fn a_sender_cannot_name_another_connections_temp_file() {
        // Named first: there the victim's temporary file has a name to aim at.
        for unnamed in [false, true] {
            let d = scratch(&format!("plant-{unnamed}"));
            let dest = open(&d, Existing::Replace, unnamed);
            let mut victim = dest.begin_file("victim", 4, 0o644).unwrap();
            victim.file.write_all(b"good").unwrap();
            let target = match &victim.temp {
                TempName::Named(t) => t.clone(),
                TempName::Unnamed(_) => super::super::temp::temp_name_of(std::process::id(), 0),
            };
            match dest.begin_file(&target, 4, 0o644) {
                Err(r) => assert_eq!(r.reason, FileRejectReason::INVALID_NAME),
                Ok(mut evil) => {
                    evil.file.write_all(b"evil").unwrap();
                    let _ = dest.publish(evil, 0o644, (0, 0));
                }
            }
            dest.publish(victim, 0o644, (0, 0)).unwrap();
            assert_eq!(std::fs::read(d.join("victim")).unwrap(), b"good");
            assert_eq!(listing(&d), ["victim"]);
            std::fs::remove_dir_all(&d).unwrap();
        }
    }

    #[test]
    fn files_planted_under_temporary_names_are_never_touched() {
        for unnamed in BOTH {
            for existing in [Existing::Replace, Existing::Keep] {
                let d = scratch(&format!("planted-{unnamed}-{existing:?}"));
                // The names this process will use next (other tests use some meanwhile).
                let next = super::super::temp::temp_name();
                let n: u64 = next
                    .rsplit('-')
                    .next()
                    .unwrap()
                    .trim_end_matches(".part")
                    .parse()
                    .unwrap();
                // Fewer than the names a create tries (NAME_TRIES), so it gets past them.
                let planted: Vec<_> = (n + 1..n + 200)
                    .map(|i| super::super::temp::temp_name_of(std::process::id(), i))
                    .collect();
                for p in &planted {
                    std::fs::write(d.join(p), p.as_bytes()).unwrap();
                }
                let dest = open(&d, existing, unnamed);
                for i in 0..3 {
                    let mut inc = dest.begin_file(&format!("f{i}"), 1, 0o644).unwrap();
                    inc.file.write_all(b"x").unwrap();
                    dest.publish(inc, 0o644, (0, 0)).unwrap();
                    assert_eq!(std::fs::read(d.join(format!("f{i}"))).unwrap(), b"x");
                }
                for p in &planted {
                    assert_eq!(std::fs::read(d.join(p)).unwrap(), p.as_bytes());
                }
                assert_eq!(listing(&d).len(), planted.len() + 3);
                std::fs::remove_dir_all(&d).unwrap();
            }
        }
    }

    #[test]
    // spec-test: [name.exclusive]
    fn concurrent_files_publish_correctly() {
        for unnamed in BOTH {
            let d = scratch(&format!("concurrent-{unnamed}"));
            let dest = Arc::new(open(&d, Existing::Replace, unnamed));
            let threads: Vec<_> = (0..2u8)
                .map(|t| {
                    let dest = Arc::clone(&dest);
                    std::thread::spawn(move || {
                        for i in 0..50 {
                            let body = vec![b'a' + t; 1000 + i];
                            for name in [format!("own/{t}-{i}"), "shared".to_owned()] {
                                let mut inc =
                                    dest.begin_file(&name, body.len() as u64, 0o644).unwrap();
                                inc.file.write_all(&body).unwrap();
                                dest.publish(inc, 0o644, (0, 0)).unwrap();
                            }
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            for t in 0..2u8 {
                for i in 0..50 {
                    let got = std::fs::read(d.join(format!("own/{t}-{i}"))).unwrap();
                    assert_eq!(got, vec![b'a' + t; 1000 + i]);
                }
            }
            let shared = std::fs::read(d.join("shared")).unwrap();
            assert!(shared.len() >= 1000 && shared.iter().all(|b| *b == shared[0]));
            assert!(reserved(&d).is_empty(), "{:?}", reserved(&d));
            // Two files of one name at once, published in the other order: the later wins
            // whole.
            let mut first = dest.begin_file("pair", 5, 0o644).unwrap();
            let mut second = dest.begin_file("pair", 6, 0o644).unwrap();
            first.file.write_all(b"first").unwrap();
            second.file.write_all(b"second").unwrap();
            dest.publish(second, 0o644, (0, 0)).unwrap();
            dest.publish(first, 0o644, (0, 0)).unwrap();
            assert_eq!(std::fs::read(d.join("pair")).unwrap(), b"first");
            std::fs::remove_dir_all(&d).unwrap();
        }
    }

    #[test]
    fn partial_files_are_kept_and_taken_back_once() {
        for unnamed in BOTH {
            let d = scratch(&format!("partial-{unnamed}"));
            let dest = open(&d, Existing::Replace, unnamed);
            let mtime = (1_700_000_000, 5);
            // A read-only file: created with its bits where it may be, kept owner-writable.
            let (mut inc, kept) = dest.resume_file("sub/f", 100, 0o444, mtime).unwrap();
            assert_eq!(kept, 0, "nothing to resume yet");
            inc.file.write_all(&[7u8; 60]).unwrap();
            dest.keep_partial(inc, 100, mtime, 40);
            // Hidden beside the final name, never under it.
            let names = listing(&d);
            assert_eq!(names.len(), 2, "{names:?}");
            assert!(names[1].starts_with("sub/.rdmaft-partial-"), "{names:?}");
            let kept_mode = std::fs::metadata(d.join(&names[1]))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(
                kept_mode & 0o7777,
                0o600,
                "a partial file is the receiver's own"
            );
            // Another size or mtime is another file: a fresh start.
            let (other, kept) = dest
                .resume_file("sub/f", 100, 0o644, (1_700_000_000, 6))
                .unwrap();
            assert_eq!(kept, 0);
            dest.discard(other);
            // The same file takes the kept 40 bytes, once.
            let (inc, kept) = dest.resume_file("sub/f", 100, 0o644, mtime).unwrap();
            assert_eq!(kept, 40);
            let mut back = vec![0u8; 40];
            inc.file.read_exact_at(&mut back, 0).unwrap();
            assert_eq!(back, [7u8; 40]);
            let (second, kept) = dest.resume_file("sub/f", 100, 0o644, mtime).unwrap();
            assert_eq!(kept, 0, "taken by the first");
            dest.discard(second);
            // Kept again (a taken partial has a name), taken again, published.
            dest.keep_partial(inc, 100, mtime, 40);
            let (inc, kept) = dest.resume_file("sub/f", 100, 0o644, mtime).unwrap();
            assert_eq!(kept, 40);
            dest.publish(inc, 0o644, mtime).unwrap();
            assert_eq!(listing(&d), ["sub", "sub/f"]);
            // Nothing written: nothing kept.
            let (inc, _) = dest.resume_file("g", 10, 0o644, mtime).unwrap();
            dest.keep_partial(inc, 10, mtime, 0);
            assert_eq!(listing(&d), ["sub", "sub/f"]);
            std::fs::remove_dir_all(&d).unwrap();
        }
    }

    #[test]
    fn a_partial_file_that_is_not_ours_is_never_taken_over() {
        let d = scratch("partial-hostile");
        let dest = open(&d, Existing::Replace, true);
        let mtime = (1_700_000_000, 0);
        let partial = d.join(partial_name("f", 100, mtime));
        let other = d.join("other");
        /// Puts something at `partial` (`other` is a file of 50 bytes).
        type Plant = fn(partial: &Path, other: &Path);
        let mut cases: Vec<(&str, Plant)> = vec![
            ("a hard link", |partial, other| {
                std::fs::hard_link(other, partial).unwrap()
            }),
            ("a symlink", |partial, other| {
                std::os::unix::fs::symlink(other, partial).unwrap()
            }),
            ("a FIFO", |partial, _| {
                let fifo = rfs::FileType::Fifo;
                rfs::mknodat(rfs::CWD, partial, fifo, Mode::from_raw_mode(0o600), 0).unwrap()
            }),
        ];
        if rustix::process::geteuid().is_root() {
            cases.push(("another user's file", |partial, _| {
                std::fs::write(partial, [1u8; 50]).unwrap();
                std::os::unix::fs::chown(partial, Some(12345), None).unwrap();
            }));
        }
        for (case, plant) in cases {
            std::fs::write(&other, [1u8; 50]).unwrap();
            plant(&partial, &other);
            let (inc, kept) = dest.resume_file("f", 100, 0o644, mtime).unwrap();
            assert_eq!(kept, 0, "{case} is not taken over");
            dest.discard(inc);
            assert_eq!(
                std::fs::read(&other).unwrap(),
                [1u8; 50],
                "{case}: untouched"
            );
            assert!(
                std::fs::symlink_metadata(&partial).is_err(),
                "{case}: its name is removed"
            );
            assert_eq!(listing(&d), ["other"], "{case}");
        }
        // A directory under the name is left alone.
        std::fs::create_dir(&partial).unwrap();
        let (inc, kept) = dest.resume_file("f", 100, 0o644, mtime).unwrap();
        assert_eq!(kept, 0);
        dest.discard(inc);
        assert!(partial.is_dir());
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Open directories are kept for the next names in them; a prune that removed
    /// something forgets them (one may be gone), one that removed nothing, or a dry run,
    /// keeps them.
    #[test]
    fn directories_stay_cached_until_a_prune_removes_something() {
        let d = scratch("dir-cache-kept");
        let dest = open(&d, Existing::Replace, true);
        for dir in ["a", "b", "c"] {
            std::fs::create_dir(d.join(dir)).unwrap();
            dest.parent_of(&format!("{dir}/f")).unwrap();
        }
        let cached = || crate::sync::lock_std(&dest.dirs).len();
        assert_eq!(cached(), 3);
        std::fs::write(d.join("a/extra"), b"x").unwrap();
        let keep = std::collections::HashSet::new();
        assert_eq!(dest.prune("b", &keep, false).unwrap(), 0);
        assert!(cached() >= 3, "nothing removed, nothing forgotten");
        assert_eq!(dest.prune("a", &keep, true).unwrap(), 1);
        assert!(cached() >= 3, "a dry run removes nothing");
        assert_eq!(dest.prune("a", &keep, false).unwrap(), 1);
        assert_eq!(cached(), 0);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Only a missing directory makes a create look its directories up afresh: another
    /// refusal (here a file where a directory should be) keeps them cached.
    #[test]
    fn a_refusal_other_than_a_missing_directory_keeps_the_cache() {
        let d = scratch("dir-cache-refusal");
        let dest = open(&d, Existing::Replace, true);
        for dir in ["a", "b"] {
            std::fs::create_dir(d.join(dir)).unwrap();
            dest.parent_of(&format!("{dir}/f")).unwrap();
        }
        std::fs::write(d.join("a/x"), b"a file").unwrap();
        let refused = dest.begin_file("a/x/y", 1, 0o644).map(|_| ()).unwrap_err();
        assert_eq!(refused.errno, Some(Errno::NOTDIR), "{refused:?}");
        assert_eq!(crate::sync::lock_std(&dest.dirs).len(), 2);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A file large enough that its name is looked at first replaces a file there; a
    /// directory there refuses it, and so does any entry with no-clobber.
    #[test]
    fn a_large_file_replaces_a_file_but_not_a_directory() {
        let d = scratch("large-over");
        let dest = open(&d, Existing::Replace, true);
        std::fs::write(d.join("f"), b"old").unwrap();
        std::fs::create_dir(d.join("dir")).unwrap();
        let data = vec![7u8; EARLY_CHECK_MIN as usize];
        let mut inc = dest.begin_file("f", EARLY_CHECK_MIN, 0o644).unwrap();
        inc.file.write_all(&data).unwrap();
        dest.publish(inc, 0o644, (0, 0)).unwrap();
        assert_eq!(std::fs::read(d.join("f")).unwrap(), data);
        let refused = dest
            .begin_file("dir", EARLY_CHECK_MIN, 0o644)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(refused.reason, FileRejectReason::EXISTS, "{refused:?}");
        assert!(refused.detail.contains("is a directory"), "{refused:?}");
        let keep = open(&d, Existing::Keep, true);
        let refused = keep
            .begin_file("f", EARLY_CHECK_MIN, 0o644)
            .map(|_| ())
            .unwrap_err();
        assert!(refused.detail.ends_with("exists"), "{refused:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_cached_directory_removed_meanwhile_is_made_again() {
        let d = scratch("dir-cache");
        let dest = open(&d, Existing::Replace, true);
        let first = dest.begin_file("sub/a", 1, 0o644).unwrap();
        dest.discard(first);
        std::fs::remove_dir(d.join("sub")).unwrap();
        let mut again = dest.begin_file("sub/b", 1, 0o644).unwrap();
        again.file.write_all(b"b").unwrap();
        dest.publish(again, 0o644, (0, 0)).unwrap();
        assert_eq!(std::fs::read(d.join("sub/b")).unwrap(), b"b");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    // spec-test: [link.unsafe]
    fn symlinks_are_never_followed() {
        for unnamed in BOTH {
            let d = scratch(&format!("links-{unnamed}"));
            let outside = scratch(&format!("links-outside-{unnamed}"));
            let dest_dir = d.join("dest");
            std::fs::create_dir_all(&dest_dir).unwrap();
            std::os::unix::fs::symlink(&outside, dest_dir.join("evil")).unwrap();
            std::os::unix::fs::symlink(outside.join("target"), dest_dir.join("file-link")).unwrap();
            let dest = open(&dest_dir, Existing::Replace, unnamed);
            // A directory component that is a symlink.
            let err = dest.begin_file("evil/x", 1, 0o644).unwrap_err();
            assert_eq!(err.reason, FileRejectReason::PERMISSION_DENIED, "{err}");
            assert!(dest.make_dir("evil/sub", 0o755, (0, 0)).is_err());
            assert!(dest.make_dir("evil", 0o755, (0, 0)).is_err());
            // A file name that is a symlink: the rename replaces the link, never writes
            // through it.
            let mut inc = dest.begin_file("file-link", 2, 0o644).unwrap();
            inc.file.write_all(b"ok").unwrap();
            dest.publish(inc, 0o644, (0, 0)).unwrap();
            assert!(!outside.join("target").exists());
            assert!(!dest_dir.join("file-link").is_symlink());
            assert!(listing(&outside).is_empty(), "nothing written outside");
            std::fs::remove_dir_all(&d).unwrap();
            std::fs::remove_dir_all(&outside).unwrap();
        }
    }

    #[test]
    // spec-test: [name.exclusive]
    fn existing_names() {
        for unnamed in BOTH {
            let d = scratch(&format!("existing-{unnamed}"));
            std::fs::create_dir(d.join("dir")).unwrap();
            std::fs::write(d.join("old"), b"old").unwrap();
            let keep = open(&d, Existing::Keep, unnamed);
            assert_eq!(
                keep.begin_file("dir", 0, 0o644).unwrap_err().reason,
                FileRejectReason::EXISTS
            );
            assert_eq!(
                keep.begin_file("old", 0, 0o644).unwrap_err().reason,
                FileRejectReason::EXISTS
            );
            assert_eq!(
                keep.begin_file("old/x", 0, 0o644).unwrap_err().reason,
                FileRejectReason::EXISTS
            );
            let mut replace = open(&d, Existing::Replace, unnamed);
            replace.options.fsync = true;
            let mut inc = replace.begin_file("old", 3, 0o644).unwrap();
            inc.file.write_all(b"new").unwrap();
            replace.publish(inc, 0o600, (0, 0)).unwrap();
            assert_eq!(std::fs::read(d.join("old")).unwrap(), b"new");
            // Another file took the name meanwhile, with Keep: the publish fails, nothing
            // left.
            let mut inc = keep.begin_file("late", 0, 0o644).unwrap();
            inc.file.write_all(b"second").unwrap();
            std::fs::write(d.join("late"), b"first").unwrap();
            let err = keep.publish(inc, 0o600, (0, 0)).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EEXIST), "{err}");
            assert_eq!(std::fs::read(d.join("late")).unwrap(), b"first");
            assert!(reserved(&d).is_empty());
            std::fs::remove_dir_all(&d).unwrap();
        }
    }

    #[test]
    fn directories_get_mode_and_mtime() {
        let d = scratch("dirs");
        let dest = open(&d, Existing::Replace, true);
        dest.make_dir("p/q", 0o750, (1_500_000_000, 0)).unwrap();
        // Replace gives an existing directory the sender's mode and mtime.
        dest.make_dir("p/q", 0o700, (1_500_000_001, 0)).unwrap();
        let m = std::fs::metadata(d.join("p/q")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o700);
        assert_eq!(m.mtime(), 1_500_000_001);
        std::fs::write(d.join("file"), b"").unwrap();
        assert_eq!(
            dest.make_dir("file", 0o755, (0, 0)).unwrap_err().reason,
            FileRejectReason::EXISTS
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn modes_lose_the_umask_unless_preserved() {
        let d = scratch("umask");
        let mut dest = open(&d, Existing::Replace, true);
        dest.umask = 0o027;
        dest.make_dir("open", 0o7777, (0, 0)).unwrap();
        let mut inc = dest.begin_file("open/f", 0, 0o644).unwrap();
        inc.file.write_all(b"").unwrap();
        dest.publish(inc, 0o6777, (0, 0)).unwrap();
        let mode = |p: &str| std::fs::metadata(d.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("open"), 0o750);
        assert_eq!(mode("open/f"), 0o750);
        let preserve = Destination::open(
            &d,
            DestOptions {
                preserve_perms: true,
                ..DestOptions::default()
            },
        )
        .unwrap();
        preserve.make_dir("kept", 0o7777, (0, 0)).unwrap();
        let inc = preserve.begin_file("kept/f", 0, 0o644).unwrap();
        preserve.publish(inc, 0o6777, (0, 0)).unwrap();
        assert_eq!(mode("kept"), 0o777, "as sent, never sticky");
        assert_eq!(mode("kept/f"), 0o777, "as sent, never setuid or setgid");
        // By default the process's umask is read.
        let default = Destination::open(&d, DestOptions::default()).unwrap();
        assert_eq!(default.umask, super::super::perms::process_umask());
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The mode of a file, from its descriptor.
    fn fd_mode(file: &File) -> u32 {
        rfs::fstat(file).unwrap().st_mode & 0o7777
    }

    /// An unnamed file is created with its final bits where it gets exactly those (its
    /// publish then sets none); in a directory with a default ACL, or with bits the kernel's
    /// umask would clear, it is created 0o600 and the publish gives it its bits. Either way
    /// the published file has the sender's bits less the destination's umask.
    #[test]
    fn a_file_is_created_with_its_mode_only_where_it_gets_exactly_that() {
        let d = scratch("exact-mode");
        if !has_tmpfile(&d) {
            return;
        }
        let process = super::super::perms::process_umask();
        std::fs::create_dir(d.join("plain")).unwrap();
        std::fs::create_dir(d.join("acl")).unwrap();
        // A default ACL of u::rwx g::rwx o::--- (version 2; tags USER_OBJ, GROUP_OBJ, OTHER).
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, perm) in [(0x01u16, 7u16), (0x04, 7), (0x20, 0)] {
            acl.extend_from_slice(&tag.to_le_bytes());
            acl.extend_from_slice(&perm.to_le_bytes());
            acl.extend_from_slice(&u32::MAX.to_le_bytes());
        }
        let acl_dir = rfs::open(
            d.join("acl"),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        let has_acl = rfs::fsetxattr(
            &acl_dir,
            "system.posix_acl_default",
            &acl,
            rfs::XattrFlags::empty(),
        )
        .is_ok();
        for preserve_perms in [false, true] {
            let options = DestOptions {
                preserve_perms,
                ..DestOptions::default()
            };
            let dest = Destination::open(&d, options).unwrap();
            let umask = if preserve_perms { 0 } else { process };
            for (dir, plain) in [("plain", true), ("acl", !has_acl)] {
                for mode in [0o644, 0o755, 0o600, 0o666, 0o4755] {
                    let name = format!("{dir}/f{mode:o}-{preserve_perms}");
                    let want = mode & 0o777 & !umask;
                    let inc = dest.begin_file(&name, 0, mode).unwrap();
                    let exact = plain && want & process == 0;
                    let created = if exact { want } else { 0o600 };
                    assert_eq!(fd_mode(&inc.file), created, "{name}");
                    dest.publish(inc, mode, (0, 0)).unwrap();
                    let m = std::fs::metadata(d.join(&name)).unwrap();
                    assert_eq!(m.permissions().mode() & 0o7777, want, "{name}");
                }
            }
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn no_clobber_leaves_existing_directories_alone() {
        let d = scratch("dirs-keep");
        std::fs::create_dir(d.join("old")).unwrap();
        std::fs::set_permissions(d.join("old"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let before = std::fs::metadata(d.join("old")).unwrap();
        let dest = open(&d, Existing::Keep, true);
        // Its own entry, and a file arriving in it.
        let inc = dest.begin_file("old/f", 0, 0o644).unwrap();
        dest.publish(inc, 0o644, (0, 0)).unwrap();
        let before = (
            before.mode(),
            std::fs::metadata(d.join("old")).unwrap().mtime(),
        );
        dest.make_dir("old", 0o777, (1_500_000_000, 0)).unwrap();
        let after = std::fs::metadata(d.join("old")).unwrap();
        assert_eq!((after.mode(), after.mtime()), before, "left as it was");
        // Directories the destination made (for a file, or for their own entry) get theirs.
        let inc = dest.begin_file("new/deep/f", 0, 0o644).unwrap();
        dest.publish(inc, 0o644, (0, 0)).unwrap();
        dest.make_dir("new/deep", 0o751, (1_500_000_001, 0))
            .unwrap();
        dest.make_dir("new", 0o777, (1_500_000_002, 0)).unwrap();
        dest.make_dir("empty", 0o700, (1_500_000_003, 0)).unwrap();
        for (name, mode, mtime) in [
            ("new/deep", 0o751, 1_500_000_001),
            ("new", 0o755, 1_500_000_002),
            ("empty", 0o700, 1_500_000_003),
        ] {
            let m = std::fs::metadata(d.join(name)).unwrap();
            assert_eq!((m.mode() & 0o777, m.mtime()), (mode, mtime), "{name}");
        }
        // Once: an entry sent again finds a directory that exists, and leaves it.
        dest.make_dir("new", 0o700, (1, 0)).unwrap();
        let m = std::fs::metadata(d.join("new")).unwrap();
        assert_eq!((m.mode() & 0o777, m.mtime()), (0o755, 1_500_000_002));
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Shards: one connection makes a directory for a file while another brings the
    /// directory's entry. With no-clobber the entry must still find the directory as made
    /// here (not one that existed before) and give it its mode, whichever comes first.
    #[test]
    fn no_clobber_gives_a_directory_made_meanwhile_for_a_file_its_mode() {
        let d = scratch("dirs-keep-race");
        let dest = Arc::new(open(&d, Existing::Keep, true));
        for i in 0..200 {
            let start = Arc::new(std::sync::Barrier::new(2));
            let file = {
                let (dest, start) = (Arc::clone(&dest), Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    let inc = dest.begin_file(&format!("d{i}/f"), 0, 0o644).unwrap();
                    dest.publish(inc, 0o644, (0, 0)).unwrap();
                })
            };
            start.wait();
            dest.make_dir(&format!("d{i}"), 0o751, (1_500_000_000, 0))
                .unwrap();
            file.join().unwrap();
            let m = std::fs::metadata(d.join(format!("d{i}"))).unwrap();
            assert_eq!(m.mode() & 0o777, 0o751, "d{i}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn fsync_syncs_the_directories_and_nothing_syncs_without_it() {
        let d = scratch("fsync");
        let id = |p: PathBuf| {
            let m = std::fs::metadata(p).unwrap();
            (m.dev(), m.ino())
        };
        for unnamed in BOTH {
            let mut dest = open(&d, Existing::Keep, unnamed);
            dest.options.fsync = true;
            let sub = format!("a-{unnamed}");
            let mut inc = dest.begin_file(&format!("{sub}/b/f"), 1, 0o644).unwrap();
            inc.file.write_all(b"f").unwrap();
            dest.publish(inc, 0o644, (0, 0)).unwrap();
            dest.make_dir(&format!("{sub}/c"), 0o755, (0, 0)).unwrap();
            let synced = crate::sync::lock_std(&dest.synced).clone();
            for dir in [
                d.clone(),              // where `a` was made
                d.join(&sub),           // where `b` and `c` were made
                d.join(&sub).join("b"), // where `f` was published
                d.join(&sub).join("c"), // made, with its mode and mtime
            ] {
                assert!(synced.contains(&id(dir.clone())), "{}", dir.display());
            }
            // Without --fsync the same makes and publishes sync nothing.
            let dest = open(&d, Existing::Keep, unnamed);
            let sub = format!("again-{unnamed}");
            let mut inc = dest.begin_file(&format!("{sub}/b/f"), 1, 0o644).unwrap();
            inc.file.write_all(b"f").unwrap();
            dest.publish(inc, 0o644, (0, 0)).unwrap();
            dest.make_dir(&format!("{sub}/c"), 0o755, (0, 0)).unwrap();
            assert_eq!(*crate::sync::lock_std(&dest.synced), []);
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn too_large_for_the_disk() {
        let d = scratch("space");
        let dest = open(&d, Existing::Replace, true);
        let err = dest.begin_file("huge", u64::MAX / 2, 0o644).unwrap_err();
        assert_eq!(err.reason, FileRejectReason::NO_SPACE);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
