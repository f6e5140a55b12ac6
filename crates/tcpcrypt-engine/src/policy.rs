//! Per-socket policies: the resumption controls of RFC 8548 section 3.5
//! and the application-aware mode of RFC 8547 section 4.2.
//!
//! The engine sees packets, not sockets, so an application names its
//! socket by the local endpoint it is bound to and registers the policy
//! before the first SYN: before `connect` for a client socket, before
//! `listen` for a listening one. The table is consulted once per
//! connection, on our SYN (active open) or on the peer's SYN (passive
//! open); the handshake then carries the policy to the end. That is also
//! why the `a` bit fits here: it travels only in the SYN-form options, so
//! its value for a connection is settled at the same moment. A `Connect`
//! registration puts it in our SYN, a `Listen` one in each SYN-ACK.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use tcpcrypt_proto::handshake::ConnectionPolicy;

use crate::wire::canonical;

/// Most registrations kept at once: each costs a few dozen bytes, and the
/// bound keeps a misbehaving local client from growing the daemon.
pub const MAX_POLICIES: usize = 4096;

/// How long a [`PolicyScope::Connect`] registration waits for its SYN. A
/// socket that never connects (the application failed in between) must
/// not leave its policy to whichever socket gets the port next.
pub const CONNECT_POLICY_TTL: Duration = Duration::from_secs(120);

/// Which SYN a registration applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyScope {
    /// A client socket: our next SYN from this endpoint. Used up by that
    /// SYN, and dropped unused after [`CONNECT_POLICY_TTL`].
    Connect,
    /// A listening socket: every peer SYN to this endpoint, until cleared.
    Listen,
}

/// Why a registration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("local: port 0 names no socket, expected the port the socket is bound to")]
    NoPort,
    #[error("the policy table holds {MAX_POLICIES} registrations already")]
    TableFull,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    policy: ConnectionPolicy,
    /// When an unused registration is dropped; `None` for listening ones.
    expires: Option<Instant>,
}

/// Registrations keyed by scope and canonical local endpoint. An
/// unspecified address (`0.0.0.0`, `::`) matches any local address with
/// that port, as a socket bound to it does; `::` also matches IPv4, as a
/// dual-stack socket does.
#[derive(Debug, Default)]
pub(crate) struct PolicyTable {
    entries: HashMap<(PolicyScope, SocketAddr), Entry>,
}

impl PolicyTable {
    pub(crate) fn set(
        &mut self,
        now: Instant,
        scope: PolicyScope,
        local: SocketAddr,
        policy: ConnectionPolicy,
    ) -> Result<(), PolicyError> {
        if local.port() == 0 {
            return Err(PolicyError::NoPort);
        }
        let key = (scope, canonical(local));
        if !self.entries.contains_key(&key) && self.entries.len() >= MAX_POLICIES {
            self.entries
                .retain(|_, e| e.expires.is_none_or(|t| t > now));
            if self.entries.len() >= MAX_POLICIES {
                return Err(PolicyError::TableFull);
            }
        }
        let expires = match scope {
            PolicyScope::Connect => Some(now + CONNECT_POLICY_TTL),
            PolicyScope::Listen => None,
        };
        self.entries.insert(key, Entry { policy, expires });
        Ok(())
    }

    /// Removes a registration; returns whether there was one.
    pub(crate) fn clear(&mut self, scope: PolicyScope, local: SocketAddr) -> bool {
        self.entries.remove(&(scope, canonical(local))).is_some()
    }

