//! The connection table, timers and the `handle_*`/`poll_*` surface.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tcpcrypt_proto::Rng;
use tcpcrypt_proto::handshake::{ConfigError, ConnectionPolicy, Host, HostConfig};

use crate::api::{
    Checksum, ConnectionInfo, Direction, EngineConfig, EngineStats, Event, Lookup, PacketMeta,
    SharedTally, Transmit, Verdict,
};
use crate::conn::{Connection, Ctx};
use crate::policy::{PolicyError, PolicyScope, PolicyTable};
use crate::wire::icmp::TooBig;
use crate::wire::ip::TcpRemnant;
use crate::wire::tcp::kind;
use crate::wire::{Packet, TcpFlags, canonical};

type Key = (SocketAddr, SocketAddr);
/// (local address, remote address), canonical.
type HostPair = (IpAddr, IpAddr);

/// The sans-IO packet engine. See the crate documentation for the calling
/// order.
pub struct Engine {
    config: EngineConfig,
    host: Host<IpAddr>,
    rng: Box<dyn Rng + Send>,
    table: HashMap<Key, Tracked>,
    timers: BinaryHeap<Reverse<(Instant, Key)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// How many tracked connections between two hosts guard plaintext
    /// ([`Connection::guards_plaintext`]): a fragment that shows no ports
    /// is dropped when its host pair has any.
    guarded_pairs: HashMap<HostPair, usize>,
    /// Whether the packet last given to `handle_packet` belongs to a
    /// connection that guards plaintext.
    last_guarded: bool,
    stats: EngineStats,
    /// Entries opened by a peer's SYN and not through the handshake.
    half_open: usize,
    /// Out-of-order bytes held across all connections.
    ooo_bytes: usize,
    /// What the table-wide limits are checked against: this engine's own
    /// tallies, or the host's when engines share one.
    tally: Arc<SharedTally>,
    /// Per-socket resumption policies, consulted on first SYNs.
    policies: PolicyTable,
}

struct Tracked {
    conn: Connection,
    /// The earliest timer entry queued for this connection.
    scheduled: Option<Instant>,
    /// `Event::Guarding` was sent for it.
    announced: bool,
}

/// What one connection contributes to the engine-wide tallies.
#[derive(Clone, Copy, Debug, Default)]
struct Footprint {
    /// In the table (false only for "no connection", before an entry is
    /// made or after it is gone).
    entry: bool,
    guarded: bool,
    half_open: bool,
    ooo_bytes: usize,
}

impl Footprint {
    /// What the shared tally counts of it.
    fn tallied(&self) -> (usize, usize, usize) {
        (
            usize::from(self.entry),
            usize::from(self.half_open),
            self.ooo_bytes,
        )
    }

    fn of(conn: &Connection) -> Footprint {
        Footprint {
            entry: true,
            guarded: conn.guards_plaintext(),
            half_open: conn.is_half_open(),
            ooo_bytes: conn.out_of_order_bytes(),
        }
    }
}

/// Timers run per [`Engine::handle_timeout`] call at most, so a mass
/// expiry is spread over several rounds of the packet loop instead of
/// stalling it.
const MAX_TIMERS_PER_CALL: usize = 1024;

/// Below this many slots the table and the timer heap keep whatever room
/// they grew to: too little memory to be worth a reallocation.
const MIN_ROOM_TO_RELEASE: usize = 1024;

impl Drop for Engine {
    /// Gives back to a shared tally what this engine's connections hold, so
    /// engines that stay see the host's totals without this one.
    fn drop(&mut self) {
        let held = (self.table.len(), self.half_open, self.ooo_bytes);
        self.tally.apply(held, (0, 0, 0));
    }
}

impl Engine {
    /// An engine with `config`, drawing nonces and keys from `rng`.
    ///
    /// Never fails: repeated TEPs or AEADs are dropped and an empty list is
    /// replaced by the default one ([`EngineConfig::sanitized`]). Use
    /// [`Engine::try_new`] to reject such a configuration instead.
    pub fn new(config: EngineConfig, rng: Box<dyn Rng + Send>) -> Engine {
        match Engine::try_new(config.sanitized(), rng) {
            Ok(engine) => engine,
            // sanitized() yields non-empty lists without repeats, which is
            // all Host::new checks with the default nonce length.
            Err(_) => unreachable!("a sanitized engine configuration is valid"),
        }
    }

