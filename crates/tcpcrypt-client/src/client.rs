//! The Rust API: a [`Client`] names the control socket and the time limit.
//! A lookup whose outcome is settled is answered from the daemon's
//! published session table (`crate::table`) when this process may read
//! it. Other read-only questions travel on a connection from the process's pool
//! (`crate::pool`), reconnecting by themselves after a daemon restart;
//! questions that change state open a connection of their own. A client
//! itself holds no state that could go stale across a restart or a `fork`.

use std::env;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::addr;
use crate::error::Error;
use tcpcrypt_control::answer;
use tcpcrypt_control::{
    Connection, DaemonVersion, Lookup, MAX_WAIT, Policy, PolicyScope, PolicyUpdate, Request,
    normalize_addr,
};

use crate::table;
use crate::transport::{self, Reuse};

/// Where tcpcryptd listens unless told otherwise.
pub const DEFAULT_CONTROL_PATH: &str = "/run/tcpcrypt/control.sock";

/// Environment variable that overrides [`DEFAULT_CONTROL_PATH`].
pub const CONTROL_PATH_ENV: &str = "TCPCRYPT_CONTROL";

/// How long a call may take, unless the caller sets another limit: short,
/// because an unreachable daemon must not stall a web server worker.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

const MAX_LOOKUP_ANSWER: usize = 64 * 1024;
/// Room for a few hundred thousand connections in one `list` answer.
const MAX_LIST_ANSWER: usize = 256 * 1024 * 1024;

/// The control socket path: `explicit` if given, else `$TCPCRYPT_CONTROL` if
/// set and non-empty, else [`DEFAULT_CONTROL_PATH`].
pub fn control_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_path_buf();
    }
    match env::var_os(CONTROL_PATH_ENV) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(DEFAULT_CONTROL_PATH),
    }
}

/// A handle on tcpcryptd's control socket.
///
/// Every call returns within the client's timeout (plus, for the `*_wait`
/// lookups, the requested wait); none panics on anything the daemon sends.
#[derive(Debug, Clone)]
pub struct Client {
    path: PathBuf,
    timeout: Duration,
    reuse: bool,
    table: bool,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A client of the socket named by `$TCPCRYPT_CONTROL` or the default path.
    pub fn new() -> Self {
        Self {
            path: control_path(None),
            timeout: DEFAULT_TIMEOUT,
            reuse: true,
            table: true,
        }
    }

