//! The data path of an encrypted connection: every packet rewritten
//! between the local and wire byte spaces by [`OutStream`] and
//! [`InStream`], Init messages sent and retransmitted, keys installed.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tcpcrypt_proto::eno::NON_SYN_OPTION;
use tcpcrypt_proto::frame::{FRAME_OVERHEAD, MAX_FRAME_DATA};
use tcpcrypt_proto::handshake::{AwaitInit1, AwaitInit2, Step};
use tcpcrypt_proto::session::Session;

use super::{
    Ctx, DEFAULT_MSS, MAX_LOCAL_DELIVERY, SynFacts, add_option, emit_gathered_into, emit_into,
    eno_options, push_transmit,
};
use crate::api::{Direction, Event, KeylogSecrets, MAX_VERDICT_PACKET, SessionInfo, Verdict};
use crate::error::EngineError;
use crate::inbound::{InFrame, InStream, OooLimits};
use crate::outbound::{OutPlan, OutStream};
use crate::wire::tcp::{kind, options_len};
use crate::wire::{IpLayer, Packet, TcpFlags, TcpOption};

/// The key exchange in progress.
pub(super) enum Pending {
    A(AwaitInit2),
    B(AwaitInit1),
}

/// Least time between two challenge ACKs of one connection (Linux's
/// `tcp_invalid_ratelimit` default): forged segments must not turn us into
/// a packet amplifier.
const CHALLENGE_ACK_INTERVAL: Duration = Duration::from_millis(500);

/// Bytes past the right edge of the window we advertised that we still
/// take: the scaled window field rounds down.
const RECV_WINDOW_SLACK: u64 = 4096;

#[derive(Debug, Clone, Copy)]
pub(super) struct InitTimer {
    pub(super) deadline: Instant,
    pub(super) rto: Duration,
    pub(super) tries: u32,
}

pub(super) struct Crypt {
    /// Our SYN-form option, repeated on a retransmitted SYN-ACK.
    pub(super) local_option: Vec<u8>,
    pub(super) peer_ip: IpAddr,
    pub(super) pending: Option<Pending>,
    pub(super) out: OutStream,
    pub(super) inb: InStream,
    pub(super) info: Option<SessionInfo>,
    pub(super) facts: SynFacts,
    pub(super) kernel_max_payload: usize,
    /// A keeps sending `45 02` until it receives a segment without SYN.
    pub(super) eno_on_outbound: bool,
    pub(super) out_ip: IpLayer,
    pub(super) in_ip: IpLayer,
    /// Last kernel TSval and last peer TSval, for packets we make.
    pub(super) ts: Option<(u32, u32)>,
    pub(super) last_wire_window: u16,
    /// Last (ACK, window) given to the kernel in a rewritten packet.
    pub(super) last_kernel_ack: Option<(u32, u16)>,
    pub(super) init_timer: Option<InitTimer>,
    /// Frames that failed authentication since the last one that passed,
    /// and when the first of them failed.
    pub(super) auth_failures: u32,
    pub(super) auth_failing_since: Option<Instant>,
    /// (local port, remote port).
    pub(super) ports: (u16, u16),
    /// The furthest wire offset our advertised windows ever allowed the
    /// peer to send up to (a TCP receiver never moves it back).
    pub(super) adv_right: u64,
    /// The largest window the peer advertised, in bytes (RFC 5961 section
    /// 5.2 accepts ACKs this far below the acknowledged point).
    pub(super) peer_max_window: u64,
    pub(super) last_challenge: Option<Instant>,
    /// Largest payload a wire packet may carry, once a router reported
    /// the path narrower than the peer's MSS.
    pub(super) path_payload_cap: Option<usize>,
}

