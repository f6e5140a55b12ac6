//! The control socket server.
//!
//! One thread accepts; each admitted client gets its own thread, one that
//! finished with an earlier client if one is waiting (see `LINGER`). Questions
//! reach the packet thread through [`EngineHandle`], which never makes the
//! packet thread wait for a client, except a `lookup` of a connection whose
//! outcome is settled: that is answered on the client's thread from the
//! outcomes the packet thread publishes.
//!
//! Hostile or broken local clients are bounded in two ways:
//!
//! - **A deadline per request, not per read.** A client has
//!   `--control-client-timeout` from its connect, or from its previous
//!   answer, to send a complete request line, and as long again to take each
//!   answer. A per-read timeout alone would let a client keep its slot for
//!   ever by sending one byte just before each read times out.
//! - **Eviction when full.** At most `MAX_CLIENTS` clients are served at
//!   once. When a new client arrives and every slot is taken, the client that
//!   has waited longest without completing a request is disconnected to make
//!   room; clients whose request is being answered are never evicted. A
//!   well-behaved client completes its request moments after connecting, so
//!   it is the last candidate for eviction, and slots full of slow clients
//!   cannot lock it out. Only when every slot is busy answering is a new
//!   client turned away with "too many control clients".
//!
//! Eviction was chosen over a single-threaded poll loop because a `lookup`
//! may wait up to `MAX_WAIT` for a handshake; a thread per client keeps that
//! wait a plain blocking receive, and the deadline plus eviction are enough
//! to keep the thread count bounded and honest clients served.
//!
//! The socket is bound inside a fresh directory only root can enter, given
//! its owner and mode there, and only then renamed to its public path, so
//! no other user can ever connect to it with the wrong permissions.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::ControlGroup;
use tcpcrypt_control::{
    Answer, DaemonVersion, ErrorCode, MAX_REQUEST_LINE as MAX_LINE, Refusal, Request, VERSION,
    answer::list_line,
};

use crate::control_protocol;
use crate::engine_api::PolicyError;
use crate::packet_loop::{EngineHandle, HandleError};
use crate::sys;

/// Clients served at once; see the module documentation for what happens
/// to more.
pub const MAX_CLIENTS: usize = 256;

/// How the server treats its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// Time to send each complete request, and to read each answer.
    pub timeout: Duration,
    /// Clients served at once.
    pub max_clients: usize,
}

impl ClientLimits {
    pub fn new(timeout: Duration) -> ClientLimits {
        ClientLimits {
            timeout,
            max_clients: MAX_CLIENTS,
        }
    }
}

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("creating directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("control socket {path} is in use by a running process (another tcpcryptd?)")]
    InUse { path: PathBuf },
    #[error("binding control socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("control group {group:?} does not exist")]
    NoGroup { group: String },
    #[error("looking up group {group:?}: {source}")]
    Group { group: String, source: io::Error },
    #[error("setting owner and mode of {path}: {source}")]
    Permissions { path: PathBuf, source: io::Error },
    #[error("creating the private directory {path} to bind the control socket in: {source}")]
    Staging { path: PathBuf, source: io::Error },
    #[error("moving the control socket from {from} to {path}: {source}")]
    Rename {
        from: PathBuf,
        path: PathBuf,
        source: io::Error,
    },
}

/// The bound socket, removed from the file system on drop.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

/// The control group's id (root's, with a warning, when the default group
/// does not exist).
pub fn resolve_group(group: &ControlGroup) -> Result<u32, ControlError> {
    match group {
        ControlGroup::Named(name) => match sys::group_id(name) {
            Ok(Some(gid)) => Ok(gid),
            Ok(None) => Err(ControlError::NoGroup {
                group: name.clone(),
            }),
            Err(source) => Err(ControlError::Group {
                group: name.clone(),
                source,
            }),
        },
        ControlGroup::Default => {
            let name = crate::config::DEFAULT_CONTROL_GROUP;
            match sys::group_id(name) {
                Ok(Some(gid)) => Ok(gid),
                _ => {
                    log::warn!(
                        "group {name:?} does not exist; control socket gets group root, so only root can query sessions (create the group or use --control-group)"
                    );
                    Ok(0)
                }
            }
        }
    }
}

impl ControlSocket {
    /// Creates the socket at `path` (and its directory), owned by root and
    /// the control group, mode 0660. A stale socket file from a dead
    /// instance is replaced; a live one is an error.
    pub fn bind(path: &Path, group: &ControlGroup) -> Result<ControlSocket, ControlError> {
        ControlSocket::bind_gid(path, resolve_group(group)?)
    }