    /// An engine with `config`; fails if the TEP or AEAD list is empty or
    /// repeats an entry.
    pub fn try_new(config: EngineConfig, rng: Box<dyn Rng + Send>) -> Result<Engine, ConfigError> {
        let host = Host::new(HostConfig {
            teps: config.teps.clone(),
            aeads: config.aeads.clone(),
            app_aware: config.app_aware,
            app_aware_mandatory: config.app_aware_mandatory,
            resumption: config.resumption,
            ..HostConfig::default()
        })?;
        let tally = config.shared_tally.clone().unwrap_or_default();
        Ok(Engine {
            tally,
            config,
            host,
            rng,
            table: HashMap::new(),
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            guarded_pairs: HashMap::new(),
            last_guarded: false,
            stats: EngineStats::default(),
            half_open: 0,
            ooo_bytes: 0,
            policies: PolicyTable::default(),
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Takes one queued packet travelling `dir`, whose TCP checksum nobody
    /// verified yet (see [`Engine::handle_packet_with`]).
    pub fn handle_packet(&mut self, now: Instant, dir: Direction, packet: &mut Vec<u8>) -> Verdict {
        self.handle_packet_with(now, dir, Checksum::Unverified.into(), packet)
    }

    /// Takes one queued packet travelling `dir`. Packets that are not TCP
    /// over IP, or belong to no connection seen from its SYN, are accepted
    /// untouched; so are packets the engine cannot parse (fragments, cut
    /// short headers), unless they may belong to an encrypted connection.
    /// An inbound packet whose checksum is `Unverified` is checked first and
    /// dropped if wrong, before it can change any state. See [`PacketMeta`]
    /// for large (GSO/GRO) segments.
    pub fn handle_packet_with(
        &mut self,
        now: Instant,
        dir: Direction,
        meta: PacketMeta,
        packet: &mut Vec<u8>,
    ) -> Verdict {
        self.last_guarded = false;
        let input = std::mem::take(packet);
        let verdict = self.handle_inner(now, dir, meta, &input, packet);
        if verdict != Verdict::AcceptModified {
            *packet = input;
        }
        verdict
    }

    /// Like [`Engine::handle_packet_with`], but reads the packet from
    /// `input` and writes a rewritten one into `out` (meaningful only when
    /// the verdict is [`Verdict::AcceptModified`]), which spares the caller
    /// a copy of every packet into a buffer the engine may overwrite.
    pub fn handle_packet_into(
        &mut self,
        now: Instant,
        dir: Direction,
        meta: PacketMeta,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Verdict {
        self.last_guarded = false;
        self.handle_inner(now, dir, meta, input, out)
    }

    /// Whether the packet last given to [`Engine::handle_packet_with`]
    /// belongs to a connection whose packets must never cross without the
    /// engine (encrypted, negotiating or aborted). The daemon marks such
    /// packets so firewall rules can drop that connection's packets when
    /// no daemon is there to rewrite them.
    pub fn last_packet_guarded(&self) -> bool {
        self.last_guarded
    }

    /// Counters and gauges about limits and the sequence checks.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            connections: self.table.len(),
            ..self.stats
        }
    }

    fn handle_inner(
        &mut self,
        now: Instant,
        dir: Direction,
        meta: PacketMeta,
        packet: &[u8],
        out: &mut Vec<u8>,
    ) -> Verdict {
        if dir == Direction::Inbound
            && let Some(report) = TooBig::parse(packet)
        {
            // The report is rewritten in place, in a copy.
            out.clear();
            out.extend_from_slice(packet);
            return self.on_too_big(&report, out);
        }
        let Ok(mut pkt) = Packet::parse(packet) else {
            return self.unparsed_verdict(dir, packet);
        };
        if dir == Direction::Inbound
            && meta.checksum == Checksum::Unverified
            && !checksum_ok(packet)
        {
            self.stats.bad_checksum += 1;
            return Verdict::Drop;
        }
        let (local, remote) = match dir {
            Direction::Outbound => (canonical(pkt.src()), canonical(pkt.dst())),
            Direction::Inbound => (canonical(pkt.dst()), canonical(pkt.src())),
        };
        let key = (local, remote);
        let flags = pkt.tcp.flags;
        // RFC 8547 section 4.7: tcpcrypt gives SYN data no meaning, so the
        // data of a received SYN that carries ENO never reaches the kernel,
        // whatever the negotiation gives (fresh, resumed, failed, several
        // options, untracked). The kernel then acknowledges only the SYN,
        // and the peer's TCP sends the data again after the handshake.
        let syn_data_discarded = dir == Direction::Inbound
            && flags.contains(TcpFlags::SYN)
            && !pkt.tcp.payload.is_empty()
            && pkt.tcp.option(kind::ENO).is_some();
        if syn_data_discarded {
            pkt.tcp.payload.clear();
        }
        let stripped = syn_data_discarded.then(|| pkt.clone());
        let accept = |out: &mut Vec<u8>| match &stripped {
            Some(p) => match p.emit(out) {
                Ok(()) => Verdict::AcceptModified,
                Err(_) => Verdict::Drop,
            },
            None => Verdict::Accept,
        };
        let mut policy = ConnectionPolicy::default();
        if flags.contains(TcpFlags::SYN) && !flags.contains(TcpFlags::ACK) {
            let new_isn = |t: &Tracked| t.conn.isn(dir).is_some_and(|i| i != pkt.tcp.seq);
            // Only our own host starts a connection over a live entry (its
            // kernel reused the port with a new ISN); a peer's SYN on a live
            // connection is a retransmission or a forgery, which the
            // connection itself screens (RFC 5961 section 4). A closed
            // entry gives way to a new connection, but not to a late
            // duplicate of the peer's first SYN: that would hide the
            // closed one, whose reset the peer may still need.
            let fresh = match self.table.get(&key) {
                None => true,
                Some(t) if t.conn.is_closed() => {
                    dir == Direction::Outbound || t.conn.isn(dir).is_none() || new_isn(t)
                }
                Some(t) => dir == Direction::Outbound && new_isn(t),
            };
            if fresh && !self.admit(now, key, dir) {
                return accept(out);
            }
            // Only a connection's first SYN chooses its offer; a
            // retransmission reuses it, so only that SYN uses up a client
            // registration.
            if fresh {
                let scope = match dir {
                    Direction::Outbound => PolicyScope::Connect,
                    Direction::Inbound => PolicyScope::Listen,
                };
                policy = self.policies.take(now, scope, local);
            }
        }
        let Some(tracked) = self.table.get_mut(&key) else {
            if dir == Direction::Inbound
                && !flags.contains(TcpFlags::SYN)
                && pkt.tcp.option(kind::ENO).is_some()
            {
                // The peer believes ENO is on for a connection we do not
                // track (its handshake outlived the half-open timeout, or a
                // daemon restarted): passing it would feed its tcpcrypt
                // bytes to the application as data.
                return Verdict::Drop;
            }
            return accept(out);
        };
        let before = Footprint::of(&tracked.conn);
        let mut ctx = Ctx {
            config: &self.config,
            host: &mut self.host,
            rng: &mut *self.rng,
            now,
            transmits: &mut self.transmits,
            events: &mut self.events,
            stats: &mut self.stats,
            ooo_budget: self
                .config
                .max_out_of_order_bytes_total
                .saturating_sub(self.tally.out_of_order_bytes()),
            policy,
            large_segment: meta.large,
        };
        let mut verdict = tracked.conn.handle(&mut ctx, dir, pkt, out);
        if verdict == Verdict::Accept {
            verdict = accept(out);
        }
        let after = Footprint::of(&tracked.conn);
        self.last_guarded = before.guarded || after.guarded;
        if tracked.conn.should_forget() {
            self.forget(&key, before);
        } else {
            let d = tracked.conn.deadline(&self.config);
            if tracked.scheduled.is_none_or(|s| d < s) {
                tracked.scheduled = Some(d);
                self.timers.push(Reverse((d, key)));
            }
            self.account(&key, before, after);
        }
        verdict
    }

    /// Makes a table entry for a connection whose first SYN travels `dir`,
    /// replacing a closed one. Returns false when a limit refuses it: the
    /// connection then stays plain TCP, untracked.
    fn admit(&mut self, now: Instant, key: Key, dir: Direction) -> bool {
        let replaced = self.table.remove(&key);
        if let Some(old) = replaced {
            self.forget_removed(&key, &old.conn, Footprint::of(&old.conn));
        }
        let passive = dir == Direction::Inbound;
        if self.tally.connections() >= self.config.max_connections {
            self.stats.refused_table_full += 1;
            return false;
        }
        if passive && self.tally.half_open() >= self.config.max_half_open {
            self.stats.refused_half_open_full += 1;
            return false;
        }
        let conn = Connection::new(key.0, key.1, now, passive);
        let fp = Footprint::of(&conn);
        self.table.insert(
            key,
            Tracked {
                conn,
                scheduled: None,
                announced: false,
            },
        );
        self.account(&key, Footprint::default(), fp);
        true
    }

    /// Removes an entry now.
    fn forget(&mut self, key: &Key, before: Footprint) {
        if let Some(old) = self.table.remove(key) {
            self.forget_removed(key, &old.conn, before);
        }
    }

    /// Bookkeeping for an entry that left the table with `fp`.
    fn forget_removed(&mut self, key: &Key, conn: &Connection, fp: Footprint) {
        self.account(key, fp, Footprint::default());
        // Exactly the connections whose outcome was announced: a
        // half-open one that went plain had its report deferred, and was
        // never announced.
        let announced =
            !conn.is_half_open() && matches!(conn.lookup(), Lookup::Tcpcrypt(_) | Lookup::Plain(_));
        if announced {
            self.events.push_back(Event::Forgotten {
                local: key.0,
                remote: key.1,
            });
        }
    }

    /// Keeps the engine-wide tallies in step with one connection whose
    /// footprint went from `before` to `after`, and tells the daemon when
    /// an established connection starts guarding plaintext.
    fn account(&mut self, key: &Key, before: Footprint, after: Footprint) {
        self.note_guard(key, before.guarded, after.guarded);
        self.tally.apply(before.tallied(), after.tallied());
        self.half_open =
            self.half_open + usize::from(after.half_open) - usize::from(before.half_open);
        self.ooo_bytes = (self.ooo_bytes + after.ooo_bytes).saturating_sub(before.ooo_bytes);
        self.stats.half_open = self.half_open;
        self.stats.out_of_order_bytes = self.ooo_bytes;
        if after.guarded
            && !after.half_open
            && let Some(t) = self.table.get_mut(key)
            && !t.announced
        {
            // Half-open entries are not announced: a flood of spoofed SYNs
            // must not become a flood of journal writes.
            t.announced = true;
            self.events.push_back(Event::Guarding {
                local: key.0,
                remote: key.1,
            });
        }
    }

    /// The verdict on a packet that does not parse as one whole TCP
    /// segment. It cannot be rewritten, so if it may belong to a connection
    /// whose bytes must be encrypted it is dropped: passing it would put
    /// the kernel's plaintext on the wire, or unauthenticated bytes into
    /// the kernel's stream.
    /// A router's packet-too-big report about one of our segments. For an
    /// encrypted connection the connection learns the path's limit (so it
    /// never sends a wire packet above it again, retransmissions included)
    /// and the quoted sequence number is moved into the kernel's space,
    /// where the kernel checks it before believing the report. Other
    /// reports pass untouched.
    fn on_too_big(&mut self, report: &TooBig, packet: &mut [u8]) -> Verdict {
        let key = (canonical(report.quoted_src), canonical(report.quoted_dst));
        let Some(t) = self.table.get_mut(&key) else {
            return Verdict::Accept;
        };
        if let Some((mtu, seq)) = t.conn.on_too_big(report) {
            report.rewrite(packet, mtu, seq);
            self.stats.too_big_reports += 1;
            return Verdict::AcceptModified;
        }
        Verdict::Accept
    }

    fn unparsed_verdict(&self, dir: Direction, packet: &[u8]) -> Verdict {
        let Some(remnant) = TcpRemnant::peek(packet) else {
            return Verdict::Accept;
        };
        let (local_ip, remote_ip) = match dir {
            Direction::Outbound => (remnant.src, remnant.dst),
            Direction::Inbound => (remnant.dst, remnant.src),
        };
        let guarded = match remnant.ports {
            Some((src_port, dst_port)) => {
                let (local_port, remote_port) = match dir {
                    Direction::Outbound => (src_port, dst_port),
                    Direction::Inbound => (dst_port, src_port),
                };
                let key = (
                    canonical(SocketAddr::new(local_ip, local_port)),
                    canonical(SocketAddr::new(remote_ip, remote_port)),
                );
                self.table
                    .get(&key)
                    .is_some_and(|t| t.conn.guards_plaintext())
            }
            None => self
                .guarded_pairs
                .contains_key(&host_pair(local_ip, remote_ip)),
        };
        if guarded {
            Verdict::Drop
        } else {
            Verdict::Accept
        }
    }

    /// Keeps [`Engine::guarded_pairs`] in step with one connection whose
    /// guard changed from `was` to `is`.
    fn note_guard(&mut self, key: &Key, was: bool, is: bool) {
        let pair = host_pair(key.0.ip(), key.1.ip());
        match (was, is) {
            (false, true) => *self.guarded_pairs.entry(pair).or_insert(0) += 1,
            (true, false) => {
                if let Some(n) = self.guarded_pairs.get_mut(&pair) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.guarded_pairs.remove(&pair);
                    }
                }
            }
            _ => {}
        }
    }

