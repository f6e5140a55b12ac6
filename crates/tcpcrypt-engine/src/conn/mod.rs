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
    ConnPhase, Direction, EngineConfig, Event, Lookup, PlainReason, Transmit, Verdict,
};
use crate::error::EngineError;
use crate::inbound::InStream;
use crate::outbound::OutStream;
use crate::wire::tcp::{MAX_OPTIONS_LEN, kind, options_len};
use crate::wire::{Packet, TcpFlags, TcpOption};

/// Largest plaintext put into one packet for the local stack (keeps the IP
/// total length below 65535 with any headers).
const MAX_LOCAL_DELIVERY: usize = 60_000;
/// MSS assumed when the peer's SYN names none (RFC 9293 section 3.7.1).
const DEFAULT_MSS: usize = 536;
/// Never clamp an MSS below this.
const MIN_CLAMPED_MSS: u16 = 88;

/// Everything a connection needs from the engine while handling a packet.
pub struct Ctx<'a> {
    pub config: &'a EngineConfig,
    /// Protocol settings and the resumption cache, keyed by peer address.
    pub host: &'a mut Host<IpAddr>,
    pub rng: &'a mut dyn Rng,
    pub now: Instant,
    pub transmits: &'a mut VecDeque<Transmit>,
    pub events: &'a mut VecDeque<Event>,
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
    last_activity: Instant,
    mode: Mode,
    closed_at: Option<Instant>,
    /// Set once the connection ended abnormally; later packets are dropped.
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
    match pkt.emit(out) {
        Ok(()) => Verdict::AcceptModified,
        Err(_) => Verdict::Drop,
    }
}

impl Connection {
    pub fn new(local: SocketAddr, remote: SocketAddr, now: Instant) -> Connection {
        Connection {
            local,
            remote,
            first_seen: now,
            last_activity: now,
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

    /// Whether this connection's bytes must never cross untouched: it is
    /// encrypted, in its key exchange, past a successful ENO negotiation,
    /// or aborted (its packets are dropped until it is forgotten).
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
                Some(i) => Lookup::Tcpcrypt(i.clone()),
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
        self.last_activity = ctx.now;
        let flags = pkt.tcp.flags;
        if self.aborted {
            return if flags.contains(TcpFlags::RST) {
                Verdict::Accept
            } else {
                Verdict::Drop
            };
        }
        if flags.contains(TcpFlags::SYN) {
            match dir {
                Direction::Outbound => self.isns.0 = Some(pkt.tcp.seq),
                Direction::Inbound => self.isns.1 = Some(pkt.tcp.seq),
            }
            return self.handle_syn(ctx, dir, pkt, buf);
        }
        match &mut self.mode {
            Mode::Plain(_) => {
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
        ctx.events.push_back(Event::Plain {
            local: self.local,
            remote: self.remote,
            reason: reason.clone(),
        });
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
                    let policy = ConnectionPolicy::default();
                    match ctx.host.active_open(&peer_ip, policy, ctx.rng) {
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
            // Both sides sent a SYN: simultaneous open is not supported.
            (Direction::Inbound, false) if st.active.is_some() => {
                let r = PlainReason::Negotiation("simultaneous open".to_string());
                self.go_plain(ctx, r);
                Verdict::Accept
            }
            // Passive open: the peer's SYN (or its retransmission).
            (Direction::Inbound, false) => {
                if st.handshake.is_none() {
                    let enos = eno_options(&pkt.tcp);
                    let reply = match enos.as_slice() {
                        [] => Err("the SYN carried no ENO option".to_string()),
                        [one] => ctx
                            .host
                            .passive_open(&peer_ip, one, ConnectionPolicy::default(), ctx.rng)
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
            // Host B: A's first ACK must carry ENO.
            Direction::Inbound if st.handshake.is_some() && st.sent_syn_ack => {
                if eno_options(&pkt.tcp).is_empty() {
                    let r =
                        PlainReason::Negotiation("the first ACK carried no ENO option".to_string());
                    self.go_plain(ctx, r);
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
                if c.auth_failures > ctx.config.max_auth_failures {
                    self.abort(
                        ctx,
                        format!("too many frames failed authentication, last: {e}"),
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
        ctx.transmits.push_back(Transmit { direction, packet });
    }
}
