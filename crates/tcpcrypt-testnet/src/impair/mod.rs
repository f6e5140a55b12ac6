//! A lossy, reordering, resegmenting, tampering router for integration
//! tests, since the test kernel has no `tc netem`.
//!
//! [`Impairment::start`] puts the router's forwarded traffic on two
//! NFQUEUEs (one per direction, told apart by the input interface) and
//! reads them on a thread inside the router namespace. Per direction a
//! [`Plan`] says what to do; a seeded generator decides for each packet, so
//! the same packets in the same order meet the same fate. What it can do:
//! drop packets; hold one and release it after N later packets or T ms
//! (reordering and delay); duplicate; split a TCP segment into pieces, or
//! join two consecutive segments of a flow (or re-cut them into three when
//! joined they would not fit the path); flip a payload bit with the checksum
//! left wrong or recomputed; mark ECN-capable packets CE; rewrite the MSS
//! option of SYNs; drop the router's ICMP errors (a path-MTU black hole).
//!
//! The decisions ([`Direction`]) are plain code fed packet bytes and the
//! time; only [`Impairment`] touches netlink and raw sockets, through the
//! daemon's own `nfqueue` and `inject` modules. Packet edits go through
//! the engine's wire module ([`rewrite`]).

pub mod rewrite;

use std::collections::{HashMap, VecDeque};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tcpcrypt_engine::wire::TcpFlags;
use tcpcryptd::inject::Injector;
use tcpcryptd::nfqueue::{Message, NfVerdict, Queue, RecvBatch, VerdictBatch};

use crate::{Netns, Result, TestnetError};
use rewrite::{Flow, Segment};

/// What to do to the packets of one direction. Shares are probabilities in
/// `0.0..=1.0`; everything is off by default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Share of TCP packets dropped.
    pub drop: f64,
    /// Share of TCP packets sent twice.
    pub duplicate: f64,
    /// Share of TCP packets held back, each released after
    /// [`Plan::hold_packets`] later packets of this direction or after
    /// [`Plan::hold_for`], whichever comes first.
    pub hold: f64,
    pub hold_packets: u32,
    pub hold_for: Duration,
    /// Share of data segments split into two to four pieces.
    pub split: f64,
    /// Share of data segments held until the next consecutive segment of
    /// their flow (at most [`Plan::hold_for`], default 10 ms) to be joined
    /// with it.
    pub merge: f64,
    /// Share of data segments with one payload bit flipped and the TCP
    /// checksum left as it was (so it is wrong).
    pub flip_bad_checksum: f64,
    /// Share of data segments with one payload bit flipped and the checksum
    /// recomputed (only authentication can notice).
    pub flip_good_checksum: f64,
    /// Share of ECN-capable packets marked Congestion Experienced.
    pub ce_mark: f64,
    /// New value of the MSS option in SYNs.
    pub mss: Option<u16>,
    /// Drop the router's ICMP "fragmentation needed" / "packet too big"
    /// errors travelling this way.
    pub drop_icmp: bool,
}

/// What happened to one direction's packets, and what was seen on them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub packets: u64,
    pub tcp: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub held: u64,
    pub split: u64,
    pub merged: u64,
    pub bridged: u64,
    pub flipped_bad_checksum: u64,
    pub flipped_good_checksum: u64,
    pub ce_marked: u64,
    pub mss_rewritten: u64,
    pub icmp_dropped: u64,
    pub icmp_passed: u64,
    /// Length of the longest packet an ICMP error quoted as too big.
    pub icmp_quoted_largest: usize,
    /// TCP packets carrying at least one SACK block.
    pub with_sack: u64,
    /// SYNs (without ACK) asking for ECN (ECE and CWR set, RFC 3168).
    pub ecn_syns: u64,
    /// TCP packets with ECE set, and with CWR set, outside SYNs.
    pub ece: u64,
    pub cwr: u64,
    /// Largest TCP payload, and largest TCP packet, forwarded.
    pub largest_payload: usize,
    pub largest_packet: usize,
}

