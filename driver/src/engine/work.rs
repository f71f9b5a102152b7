//! The work of one send, shared by its lanes (its connections): the walk's entries handed
//! out from one queue, large files split into parts that several lanes carry at once, and
//! each entry's outcome gathered once per file — so progress, the report and the `on_file`
//! callback are per transfer, whatever lane carried what.
//!
//! Two orderings survive the spreading:
//! - A directory's entry (its mode and mtime; the walk gives it right after its contents)
//!   is handed out only once every file handed out before it has its result — later files
//!   go on meanwhile — and all directory entries go to one lane, whose protocol machine
//!   already orders `a/b` before `a` (PROTOCOL.md §4.1, the conflict rule). So no file
//!   lands in a directory after its mtime was set.
//! - A split file's parts are written into one temporary file at the receiver, which
//!   publishes it when its last part verified; here its outcome is the first failure among
//!   its parts, or sent when every part was.

use super::send::{FileCallback, FileOutcome, FileReport, Progress, SendCounts, SendReport};
use crate::fs::tree::{SkipReason, SourceEntry, Walk, WalkItem};
use crate::handoff::Waker;
use crate::report::list_failure;
use crate::sync::{lock, Mutex};
use rdmaft_protocol::{Changes, EntryKind, FileStatus, Part};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

thread_local! {
    /// The transfer (its progress's address) whose callback this thread is running; 0 for
    /// none. The lanes run callbacks on their own threads, which a wait must not join.
    static IN_CALLBACK: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Whether the calling thread is running a callback of the transfer with `progress`.
pub(crate) fn in_callback_of(progress: &Arc<Progress>) -> bool {
    IN_CALLBACK.with(|c| c.get() == Arc::as_ptr(progress) as usize)
}

/// One piece of work: an entry, or one part of a split file.
#[derive(Clone, Debug)]
pub(crate) struct WorkItem {
    pub(crate) entry: SourceEntry,
    pub(crate) part: Option<Part>,
    /// For a part: its file's number among the transfer's split files (two roots may
    /// hold files of one name).
    split: u64,
    /// For a file or part: its number in the order handed out (directories wait for the
    /// ones before them).
    seq: Option<u64>,
    /// For a directory: its walk found no error, so a sync may remove at the receiver what
    /// it no longer holds (`--delete`).
    pub(crate) prune: bool,
}

impl WorkItem {
    /// Bytes this item carries.
    pub(crate) fn data_len(&self) -> u64 {
        match self.part {
            Some(p) => p.len_in(self.entry.size),
            None => self.entry.size,
        }
    }

    /// Where its bytes start in the file.
    pub(crate) fn start(&self) -> u64 {
        self.part.map_or(0, Part::start)
    }
}

#[cfg(test)]
impl WorkItem {
    /// An item as the queue would hand it out, for the engines' unit tests.
    pub(crate) fn for_test(entry: SourceEntry, part: Option<Part>) -> Self {
        WorkItem {
            entry,
            part,
            split: 0,
            seq: None,
            prune: false,
        }
    }
}

/// What a lane gets when it asks for work.
#[derive(Debug)]
pub(crate) enum Next {
    /// Offer this.
    Item(WorkItem),
    /// Nothing now, but the transfer is not over (directories wait for files still under
    /// way on other lanes): ask again when woken.
    Wait,
    /// Nothing left for this lane: it may say goodbye.
    Done,
}

/// How a send splits files.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Splitting {
    /// log₂ of the part size.
    pub(crate) shift: u8,
}

/// The shared work of one send.
pub(crate) struct Work {
    state: Mutex<State>,
    progress: Arc<Progress>,
    on_file: Option<FileCallback>,
    /// Callbacks run one at a time, whichever lane's thread ends the entry.
    callback: Mutex<()>,
    splitting: Option<Splitting>,
}

/// Directory entries that may wait for their contents at once; past this the walk waits
/// too (a tree of empty directories behind a slow file holds no more than this).
const MAX_WAITING_DIRS: usize = 4096;

