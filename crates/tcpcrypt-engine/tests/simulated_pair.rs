//! Engine behaviour on synthetic packet traces between two simulated hosts.

#![allow(clippy::unwrap_used)]

mod harness;

use std::time::Duration;

use harness::{Fate, Side, Sim};
use tcpcrypt_engine::wire::{Packet, TcpFlags};
use tcpcrypt_engine::{Direction, Event, Lookup, PlainReason, SessionInfo, Verdict};
use tcpcrypt_proto::Role;

fn session(sim: &Sim, side: Side) -> SessionInfo {
    match sim.lookup(side) {
        Lookup::Tcpcrypt(info) => info,
        other => panic!("{side:?}: expected tcpcrypt, got {other:?}"),
    }
}

fn assert_same_session(sim: &Sim) {
    let (a, b) = (session(sim, Side::A), session(sim, Side::B));
    assert_eq!(a.session_id, b.session_id);
    assert_eq!((a.role, b.role), (Role::A, Role::B));
}

fn pattern(n: usize, salt: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

#[test]
fn ipv4_handshake_gives_both_ends_the_same_session_id_with_roles_a_and_b() {
    let mut sim = Sim::v4();
    sim.connect();
    assert!(sim.a.kernel.established && sim.b.kernel.established);
    assert_same_session(&sim);
}

#[test]
fn ipv6_handshake_gives_both_ends_the_same_session_id() {
    let mut sim = Sim::v6();
    sim.connect();
    assert_same_session(&sim);
}

#[test]
fn data_flows_both_ways_and_never_appears_in_plaintext_on_the_wire() {
    let mut sim = Sim::v4();
    sim.connect();
    let marker = b"SECRET-MARKER-0123456789".repeat(200);
    sim.a.kernel.write(&marker);
    sim.a.kernel.push();
    sim.run();
    let reply = pattern(10_000, 7);
    sim.b.kernel.write(&reply);
    sim.b.kernel.push();
    sim.run();
    assert_eq!(sim.b.kernel.received, marker);
    assert_eq!(sim.a.kernel.received, reply);
    let wire = sim.wire_payloads(Side::A);
    assert!(!wire.windows(13).any(|w| w == b"SECRET-MARKER"));
    // Every byte the kernels sent was acknowledged back to them.
    assert_eq!(sim.a.kernel.snd_una, marker.len() as u64);
    assert_eq!(sim.b.kernel.snd_una, reply.len() as u64);
}

/// Rewrites a wire packet as an attacker with checksum knowledge would.
fn mangle(p: &mut Vec<u8>, f: impl FnOnce(&mut Packet)) {
    let mut pkt = Packet::parse(p).expect("wire packet parses");
    f(&mut pkt);
    *p = pkt.to_bytes().expect("mangled packet emits");
}

fn is_data(p: &[u8]) -> bool {
    Packet::parse(p).is_ok_and(|p| !p.tcp.payload.is_empty())
}

/// Every wire byte sent at a given sequence number is the same each time
/// it is sent (RFC 8548 section 4.3: retransmissions are byte-identical).
fn assert_wire_bytes_consistent(sim: &Sim, side: Side) {
    let mut seen = std::collections::HashMap::new();
    for (s, p) in &sim.tap {
        if *s != side {
            continue;
        }
        let p = Packet::parse(p).expect("parses");
        for (i, b) in p.tcp.payload.iter().enumerate() {
            let seq = p.tcp.seq.wrapping_add(i as u32);
            let old = *seen.entry(seq).or_insert(*b);
            assert_eq!(
                old, *b,
                "wire byte at seq {seq} changed between transmissions"
            );
        }
    }
}

#[test]
fn the_first_ack_carries_a_single_non_syn_eno_option() {
    let mut sim = Sim::v4();
    sim.connect();
    let third = Packet::parse(&sim.tap[2].1).unwrap();
    assert!(!third.tcp.flags.contains(TcpFlags::SYN));
    let enos: Vec<_> = third
        .tcp
        .options
        .iter()
        .filter(|o| o.kind() == 69)
        .map(|o| o.to_bytes())
        .collect();
    assert_eq!(enos, vec![vec![0x45, 0x02]]);
}

#[test]
fn syns_keep_sack_timestamps_window_scale_and_ecn_and_gain_eno() {
    let mut sim = Sim::v4();
    sim.connect();
    for i in [0, 1] {
        let syn = Packet::parse(&sim.tap[i].1).unwrap();
        let kinds: Vec<u8> = syn.tcp.options.iter().map(|o| o.kind()).collect();
        for k in [2, 4, 8, 3, 69] {
            assert!(kinds.contains(&k), "SYN {i} lost option {k}: {kinds:?}");
        }
    }
    let syn = Packet::parse(&sim.tap[0].1).unwrap();
    assert!(syn.tcp.flags.contains(TcpFlags::ECE | TcpFlags::CWR));
}

#[test]
fn the_mss_each_kernel_learns_is_clamped_by_the_frame_overhead() {
    let mut sim = Sim::v4();
    sim.connect();
    assert_eq!(sim.a.kernel.mss, 1460 - 20);
    assert_eq!(sim.b.kernel.mss, 1460 - 20);
}

#[test]
fn a_lost_init1_is_retransmitted_by_the_engine() {
    let mut sim = Sim::v4();
    let mut dropped = 0;
    sim.filter = Some(Box::new(move |from, p| {
        if from == Side::A && is_data(p) && dropped == 0 {
            dropped += 1;
            return Fate::Drop;
        }
        Fate::Pass
    }));
    sim.connect();
    assert_eq!(sim.lookup(Side::A), Lookup::Pending);
    sim.advance(Duration::from_millis(1100));
    sim.run();
    assert_same_session(&sim);
}

#[test]
fn kernel_data_sent_before_the_keys_exist_is_held_then_sent_encrypted() {
    let mut sim = Sim::v4();
    let mut dropped = false;
    // Lose B's Init2 once, so A has no keys yet when its kernel writes.
    sim.filter = Some(Box::new(move |from, p| {
        if from == Side::B && is_data(p) && !dropped {
            dropped = true;
            return Fate::Drop;
        }
        Fate::Pass
    }));
    sim.connect();
    sim.a.kernel.write(b"early bird data");
    sim.a.kernel.push();
    sim.run();
    assert!(sim.b.kernel.received.is_empty());
    // Only Init1 went out as data: the kernel's segment was kept back.
    let data_packets = sim
        .tap
        .iter()
        .filter(|(s, p)| *s == Side::A && is_data(p))
        .count();
    assert_eq!(data_packets, 1);
    sim.advance(Duration::from_millis(1100));
    sim.run();
    assert_eq!(sim.b.kernel.received, b"early bird data");
    assert!(
        !sim.wire_payloads(Side::A)
            .windows(10)
            .any(|w| w == b"early bird")
    );
    assert_eq!(sim.a.kernel.snd_una, 15);
}

#[test]
fn kernel_retransmission_with_other_boundaries_resends_identical_wire_bytes() {
    let mut sim = Sim::v4();
    sim.connect();
    let data = pattern(5000, 3);
    sim.a.kernel.write(&data);
    // Lose every data packet of the first flight.
    let mut first_flight = true;
    sim.filter = Some(Box::new(move |from, p| {
        if from == Side::A && is_data(p) && first_flight {
            return Fate::Drop;
        }
        Fate::Pass
    }));
    for (off, len) in [(0u64, 1000usize), (1000, 1000), (2000, 1000)] {
        sim.a.kernel.send_range(off, len);
    }
    sim.run();
    assert!(sim.b.kernel.received.is_empty());
    first_flight = false;
    let _ = first_flight;
    sim.filter = None;
    // The kernel retransmits with different boundaries, then sends the rest.
    sim.a.kernel.send_range(0, 1500);
    sim.a.kernel.send_range(1500, 700);
    sim.a.kernel.send_range(2200, 2800);
    sim.run();
    assert_eq!(sim.b.kernel.received, data);
    assert_eq!(sim.a.kernel.snd_una, 5000);
    assert_wire_bytes_consistent(&sim, Side::A);
}

#[test]
fn a_wire_ack_inside_a_frame_is_not_passed_to_the_kernel() {
    let mut sim = Sim::v4();
    sim.connect();
    sim.a.kernel.write(&pattern(200, 1));
    // B's ACK of the frame arrives shortened by 10 bytes.
    sim.filter = Some(Box::new(|from, p| {
        if from == Side::B {
            mangle(p, |p| p.tcp.ack = p.tcp.ack.wrapping_sub(10));
        }
        Fate::Pass
    }));
    sim.a.kernel.send_range(0, 100);
    sim.run();
    assert_eq!(sim.b.kernel.received.len(), 100);
    assert_eq!(
        sim.a.kernel.snd_una, 0,
        "partial frame ACK must not reach the kernel"
    );
    sim.filter = None;
    sim.a.kernel.send_range(100, 100);
    sim.run();
    assert_eq!(sim.a.kernel.snd_una, 200);
}

#[test]
fn wire_sack_blocks_reach_the_kernel_as_whole_frames() {
    let mut sim = Sim::v4();
    sim.connect();
    sim.a.kernel.write(&pattern(300, 2));
    for i in 0..3 {
        sim.a.kernel.send_range(i * 100, 100);
    }
    // The first frame is lost: B's engine keeps frames 2 and 3 aside.
    let mut lost = false;
    sim.filter = Some(Box::new(move |from, p| {
        if from == Side::A && is_data(p) && !lost {
            lost = true;
            return Fate::Drop;
        }
        Fate::Pass
    }));
    sim.run();
    assert!(sim.b.kernel.received.is_empty());
    let frames: Vec<(u32, usize)> = sim
        .tap
        .iter()
        .filter(|(s, _)| *s == Side::A)
        .filter_map(|(_, p)| Packet::parse(p).ok())
        .filter(|p| p.tcp.payload.len() == 120)
        .map(|p| (p.tcp.seq, p.tcp.payload.len()))
        .collect();
    assert_eq!(frames.len(), 3);
    let (s2, _) = frames[1];
    let (s3, l3) = frames[2];
    // A SACK block from the middle of frame 1 to the end of frame 3 covers
    // frames 2 and 3 completely.
    sim.filter = Some(Box::new(move |from, p| {
        if from == Side::B {
            mangle(p, |p| {
                p.tcp
                    .options
                    .push(tcpcrypt_engine::wire::TcpOption::Sack(vec![(
                        s2.wrapping_sub(7),
                        s3.wrapping_add(l3 as u32),
                    )]));
            });
        }
        Fate::Pass
    }));
    sim.b.kernel.send_ack();
    sim.run();
    let isn = sim.a.kernel.isn.wrapping_add(1);
    let last_to_a = sim.a.kernel.inbox_log.last().unwrap();
    let sack = last_to_a
        .tcp
        .options
        .iter()
        .find_map(|o| match o {
            tcpcrypt_engine::wire::TcpOption::Sack(b) => Some(b.clone()),
            _ => None,
        })
        .expect("SACK reaches the kernel");
    assert_eq!(sack, vec![(isn.wrapping_add(100), isn.wrapping_add(300))]);
}

#[test]
fn a_forged_data_segment_is_dropped_and_the_connection_survives() {
    let mut sim = Sim::v4();
    sim.connect();
    let data = pattern(100, 9);
    sim.a.kernel.write(&data);
    let mut forged = false;
    sim.filter = Some(Box::new(move |from, p| {
        if from == Side::A && is_data(p) && !forged {
            forged = true;
            mangle(p, |p| {
                let last = p.tcp.payload.len() - 1;
                p.tcp.payload.to_mut()[last] ^= 0x55;
            });
        }
        Fate::Pass
    }));
    sim.a.kernel.send_range(0, 100);
    sim.run();
    assert!(
        sim.b.kernel.received.is_empty(),
        "forged frame reached the kernel"
    );
    assert_eq!(sim.a.kernel.snd_una, 0, "forged frame was acknowledged");
    // The genuine retransmission is accepted.
    sim.a.kernel.send_range(0, 100);
    sim.run();
    assert_eq!(sim.b.kernel.received, data);
    assert_eq!(sim.a.kernel.snd_una, 100);
    assert_same_session(&sim);
}

#[test]
fn fin_travels_as_finp_and_both_sides_close_then_are_forgotten() {
    let mut sim = Sim::v4();
    sim.connect();
    sim.a.kernel.write(b"last words");
    sim.a.kernel.push();
    sim.a.kernel.close();
    sim.run();
    assert_eq!(sim.b.kernel.received, b"last words");
    assert!(sim.b.kernel.fin_received);
    assert_eq!(sim.a.kernel.snd_una, 11, "data and FIN acknowledged");
    sim.b.kernel.close();
    sim.run();
    assert!(sim.a.kernel.fin_received);
    for side in [Side::A, Side::B] {
        assert!(
            sim.host(side)
                .events
                .iter()
                .any(|e| matches!(e, Event::Closed { .. })),
            "{side:?} saw no Closed event"
        );
    }
    for side in [Side::A, Side::B] {
        assert!(
            !sim.host(side)
                .events
                .iter()
                .any(|e| matches!(e, Event::Forgotten { .. })),
            "{side:?} was told of a forgotten connection while it was still tracked"
        );
    }
    sim.advance(Duration::from_secs(31));
    assert_eq!(sim.a.engine.as_ref().unwrap().connection_count(), 0);
    assert_eq!(sim.b.engine.as_ref().unwrap().connection_count(), 0);
    // The daemon drops its copy of the session on this event, so it must
    // come once, after the session was announced.
    for side in [Side::A, Side::B] {
        let events = &sim.host(side).events;
        let established = events
            .iter()
            .position(|e| matches!(e, Event::Established { .. }));
        let forgotten: Vec<usize> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e, Event::Forgotten { .. }))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(forgotten.len(), 1, "{side:?}: {events:?}");
        assert!(established.is_some_and(|e| e < forgotten[0]), "{side:?}");
    }
}