/// A small seeded generator (splitmix64): reproducible, no dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        // 53 random bits make a uniform float in [0, 1).
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        u < p
    }
}

/// One thing to do with the kernel or the raw socket, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// The verdict on queued packet `id`; `payload` replaces it.
    Verdict {
        id: u32,
        accept: bool,
        payload: Option<Vec<u8>>,
    },
    /// A packet the queue never held (a duplicate, an extra piece), sent
    /// from the router.
    Inject(Vec<u8>),
}

struct Held {
    id: u32,
    release_after: u64,
    deadline: Instant,
    payload: Option<Vec<u8>>,
}

struct Pending {
    id: u32,
    bytes: Vec<u8>,
    seg: Segment,
    deadline: Instant,
}

/// The decisions for one direction: fed packets and the time, returns
/// actions. No I/O.
pub struct Direction {
    plan: Plan,
    rng: Rng,
    count: u64,
    held: VecDeque<Held>,
    pending: HashMap<Flow, Pending>,
    stats: Stats,
}

/// Fixed per-packet random draws, taken whatever the packet, so one
/// decision never shifts the dice of the next packet.
struct Draws {
    drop: bool,
    duplicate: bool,
    hold: bool,
    split: bool,
    merge: bool,
    flip_bad: bool,
    flip_good: bool,
    ce: bool,
    bits: u64,
    cuts: u64,
}