    /// Runs the timers due at `now`: Init retransmissions, handshake and
    /// idle timeouts, removal of closed connections; at most
    /// 1024 of them, so call again while
    /// [`Engine::poll_timeout`] is not later than `now`. Once the table has
    /// shrunk to an eighth of the room it grew to, most of that room is
    /// given back.
    pub fn handle_timeout(&mut self, now: Instant) {
        for _ in 0..MAX_TIMERS_PER_CALL {
            let Some(Reverse((t, key))) = self.timers.peek().copied() else {
                break;
            };
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(tracked) = self.table.get_mut(&key) else {
                continue;
            };
            if tracked.scheduled != Some(t) {
                continue;
            }
            tracked.scheduled = None;
            let before = Footprint::of(&tracked.conn);
            let mut ctx = Ctx {
                config: &self.config,
                host: &mut self.host,
                rng: &mut *self.rng,
                now,
                transmits: &mut self.transmits,
                events: &mut self.events,
                stats: &mut self.stats,
                ooo_budget: 0,
                policy: ConnectionPolicy::default(),
                large_segment: false,
            };
            if !tracked.conn.on_timeout(&mut ctx) {
                if before.half_open {
                    self.stats.half_open_expired += 1;
                }
                self.forget(&key, before);
                continue;
            }
            let d = tracked.conn.deadline(&self.config);
            tracked.scheduled = Some(d);
            self.timers.push(Reverse((d, key)));
            let after = Footprint::of(&tracked.conn);
            self.account(&key, before, after);
        }
        self.release_spare_room();
    }

