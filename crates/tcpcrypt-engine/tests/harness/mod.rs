//! A simulated pair of hosts for engine tests: each host is a minimal
//! scripted TCP ("kernel") with an optional engine in front of it, joined
//! by a wire the test can watch, drop or tamper with.
//!
//! The kernel model is deliberately small: in-order receiver (out-of-order
//! data is dropped and answered with a duplicate ACK), a sender that the test
//! drives segment by segment, and checksums verified on every packet it gets.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tcpcrypt_engine::wire::{IpLayer, Packet, TcpFlags, TcpOption, TcpRepr, checksum};
use tcpcrypt_engine::{
    Checksum, Direction, Engine, EngineConfig, Event, Lookup, PacketMeta, Verdict,
};
use tcpcrypt_proto::TestRng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// Verifies IP and TCP checksums of a packet the way a receiver would.
pub fn assert_checksums(bytes: &[u8]) {
    let p = Packet::parse(bytes).expect("packet parses");
    let hl = p.ip.header.len();
    if bytes[0] >> 4 == 4 {
        assert_eq!(checksum::of(&bytes[..hl]), 0, "IPv4 header checksum");
    }
    assert_eq!(
        checksum::tcp(p.ip.src, p.ip.dst, &bytes[hl..]),
        0,
        "TCP checksum"
    );
}

/// The window every kernel advertises, scaled by 7: 128000 bytes.
const WINDOW_FIELD: u16 = 1000;

/// A scripted TCP endpoint. Offsets count from ISN+1 in each direction.
pub struct Kernel {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub isn: u32,
    pub mss: usize,
    pub send_buf: Vec<u8>,
    pub snd_nxt: u64,
    pub snd_una: u64,
    pub fin_sent_at: Option<u64>,
    pub peer_isn: Option<u32>,
    pub rcv_nxt: u64,
    pub received: Vec<u8>,
    pub fin_received: bool,
    pub rst_received: bool,
    pub rst_sent: bool,
    pub established: bool,
    /// This kernel sent the first SYN (`connect`).
    pub active_open: bool,
    pub peer_window: u32,
    pub last_sack: Vec<(u32, u32)>,
    pub urgent_seen: Vec<u64>,
    pub outbox: VecDeque<Vec<u8>>,
    pub ts_clock: u32,
    pub syn_options: Vec<TcpOption>,
    /// Every packet this kernel received, for assertions.
    pub inbox_log: Vec<Packet<'static>>,
    /// Segments discarded by the sequence check (their ACK ignored).
    pub unacceptable: Vec<Packet<'static>>,
    /// When nonzero, `push` sends segments of up to this many bytes, marked
    /// large (GSO), which the host cuts at `mss` after the engine's verdict
    /// as the kernel's segmentation would.
    pub gso: usize,
    /// Data `connect` puts on the SYN, as TCP Fast Open does; it is also
    /// queued as unsent, so `push` sends it again after the handshake.
    pub syn_data: Vec<u8>,
}

pub fn default_syn_options(mss: u16) -> Vec<TcpOption> {
    vec![
        TcpOption::Mss(mss),
        TcpOption::SackPermitted,
        TcpOption::Timestamps { tsval: 1, tsecr: 0 },
        TcpOption::Nop,
        TcpOption::WindowScale(7),
    ]
}

impl Kernel {
    pub fn new(local: SocketAddr, remote: SocketAddr, isn: u32) -> Kernel {
        Kernel {
            local,
            remote,
            isn,
            mss: 1460,
            send_buf: Vec::new(),
            snd_nxt: 0,
            snd_una: 0,
            fin_sent_at: None,
            peer_isn: None,
            rcv_nxt: 0,
            received: Vec::new(),
            fin_received: false,
            rst_received: false,
            rst_sent: false,
            established: false,
            active_open: false,
            peer_window: 65535,
            last_sack: Vec::new(),
            urgent_seen: Vec::new(),
            outbox: VecDeque::new(),
            ts_clock: 100,
            syn_options: default_syn_options(1460),
            inbox_log: Vec::new(),
            unacceptable: Vec::new(),
            gso: 0,
            syn_data: Vec::new(),
        }
    }

