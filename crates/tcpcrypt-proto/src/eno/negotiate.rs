//! Deciding the outcome of ENO from the two SYN-form options (RFC 8547
//! sections 4.3, 4.5 and 4.6): roles, the negotiated TEP, or why ENO is off.

use thiserror::Error;

use super::config::{EnoConfig, Origin, TepRules};
use super::option::{EncodeError, SynOption, SynOptionError, TepSuboption};
use super::scan::EnoScan;
use super::tep::{GlobalSuboption, TepByte, TepId};
use super::transcript::Transcript;
use crate::Role;

/// Why ENO is disabled for a connection, worded for operator logs.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DisableReason {
    #[error("the peer's SYN carried no ENO option")]
    NoEnoOption,
    #[error("the peer's SYN carried more than one ENO option")]
    SeveralEnoOptions,
    #[error("the peer's ENO option is malformed: {0}")]
    PeerOptionMalformed(#[source] SynOptionError),
    #[error("our own ENO option does not parse: {0}")]
    LocalOptionMalformed(#[source] SynOptionError),
    #[error("both hosts sent b = {}, so no A/B roles", u8::from(*b))]
    SameRoleBit { b: bool },
    #[error("mandatory application-aware mode is on and the peer sent a = 0")]
    PeerNotAppAware,
    #[error("the peer's ENO option offers no TEP (vacuous ENO)")]
    PeerVacuous,
    #[error("we offer no TEP (vacuous ENO)")]
    LocalVacuous,
    #[error("no valid TEP: {0}")]
    NoValidTep(TepRejections),
    #[error("the SYN-ACK option cannot be built: {0}")]
    ReplyUnencodable(#[source] EncodeError),
    #[error("a received {segment} segment carried no ENO option before the handshake completed")]
    SegmentWithoutEno { segment: &'static str },
    #[error("ENO turned off locally: {0}")]
    Local(&'static str),
}

/// Why one TEP identifier was not valid for the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TepRejection {
    /// Only host B offered it.
    NotOfferedByA,
    /// Only host A offered it (seen only when we, as B, choose the reply).
    NotOfferedByB,
    /// Host `by` sent suboption data the TEP does not accept.
    InvalidData { by: Role },
    /// Host `by` repeated the identifier and the TEP does not allow that.
    Repeated { by: Role },
}

impl std::fmt::Display for TepRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TepRejection::NotOfferedByA => f.write_str("not offered by host A"),
            TepRejection::NotOfferedByB => f.write_str("not offered by host B"),
            TepRejection::InvalidData { by } => write!(f, "invalid data from host {by}"),
            TepRejection::Repeated { by } => write!(f, "repeated by host {by}"),
        }
    }
}

/// Every TEP considered and why it was rejected, in the order considered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TepRejections(pub Vec<(TepId, TepRejection)>);

impl std::fmt::Display for TepRejections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (id, why)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "TEP {id} {why}")?;
        }
        Ok(())
    }
}

/// A successful negotiation: what the TEP needs to start.
///
/// Encryption is only enabled once an ACK carrying ENO has been both sent
/// and received (see [`EnoHandshake`](super::EnoHandshake)); until then this
/// is the outcome the handshake is heading for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    tep: TepByte,
    role: Role,
    local: Vec<TepSuboption>,
    peer: Vec<TepSuboption>,
    local_global: GlobalSuboption,
    peer_global: GlobalSuboption,
    transcript: Transcript,
}

