//! `rdmaft recv --config FILE`: the receiver's settings in a TOML file, for running it as a
//! service. Keys are the long options' names (`key-file`, `max-connections`, ...); an
//! option given on the command line wins over the file (`RDMAFT_ADDR` in the environment
//! counts as `--listen`), a flag (`fsync`, ...) is on when either turns it on. Relative paths in the file are taken from the file's directory. An
//! unknown key is an error, so a typo never passes for a setting.
//!
//! On SIGHUP the file is read again and what a running receiver can change is applied to
//! the connections that come next ([`rdmaft::ReceiverLimits`]: allow-list, key, limits);
//! a change to anything else is named and waits for a restart.

use crate::{parse_buffer_size, parse_target, parse_window, ADDR_ENV};
use rdmaft::{
    Existing, Key, ReceiverLimits, ReceiverOptions, Subnet, DEFAULT_IDLE_TIMEOUT, DEFAULT_PORT,
    DEFAULT_WINDOW,
};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default `buffer-size`.
pub const DEFAULT_BUFFER_SIZE: &str = "1M";
/// Default `max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Default port of `--metrics` when only an address is given.
pub const DEFAULT_METRICS_PORT: u16 = 9464;

/// A size in the file: a number of bytes or text with a unit (`"1M"`, as
/// [`parse_size`](crate::parse_size) reads it).
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum SizeValue {
    /// Bytes.
    Bytes(u64),
    /// Text for [`parse_size`](crate::parse_size).
    Text(String),
}

impl SizeValue {
    fn text(&self) -> String {
        match self {
            SizeValue::Bytes(n) => n.to_string(),
            SizeValue::Text(t) => t.clone(),
        }
    }
}

/// The file, as written (every key optional).
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    /// ADDR or ADDR:PORT.
    pub listen: Option<String>,
    /// Directory to receive into.
    pub dir: Option<PathBuf>,
    /// Pre-shared key file.
    pub key_file: Option<PathBuf>,
    /// Allowed senders, `ADDR[/PREFIX]`.
    pub allow: Option<Vec<String>>,
    /// Largest buffer (chunk) size.
    pub buffer_size: Option<SizeValue>,
    /// Most chunks in flight.
    pub window: Option<u32>,
    /// Seconds without a sign of a sender before its connection is closed.
    pub idle_timeout: Option<u64>,
    /// Connections served at once.
    pub max_connections: Option<usize>,
    /// `--metrics`: ADDR:PORT to serve Prometheus metrics on.
    pub metrics: Option<String>,
    /// The flags of the same names (`true` turns one on).
    pub require_digest: Option<bool>,
    pub no_clobber: Option<bool>,
    pub fsync: Option<bool>,
    pub preserve_perms: Option<bool>,
    pub resume: Option<bool>,
    pub no_delete: Option<bool>,
    pub no_links: Option<bool>,
    pub allow_unsafe_links: Option<bool>,
    pub direct: Option<bool>,
    pub huge_pages: Option<bool>,
}

impl ConfigFile {
    /// Reads and parses `path`, with its relative paths made relative to its directory.
    pub fn load(path: &Path) -> Result<ConfigFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        let mut file: ConfigFile =
            toml::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut file.dir, &mut file.key_file].into_iter().flatten() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(file)
    }
}