impl State {
    /// `item`, numbered and counted as out.
    fn hand_out(&mut self, mut item: WorkItem) -> WorkItem {
        item.seq = Some(self.next_seq);
        self.out.insert(self.next_seq);
        self.next_seq += 1;
        item
    }

    /// Whether every file and part numbered below `before` has ended.
    fn ended_before(&self, before: u64) -> bool {
        self.out.first().map_or(true, |&first| first >= before)
    }
}

/// A split file whose parts are not all resolved.
struct SplitOutcome {
    entry: SourceEntry,
    parts: u64,
    parts_left: u64,
    first_failure: Option<FileOutcome>,
    /// (sync) Parts in sync, parts a dry run would send, and what changed.
    in_sync: u64,
    would_send: u64,
    changes: Changes,
}

#[derive(Default)]
struct State {
    walk: Option<Walk>,
    /// Parts of the file being split, not handed out yet.
    parts: VecDeque<WorkItem>,
    /// Directory entries waiting for the files handed out before them (the number the
    /// next file was to get then), in walk order: each comes after its contents.
    dirs: VecDeque<(SourceEntry, u64)>,
    /// The lane that carries the directory entries, once chosen.
    dir_lane: Option<usize>,
    /// Files and parts handed out and not resolved, by number.
    out: BTreeSet<u64>,
    /// The number of the next file or part handed out.
    next_seq: u64,
    /// Split files with parts not resolved, by number.
    splits: HashMap<u64, SplitOutcome>,
    /// The number of the next split file.
    next_split: u64,
    /// Lanes waiting for work (one waker each), to wake when something resolves.
    waiting: HashMap<usize, Waker>,
    /// Items each lane took, by lane.
    taken: HashMap<usize, u64>,
    /// Directories whose walk met an error (an unreadable or unsendable entry) or left an
    /// entry out (`--exclude`), until their own entry is handed out: not pruned.
    errored_dirs: HashSet<PathBuf>,
    counts: SendCounts,
    failures: Vec<FileReport>,
}

impl Work {
    pub(crate) fn new(
        walk: Walk,
        splitting: Option<Splitting>,
        progress: Arc<Progress>,
        on_file: Option<FileCallback>,
    ) -> Work {
        Work {
            state: Mutex::new(State {
                walk: Some(walk),
                ..State::default()
            }),
            progress,
            on_file,
            callback: Mutex::new(()),
            splitting,
        }
    }

    /// The next item for `lane`; `waker` is woken when a `Wait` may have become an item.
    pub(crate) fn next(&self, lane: usize, waker: &Waker) -> Next {
        let mut skipped = Vec::new();
        let (next, wake) = {
            let mut s = lock(&self.state);
            let next = self.next_locked(&mut s, lane, &mut skipped);
            match next {
                Next::Wait => {
                    s.waiting.insert(lane, Arc::clone(waker));
                }
                Next::Item(_) => *s.taken.entry(lane).or_default() += 1,
                Next::Done => {}
            }
            // A directory this lane's walk found ready is another lane's to send: wake it.
            let ready = s
                .dirs
                .front()
                .is_some_and(|(_, before)| s.ended_before(*before));
            let wake = if ready {
                std::mem::take(&mut s.waiting)
            } else {
                HashMap::new()
            };
            (next, wake)
        };
        for w in wake.into_values() {
            w.wake();
        }
        for report in skipped {
            self.ended(report);
        }
        next
    }

