//! `rdmaft_start_send` / `rdmaft_stop_send` and the additions: a blocking wait with a status
//! and a callback variant with a status.

use super::{c_name, chunk_size, fail, guard, status_of, str_arg, UserPtr};
use super::{RDMAFT_EFAILED, RDMAFT_EFILE, RDMAFT_EREJECTED, RDMAFT_EUNFINISHED};
use super::{RDMAFT_EINVAL, RDMAFT_OK};
use crate::{FileOutcome, FileReport, SendHandle, SendOptions, SendReport};
use std::ffi::{c_char, c_int, c_void};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};

/// The original callback: the file name, once the file was delivered and verified.
pub type SendCallback = extern "C" fn(filename: *const c_char);
/// The variant: every file, with its status and the caller's pointer.
pub type SendStatusCallback =
    extern "C" fn(filename: *const c_char, status: c_int, user: *mut c_void);

/// A send started through the C API (the header's opaque `struct rdmaft_send_client_context`).
pub struct SendContext {
    handle: Mutex<Option<SendHandle>>,
    /// The status `rdmaft_send_wait` returned, kept for a second call.
    status: Mutex<Option<(c_int, String)>>,
}

/// A file's status for C.
fn file_status(outcome: &FileOutcome) -> c_int {
    match outcome {
        FileOutcome::Sent => RDMAFT_OK,
        FileOutcome::Rejected(_) => RDMAFT_EREJECTED,
        FileOutcome::Failed(_) => RDMAFT_EFAILED,
        FileOutcome::Skipped(_) => RDMAFT_EFILE,
        FileOutcome::Unfinished => RDMAFT_EUNFINISHED,
    }
}

/// The status of a whole send, and its text.
///
/// Success means every entry of the paths given was reached and arrived verified. A session
/// that then ended badly (a receiver stopped right after the last verdict) still delivered
/// everything, so it is a success; one that ended before the walk reached every entry is not,
/// even when every entry it did reach arrived.
fn report_status(report: &SendReport) -> (c_int, String) {
    if let Some(f) = report.failures.first() {
        let why = report
            .error
            .clone()
            .unwrap_or_else(|| format!("{:?}", f.outcome));
        return (
            file_status(&f.outcome),
            format!("{}: {why}", f.path.display()),
        );
    }
    let complete = report.walk_finished && report.counts.not_sent() == 0;
    match &report.error {
        _ if complete && report.counts.total() > 0 => (RDMAFT_OK, String::new()),
        None if complete => (RDMAFT_OK, String::new()),
        Some(error) => (
            RDMAFT_EUNFINISHED,
            format!(
                "{error} (after {} of the entries found, before the rest were reached)",
                report.counts.sent
            ),
        ),
        None => (
            RDMAFT_EUNFINISHED,
            "the send ended before every entry was reached".into(),
        ),
    }
}

/// `host` and `port` as one socket address (names resolved; the first address is used).
fn resolve(host: &str, port: &str) -> Result<SocketAddr, String> {
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port {port:?} is not a number from 0 to 65535"))?;
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))
}

/// Starts a send; NULL (and the last error set) if the arguments are unusable.
///
/// # Safety
/// The strings are NULL or valid NUL-terminated strings for the duration of the call.
unsafe fn start(
    server_addr: *const c_char,
    port: *const c_char,
    filename: *const c_char,
    buffer_size: usize,
    on_file: Option<crate::FileCallback>,
) -> *mut SendContext {
    // SAFETY: the caller's promise, passed on.
    let args = unsafe {
        (
            str_arg(server_addr, "server address"),
            str_arg(port, "port"),
            str_arg(filename, "file name"),
        )
    };
    let (Some(host), Some(port), Some(path)) = args else {
        return std::ptr::null_mut();
    };
    let addr = match resolve(host, port) {
        Ok(a) => a,
        Err(e) => {
            fail(RDMAFT_EINVAL, e);
            return std::ptr::null_mut();
        }
    };
    let options = SendOptions {
        chunk_size: chunk_size(buffer_size),
        on_file,
        ..SendOptions::default()
    };
    match crate::send(addr, vec![path.into()], options) {
        Ok(handle) => Box::into_raw(Box::new(SendContext {
            handle: Mutex::new(Some(handle)),
            status: Mutex::new(None),
        })),
        Err(e) => {
            fail(status_of(&e), e);
            std::ptr::null_mut()
        }
    }
}

