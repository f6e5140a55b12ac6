//! Open control connections kept between calls, so that a process asking
//! once per connection it serves (a web server) pays for a connect, and the
//! daemon for an accept and a thread hand-off, only now and then.
//!
//! One pool per process, shared by every [`crate::Client`] and the C ABI,
//! keyed by socket path. A connection is lent to one call at a time, so
//! answers never interleave and a lookup that waits for a handshake holds
//! up no other caller; callers that find the pool empty connect afresh and
//! leave their connection behind, up to [`MAX_IDLE`].
//!
//! What may go stale, and how each is caught:
//! - the daemon closed the connection (its idle timeout, eviction when its
//!   client slots are full, a restart): [`take`] skips connections that
//!   are readable or hung up, and the transport retries once on a fresh
//!   connection if one is closed under it before any answer;
//! - the process forked, or changed its user or group: a connection is
//!   only lent to the process and credentials that opened it, so a child
//!   never shares a socket with its parent and a process that dropped
//!   privileges never asks with the rights it had before.
//!
//! The lock is only ever tried, never waited for: a caller that finds it
//! held connects afresh. This keeps a worker from queueing behind another,
//! and a child forked while another thread held the lock from deadlocking.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, TryLockError};

/// Idle connections kept per process, over all paths: enough for the
/// lookups one web server process makes at once on a small machine, few
/// enough that many processes stay well under the daemon's client limit.
pub const MAX_IDLE: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Owner {
    pid: u32,
    uid: u32,
    gid: u32,
}

impl Owner {
    fn current() -> Owner {
        Owner {
            pid: std::process::id(),
            // SAFETY: geteuid and getegid take no arguments and cannot fail.
            uid: unsafe { libc::geteuid() },
            // SAFETY: as above.
            gid: unsafe { libc::getegid() },
        }
    }
}

struct Idle {
    path: PathBuf,
    owner: Owner,
    fd: OwnedFd,
}

static IDLE: Mutex<Vec<Idle>> = Mutex::new(Vec::new());

fn try_lock() -> Option<MutexGuard<'static, Vec<Idle>>> {
    match IDLE.try_lock() {
        Ok(guard) => Some(guard),
        // Every change under the lock is one push or remove.
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// An open connection to `path` that this process and its current
/// credentials opened and that the daemon has not closed, if one is idle.
pub fn take(path: &Path) -> Option<OwnedFd> {
    let me = Owner::current();
    let mut idle = try_lock()?;
    // Connections of a parent process or of other credentials are never
    // lent; closing them here closes only this process's copy.
    idle.retain(|c| c.owner == me);
    while let Some(i) = idle.iter().rposition(|c| c.path == path) {
        let conn = idle.remove(i);
        if is_quiet(&conn.fd) {
            return Some(conn.fd);
        }
    }
    None
}

/// Keeps `fd`, connected to `path` and between requests, for a later call,
/// in place of the longest idle connection if the pool is full; closes it
/// if the pool is busy.
pub fn put(path: &Path, fd: OwnedFd) {
    let Some(mut idle) = try_lock() else {
        return;
    };
    if idle.len() >= MAX_IDLE {
        // The oldest is the likeliest to have been closed by the daemon's
        // idle timeout, or to belong to a socket no longer asked.
        idle.remove(0);
    }
    idle.push(Idle {
        path: path.to_path_buf(),
        owner: Owner::current(),
        fd,
    });
}

/// Idle connections held, for tests.
#[cfg(test)]
fn held(path: &Path) -> usize {
    try_lock().map_or(0, |idle| idle.iter().filter(|c| c.path == path).count())
}

/// Whether nothing is waiting on `fd`: between requests the daemon sends
/// nothing, so anything readable is its end-of-file or junk, and either
/// way the connection is no use.
fn is_quiet(fd: &OwnedFd) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: pfd is one live pollfd, matching the count of 1; timeout 0 never blocks.
    let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
    rc == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    fn owned(s: UnixStream) -> OwnedFd {
        OwnedFd::from(s)
    }

    /// The pool is one per process: tests that look at it take turns, so
    /// none finds the lock busy and its connection closed instead of kept.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[test]
    fn a_connection_is_lent_again_only_while_the_daemon_keeps_it_open() {
        let _serial = serial();
        let path = Path::new("/nonexistent/pool-test-quiet.sock");
        let (ours, theirs) = UnixStream::pair().expect("pair");
        put(path, owned(ours));
        assert_eq!(held(path), 1);
        let fd = take(path).expect("an open, quiet connection is lent");
        assert_eq!(held(path), 0);
        put(path, fd);
        drop(theirs);
        assert!(
            take(path).is_none(),
            "a connection the peer closed was lent"
        );
        assert_eq!(held(path), 0, "the closed connection was kept");
    }

    #[test]
    fn a_connection_with_unread_bytes_is_dropped() {
        let _serial = serial();
        let path = Path::new("/nonexistent/pool-test-junk.sock");
        let (ours, mut theirs) = UnixStream::pair().expect("pair");
        put(path, owned(ours));
        theirs.write_all(b"late answer\n").expect("write");
        assert!(
            take(path).is_none(),
            "a late answer would be read as the next"
        );
    }

    #[test]
    fn connections_are_lent_only_for_their_own_path() {
        let _serial = serial();
        let (a, b) = (
            Path::new("/nonexistent/pool-test-a.sock"),
            Path::new("/nonexistent/pool-test-b.sock"),
        );
        let (ours, _theirs) = UnixStream::pair().expect("pair");
        put(a, owned(ours));
        assert!(take(b).is_none());
        assert!(take(a).is_some());
    }

    #[test]
    fn a_connection_opened_by_other_credentials_is_never_lent() {
        let _serial = serial();
        let path = Path::new("/nonexistent/pool-test-owner.sock");
        let (ours, _theirs) = UnixStream::pair().expect("pair");
        let mut other = Owner::current();
        other.pid = other.pid.wrapping_add(1);
        if let Some(mut idle) = try_lock() {
            idle.push(Idle {
                path: path.to_path_buf(),
                owner: other,
                fd: owned(ours),
            });
        }
        assert!(take(path).is_none(), "a parent's connection was lent");
        assert_eq!(held(path), 0);
    }
}