    fn next_locked(&self, s: &mut State, lane: usize, skipped: &mut Vec<FileReport>) -> Next {
        loop {
            // A directory whose contents (every file handed out before it) all ended.
            // spec: [lanes.dir-order]
            let ready = s
                .dirs
                .front()
                .is_some_and(|(_, before)| s.ended_before(*before));
            if ready && s.dir_lane.map_or(true, |l| l == lane) {
                s.dir_lane = Some(lane);
                let (dir, _) = s.dirs.pop_front().expect("a ready directory");
                // spec: [sync.delete-whole]
                let prune = !s.errored_dirs.remove(&dir.path);
                return Next::Item(WorkItem {
                    entry: dir,
                    part: None,
                    split: 0,
                    seq: None,
                    prune,
                });
            }
            if let Some(item) = s.parts.pop_front() {
                return Next::Item(s.hand_out(item));
            }
            // The walk waits while too many directories wait for their contents.
            if s.dirs.len() >= MAX_WAITING_DIRS {
                return Next::Wait;
            }
            match self.walk_next(s, skipped) {
                Some(item) if item.entry.kind == EntryKind::Directory => {
                    // spec: [lanes.dir-order]
                    let before = s.next_seq;
                    s.dirs.push_back((item.entry, before));
                }
                Some(item) => return Next::Item(s.hand_out(item)),
                None => break,
            }
        }
        match s.dir_lane {
            _ if s.dirs.is_empty() => Next::Done,
            // Another lane carries the directories.
            Some(l) if l != lane => Next::Done,
            _ => Next::Wait,
        }
    }

    /// The walk's next entry (a split file's first part, its other parts queued); skipped
    /// paths are reported and counted.
    fn walk_next(&self, s: &mut State, skipped: &mut Vec<FileReport>) -> Option<WorkItem> {
        loop {
            let item = s.walk.as_mut()?.next();
            let Some(item) = item else {
                s.walk = None;
                return None;
            };
            let p = &self.progress;
            if let WalkItem::Excluded { path } = item {
                // What the receiver has under an excluded name stays (as rsync protects
                // excluded names from --delete): its directory is not pruned.
                if let Some(parent) = path.parent() {
                    s.errored_dirs.insert(parent.to_owned());
                }
                continue;
            }
            p.files_found.fetch_add(1, Ordering::Relaxed);
            match item {
                WalkItem::Excluded { .. } => {}
                WalkItem::Entry(entry) => {
                    p.bytes_found.fetch_add(entry.size, Ordering::Relaxed);
                    return Some(self.split(s, entry));
                }
                WalkItem::Skipped { path, reason } => {
                    p.files_done.fetch_add(1, Ordering::Relaxed);
                    // A directory whose walk failed somewhere keeps what the receiver has
                    // (as rsync deletes nothing after an I/O error).
                    let unsent = matches!(
                        reason,
                        SkipReason::Unreadable(_)
                            | SkipReason::BadName(_)
                            | SkipReason::LongTarget(_)
                    );
                    if unsent {
                        if let Some(parent) = path.parent() {
                            s.errored_dirs.insert(parent.to_owned());
                        }
                    }
                    skipped.push(FileReport {
                        path,
                        name: String::new(),
                        kind: EntryKind::File,
                        size: 0,
                        outcome: match reason {
                            // The documented policy: named and counted, not a failure.
                            SkipReason::Symlink | SkipReason::Special => {
                                FileOutcome::Ignored(reason.to_string())
                            }
                            _ => FileOutcome::Skipped(reason.to_string()),
                        },
                        changes: Changes::empty(),
                        deleted: 0,
                    });
                }
            }
        }
    }

    /// `entry` whole, or its first part with the others queued.
    fn split(&self, s: &mut State, entry: SourceEntry) -> WorkItem {
        let parts = match self.splitting {
            Some(sp) if entry.kind == EntryKind::File => Part::count(entry.size, sp.shift),
            _ => 0,
        };
        // A file of one part goes whole.
        let (Some(sp), true) = (self.splitting, parts >= 2) else {
            return WorkItem {
                entry,
                part: None,
                split: 0,
                seq: None,
                prune: false,
            };
        };
        let Ok(count) = u32::try_from(parts) else {
            return WorkItem {
                entry,
                part: None,
                split: 0,
                seq: None,
                prune: false,
            };
        };
        s.next_split += 1;
        let split = s.next_split;
        s.splits.insert(
            split,
            SplitOutcome {
                entry: entry.clone(),
                parts,
                parts_left: parts,
                first_failure: None,
                in_sync: 0,
                would_send: 0,
                changes: Changes::empty(),
            },
        );
        let part = |index| Part {
            shift: sp.shift,
            index,
        };
        for index in 1..count {
            s.parts.push_back(WorkItem {
                entry: entry.clone(),
                part: Some(part(index)),
                split,
                seq: None,
                prune: false,
            });
        }
        WorkItem {
            entry,
            part: Some(part(0)),
            split,
            seq: None,
            prune: false,
        }
    }

