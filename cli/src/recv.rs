//! `rdmaft recv` (and the `recv` example program, which runs the same code): receive
//! files from rdmaft senders (`rdmaft send`) over RDMA into a directory.
//!
//! ```text
//! recv [--listen ADDR[:PORT]] [--dir DIR] [--buffer-size SIZE] [--window N] [--once]
//!      [--key-file FILE] [--allow ADDR[/PREFIX]]... [--require-digest] [--no-clobber] [--fsync]
//!      [--preserve-perms] [--resume] [--direct] [--no-delete] [--no-links]
//!      [--allow-unsafe-links]
//! ```
//! Serves any number of senders at once and prints one line per received entry. With
//! `--once` it exits after the first transfer ends (refused or failed handshakes do not
//! count): status 0 only if every entry of it arrived verified. Ctrl-C stops cleanly
//! (senders are told, nothing unverified is left). At start it removes the temporary files
//! that receivers killed mid-transfer left under the directory, and says how many.

use crate::{
    human_bytes, parse_buffer_size, parse_target, parse_window, Interrupts, OnInterrupt, ADDR_ENV,
    EXIT_FAILURE, EXIT_INTERRUPTED,
};
use rdmaft::{
    ConnectionReport, Existing, Key, ReceivedOutcome, Receiver, ReceiverOptions, Subnet,
    DEFAULT_PORT, DEFAULT_WINDOW,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// Receive files from rdmaft senders over RDMA.
#[derive(clap::Args, Debug)]
pub struct RecvArgs {
    /// Where to listen: ADDR or ADDR:PORT, an IP address of an RDMA device (0.0.0.0 = all
    /// devices); port 15000 by default.
    #[arg(short, long, env = ADDR_ENV, default_value = "0.0.0.0")]
    listen: String,
    /// Directory to receive into (must exist).
    #[arg(short, long, default_value = ".")]
    dir: PathBuf,
    /// Largest buffer (chunk) size, e.g. 64K, 1M; both sides use the smaller.
    #[arg(short, long, default_value = "1M", value_parser = parse_buffer_size)]
    buffer_size: u32,
    /// Most chunks in flight; both sides use the smaller.
    #[arg(short, long, default_value_t = DEFAULT_WINDOW, value_parser = parse_window)]
    window: u32,
    /// Exit after the first transfer ends (status 0 only if all its files arrived);
    /// refused or failed handshakes do not count.
    #[arg(long)]
    once: bool,
    /// Pre-shared key file: senders must prove the same key.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Take senders only from this address or range (repeatable), e.g. 10.0.0.0/8.
    #[arg(long, value_name = "ADDR[/PREFIX]")]
    allow: Vec<Subnet>,
    /// Refuse senders that cannot send digests, and files without one.
    #[arg(long)]
    require_digest: bool,
    /// Refuse files whose name exists already (default: replace them), and leave existing
    /// directories as they are.
    #[arg(long)]
    no_clobber: bool,
    /// fsync each file before publishing it, and its directory after.
    #[arg(long)]
    fsync: bool,
    /// Take senders' permission bits as sent (never setuid, setgid or sticky); by default
    /// this program's umask is cleared from them.
    #[arg(long)]
    preserve_perms: bool,
    /// Keep what an interrupted transfer wrote (hidden, beside the file) and continue it
    /// when the same file is sent again.
    #[arg(long)]
    resume: bool,
    /// Refuse senders' --delete (their sync goes on; they are told nothing was deleted).
    /// --no-clobber refuses it too.
    #[arg(long)]
    no_delete: bool,
    /// Make symbolic links (send --links) whose target is absolute or climbs out of
    /// --dir; without it they are refused. rdmaft never follows a link it receives, but
    /// other programs reading the directory would.
    #[arg(long)]
    allow_unsafe_links: bool,
    /// Take no symbolic links at all: senders' --links skip them (and say so).
    #[arg(long, conflicts_with = "allow_unsafe_links")]
    no_links: bool,
    /// Print one JSON object per line on stdout instead of text: when listening, each
    /// entry's outcome, each connection's end, the stop (the schema: cli/JSON.md).
    #[arg(long)]
    json: bool,
    /// Put the RDMA rings on huge pages (the reserved pool, vm.nr_hugepages, when it has
    /// room; else transparent huge pages).
    #[arg(long)]
    huge_pages: bool,
    /// Write files of 1 MiB or more with O_DIRECT, past the page cache (large files on
    /// NVMe); a file system that refuses it is written through the cache as usual.
    #[arg(long)]
    direct: bool,
    /// Seconds without any sign of a sender before its connection is closed.
    #[arg(long, default_value_t = 30)]
    idle_timeout: u64,
}

/// Runs `recv` with `args`: prints as it goes, and returns the exit status (see the module
/// documentation).
pub fn main(args: RecvArgs) -> ExitCode {
    let json = args.json;
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_FAILURE),
        Err(e) => {
            if json {
                crate::json::emit("error", serde_json::json!({ "message": e }));
            }
            eprintln!("recv: error: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn run(args: RecvArgs) -> Result<bool, String> {
    let listen = parse_target(&args.listen, DEFAULT_PORT)?;
    let key = match &args.key_file {
        Some(p) => Some(Key::from_file(p).map_err(|e| e.to_string())?),
        None => None,
    };
    if key.is_none() && args.allow.is_empty() {
        eprintln!(
            "recv: warning: no --key-file and no --allow: anyone who can reach {listen} may \
             write into {}",
            args.dir.display()
        );
    } else if key.is_none() {
        eprintln!(
            "recv: warning: no --key-file: any sender at an allowed address may write into {}",
            args.dir.display()
        );
    }
    let (ended, connections) = mpsc::channel::<ConnectionReport>();
    let mut options = ReceiverOptions::new(listen, args.dir.clone());
    options.chunk_size = args.buffer_size;
    options.window = args.window;
    options.key = key;
    options.allow = args.allow.clone();
    options.require_digest = args.require_digest;
    options.existing = if args.no_clobber {
        Existing::Keep
    } else {
        Existing::Replace
    };
    options.fsync = args.fsync;
    options.preserve_perms = args.preserve_perms;
    options.resume = args.resume;
    options.huge_pages = args.huge_pages;
    options.direct = args.direct;
    options.idle_timeout = Duration::from_secs(args.idle_timeout.max(1));
    options.delete = !args.no_delete;
    options.allow_unsafe_links = args.allow_unsafe_links;
    options.links = !args.no_links;
    let json = args.json;
    options.on_file = Some(Arc::new(move |f| match &f.outcome {
        _ if json => crate::json::recv_file(f),
        ReceivedOutcome::Received => println!(
            "recv: received {} ({}) from {}",
            f.name,
            match f.kind {
                rdmaft::protocol::EntryKind::Symlink => "symbolic link".into(),
                _ => human_bytes(f.size),
            },
            f.peer
        ),
        // In sync: nothing to say, unless the sender's --delete removed something.
        ReceivedOutcome::InSync(_) | ReceivedOutcome::WouldReceive(_) => {
            if f.deleted > 0 {
                println!(
                    "recv: {} {} entries in {}/ that {} no longer has",
                    if matches!(f.outcome, ReceivedOutcome::WouldReceive(_)) {
                        "would delete"
                    } else {
                        "deleted"
                    },
                    f.deleted,
                    f.name,
                    f.peer
                );
            }
        }
        other => {
            let why = match other {
                ReceivedOutcome::Rejected(r) => format!("refused: {r}"),
                ReceivedOutcome::Failed(s) => format!("failed: {s}"),
                _ => "not finished".into(),
            };
            let detail = f
                .detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            println!("recv: {} from {}: {why}{detail}", f.name, f.peer);
        }
    }));
    options.on_connection = Some(Arc::new(move |r: &ConnectionReport| {
        let _ = ended.send(r.clone());
    }));
    let receiver = Receiver::start(options).map_err(|e| e.to_string())?;
    if json {
        crate::json::emit(
            "listening",
            serde_json::json!({
                "addr": receiver.local_addr().to_string(),
                "dir": args.dir.to_string_lossy(),
            }),
        );
    }
    eprintln!(
        "recv: listening on {} (port {}), writing into {}",
        receiver.local_addr().ip(),
        receiver.local_addr().port(),
        args.dir.display()
    );
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let interrupts = Interrupts::default();
    let _ = ctrlc::set_handler(move || match interrupts.next() {
        OnInterrupt::StopCleanly => {
            let _ = stop_tx.send(());
        }
        OnInterrupt::ExitNow => std::process::exit(EXIT_INTERRUPTED),
    });
    let mut ok = true;
    let mut transferred = false;
    let mut stale_told = false;
    loop {
        if stop_rx.try_recv().is_ok() {
            eprintln!("recv: stopping (Ctrl-C again to exit at once)");
            break;
        }
        // Listening failed for good: serving what is connected is not what was asked.
        if let Some(why) = receiver.failure() {
            eprintln!("recv: error: {why}");
            ok = false;
            break;
        }
        if !stale_told {
            if let Some(n) = receiver.stale_removed() {
                stale_told = true;
                if n > 0 {
                    eprintln!("recv: removed {n} stale temporary files from an earlier run");
                }
            }
        }
        // `--once`: a transfer came, and every connection (each lane of it) has ended.
        let done = transferred && receiver.active_connections() == 0;
        let mut end = |report: ConnectionReport| {
            if json {
                crate::json::connection(&report);
            }
            if let Some(e) = &report.error {
                eprintln!("recv: connection ended: {e}");
            }
            // A port scan, a refused handshake or a wrong key is not the transfer `--once`
            // waits for.
            if args.once && report.transferred {
                ok &= report.all_ok();
                transferred = true;
            }
        };
        if done {
            // The reports that are still queued count too.
            while let Ok(report) = connections.try_recv() {
                end(report);
            }
            break;
        }
        match connections.recv_timeout(Duration::from_millis(200)) {
            Ok(report) => end(report),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    receiver.stop();
    if json {
        crate::json::emit("stopped", serde_json::json!({ "ok": ok }));
    }
    Ok(ok)
}
