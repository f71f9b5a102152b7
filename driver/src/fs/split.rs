//! Files split into parts (PROTOCOL.md §4.1): the parts of one file arrive as separate
//! entries, possibly over several lanes of one transfer group at once, and are written at
//! their offsets into one temporary file, published once every part verified.
//!
//! A split file belongs to one group ([`SplitFiles`], the group's): only parts that this
//! transfer's sender verified against its own digests count for publishing, so no other
//! sender's bytes can end up in a file this sender was told it delivered. A part that
//! fails is missing again. When the group ends with a file incomplete, what verified is
//! kept for a resume ([`KeptSplits`], the receiver's): the next transfer of the same file
//! (name, size, mtime, mode, part size) takes it over, and its parts that are there are
//! answered "already here" — their kept bytes are hashed and checked against that
//! sender's digests, so they count only once verified again, by this transfer. Kept files
//! are bounded ([`MAX_KEPT`], [`KEEP_IDLE`]); one dropped costs only a resend.

use super::dest::{Destination, Incoming, Refusal};
use crate::sync::lock_std;
use rdmaft_protocol::{FileRejectReason, FileStatus, Part};
use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an incomplete split file is kept for a resume after its transfer ended.
pub(crate) const KEEP_IDLE: Duration = Duration::from_secs(600);
/// Most incomplete split files kept for a resume (the oldest goes first).
pub(crate) const MAX_KEPT: usize = 64;
/// Most parts one split file tracks (a hostile sender offering endless part numbers costs
/// bounded memory): 2^20 parts, 64 TiB at the default part size.
pub(crate) const MAX_PARTS_TRACKED: usize = 1 << 20;

/// What identifies one split file: a kept file is taken over only if all of it matches.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct SplitKey {
    name: String,
    size: u64,
    mtime: (i64, u32),
    mode: u32,
    shift: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PartState {
    /// Being written (or checked) by a lane now.
    Writing,
    /// Verified by this transfer.
    Verified,
    /// Verified by an earlier transfer: its bytes are in the file, unchecked by this one.
    Kept,
}

/// One group's split files.
pub(crate) struct SplitFiles {
    files: Mutex<HashMap<SplitKey, Arc<SplitFile>>>,
    /// Where incomplete files go when the group ends (with resume).
    kept: Option<Arc<KeptSplits>>,
}

/// One file being received in parts.
pub(crate) struct SplitFile {
    dest: Arc<Destination>,
    key: SplitKey,
    /// A second descriptor of the temporary file: the parts' writers share it (`pwrite`
    /// and `pread` at their own offsets) while the state below owns the file itself.
    file: File,
    /// Held while a part's chunk is written. The kernel lets one buffered write of a file
    /// run at a time anyway (the inode's lock), but a writer waiting there spins while the
    /// other copies: with two lanes writing one file on two cores that spin took 7% of the
    /// CPU (`rwsem_spin_on_owner`) from the lanes' readers and engines. Waiting here sleeps.
    writing: Mutex<()>,
    state: Mutex<SplitState>,
}

struct SplitState {
    /// The temporary file, until published or handed on.
    temp: Option<Incoming>,
    /// Parts being written, verified or kept; the others are missing.
    parts: HashMap<u32, PartState>,
    /// Parts verified by this transfer.
    verified: u64,
    /// A failure of this file was reported already (later ones are only counted).
    failure_reported: bool,
}

/// A part's place in its split file, from [`SplitFiles::begin`].
pub(crate) struct Begun {
    pub(crate) file: Arc<SplitFile>,
    /// The part's bytes were verified by an earlier transfer and kept: they are there to
    /// be checked.
    pub(crate) kept: bool,
}

/// How a part's end went for its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PartEnd {
    /// The part's result (for the part that completes the file: whether publishing
    /// worked).
    pub(crate) status: FileStatus,
    pub(crate) detail: Option<String>,
    /// Whether the file's receiver report should hear of it: when it was published, and
    /// at its first failure.
    pub(crate) report: bool,
}

impl SplitFiles {
    /// A group's table; incomplete files go to `kept` when it ends (`None`: removed).
    pub(crate) fn new(kept: Option<Arc<KeptSplits>>) -> SplitFiles {
        SplitFiles {
            files: Mutex::new(HashMap::new()),
            kept,
        }
    }