/// `closer` sends a short request and half-closes; the other side then
/// sends a lot of data in several rounds, every byte of which must arrive
/// and be acknowledged, before it closes too. Both kernels check sequence
/// numbers like Linux, so a segment mapped below the next expected byte
/// (e.g. onto the peer's FIN instead of past it) has its ACK ignored.
fn half_close_then_the_other_side_keeps_sending(closer: Side) {
    let mut sim = Sim::v4();
    sim.connect();
    let talker = closer.other();
    sim.host(closer).kernel.write(b"request");
    sim.host(closer).kernel.push();
    sim.host(closer).kernel.close();
    sim.run();
    assert!(sim.host(talker).kernel.fin_received, "FIN delivered");
    assert_eq!(sim.host(closer).kernel.snd_una, 8, "request and FIN acked");
    let answer = pattern(256 * 1024, 9);
    for round in answer.chunks(64 * 1024) {
        let k = &mut sim.host(talker).kernel;
        k.write(round);
        k.push();
        sim.run();
        let sent = sim.host(talker).kernel.send_buf.len() as u64;
        assert_eq!(
            sim.host(talker).kernel.snd_una,
            sent,
            "every byte sent after the peer's FIN is acknowledged"
        );
    }
    assert!(sim.host(closer).kernel.received.ends_with(&answer));
    assert_eq!(sim.host(closer).kernel.received.len(), answer.len());
    sim.host(talker).kernel.close();
    sim.run();
    assert!(sim.host(closer).kernel.fin_received);
    assert_eq!(
        sim.host(talker).kernel.snd_una,
        answer.len() as u64 + 1,
        "the second FIN is acknowledged"
    );
    for side in [Side::A, Side::B] {
        assert!(
            sim.host(side).kernel.unacceptable.is_empty(),
            "{side:?} discarded segments: {:?}",
            sim.host(side).kernel.unacceptable
        );
        assert!(
            sim.host(side)
                .events
                .iter()
                .any(|e| matches!(e, Event::Closed { .. })),
            "{side:?} saw no Closed event"
        );
    }
}