impl Crypt {
    /// A packet made by the engine; `inbound` ones go to the kernel.
    pub(super) fn make_packet(
        &self,
        ip: &IpLayer,
        inbound: bool,
        seq: u32,
        ack: u32,
        flags: TcpFlags,
        payload: Vec<u8>,
    ) -> Packet<'static> {
        let (l, r) = self.ports;
        let (src_port, dst_port) = if inbound { (r, l) } else { (l, r) };
        let mut options = Vec::new();
        if let Some((kernel, peer)) = self.ts {
            let (tsval, tsecr) = if inbound {
                (peer, kernel)
            } else {
                (kernel, peer)
            };
            options.push(TcpOption::Nop);
            options.push(TcpOption::Nop);
            options.push(TcpOption::Timestamps { tsval, tsecr });
        }
        if !inbound && self.eno_on_outbound {
            options.push(TcpOption::Other {
                kind: kind::ENO,
                data: Vec::new(),
            });
        }
        Packet {
            ip: ip.clone(),
            tcp: crate::wire::TcpRepr {
                src_port,
                dst_port,
                seq,
                ack,
                flags,
                window: if inbound {
                    u16::MAX
                } else {
                    self.last_wire_window
                },
                urgent: 0,
                options,
                payload: payload.into(),
            },
        }
    }

    /// A packet to the peer carrying wire bytes from offset `start`.
    pub(super) fn wire_packet(
        &self,
        start: u64,
        payload: Vec<u8>,
        extra: TcpFlags,
        fin: bool,
    ) -> Packet<'static> {
        let mut flags = TcpFlags::ACK | extra;
        flags.set(TcpFlags::FIN, fin);
        self.make_packet(
            &self.out_ip,
            false,
            self.out.space().seq(start as i64),
            self.inb.space().seq(self.inb.wire_ack()),
            flags,
            payload,
        )
    }

    /// A pure ACK to the peer with our current wire ACK.
    pub(super) fn wire_ack_packet(&self) -> Packet<'static> {
        let seq = self.out.wire_next() + u64::from(self.out.fin().is_some());
        self.wire_packet(seq, Vec::new(), TcpFlags::default(), false)
    }

    /// Sends our current wire ACK in answer to a segment that failed the
    /// checks, at most once per [`CHALLENGE_ACK_INTERVAL`].
    pub(super) fn challenge_ack(&mut self, ctx: &mut Ctx<'_>) {
        if self
            .last_challenge
            .is_some_and(|t| ctx.now < t + CHALLENGE_ACK_INTERVAL)
        {
            return;
        }
        self.last_challenge = Some(ctx.now);
        ctx.stats.challenge_acks += 1;
        self.send_ack(ctx);
    }

    /// Answers a segment that reaches the connection after it was aborted
    /// as a closed TCP would (RFC 9293 section 3.10.7.1): a reset whose
    /// sequence number is the segment's acknowledgment. Our abort's own
    /// reset may have been lost, or may lie beyond what the peer received
    /// (data before it was lost) and only drawn a challenge ACK; this one
    /// sits where the peer's checks accept it. Rate-limited like challenge
    /// ACKs, so forged segments cannot make us an amplifier.
    pub(super) fn answer_after_abort(&mut self, ctx: &mut Ctx<'_>, tcp: &crate::wire::TcpRepr) {
        if !tcp.flags.contains(TcpFlags::ACK)
            || self
                .last_challenge
                .is_some_and(|t| ctx.now < t + CHALLENGE_ACK_INTERVAL)
        {
            return;
        }
        self.last_challenge = Some(ctx.now);
        let p = self.make_packet(&self.out_ip, false, tcp.ack, 0, TcpFlags::RST, Vec::new());
        push_transmit(ctx, Direction::Outbound, &p);
    }

    /// The wire offset the peer may send up to: the right edge of the
    /// window we advertised.
    pub(super) fn recv_right(&self) -> u64 {
        let (l_ws, _) = self.facts.scales();
        let now = u64::try_from(self.inb.wire_ack()).unwrap_or(0)
            + (u64::from(self.last_wire_window) << l_ws);
        let rcv_nxt = u64::try_from(self.inb.rcv_nxt()).unwrap_or(0);
        self.adv_right.max(now).max(rcv_nxt) + RECV_WINDOW_SLACK.max(1 << l_ws)
    }

    /// The checks a receiving TCP applies before a segment may change
    /// anything (RFC 793 section 3.9 and RFC 5961), in the wire sequence
    /// space that only we see on this host: the kernel would accept
    /// whatever we rewrite, so a forged segment must stop here. Returns
    /// whether the segment may go on.
    pub(super) fn screen(&mut self, ctx: &mut Ctx<'_>, tcp: &crate::wire::TcpRepr) -> bool {
        let flags = tcp.flags;
        let rcv_nxt = self.inb.rcv_nxt();
        let acked_by_us = self.inb.wire_ack();
        let right = i64::try_from(self.recv_right()).unwrap_or(i64::MAX);
        let seq = self.inb.space().offset(tcp.seq, rcv_nxt);
        if flags.contains(TcpFlags::RST) {
            // Exactly the next expected byte, as the peer's TCP would send
            // it, or the acknowledgment we sent last (a reset answering our
            // challenge ACK carries that).
            if seq == rcv_nxt || seq == acked_by_us {
                return true;
            }
            if seq > acked_by_us && seq < right {
                self.challenge_ack(ctx);
            }
            return false;
        }
        if !flags.contains(TcpFlags::ACK) {
            return false;
        }
        let acked = self
            .out
            .space()
            .offset(tcp.ack, self.out.wire_acked() as i64);
        let snd_nxt = self.out.wire_next() as i64 + i64::from(self.out.fin().is_some());
        if acked > snd_nxt {
            // Acknowledges bytes we never sent: discarded, data and all.
            return false;
        }
        if acked < self.out.wire_acked() as i64 - self.peer_max_window as i64 {
            self.challenge_ack(ctx);
            return false;
        }
        let len = tcp.payload.len() + usize::from(flags.contains(TcpFlags::FIN));
        if len > 0 && seq >= right {
            self.challenge_ack(ctx);
            return false;
        }
        if seq + (len as i64) < acked_by_us {
            // Wholly below what we acknowledged: a stale duplicate or a
            // keepalive probe. TCP answers with its ACK (at once for data,
            // rate-limited otherwise) and ignores the segment's own ACK.
            if len > 0 {
                self.send_ack(ctx);
            } else {
                self.challenge_ack(ctx);
            }
            return false;
        }
        true
    }

    /// Our current wire ACK to the peer, now.
    fn send_ack(&mut self, ctx: &mut Ctx<'_>) {
        let p = self.wire_ack_packet();
        push_transmit(ctx, Direction::Outbound, &p);
    }

    /// Option bytes of the packets the engine makes (timestamps, ENO).
    pub(super) fn made_options_len(&self) -> usize {
        12 * usize::from(self.ts.is_some()) + 4 * usize::from(self.eno_on_outbound)
    }

    /// Most payload the peer's MSS and the path (once a router reported
    /// it) let one wire packet with `options_len` option bytes carry.
    fn peer_payload_limit(&self, options_len: usize) -> usize {
        self.facts
            .peer_mss
            .map_or(DEFAULT_MSS, usize::from)
            .saturating_sub(options_len)
            .min(self.path_payload_cap.unwrap_or(usize::MAX))
    }

    /// Largest payload one wire packet may carry.
    pub(super) fn wire_payload_limit(&self, options_len: usize) -> usize {
        (self.kernel_max_payload + FRAME_OVERHEAD)
            .min(self.peer_payload_limit(options_len))
            .max(FRAME_OVERHEAD + 1)
    }

    /// Data of one frame that fills a wire packet by itself.
    fn large_frame_limit(&self, options_len: usize) -> usize {
        self.peer_payload_limit(options_len)
            .saturating_sub(FRAME_OVERHEAD)
            .max(1)
    }

    /// See [`super::Connection::on_too_big`]. From now on no wire packet
    /// carries more than the path takes: stored frames sealed for the
    /// wider path are resent cut to the new limit, and a new frame whose
    /// segment filled the path is cut in two (frames may span segments).
    ///
    /// The MTU given to the kernel stays the router's: the kernel keeps it
    /// in its route cache and checks our rewritten packets against it too,
    /// so telling it less (to make room for the frame overhead) would have
    /// it refuse the very packets that fit the path.
    pub(super) fn on_too_big(&mut self, report: &crate::wire::icmp::TooBig) -> Option<(u32, u32)> {
        let wire = self
            .out
            .space()
            .offset(report.quoted_seq, self.out.wire_acked() as i64);
        if wire < self.out.wire_acked() as i64 || wire > self.out.wire_next() as i64 {
            return None;
        }
        let mtu = report.mtu.max(report.kernel_floor()) as usize;
        let headers = report.quoted_ip_header_len + 20 + self.made_options_len();
        let cap = mtu.saturating_sub(headers).max(FRAME_OVERHEAD + 1);
        self.path_payload_cap = Some(self.path_payload_cap.map_or(cap, |c| c.min(cap)));
        let local = self.out.local_offset_for_wire(wire as u64);
        Some((report.mtu, self.out.space().seq(local as i64)))
    }

    pub(super) fn start_init_timer(&mut self, ctx: &Ctx<'_>) {
        self.init_timer = Some(InitTimer {
            deadline: ctx.now + ctx.config.init_rto,
            rto: ctx.config.init_rto,
            tries: 0,
        });
    }

    /// Puts wire bytes of a plan on the wire as packets the engine makes.
    pub(super) fn inject_plan(&self, ctx: &mut Ctx<'_>, plan: OutPlan) {
        let OutPlan::Send { start, frames, fin } = plan else {
            return;
        };
        let bytes = self.out.joined(&frames);
        let limit = self.wire_payload_limit(self.made_options_len());
        let n = bytes.len().div_ceil(limit).max(1);
        for i in 0..n {
            let chunk = bytes
                .get(i * limit..((i + 1) * limit).min(bytes.len()))
                .unwrap_or_default()
                .to_vec();
            let last = i + 1 == n;
            let p = self.wire_packet(
                start + (i * limit) as u64,
                chunk,
                if last {
                    TcpFlags::PSH
                } else {
                    TcpFlags::default()
                },
                fin && last,
            );
            push_transmit(ctx, Direction::Outbound, &p);
        }
    }

    /// The kernel's receive window, mapped to wire bytes: frames need a
    /// little more room than their plaintext.
    pub(super) fn map_window_out(&self, field: u16) -> u16 {
        let (l_ws, _) = self.facts.scales();
        let bytes = u64::from(field) << l_ws;
        if bytes == 0 {
            return 0;
        }
        let wire = bytes + (bytes / 512 + 1) * FRAME_OVERHEAD as u64;
        u16::try_from(wire >> l_ws).unwrap_or(u16::MAX)
    }

    /// The peer's receive window, mapped to local bytes the kernel may
    /// send: what still fits on the wire past what is in flight, less the
    /// frame overhead.
    pub(super) fn map_window_in(&self, field: u16) -> u16 {
        let (_, p_ws) = self.facts.scales();
        let bytes = u64::from(field) << p_ws;
        let wire_right = self.out.wire_acked() + bytes;
        let avail = wire_right.saturating_sub(self.out.wire_next());
        let mss = self.kernel_max_payload.max(1) as u64;
        let local_avail = avail * mss / (mss + FRAME_OVERHEAD as u64);
        let local_right = self.out.local_next() + local_avail;
        let local_ack = u64::try_from(self.out.local_ack()).unwrap_or(0);
        let win = local_right.saturating_sub(local_ack);
        u16::try_from(win >> p_ws).unwrap_or(u16::MAX)
    }

    /// ACK, window, SACK and URG of a packet from the peer, for the kernel.
    pub(super) fn map_inbound_control(&mut self, pkt: &mut Packet) {
        let tcp = &mut pkt.tcp;
        if tcp.flags.contains(TcpFlags::ACK) {
            let l = self.out.on_wire_ack(tcp.ack);
            tcp.ack = self.out.space().seq(l);
        }
        tcp.window = self.map_window_in(tcp.window);
        let space = self.out.space();
        let out = &self.out;
        for o in &mut tcp.options {
            if let TcpOption::Sack(blocks) = o {
                *blocks = blocks
                    .iter()
                    .filter_map(|(l, r)| out.map_sack(*l, *r, &space))
                    .collect();
            }
        }
        tcp.options
            .retain(|o| !matches!(o, TcpOption::Sack(b) if b.is_empty()));
        // URG is only believed inside an authenticated frame.
        tcp.flags.set(TcpFlags::URG, false);
        tcp.urgent = 0;
    }

    pub(super) fn outbound(
        &mut self,
        ctx: &mut Ctx<'_>,
        pkt: &mut Packet,
        buf: &mut Vec<u8>,
    ) -> Result<Verdict, EngineError> {
        self.out_ip = pkt.ip.clone();
        let tcp = &mut pkt.tcp;
        if let Some((tsval, _)) = tcp.timestamps() {
            let peer = self.ts.map_or(0, |t| t.1);
            self.ts = Some((tsval, peer));
        }
        let mut acked_wire = None;
        if tcp.flags.contains(TcpFlags::ACK) {
            let w = self.inb.on_local_ack(tcp.ack);
            tcp.ack = self.inb.space().seq(w);
            acked_wire = Some(w);
        }
        tcp.window = self.map_window_out(tcp.window);
        self.last_wire_window = tcp.window;
        if let Some(w) = acked_wire {
            let (l_ws, _) = self.facts.scales();
            let right = u64::try_from(w).unwrap_or(0) + (u64::from(tcp.window) << l_ws);
            self.adv_right = self.adv_right.max(right);
        }
        // The kernel only ever holds in-order data from us, so its SACK
        // blocks can only be D-SACKs of local ranges: meaningless on the wire.
        tcp.options.retain(|o| !matches!(o, TcpOption::Sack(_)));
        if self.eno_on_outbound && eno_options(tcp).is_empty() {
            add_option(tcp, &NON_SYN_OPTION);
        }
        let seq = tcp.seq;
        let local = self.out.space();
        let urgent_end = (tcp.flags.contains(TcpFlags::URG) && tcp.urgent > 0).then(|| {
            let at = local.offset(seq, self.out.local_next() as i64) + i64::from(tcp.urgent);
            u64::try_from(at).unwrap_or(0)
        });
        tcp.flags.set(TcpFlags::URG, false);
        tcp.urgent = 0;
        let control_seq = local.seq(self.out.wire_offset_for_control(seq));
        if tcp.flags.contains(TcpFlags::RST) {
            tcp.seq = control_seq;
            tcp.payload.clear();
            return Ok(emit_into(pkt, buf));
        }
        let payload = std::mem::take(&mut tcp.payload);
        let fin = tcp.flags.contains(TcpFlags::FIN);
        let options = options_len(&tcp.options);
        let frame_limit = if ctx.large_segment {
            // One frame per wire packet, so that when the kernel later
            // resends some part of this segment (with its own boundaries),
            // the frames that part touches are few and small.
            let per_packet = self.large_frame_limit(options);
            // The kernel cuts its large segments at its MSS, which is the
            // clamped one we gave it.
            self.kernel_max_payload = self.kernel_max_payload.max(per_packet);
            per_packet
        } else {
            self.kernel_max_payload = self.kernel_max_payload.max(payload.len());
            MAX_FRAME_DATA
        };
        let plan = self
            .out
            .on_kernel_segment(seq, &payload, fin, urgent_end, frame_limit)?;
        match plan {
            OutPlan::Empty => {
                tcp.seq = control_seq;
                Ok(emit_into(pkt, buf))
            }
            OutPlan::Held => {
                // Keep the ACK it carries; the data waits for the keys.
                tcp.seq = control_seq;
                tcp.flags.set(TcpFlags::FIN, false);
                tcp.flags.set(TcpFlags::PSH, false);
                Ok(emit_into(pkt, buf))
            }
            OutPlan::AlreadyAcked => {
                // The peer has it all; a segment just below its ACK point
                // makes it answer with its current ACK, which we map.
                tcp.seq = local.seq(self.out.wire_acked() as i64 - 1);
                tcp.flags.set(TcpFlags::FIN, false);
                tcp.flags.set(TcpFlags::PSH, false);
                Ok(emit_into(pkt, buf))
            }
            OutPlan::Send { start, frames, fin } => {
                let limit = self.wire_payload_limit(options);
                // The kernel cuts a large segment we rewrote at its MSS,
                // so it may carry as much as a verdict holds; what does
                // not fit follows in packets we make.
                let first_len = if ctx.large_segment {
                    MAX_VERDICT_PACKET
                        .saturating_sub(pkt.header_len())
                        .max(limit)
                } else {
                    limit
                };
                let psh = pkt.tcp.flags.contains(TcpFlags::PSH);
                let total: usize = self.out.frame_bytes(&frames).map(<[u8]>::len).sum();
                if total <= first_len {
                    // All of it in this packet, the common case: the
                    // stored frames are written straight into it.
                    let tcp = &mut pkt.tcp;
                    tcp.seq = local.seq(start as i64);
                    tcp.payload.clear();
                    tcp.flags.set(TcpFlags::FIN, fin);
                    tcp.flags.set(TcpFlags::PSH, psh || fin);
                    return Ok(emit_gathered_into(pkt, self.out.frame_bytes(&frames), buf));
                }
                let bytes = self.out.joined(&frames);
                let mut verdict = Verdict::Drop;
                let mut from = 0;
                while from < bytes.len() {
                    let to = (from + if from == 0 { first_len } else { limit }).min(bytes.len());
                    let mut p = pkt.clone();
                    p.tcp.seq = local.seq((start + from as u64) as i64);
                    p.tcp.payload = bytes.get(from..to).unwrap_or_default().into();
                    let last = to == bytes.len();
                    p.tcp.flags.set(TcpFlags::FIN, fin && last);
                    p.tcp.flags.set(TcpFlags::PSH, last && (psh || fin));
                    if from == 0 {
                        verdict = emit_into(&p, buf);
                    } else {
                        push_transmit(ctx, Direction::Outbound, &p);
                    }
                    from = to;
                }
                Ok(verdict)
            }
        }
    }

    pub(super) fn inbound(
        &mut self,
        ctx: &mut Ctx<'_>,
        pkt: &mut Packet,
        buf: &mut Vec<u8>,
    ) -> Result<Verdict, EngineError> {
        self.in_ip = pkt.ip.clone();
        // A segment without SYN arrived: no more ENO on ours.
        self.eno_on_outbound = false;
        if let Some((tsval, _)) = pkt.tcp.timestamps() {
            let kernel = self.ts.map_or(0, |t| t.0);
            self.ts = Some((kernel, tsval));
        }
        let (_, p_ws) = self.facts.scales();
        self.peer_max_window = self.peer_max_window.max(u64::from(pkt.tcp.window) << p_ws);
        let seq = pkt.tcp.seq;
        let mut payload = std::mem::take(&mut pkt.tcp.payload);
        let mut wire_fin = pkt.tcp.flags.contains(TcpFlags::FIN);
        let right = self.recv_right();
        let w0 = self.inb.space().offset(seq, self.inb.consumed() as i64);
        if let Ok(room) = usize::try_from(right as i64 - w0)
            && payload.len() > room
        {
            // What lies beyond the window is not ours to keep yet.
            payload.truncate(room);
            wire_fin = false;
            pkt.tcp.flags.set(TcpFlags::FIN, false);
        }
        self.map_inbound_control(pkt);
        let wire_off = self.inb.space().offset(seq, self.inb.consumed() as i64);
        let fin_at = wire_off + payload.len() as i64;
        if payload.is_empty() && !wire_fin && wire_off < self.inb.consumed() as i64 {
            // A keepalive probe: only an ACK from us can answer it, since
            // the kernel's sequence space is not the wire's.
            let p = self.wire_ack_packet();
            push_transmit(ctx, Direction::Outbound, &p);
            let tcp = &mut pkt.tcp;
            tcp.seq = self.inb.space().seq(self.inb.local_next() as i64);
            return Ok(emit_into(pkt, buf));
        }
        let limits = OooLimits {
            right,
            max_pieces: ctx.config.max_out_of_order_pieces,
            budget: ctx.ooo_budget,
        };
        let mut outcome = self.inb.on_segment(seq, &payload, &limits)?;
        if outcome.refused_ahead {
            ctx.stats.out_of_order_refused += 1;
        }
        let mut frames = std::mem::take(&mut outcome.frames);
        if !frames.is_empty() {
            self.auth_failures = 0;
            self.auth_failing_since = None;
        }
        if let Some(init) = outcome.init.take() {
            frames.extend(self.complete_keying(ctx, &init)?);
        }
        for g in frames.iter().filter_map(|f| f.rekey_generation) {
            let answer = self.out.writer_mut().map(|w| w.on_peer_generation(g));
            if answer == Some(tcpcrypt_proto::frame::RekeyResponse::SendFrameNow) {
                let plan = self.out.push_empty_frame()?;
                self.inject_plan(ctx, plan);
            }
        }
        if outcome.stored_ahead {
            // Data beyond a gap: tell the peer at once (duplicate ACK, with
            // a SACK block when both SYNs allowed it) so it retransmits the
            // missing part without waiting for a timeout. The kernel cannot:
            // it never sees data out of order.
            let mut p = self.wire_ack_packet();
            if self.facts.local_sack_ok
                && self.facts.peer_sack_ok
                && let Some(block) = self.inb.sack_block()
            {
                p.tcp.options.push(TcpOption::Sack(vec![block]));
            }
            push_transmit(ctx, Direction::Outbound, &p);
        }
        if outcome.duplicate && frames.is_empty() {
            frames = self.inb.undelivered_in(seq, payload.len());
            if frames.is_empty() && !wire_fin {
                // The kernel has all of it: answer the retransmission
                // ourselves so the peer learns our ACK.
                let p = self.wire_ack_packet();
                push_transmit(ctx, Direction::Outbound, &p);
                return Ok(Verdict::Drop);
            }
        }
        let deliver_fin = wire_fin && self.inb.fin().is_some_and(|f| f.wire as i64 == fin_at);
        let tcp = &mut pkt.tcp;
        tcp.flags.set(TcpFlags::FIN, deliver_fin);
        let first_local = match frames.first() {
            Some(f) => f.local.start as i64,
            // The FIN itself sits at the end of the delivered plaintext.
            None if deliver_fin => self.inb.local_next() as i64,
            None => self.inb.local_offset_for_control(seq),
        };
        tcp.seq = self.inb.space().seq(first_local);
        if frames.is_empty() && !deliver_fin {
            let key = (tcp.ack, tcp.window);
            if (!payload.is_empty() || wire_fin) && self.last_kernel_ack == Some(key) {
                return Ok(Verdict::Drop);
            }
            tcp.flags.set(TcpFlags::PSH, false);
            self.last_kernel_ack = Some(key);
            return Ok(emit_into(pkt, buf));
        }
        self.last_kernel_ack = Some((tcp.ack, tcp.window));
        Ok(self.deliver(ctx, pkt, &frames, deliver_fin, buf))
    }

    /// Rewrites `pkt` to carry the plaintext of `frames` (contiguous, in
    /// order) to the kernel, splitting only if it exceeds one IP packet.
    pub(super) fn deliver(
        &self,
        ctx: &mut Ctx<'_>,
        pkt: &mut Packet,
        frames: &[InFrame],
        fin: bool,
        buf: &mut Vec<u8>,
    ) -> Verdict {
        let first_local = frames
            .first()
            .map_or(self.inb.local_next(), |f| f.local.start);
        let total: usize = frames.iter().map(|f| f.data.len()).sum();
        let urgent_end = frames
            .iter()
            .rev()
            .find_map(|f| Some(f.local.start + u64::from(f.urgent?) + 1));
        let n = total.div_ceil(MAX_LOCAL_DELIVERY).max(1);
        let urgent_at = |p: &mut Packet, start: u64| {
            if let Some(end) = urgent_end
                && end > start
                && let Ok(ptr) = u16::try_from(end - start)
            {
                p.tcp.flags.set(TcpFlags::URG, true);
                p.tcp.urgent = ptr;
            }
        };
        if n == 1 {
            // One packet, the common case: the frames' plaintext is written
            // straight into it.
            pkt.tcp.seq = self.inb.space().seq(first_local as i64);
            pkt.tcp.payload.clear();
            pkt.tcp.flags.set(TcpFlags::FIN, fin);
            pkt.tcp.flags.set(TcpFlags::PSH, true);
            urgent_at(pkt, first_local);
            return emit_gathered_into(pkt, frames.iter().map(|f| f.data.as_slice()), buf);
        }
        let mut data = Vec::with_capacity(total);
        for f in frames {
            data.extend_from_slice(&f.data);
        }
        let mut verdict = Verdict::Drop;
        for i in 0..n {
            let mut p = pkt.clone();
            let from = i * MAX_LOCAL_DELIVERY;
            let to = (from + MAX_LOCAL_DELIVERY).min(data.len());
            let start = first_local + from as u64;
            p.tcp.seq = self.inb.space().seq(start as i64);
            p.tcp.payload = data.get(from..to).unwrap_or_default().into();
            let last = i + 1 == n;
            p.tcp.flags.set(TcpFlags::FIN, fin && last);
            p.tcp.flags.set(TcpFlags::PSH, last);
            urgent_at(&mut p, start);
            if i == 0 {
                verdict = emit_into(&p, buf);
            } else {
                push_transmit(ctx, Direction::Inbound, &p);
            }
        }
        verdict
    }

    /// The peer's Init message is complete: derive the keys, send Init2
    /// (host B), release held data, and authenticate frames that came early.
    pub(super) fn complete_keying(
        &mut self,
        ctx: &mut Ctx<'_>,
        peer_init: &[u8],
    ) -> Result<Vec<InFrame>, EngineError> {
        let keying_err =
            |e: tcpcrypt_proto::handshake::HandshakeError| EngineError::Keying(e.to_string());
        let step = match self.pending.take() {
            Some(Pending::A(st)) => match st.feed(peer_init).map_err(keying_err)? {
                Step::Established { session, send, .. } => Some((session, send)),
                Step::NeedMore(_) => None,
            },
            Some(Pending::B(st)) => match st.feed(peer_init).map_err(keying_err)? {
                Step::Established { session, send, .. } => Some((session, send)),
                Step::NeedMore(_) => None,
            },
            None => None,
        };
        let Some((session, send)) = step else {
            return Err(EngineError::Keying(
                "the Init message did not complete the key exchange".to_string(),
            ));
        };
        if send.is_empty() {
            // Host A: nothing of the kernel's will acknowledge Init2.
            let p = self.wire_ack_packet();
            push_transmit(ctx, Direction::Outbound, &p);
        } else {
            // Host B: Init2 goes out before any frame.
            self.out.set_init(send.clone());
            let p = self.wire_packet(0, send, TcpFlags::PSH, false);
            push_transmit(ctx, Direction::Outbound, &p);
            self.start_init_timer(ctx);
        }
        self.install_session(ctx, *session, peer_init.len() as u64)
    }

    /// Installs an established session: caches its resumption secret,
    /// frames held data, authenticates frames that arrived early.
    pub(super) fn install_session(
        &mut self,
        ctx: &mut Ctx<'_>,
        mut session: Session,
        peer_first_frame: u64,
    ) -> Result<Vec<InFrame>, EngineError> {
        ctx.host.on_established(&self.peer_ip, &mut session);
        let keylog = KeylogSecrets {
            ss: session.secrets().session_secret().as_bytes().to_vec(),
            es: session.secrets().ephemeral_secret().map(<[u8]>::to_vec),
        };
        let (info, _, writer, reader) = session.into_parts();
        let chunk = self
            .wire_payload_limit(self.made_options_len())
            .saturating_sub(FRAME_OVERHEAD)
            .max(1);
        if let Some(plan) = self.out.set_writer(writer, chunk)? {
            self.inject_plan(ctx, plan);
        }
        let early = self.inb.set_reader(reader, peer_first_frame)?;
        self.info = Some(info);
        ctx.events.push_back(Event::Established {
            local: SocketAddr::new(self.out_ip.src, self.ports.0),
            remote: SocketAddr::new(self.out_ip.dst, self.ports.1),
            info,
            keylog,
        });
        Ok(early.frames)
    }
}
