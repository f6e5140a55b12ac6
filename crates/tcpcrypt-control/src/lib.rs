//! tcpcryptd's control protocol, version 1 (`docs/control-protocol.md`),
//! defined once for the daemon that answers it and the clients that ask.
//!
//! Owns: the protocol version and limits, every request ([`Request`]) and
//! answer ([`Answer`], [`Refusal`]) with its JSON line in both directions,
//! the error words, the layout of the published session table ([`table`]), the session as applications see it ([`Session`] with
//! [`SessionId`], [`Role`], [`Tep`], [`Aead`]), the TEP and AEAD name
//! tables, the per-socket policy words, and the wire form of addresses.
//!
//! Must not: do I/O (sockets, files, clocks belong to the daemon and the
//! client library), depend on `tcpcrypt-proto` or any crypto crate (the
//! Apache module and libtcpcrypt link this and must stay free of aws-lc),
//! or know the engine's types: the daemon converts the engine's session
//! facts into [`Session`] in one place.

mod addr;
pub mod answer;
mod error;
mod json;
mod request;
mod session;
pub mod table;

use std::time::Duration;

pub use addr::{from_wire as parse_addr, normalize as normalize_addr, to_wire as format_addr};
pub use answer::Answer;
pub use error::{AnswerError, ErrorCode, ProtocolError, Refusal};
pub use request::{PolicyUpdate, Request};
pub use session::{
    Aead, AppAware, Connection, DaemonVersion, Lookup, Phase, Policy, PolicyScope, Role,
    SESSION_ID_LEN, Session, SessionId, SessionIdError, Tep,
};

/// The protocol version this crate speaks: every line carries it as `v`.
pub const VERSION: u64 = 1;

/// Longest request line the daemon reads, newline included.
pub const MAX_REQUEST_LINE: usize = 4096;

/// Longest wait a lookup may ask for; larger values are capped to it.
pub const MAX_WAIT: Duration = Duration::from_millis(10_000);
