//! `recv`: `rdmaft recv` as a program of its own (the same code and options; see
//! `rdmaft_cli::recv`).

use clap::Parser;
use std::process::ExitCode;

/// Receive files from rdmaft senders over RDMA.
#[derive(Parser, Debug)]
#[command(name = "recv", version, after_long_help = rdmaft_cli::cli::EXIT_STATUS)]
struct Cli {
    #[command(flatten)]
    args: rdmaft_cli::recv::RecvArgs,
}

fn main() -> ExitCode {
    rdmaft_cli::recv::main(Cli::parse().args)
}