    /// [`ControlSocket::bind`] with the group already resolved.
    pub fn bind_gid(path: &Path, gid: u32) -> Result<ControlSocket, ControlError> {
        if let Some(dir) = path.parent()
            && !dir.exists()
        {
            std::fs::create_dir_all(dir).map_err(|source| ControlError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        }
        if path.exists() && UnixStream::connect(path).is_ok() {
            return Err(ControlError::InUse {
                path: path.to_path_buf(),
            });
        }
        let listener = bind_private(path, gid)?;
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts the accept thread. The socket file stays until `self` drops.
    pub fn serve(
        &self,
        engine: EngineHandle,
        limits: ClientLimits,
    ) -> io::Result<std::thread::JoinHandle<()>> {
        let listener = self.listener.try_clone()?;
        std::thread::Builder::new()
            .name("control-accept".into())
            .spawn(move || accept_loop(listener, engine, limits))
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the socket at `path` with owner root:`gid` and mode 0660 without
/// ever exposing it otherwise: it is bound in a new directory of mode 0700
/// next to `path`, fixed up there, and renamed into place (replacing a
/// stale socket file atomically).
fn bind_private(path: &Path, gid: u32) -> Result<UnixListener, ControlError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(ControlError::Bind {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a file path"),
        });
    };
    let staging = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    // A directory of that name can only be left by a crashed instance with
    // our pid; nothing in it is worth keeping.
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(|source| ControlError::Staging {
            path: staging.clone(),
            source,
        })?;
    let result = bind_in(&staging.join(name), path, gid);
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn bind_in(temp: &Path, path: &Path, gid: u32) -> Result<UnixListener, ControlError> {
    let listener = UnixListener::bind(temp).map_err(|source| ControlError::Bind {
        path: temp.to_path_buf(),
        source,
    })?;
    let perm = |source| ControlError::Permissions {
        path: temp.to_path_buf(),
        source,
    };
    sys::chown_root_group(temp, gid).map_err(perm)?;
    std::fs::set_permissions(temp, std::fs::Permissions::from_mode(0o660)).map_err(perm)?;
    std::fs::rename(temp, path).map_err(|source| ControlError::Rename {
        from: temp.to_path_buf(),
        path: path.to_path_buf(),
        source,
    })?;
    Ok(listener)
}

/// One admitted client, as the accept thread sees it.
struct Slot {
    /// A second handle on the client's socket, to shut it down on eviction.
    stream: UnixStream,
    /// Since when the client has owed us a complete request; `None` while
    /// its request is being answered (it is then not evictable).
    waiting_since: Option<Instant>,
}

/// The admitted clients, shared by the accept thread and the client threads.
#[derive(Default)]
struct Clients {
    next_id: u64,
    slots: HashMap<u64, Slot>,
}

#[derive(Clone, Default)]
struct Registry(Arc<Mutex<Clients>>);

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Clients> {
        // The map stays consistent whatever a panicking holder was doing:
        // every change is a single insert, remove or field store.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits `stream`, evicting the client that has waited longest for a
    /// complete request if every slot is taken. `None` if every slot is
    /// busy answering.
    fn admit(&self, stream: &UnixStream, max: usize, now: Instant) -> io::Result<Option<u64>> {
        let handle = stream.try_clone()?;
        let mut clients = self.lock();
        if clients.slots.len() >= max {
            let oldest = clients
                .slots
                .iter()
                .filter_map(|(id, slot)| slot.waiting_since.map(|t| (t, *id)))
                .min();
            let Some((since, id)) = oldest else {
                return Ok(None);
            };
            if let Some(slot) = clients.slots.remove(&id) {
                log::debug!(
                    "control client evicted after {:?} without a complete request: all {max} slots taken",
                    now.saturating_duration_since(since)
                );
                let _ = slot.stream.shutdown(std::net::Shutdown::Both);
            }
        }
        let id = clients.next_id;
        clients.next_id += 1;
        clients.slots.insert(
            id,
            Slot {
                stream: handle,
                waiting_since: Some(now),
            },
        );
        Ok(Some(id))
    }

    fn set_waiting(&self, id: u64, since: Option<Instant>) {
        if let Some(slot) = self.lock().slots.get_mut(&id) {
            slot.waiting_since = since;
        }
    }

    fn remove(&self, id: u64) {
        self.lock().slots.remove(&id);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().slots.len()
    }
}

/// How long a client thread whose client has gone waits for the next one
/// before it exits. The client library keeps its connections open between
/// lookups, but opens new ones when several are asked at once or after one
/// timed out; without this, each would also cost a thread start and exit.
const LINGER: Duration = Duration::from_secs(10);

/// An admitted client waiting for a thread.
struct Job {
    stream: UnixStream,
    id: u64,
}

/// Client threads that have finished with their client and wait for the
/// next one. `waiting` counts them minus the jobs already queued for them:
/// the accept thread queues a job only while it is positive, so every
/// queued job has a thread to take it. Each thread waits on the condition
/// variable with its own deadline, so a burst of idle threads leaves
/// together, `LINGER` after each one's last client.
#[derive(Clone, Default)]
struct Idle(Arc<(Mutex<IdleState>, std::sync::Condvar)>);

#[derive(Default)]
struct IdleState {
    jobs: std::collections::VecDeque<Job>,
    waiting: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section is one counter change or one queue operation.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Idle {
    /// Called by a client thread that has finished its client: the next
    /// client, or `None` after `linger` without one (the thread then
    /// exits, no longer counted).
    fn next(&self, linger: Duration) -> Option<Job> {
        let (state, wake) = &*self.0;
        let deadline = Instant::now() + linger;
        let mut st = lock(state);
        st.waiting += 1;
        loop {
            // A job queued for us was counted off `waiting` already.
            if let Some(job) = st.jobs.pop_front() {
                return Some(job);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                st.waiting = st.waiting.saturating_sub(1);
                return None;
            }
            st = wake
                .wait_timeout(st, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Hands `job` to an idle thread, or gives it back if none waits.
    fn offer(&self, job: Job) -> Result<(), Job> {
        let (state, wake) = &*self.0;
        let mut st = lock(state);
        if st.waiting == 0 {
            return Err(job);
        }
        st.waiting -= 1;
        st.jobs.push_back(job);
        wake.notify_one();
        Ok(())
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        lock(&self.0.0).waiting
    }
}

fn accept_loop(listener: UnixListener, engine: EngineHandle, limits: ClientLimits) {
    let registry = Registry::default();
    let idle = Idle::default();
    for conn in listener.incoming() {
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                log::warn!("control socket accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let id = match registry.admit(&stream, limits.max_clients, Instant::now()) {
            Ok(Some(id)) => id,
            Ok(None) => {
                let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
                let e = Refusal::new(ErrorCode::Internal, "too many control clients");
                let _ = stream.write_all(format!("{}\n", e.to_line()).as_bytes());
                continue;
            }
            Err(e) => {
                log::warn!("control client: {e}");
                continue;
            }
        };
        let job = match idle.offer(Job { stream, id }) {
            Ok(()) => continue,
            Err(job) => job,
        };
        let (engine, clients, idle) = (engine.clone(), registry.clone(), idle.clone());
        let spawned = std::thread::Builder::new()
            .name("control-client".into())
            .spawn(move || {
                let mut next = Some(job);
                while let Some(Job { stream, id }) = next {
                    if let Err(e) = serve_client(&stream, id, &clients, &engine, limits.timeout) {
                        log::debug!("control client: {e}");
                    }
                    clients.remove(id);
                    drop(stream);
                    next = idle.next(LINGER);
                }
            });
        if let Err(e) = spawned {
            registry.remove(id);
            log::warn!("cannot start a control client thread: {e}");
        }
    }
}

/// Why no request line came.
#[derive(Debug)]
enum LineError {
    /// No newline within `MAX_LINE` bytes.
    TooLong,
    Io(io::Error),
}

/// Splits a client's byte stream into request lines, each of which must be
/// complete by a deadline however the bytes trickle in.
struct LineReader {
    pending: Vec<u8>,
    eof: bool,
}

impl LineReader {
    fn new() -> LineReader {
        LineReader {
            pending: Vec::with_capacity(512),
            eof: false,
        }
    }

    /// The next line without its newline; `Ok(None)` at the end of the
    /// stream. Bytes after the last newline at the end of the stream make a
    /// last line. `Err(Io(TimedOut))` once `deadline` passes.
    fn next_line(
        &mut self,
        mut stream: &UnixStream,
        deadline: Instant,
    ) -> Result<Option<Vec<u8>>, LineError> {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(i) = self.pending.iter().position(|b| *b == b'\n') {
                if i >= MAX_LINE {
                    return Err(LineError::TooLong);
                }
                let line = self.pending[..i].to_vec();
                self.pending.drain(..=i);
                return Ok(Some(line));
            }
            if self.pending.len() >= MAX_LINE {
                return Err(LineError::TooLong);
            }
            if self.eof {
                return Ok((!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending)));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(LineError::Io(timed_out()));
            }
            stream
                .set_read_timeout(Some(remaining))
                .map_err(LineError::Io)?;
            match stream.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(LineError::Io(timed_out())),
                Err(e) => return Err(LineError::Io(e)),
            }
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "client deadline passed (--control-client-timeout)",
    )
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Writes all of `data` by `deadline`, however slowly the client reads.
fn write_all_by(mut stream: &UnixStream, mut data: &[u8], deadline: Instant) -> io::Result<()> {
    while !data.is_empty() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(timed_out());
        }
        stream.set_write_timeout(Some(remaining))?;
        match stream.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Err(timed_out()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads away what the client already sent (at most 64 KiB, without
/// waiting), because closing a Unix socket with unread input resets the
/// connection and the client might then lose the error line we just sent.
fn discard_queued_input(mut stream: &UnixStream) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let mut chunk = [0u8; 8192];
    for _ in 0..8 {
        match stream.read(&mut chunk) {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
}

fn serve_client(
    stream: &UnixStream,
    id: u64,
    registry: &Registry,
    engine: &EngineHandle,
    timeout: Duration,
) -> io::Result<()> {
    let is_root = sys::peer_uid(stream).map(|uid| uid == 0).unwrap_or(false);
    let mut reader = LineReader::new();
    loop {
        let line = match reader.next_line(stream, Instant::now() + timeout) {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(()),
            Err(LineError::TooLong) => {
                let err = Refusal::unreadable(format!("request line longer than {MAX_LINE} bytes"));
                let text = format!("{}\n", err.to_line());
                write_all_by(stream, text.as_bytes(), Instant::now() + timeout)?;
                discard_queued_input(stream);
                return Ok(());
            }
            Err(LineError::Io(e)) => return Err(e),
        };
        registry.set_waiting(id, None);
        let (mut answer, close) = answer(&line, is_root, engine);
        answer.push('\n');
        write_all_by(stream, answer.as_bytes(), Instant::now() + timeout)?;
        if close {
            discard_queued_input(stream);
            return Ok(());
        }
        registry.set_waiting(id, Some(Instant::now()));
    }
}

/// The answer line for one request line, and whether to close afterwards.
fn answer(line: &[u8], is_root: bool, engine: &EngineHandle) -> (String, bool) {
    let request = std::str::from_utf8(line)
        .map_err(|_| Refusal::unreadable("request is not UTF-8"))
        .and_then(Request::parse);
    let request = match request {
        Ok(r) => r,
        Err(e) => return (e.to_line(), e.close),
    };
    if request.needs_root() && !is_root {
        let why = match request {
            Request::SetPolicy { .. } => {
                "mandatory application-aware mode turns encryption off for peers without \
                 the a bit and needs uid 0"
            }
            _ => "this operation changes daemon state and needs uid 0",
        };
        let e = Refusal::new(ErrorCode::PermissionDenied, why);
        return (e.to_line(), false);
    }
    let internal = |e: HandleError| Refusal::new(ErrorCode::Internal, e.to_string()).to_line();
    let line = match request {
        Request::Version => Answer::<String>::Version(DaemonVersion {
            daemon: format!("tcpcryptd {}", env!("CARGO_PKG_VERSION")),
            supported: vec![VERSION],
        })
        .to_line(),
        Request::Lookup {
            local,
            remote,
            wait,
        } => match engine.lookup(local, remote, wait) {
            Ok(state) => Answer::Lookup(state).to_line(),
            Err(e) => internal(e),
        },
        Request::List => match engine.list() {
            Ok(conns) => list_line(conns.iter().map(|c| c.row())),
            Err(e) => internal(e),
        },
        Request::FlushResumption => match engine.flush_resumption() {
            Ok(n) => {
                log::info!("resumption cache flushed ({n} secrets) by a control client");
                Answer::<String>::Flushed(u64::try_from(n).unwrap_or(u64::MAX)).to_line()
            }
            Err(e) => internal(e),
        },
        Request::SetPolicy {
            scope,
            local,
            update,
        } => match engine.set_policy(control_protocol::scope(scope), local, update) {
            Ok(Ok(())) => Answer::<String>::PolicySet.to_line(),
            Ok(Err(e @ PolicyError::TableFull)) => {
                Refusal::new(ErrorCode::TableFull, e.to_string()).to_line()
            }
            Ok(Err(e @ PolicyError::NoPort)) => {
                Refusal::new(ErrorCode::BadRequest, e.to_string()).to_line()
            }
            Err(e) => internal(e),
        },
        Request::ClearPolicy { scope, local } => {
            match engine.clear_policy(control_protocol::scope(scope), local) {
                Ok(cleared) => Answer::<String>::PolicyCleared(cleared).to_line(),
                Err(e) => internal(e),
            }
        }
    };
    (line, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control_protocol::PolicyUpdate;
    use crate::engine_api::{LookupState, PolicyScope};
    use crate::packet_loop::EngineRequest;
    use crate::sys::EventFd;
    use std::net::SocketAddr;
    use tcpcrypt_control::AppAware;

    use std::io::{BufRead, BufReader};

    /// A control socket whose questions are answered by a thread standing in
    /// for the packet thread: every connection is unknown.
    fn server(tag: &str) -> (ControlSocket, PathBuf) {
        server_with(tag, ClientLimits::new(Duration::from_secs(30)))
    }

    fn server_with(tag: &str, limits: ClientLimits) -> (ControlSocket, PathBuf) {
        let (engine, _) = recording_engine();
        server_on(tag, limits, engine)
    }

    fn server_on(
        tag: &str,
        limits: ClientLimits,
        engine: EngineHandle,
    ) -> (ControlSocket, PathBuf) {
        let dir = std::env::temp_dir().join(format!("tcpcryptd-ctl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("control.sock");
        let sock = ControlSocket::bind(&path, &ControlGroup::Named("root".into()))
            .expect("bind control socket");
        sock.serve(engine, limits).expect("serve");
        (sock, dir)
    }

    type PolicyLog = Arc<Mutex<Vec<(PolicyScope, SocketAddr, PolicyUpdate)>>>;

    fn fake_engine() -> EngineHandle {
        recording_engine().0
    }

    /// A handle whose questions a thread standing in for the packet thread
    /// answers: every connection is unknown. Policy updates are logged.
    fn recording_engine() -> (EngineHandle, PolicyLog) {
        let log = PolicyLog::default();
        let seen = Arc::clone(&log);
        let (tx, rx) = std::sync::mpsc::sync_channel::<EngineRequest>(16);
        std::thread::spawn(move || {
            for req in rx {
                match req {
                    EngineRequest::Lookup { reply, .. } => {
                        let _ = reply.send(LookupState::Unknown);
                    }
                    EngineRequest::List { reply } => {
                        let _ = reply.send(Arc::new(Vec::new()));
                    }
                    EngineRequest::FlushResumption { reply } => {
                        let _ = reply.send(0);
                    }
                    // Port 1 stands for a full policy table.
                    EngineRequest::SetPolicy {
                        scope,
                        local,
                        update,
                        reply,
                    } => {
                        if let Ok(mut log) = seen.lock() {
                            log.push((scope, local, update));
                        }
                        let _ = reply.send(if local.port() == 1 {
                            Err(PolicyError::TableFull)
                        } else {
                            Ok(())
                        });
                    }
                    EngineRequest::ClearPolicy { reply, .. } => {
                        let _ = reply.send(false);
                    }
                    // Only packet threads ask each other about reports.
                    EngineRequest::Report { .. } => {}
                }
            }
        });
        let wake = Arc::new(EventFd::new().expect("eventfd"));
        (EngineHandle::new(tx, wake, Arc::default()), log)
    }

    fn client(path: &Path) -> (UnixStream, BufReader<UnixStream>) {
        let s = UnixStream::connect(path).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let r = BufReader::new(s.try_clone().expect("clone"));
        (s, r)
    }

    fn answer_line(r: &mut BufReader<UnixStream>) -> serde_json::Value {
        let mut line = String::new();
        r.read_line(&mut line).expect("answer");
        serde_json::from_str(&line).expect("JSON answer")
    }

    #[test]
    fn requests_on_one_connection_are_answered_in_order() {
        let (sock, dir) = server("order");
        let (mut s, mut r) = client(sock.path());
        s.write_all(
            b"{\"v\":1,\"op\":\"version\"}\n{\"v\":1,\"op\":\"lookup\",\"local\":\"10.0.0.1:1\",\"remote\":\"10.0.0.2:2\"}\n{\"v\":1,\"op\":\"list\"}\n",
        )
        .expect("send");
        assert_eq!(
            answer_line(&mut r),
            serde_json::json!({"v":1,"ok":true,
                "daemon":format!("tcpcryptd {}", env!("CARGO_PKG_VERSION")),"supported":[1]})
        );
        assert_eq!(answer_line(&mut r)["state"], "unknown");
        assert_eq!(answer_line(&mut r)["connections"], serde_json::json!([]));
        drop(sock);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn set_policy_answers_ok_or_table_full_and_clear_says_whether_there_was_one() {
        let (sock, dir) = server("policy");
        let (mut s, mut r) = client(sock.path());
        s.write_all(
            concat!(
                r#"{"v":1,"op":"set_policy","local":"10.0.0.1:5555","no_cache":true}"#,
                "\n",
                r#"{"v":1,"op":"set_policy","local":"10.0.0.1:1","no_cache":true}"#,
                "\n",
                r#"{"v":1,"op":"clear_policy","scope":"listen","local":"[::]:80"}"#,
                "\n",
            )
            .as_bytes(),
        )
        .expect("send");
        assert_eq!(answer_line(&mut r), serde_json::json!({"v":1,"ok":true}));
        let full = answer_line(&mut r);
        assert_eq!(full["error"], "table_full", "{full}");
        assert_eq!(
            answer_line(&mut r),
            serde_json::json!({"v":1,"ok":true,"cleared":false})
        );
        drop(sock);
        std::fs::remove_dir_all(dir).ok();
    }

    /// The client library's requests, parsed by this server: what an
    /// application asks for is what reaches the engine.
    #[test]
    fn client_library_policies_reach_the_engine_field_for_field() {
        let (engine, log) = recording_engine();
        let (sock, dir) = server_on(
            "roundtrip",
            ClientLimits::new(Duration::from_secs(30)),
            engine,
        );
        let app = tcpcrypt::Client::with_control_path(sock.path());
        let listen: SocketAddr = "[::]:443".parse().expect("addr");
        let connect: SocketAddr = "[::ffff:10.0.0.1]:5555".parse().expect("addr");
        let policy = tcpcrypt::Policy {
            no_resumption: false,
            no_cache: true,
            app_aware: tcpcrypt::AppAware::Mandatory,
        };
        app.set_policy(tcpcrypt::PolicyScope::Listen, listen, policy)
            .expect("listen policy");
        let aware = tcpcrypt::Policy {
            app_aware: tcpcrypt::AppAware::On,
            ..tcpcrypt::Policy::default()
        };
        app.set_policy(tcpcrypt::PolicyScope::Connect, connect, aware)
            .expect("connect policy");
        let log = log.lock().expect("log").clone();
        assert_eq!(
            log,
            vec![
                (
                    PolicyScope::Listen,
                    listen,
                    PolicyUpdate {
                        no_resumption: Some(false),
                        no_cache: Some(true),
                        app_aware: Some(AppAware::Mandatory),
                    }
                ),
                (
                    PolicyScope::Connect,
                    "10.0.0.1:5555".parse().expect("addr"),
                    PolicyUpdate {
                        no_resumption: Some(false),
                        no_cache: Some(false),
                        app_aware: Some(AppAware::On),
                    }
                ),
            ]
        );
        drop(sock);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn the_control_group_may_set_app_aware_but_only_root_mandatory_mode() {
        let engine = fake_engine();
        let line = |mode: &str| {
            format!(
                r#"{{"v":1,"op":"set_policy","scope":"listen","local":"0.0.0.0:80","app_aware":"{mode}"}}"#
            )
        };
        let ask = |l: String, root: bool| {
            let (text, close) = answer(l.as_bytes(), root, &engine);
            assert!(!close);
            serde_json::from_str::<serde_json::Value>(&text).expect("JSON answer")
        };
        assert_eq!(ask(line("on"), false)["ok"], true);
        let denied = ask(line("mandatory"), false);
        assert_eq!(denied["error"], "permission_denied", "{denied}");
        assert!(
            denied["message"]
                .as_str()
                .is_some_and(|m| m.contains("mandatory")),
            "{denied}"
        );
        assert_eq!(ask(line("mandatory"), true)["ok"], true);
    }

    /// A settled outcome is answered from the published table: this
    /// handle's packet thread is gone, so any lookup that reached it would
    /// fail, and one for a connection the table does not hold does.
    #[test]
    fn a_settled_lookup_is_answered_without_the_packet_thread() {
        let (tx, rx) = std::sync::mpsc::sync_channel::<EngineRequest>(1);
        drop(rx);
        let table = Arc::new(crate::outcome_table::OutcomeTable::default());
        let (local, remote): (SocketAddr, SocketAddr) = (
            "10.0.0.1:80".parse().expect("addr"),
            "10.0.0.2:40000".parse().expect("addr"),
        );
        let session = crate::engine_api::Session {
            session_id: tcpcrypt_control::SessionId::from_bytes([0x21; 33]),
            role: tcpcrypt_control::Role::B,
            tep: tcpcrypt_control::Tep::EcdheP256,
            aead: tcpcrypt_control::Aead::Aes256Gcm,
            resumed: true,
            peer_app_aware: false,
        };
        table.apply(&crate::engine_api::EngineEvent::Established {
            local,
            remote,
            session,
            secrets: None,
        });
        let wake = Arc::new(EventFd::new().expect("eventfd"));
        let engine = EngineHandle::new(tx, wake, table);
        let ask = |remote: &str| {
            let line = format!(
                r#"{{"v":1,"op":"lookup","local":"[::ffff:10.0.0.1]:80","remote":"{remote}","wait_ms":1000}}"#
            );
            let (text, _) = answer(line.as_bytes(), false, &engine);
            serde_json::from_str::<serde_json::Value>(&text).expect("JSON answer")
        };
        let known = ask("10.0.0.2:40000");
        assert_eq!(known["state"], "tcpcrypt", "{known}");
        assert_eq!(known["session_id"], session.session_id.to_hex(), "{known}");
        let other = ask("10.0.0.2:40001");
        assert_eq!(other["error"], "internal", "{other}");
    }

    #[test]
    fn socket_file_has_mode_0660_and_goes_away_on_drop() {
        let (sock, dir) = server("mode");
        let path = sock.path().to_path_buf();
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o660);
        drop(sock);
        assert!(!path.exists());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn second_daemon_on_a_live_socket_path_is_refused() {
        let (sock, dir) = server("live");
        let again = ControlSocket::bind(sock.path(), &ControlGroup::Named("root".into()));
        assert!(matches!(again, Err(ControlError::InUse { .. })));
        drop(sock);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn overlong_line_gets_bad_request_and_the_connection_closes() {
        let (sock, dir) = server("long");
        let (mut s, mut r) = client(sock.path());
        s.write_all(&vec![b'x'; MAX_LINE + 10]).expect("send");
        let v = answer_line(&mut r);
        assert_eq!(v["error"], "bad_request");
        let mut rest = String::new();
        assert_eq!(r.read_line(&mut rest).expect("eof"), 0, "still open");
        drop(sock);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn malformed_json_closes_but_a_bad_field_does_not() {
        let (sock, dir) = server("json");
        let (mut s, mut r) = client(sock.path());
        s.write_all(b"{\"v\":1,\"op\":\"lookup\",\"local\":\"nope\",\"remote\":\"10.0.0.2:2\"}\n")
            .expect("send");
        assert_eq!(answer_line(&mut r)["error"], "bad_request");
        s.write_all(b"{\"v\":1,\"op\":\"version\"}\n")
            .expect("send");
        assert_eq!(answer_line(&mut r)["ok"], true);
        s.write_all(b"not json\n").expect("send");
        assert_eq!(answer_line(&mut r)["error"], "bad_request");
        let mut rest = String::new();
        assert_eq!(r.read_line(&mut rest).expect("eof"), 0, "still open");
        drop(sock);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn stalled_client_does_not_delay_another() {
        let (sock, dir) = server("stall");
        let (mut stalled, _r) = client(sock.path());
        stalled.write_all(b"{\"v\":1,").expect("partial line");
        let (mut s, mut r) = client(sock.path());
        s.write_all(b"{\"v\":1,\"op\":\"version\"}\n")
            .expect("send");
        assert_eq!(answer_line(&mut r)["ok"], true);
        drop(sock);
        std::fs::remove_dir_all(dir).ok();
    }

    /// A fresh directory under the system's temporary one, removed on drop
    /// (also when an assertion fails).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("tcpcryptd-ctl-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temporary directory");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Reads until the server closes the connection; how long that took.
    fn time_to_close(s: &mut UnixStream, limit: Duration) -> Duration {
        let start = Instant::now();
        s.set_read_timeout(Some(limit)).expect("timeout");
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return start.elapsed(),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return start.elapsed(),
                Err(e) => panic!("connection still open after {:?}: {e}", start.elapsed()),
            }
        }
    }

    #[test]
    fn dribbling_client_is_closed_when_its_deadline_passes() {
        let timeout = Duration::from_millis(1000);
        let (sock, dir) = server_with(
            "dribble",
            ClientLimits {
                timeout,
                max_clients: 8,
            },
        );
        let s = UnixStream::connect(sock.path()).expect("connect");
        let start = Instant::now();
        // One byte every 200 ms: each read would finish long before a
        // per-read timeout of the same length.
        let mut writer = s.try_clone().expect("clone");
        let dribbler = std::thread::spawn(move || {
            for b in b"{\"v\":1,\"op\":\"version\"}" {
                if writer.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let mut reader = s;
        time_to_close(&mut reader, Duration::from_secs(10));
        let closed_after = start.elapsed();
        println!("dribbling client closed after {closed_after:?} (deadline {timeout:?})");
        assert!(closed_after >= timeout, "closed early: {closed_after:?}");
        let _ = dribbler.join();
        drop(sock);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn deadline_restarts_after_each_answer() {
        let timeout = Duration::from_millis(600);
        let (sock, dir) = server_with(
            "restart",
            ClientLimits {
                timeout,
                max_clients: 8,
            },
        );
        let (mut s, mut r) = client(sock.path());
        // Three requests, each well within the deadline but together longer.
        for _ in 0..3 {
            std::thread::sleep(timeout / 2);
            s.write_all(b"{\"v\":1,\"op\":\"version\"}\n")
                .expect("send");
            assert_eq!(answer_line(&mut r)["ok"], true);
        }
        drop(sock);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn full_server_evicts_the_longest_waiting_client_for_a_new_one() {
        let (sock, dir) = server_with(
            "evict",
            ClientLimits {
                timeout: Duration::from_secs(60),
                max_clients: 4,
            },
        );
        let mut slow: Vec<UnixStream> = Vec::new();
        for _ in 0..4 {
            let mut s = UnixStream::connect(sock.path()).expect("connect");
            s.write_all(b"{\"v\":").expect("partial line");
            slow.push(s);
            // Distinct admission times, so the eviction order is defined.
            std::thread::sleep(Duration::from_millis(20));
        }
        let (mut s, mut r) = client(sock.path());
        s.write_all(b"{\"v\":1,\"op\":\"version\"}\n")
            .expect("send");
        assert_eq!(answer_line(&mut r)["ok"], true);
        let closed = time_to_close(&mut slow[0], Duration::from_secs(5));
        println!("oldest slow client closed {closed:?} after the answer");
        // The newer slow clients keep their slots.
        slow[1]
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut buf = [0u8; 16];
        let still_open = matches!(
            slow[1].read(&mut buf),
            Err(e) if is_timeout(&e)
        );
        assert!(still_open, "a newer slow client was closed too");
        drop(sock);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn an_idle_client_thread_takes_the_next_job_or_leaves_uncounted() {
        let idle = Idle::default();
        assert!(idle.next(Duration::from_millis(10)).is_none());
        assert_eq!(idle.waiting(), 0, "a thread that left is still counted");
        let (stream, _peer) = UnixStream::pair().expect("pair");
        let Err(job) = idle.offer(Job { stream, id: 7 }) else {
            panic!("a job was queued with no thread to take it");
        };
        let waiter = {
            let idle = idle.clone();
            std::thread::spawn(move || idle.next(Duration::from_secs(30)).map(|j| j.id))
        };
        let mut job = Some(job);
        while let Some(j) = job.take() {
            if let Err(back) = idle.offer(j) {
                job = Some(back);
                std::thread::yield_now();
            }
        }
        assert_eq!(waiter.join().expect("waiter"), Some(7));
        assert_eq!(idle.waiting(), 0);
    }

    /// Idle threads wait side by side: all of them are gone about one
    /// linger after they went idle, not one linger after another.
    #[test]
    fn idle_client_threads_leave_together() {
        let idle = Idle::default();
        let linger = Duration::from_millis(300);
        let threads = 8;
        let start = Instant::now();
        let waiters: Vec<_> = (0..threads)
            .map(|_| {
                let idle = idle.clone();
                std::thread::spawn(move || idle.next(linger).is_none())
            })
            .collect();
        for w in waiters {
            assert!(w.join().expect("waiter"), "a thread got a job nobody sent");
        }
        let took = start.elapsed();
        println!("{threads} idle threads with linger {linger:?} gone after {took:?}");
        // One after another would take threads * linger = 2.4 s.
        assert!(took < linger * 4, "idle threads left one by one: {took:?}");
        assert_eq!(idle.waiting(), 0);
    }

    #[test]
    fn registry_never_evicts_a_client_being_answered() {
        let registry = Registry::default();
        let (a, _a) = UnixStream::pair().expect("pair");
        let (b, _b) = UnixStream::pair().expect("pair");
        let now = Instant::now();
        let first = registry.admit(&a, 1, now).expect("admit").expect("slot");
        registry.set_waiting(first, None);
        assert_eq!(registry.admit(&b, 1, now).expect("admit"), None);
        registry.set_waiting(first, Some(now));
        let second = registry.admit(&b, 1, now).expect("admit").expect("slot");
        assert_ne!(first, second);
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn pipelined_and_unterminated_lines_are_split_correctly() {
        let (mut w, r) = UnixStream::pair().expect("pair");
        w.write_all(b"one\ntwo\nthree").expect("write");
        drop(w);
        let mut reader = LineReader::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut lines = Vec::new();
        while let Some(line) = reader.next_line(&r, deadline).expect("line") {
            lines.push(String::from_utf8(line).expect("utf-8"));
        }
        assert_eq!(lines, ["one", "two", "three"]);
    }

    #[test]
    fn line_of_exactly_the_maximum_is_accepted_and_one_more_byte_is_not() {
        let (mut w, r) = UnixStream::pair().expect("pair");
        let mut data = vec![b'a'; MAX_LINE - 1];
        data.push(b'\n');
        data.extend(vec![b'b'; MAX_LINE]);
        data.push(b'\n');
        let writer = std::thread::spawn(move || w.write_all(&data));
        let mut reader = LineReader::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let first = reader.next_line(&r, deadline).expect("first line");
        assert_eq!(first.map(|l| l.len()), Some(MAX_LINE - 1));
        assert!(matches!(
            reader.next_line(&r, deadline),
            Err(LineError::TooLong)
        ));
        drop(r);
        let _ = writer.join();
    }

    #[test]
    fn socket_is_never_visible_with_other_permissions_while_binding() {
        let tmp = TempDir::new("perm");
        let dir = tmp.0.clone();
        let path = dir.join("control.sock");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Watches the socket's directory as another user would see it: any
        // socket there must already be 0660, and anything else must be
        // closed to others.
        let watcher = {
            let (dir, stop) = (dir.clone(), stop.clone());
            std::thread::spawn(move || {
                use std::os::unix::fs::FileTypeExt;
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok(entries) = std::fs::read_dir(&dir) else {
                        continue;
                    };
                    for entry in entries.flatten() {
                        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                            continue;
                        };
                        let mode = meta.permissions().mode() & 0o777;
                        let t = meta.file_type();
                        if (t.is_socket() && mode != 0o660) || (!t.is_socket() && mode & 0o007 != 0)
                        {
                            seen.push(format!("{} mode {mode:o}", entry.path().display()));
                        }
                    }
                }
                seen
            })
        };
        for _ in 0..50 {
            let sock =
                ControlSocket::bind(&path, &ControlGroup::Named("root".into())).expect("bind");
            drop(sock);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let exposed = watcher.join().expect("watcher");
        let left: Vec<_> = std::fs::read_dir(&dir)
            .expect("read dir")
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(exposed.is_empty(), "exposed: {exposed:?}");
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    #[test]
    fn stale_socket_file_is_replaced() {
        let tmp = TempDir::new("stale");
        let path = tmp.0.join("control.sock");
        // A socket nobody listens on any more, as a killed daemon leaves it.
        drop(UnixListener::bind(&path).expect("stale socket"));
        let sock = ControlSocket::bind(&path, &ControlGroup::Named("root".into())).expect("bind");
        assert!(UnixStream::connect(&path).is_ok());
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o660);
        drop(sock);
    }
}
