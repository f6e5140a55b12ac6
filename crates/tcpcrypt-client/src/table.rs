//! Lookups from the session table the daemon publishes next to its control
//! socket (`tcpcrypt_control::table` owns the layout), so that asking about
//! a connection whose outcome is settled costs a hash probe and one system
//! call instead of a round trip to the daemon.
//!
//! The table only answers what it holds: a settled outcome (encrypted, or
//! plain TCP). Everything else, and every case where the table cannot be
//! used, returns `None` and the caller asks over the socket, which gives
//! the same answers: so nothing here can make a lookup wrong, only faster.
//!
//! What is checked, and when:
//! - permission: the file is root's, readable by the control group only,
//!   and mapped read-only; a process outside the group cannot open it (and
//!   the socket refuses it too);
//! - the daemon being alive: it holds a lock on the file for its whole
//!   life, which the kernel drops when it exits however it exits; each
//!   lookup checks the lock (one `fcntl`), and a table without its daemon
//!   is dropped, so a lookup with the daemon gone fails over the socket as
//!   before, and one after a restart maps the new daemon's table;
//! - credentials: a mapping is only used by the user and group that made
//!   it, so a process that dropped privileges does not keep reading with
//!   the rights it had;
//! - a missing or unreadable table is not looked for again for
//!   [`RETRY_AFTER`], so a host without one pays one failed `open` now and
//!   then, not per lookup.
//!
//! One cache per process, behind a lock that is only ever tried (as the
//! connection pool's), so a child forked while another thread held it
//! goes without the table rather than deadlocking.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tcpcrypt_control::Lookup;
use tcpcrypt_control::table::{Table, path_for};

use crate::pool::{credentials, try_lock_of};

/// How long a table that could not be used is not looked for again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A read-only shared mapping of a whole table file.
struct ReadOnlyMap {
    base: NonNull<AtomicU64>,
    words: usize,
}

// SAFETY: the mapping is read-only shared memory, read only through
// atomic loads; it is not tied to any thread.
unsafe impl Send for ReadOnlyMap {}
// SAFETY: as above.
unsafe impl Sync for ReadOnlyMap {}

impl ReadOnlyMap {
    fn of(file: &File) -> io::Result<ReadOnlyMap> {
        let len = file.metadata()?.len();
        let words = usize::try_from(len / 8).map_err(|_| io::Error::other("table too large"))?;
        if words == 0 || len % 8 != 0 {
            return Err(io::Error::other("not a session table (size)"));
        }
        // SAFETY: a fresh read-only mapping chosen by the kernel; checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                8 * words,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(ReadOnlyMap { base, words })
    }
}

impl Deref for ReadOnlyMap {
    type Target = [AtomicU64];

    fn deref(&self) -> &[AtomicU64] {
        // SAFETY: `base` maps `words` page-aligned words until drop; they
        // are only loaded atomically (a plain load on read-only memory).
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.words) }
    }
}

impl Drop for ReadOnlyMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `of` mapped; no reference outlives
        // the map (tables borrow it only inside a lookup).
        unsafe { libc::munmap(self.base.as_ptr().cast(), 8 * self.words) };
    }
}

/// A mapped table and the open file whose lock shows its daemon alive.
struct Mapped {
    table: Table<ReadOnlyMap>,
    file: File,
}

impl Mapped {
    fn open(path: &Path) -> Option<Mapped> {
        let file = File::open(path).ok()?;
        if !daemon_alive(&file) {
            return None;
        }
        let table = Table::open(ReadOnlyMap::of(&file).ok()?).ok()?;
        Some(Mapped { table, file })
    }
}

/// Whether the daemon that published the table still holds its lock.
fn daemon_alive(file: &File) -> bool {
    let (start, len) = tcpcrypt_control::table::LIVENESS_LOCK;
    // SAFETY: flock is plain old data; all zero bytes is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_RDLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start as libc::off_t;
    fl.l_len = len as libc::off_t;
    // SAFETY: fcntl(F_OFD_GETLK) reads and writes a live flock.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    rc == 0 && i32::from(fl.l_type) == libc::F_WRLCK
}

