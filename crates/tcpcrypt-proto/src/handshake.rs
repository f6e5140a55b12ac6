//! The tcpcrypt handshake the engine drives, built on [`crate::eno`]: a
//! per-host [`Host`] (configuration and resumption cache) that produces our
//! SYN option or answers a received SYN, then a per-connection
//! [`Handshake`] whose states are types (RFC 8548 sections 3.2 to 3.5).
//!
//! Order of calls for an active opener:
//! 1. [`Host::active_open`] → [`ActiveOpen::syn_option`] goes in the SYN.
//! 2. On the SYN-ACK (or the peer's SYN in a simultaneous open),
//!    [`ActiveOpen::on_peer_syn`] → [`Handshake`].
//! 3. Once ENO is enabled (see [`crate::eno::EnoHandshake`]): as host A,
//!    send [`AwaitInit2::init1`] and feed B's stream to
//!    [`AwaitInit2::feed`] until it yields a [`Session`]; as host B (a
//!    simultaneous open with our `b = 1`), feed A's stream to
//!    [`AwaitInit1::feed`], send the Init2 it returns; a resumed handshake
//!    is a [`Session`] already.
//! 4. [`Host::on_established`] with the session, then use its frame writer
//!    and reader.
//!
//! A passive opener calls [`Host::passive_open`] with the SYN's ENO option
//! and sends [`PassiveOpen::reply_option`] in its SYN-ACK; steps 3 and 4
//! are the same.

use std::hash::Hash;

use zeroize::Zeroizing;

use crate::aead::Aead;
use crate::eno::{
    AppAware, DisableReason, EnoConfig, Negotiated, Origin, TepId, TepRules, TepSuboption,
    negotiate, passive_reply,
};
use crate::frame::{FrameReader, FrameWriter, first_frame_offset};
use crate::init::{Init1, Init2, InitError, InitKind, InitProgress, init_progress};
use crate::kex::{DrawnKey, EphemeralKey, KexError};
use crate::resume::{
    CacheLimits, DEFAULT_RESUME_NONCE_LEN, MAX_RESUME_NONCE_LEN, ResumeMatch, ResumeOffer,
    ResumeSecret, ResumptionCache, split_resumption_data,
};
use crate::rng::{Rng, RngError};
use crate::role::Role;
use crate::schedule::{RESUME_HALF_LEN, SessionSecret};
use crate::session::{KeyLogSecrets, Session, SessionInfo};
use crate::tep::{NONCE_LEN, Tep};

/// A host's tcpcrypt settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostConfig {
    /// TEPs we offer and accept, most preferred first.
    pub teps: Vec<Tep>,
    /// AEADs offered in Init1 (as A, in this order) and our preference when
    /// choosing from an Init1 (as B, first is best).
    pub aeads: Vec<Aead>,
    /// `b` for active opens (only for simultaneous open; RFC 8547 4.2).
    pub passive_role_bit: bool,
    /// The `a` bit we send.
    pub app_aware: bool,
    /// Disable ENO unless the peer sends `a = 1` (we then send `a = 1`).
    pub app_aware_mandatory: bool,
    /// Offer and accept session resumption.
    pub resumption: bool,
    /// Length of our resumption nonces, 0..=8 (RFC 8548 section 3.5).
    pub resume_nonce_len: usize,
    pub cache_limits: CacheLimits,
    /// Most bytes our SYN's ENO option may take. A resumption offer
    /// (20 bytes with an 8-byte nonce) displaces the least preferred fresh
    /// offers to stay within it, and is left out if it cannot fit at all.
    pub max_syn_option_len: usize,
}

/// The TCP options area holds 40 bytes; a typical SYN spends 20 of them on
/// MSS, SACK-permitted, timestamps and window scale.
pub const DEFAULT_MAX_SYN_OPTION_LEN: usize = 20;

