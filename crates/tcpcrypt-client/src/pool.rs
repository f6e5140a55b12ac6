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
//!   privileges never asks with the rights it had before;
//! - the program closed the descriptor (a daemon detaching closes them all)
//!   and reused its number: each connection's socket identity (device and
//!   inode) is kept, and a descriptor that no longer matches is neither
//!   written to nor closed.
//!
//! The lock is only ever tried, never waited for: a caller that finds it
//! held connects afresh. This keeps a worker from queueing behind another,
//! and a child forked while another thread held the lock from deadlocking.

use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
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
        let (uid, gid) = credentials();
        Owner {
            pid: std::process::id(),
            uid,
            gid,
        }
    }
}

/// The effective uid and gid: what the daemon judges a caller by, and so
/// what the pool and the session table's mapping are kept per.
pub(crate) fn credentials() -> (u32, u32) {
    // SAFETY: geteuid and getegid take no arguments and cannot fail.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// A socket's identity: a program may close every descriptor (as daemons
/// do when they detach) and reuse the number for a file of its own, which
/// the pool must then neither write to nor close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
}

impl Identity {
    fn of(fd: &OwnedFd) -> Option<Identity> {
        // SAFETY: stat is plain old data; all zero bytes is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: st is a live stat buffer; fstat only writes into it.
        let rc = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
        (rc == 0).then_some(Identity {
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }
}

struct Idle {
    path: PathBuf,
    owner: Owner,
    identity: Identity,
    fd: OwnedFd,
}

impl Idle {
    /// Whether the descriptor still is the socket the pool put away.
    fn is_ours(&self) -> bool {
        Identity::of(&self.fd) == Some(self.identity)
    }

    /// Closes the connection, unless the program has closed the descriptor
    /// and reused its number: that one is the program's, left alone.
    fn discard(self) {
        if !self.is_ours() {
            let _ = self.fd.into_raw_fd();
        }
    }
}

static IDLE: Mutex<Vec<Idle>> = Mutex::new(Vec::new());

/// Attempts at the lock before a caller goes without the pool.
const LOCK_TRIES: usize = 64;

/// The lock, if it can be had after a few attempts with a yield between
/// them. It is held for a few system calls at most, so a live holder lets
/// go at once; a lock that was held when this process was forked has no
/// holder left to release it, and is given up on rather than waited for.
fn try_lock() -> Option<MutexGuard<'static, Vec<Idle>>> {
    try_lock_of(&IDLE)
}

/// [`try_lock`] for any of the library's process-wide locks held as
/// briefly (the session table's cache uses it too).
pub(crate) fn try_lock_of<T>(lock: &'static Mutex<T>) -> Option<MutexGuard<'static, T>> {
    for _ in 0..LOCK_TRIES {
        match lock.try_lock() {
            Ok(guard) => return Some(guard),
            // Every change under the lock is one push or remove.
            Err(TryLockError::Poisoned(poisoned)) => return Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => std::thread::yield_now(),
        }
    }
    None
}

/// An open connection to `path` that this process and its current
/// credentials opened and that the daemon has not closed, if one is idle.
pub fn take(path: &Path) -> Option<OwnedFd> {
    let me = Owner::current();
    let mut idle = try_lock()?;
    // Connections of a parent process or of other credentials are never
    // lent; closing them here closes only this process's copy.
    let mut i = 0;
    while i < idle.len() {
        if idle[i].owner == me {
            i += 1;
        } else {
            idle.remove(i).discard();
        }
    }
    while let Some(i) = idle.iter().rposition(|c| c.path == path) {
        let conn = idle.remove(i);
        if conn.is_ours() && is_quiet(&conn.fd) {
            return Some(conn.fd);
        }
        conn.discard();
    }
    None
}

/// Keeps `fd`, connected to `path` and between requests, for a later call,
/// in place of the longest idle connection if the pool is full; closes it
/// if the pool is busy.
pub fn put(path: &Path, fd: OwnedFd) {
    let Some(identity) = Identity::of(&fd) else {
        return;
    };
    let Some(mut idle) = try_lock() else {
        return;
    };
    if idle.len() >= MAX_IDLE {
        // The oldest is the likeliest to have been closed by the daemon's
        // idle timeout, or to belong to a socket no longer asked.
        idle.remove(0).discard();
    }
    idle.push(Idle {
        path: path.to_path_buf(),
        owner: Owner::current(),
        identity,
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
    use std::os::fd::FromRawFd;
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

    /// A program that closes every descriptor and opens something else
    /// under the same number must get neither a lookup written into it nor
    /// its descriptor closed by the pool.
    #[test]
    fn a_descriptor_the_program_closed_and_reused_is_neither_lent_nor_closed() {
        let _serial = serial();
        let path = Path::new("/nonexistent/pool-test-reused.sock");
        let (ours, _theirs) = UnixStream::pair().expect("pair");
        let fd = owned(ours);
        let raw = fd.as_raw_fd();
        put(path, fd);
        let (other, mut other_peer) = UnixStream::pair().expect("pair");
        // SAFETY: closes the pooled descriptor behind the pool's back, as a
        // detaching daemon would, and puts the program's own socket there.
        unsafe {
            libc::close(raw);
            assert_eq!(libc::dup2(other.as_raw_fd(), raw), raw);
        }
        assert!(take(path).is_none(), "the program's socket was lent");
        // SAFETY: raw is the program's descriptor, which this test owns.
        let mut program = UnixStream::from(unsafe { OwnedFd::from_raw_fd(raw) });
        // Still open and untouched: nothing of a lookup reached the peer.
        program
            .write_all(b"x")
            .expect("the pool closed the program's socket");
        drop((program, other));
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut other_peer, &mut got).expect("read");
        assert_eq!(got, b"x");
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
            let fd = owned(ours);
            let identity = Identity::of(&fd).expect("fstat");
            idle.push(Idle {
                path: path.to_path_buf(),
                owner: other,
                identity,
                fd,
            });
        }
        assert!(take(path).is_none(), "a parent's connection was lent");
        assert_eq!(held(path), 0);
    }
}
