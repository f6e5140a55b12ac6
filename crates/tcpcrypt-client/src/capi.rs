//! The C ABI of libtcpcrypt (include/tcpcrypt/tcpcrypt.h), public to Rust
//! too so tests can call it without a C compiler. Every exported
//! function catches panics, so nothing unwinds into C, and reports failure
//! through its return value (and `errno` for the old call), never by exiting.

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::mem;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use crate::addr;
use crate::client::{self, Client, DEFAULT_TIMEOUT};
use crate::error::Error;
use tcpcrypt_control::{AppAware, Lookup, PolicyUpdate, Role, SESSION_ID_LEN};

/// Old option names (values from the original libtcpcrypt header).
pub const TCP_CRYPT_ENABLE: c_int = 0;
pub const TCP_CRYPT_SESSID: c_int = 2;
pub const TCP_CRYPT_NOCACHE: c_int = 4;
pub const TCP_CRYPT_APP_SUPPORT: c_int = 15;
pub const TCP_CRYPT_RESUME: c_int = 16;

/// Values of `TCP_CRYPT_APP_SUPPORT` (RFC 8547 section 4.2). The original
/// library took an int for it; 0 and 1 keep their plain meaning, and 2 is
/// ours, for the mandatory mode the RFC also asks for.
pub const TCP_CRYPT_APP_SUPPORT_OFF: c_int = 0;
pub const TCP_CRYPT_APP_SUPPORT_ON: c_int = 1;
pub const TCP_CRYPT_APP_SUPPORT_MANDATORY: c_int = 2;

/// Old `tcpcrypt_setparam` parameter: the control socket path.
pub const TCPCRYPT_PARAM_CTLPATH: c_int = 0;

/// Room for a session ID in `struct tcpcrypt_info`; RFC 8548 IDs use 33.
pub const TCPCRYPT_SESSID_MAXLEN: usize = 64;

pub const TCPCRYPT_STATE_UNKNOWN: c_int = 0;
pub const TCPCRYPT_STATE_PLAIN: c_int = 1;
pub const TCPCRYPT_STATE_PENDING: c_int = 2;
pub const TCPCRYPT_STATE_ENCRYPTED: c_int = 3;

pub const TCPCRYPT_ROLE_NONE: c_int = 0;
pub const TCPCRYPT_ROLE_A: c_int = 1;
pub const TCPCRYPT_ROLE_B: c_int = 2;

/// `struct tcpcrypt_info` in the header; the layouts must stay identical.
#[repr(C)]
pub struct TcpcryptInfo {
    pub state: c_int,
    pub role: c_int,
    pub sessid_len: c_uint,
    pub sessid: [u8; TCPCRYPT_SESSID_MAXLEN],
    pub sessid_hex: [c_char; 2 * TCPCRYPT_SESSID_MAXLEN + 1],
    pub tep: c_uint,
    pub tep_name: [c_char; 32],
    pub aead: c_uint,
    pub aead_name: [c_char; 32],
    pub resumed: c_int,
    pub peer_app_aware: c_int,
    pub reason: [c_char; 128],
}

/// Set by the old `tcpcrypt_setparam`; used by the old `tcpcrypt_getsockopt`
/// and `tcpcrypt_setsockopt`.
static OLD_API_PATH: Mutex<Option<PathBuf>> = Mutex::new(None);

pub(crate) fn guarded(f: impl FnOnce() -> c_int) -> c_int {
    panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or(-libc::EIO)
}

fn set_errno(value: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() = value };
}

/// # Safety
/// `path` is NULL or a NUL-terminated string.
pub(crate) unsafe fn path_arg(path: *const c_char) -> Option<PathBuf> {
    if path.is_null() {
        return None;
    }
    // SAFETY: the caller promises a NUL-terminated string.
    let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
}

pub(crate) fn client_for(path: Option<PathBuf>, timeout_ms: c_int) -> Client {
    let timeout = if timeout_ms > 0 {
        Duration::from_millis(timeout_ms as u64)
    } else {
        DEFAULT_TIMEOUT
    };
    Client::with_control_path(client::control_path(path.as_deref())).timeout(timeout)
}

pub(crate) fn wait_arg(wait_ms: c_int) -> Duration {
    Duration::from_millis(wait_ms.max(0) as u64)
}

fn copy_cstr(dst: &mut [c_char], text: &str) {
    // Cut on a character boundary so C never sees half a UTF-8 sequence.
    let mut end = text.len().min(dst.len().saturating_sub(1));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    for (d, &s) in dst.iter_mut().zip(&text.as_bytes()[..end]) {
        *d = s as c_char;
    }
    if let Some(nul) = dst.get_mut(end) {
        *nul = 0;
    }
}