/// The settings the command line gave (each `None` or `false` when not given): the side
/// that wins over the file. Every one is also a key of the file.
#[derive(clap::Args, Debug, Default, Clone)]
// The fields' docs are the command's help text (`ADDR[:PORT]`, `[default: 1M]`), not links.
#[allow(rustdoc::broken_intra_doc_links)]
pub struct CommandLine {
    /// Where to listen: ADDR or ADDR:PORT, an IP address of an RDMA device (0.0.0.0 = all
    /// devices); port 15000 by default. [default: 0.0.0.0]
    #[arg(short, long, env = ADDR_ENV)]
    pub listen: Option<String>,
    /// Directory to receive into (must exist). [default: .]
    #[arg(short, long)]
    pub dir: Option<PathBuf>,
    /// Largest buffer (chunk) size, e.g. 64K, 1M; both sides use the smaller. [default: 1M]
    #[arg(short, long, value_parser = parse_buffer_size)]
    pub buffer_size: Option<u32>,
    /// Most chunks in flight; both sides use the smaller. [default: 16]
    #[arg(short, long, value_parser = parse_window)]
    pub window: Option<u32>,
    /// Connections served at once (each lane of a sender counts); more are refused.
    /// [default: 64]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Pre-shared key file: senders must prove the same key.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Take senders only from this address or range (repeatable), e.g. 10.0.0.0/8.
    #[arg(long, value_name = "ADDR[/PREFIX]")]
    pub allow: Vec<Subnet>,
    /// Refuse senders that cannot send digests, and files without one.
    #[arg(long)]
    pub require_digest: bool,
    /// Refuse files whose name exists already (default: replace them), and leave existing
    /// directories as they are.
    #[arg(long)]
    pub no_clobber: bool,
    /// fsync each file before publishing it, and its directory after.
    #[arg(long)]
    pub fsync: bool,
    /// Take senders' permission bits as sent (never setuid, setgid or sticky); by default
    /// this program's umask is cleared from them.
    #[arg(long)]
    pub preserve_perms: bool,
    /// Keep what an interrupted transfer wrote (hidden, beside the file) and continue it
    /// when the same file is sent again.
    #[arg(long)]
    pub resume: bool,
    /// Refuse senders' --delete (their sync goes on; they are told nothing was deleted).
    /// --no-clobber refuses it too.
    #[arg(long)]
    pub no_delete: bool,
    /// Make symbolic links (send --links) whose target is absolute or climbs out of
    /// --dir; without it they are refused. rdmaft never follows a link it receives, but
    /// other programs reading the directory would.
    #[arg(long)]
    pub allow_unsafe_links: bool,
    /// Take no symbolic links at all: senders' --links skip them (and say so).
    #[arg(long, conflicts_with = "allow_unsafe_links")]
    pub no_links: bool,
    /// Serve Prometheus metrics (OpenMetrics text) over HTTP on ADDR[:PORT] (port 9464 by
    /// default): connections, bytes, files, failures and refusals by reason, registered
    /// memory.
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub metrics: Option<String>,
    /// Put the RDMA rings on huge pages (the reserved pool, vm.nr_hugepages, when it has
    /// room; else transparent huge pages).
    #[arg(long)]
    pub huge_pages: bool,
    /// Write files of 1 MiB or more with O_DIRECT, past the page cache (large files on
    /// NVMe); a file system that refuses it is written through the cache as usual.
    #[arg(long)]
    pub direct: bool,
    /// Seconds without any sign of a sender before its connection is closed. [default: 30]
    #[arg(long, value_name = "SECONDS")]
    pub idle_timeout: Option<u64>,
}

/// The receiver's settings in effect: the command line over the file over the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub listen: SocketAddr,
    pub dir: PathBuf,
    pub key_file: Option<PathBuf>,
    pub allow: Vec<Subnet>,
    pub buffer_size: u32,
    pub window: u32,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub metrics: Option<SocketAddr>,
    pub require_digest: bool,
    pub no_clobber: bool,
    pub fsync: bool,
    pub preserve_perms: bool,
    pub resume: bool,
    pub no_delete: bool,
    pub no_links: bool,
    pub allow_unsafe_links: bool,
    pub direct: bool,
    pub huge_pages: bool,
}

