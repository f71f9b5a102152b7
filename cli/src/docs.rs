//! The manual pages and shell completions, generated from the clap definitions so that
//! they never disagree with the options: `rdmaft(1)`, `rdmaft-send(1)`, `rdmaft-recv(1)`,
//! and completions for bash, zsh and fish.

use crate::cli::Cli;
use clap::CommandFactory;
use clap_complete::Shell;
use std::io;
use std::path::{Path, PathBuf};

/// Writes `rdmaft.1`, `rdmaft-send.1` and `rdmaft-recv.1` into `dir` (made if missing);
/// the files written.
pub fn write_man_pages(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let top = Cli::command();
    let mut pages = vec![("rdmaft".to_owned(), top.clone())];
    for sub in top.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("rdmaft-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    let mut written = Vec::new();
    for (name, cmd) in pages {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut page)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, page)?;
        written.push(path);
    }
    Ok(written)
}

/// Writes the completions for bash (`rdmaft.bash`), zsh (`_rdmaft`) and fish
/// (`rdmaft.fish`) into `dir` (made if missing); the files written.
pub fn write_completions(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = Cli::command();
    [Shell::Bash, Shell::Zsh, Shell::Fish]
        .into_iter()
        .map(|shell| clap_complete::generate_to(shell, &mut cmd, "rdmaft", dir))
        .collect()
}
