//! The types the daemon exchanges with the engine.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tcpcrypt_proto::{Aead, Tep};

/// Secrets for the key log: `TCPCRYPT_SS <session-id> <ss>` and, for a
/// fresh key exchange, `TCPCRYPT_ES <session-id> <es>`.
#[derive(Clone, PartialEq, Eq)]
pub struct KeylogSecrets {
    /// The session secret the keys derive from (ss\[0\] fresh, ss\[i\] resumed).
    pub ss: Vec<u8>,
    /// The ECDH shared secret (fresh key exchange only).
    pub es: Option<Vec<u8>>,
}

impl std::fmt::Debug for KeylogSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets by accident.
        f.write_str("KeylogSecrets(..)")
    }
}

/// Which way a packet travels through the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Local stack → network (OUTPUT/POSTROUTING).
    Outbound,
    /// Network → local stack (PREROUTING/INPUT).
    Inbound,
}

/// What to do with a queued packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let it pass unchanged.
    Accept,
    /// The buffer was rewritten in place (its length may differ, checksums
    /// are correct): let the new bytes pass.
    AcceptModified,
    /// Drop it. The engine may have kept a copy and will emit what it
    /// needs later through [`Engine::poll_transmit`](crate::Engine::poll_transmit).
    Drop,
}

/// Whether the kernel already verified a packet's TCP checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksum {
    /// Unknown or not verified: the engine verifies inbound packets itself
    /// and drops those that fail, since a rewritten packet gets a fresh,
    /// valid checksum and corruption would otherwise reach the kernel.
    Unverified,
    /// The kernel (or the NIC) verified it, or the packet is outbound.
    Verified,
}

/// Largest packet, IP header included, the engine ever puts in a verdict
/// or hands over to inject: a queue verdict carries the packet in a
/// netlink attribute, whose 16-bit length counts its own 4-byte header
/// (the kernel's `NFQNL_MAX_COPY_RANGE`). An IPv4 packet could be 4 bytes
/// longer, but could not be passed back whole.
pub const MAX_VERDICT_PACKET: usize = 0xffff - 4;

/// What the queue tells about a packet besides its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketMeta {
    pub checksum: Checksum,
    /// A large segment: outbound, one the kernel will cut into packets of
    /// at most its MSS after the verdict (GSO); inbound, several segments
    /// merged on arrival (GRO). A rewritten large outbound segment may
    /// then carry up to [`MAX_VERDICT_PACKET`] bytes, not just one path
    /// MTU's worth, and its data is framed in pieces that each fit one
    /// wire packet, so a later retransmission of any part of it resends
    /// little.
    pub large: bool,
}

impl From<Checksum> for PacketMeta {
    fn from(checksum: Checksum) -> PacketMeta {
        PacketMeta {
            checksum,
            large: false,
        }
    }
}

/// Counters and gauges for operators: what the limits cost and what the
/// sequence checks turned away. Counters only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Connections tracked now.
    pub connections: usize,
    /// Of those, opened by a peer's SYN and not through the three-way
    /// handshake yet.
    pub half_open: usize,
    /// Out-of-order wire bytes held across all connections.
    pub out_of_order_bytes: usize,
    /// SYNs passed untouched (plain TCP) because `max_half_open` was reached.
    pub refused_half_open_full: u64,
    /// SYNs passed untouched (plain TCP) because `max_connections` was reached.
    pub refused_table_full: u64,
    /// Half-open connections forgotten after `half_open_timeout`.
    pub half_open_expired: u64,
    /// Inbound packets dropped for a bad TCP checksum.
    pub bad_checksum: u64,
    /// Inbound segments of encrypted or negotiating connections dropped by
    /// the sequence checks (RST, SYN, ACK or data outside the window).
    pub out_of_window: u64,
    /// Challenge or duplicate ACKs the engine sent in answer to them.
    pub challenge_acks: u64,
    /// Out-of-order segments not kept because a limit was reached.
    pub out_of_order_refused: u64,
    /// Packet-too-big reports about encrypted connections, rewritten for
    /// the kernel.
    pub too_big_reports: u64,
}

/// A packet the engine wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// `Outbound`: send to the network; `Inbound`: deliver to the local stack.
    pub direction: Direction,
    /// A whole IPv4/IPv6 packet with correct checksums.
    pub packet: Vec<u8>,
    /// The packet's destination address, so the sender need not read it
    /// back out of the header.
    pub dst: IpAddr,
}

