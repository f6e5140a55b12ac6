//! `Require tcpcrypt`: granted on a tcpcrypt connection, denied otherwise.
//! Authorization runs before fixups, so the provider asks the connection
//! cache itself (which then serves the fixups of the same request).

use std::ffi::{CStr, c_char, c_void};
use std::ptr;

use super::sys::{
    AUTHZ_DENIED, AUTHZ_GENERAL_ERROR, AUTHZ_GRANTED, authz_provider, authz_status, cmd_parms,
    request_rec,
};
use super::{conn, guard, pool};

pub static PROVIDER: authz_provider = authz_provider {
    check_authorization: Some(check),
    parse_require_line: Some(parse),
};

unsafe extern "C" fn check(
    r: *mut request_rec,
    _require_line: *const c_char,
    _parsed: *const c_void,
) -> authz_status {
    guard::catch(AUTHZ_GENERAL_ERROR, || {
        // SAFETY: httpd passes a live request.
        let outcome = unsafe { conn::outcome((*r).connection) };
        if outcome.and_then(|o| o.session()).is_some() {
            AUTHZ_GRANTED
        } else {
            AUTHZ_DENIED
        }
    })
}

/// Rejects arguments at config time, so `Require tcpcrypt yes` fails
/// `apachectl -t` instead of being silently ignored.
unsafe extern "C" fn parse(
    cmd: *mut cmd_parms,
    require_line: *const c_char,
    _parsed: *mut *const c_void,
) -> *const c_char {
    guard::catch(c"Require tcpcrypt: internal error".as_ptr(), || {
        if require_line.is_null() {
            return ptr::null();
        }
        // SAFETY: httpd passes the NUL-terminated rest of the Require line.
        let args = unsafe { CStr::from_ptr(require_line) }.to_string_lossy();
        if args.trim().is_empty() {
            return ptr::null();
        }
        let message = format!(
            "'Require tcpcrypt' takes no arguments, got '{}'",
            args.trim()
        );
        // SAFETY: the command pool is live while the directive is read.
        unsafe { pool::strdup((*cmd).pool, &message) }
    })
}
