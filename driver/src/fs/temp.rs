//! The receiver's own files beside the files it receives: temporary files, how a verified one
//! is published, and the partial files kept for resume.
//!
//! A file being received is, where the file system allows it, an unnamed file (`O_TMPFILE`)
//! in its final directory: nobody can open, rename or replace it by name while it is being
//! written, and a receiver killed meanwhile leaves nothing behind. Publishing gives it its
//! name by descriptor (`linkat`): with no-clobber straight onto the final name (which fails if
//! the name exists by then), otherwise onto a fresh reserved name that is then renamed onto
//! the final name (a rename replaces an existing file atomically; a link cannot).
//!
//! A descriptor is linked with `AT_EMPTY_PATH` (which needs `CAP_DAC_READ_SEARCH`) or through
//! `/proc/self/fd/N` with `AT_SYMLINK_FOLLOW` (which needs `/proc`); which one works is found
//! once per destination, with a throw-away file. Where `O_TMPFILE` is refused (a file system
//! without it, a kernel before 3.11) or neither way of linking works, the file is a named one
//! created exclusively (`O_EXCL`) under a fresh reserved name, `.rdmaft-<host>-<pid>-<n>.part`,
//! and published by rename.
//!
//! Every name beginning with [`RESERVED_PREFIX`] belongs to the receiver: the destination
//! refuses such names from a sender, so a sender can never name, and so never replace or
//! publish over, another connection's temporary or partial file.

use super::dest::Existing;
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The prefix of every name the receiver uses for its own files (temporary files
/// `.rdmaft-<host>-<pid>-<n>.part`, partial files `.rdmaft-partial-<hash>`): the protocol's
/// reserved name space. A name from a sender with a component beginning with it (ASCII case
/// ignored, as the protocol does) is refused.
pub use rdmaft_protocol::RESERVED_PREFIX;

/// The first component of `name` in the reserved space, if any.
pub(super) fn reserved_component(name: &str) -> Option<&str> {
    let prefix = RESERVED_PREFIX.as_bytes();
    name.split('/').find(|c| {
        c.as_bytes()
            .get(..prefix.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
    })
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Fresh names tried before giving up (`EEXIST`) when every one is taken already.
const NAME_TRIES: usize = 256;

/// This host, as temporary file names carry it: 8 hex digits of a hash of its name. A
/// directory shared between hosts (NFS) then holds temporary files of processes of other
/// hosts, whose pids mean nothing here: the stale sweep leaves every name not of this host.
fn host_tag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let hash = xxhash_rust::xxh3::xxh3_64(name.trim().as_bytes());
        format!("{:08x}", hash as u32)
    })
}

/// The name process `pid` of this host gives its `n`-th named temporary file
/// (`.rdmaft-<host>-<pid>-<n>.part`).
pub fn temp_name_of(pid: u32, n: u64) -> String {
    format!("{RESERVED_PREFIX}{}-{pid}-{n}.part", host_tag())
}