    /// `item`, handed out earlier, ended with `outcome`: the file's report once known
    /// (for a part, when its file's last part ended).
    pub(crate) fn resolved(&self, item: WorkItem, end: Ended) {
        let Ended {
            outcome,
            changes,
            deleted,
        } = end;
        let (report, waiting) = {
            let mut s = lock(&self.state);
            if let Some(seq) = item.seq {
                s.out.remove(&seq);
            }
            let report = match item.part {
                None => Some(report_of(item.entry, outcome, changes, deleted)),
                Some(_) => Self::part_resolved(&mut s, item.split, outcome, changes),
            };
            (report, std::mem::take(&mut s.waiting))
        };
        for w in waiting.into_values() {
            w.wake();
        }
        if let Some(r) = report {
            self.progress.files_done.fetch_add(1, Ordering::Relaxed);
            self.ended(r);
        }
    }

    fn part_resolved(
        s: &mut State,
        id: u64,
        outcome: FileOutcome,
        changes: Changes,
    ) -> Option<FileReport> {
        let split = s.splits.get_mut(&id)?;
        split.parts_left -= 1;
        split.changes |= changes;
        match &outcome {
            FileOutcome::InSync(c) => {
                split.in_sync += 1;
                split.changes |= *c;
            }
            FileOutcome::WouldSend(c) => {
                split.would_send += 1;
                split.changes |= *c;
            }
            o if !o.is_ok() && split.first_failure.is_none() => {
                split.first_failure = Some(outcome);
            }
            _ => {}
        }
        if split.parts_left > 0 {
            return None;
        }
        let split = s.splits.remove(&id)?;
        let changes = split.changes;
        let unsent = split.in_sync + split.would_send;
        let outcome = match split.first_failure {
            Some(failure) => failure,
            None if split.in_sync == split.parts => FileOutcome::InSync(changes),
            None if split.would_send > 0 && unsent == split.parts => {
                FileOutcome::WouldSend(changes)
            }
            // Some parts in sync and others sent: the receiver (whose file changed between
            // its answers, or which lies) publishes no whole file from that.
            None if unsent > 0 => FileOutcome::Failed(FileStatus::IO),
            None => FileOutcome::Sent,
        };
        Some(report_of(split.entry, outcome, changes, 0))
    }

    /// An entry's outcome is known: the callback, then the counts.
    fn ended(&self, file: FileReport) {
        if let Some(cb) = &self.on_file {
            let _one_at_a_time = lock(&self.callback);
            let outer = IN_CALLBACK.with(|c| c.replace(Arc::as_ptr(&self.progress) as usize));
            cb(&file);
            IN_CALLBACK.with(|c| c.set(outer));
        }
        let mut s = lock(&self.state);
        s.counts.count(&file.outcome);
        s.counts.deleted += file.deleted;
        if !file.outcome.is_ok() {
            list_failure(&mut s.failures, file);
        }
    }

    /// Whether every entry of the walk was handed out.
    pub(crate) fn walk_finished(&self) -> bool {
        let s = lock(&self.state);
        s.walk.is_none() && s.parts.is_empty() && s.dirs.is_empty()
    }

    /// How many items `lane` took.
    pub(crate) fn taken_by(&self, lane: usize) -> u64 {
        lock(&self.state).taken.get(&lane).copied().unwrap_or(0)
    }

    /// The transfer's report from its lanes' (the first lane's first): their bytes and
    /// first error, with the entries' outcomes gathered here.
    pub(crate) fn report(&self, lanes: Vec<SendReport>) -> SendReport {
        let mut lanes = lanes.into_iter();
        let mut report = lanes.next().unwrap_or_else(SendReport::empty);
        for lane in lanes {
            report.add_lane(lane);
        }
        let s = lock(&self.state);
        report.counts = s.counts;
        report.failures = s.failures.clone();
        report.walk_finished = s.walk.is_none() && s.parts.is_empty() && s.dirs.is_empty();
        report
    }
}

