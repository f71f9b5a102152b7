//! `recv`: listen for rdmaft senders and receive their files into a directory.
//!
//! The connection set-up and the handshake (buffer-size negotiation) are implemented; the
//! file data path is not yet. Each accepted connection is reported with the negotiated
//! parameters and then held until the sender disconnects (or `--idle-timeout` passes).
//! A rejected handshake is reported and `recv` keeps serving.

use clap::Parser;
use rdmaft::session::{self, Listener, DEFAULT_PORT, DEFAULT_WINDOW};
use rdmaft::Error;
use rdmaft_examples::{
    addr_or_unknown, describe, parse_buffer_size, parse_window, ADDR_ENV, EXIT_FAILURE,
};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Receive files from rdmaft senders (`send`) over RDMA.
#[derive(Parser, Debug)]
#[command(name = "recv", version)]
struct Args {
    /// Address to listen on: an IP address of an RDMA device (0.0.0.0 = all devices).
    #[arg(short, long, env = ADDR_ENV, default_value = "0.0.0.0")]
    addr: IpAddr,
    /// Port to listen on.
    #[arg(short, long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Directory to receive files into.
    #[arg(short, long, default_value = ".")]
    dir: PathBuf,
    /// Largest buffer (chunk) size, e.g. 4096, 64K, 1M, 1G; both sides use the smaller.
    #[arg(short, long, default_value = "1M", value_parser = parse_buffer_size)]
    buffer_size: u32,
    /// Most chunks in flight; both sides use the smaller.
    #[arg(short, long, default_value_t = DEFAULT_WINDOW, value_parser = parse_window)]
    window: u32,
    /// Exit after one accepted connection (rejected handshakes do not count).
    #[arg(long)]
    once: bool,
    /// Seconds an accepted connection may stay idle before recv closes it.
    #[arg(long, default_value_t = 60)]
    idle_timeout: u64,
}

/// How often the accept loop wakes up.
const POLL: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) | Err(code) => ExitCode::from(code as u8),
    }
}

fn run(args: &Args) -> Result<i32, i32> {
    let dir_ok = std::fs::metadata(&args.dir).map(|m| m.is_dir());
    match dir_ok {
        Ok(true) => {}
        Ok(false) => return Err(fail(format!("{} is not a directory", args.dir.display()))),
        Err(e) => return Err(fail(format!("cannot use {}: {e}", args.dir.display()))),
    }
    let params = session::receiver_params(args.buffer_size, args.window);
    let listener = Listener::bind(SocketAddr::new(args.addr, args.port), params)
        .map_err(|e| fail(format!("cannot listen on {}:{}: {e}", args.addr, args.port)))?;
    println!(
        "listening on {} (device {}): buffer {} B, window {}, into {}",
        listener.local_addr(),
        listener.device_name().as_deref().unwrap_or("any"),
        args.buffer_size,
        args.window,
        args.dir.display()
    );
    loop {
        match listener.try_accept(POLL) {
            Ok(None) => {}
            Ok(Some(mut conn)) => {
                let peer = addr_or_unknown(conn.peer_addr());
                println!("accepted {peer}: {}", describe(conn.negotiated()));
                eprintln!(
                    "recv: file data transfer is not implemented yet; waiting for {peer} to \
                     disconnect"
                );
                match conn.wait_disconnected(Duration::from_secs(args.idle_timeout)) {
                    Ok(()) => println!("closed {peer}"),
                    Err(e) => {
                        eprintln!("recv: {peer}: {e}; closing the connection");
                        let _ = conn.disconnect(Duration::from_secs(5));
                    }
                }
                if args.once {
                    return Ok(0);
                }
            }
            Err(Error::RequestRejected { peer, reason }) => {
                println!("rejected {}: {reason}", addr_or_unknown(peer));
            }
            Err(e @ Error::ListenerFailed(_)) => return Err(fail(e.to_string())),
            Err(e) => eprintln!("recv: error: connection set-up failed: {e}"),
        }
    }
}

fn fail(msg: String) -> i32 {
    eprintln!("recv: error: {msg}");
    EXIT_FAILURE
}