    fn seq(&self, off: u64) -> u32 {
        self.isn.wrapping_add(1).wrapping_add(off as u32)
    }

    fn ack_seq(&self) -> u32 {
        let fin = u32::from(self.fin_received);
        self.peer_isn.map_or(0, |i| {
            i.wrapping_add(1)
                .wrapping_add(self.rcv_nxt as u32)
                .wrapping_add(fin)
        })
    }

    fn packet(&mut self, seq: u32, flags: TcpFlags, payload: Vec<u8>) -> Packet<'static> {
        self.ts_clock += 1;
        let timestamps = self
            .syn_options
            .iter()
            .any(|o| matches!(o, TcpOption::Timestamps { .. }));
        let mut options = Vec::new();
        if flags.contains(TcpFlags::SYN) {
            options = self.syn_options.clone();
        } else if timestamps {
            options = vec![
                TcpOption::Nop,
                TcpOption::Nop,
                TcpOption::Timestamps {
                    tsval: self.ts_clock,
                    tsecr: 0,
                },
            ];
        }
        Packet {
            ip: IpLayer::new_minimal(self.local.ip(), self.remote.ip()),
            tcp: TcpRepr {
                src_port: self.local.port(),
                dst_port: self.remote.port(),
                seq,
                ack: self.ack_seq(),
                flags,
                window: WINDOW_FIELD,
                urgent: 0,
                options,
                payload: payload.into(),
            },
        }
    }

    fn emit(&mut self, p: Packet) {
        self.outbox
            .push_back(p.to_bytes().expect("kernel packet emits"));
    }

    pub fn connect(&mut self) {
        self.active_open = true;
        if self.send_buf.is_empty() {
            self.send_buf = self.syn_data.clone();
        }
        let p = self.packet(
            self.isn,
            TcpFlags::SYN | TcpFlags::ECE | TcpFlags::CWR,
            self.syn_data.clone(),
        );
        self.emit(p);
    }

    /// Queues application data (not sent until `push`).
    pub fn write(&mut self, data: &[u8]) {
        self.send_buf.extend_from_slice(data);
    }

    /// Sends all unsent data in MSS-sized segments.
    pub fn push(&mut self) {
        while (self.snd_nxt as usize) < self.send_buf.len() {
            let size = if self.gso > 0 { self.gso } else { self.mss };
            let len = (self.send_buf.len() - self.snd_nxt as usize).min(size);
            self.send_range(self.snd_nxt, len);
        }
    }

    /// Sends (or resends) bytes `off..off+len` as one segment.
    pub fn send_range(&mut self, off: u64, len: usize) {
        let data = self.send_buf[off as usize..off as usize + len].to_vec();
        let p = self.packet(self.seq(off), TcpFlags::ACK | TcpFlags::PSH, data);
        self.snd_nxt = self.snd_nxt.max(off + len as u64);
        self.emit(p);
    }

    /// Sends a segment with URG set; `urgent_len` bytes from `off` are urgent.
    pub fn send_urgent(&mut self, off: u64, len: usize) {
        let data = self.send_buf[off as usize..off as usize + len].to_vec();
        let mut p = self.packet(
            self.seq(off),
            TcpFlags::ACK | TcpFlags::PSH | TcpFlags::URG,
            data,
        );
        p.tcp.urgent = len as u16;
        self.snd_nxt = self.snd_nxt.max(off + len as u64);
        self.emit(p);
    }

    pub fn close(&mut self) {
        let off = self.send_buf.len() as u64;
        self.fin_sent_at = Some(off);
        let p = self.packet(self.seq(off), TcpFlags::ACK | TcpFlags::FIN, vec![]);
        self.emit(p);
    }

    pub fn reset(&mut self) {
        self.rst_sent = true;
        let off = self.snd_nxt + u64::from(self.fin_sent_at.is_some());
        let p = self.packet(self.seq(off), TcpFlags::RST | TcpFlags::ACK, vec![]);
        self.emit(p);
    }

    fn send_syn_ack(&mut self) {
        let p = self.packet(self.isn, TcpFlags::SYN | TcpFlags::ACK, vec![]);
        self.emit(p);
    }

    /// What the retransmission timer does when it fires: the SYN or the
    /// SYN-ACK again while the three-way handshake is open; afterwards
    /// go-back-N from the first unacknowledged byte up to what was sent,
    /// at most the peer's window, in segments of `seg` bytes (boundaries
    /// need not match the first transmission), and the FIN if the peer
    /// has not acknowledged it. Nothing once a reset was sent or believed.
    pub fn retransmit(&mut self, seg: usize) {
        if self.rst_sent || self.rst_received {
            return;
        }
        if self.active_open && self.peer_isn.is_none() {
            self.connect();
            return;
        }
        if !self.active_open {
            if self.peer_isn.is_some() && !self.established {
                self.send_syn_ack();
            }
            if !self.established {
                return;
            }
        }
        let seg = seg.clamp(1, self.mss);
        let window = u64::from(self.peer_window).max(self.mss as u64);
        let end = self.snd_nxt.min(self.snd_una + window);
        let mut off = self.snd_una;
        while off < end {
            let len = (end - off).min(seg as u64) as usize;
            self.send_range(off, len);
            off += len as u64;
        }
        if let Some(fin) = self.fin_sent_at
            && self.snd_una <= fin
            && off >= fin
        {
            self.close();
        }
    }

    /// Whether the peer acknowledged every byte written and, once closed,
    /// the FIN.
    pub fn all_acked(&self) -> bool {
        let end = self.send_buf.len() as u64 + u64::from(self.fin_sent_at.is_some());
        self.snd_una == end
    }

    pub fn send_ack(&mut self) {
        let off = self.snd_nxt + u64::from(self.fin_sent_at.is_some());
        let p = self.packet(self.seq(off), TcpFlags::ACK, vec![]);
        self.emit(p);
    }

    /// The peer's next sequence number as an offset (its FIN counted).
    fn expected(&self) -> i64 {
        self.rcv_nxt as i64 + i64::from(self.fin_received)
    }

    fn offset_of(&self, peer_isn: u32, seq: u32) -> i64 {
        i64::from(seq.wrapping_sub(peer_isn.wrapping_add(1)) as i32)
    }

    /// Whether a non-SYN segment lies inside the receive window: its end
    /// (data and FIN counted) not below the next expected sequence number
    /// (the peer's FIN counted once received), its start not past the
    /// advertised window.
    fn sequence_acceptable(&self, peer_isn: u32, t: &TcpRepr) -> bool {
        let expected = self.expected();
        let off = self.offset_of(peer_isn, t.seq);
        let end = off + t.payload.len() as i64 + i64::from(t.flags.contains(TcpFlags::FIN));
        end >= expected && off <= expected + (i64::from(WINDOW_FIELD) << 7)
    }

    /// Takes a packet from the network side (through its engine).
    pub fn receive(&mut self, bytes: &[u8]) {
        assert_checksums(bytes);
        let p = Packet::parse(bytes).expect("kernel gets a TCP packet");
        assert_eq!(p.dst(), self.local, "packet for this kernel");
        self.inbox_log.push(p.clone().into_owned());
        let t = &p.tcp;
        if t.flags.contains(TcpFlags::RST) {
            match self.peer_isn {
                // RFC 5961 section 3.2: only a reset at exactly the next
                // expected sequence number is believed; any other gets a
                // challenge ACK.
                Some(peer_isn)
                    if self.established && self.offset_of(peer_isn, t.seq) != self.expected() =>
                {
                    self.unacceptable.push(p.clone().into_owned());
                    self.send_ack();
                }
                _ => self.rst_received = true,
            }
            return;
        }
        if t.flags.contains(TcpFlags::SYN) {
            // A kernel that accepts SYN data (a Fast Open server with a
            // valid cookie) takes it and acknowledges it with the SYN.
            if self.peer_isn.is_none() && !t.payload.is_empty() {
                self.received.extend_from_slice(&t.payload);
                self.rcv_nxt += t.payload.len() as u64;
            }
            self.peer_isn = Some(t.seq);
            if let Some(m) = t.mss() {
                self.mss = self.mss.min(usize::from(m));
            }
            // Timestamps are on only if both SYNs carry them.
            if t.timestamps().is_none() {
                self.syn_options
                    .retain(|o| !matches!(o, TcpOption::Timestamps { .. }));
            }
            if t.flags.contains(TcpFlags::ACK) {
                self.established = true;
                self.send_ack();
            } else {
                self.send_syn_ack();
            }
            return;
        }
        self.established = true;
        if let Some(peer_isn) = self.peer_isn
            && !self.sequence_acceptable(peer_isn, t)
        {
            // As Linux does (tcp_sequence): a segment wholly below the
            // next expected byte, or beyond the window, is answered with
            // a duplicate ACK and its ACK field is ignored.
            self.unacceptable.push(p.clone().into_owned());
            self.send_ack();
            return;
        }
        if t.flags.contains(TcpFlags::ACK) {
            let acked = t.ack.wrapping_sub(self.isn.wrapping_add(1)) as u64;
            if acked <= self.snd_nxt + 1 && acked > self.snd_una {
                self.snd_una = acked;
            }
            self.peer_window = u32::from(t.window) << 7;
        }
        self.last_sack = t
            .options
            .iter()
            .find_map(|o| match o {
                TcpOption::Sack(b) => Some(b.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let Some(peer_isn) = self.peer_isn else {
            return;
        };
        let off = self.offset_of(peer_isn, t.seq);
        let has_data = !t.payload.is_empty() || t.flags.contains(TcpFlags::FIN);
        if !has_data {
            return;
        }
        if off == self.rcv_nxt as i64 && !self.fin_received {
            if t.flags.contains(TcpFlags::URG) {
                self.urgent_seen.push(self.rcv_nxt + u64::from(t.urgent));
            }
            self.received.extend_from_slice(&t.payload);
            self.rcv_nxt += t.payload.len() as u64;
            if t.flags.contains(TcpFlags::FIN) {
                self.fin_received = true;
            }
        }
        // ACK everything (duplicate ACK for old or out-of-order data).
        self.send_ack();
    }
}

/// Cuts a large packet's payload into segments of `size` bytes, as the
/// kernel's GSO does after the verdict: FIN and PSH on the last only.
pub fn segment(packet: &[u8], size: usize) -> Vec<Vec<u8>> {
    let p = Packet::parse(packet).expect("a large packet parses");
    let n = p.tcp.payload.len().div_ceil(size).max(1);
    (0..n)
        .map(|i| {
            let mut q = p.clone();
            let from = i * size;
            let to = (from + size).min(p.tcp.payload.len());
            q.tcp.seq = p.tcp.seq.wrapping_add(from as u32);
            q.tcp.payload = p.tcp.payload[from..to].into();
            if i + 1 < n {
                q.tcp.flags.set(TcpFlags::FIN, false);
                q.tcp.flags.set(TcpFlags::PSH, false);
            }
            q.to_bytes().expect("a segment emits")
        })
        .collect()
}

/// One host: its kernel and, if the daemon runs there, its engine.
pub struct Host {
    pub kernel: Kernel,
    pub engine: Option<Engine>,
    pub events: Vec<Event>,
    pub verdicts: Vec<(Direction, Verdict)>,
    /// Sizes of the large (GSO) packets as the engine let them pass,
    /// before the host cut them up.
    pub large_out: Vec<usize>,
}

/// What the wire filter decides for a packet.
pub enum Fate {
    Pass,
    Drop,
    /// Deliver twice.
    Duplicate,
    /// Deliver after everything now on the wire (reordering).
    Delay,
    /// Deliver only once time has passed (the next `advance`), behind
    /// whatever was sent until then: a stale segment.
    Late,
}

pub type WireFilter = Box<dyn FnMut(Side, &mut Vec<u8>) -> Fate>;

pub struct Sim {
    pub a: Host,
    pub b: Host,
    pub now: Instant,
    /// Packets on the wire, with the side that sent them.
    wire: VecDeque<(Side, Vec<u8>)>,
    /// Every packet that crossed the wire (before the filter), by sender.
    pub tap: Vec<(Side, Vec<u8>)>,
    /// When each packet of `tap` crossed.
    pub tap_times: Vec<Instant>,
    pub filter: Option<WireFilter>,
    /// Packets held back by [`Fate::Delay`].
    delayed: VecDeque<(Side, Vec<u8>)>,
    /// Packets held back by [`Fate::Late`].
    late: VecDeque<(Side, Vec<u8>)>,
    /// Merge in-order data packets that follow each other on the wire
    /// into one before the receiving engine sees it, as GRO does.
    pub gro: bool,
    /// Wire packets that reached a receiver merged with others.
    pub gro_merged: usize,
}

pub fn engine(seed: u64) -> Engine {
    engine_with(seed, EngineConfig::default())
}

pub fn engine_with(seed: u64, config: EngineConfig) -> Engine {
    Engine::new(config, Box::new(TestRng::new(seed)))
}

impl Sim {
    pub fn new(a_addr: &str, b_addr: &str, engines: (bool, bool)) -> Sim {
        let a: SocketAddr = a_addr.parse().expect("address");
        let b: SocketAddr = b_addr.parse().expect("address");
        Sim {
            a: Host {
                kernel: Kernel::new(a, b, 0x1000_0000),
                engine: engines.0.then(|| engine(1)),
                events: Vec::new(),
                verdicts: Vec::new(),
                large_out: Vec::new(),
            },
            b: Host {
                kernel: Kernel::new(b, a, 0xfff0_0000),
                engine: engines.1.then(|| engine(2)),
                events: Vec::new(),
                verdicts: Vec::new(),
                large_out: Vec::new(),
            },
            now: Instant::now(),
            wire: VecDeque::new(),
            tap: Vec::new(),
            tap_times: Vec::new(),
            filter: None,
            delayed: VecDeque::new(),
            late: VecDeque::new(),
            gro: false,
            gro_merged: 0,
        }
    }

    pub fn v4() -> Sim {
        Sim::new("10.0.0.1:40000", "10.0.0.2:80", (true, true))
    }

    pub fn v6() -> Sim {
        Sim::new("[2001:db8::1]:40000", "[2001:db8::2]:443", (true, true))
    }

    pub fn host(&mut self, s: Side) -> &mut Host {
        match s {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    /// Moves every queued packet until nothing moves (bounded).
    pub fn run(&mut self) {
        for _ in 0..100_000 {
            if !self.step() {
                return;
            }
        }
        panic!("simulation did not settle");
    }

    /// Moves one packet; false when all queues are empty.
    pub fn step(&mut self) -> bool {
        for side in [Side::A, Side::B] {
            if let Some(p) = self.host(side).kernel.outbox.pop_front() {
                self.kernel_sent(side, p);
                return true;
            }
        }
        if let Some((from, mut p)) = self.wire.pop_front() {
            self.tap.push((from, p.clone()));
            self.tap_times.push(self.now);
            let fate = match &mut self.filter {
                Some(f) => f(from, &mut p),
                None => Fate::Pass,
            };
            if self.gro && matches!(fate, Fate::Pass) {
                p = self.gro_merge(from, p);
            }
            match fate {
                Fate::Pass => self.wire_delivers(from.other(), p),
                Fate::Drop => {}
                Fate::Duplicate => {
                    self.wire_delivers(from.other(), p.clone());
                    self.wire_delivers(from.other(), p);
                }
                Fate::Delay => self.delayed.push_back((from, p)),
                Fate::Late => self.late.push_back((from, p)),
            }
            return true;
        }
        if let Some((from, p)) = self.delayed.pop_front() {
            self.wire_delivers(from.other(), p);
            return true;
        }
        false
    }

    /// Takes the packets right behind `first` on the wire that continue
    /// its data, up to 64 KB in all, and returns them merged with it.
    fn gro_merge(&mut self, from: Side, first: Vec<u8>) -> Vec<u8> {
        let plain = |p: &Packet| {
            !p.tcp.payload.is_empty()
                && [TcpFlags::SYN, TcpFlags::FIN, TcpFlags::RST, TcpFlags::URG]
                    .iter()
                    .all(|f| !p.tcp.flags.contains(*f))
        };
        let Ok(mut merged) = Packet::parse(&first) else {
            return first;
        };
        if !plain(&merged) {
            return first;
        }
        let mut count = 1;
        while let Some((side, next)) = self.wire.front() {
            let Ok(q) = Packet::parse(next).map(Packet::into_owned) else {
                break;
            };
            // GRO ends a run at PSH and never mixes acknowledgments.
            let follows = *side == from
                && plain(&q)
                && !merged.tcp.flags.contains(TcpFlags::PSH)
                && q.tcp.ack == merged.tcp.ack
                && q.tcp.src_port == merged.tcp.src_port
                && q.tcp.seq == merged.tcp.seq.wrapping_add(merged.tcp.payload.len() as u32)
                && merged.tcp.payload.len() + q.tcp.payload.len() <= 64_000;
            if !follows {
                break;
            }
            let (side, next) = self.wire.pop_front().unwrap();
            self.tap.push((side, next));
            self.tap_times.push(self.now);
            merged
                .tcp
                .payload
                .to_mut()
                .extend_from_slice(&q.tcp.payload);
            merged.tcp.ack = q.tcp.ack;
            merged.tcp.window = q.tcp.window;
            merged.tcp.options = q.tcp.options;
            if q.tcp.flags.contains(TcpFlags::PSH) {
                merged.tcp.flags.set(TcpFlags::PSH, true);
            }
            count += 1;
        }
        if count == 1 {
            return first;
        }
        self.gro_merged += count;
        merged.to_bytes().expect("a merged packet emits")
    }

    fn drain_engine(&mut self, side: Side) {
        let now = self.now;
        let h = self.host(side);
        let Some(e) = h.engine.as_mut() else { return };
        let mut to_kernel = Vec::new();
        let mut to_wire = Vec::new();
        while let Some(t) = e.poll_transmit() {
            assert_checksums(&t.packet);
            match t.direction {
                Direction::Outbound => to_wire.push(t.packet),
                Direction::Inbound => to_kernel.push(t.packet),
            }
        }
        while let Some(ev) = e.poll_event() {
            h.events.push(ev);
        }
        let _ = now;
        for p in to_kernel {
            h.kernel.receive(&p);
        }
        for p in to_wire {
            self.wire.push_back((side, p));
        }
    }

    fn kernel_sent(&mut self, side: Side, mut p: Vec<u8>) {
        let now = self.now;
        let h = self.host(side);
        let gso_size = h.kernel.mss;
        let large = Packet::parse(&p).is_ok_and(|q| q.tcp.payload.len() > gso_size);
        let pass = match h.engine.as_mut() {
            None => true,
            Some(e) => {
                let meta = PacketMeta {
                    checksum: Checksum::Verified,
                    large,
                };
                let v = e.handle_packet_with(now, Direction::Outbound, meta, &mut p);
                h.verdicts.push((Direction::Outbound, v));
                v != Verdict::Drop
            }
        };
        if pass {
            assert_checksums(&p);
            if large {
                h.large_out.push(p.len());
                for seg in segment(&p, gso_size) {
                    self.wire.push_back((side, seg));
                }
            } else {
                self.wire.push_back((side, p));
            }
        }
        self.drain_engine(side);
    }

    fn wire_delivers(&mut self, side: Side, mut p: Vec<u8>) {
        let now = self.now;
        let h = self.host(side);
        let pass = match h.engine.as_mut() {
            None => true,
            Some(e) => {
                let v = e.handle_packet(now, Direction::Inbound, &mut p);
                h.verdicts.push((Direction::Inbound, v));
                v != Verdict::Drop
            }
        };
        if pass {
            h.kernel.receive(&p);
        }
        self.drain_engine(side);
    }

    /// Delivers a packet that did not come from the other host (a forgery,
    /// or a third host's) to `to`, through its engine, as if from the wire.
    pub fn forge(&mut self, to: Side, p: Vec<u8>) {
        self.wire_delivers(to, p);
    }

    /// Lets time pass and runs the engines' timers.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        let now = self.now;
        for side in [Side::A, Side::B] {
            if let Some(e) = self.host(side).engine.as_mut() {
                e.handle_timeout(now);
            }
            self.drain_engine(side);
        }
        self.delayed.extend(self.late.drain(..));
    }

    /// The earliest deadline either engine asked for.
    pub fn engine_deadline(&self) -> Option<Instant> {
        [&self.a, &self.b]
            .into_iter()
            .filter_map(|h| h.engine.as_ref()?.poll_timeout())
            .min()
    }

    /// Runs the pair like two live hosts until `done` holds (true) or
    /// `limit` of simulated time has passed (false). Whenever the wire is
    /// quiet, `app` plays both applications (writes, closes); then time
    /// jumps to the next engine deadline or kernel retransmission timeout,
    /// whichever is first. Both kernels retransmit every `kernel_rto`,
    /// with segment sizes that change from one timeout to the next.
    pub fn drive(
        &mut self,
        kernel_rto: Duration,
        limit: Duration,
        mut app: impl FnMut(&mut Sim),
        done: impl Fn(&Sim) -> bool,
    ) -> bool {
        const SEGMENTS: [usize; 4] = [usize::MAX, 700, 333, 1000];
        let end = self.now + limit;
        let mut next_rto = self.now + kernel_rto;
        for round in 0..100_000 {
            self.run();
            app(self);
            self.run();
            if done(self) {
                return true;
            }
            if self.now >= end {
                return false;
            }
            let at = self
                .engine_deadline()
                .map_or(next_rto, |d| d.min(next_rto))
                .clamp(self.now, end);
            self.advance(at - self.now);
            if self.now >= next_rto {
                let seg = SEGMENTS[round % SEGMENTS.len()];
                self.a.kernel.retransmit(seg);
                self.b.kernel.retransmit(seg);
                next_rto = self.now + kernel_rto;
            }
        }
        panic!("timers kept firing without time passing");
    }

    /// Three-way handshake plus key exchange, run to completion.
    pub fn connect(&mut self) {
        self.a.kernel.connect();
        self.run();
    }

    pub fn lookup(&self, side: Side) -> Lookup {
        let h = match side {
            Side::A => &self.a,
            Side::B => &self.b,
        };
        h.engine.as_ref().map_or(Lookup::Unknown, |e| {
            e.lookup(h.kernel.local, h.kernel.remote)
        })
    }

    /// Payload bytes of every wire packet sent by `side`, concatenated.
    pub fn wire_payloads(&self, side: Side) -> Vec<u8> {
        self.tap
            .iter()
            .filter(|(s, _)| *s == side)
            .filter_map(|(_, p)| Packet::parse(p).ok())
            .flat_map(|p| p.tcp.payload.to_vec())
            .collect()
    }
}

/// One line per wire packet, for failing tests.
pub fn describe(p: &[u8]) -> String {
    match Packet::parse(p) {
        Ok(p) => format!(
            "{}->{} flags={:03x} seq={} ack={} win={} len={} opts={:?}",
            p.src(),
            p.dst(),
            p.tcp.flags.bits(),
            p.tcp.seq,
            p.tcp.ack,
            p.tcp.window,
            p.tcp.payload.len(),
            p.tcp.options.iter().map(|o| o.kind()).collect::<Vec<_>>()
        ),
        Err(e) => format!("unparsable: {e}"),
    }
}

impl Sim {
    pub fn dump(&self) {
        for (s, p) in &self.tap {
            eprintln!("{s:?}: {}", describe(p));
        }
        eprintln!("A events: {:?}", self.a.events);
        eprintln!("B events: {:?}", self.b.events);
        eprintln!("A verdicts: {:?}", self.a.verdicts);
        eprintln!("B verdicts: {:?}", self.b.verdicts);
    }
}

impl Sim {
    /// A new connection between the same two hosts (same engines, so the
    /// resumption caches carry over), from client port `port`.
    pub fn next_connection(&mut self, port: u16) {
        let mut a = self.a.kernel.local;
        a.set_port(port);
        let b = self.b.kernel.local;
        self.a.kernel = Kernel::new(a, b, 0x2000_0000u32.wrapping_add(u32::from(port)));
        self.b.kernel = Kernel::new(b, a, 0x3000_0000u32.wrapping_add(u32::from(port)));
        self.tap.clear();
        self.tap_times.clear();
        self.a.events.clear();
        self.b.events.clear();
    }
}

/// Splits a whole IPv4 packet into two fragments, the first carrying
/// `first_len` bytes (a multiple of 8) of the IP payload.
pub fn fragment_v4(packet: &[u8], first_len: usize) -> (Vec<u8>, Vec<u8>) {
    assert_eq!(first_len % 8, 0, "fragment data is cut at 8-byte units");
    let hl = usize::from(packet[0] & 0x0f) * 4;
    let (header, payload) = packet.split_at(hl);
    let make = |data: &[u8], offset_units: usize, more: bool| {
        let mut p = header.to_vec();
        p.extend_from_slice(data);
        let total = u16::try_from(p.len()).unwrap();
        p[2..4].copy_from_slice(&total.to_be_bytes());
        let ff = u16::try_from(offset_units).unwrap() | if more { 0x2000 } else { 0 };
        p[6..8].copy_from_slice(&ff.to_be_bytes());
        p[10..12].copy_from_slice(&[0, 0]);
        let c = checksum::of(&p[..hl]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    };
    (
        make(&payload[..first_len], 0, true),
        make(&payload[first_len..], first_len / 8, false),
    )
}

/// Splits a whole IPv6 packet (no extension headers) into two fragments
/// with fragment headers, the first carrying `first_len` bytes (a multiple
/// of 8) of the TCP segment.
pub fn fragment_v6(packet: &[u8], first_len: usize) -> (Vec<u8>, Vec<u8>) {
    assert_eq!(first_len % 8, 0, "fragment data is cut at 8-byte units");
    let (header, payload) = packet.split_at(40);
    let next = header[6];
    let make = |data: &[u8], offset_units: usize, more: bool| {
        let mut p = header.to_vec();
        p[6] = 44;
        let off = (u16::try_from(offset_units).unwrap() << 3) | u16::from(more);
        p.extend_from_slice(&[next, 0]);
        p.extend_from_slice(&off.to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend_from_slice(data);
        let plen = u16::try_from(p.len() - 40).unwrap();
        p[4..6].copy_from_slice(&plen.to_be_bytes());
        p
    };
    (
        make(&payload[..first_len], 0, true),
        make(&payload[first_len..], first_len / 8, false),
    )
}

impl Sim {
    /// The bytes `side` put on the wire, in stream order (offsets from its
    /// ISN+1), from every packet it sent; `None` where nothing was seen.
    pub fn wire_stream(&self, side: Side) -> Vec<Option<u8>> {
        let h = match side {
            Side::A => &self.a,
            Side::B => &self.b,
        };
        let base = h.kernel.isn.wrapping_add(1);
        let mut stream: Vec<Option<u8>> = Vec::new();
        for p in self
            .tap
            .iter()
            .filter(|(s, _)| *s == side)
            .filter_map(|(_, p)| Packet::parse(p).ok())
            .filter(|p| !p.tcp.flags.contains(TcpFlags::SYN))
        {
            let off = p.tcp.seq.wrapping_sub(base) as usize;
            let end = off + p.tcp.payload.len();
            if stream.len() < end {
                stream.resize(end, None);
            }
            for (slot, b) in stream[off..end].iter_mut().zip(&p.tcp.payload) {
                *slot = Some(*b);
            }
        }
        stream
    }

    /// The control byte of every frame `side` sent, in stream order: the
    /// stream starts with an Init message whose bytes 4..8 give its length
    /// (RFC 8548 section 4.3), then frames `control | clen(2) | clen bytes`.
    pub fn wire_frame_controls(&self, side: Side) -> Vec<u8> {
        let stream: Vec<u8> = self
            .wire_stream(side)
            .into_iter()
            .map_while(|b| b)
            .collect();
        let init_len = u32::from_be_bytes(stream[4..8].try_into().unwrap()) as usize;
        let mut at = init_len;
        let mut controls = Vec::new();
        while let Some(h) = stream.get(at..at + 3) {
            let clen = usize::from(u16::from_be_bytes([h[1], h[2]]));
            if at + 3 + clen > stream.len() {
                break;
            }
            controls.push(h[0]);
            at += 3 + clen;
        }
        controls
    }
}
