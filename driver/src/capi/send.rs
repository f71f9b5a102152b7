//! `rdmaft_start_send` / `rdmaft_stop_send` and the additions: a blocking wait with a status
//! and a callback variant with a status.
//!
//! A context is a token in [`SENDS`] (see `handle.rs` for the design and the rules of stop
//! and wait from any thread).

use super::handle::{Canceller, Gate, Job, Registry, SharedGate, Token, Waited, SEND_TOKENS};
use super::{c_name, callback, chunk_size, fail, guard, status_of, str_arg, UserPtr};
use super::{RDMAFT_EFAILED, RDMAFT_EFILE, RDMAFT_EREJECTED, RDMAFT_EUNFINISHED};
use super::{RDMAFT_EINVAL, RDMAFT_ESYSTEM, RDMAFT_OK};
use crate::{FileOutcome, FileReport, SendHandle, SendOptions, SendReport};
use std::ffi::{c_char, c_int, c_void};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, LazyLock};

/// The original callback: the file name, once the file was delivered and verified.
pub type SendCallback = extern "C" fn(filename: *const c_char);
/// The variant: every file, with its status and the caller's pointer.
pub type SendStatusCallback =
    extern "C" fn(filename: *const c_char, status: c_int, user: *mut c_void);

/// The header's opaque `struct rdmaft_send_client_context`. Never allocated: a pointer to it
/// is a token of [`SENDS`], which C hands back and nobody dereferences.
#[repr(C)]
#[derive(Debug)]
pub struct SendContext {
    _opaque: [u8; 0],
}

/// Every send started through the C API and not yet stopped (and ended).
static SENDS: LazyLock<Registry<SendJob>> = LazyLock::new(|| Registry::new(SEND_TOKENS));

/// A send as a context's job; its outcome is the status `rdmaft_send_wait` returns.
struct SendJob(SendHandle);

impl Job for SendJob {
    type Outcome = (c_int, String);

    fn canceller(&self) -> Canceller {
        let c = self.0.canceller();
        Box::new(move || c.cancel())
    }

    fn join(self, from_callback: bool) -> Option<Self::Outcome> {
        if from_callback || self.0.is_own_thread() {
            // The caller is the send's own thread: dropping the handle there does not wait,
            // the (cancelled) send ends once the callback returns.
            drop(self.0);
            return None;
        }
        Some(match self.0.wait() {
            Ok(report) => report_status(&report),
            Err(e) => (status_of(&e), e.to_string()),
        })
    }
}

