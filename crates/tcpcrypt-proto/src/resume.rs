//! Session resumption (RFC 8548 section 3.5): the cache of the next unused
//! session secret ss\[i\] of each chain, the resumption suboption data, and
//! the matching rules for both openers.
//!
//! Policy choices, all documented here because the RFC leaves them open:
//! - An entry holds ss\[i\], its index i, the AEAD and our role in the ss\[0\]
//!   session, and belongs to a chain (all secrets derived from one ss\[0\]).
//! - Every secret serves at most one connection: an active opener's offer
//!   takes ss\[i\] out and leaves ss\[i+1\] in its place at once, whether or not
//!   the peer agrees, so the next attempt uses the next i (section 3.5:
//!   "successfully or not"); a passive opener that agrees leaves ss\[k+1\].
//! - Look-ahead: a passive opener also tries ss\[i+1\] .. ss\[i+look_ahead\]
//!   of a chain, because the active opener advances on every attempt and
//!   some attempts (a lost SYN, a SYN to a host that forgot) never reach us.
//!   Secrets skipped over are dropped.
//! - Resumption data must be a 9-byte identifier half plus a 0..8-byte
//!   nonce; shorter or longer data is treated as a fresh offer.
//! - Bounded: a few chains per (peer, TEP), a global limit, oldest evicted.
//! - Matching costs no key derivation: each chain keeps ss\[i\] ..
//!   ss\[i+look_ahead\] with the peer's identifier half already derived, so a
//!   SYN (which anyone can forge) only compares bytes; the derivations
//!   happen when a chain starts or moves on.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use aws_lc_rs::constant_time::verify_slices_are_equal;

use crate::aead::Aead;
use crate::role::Role;
use crate::schedule::{RESUME_HALF_LEN, SessionSecret};
use crate::tep::Tep;

/// Longest resumption nonce (RFC 8548 section 3.5).
pub const MAX_RESUME_NONCE_LEN: usize = 8;
/// Nonce length used unless configured otherwise: the RFC requires 8 bytes
/// when reuse of a secret (VM cloning, hibernation) cannot be ruled out.
pub const DEFAULT_RESUME_NONCE_LEN: usize = 8;
/// How many secrets past the cached one a passive opener tries.
pub const DEFAULT_LOOK_AHEAD: u32 = 4;
/// Chains kept per (peer, TEP).
pub const DEFAULT_CHAINS_PER_PEER: usize = 4;
/// Chains kept in total.
pub const DEFAULT_MAX_CHAINS: usize = 4096;

/// Identifies one chain of secrets (everything derived from one ss\[0\]), so
/// a connection can flush what it used or produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChainId(u64);

/// Limits and look-ahead of a [`ResumptionCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheLimits {
    pub look_ahead: u32,
    pub chains_per_peer: usize,
    pub max_chains: usize,
}

impl Default for CacheLimits {
    fn default() -> CacheLimits {
        CacheLimits {
            look_ahead: DEFAULT_LOOK_AHEAD,
            chains_per_peer: DEFAULT_CHAINS_PER_PEER,
            max_chains: DEFAULT_MAX_CHAINS,
        }
    }
}

struct Entry {
    chain: ChainId,
    /// ss\[index\] .. ss\[index + look_ahead\], each with the identifier
    /// half the peer would send for it.
    window: VecDeque<Candidate>,
    index: u64,
    aead: Aead,
    original_role: Role,
}

struct Candidate {
    secret: SessionSecret,
    peer_half: [u8; RESUME_HALF_LEN],
}

impl Entry {
    fn new(
        chain: ChainId,
        ss: SessionSecret,
        index: u64,
        aead: Aead,
        original_role: Role,
        look_ahead: u32,
    ) -> Entry {
        let mut e = Entry {
            chain,
            window: VecDeque::new(),
            index,
            aead,
            original_role,
        };
        e.window.push_back(e.candidate(ss));
        e.refill(look_ahead);
        e
    }

