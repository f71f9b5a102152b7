//! `rdmaft-smoke`: checks that an RDMA device works end to end (see `rdmaft::smoke`).
//!
//! ```text
//! rdmaft-smoke [--device NAME] [--addr IP] [--port N] [--timeout SECS]
//! ```
//! Defaults come from `RDMAFT_DEVICE` (else the first device), `RDMAFT_ADDR` (else
//! 10.77.0.1, the Soft-RoCE test bed's address) and `RDMAFT_PORT` (else 0: any free port).
//! Exits 0 when every check passed, 1 with the error on stderr otherwise, 2 on bad usage.

use rdmaft::smoke::{self, SmokeOptions};
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: rdmaft-smoke [--device NAME] [--addr IP] [--port N] [--timeout SECS]
  env: RDMAFT_DEVICE (default: first device), RDMAFT_ADDR (default 10.77.0.1), RDMAFT_PORT (default 0)";

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn parse_args() -> Result<SmokeOptions, String> {
    let mut device = env("RDMAFT_DEVICE");
    let mut addr = env("RDMAFT_ADDR").unwrap_or_else(|| "10.77.0.1".into());
    let mut port = env("RDMAFT_PORT").unwrap_or_else(|| "0".into());
    let mut timeout = "10".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--device" | "-d" => device = Some(value("--device")?),
            "--addr" | "-a" => addr = value("--addr")?,
            "--port" | "-p" => port = value("--port")?,
            "--timeout" | "-t" => timeout = value("--timeout")?,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let addr: IpAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?;
    let port: u16 = port
        .parse()
        .map_err(|e| format!("bad port {port:?}: {e}"))?;
    let secs: u64 = timeout
        .parse()
        .map_err(|e| format!("bad timeout {timeout:?}: {e}"))?;
    let mut opts = SmokeOptions::new(device.as_deref(), addr, port);
    opts.timeout = Duration::from_secs(secs.max(1));
    Ok(opts)
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("rdmaft-smoke: {msg}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match smoke::run_with(&opts, &|line| println!("{line}")) {
        Ok(report) => {
            println!(
                "smoke ok: device {}, {}:{}, SEND {} bytes, WRITE {} bytes, reply {} bytes, {:.2?}",
                report.device,
                report.addr,
                report.port,
                report.recv_bytes,
                report.write_verified_bytes,
                report.reply_bytes,
                report.elapsed
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rdmaft-smoke: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