/// A file's status for C.
fn file_status(outcome: &FileOutcome) -> c_int {
    match outcome {
        // Nothing went wrong: delivered, ignored by policy, in sync, or listed by a dry run.
        FileOutcome::Sent
        | FileOutcome::Ignored(_)
        | FileOutcome::InSync(_)
        | FileOutcome::WouldSend(_) => RDMAFT_OK,
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

/// The callback a C send gets, from what its start call was given.
type MakeCallback = Box<dyn FnOnce(Token, SharedGate) -> crate::FileCallback>;

/// Starts a send; NULL (and the last error set) if the arguments are unusable.
///
/// # Safety
/// The strings are NULL or valid NUL-terminated strings for the duration of the call.
unsafe fn start(
    server_addr: *const c_char,
    port: *const c_char,
    filename: *const c_char,
    options: SendOptions,
    on_file: Option<MakeCallback>,
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
    let Some(token) = SENDS.mint() else {
        fail(RDMAFT_ESYSTEM, "no send context tokens left");
        return std::ptr::null_mut();
    };
    let gate = Gate::new();
    let options = SendOptions {
        on_file: on_file.map(|make| make(token, SharedGate::clone(&gate))),
        ..options
    };
    match crate::send(addr, vec![path.into()], options) {
        Ok(handle) => {
            SENDS.insert(token, SendJob(handle), gate);
            token.to_ptr()
        }
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
        let on_file = func.map(|func| -> MakeCallback {
            Box::new(move |token, gate| {
                Arc::new(move |f: &FileReport| {
                    if f.outcome.is_ok() {
                        let name = c_name(&f.path.to_string_lossy());
                        callback::run(token, &gate, || func(name.as_ptr()));
                    }
                })
            })
        });
        let options = SendOptions {
            chunk_size: chunk_size(buffer_size),
            ..SendOptions::default()
        };
        // SAFETY: the caller's promise, passed on.
        unsafe { start(server_addr, port, filename, options, on_file) }
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
        let options = SendOptions {
            chunk_size: chunk_size(buffer_size),
            ..SendOptions::default()
        };
        // SAFETY: the caller's promise, passed on.
        unsafe {
            start(
                server_addr,
                port,
                path,
                options,
                status_callback(func, user),
            )
        }
    })
}

/// The status callback of the `_ex` and `_opts` calls.
fn status_callback(func: Option<SendStatusCallback>, user: *mut c_void) -> Option<MakeCallback> {
    let user = UserPtr(user);
    func.map(|func| -> MakeCallback {
        Box::new(move |token, gate| {
            Arc::new(move |f: &FileReport| {
                let name = c_name(&f.path.to_string_lossy());
                let user = user;
                let status = file_status(&f.outcome);
                callback::run(token, &gate, || func(name.as_ptr(), status, user.0));
            })
        })
    })
}

/// The header's `struct rdmaft_send_options`: settings beyond the original call's, in a
/// struct whose first field is its size, so that fields can be added without breaking
/// programs built against an older header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SendOptionsC {
    /// `sizeof(struct rdmaft_send_options)` as the caller was built.
    pub struct_size: usize,
    /// Chunk size to propose (0: 1 MiB).
    pub buffer_size: usize,
    /// Connections (lanes) for the transfer (0: one per four cores, at most 8).
    pub lanes: std::ffi::c_uint,
    /// Zero.
    pub reserved: std::ffi::c_uint,
    /// Size of the parts large files are split into over lanes (0: 64 MiB).
    pub part_size: u64,
    /// With `shard_count` > 0: send only shard `shard_index` of `shard_count` (see
    /// [`crate::Shard`]); 0: everything.
    pub shard_index: std::ffi::c_uint,
    /// The number of shards (0: no sharding).
    pub shard_count: std::ffi::c_uint,
    /// `RDMAFT_SYNC*` flags (0: send everything).
    pub sync: std::ffi::c_uint,
    /// `RDMAFT_SEND_*` flags (0: none).
    pub flags: std::ffi::c_uint,
}

/// `rdmaft_send_options.sync` bits (the header's `RDMAFT_SYNC*`).
const SYNC: u32 = 0x1;
const SYNC_CHECKSUM: u32 = 0x2;
const SYNC_DRY_RUN: u32 = 0x4;
const SYNC_DELETE: u32 = 0x8;

/// `rdmaft_send_options.flags` bits (the header's `RDMAFT_SEND_*`): links as links.
const SEND_LINKS: u32 = 0x1;

/// Most lanes a C caller may ask for.
const MAX_C_LANES: u32 = 64;