impl Default for HostConfig {
    fn default() -> HostConfig {
        HostConfig {
            teps: Tep::ALL.to_vec(),
            aeads: Aead::ALL.to_vec(),
            passive_role_bit: false,
            app_aware: false,
            app_aware_mandatory: false,
            resumption: true,
            resume_nonce_len: DEFAULT_RESUME_NONCE_LEN,
            cache_limits: CacheLimits::default(),
            max_syn_option_len: DEFAULT_MAX_SYN_OPTION_LEN,
        }
    }
}

/// A configuration the protocol cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("teps: the list is empty, expected at least one TEP")]
    NoTeps,
    #[error("aeads: the list is empty, expected at least one AEAD")]
    NoAeads,
    #[error("teps: {0} is listed twice")]
    DuplicateTep(Tep),
    #[error("aeads: {0} is listed twice")]
    DuplicateAead(Aead),
    #[error("resume_nonce_len: {0} exceeds the maximum of 8 bytes")]
    NonceTooLong(usize),
}

/// Per-connection controls an application may ask for: the two of RFC 8548
/// section 3.5, and the application-aware mode, which RFC 8547 section 4.2
/// wants applications to be able to change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionPolicy {
    /// Neither offer nor accept resumption: fresh key exchange only.
    pub ignore_resumption: bool,
    /// Cache no session secret from this connection.
    pub no_cache: bool,
    /// This connection's application-aware mode; `None` keeps the host's
    /// ([`HostConfig::app_aware`], [`HostConfig::app_aware_mandatory`]).
    pub app_aware: Option<AppAware>,
}

/// Why a handshake failed. Every variant except [`HandshakeError::Disabled`]
/// means "abort the connection" (RST, an error that is not EOF).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("ENO disabled: {0}")]
    Disabled(#[from] DisableReason),
    #[error("negotiated TEP byte {0:#04x} is not a tcpcrypt TEP")]
    NotTcpcrypt(u8),
    #[error(transparent)]
    Init(#[from] InitError),
    #[error(transparent)]
    Kex(#[from] KexError),
    #[error(transparent)]
    Rng(#[from] RngError),
    #[error("Init1 offers none of our AEADs (offered ids: {offered:04x?})")]
    NoCommonAead { offered: Vec<u16> },
    #[error("Init2 chose {chosen}, which our Init1 did not offer")]
    CipherNotOffered { chosen: Aead },
    #[error("resumption was negotiated but no matching secret is at hand")]
    ResumptionMismatch,
}

/// What tcpcrypt accepts in ENO suboptions.
///
/// A resumption suboption from host A also offers fresh key agreement with
/// its TEP (RFC 8548 section 3.2), so B accepts it whether or not it names a
/// secret B holds. One from host B decides the mode: it is valid only if its
/// identifier half completes A's (section 3.5, "ignore that suboption"). Both
/// ends of a simultaneous open apply the same rules with the roles ENO gave
/// them, so they agree on the TEP.
struct Rules<'a> {
    /// Our pending resumption offer, if we made one (active side).
    offer: Option<&'a ResumeOffer>,
    /// We are host B: the peer's resumption requests are acceptable data
    /// (a request we cannot honour is still a fresh offer).
    peer_may_request: bool,
    /// Whether our own resumption suboption counts as valid: always as host
    /// A; as host B only when the peer's suboption matched it.
    local_resumption_valid: bool,
}

impl Rules<'_> {
    /// Whether `peer_option` carries a resumption suboption completing
    /// `offer`'s identifier.
    fn peer_matches(offer: Option<&ResumeOffer>, peer_option: &[u8]) -> bool {
        let (Some(offer), Ok(parsed)) = (offer, crate::eno::SynOption::parse(peer_option)) else {
            return false;
        };
        parsed.teps().iter().any(|s| {
            s.tep().v()
                && Tep::from_id(s.id().get()) == Some(offer.claimed.tep)
                && offer.match_reply(s.data()).is_some()
        })
    }
}

impl TepRules for Rules<'_> {
    fn validate(&self, sub: &TepSuboption, origin: Origin) -> bool {
        let Some(tep) = Tep::from_id(sub.id().get()) else {
            return false;
        };
        if !sub.tep().v() {
            return sub.data().is_empty();
        }
        match origin {
            Origin::Local => self.local_resumption_valid,
            Origin::Peer => {
                self.peer_may_request
                    || self.offer.is_some_and(|offer| {
                        offer.claimed.tep == tep && offer.match_reply(sub.data()).is_some()
                    })
            }
        }
    }

    fn allows_repeat(&self, _id: TepId) -> bool {
        false
    }
}

