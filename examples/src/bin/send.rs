//! `send`: `rdmaft send` as a program of its own (the same code and options; see
//! `rdmaft_cli::send`).

use clap::Parser;
use std::process::ExitCode;

/// Send files and directory trees to an rdmaft receiver over RDMA.
#[derive(Parser, Debug)]
#[command(name = "send", version, after_long_help = rdmaft_cli::cli::EXIT_STATUS)]
struct Cli {
    #[command(flatten)]
    args: rdmaft_cli::send::SendArgs,
}

fn main() -> ExitCode {
    rdmaft_cli::send::main(Cli::parse().args)
}
