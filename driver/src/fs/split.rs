//! Files split into parts (PROTOCOL.md §4.1): the parts of one file arrive as separate
//! entries, possibly over several lanes at once, or from several senders (the shards of
//! `send --shard`), and are written at their offsets into one temporary file. The file is
//! published once, when its last missing part verified.
//!
//! A receiver keeps one table of split files for all its connections, keyed by name, size,
//! mtime, mode and part size, so parts meet whichever connection brings them. A part that
//! fails, or never comes, is missing again: the file waits for it, kept after its last
//! writer left — another shard may still send the part, or the same sender again (a
//! resume: a part that verified before is answered "already here" and its kept bytes are
//! checked against the sender's digest instead of sent). Kept files that no one touches for
//! [`KEEP_IDLE`], or beyond [`MAX_KEPT`], are dropped with their temporary file.

use super::dest::{Destination, Incoming, Refusal};
use crate::sync::lock_std;
use rdmaft_protocol::{FileRejectReason, FileStatus, Part};
use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an incomplete split file no part is being written to is kept.
pub(crate) const KEEP_IDLE: Duration = Duration::from_secs(600);
/// Most incomplete split files kept with no part being written (the oldest goes first).
pub(crate) const MAX_KEPT: usize = 64;
/// Most parts one split file tracks (a hostile sender offering endless part numbers costs
/// bounded memory): 2^20 parts, 64 TiB at the default part size.
pub(crate) const MAX_PARTS_TRACKED: usize = 1 << 20;

/// What identifies one split file: two senders' parts meet only if all of it matches.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct SplitKey {
    name: String,
    size: u64,
    mtime: (i64, u32),
    mode: u32,
    shift: u8,
}

/// The receiver's split files.
#[derive(Default)]
pub(crate) struct SplitFiles {
    files: Mutex<HashMap<SplitKey, Arc<SplitFile>>>,
}

/// One file being received in parts.
pub(crate) struct SplitFile {
    dest: Arc<Destination>,
    key: SplitKey,
    /// A second descriptor of the temporary file: the parts' writers share it (`pwrite`
    /// and `pread` at their own offsets) while the state below owns the file itself.
    file: File,
    state: Mutex<SplitState>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PartState {
    Writing,
    Verified,
}

struct SplitState {
    /// The temporary file, until published or dropped.
    temp: Option<Incoming>,
    /// Parts being written or verified; the others are missing.
    parts: HashMap<u32, PartState>,
    /// Parts being written now.
    writers: usize,
    /// Since when no part was written (for [`KEEP_IDLE`]).
    idle_since: Instant,
}

/// A part's place in its split file, from [`SplitFiles::begin`].
pub(crate) struct Begun {
    pub(crate) file: Arc<SplitFile>,
    /// The part verified before (in an earlier session): its bytes are in the file.
    pub(crate) verified_before: bool,
}

impl SplitFiles {
    /// Part `part` of file `name` (`size` bytes in all) is offered: the split file, created
    /// (its temporary file with it) by its first part. A part being written by another
    /// connection right now is refused (`NAME_CONFLICT`).
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
        expire(&mut files, Instant::now());
        let file = match files.get(&key) {
            Some(f) => Arc::clone(f),
            None => {
                let temp = dest.begin_file(name, size)?;
                let file = temp
                    .file
                    .try_clone()
                    .map_err(|e| Refusal::new(FileRejectReason::IO, format!("{name}: {e}")))?;
                let f = Arc::new(SplitFile {
                    dest: Arc::clone(dest),
                    key: key.clone(),
                    file,
                    state: Mutex::new(SplitState {
                        temp: Some(temp),
                        parts: HashMap::new(),
                        writers: 0,
                        idle_since: Instant::now(),
                    }),
                });
                files.insert(key, Arc::clone(&f));
                f
            }
        };
        drop(files);
        let mut state = lock_std(&file.state);
        let verified_before = match state.parts.get(&part.index) {
            Some(PartState::Writing) => {
                return Err(Refusal::new(
                    FileRejectReason::NAME_CONFLICT,
                    format!("{name}: part {} is being written already", part.index),
                ))
            }
            Some(PartState::Verified) => true,
            None if state.parts.len() >= MAX_PARTS_TRACKED => {
                return Err(Refusal::new(
                    FileRejectReason::BUSY,
                    format!("{name}: more than {MAX_PARTS_TRACKED} parts tracked"),
                ))
            }
            None => false,
        };
        if state.temp.is_none() {
            // Published (or dropped) just now: the parts are all there.
            return Err(Refusal::new(
                FileRejectReason::NAME_CONFLICT,
                format!("{name}: its parts all arrived already"),
            ));
        }
        state.parts.insert(part.index, PartState::Writing);
        state.writers += 1;
        drop(state);
        Ok(Begun {
            file,
            verified_before,
        })
    }

    /// Part `index` of `file` ended: verified (`Ok`) or not (it is missing again). Returns
    /// the part's result (for the part that completes the file, whether publishing worked)
    /// and whether it completed the file.
    pub(crate) fn ended(
        &self,
        file: &SplitFile,
        index: u32,
        verified: Result<(), (FileStatus, String)>,
    ) -> (FileStatus, Option<String>, bool) {
        let mut state = lock_std(&file.state);
        state.writers = state.writers.saturating_sub(1);
        if state.writers == 0 {
            state.idle_since = Instant::now();
        }
        let (status, detail) = match verified {
            Ok(()) => {
                state.parts.insert(index, PartState::Verified);
                (FileStatus::OK, None)
            }
            Err((status, why)) => {
                state.parts.remove(&index);
                (status, Some(why))
            }
        };
        let total = Part::count(file.key.size, file.key.shift);
        let verified = state
            .parts
            .values()
            .filter(|s| **s == PartState::Verified)
            .count() as u64;
        if verified < total {
            return (status, detail, false);
        }
        let Some(temp) = state.temp.take() else {
            return (status, detail, true);
        };
        drop(state);
        self.forget(file);
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
        (status, detail, true)
    }

