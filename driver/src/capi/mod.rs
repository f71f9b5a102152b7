//! The C ABI: a drop-in for the original `librdmaft` (headers in `driver/include/`), built as
//! `librdmaft.so` / `librdmaft.a` with the `capi` feature (`make capi`).
//!
//! The original's seven calls keep their names, types and argument order; what the original
//! did with `exit()` becomes a NULL return or a status. Additions a C user needs: a blocking
//! wait with a status, the text of the last failure, and callback variants that also receive a
//! status and a user pointer.
//!
//! Every entry point catches panics (none should happen; a panic would otherwise abort the
//! host process at the boundary) and turns them into a status. Callbacks run on the library's
//! threads, as in the original.
//!
//! Contexts are tokens, not boxes (`handle.rs`): stop, wait and stop again are defined from
//! any thread, callbacks included, and no pointer C hands back is ever dereferenced.
//!
//! This module holds the crate's only `unsafe` outside the verbs layer: reading C strings and
//! passing the caller's pointer to its callbacks. Each block states what the C caller
//! promises.

mod callback;
mod handle;
mod recv;
mod send;

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Success.
pub const RDMAFT_OK: c_int = 0;
/// An argument is invalid (NULL, not UTF-8, a bad address or port).
pub const RDMAFT_EINVAL: c_int = 1;
/// Could not reach the peer or agree with it (no route, refused, handshake failed, wrong key).
pub const RDMAFT_ECONNECT: c_int = 2;
/// A local file or directory could not be used.
pub const RDMAFT_EFILE: c_int = 3;
/// The receiver refused the file (it exists and must be kept, no space, bad name, ...).
pub const RDMAFT_EREJECTED: c_int = 4;
/// The file moved but failed its check or was aborted (digest mismatch, I/O error).
pub const RDMAFT_EFAILED: c_int = 5;
/// The transfer ended before the file did (cancelled, stopped, connection lost).
pub const RDMAFT_EUNFINISHED: c_int = 6;
/// The RDMA device, memory registration or the system failed.
pub const RDMAFT_ESYSTEM: c_int = 7;

/// The caller's pointer for the status callbacks (both directions).
#[derive(Clone, Copy)]
struct UserPtr(*mut c_void);
// SAFETY: the pointer is only passed back to the caller's callback; the C API documents
// that callbacks run on library threads, so the caller promises the pointer may be used there.
unsafe impl Send for UserPtr {}
// SAFETY: as above; the library never dereferences it.
unsafe impl Sync for UserPtr {}

thread_local! {
    /// The text of this thread's last failure (`rdmaft_last_error`).
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `text` as this thread's last failure and returns `status`.
fn fail(status: c_int, text: impl std::fmt::Display) -> c_int {
    let text = text.to_string().replace('\0', "\\0");
    LAST_ERROR.with(|e| *e.borrow_mut() = CString::new(text).unwrap_or_default());
    status
}

/// The status for a library error.
fn status_of(e: &crate::Error) -> c_int {
    use crate::Error as E;
    match e {
        E::InvalidArgument { .. } | E::Check(_) => RDMAFT_EINVAL,
        E::Timeout { .. }
        | E::HandshakeRejected { .. }
        | E::RequestRejected { .. }
        | E::Handshake(_)
        | E::ConnectFailed { .. }
        | E::UnexpectedCmEvent { .. } => RDMAFT_ECONNECT,
        E::File { .. } => RDMAFT_EFILE,
        E::ConnectionLost { .. } | E::Cancelled => RDMAFT_EUNFINISHED,
        _ => RDMAFT_ESYSTEM,
    }
}

/// Runs an entry point's body, turning a panic into `on_panic` (and a last-error text).
fn guard<T>(on_panic: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| {
        fail(RDMAFT_ESYSTEM, "internal error (a panic in librdmaft)");
        on_panic
    })
}

/// A C string argument as `&str`; `None` (and the last error set) for NULL or non-UTF-8.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid and unchanged for `'a`.
unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Option<&'a str> {
    if p.is_null() {
        fail(RDMAFT_EINVAL, format!("{what} is NULL"));
        return None;
    }
    // SAFETY: non-NULL, and the caller promises a valid NUL-terminated string for 'a.
    let s = unsafe { CStr::from_ptr(p) };
    match s.to_str() {
        Ok(s) => Some(s),
        Err(_) => {
            fail(RDMAFT_EINVAL, format!("{what} is not UTF-8"));
            None
        }
    }
}