    /// Part `part` of file `name` (`size` bytes in all) is offered: the split file, made
    /// by its first part (taking over a kept one, or with a new temporary file). A part
    /// that is being written or verified already in this transfer is refused
    /// (`NAME_CONFLICT`: a part comes once).
    pub(crate) fn begin(
        &self,
        dest: &Arc<Destination>,
        name: &str,
        size: u64,
        part: Part,
        mode: u32,
        mtime: (i64, u32),
    ) -> Result<Begun, Refusal> {
        let key = SplitKey {
            name: name.to_owned(),
            size,
            mtime,
            mode,
            shift: part.shift,
        };
        let mut files = lock_std(&self.files);
        let file = match files.get(&key) {
            Some(f) => Arc::clone(f),
            None => {
                let taken = self.kept.as_ref().and_then(|k| k.take(&key));
                let (temp, parts) = match taken {
                    Some(kept) => (kept.temp, kept.parts),
                    None => (dest.begin_file(name, size, mode)?, HashMap::new()),
                };
                let file = temp
                    .file
                    .try_clone()
                    .map_err(|e| Refusal::new(FileRejectReason::IO, format!("{name}: {e}")))?;
                let f = Arc::new(SplitFile {
                    dest: Arc::clone(dest),
                    key: key.clone(),
                    file,
                    writing: Mutex::new(()),
                    state: Mutex::new(SplitState {
                        temp: Some(temp),
                        parts,
                        verified: 0,
                        failure_reported: false,
                    }),
                });
                files.insert(key, Arc::clone(&f));
                f
            }
        };
        drop(files);
        let mut state = lock_std(&file.state);
        if state.temp.is_none() {
            return Err(Refusal::new(
                FileRejectReason::NAME_CONFLICT,
                format!("{name}: its parts all arrived already"),
            ));
        }
        let kept = match state.parts.get(&part.index) {
            Some(PartState::Writing | PartState::Verified) => {
                return Err(Refusal::new(
                    FileRejectReason::NAME_CONFLICT,
                    format!("{name}: part {} came twice", part.index),
                ))
            }
            Some(PartState::Kept) => true,
            None if state.parts.len() >= MAX_PARTS_TRACKED => {
                return Err(Refusal::new(
                    FileRejectReason::BUSY,
                    format!("{name}: more than {MAX_PARTS_TRACKED} parts tracked"),
                ))
            }
            None => false,
        };
        state.parts.insert(part.index, PartState::Writing);
        drop(state);
        Ok(Begun { file, kept })
    }

    /// Part `index` of `file` ended: verified by this transfer (`Ok`) or not (missing
    /// again). The file is published when its last part verified.
    pub(crate) fn ended(
        &self,
        file: &SplitFile,
        index: u32,
        verified: Result<(), (FileStatus, String)>,
    ) -> PartEnd {
        let mut state = lock_std(&file.state);
        let (status, detail) = match verified {
            Ok(()) => {
                state.parts.insert(index, PartState::Verified);
                state.verified += 1;
                (FileStatus::OK, None)
            }
            Err((status, why)) => {
                state.parts.remove(&index);
                let first = !state.failure_reported;
                state.failure_reported = true;
                return PartEnd {
                    status,
                    detail: Some(why),
                    report: first,
                };
            }
        };
        // spec: [part.publish]
        if state.verified < Part::count(file.key.size, file.key.shift) {
            return PartEnd {
                status,
                detail,
                report: false,
            };
        }
        let Some(temp) = state.temp.take() else {
            return PartEnd {
                status,
                detail,
                report: false,
            };
        };
        drop(state);
        lock_std(&self.files).remove(&file.key);
        let name = &file.key.name;
        let (status, detail) = match file.dest.publish(temp, file.key.mode, file.key.mtime) {
            Ok(None) => (status, detail),
            Ok(Some(e)) => (
                FileStatus::OK,
                Some(format!(
                    "{name}: published, but syncing its directory failed: {e}"
                )),
            ),
            Err(e) => (FileStatus::IO, Some(format!("{name}: publishing: {e}"))),
        };
        PartEnd {
            status,
            detail,
            report: true,
        }
    }

    /// Split files of this group not published yet.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock_std(&self.files).len()
    }
}

impl Drop for SplitFiles {
    /// The group ended: each incomplete file is kept for a resume (what verified, by this
    /// transfer or kept before), or removed.
    fn drop(&mut self) {
        for (key, f) in lock_std(&self.files).drain() {
            let mut state = lock_std(&f.state);
            let Some(temp) = state.temp.take() else {
                continue;
            };
            let parts: HashMap<u32, PartState> = state
                .parts
                .iter()
                .filter(|(_, s)| **s != PartState::Writing)
                .map(|(i, _)| (*i, PartState::Kept))
                .collect();
            drop(state);
            match &self.kept {
                Some(kept) if !parts.is_empty() => kept.keep(
                    key,
                    Kept {
                        temp,
                        parts,
                        since: Instant::now(),
                        dest: Arc::clone(&f.dest),
                    },
                ),
                _ => f.dest.discard(temp),
            }
        }
    }
}