#[test]
fn data_sent_after_the_clients_half_close_arrives_and_is_acknowledged() {
    half_close_then_the_other_side_keeps_sending(Side::A);
}

#[test]
fn data_sent_after_the_servers_half_close_arrives_and_is_acknowledged() {
    half_close_then_the_other_side_keeps_sending(Side::B);
}

/// `closer` half-closes, then resets: the reset must reach the other
/// kernel at exactly the sequence number it expects (past the FIN it
/// received), or that kernel only answers it with a challenge ACK.
fn reset_after_a_half_close(closer: Side) {
    let mut sim = Sim::v4();
    sim.connect();
    sim.host(closer).kernel.close();
    sim.run();
    let other = closer.other();
    assert!(sim.host(other).kernel.fin_received);
    sim.host(closer).kernel.reset();
    sim.run();
    assert!(
        sim.host(other).kernel.rst_received,
        "reset believed; discarded: {:?}",
        sim.host(other).kernel.unacceptable
    );
}

#[test]
fn a_reset_after_the_clients_half_close_is_believed_by_the_server() {
    reset_after_a_half_close(Side::A);
}

#[test]
fn a_reset_after_the_servers_half_close_is_believed_by_the_client() {
    reset_after_a_half_close(Side::B);
}

#[test]
fn a_wire_fin_without_an_authenticated_finp_never_reaches_the_kernel() {
    let mut sim = Sim::v4();
    sim.connect();
    sim.a.kernel.write(b"not the end");
    sim.filter = Some(Box::new(|from, p| {
        if from == Side::A && is_data(p) {
            mangle(p, |p| p.tcp.flags.set(TcpFlags::FIN, true));
        }
        Fate::Pass
    }));
    sim.a.kernel.push();
    sim.run();
    assert_eq!(sim.b.kernel.received, b"not the end");
    assert!(!sim.b.kernel.fin_received);
}