fn fill(info: &mut TcpcryptInfo, lookup: &Lookup) {
    // SAFETY: TcpcryptInfo is integers and arrays only; all zero bytes is valid.
    *info = unsafe { mem::zeroed() };
    info.role = TCPCRYPT_ROLE_NONE;
    match lookup {
        Lookup::Tcpcrypt(s) => {
            info.state = TCPCRYPT_STATE_ENCRYPTED;
            info.role = match s.role {
                Role::A => TCPCRYPT_ROLE_A,
                Role::B => TCPCRYPT_ROLE_B,
            };
            info.sessid_len = SESSION_ID_LEN as c_uint;
            info.sessid[..SESSION_ID_LEN].copy_from_slice(s.session_id.as_bytes());
            copy_cstr(&mut info.sessid_hex, &s.session_id.to_hex());
            info.tep = c_uint::from(s.tep.byte());
            copy_cstr(&mut info.tep_name, s.tep.name());
            info.aead = c_uint::from(s.aead.id());
            copy_cstr(&mut info.aead_name, s.aead.name());
            info.resumed = c_int::from(s.resumed);
            info.peer_app_aware = c_int::from(s.peer_app_aware);
        }
        Lookup::Plain { reason } => {
            info.state = TCPCRYPT_STATE_PLAIN;
            copy_cstr(&mut info.reason, reason);
        }
        Lookup::Pending => info.state = TCPCRYPT_STATE_PENDING,
        Lookup::Unknown => info.state = TCPCRYPT_STATE_UNKNOWN,
    }
}

fn finish(result: Result<Lookup, Error>, info: &mut TcpcryptInfo) -> c_int {
    match result {
        Ok(lookup) => {
            fill(info, &lookup);
            0
        }
        Err(e) => -e.errno(),
    }
}

/// Looks up the connection of TCP socket `fd`. See the header.
///
/// # Safety
/// `control_path` is NULL or a NUL-terminated string; `info` is NULL or
/// points to writable memory for one `struct tcpcrypt_info`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcpcrypt_lookup_fd(
    control_path: *const c_char,
    fd: c_int,
    wait_ms: c_int,
    timeout_ms: c_int,
    info: *mut TcpcryptInfo,
) -> c_int {
    guarded(|| {
        // SAFETY: the caller promises info is NULL or valid for writes.
        let Some(info) = (unsafe { info.as_mut() }) else {
            return -libc::EINVAL;
        };
        // SAFETY: the caller promises a NUL-terminated string or NULL.
        let path = unsafe { path_arg(control_path) };
        let client = client_for(path, timeout_ms);
        finish(client.lookup_raw_fd(fd, wait_arg(wait_ms)), info)
    })
}