impl SplitFile {
    /// Writes `bytes` of the part that starts at `part_start`, at `offset` in the part.
    pub(crate) fn write_at(
        &self,
        bytes: &[u8],
        part_start: u64,
        offset: u64,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let _one_at_a_time = lock_std(&self.writing);
        self.file.write_all_at(bytes, part_start + offset)
    }

    /// The file the parts are written into (to read a kept part back).
    pub(crate) fn file(&self) -> &File {
        &self.file
    }
}

/// An incomplete split file kept for a resume.
struct Kept {
    temp: Incoming,
    /// Parts whose bytes verified (all [`PartState::Kept`]).
    parts: HashMap<u32, PartState>,
    /// When it was kept.
    since: Instant,
    /// Where its temporary file is.
    dest: Arc<Destination>,
}

impl Kept {
    fn discard(self) {
        self.dest.discard(self.temp);
    }
}

/// The receiver's incomplete split files, kept after their transfer for a resume.
#[derive(Default)]
pub(crate) struct KeptSplits {
    /// In keeping order, oldest first.
    files: Mutex<Vec<(SplitKey, Kept)>>,
}

impl KeptSplits {
    /// Keeps `kept` under `key`, dropping expired and, beyond [`MAX_KEPT`], the oldest.
    fn keep(&self, key: SplitKey, kept: Kept) {
        let mut files = lock_std(&self.files);
        Self::expire(&mut files, Instant::now());
        if let Some(i) = files.iter().position(|(k, _)| *k == key) {
            files.remove(i).1.discard();
        }
        files.push((key, kept));
        while files.len() > MAX_KEPT {
            files.remove(0).1.discard();
        }
    }

    /// Takes the kept file for `key`, if there is one.
    fn take(&self, key: &SplitKey) -> Option<Kept> {
        let mut files = lock_std(&self.files);
        Self::expire(&mut files, Instant::now());
        let i = files.iter().position(|(k, _)| k == key)?;
        Some(files.remove(i).1)
    }

    /// Drops the kept files older than [`KEEP_IDLE`].
    fn expire(files: &mut Vec<(SplitKey, Kept)>, now: Instant) {
        while files
            .first()
            .is_some_and(|(_, k)| now.saturating_duration_since(k.since) > KEEP_IDLE)
        {
            files.remove(0).1.discard();
        }
    }

    /// Drops the kept files past [`KEEP_IDLE`] (a receiver calls it now and then, so an
    /// abandoned file does not hold its disk space until the next transfer).
    pub(crate) fn expire_now(&self) {
        Self::expire(&mut lock_std(&self.files), Instant::now());
    }

    /// Files kept now.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock_std(&self.files).len()
    }
}

