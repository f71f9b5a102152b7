//! The receiver's umask, which it applies to the permission bits senders send.

use rustix::fs::Mode;

/// The process's umask, read without changing it where possible: from `/proc/self/status`
/// (`Umask:`, Linux 4.7 and later). Without that, `umask(2)` is the only way to read it, and
/// it reads by setting: for that instant the mask is `0o077`, so a file another thread
/// creates meanwhile gets fewer permissions, never more.
pub(crate) fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| parse_umask(&status))
        .unwrap_or_else(|| {
            let old = rustix::process::umask(Mode::from_raw_mode(0o077));
            rustix::process::umask(old);
            // The kernel keeps only the permission bits of a umask (`mask & 0o777`).
            old.as_raw_mode()
        })
}

/// The `Umask:` line of a `/proc/<pid>/status` text.
fn parse_umask(status: &str) -> Option<u32> {
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))?
        .trim();
    u32::from_str_radix(value, 8).ok().filter(|m| *m <= 0o777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_umask_line_is_read() {
        assert_eq!(
            parse_umask("Name:\tx\nUmask:\t0027\nState:\tR\n"),
            Some(0o027)
        );
        assert_eq!(parse_umask("Name:\tx\n"), None);
        assert_eq!(parse_umask("Umask:\t9\n"), None);
        assert_eq!(parse_umask("Umask:\t01777\n"), None);
        assert!(process_umask() <= 0o777);
    }
}
