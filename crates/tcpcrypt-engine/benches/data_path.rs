//! The engine's own cost on the bulk data path, without a kernel or a
//! queue: what the daemon's packet thread spends in user space per byte.
//!
//! Two engines complete a handshake in the simulated pair of the tests,
//! then one host's kernel sends large segments (as GSO hands them over)
//! through its engine, the other engine opens them (as GRO merged them),
//! and the receiving kernel's ACK travels back through both engines. The
//! baseline, measured in the same run, is the protocol crate alone sealing
//! and opening the same bytes in frames of the same size: the cipher and
//! the framing, which no implementation avoids. The ratio says how much
//! the engine costs beyond them (parsing, bookkeeping, copies, checksums).
//!
//! `cargo bench -p tcpcrypt-engine --bench data_path`; `TCPCRYPT_BENCH_MB`
//! sets the megabytes per round (default 256), `TCPCRYPT_BENCH_ROUNDS` the
//! rounds (default 5). Prints numbers; never fails on one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../tests/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use common::{env, median};
use harness::Sim;
use tcpcrypt_engine::wire::{IpLayer, Packet, TcpFlags, TcpOption, TcpRepr};
use tcpcrypt_engine::{Checksum, Direction, Engine, PacketMeta, Verdict};
use tcpcrypt_proto::frame::{FramePayload, FrameReader, FrameWriter};
use tcpcrypt_proto::schedule::SessionSecret;
use tcpcrypt_proto::{Aead, Role};

/// Plaintext per large segment, as the kernel's GSO hands it over.
const SEGMENT: usize = 60_000;
/// The window field the simulated kernels advertise (scaled by 7).
const WINDOW: u16 = 1000;

/// One side's kernel, reduced to what a bulk transfer needs.
struct Kernel {
    ip: IpLayer,
    ports: (u16, u16),
    /// Sequence number of our next byte.
    seq: u32,
    /// Sequence number we acknowledge.
    ack: u32,
    tsval: u32,
}

impl Kernel {
    /// Takes over where a simulated kernel of the tests stands.
    fn after_handshake(k: &harness::Kernel) -> Kernel {
        let seq = |isn: u32, off: u64| isn.wrapping_add(1).wrapping_add(off as u32);
        Kernel {
            ip: IpLayer::new_minimal(k.local.ip(), k.remote.ip()),
            ports: (k.local.port(), k.remote.port()),
            seq: seq(k.isn, k.snd_nxt),
            ack: seq(k.peer_isn.expect("established"), k.rcv_nxt),
            tsval: 1_000,
        }
    }

    fn packet(&mut self, flags: TcpFlags, payload: &[u8]) -> Vec<u8> {
        self.tsval = self.tsval.wrapping_add(1);
        Packet {
            ip: self.ip.clone(),
            tcp: TcpRepr {
                src_port: self.ports.0,
                dst_port: self.ports.1,
                seq: self.seq,
                ack: self.ack,
                flags,
                window: WINDOW,
                urgent: 0,
                options: vec![
                    TcpOption::Nop,
                    TcpOption::Nop,
                    TcpOption::Timestamps {
                        tsval: self.tsval,
                        tsecr: 0,
                    },
                ],
                payload: payload.into(),
            },
        }
        .to_bytes()
        .unwrap()
    }
}

/// Runs one packet through an engine; returns what leaves it (the
/// rewritten packet, then any the engine made) for the next hop.
fn through(e: &mut Engine, dir: Direction, packet: &[u8], out: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let meta = PacketMeta {
        checksum: Checksum::Verified,
        large: true,
    };
    let mut next = Vec::new();
    match e.handle_packet_into(Instant::now(), dir, meta, packet, out) {
        Verdict::Accept => next.push(packet.to_vec()),
        // Taken, not copied: the daemon hands the rewritten buffer to the
        // verdict as it is, so a copy here would be counted as the engine's.
        Verdict::AcceptModified => next.push(std::mem::take(out)),
        Verdict::Drop => {}
    }
    while let Some(t) = e.poll_transmit() {
        if t.direction == dir {
            next.push(t.packet);
        }
    }
    while e.poll_event().is_some() {}
    next
}

/// A keyed pair of engines and the two kernels' positions after the
/// handshake.
fn pair() -> (Engine, Engine, Kernel, Kernel) {
    let mut sim = Sim::v4();
    sim.connect();
    assert!(
        sim.a.kernel.established && sim.b.kernel.established,
        "handshake"
    );
    let (a, b) = (
        Kernel::after_handshake(&sim.a.kernel),
        Kernel::after_handshake(&sim.b.kernel),
    );
    let ea = sim.a.engine.take().expect("engine A");
    let eb = sim.b.engine.take().expect("engine B");
    (ea, eb, a, b)
}

