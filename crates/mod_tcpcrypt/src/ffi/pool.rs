//! Rust values owned by APR pools.

use std::ffi::{c_char, c_void};

use super::guard;
use super::sys::{
    APR_SUCCESS, apr_pool_cleanup_null, apr_pool_cleanup_register, apr_pool_t, apr_pstrmemdup,
    apr_status_t,
};

/// Moves `value` to the heap and ties its lifetime to `pool`: it is dropped
/// when the pool is cleared or destroyed.
///
/// # Safety
/// `pool` must be a live APR pool; the returned pointer must not be used
/// after that pool is cleared.
pub unsafe fn boxed<T>(pool: *mut apr_pool_t, value: T) -> *mut T {
    let raw = Box::into_raw(Box::new(value));
    // SAFETY: pool is live (caller's contract); drop_boxed::<T> matches the
    // type of raw, and the child cleanup does nothing, so a forked CGI child
    // never frees memory its parent owns.
    unsafe {
        apr_pool_cleanup_register(
            pool,
            raw.cast(),
            Some(drop_boxed::<T>),
            Some(apr_pool_cleanup_null),
        );
    }
    raw
}

unsafe extern "C" fn drop_boxed<T>(data: *mut c_void) -> apr_status_t {
    guard::catch(APR_SUCCESS as apr_status_t, || {
        // SAFETY: registered by `boxed` with a pointer from
        // Box::into_raw::<T>, and APR runs each cleanup once.
        drop(unsafe { Box::from_raw(data.cast::<T>()) });
        APR_SUCCESS as apr_status_t
    })
}

/// Copies `s` into `pool` as a NUL-terminated C string.
///
/// # Safety
/// `pool` must be a live APR pool.
pub unsafe fn strdup(pool: *mut apr_pool_t, s: &str) -> *const c_char {
    // An interior NUL would silently cut the C string short: our values
    // never hold one, but messages quoting config text might.
    let clean;
    let s = if s.contains('\0') {
        clean = s.replace('\0', "\\0");
        clean.as_str()
    } else {
        s
    };
    // SAFETY: pool is live; the source pointer and length describe `s`.
    unsafe { apr_pstrmemdup(pool, s.as_ptr().cast(), s.len()) }
}
