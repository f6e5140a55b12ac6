//! The control socket server.
//!
//! One thread accepts; each client gets its own thread, up to a limit, with
//! read and write timeouts, so a slow or hostile client only ever holds its
//! own thread. Questions reach the packet thread through [`EngineHandle`],
//! which never makes the packet thread wait for a client.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::config::ControlGroup;
use crate::control_protocol::{self as proto, ErrorCode, MAX_LINE, ProtocolError, Request};
use crate::packet_loop::{EngineHandle, HandleError};
use crate::sys;

/// Clients served at once; more are told the daemon is busy.
const MAX_CLIENTS: usize = 256;
/// A client idle this long is disconnected (documented).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A client that does not read its answer within this time is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

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
}

/// The bound socket, removed from the file system on drop.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

fn resolve_group(group: &ControlGroup) -> Result<u32, ControlError> {
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
        let gid = resolve_group(group)?;
        if let Some(dir) = path.parent()
            && !dir.exists()
        {
            std::fs::create_dir_all(dir).map_err(|source| ControlError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(ControlError::InUse {
                    path: path.to_path_buf(),
                });
            }
            let _ = std::fs::remove_file(path);
        }
        let listener = UnixListener::bind(path).map_err(|source| ControlError::Bind {
            path: path.to_path_buf(),
            source,
        })?;
        let sock = ControlSocket {
            listener,
            path: path.to_path_buf(),
        };
        let perm = |source| ControlError::Permissions {
            path: path.to_path_buf(),
            source,
        };
        sys::chown_root_group(path, gid).map_err(perm)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(perm)?;
        Ok(sock)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts the accept thread. The socket file stays until `self` drops.
    pub fn serve(&self, engine: EngineHandle) -> io::Result<std::thread::JoinHandle<()>> {
        let listener = self.listener.try_clone()?;
        std::thread::Builder::new()
            .name("control-accept".into())
            .spawn(move || accept_loop(listener, engine))
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(listener: UnixListener, engine: EngineHandle) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                log::warn!("control socket accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if active.load(Ordering::Relaxed) >= MAX_CLIENTS {
            let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
            let e = ProtocolError::new(ErrorCode::Internal, "too many control clients");
            let _ = stream.write_all(format!("{}\n", e.to_line()).as_bytes());
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let (engine, counter) = (engine.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("control-client".into())
            .spawn(move || {
                if let Err(e) = serve_client(stream, &engine) {
                    log::debug!("control client: {e}");
                }
                counter.fetch_sub(1, Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::Relaxed);
            log::warn!("cannot start a control client thread: {e}");
        }
    }
}

/// Reads one line of at most `MAX_LINE` bytes. `Ok(None)` at a clean end of
/// stream; `Err(InvalidData)` for a line that is too long.
fn read_line(reader: &mut BufReader<UnixStream>, buf: &mut Vec<u8>) -> io::Result<Option<()>> {
    buf.clear();
    let mut limited = reader.by_ref().take(MAX_LINE as u64);
    let n = limited.read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        if n >= MAX_LINE {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
        // End of stream without a newline: serve what came.
    } else {
        buf.pop();
    }
    Ok(Some(()))
}

fn serve_client(stream: UnixStream, engine: &EngineHandle) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let is_root = sys::peer_uid(&stream).map(|uid| uid == 0).unwrap_or(false);
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::with_capacity(256);
    loop {
        match read_line(&mut reader, &mut buf) {
            Ok(None) => return Ok(()),
            Ok(Some(())) => {}
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let err = ProtocolError::new(
                    ErrorCode::BadRequest,
                    format!("request line longer than {MAX_LINE} bytes"),
                );
                return writer.write_all(format!("{}\n", err.to_line()).as_bytes());
            }
            Err(e) => return Err(e),
        }
        let (answer, close) = answer(&buf, is_root, engine);
        writer.write_all(answer.as_bytes())?;
        writer.write_all(b"\n")?;
        if close {
            return Ok(());
        }
    }
}

/// The answer line for one request line, and whether to close afterwards.
fn answer(line: &[u8], is_root: bool, engine: &EngineHandle) -> (String, bool) {
    let request = std::str::from_utf8(line)
        .map_err(|_| ProtocolError {
            code: ErrorCode::BadRequest,
            message: "request is not UTF-8".into(),
            close: true,
        })
        .and_then(proto::parse_request);
    let request = match request {
        Ok(r) => r,
        Err(e) => return (e.to_line(), e.close),
    };
    if request.changes_state() && !is_root {
        let e = ProtocolError::new(
            ErrorCode::PermissionDenied,
            "this operation changes daemon state and needs uid 0",
        );
        return (e.to_line(), false);
    }
    let internal =
        |e: HandleError| ProtocolError::new(ErrorCode::Internal, e.to_string()).to_line();
    let line = match request {
        Request::Version => proto::version_response(),
        Request::Lookup {
            local,
            remote,
            wait,
        } => match engine.lookup(local, remote, wait) {
            Ok(state) => proto::lookup_response(&state),
            Err(e) => internal(e),
        },
        Request::List => match engine.list() {
            Ok(conns) => proto::list_response(&conns),
            Err(e) => internal(e),
        },
        Request::FlushResumption => match engine.flush_resumption() {
            Ok(n) => {
                log::info!("resumption cache flushed ({n} secrets) by a control client");
                proto::flush_response(n)
            }
            Err(e) => internal(e),
        },
    };
    (line, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine_api::LookupState;
    use crate::packet_loop::EngineRequest;
    use crate::sys::EventFd;

    /// A control socket whose questions are answered by a thread standing in
    /// for the packet thread: every connection is unknown.
    fn server(tag: &str) -> (ControlSocket, PathBuf) {
        let dir = std::env::temp_dir().join(format!("tcpcryptd-ctl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("control.sock");
        let sock = ControlSocket::bind(&path, &ControlGroup::Named("root".into()))
            .expect("bind control socket");
        let (tx, rx) = std::sync::mpsc::sync_channel::<EngineRequest>(16);
        std::thread::spawn(move || {
            for req in rx {
                match req {
                    EngineRequest::Lookup { reply, .. } => {
                        let _ = reply.send(LookupState::Unknown);
                    }
                    EngineRequest::List { reply } => {
                        let _ = reply.send(Vec::new());
                    }
                    EngineRequest::FlushResumption { reply } => {
                        let _ = reply.send(0);
                    }
                }
            }
        });
        let wake = Arc::new(EventFd::new().expect("eventfd"));
        sock.serve(EngineHandle::new(tx, wake)).expect("serve");
        (sock, dir)
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
        assert!(answer_line(&mut r)["daemon"].is_string());
        assert_eq!(answer_line(&mut r)["state"], "unknown");
        assert_eq!(answer_line(&mut r)["connections"], serde_json::json!([]));
        drop(sock);
        std::fs::remove_dir_all(dir).ok();
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
}