    fn candidate(&self, secret: SessionSecret) -> Candidate {
        let peer_half = secret.resume_half(self.original_role.peer());
        Candidate { secret, peer_half }
    }

    /// Derives secrets until the window holds `look_ahead + 1` of them.
    fn refill(&mut self, look_ahead: u32) {
        while self.window.len() <= look_ahead as usize {
            let Some(last) = self.window.back() else {
                return;
            };
            let next = self.candidate(last.secret.next());
            self.window.push_back(next);
        }
    }

    /// Claims ss\[index + step\] for `tep`: takes it out, dropping the
    /// secrets before it, and moves the chain on past it.
    fn take(&mut self, tep: Tep, step: usize, look_ahead: u32) -> Option<ResumeSecret> {
        let index = self.index.saturating_add(step as u64);
        self.window.drain(..step.min(self.window.len()));
        let taken = self.window.pop_front()?;
        if self.window.is_empty() {
            self.window.push_back(self.candidate(taken.secret.next()));
        }
        self.refill(look_ahead);
        self.index = index.saturating_add(1);
        Some(ResumeSecret {
            tep,
            aead: self.aead,
            chain: self.chain,
            index,
            secret: taken.secret,
            original_role: self.original_role,
        })
    }
}

/// A secret claimed for one connection, with what the key schedule needs.
#[derive(Debug)]
pub struct ResumeSecret {
    pub tep: Tep,
    pub aead: Aead,
    pub chain: ChainId,
    /// i of ss\[i\].
    pub index: u64,
    /// ss\[i\].
    pub secret: SessionSecret,
    /// Our role in the ss\[0\] session: fixes our identifier half, where our
    /// nonce goes in sn\[i\], and that we send with k_ab (A) or k_ba (B).
    pub original_role: Role,
}

impl ResumeSecret {
    /// sn\[i\] = nonce_a ‖ nonce_b, by original roles.
    pub fn session_nonce(&self, our_nonce: &[u8], peer_nonce: &[u8]) -> Vec<u8> {
        let (a, b) = match self.original_role {
            Role::A => (our_nonce, peer_nonce),
            Role::B => (peer_nonce, our_nonce),
        };
        [a, b].concat()
    }
}

/// An active opener's resumption offer: the claimed secret and our nonce.
#[derive(Debug)]
pub struct ResumeOffer {
    pub claimed: ResumeSecret,
    pub nonce: Vec<u8>,
}

impl ResumeOffer {
    /// Our suboption data: our identifier half, then our nonce.
    pub fn suboption_data(&self) -> Vec<u8> {
        let mut data = self
            .claimed
            .secret
            .resume_half(self.claimed.original_role)
            .to_vec();
        data.extend_from_slice(&self.nonce);
        data
    }

    /// The peer's nonce if `data` is a resumption suboption naming the same
    /// secret (the other half of resume\[i\]); `None` means "ignore it".
    pub fn match_reply<'a>(&self, data: &'a [u8]) -> Option<&'a [u8]> {
        let (half, nonce) = split_resumption_data(data)?;
        let expected = self
            .claimed
            .secret
            .resume_half(self.claimed.original_role.peer());
        verify_slices_are_equal(half, &expected).ok()?;
        Some(nonce)
    }
}

/// A passive opener's agreement to resume: the secret and the peer's nonce.
#[derive(Debug)]
pub struct ResumeMatch {
    pub claimed: ResumeSecret,
    pub peer_nonce: Vec<u8>,
}

impl ResumeMatch {
    /// Our reply's suboption data: our half, then `our_nonce`.
    pub fn suboption_data(&self, our_nonce: &[u8]) -> Vec<u8> {
        let mut data = self
            .claimed
            .secret
            .resume_half(self.claimed.original_role)
            .to_vec();
        data.extend_from_slice(our_nonce);
        data
    }
}

