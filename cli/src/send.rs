//! `rdmaft send` (and the `send` example program, which runs the same code): send files
//! and directory trees to an rdmaft receiver (`rdmaft recv`) over RDMA.
//!
//! ```text
//! send [--buffer-size SIZE] [--window N] [--lanes N|auto] [--part-size SIZE]
//!      [--rail HOST[:PORT]]... [--local-addr IP]... [--device NAME]...
//!      [--key-file FILE] [--digest xxh3|blake3|none] [--shard I/N] [--direct]
//!      [--sync] [-c|--checksum] [-n|--dry-run] [--delete] [-i|--itemize]
//!      [--exclude GLOB]... [--files-from FILE] [-l|--links]
//!      HOST[:PORT] PATH...
//! ```
//! Trees go under their base names (as `scp -r`). A progress bar is drawn on a terminal;
//! the summary line sums up files, bytes, seconds and MB/s (with `--shard`, of this sender's
//! share, and it starts `send: shard I/N:`); with `--sync` another says how many were up
//! to date. Exit status 0 only if every file was verified by the receiver (or up to date;
//! special files inside trees, and symbolic links without `--links`, are named and not
//! sent, which is no failure); 1 otherwise (each problem is named), 2 on bad usage.

use crate::{
    human_bytes, parse_buffer_size, parse_lanes, parse_part_size, parse_target, parse_window,
    Interrupts, OnInterrupt, EXIT_FAILURE, EXIT_INTERRUPTED,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rdmaft::protocol::{Changes, DigestKind};
use rdmaft::{
    send, FileOutcome, Key, SendOptions, Shard, SyncOptions, DEFAULT_PORT, DEFAULT_WINDOW,
};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Send files and directory trees to an rdmaft receiver over RDMA.
#[derive(clap::Args, Debug)]
pub struct SendArgs {
    /// Buffer (chunk) size to propose, e.g. 64K, 1M; both sides use the smaller.
    #[arg(short, long, default_value = "1M", value_parser = parse_buffer_size)]
    buffer_size: u32,
    /// Chunks in flight to propose; both sides use the smaller.
    #[arg(short, long, default_value_t = DEFAULT_WINDOW, value_parser = parse_window)]
    window: u32,
    /// Connections (lanes) that carry the transfer together, or `auto` (one per four
    /// cores, at most 8). Files larger than a part are split over the lanes.
    #[arg(long, default_value = "auto", value_parser = parse_lanes)]
    lanes: u16,
    /// Size of the parts large files are split into over several lanes.
    #[arg(long, default_value = "64M", value_parser = parse_part_size)]
    part_size: u64,
    /// Another address of the same receiver, on another network (rail); repeatable. The
    /// lanes connect to the target and these in turn, so they use every rail.
    #[arg(long = "rail", value_name = "HOST[:PORT]")]
    rails: Vec<String>,
    /// A local address to connect from (it picks the RDMA port it belongs to); repeatable,
    /// the lanes take them in turn.
    #[arg(long = "local-addr", value_name = "IP")]
    local_addrs: Vec<std::net::IpAddr>,
    /// An RDMA device a lane leaves from (by its port's RoCE v2 address); repeatable, lanes
    /// take them in turn. Without it (and without --local-addr or --rail), several lanes
    /// spread over every local port on the receiver's subnet.
    #[arg(long = "device", value_name = "NAME")]
    devices: Vec<String>,
    /// Pre-shared key file: the receiver must prove the same key.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Digest that verifies each file.
    #[arg(long, default_value = "xxh3", value_parser = parse_digest)]
    digest: DigestKind,
    /// Put the RDMA slots on huge pages (the reserved pool, vm.nr_hugepages, when it has
    /// room; else transparent huge pages).
    #[arg(long)]
    huge_pages: bool,
    /// Read files of 1 MiB or more with O_DIRECT, past the page cache (large files on
    /// NVMe); a file system that refuses it is read through the cache as usual.
    #[arg(long)]
    direct: bool,
    /// Seconds to reach the receiver and agree with it before giving up.
    #[arg(long, default_value_t = 10)]
    connect_timeout: u64,
    /// Seconds without any sign of the receiver before giving up.
    #[arg(long, default_value_t = 30)]
    idle_timeout: u64,
    /// Send only share I of N (I from 0 to N-1), chosen by a hash of each entry's name: N
    /// senders given the same paths, one per I, send them once between them with no
    /// coordinator, e.g. --shard $SLURM_PROCID/$SLURM_NTASKS. Counts and exit status cover
    /// this share only.
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
    /// One control message per write and per SEND, as before batches (to measure what
    /// batching saves; the default batches when the receiver agrees).
    #[arg(long)]
    no_batch: bool,
    /// Move only what changed: a file the receiver has with the same size and mtime (to
    /// the nanosecond) is up to date and moves no data; one that differs only in its mode
    /// gets the new mode.
    #[arg(long)]
    sync: bool,
    /// With --sync (implied): compare content, a digest of each file on both sides,
    /// instead of size and mtime; a file whose content matches gets only its metadata.
    #[arg(short = 'c', long)]
    checksum: bool,
    /// Move nothing, change nothing: print what --sync would send, update or delete
    /// (implies --sync).
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// With --sync (implied): remove at the receiver, in each directory sent, what this
    /// side no longer has; not in a directory whose walk met an error, never outside the
    /// directories sent. The receiver may refuse (recv --no-delete): then this says so.
    #[arg(long)]
    delete: bool,
    /// Print one line per entry on stdout: what happened and why (new, size, mtime,
    /// content, mode, kind).
    #[arg(short = 'i', long)]
    itemize: bool,
    /// Leave out entries matching GLOB (repeatable), matched against the name as sent
    /// (`tree/a/b.tmp`) as rsync matches simple patterns: `*.tmp` any last component,
    /// `cache/*.bin` the end of the name, `/tree/scratch` from the root, `build/`
    /// directories only, `**` across directories.
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Send the names listed in FILE (one per line, `-` for stdin; relative to the one
    /// PATH given, a directory, else the current directory), each under its own name; a
    /// directory listed is sent as itself, not its contents (as find prints a tree).
    #[arg(long, value_name = "FILE")]
    files_from: Option<PathBuf>,
    /// Send symbolic links inside trees as links (their targets as they read) instead of
    /// skipping them. The receiver refuses a link whose target is absolute or climbs out
    /// of its directory unless it runs with --allow-unsafe-links.
    #[arg(short = 'l', long)]
    links: bool,
    /// Print one JSON object per line on stdout instead of text and a progress bar: each
    /// entry's outcome, progress at most once a second, a summary (the schema: JSON OUTPUT
    /// in the README, cli/JSON.md).
    #[arg(long)]
    json: bool,
    /// The receiver: HOST or HOST:PORT (port 15000 by default).
    target: String,
    /// Files and directories to send (with --files-from: the directory the names are in).
    #[arg(required_unless_present = "files_from")]
    paths: Vec<PathBuf>,
}

fn parse_digest(text: &str) -> Result<DigestKind, String> {
    match text {
        "xxh3" | "xxh3-128" => Ok(DigestKind::Xxh3_128),
        "blake3" => Ok(DigestKind::Blake3),
        "none" => Ok(DigestKind::None),
        _ => Err(format!("unknown digest {text:?}: use xxh3, blake3 or none")),
    }
}

/// Runs `send` with `args`: prints as it goes, and returns the exit status (see the module
/// documentation).
pub fn main(args: SendArgs) -> ExitCode {
    let json = args.json;
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_FAILURE),
        Err(e) => {
            if json {
                crate::json::emit("error", serde_json::json!({ "message": e }));
            }
            eprintln!("send: error: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn run(args: SendArgs) -> Result<bool, String> {
    let target = parse_target(&args.target, DEFAULT_PORT)?;
    // A rail without a port has the target's.
    let more_addrs = args
        .rails
        .iter()
        .map(|r| parse_target(r, target.port()))
        .collect::<Result<Vec<_>, _>>()?;
    let key = match &args.key_file {
        Some(p) => Some(Key::from_file(p).map_err(|e| e.to_string())?),
        None => None,
    };
    let json = args.json;
    let bar = if json {
        ProgressBar::hidden()
    } else {
        progress_bar()
    };
    let on_file_bar = bar.clone();
    let sync = (args.sync || args.checksum || args.dry_run || args.delete).then_some(SyncOptions {
        checksum: args.checksum,
        dry_run: args.dry_run,
        delete: args.delete,
    });
    let (itemize, dry_run) = (args.itemize, args.dry_run);
    let files_from = match &args.files_from {
        Some(list) => Some(read_list(list)?),
        None => None,
    };
    let paths = match (&files_from, args.paths.is_empty()) {
        (Some(_), true) => vec![PathBuf::from(".")],
        _ => args.paths.clone(),
    };
    let options = SendOptions {
        chunk_size: args.buffer_size,
        window: args.window,
        digest: args.digest,
        key,
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
        connect_timeout: Duration::from_secs(args.connect_timeout.max(1)),
        huge_pages: args.huge_pages,
        direct: args.direct,
        lanes: args.lanes,
        part_size: args.part_size,
        more_addrs,
        local_addrs: args.local_addrs.clone(),
        devices: args.devices.clone(),
        shard: args.shard,
        batch: !args.no_batch,
        sync,
        exclude: args.exclude.clone(),
        files_from,
        links: args.links,
        on_file: Some(Arc::new(move |f| {
            if json {
                return crate::json::send_file(f);
            }
            let name = if f.name.is_empty() {
                f.path.display().to_string()
            } else {
                f.name.clone()
            };
            if let Some(line) = itemized(f, &name, itemize) {
                on_file_bar.suspend(|| println!("{line}"));
            }
            if f.deleted > 0 {
                let verb = if dry_run { "would delete" } else { "deleted" };
                let line = format!(
                    "{verb:<12} {:<18} {name}/",
                    format!("{} entries", f.deleted)
                );
                on_file_bar.suspend(|| println!("{line}"));
            }
            let line = match &f.outcome {
                FileOutcome::Sent | FileOutcome::InSync(_) | FileOutcome::WouldSend(_) => return,
                FileOutcome::Ignored(why) => format!("send: not sent {name}: {why}"),
                FileOutcome::Skipped(why) => format!("send: skipped {name}: {why}"),
                FileOutcome::Rejected(r) => format!("send: {name}: refused by the receiver: {r}"),
                FileOutcome::Failed(s) => format!("send: {name}: failed at the receiver: {s}"),
                FileOutcome::Unfinished => format!("send: {name}: not finished"),
            };
            on_file_bar.suspend(|| eprintln!("{line}"));
        })),
        ..SendOptions::default()
    };
    let canceller = Arc::new(std::sync::Mutex::new(None::<rdmaft::SendCanceller>));
    let interrupts = Arc::new(Interrupts::default());
    {
        let canceller = Arc::clone(&canceller);
        // Ctrl-C: the receiver is told and nothing unverified stays behind there.
        let interrupts = Arc::clone(&interrupts);
        let _ = ctrlc::set_handler(move || match interrupts.next() {
            OnInterrupt::StopCleanly => {
                eprintln!("send: cancelling (Ctrl-C again to exit at once)");
                if let Ok(c) = canceller.lock() {
                    if let Some(c) = c.as_ref() {
                        c.cancel();
                    }
                }
            }
            OnInterrupt::ExitNow => std::process::exit(EXIT_INTERRUPTED),
        });
    }
    let h = send(target, paths, options).map_err(|e| e.to_string())?;
    {
        // Stored and checked under the handler's lock: a Ctrl-C either finds the canceller
        // or is counted before this check (it came before the send existed).
        let mut slot = canceller.lock().map_err(|_| "internal error".to_string())?;
        if interrupts.count() > 0 {
            h.cancel();
        }
        *slot = Some(h.canceller());
    }
    eprintln!("send: connecting to {target}");
    let clock = std::time::Instant::now();
    let mut last_progress = clock;
    loop {
        let p = h.progress();
        bar.set_length(p.bytes_total.max(1));
        bar.set_position(p.bytes_done);
        bar.set_message(format!("{}/{} files", p.files_done, p.files_total));
        if json && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = std::time::Instant::now();
            crate::json::progress(&p, clock.elapsed());
        }
        // The next update in 100 ms, or the end as soon as it comes.
        if h.wait_timeout(Duration::from_millis(100)) {
            break;
        }
    }
    bar.finish_and_clear();
    let report = h.wait().map_err(|e| e.to_string())?;
    if json {
        crate::json::send_summary(&report);
        return Ok(report.all_ok());
    }
    let c = report.counts;
    // Entries that were to be sent: not those in sync, ignored by policy or only listed.
    let (sent, total) = (c.sent, c.total() - c.ok_unsent());
    let share = args
        .shard
        .map(|s| format!("shard {s}: "))
        .unwrap_or_default();
    println!(
        "send: {share}{sent} of {total} files verified, {} ({} bytes) in {:.2} s, {:.1} MB/s{}{}",
        human_bytes(report.bytes),
        report.bytes,
        report.elapsed.as_secs_f64(),
        report.mb_per_s(),
        if report.bytes_resumed > 0 {
            format!(", {} already there", human_bytes(report.bytes_resumed))
        } else {
            String::new()
        },
        lanes_text(&report)
    );
    if sync.is_some() {
        let (deleted, listed) = if args.dry_run {
            (
                format!(", {} would be deleted", c.deleted),
                format!(", {} would be sent (dry run: nothing moved)", c.would_send),
            )
        } else {
            (format!(", {} deleted", c.deleted), String::new())
        };
        let deleted = if args.delete { deleted } else { String::new() };
        println!("send: {} up to date{deleted}{listed}", c.up_to_date);
    }
    if c.ignored > 0 {
        println!(
            "send: {} not sent by policy (symbolic links, special files)",
            c.ignored
        );
    }
    if args.direct {
        println!(
            "send: {} files read with O_DIRECT (1 MiB or more, on a file system that takes it)",
            report.direct_files
        );
    }
    for w in &report.warnings {
        eprintln!("send: warning: {w}");
    }
    if let Some(e) = &report.error {
        eprintln!("send: error: {e}");
    }
    Ok(report.all_ok())
}

/// The names of a `--files-from` list (`-`: stdin), one per line, empty lines skipped.
fn read_list(list: &std::path::Path) -> Result<Vec<String>, String> {
    let text = if list.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("stdin: {e}"))?
    } else {
        std::fs::read_to_string(list).map_err(|e| format!("{}: {e}", list.display()))?
    };
    Ok(text
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// The `--itemize` line for an entry (`None`: nothing to print): what happened and why. A
/// dry run lists what it would send or update even without `--itemize`.
fn itemized(f: &rdmaft::FileReport, name: &str, all: bool) -> Option<String> {
    // As `ls -F` marks them: a directory's name ends in `/`, a link's in `@`.
    let dir = match f.kind {
        rdmaft::protocol::EntryKind::Directory => "/",
        rdmaft::protocol::EntryKind::Symlink => "@",
        _ => "",
    };
    let (what, changes) = match &f.outcome {
        FileOutcome::WouldSend(c) => ("would send", *c),
        FileOutcome::InSync(c) if !c.is_empty() && !all => ("would update", *c),
        _ if !all => return None,
        FileOutcome::Sent => ("sent", f.changes),
        FileOutcome::InSync(c) if c.is_empty() => ("up to date", *c),
        FileOutcome::InSync(c) => ("updated", *c),
        FileOutcome::Ignored(_) => ("not sent", Changes::empty()),
        _ => ("failed", Changes::empty()),
    };
    Some(format!("{what:<12} {:<18} {name}{dir}", describe(changes)))
}

/// Change bits as words: "new", "size,mtime", ... ("-" for none).
fn describe(c: Changes) -> String {
    let words: Vec<&str> = [
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
    .collect();
    if words.is_empty() {
        "-".into()
    } else {
        words.join(",")
    }
}

/// ", 3 lanes" and, when they ran on several devices, " over rxe0, rxe1".
fn lanes_text(report: &rdmaft::SendReport) -> String {
    if report.lanes < 2 {
        return String::new();
    }
    let mut devices = report.devices.clone();
    devices.sort();
    devices.dedup();
    if devices.len() > 1 {
        format!(", {} lanes over {}", report.lanes, devices.join(", "))
    } else {
        format!(", {} lanes", report.lanes)
    }
}

fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