/// Sends `total` bytes from A to B through both engines; returns the time
/// spent in the engines and the plaintext bytes B's kernel got.
fn engines_round(total: usize) -> (Duration, usize) {
    let (mut ea, mut eb, mut a, mut b) = pair();
    let data: Vec<u8> = (0..SEGMENT).map(|i| (i * 7) as u8).collect();
    let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
    let mut spent = Duration::ZERO;
    let mut delivered = 0;
    let mut sent = 0;
    // B's kernel opens its scaled window first, as its first ACK after
    // the handshake would: the SYN's window is not scaled.
    let update = b.packet(TcpFlags::ACK, &[]);
    for p in through(&mut eb, Direction::Outbound, &update, &mut out_b) {
        through(&mut ea, Direction::Inbound, &p, &mut out_a);
    }
    while sent < total {
        let segment = a.packet(TcpFlags::ACK | TcpFlags::PSH, &data);
        a.seq = a.seq.wrapping_add(SEGMENT as u32);
        sent += SEGMENT;
        let start = Instant::now();
        let wire = through(&mut ea, Direction::Outbound, &segment, &mut out_a);
        let mut plain = Vec::new();
        for p in &wire {
            plain.extend(through(&mut eb, Direction::Inbound, p, &mut out_b));
        }
        spent += start.elapsed();
        for p in &plain {
            delivered += Packet::parse(p).map_or(0, |p| p.tcp.payload.len());
        }
        // B's kernel acknowledges everything so far; the ACK goes back.
        b.ack = a.seq;
        let ack = b.packet(TcpFlags::ACK, &[]);
        let start = Instant::now();
        for p in through(&mut eb, Direction::Outbound, &ack, &mut out_b) {
            through(&mut ea, Direction::Inbound, &p, &mut out_a);
        }
        spent += start.elapsed();
    }
    (spent, delivered)
}

/// The protocol crate alone: seal `total` bytes in frames of `frame` bytes
/// and open them again.
fn frames_round(total: usize, frame: usize) -> Duration {
    let mk = SessionSecret::from_bytes([9; 32]).master_key(&[]);
    let mut writer = FrameWriter::new(&mk, Aead::Aes128Gcm, Role::A, 0);
    let mut reader = FrameReader::new(&mk, Aead::Aes128Gcm, Role::A, 0);
    let data: Vec<u8> = (0..SEGMENT).map(|i| (i * 7) as u8).collect();
    let mut wire = Vec::with_capacity(SEGMENT + SEGMENT / 10);
    let mut opened = Vec::new();
    let mut sent = 0;
    let start = Instant::now();
    while sent < total {
        wire.clear();
        for chunk in data.chunks(frame) {
            let payload = FramePayload {
                fin: false,
                urgent: None,
                data: chunk,
            };
            writer.seal(&payload, &mut wire).unwrap();
        }
        opened.clear();
        reader.feed(&wire, &mut opened).unwrap();
        sent += SEGMENT;
    }
    start.elapsed()
}

fn main() {
    let total = env("TCPCRYPT_BENCH_MB", 256) << 20;
    let rounds = env("TCPCRYPT_BENCH_ROUNDS", 5);
    // The frame size the engine chose for the default 1460-byte MSS with
    // timestamps, read back from one segment.
    let frame = {
        let (mut ea, mut eb, mut a, mut b) = pair();
        let update = b.packet(TcpFlags::ACK, &[]);
        for p in through(&mut eb, Direction::Outbound, &update, &mut Vec::new()) {
            through(&mut ea, Direction::Inbound, &p, &mut Vec::new());
        }
        let segment = a.packet(TcpFlags::ACK | TcpFlags::PSH, &[0; SEGMENT]);
        let mut out = Vec::new();
        let wire = through(&mut ea, Direction::Outbound, &segment, &mut out);
        let bytes: usize = wire
            .iter()
            .map(|p| Packet::parse(p).map_or(0, |p| p.tcp.payload.len()))
            .sum();
        let frames = (bytes - SEGMENT).div_ceil(tcpcrypt_proto::frame::FRAME_OVERHEAD);
        SEGMENT.div_ceil(frames.max(1))
    };
    println!(
        "engine data path: {} MiB per round, rounds: {rounds}, {SEGMENT}-byte segments, \
         frames of about {frame} bytes, AES-128-GCM",
        total >> 20
    );
    let (mut engine_rates, mut frame_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let (spent, delivered) = engines_round(total);
        assert_eq!(delivered, total.div_ceil(SEGMENT) * SEGMENT, "data lost");
        let framing = frames_round(total, frame);
        let mb = delivered as f64 / 1e6;
        let (e, f) = (mb / spent.as_secs_f64(), mb / framing.as_secs_f64());
        println!(
            "round {round}: engines {e:.0} MB/s ({:.2} ns/byte), \
             framing alone {f:.0} MB/s ({:.2} ns/byte), ratio {:.2}",
            spent.as_secs_f64() * 1e9 / delivered as f64,
            framing.as_secs_f64() * 1e9 / delivered as f64,
            f / e
        );
        engine_rates.push(e);
        frame_rates.push(f);
        ratios.push(f / e);
    }
    println!(
        "median: engines (both ends, one CPU) {:.0} MB/s, framing alone {:.0} MB/s; \
         the engines take {:.2}x the time of sealing and opening alone",
        median(engine_rates),
        median(frame_rates),
        median(ratios)
    );
}
