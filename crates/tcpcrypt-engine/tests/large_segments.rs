//! Large segments (GSO out, GRO in): the kernel hands the engine up to
//! 64 KiB of one connection's data at once and cuts what the engine lets
//! pass at its MSS afterwards. The engine must frame such a segment so that
//! any later retransmission, cut at other boundaries, resends few bytes and
//! always the same bytes at the same wire offsets, and a receiver must take
//! many wire segments merged into one.

#![allow(clippy::unwrap_used)]

mod harness;

use std::collections::BTreeMap;

use harness::{Fate, Side, Sim};
use tcpcrypt_engine::wire::Packet;
use tcpcrypt_engine::{Lookup, MAX_VERDICT_PACKET};

fn pattern(n: usize, salt: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ salt).collect()
}

/// Every byte `side` put on the wire at each offset, over all packets:
/// panics if two packets ever disagreed about one.
fn consistent_wire(sim: &Sim, side: Side) -> usize {
    let base = match side {
        Side::A => sim.a.kernel.isn,
        Side::B => sim.b.kernel.isn,
    }
    .wrapping_add(1);
    let mut seen: BTreeMap<usize, u8> = BTreeMap::new();
    let mut resent = 0;
    for (_, bytes) in sim.tap.iter().filter(|(s, _)| *s == side) {
        let p = Packet::parse(bytes).unwrap();
        let off = p.tcp.seq.wrapping_sub(base) as usize;
        for (i, b) in p.tcp.payload.iter().enumerate() {
            if let Some(old) = seen.insert(off + i, *b) {
                assert_eq!(
                    old,
                    *b,
                    "wire byte {} sent twice with different values",
                    off + i
                );
                resent += 1;
            }
        }
    }
    resent
}

fn largest_wire_payload(sim: &Sim, side: Side) -> usize {
    sim.tap
        .iter()
        .filter(|(s, _)| *s == side)
        .map(|(_, p)| Packet::parse(p).unwrap().tcp.payload.len())
        .max()
        .unwrap_or(0)
}

fn bulk_both_ways(mut sim: Sim) {
    sim.a.kernel.gso = 60_000;
    sim.b.kernel.gso = 40_000;
    sim.connect();
    let (ab, ba) = (pattern(300_000, 1), pattern(200_000, 2));
    sim.a.kernel.write(&ab);
    sim.b.kernel.write(&ba);
    sim.a.kernel.push();
    sim.b.kernel.push();
    sim.run();
    assert!(sim.b.kernel.received == ab, "A to B data wrong");
    assert!(sim.a.kernel.received == ba, "B to A data wrong");
    match (sim.lookup(Side::A), sim.lookup(Side::B)) {
        (Lookup::Tcpcrypt(a), Lookup::Tcpcrypt(b)) => assert_eq!(a.session_id, b.session_id),
        other => panic!("not encrypted both ends: {other:?}"),
    }
    for side in [Side::A, Side::B] {
        let h = match side {
            Side::A => &sim.a,
            Side::B => &sim.b,
        };
        assert!(!h.large_out.is_empty(), "{side:?} sent no large segment");
        assert!(
            h.large_out.iter().all(|n| *n <= MAX_VERDICT_PACKET),
            "{side:?}: a rewritten large segment exceeds what a verdict carries"
        );
        assert!(
            h.large_out.iter().any(|n| *n > 30_000),
            "{side:?}: large segments were cut up by the engine, not the kernel"
        );
        let wire = largest_wire_payload(&sim, side);
        assert!(wire <= 1460, "{side:?}: a wire packet carries {wire} bytes");
        assert!(
            !sim.wire_payloads(side)
                .windows(32)
                .any(|w| ab.windows(32).next() == Some(w)),
            "plaintext on the wire"
        );
        consistent_wire(&sim, side);
    }
}

#[test]
fn large_segments_both_ways_ipv4() {
    bulk_both_ways(Sim::v4());
}

#[test]
fn large_segments_both_ways_ipv6() {
    bulk_both_ways(Sim::v6());
}