enum State {
    Mapped(Arc<Mapped>),
    Unusable { until: Instant },
}

struct Cached {
    socket: PathBuf,
    credentials: (u32, u32),
    state: State,
}

static CACHE: Mutex<Vec<Cached>> = Mutex::new(Vec::new());

/// The table of the daemon at `socket`, mapped once per process and
/// credentials, if the daemon publishes one this process may read. The
/// lock is held only to copy or store a cache entry; the liveness check
/// and any (re)mapping happen outside it.
fn table_for(socket: &Path) -> Option<Arc<Mapped>> {
    let me = credentials();
    let cached = {
        let cache = try_lock_of(&CACHE)?;
        cache
            .iter()
            .find(|c| c.socket == socket && c.credentials == me)
            .map(|c| match &c.state {
                State::Mapped(m) => Ok(m.clone()),
                State::Unusable { until } => Err(*until),
            })
    };
    match cached {
        Some(Ok(m)) if daemon_alive(&m.file) => return Some(m),
        Some(Err(until)) if Instant::now() < until => return None,
        _ => {}
    }
    let state = match Mapped::open(&path_for(socket)) {
        Some(m) => State::Mapped(Arc::new(m)),
        None => State::Unusable {
            until: Instant::now() + RETRY_AFTER,
        },
    };
    let found = match &state {
        State::Mapped(m) => Some(m.clone()),
        State::Unusable { .. } => None,
    };
    if let Some(mut cache) = try_lock_of(&CACHE) {
        let entry = Cached {
            socket: socket.to_path_buf(),
            credentials: me,
            state,
        };
        match cache
            .iter_mut()
            .find(|c| c.socket == socket && c.credentials == me)
        {
            Some(slot) => *slot = entry,
            None => cache.push(entry),
        }
    }
    found
}