impl Negotiated {
    /// The negotiated TEP byte exactly as host B sent it, `v` bit included:
    /// the first byte of the session ID.
    pub fn tep(&self) -> TepByte {
        self.tep
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Our suboptions for the negotiated TEP, in wire order (one unless the
    /// TEP allows repetition).
    pub fn local_suboptions(&self) -> &[TepSuboption] {
        &self.local
    }

    /// The peer's suboptions for the negotiated TEP, in wire order.
    pub fn peer_suboptions(&self) -> &[TepSuboption] {
        &self.peer
    }

    /// The global suboption we sent (explicit or implicit).
    pub fn local_global(&self) -> GlobalSuboption {
        self.local_global
    }

    /// The global suboption the peer sent (explicit or implicit); its `a`
    /// bit is what applications may read.
    pub fn peer_global(&self) -> GlobalSuboption {
        self.peer_global
    }

    /// The peer's application-aware bit.
    pub fn peer_app_aware(&self) -> bool {
        self.peer_global.a
    }

    /// The negotiation transcript (A's option, then B's).
    pub fn transcript(&self) -> &Transcript {
        &self.transcript
    }
}

impl EnoScan {
    /// The peer's SYN-form option out of a SYN's options area, or why there
    /// is none to negotiate with.
    pub fn syn_option<'a>(&self, area: &'a [u8]) -> Result<&'a [u8], DisableReason> {
        match self {
            EnoScan::None => Err(DisableReason::NoEnoOption),
            EnoScan::Several => Err(DisableReason::SeveralEnoOptions),
            EnoScan::One(_) => self.single(area).ok_or(DisableReason::NoEnoOption),
        }
    }
}

/// The outcome of ENO from our SYN-form option as sent (`local_option`) and
/// the peer's as received (`peer_option`), both whole options with kind and
/// length bytes.
///
/// Roles follow the `b` bits; the negotiated TEP is the last valid one in
/// host B's option, matched on identifiers with the `v` bit ignored, so a
/// resumption offer (`v = 1`) from A and a fresh answer (`v = 0`) from B, or
/// the other way round, select the same TEP. Works the same for the active
/// opener (local = SYN, peer = SYN-ACK), the passive opener and both sides
/// of a simultaneous open.
pub fn negotiate<R: TepRules + ?Sized>(
    config: &EnoConfig,
    local_option: &[u8],
    peer_option: &[u8],
    rules: &R,
) -> Result<Negotiated, DisableReason> {
    let local = SynOption::parse(local_option).map_err(DisableReason::LocalOptionMalformed)?;
    let peer = SynOption::parse(peer_option).map_err(DisableReason::PeerOptionMalformed)?;
    let (local_global, peer_global) = (local.global(), peer.global());
    if local_global.b == peer_global.b {
        return Err(DisableReason::SameRoleBit { b: local_global.b });
    }
    check_peer_global(config, peer_global)?;
    if peer.is_vacuous() {
        return Err(DisableReason::PeerVacuous);
    }
    if local.is_vacuous() {
        return Err(DisableReason::LocalVacuous);
    }

    let role = if local_global.b { Role::B } else { Role::A };
    let (a_option, b_option) = match role {
        Role::A => (&local, &peer),
        Role::B => (&peer, &local),
    };
    let mut rejections = Vec::new();
    let mut considered = Vec::new();
    for b_sub in b_option.teps().iter().rev() {
        let id = b_sub.id();
        if considered.contains(&id) {
            continue;
        }
        considered.push(id);
        match check_tep(id, a_option.teps(), b_option.teps(), role, rules) {
            Ok(()) => {
                let tep = b_sub.tep();
                let transcript = match role {
                    Role::A => Transcript::new(local_option, peer_option),
                    Role::B => Transcript::new(peer_option, local_option),
                };
                return Ok(Negotiated {
                    tep,
                    role,
                    local: suboptions_for(local.teps(), id),
                    peer: suboptions_for(peer.teps(), id),
                    local_global,
                    peer_global,
                    transcript,
                });
            }
            Err(why) => rejections.push((id, why)),
        }
    }
    Err(DisableReason::NoValidTep(TepRejections(rejections)))
}

/// A passive opener's answer to a received SYN-form option: the option to
/// put in the SYN-ACK and the outcome it leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassiveReply {
    option: Vec<u8>,
    negotiated: Negotiated,
}

