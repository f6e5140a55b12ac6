//! The daemon's view of the packet engine.
//!
//! The packet loop and the control server are written against the
//! [`PacketEngine`] trait and the plain data types below rather than against
//! `tcpcrypt-engine` directly. The adapter in `engine_adapter.rs` is the only
//! code that knows the engine's own types, and tests can drive the I/O with a
//! scripted engine.

use std::net::SocketAddr;
use std::time::Instant;

use tcpcrypt_control::{Connection, Lookup};

// The packet-level types are the engine's own: the daemon has nothing to add
// to them, and one definition keeps the adapter free of conversions.
pub use tcpcrypt_engine::{
    AppAware, Checksum, ConnectionPolicy, Direction, EngineStats, KeylogSecrets, PacketMeta,
    PlainReason, PolicyError, PolicyScope, Transmit, Verdict,
};

// What the control protocol reports about a connection is the control
// crate's: the adapter builds a `Session` once from the engine's facts, and
// the control server writes it as it is.
pub use tcpcrypt_control::{Phase, Session};

/// The outcome of a connection as far as it is known. The plain-TCP reason
/// stays typed until an answer is written, so copying a large table for
/// `list` on the packet thread formats no text.
pub type LookupState = Lookup<PlainReason>;

/// One row of `list`: the control protocol's row (its reason still typed)
/// and what only the daemon needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionView {
    pub conn: Connection<PlainReason>,
    /// Encrypted, negotiating or aborted: a clean stop aborts it.
    pub guarded: bool,
}

impl ConnectionView {
    /// The row as the control protocol writes it.
    pub fn row(&self) -> Connection<&PlainReason> {
        self.conn.by_ref()
    }
}

/// Something that happened to a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineEvent {
    /// ENO was negotiated: the connection's packets must not cross without
    /// the engine from now on.
    Guarding {
        local: SocketAddr,
        remote: SocketAddr,
    },
    Established {
        local: SocketAddr,
        remote: SocketAddr,
        session: Session,
        secrets: Option<KeylogSecrets>,
    },
    Plain {
        local: SocketAddr,
        remote: SocketAddr,
        reason: PlainReason,
    },
    Aborted {
        local: SocketAddr,
        remote: SocketAddr,
        reason: String,
    },
    Closed {
        local: SocketAddr,
        remote: SocketAddr,
    },
    /// The connection left the engine's table (sent only after an
    /// `Established` or `Plain`).
    Forgotten {
        local: SocketAddr,
        remote: SocketAddr,
    },
}

impl EngineEvent {
    /// The connection the event is about.
    pub fn endpoints(&self) -> (SocketAddr, SocketAddr) {
        match self {
            EngineEvent::Guarding { local, remote }
            | EngineEvent::Established { local, remote, .. }
            | EngineEvent::Plain { local, remote, .. }
            | EngineEvent::Aborted { local, remote, .. }
            | EngineEvent::Closed { local, remote }
            | EngineEvent::Forgotten { local, remote } => (*local, *remote),
        }
    }
}

/// The engine as the packet loop drives it (quinn-style: handle, then poll).
pub trait PacketEngine {
    fn handle_timeout(&mut self, now: Instant);
    fn poll_transmit(&mut self) -> Option<Transmit>;
    fn poll_timeout(&self) -> Option<Instant>;
    fn poll_event(&mut self) -> Option<EngineEvent>;
    fn lookup(&self, local: SocketAddr, remote: SocketAddr) -> LookupState;
    /// Every tracked connection's (local, remote) pair; `list` reads the
    /// rows a slice at a time with [`PacketEngine::connection`].
    fn connection_keys(&self) -> Vec<(SocketAddr, SocketAddr)>;
    /// One row of `list`, if the connection is still tracked.
    fn connection(
        &self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Option<ConnectionView>;
    fn flush_resumption(&mut self) -> usize;
    /// Registers a per-socket resumption policy (RFC 8548 section 3.5).
    fn set_policy(
        &mut self,
        now: Instant,
        scope: PolicyScope,
        local: SocketAddr,
        policy: ConnectionPolicy,
    ) -> Result<(), PolicyError>;
    /// Removes one; returns whether there was one.
    fn clear_policy(&mut self, scope: PolicyScope, local: SocketAddr) -> bool;
    /// The live registration for exactly `scope` and `local`.
    fn policy(
        &self,
        now: Instant,
        scope: PolicyScope,
        local: SocketAddr,
    ) -> Option<ConnectionPolicy>;
    /// Takes one queued packet, `input`; `meta` says whether the kernel
    /// already verified its TCP checksum and whether it is a large
    /// (GSO/GRO) one. A rewritten packet is left in `out`.
    fn handle_packet_into(
        &mut self,
        now: Instant,
        dir: Direction,
        meta: PacketMeta,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Verdict;
    /// For a path-MTU report (ICMP fragmentation needed, ICMPv6 packet too
    /// big): whether the connection it quotes is tracked here. `None` for
    /// any other packet.
    fn tracks_reported(&self, packet: &[u8]) -> Option<bool>;
    /// Whether the packet last handled belongs to a connection whose
    /// packets must never cross without the engine (the daemon marks it so
    /// the firewall rules can tell).
    fn last_packet_guarded(&self) -> bool;
    /// Counters of what the limits and sequence checks turned away, and
    /// the current table sizes.
    fn stats(&self) -> EngineStats;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tcpcrypt_control::answer::{decode_list, list_line};

    #[test]
    fn a_row_is_written_with_its_reason_text_and_counters() {
        let view = ConnectionView {
            conn: Connection {
                local: "10.0.0.2:80".parse().expect("addr"),
                remote: "[fd00::1]:5".parse().expect("addr"),
                lookup: LookupState::Plain {
                    reason: PlainReason::NotSeenFromSyn,
                },
                phase: Phase::Closing,
                bytes_sent: 3,
                bytes_received: 4,
                age: Duration::from_millis(1500),
            },
            guarded: true,
        };
        let line = list_line([view.row()]);
        let rows = decode_list(line.as_bytes()).expect("a valid list answer");
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!((row.local, row.remote), (view.conn.local, view.conn.remote));
        assert_eq!(
            row.lookup,
            Lookup::Plain {
                reason: PlainReason::NotSeenFromSyn.to_string()
            }
        );
        assert_eq!(row.phase, Phase::Closing);
        assert_eq!((row.bytes_sent, row.bytes_received), (3, 4));
        assert_eq!(row.age, Duration::from_millis(1500));
    }
}
