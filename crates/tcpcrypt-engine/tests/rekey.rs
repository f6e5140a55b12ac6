//! Rekeying (RFC 8548 section 3.8) started by the engine itself after
//! `rekey_after_bytes`, and followed by the peer's engine.

#![allow(clippy::unwrap_used)]

mod harness;

use harness::{Side, Sim, engine_with};
use tcpcrypt_engine::EngineConfig;
use tcpcrypt_proto::frame::FRAME_OVERHEAD;

/// The rekey bit of a frame's control byte (RFC 8548 section 4.2).
const REKEY: u8 = 0x01;

fn rekeying_after(bytes: u64) -> EngineConfig {
    EngineConfig {
        rekey_after_bytes: Some(bytes),
        ..EngineConfig::default()
    }
}

fn sim_with(a: EngineConfig, b: EngineConfig) -> Sim {
    let mut sim = Sim::v4();
    sim.a.engine = Some(engine_with(1, a));
    sim.b.engine = Some(engine_with(2, b));
    sim
}

fn chunk(round: usize, salt: u8) -> Vec<u8> {
    (0..1000)
        .map(|i| ((i + round * 7) as u8).wrapping_mul(13) ^ salt)
        .collect()
}

/// `rounds` exchanges of 1000 bytes each way; returns what each side sent.
fn exchange(sim: &mut Sim, rounds: usize) -> (Vec<u8>, Vec<u8>) {
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let a = chunk(round, 0x5a);
        sim.a.kernel.write(&a);
        sim.a.kernel.push();
        sim.run();
        from_a.extend_from_slice(&a);
        let b = chunk(round, 0xa5);
        sim.b.kernel.write(&b);
        sim.b.kernel.push();
        sim.run();
        from_b.extend_from_slice(&b);
    }
    (from_a, from_b)
}

fn rekey_frames(sim: &Sim, side: Side) -> usize {
    sim.wire_frame_controls(side)
        .iter()
        .filter(|c| *c & REKEY != 0)
        .count()
}

#[test]
fn both_sides_keep_exchanging_data_across_several_rekeys_of_both_directions() {
    let mut sim = sim_with(rekeying_after(3000), rekeying_after(3000));
    sim.connect();
    let (from_a, from_b) = exchange(&mut sim, 20);
    assert_eq!(sim.b.kernel.received, from_a);
    assert_eq!(sim.a.kernel.received, from_b);
    assert!(rekey_frames(&sim, Side::A) >= 5, "A rekeyed too rarely");
    assert!(rekey_frames(&sim, Side::B) >= 5, "B rekeyed too rarely");
    assert!(!sim.a.kernel.rst_received && !sim.b.kernel.rst_received);
}

#[test]
fn a_peer_that_never_initiates_follows_each_of_our_rekeys() {
    let mut sim = sim_with(rekeying_after(2000), EngineConfig::default());
    sim.connect();
    let (from_a, from_b) = exchange(&mut sim, 12);
    assert_eq!(sim.b.kernel.received, from_a);
    assert_eq!(sim.a.kernel.received, from_b);
    let ours = rekey_frames(&sim, Side::A);
    assert!(ours >= 4, "A rekeyed {ours} times");
    // Every rekey of ours is answered by exactly one frame under the new
    // generation with the rekey bit set.
    assert_eq!(rekey_frames(&sim, Side::B), ours);
}

#[test]
fn one_way_traffic_keeps_flowing_while_rekeys_wait_for_the_peer() {
    let mut sim = sim_with(rekeying_after(1500), EngineConfig::default());
    sim.connect();
    let mut sent = Vec::new();
    for round in 0..15 {
        let a = chunk(round, 0x33);
        sim.a.kernel.write(&a);
        sent.extend_from_slice(&a);
    }
    sim.a.kernel.push();
    sim.run();
    assert_eq!(sim.b.kernel.received, sent);
    assert!(rekey_frames(&sim, Side::A) >= 1);
}

#[test]
fn without_rekey_after_bytes_the_engine_never_initiates_a_rekey() {
    let mut sim = Sim::v4();
    sim.connect();
    exchange(&mut sim, 10);
    assert_eq!(rekey_frames(&sim, Side::A), 0);
    assert_eq!(rekey_frames(&sim, Side::B), 0);
    assert!(sim.wire_frame_controls(Side::A).len() >= 10);
}

#[test]
fn a_lost_rekey_answer_is_resent_with_the_kernels_retransmission_of_later_data() {
    let mut sim = sim_with(rekeying_after(2000), EngineConfig::default());
    sim.connect();
    let mut dropped = false;
    sim.filter = Some(Box::new(move |from, p| {
        // B's answer to A's rekey is a frame with no data.
        let empty_frame = tcpcrypt_engine::wire::Packet::parse(p)
            .is_ok_and(|p| p.tcp.payload.len() == FRAME_OVERHEAD && p.tcp.payload[0] & REKEY != 0);
        if from == Side::B && empty_frame && !dropped {
            dropped = true;
            return harness::Fate::Drop;
        }
        harness::Fate::Pass
    }));
    let mut from_a = Vec::new();
    for round in 0..3 {
        let a = chunk(round, 1);
        sim.a.kernel.write(&a);
        sim.a.kernel.push();
        sim.run();
        from_a.extend_from_slice(&a);
    }
    assert_eq!(sim.b.kernel.received, from_a);
    let reply = chunk(9, 2);
    sim.b.kernel.write(&reply);
    sim.b.kernel.push();
    sim.run();
    assert!(sim.a.kernel.received.is_empty(), "waits for the lost frame");
    // B's kernel times out and resends what A has not acknowledged.
    let una = sim.b.kernel.snd_una;
    sim.b.kernel.send_range(una, reply.len() - una as usize);
    sim.run();
    assert_eq!(sim.a.kernel.received, reply);
}
