//! The manual pages and completions generated from the clap definitions: each page renders
//! with `man -l` and shows its options and the exit statuses; each shell's completion
//! knows the subcommands.

use std::path::PathBuf;
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rdmaft-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn manual_pages_render_with_man() {
    let dir = scratch("man");
    let pages = rdmaft_cli::docs::write_man_pages(&dir).unwrap();
    let names: Vec<_> = pages
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["rdmaft.1", "rdmaft-send.1", "rdmaft-recv.1"]);
    for (page, must) in pages.iter().zip([
        &["SYNOPSIS", "rdmaft-send(1)", "Exit status"][..],
        &[
            "rdmaft-send",
            "--links",
            "--checksum",
            "--exclude",
            "Exit status",
        ][..],
        &[
            "rdmaft-recv",
            "--allow-unsafe-links",
            "--no-delete",
            "--config",
            "--metrics",
            "Exit status",
        ][..],
    ]) {
        let out = Command::new("man")
            .arg("-l")
            .arg(page)
            .env("MANWIDTH", "100")
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .output()
            .expect("man (man-db), which scripts/install-deps.sh installs");
        assert!(out.status.success(), "{}: {out:?}", page.display());
        let text = String::from_utf8_lossy(&out.stdout);
        for m in must {
            assert!(text.contains(m), "{} lacks {m:?}:\n{text}", page.display());
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn completions_know_the_subcommands_and_options() {
    let dir = scratch("completions");
    let files = rdmaft_cli::docs::write_completions(&dir).unwrap();
    let names: Vec<_> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["rdmaft.bash", "_rdmaft", "rdmaft.fish"]);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for word in ["send", "recv", "links", "allow-unsafe-links"] {
            assert!(text.contains(word), "{} lacks {word}", f.display());
        }
    }
    // bash can load its completion.
    let bash = files.iter().find(|f| f.ends_with("rdmaft.bash")).unwrap();
    let status = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p rdmaft", bash.display()))
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}