const fn const_tep_id(id: u8) -> TepId {
    match TepId::new(id) {
        Ok(id) => id,
        // Evaluated at compile time only: a bad constant fails the build.
        Err(_) => panic!("tcpcrypt TEP ids lie in ENO's TEP range"),
    }
}

const TEP_IDS: [TepId; 4] = [
    const_tep_id(0x21),
    const_tep_id(0x22),
    const_tep_id(0x23),
    const_tep_id(0x24),
];

fn tep_id(tep: Tep) -> TepId {
    match tep {
        Tep::P256 => TEP_IDS[0],
        Tep::P521 => TEP_IDS[1],
        Tep::X25519 => TEP_IDS[2],
        Tep::X448 => TEP_IDS[3],
    }
}

/// One host's tcpcrypt state: configuration and resumption cache. `P`
/// names a peer for the cache (the engine uses its IP address).
pub struct Host<P> {
    config: HostConfig,
    cache: ResumptionCache<P>,
}

/// An active open in progress: our SYN option and what it offered.
#[derive(Debug)]
pub struct ActiveOpen {
    eno: EnoConfig,
    syn_option: Vec<u8>,
    offer: Option<ResumeOffer>,
    aeads: Vec<Aead>,
    policy: ConnectionPolicy,
}

/// A passive opener's answer to a SYN.
#[derive(Debug)]
pub struct PassiveOpen {
    reply_option: Vec<u8>,
    handshake: Handshake,
}

impl PassiveOpen {
    /// The ENO option for the SYN-ACK.
    pub fn reply_option(&self) -> &[u8] {
        &self.reply_option
    }

    pub fn into_parts(self) -> (Vec<u8>, Handshake) {
        (self.reply_option, self.handshake)
    }
}

impl<P: Eq + Hash + Clone> Host<P> {
    pub fn new(config: HostConfig) -> Result<Host<P>, ConfigError> {
        if config.teps.is_empty() {
            return Err(ConfigError::NoTeps);
        }
        if config.aeads.is_empty() {
            return Err(ConfigError::NoAeads);
        }
        if let Some(t) = config
            .teps
            .iter()
            .enumerate()
            .find_map(|(i, t)| config.teps[..i].contains(t).then_some(*t))
        {
            return Err(ConfigError::DuplicateTep(t));
        }
        if let Some(a) = config
            .aeads
            .iter()
            .enumerate()
            .find_map(|(i, a)| config.aeads[..i].contains(a).then_some(*a))
        {
            return Err(ConfigError::DuplicateAead(a));
        }
        if config.resume_nonce_len > MAX_RESUME_NONCE_LEN {
            return Err(ConfigError::NonceTooLong(config.resume_nonce_len));
        }
        let cache = ResumptionCache::new(config.cache_limits);
        Ok(Host { config, cache })
    }

    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    pub fn cache(&self) -> &ResumptionCache<P> {
        &self.cache
    }

    /// The cache, e.g. to flush a chain or a peer.
    pub fn cache_mut(&mut self) -> &mut ResumptionCache<P> {
        &mut self.cache
    }

    /// The application-aware mode of a connection under `policy`.
    fn app_aware(&self, policy: ConnectionPolicy) -> AppAware {
        policy.app_aware.unwrap_or_else(|| {
            AppAware::from_flags(self.config.app_aware, self.config.app_aware_mandatory)
        })
    }

    fn eno_config(&self, teps: Vec<TepSuboption>, policy: ConnectionPolicy) -> EnoConfig {
        EnoConfig::new(teps)
            .with_passive_role_bit(self.config.passive_role_bit)
            .with_app_aware_mode(self.app_aware(policy))
    }