    /// A client of the socket at `path`.
    pub fn with_control_path(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            timeout: DEFAULT_TIMEOUT,
            reuse: true,
            table: true,
        }
    }

    /// Sets the time limit for each call (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether read-only questions (`lookup`, `version`, `list`) may use,
    /// and leave behind, an open connection from the process's pool
    /// (default yes). With `false` each call connects anew, as before the
    /// pool existed: for a comparison, or a program that wants no socket
    /// open between calls.
    pub fn reuse_connections(mut self, reuse: bool) -> Self {
        self.reuse = reuse;
        self
    }

    /// Whether lookups may be answered from the session table the daemon
    /// publishes beside its socket (default yes; see `crate::table`).
    /// Answers are the same either way; with `false` every lookup asks
    /// the daemon: for a comparison.
    pub fn read_table(mut self, read: bool) -> Self {
        self.table = read;
        self
    }

    pub fn control_path(&self) -> &Path {
        &self.path
    }

    pub fn time_limit(&self) -> Duration {
        self.timeout
    }

    /// Looks up a connection by its addresses as seen on this host
    /// (`local` = `getsockname`, `remote` = `getpeername`).
    pub fn lookup_addrs(&self, local: SocketAddr, remote: SocketAddr) -> Result<Lookup, Error> {
        self.lookup_addrs_wait(local, remote, Duration::ZERO)
    }

    /// Like [`Client::lookup_addrs`], but if the handshake is still running
    /// the daemon holds its answer for up to `wait` (at most 10 s). Returns
    /// within `wait` plus the client's timeout.
    pub fn lookup_addrs_wait(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        wait: Duration,
    ) -> Result<Lookup, Error> {
        if self.table
            && let Some(settled) = table::lookup(&self.path, local, remote)
        {
            return Ok(settled);
        }
        let wait = wait.min(MAX_WAIT);
        let request = Request::Lookup {
            local: normalize_addr(local),
            remote: normalize_addr(remote),
            wait,
        };
        let line = self.exchange(&request, wait, MAX_LOOKUP_ANSWER)?;
        Ok(answer::decode_lookup(&line)?)
    }

    /// Looks up the connection of a connected TCP socket (a `TcpStream` or
    /// any other file descriptor); the library reads its addresses itself.
    pub fn lookup_fd(&self, socket: impl AsFd) -> Result<Lookup, Error> {
        self.lookup_raw_fd(socket.as_fd().as_raw_fd(), Duration::ZERO)
    }

    /// [`Client::lookup_fd`] with a wait for a pending handshake, as in
    /// [`Client::lookup_addrs_wait`].
    pub fn lookup_fd_wait(&self, socket: impl AsFd, wait: Duration) -> Result<Lookup, Error> {
        self.lookup_raw_fd(socket.as_fd().as_raw_fd(), wait)
    }

    /// For the C ABI, where the descriptor may be anything, even invalid.
    pub(crate) fn lookup_raw_fd(&self, fd: RawFd, wait: Duration) -> Result<Lookup, Error> {
        if fd < 0 {
            return Err(Error::Socket {
                fd,
                source: std::io::Error::from_raw_os_error(libc::EBADF),
            });
        }
        let (local, remote) = addr::socket_pair(fd)?;
        self.lookup_addrs_wait(local, remote, wait)
    }

    /// Every connection the daemon tracks.
    pub fn list(&self) -> Result<Vec<Connection>, Error> {
        let line = self.exchange(&Request::List, Duration::ZERO, MAX_LIST_ANSWER)?;
        Ok(answer::decode_list(&line)?)
    }

    /// The daemon's version: a cheap health check.
    pub fn version(&self) -> Result<DaemonVersion, Error> {
        let line = self.exchange(&Request::Version, Duration::ZERO, MAX_LOOKUP_ANSWER)?;
        Ok(answer::decode_version(&line)?)
    }

    /// Makes the daemon forget every cached resumption secret, so the next
    /// connection to each peer runs a fresh key exchange. Only root may do
    /// this (the daemon answers `permission_denied` to others). Returns how
    /// many secrets were forgotten.
    pub fn flush_resumption(&self) -> Result<u64, Error> {
        let line = self.exchange(&Request::FlushResumption, Duration::ZERO, MAX_LOOKUP_ANSWER)?;
        Ok(answer::decode_flushed(&line)?)
    }

    /// Registers `policy` for the connections of the socket bound to
    /// `local` (RFC 8548 section 3.5, RFC 8547 section 4.2): for
    /// [`PolicyScope::Connect`], call it after `bind` and before `connect`;
    /// for [`PolicyScope::Listen`], before the first peer connects. An
    /// unspecified address matches any local address with that port.
    /// Members of the control socket's group may do this: such a policy
    /// makes sessions slower or less cached, never weaker. Only
    /// [`crate::AppAware::Mandatory`], which can turn encryption off, takes root
    /// (the daemon answers others `permission_denied`).
    pub fn set_policy(
        &self,
        scope: PolicyScope,
        local: SocketAddr,
        policy: Policy,
    ) -> Result<(), Error> {
        self.update_policy(scope, local, PolicyUpdate::from(policy))
    }

    /// [`Client::set_policy`] for a socket: registers for its local
    /// endpoint, as a listener if it listens already, else for its next
    /// `connect`. A socket with no port yet is bound to a kernel-chosen
    /// port first. Returns the endpoint registered.
    pub fn set_socket_policy(
        &self,
        socket: impl AsFd,
        policy: Policy,
    ) -> Result<SocketAddr, Error> {
        self.update_socket_policy(socket.as_fd().as_raw_fd(), PolicyUpdate::from(policy))
    }

    /// For the C ABI, where one `setsockopt` sets one field and the
    /// descriptor may be anything.
    pub(crate) fn update_socket_policy(
        &self,
        fd: RawFd,
        update: PolicyUpdate,
    ) -> Result<SocketAddr, Error> {
        if fd < 0 {
            return Err(Error::Socket {
                fd,
                source: std::io::Error::from_raw_os_error(libc::EBADF),
            });
        }
        let (local, listening) = addr::policy_endpoint(fd)?;
        let scope = if listening {
            PolicyScope::Listen
        } else {
            PolicyScope::Connect
        };
        self.update_policy(scope, local, update)?;
        Ok(local)
    }

    fn update_policy(
        &self,
        scope: PolicyScope,
        local: SocketAddr,
        update: PolicyUpdate,
    ) -> Result<(), Error> {
        let request = Request::SetPolicy {
            scope,
            local: normalize_addr(local),
            update,
        };
        let line = self.exchange(&request, Duration::ZERO, MAX_LOOKUP_ANSWER)?;
        Ok(answer::decode_set_policy(&line)?)
    }

    /// Removes the policy registered for `scope` and exactly `local`;
    /// returns whether there was one.
    pub fn clear_policy(&self, scope: PolicyScope, local: SocketAddr) -> Result<bool, Error> {
        let request = Request::ClearPolicy {
            scope,
            local: normalize_addr(local),
        };
        let line = self.exchange(&request, Duration::ZERO, MAX_LOOKUP_ANSWER)?;
        Ok(answer::decode_cleared(&line)?)
    }

    fn exchange(&self, request: &Request, wait: Duration, max: usize) -> Result<Vec<u8>, Error> {
        let limit = self.timeout.saturating_add(wait);
        let start = Instant::now();
        let reuse = match request {
            Request::Lookup { .. } | Request::Version | Request::List if self.reuse => {
                Reuse::Pooled
            }
            Request::Lookup { .. } | Request::Version | Request::List => Reuse::Fresh,
            Request::FlushResumption | Request::SetPolicy { .. } | Request::ClearPolicy { .. } => {
                Reuse::Fresh
            }
        };
        // An absurd limit (Duration::MAX) would overflow Instant; cap it at a
        // day, which is "no practical limit" for a local socket.
        let deadline = start + limit.min(Duration::from_secs(86_400));
        transport::exchange(
            &self.path,
            request.encode().as_bytes(),
            deadline,
            limit,
            max,
            reuse,
        )
    }
}