    /// A hash map or heap never returns room by itself, so without this a
    /// daemon that once held a burst of 65,536 connections would keep their
    /// slots for good. Shrinking only at an eighth, to twice what is held,
    /// leaves a load that merely goes up and down without reallocations.
    /// Connections leave the table in `handle_timeout`, so that is where
    /// this runs; it costs two comparisons when there is nothing to do.
    fn release_spare_room(&mut self) {
        fn spare(len: usize, capacity: usize) -> bool {
            capacity >= MIN_ROOM_TO_RELEASE && len <= capacity / 8
        }
        if spare(self.table.len(), self.table.capacity()) {
            self.table.shrink_to(self.table.len() * 2);
            self.guarded_pairs.shrink_to(self.guarded_pairs.len() * 2);
        }
        // A deadline that moves earlier is pushed again and its old entry
        // is only skipped when it comes up: each closing connection leaves
        // one behind for up to the idle timeout. Once they outnumber the
        // live ones, the heap is rebuilt from the table (each entry's one
        // live deadline), which costs no more than the pushes that made
        // the stale entries.
        if self.timers.len() > 2 * self.table.len() + MIN_ROOM_TO_RELEASE {
            self.timers = self
                .table
                .iter()
                .filter_map(|(key, t)| t.scheduled.map(|d| Reverse((d, *key))))
                .collect();
        }
        if spare(self.timers.len(), self.timers.capacity()) {
            self.timers.shrink_to(self.timers.len() * 2);
        }
    }

