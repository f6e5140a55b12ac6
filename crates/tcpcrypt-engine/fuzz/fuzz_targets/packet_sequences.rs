//! Arbitrary sequences of packets in both directions, with time steps, to
//! a pair of engines (see ../README.md). Nothing may panic, and each
//! engine's gauges must match its table after every step.

#![no_main]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use tcpcrypt_engine::wire::{IpLayer, Packet, TcpFlags, TcpOption, TcpRepr};
use tcpcrypt_engine::{Checksum, Direction, Engine, EngineConfig, PacketMeta, Verdict};
use tcpcrypt_proto::TestRng;

#[derive(Debug, Arbitrary)]
enum Step {
    /// The local stack of host `b` (else a) sends a segment.
    Send {
        b: bool,
        flags: u8,
        seq_delta: i16,
        ack_delta: i16,
        len: u16,
        urgent: bool,
    },
    /// The wire delivers its first `n` packets.
    Deliver { n: u8 },
    Drop,
    Duplicate,
    /// The first packet goes to the back of the queue.
    Reorder,
    /// One byte of the first packet changes (its checksum then fails,
    /// unless `fix` recomputes it).
    Alter { at: u16, xor: u8, fix: bool },
    /// A third host's bytes reach host `b` (else a) from the wire.
    Inject { b: bool, bytes: Vec<u8> },
    Wait { ms: u16 },
}

#[derive(Debug)]
struct Input {
    config: u8,
    steps: Vec<Step>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let config = u8::arbitrary(u)?;
        let mut steps = Vec::new();
        while !u.is_empty() && steps.len() < 400 {
            steps.push(Step::arbitrary(u)?);
        }
        Ok(Input { config, steps })
    }
}

/// A local stack: its addresses, where it is in its own sequence space,
/// and what it last received.
struct Stack {
    local: SocketAddr,
    remote: SocketAddr,
    snd_nxt: u32,
    rcv_nxt: u32,
}

impl Stack {
    fn segment(&self, seq: u32, ack: u32, flags: TcpFlags, payload: Vec<u8>) -> Vec<u8> {
        let mut options = vec![
            TcpOption::Nop,
            TcpOption::Nop,
            TcpOption::Timestamps { tsval: seq, tsecr: ack },
        ];
        if flags.contains(TcpFlags::SYN) {
            options = vec![
                TcpOption::Mss(1460),
                TcpOption::SackPermitted,
                TcpOption::Timestamps { tsval: 1, tsecr: 0 },
                TcpOption::Nop,
                TcpOption::WindowScale(7),
            ];
        }
        Packet {
            ip: IpLayer::new_minimal(self.local.ip(), self.remote.ip()),
            tcp: TcpRepr {
                src_port: self.local.port(),
                dst_port: self.remote.port(),
                seq,
                ack,
                flags,
                window: 512,
                urgent: 0,
                options,
                payload: payload.into(),
            },
        }
        .to_bytes()
        .unwrap_or_default()
    }

    /// Notes what the engine let through to this stack.
    fn received(&mut self, bytes: &[u8]) {
        if let Ok(p) = Packet::parse(bytes) {
            let t = &p.tcp;
            let len = t.payload.len() as u32
                + u32::from(t.flags.contains(TcpFlags::SYN))
                + u32::from(t.flags.contains(TcpFlags::FIN));
            self.rcv_nxt = t.seq.wrapping_add(len);
        }
    }
}

struct Host {
    engine: Engine,
    stack: Stack,
}

struct World {
    hosts: [Host; 2],
    /// (receiving host, packet).
    wire: VecDeque<(usize, Vec<u8>)>,
    now: Instant,
}

impl World {
    /// The local stack of host `h` sends `bytes`.
    fn send(&mut self, h: usize, mut bytes: Vec<u8>) {
        let now = self.now;
        // Past one MSS only a GSO segment can be that long.
        let large = Packet::parse(&bytes).is_ok_and(|p| p.tcp.payload.len() > 1400);
        let meta = PacketMeta {
            checksum: Checksum::Verified,
            large,
        };
        let v = self.hosts[h]
            .engine
            .handle_packet_with(now, Direction::Outbound, meta, &mut bytes);
        if v != Verdict::Drop {
            self.wire.push_back((1 - h, bytes));
        }
        self.drain(h);
    }

    /// The wire hands `bytes` to host `h`.
    fn arrive(&mut self, h: usize, mut bytes: Vec<u8>) {
        let now = self.now;
        let v = self.hosts[h]
            .engine
            .handle_packet(now, Direction::Inbound, &mut bytes);
        if v != Verdict::Drop {
            self.hosts[h].stack.received(&bytes);
        }
        self.drain(h);
    }

