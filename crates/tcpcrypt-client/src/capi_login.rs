//! The C functions of the `auth` feature: a password login to
//! mod_tcpcrypt's `AuthType tcpcrypt`, step by step, for C programs with
//! their own HTTP client (see `tcpcrypt_login_start` in the header).

use std::ffi::{CStr, c_char, c_int};
use std::ptr;

use crate::capi::{client_for, guarded, path_arg, wait_arg};
use crate::login::{LoginError, PasswordLogin, PasswordProof};
use tcpcrypt_control::Lookup;

/// `struct tcpcrypt_login`, opaque to C.
pub struct TcpcryptLogin(Step);

enum Step {
    Started(PasswordLogin),
    Proved(PasswordProof),
    Finished,
}

fn login_errno(e: &LoginError) -> c_int {
    match e {
        LoginError::Auth(tcpcrypt_auth::AuthError::ServerNotAuthentic)
        | LoginError::NoServerProof
        | LoginError::WrongExchange => libc::EKEYREJECTED,
        LoginError::Random(_) => libc::EIO,
        _ => libc::EBADMSG,
    }
}

/// Copies `text` and a NUL into `buf` of `len` bytes, or fails with ERANGE
/// (a cut header would only fail later, less clearly).
///
/// # Safety
/// `buf` is NULL or valid for `len` writable bytes.
unsafe fn put(buf: *mut c_char, len: usize, text: &str) -> c_int {
    if buf.is_null() {
        return -libc::EFAULT;
    }
    if text.len() >= len {
        return -libc::ERANGE;
    }
    // SAFETY: the caller promises len writable bytes; text.len() + 1 <= len.
    unsafe {
        ptr::copy_nonoverlapping(text.as_ptr().cast::<c_char>(), buf, text.len());
        *buf.add(text.len()) = 0;
    }
    0
}

/// # Safety
/// `s` is NULL or NUL-terminated.
unsafe fn str_arg<'a>(s: *const c_char) -> Option<&'a str> {
    if s.is_null() {
        return None;
    }
    // SAFETY: the caller's promise.
    unsafe { CStr::from_ptr(s) }.to_str().ok()
}

/// Starts a password login on connected socket `fd`. See the header.
///
/// # Safety
/// Strings are NULL or NUL-terminated; `authorization` is valid for `len`
/// bytes; `err` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcpcrypt_login_start(
    control_path: *const c_char,
    fd: c_int,
    wait_ms: c_int,
    user: *const c_char,
    authorization: *mut c_char,
    len: usize,
    err: *mut c_int,
) -> *mut TcpcryptLogin {
    let mut made: *mut TcpcryptLogin = ptr::null_mut();
    let code = guarded(|| {
        // SAFETY: the caller promises NULL or a NUL-terminated string.
        let Some(user) = (unsafe { str_arg(user) }) else {
            return -libc::EINVAL;
        };
        // SAFETY: as above.
        let client = client_for(unsafe { path_arg(control_path) }, 0);
        let session = match client.lookup_raw_fd(fd, wait_arg(wait_ms)) {
            Ok(Lookup::Tcpcrypt(s)) => s,
            Ok(Lookup::Pending) => return -libc::EBUSY,
            Ok(_) => return -libc::ENODATA,
            Err(e) => return -e.errno(),
        };
        let (login, header) = match PasswordLogin::start(&session, user) {
            Ok(x) => x,
            Err(LoginError::Auth(_)) => return -libc::EINVAL,
            Err(e) => return -login_errno(&e),
        };
        // SAFETY: the caller promises len writable bytes.
        let put = unsafe { put(authorization, len, &header) };
        if put != 0 {
            return put;
        }
        made = Box::into_raw(Box::new(TcpcryptLogin(Step::Started(login))));
        0
    });
    // SAFETY: the caller promises err is NULL or writable.
    if let Some(err) = unsafe { err.as_mut() } {
        *err = code;
    }
    made
}

