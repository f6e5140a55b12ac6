//! Small system-call wrappers the daemon needs and `std` lacks: an eventfd
//! to wake the packet thread, `poll`, peer credentials of a Unix socket,
//! group lookup and socket-file ownership, signal masks, and the shared
//! mapping and liveness lock of the session table.
//!
//! The `unsafe` for these lives here, each call wrapped in a safe function.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A counter descriptor that becomes readable when another thread calls
/// [`EventFd::wake`].
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd(2) with constant flags; result checked.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: `fd` is fresh and owned by nobody else.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the descriptor readable. Never blocks (the counter would have
    /// to reach 2^64 - 1 first).
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter.
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Waits until one of `fds` is readable or `timeout` passes; returns which
/// are readable.
pub fn poll_readable<const N: usize>(fds: [RawFd; N], timeout: Option<Duration>) -> [bool; N] {
    let mut pfds = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    let ms = poll_timeout_ms(timeout);
    // SAFETY: `pfds` is an array of N valid pollfd structures.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), N as libc::nfds_t, ms) };
    if rc <= 0 {
        return [false; N];
    }
    pfds.map(|p| p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0)
}

/// `poll`'s timeout argument: -1 to wait without end, else whole
/// milliseconds rounded up, so a deadline a fraction of a millisecond away
/// is not polled for in a busy loop, while zero stays zero (no wait).
fn poll_timeout_ms(timeout: Option<Duration>) -> i32 {
    match timeout {
        None => -1,
        Some(d) => i32::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX),
    }
}

/// The uid of the process at the other end of a Unix socket.
pub fn peer_uid(sock: &impl AsRawFd) -> io::Result<u32> {
    // SAFETY: ucred is plain data; all-zero is valid.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are live and sized for SO_PEERCRED.
    check(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok(cred.uid)
}

/// The gid of group `name`, or `None` if there is no such group.
pub fn group_id(name: &str) -> io::Result<Option<u32>> {
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: group is plain data; all-zero is valid.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: all pointers are live; `buf` is writable for its length.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok((!result.is_null()).then_some(grp.gr_gid))
}

/// chown(2) to root and `gid`.
pub fn chown_root_group(path: &Path, gid: u32) -> io::Result<()> {
    std::os::unix::fs::chown(path, Some(0), Some(gid))
}

/// Blocks SIGINT and SIGTERM in the calling thread and every thread it
/// spawns afterwards, so that [`wait_for_termination`] receives them.
pub fn block_termination_signals() -> io::Result<()> {
    let set = termination_set();
    // SAFETY: `set` is an initialised sigset_t.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

fn termination_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
    }
    set
}

/// Waits up to `timeout` for SIGINT or SIGTERM (blocked beforehand);
/// returns the signal's number if one came.
pub fn wait_for_termination(timeout: Duration) -> Option<i32> {
    let set = termination_set();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `set` and `ts` are live; no siginfo is requested.
    let rc = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    (rc > 0).then_some(rc)
}

/// The range the session table's liveness lock covers
/// ([`tcpcrypt_control::table::LIVENESS_LOCK`]).
fn lock_range(kind: libc::c_int) -> libc::flock {
    let (start, len) = tcpcrypt_control::table::LIVENESS_LOCK;
    // SAFETY: flock is plain old data; all zero bytes is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start as libc::off_t;
    fl.l_len = len as libc::off_t;
    fl
}

/// Takes an open-file-description write lock on `file`'s first byte; it
/// lasts until the file is closed (by us or by the kernel when we die).
pub fn write_lock(file: &std::fs::File) -> io::Result<()> {
    let fl = lock_range(libc::F_WRLCK);
    // SAFETY: fcntl(F_OFD_SETLK) reads a live flock.
    check(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) }).map(drop)
}

/// Whether another open file description holds a write lock on `file`'s
/// first byte (the sign of a live daemon behind a session table).
pub fn write_locked(file: &std::fs::File) -> io::Result<bool> {
    let mut fl = lock_range(libc::F_RDLCK);
    // SAFETY: fcntl(F_OFD_GETLK) reads and writes a live flock.
    check(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) })?;
    Ok(i32::from(fl.l_type) != libc::F_UNLCK)
}

/// Maps `bytes` of `file` shared and writable.
pub fn map_shared(file: &std::fs::File, bytes: usize) -> io::Result<std::ptr::NonNull<u8>> {
    // SAFETY: a fresh mapping chosen by the kernel; the result is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    std::ptr::NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))
}

/// Undoes [`map_shared`]; the caller must hold no reference into it.
pub fn unmap(base: std::ptr::NonNull<u8>, bytes: usize) {
    // SAFETY: `base` and `bytes` describe a mapping made by map_shared
    // that nothing refers to any more.
    unsafe { libc::munmap(base.as_ptr().cast(), bytes) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventfd_is_readable_after_wake_and_not_after_drain() {
        let e = EventFd::new().expect("eventfd");
        assert_eq!(
            poll_readable([e.as_raw_fd()], Some(Duration::ZERO)),
            [false]
        );
        e.wake();
        assert_eq!(poll_readable([e.as_raw_fd()], Some(Duration::ZERO)), [true]);
        e.drain();
        assert_eq!(
            poll_readable([e.as_raw_fd()], Some(Duration::ZERO)),
            [false]
        );
    }

    #[test]
    fn poll_timeouts_round_up_to_milliseconds_and_zero_does_not_wait() {
        assert_eq!(poll_timeout_ms(None), -1);
        assert_eq!(poll_timeout_ms(Some(Duration::ZERO)), 0);
        assert_eq!(poll_timeout_ms(Some(Duration::from_nanos(1))), 1);
        assert_eq!(poll_timeout_ms(Some(Duration::from_millis(1))), 1);
        assert_eq!(poll_timeout_ms(Some(Duration::from_micros(1500))), 2);
        assert_eq!(poll_timeout_ms(Some(Duration::from_secs(3))), 3000);
        assert_eq!(poll_timeout_ms(Some(Duration::MAX)), i32::MAX);
    }

    #[test]
    fn root_group_exists_and_nonsense_group_does_not() {
        assert_eq!(group_id("root").expect("lookup"), Some(0));
        assert_eq!(group_id("no-such-group-tcpcrypt-x").expect("lookup"), None);
    }

    #[test]
    fn peer_uid_of_a_socketpair_is_our_uid() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
        // SAFETY: getuid has no preconditions.
        let me = unsafe { libc::getuid() };
        assert_eq!(peer_uid(&a).expect("peercred"), me);
    }
}
