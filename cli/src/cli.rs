//! The `rdmaft` command line as a whole: `rdmaft send …`, `rdmaft recv …`, and the hidden
//! `rdmaft docs` that writes the manual pages and completions (for `make install` and
//! packagers).

use crate::recv::RecvArgs;
use crate::send::SendArgs;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// What every subcommand's exit status means (the manual pages' EXIT STATUS).
pub const EXIT_STATUS: &str = "\
Exit status:
  0    every entry was verified by the receiver (or was up to date, or was left out by
       policy: a special file, a link without --links); for recv --once, every entry
       of the transfer arrived verified
  1    an entry failed (unreadable, refused, failed its digest, not finished) or the
       transfer could not run (each problem is named on stderr)
  2    bad usage (an unknown option, a bad value)
  130  a second Ctrl-C (for recv also SIGTERM) cut a clean stop short";

/// Move files and directory trees between hosts over RDMA (RoCE v2, InfiniBand, iWARP).
#[derive(Parser, Debug)]
#[command(
    name = "rdmaft",
    version,
    after_long_help = EXIT_STATUS,
    long_about = "Move files and directory trees between hosts over RDMA (RoCE v2, \
                  InfiniBand, iWARP): `rdmaft recv` on the receiving host, `rdmaft send \
                  HOST PATH...` on the sending one. Every file is verified by a digest \
                  before it gets its name at the receiver."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Send files and directory trees to an rdmaft receiver.
    #[command(after_long_help = EXIT_STATUS)]
    Send(SendArgs),
    /// Receive files from rdmaft senders into a directory.
    #[command(after_long_help = EXIT_STATUS)]
    Recv(RecvArgs),
    /// Write the manual pages and the shell completions (bash, zsh, fish).
    #[command(hide = true)]
    Docs {
        /// Directory for rdmaft.1, rdmaft-send.1 and rdmaft-recv.1.
        #[arg(long, value_name = "DIR")]
        man: Option<PathBuf>,
        /// Directory for rdmaft.bash, _rdmaft and rdmaft.fish.
        #[arg(long, value_name = "DIR")]
        completions: Option<PathBuf>,
    },
}

/// Runs the command line `cli`; its exit status.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Send(args) => crate::send::main(args),
        Command::Recv(args) => crate::recv::main(args),
        Command::Docs { man, completions } => {
            let written = (|| {
                let mut files = Vec::new();
                if let Some(dir) = man {
                    files.extend(crate::docs::write_man_pages(&dir)?);
                }
                if let Some(dir) = completions {
                    files.extend(crate::docs::write_completions(&dir)?);
                }
                Ok::<_, std::io::Error>(files)
            })();
            match written {
                Ok(files) => {
                    for f in files {
                        println!("{}", f.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("rdmaft docs: error: {e}");
                    ExitCode::from(crate::EXIT_FAILURE)
                }
            }
        }
    }
}