/// The original call: sends one file (or directory tree) to `server_addr:port` on a thread of
/// its own; `func` (may be NULL) gets the file's name once it was delivered and verified.
///
/// # Safety
/// The strings are NULL or valid NUL-terminated strings for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn rdmaft_start_send(
    server_addr: *mut c_char,
    port: *mut c_char,
    filename: *mut c_char,
    buffer_size: usize,
    func: Option<SendCallback>,
) -> *mut SendContext {
    guard(std::ptr::null_mut(), || {
        let on_file = func.map(|func| -> crate::FileCallback {
            Arc::new(move |f: &FileReport| {
                if f.outcome.is_ok() {
                    let name = c_name(&f.path.to_string_lossy());
                    func(name.as_ptr());
                }
            })
        });
        // SAFETY: the caller's promise, passed on.
        unsafe { start(server_addr, port, filename, buffer_size, on_file) }
    })
}

/// The variant: `func` (may be NULL) gets every file's name and status, and `user`.
///
/// # Safety
/// As [`rdmaft_start_send`]; `user` may be used from the library's threads.
#[no_mangle]
pub unsafe extern "C" fn rdmaft_start_send_ex(
    server_addr: *const c_char,
    port: *const c_char,
    path: *const c_char,
    buffer_size: usize,
    func: Option<SendStatusCallback>,
    user: *mut c_void,
) -> *mut SendContext {
    guard(std::ptr::null_mut(), || {
        let user = UserPtr(user);
        let on_file = func.map(|func| -> crate::FileCallback {
            Arc::new(move |f: &FileReport| {
                let name = c_name(&f.path.to_string_lossy());
                let user = user;
                func(name.as_ptr(), file_status(&f.outcome), user.0);
            })
        });
        // SAFETY: the caller's promise, passed on.
        unsafe { start(server_addr, port, path, buffer_size, on_file) }
    })
}

/// Waits for the send to end: `RDMAFT_OK` if every file arrived verified, else the first
/// failure's status (its text in `rdmaft_last_error`). May be called again (same answer);
/// not from the send's own callback (`RDMAFT_EINVAL`).
///
/// # Safety
/// `ctx` is NULL or a live context from `rdmaft_start_send*`.
#[no_mangle]
pub unsafe extern "C" fn rdmaft_send_wait(ctx: *mut SendContext) -> c_int {
    guard(super::RDMAFT_ESYSTEM, || {
        // SAFETY: the caller promises a live context (or NULL, refused by as_ref).
        let Some(ctx) = (unsafe { ctx.as_ref() }) else {
            return fail(RDMAFT_EINVAL, "context is NULL");
        };
        wait(ctx)
    })
}

fn wait(ctx: &SendContext) -> c_int {
    let mut status = crate::sync::lock_std(&ctx.status);
    if status.is_none() {
        let handle = {
            let mut slot = crate::sync::lock_std(&ctx.handle);
            if slot.as_ref().is_some_and(SendHandle::is_own_thread) {
                return fail(
                    RDMAFT_EINVAL,
                    "rdmaft_send_wait from the send's own callback",
                );
            }
            slot.take()
        };
        let Some(handle) = handle else {
            return fail(RDMAFT_EUNFINISHED, "the send was stopped");
        };
        *status = Some(match handle.wait() {
            Ok(report) => report_status(&report),
            Err(e) => (status_of(&e), e.to_string()),
        });
    }
    let (code, text) = status.clone().unwrap_or_default();
    if code == RDMAFT_OK {
        code
    } else {
        fail(code, text)
    }
}

