//! Forged segments against an encrypted connection, one rule at a time,
//! with the packet sequences spelled out. Host A is the client, host B the
//! server; "the forger" is a third host that knows the 4-tuple and, where a
//! test says so, the sequence numbers (an on-path attacker).
//!
//! The rules are those a Linux receiver applies (RFC 793 section 3.9, RFC
//! 5961): the engine must apply them in the wire sequence space, because
//! the kernel behind it accepts whatever the engine rewrites.

#![allow(clippy::unwrap_used)]

mod harness;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use harness::{Side, Sim};
use tcpcrypt_engine::wire::{IpLayer, Packet, TcpFlags, TcpOption, TcpRepr};
use tcpcrypt_engine::{Direction, EngineConfig, EngineStats, Event, Lookup, Verdict};

/// An ENO option as a TCP-ENO host puts it in its SYN: X25519 offered.
fn eno_syn_option() -> TcpOption {
    TcpOption::Other {
        kind: 69,
        data: vec![0x21],
    }
}

fn endpoints(sim: &Sim, from: Side) -> (SocketAddr, SocketAddr) {
    match from {
        Side::A => (sim.a.kernel.local, sim.b.kernel.local),
        Side::B => (sim.b.kernel.local, sim.a.kernel.local),
    }
}

fn segment(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    options: Vec<TcpOption>,
    payload: Vec<u8>,
) -> Vec<u8> {
    Packet {
        ip: IpLayer::new_minimal(src.ip(), dst.ip()),
        tcp: TcpRepr {
            src_port: src.port(),
            dst_port: dst.port(),
            seq,
            ack,
            flags,
            window: 1000,
            urgent: 0,
            options,
            payload: payload.into(),
        },
    }
    .to_bytes()
    .unwrap()
}

/// A segment that claims to come from `from`.
fn forged(sim: &Sim, from: Side, seq: u32, ack: u32, flags: TcpFlags, payload: Vec<u8>) -> Vec<u8> {
    let (src, dst) = endpoints(sim, from);
    segment(src, dst, seq, ack, flags, Vec::new(), payload)
}

/// (next sequence number, acknowledgment number) of the last wire packet
/// `from` sent: what an on-path forger copies.
fn wire_numbers(sim: &Sim, from: Side) -> (u32, u32) {
    let p = sim
        .tap
        .iter()
        .rev()
        .filter(|(s, _)| *s == from)
        .filter_map(|(_, p)| Packet::parse(p).ok())
        .find(|p| !p.tcp.flags.contains(TcpFlags::SYN))
        .expect("a wire packet");
    let len = p.tcp.payload.len() as u32 + u32::from(p.tcp.flags.contains(TcpFlags::FIN));
    (p.tcp.seq.wrapping_add(len), p.tcp.ack)
}

fn stats(sim: &Sim, side: Side) -> EngineStats {
    let h = match side {
        Side::A => &sim.a,
        Side::B => &sim.b,
    };
    h.engine.as_ref().unwrap().stats()
}

fn packets_from(sim: &Sim, side: Side) -> usize {
    sim.tap.iter().filter(|(s, _)| *s == side).count()
}

fn pattern(n: usize, salt: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ salt).collect()
}

/// An encrypted connection that has carried `n` bytes from A to B.
fn established(n: usize) -> Sim {
    let mut sim = Sim::v4();
    sim.connect();
    sim.a.kernel.write(&pattern(n, 1));
    sim.a.kernel.push();
    sim.run();
    assert!(matches!(sim.lookup(Side::B), Lookup::Tcpcrypt(_)));
    assert_eq!(sim.b.kernel.received, pattern(n, 1));
    assert_eq!(
        stats(&sim, Side::A),
        EngineStats {
            connections: 1,
            ..EngineStats::default()
        }
    );
    assert_eq!(
        stats(&sim, Side::B),
        EngineStats {
            connections: 1,
            ..EngineStats::default()
        }
    );
    sim
}

/// More data from A to B goes through after the attack, and both ends
/// still report the session they had.
fn still_works(sim: &mut Sim, before: &Lookup) {
    let already = sim.b.kernel.received.len();
    let more = pattern(3000, 9);
    sim.a.kernel.write(&more);
    sim.a.kernel.push();
    sim.run();
    assert_eq!(&sim.b.kernel.received[already..], &more[..]);
    assert!(!sim.b.kernel.rst_received && !sim.a.kernel.rst_received);
    assert_eq!(&sim.lookup(Side::B), before);
    assert!(
        !sim.b
            .events
            .iter()
            .chain(&sim.a.events)
            .any(|e| matches!(e, Event::Aborted { .. }))
    );
}

