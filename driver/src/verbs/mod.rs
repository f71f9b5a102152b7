//! Safe wrappers over the libibverbs / librdmacm calls rdmaft uses.
//!
//! This module is the only place in the crate with `unsafe` code. Each RDMA resource is an
//! RAII type whose `Drop` frees it, and each holds an `Arc` (or a lifetime) to the resources
//! it depends on, so the C objects are always destroyed children first:
//!
//! ```text
//! EventChannel <- CmId <- Context (from a CmId) <- ProtectionDomain <- MemoryRegion
//!                   ^                 ^        <- CompletionChannel <- CompletionQueue
//!                   +-- QueuePair ----+-- (also holds its PD and CQs)
//! DeviceList <- Device<'_> -> Context (opened with ibv_open_device, outlives the list)
//! ```
//!
//! Blocking waits (CM events, completion events) take a timeout: the event channel and the
//! completion channel file descriptors are put in non-blocking mode and waited on with
//! `poll(2)`, so nothing here can hang forever.
//!
//! Thread safety: libibverbs and librdmacm are thread-safe, so the wrappers are `Send` and
//! `Sync`; what the C libraries do not make safe (two threads destroying one object) the
//! ownership rules here rule out.

mod cm;
mod cq;
mod device;
mod mapped;
mod mr;
mod pd;
mod qp;
mod slots;

// The crate uses some of these; the `internals` feature exposes all of them.
#[allow(unused_imports)]
pub use cm::{
    CmEvent, CmEventKind, CmId, ConnParams, EventChannel, IdToken, MAX_ACCEPT_PRIVATE_DATA,
    MAX_CONNECT_PRIVATE_DATA, MAX_REJECT_PRIVATE_DATA,
};
#[allow(unused_imports)]
pub use cq::{CompletionChannel, CompletionQueue, WcOpcode, WcStatus, WorkCompletion};
#[allow(unused_imports)]
pub use device::{select_device, Context, Device, DeviceLimits, DeviceList};
#[allow(unused_imports)]
pub use mapped::{MappedBuf, Pages};
pub use mr::{registered_bytes, Access, MemoryRegion, RemoteBuffer};
#[allow(unused_imports)]
pub use pd::ProtectionDomain;
#[allow(unused_imports)]
pub use qp::{QpCaps, QueuePair, SendWr};
#[allow(unused_imports)]
pub use slots::{Backing, Slot, SlotArea};

use crate::Error;
use std::os::fd::RawFd;
use std::time::Duration;

/// Puts `fd` in non-blocking mode so the `*_get_*_event` calls return `EAGAIN` instead of
/// blocking; the waits then use `poll(2)` with a timeout.
fn set_nonblocking(fd: RawFd, verb: &'static str) -> Result<(), Error> {
    // SAFETY: fcntl on a file descriptor owned by a live verbs/CM object; F_GETFL takes no
    // further argument and has no memory-safety preconditions.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(Error::last_os(verb));
    }
    // SAFETY: as above; F_SETFL takes an int argument.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    if rc < 0 {
        return Err(Error::last_os(verb));
    }
    Ok(())
}

/// Waits until `fd` is readable or `timeout` passes; `Ok(true)` when readable.
///
/// An error, hang-up or invalid-descriptor condition on `fd` is an error (`poll` would keep
/// reporting it at once, so callers would spin until their deadline).
fn wait_readable(fd: RawFd, timeout: Duration) -> Result<bool, Error> {
    let ms = poll_timeout_ms(timeout);
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is a valid, initialised pollfd and we pass a count of exactly 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::Verb {
                verb: "poll",
                source: err,
            });
        }
        if rc == 0 {
            return Ok(false);
        }
        return check_revents(fd, pfd.revents).map(|()| true);
    }
}

/// `poll(2)`'s timeout for `timeout`: whole milliseconds rounded up (a sub-millisecond wait
/// must not become a 0 ms busy poll), at most `i32::MAX`.
fn poll_timeout_ms(timeout: Duration) -> i32 {
    let ms = timeout.as_nanos().div_ceil(1_000_000);
    i32::try_from(ms).unwrap_or(i32::MAX)
}

/// An error for `POLLERR`, `POLLHUP` or `POLLNVAL` in `revents`.
fn check_revents(fd: RawFd, revents: libc::c_short) -> Result<(), Error> {
    let bad = [
        (libc::POLLERR, "POLLERR"),
        (libc::POLLHUP, "POLLHUP"),
        (libc::POLLNVAL, "POLLNVAL"),
    ];
    let names: Vec<&str> = bad
        .iter()
        .filter(|(flag, _)| revents & flag != 0)
        .map(|&(_, name)| name)
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    Err(Error::Verb {
        verb: "poll",
        source: std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            format!("descriptor {fd} reported {}", names.join("|")),
        ),
    })
}

/// True when the last failed call set `errno` to `EAGAIN`/`EWOULDBLOCK`.
fn last_error_is_again() -> bool {
    std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

/// Copies a C string owned by the verbs libraries into a Rust string.
///
/// # Safety
/// `ptr` must be null or point to a NUL-terminated string that stays valid during the call.
unsafe fn c_str_lossy(ptr: *const std::os::raw::c_char) -> String {
    if ptr.is_null() {
        return String::from("?");
    }
    // SAFETY: the caller guarantees `ptr` is a valid NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn poll_timeouts_round_up_and_saturate() {
        assert_eq!(poll_timeout_ms(Duration::ZERO), 0);
        assert_eq!(poll_timeout_ms(Duration::from_nanos(1)), 1);
        assert_eq!(poll_timeout_ms(Duration::from_micros(999)), 1);
        assert_eq!(poll_timeout_ms(Duration::from_micros(1001)), 2);
        assert_eq!(poll_timeout_ms(Duration::from_millis(250)), 250);
        assert_eq!(poll_timeout_ms(Duration::MAX), i32::MAX);
    }

    #[test]
    fn readable_and_timeout_are_told_apart() {
        let (mut a, b) = UnixStream::pair().unwrap();
        assert!(!wait_readable(b.as_raw_fd(), Duration::from_micros(10)).unwrap());
        a.write_all(b"x").unwrap();
        assert!(wait_readable(b.as_raw_fd(), Duration::from_secs(5)).unwrap());
    }

    #[test]
    fn hang_up_is_an_error_not_a_spin() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        let err = wait_readable(b.as_raw_fd(), Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains("POLLHUP"), "{err}");
        assert!(check_revents(3, libc::POLLNVAL).is_err());
        assert!(check_revents(3, libc::POLLERR | libc::POLLIN).is_err());
        assert!(check_revents(3, libc::POLLIN).is_ok());
    }
}
