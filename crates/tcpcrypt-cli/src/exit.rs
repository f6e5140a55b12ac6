//! Exit codes (documented in `tcpcrypt --help`) and the failures that map
//! to them.

use std::fmt;
use std::process::ExitCode;

/// How the command ended; the discriminant is the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok = 0,
    Usage = 1,
    Unreachable = 2,
    NotEncrypted = 3,
    Failed = 4,
    LoginRefused = 5,
}

impl From<Outcome> for ExitCode {
    fn from(outcome: Outcome) -> Self {
        ExitCode::from(outcome as u8)
    }
}

/// Why a subcommand could not do its job.
#[derive(Debug)]
pub enum Failure {
    /// Talking to tcpcryptd failed.
    Daemon(tcpcrypt::Error),
    /// Writing our own output failed (e.g. a closed pipe).
    Output(std::io::Error),
    /// A bad argument the parser could not catch (e.g. a URL).
    Usage(String),
    /// `fetch` could not complete its HTTP exchange.
    Http(String),
    /// `fetch --user/--key`: the server refused the login, or did not
    /// prove itself.
    Login(String),
    /// `decrypt` could not read or write its files.
    Decrypt(String),
}

impl Failure {
    pub fn outcome(&self) -> Outcome {
        match self {
            Failure::Daemon(e) if e.is_unreachable() => Outcome::Unreachable,
            Failure::Usage(_) => Outcome::Usage,
            Failure::Login(_) => Outcome::LoginRefused,
            Failure::Daemon(_) | Failure::Output(_) | Failure::Http(_) | Failure::Decrypt(_) => {
                Outcome::Failed
            }
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Daemon(e) => write!(f, "{e}"),
            Failure::Output(e) => write!(f, "cannot write output: {e}"),
            Failure::Usage(msg) => write!(f, "{msg}"),
            Failure::Http(msg) => write!(f, "fetch failed: {msg}"),
            Failure::Login(msg) => write!(f, "login failed: {msg}"),
            Failure::Decrypt(msg) => write!(f, "decrypt: {msg}"),
        }
    }
}
