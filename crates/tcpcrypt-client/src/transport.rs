//! One request/answer exchange on the control socket that never outlives its
//! deadline: a non-blocking socket, `poll` before every wait, and
//! `MSG_NOSIGNAL` so a daemon that hangs up cannot raise `SIGPIPE` in the
//! host process (a C program or Apache, which do not ignore it).
//!
//! Read-only questions reuse a connection from the process's pool, so a
//! lookup is one write and one read on an open socket instead of a
//! connect, an accept and a thread hand-off in the daemon.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, ProtocolError};
use crate::pool;

/// Whether an exchange may use, and then keep, a connection from this
/// process's pool (see [`crate::pool`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reuse {
    /// Questions that change nothing (`lookup`, `version`, `list`).
    Pooled,
    /// Everything else: a new connection, so the daemon judges the caller's
    /// credentials as they are now, not as they were when a pooled
    /// connection was opened.
    Fresh,
}

/// Sends `request` and returns the first answer line, without its newline.
///
/// `deadline` bounds the whole exchange, including a second attempt on a
/// fresh connection when a pooled one turns out to have been closed by the
/// daemon (idle timeout, eviction, restart); `limit` is only reported in the
/// timeout error. Answers longer than `max_answer` bytes are refused.
pub fn exchange(
    path: &Path,
    request: &[u8],
    deadline: Instant,
    limit: Duration,
    max_answer: usize,
    reuse: Reuse,
) -> Result<Vec<u8>, Error> {
    let ctx = Ctx {
        path,
        deadline,
        limit,
    };
    if reuse == Reuse::Pooled
        && let Some(fd) = pool::take(path)
    {
        match ctx.talk(fd.as_raw_fd(), request, max_answer) {
            Ok(Answered { line, clean }) => {
                if clean {
                    pool::put(path, fd);
                }
                return Ok(line);
            }
            // Closed before the daemon said anything: the request cannot
            // have been answered, and asking again is safe for the
            // read-only requests that are pooled.
            Err(Failed::Closed(_)) => {}
            Err(Failed::Other(err)) => return Err(err),
        }
    }
    let fd = ctx.connect()?;
    let Answered { line, clean } = ctx
        .talk(fd.as_raw_fd(), request, max_answer)
        .map_err(Failed::into_error)?;
    if reuse == Reuse::Pooled && clean {
        pool::put(path, fd);
    }
    Ok(line)
}

/// An answer line, and whether the connection is fit for another request
/// (nothing arrived after the newline).
struct Answered {
    line: Vec<u8>,
    clean: bool,
}

enum Failed {
    /// The daemon closed the connection before sending a byte.
    Closed(Error),
    Other(Error),
}

impl Failed {
    fn into_error(self) -> Error {
        match self {
            Failed::Closed(err) | Failed::Other(err) => err,
        }
    }
}

fn is_hangup(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EPIPE) | Some(libc::ECONNRESET) | Some(libc::ENOTCONN)
    )
}

fn is_retry(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR))
}

struct Ctx<'a> {
    path: &'a Path,
    deadline: Instant,
    limit: Duration,
}

