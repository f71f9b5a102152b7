//! `send ADDR FILE`: connect to an rdmaft receiver and send FILE over RDMA.
//!
//! The connection set-up and the handshake (buffer-size negotiation) are implemented; the
//! file data path is not yet. After a successful handshake `send` says so on stderr and exits
//! with status 3: the file was NOT sent.

use clap::Parser;
use rdmaft::session::{self, DEFAULT_PORT, DEFAULT_WINDOW};
use rdmaft_examples::{
    addr_or_unknown, describe, parse_buffer_size, parse_window, resolve, EXIT_FAILURE,
    EXIT_NOT_IMPLEMENTED,
};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Send a file to an rdmaft receiver (`recv`) over RDMA.
#[derive(Parser, Debug)]
#[command(name = "send", version)]
struct Args {
    /// The receiver's address (an IP address of its RDMA device, or a host name).
    addr: String,
    /// The file to send (a readable regular file).
    file: PathBuf,
    /// The receiver's port.
    #[arg(short, long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Buffer (chunk) size, e.g. 4096, 64K, 1M, 1G; both sides use the smaller of theirs.
    #[arg(short, long, default_value = "1M", value_parser = parse_buffer_size)]
    buffer_size: u32,
    /// Chunks in flight; both sides use the smaller of theirs.
    #[arg(short, long, default_value_t = DEFAULT_WINDOW, value_parser = parse_window)]
    window: u32,
    /// Seconds to wait for the connection to be set up.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) | Err(code) => ExitCode::from(code as u8),
    }
}

/// Returns the exit status; every connection resource is dropped before it returns.
fn run(args: &Args) -> Result<i32, i32> {
    check_file(&args.file).map_err(fail)?;
    let addr = resolve(&args.addr, args.port).map_err(fail)?;
    let params = session::sender_params(args.buffer_size, args.window);
    let timeout = Duration::from_secs(args.timeout);
    let conn = session::connect(addr, params, timeout).map_err(|e| fail(e.to_string()))?;
    println!(
        "connected to {} from {} on {}: {}",
        addr,
        addr_or_unknown(conn.local_addr()),
        conn.device_name(),
        describe(conn.negotiated())
    );
    if let Err(e) = conn.disconnect(Duration::from_secs(5)) {
        eprintln!("send: warning: disconnect: {e}");
    }
    eprintln!("send: handshake ok; file data transfer is not implemented yet");
    Ok(EXIT_NOT_IMPLEMENTED)
}

/// The file must be a regular file we can open for reading.
fn check_file(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    File::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    Ok(())
}

fn fail(msg: String) -> i32 {
    eprintln!("send: error: {msg}");
    EXIT_FAILURE
}
