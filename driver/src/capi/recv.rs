//! `rdmaft_start_recv` / `rdmaft_stop_recv` / `rdmaft_reset_recv_buffer_size` and the
//! callback variant with a status.
//!
//! A context is a token in [`RECEIVERS`] (see `handle.rs` for the design and the rules of
//! stop from any thread).

use super::handle::{Canceller, Gate, Job, Registry, SharedGate, Token, RECV_TOKENS};
use super::{c_name, callback, chunk_size, fail, guard, status_of, str_arg, UserPtr};
use super::{RDMAFT_EFAILED, RDMAFT_EREJECTED, RDMAFT_EUNFINISHED};
use super::{RDMAFT_EINVAL, RDMAFT_ESYSTEM, RDMAFT_OK};
use crate::{ReceivedFile, ReceivedOutcome, Receiver, ReceiverOptions};
use std::ffi::{c_char, c_int, c_void};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, LazyLock, Mutex};

/// The original callback: the name of each file received and verified.
pub type RecvCallback = extern "C" fn(filename: *const c_char);
/// The variant: every entry, with its status and the caller's pointer.
pub type RecvStatusCallback =
    extern "C" fn(filename: *const c_char, status: c_int, user: *mut c_void);

/// The header's opaque `struct rdmaft_recv_server_context`. Never allocated: a pointer to it
/// is a token of [`RECEIVERS`], which C hands back and nobody dereferences.
#[repr(C)]
#[derive(Debug)]
pub struct RecvContext {
    _opaque: [u8; 0],
}

/// Every receiver started through the C API and not stopped yet; also what
/// `rdmaft_reset_recv_buffer_size` walks.
static RECEIVERS: LazyLock<Registry<RecvJob>> = LazyLock::new(|| Registry::new(RECV_TOKENS));
/// The size set by `rdmaft_reset_recv_buffer_size`: the default for receivers started later
/// with a `buffer_size` of 0.
static RESET_SIZE: Mutex<Option<u32>> = Mutex::new(None);

/// The chunk size of a receiver started with `buffer_size`: 0 takes the last reset's, if any.
fn start_chunk_size(buffer_size: usize) -> u32 {
    match (buffer_size, *crate::sync::lock_std(&RESET_SIZE)) {
        (0, Some(reset)) => reset,
        (size, _) => chunk_size(size),
    }
}

/// A receiver as a context's job. Nothing waits for a receiver but its stop, so it needs no
/// cancel apart from [`Receiver::stop`] (which raises its stop flag before it joins).
struct RecvJob(Receiver);

impl Job for RecvJob {
    type Outcome = ();

    fn canceller(&self) -> Canceller {
        Box::new(|| ())
    }

    fn join(self, _from_callback: bool) -> Option<()> {
        // Joins every thread of the receiver but the caller's own (from a callback: a
        // connection thread, which ends once the callback returns).
        self.0.stop();
        Some(())
    }
}

/// The callback a C receiver gets, from what its start call was given.
type MakeCallback = Box<dyn FnOnce(Token, SharedGate) -> crate::ReceiveCallback>;

/// An entry's status for C.
fn entry_status(outcome: &ReceivedOutcome) -> c_int {
    match outcome {
        // Nothing went wrong: received, in sync already, or only listed by a dry run.
        ReceivedOutcome::Received
        | ReceivedOutcome::InSync(_)
        | ReceivedOutcome::WouldReceive(_) => RDMAFT_OK,
        ReceivedOutcome::Rejected(_) => RDMAFT_EREJECTED,
        ReceivedOutcome::Failed(_) => RDMAFT_EFAILED,
        ReceivedOutcome::Unfinished => RDMAFT_EUNFINISHED,
    }
}

