//! Asking tcpcryptd about one connection, and what the module makes of the
//! answer.
//!
//! The FFI layer sees only [`SessionSource`] and [`Outcome`]; the client
//! library stays behind this seam, and the rules "what is cached, what is
//! logged, at which level" are unit-tested here without httpd.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tcpcrypt::{Client, Lookup, Session};

use crate::config::LookupTimeout;

/// A connection as tcpcryptd names it, from the server's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnAddrs {
    /// The server's own address (`getsockname`).
    pub local: SocketAddr,
    /// The client's address (`getpeername`).
    pub remote: SocketAddr,
}

/// Something that can answer a session lookup.
pub trait SessionSource {
    fn lookup(&self, addrs: ConnAddrs) -> Result<Lookup, tcpcrypt::Error>;
}

/// tcpcryptd's control socket, through the client library.
#[derive(Debug, Clone)]
pub struct ControlSocket {
    client: Client,
    wait: Duration,
}

impl ControlSocket {
    /// `socket` of `None` lets the library pick (`$TCPCRYPT_CONTROL`, else its
    /// default path). The whole lookup, including any wait for a handshake
    /// still in progress, ends within `timeout`: half of it may go to that
    /// wait, the rest to talking to the daemon.
    pub fn new(socket: Option<&Path>, timeout: LookupTimeout) -> Self {
        let total = timeout.duration();
        let wait = total / 2;
        let client =
            Client::with_control_path(tcpcrypt::control_path(socket)).timeout(total - wait);
        Self { client, wait }
    }
}

impl SessionSource for ControlSocket {
    fn lookup(&self, addrs: ConnAddrs) -> Result<Lookup, tcpcrypt::Error> {
        self.client
            .lookup_addrs_wait(addrs.local, addrs.remote, self.wait)
    }
}

/// What a connection is, as far as the module will ever know: computed once
/// at its first request and kept for its lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Tcpcrypt(Session),
    /// Plain TCP, or a state that gives no session (pending, unknown).
    NoSession,
    /// The daemon could not be asked or gave no usable answer.
    Failed,
}

impl Outcome {
    pub fn session(&self) -> Option<&Session> {
        match self {
            Self::Tcpcrypt(session) => Some(session),
            Self::NoSession | Self::Failed => None,
        }
    }
}

/// What to tell the admin about one lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Routine: only with `LogLevel tcpcrypt:debug`.
    Debug(String),
    /// Something to fix (the daemon is down, hung, or answers nonsense);
    /// subject to the error-log rate limit.
    Error(String),
}

/// Turns a lookup result into the cached outcome and a log line.
pub fn settle(addrs: ConnAddrs, result: Result<Lookup, tcpcrypt::Error>) -> (Outcome, Report) {
    let ConnAddrs { local, remote } = addrs;
    match result {
        Ok(Lookup::Tcpcrypt(session)) => {
            let report = Report::Debug(format!(
                "connection {remote} -> {local}: tcpcrypt session {} ({}, {})",
                session.session_id, session.tep, session.aead
            ));
            (Outcome::Tcpcrypt(session), report)
        }
        Ok(Lookup::Plain { reason }) => (
            Outcome::NoSession,
            Report::Debug(format!(
                "connection {remote} -> {local}: plain TCP ({reason})"
            )),
        ),
        Ok(Lookup::Pending) => (
            Outcome::NoSession,
            Report::Debug(format!(
                "connection {remote} -> {local}: tcpcrypt handshake still pending \
                 after the lookup wait; treated as not encrypted"
            )),
        ),
        Ok(Lookup::Unknown) => (
            Outcome::NoSession,
            Report::Debug(format!(
                "connection {remote} -> {local}: not tracked by tcpcryptd"
            )),
        ),
        Err(err) => (
            Outcome::Failed,
            Report::Error(format!(
                "session lookup for connection {remote} -> {local} failed, \
                 serving it without TCP_CRYPT_* variables: {err}"
            )),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::path::PathBuf;
    use tcpcrypt::{Aead, Role, SessionId, Tep};

    fn addrs() -> ConnAddrs {
        ConnAddrs {
            local: SocketAddr::from(([10, 0, 0, 2], 80)),
            remote: SocketAddr::from(([10, 0, 0, 1], 40312)),
        }
    }

    fn session() -> Session {
        Session {
            session_id: SessionId::from_bytes([0x23; 33]),
            role: Role::B,
            tep: Tep::EcdheCurve25519,
            aead: Aead::Aes128Gcm,
            resumed: false,
            peer_app_aware: false,
        }
    }

    #[test]
    fn tcpcrypt_answer_caches_the_session_and_logs_only_at_debug() {
        let (outcome, report) = settle(addrs(), Ok(Lookup::Tcpcrypt(session())));
        assert_eq!(outcome.session(), Some(&session()));
        assert!(matches!(report, Report::Debug(_)));
    }

    #[test]
    fn plain_answer_gives_no_session_and_names_the_reason_at_debug() {
        let (outcome, report) = settle(
            addrs(),
            Ok(Lookup::Plain {
                reason: "peer sent no ENO option".to_owned(),
            }),
        );
        assert_eq!(outcome, Outcome::NoSession);
        match report {
            Report::Debug(text) => assert!(text.contains("peer sent no ENO option"), "{text}"),
            Report::Error(text) => panic!("plain TCP is not an error: {text}"),
        }
    }

    #[test]
    fn pending_and_unknown_give_no_session_without_an_error() {
        for answer in [Lookup::Pending, Lookup::Unknown] {
            let (outcome, report) = settle(addrs(), Ok(answer));
            assert_eq!(outcome, Outcome::NoSession);
            assert!(matches!(report, Report::Debug(_)));
        }
    }

    #[test]
    fn unreachable_daemon_is_an_error_naming_the_socket_and_the_connection() {
        let err = tcpcrypt::Error::DaemonNotRunning {
            path: PathBuf::from("/run/tcpcrypt/control.sock"),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        let (outcome, report) = settle(addrs(), Err(err));
        assert_eq!(outcome, Outcome::Failed);
        assert_eq!(outcome.session(), None);
        match report {
            Report::Error(text) => {
                assert!(text.contains("/run/tcpcrypt/control.sock"), "{text}");
                assert!(text.contains("10.0.0.1:40312 -> 10.0.0.2:80"), "{text}");
            }
            Report::Debug(text) => panic!("a dead daemon must reach the error log: {text}"),
        }
    }

    #[test]
    fn control_socket_splits_the_timeout_between_wait_and_exchange() {
        let timeout = LookupTimeout::parse("300").unwrap_or_else(|e| panic!("{e}"));
        let source = ControlSocket::new(Some(Path::new("/x.sock")), timeout);
        assert_eq!(source.client.control_path(), Path::new("/x.sock"));
        assert_eq!(
            source.wait + source.client.time_limit(),
            Duration::from_millis(300)
        );
        assert!(source.wait > Duration::ZERO);
    }
}