impl Settings {
    /// Merges `cli` over `file` (when there is one) over the defaults, and checks values.
    pub fn merge(cli: &CommandLine, file: Option<&ConfigFile>) -> Result<Settings, String> {
        let f = file.cloned().unwrap_or_default();
        let listen = cli
            .listen
            .clone()
            .or(f.listen)
            .unwrap_or_else(|| "0.0.0.0".into());
        let allow = if cli.allow.is_empty() {
            f.allow
                .unwrap_or_default()
                .iter()
                .map(|a| a.parse::<Subnet>().map_err(|e| format!("allow {a:?}: {e}")))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            cli.allow.clone()
        };
        let buffer_size = match (cli.buffer_size, &f.buffer_size) {
            (Some(n), _) => n,
            (None, Some(v)) => parse_buffer_size(&v.text())?,
            (None, None) => parse_buffer_size(DEFAULT_BUFFER_SIZE)?,
        };
        let window = match (cli.window, f.window) {
            (Some(n), _) => n,
            (None, Some(n)) => parse_window(&n.to_string())?,
            (None, None) => DEFAULT_WINDOW,
        };
        let idle = cli
            .idle_timeout
            .or(f.idle_timeout)
            .unwrap_or(DEFAULT_IDLE_TIMEOUT.as_secs());
        let max_connections = cli
            .max_connections
            .or(f.max_connections)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err("max-connections must be at least 1".into());
        }
        let metrics = match cli.metrics.clone().or(f.metrics) {
            Some(m) => Some(parse_target(&m, DEFAULT_METRICS_PORT)?),
            None => None,
        };
        let flag = |c: bool, v: Option<bool>| c || v.unwrap_or(false);
        let s = Settings {
            listen: parse_target(&listen, DEFAULT_PORT)?,
            dir: cli.dir.clone().or(f.dir).unwrap_or_else(|| ".".into()),
            key_file: cli.key_file.clone().or(f.key_file),
            allow,
            buffer_size,
            window,
            idle_timeout: Duration::from_secs(idle.max(1)),
            max_connections,
            metrics,
            require_digest: flag(cli.require_digest, f.require_digest),
            no_clobber: flag(cli.no_clobber, f.no_clobber),
            fsync: flag(cli.fsync, f.fsync),
            preserve_perms: flag(cli.preserve_perms, f.preserve_perms),
            resume: flag(cli.resume, f.resume),
            no_delete: flag(cli.no_delete, f.no_delete),
            no_links: flag(cli.no_links, f.no_links),
            allow_unsafe_links: flag(cli.allow_unsafe_links, f.allow_unsafe_links),
            direct: flag(cli.direct, f.direct),
            huge_pages: flag(cli.huge_pages, f.huge_pages),
        };
        if s.no_links && s.allow_unsafe_links {
            return Err("no-links and allow-unsafe-links contradict each other".into());
        }
        Ok(s)
    }

    /// The pre-shared key, read from its file now.
    pub fn key(&self) -> Result<Option<Key>, String> {
        match &self.key_file {
            Some(p) => Key::from_file(p).map(Some).map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    /// The receiver's options (without callbacks) for these settings.
    pub fn options(&self) -> Result<ReceiverOptions, String> {
        let mut o = ReceiverOptions::new(self.listen, self.dir.clone());
        o.existing = if self.no_clobber {
            Existing::Keep
        } else {
            Existing::Replace
        };
        o.fsync = self.fsync;
        o.preserve_perms = self.preserve_perms;
        o.resume = self.resume;
        o.huge_pages = self.huge_pages;
        o.direct = self.direct;
        o.delete = !self.no_delete;
        o.allow_unsafe_links = self.allow_unsafe_links;
        o.links = !self.no_links;
        self.limits()?.apply(&mut o);
        Ok(o)
    }

    /// What a reload applies (the key file read again).
    pub fn limits(&self) -> Result<ReceiverLimits, String> {
        Ok(ReceiverLimits {
            allow: self.allow.clone(),
            key: self.key()?,
            require_digest: self.require_digest,
            chunk_size: self.buffer_size,
            window: self.window,
            max_connections: self.max_connections,
            idle_timeout: self.idle_timeout,
        })
    }

    /// The settings that differ from `running` and that a reload cannot change (they wait
    /// for a restart).
    pub fn fixed_changes(&self, running: &Settings) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut check = |name, differs: bool| {
            if differs {
                changed.push(name);
            }
        };
        check("listen", self.listen != running.listen);
        check("dir", self.dir != running.dir);
        check("metrics", self.metrics != running.metrics);
        check("no-clobber", self.no_clobber != running.no_clobber);
        check("fsync", self.fsync != running.fsync);
        check(
            "preserve-perms",
            self.preserve_perms != running.preserve_perms,
        );
        check("resume", self.resume != running.resume);
        check("no-delete", self.no_delete != running.no_delete);
        check("no-links", self.no_links != running.no_links);
        check(
            "allow-unsafe-links",
            self.allow_unsafe_links != running.allow_unsafe_links,
        );
        check("direct", self.direct != running.direct);
        check("huge-pages", self.huge_pages != running.huge_pages);
        changed
    }

    /// A one-line summary for the log.
    pub fn summary(&self) -> String {
        format!(
            "listen={} dir={} allow=[{}] key={} buffer-size={} window={} max-connections={} \
             idle-timeout={}s",
            self.listen,
            self.dir.display(),
            self.allow
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(","),
            if self.key_file.is_some() { "yes" } else { "no" },
            self.buffer_size,
            self.window,
            self.max_connections,
            self.idle_timeout.as_secs()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_command_line_wins_and_flags_add_up() {
        let file = parse(
            r#"
            listen = "10.0.0.1:16000"
            dir = "/srv/in"
            allow = ["10.0.0.0/8"]
            buffer-size = "256K"
            window = 8
            max-connections = 4
            fsync = true
            "#,
        )
        .unwrap();
        let s = Settings::merge(&CommandLine::default(), Some(&file)).unwrap();
        assert_eq!(s.listen, "10.0.0.1:16000".parse().unwrap());
        assert_eq!(s.dir, PathBuf::from("/srv/in"));
        assert_eq!(s.allow, vec!["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(
            (s.buffer_size, s.window, s.max_connections),
            (256 << 10, 8, 4)
        );
        assert!(s.fsync && !s.resume);
        let cli = CommandLine {
            window: Some(16),
            allow: vec!["192.168.1.0/24".parse().unwrap()],
            resume: true,
            ..CommandLine::default()
        };
        let s = Settings::merge(&cli, Some(&file)).unwrap();
        assert_eq!(s.window, 16);
        assert_eq!(s.allow, vec!["192.168.1.0/24".parse().unwrap()]);
        assert!(s.fsync && s.resume);
        assert_eq!(s.buffer_size, 256 << 10);
    }

    #[test]
    fn defaults_without_a_file() {
        let s = Settings::merge(&CommandLine::default(), None).unwrap();
        assert_eq!(s.listen, SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)));
        assert_eq!(s.buffer_size, 1 << 20);
        assert_eq!(s.window, DEFAULT_WINDOW);
        assert_eq!(s.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(s.metrics, None);
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let e = parse("windo = 3").unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
        let bad =
            |text: &str| Settings::merge(&CommandLine::default(), Some(&parse(text).unwrap()));
        assert!(bad("buffer-size = \"3X\"")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(bad("buffer-size = 1").unwrap_err().contains("outside"));
        assert!(bad("window = 0").unwrap_err().contains("outside"));
        assert!(bad("allow = [\"10.0.0.0/99\"]").is_err());
        assert!(bad("max-connections = 0").is_err());
        assert!(bad("no-links = true\nallow-unsafe-links = true").is_err());
    }

    #[test]
    fn relative_paths_are_taken_from_the_file() {
        let dir = std::env::temp_dir().join(format!("rdmaft-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("recv.toml");
        std::fs::write(&path, "dir = \"incoming\"\nkey-file = \"/etc/k\"\n").unwrap();
        let f = ConfigFile::load(&path).unwrap();
        assert_eq!(f.dir, Some(dir.join("incoming")));
        assert_eq!(f.key_file, Some(PathBuf::from("/etc/k")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_reload_names_what_waits_for_a_restart() {
        let a = Settings::merge(&CommandLine::default(), None).unwrap();
        let mut b = a.clone();
        b.allow = vec!["10.0.0.0/8".parse().unwrap()];
        b.window = 4;
        assert!(b.fixed_changes(&a).is_empty());
        b.dir = "/elsewhere".into();
        b.fsync = true;
        assert_eq!(b.fixed_changes(&a), vec!["dir", "fsync"]);
    }
}
