//! Session lookups for applications: the client side of tcpcryptd's control
//! socket (docs/control-protocol.md), for Rust and, as `libtcpcrypt.so` /
//! `libtcpcrypt.a` with `include/tcpcrypt/tcpcrypt.h`, for C.
//!
//! Owns: the control-protocol client, lookups by socket or by address pair,
//! the typed answer ([`Lookup`]), per-socket policies (resumption, caching
//! and the application-aware bit: [`Client::set_socket_policy`]), and the C ABI including the original
//! libtcpcrypt's `tcpcrypt_getsockopt` and `tcpcrypt_setsockopt`.
//!
//! Must not: block past its time limit (every call is bounded, default
//! [`DEFAULT_TIMEOUT`]), exit, abort or unwind into its caller, raise
//! `SIGPIPE`, export symbols other than the documented `tcpcrypt_*` ones, or
//! depend on `tcpcrypt-proto` (programs such as the Apache module link this
//! crate and should not carry a crypto library for a socket question).
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
mod client;
mod error;
mod message;
mod session;
mod transport;

pub use addr::normalize as normalize_addr;
pub use client::{CONTROL_PATH_ENV, Client, DEFAULT_CONTROL_PATH, DEFAULT_TIMEOUT, control_path};
pub use error::{DaemonErrorCode, Error, ProtocolError};
pub use message::MAX_WAIT;
pub use session::{
    Aead, AppAware, Connection, DaemonVersion, Lookup, Phase, Policy, PolicyScope, Role,
    SESSION_ID_LEN, Session, SessionId, SessionIdError, Tep,
};

/// Formats an address as the control protocol (and `tcpcrypt status`) writes
/// it: `IPV4:PORT` or `[IPV6]:PORT`, IPv4-mapped IPv6 shown as IPv4.
pub fn format_addr(addr: std::net::SocketAddr) -> String {
    addr::to_wire(addr)
}