fn report_of(
    entry: SourceEntry,
    outcome: FileOutcome,
    changes: Changes,
    deleted: u64,
) -> FileReport {
    FileReport {
        path: entry.path,
        name: entry.name,
        kind: entry.kind,
        size: entry.size,
        outcome,
        changes,
        deleted,
    }
}

/// How an item ended, as a lane tells the work.
pub(crate) struct Ended {
    pub(crate) outcome: FileOutcome,
    /// (sync) How the receiver's copy differed.
    pub(crate) changes: Changes,
    /// (delete) Entries the receiver removed from this directory.
    pub(crate) deleted: u64,
}

impl From<FileOutcome> for Ended {
    fn from(outcome: FileOutcome) -> Self {
        Ended {
            outcome,
            changes: Changes::empty(),
            deleted: 0,
        }
    }
}

#[cfg(all(test, not(rdmaft_loom)))]
mod tests {
    use super::*;
    use crate::handoff::Wake;
    use std::sync::atomic::AtomicU64;

    #[derive(Default)]
    struct Counter(AtomicU64);
    impl Wake for Counter {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("rdmaft-work-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("t/sub")).unwrap();
        d
    }

    fn item(next: Next) -> WorkItem {
        match next {
            Next::Item(i) => i,
            other => panic!("an item expected, got {other:?}"),
        }
    }

