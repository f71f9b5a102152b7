//! `rdmaft recv` (and the `recv` example program, which runs the same code): receive
//! files from rdmaft senders (`rdmaft send`) over RDMA into a directory.
//!
//! ```text
//! recv [--config FILE] [--check-config] [--listen ADDR[:PORT]] [--dir DIR]
//!      [--buffer-size SIZE] [--window N] [--max-connections N] [--once]
//!      [--key-file FILE] [--allow ADDR[/PREFIX]]... [--require-digest] [--no-clobber] [--fsync]
//!      [--preserve-perms] [--resume] [--direct] [--no-delete] [--no-links]
//!      [--allow-unsafe-links] [--json] [--metrics ADDR[:PORT]] [--idle-timeout SECONDS]
//! ```
//! Serves any number of senders at once and prints one line per received entry on stdout;
//! its log (start, each connection's end, each failed entry, reloads, stop) goes to stderr
//! through `tracing` (`RUST_LOG` tunes it). With `--once` it exits after the first transfer
//! ends (refused or failed handshakes do not count): status 0 only if every entry of it
//! arrived verified. SIGINT or SIGTERM stops cleanly (senders are told, nothing unverified
//! is left; a second one exits at once); SIGHUP reads `--config` again (see
//! [`crate::config`]). At start it removes the temporary files that receivers killed
//! mid-transfer left under the directory, and says how many.

