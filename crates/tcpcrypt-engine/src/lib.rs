//! # tcpcrypt-engine: the packet path of tcpcryptd
//!
//! This crate turns the local kernel's plain TCP into tcpcrypt (RFC 8547
//! TCP-ENO + RFC 8548) on the wire, one queued packet at a time. It owns:
//! IPv4/IPv6/TCP parsing, emitting and checksums ([`wire`]); the connection
//! table keyed by the 4-tuple, with limits and timed cleanup; per
//! connection the ENO handshake, the Init1/Init2 exchange, the
//! sequence/ACK/SACK/window mapping between the two byte spaces, the
//! retransmission store, MSS clamping, FIN ↔ FINp and URG ↔ URGp; verdicts,
//! packets to inject, events and deadlines.
//!
//! It must not touch sockets, netlink, threads or clocks, nor hold on to a
//! queued packet: it is sans-IO like `quinn-proto`. Where data must wait
//! (kernel data before the keys exist, frames not yet complete), the engine
//! keeps a copy, drops the packet or passes what remains of it (its ACK),
//! and later emits what is needed through [`Engine::poll_transmit`]. No input packet
//! can make it panic.
//!
//! ## Using it
//!
//! ```text
//! let mut engine = Engine::new(EngineConfig::default(), Box::new(OsRng));
//! loop {
//!     // a queued packet arrives:
//!     let verdict = engine.handle_packet(now, Direction::Outbound, &mut bytes);
//!     // send `verdict` (with `bytes` if AcceptModified; handle_packet_with
//!     // also takes the queue's PacketMeta, handle_packet_into an input
//!     // slice and a separate output buffer), then:
//!     while let Some(t) = engine.poll_transmit() { /* inject t.packet */ }
//!     while let Some(e) = engine.poll_event() { /* log, key log, wake lookups */ }
//!     // sleep until engine.poll_timeout(), then engine.handle_timeout(now)
//!     // and drain poll_transmit/poll_event again.
//! }
//! ```
//! [`Engine::lookup`] answers the control socket (`Tcpcrypt` with the
//! session ID and role, `Plain` with a reason, `Pending`, `Unknown`);
//! [`Engine::connections`] lists every tracked connection with byte counters.
//! Addresses are from this host's view: `local` is our address and port.
//! [`Engine::set_policy`] registers RFC 8548 section 3.5 controls (no
//! resumption, no caching) and an application-aware mode (RFC 8547 section
//! 4.2: the `a` bit our SYN or SYN-ACK carries, and whether a peer without
//! it is refused) for a local endpoint, consulted on a connection's first
//! SYN ([`policy`]).
//! `Outbound` transmits go to the network through a marked raw socket (so
//! they are not queued again), `Inbound` ones to the local stack.
//!
//! ## The two byte spaces
//!
//! Each direction of a tcpcrypt connection has a **local** space (the
//! plaintext the kernel sends or receives) and a **wire** space (what the
//! peer's TCP sees: an Init message, then frames of `data + 20` bytes). Both
//! start at the same ISN, which the engine never changes; all arithmetic is
//! done on 64-bit offsets from ISN+1 ([`seq`]), so nothing wraps.
//!
//! *Sending* ([`outbound::OutStream`]). Our Init message (Init1 for host A,
//! Init2 for host B) occupies wire offsets `0..len`; it exists only on the
//! wire, is sent by the engine itself and retransmitted on a timer until
//! the peer ACKs it. Every kernel segment is resolved against a store of
//! unacknowledged frames, each recording its local range, its wire range
//! and its sealed bytes: the part of the segment below `local_next` was
//! framed before and is resent as the stored wire bytes of every frame it
//! touches (whole frames, byte-identical, whatever the kernel's new segment
//! boundaries); the part from `local_next` on is sealed into new frames.
//! The FIN becomes FINp on the last frame (or an empty FINp frame), with
//! the wire FIN right after it. Data the kernel sends before the keys exist
//! is kept and framed when they do. A wire packet never carries more than
//! the kernel's own largest segment plus one frame overhead, nor more than
//! the peer's MSS allows; larger frames are split over several packets, the
//! first rewriting the queued one, the rest injected.
//!
//! *ACKs for what we send.* A wire ACK maps to the local end of the last
//! frame it covers completely (past the FIN once that is covered), so the
//! kernel never believes the peer has bytes it cannot yet authenticate.
//! SACK blocks shrink to the whole frames inside them. The peer's window is
//! turned into the local bytes that still fit on the wire after what is in
//! flight, less frame overhead. Acknowledged frames leave the store, so it
//! holds at most a window's worth of wire bytes.
//!
//! *Receiving* ([`inbound::InStream`]). Wire bytes are consumed strictly in
//! order: first the peer's Init message, then frames through the protocol
//! crate's frame reader; segments beyond a gap wait in a bounded store. A
//! frame's plaintext reaches the kernel only after it authenticates, in the
//! packet that completed it (rewritten in place), at the next local
//! offset. The kernel never sees data out of order, so it cannot signal a
//! gap: the engine itself answers data kept beyond a gap with a duplicate
//! wire ACK carrying a SACK block, and answers a retransmission of data the
//! kernel already has with a wire ACK. A frame that fails authentication is dropped without being
//! acknowledged, and everything after it is forgotten until the genuine
//! retransmission arrives; too many failures abort with RST both ways. A
//! wire FIN reaches the kernel only right after an authenticated FINp, and
//! the peer's later segments (its ACKs for data we still send) map one past
//! the local FIN, as the kernel expects. Each
//! delivered frame is remembered until the kernel ACKs its plaintext, so a
//! kernel ACK maps back to the wire end of the last frame it covers and a
//! peer retransmission can be answered from memory. Our advertised window
//! is the kernel's, widened by the frame overhead.
//!
//! *Handshake and keys* come from the protocol crate's `handshake` glue:
//! our SYN's option, the passive reply, then Init1/Init2 or, when both
//! hosts still cache a secret for each other, resumption with no Init
//! messages (frames start at offset 0 in both directions).
//!
//! *Rekeying.* The peer's rekeys are followed at once (with an empty frame
//! if we have nothing to send); with [`EngineConfig::rekey_after_bytes`]
//! set we start one ourselves on the first frame after that many wire
//! bytes went out under one key. A frame with no data (rekey answer, bare
//! FINp) is resent first when the kernel retransmits from its position.
//!
//! *Fallback.* A peer that does not answer with ENO, a SYN without option
//! room, with data or a Fast Open option, a failing randomness source, or a
//! failed negotiation, leaves the connection plain: its packets pass
//! untouched (only our own SYN carries the ENO option). The data of a
//! received SYN carrying ENO is always dropped before the kernel (RFC 8547
//! section 4.7), so only the SYN is acknowledged.
//!
//! ## Forged segments and floods
//!
//! The kernel accepts whatever the engine rewrites, so the engine applies
//! a receiving TCP's checks (RFC 793 section 3.9, RFC 5961) in the wire
//! sequence space before a segment may change anything: checksums, RSTs
//! only at the exact next byte, no SYN replacing a live connection, ACKs
//! and data inside the window (see `conn::crypt::Crypt::screen`). Entries
//! opened by a peer's SYN are capped, expire quickly and report nothing
//! until the three-way handshake completes; the table, out-of-order
//! storage and timer work per call are bounded ([`EngineConfig`],
//! [`EngineStats`]). docs/architecture.md lists every rule.
//!
//! ## Never letting plaintext through
//!
//! An encrypted connection, or one in its key exchange, is never silently
//! forgotten while it may be alive, because its later packets would then
//! pass untouched. On idle expiry an encrypted connection is aborted (RST
//! both ways, [`Event::Aborted`]) and stays in the table, dropping its
//! packets (answering the peer's with a RST, as a closed TCP would), until
//! the cleanup delay; a plain one is simply forgotten. A
//! packet the engine cannot rewrite (an IPv4 fragment, an IPv6 packet with
//! a fragment header, a cut-short TCP header) is dropped when its 4-tuple,
//! if readable, names such a connection (or one past a successful ENO
//! negotiation), or, for a later fragment showing no ports, when any such
//! connection joins the same two hosts; otherwise it passes. Packets of
//! connections not seen from their SYN (e.g. after a daemon restart) pass
//! untouched and create no table entry, so [`Engine::lookup`] answers
//! `Unknown` for them.
//!
//! ## Cost per byte
//!
//! A parsed packet borrows its payload from the queue's buffer
//! ([`wire::Payload`]); the frames a rewritten packet carries (sealed ones
//! out, opened plaintext in) are written into it where they lie, without
//! being joined first ([`wire::Packet::emit_gathered`]); acknowledged frames
//! lend their buffers to new ones. `benches/data_path.rs` measures what two engines
//! spend per byte beyond sealing and opening (`cargo bench -p
//! tcpcrypt-engine --bench data_path`), `benches/connection_setup.rs` what
//! they spend per new connection, resumed or with a fresh key exchange.
//!
//! A large segment is cut into one frame per wire packet even though one
//! frame for the whole segment would cost the cipher less per byte (about
//! 0.8 against 0.55 ns per byte sealed and opened, on the benchmark's VM):
//! when the kernel resends part of a segment, the frames that part touches
//! are resent whole, and a receiver can deliver nothing of a frame before
//! all of it has arrived, so large frames would turn one lost packet into
//! a large resend and hold back data the receiving kernel would otherwise
//! have acknowledged.
//!
//! ## Not (yet) handled
//!
//! Simultaneous open (falls back to plain TCP: our kernel's SYN-ACK goes
//! out without ENO, so an RFC 8547 peer disables too; docs/conformance.md
//! says why this deviation is kept); IP fragments of an
//! encrypted connection are dropped, not reassembled (the kernel sends TCP
//! with DF, and with conntrack loaded a netfilter queue sees reassembled
//! packets, so this should cost nothing in practice); an ENO negotiation
//! whose final ACK never comes is forgotten after the handshake timeout
//! without a RST (by then the kernel has given up on the handshake too); an
//! encrypted connection that is idle past the idle timeout (default 2 h 10
//! min, longer than the kernel's default keepalive) is reset even if both
//! ends meant to keep it; segments over 64 KiB (BIG TCP: the queue cannot
//! hand them over whole; large segments up to 64 KiB are handled, see
//! [`PacketMeta`]); a path MTU below the peer's MSS that no ICMP
//! report announces (the engine learns the path only from packet-too-big
//! reports, see [`wire::icmp`]); a passive opener whose peer drops ENO on
//! its first ACK keeps the MSS it clamped in the SYN (20 bytes less,
//! otherwise plain TCP).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod api;
mod conn;
mod engine;
pub mod error;
pub mod inbound;
pub mod outbound;
pub mod policy;
pub mod seq;
pub mod wire;

pub use api::{
    Checksum, ConnPhase, ConnectionInfo, Direction, EngineConfig, EngineStats, Event,
    KeylogSecrets, Lookup, MAX_VERDICT_PACKET, PacketMeta, PlainReason, SessionInfo, SharedTally,
    Transmit, Verdict,
};
pub use engine::Engine;
pub use policy::{PolicyError, PolicyScope};
pub use tcpcrypt_proto::eno::AppAware;
pub use tcpcrypt_proto::handshake::ConnectionPolicy;