#[test]
fn a_reset_inside_the_window_but_not_at_the_next_byte_is_challenged_not_obeyed() {
    let mut sim = established(2000);
    let before = sim.lookup(Side::B);
    let (next, ack) = wire_numbers(&sim, Side::A);
    let sent_by_b = packets_from(&sim, Side::B);
    // A → B: RST|ACK at next + 100 (inside B's window).
    let rst = forged(
        &sim,
        Side::A,
        next.wrapping_add(100),
        ack,
        TcpFlags::RST | TcpFlags::ACK,
        vec![],
    );
    let seen = sim.b.kernel.inbox_log.len();
    sim.forge(Side::B, rst);
    assert_eq!(
        sim.b.verdicts.last(),
        Some(&(Direction::Inbound, Verdict::Drop))
    );
    assert_eq!(
        sim.b.kernel.inbox_log.len(),
        seen,
        "the kernel never saw it"
    );
    sim.run();
    assert_eq!(
        packets_from(&sim, Side::B),
        sent_by_b + 1,
        "one challenge ACK"
    );
    assert_eq!(stats(&sim, Side::B).challenge_acks, 1);
    still_works(&mut sim, &before);
}

#[test]
fn a_reset_outside_the_window_is_dropped_silently() {
    let mut sim = established(2000);
    let before = sim.lookup(Side::B);
    let (next, ack) = wire_numbers(&sim, Side::A);
    let sent_by_b = packets_from(&sim, Side::B);
    // A → B: RST at next + 2^30, far outside any window.
    let rst = forged(
        &sim,
        Side::A,
        next.wrapping_add(1 << 30),
        ack,
        TcpFlags::RST,
        vec![],
    );
    sim.forge(Side::B, rst);
    sim.run();
    assert_eq!(packets_from(&sim, Side::B), sent_by_b, "no answer");
    assert_eq!(stats(&sim, Side::B).out_of_window, 1);
    still_works(&mut sim, &before);
}

#[test]
fn a_reset_at_exactly_the_next_byte_ends_the_connection_as_in_tcp() {
    let mut sim = established(2000);
    let (next, ack) = wire_numbers(&sim, Side::A);
    // On-path forger: A → B RST at exactly B's next expected wire byte.
    let rst = forged(
        &sim,
        Side::A,
        next,
        ack,
        TcpFlags::RST | TcpFlags::ACK,
        vec![],
    );
    sim.forge(Side::B, rst);
    sim.run();
    assert!(sim.b.kernel.rst_received, "the application sees a reset");
    assert!(
        sim.b
            .events
            .iter()
            .any(|e| matches!(e, Event::Aborted { .. }))
    );
}

#[test]
fn a_syn_on_an_encrypted_connection_never_replaces_it() {
    for with_eno in [false, true] {
        let mut sim = established(2000);
        let before = sim.lookup(Side::B);
        let (a_local, b_local) = endpoints(&sim, Side::A);
        let options = if with_eno {
            vec![TcpOption::Mss(1460), eno_syn_option()]
        } else {
            vec![TcpOption::Mss(1460)]
        };
        // A → B: SYN with a fresh ISN and the connection's 4-tuple.
        let syn = segment(
            a_local,
            b_local,
            0x1234_5678,
            0,
            TcpFlags::SYN,
            options,
            vec![],
        );
        let seen = sim.b.kernel.inbox_log.len();
        sim.forge(Side::B, syn);
        assert_eq!(
            sim.b.verdicts.last(),
            Some(&(Direction::Inbound, Verdict::Drop))
        );
        assert_eq!(sim.b.kernel.inbox_log.len(), seen);
        sim.run();
        assert_eq!(stats(&sim, Side::B).challenge_acks, 1, "eno {with_eno}");
        assert_eq!(sim.b.engine.as_ref().unwrap().connection_count(), 1);
        assert!(
            !sim.b
                .events
                .iter()
                .any(|e| matches!(e, Event::Plain { .. })),
            "not turned plain"
        );
        still_works(&mut sim, &before);
    }
}

