//! Error-log output, and the rate limit shared by all httpd children.

use std::ffi::{CString, c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::guard;
use super::module::module_index;
use super::sys::{
    APLOG_DEBUG, APLOG_ERR, APR_SUCCESS, ap_log_cerror_, ap_log_rerror_, apr_pool_t, apr_status_t,
    conn_rec, request_rec,
};
use crate::ratelimit::{LOG_INTERVAL_SECS, LogLimiter, Verdict};

/// What httpd prints as the source file when the log format asks for it.
const FILE: &std::ffi::CStr = c"mod_tcpcrypt";

fn c_message(msg: &str) -> CString {
    CString::new(msg.replace('\0', "\\0")).unwrap_or_default()
}

/// Logs `msg` for a connection at `level` (an `APLOG_*` value).
///
/// # Safety
/// `c` must be a live `conn_rec`.
pub unsafe fn conn(c: *const conn_rec, level: u32, msg: &str) {
    let text = c_message(msg);
    // SAFETY: "%s" consumes exactly the one NUL-terminated string passed;
    // data never becomes the format string.
    unsafe {
        ap_log_cerror_(
            FILE.as_ptr(),
            line!() as c_int,
            module_index(),
            level as c_int,
            0,
            c,
            c"%s".as_ptr(),
            text.as_ptr(),
        );
    }
}

/// Logs `msg` for a request at `level` (an `APLOG_*` value); httpd adds
/// the client address.
///
/// # Safety
/// `r` must be a live `request_rec`.
pub unsafe fn request(r: *const request_rec, level: u32, msg: &str) {
    let text = c_message(msg);
    // SAFETY: "%s" consumes exactly the one NUL-terminated string passed.
    unsafe {
        ap_log_rerror_(
            FILE.as_ptr(),
            line!() as c_int,
            module_index(),
            level as c_int,
            0,
            r,
            c"%s".as_ptr(),
            text.as_ptr(),
        );
    }
}

/// Logs a lookup failure at error level unless one was logged (by any child)
/// within the last interval.
///
/// # Safety
/// `c` must be a live `conn_rec`.
pub unsafe fn conn_failure(c: *const conn_rec, msg: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match limiter().failure(now, LOG_INTERVAL_SECS) {
        // Still visible to an admin who asks for `LogLevel tcpcrypt:debug`.
        // SAFETY: c is live (caller's contract).
        Verdict::Suppress => unsafe { conn(c, APLOG_DEBUG, msg) },
        Verdict::Log { suppressed_before } => {
            let mut line = msg.to_owned();
            if suppressed_before > 0 {
                line.push_str(&format!(
                    " ({suppressed_before} more lookups failed since the last report)"
                ));
            }
            line.push_str(&format!(
                "; further lookup failures are reported at most once every {LOG_INTERVAL_SECS} s"
            ));
            // SAFETY: c is live (caller's contract).
            unsafe { conn(c, APLOG_ERR, &line) };
        }
    }
}

/// The limiter in memory shared with the children, once the parent has
/// mapped it; until then (or if mapping failed) one per process.
static SHARED: AtomicPtr<LogLimiter> = AtomicPtr::new(ptr::null_mut());
static PROCESS_LOCAL: LogLimiter = LogLimiter::new();

fn limiter() -> &'static LogLimiter {
    let shared = SHARED.load(Ordering::Acquire);
    if shared.is_null() {
        &PROCESS_LOCAL
    } else {
        // SAFETY: non-null only while the mapping made by `share_limiter`
        // exists; it is zero-filled, a valid LogLimiter, and never moved.
        unsafe { &*shared }
    }
}

/// Maps the limiter into memory that children forked later share with this
/// process, and unmaps it when `pconf` is cleared (restart or shutdown).
/// Called in the parent from post_config.
///
/// # Safety
/// `pconf` must be httpd's configuration pool.
pub unsafe fn share_limiter(pconf: *mut apr_pool_t) {
    if !SHARED.load(Ordering::Acquire).is_null() {
        return;
    }
    let size = std::mem::size_of::<LogLimiter>();
    // SAFETY: an anonymous shared mapping with no address hint touches no
    // existing memory; the result is checked before use.
    let mapped = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if mapped == libc::MAP_FAILED {
        // The per-process limiter still bounds the log, per child.
        return;
    }
    SHARED.store(mapped.cast(), Ordering::Release);
    // SAFETY: pconf is live; unshare_limiter ignores its argument.
    unsafe {
        super::sys::apr_pool_cleanup_register(
            pconf,
            ptr::null(),
            Some(unshare_limiter),
            Some(super::sys::apr_pool_cleanup_null),
        );
    }
}

unsafe extern "C" fn unshare_limiter(_: *mut c_void) -> apr_status_t {
    guard::catch(APR_SUCCESS as apr_status_t, || {
        let mapped = SHARED.swap(ptr::null_mut(), Ordering::AcqRel);
        if !mapped.is_null() {
            // SAFETY: mapped came from the mmap in share_limiter with this
            // size, and no reference to it outlives a hook call, none of
            // which runs while pconf is being cleared.
            unsafe { libc::munmap(mapped.cast(), std::mem::size_of::<LogLimiter>()) };
        }
        APR_SUCCESS as apr_status_t
    })
}
