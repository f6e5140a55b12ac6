//! Sans-IO protocol core of mod_tcpcrypt: TCP-ENO (RFC 8547) and tcpcrypt (RFC 8548).
//!
//! This crate owns the byte-level protocol: the ENO option codec and
//! negotiation, the Init1/Init2 messages, key agreement, the key schedule and
//! session ID, AEAD frames and their streaming reader, rekeying and the
//! session-resumption cache.
//!
//! It must not do I/O, read clocks, or draw randomness from anywhere but the
//! [`Rng`] its caller hands in, and it must not panic on any input: every
//! malformed byte sequence yields a typed error naming what was wrong.
//!
//! ## API
//!
//! - Names: [`Tep`] (TEP identifiers, IANA names, key sizes), [`Aead`]
//!   (`sym_cipher` ids and names), [`SessionId`] (33 bytes, hex `Display`),
//!   [`Role`], [`Rng`] with [`OsRng`] (production) and [`TestRng`] (tests).
//! - [`eno`]: the TCP-ENO option codec, negotiation and transcript.
//! - [`init`]: [`init::Init1`] / [`init::Init2`] `encode`/`decode(tep, bytes)`,
//!   and [`init::init_progress`] to collect a message from the stream
//!   (bounded by [`init::MAX_INIT_MESSAGE_LEN`]).
//! - [`kex`]: [`kex::EphemeralKey`] `generate(tep, rng)` / `agree(peer)` → ES.
//! - [`schedule`]: [`schedule::SessionSecret`] (ss\[i\]: `extract`, `next`,
//!   `master_key(sn)`, `session_id`, `resume_id`), [`schedule::MasterKey`]
//!   (mk\[j\]: `next`, `k_ab`, `k_ba`).
//! - [`frame`]: [`frame::FrameWriter`] seals our direction (tracks the wire
//!   offset and local generation; `seal`, `initiate_rekey`,
//!   `on_peer_generation`), [`frame::FrameReader`] authenticates the peer's
//!   stream fed in any chunks (`feed` → [`frame::ReceivedFrame`]s). Offsets
//!   count from ISN+1: [`frame::INIT_BYTES_COUNT_IN_FRAME_OFFSET`],
//!   [`frame::first_frame_offset`].
//! - [`resume`]: [`resume::ResumptionCache`], keyed by a peer type of the
//!   caller's choice (the engine uses the peer's IP address) and TEP.
//! - [`handshake`]: the glue the engine drives. A [`handshake::Host`]
//!   (config [`handshake::HostConfig`] + resumption cache, generic over the
//!   peer key) gives, per connection with a [`handshake::ConnectionPolicy`]
//!   (resumption and caching controls, and the application-aware mode,
//!   which overrides the host's for that connection only):
//!   `active_open(peer, policy, rng)` → [`handshake::ActiveOpen`]
//!   (`syn_option()`, then `on_peer_syn(syn_ack_option, rng)`), or
//!   `passive_open(peer, syn_option, policy, rng)` →
//!   [`handshake::PassiveOpen`] (`reply_option()` for the SYN-ACK). Both
//!   yield a [`handshake::Handshake`]: `SendInit1` (host A: send `init1()`,
//!   `feed` B's bytes), `AwaitInit1` (host B: `feed` A's bytes, then send the
//!   Init2 it returns) or `Resumed` (a session at once). `feed` returns
//!   [`handshake::Step`]: `NeedMore(state)` or `Established { session,
//!   consumed, send }`; bytes after `consumed` are frames for the reader.
//!   Then call `Host::on_established(peer, &mut session)` once (caches the
//!   next secret), and `Host::flush(&session)` to forget its secrets.
//! - [`session::Session`]: `info()` ([`session::SessionInfo`]: session ID,
//!   role, original role, TEP, AEAD, resumed, peer's `a` bit), `secrets()`
//!   (ss and ES for a key log, whose lines tcpcryptd writes), `writer()`, `reader()`,
//!   `into_parts()`.

// Tests may unwrap: a panic there is a failed test, not a crash.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod aead;
pub mod eno;
pub mod frame;
pub mod handshake;
pub mod init;
pub mod kex;
pub mod resume;
pub mod rng;
pub mod schedule;
pub mod session;
pub mod session_id;
pub mod tep;

mod role;
pub use aead::Aead;
pub use rng::{OsRng, Rng, RngError, TestRng};
pub use role::Role;
pub use session_id::SessionId;
pub use tep::Tep;