    fn fresh_nonce(&self, rng: &mut dyn Rng) -> Result<Vec<u8>, RngError> {
        let mut nonce = vec![0u8; self.config.resume_nonce_len];
        rng.fill(&mut nonce)?;
        Ok(nonce)
    }

    /// Length of a SYN option holding only a resumption suboption (and
    /// the global suboption, when it is not the implicit 0x00).
    fn resumption_option_len(&self, policy: ConnectionPolicy) -> usize {
        let global = usize::from(self.config.passive_role_bit || self.app_aware(policy).sends_a());
        2 + global + 1 + RESUME_HALF_LEN + self.config.resume_nonce_len
    }

    /// Starts an active open to `peer`: our SYN option offers our TEPs and,
    /// when the cache holds a secret for `peer` (and policy allows), one
    /// resumption suboption for the most preferred TEP that has one. That
    /// secret is used up whatever happens next. Fresh offers that do not fit
    /// beside it within [`HostConfig::max_syn_option_len`] are left out,
    /// least preferred first. The `a` bit, and whether a peer without it
    /// is refused, follow `policy`'s application-aware mode.
    pub fn active_open(
        &mut self,
        peer: &P,
        policy: ConnectionPolicy,
        rng: &mut dyn Rng,
    ) -> Result<ActiveOpen, HandshakeError> {
        let resumable = self.config.resumption
            && !policy.ignore_resumption
            && self.resumption_option_len(policy) <= self.config.max_syn_option_len;
        let resume_tep = resumable
            .then(|| {
                self.config
                    .teps
                    .iter()
                    .copied()
                    .find(|t| self.cache.can_offer(peer, *t))
            })
            .flatten();
        let offer = match resume_tep {
            Some(tep) => {
                let nonce = self.fresh_nonce(rng)?;
                self.cache.take_offer(peer, tep, nonce)
            }
            None => None,
        };
        let mut teps = Vec::with_capacity(self.config.teps.len());
        if let Some(offer) = &offer {
            teps.push(TepSuboption::with_data(
                tep_id(offer.claimed.tep),
                offer.suboption_data(),
            ));
        }
        for tep in &self.config.teps {
            if offer.as_ref().is_none_or(|o| o.claimed.tep != *tep) {
                teps.push(TepSuboption::plain(tep_id(*tep)));
            }
        }
        if offer.is_some() {
            let room = self
                .config
                .max_syn_option_len
                .saturating_sub(self.resumption_option_len(policy));
            teps.truncate(1 + room);
        }
        let eno = self.eno_config(teps, policy);
        let syn_option = eno
            .active_syn_option()
            .map_err(|e| HandshakeError::Disabled(DisableReason::ReplyUnencodable(e)))?;
        Ok(ActiveOpen {
            eno,
            syn_option,
            offer,
            aeads: self.config.aeads.clone(),
            policy,
        })
    }

