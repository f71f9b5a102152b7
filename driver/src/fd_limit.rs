//! The file-descriptor limit. A receiver serving 64 connections of 64 open files each needs
//! more than the usual soft limit of 1,024, so it raises the soft limit to the hard one at
//! start (as servers do), then budgets what it gets (`ReceiverOptions::open_files_limit`).

use rustix::process::{getrlimit, setrlimit, Resource};

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit in force
/// afterwards (`u64::MAX` when unlimited). A refusal leaves the limit as it was.
pub(crate) fn raise() -> u64 {
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let after = super::raise();
        let now = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert_eq!(now.current, now.maximum, "soft limit at the hard limit");
        assert_eq!(after, now.current.unwrap_or(u64::MAX));
        assert!(after >= 64, "{after}");
    }
}
