//! The `rdmaft` command: its subcommands [`send`] and [`recv`] (which the `send` and `recv`
//! example programs run too), the command line as a whole ([`cli`]), its manual pages and
//! shell completions ([`docs`]), and what the subcommands share: size parsing, address
//! handling, exit statuses.

pub mod cli;
pub mod config;
pub mod docs;
pub mod json;
pub mod metrics;
pub mod recv;
pub mod send;
pub mod service;

use rdmaft::protocol::{MAX_CHUNK_SIZE, MAX_WINDOW, MIN_CHUNK_SIZE};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Environment variable with the address `recv` listens on when `--addr` is not given.
pub const ADDR_ENV: &str = "RDMAFT_ADDR";

/// Exit status for a failure (an error line was printed).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for bad usage.
pub const EXIT_USAGE: u8 = 2;
/// Exit status after a second Ctrl-C cut the clean stop short (128 + SIGINT, as shells
/// report a program killed by it).
pub const EXIT_INTERRUPTED: i32 = 130;

/// What a Ctrl-C means: the first asks the transfer to stop cleanly (the peer is told,
/// nothing unverified stays behind); one more, while that is still under way, exits at once.
#[derive(Debug, Default)]
pub struct Interrupts(std::sync::atomic::AtomicU32);

/// What to do about one Ctrl-C.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnInterrupt {
    /// Cancel or stop cleanly.
    StopCleanly,
    /// Exit now with [`EXIT_INTERRUPTED`].
    ExitNow,
}

impl Interrupts {
    /// How many Ctrl-C came so far.
    pub fn count(&self) -> u32 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Counts a Ctrl-C and says what it means.
    pub fn next(&self) -> OnInterrupt {
        match self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => OnInterrupt::StopCleanly,
            _ => OnInterrupt::ExitNow,
        }
    }
}

/// Parses a byte count: a number with an optional binary unit `K`, `M` or `G` (× 1024ⁿ,
/// either case, optionally followed by `iB` or `B`): `4096`, `64K`, `1M`, `1GiB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!(
            "invalid size {text:?}: expected a number with an optional unit K, M or G (e.g. \
             4096, 64K, 1M)"
        ));
    }
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => {
            return Err(format!(
                "invalid size {text:?}: unknown unit {unit:?} (use K, M or G)"
            ))
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {text:?}: number too large"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("invalid size {text:?}: too large"))
}

/// Parses a buffer (chunk) size with [`parse_size`] and checks the protocol's range.
pub fn parse_buffer_size(text: &str) -> Result<u32, String> {
    let n = parse_size(text)?;
    if !(u64::from(MIN_CHUNK_SIZE)..=u64::from(MAX_CHUNK_SIZE)).contains(&n) {
        return Err(format!("buffer size {text} ({n} B) is outside 4K ..= 1G"));
    }
    Ok(n as u32)
}

/// Most lanes a send may ask for on the command line.
pub const MAX_LANES: u16 = 64;

/// Parses a lane count: `auto` (the library's default from the cores) or 1 ..= [`MAX_LANES`].
pub fn parse_lanes(text: &str) -> Result<u16, String> {
    if text.trim() == "auto" {
        return Ok(0);
    }
    let n: u16 = text
        .trim()
        .parse()
        .map_err(|_| format!("invalid lane count {text:?}: expected a whole number or auto"))?;
    if !(1..=MAX_LANES).contains(&n) {
        return Err(format!("lanes {n} is outside 1 ..= {MAX_LANES}"));
    }
    Ok(n)
}

/// Parses a part size (files split over lanes): a size of at least 4K.
pub fn parse_part_size(text: &str) -> Result<u64, String> {
    let n = parse_size(text)?;
    if n < u64::from(MIN_CHUNK_SIZE) {
        return Err(format!("part size {text} ({n} B) is below 4K"));
    }
    Ok(n)
}

/// Parses a window (chunks in flight) and checks the protocol's range.
pub fn parse_window(text: &str) -> Result<u32, String> {
    let n: u32 = text
        .trim()
        .parse()
        .map_err(|_| format!("invalid window {text:?}: expected a whole number"))?;
    if !(1..=MAX_WINDOW).contains(&n) {
        return Err(format!("window {n} is outside 1 ..= {MAX_WINDOW}"));
    }
    Ok(n)
}

/// Resolves `host` (an IP address or a name) with `port` to the first socket address.
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("cannot resolve {host:?}: no addresses"))
}