    #[test]
    // spec-test: [lanes.dir-order]
    fn parts_spread_directories_wait_and_outcomes_gather_per_file() {
        let d = scratch("parts");
        std::fs::write(d.join("t/big"), vec![7u8; 5 * 4096 + 1]).unwrap();
        std::fs::write(d.join("t/sub/small"), b"x").unwrap();
        let reports = Arc::new(Mutex::new(Vec::new()));
        let r = Arc::clone(&reports);
        let on_file: FileCallback = Arc::new(move |f: &FileReport| {
            r.lock().unwrap().push((f.name.clone(), f.outcome.clone()));
        });
        let progress = Arc::new(Progress::default());
        let work = Work::new(
            Walk::new(vec![d.join("t")]),
            Some(Splitting { shift: 12 }),
            Arc::clone(&progress),
            Some(on_file),
        );
        let counter = Arc::new(Counter::default());
        let waker: Waker = counter.clone();
        // The big file: 6 parts of 4 KiB (the last of one byte), handed to whoever asks.
        let mut parts = Vec::new();
        for lane in [0, 1, 0, 1, 0, 1] {
            let i = item(work.next(lane, &waker));
            assert_eq!(i.entry.name, "t/big");
            parts.push(i);
        }
        let index: Vec<_> = parts.iter().map(|p| p.part.unwrap().index).collect();
        assert_eq!(index, [0, 1, 2, 3, 4, 5]);
        assert_eq!(parts[5].data_len(), 1);
        assert_eq!(parts[2].start(), 2 * 4096);
        let small = item(work.next(1, &waker));
        assert_eq!(
            (small.entry.name.as_str(), small.part),
            ("t/sub/small", None)
        );
        // Directories wait for every file out before them, on any lane.
        assert!(matches!(work.next(0, &waker), Next::Wait));
        assert_eq!(
            progress.snapshot().files_total,
            4,
            "two files, two directories waiting"
        );
        work.resolved(small, FileOutcome::Sent.into());
        assert!(
            counter.0.load(Ordering::SeqCst) >= 1,
            "the waiting lane was woken"
        );
        let mut parts = parts.into_iter();
        for p in parts.by_ref().take(5) {
            work.resolved(p, FileOutcome::Sent.into());
        }
        assert!(matches!(work.next(1, &waker), Next::Wait));
        assert_eq!(
            reports.lock().unwrap().len(),
            1,
            "the big file has a part out"
        );
        work.resolved(parts.next().unwrap(), FileOutcome::Unfinished.into());
        // Then the directories, each after its contents, all on the lane that asked first.
        let sub = item(work.next(1, &waker));
        assert_eq!(sub.entry.name, "t/sub");
        assert!(
            matches!(work.next(0, &waker), Next::Done),
            "one lane carries them"
        );
        let top = item(work.next(1, &waker));
        assert_eq!(top.entry.name, "t");
        work.resolved(sub, FileOutcome::Sent.into());
        work.resolved(top, FileOutcome::Sent.into());
        assert!(matches!(work.next(1, &waker), Next::Done));
        let got = reports.lock().unwrap().clone();
        assert_eq!(
            got,
            [
                ("t/sub/small".to_owned(), FileOutcome::Sent),
                ("t/big".to_owned(), FileOutcome::Unfinished),
                ("t/sub".to_owned(), FileOutcome::Sent),
                ("t".to_owned(), FileOutcome::Sent),
            ],
            "one outcome per file: a split file's is its first failing part's"
        );
        let report = work.report(vec![SendReport::empty()]);
        assert!(report.walk_finished);
        assert_eq!((report.counts.sent, report.counts.unfinished), (3, 1));
        assert_eq!(progress.snapshot().files_done, 4);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A file of three parts (4 KiB each), handed to lanes 0, 1, 1 and resolved part by
    /// part with `outcomes` (and their changes): the file's one report's outcome and changes.
    fn split_file(outcomes: [(FileOutcome, Changes); 3]) -> (FileOutcome, Changes) {
        static RUN: AtomicU64 = AtomicU64::new(0);
        let d = scratch(&format!("split-{}", RUN.fetch_add(1, Ordering::SeqCst)));
        std::fs::write(d.join("t/sub/big"), vec![1u8; 3 * 4096]).unwrap();
        let reports = Arc::new(Mutex::new(Vec::new()));
        let r = Arc::clone(&reports);
        let on_file: FileCallback = Arc::new(move |f: &FileReport| {
            r.lock().unwrap().push((f.outcome.clone(), f.changes));
        });
        let work = Work::new(
            Walk::new(vec![d.join("t/sub/big")]),
            Some(Splitting { shift: 12 }),
            Arc::new(Progress::default()),
            Some(on_file),
        );
        let waker: Waker = Arc::new(Counter::default());
        assert!(!work.walk_finished());
        let first = item(work.next(0, &waker));
        assert!(
            !work.report(Vec::new()).walk_finished,
            "two parts still queued"
        );
        let parts: Vec<_> = [
            first,
            item(work.next(1, &waker)),
            item(work.next(1, &waker)),
        ]
        .into();
        assert_eq!(
            (work.taken_by(0), work.taken_by(1), work.taken_by(2)),
            (1, 2, 0)
        );
        assert!(matches!(work.next(0, &waker), Next::Done));
        assert!(work.walk_finished(), "every part handed out");
        for (part, (outcome, changes)) in parts.into_iter().zip(outcomes) {
            assert!(
                reports.lock().unwrap().is_empty(),
                "one report, after the last part"
            );
            let deleted = 0;
            work.resolved(
                part,
                Ended {
                    outcome,
                    changes,
                    deleted,
                },
            );
        }
        let report = work.report(vec![SendReport::empty()]);
        assert!(report.walk_finished);
        assert_eq!(report.counts.total(), 1, "one file, however many parts");
        assert!(lock(&work.state).splits.is_empty());
        let _ = std::fs::remove_dir_all(&d);
        let got = reports.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        got[0].clone()
    }

    /// A split file's outcome from its parts': sent when all were; in sync (or listed by a
    /// dry run) when none was sent, with every part's changes; a failure when some were in
    /// sync and others sent (the receiver's file changed between its answers), or the first
    /// failing part's.
    #[test]
    fn a_split_files_outcome_gathers_its_parts() {
        use FileOutcome::*;
        let none = Changes::empty();
        let sent = |c| (Sent, c);
        assert_eq!(split_file([sent(none), sent(none), sent(none)]).0, Sent);
        let in_sync = (InSync(none), none);
        let r = split_file([in_sync.clone(), in_sync.clone(), in_sync.clone()]);
        assert_eq!(r, (InSync(none), none));
        let r = split_file([
            in_sync.clone(),
            (InSync(Changes::MODE), none),
            in_sync.clone(),
        ]);
        assert_eq!(
            r,
            (InSync(Changes::MODE), Changes::MODE),
            "a part's changes count"
        );
        let would = (WouldSend(Changes::CONTENT), Changes::SIZE);
        let r = split_file([in_sync.clone(), would.clone(), would.clone()]);
        let both = Changes::CONTENT | Changes::SIZE;
        assert_eq!(r, (WouldSend(both), both), "a dry run lists the file");
        let r = split_file([in_sync.clone(), sent(none), sent(Changes::MTIME)]);
        assert_eq!(
            r,
            (Failed(FileStatus::IO), Changes::MTIME),
            "part in sync, part sent: no whole file"
        );
        let r = split_file([
            sent(none),
            (Failed(FileStatus::DIGEST_MISMATCH), none),
            (Failed(FileStatus::IO), none),
        ]);
        assert_eq!(
            r.0,
            Failed(FileStatus::DIGEST_MISMATCH),
            "the first failure"
        );
        let r = split_file([would.clone(), sent(none), sent(none)]);
        assert_eq!(
            r.0,
            Failed(FileStatus::IO),
            "listed and sent: no whole file"
        );
    }

    /// A file's callback runs marked as this transfer's (a wait from there must not join
    /// the lanes), and only while it runs.
    #[test]
    fn a_callback_knows_it_is_the_transfers_own() {
        let d = scratch("callback");
        std::fs::write(d.join("t/sub/f"), b"x").unwrap();
        let progress = Arc::new(Progress::default());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (p, s) = (Arc::clone(&progress), Arc::clone(&seen));
        let other = Arc::new(Progress::default());
        let on_file: FileCallback = Arc::new(move |_: &FileReport| {
            s.lock()
                .unwrap()
                .push((in_callback_of(&p), in_callback_of(&other)));
        });
        let work = Work::new(
            Walk::new(vec![d.join("t/sub/f")]),
            None,
            Arc::clone(&progress),
            Some(on_file),
        );
        let waker: Waker = Arc::new(Counter::default());
        let f = item(work.next(0, &waker));
        assert!(!in_callback_of(&progress), "not before");
        work.resolved(f, FileOutcome::Sent.into());
        assert_eq!(
            *seen.lock().unwrap(),
            [(true, false)],
            "this transfer's, not another's"
        );
        assert!(!in_callback_of(&progress), "not after");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    // spec-test: [lanes.dir-order]
    fn files_after_a_directory_flow_while_it_waits_for_its_own() {
        let d = scratch("flow");
        for (name, len) in [("t/a/one", 10), ("t/b/two", 20), ("t/b/three", 30)] {
            let p = d.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, vec![1u8; len]).unwrap();
        }
        std::fs::remove_dir_all(d.join("t/sub")).unwrap();
        let work = Work::new(
            Walk::new(vec![d.join("t")]),
            None,
            Arc::new(Progress::default()),
            None,
        );
        let waker: Waker = Arc::new(Counter::default());
        let one = item(work.next(0, &waker));
        assert_eq!(one.entry.name, "t/a/one");
        // t/a waits for `one`; the files of t/b are handed out meanwhile.
        let three = item(work.next(0, &waker));
        let two = item(work.next(0, &waker));
        assert_eq!(
            (three.entry.name.as_str(), two.entry.name.as_str()),
            ("t/b/three", "t/b/two")
        );
        assert!(matches!(work.next(0, &waker), Next::Wait));
        work.resolved(one, FileOutcome::Sent.into());
        // t/a is ready (nothing before it is out); t/b is not.
        let a = item(work.next(0, &waker));
        assert_eq!(a.entry.name, "t/a");
        assert!(matches!(work.next(0, &waker), Next::Wait));
        work.resolved(two, FileOutcome::Sent.into());
        work.resolved(three, FileOutcome::Sent.into());
        let b = item(work.next(0, &waker));
        assert_eq!(b.entry.name, "t/b");
        // t waits for nothing but its directories' entries, which are not files.
        let t = item(work.next(0, &waker));
        assert_eq!(t.entry.name, "t");
        assert!(matches!(work.next(0, &waker), Next::Done));
        let _ = std::fs::remove_dir_all(&d);
    }
}

/// Model checks of the real `Work` (`make loom`): two lanes take a tree's entries from one
/// queue, each in its own thread, as `engine::send` does (ask, offer what it got, resolve
/// it; on `Wait`, sleep until woken). Every interleaving within the preemption bound.
#[cfg(all(test, rdmaft_loom))]
mod loom_tests {
    use super::*;
    use crate::handoff::CondWake;
    use crate::sync::thread;
    // A modelled atomic: taking an item and counting it resolved are apart, as in a lane.
    use loom::sync::atomic::AtomicUsize;

