//! Final outcomes of connections, shared by the packet threads (the
//! writers) and every reader of the session table: the control threads in
//! this process, and applications that map the table's file
//! (`tcpcrypt_control::table`), so that a lookup for a connection whose
//! outcome is settled never waits for a packet thread, or for the daemon
//! at all.
//!
//! The packet threads copy each `Established` and `Plain` event in here as
//! they drain the engine's events, before the verdict of the packet that
//! caused it goes out, and remove the entry on the engine's `Forgotten`.
//! Neither outcome changes while the engine tracks the connection (an abort
//! or close leaves `Engine::lookup` saying `tcpcrypt`), so an entry here is
//! always what the engine itself would answer. Connections still pending,
//! or unknown, are not here: their lookups take the packet thread's path,
//! which can tell the two apart and wait for a handshake. Nor is an
//! outcome the table has no room for (it is full, or a plain-TCP reason is
//! too long): that one is answered the slow way, never wrongly.
//!
//! Writers take one lock for a few stores; readers take none (the table's
//! sequence words keep them from seeing half an entry).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use tcpcrypt_control::Lookup;
use tcpcrypt_control::table::{Geometry, Table, Writer};

use crate::engine_api::EngineEvent;
use crate::session_table::{TableFile, TableFileError, TableMemory};

/// Settled outcomes by connection.
pub struct OutcomeTable {
    table: Table<TableMemory>,
    writer: Mutex<Writer>,
}

impl Default for OutcomeTable {
    /// A private table of the engine's default size, for tests.
    fn default() -> OutcomeTable {
        OutcomeTable::private(
            tcpcrypt_engine::EngineConfig::default().max_connections,
            random_key(),
        )
    }
}

/// A hash key no peer can guess, so none can aim its connections at one
/// bucket (std's `RandomState` is seeded from the OS for this purpose).
pub fn random_key() -> (u64, u64) {
    use std::hash::BuildHasher;
    let state = std::hash::RandomState::new();
    (state.hash_one(0u8), state.hash_one(1u8))
}

impl OutcomeTable {
    /// A table only this process reads, with room for `connections`.
    pub fn private(connections: usize, key: (u64, u64)) -> OutcomeTable {
        let geometry = Geometry::for_connections(connections);
        OutcomeTable::over(TableMemory::private(geometry), geometry, key)
    }

    /// A table published at `path` for the control group `gid` to map,
    /// with room for `connections`.
    pub fn published(
        path: &Path,
        gid: u32,
        connections: usize,
        key: (u64, u64),
    ) -> Result<OutcomeTable, TableFileError> {
        let geometry = Geometry::for_connections(connections);
        let file = TableFile::create(path, gid, geometry)?;
        let mut table = OutcomeTable::over(TableMemory::File(file), geometry, key);
        // The header is written; only now may readers find the file.
        if let TableMemory::File(file) = table.table.memory_mut() {
            file.publish()?;
        }
        Ok(table)
    }

    fn over(memory: TableMemory, geometry: Geometry, key: (u64, u64)) -> OutcomeTable {
        let table = match Table::create(memory, geometry, key) {
            Ok(t) => t,
            // Geometry::words sized the memory, so this cannot happen; an
            // empty private table would be as correct, only slower.
            Err(e) => unreachable!("table memory sized by its geometry: {e}"),
        };
        OutcomeTable {
            table,
            writer: Mutex::default(),
        }
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        // Each change under the lock leaves the table consistent before
        // the next begins, so a panicking holder cannot leave it torn
        // (readers would skip an entry left mid-write).
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The settled outcome, if the engine has announced one for a
    /// connection it still tracks and the table could hold it.
    pub fn get(&self, local: SocketAddr, remote: SocketAddr) -> Option<Lookup<String>> {
        self.table.get(local, remote)
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
                let outcome = Lookup::<&str>::Tcpcrypt(*session);
                self.table
                    .put(&mut self.writer(), *local, *remote, &outcome);
            }
            EngineEvent::Plain {
                local,
                remote,
                reason,
            } => {
                let outcome = Lookup::Plain {
                    reason: reason.to_string(),
                };
                self.table
                    .put(&mut self.writer(), *local, *remote, &outcome);
            }
            EngineEvent::Forgotten { local, remote } => {
                self.table.remove(&mut self.writer(), *local, *remote);
            }
            EngineEvent::Guarding { .. }
            | EngineEvent::Aborted { .. }
            | EngineEvent::Closed { .. } => {}
        }
    }

    /// Entries held; for tests and the churn check.
    pub fn len(&self) -> usize {
        self.writer().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where applications find the table, if it is published.
    pub fn path(&self) -> Option<&Path> {
        match self.table.memory() {
            TableMemory::File(f) => Some(f.path()),
            TableMemory::Private(_) => None,
        }
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
        let settled = Some(Lookup::Tcpcrypt(session(7)));
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
            Some(Lookup::Plain {
                reason: PlainReason::NotSeenFromSyn.to_string()
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
        assert_eq!(table.get(local, remote), Some(Lookup::Tcpcrypt(session(2))));
        assert_eq!(table.len(), 1);
    }
}
