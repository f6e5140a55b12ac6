//! One tracked connection: the ENO handshake, then either plain TCP
//! (packets untouched) or tcpcrypt (the data path in [`crypt`]).

mod crypt;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use tcpcrypt_proto::eno::NON_SYN_OPTION;
use tcpcrypt_proto::frame::FRAME_OVERHEAD;
use tcpcrypt_proto::handshake::{ActiveOpen, ConnectionPolicy, Handshake, Host};
use tcpcrypt_proto::init::InitKind;
use tcpcrypt_proto::{Rng, Role};

use crypt::{Crypt, Pending};

use crate::api::{
    ConnPhase, Direction, EngineConfig, EngineStats, Event, Lookup, PlainReason, Transmit, Verdict,
};
use crate::error::EngineError;
use crate::inbound::InStream;
use crate::outbound::OutStream;
use crate::wire::tcp::{MAX_OPTIONS_LEN, kind, options_len};
use crate::wire::{Packet, TcpFlags, TcpOption};

/// Largest plaintext put into one packet for the local stack: the packet
/// stays within what a verdict carries with the longest IP and TCP
/// headers, so a merged (GRO) wire segment is delivered as one packet.
const MAX_LOCAL_DELIVERY: usize = crate::api::MAX_VERDICT_PACKET - 60 - 60;
/// MSS assumed when the peer's SYN names none (RFC 9293 section 3.7.1).
const DEFAULT_MSS: usize = 536;
/// Never clamp an MSS below this.
const MIN_CLAMPED_MSS: u16 = 88;
/// Failures a run must hold before `auth_failure_timeout` ends it: one slow
/// failure is a corrupted segment, several in a row with none passing is
/// someone rewriting the stream.
const MIN_TIMED_AUTH_FAILURES: u32 = 4;

/// Everything a connection needs from the engine while handling a packet.
pub struct Ctx<'a> {
    pub config: &'a EngineConfig,
    /// Protocol settings and the resumption cache, keyed by peer address.
    pub host: &'a mut Host<IpAddr>,
    pub rng: &'a mut dyn Rng,
    pub now: Instant,
    pub transmits: &'a mut VecDeque<Transmit>,
    pub events: &'a mut VecDeque<Event>,
    pub stats: &'a mut EngineStats,
    /// Out-of-order bytes this connection may still add (what is left of
    /// the engine-wide budget).
    pub ooo_budget: usize,
    /// The resumption policy registered for this connection's socket;
    /// meaningful while handling its first SYN, the default otherwise.
    pub policy: ConnectionPolicy,
    /// The packet being handled is a large segment ([`crate::PacketMeta`]).
    pub large_segment: bool,
}

/// Handshake facts learned from the SYNs.
#[derive(Clone, Debug, Default)]
struct SynFacts {
    local_isn: Option<u32>,
    remote_isn: Option<u32>,
    /// The MSS the peer announced, before we clamped it.
    peer_mss: Option<u16>,
    local_ws: Option<u8>,
    peer_ws: Option<u8>,
    /// TSval of the last SYN each way, if timestamps are on.
    local_tsval: Option<u32>,
    peer_tsval: Option<u32>,
    /// The window of our own SYN (unscaled).
    local_syn_window: u16,
    local_sack_ok: bool,
    peer_sack_ok: bool,
}

impl SynFacts {
    fn scales(&self) -> (u8, u8) {
        match (self.local_ws, self.peer_ws) {
            (Some(l), Some(p)) => (l.min(14), p.min(14)),
            _ => (0, 0),
        }
    }
}

struct EnoState {
    /// Host A between its SYN and the SYN-ACK.
    active: Option<ActiveOpen>,
    /// Our SYN-form option as sent (SYN for A, SYN-ACK for B).
    local_option: Option<Vec<u8>>,
    /// The negotiated handshake, waiting for ENO to be enabled.
    handshake: Option<Handshake>,
    sent_syn_ack: bool,
    facts: SynFacts,
}

enum Mode {
    Eno(Box<EnoState>),
    Crypt(Box<Crypt>),
    Plain(PlainReason),
}

pub struct Connection {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub first_seen: Instant,
    /// The local stack's last packet: a connection is idle when its own
    /// host has sent nothing, whatever arrives from outside.
    last_activity: Instant,
    /// Opened by the peer's SYN and the three-way handshake not complete:
    /// anyone can forge such a SYN, so these entries are capped, expire
    /// quickly and report nothing until the handshake completes.
    half_open: bool,
    /// The last SYN or SYN-ACK of this connection.
    handshake_at: Instant,
    /// Our kernel refused the connection (RST to the peer's SYN): forget
    /// it now.
    forget: bool,
    /// A `Plain` event held back until the handshake completes.
    deferred_plain: bool,
    mode: Mode,
    closed_at: Option<Instant>,
    /// Set once the connection ended abnormally; later packets are dropped
    /// (the peer's answered with a RST).
    aborted: bool,
    fin_out: bool,
    fin_in: bool,
    /// ISNs of the SYNs seen (local, remote), whatever the mode.
    isns: (Option<u32>, Option<u32>),
    /// Payload bytes (sent, received) of a plain connection.
    plain_bytes: (u64, u64),
}

