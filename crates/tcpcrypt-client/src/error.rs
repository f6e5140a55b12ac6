//! Errors of a lookup, each saying what went wrong and where, and the errno
//! each one maps to at the C boundary.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tcpcrypt_control::AnswerError;
pub use tcpcrypt_control::{ErrorCode as DaemonErrorCode, ProtocolError};

/// Everything that can make a call fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket file does not exist or nothing listens on it.
    #[error("tcpcryptd is not running: cannot connect to control socket {path}: {source}")]
    DaemonNotRunning { path: PathBuf, source: io::Error },

    /// The socket exists but this user may not connect to it.
    #[error(
        "permission denied on control socket {path} (is this user in tcpcryptd's control group?)"
    )]
    PermissionDenied { path: PathBuf },

    /// Connecting failed for a reason other than the two above.
    #[error("cannot connect to control socket {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },

    /// The daemon did not answer within the call's time limit.
    #[error("tcpcryptd did not answer on {path} within {limit:?}")]
    Timeout { path: PathBuf, limit: Duration },

    /// The connection to the daemon broke mid-exchange.
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },

    /// The daemon's answer does not follow the control protocol.
    #[error("malformed answer from tcpcryptd: {0}")]
    Protocol(#[from] ProtocolError),

    /// The daemon understood the request and refused it.
    #[error("tcpcryptd refused the request: {code}: {message}")]
    Daemon {
        code: DaemonErrorCode,
        message: String,
    },

    /// The file descriptor asked about is not a socket at all.
    #[error("file descriptor {fd} is not a socket")]
    NotASocket { fd: i32 },

    /// The socket is not an IPv4/IPv6 TCP socket.
    #[error("file descriptor {fd} is not a TCP socket ({what})")]
    NotTcp { fd: i32, what: &'static str },

    /// The TCP socket has no peer yet (or any more).
    #[error("TCP socket {fd} is not connected")]
    NotConnected { fd: i32 },

    /// Reading the socket's own addresses failed otherwise (e.g. a closed fd).
    #[error("cannot read the addresses of file descriptor {fd}: {source}")]
    Socket { fd: i32, source: io::Error },

    /// An argument the caller gave cannot be used.
    #[error("invalid argument {name}: {reason}")]
    InvalidArgument {
        name: &'static str,
        reason: &'static str,
    },
}

impl From<AnswerError> for Error {
    fn from(e: AnswerError) -> Error {
        match e {
            AnswerError::Refused { code, message } => Error::Daemon { code, message },
            AnswerError::Malformed(e) => Error::Protocol(e),
        }
    }
}

impl Error {
    /// The positive errno value the C API reports for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::DaemonNotRunning { source, .. } => match source.raw_os_error() {
                Some(libc::ENOENT) => libc::ENOENT,
                _ => libc::ECONNREFUSED,
            },
            Error::PermissionDenied { .. } => libc::EACCES,
            Error::Connect { source, .. } | Error::Io { source, .. } => {
                source.raw_os_error().unwrap_or(libc::EIO)
            }
            Error::Timeout { .. } => libc::ETIMEDOUT,
            Error::Protocol(_) => libc::EPROTO,
            Error::Daemon { code, .. } => match code {
                DaemonErrorCode::PermissionDenied => libc::EPERM,
                DaemonErrorCode::UnsupportedVersion => libc::EPROTONOSUPPORT,
                DaemonErrorCode::UnknownOp => libc::EOPNOTSUPP,
                DaemonErrorCode::BadRequest | DaemonErrorCode::Other(_) => libc::EPROTO,
                DaemonErrorCode::TableFull => libc::ENOSPC,
                DaemonErrorCode::Internal => libc::EIO,
            },
            Error::NotASocket { .. } => libc::ENOTSOCK,
            Error::NotTcp { .. } => libc::EPROTOTYPE,
            Error::NotConnected { .. } => libc::ENOTCONN,
            Error::Socket { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            Error::InvalidArgument { .. } => libc::EINVAL,
        }
    }

    /// True when the daemon could not be reached at all (not running, no
    /// permission, no answer), as opposed to a bad question or answer.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Error::DaemonNotRunning { .. }
                | Error::PermissionDenied { .. }
                | Error::Connect { .. }
                | Error::Timeout { .. }
                | Error::Io { .. }
        )
    }
}