    /// The next packet to send or deliver; call until `None` after every
    /// `handle_*`.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When [`Engine::handle_timeout`] should run next. It may be earlier
    /// than strictly needed (a deadline that moved later), never later.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// The next event for the daemon (logs, key log, waiting lookups).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// What is known about the connection between `local` and `remote`
    /// (this host's view; IPv4-mapped IPv6 addresses count as IPv4).
    pub fn lookup(&self, local: SocketAddr, remote: SocketAddr) -> Lookup {
        self.table
            .get(&(canonical(local), canonical(remote)))
            .map_or(Lookup::Unknown, |t| t.conn.lookup())
    }

    /// Every tracked connection.
    pub fn connections(&self) -> impl Iterator<Item = ConnectionInfo> + '_ {
        self.table.values().map(|t| info(&t.conn))
    }

    /// The (local, remote) pair of every tracked connection: cheap to
    /// copy, so a caller can then read a large table a slice at a time
    /// with [`Engine::connection`], handling packets in between.
    pub fn connection_keys(&self) -> Vec<(SocketAddr, SocketAddr)> {
        self.table.keys().copied().collect()
    }

    /// One tracked connection, if it still is.
    pub fn connection(&self, local: SocketAddr, remote: SocketAddr) -> Option<ConnectionInfo> {
        self.table
            .get(&(canonical(local), canonical(remote)))
            .map(|t| info(&t.conn))
    }

    /// Number of tracked connections.
    pub fn connection_count(&self) -> usize {
        self.table.len()
    }

    /// Forgets every cached resumption secret; returns how many there were.
    pub fn flush_resumption(&mut self) -> usize {
        let n = self.host.cache().len();
        self.host.cache_mut().clear();
        n
    }

    /// Registers `policy` for the connections whose first SYN `scope`
    /// names the local endpoint `local` (see [`PolicyScope`]; an
    /// unspecified address matches any local address with that port).
    /// Replaces an earlier registration for the same scope and endpoint.
    pub fn set_policy(
        &mut self,
        now: Instant,
        scope: PolicyScope,
        local: SocketAddr,
        policy: ConnectionPolicy,
    ) -> Result<(), PolicyError> {
        self.policies.set(now, scope, local, policy)
    }

    /// Removes the registration for `scope` and `local`; returns whether
    /// there was one. Connections already opened keep their policy.
    pub fn clear_policy(&mut self, scope: PolicyScope, local: SocketAddr) -> bool {
        self.policies.clear(scope, local)
    }

    /// The registration for exactly `scope` and `local`, if one is live
    /// (no wildcard matching: this is what [`Engine::set_policy`] would
    /// replace).
    pub fn policy(
        &self,
        now: Instant,
        scope: PolicyScope,
        local: SocketAddr,
    ) -> Option<ConnectionPolicy> {
        self.policies.get(now, scope, local)
    }

    /// Policy registrations currently held (expired ones until they are
    /// next looked at).
    pub fn policy_count(&self) -> usize {
        self.policies.len()
    }

    /// Resumption secrets currently cached.
    pub fn resumption_cache_len(&self) -> usize {
        self.host.cache().len()
    }
}