fn eno_options(tcp: &crate::wire::TcpRepr) -> Vec<Vec<u8>> {
    tcp.options
        .iter()
        .filter(|o| o.kind() == kind::ENO && !matches!(o, TcpOption::Trailing(_)))
        .map(TcpOption::to_bytes)
        .collect()
}

/// Adds an ENO option (given whole, kind and length included) in front of
/// any end-of-list marker. Leaves the options alone and returns false if
/// the 40-byte area has no room.
fn add_option(tcp: &mut crate::wire::TcpRepr, option: &[u8]) -> bool {
    let [k, _, data @ ..] = option else {
        return false;
    };
    let mut opts: Vec<TcpOption> = tcp
        .options
        .iter()
        .filter(|o| !matches!(o, TcpOption::Eol))
        .cloned()
        .collect();
    let at = opts
        .iter()
        .position(|o| matches!(o, TcpOption::Trailing(_)))
        .unwrap_or(opts.len());
    opts.insert(
        at,
        TcpOption::Other {
            kind: *k,
            data: data.to_vec(),
        },
    );
    if options_len(&opts) > MAX_OPTIONS_LEN {
        // NOPs only align options; dropping them can make room (a 21-byte
        // resumption reply fits beside MSS, SACK-permitted, timestamps and
        // window scale only without them).
        opts.retain(|o| !matches!(o, TcpOption::Nop));
        if options_len(&opts) > MAX_OPTIONS_LEN {
            return false;
        }
    }
    tcp.options = opts;
    true
}

fn clamp_mss(tcp: &mut crate::wire::TcpRepr) {
    for o in &mut tcp.options {
        if let TcpOption::Mss(v) = o {
            *v = v
                .saturating_sub(FRAME_OVERHEAD as u16)
                .max(MIN_CLAMPED_MSS.min(*v));
        }
    }
}

fn syn_facts_from(facts: &mut SynFacts, tcp: &crate::wire::TcpRepr, dir: Direction) {
    match dir {
        Direction::Outbound => {
            facts.local_isn = Some(tcp.seq);
            facts.local_ws = tcp.window_scale();
            facts.local_tsval = tcp.timestamps().map(|t| t.0);
            facts.local_syn_window = tcp.window;
            facts.local_sack_ok = tcp.option(kind::SACK_PERMITTED).is_some();
        }
        Direction::Inbound => {
            facts.remote_isn = Some(tcp.seq);
            facts.peer_mss = tcp.mss();
            facts.peer_ws = tcp.window_scale();
            facts.peer_tsval = tcp.timestamps().map(|t| t.0);
            facts.peer_sack_ok = tcp.option(kind::SACK_PERMITTED).is_some();
        }
    }
}

fn emit_into(pkt: &Packet, out: &mut Vec<u8>) -> Verdict {
    emit_gathered_into(pkt, std::iter::empty(), out)
}

/// [`emit_into`] with the bytes of `more` after the packet's payload.
fn emit_gathered_into<'m>(
    pkt: &Packet,
    more: impl Iterator<Item = &'m [u8]> + Clone,
    out: &mut Vec<u8>,
) -> Verdict {
    match pkt.emit_gathered(out, more) {
        Ok(()) => Verdict::AcceptModified,
        Err(_) => Verdict::Drop,
    }
}

impl Connection {
    /// A connection seen from its first SYN; `passive` when the peer sent it.
    pub fn new(local: SocketAddr, remote: SocketAddr, now: Instant, passive: bool) -> Connection {
        Connection {
            local,
            remote,
            first_seen: now,
            last_activity: now,
            half_open: passive,
            handshake_at: now,
            forget: false,
            deferred_plain: false,
            mode: Mode::Eno(Box::new(EnoState {
                active: None,
                local_option: None,
                handshake: None,
                sent_syn_ack: false,
                facts: SynFacts::default(),
            })),
            closed_at: None,
            aborted: false,
            fin_out: false,
            fin_in: false,
            isns: (None, None),
            plain_bytes: (0, 0),
        }
    }