/// # Safety
/// `sa` is NULL or points to `len` readable bytes.
unsafe fn sockaddr_arg(sa: *const libc::sockaddr, len: libc::socklen_t) -> Option<SocketAddr> {
    if sa.is_null() {
        return None;
    }
    let len = (len as usize).min(mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: sockaddr_storage is plain old data; all zero bytes is valid.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    // SAFETY: the caller promises len readable bytes at sa; the copy is
    // clamped to the size of storage, which is exclusively ours.
    unsafe {
        std::ptr::copy_nonoverlapping(
            sa.cast::<u8>(),
            (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
            len,
        )
    };
    addr::from_storage(&storage, len)
}

/// Looks up a connection by its two addresses. See the header.
///
/// # Safety
/// `local`/`remote` point to `local_len`/`remote_len` readable bytes;
/// `control_path` and `info` as for [`tcpcrypt_lookup_fd`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcpcrypt_lookup_addr(
    control_path: *const c_char,
    local: *const libc::sockaddr,
    local_len: libc::socklen_t,
    remote: *const libc::sockaddr,
    remote_len: libc::socklen_t,
    wait_ms: c_int,
    timeout_ms: c_int,
    info: *mut TcpcryptInfo,
) -> c_int {
    guarded(|| {
        // SAFETY: the caller promises info is NULL or valid for writes.
        let Some(info) = (unsafe { info.as_mut() }) else {
            return -libc::EINVAL;
        };
        // SAFETY: the caller promises local_len readable bytes at local.
        let Some(local) = (unsafe { sockaddr_arg(local, local_len) }) else {
            return -libc::EINVAL;
        };
        // SAFETY: as above, for remote.
        let Some(remote) = (unsafe { sockaddr_arg(remote, remote_len) }) else {
            return -libc::EINVAL;
        };
        // SAFETY: the caller promises a NUL-terminated string or NULL.
        let path = unsafe { path_arg(control_path) };
        let client = client_for(path, timeout_ms);
        finish(
            client.lookup_addrs_wait(local, remote, wait_arg(wait_ms)),
            info,
        )
    })
}

/// The old call. See the header for its exact contract.
///
/// # Safety
/// `optval` points to `*optlen` writable bytes; `optlen` is valid for
/// reads and writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcpcrypt_getsockopt(
    s: c_int,
    level: c_int,
    optname: c_int,
    optval: *mut c_void,
    optlen: *mut c_uint,
) -> c_int {
    let rc = guarded(|| {
        if level != libc::IPPROTO_TCP {
            return -libc::ENOPROTOOPT;
        }
        if optname != TCP_CRYPT_SESSID && optname != TCP_CRYPT_ENABLE {
            return -libc::ENOPROTOOPT;
        }
        if optval.is_null() || optlen.is_null() {
            return -libc::EFAULT;
        }
        // SAFETY: checked non-NULL; the caller promises it is valid.
        let room = unsafe { *optlen } as usize;
        let path = OLD_API_PATH
            .lock()
            .map(|guard| guard.clone())
            .unwrap_or_default();
        let client = client_for(path, 0);
        // Old programs ask right after connect(); give the handshake as long
        // as the call's own time limit to finish.
        let lookup = match client.lookup_raw_fd(s, DEFAULT_TIMEOUT) {
            Ok(lookup) => lookup,
            Err(e) => return -e.errno(),
        };
        let value: Vec<u8> = match (optname, &lookup) {
            (TCP_CRYPT_SESSID, Lookup::Tcpcrypt(session)) => session.session_id.as_bytes().to_vec(),
            (TCP_CRYPT_SESSID, Lookup::Pending) => return -libc::EBUSY,
            (TCP_CRYPT_SESSID, _) => return -libc::ENODATA,
            _ => c_int::from(lookup.session().is_some())
                .to_ne_bytes()
                .to_vec(),
        };
        let needed = value.len();
        // SAFETY: optlen checked non-NULL above.
        unsafe { *optlen = needed as c_uint };
        if room < needed {
            return -libc::ERANGE;
        }
        // SAFETY: the caller promises room (>= needed) writable bytes at optval.
        unsafe { std::ptr::copy_nonoverlapping(value.as_ptr(), optval.cast::<u8>(), needed) };
        0
    });
    if rc < 0 {
        set_errno(-rc);
        -1
    } else {
        0
    }
}

/// The old call, for the RFC 8548 section 3.5 controls and the RFC 8547
/// section 4.2 application-aware bit. See the header.
///
/// # Safety
/// `optval` is NULL or points to `optlen` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcpcrypt_setsockopt(
    s: c_int,
    level: c_int,
    optname: c_int,
    optval: *const c_void,
    optlen: c_uint,
) -> c_int {
    let rc = guarded(|| {
        if level != libc::IPPROTO_TCP {
            return -libc::ENOPROTOOPT;
        }
        if ![TCP_CRYPT_NOCACHE, TCP_CRYPT_RESUME, TCP_CRYPT_APP_SUPPORT].contains(&optname) {
            return -libc::ENOPROTOOPT;
        }
        if optval.is_null() {
            return -libc::EFAULT;
        }
        if (optlen as usize) < mem::size_of::<c_int>() {
            return -libc::EINVAL;
        }
        // SAFETY: checked non-NULL; the caller promises optlen (>= the size
        // of an int) readable bytes, with no alignment promised.
        let value = unsafe { optval.cast::<c_int>().read_unaligned() };
        let update = match optname {
            TCP_CRYPT_NOCACHE => PolicyUpdate {
                no_cache: Some(value != 0),
                ..PolicyUpdate::default()
            },
            TCP_CRYPT_RESUME => PolicyUpdate {
                no_resumption: Some(value == 0),
                ..PolicyUpdate::default()
            },
            _ => {
                // Unlike the two switches above, a value outside the
                // three defined ones may mean a mode added later: refuse it
                // rather than guess.
                let mode = match value {
                    TCP_CRYPT_APP_SUPPORT_OFF => AppAware::Off,
                    TCP_CRYPT_APP_SUPPORT_ON => AppAware::On,
                    TCP_CRYPT_APP_SUPPORT_MANDATORY => AppAware::Mandatory,
                    _ => return -libc::EINVAL,
                };
                PolicyUpdate {
                    app_aware: Some(mode),
                    ..PolicyUpdate::default()
                }
            }
        };
        let path = OLD_API_PATH
            .lock()
            .map(|guard| guard.clone())
            .unwrap_or_default();
        match client_for(path, 0).update_socket_policy(s, update) {
            Ok(_) => 0,
            Err(e) => -e.errno(),
        }
    });
    if rc < 0 {
        set_errno(-rc);
        -1
    } else {
        0
    }
}