    /// Answers a received SYN's ENO option (`syn_option`, the whole option)
    /// as passive opener (host B): agrees to resume when the peer names a
    /// secret we hold, else picks our most preferred TEP it offers. Under
    /// a mandatory application-aware `policy`, a SYN with `a = 0` is
    /// refused ([`DisableReason::PeerNotAppAware`]); the SYN-ACK then
    /// carries no ENO option.
    pub fn passive_open(
        &mut self,
        peer: &P,
        syn_option: &[u8],
        policy: ConnectionPolicy,
        rng: &mut dyn Rng,
    ) -> Result<PassiveOpen, HandshakeError> {
        let resumable = self.config.resumption && !policy.ignore_resumption;
        let matched = if resumable {
            self.match_resumption(peer, syn_option)
        } else {
            None
        };
        let (teps, resumed) = match matched {
            Some(m) => {
                let our_nonce = self.fresh_nonce(rng)?;
                let mut teps = vec![TepSuboption::with_data(
                    tep_id(m.claimed.tep),
                    m.suboption_data(&our_nonce),
                )];
                teps.extend(
                    self.config
                        .teps
                        .iter()
                        .filter(|t| **t != m.claimed.tep)
                        .map(|t| TepSuboption::plain(tep_id(*t))),
                );
                (teps, Some((m, our_nonce)))
            }
            None => (
                self.config
                    .teps
                    .iter()
                    .map(|t| TepSuboption::plain(tep_id(*t)))
                    .collect(),
                None,
            ),
        };
        let eno = self.eno_config(teps, policy);
        let rules = Rules {
            offer: None,
            peer_may_request: true,
            local_resumption_valid: true,
        };
        let (reply_option, negotiated) = passive_reply(&eno, syn_option, &rules)?.into_parts();
        let handshake = match resumed {
            Some((m, our_nonce)) if negotiated.tep().v() => {
                let sn = m.claimed.session_nonce(&our_nonce, &m.peer_nonce);
                Handshake::Resumed(resumed_session(&negotiated, m.claimed, &sn, policy)?)
            }
            _ => fresh_handshake(&negotiated, &self.config.aeads, policy, rng)?,
        };
        Ok(PassiveOpen {
            reply_option,
            handshake,
        })
    }

    /// The first tcpcrypt resumption request in `syn_option` that names a
    /// secret we hold. RFC 8548 allows one per TEP; we try them in order.
    fn match_resumption(&mut self, peer: &P, syn_option: &[u8]) -> Option<ResumeMatch> {
        let parsed = crate::eno::SynOption::parse(syn_option).ok()?;
        let requests: Vec<(Tep, Vec<u8>)> = parsed
            .teps()
            .iter()
            .filter(|s| s.tep().v() && split_resumption_data(s.data()).is_some())
            .filter_map(|s| Tep::from_id(s.id().get()).map(|t| (t, s.data().to_vec())))
            .filter(|(t, _)| self.config.teps.contains(t))
            .collect();
        requests
            .into_iter()
            .find_map(|(tep, data)| self.cache.match_offer(peer, tep, &data))
    }

    /// Records an established session with `peer`: a fresh session's ss\[1\]
    /// starts a resumption chain unless the connection's policy forbids
    /// caching; a resumed session under that policy drops its chain.
    pub fn on_established(&mut self, peer: &P, session: &mut Session) {
        if session.no_cache {
            if let Some(chain) = session.chain {
                self.cache.flush_chain(chain);
            }
            session.next_secret = None;
            return;
        }
        if let Some(ss1) = session.next_secret.take() {
            let info = session.info;
            session.chain = Some(self.cache.insert_fresh(
                peer.clone(),
                info.tep,
                info.aead,
                ss1,
                info.original_role,
            ));
        }
    }

    /// Forgets every cached secret the session used or produced.
    pub fn flush(&mut self, session: &Session) {
        if let Some(chain) = session.chain {
            self.cache.flush_chain(chain);
        }
    }
}

impl ActiveOpen {
    /// Our SYN's ENO option (also our SYN-ACK's in a simultaneous open).
    pub fn syn_option(&self) -> &[u8] {
        &self.syn_option
    }

    /// The ENO settings behind the option.
    pub fn eno_config(&self) -> &EnoConfig {
        &self.eno
    }

    /// Whether the SYN offers resumption.
    pub fn offers_resumption(&self) -> bool {
        self.offer.is_some()
    }

