//! The receiver as a service: the systemd unit passes `systemd-analyze verify` (with
//! ExecStart at the built binary and the manual page it names), is hardened as documented
//! and writes only where the example config receives; the example config checks.

use std::path::{Path, PathBuf};
use std::process::Command;

const UNIT: &str = include_str!("../service/rdmaft-recv.service");
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/service/recv.toml");

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rdmaft-service-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rdmaft"))
}

/// The unit's `key=value` lines (the last wins, as in systemd).
fn setting(unit: &str, key: &str) -> Option<String> {
    unit.lines()
        .rev()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
}

#[test]
fn the_unit_verifies_with_systemd_analyze() {
    let dir = scratch("verify");
    let unit = UNIT.replace("@BINDIR@", &bin().parent().unwrap().to_string_lossy());
    let path = dir.join("rdmaft-recv.service");
    std::fs::write(&path, unit).unwrap();
    // Documentation=man:rdmaft-recv(1) must resolve: the pages the binary writes.
    let man = dir.join("man");
    let pages = rdmaft_cli::docs::write_man_pages(&man.join("man1")).unwrap();
    assert!(!pages.is_empty());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .env("MANPATH", &man)
        .output()
        .expect("systemd-analyze (package systemd), which scripts/install-deps.sh installs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // An unknown or misspelt key is only a warning to systemd: none may be left.
    assert!(stderr.trim().is_empty(), "systemd-analyze warns:\n{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_unit_is_hardened_and_writes_only_where_the_config_receives() {
    for (key, value) in [
        ("ProtectSystem", "strict"),
        ("LimitMEMLOCK", "infinity"),
        ("LimitNOFILE", "1048576"),
        ("NoNewPrivileges", "yes"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(setting(UNIT, key).as_deref(), Some(value), "{key}");
    }
    let exec = setting(UNIT, "ExecStart").unwrap();
    let config = exec
        .split("--config ")
        .nth(1)
        .expect("ExecStart passes --config");
    assert_eq!(config, "/etc/rdmaft/recv.toml");
    let example = std::fs::read_to_string(CONFIG).unwrap();
    let dir = example
        .lines()
        .find_map(|l| l.strip_prefix("dir = "))
        .unwrap()
        .trim_matches('"');
    assert_eq!(setting(UNIT, "ReadWritePaths").as_deref(), Some(dir));
}

#[test]
fn the_example_config_checks() {
    let out = Command::new(bin())
        .args(["recv", "--config", CONFIG, "--check-config"])
        .env_remove("RDMAFT_ADDR")
        .output()
        .unwrap();
    // It names a key file that only the service host has: the check says so.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("/etc/rdmaft/key"),
        "{stderr}"
    );
    // With a key file that exists, every setting is taken.
    let dir = scratch("config");
    let key = dir.join("key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    let out = Command::new(bin())
        .args(["recv", "--config", CONFIG, "--check-config", "--key-file"])
        .arg(&key)
        .env_remove("RDMAFT_ADDR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    for part in [
        "listen=0.0.0.0:15000",
        "dir=/srv/rdmaft",
        "allow=[10.0.0.0/8]",
        "key=yes",
        "window=16",
        "max-connections=64",
    ] {
        assert!(stdout.contains(part), "{part} not in {stdout}");
    }
    // A misspelt key is refused, naming it.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "windw = 4\n").unwrap();
    let out = Command::new(bin())
        .args(["recv", "--check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("windw"));
    std::fs::remove_dir_all(&dir).unwrap();
}