#[test]
fn a_reset_passes_through_and_ends_the_session() {
    let mut sim = Sim::v4();
    sim.connect();
    sim.a.kernel.reset();
    sim.run();
    assert!(sim.b.kernel.rst_received);
    assert!(
        sim.b
            .events
            .iter()
            .any(|e| matches!(e, Event::Aborted { .. }))
    );
    assert!(
        sim.a
            .events
            .iter()
            .any(|e| matches!(e, Event::Closed { .. }))
    );
}

fn is_reset(p: &[u8]) -> bool {
    Packet::parse(p).is_ok_and(|p| p.tcp.flags.contains(TcpFlags::RST))
}

#[test]
fn a_reset_that_overtakes_lost_data_is_repeated_where_the_peer_expects_it() {
    let mut sim = Sim::v4();
    sim.connect();
    sim.a.kernel.write(&pattern(500, 1));
    // The data is lost, so A's reset lies past B's next expected byte and
    // B's engine answers it with a challenge ACK only.
    sim.filter = Some(Box::new(|from, p| {
        if from == Side::A && is_data(p) {
            return Fate::Drop;
        }
        Fate::Pass
    }));
    sim.a.kernel.push();
    sim.a.kernel.reset();
    sim.run();
    assert!(
        sim.b.kernel.rst_received,
        "B's kernel never heard of the reset"
    );
    assert!(
        sim.b
            .events
            .iter()
            .any(|e| matches!(e, Event::Aborted { .. }))
    );
    assert!(sim.b.kernel.received.is_empty());
}

#[test]
fn a_lost_reset_is_sent_again_when_the_peer_retransmits() {
    let mut sim = Sim::v4();
    sim.connect();
    sim.filter = Some(Box::new(|from, p| {
        if from == Side::A && is_reset(p) {
            return Fate::Drop;
        }
        Fate::Pass
    }));
    sim.a.kernel.reset();
    sim.run();
    assert!(!sim.b.kernel.rst_received);
    sim.filter = None;
    // The first answer goes to the segment just sent; more segments within
    // the rate limit get none.
    sim.b.kernel.write(b"anyone there?");
    sim.b.kernel.push();
    sim.run();
    assert!(sim.b.kernel.rst_received, "B's data drew no reset");
    let resets = sim
        .tap
        .iter()
        .filter(|(s, p)| *s == Side::A && is_reset(p))
        .count();
    assert_eq!(resets, 2, "the lost reset and its one repetition");
}