    /// Negotiates with the peer's SYN-form option (`peer_option`, whole
    /// option as received in the SYN-ACK, or in the peer's SYN in a
    /// simultaneous open). A resumption reply whose identifier half does not
    /// match ours is ignored; if nothing else is valid ENO is disabled
    /// (plain TCP, RFC 8548 section 3.5).
    pub fn on_peer_syn(
        self,
        peer_option: &[u8],
        rng: &mut dyn Rng,
    ) -> Result<Handshake, HandshakeError> {
        // We are host B only in a simultaneous open with our `b = 1`.
        let we_are_b = self.eno.active_global().b;
        let rules = Rules {
            offer: self.offer.as_ref(),
            peer_may_request: we_are_b,
            local_resumption_valid: !we_are_b
                || Rules::peer_matches(self.offer.as_ref(), peer_option),
        };
        let negotiated = negotiate(&self.eno, &self.syn_option, peer_option, &rules)?;
        let b_sent_v = negotiated.tep().v();
        if !b_sent_v {
            return fresh_handshake(&negotiated, &self.aeads, self.policy, rng);
        }
        // B's suboption has v = 1: resumption, valid only if it matched our
        // offer (the rules refused anything else).
        let offer = self.offer.ok_or(HandshakeError::ResumptionMismatch)?;
        let tep = Tep::from_id(negotiated.tep().id().get())
            .ok_or(HandshakeError::NotTcpcrypt(negotiated.tep().to_byte()))?;
        if offer.claimed.tep != tep {
            return Err(HandshakeError::ResumptionMismatch);
        }
        let our_v = negotiated.local_suboptions().iter().any(|s| s.tep().v());
        let peer_nonce = negotiated
            .peer_suboptions()
            .iter()
            .find_map(|s| offer.match_reply(s.data()))
            .filter(|_| our_v)
            .ok_or(HandshakeError::ResumptionMismatch)?
            .to_vec();
        let sn = offer.claimed.session_nonce(&offer.nonce, &peer_nonce);
        Ok(Handshake::Resumed(resumed_session(
            &negotiated,
            offer.claimed,
            &sn,
            self.policy,
        )?))
    }
}

/// Facts about the connection every handshake state carries.
#[derive(Debug, Clone)]
struct Common {
    tep: Tep,
    role: Role,
    transcript: Vec<u8>,
    peer_app_aware: bool,
    policy: ConnectionPolicy,
}

fn common(negotiated: &Negotiated, policy: ConnectionPolicy) -> Result<Common, HandshakeError> {
    let byte = negotiated.tep().to_byte();
    let tep = Tep::from_id(byte).ok_or(HandshakeError::NotTcpcrypt(byte))?;
    Ok(Common {
        tep,
        role: negotiated.role(),
        transcript: negotiated.transcript().as_bytes().to_vec(),
        peer_app_aware: negotiated.peer_app_aware(),
        policy,
    })
}

fn fresh_handshake(
    negotiated: &Negotiated,
    aeads: &[Aead],
    policy: ConnectionPolicy,
    rng: &mut dyn Rng,
) -> Result<Handshake, HandshakeError> {
    let common = common(negotiated, policy)?;
    // Key material is drawn before the nonce, as it always was, so seeded
    // test runs stay reproducible.
    Ok(match common.role {
        Role::A => {
            let key = EphemeralKey::generate(common.tep, rng)?;
            let mut nonce = [0u8; NONCE_LEN];
            rng.fill(&mut nonce)?;
            let init1 = Init1::new(
                aeads.iter().map(|a| a.id()).collect(),
                nonce,
                key.public_key().clone(),
            );
            let bytes = init1.encode()?;
            Handshake::SendInit1(AwaitInit2 {
                common,
                key,
                init1: bytes,
                nonce,
                offered: aeads.to_vec(),
                received: Vec::new(),
            })
        }
        Role::B => {
            let key = DrawnKey::draw(common.tep, rng)?;
            let mut nonce = [0u8; NONCE_LEN];
            rng.fill(&mut nonce)?;
            Handshake::AwaitInit1(AwaitInit1 {
                common,
                key,
                nonce,
                preference: aeads.to_vec(),
                received: Vec::new(),
            })
        }
    })
}