/// The old call that set the control socket path for `tcpcrypt_getsockopt`.
///
/// # Safety
/// For `TCPCRYPT_PARAM_CTLPATH`, `val` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcpcrypt_setparam(param: c_int, val: *mut c_void) {
    let _ = guarded(|| {
        if param == TCPCRYPT_PARAM_CTLPATH {
            // SAFETY: the caller promises NULL or a NUL-terminated string.
            let path = unsafe { path_arg(val.cast::<c_char>()) };
            if let Ok(mut slot) = OLD_API_PATH.lock() {
                *slot = path;
            }
        }
        0
    });
}

/// A static, NUL-terminated explanation of an error code returned by this
/// library (negative or positive errno values are both accepted).
#[unsafe(no_mangle)]
pub extern "C" fn tcpcrypt_strerror(err: c_int) -> *const c_char {
    let text = panic::catch_unwind(|| errno_text(err.unsigned_abs())).unwrap_or(c"unknown error");
    text.as_ptr()
}

fn errno_text(errno: u32) -> &'static CStr {
    let Ok(errno) = c_int::try_from(errno) else {
        return c"unknown error";
    };
    match errno {
        0 => c"success",
        libc::ENOENT => c"tcpcryptd control socket not found (is tcpcryptd running?)",
        libc::ECONNREFUSED => {
            c"tcpcryptd control socket refused the connection (is tcpcryptd running?)"
        }
        libc::EACCES => {
            c"permission denied on the tcpcryptd control socket (is this user in its group?)"
        }
        libc::ETIMEDOUT => c"tcpcryptd did not answer within the timeout",
        libc::EPROTO => c"malformed or unexpected answer from tcpcryptd",
        libc::EPERM => c"tcpcryptd refused: the operation needs root",
        libc::EPROTONOSUPPORT => c"tcpcryptd does not speak this control protocol version",
        libc::EOPNOTSUPP => c"tcpcryptd does not know this operation",
        libc::EIO => c"internal error in tcpcryptd or libtcpcrypt",
        libc::ENOTSOCK => c"file descriptor is not a socket",
        libc::EPROTOTYPE => c"socket is not an IPv4 or IPv6 TCP socket",
        libc::ENOTCONN => c"TCP socket is not connected",
        libc::EBADF => c"bad file descriptor",
        libc::EINVAL => c"invalid argument",
        libc::EFAULT => c"NULL pointer argument",
        libc::ERANGE => c"buffer too small (needed length stored in *optlen)",
        libc::ENOPROTOOPT => c"option not supported by tcpcrypt_getsockopt/tcpcrypt_setsockopt",
        libc::EISCONN => c"socket already connected: set the option before connect()",
        libc::ENOSPC => c"tcpcryptd's policy table is full",
        libc::ENODATA => c"connection is not encrypted with tcpcrypt",
        libc::EBUSY => c"tcpcrypt handshake still in progress",
        libc::ECONNRESET | libc::EPIPE => c"tcpcryptd closed the control connection",
        libc::ENAMETOOLONG => c"control socket path empty or too long",
        libc::EBADMSG => c"malformed or missing authentication header from the server",
        libc::EKEYREJECTED => c"the server did not prove that it knows the password verifier",
        _ => c"unknown error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strerror_accepts_negative_and_positive_codes() {
        let neg = tcpcrypt_strerror(-libc::ETIMEDOUT);
        let pos = tcpcrypt_strerror(libc::ETIMEDOUT);
        assert_eq!(neg, pos);
        // SAFETY: tcpcrypt_strerror returns a static NUL-terminated string.
        let text = unsafe { CStr::from_ptr(neg) }.to_str().expect("ascii");
        assert!(text.contains("timeout"));
    }

    #[test]
    fn strerror_of_extreme_values_is_unknown() {
        for code in [c_int::MIN, c_int::MAX, 99_999] {
            // SAFETY: tcpcrypt_strerror returns a static NUL-terminated string.
            let text = unsafe { CStr::from_ptr(tcpcrypt_strerror(code)) };
            assert_eq!(text, c"unknown error");
        }
    }

    #[test]
    fn copy_cstr_truncates_on_a_character_boundary() {
        let mut dst = [1 as c_char; 4];
        copy_cstr(&mut dst, "aé€");
        // "a" (1 byte) + "é" (2 bytes) fit in 3; "€" does not.
        assert_eq!(dst[3], 0);
        let mut small = [1 as c_char; 3];
        copy_cstr(&mut small, "aé");
        assert_eq!(small, [b'a' as c_char, 0, 1]);
    }
}
