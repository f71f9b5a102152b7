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
use crate::{human_bytes, EXIT_FAILURE};
use rdmaft::{ConnectionReport, ReceivedOutcome, Receiver};
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
    /// The settings given on the command line (the config file's keys too).
    #[command(flatten)]
    given: CommandLine,
    /// Exit after the first transfer ends (status 0 only if all its files arrived);
    /// refused or failed handshakes do not count.
    #[arg(long)]
    once: bool,
    /// Print one JSON object per line on stdout instead of text: when listening, each
    /// entry's outcome, each connection's end, the stop (the schema: cli/JSON.md).
    #[arg(long)]
    json: bool,
}

impl RecvArgs {
    /// The settings in effect: the config file (read now) under the command line.
    fn settings(&self) -> Result<Settings, String> {
        let file = match &self.config {
            Some(path) => Some(ConfigFile::load(path)?),
            None => None,
        };
        Settings::merge(&self.given, file.as_ref())
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
    let settings = args.settings()?;
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
            Ok(Signal::Reload) => reload(&args, &settings, &receiver),
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
fn reload(args: &RecvArgs, started: &Settings, receiver: &Receiver) {
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
    // Compared with the start: what a reload cannot change is still as it started.
    let fixed = settings.fixed_changes(started);
    if !fixed.is_empty() {
        warn!(
            "changed in {}, applied at the next start: {}",
            path.display(),
            fixed.join(", ")
        );
    }
    info!("reloaded {}: {}", path.display(), settings.summary());
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