fn resumed_session(
    negotiated: &Negotiated,
    claimed: ResumeSecret,
    sn: &[u8],
    policy: ConnectionPolicy,
) -> Result<Session, HandshakeError> {
    let common = common(negotiated, policy)?;
    if common.tep != claimed.tep {
        return Err(HandshakeError::ResumptionMismatch);
    }
    let session_id = claimed.secret.session_id(common.tep, true, sn);
    let mk0 = claimed.secret.master_key(sn);
    let offset = first_frame_offset(0);
    let info = SessionInfo {
        session_id,
        role: common.role,
        original_role: claimed.original_role,
        tep: common.tep,
        aead: claimed.aead,
        resumed: true,
        peer_app_aware: common.peer_app_aware,
    };
    Ok(Session {
        info,
        writer: FrameWriter::new(&mk0, claimed.aead, claimed.original_role, offset),
        reader: FrameReader::new(&mk0, claimed.aead, claimed.original_role.peer(), offset),
        secrets: KeyLogSecrets {
            ss: claimed.secret,
            es: None,
        },
        next_secret: None,
        chain: Some(claimed.chain),
        no_cache: policy.no_cache,
    })
}

/// A connection's tcpcrypt handshake after ENO negotiation.
#[derive(Debug)]
pub enum Handshake {
    /// Host A, fresh key exchange: send Init1, then collect Init2.
    SendInit1(AwaitInit2),
    /// Host B, fresh key exchange: collect Init1, then send Init2.
    AwaitInit1(AwaitInit1),
    /// Resumed: established without Init messages.
    Resumed(Session),
}

impl Handshake {
    pub fn tep(&self) -> Tep {
        match self {
            Handshake::SendInit1(s) => s.common.tep,
            Handshake::AwaitInit1(s) => s.common.tep,
            Handshake::Resumed(s) => s.info.tep,
        }
    }

    /// Our ENO role on this connection.
    pub fn role(&self) -> Role {
        match self {
            Handshake::SendInit1(s) => s.common.role,
            Handshake::AwaitInit1(s) => s.common.role,
            Handshake::Resumed(s) => s.info.role,
        }
    }
}

/// Host A after sending Init1, collecting B's Init2.
pub struct AwaitInit2 {
    common: Common,
    key: EphemeralKey,
    init1: Vec<u8>,
    nonce: [u8; NONCE_LEN],
    offered: Vec<Aead>,
    received: Vec<u8>,
}

impl std::fmt::Debug for AwaitInit2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AwaitInit2({}, {} bytes received)",
            self.common.tep,
            self.received.len()
        )
    }
}

/// Outcome of feeding bytes to a handshake state.
#[derive(Debug)]
pub enum Step<S> {
    /// The message is incomplete; keep feeding.
    NeedMore(S),
    /// Established. The first `consumed` bytes of the last input belonged
    /// to the Init message; the rest are frames for the session's reader.
    /// `send` holds bytes to transmit first (B's Init2), possibly empty.
    Established {
        session: Box<Session>,
        consumed: usize,
        send: Vec<u8>,
    },
}

/// Appends as much of `bytes` as the Init message may still need; returns
/// the complete message length once it is all there.
fn collect(
    kind: InitKind,
    tep: Tep,
    received: &mut Vec<u8>,
    bytes: &[u8],
) -> Result<(Option<usize>, usize), InitError> {
    let before = received.len();
    let mut taken = 0;
    loop {
        match init_progress(kind, tep, received)? {
            InitProgress::Complete(len) => {
                received.truncate(len);
                return Ok((Some(len), len.saturating_sub(before)));
            }
            InitProgress::NeedAtLeast(n) => {
                let want = n.saturating_sub(received.len());
                let rest = bytes.get(taken..).unwrap_or_default();
                if rest.is_empty() {
                    return Ok((None, taken));
                }
                let chunk = rest.get(..want.min(rest.len())).unwrap_or_default();
                received.extend_from_slice(chunk);
                taken += chunk.len();
            }
        }
    }
}

impl AwaitInit2 {
    /// Init1 exactly as it must be sent, at the start of A's stream; the
    /// segment with its last byte needs PSH (RFC 8548 section 3.3).
    pub fn init1(&self) -> &[u8] {
        &self.init1
    }

