//! Paths by which an encrypted connection's plaintext could reach the wire
//! (or unauthenticated bytes reach the kernel) without passing through the
//! frame layer: idle expiry, fragments and packets that do not parse, and
//! packets of connections the engine never tracked.

#![allow(clippy::unwrap_used)]

mod harness;

use std::time::Duration;

use harness::{Side, Sim, fragment_v4, fragment_v6};
use tcpcrypt_engine::wire::Packet;
use tcpcrypt_engine::{Direction, Engine, Event, Lookup, Verdict};

const IDLE: Duration = Duration::from_secs(130 * 60);
const MARKER: &[u8] = b"PLAINTEXT-MARKER";

fn engine_of(sim: &mut Sim, side: Side) -> &mut Engine {
    sim.host(side).engine.as_mut().unwrap()
}

fn aborted(sim: &mut Sim, side: Side) -> bool {
    sim.host(side)
        .events
        .iter()
        .any(|e| matches!(e, Event::Aborted { .. }))
}

fn wire_shows_marker(sim: &Sim, side: Side) -> bool {
    sim.wire_payloads(side)
        .windows(MARKER.len())
        .any(|w| w == MARKER)
}

/// The next packet `side`'s kernel would hand to its engine, taken out of
/// the simulation: application data carrying [`MARKER`].
fn kernel_data_packet(sim: &mut Sim, side: Side) -> Vec<u8> {
    let k = &mut sim.host(side).kernel;
    k.write(&MARKER.repeat(20));
    k.push();
    k.outbox.pop_front().unwrap()
}

/// Sets the IP source address of an IPv4 packet (header checksum left to
/// the fragmenting helper, which recomputes it).
fn with_v4_source(mut packet: Vec<u8>, src: [u8; 4]) -> Vec<u8> {
    packet[12..16].copy_from_slice(&src);
    packet
}

// ---- idle expiry ----

#[test]
fn an_idle_encrypted_connection_is_reset_both_ways_instead_of_forgotten() {
    let mut sim = Sim::v4();
    sim.connect();
    sim.advance(IDLE + Duration::from_secs(1));
    sim.run();
    for side in [Side::A, Side::B] {
        assert!(aborted(&mut sim, side), "{side:?} reported no abort");
        assert!(
            sim.host(side).kernel.rst_received,
            "{side:?} kernel not reset"
        );
    }
    assert_eq!(engine_of(&mut sim, Side::A).connection_count(), 1);
}

#[test]
fn an_idle_abort_after_a_half_close_resets_both_kernels() {
    let mut sim = Sim::v4();
    sim.connect();
    sim.a.kernel.close();
    sim.run();
    assert!(sim.b.kernel.fin_received);
    sim.advance(IDLE + Duration::from_secs(1));
    sim.run();
    for side in [Side::A, Side::B] {
        assert!(
            sim.host(side).kernel.rst_received,
            "{side:?} kernel not reset; discarded: {:?}",
            sim.host(side).kernel.unacceptable
        );
    }
}

#[test]
fn kernel_data_after_an_idle_abort_never_reaches_the_wire_in_plaintext() {
    let mut sim = Sim::v4();
    sim.connect();
    sim.advance(IDLE + Duration::from_secs(1));
    sim.run();
    // A kernel that has not yet acted on the reset still sends.
    sim.a.kernel.write(MARKER);
    sim.a.kernel.push();
    sim.run();
    assert!(!wire_shows_marker(&sim, Side::A));
    assert_eq!(
        sim.a.verdicts.last(),
        Some(&(Direction::Outbound, Verdict::Drop))
    );
}

#[test]
fn an_idle_aborted_connection_is_forgotten_after_the_cleanup_delay() {
    let mut sim = Sim::v4();
    sim.connect();
    sim.advance(IDLE + Duration::from_secs(1));
    sim.run();
    sim.advance(Duration::from_secs(31));
    assert_eq!(engine_of(&mut sim, Side::A).connection_count(), 0);
    assert_eq!(sim.lookup(Side::A), Lookup::Unknown);
}