use crate::config::{CommandLine, ConfigFile, Settings};
use crate::metrics::{Exporter, Metrics};
use crate::service::Signal;
use crate::{human_bytes, parse_buffer_size, parse_window, ADDR_ENV, EXIT_FAILURE};
use rdmaft::{ConnectionReport, ReceivedOutcome, Receiver, Subnet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

/// Receive files from rdmaft senders over RDMA.
#[derive(clap::Args, Debug)]
pub struct RecvArgs {
    /// Settings from a TOML file (keys: the long options' names, e.g. `key-file`,
    /// `max-connections`); options given here win over it. SIGHUP reads it again and applies
    /// the allow-list, key and limits to the connections that come next.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the settings (the config file with the options given), print them and exit.
    #[arg(long)]
    check_config: bool,
    /// Where to listen: ADDR or ADDR:PORT, an IP address of an RDMA device (0.0.0.0 = all
    /// devices); port 15000 by default. [default: 0.0.0.0]
    #[arg(short, long, env = ADDR_ENV)]
    listen: Option<String>,
    /// Directory to receive into (must exist). [default: .]
    #[arg(short, long)]
    dir: Option<PathBuf>,
    /// Largest buffer (chunk) size, e.g. 64K, 1M; both sides use the smaller. [default: 1M]
    #[arg(short, long, value_parser = parse_buffer_size)]
    buffer_size: Option<u32>,
    /// Most chunks in flight; both sides use the smaller. [default: 16]
    #[arg(short, long, value_parser = parse_window)]
    window: Option<u32>,
    /// Connections served at once (each lane of a sender counts); more are refused.
    /// [default: 64]
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
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
    /// Serve Prometheus metrics (OpenMetrics text) over HTTP on ADDR[:PORT] (port 9464 by
    /// default): connections, bytes, files, failures and refusals by reason, registered
    /// memory.
    #[arg(long, value_name = "ADDR[:PORT]")]
    metrics: Option<String>,
    /// Put the RDMA rings on huge pages (the reserved pool, vm.nr_hugepages, when it has
    /// room; else transparent huge pages).
    #[arg(long)]
    huge_pages: bool,
    /// Write files of 1 MiB or more with O_DIRECT, past the page cache (large files on
    /// NVMe); a file system that refuses it is written through the cache as usual.
    #[arg(long)]
    direct: bool,
    /// Seconds without any sign of a sender before its connection is closed. [default: 30]
    #[arg(long, value_name = "SECONDS")]
    idle_timeout: Option<u64>,
}

impl RecvArgs {
    /// What the command line itself set.
    fn command_line(&self) -> CommandLine {
        CommandLine {
            listen: self.listen.clone(),
            dir: self.dir.clone(),
            key_file: self.key_file.clone(),
            allow: self.allow.clone(),
            buffer_size: self.buffer_size,
            window: self.window,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            metrics: self.metrics.clone(),
            require_digest: self.require_digest,
            no_clobber: self.no_clobber,
            fsync: self.fsync,
            preserve_perms: self.preserve_perms,
            resume: self.resume,
            no_delete: self.no_delete,
            no_links: self.no_links,
            allow_unsafe_links: self.allow_unsafe_links,
            direct: self.direct,
            huge_pages: self.huge_pages,
        }
    }

    /// The settings in effect: the config file (read now) under the command line.
    fn settings(&self) -> Result<Settings, String> {
        let file = match &self.config {
            Some(path) => Some(ConfigFile::load(path)?),
            None => None,
        };
        Settings::merge(&self.command_line(), file.as_ref())
    }
}

/// Runs `recv` with `args`: prints as it goes, and returns the exit status (see the module
/// documentation).
pub fn main(args: RecvArgs) -> ExitCode {
    crate::service::init_logging();
    let json = args.json;
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_FAILURE),
        Err(e) => {
            if json {
                crate::json::emit("error", serde_json::json!({ "message": e }));
            }
            error!("{e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn run(args: RecvArgs) -> Result<bool, String> {
    let mut settings = args.settings()?;
    if args.check_config {
        settings.limits()?;
        println!("{}", settings.summary());
        return Ok(true);
    }
    if settings.key_file.is_none() && settings.allow.is_empty() {
        warn!(
            "no key file and no allow-list: anyone who can reach {} may write into {}",
            settings.listen,
            settings.dir.display()
        );
    } else if settings.key_file.is_none() {
        warn!(
            "no key file: any sender at an allowed address may write into {}",
            settings.dir.display()
        );
    }
    // Signals are taken from here on: a SIGHUP during start-up is a reload once listening,
    // not the end of the process (its default action).
    let (signal_tx, signals) = mpsc::channel::<Signal>();
    crate::service::watch_signals(signal_tx)?;
    let metrics = Metrics::default();
    let exporter = match settings.metrics {
        Some(addr) => {
            let e = Exporter::start(addr, &metrics)?;
            info!("serving metrics on http://{}/metrics", e.local_addr());
            if !addr.ip().is_loopback() {
                warn!(
                    "the metrics endpoint {addr} has no authentication and takes any client:                      bind it to a loopback or management address"
                );
            }
            Some(e)
        }
        None => None,
    };
    let (ended, connections) = mpsc::channel::<ConnectionReport>();
    let mut options = settings.options()?;
    let json = args.json;
    let file_metrics = metrics.clone();
    options.on_file = Some(Arc::new(move |f| {
        file_metrics.file(f);
        if !f.is_ok() {
            warn!(peer = %f.peer, name = %f.name, "entry failed: {}", outcome_text(f));
        }
        match &f.outcome {
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
            _ => println!("recv: {} from {}: {}", f.name, f.peer, outcome_text(f)),
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
                "dir": settings.dir.to_string_lossy(),
            }),
        );
    }
    info!(
        "listening on {} (port {}), writing into {}",
        receiver.local_addr().ip(),
        receiver.local_addr().port(),
        settings.dir.display()
    );
    let mut ok = true;
    let mut transferred = false;
    let mut stale_told = false;
    loop {
        metrics.sample(receiver.stats());
        match signals.try_recv() {
            Ok(Signal::Stop) => {
                info!("stopping (a second SIGINT or SIGTERM exits at once)");
                break;
            }
            Ok(Signal::Reload) => reload(&args, &mut settings, &receiver),
            Err(_) => {}
        }
        // Listening failed for good: serving what is connected is not what was asked.
        if let Some(why) = receiver.failure() {
            error!("{why}");
            ok = false;
            break;
        }
        if !stale_told {
            if let Some(n) = receiver.stale_removed() {
                stale_told = true;
                if n > 0 {
                    info!("removed {n} stale temporary files from an earlier run");
                }
            }
        }
        // `--once`: a transfer came, and every connection (each lane of it) has ended.
        let done = transferred && receiver.active_connections() == 0;
        let mut end = |report: ConnectionReport| {
            metrics.connection(&report);
            if json {
                crate::json::connection(&report);
            }
            log_connection(&report);
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
    drop(exporter);
    if json {
        crate::json::emit("stopped", serde_json::json!({ "ok": ok }));
    }
    Ok(ok)
}

/// SIGHUP: reads the config file again and applies what can change while running; on any
/// error the running settings stay.
fn reload(args: &RecvArgs, running: &mut Settings, receiver: &Receiver) {
    let Some(path) = &args.config else {
        warn!("SIGHUP: no --config file to read again; nothing changed");
        return;
    };
    let next = match args.settings().and_then(|s| s.limits().map(|l| (s, l))) {
        Ok(next) => next,
        Err(e) => {
            error!(
                "reload of {} failed, the running settings stay: {e}",
                path.display()
            );
            return;
        }
    };
    let (settings, limits) = next;
    if let Err(e) = receiver.reload(limits) {
        error!(
            "reload of {} failed, the running settings stay: {e}",
            path.display()
        );
        return;
    }
    let fixed = settings.fixed_changes(running);
    if !fixed.is_empty() {
        warn!(
            "changed in {}, applied at the next start: {}",
            path.display(),
            fixed.join(", ")
        );
    }
    info!("reloaded {}: {}", path.display(), settings.summary());
    // What did not apply stays as it runs, so that it is named again at the next reload.
    let mut applied = running.clone();
    applied.allow = settings.allow;
    applied.key_file = settings.key_file;
    applied.require_digest = settings.require_digest;
    applied.buffer_size = settings.buffer_size;
    applied.window = settings.window;
    applied.max_connections = settings.max_connections;
    applied.idle_timeout = settings.idle_timeout;
    *running = applied;
}

/// How an entry that did not arrive ended, for humans.
fn outcome_text(f: &rdmaft::ReceivedFile) -> String {
    let why = match &f.outcome {
        ReceivedOutcome::Rejected(r) => format!("refused: {r}"),
        ReceivedOutcome::Failed(s) => format!("failed: {s}"),
        _ => "not finished".into(),
    };
    let detail = f
        .detail
        .as_deref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default();
    format!("{why}{detail}")
}

/// One log line for a connection's end.
fn log_connection(r: &ConnectionReport) {
    let c = &r.counts;
    match (&r.error, r.refusal) {
        (Some(e), Some(reason)) => warn!(peer = %r.peer, reason, "connection refused: {e}"),
        (Some(e), None) => warn!(
            peer = %r.peer,
            device = %r.device,
            received = c.received,
            failed = c.total().saturating_sub(c.received + c.ok_without_data()),
            "connection ended: {e}"
        ),
        (None, _) => info!(
            peer = %r.peer,
            device = %r.device,
            received = c.received,
            up_to_date = c.up_to_date,
            failed = c.total().saturating_sub(c.received + c.ok_without_data()),
            deleted = c.deleted,
            "connection ended"
        ),
    }
}