    /// Feeds B's wire stream from its first byte on.
    pub fn feed(mut self, bytes: &[u8]) -> Result<Step<AwaitInit2>, HandshakeError> {
        let (complete, consumed) =
            collect(InitKind::Init2, self.common.tep, &mut self.received, bytes)?;
        if complete.is_none() {
            return Ok(Step::NeedMore(self));
        }
        let init2 = Init2::decode(self.common.tep, &self.received)?;
        if !self.offered.contains(&init2.sym_cipher) {
            return Err(HandshakeError::CipherNotOffered {
                chosen: init2.sym_cipher,
            });
        }
        let es = self.key.agree(&init2.public_key)?;
        let ss0 = SessionSecret::extract(
            &self.nonce,
            &self.common.transcript,
            &self.init1,
            &self.received,
            es.as_bytes(),
        );
        let session = fresh_session(
            &self.common,
            init2.sym_cipher,
            ss0,
            es.as_bytes(),
            first_frame_offset(self.init1.len()),
            first_frame_offset(self.received.len()),
        );
        Ok(Step::Established {
            session: Box::new(session),
            consumed,
            send: Vec::new(),
        })
    }
}

/// Host B collecting A's Init1. Its key pair is only drawn, not computed,
/// until Init1 is complete (see [`DrawnKey`]).
pub struct AwaitInit1 {
    common: Common,
    key: DrawnKey,
    nonce: [u8; NONCE_LEN],
    preference: Vec<Aead>,
    received: Vec<u8>,
}

impl std::fmt::Debug for AwaitInit1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AwaitInit1({}, {} bytes received)",
            self.common.tep,
            self.received.len()
        )
    }
}

impl AwaitInit1 {
    /// Feeds A's wire stream from its first byte on. When Init1 is complete
    /// the session is established and `send` is our Init2 (to go out first,
    /// with PSH on its last byte).
    pub fn feed(mut self, bytes: &[u8]) -> Result<Step<AwaitInit1>, HandshakeError> {
        let (complete, consumed) =
            collect(InitKind::Init1, self.common.tep, &mut self.received, bytes)?;
        if complete.is_none() {
            return Ok(Step::NeedMore(self));
        }
        let init1 = Init1::decode(self.common.tep, &self.received)?;
        let offered: Vec<Aead> = init1.offered_aeads().collect();
        let aead = self
            .preference
            .iter()
            .copied()
            .find(|a| offered.contains(a))
            .ok_or_else(|| HandshakeError::NoCommonAead {
                offered: init1.sym_ciphers.clone(),
            })?;
        let key = self.key.compute()?;
        let es = key.agree(&init1.public_key)?;
        let init2 = Init2::new(aead, self.nonce, key.public_key().clone()).encode()?;
        let ss0 = SessionSecret::extract(
            &init1.nonce,
            &self.common.transcript,
            &self.received,
            &init2,
            es.as_bytes(),
        );
        let session = fresh_session(
            &self.common,
            aead,
            ss0,
            es.as_bytes(),
            first_frame_offset(init2.len()),
            first_frame_offset(self.received.len()),
        );
        Ok(Step::Established {
            session: Box::new(session),
            consumed,
            send: init2,
        })
    }
}

fn fresh_session(
    common: &Common,
    aead: Aead,
    ss0: SessionSecret,
    es: &[u8],
    our_first: u64,
    peer_first: u64,
) -> Session {
    let session_id = ss0.session_id(common.tep, false, &[]);
    let mk0 = ss0.master_key(&[]);
    let role = common.role;
    let next_secret = (!common.policy.no_cache).then(|| ss0.next());
    Session {
        info: SessionInfo {
            session_id,
            role,
            original_role: role,
            tep: common.tep,
            aead,
            resumed: false,
            peer_app_aware: common.peer_app_aware,
        },
        writer: FrameWriter::new(&mk0, aead, role, our_first),
        reader: FrameReader::new(&mk0, aead, role.peer(), peer_first),
        secrets: KeyLogSecrets {
            ss: ss0,
            es: Some(Zeroizing::new(es.to_vec())),
        },
        next_secret,
        chain: None,
        no_cache: common.policy.no_cache,
    }
}