    /// The tree `t/{big,small}`: `big` splits into two parts (4 KiB each, the second of one
    /// byte), so three file items, then the directory `t`.
    fn tree() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("rdmaft-loom-work-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("t")).unwrap();
        std::fs::write(d.join("t/big"), vec![1u8; 4097]).unwrap();
        std::fs::write(d.join("t/small"), b"x").unwrap();
        d
    }

    /// A lane's loop: returns what it took, as `name` or `name#part`.
    fn lane(work: &Work, lane: usize, files_resolved: &AtomicUsize) -> Vec<String> {
        let wake = std::sync::Arc::new(CondWake::new());
        let waker: Waker = wake.clone();
        let mut took = Vec::new();
        loop {
            let before = wake.count();
            match work.next(lane, &waker) {
                Next::Item(item) => {
                    let name = match item.part {
                        Some(p) => format!("{}#{}", item.entry.name, p.index),
                        None => item.entry.name.clone(),
                    };
                    if item.entry.kind == EntryKind::Directory {
                        // The property: a directory goes only after every file before it
                        // ended, on either lane.
                        assert_eq!(
                            files_resolved.load(Ordering::SeqCst),
                            3,
                            "directory {name} handed out before its contents ended"
                        );
                    }
                    took.push(name);
                    // The item is on the wire; it ends (counted first, then told).
                    if item.entry.kind != EntryKind::Directory {
                        files_resolved.fetch_add(1, Ordering::SeqCst);
                    }
                    work.resolved(item, FileOutcome::Sent.into());
                }
                // The property: a lane told to wait is woken when it may go on (a lost
                // wake-up leaves it asleep: loom reports a deadlock).
                Next::Wait => {
                    wake.wait_past(before);
                }
                Next::Done => return took,
            }
        }
    }