/// Splits resumption suboption data into identifier half and nonce, or
/// `None` when it is no resumption request (fewer than 9 bytes: a fresh
/// offer per RFC 8548 section 3.5; more than 17: undefined, treated alike).
pub fn split_resumption_data(data: &[u8]) -> Option<(&[u8], &[u8])> {
    if data.len() > RESUME_HALF_LEN + MAX_RESUME_NONCE_LEN {
        return None;
    }
    data.split_at_checked(RESUME_HALF_LEN)
}

/// The cache of next unused secrets, keyed by peer (any type the caller
/// likes; the engine uses the peer's IP address) and TEP.
pub struct ResumptionCache<P> {
    chains: HashMap<(P, Tep), VecDeque<Entry>>,
    limits: CacheLimits,
    next_chain: u64,
    total: usize,
}

impl<P: Eq + Hash + Clone> ResumptionCache<P> {
    pub fn new(limits: CacheLimits) -> ResumptionCache<P> {
        ResumptionCache {
            chains: HashMap::new(),
            limits,
            next_chain: 0,
            total: 0,
        }
    }

    /// Number of chains held.
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Starts a chain after a fresh session: caches `ss1` (= ss\[1\]) with our
    /// role in that session. Returns the new chain's id.
    pub fn insert_fresh(
        &mut self,
        peer: P,
        tep: Tep,
        aead: Aead,
        ss1: SessionSecret,
        original_role: Role,
    ) -> ChainId {
        let chain = ChainId(self.next_chain);
        self.next_chain = self.next_chain.wrapping_add(1);
        let entry = Entry::new(chain, ss1, 1, aead, original_role, self.limits.look_ahead);
        self.put(peer, tep, entry);
        chain
    }

    fn put(&mut self, peer: P, tep: Tep, entry: Entry) {
        let limit = self.limits.chains_per_peer.max(1);
        let list = self.chains.entry((peer, tep)).or_default();
        list.push_back(entry);
        self.total += 1;
        while list.len() > limit {
            list.pop_front();
            self.total -= 1;
        }
        while self.total > self.limits.max_chains.max(1) {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .chains
            .iter()
            .filter_map(|(k, list)| list.front().map(|e| (e.chain.0, k.clone())))
            .min_by_key(|(c, _)| *c)
            .map(|(_, k)| k);
        if let Some(key) = oldest {
            self.remove_from(&key, |_| true, true);
        }
    }

    /// Removes the first (or, with `all`, every) entry of `key` matching
    /// `pred`; returns how many went.
    fn remove_from(
        &mut self,
        key: &(P, Tep),
        pred: impl Fn(&Entry) -> bool,
        first_only: bool,
    ) -> usize {
        let Some(list) = self.chains.get_mut(key) else {
            return 0;
        };
        let before = list.len();
        if first_only {
            if let Some(pos) = list.iter().position(&pred) {
                list.remove(pos);
            }
        } else {
            list.retain(|e| !pred(e));
        }
        let removed = before - list.len();
        self.total -= removed;
        if list.is_empty() {
            self.chains.remove(key);
        }
        removed
    }

    /// Whether an active open to `peer` could offer resumption with `tep`.
    pub fn can_offer(&self, peer: &P, tep: Tep) -> bool {
        self.chains
            .get(&(peer.clone(), tep))
            .is_some_and(|l| !l.is_empty())
    }

    /// An active opener claims the newest chain's ss\[i\] for `peer` and `tep`
    /// and leaves ss\[i+1\] in its place.
    pub fn take_offer(&mut self, peer: &P, tep: Tep, nonce: Vec<u8>) -> Option<ResumeOffer> {
        let key = (peer.clone(), tep);
        let look_ahead = self.limits.look_ahead;
        let list = self.chains.get_mut(&key)?;
        let entry = list.back_mut()?;
        let claimed = entry.take(tep, 0, look_ahead)?;
        Some(ResumeOffer { claimed, nonce })
    }

    /// A passive opener looks for the secret the peer's resumption
    /// suboption data names: each chain of (`peer`, `tep`) from its cached
    /// ss\[i\] up to ss\[i+look_ahead\]. On a match at ss\[k\] the chain moves on
    /// to ss\[k+1\].
    pub fn match_offer(&mut self, peer: &P, tep: Tep, data: &[u8]) -> Option<ResumeMatch> {
        let (half, nonce) = split_resumption_data(data)?;
        let look_ahead = self.limits.look_ahead;
        let list = self.chains.get_mut(&(peer.clone(), tep))?;
        for entry in list.iter_mut() {
            // Every candidate is compared, so the time taken does not tell
            // how far along the chain a match was.
            let mut found = None;
            for (step, c) in entry.window.iter().enumerate() {
                if verify_slices_are_equal(half, &c.peer_half).is_ok() && found.is_none() {
                    found = Some(step);
                }
            }
            let Some(step) = found else {
                continue;
            };
            return Some(ResumeMatch {
                claimed: entry.take(tep, step, look_ahead)?,
                peer_nonce: nonce.to_vec(),
            });
        }
        None
    }

    /// Forgets a chain: what a connection used or produced.
    pub fn flush_chain(&mut self, chain: ChainId) {
        let keys: Vec<(P, Tep)> = self
            .chains
            .iter()
            .filter(|(_, l)| l.iter().any(|e| e.chain == chain))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.remove_from(&key, |e| e.chain == chain, false);
        }
    }

