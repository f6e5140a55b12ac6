//! TCP-ENO (RFC 8547): option codec, negotiation, transcript and handshake
//! bookkeeping.
//!
//! This module owns everything about the ENO TCP option (kind 69) and
//! nothing about any particular TEP: what suboption data means (tcpcrypt's
//! resumption identifiers, for instance) comes in through [`TepRules`] and
//! the [`TepSuboption`]s of an [`EnoConfig`]. It never touches packets
//! beyond the bytes of the TCP options area it is handed, and no input can
//! make it panic.
//!
//! # Using it
//!
//! Outbound SYN (active open, or both SYNs of a simultaneous open):
//! ```
//! use tcpcrypt_proto::eno::{EnoConfig, TepId, TepSuboption};
//! let x25519 = TepId::new(0x23).expect("valid id");
//! let p256 = TepId::new(0x21).expect("valid id");
//! // Most preferred first; on the wire the most preferred goes last.
//! let config = EnoConfig::new(vec![TepSuboption::plain(x25519), TepSuboption::plain(p256)]);
//! let syn_option = config.active_syn_option().expect("fits in the options area");
//! assert_eq!(syn_option, [0x45, 0x04, 0x21, 0x23]);
//! ```
//!
//! Inbound SYN at a passive opener: [`scan_options`] on the options area,
//! [`EnoScan::syn_option`] for the option's bytes, then [`passive_reply`]
//! gives the SYN-ACK's option and the [`Negotiated`] outcome, or the
//! [`DisableReason`] (then send no ENO, or [`EnoConfig::vacuous_reply`]).
//!
//! Inbound SYN-ACK at an active opener (or the peer's SYN in a simultaneous
//! open): [`negotiate`] with the option we sent and the one received.
//! After that every segment carries [`NON_SYN_OPTION`] while
//! [`EnoHandshake::must_send_eno`] says so, and encryption starts when
//! [`EnoHandshake::status`] is [`EnoStatus::Enabled`].
//!
//! The outcome carries the TEP byte as B sent it (first byte of the session
//! ID), our [`Role`](crate::Role), both sides' suboptions for the negotiated
//! TEP, the peer's `a` bit and the byte-exact [`Transcript`].

mod config;
mod handshake;
mod negotiate;
mod option;
mod scan;
mod tep;
mod transcript;

pub use config::{AppAware, EnoConfig, Origin, PlainTeps, TepRules};
pub use handshake::{EnoHandshake, EnoStatus, SegmentFlags};
pub use negotiate::{
    DisableReason, Negotiated, PassiveReply, TepRejection, TepRejections, negotiate, passive_reply,
};
pub use option::{
    ENO_KIND, EncodeError, MAX_LENGTH_BYTE_DATA, MAX_OPTIONS_LEN, NON_SYN_OPTION, Suboption,
    SynOption, SynOptionError, TepSuboption,
};
pub use scan::{EnoScan, scan_options};
pub use tep::{GlobalSuboption, InvalidTepId, TepByte, TepId};
pub use transcript::Transcript;