#[test]
fn a_late_duplicate_of_the_peers_syn_does_not_replace_an_aborted_connection() {
    let mut sim = Sim::v4();
    sim.connect();
    let (from, syn) = sim.tap[0].clone();
    let flags = Packet::parse(&syn).unwrap().tcp.flags;
    assert!(from == Side::A && flags.contains(TcpFlags::SYN) && !flags.contains(TcpFlags::ACK));
    // B's application resets; the reset is lost on the wire.
    sim.filter = Some(Box::new(|from, p| {
        if from == Side::B && is_reset(p) {
            return Fate::Drop;
        }
        Fate::Pass
    }));
    sim.b.kernel.reset();
    sim.run();
    sim.filter = None;
    // A's first SYN, delayed in the network, arrives only now.
    sim.forge(Side::B, syn);
    assert_ne!(
        sim.lookup(Side::B),
        Lookup::Pending,
        "a new handshake began"
    );
    // A still believes in the connection; its next segment must draw the
    // reset again.
    sim.a.kernel.write(b"still there?");
    sim.a.kernel.push();
    sim.run();
    assert!(sim.a.kernel.rst_received, "A never heard of the reset");
}

#[test]
fn a_peer_without_eno_gets_plain_tcp_when_we_are_the_client() {
    let mut sim = Sim::new("10.0.0.1:40000", "10.0.0.2:80", (true, false));
    sim.connect();
    assert!(matches!(
        sim.lookup(Side::A),
        Lookup::Plain(PlainReason::Negotiation(_))
    ));
    sim.a.kernel.write(b"hello plain");
    sim.a.kernel.push();
    sim.b.kernel.write(b"plain reply");
    sim.b.kernel.push();
    sim.run();
    assert_eq!(sim.b.kernel.received, b"hello plain");
    assert_eq!(sim.a.kernel.received, b"plain reply");
    // Only our SYN was modified; everything else passed untouched.
    let modified: Vec<_> = sim
        .a
        .verdicts
        .iter()
        .filter(|(_, v)| *v != Verdict::Accept)
        .collect();
    assert_eq!(
        modified,
        vec![&(Direction::Outbound, Verdict::AcceptModified)]
    );
}

#[test]
fn a_peer_without_eno_gets_plain_tcp_when_we_are_the_server() {
    let mut sim = Sim::new("10.0.0.1:40000", "10.0.0.2:80", (false, true));
    sim.connect();
    assert!(matches!(sim.lookup(Side::B), Lookup::Plain(_)));
    sim.a.kernel.write(b"hello plain");
    sim.a.kernel.push();
    sim.b.kernel.write(b"plain reply");
    sim.b.kernel.push();
    sim.run();
    assert_eq!(sim.b.kernel.received, b"hello plain");
    assert_eq!(sim.a.kernel.received, b"plain reply");
    assert!(sim.b.verdicts.iter().all(|(_, v)| *v == Verdict::Accept));
    let row = sim.b.engine.as_ref().unwrap().connections().next().unwrap();
    assert_eq!((row.bytes_sent, row.bytes_received), (11, 11));
}

#[test]
fn a_syn_without_room_for_eno_falls_back_to_plain() {
    let mut sim = Sim::v4();
    // 39 bytes of options already (38 without the NOP): ENO's 4 bytes
    // cannot fit.
    sim.a
        .kernel
        .syn_options
        .push(tcpcrypt_engine::wire::TcpOption::Other {
            kind: 253,
            data: vec![0; 17],
        });
    sim.connect();
    assert_eq!(
        sim.lookup(Side::A),
        Lookup::Plain(PlainReason::NoOptionSpace)
    );
    assert!(matches!(sim.lookup(Side::B), Lookup::Plain(_)));
}

#[test]
fn a_syn_with_a_fast_open_option_gets_no_eno() {
    let mut sim = Sim::v4();
    sim.a
        .kernel
        .syn_options
        .push(tcpcrypt_engine::wire::TcpOption::Other {
            kind: 34,
            data: vec![1, 2, 3, 4, 5, 6, 7, 8],
        });
    sim.connect();
    assert_eq!(sim.lookup(Side::A), Lookup::Plain(PlainReason::SynData));
    let syn = Packet::parse(&sim.tap[0].1).unwrap();
    assert!(syn.tcp.option(69).is_none());
}