impl Direction {
    pub fn new(plan: Plan, seed: u64) -> Direction {
        Direction {
            plan,
            rng: Rng::new(seed),
            count: 0,
            held: VecDeque::new(),
            pending: HashMap::new(),
            stats: Stats::default(),
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn set_plan(&mut self, plan: Plan) {
        self.plan = plan;
    }

    fn draw(&mut self) -> Draws {
        let p = &self.plan;
        let (drop, duplicate, hold, split, merge) = (p.drop, p.duplicate, p.hold, p.split, p.merge);
        let (flip_bad, flip_good, ce) = (p.flip_bad_checksum, p.flip_good_checksum, p.ce_mark);
        let r = &mut self.rng;
        Draws {
            drop: r.chance(drop),
            duplicate: r.chance(duplicate),
            hold: r.chance(hold),
            split: r.chance(split),
            merge: r.chance(merge),
            flip_bad: r.chance(flip_bad),
            flip_good: r.chance(flip_good),
            ce: r.chance(ce),
            bits: r.next_u64(),
            cuts: r.next_u64(),
        }
    }

    /// The earliest time [`Direction::due`] has something to release.
    pub fn next_deadline(&self) -> Option<Instant> {
        let held = self.held.iter().map(|h| h.deadline);
        let pending = self.pending.values().map(|p| p.deadline);
        held.chain(pending).min()
    }

    /// Releases held packets and lone merge candidates whose time is up.
    pub fn due(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let mut expired: Vec<Flow> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(f, _)| *f)
            .collect();
        expired.sort();
        for f in expired {
            if let Some(p) = self.pending.remove(&f) {
                out.push(accept(p.id, None));
            }
        }
        let mut keep = VecDeque::new();
        for h in self.held.drain(..) {
            if h.deadline <= now {
                out.push(accept(h.id, h.payload));
            } else {
                keep.push_back(h);
            }
        }
        self.held = keep;
        out
    }

    /// Decides about queued packet `id` (a whole IP packet).
    pub fn handle(&mut self, now: Instant, id: u32, bytes: &[u8]) -> Vec<Action> {
        self.count += 1;
        self.stats.packets += 1;
        let mut out = Vec::new();
        self.release_counted(&mut out);
        let d = self.draw();
        let Ok(seg) = Segment::of(bytes) else {
            // Not TCP (or not editable): only ICMP errors are queued besides
            // TCP, and the plan may black-hole them.
            let quoted = quoted_len(bytes).unwrap_or(0);
            self.stats.icmp_quoted_largest = self.stats.icmp_quoted_largest.max(quoted);
            if self.plan.drop_icmp && is_icmp(bytes) {
                self.stats.icmp_dropped += 1;
                out.push(Action::Verdict {
                    id,
                    accept: false,
                    payload: None,
                });
            } else {
                self.stats.icmp_passed += u64::from(is_icmp(bytes));
                out.push(accept(id, None));
            }
            return out;
        };
        self.observe(&seg, bytes.len());
        // A packet of a flow with a merge candidate: join or release it first.
        if let Some(p) = self.pending.remove(&seg.flow) {
            if seg.is_plain_data() && p.seg.end() == seg.seq && !d.drop {
                self.join(p, id, bytes, &mut out);
                return out;
            }
            out.push(accept(p.id, None));
        }
        if d.drop {
            self.stats.dropped += 1;
            out.push(Action::Verdict {
                id,
                accept: false,
                payload: None,
            });
            return out;
        }
        let mut cur: Option<Vec<u8>> = None;
        let body = |c: &Option<Vec<u8>>| c.clone().unwrap_or_else(|| bytes.to_vec());
        if let Some(mss) = self.plan.mss
            && let Ok(Some(b)) = rewrite::rewrite_mss(&body(&cur), mss)
        {
            self.stats.mss_rewritten += 1;
            cur = Some(b);
        }
        if d.ce
            && let Ok(Some(b)) = rewrite::mark_ce(&body(&cur))
        {
            self.stats.ce_marked += 1;
            cur = Some(b);
        }
        if d.flip_good
            && seg.payload_len > 0
            && let Ok(b) = rewrite::flip_payload_bit(&body(&cur), d.bits, true)
        {
            self.stats.flipped_good_checksum += 1;
            cur = Some(b);
        }
        // A wrong checksum must be the last edit: any re-emit would fix it.
        if d.flip_bad
            && seg.payload_len > 0
            && let Ok(b) = rewrite::flip_payload_bit(&body(&cur), d.bits >> 32, false)
        {
            self.stats.flipped_bad_checksum += 1;
            self.finish(now, id, bytes, Some(b), &d, &mut out);
            return out;
        }
        if seg.is_plain_data() && d.split && seg.payload_len >= 4 {
            let cuts = cut_points(seg.payload_len, d.cuts);
            if let Ok(pieces) = rewrite::split(&body(&cur), &cuts) {
                self.stats.split += 1;
                let mut pieces = pieces.into_iter();
                out.push(accept(id, pieces.next()));
                out.extend(pieces.map(Action::Inject));
                return out;
            }
        }
        if seg.is_plain_data() && d.merge && !seg.flags.contains(TcpFlags::FIN) && !d.hold {
            let wait = if self.plan.hold_for.is_zero() {
                Duration::from_millis(10)
            } else {
                self.plan.hold_for
            };
            self.pending.insert(
                seg.flow,
                Pending {
                    id,
                    bytes: body(&cur),
                    seg,
                    deadline: now + wait,
                },
            );
            // Its verdict waits for the next segment or the deadline.
            return out;
        }
        self.finish(now, id, bytes, cur, &d, &mut out);
        out
    }

    /// Counts what the packet shows, before any edit.
    fn observe(&mut self, seg: &Segment, len: usize) {
        let s = &mut self.stats;
        s.tcp += 1;
        s.largest_payload = s.largest_payload.max(seg.payload_len);
        s.largest_packet = s.largest_packet.max(len);
        s.with_sack += u64::from(seg.has_sack);
        let syn = seg.flags.contains(TcpFlags::SYN);
        let (ece, cwr) = (
            seg.flags.contains(TcpFlags::ECE),
            seg.flags.contains(TcpFlags::CWR),
        );
        if syn && !seg.flags.contains(TcpFlags::ACK) && ece && cwr {
            s.ecn_syns += 1;
        }
        if !syn {
            s.ece += u64::from(ece);
            s.cwr += u64::from(cwr);
        }
    }

    /// Holds, duplicates or passes the (perhaps edited) packet.
    fn finish(
        &mut self,
        now: Instant,
        id: u32,
        original: &[u8],
        payload: Option<Vec<u8>>,
        d: &Draws,
        out: &mut Vec<Action>,
    ) {
        if d.duplicate {
            self.stats.duplicated += 1;
            // The copy leaves at once; a held original then arrives late.
            let copy = payload.clone().unwrap_or_else(|| original.to_vec());
            out.push(Action::Inject(copy));
        }
        if d.hold {
            self.stats.held += 1;
            self.held.push_back(Held {
                id,
                release_after: self.count + u64::from(self.plan.hold_packets.max(1)),
                deadline: now
                    + if self.plan.hold_for.is_zero() {
                        Duration::from_millis(20)
                    } else {
                        self.plan.hold_for
                    },
                payload,
            });
            return;
        }
        out.push(accept(id, payload));
    }

    fn join(&mut self, first: Pending, id: u32, second: &[u8], out: &mut Vec<Action>) {
        // Joined, the packet must still fit the path: no longer than the
        // largest this direction carried so far (the second's header may be
        // longer than the first's: SACK blocks).
        let limit = self.stats.largest_packet;
        let joined_len = second.len() + first.seg.payload_len;
        let pieces = if joined_len <= limit {
            rewrite::merge(&first.bytes, second).map(|m| vec![m])
        } else {
            rewrite::bridge(&first.bytes, second, limit)
        };
        match pieces {
            Ok(pieces) => {
                if pieces.len() == 1 {
                    self.stats.merged += 1;
                } else {
                    self.stats.bridged += 1;
                }
                out.push(Action::Verdict {
                    id: first.id,
                    accept: false,
                    payload: None,
                });
                let mut pieces = pieces.into_iter();
                out.push(accept(id, pieces.next()));
                out.extend(pieces.map(Action::Inject));
            }
            Err(_) => {
                out.push(accept(first.id, None));
                out.push(accept(id, None));
            }
        }
    }

    fn release_counted(&mut self, out: &mut Vec<Action>) {
        let count = self.count;
        let mut keep = VecDeque::new();
        for h in self.held.drain(..) {
            if h.release_after <= count {
                out.push(accept(h.id, h.payload));
            } else {
                keep.push_back(h);
            }
        }
        self.held = keep;
    }
}

fn accept(id: u32, payload: Option<Vec<u8>>) -> Action {
    Action::Verdict {
        id,
        accept: true,
        payload,
    }
}

fn is_icmp(bytes: &[u8]) -> bool {
    match bytes.first().map(|b| b >> 4) {
        Some(4) => bytes.get(9) == Some(&1),
        Some(6) => bytes.get(6) == Some(&58),
        _ => false,
    }
}

/// The length of the packet an ICMP error quotes (the IP length field of
/// the quoted header).
fn quoted_len(bytes: &[u8]) -> Option<usize> {
    match bytes.first()? >> 4 {
        4 => {
            let at = usize::from(bytes.first()? & 0x0f) * 4 + 8;
            let q = bytes.get(at + 2..at + 4)?;
            Some(usize::from(u16::from_be_bytes([q[0], q[1]])))
        }
        6 => {
            let q = bytes.get(40 + 8 + 4..40 + 8 + 6)?;
            Some(40 + usize::from(u16::from_be_bytes([q[0], q[1]])))
        }
        _ => None,
    }
}

/// One to three rising cut points strictly inside `len` bytes (len >= 4).
fn cut_points(len: usize, r: u64) -> Vec<usize> {
    let pieces = 2 + (r % 3) as usize;
    let mut cuts: Vec<usize> = (1..pieces as u64)
        .map(|i| 1 + ((r >> (8 * i)) % (len as u64 - 1)) as usize)
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// Queue numbers inside the router namespace (no daemon runs there).
const QUEUE_TO_SERVER: u16 = 10;
const QUEUE_TO_CLIENT: u16 = 11;

/// The impairment tool running in a router namespace; stops on drop.
pub struct Impairment {
    stop: Arc<AtomicBool>,
    dirs: Arc<Mutex<[Direction; 2]>>,
    thread: Option<JoinHandle<Result<()>>>,
    rules: Vec<(String, Vec<String>)>,
    ns_name: String,
}

impl Impairment {
    /// Queues the router's forwarded traffic (from `client_if` to the
    /// server, from `server_if` to the client) and starts impairing it with
    /// `to_server` and `to_client`, seeded by `seed`.
    pub fn start(
        router: &Netns,
        client_if: &str,
        server_if: &str,
        seed: u64,
        to_server: Plan,
        to_client: Plan,
    ) -> Result<Impairment> {
        let dirs = Arc::new(Mutex::new([
            Direction::new(to_server, seed),
            Direction::new(to_client, seed ^ 0x5555_aaaa_5555_aaaa),
        ]));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let (stop, dirs) = (stop.clone(), dirs.clone());
            router.spawn_thread(move || run(&stop, &dirs, ready_tx))
        };
        let mut me = Impairment {
            stop,
            dirs,
            thread: Some(thread),
            rules: Vec::new(),
            ns_name: router.name().to_string(),
        };
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                // The thread ended without a word: its result says why.
                me.stop.store(true, Ordering::Relaxed);
                return match me.thread.take().map(JoinHandle::join) {
                    Some(Ok(Err(e))) => Err(e),
                    _ => Err(TestnetError::Daemon(
                        "impairment thread did not start".into(),
                    )),
                };
            }
        }
        for (cmd, family_icmp) in [
            (
                "iptables",
                ["-p", "icmp", "--icmp-type", "fragmentation-needed"],
            ),
            (
                "ip6tables",
                ["-p", "ipv6-icmp", "--icmpv6-type", "packet-too-big"],
            ),
        ] {
            let q = |n: u16| n.to_string();
            let rules: [Vec<String>; 4] = [
                strings(
                    &["FORWARD", "-i", client_if, "-j", "NFQUEUE", "--queue-num"],
                    &q(QUEUE_TO_SERVER),
                ),
                strings(
                    &["FORWARD", "-i", server_if, "-j", "NFQUEUE", "--queue-num"],
                    &q(QUEUE_TO_CLIENT),
                ),
                // The router's own ICMP errors leave through OUTPUT, not
                // FORWARD; the interface they leave by says where they go.
                strings(
                    &[
                        &["OUTPUT", "-o", client_if][..],
                        &family_icmp[..],
                        &["-j", "NFQUEUE", "--queue-num"],
                    ]
                    .concat(),
                    &q(QUEUE_TO_CLIENT),
                ),
                strings(
                    &[
                        &["OUTPUT", "-o", server_if][..],
                        &family_icmp[..],
                        &["-j", "NFQUEUE", "--queue-num"],
                    ]
                    .concat(),
                    &q(QUEUE_TO_SERVER),
                ),
            ];
            for rule in rules {
                let mut args = vec!["-A".to_string()];
                args.extend(rule.iter().cloned());
                let argv: Vec<&str> = args.iter().map(String::as_str).collect();
                router.exec(cmd, &argv)?;
                me.rules.push((cmd.to_string(), rule));
            }
        }
        Ok(me)
    }

    /// Replaces the plan of one direction (`to_server` true: packets from
    /// the client), e.g. to start tampering once a connection is up.
    pub fn set_plan(&self, to_server: bool, plan: Plan) {
        let mut dirs = match self.dirs.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        dirs[usize::from(!to_server)].set_plan(plan);
    }

    /// Statistics so far: (towards the server, towards the client).
    pub fn stats(&self) -> (Stats, Stats) {
        let dirs = match self.dirs.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        (dirs[0].stats(), dirs[1].stats())
    }

    /// Removes the rules (traffic then flows unimpaired), stops the thread
    /// and returns the final statistics, or the error that ended it.
    pub fn finish(mut self) -> Result<(Stats, Stats)> {
        self.shutdown()?;
        Ok(self.stats())
    }

    fn shutdown(&mut self) -> Result<()> {
        // Rules first: without a reader the queue (no bypass) drops.
        let path = format!("/run/netns/{}", self.ns_name);
        for (cmd, rule) in self.rules.drain(..) {
            let mut args = vec![
                "netns".to_string(),
                "exec".into(),
                self.ns_name.clone(),
                cmd,
                "-D".into(),
            ];
            args.extend(rule);
            if std::path::Path::new(&path).exists() {
                let _ = std::process::Command::new("ip").args(&args).output();
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(TestnetError::Daemon("impairment thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Impairment {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("tcpcrypt-testnet: impairment in {}: {e}", self.ns_name);
        }
    }
}

fn strings(args: &[&str], last: &str) -> Vec<String> {
    args.iter()
        .map(|s| s.to_string())
        .chain([last.to_string()])
        .collect()
}

fn nfq_err(e: tcpcryptd::nfqueue::NfqError) -> TestnetError {
    TestnetError::Daemon(format!("impairment queue: {e}"))
}

/// The thread: binds both queues and the raw sockets inside the router
/// namespace, says so on `ready`, then serves packets until `stop`.
fn run(
    stop: &AtomicBool,
    dirs: &Mutex<[Direction; 2]>,
    ready: std::sync::mpsc::Sender<Result<()>>,
) -> Result<()> {
    let setup = || -> Result<([Queue; 2], Injector)> {
        let a = Queue::bind(QUEUE_TO_SERVER, 8192, 16 << 20).map_err(nfq_err)?;
        let b = Queue::bind(QUEUE_TO_CLIENT, 8192, 16 << 20).map_err(nfq_err)?;
        let inj = Injector::new(0)
            .map_err(|e| TestnetError::Daemon(format!("impairment raw sockets: {e}")))?;
        Ok(([a, b], inj))
    };
    let (queues, injector) = match setup() {
        Ok(v) => {
            let _ = ready.send(Ok(()));
            v
        }
        Err(e) => {
            let _ = ready.send(Err(TestnetError::Daemon(e.to_string())));
            return Err(e);
        }
    };
    let mut batch = RecvBatch::new(64);
    let mut verdicts = [
        VerdictBatch::new(QUEUE_TO_SERVER),
        VerdictBatch::new(QUEUE_TO_CLIENT),
    ];
    let mut injects: Vec<Vec<u8>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let timeout = {
            let dirs = dirs.lock().unwrap_or_else(|p| p.into_inner());
            let next = dirs.iter().filter_map(Direction::next_deadline).min();
            next.map_or(50, |t| {
                t.saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(50) as i32
            })
        };
        let mut fds = queues.each_ref().map(|q| libc::pollfd {
            fd: q.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: `fds` is a live array of two pollfd structures.
        unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
        let mut dirs_guard = dirs.lock().unwrap_or_else(|p| p.into_inner());
        for (i, q) in queues.iter().enumerate() {
            loop {
                let n = q.recv_batch(&mut batch).map_err(nfq_err)?;
                if n == 0 {
                    break;
                }
                for dgram in batch.datagrams() {
                    for msg in tcpcryptd::nfqueue::parse_datagram(dgram) {
                        if let Message::Packet(p) = msg {
                            let actions = dirs_guard[i].handle(Instant::now(), p.id, p.payload);
                            apply(q, &mut verdicts[i], &mut injects, actions)?;
                        }
                    }
                }
            }
        }
        let now = Instant::now();
        for (i, q) in queues.iter().enumerate() {
            let actions = dirs_guard[i].due(now);
            apply(q, &mut verdicts[i], &mut injects, actions)?;
        }
        drop(dirs_guard);
        for (q, v) in queues.iter().zip(verdicts.iter_mut()) {
            q.send_verdicts(v).map_err(nfq_err)?;
        }
        for pkt in injects.drain(..) {
            // A full send buffer loses the packet: one more loss for TCP.
            let _ = injector.send(&pkt);
        }
    }
    // Let whatever is still held go, so the kernel frees it.
    let mut dirs_guard = dirs.lock().unwrap_or_else(|p| p.into_inner());
    let far = Instant::now() + Duration::from_secs(3600);
    for (i, q) in queues.iter().enumerate() {
        let actions = dirs_guard[i].due(far);
        apply(q, &mut verdicts[i], &mut injects, actions)?;
        q.send_verdicts(&mut verdicts[i]).map_err(nfq_err)?;
    }
    Ok(())
}

fn apply(
    q: &Queue,
    verdicts: &mut VerdictBatch,
    injects: &mut Vec<Vec<u8>>,
    actions: Vec<Action>,
) -> Result<()> {
    for a in actions {
        match a {
            Action::Verdict {
                id,
                accept,
                payload,
            } => {
                let v = if accept {
                    NfVerdict::Accept
                } else {
                    NfVerdict::Drop
                };
                q.push_verdict(verdicts, id, v, None, payload.as_deref())
                    .map_err(nfq_err)?;
            }
            Action::Inject(p) => injects.push(p),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use tcpcrypt_engine::wire::{IpLayer, Packet, TcpRepr};

    fn seg(seq: u32, payload: &[u8]) -> Vec<u8> {
        Packet {
            ip: IpLayer::new_minimal(
                Ipv4Addr::new(10, 77, 1, 1).into(),
                Ipv4Addr::new(10, 77, 2, 2).into(),
            ),
            tcp: TcpRepr {
                src_port: 40000,
                dst_port: 7100,
                seq,
                ack: 1,
                flags: TcpFlags::ACK,
                window: 1000,
                urgent: 0,
                options: Vec::new(),
                payload: payload.into(),
            },
        }
        .to_bytes()
        .unwrap()
    }

    fn verdict(a: &Action) -> Option<(u32, bool)> {
        match a {
            Action::Verdict { id, accept, .. } => Some((*id, *accept)),
            Action::Inject(_) => None,
        }
    }

    fn run_many(plan: &Plan, seed: u64, n: u32) -> Vec<Action> {
        let mut d = Direction::new(plan.clone(), seed);
        let now = Instant::now();
        (0..n)
            .flat_map(|i| d.handle(now, i, &seg(i * 100, &[7u8; 100])))
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_fates_and_another_seed_others() {
        let plan = Plan {
            drop: 0.2,
            duplicate: 0.1,
            split: 0.1,
            ..Plan::default()
        };
        assert_eq!(run_many(&plan, 7, 300), run_many(&plan, 7, 300));
        assert_ne!(run_many(&plan, 7, 300), run_many(&plan, 8, 300));
    }

    #[test]
    fn the_drop_share_is_close_to_the_plan() {
        let plan = Plan {
            drop: 0.03,
            ..Plan::default()
        };
        let dropped = run_many(&plan, 1, 20_000)
            .iter()
            .filter(|a| verdict(a).is_some_and(|(_, ok)| !ok))
            .count();
        assert!((450..750).contains(&dropped), "{dropped} of 20000");
    }

    #[test]
    fn a_held_packet_follows_the_next_n_packets_or_its_deadline() {
        let plan = Plan {
            hold: 1.0,
            hold_packets: 2,
            hold_for: Duration::from_millis(30),
            ..Plan::default()
        };
        let mut d = Direction::new(plan, 3);
        let t0 = Instant::now();
        assert!(d.handle(t0, 1, &seg(0, b"a")).is_empty());
        assert!(d.handle(t0, 2, &seg(1, b"b")).is_empty());
        d.set_plan(Plan::default());
        let out: Vec<_> = d
            .handle(t0, 3, &seg(2, b"c"))
            .iter()
            .filter_map(verdict)
            .collect();
        assert_eq!(
            out,
            vec![(1, true), (3, true)],
            "1 released after two later packets"
        );
        assert_eq!(d.next_deadline(), Some(t0 + Duration::from_millis(30)));
        assert!(d.due(t0 + Duration::from_millis(29)).is_empty());
        let late: Vec<_> = d
            .due(t0 + Duration::from_millis(30))
            .iter()
            .filter_map(verdict)
            .collect();
        assert_eq!(late, vec![(2, true)]);
        assert_eq!(d.stats().held, 2);
    }

    #[test]
    fn a_duplicate_is_injected_byte_for_byte_and_the_original_passes() {
        let plan = Plan {
            duplicate: 1.0,
            ..Plan::default()
        };
        let mut d = Direction::new(plan, 3);
        let p = seg(5, b"dup");
        let out = d.handle(Instant::now(), 9, &p);
        assert_eq!(out, vec![Action::Inject(p.clone()), accept(9, None)]);
    }

    #[test]
    fn consecutive_segments_are_joined_when_they_fit_and_re_cut_when_not() {
        let plan = Plan {
            merge: 1.0,
            ..Plan::default()
        };
        let mut d = Direction::new(plan, 3);
        let now = Instant::now();
        // A 100-byte payload sets the size the path is known to carry.
        assert!(d.handle(now, 1, &seg(0, &[1u8; 100])).is_empty());
        let out = d.handle(now, 2, &seg(100, &[2u8; 30]));
        assert_eq!(out.len(), 4, "drop, accept, two injected: {out:?}");
        assert_eq!(verdict(&out[0]), Some((1, false)));
        assert_eq!(d.stats().bridged, 1);
        d.set_plan(Plan {
            merge: 1.0,
            ..Plan::default()
        });
        assert!(d.handle(now, 3, &seg(130, &[3u8; 30])).is_empty());
        let out = d.handle(now, 4, &seg(160, &[4u8; 40]));
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(verdict(&out[0]), Some((3, false)));
        let Action::Verdict {
            id: 4,
            accept: true,
            payload: Some(m),
        } = &out[1]
        else {
            panic!("no joined packet: {out:?}");
        };
        let p = Packet::parse(m).unwrap();
        assert_eq!(p.tcp.seq, 130);
        assert_eq!(p.tcp.payload.len(), 70);
        assert_eq!(d.stats().merged, 1);
    }

    #[test]
    fn a_lone_merge_candidate_passes_at_its_deadline() {
        let plan = Plan {
            merge: 1.0,
            hold_for: Duration::from_millis(5),
            ..Plan::default()
        };
        let mut d = Direction::new(plan, 3);
        let now = Instant::now();
        assert!(d.handle(now, 1, &seg(0, b"x")).is_empty());
        assert_eq!(d.due(now + Duration::from_millis(5)), vec![accept(1, None)]);
    }

    #[test]
    fn icmp_errors_are_dropped_only_when_planned() {
        // An IPv4 header with protocol 1 is enough: it is not TCP.
        let mut icmp = vec![0x45u8, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0];
        icmp.extend([10, 77, 2, 254, 10, 77, 1, 1, 3, 4, 0, 0, 0, 0, 5, 0]);
        // The start of the quoted packet: a 1,500-byte IPv4 packet.
        icmp.extend([0x45, 0, 0x05, 0xdc, 0, 0, 0x40, 0, 64, 6]);
        let mut d = Direction::new(Plan::default(), 1);
        assert_eq!(d.handle(Instant::now(), 1, &icmp), vec![accept(1, None)]);
        d.set_plan(Plan {
            drop_icmp: true,
            ..Plan::default()
        });
        let out = d.handle(Instant::now(), 2, &icmp);
        assert_eq!(verdict(&out[0]), Some((2, false)));
        assert_eq!(d.stats().icmp_dropped, 1);
        assert_eq!(d.stats().icmp_quoted_largest, 1500, "quoted length");
    }

    #[test]
    fn cut_points_rise_strictly_inside_the_payload() {
        for r in 0..2000u64 {
            let r = r.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for len in [4usize, 5, 100, 1448] {
                let cuts = cut_points(len, r);
                assert!(!cuts.is_empty());
                assert!(cuts.windows(2).all(|w| w[0] < w[1]));
                assert!(cuts.iter().all(|&c| c > 0 && c < len), "{cuts:?} {len}");
            }
        }
    }
}