    /// The registration for exactly `scope` and `local`, unless expired.
    pub(crate) fn get(
        &self,
        now: Instant,
        scope: PolicyScope,
        local: SocketAddr,
    ) -> Option<ConnectionPolicy> {
        self.entries
            .get(&(scope, canonical(local)))
            .filter(|e| e.expires.is_none_or(|t| t > now))
            .map(|e| e.policy)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The policy for a connection whose first SYN `scope` names `local`
    /// (canonical): the exact endpoint first, then the wildcard ones. A
    /// `Connect` registration is used up here.
    pub(crate) fn take(
        &mut self,
        now: Instant,
        scope: PolicyScope,
        local: SocketAddr,
    ) -> ConnectionPolicy {
        if self.entries.is_empty() {
            return ConnectionPolicy::default();
        }
        let port = local.port();
        // No allocation: this runs for every peer SYN, spoofed floods too.
        let candidates = [
            Some(local),
            local
                .is_ipv4()
                .then(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)),
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)),
        ];
        for addr in candidates.into_iter().flatten() {
            let key = (scope, addr);
            let Some(entry) = self.entries.get(&key).copied() else {
                continue;
            };
            if entry.expires.is_some_and(|t| t <= now) {
                self.entries.remove(&key);
                continue;
            }
            if scope == PolicyScope::Connect {
                self.entries.remove(&key);
            }
            return entry.policy;
        }
        ConnectionPolicy::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFF: ConnectionPolicy = ConnectionPolicy {
        ignore_resumption: true,
        no_cache: true,
        app_aware: None,
    };

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_connect_registration_is_used_once() {
        let now = Instant::now();
        let mut t = PolicyTable::default();
        t.set(now, PolicyScope::Connect, addr("10.0.0.1:5555"), OFF)
            .unwrap();
        let local = addr("10.0.0.1:5555");
        assert_eq!(t.take(now, PolicyScope::Connect, local), OFF);
        assert_eq!(
            t.take(now, PolicyScope::Connect, local),
            ConnectionPolicy::default()
        );
    }

    #[test]
    fn an_unused_connect_registration_expires() {
        let now = Instant::now();
        let mut t = PolicyTable::default();
        let local = addr("10.0.0.1:5555");
        t.set(now, PolicyScope::Connect, local, OFF).unwrap();
        let later = now + CONNECT_POLICY_TTL;
        assert_eq!(
            t.take(later, PolicyScope::Connect, local),
            ConnectionPolicy::default()
        );
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_listen_registration_stays_and_matches_through_the_wildcard() {
        let now = Instant::now();
        let mut t = PolicyTable::default();
        t.set(now, PolicyScope::Listen, addr("[::]:80"), OFF)
            .unwrap();
        let later = now + CONNECT_POLICY_TTL * 10;
        assert_eq!(t.take(later, PolicyScope::Listen, addr("10.0.0.2:80")), OFF);
        assert_eq!(
            t.take(later, PolicyScope::Listen, addr("[2001:db8::2]:80")),
            OFF
        );
        assert_eq!(
            t.take(later, PolicyScope::Listen, addr("10.0.0.2:81")),
            ConnectionPolicy::default()
        );
        // Scopes do not mix: a listening port's policy is not a client's.
        assert_eq!(
            t.take(later, PolicyScope::Connect, addr("10.0.0.2:80")),
            ConnectionPolicy::default()
        );
        assert!(t.clear(PolicyScope::Listen, addr("[::]:80")));
        assert_eq!(
            t.take(later, PolicyScope::Listen, addr("10.0.0.2:80")),
            ConnectionPolicy::default()
        );
    }

    #[test]
    fn an_ipv4_wildcard_does_not_match_ipv6() {
        let now = Instant::now();
        let mut t = PolicyTable::default();
        t.set(now, PolicyScope::Listen, addr("0.0.0.0:80"), OFF)
            .unwrap();
        assert_eq!(
            t.take(now, PolicyScope::Listen, addr("[2001:db8::2]:80")),
            ConnectionPolicy::default()
        );
    }

    #[test]
    fn port_zero_is_refused() {
        let mut t = PolicyTable::default();
        assert_eq!(
            t.set(Instant::now(), PolicyScope::Listen, addr("10.0.0.1:0"), OFF),
            Err(PolicyError::NoPort)
        );
    }

    #[test]
    fn the_table_is_bounded_but_expired_entries_make_room() {
        let now = Instant::now();
        let mut t = PolicyTable::default();
        for port in 1..=MAX_POLICIES {
            let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port as u16);
            t.set(now, PolicyScope::Connect, local, OFF).unwrap();
        }
        let extra = addr("10.0.0.9:9");
        assert_eq!(
            t.set(now, PolicyScope::Listen, extra, OFF),
            Err(PolicyError::TableFull)
        );
        // Replacing an existing registration needs no room.
        t.set(now, PolicyScope::Connect, addr("127.0.0.1:1"), OFF)
            .unwrap();
        let later = now + CONNECT_POLICY_TTL;
        t.set(later, PolicyScope::Listen, extra, OFF).unwrap();
        assert_eq!(t.len(), 1);
    }
}