/// Starts a receiver; NULL (and the last error set) if it cannot.
///
/// # Safety
/// The strings are NULL (`addr` only) or valid NUL-terminated strings for the call.
unsafe fn start(
    addr: *const c_char,
    port: *const c_char,
    recv_dir: *const c_char,
    buffer_size: usize,
    on_file: Option<MakeCallback>,
) -> *mut RecvContext {
    let ip = if addr.is_null() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        // SAFETY: the caller's promise, passed on.
        let Some(text) = (unsafe { str_arg(addr, "listen address") }) else {
            return std::ptr::null_mut();
        };
        match text.parse() {
            Ok(ip) => ip,
            Err(_) => {
                fail(RDMAFT_EINVAL, format!("{text:?} is not an IP address"));
                return std::ptr::null_mut();
            }
        }
    };
    // SAFETY: the caller's promise, passed on.
    let args = unsafe { (str_arg(port, "port"), str_arg(recv_dir, "directory")) };
    let (Some(port), Some(dir)) = args else {
        return std::ptr::null_mut();
    };
    let Ok(port) = port.parse::<u16>() else {
        fail(
            RDMAFT_EINVAL,
            format!("port {port:?} is not a number from 0 to 65535"),
        );
        return std::ptr::null_mut();
    };
    let mut options = ReceiverOptions::new(SocketAddr::new(ip, port), dir.into());
    options.chunk_size = start_chunk_size(buffer_size);
    let Some(token) = RECEIVERS.mint() else {
        fail(RDMAFT_ESYSTEM, "no receive context tokens left");
        return std::ptr::null_mut();
    };
    let gate = Gate::new();
    options.on_file = on_file.map(|make| make(token, SharedGate::clone(&gate)));
    match Receiver::start(options) {
        Ok(r) => {
            RECEIVERS.insert(token, RecvJob(r), gate);
            token.to_ptr()
        }
        Err(e) => {
            fail(status_of(&e), e);
            std::ptr::null_mut()
        }
    }
}

/// The original call: listens on `port` (all addresses) and writes into `recv_dir`, serving
/// senders on threads of its own; `func` (may be NULL) gets each file's name (relative to
/// `recv_dir`) once it arrived verified.
///
/// # Safety
/// The strings are NULL or valid NUL-terminated strings for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn rdmaft_start_recv(
    port: *mut c_char,
    recv_dir: *mut c_char,
    buffer_size: usize,
    func: Option<RecvCallback>,
) -> *mut RecvContext {
    guard(std::ptr::null_mut(), || {
        let on_file = func.map(|func| -> MakeCallback {
            Box::new(move |token, gate| {
                Arc::new(move |f: &ReceivedFile| {
                    if f.is_ok() {
                        let name = c_name(&f.name);
                        callback::run(token, &gate, || func(name.as_ptr()));
                    }
                })
            })
        });
        // SAFETY: the caller's promise, passed on.
        unsafe { start(std::ptr::null(), port, recv_dir, buffer_size, on_file) }
    })
}

/// The variant: listens on `addr` (NULL: all addresses); `func` (may be NULL) gets every
/// entry's name and status, and `user`.
///
/// # Safety
/// As [`rdmaft_start_recv`]; `user` may be used from the library's threads.
#[no_mangle]
pub unsafe extern "C" fn rdmaft_start_recv_ex(
    addr: *const c_char,
    port: *const c_char,
    recv_dir: *const c_char,
    buffer_size: usize,
    func: Option<RecvStatusCallback>,
    user: *mut c_void,
) -> *mut RecvContext {
    guard(std::ptr::null_mut(), || {
        let user = UserPtr(user);
        let on_file = func.map(|func| -> MakeCallback {
            Box::new(move |token, gate| {
                Arc::new(move |f: &ReceivedFile| {
                    let name = c_name(&f.name);
                    let user = user;
                    let status = entry_status(&f.outcome);
                    callback::run(token, &gate, || func(name.as_ptr(), status, user.0));
                })
            })
        });
        // SAFETY: the caller's promise, passed on.
        unsafe { start(addr, port, recv_dir, buffer_size, on_file) }
    })
}