/// Answers the server's 401. See the header.
///
/// # Safety
/// `login` came from `tcpcrypt_login_start` and is not freed; strings are
/// NULL or NUL-terminated; `authorization` is valid for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcpcrypt_login_answer(
    login: *mut TcpcryptLogin,
    www_authenticate: *const c_char,
    password: *const c_char,
    authorization: *mut c_char,
    len: usize,
) -> c_int {
    guarded(|| {
        // SAFETY: the caller promises a live login or NULL.
        let Some(login) = (unsafe { login.as_mut() }) else {
            return -libc::EINVAL;
        };
        // SAFETY: the caller promises NULL or NUL-terminated strings.
        let (Some(challenge), Some(password)) = (unsafe { str_arg(www_authenticate) }, unsafe {
            str_arg(password)
        }) else {
            return -libc::EINVAL;
        };
        let Step::Started(started) = std::mem::replace(&mut login.0, Step::Finished) else {
            return -libc::EINVAL;
        };
        match started.answer([challenge], password) {
            Ok((proof, header)) => {
                // SAFETY: the caller promises len writable bytes.
                let put = unsafe { put(authorization, len, &header) };
                login.0 = Step::Proved(proof);
                put
            }
            Err(e) => -login_errno(&e),
        }
    })
}

/// Checks the server's proof. See the header.
///
/// # Safety
/// `login` as for `tcpcrypt_login_answer`; `authentication_info` is NULL or
/// NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcpcrypt_login_verify(
    login: *mut TcpcryptLogin,
    authentication_info: *const c_char,
) -> c_int {
    guarded(|| {
        // SAFETY: the caller promises a live login or NULL.
        let Some(login) = (unsafe { login.as_mut() }) else {
            return -libc::EINVAL;
        };
        let Step::Proved(proof) = std::mem::replace(&mut login.0, Step::Finished) else {
            return -libc::EINVAL;
        };
        // SAFETY: the caller promises NULL or a NUL-terminated string.
        match proof.verify(unsafe { str_arg(authentication_info) }) {
            Ok(()) => 0,
            Err(e) => -login_errno(&e),
        }
    })
}

/// Frees a login. See the header.
///
/// # Safety
/// `login` is NULL or came from `tcpcrypt_login_start` and is freed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcpcrypt_login_free(login: *mut TcpcryptLogin) {
    let _ = guarded(|| {
        if !login.is_null() {
            // SAFETY: the caller promises a pointer from Box::into_raw in
            // tcpcrypt_login_start, freed only here, once.
            drop(unsafe { Box::from_raw(login) });
        }
        0
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misuse_is_an_error_code_not_a_crash() {
        let mut buf = [0 as c_char; 64];
        // SAFETY: NULL login and pointers, which the functions must refuse.
        unsafe {
            assert_eq!(
                tcpcrypt_login_answer(
                    ptr::null_mut(),
                    c"x".as_ptr(),
                    c"pw".as_ptr(),
                    buf.as_mut_ptr(),
                    buf.len()
                ),
                -libc::EINVAL
            );
            assert_eq!(
                tcpcrypt_login_verify(ptr::null_mut(), ptr::null()),
                -libc::EINVAL
            );
            tcpcrypt_login_free(ptr::null_mut());
            let mut err = 0;
            let login = tcpcrypt_login_start(
                c"/nonexistent/control.sock".as_ptr(),
                -1,
                0,
                c"alice".as_ptr(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut err,
            );
            assert!(login.is_null());
            assert!(err < 0, "{err}");
            let login = tcpcrypt_login_start(
                ptr::null(),
                -1,
                0,
                ptr::null(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut err,
            );
            assert!(login.is_null());
            assert_eq!(err, -libc::EINVAL);
        }
    }

    #[test]
    fn a_buffer_too_small_is_erange_and_left_terminated_only_on_success() {
        let mut small = [1 as c_char; 4];
        // SAFETY: small is valid for its length.
        unsafe {
            assert_eq!(put(small.as_mut_ptr(), small.len(), "abcd"), -libc::ERANGE);
            assert_eq!(put(small.as_mut_ptr(), small.len(), "abc"), 0);
        }
        assert_eq!(small[3], 0);
    }
}