/// The original call: stops the send (cancelling it if it still runs; call
/// `rdmaft_send_wait` first to let it finish), waits for its threads and frees the context.
/// NULL is ignored. May be called from the send's callback (it then does not wait).
///
/// # Safety
/// `client_context` is NULL or a live context from `rdmaft_start_send*`, not used again.
#[no_mangle]
pub unsafe extern "C" fn rdmaft_stop_send(client_context: *mut SendContext) {
    if client_context.is_null() {
        return;
    }
    guard((), || {
        // SAFETY: the caller hands back a box from rdmaft_start_send* and never uses it again.
        let ctx = unsafe { Box::from_raw(client_context) };
        let handle = crate::sync::lock_std(&ctx.handle).take();
        if let Some(handle) = handle {
            handle.cancel();
            // Dropping joins the send's threads (or, from its own callback, lets it end).
            drop(handle);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(outcomes: &[FileOutcome], error: Option<&str>, walk_finished: bool) -> SendReport {
        let mut r = SendReport {
            counts: crate::SendCounts::default(),
            failures: Vec::new(),
            walk_finished,
            bytes: 1,
            bytes_resumed: 0,
            elapsed: std::time::Duration::from_secs(1),
            negotiated: None,
            error: error.map(str::to_owned),
        };
        for o in outcomes {
            let n = match o {
                FileOutcome::Sent => &mut r.counts.sent,
                FileOutcome::Rejected(_) => &mut r.counts.rejected,
                FileOutcome::Failed(_) => &mut r.counts.failed,
                FileOutcome::Skipped(_) => &mut r.counts.skipped,
                FileOutcome::Unfinished => &mut r.counts.unfinished,
            };
            *n += 1;
            if !o.is_ok() {
                r.failures.push(FileReport {
                    path: "f".into(),
                    name: "f".into(),
                    kind: rdmaft_protocol::EntryKind::File,
                    size: 1,
                    outcome: o.clone(),
                });
            }
        }
        r
    }

    #[test]
    fn a_send_succeeds_when_every_file_arrived() {
        assert_eq!(
            report_status(&report(&[FileOutcome::Sent], None, true)).0,
            RDMAFT_OK
        );
        // The receiver stopped after the last verdict: the file is there, so success.
        let late = report(
            &[FileOutcome::Sent],
            Some("peer aborted: shutting down"),
            true,
        );
        assert_eq!(report_status(&late).0, RDMAFT_OK);
        let none = report(&[], Some("connection lost"), false);
        assert_eq!(report_status(&none).0, RDMAFT_EUNFINISHED);
        let mixed = report(
            &[FileOutcome::Sent, FileOutcome::Unfinished],
            Some("connection lost"),
            true,
        );
        assert_eq!(report_status(&mixed).0, RDMAFT_EUNFINISHED);
        let refused = report(
            &[FileOutcome::Rejected(
                rdmaft_protocol::FileRejectReason::EXISTS,
            )],
            None,
            true,
        );
        assert_eq!(report_status(&refused).0, RDMAFT_EREJECTED);
    }

    #[test]
    fn a_send_that_ended_before_the_walk_did_is_not_a_success() {
        // Every file reached arrived, then the session broke: the rest were never reached.
        let cut = report(
            &[FileOutcome::Sent, FileOutcome::Sent],
            Some("connection lost"),
            false,
        );
        let (status, text) = report_status(&cut);
        assert_eq!(status, RDMAFT_EUNFINISHED, "{text}");
        assert!(text.contains("connection lost"), "{text}");
        let quiet = report(&[FileOutcome::Sent], None, false);
        assert_eq!(report_status(&quiet).0, RDMAFT_EUNFINISHED);
    }

    #[test]
    fn addresses_resolve_or_explain() {
        assert_eq!(
            resolve("127.0.0.1", "15000").unwrap(),
            "127.0.0.1:15000".parse().unwrap()
        );
        assert!(resolve("127.0.0.1", "port")
            .unwrap_err()
            .contains("not a number"));
        assert!(resolve("127.0.0.1", "70000").is_err());
    }

    #[test]
    fn null_arguments_are_refused_with_a_reason() {
        extern "C" fn cb(_: *const c_char) {}
        // SAFETY: NULL strings are allowed; the others are valid C strings.
        let ctx = unsafe {
            rdmaft_start_send(
                std::ptr::null_mut(),
                c"15000".as_ptr().cast_mut(),
                c"f".as_ptr().cast_mut(),
                0,
                Some(cb),
            )
        };
        assert!(ctx.is_null());
        // SAFETY: rdmaft_last_error returns a valid C string.
        let text = unsafe { std::ffi::CStr::from_ptr(super::super::rdmaft_last_error()) };
        assert_eq!(text.to_str().unwrap(), "server address is NULL");
        // SAFETY: NULL is allowed.
        unsafe {
            rdmaft_stop_send(std::ptr::null_mut());
            assert_eq!(rdmaft_send_wait(std::ptr::null_mut()), RDMAFT_EINVAL);
        }
    }
}
