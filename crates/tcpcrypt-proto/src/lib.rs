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

pub mod eno;

mod role;
pub use role::Role;