#[test]
fn large_transfer_with_loss_and_reordering_arrives_intact() {
    let mut sim = Sim::v6();
    sim.connect();
    let data = pattern(200_000, 5);
    sim.a.kernel.write(&data);
    let mut n = 0u32;
    sim.filter = Some(Box::new(move |from, p| {
        n += 1;
        if from == Side::A && is_data(p) && n.is_multiple_of(7) {
            return Fate::Drop;
        }
        Fate::Pass
    }));
    sim.a.kernel.push();
    sim.run();
    // A go-back-N kernel: resend everything from the first unacknowledged
    // byte until done.
    for _ in 0..200 {
        if sim.a.kernel.snd_una as usize == data.len() {
            break;
        }
        let from = sim.a.kernel.snd_una;
        let mut off = from;
        while (off as usize) < data.len() && off < from + 20_000 {
            let len = (data.len() - off as usize).min(1000);
            sim.a.kernel.send_range(off, len);
            off += len as u64;
        }
        sim.run();
    }
    assert_eq!(sim.b.kernel.received, data);
    assert_wire_bytes_consistent(&sim, Side::A);
}

#[test]
fn urgent_data_travels_inside_the_frame_only() {
    let mut sim = Sim::v4();
    sim.connect();
    sim.a.kernel.write(b"abcdefgh");
    sim.a.kernel.send_urgent(0, 8);
    sim.run();
    assert_eq!(sim.b.kernel.received, b"abcdefgh");
    assert_eq!(sim.b.kernel.urgent_seen, vec![8]);
    let wire_urg = sim.tap.iter().any(|(s, p)| {
        *s == Side::A && Packet::parse(p).is_ok_and(|p| p.tcp.flags.contains(TcpFlags::URG))
    });
    assert!(!wire_urg, "URG flag seen on the wire");
}

#[test]
fn byte_counters_and_connection_list_report_application_bytes() {
    let mut sim = Sim::v4();
    sim.connect();
    sim.a.kernel.write(&pattern(1234, 0));
    sim.a.kernel.push();
    sim.run();
    let rows: Vec<_> = sim.a.engine.as_ref().unwrap().connections().collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].bytes_sent, 1234);
    let rows: Vec<_> = sim.b.engine.as_ref().unwrap().connections().collect();
    assert_eq!(rows[0].bytes_received, 1234);
    assert_eq!(rows[0].phase, tcpcrypt_engine::ConnPhase::Established);
}

#[test]
fn a_keepalive_probe_from_the_kernel_is_answered_by_the_peer() {
    let mut sim = Sim::v4();
    sim.connect();
    sim.a.kernel.write(&pattern(50, 4));
    sim.a.kernel.push();
    sim.run();
    let before = sim.a.kernel.inbox_log.len();
    // Linux's probe: no data, sequence number one below snd_una.
    sim.a.kernel.snd_nxt -= 1;
    sim.a.kernel.send_ack();
    sim.a.kernel.snd_nxt += 1;
    sim.run();
    assert!(
        sim.a.kernel.inbox_log.len() > before,
        "probe went unanswered"
    );
    let last = sim.a.kernel.inbox_log.last().unwrap();
    assert_eq!(last.tcp.ack, sim.a.kernel.isn.wrapping_add(51));
}

#[test]
fn a_second_connection_between_the_same_hosts_resumes_without_init_messages() {
    let mut sim = Sim::v4();
    sim.connect();
    let first = session(&sim, Side::A);
    assert!(!first.resumed);
    sim.next_connection(40001);
    sim.connect();
    assert_same_session(&sim);
    let second = session(&sim, Side::A);
    assert!(second.resumed);
    assert_ne!(second.session_id, first.session_id);
    // No Init message: nothing but the handshake crossed the wire.
    assert!(sim.tap.iter().all(|(_, p)| !is_data(p)));
    sim.a.kernel.write(b"resumed data");
    sim.a.kernel.push();
    sim.b.kernel.write(b"resumed reply");
    sim.b.kernel.push();
    sim.run();
    assert_eq!(sim.b.kernel.received, b"resumed data");
    assert_eq!(sim.a.kernel.received, b"resumed reply");
}

#[test]
fn established_events_carry_key_log_secrets() {
    let mut sim = Sim::v4();
    sim.connect();
    let secrets: Vec<_> = sim
        .a
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Established { keylog, .. } => Some(keylog.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0].ss.len(), 32);
    assert_eq!(secrets[0].es.as_ref().map(Vec::len), Some(32), "X25519 ES");
}

#[test]
fn flushing_the_resumption_cache_forces_a_fresh_key_exchange() {
    let mut sim = Sim::v4();
    sim.connect();
    let flushed = sim.a.engine.as_mut().unwrap().flush_resumption();
    assert!(flushed >= 1);
    sim.next_connection(40002);
    sim.connect();
    assert_same_session(&sim);
    assert!(!session(&sim, Side::A).resumed);
}

#[test]
fn a_configuration_with_repeats_is_refused_by_try_new_and_cleaned_by_new() {
    use tcpcrypt_engine::{Engine, EngineConfig};
    use tcpcrypt_proto::{Tep, TestRng};
    let config = EngineConfig {
        teps: vec![Tep::X25519, Tep::X25519],
        aeads: vec![],
        ..EngineConfig::default()
    };
    assert!(Engine::try_new(config.clone(), Box::new(TestRng::new(1))).is_err());
    let clean = config.sanitized();
    assert_eq!(clean.teps, vec![Tep::X25519]);
    assert_eq!(clean.aeads, EngineConfig::default().aeads);
    assert!(Engine::try_new(clean, Box::new(TestRng::new(1))).is_ok());
}