#[test]
fn an_idle_plain_connection_is_forgotten_without_an_abort() {
    let mut sim = Sim::new("10.0.0.1:40000", "10.0.0.2:80", (true, false));
    sim.connect();
    assert!(matches!(sim.lookup(Side::A), Lookup::Plain(_)));
    sim.advance(IDLE + Duration::from_secs(1));
    sim.run();
    assert_eq!(engine_of(&mut sim, Side::A).connection_count(), 0);
    assert!(!aborted(&mut sim, Side::A));
    assert!(!sim.a.kernel.rst_received);
}

// ---- fragments and packets that do not parse ----

#[test]
fn ipv4_fragments_of_an_encrypted_connection_are_dropped_outbound() {
    let mut sim = Sim::v4();
    sim.connect();
    let p = kernel_data_packet(&mut sim, Side::A);
    let (first, later) = fragment_v4(&p, 24);
    let now = sim.now;
    let e = engine_of(&mut sim, Side::A);
    for mut frag in [first, later] {
        assert_eq!(
            e.handle_packet(now, Direction::Outbound, &mut frag),
            Verdict::Drop
        );
    }
}

#[test]
fn ipv4_fragments_of_an_encrypted_connection_are_dropped_inbound() {
    let mut sim = Sim::v4();
    sim.connect();
    // From A's view, B's packets arrive from the network.
    let p = kernel_data_packet(&mut sim, Side::B);
    let (first, later) = fragment_v4(&p, 40);
    let now = sim.now;
    let e = engine_of(&mut sim, Side::A);
    for mut frag in [first, later] {
        assert_eq!(
            e.handle_packet(now, Direction::Inbound, &mut frag),
            Verdict::Drop
        );
    }
}

#[test]
fn ipv6_fragments_of_an_encrypted_connection_are_dropped() {
    let mut sim = Sim::v6();
    sim.connect();
    let p = kernel_data_packet(&mut sim, Side::A);
    let (first, later) = fragment_v6(&p, 16);
    let now = sim.now;
    let e = engine_of(&mut sim, Side::A);
    for mut frag in [first, later] {
        assert!(Packet::parse(&frag).is_err(), "fragments do not parse");
        assert_eq!(
            e.handle_packet(now, Direction::Outbound, &mut frag),
            Verdict::Drop
        );
    }
}

#[test]
fn a_truncated_tcp_header_of_an_encrypted_connection_is_dropped() {
    let mut sim = Sim::v4();
    sim.connect();
    let p = kernel_data_packet(&mut sim, Side::A);
    // Keep the IP header and 12 bytes of TCP header (ports included).
    let mut short = p[..20 + 12].to_vec();
    short[2..4].copy_from_slice(&32u16.to_be_bytes());
    short[10..12].copy_from_slice(&[0, 0]);
    let c = tcpcrypt_engine::wire::checksum::of(&short[..20]);
    short[10..12].copy_from_slice(&c.to_be_bytes());
    assert!(Packet::parse(&short).is_err());
    let now = sim.now;
    let e = engine_of(&mut sim, Side::A);
    assert_eq!(
        e.handle_packet(now, Direction::Outbound, &mut short),
        Verdict::Drop
    );
}

#[test]
fn fragments_of_a_plain_connection_pass_untouched() {
    let mut sim = Sim::new("10.0.0.1:40000", "10.0.0.2:80", (true, false));
    sim.connect();
    let p = kernel_data_packet(&mut sim, Side::A);
    let (first, later) = fragment_v4(&p, 24);
    let now = sim.now;
    let e = engine_of(&mut sim, Side::A);
    for frag in [first, later] {
        let mut copy = frag.clone();
        assert_eq!(
            e.handle_packet(now, Direction::Outbound, &mut copy),
            Verdict::Accept
        );
        assert_eq!(copy, frag);
    }
}