#[test]
fn an_ack_for_bytes_never_sent_changes_nothing_and_its_data_is_discarded() {
    let mut sim = established(2000);
    let before = sim.lookup(Side::A);
    let (next, _) = wire_numbers(&sim, Side::B);
    // B → A: data at A's next expected byte, acknowledging 1 MB that A
    // never sent.
    let (a_next, _) = wire_numbers(&sim, Side::A);
    let p = forged(
        &sim,
        Side::B,
        next,
        a_next.wrapping_add(1 << 20),
        TcpFlags::ACK | TcpFlags::PSH,
        pattern(50, 3),
    );
    let seen = sim.a.kernel.inbox_log.len();
    sim.forge(Side::A, p);
    assert_eq!(
        sim.a.verdicts.last(),
        Some(&(Direction::Inbound, Verdict::Drop))
    );
    assert_eq!(sim.a.kernel.inbox_log.len(), seen);
    assert_eq!(stats(&sim, Side::A).out_of_window, 1);
    assert_eq!(sim.lookup(Side::A), before);
    let b_before = sim.lookup(Side::B);
    still_works(&mut sim, &b_before);
}

#[test]
fn an_ack_far_below_the_acknowledged_point_is_challenged() {
    let mut sim = established(2000);
    let before = sim.lookup(Side::B);
    let (next, _) = wire_numbers(&sim, Side::A);
    let (b_next, _) = wire_numbers(&sim, Side::B);
    // A → B: pure ACK acknowledging 1 GB below what B has had acknowledged.
    let p = forged(
        &sim,
        Side::A,
        next,
        b_next.wrapping_sub(1 << 30),
        TcpFlags::ACK,
        vec![],
    );
    let seen = sim.b.kernel.inbox_log.len();
    sim.forge(Side::B, p);
    assert_eq!(sim.b.kernel.inbox_log.len(), seen);
    assert_eq!(stats(&sim, Side::B).challenge_acks, 1);
    still_works(&mut sim, &before);
}

#[test]
fn a_segment_without_ack_flag_is_dropped() {
    let mut sim = established(2000);
    let before = sim.lookup(Side::B);
    let (next, _) = wire_numbers(&sim, Side::A);
    let p = forged(&sim, Side::A, next, 0, TcpFlags::PSH, pattern(40, 5));
    let seen = sim.b.kernel.inbox_log.len();
    sim.forge(Side::B, p);
    assert_eq!(sim.b.kernel.inbox_log.len(), seen);
    still_works(&mut sim, &before);
}

#[test]
fn data_beyond_the_advertised_window_is_neither_kept_nor_delivered() {
    let mut sim = established(2000);
    let before = sim.lookup(Side::B);
    let (next, ack) = wire_numbers(&sim, Side::A);
    // A → B: data 64 MiB ahead: beyond any window B advertised.
    let p = forged(
        &sim,
        Side::A,
        next.wrapping_add(64 << 20),
        ack,
        TcpFlags::ACK | TcpFlags::PSH,
        pattern(1000, 7),
    );
    sim.forge(Side::B, p);
    let st = stats(&sim, Side::B);
    assert_eq!(st.out_of_order_bytes, 0);
    assert_eq!(st.out_of_window, 1);
    assert_eq!(st.challenge_acks, 1, "answered with our ACK, as TCP does");
    still_works(&mut sim, &before);
}

#[test]
fn forged_data_in_order_fails_authentication_and_the_genuine_stream_goes_on() {
    let mut sim = established(2000);
    let before = sim.lookup(Side::B);
    // An on-path forger injects garbage at B's next expected byte twenty
    // times, each time before genuine data moves the stream on: more than
    // max_auth_failures in all, never that many in a row. The garbage
    // never reaches the application; the genuine bytes it displaced come
    // through when A's kernel resends them, as on a retransmission timeout.
    for round in 0..20 {
        let (next, ack) = wire_numbers(&sim, Side::A);
        let p = forged(&sim, Side::A, next, ack, TcpFlags::ACK, pattern(60, round));
        sim.forge(Side::B, p);
        let already = sim.b.kernel.received.len();
        let start = sim.a.kernel.send_buf.len() as u64;
        sim.a.kernel.write(&pattern(3000, round));
        sim.a.kernel.push();
        sim.run();
        for _ in 0..3 {
            if sim.b.kernel.received.len() == already + 3000 {
                break;
            }
            let got = (sim.b.kernel.received.len() - already) as u64;
            let mut off = start + got;
            while off < start + 3000 {
                let len = (start + 3000 - off).min(1000);
                sim.a.kernel.send_range(off, len as usize);
                off += len;
            }
            sim.run();
        }
        assert!(
            sim.b.kernel.received[already..] == pattern(3000, round)[..],
            "round {round}: {} of 3000 bytes",
            sim.b.kernel.received.len() - already
        );
    }
    still_works(&mut sim, &before);
}