    /// Every item is handed out exactly once, the directory after its contents ended, no
    /// lane sleeps through the wake that lets it go on, and each entry's outcome reaches
    /// the callback once: the split file once, after both its parts.
    #[test]
    fn two_lanes_share_the_work_each_item_once_directories_last() {
        let root = tree();
        loom::model(move || {
            let reports = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let on_file: FileCallback = {
                let reports = std::sync::Arc::clone(&reports);
                Arc::new(move |f: &FileReport| {
                    reports
                        .lock()
                        .unwrap()
                        .push((f.name.clone(), f.outcome.clone()));
                })
            };
            let work = crate::sync::Arc::new(Work::new(
                Walk::new(vec![root.join("t")]),
                Some(Splitting { shift: 12 }),
                Arc::new(Progress::default()),
                Some(on_file),
            ));
            let files_resolved = crate::sync::Arc::new(AtomicUsize::new(0));
            let other = {
                let (work, files_resolved) = (work.clone(), files_resolved.clone());
                thread::spawn(move || lane(&work, 1, &files_resolved))
            };
            let mut took = lane(&work, 0, &files_resolved);
            took.extend(other.join().unwrap());
            took.sort();
            assert_eq!(took, ["t", "t/big#0", "t/big#1", "t/small"]);
            let mut reports = reports.lock().unwrap().clone();
            reports.sort_by(|a, b| a.0.cmp(&b.0));
            let names: Vec<_> = reports.iter().map(|r| r.0.as_str()).collect();
            assert_eq!(names, ["t", "t/big", "t/small"]);
            assert!(reports.iter().all(|r| r.1 == FileOutcome::Sent));
            assert!(work.walk_finished());
        });
    }
}
