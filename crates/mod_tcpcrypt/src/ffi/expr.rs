//! `%{TCP_CRYPT_SESSID}` and the other variables in `ap_expr` (`<If>`,
//! `Require expr`, `Header ... expr=`). These report the connection as it
//! is, independent of `Tcpcrypt Off`, which only governs the environment.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;

use super::sys::{AP_EXPR_FUNC_VAR, DECLINED, OK, ap_expr_eval_ctx_t, ap_expr_lookup_parms};
use super::{conn, guard, pool};
use crate::vars;

type VarFn = unsafe extern "C" fn(*mut ap_expr_eval_ctx_t, *const c_void) -> *const c_char;

/// Claims our variable names when an expression is parsed.
pub unsafe extern "C" fn lookup(parms: *mut ap_expr_lookup_parms) -> c_int {
    guard::catch(DECLINED, || {
        // SAFETY: httpd passes a live parms record; name is NUL-terminated.
        unsafe {
            let parms = &mut *parms;
            if parms.type_ != AP_EXPR_FUNC_VAR as c_int || parms.name.is_null() {
                return DECLINED;
            }
            let name = CStr::from_ptr(parms.name);
            if !vars::ALL.iter().any(|v| v.as_bytes() == name.to_bytes()) {
                return DECLINED;
            }
            // The parsed expression keeps parms.name alive as long as
            // itself, so it can serve as the evaluation-time argument.
            *parms.func = (var as VarFn) as *const c_void;
            *parms.data = parms.name.cast();
            OK as c_int
        }
    })
}

/// Evaluates one of our variables; NULL (the empty string to ap_expr) when
/// the connection has no tcpcrypt session.
unsafe extern "C" fn var(ctx: *mut ap_expr_eval_ctx_t, data: *const c_void) -> *const c_char {
    guard::catch(ptr::null(), || {
        // SAFETY: httpd passes a live evaluation context; data is the name
        // stored by `lookup`; c and r, when set, are live.
        unsafe {
            let ctx = &*ctx;
            let c = if !ctx.c.is_null() {
                ctx.c
            } else if !ctx.r.is_null() {
                (*ctx.r).connection
            } else {
                return ptr::null();
            };
            let Ok(name) = CStr::from_ptr(data.cast::<c_char>()).to_str() else {
                return ptr::null();
            };
            match conn::outcome(c)
                .and_then(|o| o.session())
                .and_then(|s| vars::value(s, name))
            {
                Some(value) => pool::strdup(ctx.p, &value),
                None => ptr::null(),
            }
        }
    })
}