impl Ctx<'_> {
    fn timeout(&self) -> Error {
        Error::Timeout {
            path: self.path.to_path_buf(),
            limit: self.limit,
        }
    }

    fn io(&self, source: io::Error) -> Error {
        Error::Io {
            path: self.path.to_path_buf(),
            source,
        }
    }

    fn connect_failed(&self, source: io::Error) -> Error {
        let path = self.path.to_path_buf();
        match source.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ECONNREFUSED) => {
                Error::DaemonNotRunning { path, source }
            }
            Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied { path },
            _ => Error::Connect { path, source },
        }
    }

    /// One request and its answer on a connected socket.
    fn talk(&self, raw: RawFd, request: &[u8], max_answer: usize) -> Result<Answered, Failed> {
        let mut sent = 0;
        while sent < request.len() {
            let rest = &request[sent..];
            // SAFETY: rest is a live slice; send reads at most rest.len() bytes from it.
            let n = unsafe {
                libc::send(
                    raw,
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EAGAIN) {
                    // The daemon is behind on reading: wait for room.
                    self.wait_ready(raw, libc::POLLOUT).map_err(Failed::Other)?;
                    continue;
                }
                if is_retry(&err) {
                    continue;
                }
                if is_hangup(&err) {
                    return Err(Failed::Closed(self.io(err)));
                }
                return Err(Failed::Other(self.io(err)));
            }
            sent += n as usize;
        }

        let mut answer = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            self.wait_ready(raw, libc::POLLIN).map_err(Failed::Other)?;
            // SAFETY: chunk is a live buffer of chunk.len() bytes that recv may fill.
            let n = unsafe {
                libc::recv(
                    raw,
                    chunk.as_mut_ptr().cast(),
                    chunk.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if is_retry(&err) {
                    continue;
                }
                if answer.is_empty() && is_hangup(&err) {
                    return Err(Failed::Closed(self.io(err)));
                }
                return Err(Failed::Other(self.io(err)));
            }
            if n == 0 {
                let err = ProtocolError::Truncated.into();
                return Err(if answer.is_empty() {
                    Failed::Closed(err)
                } else {
                    Failed::Other(err)
                });
            }
            let got = &chunk[..n as usize];
            let end = got.iter().position(|&b| b == b'\n');
            answer.extend_from_slice(&got[..end.unwrap_or(got.len())]);
            if answer.len() > max_answer {
                return Err(Failed::Other(
                    ProtocolError::TooLong { limit: max_answer }.into(),
                ));
            }
            if let Some(end) = end {
                return Ok(Answered {
                    line: answer,
                    clean: end + 1 == got.len(),
                });
            }
        }
    }

    fn connect(&self) -> Result<OwnedFd, Error> {
        // SAFETY: sockaddr_un is plain old data; all zero bytes is a valid value.
        let mut sun: libc::sockaddr_un = unsafe { mem::zeroed() };
        sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = self.path.as_os_str().as_bytes();
        // One byte stays zero: the kernel wants a NUL-terminated path.
        if bytes.is_empty() || bytes.len() >= sun.sun_path.len() || bytes.contains(&0) {
            return Err(Error::Connect {
                path: self.path.to_path_buf(),
                source: io::Error::from_raw_os_error(libc::ENAMETOOLONG),
            });
        }
        for (dst, &src) in sun.sun_path.iter_mut().zip(bytes) {
            *dst = src as libc::c_char;
        }
        let sun_len = (mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t;

        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(self.connect_failed(io::Error::last_os_error()));
        }
        // SAFETY: raw is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        loop {
            // SAFETY: sun is a fully initialised sockaddr_un and sun_len is within it.
            let rc =
                unsafe { libc::connect(raw, (&sun as *const libc::sockaddr_un).cast(), sun_len) };
            if rc == 0 {
                return Ok(fd);
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                // A full listen backlog: the daemon is alive but not accepting.
                // Unix sockets offer nothing to poll for this, so retry briefly.
                Some(libc::EAGAIN) => {
                    let left = self.deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(self.timeout());
                    }
                    std::thread::sleep(left.min(Duration::from_millis(5)));
                }
                Some(libc::EINPROGRESS) => {
                    self.wait_ready(raw, libc::POLLOUT)?;
                    let mut soerr: libc::c_int = 0;
                    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
                    // SAFETY: soerr and len are live locals of the sizes given.
                    let rc = unsafe {
                        libc::getsockopt(
                            raw,
                            libc::SOL_SOCKET,
                            libc::SO_ERROR,
                            (&mut soerr as *mut libc::c_int).cast(),
                            &mut len,
                        )
                    };
                    if rc != 0 {
                        return Err(self.connect_failed(io::Error::last_os_error()));
                    }
                    if soerr != 0 {
                        return Err(self.connect_failed(io::Error::from_raw_os_error(soerr)));
                    }
                    return Ok(fd);
                }
                _ => return Err(self.connect_failed(err)),
            }
        }
    }

    /// Waits until `fd` is ready for `events` or the deadline passes.
    fn wait_ready(&self, fd: RawFd, events: libc::c_short) -> Result<(), Error> {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.timeout());
            }
            // Round up so a sub-millisecond remainder still waits instead of spinning.
            let ms = left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int;
            let mut pfd = libc::pollfd {
                fd,
                events,
                revents: 0,
            };
            // SAFETY: pfd is one live pollfd, matching the count of 1.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(self.io(err));
            }
            if rc > 0 {
                // Readiness, hang-up or error: the next send/recv says which.
                return Ok(());
            }
        }
    }
}
