//! A stand-in for tcpcryptd's control socket (docs/control-protocol.md,
//! version 1): answers `lookup` from a table the test fills, counts the
//! lookups, and can be told to answer late. It reads and writes its lines
//! with tcpcrypt-control, as the daemon does.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tcpcrypt_control::answer::Answer;
use tcpcrypt_control::{
    Aead, DaemonVersion, Lookup, Refusal, Request, Role, Session, SessionId, Tep, VERSION,
    format_addr, normalize_addr,
};

/// What the fake says about connections the test did not name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlisted {
    /// `plain`, as tcpcryptd says for a peer without ENO.
    Plain,
    /// A fresh session per connection (for clients whose port the test
    /// cannot know in advance, like nghttp).
    FreshSession,
}

/// Ways the fake can break the protocol, to show the module survives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Answers correctly.
    None,
    /// Answers a line that is not JSON.
    Garbage,
    /// Closes the connection without answering.
    HangUp,
}

/// One session the fake hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeSession(pub Session);

impl FakeSession {
    /// A session whose 33-byte ID is derived from `seed` (first byte the
    /// Curve25519 TEP byte, as RFC 8548 puts it there).
    pub fn from_seed(seed: u64) -> Self {
        let mut bytes = vec![Tep::EcdheCurve25519.byte()];
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        while bytes.len() < 33 {
            // xorshift64: distinct, arbitrary-looking bytes per seed.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        let mut id = [0u8; 33];
        id.copy_from_slice(&bytes[..33]);
        Self(Session {
            session_id: SessionId::from_bytes(id),
            role: Role::B,
            tep: Tep::EcdheCurve25519,
            aead: Aead::Aes128Gcm,
            resumed: false,
            peer_app_aware: false,
        })
    }

    /// The value mod_tcpcrypt must put in TCP_CRYPT_SESSID.
    pub fn upper_hex(&self) -> String {
        self.0.session_id.to_upper_hex()
    }

    pub fn role(&self) -> &'static str {
        self.0.role.name()
    }

    pub fn tep(&self) -> &'static str {
        self.0.tep.name()
    }

    pub fn aead(&self) -> &'static str {
        self.0.aead.name()
    }
}

/// One lookup the fake answered.
#[derive(Debug, Clone)]
pub struct Answered {
    pub local: String,
    pub remote: String,
    pub session: Option<FakeSession>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<(SocketAddr, SocketAddr), FakeSession>,
    answered: Vec<Answered>,
}

struct Shared {
    unlisted: Unlisted,
    delay: Mutex<Duration>,
    misbehaviour: Mutex<Misbehaviour>,
    stop: AtomicBool,
    seeds: AtomicU64,
    state: Mutex<State>,
}

pub struct FakeDaemon {
    path: PathBuf,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeDaemon {
    /// Listens on `path` (made connectable by httpd's unprivileged children).
    pub fn start(path: &Path, unlisted: Unlisted) -> Self {
        let listener = UnixListener::bind(path)
            .unwrap_or_else(|e| panic!("fake tcpcryptd: bind {}: {e}", path.display()));
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        let shared = Arc::new(Shared {
            unlisted,
            delay: Mutex::new(Duration::ZERO),
            misbehaviour: Mutex::new(Misbehaviour::None),
            stop: AtomicBool::new(false),
            seeds: AtomicU64::new(u64::from(std::process::id()) << 20),
            state: Mutex::new(State::default()),
        });
        let for_thread = Arc::clone(&shared);
        let acceptor = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if for_thread.stop.load(Ordering::Acquire) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let shared = Arc::clone(&for_thread);
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        Self {
            path: path.to_path_buf(),
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Makes the fake answer lookups after `delay` (to play a hung daemon).
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.shared.delay) = delay;
    }

    /// Makes the fake break the protocol in the given way from now on.
    pub fn set_misbehaviour(&self, how: Misbehaviour) {
        *lock(&self.shared.misbehaviour) = how;
    }

    /// Declares the connection `remote` -> `local` (server's view) to be
    /// encrypted with a new session, and returns it.
    pub fn add_session(&self, local: SocketAddr, remote: SocketAddr) -> FakeSession {
        let session = FakeSession::from_seed(self.shared.seeds.fetch_add(1, Ordering::AcqRel));
        lock(&self.shared.state).sessions.insert(
            (normalize_addr(local), normalize_addr(remote)),
            session.clone(),
        );
        session
    }

    /// Every lookup answered so far.
    pub fn answered(&self) -> Vec<Answered> {
        lock(&self.shared.state).answered.clone()
    }

    /// Lookups answered for connections from `remote`.
    pub fn lookups_from(&self, remote: SocketAddr) -> usize {
        let remote = format_addr(remote);
        lock(&self.shared.state)
            .answered
            .iter()
            .filter(|a| a.remote == remote)
            .count()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Wakes the blocking accept so the thread sees the flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(handle) = self.acceptor.take() {
            let _ = handle.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn serve(stream: UnixStream, shared: &Shared) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let reader = BufReader::new(stream);
    for line in reader.lines() {
        let Ok(line) = line else { return };
        let delay = *lock(&shared.delay);
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let reply = match *lock(&shared.misbehaviour) {
            Misbehaviour::None => format!("{}\n", answer(&line, shared)),
            Misbehaviour::Garbage => "this is not json\n".to_owned(),
            Misbehaviour::HangUp => return,
        };
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn answer(line: &str, shared: &Shared) -> String {
    let request = match Request::parse(line) {
        Ok(request) => request,
        Err(refusal) => return refusal.to_line(),
    };
    match request {
        Request::Version => Answer::<String>::Version(DaemonVersion {
            daemon: "fake-tcpcryptd".into(),
            supported: vec![VERSION],
        })
        .to_line(),
        Request::Lookup { local, remote, .. } => {
            let mut state = lock(&shared.state);
            let key = (local, remote);
            let session = match (state.sessions.get(&key), shared.unlisted) {
                (Some(s), _) => Some(s.clone()),
                (None, Unlisted::FreshSession) => {
                    let s = FakeSession::from_seed(shared.seeds.fetch_add(1, Ordering::AcqRel));
                    state.sessions.insert(key, s.clone());
                    Some(s)
                }
                (None, Unlisted::Plain) => None,
            };
            state.answered.push(Answered {
                local: format_addr(local),
                remote: format_addr(remote),
                session: session.clone(),
            });
            let lookup = match session {
                Some(s) => Lookup::Tcpcrypt(s.0),
                None => Lookup::Plain {
                    reason: "peer sent no ENO option".to_string(),
                },
            };
            Answer::Lookup(lookup).to_line()
        }
        other => Refusal::new(
            tcpcrypt_control::ErrorCode::UnknownOp,
            format!("the fake answers no {}", other.op()),
        )
        .to_line(),
    }
}