/// The original call: stops the receiver (running transfers end, their unfinished files are
/// removed), joins its threads and frees the context.
///
/// - From a receive callback: stops and joins every other thread of the receiver; the
///   calling connection thread ends once the callback returns.
/// - Twice, or at once from two threads (two callbacks included): the second does nothing
///   (it waits for the first to finish, unless it runs in a callback of this receiver, which
///   the first may be joining). NULL is ignored too.
/// - No callback of this receiver starts after the stop was called.
///
/// Any pointer value is safe to pass: it is looked up, never dereferenced.
#[no_mangle]
pub extern "C" fn rdmaft_stop_recv(context: *mut RecvContext) {
    guard((), || {
        if let Some(token) = Token::from_ptr(context) {
            RECEIVERS.stop(token, callback::inside(token));
        }
    })
}

/// The original call: the buffer size for connections accepted from now on by every running
/// receiver, and for receivers started later with a `buffer_size` of 0 (0: the default).
#[no_mangle]
pub extern "C" fn rdmaft_reset_recv_buffer_size(buffer_size: usize) {
    guard((), || {
        let size = chunk_size(buffer_size);
        *crate::sync::lock_std(&RESET_SIZE) = Some(size);
        RECEIVERS.for_each_running(|r| {
            // chunk_size() only gives sizes the receiver accepts.
            if let Err(e) = r.0.set_buffer_size(size) {
                fail(status_of(&e), e);
            }
        });
    })
}

/// The buffer size a receiver offers new connections now; 0 for NULL or a stopped receiver.
///
/// Any pointer value is safe to pass: it is looked up, never dereferenced.
#[no_mangle]
pub extern "C" fn rdmaft_recv_buffer_size(context: *const RecvContext) -> usize {
    guard(0, || {
        Token::from_ptr(context)
            .and_then(|token| RECEIVERS.with_running(token, |r| r.0.buffer_size() as usize))
            .unwrap_or(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reset's size is the one receivers started later with 0 take; a size given
    /// still wins.
    #[test]
    fn a_reset_size_is_taken_by_receivers_started_later_with_0() {
        let before = start_chunk_size(0);
        rdmaft_reset_recv_buffer_size(65536);
        assert_eq!(start_chunk_size(0), 65536);
        assert_eq!(start_chunk_size(8192), chunk_size(8192));
        *crate::sync::lock_std(&RESET_SIZE) = None;
        assert_eq!(start_chunk_size(0), before);
    }

    #[test]
    fn bad_arguments_give_null_and_a_reason() {
        // SAFETY: valid C strings.
        let ctx = unsafe {
            rdmaft_start_recv(
                c"port".as_ptr().cast_mut(),
                c"/".as_ptr().cast_mut(),
                0,
                None,
            )
        };
        assert!(ctx.is_null());
        // SAFETY: rdmaft_last_error returns a valid C string.
        let text = unsafe { std::ffi::CStr::from_ptr(super::super::rdmaft_last_error()) };
        assert!(text.to_str().unwrap().contains("not a number"));
        // SAFETY: valid C strings.
        let ctx = unsafe {
            rdmaft_start_recv_ex(
                c"not-an-ip".as_ptr(),
                c"15000".as_ptr(),
                c"/".as_ptr(),
                0,
                None,
                std::ptr::null_mut(),
            )
        };
        assert!(ctx.is_null());
        rdmaft_stop_recv(std::ptr::null_mut());
    }

    #[test]
    fn each_entry_outcome_has_its_status() {
        use rdmaft_protocol::{Changes, FileRejectReason, FileStatus};
        for (outcome, status) in [
            (ReceivedOutcome::Received, RDMAFT_OK),
            (ReceivedOutcome::InSync(Changes::empty()), RDMAFT_OK),
            (ReceivedOutcome::WouldReceive(Changes::NEW), RDMAFT_OK),
            (
                ReceivedOutcome::Rejected(FileRejectReason::EXISTS),
                RDMAFT_EREJECTED,
            ),
            (ReceivedOutcome::Failed(FileStatus::IO), RDMAFT_EFAILED),
            (ReceivedOutcome::Unfinished, RDMAFT_EUNFINISHED),
        ] {
            assert_eq!(entry_status(&outcome), status, "{outcome:?}");
        }
    }
}
