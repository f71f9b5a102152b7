//! `rdmaft`: move files between hosts over RDMA. `rdmaft send HOST PATH...` and `rdmaft
//! recv`; see `rdmaft help` and the manual pages.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    rdmaft_cli::cli::run(rdmaft_cli::cli::Cli::parse())
}