/// Engine settings. Every field has a documented default (`Default`).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Key-exchange TEPs we offer, most preferred first.
    /// Default: X25519, then P-256.
    pub teps: Vec<Tep>,
    /// AEADs we offer (as A) and accept (as B), most preferred first.
    /// Default: AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305.
    pub aeads: Vec<Aead>,
    /// Set the ENO application-aware bit `a` in our SYNs and SYN-ACKs.
    /// Default: off. A policy registration with an application-aware mode
    /// overrides this (and the next field) for its connections.
    pub app_aware: bool,
    /// Fall back to plain TCP unless the peer set `a`. Default: off.
    pub app_aware_mandatory: bool,
    /// Offer and accept session resumption (RFC 8548 section 3.5), with
    /// secrets cached per peer address in memory only. Default: on.
    pub resumption: bool,
    /// First retransmission timeout of our Init message; doubles on each
    /// retry. Default: 1 s.
    pub init_rto: Duration,
    /// Init retransmissions before the connection is aborted. Default: 8.
    pub init_max_retries: u32,
    /// How long a closed connection stays in the table (late retransmits
    /// still get mapped). Default: 30 s.
    pub cleanup_delay: Duration,
    /// A handshake not finished after this long is forgotten. Default: 75 s.
    pub handshake_timeout: Duration,
    /// A connection with no packet in either direction for this long is
    /// forgotten if plain, and aborted with RST both ways if encrypted
    /// (then forgotten after the cleanup delay). Default: 2 h 10 min
    /// (longer than the default TCP keepalive interval, so live idle
    /// connections survive).
    pub idle_timeout: Duration,
    /// Authentication failures in a row (no frame authenticating between
    /// them) after which the connection is aborted with RST both ways.
    /// Default: 16.
    pub max_auth_failures: u32,
    /// A run of authentication failures that has lasted this long, with at
    /// least four failures in it, also aborts the
    /// connection. Persistent tampering on the path makes the sender retry
    /// the same segment with exponential back-off, so the count alone would
    /// take minutes; this ends it after a few retransmissions. Default: 5 s.
    pub auth_failure_timeout: Duration,
    /// Start a rekey (RFC 8548 section 3.8) with the first frame sent after
    /// this many wire bytes went out under the current key; the peer's
    /// rekeys are followed whatever this says. Default: `None` (never
    /// initiate).
    pub rekey_after_bytes: Option<u64>,
    /// A connection opened by a peer's SYN whose three-way handshake has not
    /// completed this long after the last SYN or SYN-ACK is forgotten.
    /// Default: 15 s (covers the kernel's first SYN-ACK retransmissions).
    pub half_open_timeout: Duration,
    /// Most connections opened by a peer's SYN and not yet through their
    /// three-way handshake. Past it a new SYN passes untouched, so that
    /// connection is plain TCP; connections already tracked are unaffected.
    /// Default: 8192.
    pub max_half_open: usize,
    /// Most connections tracked at once; past it new connections are plain
    /// TCP. Default: 65536.
    pub max_connections: usize,
    /// Most out-of-order pieces kept per connection (adjacent pieces are
    /// merged). Default: 1024.
    pub max_out_of_order_pieces: usize,
    /// Most out-of-order wire bytes kept across all connections. Default:
    /// 64 MiB.
    pub max_out_of_order_bytes_total: usize,
    /// Where `max_half_open`, `max_connections` and
    /// `max_out_of_order_bytes_total` are counted: give several engines
    /// that split one host's connections the same tally, and the limits
    /// hold for all of them together. Default: `None` (the engine counts
    /// alone).
    pub shared_tally: Option<Arc<SharedTally>>,
}

/// The running totals the table-wide limits are checked against, shared by
/// engines that each own part of a host's connections (one per packet
/// thread). Each engine adds and removes exactly what its own connections
/// contribute, so the totals are the host's; two engines admitting at the
/// same instant can pass a limit by one each, never more.
#[derive(Debug, Default)]
pub struct SharedTally {
    connections: AtomicUsize,
    half_open: AtomicUsize,
    out_of_order_bytes: AtomicUsize,
}

impl SharedTally {
    /// Connections tracked by all the engines.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Half-open connections of all the engines.
    pub fn half_open(&self) -> usize {
        self.half_open.load(Ordering::Relaxed)
    }

    /// Out-of-order bytes held by all the engines.
    pub fn out_of_order_bytes(&self) -> usize {
        self.out_of_order_bytes.load(Ordering::Relaxed)
    }

