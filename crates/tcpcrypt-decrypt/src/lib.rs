//! Decryption of tcpcrypt connections in packet captures, for debugging:
//! what `tcpcrypt decrypt` does, without its file I/O.
//!
//! Owns: reading pcap/pcapng bytes and writing pcap bytes ([`capture`]),
//! link-layer headers ([`link`]), the key-log format as read
//! ([`keylog`]), TCP reassembly of captured streams ([`stream`]), finding
//! a connection's keys ([`session`]) and the decryption and rewriting of
//! whole captures ([`decrypt()`]).
//!
//! Must not: do I/O, parse IP/TCP itself (tcpcrypt-engine's `wire` is the
//! one packet parser), implement protocol pieces tcpcrypt-proto has (ENO
//! negotiation, Init messages, key schedule, frames), or panic on any
//! capture or key log: damaged input gives errors and reports.
//!
//! Why a crate of its own: it needs both the engine's packet parser and the
//! protocol's key schedule, which the engine's sans-IO packet path does not
//! need to grow a capture reader for, and the CLI must stay free of protocol
//! logic; the CLI only reads and writes the files.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod capture;
mod decrypt;
pub mod keylog;
pub mod link;
pub mod session;
pub mod stream;

pub use capture::{Capture, CaptureError, Record};
pub use decrypt::{ConnectionReport, DIRECTIONS, Decrypted, DirectionReport, Outcome, decrypt};
pub use keylog::{KeyLog, KeyLogError};
