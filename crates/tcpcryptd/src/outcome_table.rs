//! Final outcomes of connections, shared by the packet thread (the only
//! writer) and the control threads (readers), so that a `lookup` for a
//! connection whose outcome is settled never waits for the packet thread.
//!
//! The packet thread copies each `Established` and `Plain` event in here as
//! it drains the engine's events, before the verdict of the packet that
//! caused it goes out, and removes the entry on the engine's `Forgotten`.
//! Neither outcome changes while the engine tracks the connection (an abort
//! or close leaves `Engine::lookup` saying `tcpcrypt`), so an entry here is
//! always what the engine itself would answer. Connections still pending,
//! or unknown, are not here: their lookups take the packet thread's path,
//! which can tell the two apart and wait for a handshake.
//!
//! Sharded mutexes rather than one lock: a control thread holds a shard for
//! one probe and one clone, so the packet thread, which must not be held
//! up, can at worst wait that long, and only when both touch the same
//! shard. Readers never see a half-written entry because each change is a
//! single insert or remove under the shard's lock.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

use tcpcrypt_engine::wire::canonical;

use crate::engine_api::{EngineEvent, LookupState};

/// A power of two comfortably above the control threads that can probe
/// at once on a small machine, so two rarely share a shard.
const SHARDS: usize = 64;

type Key = (SocketAddr, SocketAddr);

/// Settled outcomes by (local, remote), canonical.
pub struct OutcomeTable {
    shards: Box<[Mutex<HashMap<Key, LookupState>>]>,
    hasher: RandomState,
}

impl Default for OutcomeTable {
    fn default() -> OutcomeTable {
        OutcomeTable {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl OutcomeTable {
    fn shard(&self, key: &Key) -> MutexGuard<'_, HashMap<Key, LookupState>> {
        // The slot index only needs the low bits; `SHARDS` is a power of two.
        let i = (self.hasher.hash_one(key) as usize) & (SHARDS - 1);
        // Every change under the lock is one insert or remove, so a shard
        // is consistent even if a holder panicked.
        self.shards[i]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn key(local: SocketAddr, remote: SocketAddr) -> Key {
        (canonical(local), canonical(remote))
    }

    /// The settled outcome, if the engine has announced one for a
    /// connection it still tracks.
    pub fn get(&self, local: SocketAddr, remote: SocketAddr) -> Option<LookupState> {
        let key = Self::key(local, remote);
        self.shard(&key).get(&key).cloned()
    }

    /// Keeps the table in step with one engine event.
    pub fn apply(&self, ev: &EngineEvent) {
        match ev {
            EngineEvent::Established {
                local,
                remote,
                session,
                ..
            } => {
                let key = Self::key(*local, *remote);
                self.shard(&key)
                    .insert(key, LookupState::Tcpcrypt(*session));
            }
            EngineEvent::Plain {
                local,
                remote,
                reason,
            } => {
                let key = Self::key(*local, *remote);
                self.shard(&key).insert(
                    key,
                    LookupState::Plain {
                        reason: reason.clone(),
                    },
                );
            }
            EngineEvent::Forgotten { local, remote } => {
                let key = Self::key(*local, *remote);
                self.shard(&key).remove(&key);
            }
            EngineEvent::Guarding { .. }
            | EngineEvent::Aborted { .. }
            | EngineEvent::Closed { .. } => {}
        }
    }

    /// Entries held; for tests and the churn check.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or_else(|p| p.into_inner().len(), |m| m.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine_api::{PlainReason, Session};
    use tcpcrypt_control::{Aead, Role, SessionId, Tep};

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    fn session(byte: u8) -> Session {
        Session {
            session_id: SessionId::from_bytes([byte; 33]),
            role: Role::B,
            tep: Tep::EcdheCurve25519,
            aead: Aead::Aes128Gcm,
            resumed: false,
            peer_app_aware: false,
        }
    }

    #[test]
    fn an_outcome_stays_until_the_engine_forgets_the_connection() {
        let table = OutcomeTable::default();
        let (local, remote) = (addr("10.0.0.1:80"), addr("10.0.0.2:40000"));
        assert_eq!(table.get(local, remote), None);
        table.apply(&EngineEvent::Established {
            local,
            remote,
            session: session(7),
            secrets: None,
        });
        let settled = Some(LookupState::Tcpcrypt(session(7)));
        assert_eq!(table.get(local, remote), settled);
        // Neither end changes what the engine answers.
        table.apply(&EngineEvent::Closed { local, remote });
        table.apply(&EngineEvent::Aborted {
            local,
            remote,
            reason: "reset".into(),
        });
        assert_eq!(table.get(local, remote), settled);
        assert_eq!(table.get(remote, local), None, "direction matters");
        table.apply(&EngineEvent::Forgotten { local, remote });
        assert_eq!(table.get(local, remote), None);
        assert!(table.is_empty());
    }

    #[test]
    fn mapped_ipv4_addresses_find_the_ipv4_entry() {
        let table = OutcomeTable::default();
        table.apply(&EngineEvent::Plain {
            local: addr("10.0.0.1:80"),
            remote: addr("10.0.0.2:40000"),
            reason: PlainReason::NotSeenFromSyn,
        });
        assert_eq!(
            table.get(
                addr("[::ffff:10.0.0.1]:80"),
                addr("[::ffff:10.0.0.2]:40000")
            ),
            Some(LookupState::Plain {
                reason: PlainReason::NotSeenFromSyn
            })
        );
    }

    #[test]
    fn a_reused_port_gets_the_new_connections_outcome() {
        let table = OutcomeTable::default();
        let (local, remote) = (addr("10.0.0.1:80"), addr("10.0.0.2:40000"));
        table.apply(&EngineEvent::Established {
            local,
            remote,
            session: session(1),
            secrets: None,
        });
        table.apply(&EngineEvent::Forgotten { local, remote });
        table.apply(&EngineEvent::Established {
            local,
            remote,
            session: session(2),
            secrets: None,
        });
        assert_eq!(
            table.get(local, remote),
            Some(LookupState::Tcpcrypt(session(2)))
        );
        assert_eq!(table.len(), 1);
    }
}