/// The settled outcome of a connection from the table of the daemon at
/// `socket`, or `None`: ask the daemon.
pub fn lookup(socket: &Path, local: SocketAddr, remote: SocketAddr) -> Option<Lookup> {
    table_for(socket)?.table.get(local, remote)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Aead, Client, Error, Role, Session, SessionId, Tep};
    use std::os::unix::fs::OpenOptionsExt;
    use tcpcrypt_control::table::{Geometry, Writer};

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    fn session(byte: u8) -> Session {
        Session {
            session_id: SessionId::from_bytes([byte; 33]),
            role: Role::B,
            tep: Tep::EcdheP256,
            aead: Aead::Aes256Gcm,
            resumed: true,
            peer_app_aware: false,
        }
    }

    /// A daemon's table as a file: written whole, then held under the lock
    /// a live daemon holds, for as long as the returned file is open.
    fn publish(path: &Path, entries: &[(SocketAddr, SocketAddr, Session)]) -> File {
        let g = Geometry::for_connections(16);
        let mem: Box<[AtomicU64]> = (0..g.words()).map(|_| AtomicU64::new(0)).collect();
        let table = Table::create(mem, g, (11, 12)).expect("table");
        let mut w = Writer::default();
        for (l, r, s) in entries {
            assert!(table.put(&mut w, *l, *r, &Lookup::<String>::Tcpcrypt(*s)));
        }
        let bytes: Vec<u8> = table
            .memory()
            .iter()
            .flat_map(|w| w.load(std::sync::atomic::Ordering::Relaxed).to_ne_bytes())
            .collect();
        let temp = path.with_extension("new");
        std::fs::write(&temp, bytes).expect("write table");
        let holder = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o640)
            .open(&temp)
            .expect("open table");
        lock(&holder);
        std::fs::rename(&temp, path).expect("publish");
        holder
    }

    fn lock(file: &File) {
        // SAFETY: flock is plain old data; all zero bytes is a valid value.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        let (start, len) = tcpcrypt_control::table::LIVENESS_LOCK;
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_start = start as libc::off_t;
        fl.l_len = len as libc::off_t;
        // SAFETY: fcntl(F_OFD_SETLK) reads a live flock.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
        assert_eq!(rc, 0, "lock: {}", io::Error::last_os_error());
    }

    fn socket_in(tag: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("tcpcrypt-table-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        (dir.join("control.sock"), dir)
    }

    /// No daemon listens on the socket: an answer can only come from the
    /// table, and anything the table lacks fails as a missing daemon.
    #[test]
    fn a_settled_lookup_is_read_from_the_table_alone_and_nothing_else_is() {
        let (socket, dir) = socket_in("settled");
        let (l, r) = (addr("10.0.0.1:80"), addr("10.0.0.2:40000"));
        let _daemon = publish(&path_for(&socket), &[(l, r, session(3))]);
        let client = Client::with_control_path(&socket);
        assert_eq!(
            client.lookup_addrs(l, r).expect("from the table"),
            Lookup::Tcpcrypt(session(3))
        );
        let mapped = (
            addr("[::ffff:10.0.0.1]:80"),
            addr("[::ffff:10.0.0.2]:40000"),
        );
        assert_eq!(
            client.lookup_addrs(mapped.0, mapped.1).expect("mapped"),
            Lookup::Tcpcrypt(session(3))
        );
        assert!(matches!(
            client.lookup_addrs(r, l),
            Err(Error::DaemonNotRunning { .. })
        ));
        assert!(matches!(
            client.clone().read_table(false).lookup_addrs(l, r),
            Err(Error::DaemonNotRunning { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_table_whose_daemon_died_is_not_believed_and_a_successors_is() {
        let (socket, dir) = socket_in("restart");
        let (l, r) = (addr("10.0.0.1:80"), addr("10.0.0.2:40001"));
        let first = publish(&path_for(&socket), &[(l, r, session(1))]);
        let client = Client::with_control_path(&socket);
        assert_eq!(
            client.lookup_addrs(l, r).expect("first"),
            Lookup::Tcpcrypt(session(1))
        );
        // Killed: the file stays, the lock goes with the process.
        drop(first);
        assert!(matches!(
            client.lookup_addrs(l, r),
            Err(Error::DaemonNotRunning { .. })
        ));
        // A successor's table is found once the pause after a failed look
        // has passed.
        let _second = publish(&path_for(&socket), &[(l, r, session(2))]);
        std::thread::sleep(RETRY_AFTER + Duration::from_millis(50));
        assert_eq!(
            client.lookup_addrs(l, r).expect("second"),
            Lookup::Tcpcrypt(session(2))
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_successor_that_replaced_the_table_is_followed_at_once() {
        let (socket, dir) = socket_in("replace");
        let (l, r) = (addr("10.0.0.1:80"), addr("10.0.0.2:40002"));
        let first = publish(&path_for(&socket), &[(l, r, session(4))]);
        let client = Client::with_control_path(&socket);
        assert_eq!(
            client.lookup_addrs(l, r).expect("first"),
            Lookup::Tcpcrypt(session(4))
        );
        let _second = publish(&path_for(&socket), &[(l, r, session(5))]);
        drop(first);
        assert_eq!(
            client.lookup_addrs(l, r).expect("second"),
            Lookup::Tcpcrypt(session(5))
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_damaged_table_sends_lookups_to_the_socket() {
        let (socket, dir) = socket_in("damaged");
        let path = path_for(&socket);
        std::fs::write(&path, [0x5a; 4096]).expect("write");
        let holder = File::options()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        lock(&holder);
        let (l, r) = (addr("10.0.0.1:80"), addr("10.0.0.2:40003"));
        assert!(matches!(
            Client::with_control_path(&socket).lookup_addrs(l, r),
            Err(Error::DaemonNotRunning { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }
}