    /// Takes `file` out of the table (it is complete).
    fn forget(&self, file: &SplitFile) {
        let mut files = lock_std(&self.files);
        if files
            .get(&file.key)
            .is_some_and(|f| std::ptr::eq(Arc::as_ptr(f), file))
        {
            files.remove(&file.key);
        }
    }

    /// Split files in the table (being received or kept).
    #[cfg(test)]
    fn len(&self) -> usize {
        lock_std(&self.files).len()
    }
}

/// Drops kept files idle for longer than [`KEEP_IDLE`], then the oldest beyond
/// [`MAX_KEPT`].
fn expire(files: &mut HashMap<SplitKey, Arc<SplitFile>>, now: Instant) {
    let mut kept: Vec<(Instant, SplitKey)> = files
        .iter()
        .filter_map(|(k, f)| {
            let s = lock_std(&f.state);
            (s.writers == 0).then(|| (s.idle_since, k.clone()))
        })
        .collect();
    kept.sort_by_key(|(since, _)| *since);
    let excess = kept.len().saturating_sub(MAX_KEPT);
    for (i, (since, key)) in kept.into_iter().enumerate() {
        if i < excess || now.saturating_duration_since(since) > KEEP_IDLE {
            if let Some(f) = files.remove(&key) {
                f.drop_temp();
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
        self.file.write_all_at(bytes, part_start + offset)
    }

    /// The file the parts are written into (to read a kept part back).
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    fn drop_temp(&self) {
        if let Some(temp) = lock_std(&self.state).temp.take() {
            self.dest.discard(temp);
        }
    }
}

impl Drop for SplitFiles {
    /// The receiver ended: files whose parts did not all arrive are removed.
    fn drop(&mut self) {
        for (_, f) in lock_std(&self.files).drain() {
            f.drop_temp();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::dest::DestOptions;

    fn dest(name: &str) -> (std::path::PathBuf, Arc<Destination>) {
        let d = std::env::temp_dir().join(format!("rdmaft-split-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let dest = Arc::new(Destination::open(&d, DestOptions::default()).unwrap());
        (d, dest)
    }

    fn part(index: u32) -> Part {
        Part { shift: 12, index }
    }

    #[test]
    fn a_file_is_published_when_its_last_missing_part_verified() {
        let (dir, dest) = dest("publish");
        let splits = SplitFiles::default();
        let size = 2 * 4096 + 1;
        let mtime = (1_600_000_000, 0);
        let begin = |i| splits.begin(&dest, "f", size, part(i), 0o644, mtime);
        let p0 = begin(0).unwrap();
        assert!(!p0.verified_before);
        assert!(begin(0).is_err(), "a part being written is not taken twice");
        let p2 = begin(2).unwrap();
        p0.file.write_at(&[1; 4096], 0, 0).unwrap();
        p2.file.write_at(&[3], 2 * 4096, 0).unwrap();
        assert!(!splits.ended(&p0.file, 0, Ok(())).2);
        // Part 2 fails: missing again, not the end of the file.
        let failed = splits.ended(&p2.file, 2, Err((FileStatus::IO, "disk".into())));
        assert_eq!((failed.0, failed.2), (FileStatus::IO, false));
        assert!(!dir.join("f").exists());
        // Another connection (another shard, or a resume) brings parts 1 and 2; a part that
        // verified before is said to be there.
        let again = begin(0).unwrap();
        assert!(again.verified_before);
        assert!(!splits.ended(&again.file, 0, Ok(())).2);
        let p1 = begin(1).unwrap();
        p1.file.write_at(&[2; 4096], 4096, 0).unwrap();
        assert!(!splits.ended(&p1.file, 1, Ok(())).2);
        let p2 = begin(2).unwrap();
        p2.file.write_at(&[3], 2 * 4096, 0).unwrap();
        let done = splits.ended(&p2.file, 2, Ok(()));
        assert_eq!((done.0, done.2), (FileStatus::OK, true));
        let mut want = vec![1u8; 4096];
        want.extend([2u8; 4096]);
        want.push(3);
        assert_eq!(std::fs::read(dir.join("f")).unwrap(), want);
        assert_eq!(splits.len(), 0, "a published file leaves the table");
        // Parts of another version of the file (another mtime) are another file.
        let other = splits
            .begin(&dest, "f", size, part(0), 0o644, (1, 0))
            .unwrap();
        assert!(!other.verified_before);
        drop(other);
        drop(splits);
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["f"], "an unfinished file goes with the table");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn kept_files_are_bounded() {
        let (dir, dest) = dest("bounded");
        let splits = SplitFiles::default();
        for i in 0..(MAX_KEPT + 5) {
            let b = splits
                .begin(&dest, &format!("f{i}"), 3 * 4096, part(0), 0o644, (0, 0))
                .unwrap();
            splits.ended(&b.file, 0, Err((FileStatus::ABORTED, "gone".into())));
        }
        // The next begin drops the oldest beyond the bound.
        let b = splits
            .begin(&dest, "last", 3 * 4096, part(0), 0o644, (0, 0))
            .unwrap();
        assert_eq!(
            splits.len(),
            MAX_KEPT + 1,
            "the kept ones and the one being written"
        );
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