impl PassiveReply {
    /// The SYN-ACK's ENO option: `b = 1` and our suboptions for the chosen
    /// TEP only.
    pub fn option(&self) -> &[u8] {
        &self.option
    }

    /// The outcome once the handshake completes with ENO.
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// Both parts.
    pub fn into_parts(self) -> (Vec<u8>, Negotiated) {
        (self.option, self.negotiated)
    }
}

/// What a passive opener (always host B) answers to the SYN-form option
/// `syn_option` it received.
///
/// Picks our most preferred TEP (first in [`EnoConfig::teps`]) that is valid
/// with the peer's offer, and answers with only that TEP's suboptions, as
/// RFC 8547 section 4.5 recommends. On `Err` the SYN-ACK carries no ENO
/// option (or, by configuration, [`EnoConfig::vacuous_reply`]).
pub fn passive_reply<R: TepRules + ?Sized>(
    config: &EnoConfig,
    syn_option: &[u8],
    rules: &R,
) -> Result<PassiveReply, DisableReason> {
    let peer = SynOption::parse(syn_option).map_err(DisableReason::PeerOptionMalformed)?;
    let peer_global = peer.global();
    if peer_global.b {
        return Err(DisableReason::SameRoleBit { b: true });
    }
    check_peer_global(config, peer_global)?;
    if peer.is_vacuous() {
        return Err(DisableReason::PeerVacuous);
    }
    if config.teps().is_empty() {
        return Err(DisableReason::LocalVacuous);
    }

    let mut rejections = Vec::new();
    let mut considered = Vec::new();
    for sub in config.teps() {
        let id = sub.id();
        if considered.contains(&id) {
            continue;
        }
        considered.push(id);
        match check_tep(id, peer.teps(), config.teps(), Role::B, rules) {
            Ok(()) => {
                let chosen = suboptions_for(config.teps(), id);
                let option = SynOption::offer(Some(config.passive_global()), &chosen)
                    .map_err(DisableReason::ReplyUnencodable)?
                    .to_bytes();
                let negotiated = negotiate(config, &option, syn_option, rules)?;
                return Ok(PassiveReply { option, negotiated });
            }
            Err(why) => rejections.push((id, why)),
        }
    }
    Err(DisableReason::NoValidTep(TepRejections(rejections)))
}

fn check_peer_global(config: &EnoConfig, peer: GlobalSuboption) -> Result<(), DisableReason> {
    if config.app_aware_mandatory() && !peer.a {
        return Err(DisableReason::PeerNotAppAware);
    }
    Ok(())
}

/// RFC 8547 section 4.5: `id` is valid when both options carry it, every
/// suboption for it is acceptable to the TEP, and any repetition is allowed.
fn check_tep<R: TepRules + ?Sized>(
    id: TepId,
    a_teps: &[TepSuboption],
    b_teps: &[TepSuboption],
    local_role: Role,
    rules: &R,
) -> Result<(), TepRejection> {
    let a_subs: Vec<&TepSuboption> = a_teps.iter().filter(|s| s.id() == id).collect();
    let b_subs: Vec<&TepSuboption> = b_teps.iter().filter(|s| s.id() == id).collect();
    if a_subs.is_empty() {
        return Err(TepRejection::NotOfferedByA);
    }
    if b_subs.is_empty() {
        return Err(TepRejection::NotOfferedByB);
    }
    for (by, subs) in [(Role::A, &a_subs), (Role::B, &b_subs)] {
        if subs.len() > 1 && !rules.allows_repeat(id) {
            return Err(TepRejection::Repeated { by });
        }
        let origin = if by == local_role {
            Origin::Local
        } else {
            Origin::Peer
        };
        if !subs.iter().all(|s| rules.validate(s, origin)) {
            return Err(TepRejection::InvalidData { by });
        }
    }
    Ok(())
}

fn suboptions_for(teps: &[TepSuboption], id: TepId) -> Vec<TepSuboption> {
    teps.iter().filter(|s| s.id() == id).cloned().collect()
}
