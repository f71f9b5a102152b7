//! What `rdmaft recv` needs to run as a service: structured logs on stderr (which journald
//! keeps) and the signals an init system sends.
//!
//! Logs go through `tracing`: one line per connection's end and per failed entry, plus
//! start, reload and stop; `RUST_LOG` tunes them (`RUST_LOG=warn` keeps only problems).
//! Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp: the journal adds its own.

use crate::{Interrupts, OnInterrupt, EXIT_INTERRUPTED};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::io::IsTerminal;
use std::sync::mpsc::Sender;
use tracing_subscriber::EnvFilter;

/// Starts the log on stderr, at `info` unless `RUST_LOG` says otherwise. Once per process;
/// a second call does nothing.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
}

/// What a signal asks of the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT or SIGTERM: stop cleanly (senders are told, nothing unverified is left).
    Stop,
    /// SIGHUP: read the config file again.
    Reload,
}

/// Turns SIGINT, SIGTERM and SIGHUP into [`Signal`]s on `to`, from a thread of its own. A
/// second SIGINT or SIGTERM while the first is being handled exits at once with
/// [`EXIT_INTERRUPTED`].
pub fn watch_signals(to: Sender<Signal>) -> Result<(), String> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let stops = Interrupts::default();
    std::thread::Builder::new()
        .name("rdmaft-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let what = match signal {
                    SIGHUP => Signal::Reload,
                    _ => match stops.next() {
                        OnInterrupt::StopCleanly => Signal::Stop,
                        OnInterrupt::ExitNow => std::process::exit(EXIT_INTERRUPTED),
                    },
                };
                if to.send(what).is_err() {
                    return;
                }
            }
        })
        .map(drop)
        .map_err(|e| format!("cannot start the signal thread: {e}"))
}