/// The options a C caller gave: fields the caller's struct does not have (an older header)
/// are 0, fields this library does not know (a newer header) are ignored.
///
/// # Safety
/// `options` is NULL or points to at least `options->struct_size` readable bytes.
unsafe fn read_options(options: *const SendOptionsC) -> Result<SendOptions, String> {
    let mut c = SendOptionsC::default();
    if !options.is_null() {
        // SAFETY: the caller's promise: `struct_size` (the first field, which every version
        // has) is readable, then that many bytes.
        let size = unsafe { std::ptr::read_unaligned(options.cast::<usize>()) };
        let n = size.min(std::mem::size_of::<SendOptionsC>());
        if n < std::mem::size_of::<usize>() {
            return Err(format!("options struct_size {size} is too small"));
        }
        // SAFETY: `n` bytes are readable at `options` (above) and fit `c`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                options.cast::<u8>(),
                std::ptr::addr_of_mut!(c).cast::<u8>(),
                n,
            )
        };
    }
    if c.lanes > MAX_C_LANES {
        return Err(format!("lanes {} is above {MAX_C_LANES}", c.lanes));
    }
    if c.part_size != 0 && c.part_size < 4096 {
        return Err(format!("part size {} is below 4096", c.part_size));
    }
    let shard = match c.shard_count {
        0 => None,
        n => Some(crate::Shard::new(c.shard_index, n).map_err(|e| e.to_string())?),
    };
    let known = SYNC | SYNC_CHECKSUM | SYNC_DRY_RUN | SYNC_DELETE;
    if c.sync & !known != 0 {
        return Err(format!("unknown sync flags {:#x}", c.sync & !known));
    }
    let sync = (c.sync != 0).then_some(crate::SyncOptions {
        checksum: c.sync & SYNC_CHECKSUM != 0,
        dry_run: c.sync & SYNC_DRY_RUN != 0,
        delete: c.sync & SYNC_DELETE != 0,
    });
    if c.flags & !SEND_LINKS != 0 {
        return Err(format!("unknown flags {:#x}", c.flags & !SEND_LINKS));
    }
    let defaults = SendOptions::default();
    Ok(SendOptions {
        shard,
        sync,
        links: c.flags & SEND_LINKS != 0,
        chunk_size: chunk_size(c.buffer_size),
        lanes: c.lanes as u16,
        part_size: if c.part_size == 0 {
            defaults.part_size
        } else {
            c.part_size
        },
        ..defaults
    })
}

/// As `rdmaft_start_send_ex`, with `options` (NULL: the defaults) instead of the buffer size:
/// lanes and part size.
///
/// # Safety
/// As [`rdmaft_start_send`]; `options` is NULL or points to a `struct rdmaft_send_options`
/// whose `struct_size` bytes are readable; `user` may be used from the library's threads.
#[no_mangle]
pub unsafe extern "C" fn rdmaft_start_send_opts(
    server_addr: *const c_char,
    port: *const c_char,
    path: *const c_char,
    options: *const SendOptionsC,
    func: Option<SendStatusCallback>,
    user: *mut c_void,
) -> *mut SendContext {
    guard(std::ptr::null_mut(), || {
        // SAFETY: the caller's promise, passed on.
        let options = match unsafe { read_options(options) } {
            Ok(o) => o,
            Err(e) => {
                fail(RDMAFT_EINVAL, e);
                return std::ptr::null_mut();
            }
        };
        // SAFETY: the caller's promise, passed on.
        unsafe {
            start(
                server_addr,
                port,
                path,
                options,
                status_callback(func, user),
            )
        }
    })
}

/// Waits for the send to end: `RDMAFT_OK` if every file arrived verified, else the first
/// failure's status (its text in `rdmaft_last_error`). May be called again, and from several
/// threads at once (the same answer). If the send is stopped meanwhile (`rdmaft_stop_send`
/// from another thread), the stop cancels it and this returns its status then
/// (`RDMAFT_EUNFINISHED` unless every file had already arrived). `RDMAFT_EINVAL` for NULL, a
/// context already stopped (a wait after stop), and from the send's own callback.
///
/// Any pointer value is safe to pass: it is looked up, never dereferenced.
#[no_mangle]
pub extern "C" fn rdmaft_send_wait(ctx: *mut SendContext) -> c_int {
    guard(RDMAFT_ESYSTEM, || {
        let Some(token) = Token::from_ptr(ctx) else {
            return fail(RDMAFT_EINVAL, "context is NULL");
        };
        match SENDS.wait(token, callback::inside(token)) {
            Waited::Ended((RDMAFT_OK, _)) => RDMAFT_OK,
            Waited::Ended((code, text)) => fail(code, text),
            Waited::Released => fail(
                RDMAFT_EUNFINISHED,
                "the send was stopped from its own callback before it ended",
            ),
            Waited::OwnCallback => fail(
                RDMAFT_EINVAL,
                "rdmaft_send_wait from the send's own callback",
            ),
            Waited::Unknown => fail(
                RDMAFT_EINVAL,
                "no such send context (it was stopped, or never started)",
            ),
        }
    })
}