    /// The ISN of the SYN seen travelling `dir`, if any.
    pub fn isn(&self, dir: Direction) -> Option<u32> {
        match dir {
            Direction::Outbound => self.isns.0,
            Direction::Inbound => self.isns.1,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed_at.is_some()
    }

    /// Opened by the peer and not through the three-way handshake yet.
    pub fn is_half_open(&self) -> bool {
        self.half_open
    }

    /// The engine should drop the entry at once.
    pub fn should_forget(&self) -> bool {
        self.forget
    }

    /// Out-of-order wire bytes held.
    pub fn out_of_order_bytes(&self) -> usize {
        match &self.mode {
            Mode::Crypt(c) => c.inb.out_of_order_bytes(),
            _ => 0,
        }
    }

    /// The three-way handshake completed: report what was held back.
    fn handshake_completed(&mut self, ctx: &mut Ctx<'_>) {
        if !self.half_open {
            return;
        }
        self.half_open = false;
        if std::mem::take(&mut self.deferred_plain)
            && let Mode::Plain(reason) = &self.mode
        {
            ctx.events.push_back(Event::Plain {
                local: self.local,
                remote: self.remote,
                reason: reason.clone(),
            });
        }
    }

    /// Whether an inbound segment is the peer's answer to our SYN-ACK: an
    /// ACK of our ISN at the sequence number right after the peer's SYN.
    /// Only such a segment may complete a passive handshake or decide what
    /// the peer supports; anything else may be forged blind.
    fn completes_passive_handshake(&self, tcp: &crate::wire::TcpRepr) -> bool {
        let (Some(l), Some(r)) = self.isns else {
            return false;
        };
        // The sequence number only has to fall inside the window of our
        // SYN-ACK (host A's first ACK already sits past its Init1); the
        // acknowledgment number is what a blind forger cannot know.
        let seq_off = tcp.seq.wrapping_sub(r.wrapping_add(1));
        tcp.flags.contains(TcpFlags::ACK)
            && !tcp.flags.contains(TcpFlags::RST)
            && tcp.ack == l.wrapping_add(1)
            && seq_off <= u32::from(u16::MAX)
    }
    /// Whether this connection's bytes must never cross untouched: it is
    /// encrypted, in its key exchange, past a successful ENO negotiation,
    /// or aborted (its packets are dropped until it is forgotten).
    /// A packet-too-big report about this connection: the MTU and quoted
    /// sequence number to give the kernel instead, or `None` to pass the
    /// report as it is (no encrypted stream, or a quote outside what we
    /// have in flight, which the kernel would ignore too).
    pub fn on_too_big(&mut self, report: &crate::wire::icmp::TooBig) -> Option<(u32, u32)> {
        match &mut self.mode {
            Mode::Crypt(c) => c.on_too_big(report),
            _ => None,
        }
    }

    pub fn guards_plaintext(&self) -> bool {
        self.aborted
            || match &self.mode {
                Mode::Crypt(_) => true,
                Mode::Eno(st) => st.handshake.is_some(),
                Mode::Plain(_) => false,
            }
    }

    pub fn lookup(&self) -> Lookup {
        match &self.mode {
            Mode::Eno(_) => Lookup::Pending,
            Mode::Plain(r) => Lookup::Plain(r.clone()),
            Mode::Crypt(c) => match &c.info {
                Some(i) => Lookup::Tcpcrypt(*i),
                None => Lookup::Pending,
            },
        }
    }

    pub fn phase(&self) -> ConnPhase {
        if self.closed_at.is_some() {
            return ConnPhase::Closed;
        }
        if self.fin_in || self.fin_out {
            return ConnPhase::Closing;
        }
        match &self.mode {
            Mode::Eno(_) => ConnPhase::Handshake,
            Mode::Crypt(c) if c.info.is_none() => ConnPhase::Handshake,
            _ => ConnPhase::Established,
        }
    }

    /// Application bytes (sent, received).
    pub fn byte_counts(&self) -> (u64, u64) {
        match &self.mode {
            Mode::Crypt(c) => (c.out.bytes_framed(), c.inb.bytes_received()),
            Mode::Plain(_) => self.plain_bytes,
            Mode::Eno(_) => (0, 0),
        }
    }

    /// The next instant this connection needs [`Connection::on_timeout`].
    pub fn deadline(&self, config: &EngineConfig) -> Instant {
        if let Some(t) = self.closed_at {
            return t + config.cleanup_delay;
        }
        let mut d = self.last_activity + config.idle_timeout;
        if self.half_open {
            d = d.min(self.handshake_at + config.half_open_timeout);
        }
        match &self.mode {
            Mode::Eno(_) => d = d.min(self.first_seen + config.handshake_timeout),
            Mode::Crypt(c) => {
                if let Some(t) = c.init_timer {
                    d = d.min(t.deadline);
                }
                if c.info.is_none() {
                    d = d.min(self.first_seen + config.handshake_timeout);
                }
            }
            Mode::Plain(_) => {}
        }
        d
    }

    /// Runs timers; returns false when the connection should be forgotten.
    pub fn on_timeout(&mut self, ctx: &mut Ctx<'_>) -> bool {
        let now = ctx.now;
        if let Some(t) = self.closed_at {
            return now < t + ctx.config.cleanup_delay;
        }
        if self.half_open && now >= self.handshake_at + ctx.config.half_open_timeout {
            // Nothing was reported for it, and no socket exists yet: a
            // late ACK carrying ENO is dropped as untracked (engine.rs).
            return false;
        }
        if now >= self.last_activity + ctx.config.idle_timeout {
            if matches!(self.mode, Mode::Crypt(_)) {
                // Forgetting it would let the kernel's next segment of a
                // connection that may still be open pass as plaintext: end
                // it on both sides and keep dropping its packets until the
                // cleanup delay is over.
                self.abort(ctx, "idle for longer than the idle timeout".to_string());
                return true;
            }
            return false;
        }
        let handshake_over = match &self.mode {
            Mode::Eno(_) => false,
            Mode::Crypt(c) => c.info.is_some(),
            Mode::Plain(_) => true,
        };
        if !handshake_over && now >= self.first_seen + ctx.config.handshake_timeout {
            if matches!(self.mode, Mode::Crypt(_)) {
                self.abort(ctx, "key exchange timed out".to_string());
                return true;
            }
            return false;
        }
        let mut give_up = false;
        if let Mode::Crypt(c) = &mut self.mode
            && let Some(mut t) = c.init_timer
            && now >= t.deadline
        {
            match c.out.unacked_init().map(<[u8]>::to_vec) {
                Some(init) if t.tries < ctx.config.init_max_retries => {
                    let p = c.wire_packet(0, init, TcpFlags::PSH, false);
                    push_transmit(ctx, Direction::Outbound, &p);
                    t.tries += 1;
                    t.rto = t.rto.saturating_mul(2);
                    t.deadline = now + t.rto;
                    c.init_timer = Some(t);
                }
                Some(_) => give_up = true,
                None => c.init_timer = None,
            }
        }
        if give_up {
            self.abort(ctx, "Init message never acknowledged".to_string());
        }
        true
    }

    /// Handles one queued packet of this connection.
    pub fn handle(
        &mut self,
        ctx: &mut Ctx<'_>,
        dir: Direction,
        mut pkt: Packet,
        buf: &mut Vec<u8>,
    ) -> Verdict {
        let flags = pkt.tcp.flags;
        if dir == Direction::Outbound {
            self.last_activity = ctx.now;
        }
        if self.aborted {
            if dir == Direction::Inbound
                && !flags.contains(TcpFlags::RST)
                && let Mode::Crypt(c) = &mut self.mode
            {
                c.answer_after_abort(ctx, &pkt.tcp);
            }
            return if flags.contains(TcpFlags::RST) {
                Verdict::Accept
            } else {
                Verdict::Drop
            };
        }
        if self.half_open && dir == Direction::Outbound && flags.contains(TcpFlags::RST) {
            // Our kernel refused the peer's SYN: no connection was made.
            self.forget = true;
            return Verdict::Accept;
        }
        if flags.contains(TcpFlags::SYN) {
            return self.handle_syn(ctx, dir, pkt, buf);
        }
        match &mut self.mode {
            Mode::Plain(_) => {
                if self.half_open && dir == Direction::Inbound {
                    if self.completes_passive_handshake(&pkt.tcp) {
                        self.handshake_completed(ctx);
                    } else if flags.contains(TcpFlags::RST)
                        && self
                            .isns
                            .1
                            .is_some_and(|r| pkt.tcp.seq == r.wrapping_add(1))
                    {
                        // The peer withdrew its SYN; the kernel drops its
                        // half-open socket for this exact RST as well.
                        self.forget = true;
                        return Verdict::Accept;
                    }
                }
                self.track_plain(ctx, dir, &pkt.tcp);
                Verdict::Accept
            }
            Mode::Eno(_) => self.handle_eno_non_syn(ctx, dir, pkt, buf),
            Mode::Crypt(_) => {
                let v = match dir {
                    Direction::Outbound => self.crypt_outbound(ctx, &mut pkt, buf),
                    Direction::Inbound => self.crypt_inbound(ctx, &mut pkt, buf),
                };
                self.check_closed(ctx);
                v
            }
        }
    }

    /// Byte counters (highest sequence offset seen, so retransmissions do
    /// not count twice) and FIN/RST tracking of a plain connection.
    fn track_plain(&mut self, ctx: &mut Ctx<'_>, dir: Direction, tcp: &crate::wire::TcpRepr) {
        let flags = tcp.flags;
        if let Some(isn) = self.isn(dir) {
            let seen = match dir {
                Direction::Outbound => &mut self.plain_bytes.0,
                Direction::Inbound => &mut self.plain_bytes.1,
            };
            let start = crate::seq::SeqSpace::new(isn).offset(tcp.seq, *seen as i64);
            let end = start + tcp.payload.len() as i64;
            if end > *seen as i64 {
                *seen = end as u64;
            }
        }
        if flags.contains(TcpFlags::FIN) {
            match dir {
                Direction::Outbound => self.fin_out = true,
                Direction::Inbound => self.fin_in = true,
            }
        }
        if flags.contains(TcpFlags::RST) || (self.fin_in && self.fin_out) {
            self.close(ctx);
        }
    }

    fn close(&mut self, ctx: &mut Ctx<'_>) {
        if self.closed_at.is_none() {
            self.closed_at = Some(ctx.now);
            ctx.events.push_back(Event::Closed {
                local: self.local,
                remote: self.remote,
            });
        }
    }

    fn go_plain(&mut self, ctx: &mut Ctx<'_>, reason: PlainReason) {
        if self.half_open {
            // Possibly a spoofed SYN: report it only once the handshake
            // completes, so a flood of them cannot flood the log.
            self.deferred_plain = true;
        } else {
            ctx.events.push_back(Event::Plain {
                local: self.local,
                remote: self.remote,
                reason: reason.clone(),
            });
        }
        self.mode = Mode::Plain(reason);
    }

    fn handle_syn(
        &mut self,
        ctx: &mut Ctx<'_>,
        dir: Direction,
        mut pkt: Packet,
        buf: &mut Vec<u8>,
    ) -> Verdict {
        let ack = pkt.tcp.flags.contains(TcpFlags::ACK);
        let peer_ip = self.remote.ip();
        let seq = pkt.tcp.seq;
        match dir {
            Direction::Outbound => self.isns.0 = Some(seq),
            Direction::Inbound => {
                // The peer's SYN is its first one or a retransmission of it;
                // a SYN-ACK must acknowledge our SYN. Anything else on a
                // live connection may be forged and changes nothing (RFC
                // 5961 section 4: a challenge ACK at most).
                let own = match (ack, self.isns) {
                    (false, (_, None)) => true,
                    (false, (_, Some(r))) => r == seq && !matches!(self.mode, Mode::Crypt(_)),
                    (true, (Some(l), r)) => {
                        pkt.tcp.ack == l.wrapping_add(1) && r.is_none_or(|r| r == seq)
                    }
                    (true, (None, _)) => false,
                };
                if !own {
                    return self.reject_inbound(ctx);
                }
                self.isns.1 = Some(seq);
            }
        }
        self.handshake_at = ctx.now;
        let Mode::Eno(st) = &mut self.mode else {
            // Plain connections pass; in an encrypted one this is a
            // retransmitted handshake packet of a settled negotiation.
            return match &self.mode {
                Mode::Crypt(c) if dir == Direction::Outbound => {
                    if add_option(&mut pkt.tcp, &c.local_option) {
                        emit_into(&pkt, buf)
                    } else {
                        Verdict::Accept
                    }
                }
                Mode::Crypt(_) => {
                    clamp_mss(&mut pkt.tcp);
                    pkt.tcp.payload.clear();
                    emit_into(&pkt, buf)
                }
                _ => Verdict::Accept,
            };
        };
        syn_facts_from(&mut st.facts, &pkt.tcp, dir);
        match (dir, ack) {
            // Active open: offer ENO (the same option on every retransmission).
            (Direction::Outbound, false) => {
                let tfo = pkt.tcp.option(kind::FAST_OPEN).is_some();
                if !pkt.tcp.payload.is_empty() || tfo {
                    self.go_plain(ctx, PlainReason::SynData);
                    return Verdict::Accept;
                }
                if st.local_option.is_none() {
                    // RFC 8547 section 10: no ENO option without randomness.
                    // A fresh offer draws nothing before the SYN-ACK, so ask
                    // the source now, before our option goes out.
                    if let Err(e) = ctx.rng.fill(&mut [0u8; 1]) {
                        self.go_plain(ctx, PlainReason::Negotiation(e.to_string()));
                        return Verdict::Accept;
                    }
                    match ctx.host.active_open(&peer_ip, ctx.policy, ctx.rng) {
                        Ok(open) => {
                            st.local_option = Some(open.syn_option().to_vec());
                            st.active = Some(open);
                        }
                        Err(e) => {
                            self.go_plain(ctx, PlainReason::Negotiation(e.to_string()));
                            return Verdict::Accept;
                        }
                    }
                }
                let option = st.local_option.clone().unwrap_or_default();
                if !add_option(&mut pkt.tcp, &option) {
                    self.go_plain(ctx, PlainReason::NoOptionSpace);
                    return Verdict::Accept;
                }
                emit_into(&pkt, buf)
            }
            // A SYN from the peer while ours is out. Only our kernel's
            // answer (a SYN-ACK, above) makes it a simultaneous open; a
            // forged SYN must not turn the connection plain by itself.
            (Direction::Inbound, false) if st.active.is_some() => Verdict::Accept,
            // Passive open: the peer's SYN (or its retransmission).
            (Direction::Inbound, false) => {
                if st.handshake.is_none() {
                    let enos = eno_options(&pkt.tcp);
                    let reply = match enos.as_slice() {
                        [] => Err("the SYN carried no ENO option".to_string()),
                        [one] => ctx
                            .host
                            .passive_open(&peer_ip, one, ctx.policy, ctx.rng)
                            .map_err(|e| e.to_string()),
                        _ => Err("the SYN carried several ENO options".to_string()),
                    };
                    match reply {
                        Ok(r) => {
                            let (option, handshake) = r.into_parts();
                            st.local_option = Some(option);
                            st.handshake = Some(handshake);
                        }
                        Err(why) => {
                            self.go_plain(ctx, PlainReason::Negotiation(why));
                            return Verdict::Accept;
                        }
                    }
                }
                clamp_mss(&mut pkt.tcp);
                // tcpcrypt defines no SYN data: discard it (RFC 8547 4.7).
                pkt.tcp.payload.clear();
                emit_into(&pkt, buf)
            }
            // Our kernel answered a peer's SYN while its own SYN was out:
            // a simultaneous open, which we do not support.
            (Direction::Outbound, true) if st.active.is_some() => {
                let r = PlainReason::Negotiation("simultaneous open".to_string());
                self.go_plain(ctx, r);
                Verdict::Accept
            }
            // Our SYN-ACK as passive opener.
            (Direction::Outbound, true) => {
                let Some(option) = st.local_option.clone() else {
                    self.go_plain(ctx, PlainReason::NotSeenFromSyn);
                    return Verdict::Accept;
                };
                if !add_option(&mut pkt.tcp, &option) {
                    self.go_plain(ctx, PlainReason::NoOptionSpace);
                    return Verdict::Accept;
                }
                st.sent_syn_ack = true;
                emit_into(&pkt, buf)
            }
            // The peer's SYN-ACK to our SYN.
            (Direction::Inbound, true) => {
                let Some(active) = st.active.take() else {
                    // A repeated SYN-ACK after negotiation, or none seen.
                    if st.handshake.is_some() {
                        clamp_mss(&mut pkt.tcp);
                        return emit_into(&pkt, buf);
                    }
                    self.go_plain(ctx, PlainReason::NotSeenFromSyn);
                    return Verdict::Accept;
                };
                let enos = eno_options(&pkt.tcp);
                let outcome = match enos.as_slice() {
                    [] => Err("the SYN-ACK carried no ENO option".to_string()),
                    [one] => active.on_peer_syn(one, ctx.rng).map_err(|e| e.to_string()),
                    _ => Err("the SYN-ACK carried several ENO options".to_string()),
                };
                match outcome {
                    Ok(handshake) => {
                        st.handshake = Some(handshake);
                        clamp_mss(&mut pkt.tcp);
                        pkt.tcp.payload.clear();
                        emit_into(&pkt, buf)
                    }
                    Err(why) => {
                        self.go_plain(ctx, PlainReason::Negotiation(why));
                        Verdict::Accept
                    }
                }
            }
        }
    }

    /// An inbound segment that failed the checks for its connection:
    /// dropped, answered with a challenge ACK where we own the wire
    /// sequence space. A plain connection is the kernel's to check.
    fn reject_inbound(&mut self, ctx: &mut Ctx<'_>) -> Verdict {
        match &mut self.mode {
            Mode::Plain(_) => Verdict::Accept,
            Mode::Crypt(c) => {
                ctx.stats.out_of_window += 1;
                c.challenge_ack(ctx);
                Verdict::Drop
            }
            Mode::Eno(_) => {
                ctx.stats.out_of_window += 1;
                Verdict::Drop
            }
        }
    }

    /// A non-SYN segment while ENO is being settled: A's first ACK going
    /// out, or that ACK arriving at B. ENO is enabled once an ACK carrying
    /// it was both sent and received (RFC 8547 section 4.6).
    fn handle_eno_non_syn(
        &mut self,
        ctx: &mut Ctx<'_>,
        dir: Direction,
        mut pkt: Packet,
        buf: &mut Vec<u8>,
    ) -> Verdict {
        let completes = dir == Direction::Inbound && self.completes_passive_handshake(&pkt.tcp);
        let peer_withdrew = dir == Direction::Inbound
            && pkt.tcp.flags.contains(TcpFlags::RST)
            && self
                .isns
                .1
                .is_some_and(|r| pkt.tcp.seq == r.wrapping_add(1));
        let Mode::Eno(st) = &mut self.mode else {
            return Verdict::Accept;
        };
        let is_ack = pkt.tcp.flags.contains(TcpFlags::ACK);
        let enabled = match dir {
            // Host A: its SYN-ACK negotiated; this ACK completes ENO.
            Direction::Outbound if st.handshake.is_some() && is_ack => {
                if !add_option(&mut pkt.tcp, &NON_SYN_OPTION) {
                    let r = PlainReason::NoOptionSpace;
                    self.go_plain(ctx, r);
                    return Verdict::Accept;
                }
                true
            }
            // Host B: A's first ACK must carry ENO. Only the genuine ACK
            // (it acknowledges our ISN) may decide that it does not: a
            // forged one would split the two ends into plain and encrypted.
            Direction::Inbound if st.handshake.is_some() && st.sent_syn_ack => {
                if !completes {
                    if peer_withdrew {
                        self.forget = true;
                        return Verdict::Accept;
                    }
                    ctx.stats.out_of_window += 1;
                    return Verdict::Drop;
                }
                if eno_options(&pkt.tcp).is_empty() {
                    let r =
                        PlainReason::Negotiation("the first ACK carried no ENO option".to_string());
                    self.go_plain(ctx, r);
                    self.handshake_completed(ctx);
                    return Verdict::Accept;
                }
                true
            }
            _ => false,
        };
        if !enabled {
            return Verdict::Accept;
        }
        let Some(handshake) = st.handshake.take() else {
            return Verdict::Accept;
        };
        let facts = st.facts.clone();
        let option = st.local_option.clone().unwrap_or_default();
        self.handshake_completed(ctx);
        let early = match self.start_crypt(ctx, handshake, facts, option, &pkt) {
            Ok(early) => early,
            Err(e) => {
                self.abort(ctx, e.to_string());
                return Verdict::Drop;
            }
        };
        let v = match dir {
            // The first ACK itself sits at offset 0, before the Init.
            Direction::Outbound => self.crypt_outbound(ctx, &mut pkt, buf),
            Direction::Inbound => self.crypt_inbound(ctx, &mut pkt, buf),
        };
        if let (Some(init1), Mode::Crypt(c)) = (early, &mut self.mode) {
            // Host A's Init1 follows its first ACK.
            let p = c.wire_packet(0, init1, TcpFlags::PSH, false);
            push_transmit(ctx, Direction::Outbound, &p);
            c.start_init_timer(ctx);
        }
        v
    }

    /// Switches to tcpcrypt. Returns Init1 when we are host A of a fresh
    /// session (to send after the packet at hand).
    fn start_crypt(
        &mut self,
        ctx: &mut Ctx<'_>,
        handshake: Handshake,
        facts: SynFacts,
        local_option: Vec<u8>,
        pkt: &Packet,
    ) -> Result<Option<Vec<u8>>, EngineError> {
        let tep = handshake.tep();
        let role = handshake.role();
        let (Some(local_isn), Some(remote_isn)) = (facts.local_isn, facts.remote_isn) else {
            return Err(EngineError::Keying("handshake not seen".to_string()));
        };
        let (out_ip, in_ip) = if pkt.ip.src == self.local.ip() {
            (pkt.ip.clone(), pkt.ip.reversed_minimal())
        } else {
            (pkt.ip.reversed_minimal(), pkt.ip.clone())
        };
        let mut out = OutStream::new(local_isn);
        out.set_rekey_after(ctx.config.rekey_after_bytes);
        let (pending, inb, init1, resumed) = match handshake {
            Handshake::SendInit1(st) => {
                let init1 = st.init1().to_vec();
                out.set_init(init1.clone());
                let inb = InStream::with_init(remote_isn, InitKind::Init2, tep);
                (Some(Pending::A(st)), inb, Some(init1), None)
            }
            Handshake::AwaitInit1(st) => {
                let inb = InStream::with_init(remote_isn, InitKind::Init1, tep);
                (Some(Pending::B(st)), inb, None, None)
            }
            Handshake::Resumed(session) => (
                None,
                InStream::without_init(remote_isn),
                None,
                Some(session),
            ),
        };
        let kernel_max_payload = usize::from(facts.peer_mss.unwrap_or(DEFAULT_MSS as u16))
            .saturating_sub(FRAME_OVERHEAD)
            .clamp(1, DEFAULT_MSS);
        let (l_ws, _) = facts.scales();
        let ts = match (facts.local_tsval, facts.peer_tsval) {
            (Some(l), Some(p)) => Some((l, p)),
            _ => None,
        };
        let syn_window = u32::from(facts.local_syn_window) >> l_ws;
        let syn_right = u64::from(facts.local_syn_window);
        let mut crypt = Crypt {
            ports: (self.local.port(), self.remote.port()),
            local_option,
            peer_ip: self.remote.ip(),
            pending,
            out,
            inb,
            info: None,
            eno_on_outbound: role == Role::A,
            facts,
            kernel_max_payload,
            out_ip,
            in_ip,
            ts,
            last_wire_window: u16::try_from(syn_window).unwrap_or(u16::MAX).max(1),
            last_kernel_ack: None,
            init_timer: None,
            auth_failures: 0,
            auth_failing_since: None,
            adv_right: syn_right,
            peer_max_window: u64::from(u16::MAX),
            last_challenge: None,
            path_payload_cap: None,
        };
        if let Some(session) = resumed {
            // No Init messages: frames start at offset 0 both ways.
            crypt.install_session(ctx, session, 0)?;
        }
        self.mode = Mode::Crypt(Box::new(crypt));
        Ok(init1)
    }

    fn check_closed(&mut self, ctx: &mut Ctx<'_>) {
        if let Mode::Crypt(c) = &self.mode {
            let out_done = c.out.fin_acked();
            let in_done = c.inb.fin().is_some()
                && c.inb.wire_ack() > c.inb.fin().map_or(0, |f| f.wire as i64);
            self.fin_out = c.out.fin().is_some();
            self.fin_in = c.inb.fin().is_some();
            if out_done && in_done {
                self.close(ctx);
            }
        }
    }

    /// Ends the session abnormally: RST to the peer and to the kernel.
    fn abort(&mut self, ctx: &mut Ctx<'_>, reason: String) {
        if let Mode::Crypt(c) = &self.mode {
            // Past our FIN once the peer acknowledged it: a reset below
            // the peer's next expected number is only challenged.
            let wire_next = c.out.wire_next() + u64::from(c.out.fin_acked());
            let wire_seq = c.out.space().seq(wire_next as i64);
            let wire_ack = c.inb.space().seq(c.inb.wire_ack());
            let rst_out = c.make_packet(
                &c.out_ip,
                false,
                wire_seq,
                wire_ack,
                TcpFlags::RST | TcpFlags::ACK,
                Vec::new(),
            );
            push_transmit(ctx, Direction::Outbound, &rst_out);
            let local_seq = c.inb.space().seq(c.inb.local_expected());
            let local_ack = c.out.space().seq(c.out.local_ack());
            let rst_in = c.make_packet(
                &c.in_ip,
                true,
                local_seq,
                local_ack,
                TcpFlags::RST | TcpFlags::ACK,
                Vec::new(),
            );
            push_transmit(ctx, Direction::Inbound, &rst_in);
        }
        ctx.events.push_back(Event::Aborted {
            local: self.local,
            remote: self.remote,
            reason,
        });
        self.aborted = true;
        self.close(ctx);
    }

    fn crypt_outbound(
        &mut self,
        ctx: &mut Ctx<'_>,
        pkt: &mut Packet,
        buf: &mut Vec<u8>,
    ) -> Verdict {
        let Mode::Crypt(c) = &mut self.mode else {
            return Verdict::Accept;
        };
        let rst = pkt.tcp.flags.contains(TcpFlags::RST);
        let result = c.outbound(ctx, pkt, buf);
        if rst {
            ctx.events.push_back(Event::Aborted {
                local: self.local,
                remote: self.remote,
                reason: "the local stack reset the connection".to_string(),
            });
            self.aborted = true;
            self.close(ctx);
        }
        match result {
            Ok(v) => v,
            Err(e) => {
                self.abort(ctx, e.to_string());
                Verdict::Drop
            }
        }
    }

    fn crypt_inbound(&mut self, ctx: &mut Ctx<'_>, pkt: &mut Packet, buf: &mut Vec<u8>) -> Verdict {
        let Mode::Crypt(c) = &mut self.mode else {
            return Verdict::Accept;
        };
        if !c.screen(ctx, &pkt.tcp) {
            ctx.stats.out_of_window += 1;
            return Verdict::Drop;
        }
        if pkt.tcp.flags.contains(TcpFlags::RST) {
            let seq = pkt.tcp.seq;
            c.map_inbound_control(pkt);
            pkt.tcp.seq = c.inb.space().seq(c.inb.local_offset_for_control(seq));
            let v = emit_into(pkt, buf);
            ctx.events.push_back(Event::Aborted {
                local: self.local,
                remote: self.remote,
                reason: "the peer reset the connection".to_string(),
            });
            self.aborted = true;
            self.close(ctx);
            return v;
        }
        match c.inbound(ctx, pkt, buf) {
            Ok(v) => v,
            Err(EngineError::Frame(e)) => {
                c.auth_failures += 1;
                let since = *c.auth_failing_since.get_or_insert(ctx.now);
                let lasted = ctx.now.saturating_duration_since(since);
                if c.auth_failures > ctx.config.max_auth_failures {
                    self.abort(
                        ctx,
                        format!("too many frames failed authentication, last: {e}"),
                    );
                } else if c.auth_failures >= MIN_TIMED_AUTH_FAILURES
                    && lasted >= ctx.config.auth_failure_timeout
                {
                    let n = c.auth_failures;
                    self.abort(
                        ctx,
                        format!(
                            "{n} frames failed authentication over {lasted:.1?} with none \
                             passing, last: {e}"
                        ),
                    );
                }
                Verdict::Drop
            }
            Err(e) => {
                self.abort(ctx, e.to_string());
                Verdict::Drop
            }
        }
    }
}

fn push_transmit(ctx: &mut Ctx<'_>, direction: Direction, pkt: &Packet) {
    if let Ok(packet) = pkt.to_bytes() {
        ctx.transmits.push_back(Transmit {
            direction,
            packet,
            dst: pkt.ip.dst,
        });
    }
}