#[test]
fn an_unanswered_syn_is_forgotten_after_the_handshake_timeout() {
    let mut sim = Sim::v4();
    sim.filter = Some(Box::new(|_, _| Fate::Drop));
    sim.connect();
    assert_eq!(sim.lookup(Side::A), Lookup::Pending);
    sim.advance(Duration::from_secs(76));
    assert_eq!(sim.lookup(Side::A), Lookup::Unknown);
    assert_eq!(sim.a.engine.as_ref().unwrap().connection_count(), 0);
    // It never had an outcome to withdraw.
    assert!(
        !sim.a
            .events
            .iter()
            .any(|e| matches!(e, Event::Forgotten { .. })),
        "{:?}",
        sim.a.events
    );
}

#[test]
fn lookups_treat_ipv4_mapped_addresses_as_ipv4() {
    let mut sim = Sim::v4();
    sim.connect();
    let e = sim.a.engine.as_ref().unwrap();
    let local = "[::ffff:10.0.0.1]:40000".parse().unwrap();
    let remote = "[::ffff:10.0.0.2]:80".parse().unwrap();
    assert_eq!(e.lookup(local, remote), sim.lookup(Side::A));
    assert!(matches!(e.lookup(local, remote), Lookup::Tcpcrypt(_)));
}

#[test]
fn a_connection_not_seen_from_its_syn_is_left_alone() {
    let mut sim = Sim::v4();
    sim.connect();
    // A third host's engine never saw the handshake.
    let mut stranger = harness::engine(77);
    let has_eno =
        |p: &[u8]| Packet::parse(p).is_ok_and(|p| p.tcp.options.iter().any(|o| o.kind() == 69));
    let (_, pkt) = sim
        .tap
        .iter()
        .skip(3)
        .find(|(_, p)| !has_eno(p))
        .expect("a segment without ENO")
        .clone();
    let mut copy = pkt.clone();
    let v = stranger.handle_packet(sim.now, Direction::Inbound, &mut copy);
    assert_eq!(v, Verdict::Accept);
    assert_eq!(copy, pkt);
    assert_eq!(stranger.connection_count(), 0);
}

#[test]
fn an_untracked_segment_carrying_eno_never_reaches_the_kernel() {
    let mut sim = Sim::v4();
    sim.connect();
    // Host A's Init1 segment still carries its ENO option; a host that
    // lost track of the connection must not hand those bytes to its kernel
    // as application data.
    let mut stranger = harness::engine(77);
    let (from, pkt) = sim.tap[3].clone();
    assert_eq!(from, Side::A);
    let parsed = Packet::parse(&pkt).unwrap();
    assert!(parsed.tcp.options.iter().any(|o| o.kind() == 69));
    assert!(!parsed.tcp.payload.is_empty());
    let mut copy = pkt.clone();
    let v = stranger.handle_packet(sim.now, Direction::Inbound, &mut copy);
    assert_eq!(v, Verdict::Drop);
    assert_eq!(stranger.connection_count(), 0);
}

#[test]
fn data_beyond_a_gap_is_reported_to_the_sender_as_a_sack_of_whole_frames() {
    let mut sim = Sim::v4();
    sim.connect();
    sim.a.kernel.write(&pattern(300, 8));
    let mut lost = false;
    sim.filter = Some(Box::new(move |from, p| {
        if from == Side::A && is_data(p) && !lost {
            lost = true;
            return Fate::Drop;
        }
        Fate::Pass
    }));
    for i in 0..3 {
        sim.a.kernel.send_range(i * 100, 100);
    }
    sim.run();
    let isn = sim.a.kernel.isn.wrapping_add(1);
    assert_eq!(
        sim.a.kernel.last_sack,
        vec![(isn.wrapping_add(100), isn.wrapping_add(300))]
    );
    assert_eq!(sim.a.kernel.snd_una, 0);
    // The kernel's fast retransmission fills the gap.
    sim.a.kernel.send_range(0, 100);
    sim.run();
    assert_eq!(sim.b.kernel.received, pattern(300, 8));
    assert_eq!(sim.a.kernel.snd_una, 300);
}

/// A small deterministic generator for wire impairments.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Go-back-N retransmission from the first unacknowledged byte, as a
/// kernel would after a timeout (with its own new segment boundaries).
fn retransmit_from_una(k: &mut harness::Kernel, seg: usize) {
    let total = k.send_buf.len() as u64;
    let mut off = k.snd_una;
    while off < total && off < k.snd_una + 30_000 {
        let len = ((total - off) as usize).min(seg);
        k.send_range(off, len);
        off += len as u64;
    }
}

#[test]
fn both_directions_survive_loss_duplication_and_reordering_of_every_kind() {
    for seed in [0x9e37_79b9_7f4a_7c15, 0xdead_beef, 7_777_777] {
        impaired_exchange(seed);
    }
}