    fn drain(&mut self, h: usize) {
        while let Some(t) = self.hosts[h].engine.poll_transmit() {
            match t.direction {
                Direction::Outbound => self.wire.push_back((1 - h, t.packet)),
                Direction::Inbound => self.hosts[h].stack.received(&t.packet),
            }
        }
        while self.hosts[h].engine.poll_event().is_some() {}
        let e = &self.hosts[h].engine;
        let st = e.stats();
        assert_eq!(st.connections, e.connection_count());
        assert!(st.half_open <= st.connections);
        assert_eq!(e.connections().count(), e.connection_count());
    }

    fn step(&mut self, step: Step) {
        match step {
            Step::Send {
                b,
                flags,
                seq_delta,
                ack_delta,
                len,
                urgent,
            } => {
                let h = usize::from(b);
                let s = &self.hosts[h].stack;
                let seq = s.snd_nxt.wrapping_add(seq_delta as u32);
                let ack = s.rcv_nxt.wrapping_add(ack_delta as u32);
                let mut f = TcpFlags::from_bits(u16::from(flags) & 0x1ff);
                f.set(TcpFlags::URG, urgent);
                let payload = vec![0x5a; usize::from(len % 3000)];
                let sent = payload.len() as u32;
                let bytes = s.segment(seq, ack, f, payload);
                let s = &mut self.hosts[h].stack;
                if seq_delta == 0 {
                    s.snd_nxt = s.snd_nxt.wrapping_add(sent);
                }
                self.send(h, bytes);
            }
            Step::Deliver { n } => {
                for _ in 0..n {
                    let Some((h, p)) = self.wire.pop_front() else {
                        break;
                    };
                    self.arrive(h, p);
                }
            }
            Step::Drop => {
                self.wire.pop_front();
            }
            Step::Duplicate => {
                if let Some(first) = self.wire.front().cloned() {
                    self.wire.push_back(first);
                }
            }
            Step::Reorder => {
                if let Some(first) = self.wire.pop_front() {
                    self.wire.push_back(first);
                }
            }
            Step::Alter { at, xor, fix } => {
                if let Some((_, p)) = self.wire.front_mut() {
                    let len = p.len().max(1);
                    if let Some(byte) = p.get_mut(usize::from(at) % len) {
                        *byte ^= xor;
                    }
                    if fix && let Ok(parsed) = Packet::parse(p) {
                        if let Ok(again) = parsed.to_bytes() {
                            *p = again;
                        }
                    }
                }
            }
            Step::Inject { b, bytes } => self.arrive(usize::from(b), bytes),
            Step::Wait { ms } => {
                self.now += Duration::from_millis(u64::from(ms) * 16);
                let now = self.now;
                for h in 0..2 {
                    self.hosts[h].engine.handle_timeout(now);
                    self.drain(h);
                }
            }
        }
    }
}

fn engine(seed: u64, knobs: u8) -> Engine {
    let config = EngineConfig {
        resumption: knobs & 1 != 0,
        rekey_after_bytes: (knobs & 2 != 0).then_some(3000),
        max_half_open: 1 + usize::from(knobs >> 4),
        max_out_of_order_pieces: 1 + usize::from(knobs >> 5),
        max_out_of_order_bytes_total: 4096,
        ..EngineConfig::default()
    };
    Engine::new(config, Box::new(TestRng::new(seed)))
}

fuzz_target!(|input: Input| {
    let a: SocketAddr = "10.0.0.1:40000".parse().unwrap_or_else(|_| unreachable!());
    let b: SocketAddr = "10.0.0.2:80".parse().unwrap_or_else(|_| unreachable!());
    let (isn_a, isn_b) = (0x1000_0000u32, 0xfff0_0000u32);
    let mut w = World {
        hosts: [
            Host {
                engine: engine(1, input.config),
                stack: Stack { local: a, remote: b, snd_nxt: isn_a.wrapping_add(1), rcv_nxt: 0 },
            },
            Host {
                engine: engine(2, input.config),
                stack: Stack { local: b, remote: a, snd_nxt: isn_b.wrapping_add(1), rcv_nxt: 0 },
            },
        ],
        wire: VecDeque::new(),
        now: Instant::now(),
    };
    // A genuine three-way handshake first, so the engines get past ENO.
    let syn = w.hosts[0].stack.segment(isn_a, 0, TcpFlags::SYN, Vec::new());
    w.send(0, syn);
    if let Some((h, p)) = w.wire.pop_front() {
        w.arrive(h, p);
    }
    let rcv = w.hosts[1].stack.rcv_nxt;
    let syn_ack = w.hosts[1].stack.segment(isn_b, rcv, TcpFlags::SYN | TcpFlags::ACK, Vec::new());
    w.send(1, syn_ack);
    while let Some((h, p)) = w.wire.pop_front() {
        w.arrive(h, p);
    }
    let rcv = w.hosts[0].stack.rcv_nxt;
    let ack = w.hosts[0].stack.segment(isn_a.wrapping_add(1), rcv, TcpFlags::ACK, Vec::new());
    w.send(0, ack);
    for step in input.steps {
        w.step(step);
    }
});