/// The original call: stops the send (cancelling it if it still runs; call
/// `rdmaft_send_wait` first to let it finish), waits for its threads and frees the context.
///
/// - During a wait on another thread: cancels the send; the waiter returns its status.
/// - From the send's own callback: cancels and returns at once; the send's thread ends after
///   the callback returns.
/// - Twice (or at once from two threads): the second does nothing (it waits for the first
///   to finish, unless it runs in the send's own callback). NULL is ignored too.
/// - No callback of this send starts after the stop was called.
///
/// Any pointer value is safe to pass: it is looked up, never dereferenced.
#[no_mangle]
pub extern "C" fn rdmaft_stop_send(client_context: *mut SendContext) {
    guard((), || {
        if let Some(token) = Token::from_ptr(client_context) {
            SENDS.stop(token, callback::inside(token));
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
            lanes: 1,
            devices: Vec::new(),
            warnings: Vec::new(),
            direct_files: 0,
        };
        for o in outcomes {
            r.counts.count(o);
            if !o.is_ok() {
                r.failures.push(FileReport {
                    path: "f".into(),
                    name: "f".into(),
                    kind: rdmaft_protocol::EntryKind::File,
                    size: 1,
                    outcome: o.clone(),
                    changes: rdmaft_protocol::Changes::empty(),
                    deleted: 0,
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

    /// A send with no entries to send succeeds unless its session failed.
    #[test]
    fn an_empty_send_succeeds_only_without_an_error() {
        assert_eq!(report_status(&report(&[], None, true)).0, RDMAFT_OK);
        let failed = report(&[], Some("peer aborted: shutting down"), true);
        assert_eq!(report_status(&failed).0, RDMAFT_EUNFINISHED);
    }

    /// A wait joins the send and gives its status; one from the send's own callback does
    /// not wait (the send could not end while its callback waits for it).
    #[test]
    fn a_send_job_is_waited_for_except_from_its_own_callback() {
        let job = |error: Option<&'static str>| {
            SendJob(
                SendHandle::spawn(move |_, _| Ok(report(&[FileOutcome::Sent], error, true)))
                    .unwrap(),
            )
        };
        assert_eq!(job(None).join(false), Some((RDMAFT_OK, String::new())));
        let cut = report(&[FileOutcome::Sent], Some("connection lost"), false);
        let failed = SendJob(SendHandle::spawn(move |_, _| Ok(cut)).unwrap());
        assert_eq!(failed.join(false).map(|(s, _)| s), Some(RDMAFT_EUNFINISHED));
        assert_eq!(job(None).join(true), None, "from a callback");
    }

    /// The `_ex` callback hears each file's name, its status and the caller's pointer.
    #[test]
    fn the_status_callback_hears_each_file_with_its_status_and_pointer() {
        static HEARD: std::sync::Mutex<Vec<(String, c_int, usize)>> =
            std::sync::Mutex::new(Vec::new());
        extern "C" fn cb(name: *const c_char, status: c_int, user: *mut c_void) {
            // SAFETY: the callback gets a valid NUL-terminated name for the call.
            let name = unsafe { std::ffi::CStr::from_ptr(name) };
            let name = name.to_string_lossy().into_owned();
            HEARD.lock().unwrap().push((name, status, user as usize));
        }
        assert!(status_callback(None, std::ptr::null_mut()).is_none());
        let make = status_callback(Some(cb), 42usize as *mut c_void).expect("a callback");
        let token = Registry::<SendJob>::new(SEND_TOKENS).mint().unwrap();
        let on_file = make(token, crate::capi::handle::Gate::new());
        let mut failed = report(
            &[FileOutcome::Failed(rdmaft_protocol::FileStatus::IO)],
            None,
            true,
        );
        let mut file = failed.failures.remove(0);
        file.path = "dir/f".into();
        on_file(&file);
        let heard = HEARD.lock().unwrap().clone();
        assert_eq!(heard, [("dir/f".to_owned(), RDMAFT_EFAILED, 42)]);
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
        rdmaft_stop_send(std::ptr::null_mut());
        assert_eq!(rdmaft_send_wait(std::ptr::null_mut()), RDMAFT_EINVAL);
    }

    #[test]
    fn a_stopped_context_is_gone_and_stopping_it_again_does_nothing() {
        // No RDMA device on a build host, nor a receiver on port 1 where there is one: the
        // send starts (its thread connects) and fails.
        // SAFETY: valid C strings.
        let ctx = unsafe {
            rdmaft_start_send(
                c"127.0.0.1".as_ptr().cast_mut(),
                c"1".as_ptr().cast_mut(),
                c"f".as_ptr().cast_mut(),
                0,
                None,
            )
        };
        assert!(!ctx.is_null());
        let status = rdmaft_send_wait(ctx);
        assert_ne!(status, RDMAFT_OK);
        assert_eq!(
            rdmaft_send_wait(ctx),
            status,
            "a second wait: the same answer"
        );
        // A send context is no receiver: stopping it as one does nothing.
        super::super::recv::rdmaft_stop_recv(ctx.cast());
        assert_eq!(rdmaft_send_wait(ctx), status, "still there");
        rdmaft_stop_send(ctx);
        assert_eq!(
            rdmaft_send_wait(ctx),
            RDMAFT_EINVAL,
            "a wait after the stop"
        );
        // SAFETY: rdmaft_last_error returns a valid C string.
        let text = unsafe { std::ffi::CStr::from_ptr(super::super::rdmaft_last_error()) };
        assert!(text.to_str().unwrap().contains("stopped"), "{text:?}");
        rdmaft_stop_send(ctx);
        // An even value is a receiver token: never a send context.
        rdmaft_stop_send(ctx.wrapping_byte_add(1));
        assert_eq!(rdmaft_send_wait(ctx), RDMAFT_EINVAL);
    }
}

#[cfg(all(test, not(rdmaft_loom)))]
mod options_tests {
    use super::*;

    #[test]
    fn c_options_read_as_far_as_both_sides_know_them() {
        // SAFETY: NULL is allowed.
        let o = unsafe { read_options(std::ptr::null()) }.unwrap();
        assert_eq!((o.lanes, o.part_size), (0, crate::DEFAULT_PART_SIZE));
        let full = SendOptionsC {
            struct_size: std::mem::size_of::<SendOptionsC>(),
            buffer_size: 65536,
            lanes: 3,
            reserved: 0,
            part_size: 1 << 20,
            shard_index: 2,
            shard_count: 3,
            sync: SYNC_CHECKSUM | SYNC_DELETE,
            flags: SEND_LINKS,
        };
        // SAFETY: a whole struct.
        let o = unsafe { read_options(&full) }.unwrap();
        assert_eq!((o.chunk_size, o.lanes, o.part_size), (65536, 3, 1 << 20));
        assert!(o.links);
        assert_eq!(o.shard, Some(crate::Shard::new(2, 3).unwrap()));
        assert_eq!(
            o.sync,
            Some(crate::SyncOptions {
                checksum: true,
                dry_run: false,
                delete: true
            })
        );
        // An older caller's struct ends after buffer_size: the rest reads as zero (the
        // defaults), whatever lies beyond it.
        let old = SendOptionsC {
            struct_size: 2 * std::mem::size_of::<usize>(),
            ..full
        };
        // SAFETY: a whole struct (more than struct_size).
        let o = unsafe { read_options(&old) }.unwrap();
        assert_eq!(
            (o.chunk_size, o.lanes, o.part_size),
            (65536, 0, crate::DEFAULT_PART_SIZE)
        );
        assert_eq!((o.shard, o.sync, o.links), (None, None, false));
        for bad in [
            SendOptionsC { sync: 0x10, ..full },
            SendOptionsC { flags: 0x2, ..full },
            SendOptionsC { lanes: 65, ..full },
            SendOptionsC {
                part_size: 4095,
                ..full
            },
            SendOptionsC {
                struct_size: 3,
                ..full
            },
            SendOptionsC {
                shard_index: 3,
                ..full
            },
        ] {
            // SAFETY: whole structs.
            assert!(unsafe { read_options(&bad) }.is_err(), "{bad:?}");
        }
    }
}