/// A fresh temporary file name of process `pid` (this one).
fn temp_name_for(pid: u32) -> String {
    temp_name_of(pid, TEMP_COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A fresh temporary file name of this process.
pub(super) fn temp_name() -> String {
    temp_name_for(std::process::id())
}

/// The process id in a name of exactly the [`temp_name_of`] pattern of this host
/// (`.rdmaft-<host>-<pid>-<n>.part`, pid and n decimal); `None` for any other name, those of
/// other hosts included.
pub(super) fn own_temp_name_pid(name: &str) -> Option<u32> {
    let middle = name.strip_prefix(RESERVED_PREFIX)?.strip_suffix(".part")?;
    let rest = middle.strip_prefix(host_tag())?.strip_prefix('-')?;
    let (pid, n) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(n) {
        return None;
    }
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// The hidden name a partial file of `last` (with the source's size and mtime) is kept under.
pub(super) fn partial_name(last: &str, size: u64, (sec, nsec): (i64, u32)) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(last.as_bytes());
    h.update(&size.to_le_bytes());
    h.update(&sec.to_le_bytes());
    h.update(&nsec.to_le_bytes());
    format!("{RESERVED_PREFIX}partial-{:016x}", h.digest())
}

/// The name a temporary file has while it is written.
#[derive(Debug)]
pub(super) enum TempName {
    /// None: an `O_TMPFILE` file, linked when published; created with the permission bits
    /// it is to have, when the caller knew them exactly (else 0o600).
    Unnamed(Option<Mode>),
    /// A reserved name in the file's directory, renamed when published.
    Named(String),
}

/// How an unnamed file is linked to a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LinkVia {
    /// `linkat(fd, "", dir, name, AT_EMPTY_PATH)`: needs `CAP_DAC_READ_SEARCH`.
    EmptyPath,
    /// `linkat(AT_FDCWD, "/proc/self/fd/N", dir, name, AT_SYMLINK_FOLLOW)`: needs `/proc`.
    ProcFd,
}

/// How a destination makes temporary files.
#[derive(Debug)]
pub(super) struct TempFiles {
    /// Whether to try `O_TMPFILE` at all.
    unnamed: bool,
    /// How unnamed files can be linked here (`None`: they cannot, or the file system refused
    /// `O_TMPFILE`), found with the first one.
    via: OnceLock<Option<LinkVia>>,
    /// This process's id, for the names of named files (asked once: `getpid` is a system
    /// call per file otherwise).
    pid: u32,
}

impl TempFiles {
    pub(super) fn new(unnamed: bool) -> Self {
        TempFiles {
            unnamed,
            via: OnceLock::new(),
            pid: std::process::id(),
        }
    }

    /// Whether unnamed files are tried: not ruled out by the options, nor known not to work
    /// here (the file system refused `O_TMPFILE`, or this process cannot link them).
    fn tries_unnamed(&self) -> bool {
        self.unnamed && self.via.get() != Some(&None)
    }

    /// Uses `via` instead of finding out (for tests of each way).
    #[cfg(test)]
    pub(super) fn force_link_via(&self, via: LinkVia) {
        let _ = self.via.set(Some(via));
    }

    /// A new temporary file in `dir`, open for reading and writing: unnamed where the file
    /// system and the process allow it, else under a fresh reserved name. Mode 0o600, or
    /// `mode` for an unnamed file (nobody can open it before it is published): the caller
    /// passes one only where a file created with it gets exactly it.
    pub(super) fn create(
        &self,
        dir: &OwnedFd,
        mode: Option<Mode>,
    ) -> Result<(File, TempName), Errno> {
        if self.tries_unnamed() {
            match open_unnamed(dir, mode.unwrap_or(Mode::from_raw_mode(0o600))) {
                Ok(fd) if self.link_via(dir).is_some() => {
                    return Ok((File::from(fd), TempName::Unnamed(mode)))
                }
                // This process cannot link a descriptor: use names.
                Ok(_) => {}
                Err(e) if self.refuses_unnamed(e) => {}
                Err(e) => return Err(e),
            }
        }
        // A name taken by someone else is skipped; a few hundred in a row is not chance.
        for _ in 0..NAME_TRIES {
            let name = temp_name_for(self.pid);
            // spec: [name.exclusive]
            match rfs::openat(
                dir,
                name.as_str(),
                OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => return Ok((File::from(fd), TempName::Named(name))),
                // Someone else's file under one of our names: never touched, next name.
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Errno::EXIST)
    }

    /// Whether `e`, from an `O_TMPFILE` open, says the file system has no unnamed files
    /// (EISDIR: a kernel that does not know the flag). If so it is not asked again for this
    /// destination, whose files then all get names: one failed call per file is what a file
    /// system without the flag (an overlay before Linux 6.6) would cost otherwise. A
    /// directory beneath on another file system that has the flag loses only the unnamed
    /// files.
    fn refuses_unnamed(&self, e: Errno) -> bool {
        let refused = matches!(e, Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL);
        if refused {
            let _ = self.via.set(None);
        }
        refused
    }

    fn link_via(&self, dir: &OwnedFd) -> Option<LinkVia> {
        *self.via.get_or_init(|| probe_link(dir))
    }

    /// Puts the verified `file` (a temporary file of `dir` named `temp`) under `name` in
    /// `dir`: with [`Existing::Keep`] only if no such name exists (`EEXIST` otherwise), with
    /// [`Existing::Replace`] atomically replacing what is there. On failure a named temporary
    /// file is still there (the caller removes it); an unnamed one is gone with its
    /// descriptor.
    pub(super) fn publish(
        &self,
        dir: &OwnedFd,
        file: &File,
        temp: &TempName,
        name: &str,
        existing: Existing,
    ) -> Result<(), Errno> {
        match temp {
            TempName::Named(temp) => match existing {
                Existing::Replace => rfs::renameat(dir, temp.as_str(), dir, name),
                // spec: [name.exclusive]
                Existing::Keep => {
                    rfs::renameat_with(dir, temp.as_str(), dir, name, RenameFlags::NOREPLACE)
                }
            },
            TempName::Unnamed(_) => {
                // `create` makes unnamed files only once linking them was found to work.
                let via = self.via.get().copied().flatten().ok_or(Errno::NOSYS)?;
                match existing {
                    Existing::Keep => link(via, file, dir, name),
                    // A free name takes the link at once (one call, as `cp` creates a
                    // file); only an existing one needs the reserved name and the rename
                    // that replaces it atomically.
                    Existing::Replace => {
                        match link(via, file, dir, name) {
                            Err(Errno::EXIST) => {}
                            other => return other,
                        }
                        let reserved = link_fresh(via, file, dir, self.pid)?;
                        rfs::renameat(dir, reserved.as_str(), dir, name).inspect_err(|_| {
                            let _ = rfs::unlinkat(dir, reserved.as_str(), AtFlags::empty());
                        })
                    }
                }
            }
        }
    }
}

fn open_unnamed(dir: &OwnedFd, mode: Mode) -> Result<OwnedFd, Errno> {
    rfs::openat(
        dir,
        ".",
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        mode,
    )
}

/// Which way of linking a descriptor works for this process, tried on throw-away unnamed
/// files in `dir` (one per try: a file once linked and unlinked cannot be linked again).
fn probe_link(dir: &OwnedFd) -> Option<LinkVia> {
    [LinkVia::EmptyPath, LinkVia::ProcFd]
        .into_iter()
        .find(|&via| link_works(via, dir))
}

/// Whether `via` links a throw-away unnamed file in `dir` for this process
/// (`AT_EMPTY_PATH` needs `CAP_DAC_READ_SEARCH` before Linux 6.10, `/proc/self/fd` needs
/// `/proc`).
pub(super) fn link_works(via: LinkVia, dir: &OwnedFd) -> bool {
    let Ok(fd) = open_unnamed(dir, Mode::from_raw_mode(0o600)) else {
        return false;
    };
    match link_fresh(via, &fd, dir, std::process::id()) {
        Ok(name) => {
            let _ = rfs::unlinkat(dir, name.as_str(), AtFlags::empty());
            true
        }
        Err(_) => false,
    }
}

/// Links `file` under `name` in `dir` (`EEXIST` if the name exists).
fn link(via: LinkVia, file: &impl AsFd, dir: &OwnedFd, name: &str) -> Result<(), Errno> {
    match via {
        LinkVia::EmptyPath => rfs::linkat(file, "", dir, name, AtFlags::EMPTY_PATH),
        LinkVia::ProcFd => {
            let path = format!("/proc/self/fd/{}", file.as_fd().as_raw_fd());
            rfs::linkat(rfs::CWD, path.as_str(), dir, name, AtFlags::SYMLINK_FOLLOW)
        }
    }
}

/// Links `file` under a fresh reserved name of process `pid` (this one) in `dir`; returns
/// the name.
fn link_fresh(via: LinkVia, file: &impl AsFd, dir: &OwnedFd, pid: u32) -> Result<String, Errno> {
    // A name taken by someone else is skipped; a few hundred in a row is not chance.
    for _ in 0..NAME_TRIES {
        let name = temp_name_for(pid);
        match link(via, file, dir, &name) {
            Ok(()) => return Ok(name),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::EXIST)
}

/// Takes over the partial file `partial` of `dir`. It is first renamed to a fresh temporary
/// name, so of two connections offered the same file only one gets it; then it is used only
/// if it is a regular file with no other link, owned by this process's effective user and no
/// longer than `size`. Anything else found under the name is removed (only the name: the
/// other links of a hard link keep their data) and never written or truncated; a directory
/// there is left alone. Returns the file, its name and its length.
pub(super) fn take_partial(
    dir: &OwnedFd,
    partial: &str,
    size: u64,
) -> Option<(File, TempName, u64)> {
    let st = rfs::statat(dir, partial, AtFlags::SYMLINK_NOFOLLOW).ok()?;
    if rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory {
        return None;
    }
    let temp = temp_name();
    rfs::renameat(dir, partial, dir, temp.as_str()).ok()?;
    let usable = rfs::openat(
        dir,
        temp.as_str(),
        // NONBLOCK and NOCTTY: opening whatever was planted there (a FIFO, a terminal) must
        // neither block nor have effects; for a regular file they change nothing.
        OFlags::RDWR | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
    .and_then(|fd| {
        let st = rfs::fstat(&fd).ok()?;
        let len = u64::try_from(st.st_size).ok()?;
        let ok = rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::RegularFile
            && st.st_nlink == 1
            && st.st_uid == rustix::process::geteuid().as_raw()
            && len <= size;
        ok.then_some((fd, len))
    });
    let Some((fd, len)) = usable else {
        let _ = rfs::unlinkat(dir, temp.as_str(), AtFlags::empty());
        return None;
    };
    Some((File::from(fd), TempName::Named(temp), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names() {
        assert_eq!(
            reserved_component("a/.rdmaft-1-2.part"),
            Some(".rdmaft-1-2.part")
        );
        assert_eq!(
            reserved_component(".rdmaft-partial-x/y"),
            Some(".rdmaft-partial-x")
        );
        assert_eq!(reserved_component("a/b.rdmaft-/.rdmaft"), None);
        assert_eq!(
            reserved_component("a/.RDMAFT-x"),
            Some(".RDMAFT-x"),
            "case ignored, as the protocol does"
        );
        assert!(reserved_component(&temp_name()).is_some());
        assert!(reserved_component(&partial_name("f", 1, (2, 3))).is_some());
    }

    #[test]
    fn a_file_system_without_unnamed_files_is_asked_once() {
        let t = TempFiles::new(true);
        assert!(
            !t.refuses_unnamed(Errno::ACCESS),
            "another failure is an error"
        );
        assert!(t.tries_unnamed());
        for e in [Errno::OPNOTSUPP, Errno::ISDIR, Errno::INVAL] {
            let t = TempFiles::new(true);
            assert!(t.refuses_unnamed(e), "{e}");
            assert!(!t.tries_unnamed(), "{e}: not asked again");
        }
        assert!(!TempFiles::new(false).tries_unnamed());
    }

    #[test]
    fn named_files_carry_this_process_id() {
        let t = TempFiles::new(false);
        let d = crate::fs::scratch_dir("temp", "pid");
        let dir = super::super::dest::open_dir_beneath(&rfs::CWD, &d).unwrap();
        let (_file, name) = t.create(&dir, None).unwrap();
        let TempName::Named(name) = name else {
            panic!("{name:?}")
        };
        assert_eq!(own_temp_name_pid(&name), Some(std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_temp_pattern_is_exact() {
        let host = host_tag();
        assert_eq!(host.len(), 8);
        assert_eq!(own_temp_name_pid(&temp_name()), Some(std::process::id()));
        assert_eq!(own_temp_name_pid(&temp_name_of(12, 0)), Some(12));
        assert_eq!(temp_name_of(12, 0), format!(".rdmaft-{host}-12-0.part"));
        let other_host = if host == "00000000" {
            "00000001"
        } else {
            "00000000"
        };
        for other in [
            format!(".rdmaft-{host}-12-0.part.x"),
            format!(".rdmaft-{host}-12-.part"),
            format!(".rdmaft-{host}--0.part"),
            format!(".rdmaft-{host}-+12-0.part"),
            format!(".rdmaft-{host}-12-0-1.part"),
            format!(".rdmaft-{host}-99999999999-0.part"),
            format!(".rdmaft-{host}-12-0x1.part"),
            format!("x.rdmaft-{host}-12-0.part"),
            format!(".rdmaft-{other_host}-12-0.part"),
            ".rdmaft-12-0.part".to_owned(),
            ".rdmaft-partial-0123456789abcdef".to_owned(),
        ] {
            assert_eq!(own_temp_name_pid(&other), None, "{other}");
        }
    }
}