fn info(conn: &Connection) -> ConnectionInfo {
    let (bytes_sent, bytes_received) = conn.byte_counts();
    ConnectionInfo {
        local: conn.local,
        remote: conn.remote,
        state: conn.lookup(),
        phase: conn.phase(),
        bytes_sent,
        bytes_received,
        first_seen: conn.first_seen,
        guarded: conn.guards_plaintext(),
    }
}

/// Whether the TCP checksum of a packet that parsed as IP + TCP is right.
fn checksum_ok(packet: &[u8]) -> bool {
    match crate::wire::ip::IpLayer::parse(packet) {
        Ok((ip, seg)) => crate::wire::checksum::tcp(ip.src, ip.dst, seg) == 0,
        Err(_) => false,
    }
}

fn host_pair(local: IpAddr, remote: IpAddr) -> HostPair {
    let ip = |a: IpAddr| canonical(SocketAddr::new(a, 0)).ip();
    (ip(local), ip(remote))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{IpLayer, Packet, TcpFlags, TcpOption, TcpRepr};
    use tcpcrypt_proto::TestRng;

    /// Opens `n` connections from 10.0.0.1 (our SYNs) to distinct ports.
    fn open(engine: &mut Engine, now: Instant, ports: std::ops::Range<u16>) {
        for port in ports {
            let mut syn = Packet {
                ip: IpLayer::new_minimal([10, 0, 0, 1].into(), [10, 0, 0, 2].into()),
                tcp: TcpRepr {
                    src_port: port,
                    dst_port: 80,
                    seq: u32::from(port),
                    ack: 0,
                    flags: TcpFlags::SYN,
                    window: 65535,
                    urgent: 0,
                    options: vec![TcpOption::Mss(1460)],
                    payload: Default::default(),
                },
            }
            .to_bytes()
            .expect("a SYN emits");
            let _ = engine.handle_packet(now, Direction::Outbound, &mut syn);
            while engine.poll_transmit().is_some() {}
            while engine.poll_event().is_some() {}
        }
    }

    /// Runs every timer due by `now`.
    fn expire(engine: &mut Engine, now: Instant) {
        while engine.poll_timeout().is_some_and(|t| t <= now) {
            engine.handle_timeout(now);
        }
        while engine.poll_event().is_some() {}
    }

    /// Each connection `open` made is answered by a peer without ENO (so
    /// it is plain TCP, with the idle timeout as its deadline) and then
    /// reset by our kernel (which moves its deadline to the cleanup delay).
    fn answer_plain_then_reset(engine: &mut Engine, now: Instant, ports: std::ops::Range<u16>) {
        let segment = |inbound: bool, port: u16, seq: u32, ack: u32, flags: TcpFlags| {
            let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
            let (src, dst, sp, dp) = if inbound {
                (b, a, 80, port)
            } else {
                (a, b, port, 80)
            };
            Packet {
                ip: IpLayer::new_minimal(src, dst),
                tcp: TcpRepr {
                    src_port: sp,
                    dst_port: dp,
                    seq,
                    ack,
                    flags,
                    window: 65535,
                    urgent: 0,
                    options: Vec::new(),
                    payload: Default::default(),
                },
            }
            .to_bytes()
            .expect("a segment emits")
        };
        for port in ports {
            let isn = u32::from(port);
            let mut synack = segment(true, port, 5000, isn + 1, TcpFlags::SYN | TcpFlags::ACK);
            let _ = engine.handle_packet(now, Direction::Inbound, &mut synack);
            let mut rst = segment(false, port, isn + 1, 0, TcpFlags::RST);
            let _ = engine.handle_packet(now, Direction::Outbound, &mut rst);
            while engine.poll_transmit().is_some() {}
            while engine.poll_event().is_some() {}
        }
    }

    #[test]
    fn deadlines_that_moved_earlier_do_not_pile_up_in_the_timer_heap() {
        // Every connection that closes moves its deadline from the
        // handshake or idle timeout to the cleanup delay; the old deadline
        // stays in the heap. With the idle timeout at over two hours, a
        // host opening and closing connections all day would keep one heap
        // entry for each connection of the last two hours.
        let mut engine = Engine::new(EngineConfig::default(), Box::new(TestRng::new(1)));
        let t0 = Instant::now();
        let cleanup = engine.config.cleanup_delay;
        for round in 0..4u16 {
            let ports = 10_000 + round * 4000..14_000 + round * 4000;
            let now = t0 + cleanup * 2 * u32::from(round);
            open(&mut engine, now, ports.clone());
            answer_plain_then_reset(&mut engine, now, ports);
            expire(&mut engine, now + cleanup);
            assert_eq!(engine.connection_count(), 0, "round {round}");
            assert!(
                engine.timers.len() <= MIN_ROOM_TO_RELEASE,
                "round {round}: {} timers for an empty table",
                engine.timers.len()
            );
        }
    }

    #[test]
    fn a_drained_table_gives_its_room_back_and_a_busy_one_keeps_it() {
        let mut engine = Engine::new(EngineConfig::default(), Box::new(TestRng::new(1)));
        let t0 = Instant::now();
        let timeout = engine.config.handshake_timeout;
        open(&mut engine, t0, 10_000..14_000);
        assert!(engine.table.capacity() >= 4000);
        assert!(engine.timers.capacity() >= 4000);

        // Most of them go (their handshakes time out) but more than an
        // eighth of the room stays in use: no reallocation, which would
        // leave room for 2 × 1000.
        let later = t0 + timeout / 2;
        open(&mut engine, later, 20_000..21_000);
        expire(&mut engine, t0 + timeout);
        assert_eq!(engine.connection_count(), 1000);
        assert!(
            engine.table.capacity() > 4000,
            "{}",
            engine.table.capacity()
        );

        // All of them go: the room goes with them.
        expire(&mut engine, later + timeout);
        assert_eq!(engine.connection_count(), 0);
        assert!(engine.table.capacity() < 64, "{}", engine.table.capacity());
        assert!(
            engine.timers.capacity() < 64,
            "{}",
            engine.timers.capacity()
        );

        // And the table grows again as needed.
        open(&mut engine, later + timeout, 30_000..31_000);
        assert_eq!(engine.connection_count(), 1000);
    }
}
