//! The request-cycle hooks: where the cache is attached and where the
//! variables are set.

use std::ffi::{CString, c_int, c_void};

use super::sys::{
    DECLINED, OK, apr_pool_t, apr_table_set, apr_table_unset, conn_rec, request_rec, server_rec,
};
use super::{conn, directives, guard, log};
use crate::vars;

pub unsafe extern "C" fn post_config(
    pconf: *mut apr_pool_t,
    _plog: *mut apr_pool_t,
    _ptemp: *mut apr_pool_t,
    _s: *mut server_rec,
) -> c_int {
    guard::catch(OK as c_int, || {
        // SAFETY: runs in the parent with httpd's config pool, before any
        // child is forked.
        unsafe { log::share_limiter(pconf) };
        OK as c_int
    })
}

pub unsafe extern "C" fn pre_connection(c: *mut conn_rec, _csd: *mut c_void) -> c_int {
    guard::catch(OK as c_int, || {
        // SAFETY: httpd passes the live connection being set up.
        unsafe { conn::attach(c) };
        OK as c_int
    })
}

/// Every variable's name as a C string, made once per process.
fn variable_names() -> &'static [CString] {
    static NAMES: std::sync::OnceLock<Vec<CString>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        vars::ALL
            .iter()
            .filter_map(|n| CString::new(*n).ok())
            .collect()
    })
}

/// Sets the TCP_CRYPT_* variables (or removes any stale ones on a plain
/// connection) where `Tcpcrypt` is On.
pub unsafe extern "C" fn fixups(r: *mut request_rec) -> c_int {
    guard::catch(DECLINED, || {
        // SAFETY: httpd passes a live request; its tables and pool live
        // until it ends, and its connection at least as long.
        unsafe {
            if !directives::dir_config((*r).per_dir_config).is_none_or(|d| d.exports_variables()) {
                return DECLINED;
            }
            let env = (*r).subprocess_env;
            match conn::variables((*r).connection) {
                Some(vars) if !vars.is_empty() => {
                    for (name, value) in vars {
                        apr_table_set(env, name.as_ptr(), value.as_ptr());
                    }
                }
                _ => {
                    for name in variable_names() {
                        apr_table_unset(env, name.as_ptr());
                    }
                }
            }
            DECLINED
        }
    })
}
