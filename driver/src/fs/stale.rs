//! Stale temporary files: what receivers killed mid-transfer left behind.
//!
//! A receiver that dies while a file arrives leaves nothing when the file was unnamed
//! (`O_TMPFILE`), but a named temporary file (the fallback where `O_TMPFILE` is refused, or a
//! file in the instant between its link and its rename) stays as
//! `.rdmaft-<host>-<pid>-<n>.part`.
//! A receiver removes those when it starts ([`Sweep`]), on a thread of its own.

use super::dest::open_dir_beneath;
use super::temp::own_temp_name_pid;
use rustix::fs::{self as rfs, AtFlags, Dir, FileType};
use rustix::io::Errno;
use std::collections::HashMap;
use std::ffi::CStr;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

/// Removes, under the directory `root`, every stale temporary file, and returns how many:
/// a regular file (never a symlink, directory or anything else) named exactly
/// `.rdmaft-<host>-<pid>-<n>.part` with this host's tag, owned by this process's effective
/// user, whose process `<pid>` does not exist. (Names of other hosts, as a directory shared
/// over NFS holds them, are left alone: their pids mean nothing here.) Files of a live process (another receiver on the same directory, or this
/// one) are kept, and so are partial files kept for resume (`.rdmaft-partial-…`). Symlinks
/// are never followed. Returns early when `stop` is raised.
///
/// A pid is only a hint: a pid reused by an unrelated process keeps a stale file until that
/// process ends, and a receiver in another pid namespace writing into the same directory
/// (a container sharing the volume) looks dead from here, so its named temporary files could
/// be removed under it.
///
/// Cost: every directory under `root` is opened and read once, as `find ROOT -name
/// '.rdmaft-*'` would (an `fstatat` per directory entry whose type the file system does not
/// report, one per matching name, one `kill(pid, 0)` per distinct pid). Descriptors open at
/// once grow with the depth of the tree, not its width.
pub(crate) fn remove_stale(root: &OwnedFd, stop: &AtomicBool) -> u64 {
    let mut removed = 0;
    let mut alive = HashMap::new();
    let me = rustix::process::geteuid().as_raw();
    let Ok(top) = open_dir_beneath(root, c".") else {
        return 0;
    };
    // Directories to read: each named in its parent (held open while any child waits), so
    // that open descriptors follow the depth of the tree, not its width.
    let mut pending = vec![(Arc::new(top), None::<Vec<u8>>)];
    while let Some((parent, name)) = pending.pop() {
        let dir = match name {
            None => parent,
            Some(name) => match CStr::from_bytes_until_nul(&name)
                .ok()
                .and_then(|n| open_dir_beneath(&parent, n).ok())
            {
                Some(d) => Arc::new(d),
                None => continue,
            },
        };
        let Ok(mut entries) = Dir::read_from(&*dir) else {
            continue;
        };
        while let Some(Ok(entry)) = entries.read() {
            if stop.load(Ordering::Relaxed) {
                return removed;
            }
            let file_name = entry.file_name();
            let bytes = file_name.to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            let pid = std::str::from_utf8(bytes).ok().and_then(own_temp_name_pid);
            let file_type = match entry.file_type() {
                FileType::Unknown => stat_type(&dir, file_name),
                t => t,
            };
            if file_type == FileType::Directory {
                pending.push((
                    Arc::clone(&dir),
                    Some(file_name.to_bytes_with_nul().to_vec()),
                ));
                continue;
            }
            let Some(pid) = pid else {
                continue;
            };
            let Ok(st) = rfs::statat(&*dir, file_name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            let stale = FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                && st.st_uid == me
                && !*alive.entry(pid).or_insert_with(|| is_alive(pid));
            if stale && rfs::unlinkat(&*dir, file_name, AtFlags::empty()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

fn stat_type(dir: &OwnedFd, name: &CStr) -> FileType {
    rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map_or(FileType::Unknown, |st| FileType::from_raw_mode(st.st_mode))
}

/// Whether process `pid` exists (when in doubt: yes).
fn is_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    !matches!(rustix::process::test_kill_process(pid), Err(Errno::SRCH))
}

/// [`remove_stale`] on a thread of its own, started with a receiver.
#[derive(Debug)]
pub(crate) struct Sweep {
    removed: Arc<OnceLock<u64>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sweep {
    /// Starts sweeping `root`.
    pub(crate) fn start(root: OwnedFd) -> io::Result<Sweep> {
        let removed = Arc::new(OnceLock::new());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (removed, stop) = (Arc::clone(&removed), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("rdmaft-sweep".into())
                .spawn(move || {
                    let n = remove_stale(&root, &stop);
                    // The descriptor goes before the count is told: who waits for the
                    // count sees the sweep's resources gone.
                    drop(root);
                    let _ = removed.set(n);
                })?
        };
        Ok(Sweep {
            removed,
            stop,
            thread: Some(thread),
        })
    }

    /// How many stale files it removed, once it is done.
    pub(crate) fn removed(&self) -> Option<u64> {
        self.removed.get().copied()
    }

    /// Ends the sweep early if it still runs, and joins its thread.
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sweep {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::super::temp::temp_name_of;
    use super::*;
    use rustix::fs::{Mode, OFlags};
    use std::path::Path;

    /// A pid no process has: above the kernel's largest `pid_max` (2^22).
    const DEAD: u32 = 999_999_999;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("rdmaft-stale-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn sweep(d: &Path) -> u64 {
        let root = rfs::open(d, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        remove_stale(&root, &AtomicBool::new(false))
    }

    #[test]
    fn only_stale_temporary_files_of_dead_processes_go() {
        assert!(!is_alive(DEAD));
        assert!(is_alive(std::process::id()));
        let d = scratch("sweep");
        let outside = scratch("sweep-outside");
        let dead = temp_name_of(DEAD, 7);
        let mine = temp_name_of(std::process::id(), 7);
        // The same name from another host (a directory shared over NFS).
        let elsewhere = dead.replacen(".rdmaft-", ".rdmaft-x", 1);
        std::fs::create_dir_all(d.join("a/b/c")).unwrap();
        for stale in [d.join(&dead), d.join("a/b/c").join(&dead)] {
            std::fs::write(stale, b"stale").unwrap();
        }
        let kept = [
            d.join(&mine),
            d.join("a").join(format!("{dead}.x")),
            d.join("a").join(&elsewhere),
            d.join("a").join(format!(".rdmaft-{DEAD}-7.part")),
            d.join("a/.rdmaft-partial-0123456789abcdef"),
            d.join("a/b").join(format!("x{dead}")),
            outside.join(&dead),
        ];
        for k in &kept {
            std::fs::write(k, b"kept").unwrap();
        }
        // A directory, a symlink (to a stale-looking file outside) and a symlinked
        // directory under stale-looking names: none is removed or followed.
        std::fs::create_dir(d.join("a").join(&dead)).unwrap();
        std::os::unix::fs::symlink(outside.join(&dead), d.join("a/b").join(&dead)).unwrap();
        std::os::unix::fs::symlink(&outside, d.join("link-to-outside")).unwrap();
        assert_eq!(sweep(&d), 2);
        assert!(!d.join(&dead).exists());
        assert!(!d.join("a/b/c").join(&dead).exists());
        for k in &kept {
            assert_eq!(std::fs::read(k).unwrap(), b"kept", "{}", k.display());
        }
        assert!(d.join("a").join(&dead).is_dir());
        assert!(d.join("a/b").join(&dead).is_symlink());
        assert_eq!(sweep(&d), 0, "nothing left to remove");
        std::fs::remove_dir_all(&d).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn files_of_other_users_stay() {
        if !rustix::process::geteuid().is_root() {
            return; // Only root can give a file away.
        }
        let d = scratch("owner");
        let f = d.join(temp_name_of(DEAD, 1));
        std::fs::write(&f, b"theirs").unwrap();
        std::os::unix::fs::chown(&f, Some(12345), None).unwrap();
        assert_eq!(sweep(&d), 0);
        assert!(f.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_sweep_thread_reports_and_stops() {
        let d = scratch("thread");
        std::fs::write(d.join(temp_name_of(DEAD, 1)), b"").unwrap();
        std::fs::write(d.join(temp_name_of(DEAD, 2)), b"").unwrap();
        let root = rfs::open(&d, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let mut sweep = Sweep::start(root).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while sweep.removed().is_none() {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(sweep.removed(), Some(2));
        sweep.stop();
        sweep.stop();
        std::fs::remove_dir_all(&d).unwrap();
    }
}