/// Parses `HOST[:PORT]` (IPv6 in brackets, `[fd00::1]:15000`) with `default_port`.
pub fn parse_target(text: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (host, port) = rest
            .split_once(']')
            .ok_or_else(|| format!("invalid address {text:?}: missing ']'"))?;
        let port = match port.strip_prefix(':') {
            Some(p) => parse_port(p)?,
            None if port.is_empty() => default_port,
            None => return Err(format!("invalid address {text:?}")),
        };
        return resolve(host, port);
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => resolve(host, parse_port(port)?),
        _ => resolve(text, default_port),
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    text.parse()
        .map_err(|_| format!("invalid port {text:?}: expected 0 ..= 65535"))
}

/// Bytes for humans: `512 B`, `1.5 KiB`, `3.0 MiB`, `2.1 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// An optional address as text (`?` when unknown).
pub fn addr_or_unknown(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "?".to_owned(), |a| a.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_ctrl_c_stops_cleanly_and_the_next_exits() {
        let i = Interrupts::default();
        assert_eq!(i.count(), 0);
        assert_eq!(i.next(), OnInterrupt::StopCleanly);
        assert_eq!(i.next(), OnInterrupt::ExitNow);
        assert_eq!(i.next(), OnInterrupt::ExitNow);
        assert_eq!(i.count(), 3);
    }

    #[test]
    fn sizes_with_units() {
        for (text, want) in [
            ("4096", 4096),
            ("0", 0),
            ("64K", 64 << 10),
            ("64k", 64 << 10),
            ("1M", 1 << 20),
            ("1m", 1 << 20),
            ("1G", 1 << 30),
            ("2GiB", 2 << 30),
            ("16KB", 16 << 10),
            ("512B", 512),
            (" 1M ", 1 << 20),
        ] {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_sizes_are_errors() {
        for text in [
            "", "K", "M1", "1.5M", "-1", "1T", "12X", "1 M", "0x10", "1MM",
        ] {
            let err = parse_size(text).unwrap_err();
            assert!(err.starts_with("invalid size"), "{text}: {err}");
        }
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("17179869184G")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn buffer_sizes_are_range_checked() {
        assert_eq!(parse_buffer_size("1M"), Ok(1 << 20));
        assert_eq!(parse_buffer_size("4K"), Ok(4096));
        assert_eq!(parse_buffer_size("1G"), Ok(1 << 30));
        assert!(parse_buffer_size("4095").unwrap_err().contains("outside"));
        assert!(parse_buffer_size("2G").unwrap_err().contains("outside"));
        assert!(parse_buffer_size("0").is_err());
        assert!(parse_buffer_size("1X").is_err());
    }

    #[test]
    fn windows_are_range_checked() {
        assert_eq!(parse_lanes("auto"), Ok(0));
        assert_eq!(parse_lanes("4"), Ok(4));
        assert!(parse_lanes("0").is_err());
        assert!(parse_lanes("65").is_err());
        assert!(parse_lanes("two").is_err());
        assert_eq!(parse_part_size("64M"), Ok(64 << 20));
        assert!(parse_part_size("1K").is_err());
        assert_eq!(parse_window("16"), Ok(16));
        assert_eq!(parse_window("65536"), Ok(65536));
        assert!(parse_window("0").is_err());
        assert!(parse_window("65537").is_err());
        assert!(parse_window("4K").is_err());
    }

    #[test]
    fn addresses() {
        assert_eq!(
            resolve("10.77.0.1", 7471),
            Ok("10.77.0.1:7471".parse().unwrap())
        );
        assert_eq!(resolve("fd00::7", 9), Ok("[fd00::7]:9".parse().unwrap()));
        assert!(resolve("no such host.invalid", 1).is_err());
        assert_eq!(addr_or_unknown(None), "?");
    }

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("10.77.0.1", 15000),
            Ok("10.77.0.1:15000".parse().unwrap())
        );
        assert_eq!(
            parse_target("10.77.0.1:9", 15000),
            Ok("10.77.0.1:9".parse().unwrap())
        );
        assert_eq!(
            parse_target("[fd00::7]:9", 1),
            Ok("[fd00::7]:9".parse().unwrap())
        );
        assert_eq!(
            parse_target("[fd00::7]", 15000),
            Ok("[fd00::7]:15000".parse().unwrap())
        );
        assert_eq!(
            parse_target("fd00::7", 15000),
            Ok("[fd00::7]:15000".parse().unwrap())
        );
        assert!(parse_target("10.77.0.1:x", 1).is_err());
        assert!(parse_target("[fd00::7", 1).is_err());
        assert!(parse_target("10.77.0.1:70000", 1).is_err());
    }

    #[test]
    fn bytes_for_humans() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_bytes(5 << 40), "5.0 TiB");
    }
}
