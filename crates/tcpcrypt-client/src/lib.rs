//! Session lookups for applications: the client side of tcpcryptd's control
//! socket (docs/control-protocol.md), for Rust and, as `libtcpcrypt.so` /
//! `libtcpcrypt.a` with `include/tcpcrypt/tcpcrypt.h`, for C.
//!
//! Owns: the control-protocol client, its per-process pool of open
//! connections (read-only requests reuse them) and its mapping of the
//! daemon's session table (settled lookups read it without asking), lookups by socket or by address pair,
//! per-socket policies (resumption, caching
//! and the application-aware bit: [`Client::set_socket_policy`]), and the C ABI including the original
//! libtcpcrypt's `tcpcrypt_getsockopt` and `tcpcrypt_setsockopt`. The
//! typed answer ([`Lookup`], [`Session`], ...) and the lines on the wire are
//! `tcpcrypt-control`'s, re-exported here.
//!
//! Must not: block past its time limit (every call is bounded, default
//! [`DEFAULT_TIMEOUT`]), exit, abort or unwind into its caller, raise
//! `SIGPIPE`, export symbols other than the documented `tcpcrypt_*` ones, or
//! depend on `tcpcrypt-proto` (programs such as the Apache module link this
//! crate and should not carry a crypto library for a socket question). The
//! one exception is opt-in: the `auth` feature adds [`login`] (logins to
//! mod_tcpcrypt's `AuthType tcpcrypt`), which needs tcpcrypt-auth's crypto.
//!
//! ```no_run
//! use std::net::TcpStream;
//! use std::time::Duration;
//!
//! let stream = TcpStream::connect("192.0.2.1:80")?;
//! let client = tcpcrypt::Client::new().timeout(Duration::from_millis(200));
//! match client.lookup_fd_wait(&stream, Duration::from_secs(1))? {
//!     tcpcrypt::Lookup::Tcpcrypt(s) => println!("session {}", s.session_id),
//!     other => println!("not encrypted: {}", other.state_name()),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The control socket is the path given to [`Client::with_control_path`],
//! else `$TCPCRYPT_CONTROL`, else `/run/tcpcrypt/control.sock`.

mod addr;
pub mod capi;
#[cfg(feature = "auth")]
pub mod capi_login;
mod client;
mod error;
#[cfg(feature = "auth")]
pub mod login;
mod pool;
mod table;
mod transport;

pub use client::{CONTROL_PATH_ENV, Client, DEFAULT_CONTROL_PATH, DEFAULT_TIMEOUT, control_path};
pub use error::{DaemonErrorCode, Error, ProtocolError};
// The protocol's types are the control crate's; they are re-exported so a
// program that only asks the daemon needs this one crate.
pub use tcpcrypt_control::{
    Aead, AppAware, Connection, DaemonVersion, Lookup, MAX_WAIT, Phase, Policy, PolicyScope, Role,
    SESSION_ID_LEN, Session, SessionId, SessionIdError, Tep, format_addr, normalize_addr,
};