#[test]
fn merged_wire_segments_are_taken_whole() {
    let mut sim = Sim::v4();
    sim.gro = true;
    sim.a.kernel.gso = 64_000;
    sim.connect();
    // The scripted kernel ignores windows: let B's first ACK open its
    // full window (the SYN's is unscaled) before a burst of large ones.
    let data = pattern(500_000, 3);
    sim.a.kernel.write(&data[..1000]);
    sim.a.kernel.push();
    sim.run();
    sim.a.kernel.write(&data[1000..]);
    sim.a.kernel.push();
    sim.run();
    assert!(
        sim.gro_merged > 100,
        "only {} packets merged",
        sim.gro_merged
    );
    assert!(sim.b.kernel.received == data, "data wrong");
    assert!(
        sim.b
            .kernel
            .inbox_log
            .iter()
            .any(|p| p.tcp.payload.len() > 30_000),
        "no merged segment reached the kernel in one piece"
    );
}

/// A large segment lost on the wire (some of its packets) comes back as
/// the kernel's retransmission: MSS-sized or odd-sized segments with
/// boundaries that match neither the large segment nor its frames. Each
/// resend touches at most the frames it overlaps, and the receiver ends up
/// with the exact stream.
#[test]
fn retransmissions_with_other_boundaries_resend_the_same_bytes_and_little_else() {
    let mut sim = Sim::v4();
    sim.a.kernel.gso = 60_000;
    sim.connect();
    let lost = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let count = lost.clone();
    let mut n = 0usize;
    sim.filter = Some(Box::new(move |from, p: &mut Vec<u8>| {
        if from == Side::A && Packet::parse(p).is_ok_and(|q| q.tcp.payload.len() > 1000) {
            n += 1;
            if n % 5 == 2 {
                count.set(count.get() + 1);
                return Fate::Drop;
            }
        }
        Fate::Pass
    }));
    let data = pattern(240_000, 4);
    sim.a.kernel.write(&data);
    sim.a.kernel.push();
    sim.run();
    assert!(lost.get() > 10, "the filter dropped only {}", lost.get());
    sim.filter = None;
    let before = sim.tap.len();
    let mut kernel_segments = 0;
    for seg in [700, 333, 1000, 1460] {
        if sim.b.kernel.received.len() == data.len() {
            break;
        }
        let k = &sim.a.kernel;
        kernel_segments += (k.snd_nxt - k.snd_una).div_ceil(seg as u64) as usize;
        sim.a.kernel.retransmit(seg);
        sim.run();
    }
    assert!(
        sim.b.kernel.received == data,
        "data wrong after retransmission"
    );
    consistent_wire(&sim, Side::A);
    // A resent kernel segment brings back the frames it overlaps, and
    // frames are at most one wire packet: at most two of them each, where
    // one frame per large segment would have meant up to 64 KB each.
    let resent: usize = sim.tap[before..]
        .iter()
        .filter(|(s, _)| *s == Side::A)
        .map(|(_, p)| Packet::parse(p).unwrap().tcp.payload.len())
        .sum();
    assert!(kernel_segments > 0);
    assert!(
        resent <= kernel_segments * 2 * 1460,
        "resent {resent} wire bytes for {kernel_segments} kernel segments"
    );
    assert!(largest_wire_payload(&sim, Side::A) <= 1460);
}

/// A large segment whose frames no longer fit one IP packet once sealed:
/// the overflow goes out as extra packets the engine makes.
#[test]
fn a_large_segment_that_outgrows_an_ip_packet_sends_the_rest_as_extra_packets() {
    let mut sim = Sim::v6();
    sim.a.kernel.gso = 65_400;
    sim.connect();
    let data = pattern(65_400 * 3, 5);
    sim.a.kernel.write(&data);
    sim.a.kernel.push();
    sim.run();
    assert!(sim.b.kernel.received == data, "data wrong");
    assert!(sim.a.large_out.iter().all(|n| *n <= MAX_VERDICT_PACKET));
    assert!(
        sim.a.large_out.iter().filter(|n| **n > 65_000).count() >= 3,
        "the rewritten segments should fill an IP packet: {:?}",
        sim.a.large_out
    );
    assert!(largest_wire_payload(&sim, Side::A) <= 1460);
}