    /// Moves the totals by one connection's change, from `before` to
    /// `after` of (entries, half-open, out-of-order bytes).
    pub(crate) fn apply(&self, before: (usize, usize, usize), after: (usize, usize, usize)) {
        fn shift(total: &AtomicUsize, from: usize, to: usize) {
            if to > from {
                total.fetch_add(to - from, Ordering::Relaxed);
            } else if from > to {
                // Never below zero, whatever an engine's own tally says.
                let _ = total.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                    Some(t.saturating_sub(from - to))
                });
            }
        }
        shift(&self.connections, before.0, after.0);
        shift(&self.half_open, before.1, after.1);
        shift(&self.out_of_order_bytes, before.2, after.2);
    }
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            teps: vec![Tep::X25519, Tep::P256],
            aeads: vec![Aead::Aes128Gcm, Aead::Aes256Gcm, Aead::ChaCha20Poly1305],
            app_aware: false,
            app_aware_mandatory: false,
            resumption: true,
            init_rto: Duration::from_secs(1),
            init_max_retries: 8,
            cleanup_delay: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(75),
            idle_timeout: Duration::from_secs(130 * 60),
            max_auth_failures: 16,
            auth_failure_timeout: Duration::from_secs(5),
            rekey_after_bytes: None,
            half_open_timeout: Duration::from_secs(15),
            max_half_open: 8192,
            max_connections: 65536,
            max_out_of_order_pieces: 1024,
            max_out_of_order_bytes_total: 64 << 20,
            shared_tally: None,
        }
    }
}

impl EngineConfig {
    /// The same configuration with repeated TEPs and AEADs dropped (the
    /// first occurrence kept) and an empty list replaced by the default.
    pub fn sanitized(mut self) -> EngineConfig {
        fn dedup<T: PartialEq + Copy>(list: &[T], default: Vec<T>) -> Vec<T> {
            let mut out: Vec<T> = Vec::with_capacity(list.len());
            for x in list {
                if !out.contains(x) {
                    out.push(*x);
                }
            }
            if out.is_empty() { default } else { out }
        }
        let d = EngineConfig::default();
        self.teps = dedup(&self.teps, d.teps);
        self.aeads = dedup(&self.aeads, d.aeads);
        self
    }
}

/// An established tcpcrypt session, as applications see it: the protocol
/// core's own record of it, passed on as it is.
pub use tcpcrypt_proto::session::SessionInfo;

/// Why a connection is plain TCP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlainReason {
    /// The peer answered without a usable ENO option, or negotiation
    /// failed; the text says why.
    Negotiation(String),
    /// Our SYN had no room for the ENO option.
    NoOptionSpace,
    /// Our SYN carried data or a TCP Fast Open option.
    SynData,
    /// The handshake was not seen from its SYN (e.g. it predates the daemon).
    NotSeenFromSyn,
}

impl std::fmt::Display for PlainReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlainReason::Negotiation(why) => write!(f, "ENO negotiation failed: {why}"),
            PlainReason::NoOptionSpace => f.write_str("no TCP option space for ENO in the SYN"),
            PlainReason::SynData => f.write_str("the SYN carried data or a Fast Open option"),
            PlainReason::NotSeenFromSyn => f.write_str("connection not seen from its SYN"),
        }
    }
}

/// What the engine knows about a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Tcpcrypt(SessionInfo),
    Plain(PlainReason),
    /// Handshake or key exchange still in progress.
    Pending,
    /// Not tracked.
    Unknown,
}

/// Where a tracked connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnPhase {
    Handshake,
    Established,
    Closing,
    Closed,
}

/// One row of [`Engine::connections`](crate::Engine::connections).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: Lookup,
    pub phase: ConnPhase,
    /// Application bytes sent (plaintext, as the kernel sent them).
    pub bytes_sent: u64,
    /// Application bytes delivered to the local stack.
    pub bytes_received: u64,
    pub first_seen: Instant,
    /// Its packets must not cross without the engine (encrypted,
    /// negotiating or aborted): what a clean stop must abort.
    pub guarded: bool,
}

/// Something the daemon should know (log, notify waiters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// From the packet just handled on, the connection's packets must not
    /// cross without the engine (ENO was negotiated): the daemon journals
    /// it so that a successor can abort it after a crash. Comes before the
    /// connection's `Established`, `Plain`, `Aborted` or `Closed`.
    Guarding {
        local: SocketAddr,
        remote: SocketAddr,
    },
    Established {
        local: SocketAddr,
        remote: SocketAddr,
        info: SessionInfo,
        keylog: KeylogSecrets,
    },
    Plain {
        local: SocketAddr,
        remote: SocketAddr,
        reason: PlainReason,
    },
    /// The session ended abnormally (RST, authentication failures, key
    /// exchange failure).
    Aborted {
        local: SocketAddr,
        remote: SocketAddr,
        reason: String,
    },
    /// The connection closed (both FINs, or RST) and will be forgotten
    /// after the cleanup delay.
    Closed {
        local: SocketAddr,
        remote: SocketAddr,
    },
    /// The connection left the table: [`Engine::lookup`](crate::Engine::lookup)
    /// says `Unknown` from now on, and the same addresses may start a new
    /// connection. Sent only for connections that had an `Established` or
    /// `Plain`, so a caller keeping its own copy of those outcomes knows
    /// when to drop it, while half-open entries (possibly spoofed SYNs)
    /// leave without a word.
    Forgotten {
        local: SocketAddr,
        remote: SocketAddr,
    },
}