    /// Forgets every chain with `peer`.
    pub fn flush_peer(&mut self, peer: &P) {
        let keys: Vec<(P, Tep)> = self
            .chains
            .keys()
            .filter(|(p, _)| p == peer)
            .cloned()
            .collect();
        for key in keys {
            self.remove_from(&key, |_| true, false);
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.chains.clear();
        self.total = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ss0() -> SessionSecret {
        SessionSecret::from_bytes([0x42; 32])
    }

    fn pair() -> (ResumptionCache<u8>, ResumptionCache<u8>) {
        let mut a = ResumptionCache::new(CacheLimits::default());
        let mut b = ResumptionCache::new(CacheLimits::default());
        a.insert_fresh(2, Tep::X25519, Aead::Aes128Gcm, ss0().next(), Role::A);
        b.insert_fresh(1, Tep::X25519, Aead::Aes128Gcm, ss0().next(), Role::B);
        (a, b)
    }

    #[test]
    fn offer_and_match_agree_on_secret_and_session_nonce() {
        let (mut a, mut b) = pair();
        let offer = a.take_offer(&2, Tep::X25519, vec![1; 8]).unwrap();
        let m = b
            .match_offer(&1, Tep::X25519, &offer.suboption_data())
            .unwrap();
        assert_eq!(m.claimed.secret, ss0().next());
        assert_eq!(m.claimed.index, 1);
        let reply = m.suboption_data(&[2; 8]);
        let peer_nonce = offer.match_reply(&reply).unwrap();
        let sn_a = offer.claimed.session_nonce(&offer.nonce, peer_nonce);
        let sn_b = m.claimed.session_nonce(&[2; 8], &m.peer_nonce);
        assert_eq!(sn_a, sn_b);
        assert_eq!(&sn_a[..8], &[1; 8]);
    }

    #[test]
    fn each_secret_is_offered_once() {
        let (mut a, _) = pair();
        let first = a.take_offer(&2, Tep::X25519, vec![]).unwrap();
        let second = a.take_offer(&2, Tep::X25519, vec![]).unwrap();
        assert_eq!(first.claimed.index, 1);
        assert_eq!(second.claimed.index, 2);
        assert_ne!(first.claimed.secret, second.claimed.secret);
    }

    #[test]
    fn passive_opener_looks_ahead_over_lost_attempts() {
        let (mut a, mut b) = pair();
        for _ in 0..DEFAULT_LOOK_AHEAD {
            a.take_offer(&2, Tep::X25519, vec![]).unwrap();
        }
        let offer = a.take_offer(&2, Tep::X25519, vec![]).unwrap();
        let m = b
            .match_offer(&1, Tep::X25519, &offer.suboption_data())
            .unwrap();
        assert_eq!(m.claimed.index, 1 + u64::from(DEFAULT_LOOK_AHEAD));
        // A used secret is not matched again.
        assert!(
            b.match_offer(&1, Tep::X25519, &offer.suboption_data())
                .is_none()
        );
    }

    #[test]
    fn passive_opener_gives_up_beyond_look_ahead() {
        let (mut a, mut b) = pair();
        for _ in 0..=DEFAULT_LOOK_AHEAD {
            a.take_offer(&2, Tep::X25519, vec![]).unwrap();
        }
        let offer = a.take_offer(&2, Tep::X25519, vec![]).unwrap();
        assert!(
            b.match_offer(&1, Tep::X25519, &offer.suboption_data())
                .is_none()
        );
    }

    #[test]
    fn mismatched_reply_half_is_ignored() {
        let (mut a, _) = pair();
        let offer = a.take_offer(&2, Tep::X25519, vec![]).unwrap();
        let mut bogus = offer.claimed.secret.resume_half(Role::B).to_vec();
        bogus[0] ^= 1;
        assert!(offer.match_reply(&bogus).is_none());
        // Our own half echoed back does not count either.
        assert!(offer.match_reply(&offer.suboption_data()).is_none());
    }

    #[test]
    fn short_or_long_data_is_not_resumption() {
        assert!(split_resumption_data(&[0; 8]).is_none());
        assert!(split_resumption_data(&[0; 18]).is_none());
        assert!(split_resumption_data(&[0; 9]).is_some());
        assert!(split_resumption_data(&[0; 17]).is_some());
    }

    #[test]
    fn other_tep_or_peer_does_not_match() {
        let (mut a, mut b) = pair();
        let offer = a.take_offer(&2, Tep::X25519, vec![]).unwrap();
        assert!(
            b.match_offer(&1, Tep::X448, &offer.suboption_data())
                .is_none()
        );
        assert!(
            b.match_offer(&9, Tep::X25519, &offer.suboption_data())
                .is_none()
        );
    }

    #[test]
    fn flush_chain_forgets_it() {
        let (mut a, _) = pair();
        let chain = a.take_offer(&2, Tep::X25519, vec![]).unwrap().claimed.chain;
        a.flush_chain(chain);
        assert!(a.is_empty());
        assert!(!a.can_offer(&2, Tep::X25519));
    }

    #[test]
    fn limits_evict_oldest_chains() {
        let limits = CacheLimits {
            look_ahead: 1,
            chains_per_peer: 2,
            max_chains: 3,
        };
        let mut c = ResumptionCache::new(limits);
        for i in 0..3u8 {
            c.insert_fresh(
                1,
                Tep::X25519,
                Aead::Aes128Gcm,
                SessionSecret::from_bytes([i; 32]),
                Role::A,
            );
        }
        assert_eq!(c.len(), 2);
        c.insert_fresh(2, Tep::X25519, Aead::Aes128Gcm, ss0(), Role::A);
        c.insert_fresh(3, Tep::X25519, Aead::Aes128Gcm, ss0(), Role::A);
        assert_eq!(c.len(), 3);
        // Peer 1 kept only its newest chain; the global limit evicted the
        // older of its two remaining ones.
        let offer = c.take_offer(&1, Tep::X25519, vec![]).unwrap();
        assert_eq!(offer.claimed.secret, SessionSecret::from_bytes([2; 32]));
        c.take_offer(&1, Tep::X25519, vec![]).unwrap();
        assert_eq!(c.len(), 3);
    }
}
