//! Optional functions for other modules, declared for C in
//! `include/mod_tcpcrypt.h` (the same pattern as mod_ssl's
//! `ssl_var_lookup`).

use std::ffi::{CStr, c_char, c_int};
use std::ptr;

use super::sys::{apr_dynamic_fn_register, apr_pool_t, conn_rec};
use super::{conn, guard, pool};
use crate::vars;

/// `tcpcrypt_conn_var(p, c, name)`: the value of TCP_CRYPT_SESSID (or
/// another TCP_CRYPT_* name) for connection `c` or its HTTP/2 master,
/// allocated from `p`; NULL for a plain connection or an unknown name.
unsafe extern "C" fn tcpcrypt_conn_var(
    p: *mut apr_pool_t,
    c: *mut conn_rec,
    name: *const c_char,
) -> *const c_char {
    guard::catch(ptr::null(), || {
        if p.is_null() || name.is_null() {
            return ptr::null();
        }
        // SAFETY: the caller passes a live pool, a live connection and a
        // NUL-terminated name, as the header documents.
        unsafe {
            let Ok(name) = CStr::from_ptr(name).to_str() else {
                return ptr::null();
            };
            match conn::outcome(c)
                .and_then(|o| o.session())
                .and_then(|s| vars::value(s, name))
            {
                Some(value) => pool::strdup(p, &value),
                None => ptr::null(),
            }
        }
    })
}

/// `tcpcrypt_conn_is_encrypted(c)`: 1 if connection `c` (or its master)
/// runs tcpcrypt, else 0.
unsafe extern "C" fn tcpcrypt_conn_is_encrypted(c: *mut conn_rec) -> c_int {
    guard::catch(0, || {
        // SAFETY: the caller passes a live connection.
        let outcome = unsafe { conn::outcome(c) };
        c_int::from(outcome.and_then(|o| o.session()).is_some())
    })
}

/// Publishes both functions under their names.
///
/// # Safety
/// Call from register_hooks (httpd's single configuration thread).
pub unsafe fn register() {
    type VarFn =
        unsafe extern "C" fn(*mut apr_pool_t, *mut conn_rec, *const c_char) -> *const c_char;
    type IsFn = unsafe extern "C" fn(*mut conn_rec) -> c_int;
    // SAFETY: APR stores optional functions as `void (*)(void)` and callers
    // cast them back to the declared type (the header's), as C does.
    unsafe {
        apr_dynamic_fn_register(
            c"tcpcrypt_conn_var".as_ptr(),
            Some(std::mem::transmute::<VarFn, unsafe extern "C" fn()>(
                tcpcrypt_conn_var,
            )),
        );
        apr_dynamic_fn_register(
            c"tcpcrypt_conn_is_encrypted".as_ptr(),
            Some(std::mem::transmute::<IsFn, unsafe extern "C" fn()>(
                tcpcrypt_conn_is_encrypted,
            )),
        );
    }
}