/// The chunk size for a C `buffer_size`: 0 means the default; others are clamped to what the
/// protocol allows (4 KiB up to 1 GiB) and rounded down to a power of two by the handshake,
/// so that no size breaks a transfer.
fn chunk_size(buffer_size: usize) -> u32 {
    if buffer_size == 0 {
        return crate::DEFAULT_CHUNK_SIZE;
    }
    let max = rdmaft_protocol::MAX_CHUNK_SIZE as usize;
    let min = rdmaft_protocol::MIN_CHUNK_SIZE as usize;
    // Fits: clamped to MAX_CHUNK_SIZE, a u32.
    buffer_size.clamp(min, max) as u32
}

/// A name for C: interior NULs (impossible in protocol names) are replaced.
fn c_name(name: &str) -> CString {
    CString::new(name.replace('\0', "?")).unwrap_or_default()
}

/// The text of the last failure on the calling thread ("" if none); valid until the next
/// librdmaft call on this thread.
#[no_mangle]
pub extern "C" fn rdmaft_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// A short description of a status code (a static string).
#[no_mangle]
pub extern "C" fn rdmaft_strerror(status: c_int) -> *const c_char {
    let s: &'static CStr = match status {
        RDMAFT_OK => c"success",
        RDMAFT_EINVAL => c"invalid argument",
        RDMAFT_ECONNECT => c"could not connect to or agree with the peer",
        RDMAFT_EFILE => c"local file or directory error",
        RDMAFT_EREJECTED => c"the receiver refused the file",
        RDMAFT_EFAILED => c"the file failed verification or was aborted",
        RDMAFT_EUNFINISHED => c"the transfer ended before the file did",
        RDMAFT_ESYSTEM => c"RDMA device or system failure",
        _ => c"unknown status",
    };
    s.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_sizes_map_to_legal_chunks() {
        assert_eq!(chunk_size(0), crate::DEFAULT_CHUNK_SIZE);
        assert_eq!(chunk_size(1), 4096);
        assert_eq!(chunk_size(100_000), 100_000);
        assert_eq!(chunk_size(usize::MAX), 1 << 30);
    }

    #[test]
    fn last_error_is_per_thread_text() {
        assert_eq!(fail(RDMAFT_EFILE, "no such directory"), RDMAFT_EFILE);
        // SAFETY: rdmaft_last_error returns a valid NUL-terminated string.
        let text = unsafe { CStr::from_ptr(rdmaft_last_error()) };
        assert_eq!(text.to_str().unwrap(), "no such directory");
        std::thread::spawn(|| {
            // SAFETY: as above.
            let other = unsafe { CStr::from_ptr(rdmaft_last_error()) };
            assert_eq!(other.to_bytes(), b"");
        })
        .join()
        .unwrap();
    }

    /// Each kind of library error reaches C as the status its documentation promises.
    #[test]
    fn library_errors_map_to_their_statuses() {
        use crate::Error as E;
        let timeout = E::Timeout {
            what: "the accept".into(),
            after: std::time::Duration::from_secs(1),
        };
        let lost = E::ConnectionLost {
            peer: "10.0.0.1".into(),
            detail: "gone".into(),
        };
        let file = E::file(
            "source file",
            std::path::Path::new("/x"),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        for (e, status) in [
            (E::invalid("rdmaft_start_send", "bad"), RDMAFT_EINVAL),
            (E::Check("window".into()), RDMAFT_EINVAL),
            (timeout, RDMAFT_ECONNECT),
            (file, RDMAFT_EFILE),
            (lost, RDMAFT_EUNFINISHED),
            (E::Cancelled, RDMAFT_EUNFINISHED),
            (E::NoDevices, RDMAFT_ESYSTEM),
        ] {
            assert_eq!(status_of(&e), status, "{e}");
        }
    }

    #[test]
    fn names_reach_c_whole_with_interior_nuls_replaced() {
        assert_eq!(c_name("dir/file").to_bytes(), b"dir/file");
        assert_eq!(c_name("a\0b").to_bytes(), b"a?b");
    }

    #[test]
    fn every_status_has_a_text() {
        for s in RDMAFT_OK..=RDMAFT_ESYSTEM {
            // SAFETY: rdmaft_strerror returns a static NUL-terminated string.
            let t = unsafe { CStr::from_ptr(rdmaft_strerror(s)) };
            assert_ne!(t.to_bytes(), b"unknown status", "status {s}");
        }
    }
}