impl Drop for KeptSplits {
    /// The receiver ended: kept files are removed.
    fn drop(&mut self) {
        for (_, kept) in lock_std(&self.files).drain(..) {
            kept.discard();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::dest::DestOptions;

    fn dest(name: &str) -> (std::path::PathBuf, Arc<Destination>) {
        dest_with(name, true)
    }

    /// With named temporary files (`unnamed: false`) a file left behind shows in the
    /// directory; an unnamed one goes with its descriptor whatever the code does.
    fn dest_with(name: &str, unnamed: bool) -> (std::path::PathBuf, Arc<Destination>) {
        let d = std::env::temp_dir().join(format!("rdmaft-split-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let options = DestOptions {
            unnamed_temp_files: unnamed,
            ..DestOptions::default()
        };
        let dest = Arc::new(Destination::open(&d, options).unwrap());
        (d, dest)
    }

    fn part(index: u32) -> Part {
        Part { shift: 12, index }
    }

    const MTIME: (i64, u32) = (1_600_000_000, 0);
    const SIZE: u64 = 2 * 4096 + 1;

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut n: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        n.sort();
        n
    }

    #[test]
    // spec-test: [part.publish]
    fn a_file_is_published_when_its_last_part_verified() {
        let (dir, dest) = dest("publish");
        let splits = SplitFiles::new(None);
        let begin = |i| splits.begin(&dest, "f", SIZE, part(i), 0o644, MTIME);
        let p0 = begin(0).unwrap();
        assert!(!p0.kept);
        assert!(begin(0).is_err(), "a part being written is not taken twice");
        let p2 = begin(2).unwrap();
        p0.file.write_at(&[1; 4096], 0, 0).unwrap();
        p2.file.write_at(&[3], 2 * 4096, 0).unwrap();
        assert!(!splits.ended(&p0.file, 0, Ok(())).report);
        assert!(begin(0).is_err(), "nor twice once verified");
        // Part 2 fails: reported once, missing again.
        let failed = splits.ended(&p2.file, 2, Err((FileStatus::IO, "disk".into())));
        assert_eq!((failed.status, failed.report), (FileStatus::IO, true));
        let p1 = begin(1).unwrap();
        p1.file.write_at(&[2; 4096], 4096, 0).unwrap();
        assert!(!splits.ended(&p1.file, 1, Ok(())).report);
        assert!(!dir.join("f").exists());
        let p2 = begin(2).unwrap();
        p2.file.write_at(&[3], 2 * 4096, 0).unwrap();
        let done = splits.ended(&p2.file, 2, Ok(()));
        assert_eq!((done.status, done.report), (FileStatus::OK, true));
        let mut want = vec![1u8; 4096];
        want.extend([2u8; 4096]);
        want.push(3);
        assert_eq!(std::fs::read(dir.join("f")).unwrap(), want);
        assert_eq!(splits.len(), 0, "a published file leaves the table");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    // spec-test: [part.publish]
    fn kept_parts_count_only_once_this_transfer_verified_them() {
        let (dir, dest) = dest("kept");
        let kept = Arc::new(KeptSplits::default());
        // A first transfer verifies parts 0 and 2, then ends.
        let first = SplitFiles::new(Some(Arc::clone(&kept)));
        for i in [0, 2] {
            let b = first
                .begin(&dest, "f", SIZE, part(i), 0o644, MTIME)
                .unwrap();
            first.ended(&b.file, i, Ok(()));
        }
        let p1 = first
            .begin(&dest, "f", SIZE, part(1), 0o644, MTIME)
            .unwrap();
        drop(p1);
        drop(first);
        assert_eq!(kept.len(), 1, "kept for a resume");
        // The next transfer takes it over: parts 0 and 2 are there to check, 1 is not.
        let second = SplitFiles::new(Some(Arc::clone(&kept)));
        let begin = |i| second.begin(&dest, "f", SIZE, part(i), 0o644, MTIME);
        let b0 = begin(0).unwrap();
        assert!(b0.kept);
        assert_eq!(kept.len(), 0);
        let b1 = begin(1).unwrap();
        assert!(
            !b1.kept,
            "a part that was being written when the transfer ended"
        );
        assert!(!second.ended(&b0.file, 0, Ok(())).report);
        assert!(!second.ended(&b1.file, 1, Ok(())).report);
        // Part 2 was verified before, not by this transfer: the file is not complete.
        assert!(
            !dir.join("f").exists(),
            "published with a part this sender never checked"
        );
        let b2 = begin(2).unwrap();
        assert!(b2.kept);
        assert!(second.ended(&b2.file, 2, Ok(())).report);
        assert!(dir.join("f").exists());
        // Another version of the file (another mtime) is another file.
        let third = SplitFiles::new(Some(Arc::clone(&kept)));
        let b = third
            .begin(&dest, "f", SIZE, part(0), 0o644, (1, 0))
            .unwrap();
        assert!(!b.kept);
        drop(b);
        drop(third);
        assert_eq!(kept.len(), 0, "nothing verified: nothing kept");
        assert_eq!(names(&dir), ["f"], "no temporary file left");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn kept_files_are_bounded() {
        let (dir, dest) = dest_with("bounded", false);
        let kept = Arc::new(KeptSplits::default());
        for i in 0..(MAX_KEPT + 5) {
            let splits = SplitFiles::new(Some(Arc::clone(&kept)));
            let b = splits
                .begin(&dest, &format!("f{i}"), SIZE, part(0), 0o644, MTIME)
                .unwrap();
            splits.ended(&b.file, 0, Ok(()));
        }
        assert_eq!(kept.len(), MAX_KEPT);
        assert_eq!(names(&dir).len(), MAX_KEPT, "the oldest were removed");
        drop(kept);
        assert!(names(&dir).is_empty(), "kept files go with the receiver");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A kept file lasts [`KEEP_IDLE`] and not a moment longer.
    #[test]
    fn kept_files_expire_after_their_time() {
        let (dir, dest) = dest_with("expire", false);
        let kept = Arc::new(KeptSplits::default());
        let splits = SplitFiles::new(Some(Arc::clone(&kept)));
        let b = splits
            .begin(&dest, "f", SIZE, part(0), 0o644, MTIME)
            .unwrap();
        splits.ended(&b.file, 0, Ok(()));
        drop(splits);
        let since = lock_std(&kept.files)[0].1.since;
        KeptSplits::expire(&mut lock_std(&kept.files), since + KEEP_IDLE);
        assert_eq!(kept.len(), 1, "kept for exactly its time");
        assert_eq!(names(&dir).len(), 1);
        KeptSplits::expire(&mut lock_std(&kept.files), since + KEEP_IDLE * 2);
        assert_eq!(kept.len(), 0, "expired");
        assert!(names(&dir).is_empty(), "its temporary file removed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
