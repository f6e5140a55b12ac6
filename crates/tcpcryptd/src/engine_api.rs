//! The daemon's view of the packet engine.
//!
//! The packet loop and the control server are written against the
//! [`PacketEngine`] trait and the plain data types below rather than against
//! `tcpcrypt-engine` directly. The adapter in `engine_adapter.rs` is the only
//! code that knows the engine's own types, and tests can drive the I/O with a
//! scripted engine.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tcpcrypt_proto::{Aead, Role, SessionId, Tep};

// The packet-level types are the engine's own: the daemon has nothing to add
// to them, and one definition keeps the adapter free of conversions.
pub use tcpcrypt_engine::{
    AppAware, Checksum, ConnectionPolicy, Direction, EngineStats, KeylogSecrets, PacketMeta,
    PlainReason, PolicyError, PolicyScope, Transmit, Verdict,
};

/// What a tcpcrypt session is, as the control protocol reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionView {
    pub session_id: SessionId,
    pub role: Role,
    pub tep: Tep,
    pub aead: Aead,
    pub resumed: bool,
    pub peer_app_aware: bool,
}

/// The outcome of a connection as far as it is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupState {
    Tcpcrypt(SessionView),
    /// The reason stays typed until an answer is rendered, so copying a
    /// large table for `list` on the packet thread formats no text.
    Plain {
        reason: PlainReason,
    },
    Pending,
    Unknown,
}

impl LookupState {
    /// True once the outcome can no longer change from pending.
    pub fn is_settled(&self) -> bool {
        !matches!(self, LookupState::Pending)
    }
}

/// Where a tracked connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Handshake,
    Established,
    Closing,
    Closed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Handshake => "handshake",
            Phase::Established => "established",
            Phase::Closing => "closing",
            Phase::Closed => "closed",
        }
    }
}

/// One row of `list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionView {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: LookupState,
    pub phase: Phase,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub age: Duration,
    /// Encrypted, negotiating or aborted: a clean stop aborts it.
    pub guarded: bool,
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
        session: SessionView,
        secrets: Option<KeylogSecrets>,
    },
    Plain {
        local: SocketAddr,
        remote: SocketAddr,
        reason: String,
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
}

impl EngineEvent {
    /// The connection the event is about.
    pub fn endpoints(&self) -> (SocketAddr, SocketAddr) {
        match self {
            EngineEvent::Guarding { local, remote }
            | EngineEvent::Established { local, remote, .. }
            | EngineEvent::Plain { local, remote, .. }
            | EngineEvent::Aborted { local, remote, .. }
            | EngineEvent::Closed { local, remote } => (*local, *remote),
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
    /// Takes one queued packet; `meta` says whether the kernel already
    /// verified its TCP checksum and whether it is a large (GSO/GRO) one.
    fn handle_packet_with(
        &mut self,
        now: Instant,
        dir: Direction,
        meta: PacketMeta,
        packet: &mut Vec<u8>,
    ) -> Verdict;
    /// Whether the packet last handled belongs to a connection whose
    /// packets must never cross without the engine (the daemon marks it so
    /// the firewall rules can tell).
    fn last_packet_guarded(&self) -> bool;
    /// Counters of what the limits and sequence checks turned away, and
    /// the current table sizes.
    fn stats(&self) -> EngineStats;
}
