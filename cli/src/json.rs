//! `--json`: one JSON object per line on stdout (NDJSON), for scripts and dashboards, in
//! place of the text lines and the progress bar. The schema is in `cli/JSON.md`; every
//! object has `"event"` and `"v"` (the schema version, 1).

use rdmaft::protocol::{Changes, EntryKind};
use rdmaft::{
    ConnectionReport, FileOutcome, FileReport, ProgressSnapshot, ReceivedFile, ReceivedOutcome,
    SendReport,
};
use serde_json::{json, Value};
use std::io::Write;
use std::time::Duration;

/// The schema version every object carries.
pub const VERSION: u32 = 1;

/// Writes `event` with its fields as one line on stdout (whole, under stdout's lock).
pub fn emit(event: &str, fields: Value) {
    let mut object = json!({ "event": event, "v": VERSION });
    if let (Some(o), Value::Object(f)) = (object.as_object_mut(), fields) {
        o.extend(f);
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{object}");
    let _ = out.flush();
}

/// An entry's kind as a word.
fn kind(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Directory => "directory",
        EntryKind::Symlink => "link",
    }
}

/// Change bits as words (`["new"]`, `["size", "mtime"]`, ...).
fn changes(c: Changes) -> Vec<&'static str> {
    [
        (Changes::NEW, "new"),
        (Changes::KIND, "kind"),
        (Changes::SIZE, "size"),
        (Changes::CONTENT, "content"),
        (Changes::MTIME, "mtime"),
        (Changes::MODE, "mode"),
    ]
    .into_iter()
    .filter(|(bit, _)| c.contains(*bit))
    .map(|(_, w)| w)
    .collect()
}

/// A sender's entry, at its outcome: `{"event":"file", ...}`.
pub fn send_file(f: &FileReport) {
    let (outcome, why, c) = match &f.outcome {
        FileOutcome::Sent => ("sent", None, f.changes),
        FileOutcome::InSync(c) if c.is_empty() => ("up_to_date", None, *c),
        FileOutcome::InSync(c) => ("updated", None, *c),
        FileOutcome::WouldSend(c) => ("would_send", None, *c),
        FileOutcome::Ignored(why) => ("not_sent", Some(why.clone()), f.changes),
        FileOutcome::Skipped(why) => ("skipped", Some(why.clone()), f.changes),
        FileOutcome::Rejected(r) => ("refused", Some(r.to_string()), f.changes),
        FileOutcome::Failed(s) => ("failed", Some(s.to_string()), f.changes),
        FileOutcome::Unfinished => ("unfinished", None, f.changes),
    };
    emit(
        "file",
        json!({
            "name": f.name,
            "path": f.path.to_string_lossy(),
            "kind": kind(f.kind),
            "size": f.size,
            "outcome": outcome,
            "ok": f.outcome.is_ok(),
            "changes": changes(c),
            "deleted": f.deleted,
            "reason": why,
        }),
    );
}

/// The send's progress: `{"event":"progress", ...}` (the caller limits it to once a
/// second).
pub fn progress(p: &ProgressSnapshot, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    emit(
        "progress",
        json!({
            "bytes": p.bytes_done,
            "bytes_total": p.bytes_total,
            "files": p.files_done,
            "files_total": p.files_total,
            "seconds": secs,
            "bytes_per_second": if secs > 0.0 { p.bytes_done as f64 / secs } else { 0.0 },
        }),
    );
}

/// The send's end: `{"event":"summary", ...}`.
pub fn send_summary(r: &SendReport) {
    let c = r.counts;
    emit(
        "summary",
        json!({
            "ok": r.all_ok(),
            "bytes": r.bytes,
            "bytes_resumed": r.bytes_resumed,
            "seconds": r.elapsed.as_secs_f64(),
            "mb_per_s": r.mb_per_s(),
            "lanes": r.lanes,
            "counts": {
                "sent": c.sent,
                "up_to_date": c.up_to_date,
                "would_send": c.would_send,
                "deleted": c.deleted,
                "not_sent": c.ignored,
                "skipped": c.skipped,
                "refused": c.rejected,
                "failed": c.failed,
                "unfinished": c.unfinished,
            },
            "warnings": r.warnings,
            "error": r.error,
        }),
    );
}

/// A receiver's entry, at its outcome: `{"event":"file", ...}`.
pub fn recv_file(f: &ReceivedFile) {
    let (outcome, c) = match &f.outcome {
        ReceivedOutcome::Received => ("received", Changes::empty()),
        ReceivedOutcome::InSync(c) if c.is_empty() => ("up_to_date", *c),
        ReceivedOutcome::InSync(c) => ("updated", *c),
        ReceivedOutcome::WouldReceive(c) => ("would_receive", *c),
        ReceivedOutcome::Rejected(_) => ("refused", Changes::empty()),
        ReceivedOutcome::Failed(_) => ("failed", Changes::empty()),
        ReceivedOutcome::Unfinished => ("unfinished", Changes::empty()),
    };
    let reason = match &f.outcome {
        ReceivedOutcome::Rejected(r) => Some(r.to_string()),
        ReceivedOutcome::Failed(s) => Some(s.to_string()),
        _ => None,
    };
    emit(
        "file",
        json!({
            "peer": f.peer,
            "name": f.name,
            "path": f.path.to_string_lossy(),
            "kind": kind(f.kind),
            "size": f.size,
            "outcome": outcome,
            "ok": f.is_ok(),
            "changes": changes(c),
            "deleted": f.deleted,
            "reason": reason,
            "detail": f.detail,
        }),
    );
}

/// A connection's end at the receiver: `{"event":"connection", ...}`.
pub fn connection(r: &ConnectionReport) {
    let c = r.counts;
    emit(
        "connection",
        json!({
            "peer": r.peer,
            "device": r.device,
            "ok": r.all_ok(),
            "transferred": r.transferred,
            "counts": {
                "received": c.received,
                "up_to_date": c.up_to_date,
                "would_receive": c.would_receive,
                "deleted": c.deleted,
                "refused": c.rejected,
                "failed": c.failed,
                "unfinished": c.unfinished,
            },
            "error": r.error,
            "refusal": r.refusal,
        }),
    );
}