fn impaired_exchange(seed: u64) {
    let mut sim = Sim::v4();
    sim.connect();
    let (up, down) = (pattern(120_000, 11), pattern(90_000, 12));
    sim.a.kernel.write(&up);
    sim.b.kernel.write(&down);
    let mut rng = XorShift(seed);
    sim.filter = Some(Box::new(move |_, _| match rng.next() % 20 {
        0 | 1 => Fate::Drop,
        2 => Fate::Duplicate,
        3 => Fate::Delay,
        _ => Fate::Pass,
    }));
    sim.a.kernel.push();
    sim.b.kernel.push();
    sim.run();
    for round in 0..400 {
        let done_a = sim.a.kernel.snd_una as usize == up.len();
        let done_b = sim.b.kernel.snd_una as usize == down.len();
        if done_a && done_b {
            break;
        }
        // Alternate segment sizes so retransmissions never line up with
        // the original boundaries.
        let seg = [700, 1440, 333, 1000][round % 4];
        retransmit_from_una(&mut sim.a.kernel, seg);
        retransmit_from_una(&mut sim.b.kernel, seg);
        sim.run();
    }
    assert_eq!(sim.b.kernel.received, up);
    assert_eq!(sim.a.kernel.received, down);
    assert_eq!(sim.a.kernel.snd_una as usize, up.len());
    assert_eq!(sim.b.kernel.snd_una as usize, down.len());
    assert_wire_bytes_consistent(&sim, Side::A);
    assert_wire_bytes_consistent(&sim, Side::B);
    assert_same_session(&sim);
}

#[test]
fn repeated_authentication_failures_abort_with_a_reset_both_ways() {
    let mut sim = Sim::v4();
    sim.connect();
    sim.a.kernel.write(&pattern(100, 1));
    sim.filter = Some(Box::new(|from, p| {
        if from == Side::A && is_data(p) {
            mangle(p, |p| p.tcp.payload.to_mut()[4] ^= 0xff);
        }
        Fate::Pass
    }));
    for _ in 0..20 {
        sim.a.kernel.send_range(0, 100);
        sim.run();
    }
    assert!(sim.b.kernel.received.is_empty());
    assert!(sim.b.kernel.rst_received, "local stack told of the abort");
    assert!(sim.a.kernel.rst_received, "peer told of the abort");
    assert!(
        sim.b
            .events
            .iter()
            .any(|e| matches!(e, Event::Aborted { .. }))
    );
}

#[test]
fn an_abort_after_our_acknowledged_fin_resets_the_peer_past_that_fin() {
    let mut sim = Sim::v4();
    sim.connect();
    sim.b.kernel.close();
    sim.run();
    assert!(sim.a.kernel.fin_received);
    sim.a.kernel.write(&pattern(100, 1));
    sim.filter = Some(Box::new(|from, p| {
        if from == Side::A && is_data(p) {
            mangle(p, |p| p.tcp.payload.to_mut()[4] ^= 0xff);
        }
        Fate::Pass
    }));
    for _ in 0..20 {
        sim.a.kernel.send_range(0, 100);
        sim.run();
    }
    assert!(
        sim.b
            .events
            .iter()
            .any(|e| matches!(e, Event::Aborted { .. }))
    );
    for side in [Side::A, Side::B] {
        assert!(
            sim.host(side).kernel.rst_received,
            "{side:?} kernel not reset; discarded: {:?}",
            sim.host(side).kernel.unacceptable
        );
    }
}

#[test]
fn a_server_banner_sent_before_init1_arrives_is_held_then_delivered() {
    let mut sim = Sim::v6();
    let mut dropped = false;
    sim.filter = Some(Box::new(move |from, p| {
        if from == Side::A && is_data(p) && !dropped {
            dropped = true;
            return Fate::Drop;
        }
        Fate::Pass
    }));
    sim.connect();
    sim.b.kernel.write(b"220 banner");
    sim.b.kernel.push();
    sim.b.kernel.close();
    sim.run();
    assert!(sim.a.kernel.received.is_empty());
    sim.advance(Duration::from_millis(1100));
    sim.run();
    assert_eq!(sim.a.kernel.received, b"220 banner");
    assert!(
        sim.a.kernel.fin_received,
        "FIN held with the data, then delivered"
    );
    assert_same_session(&sim);
}

#[test]
fn a_lost_empty_finp_frame_is_resent_with_the_kernels_fin_retransmission() {
    let mut sim = Sim::v4();
    sim.connect();
    sim.a.kernel.write(b"before the end");
    sim.a.kernel.push();
    sim.run();
    let mut dropped = false;
    sim.filter = Some(Box::new(move |from, p| {
        let fin = Packet::parse(p).is_ok_and(|p| p.tcp.flags.contains(TcpFlags::FIN));
        if from == Side::A && fin && !dropped {
            dropped = true;
            return Fate::Drop;
        }
        Fate::Pass
    }));
    sim.a.kernel.close();
    sim.run();
    assert!(!sim.b.kernel.fin_received);
    // The kernel's retransmission timer fires: the FIN again.
    sim.a.kernel.close();
    sim.run();
    assert!(sim.b.kernel.fin_received);
    assert_eq!(sim.b.kernel.received, b"before the end");
}