#[test]
fn a_first_fragment_of_another_connection_between_the_same_hosts_passes() {
    let mut sim = Sim::v4();
    sim.connect();
    let mut p = kernel_data_packet(&mut sim, Side::A);
    p[20..22].copy_from_slice(&40001u16.to_be_bytes()); // another local port
    let (mut first, _) = fragment_v4(&p, 24);
    let now = sim.now;
    let e = engine_of(&mut sim, Side::A);
    assert_eq!(
        e.handle_packet(now, Direction::Outbound, &mut first),
        Verdict::Accept
    );
}

#[test]
fn a_later_fragment_between_hosts_without_an_encrypted_connection_passes() {
    let mut sim = Sim::v4();
    sim.connect();
    let p = with_v4_source(kernel_data_packet(&mut sim, Side::A), [10, 0, 0, 9]);
    let (_, mut later) = fragment_v4(&p, 24);
    let now = sim.now;
    let e = engine_of(&mut sim, Side::A);
    assert_eq!(
        e.handle_packet(now, Direction::Outbound, &mut later),
        Verdict::Accept
    );
}

#[test]
fn later_fragments_pass_again_once_the_encrypted_connection_is_forgotten() {
    let mut sim = Sim::v4();
    sim.connect();
    let p = kernel_data_packet(&mut sim, Side::A);
    sim.a.kernel.outbox.push_front(p.clone());
    sim.a.kernel.close();
    sim.b.kernel.close();
    sim.run();
    sim.advance(Duration::from_secs(31));
    assert_eq!(engine_of(&mut sim, Side::A).connection_count(), 0);
    let (_, mut later) = fragment_v4(&p, 24);
    let now = sim.now;
    let e = engine_of(&mut sim, Side::A);
    assert_eq!(
        e.handle_packet(now, Direction::Outbound, &mut later),
        Verdict::Accept
    );
}

// ---- connections not seen from their SYN ----

#[test]
fn mid_stream_packets_of_an_unknown_connection_pass_and_create_no_entry() {
    let mut sim = Sim::v4();
    sim.connect();
    sim.a.kernel.write(MARKER);
    sim.a.kernel.push();
    sim.a.kernel.close();
    sim.b.kernel.write(MARKER);
    sim.b.kernel.push();
    sim.b.kernel.reset();
    // A third host's engine (a restarted daemon) sees none of the SYNs.
    let mut stranger = harness::engine(77);
    let from_a: Vec<Vec<u8>> = sim.a.kernel.outbox.drain(..).collect();
    let from_b: Vec<Vec<u8>> = sim.b.kernel.outbox.drain(..).collect();
    // Everything of the handshake but A's SYN, each in its direction.
    let handshake: Vec<(Direction, Vec<u8>)> = sim
        .tap
        .iter()
        .skip(1)
        .map(|(side, p)| match side {
            Side::A => (Direction::Outbound, p.clone()),
            Side::B => (Direction::Inbound, p.clone()),
        })
        .collect();
    let local = sim.a.kernel.local;
    let remote = sim.a.kernel.remote;
    let packets = from_a
        .iter()
        .map(|p| (Direction::Outbound, p))
        .chain(from_b.iter().map(|p| (Direction::Inbound, p)))
        .chain(handshake.iter().map(|(d, p)| (*d, p)));
    for (dir, p) in packets {
        let mut copy = p.clone();
        assert_eq!(
            stranger.handle_packet(sim.now, dir, &mut copy),
            Verdict::Accept
        );
        assert_eq!(&copy, p, "passed untouched");
        assert_eq!(stranger.connection_count(), 0);
        assert_eq!(stranger.lookup(local, remote), Lookup::Unknown);
    }
    assert_eq!(stranger.connections().count(), 0);
    assert_eq!(
        stranger.poll_timeout(),
        None,
        "no timer for an untracked packet"
    );
}