/// A wire filter that rewrites one payload byte of every data segment A
/// sends and fixes the checksum: what a tampering router does.
fn tamper_everything_from_a() -> harness::WireFilter {
    Box::new(|from, p| {
        if from == Side::A
            && let Ok(mut pkt) = Packet::parse(p).map(Packet::into_owned)
            && let Some(b) = pkt.tcp.payload.to_mut().last_mut()
        {
            *b ^= 0x01;
            *p = pkt.to_bytes().unwrap();
        }
        harness::Fate::Pass
    })
}

/// A's kernel resends its first unacknowledged segment `times` times with
/// exponential back-off from 200 ms, as on retransmission timeouts.
fn resend_with_backoff(sim: &mut Sim, off: u64, len: usize, times: u32) {
    let mut rto = Duration::from_millis(200);
    for _ in 0..times {
        sim.advance(rto);
        sim.a.kernel.send_range(off, len);
        sim.run();
        rto *= 2;
    }
}

#[test]
fn persistent_tampering_ends_the_connection_within_seconds_with_resets_both_ways() {
    let mut sim = established(0);
    sim.filter = Some(tamper_everything_from_a());
    sim.a.kernel.write(&pattern(1000, 3));
    sim.a.kernel.push();
    sim.run();
    // 0.2 + 0.4 + ... + 6.4 s: the run of failures passes the 5 s limit on
    // the sixth retransmission, long before 16 failures would.
    resend_with_backoff(&mut sim, 0, 1000, 6);
    assert!(
        sim.b.kernel.received.is_empty(),
        "a tampered byte got through"
    );
    assert!(sim.b.kernel.rst_received, "B's application saw no reset");
    assert!(sim.a.kernel.rst_received, "A's application saw no reset");
    let reason = sim.b.events.iter().find_map(|e| match e {
        Event::Aborted { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("failed authentication")),
        "{reason:?}"
    );
}

#[test]
fn slow_isolated_tampering_with_genuine_frames_between_does_not_end_the_connection() {
    let mut sim = established(0);
    let before = sim.lookup(Side::B);
    // Three rounds, each a failure then a genuine retransmission that
    // passes: the run restarts every time, however long it all takes.
    for round in 0..3u8 {
        let start = sim.a.kernel.send_buf.len() as u64;
        sim.filter = Some(tamper_everything_from_a());
        sim.a.kernel.write(&pattern(1000, round));
        sim.a.kernel.push();
        sim.run();
        resend_with_backoff(&mut sim, start, 1000, 2);
        sim.filter = None;
        sim.advance(Duration::from_secs(4));
        sim.a.kernel.send_range(start, 1000);
        sim.run();
    }
    let want: Vec<u8> = (0..3u8).flat_map(|r| pattern(1000, r)).collect();
    assert_eq!(sim.b.kernel.received, want);
    still_works(&mut sim, &before);
}

#[test]
fn a_corrupted_segment_is_dropped_before_the_engine_rewrites_it() {
    let mut sim = established(0);
    let before = sim.lookup(Side::B);
    let mut hit = false;
    sim.filter = Some(Box::new(move |from, p| {
        if from == Side::A && !hit && p.len() > 100 {
            hit = true;
            let last = p.len() - 1;
            p[last] ^= 0x40; // a bit flip the TCP checksum catches
        }
        harness::Fate::Pass
    }));
    let data = pattern(1000, 4);
    sim.a.kernel.write(&data);
    sim.a.kernel.push();
    sim.run();
    assert_eq!(stats(&sim, Side::B).bad_checksum, 1);
    assert!(
        sim.b.kernel.received.is_empty(),
        "nothing until it is resent"
    );
    sim.a.kernel.send_range(0, 1000);
    sim.run();
    assert_eq!(sim.b.kernel.received, data);
    assert_eq!(sim.lookup(Side::B), before);
}

#[test]
fn a_blind_ack_without_eno_cannot_split_the_handshake() {
    let mut sim = Sim::v4();
    sim.a.kernel.connect();
    // Move packets until B's SYN-ACK is on the wire.
    while !sim.tap.iter().any(|(s, p)| {
        *s == Side::B && Packet::parse(p).is_ok_and(|p| p.tcp.flags.contains(TcpFlags::SYN))
    }) {
        assert!(sim.step());
    }
    // A → B: an ACK without ENO, right sequence number, guessed ACK number.
    let a_isn = sim.a.kernel.isn;
    let p = forged(
        &sim,
        Side::A,
        a_isn.wrapping_add(1),
        0xdead_beef,
        TcpFlags::ACK,
        vec![],
    );
    sim.forge(Side::B, p);
    assert_eq!(
        sim.b.verdicts.last(),
        Some(&(Direction::Inbound, Verdict::Drop))
    );
    assert_eq!(sim.lookup(Side::B), Lookup::Pending);
    sim.run();
    let (Lookup::Tcpcrypt(a), Lookup::Tcpcrypt(b)) = (sim.lookup(Side::A), sim.lookup(Side::B))
    else {
        panic!(
            "both ends encrypted: {:?} {:?}",
            sim.lookup(Side::A),
            sim.lookup(Side::B)
        );
    };
    assert_eq!(a.session_id, b.session_id);
}

/// A SYN from `port` of a spoofed client to B's port 80.
fn spoofed_syn(port: u16, isn: u32, eno: bool) -> Vec<u8> {
    let src: SocketAddr = format!("10.9.{}.{}:{port}", port >> 8, port & 0xff)
        .parse()
        .unwrap();
    let dst: SocketAddr = "10.0.0.2:80".parse().unwrap();
    let mut options = vec![TcpOption::Mss(1460)];
    if eno {
        options.push(eno_syn_option());
    }
    segment(src, dst, isn, 0, TcpFlags::SYN, options, vec![])
}

fn flood_config() -> EngineConfig {
    EngineConfig {
        max_half_open: 100,
        half_open_timeout: Duration::from_secs(5),
        ..EngineConfig::default()
    }
}

#[test]
fn a_syn_flood_fills_at_most_the_half_open_cap_reports_nothing_and_expires() {
    for eno in [true, false] {
        let mut e = harness::engine_with(3, flood_config());
        let t0 = Instant::now();
        for port in 1000..1500u16 {
            let mut p = spoofed_syn(port, u32::from(port) * 7919, eno);
            let copy = p.clone();
            let v = e.handle_packet(t0, Direction::Inbound, &mut p);
            if port < 1100 {
                assert_ne!(v, Verdict::Drop);
            } else {
                assert_eq!(v, Verdict::Accept, "past the cap: plain TCP");
                assert_eq!(p, copy, "passed untouched");
            }
        }
        let st = e.stats();
        assert_eq!((st.connections, st.half_open), (100, 100), "eno {eno}");
        assert_eq!(st.refused_half_open_full, 400);
        assert_eq!(
            e.poll_event(),
            None,
            "spoofed SYNs are not reported one by one"
        );
        e.handle_timeout(t0 + Duration::from_secs(6));
        let st = e.stats();
        assert_eq!((st.connections, st.half_open), (0, 0));
        assert_eq!(st.half_open_expired, 100);
        assert_eq!(e.poll_event(), None);
        // Room again: the next SYN is tracked.
        let mut p = spoofed_syn(2000, 1, eno);
        e.handle_packet(t0 + Duration::from_secs(6), Direction::Inbound, &mut p);
        assert_eq!(e.stats().half_open, 1);
    }
}

/// Engines that split a host's connections (one per packet thread) and
/// share a tally hold the table-wide limits together: a flood landing on
/// one of them gets the whole half-open allowance, not its share, and the
/// others find it used.
#[test]
fn engines_sharing_a_tally_hold_the_limits_together() {
    let tally = std::sync::Arc::new(tcpcrypt_engine::SharedTally::default());
    let config = EngineConfig {
        shared_tally: Some(tally.clone()),
        max_connections: 150,
        ..flood_config()
    };
    let mut first = harness::engine_with(3, config.clone());
    let mut second = harness::engine_with(4, config);
    let t0 = Instant::now();
    for port in 1000..1300u16 {
        let e = if port < 1200 { &mut first } else { &mut second };
        let mut p = spoofed_syn(port, u32::from(port), true);
        e.handle_packet(t0, Direction::Inbound, &mut p);
    }
    assert_eq!(
        first.stats().half_open,
        100,
        "one engine took the whole cap"
    );
    assert_eq!(second.stats().half_open, 0, "and the other found it used");
    assert_eq!(second.stats().refused_half_open_full, 100);
    assert_eq!((tally.half_open(), tally.connections()), (100, 100));
    // Expired on the first, the allowance is free for the second, and the
    // connection limit counts both engines' entries.
    first.handle_timeout(t0 + Duration::from_secs(6));
    assert_eq!((tally.half_open(), tally.connections()), (0, 0));
    let t1 = t0 + Duration::from_secs(6);
    for port in 2000..2080u16 {
        let mut p = spoofed_syn(port, 1, true);
        second.handle_packet(t1, Direction::Inbound, &mut p);
    }
    for port in 3000..3100u16 {
        let mut p = spoofed_syn(port, 1, true);
        first.handle_packet(t1, Direction::Inbound, &mut p);
    }
    assert_eq!(
        (second.stats().half_open, first.stats().half_open),
        (80, 20)
    );
    // An engine that goes gives back what it held.
    drop(second);
    assert_eq!((tally.half_open(), tally.connections()), (20, 20));
}

#[test]
fn a_syn_that_our_kernel_refuses_leaves_no_entry() {
    let mut e = harness::engine_with(3, flood_config());
    let now = Instant::now();
    let mut syn = spoofed_syn(1234, 99, true);
    e.handle_packet(now, Direction::Inbound, &mut syn);
    assert_eq!(e.connection_count(), 1);
    // The port is closed: our kernel answers RST|ACK.
    let src: SocketAddr = "10.0.0.2:80".parse().unwrap();
    let dst: SocketAddr = "10.9.4.210:1234".parse().unwrap();
    let mut rst = segment(
        src,
        dst,
        0,
        100,
        TcpFlags::RST | TcpFlags::ACK,
        vec![],
        vec![],
    );
    assert_eq!(
        e.handle_packet(now, Direction::Outbound, &mut rst),
        Verdict::Accept
    );
    assert_eq!(e.connection_count(), 0);
    assert_eq!(e.stats().half_open, 0);
}

#[test]
fn a_mass_expiry_is_spread_over_several_timer_calls() {
    let config = EngineConfig {
        max_half_open: 10_000,
        half_open_timeout: Duration::from_secs(5),
        ..EngineConfig::default()
    };
    let mut e = harness::engine_with(3, config);
    let t0 = Instant::now();
    for port in 1..=5000u16 {
        let mut p = spoofed_syn(port, u32::from(port), false);
        e.handle_packet(t0, Direction::Inbound, &mut p);
    }
    assert_eq!(e.connection_count(), 5000);
    let later = t0 + Duration::from_secs(6);
    let mut calls = 0;
    while e.poll_timeout().is_some_and(|t| t <= later) {
        let before = e.connection_count();
        e.handle_timeout(later);
        calls += 1;
        assert!(
            before - e.connection_count() <= 1024,
            "bounded work per call"
        );
    }
    assert_eq!(e.connection_count(), 0);
    assert!(calls >= 5, "{calls} calls");
}

#[test]
fn ten_thousand_one_byte_segments_out_of_order_stay_bounded() {
    let config = EngineConfig {
        max_out_of_order_pieces: 256,
        ..EngineConfig::default()
    };
    let mut sim = Sim::v4();
    sim.b.engine = Some(harness::engine_with(2, config));
    sim.connect();
    sim.a.kernel.write(&pattern(1000, 1));
    sim.a.kernel.push();
    sim.run();
    let before = sim.lookup(Side::B);
    let (next, ack) = wire_numbers(&sim, Side::A);
    // On-path forger: one byte every other offset ahead of B's next byte.
    for i in 0..10_000u32 {
        let p = forged(
            &sim,
            Side::A,
            next.wrapping_add(10 + 2 * i),
            ack,
            TcpFlags::ACK,
            vec![0x55],
        );
        sim.forge(Side::B, p);
    }
    let st = stats(&sim, Side::B);
    assert!(st.out_of_order_bytes <= 256, "{st:?}");
    assert!(st.out_of_order_refused > 0, "{st:?}");
    sim.run();
    still_works(&mut sim, &before);
}

#[test]
fn adjacent_one_byte_segments_merge_into_one_piece() {
    let config = EngineConfig {
        max_out_of_order_pieces: 4,
        ..EngineConfig::default()
    };
    let mut sim = Sim::v4();
    sim.b.engine = Some(harness::engine_with(2, config));
    sim.connect();
    let (next, ack) = wire_numbers(&sim, Side::A);
    for i in 0..2000u32 {
        let p = forged(
            &sim,
            Side::A,
            next.wrapping_add(10 + i),
            ack,
            TcpFlags::ACK,
            vec![1],
        );
        sim.forge(Side::B, p);
    }
    let st = stats(&sim, Side::B);
    assert_eq!(st.out_of_order_bytes, 2000);
    assert_eq!(st.out_of_order_refused, 0);
}
