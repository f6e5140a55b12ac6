//! The check_authn hook of `AuthType tcpcrypt`: reads the request, lets
//! `crate::auth` decide, and applies the decision (r->user, headers,
//! status, one log line). httpd runs it only where a `Require` needs a
//! user, so `Require valid-user`, `Require user ...` and `<RequireAll>`
//! work as with any other AuthType.

use std::ffi::{CStr, CString, c_char, c_int};
use std::time::Instant;

use super::sys::{
    APLOG_ERR, APLOG_INFO, DECLINED, HTTP_BAD_REQUEST, HTTP_FORBIDDEN, HTTP_INTERNAL_SERVER_ERROR,
    HTTP_UNAUTHORIZED, OK, ap_auth_name, ap_auth_type, apr_table_add, apr_table_get, request_rec,
};
use super::{conn, directives, guard, log, pool};
use crate::auth::{self, Decision, Level, Request};
use tcpcrypt_auth::{http, scram};

/// # Safety
/// `p` must be null or a NUL-terminated string living through the call.
unsafe fn text<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        return None;
    }
    // SAFETY: caller's contract.
    unsafe { CStr::from_ptr(p) }.to_str().ok()
}

pub unsafe extern "C" fn check_authn(r: *mut request_rec) -> c_int {
    guard::catch(HTTP_INTERNAL_SERVER_ERROR as c_int, || {
        // SAFETY: httpd passes a live request; its tables, pool, connection
        // and config live until it ends.
        unsafe {
            let is_ours =
                text(ap_auth_type(r)).is_some_and(|t| t.eq_ignore_ascii_case(auth::AUTH_TYPE));
            if !is_ours {
                return DECLINED;
            }
            // A subrequest or internal redirect under another configuration
            // runs this hook again, with the same Authorization header; a
            // SCRAM exchange is used up by then. The login was made on this
            // very connection, so the parent's user stands.
            if let Some((user, scheme)) = inherited_login(r) {
                (*r).user = user;
                (*r).ap_auth_type = scheme;
                return OK as c_int;
            }
            let dir = directives::dir_config((*r).per_dir_config);
            let state = conn::state((*r).connection);
            let session = conn::outcome((*r).connection).and_then(|o| o.session());
            let Some(state) = state else {
                log::request(
                    r,
                    APLOG_ERR,
                    "AuthType tcpcrypt: no connection state (proxy or internal connection)",
                );
                return HTTP_FORBIDDEN as c_int;
            };
            let raw = apr_table_get((*r).headers_in, c"Authorization".as_ptr());
            let req = Request {
                authorization: text(raw),
                realm: text(ap_auth_name(r)).unwrap_or("tcpcrypt"),
                user_file: dir.and_then(|d| d.auth_user_file.as_deref()),
                key_file: dir.and_then(|d| d.auth_key_file.as_deref()),
                session,
            };
            // A header that is not UTF-8 is malformed, not absent (on a
            // tcpcrypt connection; a plain one is refused first anyway).
            let decision = if session.is_some() && !raw.is_null() && req.authorization.is_none() {
                Decision::BadRequest {
                    log: "Authorization header is not valid UTF-8".to_owned(),
                }
            } else {
                auth::decide(&req, &state.auth, Instant::now())
            };
            apply(r, decision)
        }
    })
}

/// The user and scheme of the main request (for a subrequest) or the
/// earlier request (for an internal redirect) if this AuthType logged it in.
///
/// # Safety
/// `r` must be a live request.
unsafe fn inherited_login(r: *mut request_rec) -> Option<(*mut c_char, *mut c_char)> {
    // SAFETY: main and prev of a live request are null or live requests of
    // the same connection.
    unsafe {
        for parent in [(*r).main, (*r).prev] {
            let Some(p) = parent.as_ref() else { continue };
            let ours = text(p.ap_auth_type)
                .is_some_and(|t| t == scram::MECHANISM || t == http::KEY_SCHEME);
            if ours && !p.user.is_null() {
                return Some((p.user, p.ap_auth_type));
            }
        }
    }
    None
}

/// # Safety
/// `r` must be a live request.
unsafe fn apply(r: *mut request_rec, decision: Decision) -> c_int {
    // SAFETY: r is live (caller's contract); strings are copied into its pool.
    unsafe {
        let pool = (*r).pool;
        match decision {
            Decision::Granted { user, scheme, info } => {
                (*r).user = pool::strdup(pool, &user).cast_mut();
                (*r).ap_auth_type = pool::strdup(pool, scheme).cast_mut();
                if let Some(info) = info {
                    add_header(r, c"Authentication-Info", &info);
                }
                log::request(
                    r,
                    APLOG_INFO,
                    &format!(
                        "user {user:?} logged in with {scheme}, bound to this tcpcrypt session"
                    ),
                );
                OK as c_int
            }
            Decision::Unauthorized {
                challenges,
                log: line,
            } => {
                for c in &challenges {
                    add_header(r, c"WWW-Authenticate", c);
                }
                if let Some((level, text)) = line {
                    let level = match level {
                        Level::Error => APLOG_ERR,
                        Level::Info => APLOG_INFO,
                    };
                    log::request(r, level, &format!("AuthType tcpcrypt: {text}"));
                }
                HTTP_UNAUTHORIZED as c_int
            }
            Decision::BadRequest { log: text } => {
                log::request(
                    r,
                    APLOG_ERR,
                    &format!("AuthType tcpcrypt: bad Authorization header: {text}"),
                );
                HTTP_BAD_REQUEST as c_int
            }
            Decision::Forbidden { log: text } => {
                log::request(r, APLOG_ERR, &format!("AuthType tcpcrypt: {text}"));
                HTTP_FORBIDDEN as c_int
            }
            Decision::ServerError { log: text } => {
                log::request(r, APLOG_ERR, &format!("AuthType tcpcrypt: {text}"));
                HTTP_INTERNAL_SERVER_ERROR as c_int
            }
        }
    }
}

/// Adds a header that also goes out with error responses (401 included).
///
/// # Safety
/// `r` must be a live request.
unsafe fn add_header(r: *mut request_rec, name: &CStr, value: &str) {
    let Ok(value) = CString::new(value) else {
        return;
    };
    // SAFETY: apr_table_add copies both strings into the table's pool.
    unsafe { apr_table_add((*r).err_headers_out, name.as_ptr(), value.as_ptr()) };
}
