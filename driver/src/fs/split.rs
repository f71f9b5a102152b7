//! Files split into parts (PROTOCOL.md §4.1): the parts of one file arrive as separate
//! entries, possibly over several lanes of one transfer group at once, and are written at
//! their offsets into one temporary file. The file is published once, when its last part
//! verified; a part that failed (or never came) keeps it from ever being published, and the
//! temporary file goes when the last part ended or when the group ends.

use super::dest::{Destination, Incoming, Refusal};
use crate::sync::lock_std;
use rdmaft_protocol::{FileRejectReason, FileStatus, Part};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::sync::{Arc, Mutex};

/// The split files of one transfer group, by name.
#[derive(Default)]
pub(crate) struct SplitFiles {
    files: Mutex<HashMap<String, Arc<SplitFile>>>,
}

/// One file being received in parts.
pub(crate) struct SplitFile {
    dest: Arc<Destination>,
    name: String,
    size: u64,
    shift: u8,
    mode: u32,
    mtime: (i64, u32),
    /// A second descriptor of the temporary file: the parts' writers share it (`pwrite`
    /// at their own offsets) while the state below owns the file itself.
    writes: File,
    state: Mutex<SplitState>,
}

struct SplitState {
    /// The temporary file, until published or discarded.
    temp: Option<Incoming>,
    /// Parts offered (a part comes once).
    offered: HashSet<u32>,
    /// Parts verified.
    verified: u64,
    /// Parts that ended without verifying.
    failures: u64,
    /// A part failed: the file will not be published.
    failed: bool,
}

impl SplitFiles {
    /// Part `part` of file `name` (`size` bytes in all) is offered: the split file, created
    /// (its temporary file with it) by its first part. A part that does not match the
    /// file's other parts (size, part size, metadata), or comes twice, is refused.
    pub(crate) fn begin(
        &self,
        dest: &Arc<Destination>,
        name: &str,
        size: u64,
        part: Part,
        mode: u32,
        mtime: (i64, u32),
    ) -> Result<Arc<SplitFile>, Refusal> {
        let mut files = lock_std(&self.files);
        let file = match files.get(name) {
            Some(f) => Arc::clone(f),
            None => {
                let temp = dest.begin_file(name, size)?;
                let writes = temp
                    .file
                    .try_clone()
                    .map_err(|e| Refusal::new(FileRejectReason::IO, format!("{name}: {e}")))?;
                let f = Arc::new(SplitFile {
                    dest: Arc::clone(dest),
                    name: name.to_owned(),
                    size,
                    shift: part.shift,
                    mode,
                    mtime,
                    writes,
                    state: Mutex::new(SplitState {
                        temp: Some(temp),
                        offered: HashSet::new(),
                        verified: 0,
                        failures: 0,
                        failed: false,
                    }),
                });
                files.insert(name.to_owned(), Arc::clone(&f));
                f
            }
        };
        let same = file.size == size
            && file.shift == part.shift
            && file.mode == mode
            && file.mtime == mtime;
        let mut state = lock_std(&file.state);
        if !same || state.temp.is_none() || !state.offered.insert(part.index) {
            return Err(Refusal::new(
                FileRejectReason::NAME_CONFLICT,
                format!(
                    "{name}: part {} does not match the other parts of this file, or came \
                     twice",
                    part.index
                ),
            ));
        }
        drop(state);
        Ok(file)
    }

    /// A part of `file` ended: verified (`Ok`) or not. Returns the part's result (for the
    /// file's last part, whether publishing worked) and whether this ended the file. Once
    /// every part verified, the file is published; once a part failed and every part was
    /// offered and ended, its temporary file is removed.
    pub(crate) fn ended(
        &self,
        file: &SplitFile,
        verified: Result<(), (FileStatus, String)>,
    ) -> (FileStatus, Option<String>, bool) {
        let mut state = lock_std(&file.state);
        let (status, detail) = match verified {
            Ok(()) => {
                state.verified += 1;
                (FileStatus::OK, None)
            }
            Err((status, why)) => {
                state.failed = true;
                state.failures += 1;
                (status, Some(why))
            }
        };
        let parts = Part::count(file.size, file.shift);
        let ended_parts = state.verified + state.failures;
        let all_ended = state.offered.len() as u64 == parts && ended_parts == parts;
        if state.failed {
            // Space back now; the file goes once no part can write to it any more.
            let _ = file.writes.set_len(0);
        }
        if !all_ended {
            return (status, detail, false);
        }
        let failed = state.failed;
        let Some(temp) = state.temp.take() else {
            return (status, detail, true);
        };
        drop(state);
        lock_std(&self.files).remove(&file.name);
        if failed {
            file.dest.discard(temp);
            return (status, detail, true);
        }
        let (status, detail) = match file.dest.publish(temp, file.mode, file.mtime) {
            Ok(None) => (status, detail),
            Ok(Some(e)) => (
                FileStatus::OK,
                Some(format!(
                    "{}: published, but syncing its directory failed: {e}",
                    file.name
                )),
            ),
            Err(e) => (
                FileStatus::IO,
                Some(format!("{}: publishing: {e}", file.name)),
            ),
        };
        (status, detail, true)
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
        self.writes.write_all_at(bytes, part_start + offset)
    }
}

impl Drop for SplitFiles {
    /// The group ended: files whose parts did not all arrive are removed.
    fn drop(&mut self) {
        for (_, f) in lock_std(&self.files).drain() {
            if let Some(temp) = lock_std(&f.state).temp.take() {
                f.dest.discard(temp);
            }
        }
    }
}
