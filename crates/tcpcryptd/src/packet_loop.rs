//! The packet thread: the only owner of the engine.
//!
//! It waits on the queue socket and an eventfd, feeds packets and the clock
//! to the engine, sends the verdicts in batches, injects what the engine
//! wants sent, and answers the control server's questions between batches.
//! It never blocks on anything but `poll`: replies to control clients go
//! through unbounded channels, events to the outcome thread likewise, and the
//! raw sockets are non-blocking.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use crate::engine_api::{
    ConnectionView, Direction, EngineEvent, LookupState, PacketEngine, Transmit, Verdict,
};
use crate::inject::Injector;
use crate::nfqueue::{Hook, Message, NfVerdict, NfqError, Queue, RecvBatch, VerdictBatch};
use crate::stats_report::StatsReport;
use crate::sys::{EventFd, poll_readable};

/// Datagrams per `recvmmsg`.
const BATCH: usize = 64;
/// Batches handled before control requests and timers get a turn.
const BATCHES_PER_ROUND: usize = 8;
/// Control requests handled per round.
const REQUESTS_PER_ROUND: usize = 256;
/// Pending requests the control server may queue before it answers "busy".
pub const REQUEST_QUEUE: usize = 1024;

/// A question from the control server.
pub enum EngineRequest {
    Lookup {
        local: SocketAddr,
        remote: SocketAddr,
        wait: Duration,
        reply: Sender<LookupState>,
    },
    /// Answered with a snapshot shared by every `List` of the same round.
    List {
        reply: Sender<Arc<Vec<ConnectionView>>>,
    },
    FlushResumption {
        reply: Sender<usize>,
    },
}

/// How control threads reach the packet thread.
#[derive(Clone)]
pub struct EngineHandle {
    tx: SyncSender<EngineRequest>,
    wake: Arc<EventFd>,
}

/// The packet thread could not take the request.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error("the packet thread has too many pending requests")]
    Busy,
    #[error("the packet thread has stopped")]
    Stopped,
    #[error("the packet thread did not answer in time")]
    Timeout,
}

impl EngineHandle {
    pub fn new(tx: SyncSender<EngineRequest>, wake: Arc<EventFd>) -> EngineHandle {
        EngineHandle { tx, wake }
    }

    fn submit<T>(
        &self,
        make: impl FnOnce(Sender<T>) -> EngineRequest,
        timeout: Duration,
    ) -> Result<T, HandleError> {
        let (reply, rx) = std::sync::mpsc::channel();
        match self.tx.try_send(make(reply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(HandleError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(HandleError::Stopped),
        }
        self.wake.wake();
        rx.recv_timeout(timeout).map_err(|e| match e {
            std::sync::mpsc::RecvTimeoutError::Timeout => HandleError::Timeout,
            std::sync::mpsc::RecvTimeoutError::Disconnected => HandleError::Stopped,
        })
    }

    /// Looks a connection up, waiting up to `wait` for a pending one.
    pub fn lookup(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        wait: Duration,
    ) -> Result<LookupState, HandleError> {
        self.submit(
            |reply| EngineRequest::Lookup {
                local,
                remote,
                wait,
                reply,
            },
            wait + Duration::from_secs(5),
        )
    }

    pub fn list(&self) -> Result<Arc<Vec<ConnectionView>>, HandleError> {
        self.submit(
            |reply| EngineRequest::List { reply },
            Duration::from_secs(5),
        )
    }

    pub fn flush_resumption(&self) -> Result<usize, HandleError> {
        self.submit(
            |reply| EngineRequest::FlushResumption { reply },
            Duration::from_secs(5),
        )
    }
}

struct Waiter {
    local: SocketAddr,
    remote: SocketAddr,
    deadline: Instant,
    reply: Sender<LookupState>,
}

/// Counters an operator may want at shutdown.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoopStats {
    pub packets: u64,
    pub modified: u64,
    pub dropped: u64,
    pub injected: u64,
    pub inject_failures: u64,
    pub engine_panics: u64,
}

/// Everything the packet thread owns.
pub struct PacketLoop<E: PacketEngine> {
    pub engine: E,
    pub queue: Queue,
    pub injector: Injector,
    pub requests: Receiver<EngineRequest>,
    pub wake: Arc<EventFd>,
    pub events: Sender<EngineEvent>,
    pub stop: Arc<AtomicBool>,
    /// Turns the engine's counters into rate-limited log lines.
    pub report: StatsReport,
}

impl<E: PacketEngine> PacketLoop<E> {
    /// Runs until `stop` is set (and the eventfd woken) or the queue socket
    /// fails.
    pub fn run(mut self) -> Result<LoopStats, NfqError> {
        let mut batch = RecvBatch::new(BATCH);
        let mut verdicts = VerdictBatch::new(self.queue.queue_num());
        let mut scratch = Vec::with_capacity(65536);
        let mut waiters: Vec<Waiter> = Vec::new();
        let mut last_list = ListSnapshot::default();
        let mut stats = LoopStats::default();
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let deadline = [
                self.engine.poll_timeout(),
                waiters.iter().map(|w| w.deadline).min(),
                self.report.deadline(),
            ]
            .into_iter()
            .flatten()
            .min();
            let timeout = deadline.map(|d| d.saturating_duration_since(now));
            let [queue_ready, _] =
                poll_readable([self.queue.as_raw_fd(), self.wake.as_raw_fd()], timeout);
            if queue_ready {
                for _ in 0..BATCHES_PER_ROUND {
                    if self.queue.recv_batch(&mut batch)? == 0 {
                        break;
                    }
                    let now = Instant::now();
                    for dgram in batch.datagrams() {
                        for msg in crate::nfqueue::parse_datagram(dgram) {
                            let p = match msg {
                                Message::Packet(p) => p,
                                Message::Ack { errno, .. } if errno != 0 => {
                                    log::debug!(
                                        "kernel refused a verdict: {}",
                                        std::io::Error::from_raw_os_error(errno)
                                    );
                                    continue;
                                }
                                _ => continue,
                            };
                            stats.packets += 1;
                            let (v, modified) =
                                self.decide(now, p.hook, p.payload, &mut scratch, &mut stats);
                            let payload = modified.then_some(scratch.as_slice());
                            self.queue.push_verdict(&mut verdicts, p.id, v, payload)?;
                            // Packets the engine made in answer to this one
                            // must follow it on the wire: the kernel passes
                            // the verdicted packets on during the send.
                            if let Some(t) = self.engine.poll_transmit() {
                                self.queue.send_verdicts(&mut verdicts)?;
                                self.inject(&t, &mut stats);
                            }
                        }
                    }
                    self.queue.send_verdicts(&mut verdicts)?;
                    self.flush_engine(&mut waiters, &mut stats);
                }
            }
            let now = Instant::now();
            if self.engine.poll_timeout().is_some_and(|t| t <= now) {
                self.guarded(&mut stats, |e| e.handle_timeout(now));
                self.flush_engine(&mut waiters, &mut stats);
            }
            self.wake.drain();
            let mut lists = Vec::new();
            for _ in 0..REQUESTS_PER_ROUND {
                let Ok(req) = self.requests.try_recv() else {
                    break;
                };
                self.serve(req, &mut waiters, &mut lists, now);
            }
            answer_lists(&self.engine, now, lists, &mut last_list);
            self.expire_waiters(&mut waiters, Instant::now());
            for line in self.report.poll(Instant::now(), &self.engine) {
                log::log!(line.level, "{}", line.text);
            }
        }
        Ok(stats)
    }

    /// Runs the engine on one packet. Returns the verdict and whether
    /// `scratch` holds a replacement. A panicking engine drops the packet:
    /// passing it unchanged could put plaintext on the wire.
    fn decide(
        &mut self,
        now: Instant,
        hook: Hook,
        payload: &[u8],
        scratch: &mut Vec<u8>,
        stats: &mut LoopStats,
    ) -> (NfVerdict, bool) {
        let dir = match hook {
            Hook::LocalOut | Hook::PostRouting => Direction::Outbound,
            Hook::LocalIn | Hook::PreRouting => Direction::Inbound,
            // Our rules never queue forwarded packets.
            Hook::Forward => return (NfVerdict::Accept, false),
        };
        scratch.clear();
        scratch.extend_from_slice(payload);
        let engine = &mut self.engine;
        let result = catch_unwind(AssertUnwindSafe(|| engine.handle_packet(now, dir, scratch)));
        if log::log_enabled!(log::Level::Trace) {
            log::trace!(
                "{dir:?} {} -> {result:?} {}",
                packet_summary(payload),
                if matches!(result, Ok(Verdict::AcceptModified)) {
                    packet_summary(scratch)
                } else {
                    String::new()
                }
            );
        }
        match result {
            Ok(Verdict::Accept) => (NfVerdict::Accept, false),
            Ok(Verdict::AcceptModified) => {
                stats.modified += 1;
                (NfVerdict::Accept, true)
            }
            Ok(Verdict::Drop) => {
                stats.dropped += 1;
                (NfVerdict::Drop, false)
            }
            Err(_) => {
                stats.engine_panics += 1;
                stats.dropped += 1;
                log::error!("engine panicked on a {dir:?} packet; dropped it");
                (NfVerdict::Drop, false)
            }
        }
    }

    fn guarded(&mut self, stats: &mut LoopStats, f: impl FnOnce(&mut E)) {
        let engine = &mut self.engine;
        if catch_unwind(AssertUnwindSafe(|| f(engine))).is_err() {
            stats.engine_panics += 1;
            log::error!("engine panicked while handling a timeout");
        }
    }

    fn inject(&mut self, first: &Transmit, stats: &mut LoopStats) {
        let mut send = |t: &Transmit| {
            log::trace!("inject {:?} {}", t.direction, packet_summary(&t.packet));
            match self.injector.send(&t.packet) {
                Ok(()) => stats.injected += 1,
                Err(e) => {
                    stats.inject_failures += 1;
                    log::debug!("injecting a {:?} packet failed: {e}", t.direction);
                }
            }
        };
        send(first);
        while let Some(t) = self.engine.poll_transmit() {
            send(&t);
        }
    }

    /// Injects the engine's packets and passes on its events.
    fn flush_engine(&mut self, waiters: &mut Vec<Waiter>, stats: &mut LoopStats) {
        if let Some(t) = self.engine.poll_transmit() {
            self.inject(&t, stats);
        }
        while let Some(ev) = self.engine.poll_event() {
            let (local, remote) = ev.endpoints();
            if waiters
                .iter()
                .any(|w| w.local == local && w.remote == remote)
            {
                let state = self.engine.lookup(local, remote);
                waiters.retain(|w| {
                    if w.local == local && w.remote == remote && state.is_settled() {
                        let _ = w.reply.send(state.clone());
                        false
                    } else {
                        true
                    }
                });
            }
            // The outcome thread only goes away at shutdown.
            let _ = self.events.send(ev);
        }
    }

    /// Answers a request, or parks it: a lookup that waits goes to
    /// `waiters`, a list to `lists` (answered once per round).
    fn serve(
        &mut self,
        req: EngineRequest,
        waiters: &mut Vec<Waiter>,
        lists: &mut Vec<Sender<Arc<Vec<ConnectionView>>>>,
        now: Instant,
    ) {
        match req {
            EngineRequest::Lookup {
                local,
                remote,
                wait,
                reply,
            } => {
                let state = self.engine.lookup(local, remote);
                if state == LookupState::Pending && !wait.is_zero() {
                    waiters.push(Waiter {
                        local,
                        remote,
                        deadline: now + wait,
                        reply,
                    });
                } else {
                    let _ = reply.send(state);
                }
            }
            EngineRequest::List { reply } => lists.push(reply),
            EngineRequest::FlushResumption { reply } => {
                let _ = reply.send(self.engine.flush_resumption());
            }
        }
    }

    fn expire_waiters(&self, waiters: &mut Vec<Waiter>, now: Instant) {
        waiters.retain(|w| {
            if w.deadline <= now {
                let _ = w.reply.send(self.engine.lookup(w.local, w.remote));
                false
            } else {
                true
            }
        });
    }
}

/// A `list` snapshot is handed out again until `LIST_DUTY - 1` times its
/// copy cost has passed, aiming at copies taking at most about
/// 1/`LIST_DUTY` of the packet thread's time.
const LIST_DUTY: u32 = 10;

/// The last `list` snapshot, while control threads still hold it, with
/// when it was taken and what the copy cost.
#[derive(Default)]
struct ListSnapshot {
    last: Option<(Instant, Duration, std::sync::Weak<Vec<ConnectionView>>)>,
}

/// Answers every `list` of a round with one snapshot of the table. The copy
/// is the only part done here, and it is the part that stops packets: the
/// rows are copied with their state still typed, and the control threads
/// render them. However many clients ask at once, a round pays for one
/// copy; and a snapshot younger than `LIST_DUTY - 1` times its own cost is
/// handed out again rather than copied anew, so clients asking in a loop
/// cannot keep the packet thread copying. The snapshot is held weakly, so
/// the last control thread done with it frees it, not the packet thread.
fn answer_lists<E: PacketEngine>(
    engine: &E,
    now: Instant,
    replies: Vec<Sender<Arc<Vec<ConnectionView>>>>,
    last: &mut ListSnapshot,
) {
    if replies.is_empty() {
        return;
    }
    let recent = last.last.as_ref().and_then(|(taken, cost, snapshot)| {
        let fresh_until = *taken + cost.saturating_mul(LIST_DUTY - 1);
        if now < fresh_until {
            snapshot.upgrade()
        } else {
            None
        }
    });
    let snapshot = match recent {
        Some(s) => s,
        None => {
            let start = Instant::now();
            let s = Arc::new(engine.connections(now));
            last.last = Some((now, start.elapsed(), Arc::downgrade(&s)));
            s
        }
    };
    for reply in replies {
        let _ = reply.send(snapshot.clone());
    }
}

/// A one-line description of a TCP/IP packet for trace logs: ports,
/// flags, sequence and acknowledgement numbers, payload length.
fn packet_summary(p: &[u8]) -> String {
    let be16 = |at: usize| p.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let be32 = |at: usize| {
        p.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let tcp = match p.first().map(|b| b >> 4) {
        Some(4) => usize::from(p.first().map_or(0, |b| b & 0x0f)) * 4,
        Some(6) => 40,
        _ => return format!("non-IP len {}", p.len()),
    };
    let (Some(sport), Some(dport), Some(seq), Some(ack), Some(off_flags)) = (
        be16(tcp),
        be16(tcp + 2),
        be32(tcp + 4),
        be32(tcp + 8),
        be16(tcp + 12),
    ) else {
        return format!("short len {}", p.len());
    };
    let hdr = usize::from(off_flags >> 12) * 4;
    let flags: String = [
        (0x02, 'S'),
        (0x01, 'F'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x10, '.'),
    ]
    .iter()
    .filter(|(bit, _)| off_flags & bit != 0)
    .map(|(_, c)| *c)
    .collect();
    format!(
        "{sport}>{dport} [{flags}] seq {seq} ack {ack} win {} data {}",
        be16(tcp + 14).unwrap_or(0),
        p.len().saturating_sub(tcp + hdr)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcpcrypt_engine as eng;

    fn checksum(sum: u32, data: &[u8]) -> u32 {
        data.chunks(2).fold(sum, |s, c| {
            s + u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
        })
    }

    fn fold(mut sum: u32) -> u16 {
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// An IPv4 SYN with an MSS option and valid checksums.
    fn syn(src: ([u8; 4], u16), dst: ([u8; 4], u16), isn: u32) -> Vec<u8> {
        let mut tcp = Vec::with_capacity(24);
        tcp.extend_from_slice(&src.1.to_be_bytes());
        tcp.extend_from_slice(&dst.1.to_be_bytes());
        tcp.extend_from_slice(&isn.to_be_bytes());
        tcp.extend_from_slice(&0u32.to_be_bytes());
        tcp.extend_from_slice(&[6 << 4, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        tcp.extend_from_slice(&[2, 4, 0x05, 0xb4]);
        let mut pseudo = Vec::with_capacity(12);
        pseudo.extend_from_slice(&src.0);
        pseudo.extend_from_slice(&dst.0);
        pseudo.extend_from_slice(&[0, 6, 0, tcp.len() as u8]);
        let c = fold(checksum(checksum(0, &pseudo), &tcp));
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
        let total = (20 + tcp.len()) as u16;
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
        ip.extend_from_slice(&src.0);
        ip.extend_from_slice(&dst.0);
        let c = fold(checksum(0, &ip));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        ip.extend_from_slice(&tcp);
        ip
    }

    /// A real engine tracking `n` connections: half opened by us (in their
    /// handshake), half opened by peers without ENO (plain, with a reason).
    fn engine_with(n: usize) -> eng::Engine {
        let config = eng::EngineConfig {
            max_connections: n * 2,
            max_half_open: n * 2,
            ..eng::EngineConfig::default()
        };
        let mut engine = eng::Engine::new(config, Box::new(tcpcrypt_proto::OsRng));
        let now = Instant::now();
        for i in 0..n {
            let host = [10, 1, (i >> 8) as u8, i as u8];
            let port = 1024 + (i % 60000) as u16;
            let (dir, mut packet) = if i % 2 == 0 {
                (
                    Direction::Outbound,
                    syn(([10, 0, 0, 1], port), (host, 80), i as u32),
                )
            } else {
                (
                    Direction::Inbound,
                    syn((host, port), ([10, 0, 0, 1], 80), i as u32),
                )
            };
            let _ = engine.handle_packet(now, dir, &mut packet);
            while engine.poll_transmit().is_some() {}
            while engine.poll_event().is_some() {}
        }
        engine
    }

    /// How long the packet thread is busy (handling no packet) answering
    /// `clients` concurrent `list` requests, each paid for separately (as
    /// before coalescing) or with one shared snapshot.
    fn list_round(engine: &eng::Engine, clients: usize, coalesce: bool) -> (Duration, usize) {
        let mut receivers = Vec::new();
        let mut replies = Vec::new();
        for _ in 0..clients {
            let (tx, rx) = std::sync::mpsc::channel();
            replies.push(tx);
            receivers.push(rx);
        }
        let start = Instant::now();
        if coalesce {
            answer_lists(
                engine,
                Instant::now(),
                replies,
                &mut ListSnapshot::default(),
            );
        } else {
            for reply in replies {
                answer_lists(
                    engine,
                    Instant::now(),
                    vec![reply],
                    &mut ListSnapshot::default(),
                );
            }
        }
        let busy = start.elapsed();
        let rows = receivers
            .iter()
            .map(|rx| rx.recv().expect("every client answered").len())
            .min()
            .unwrap_or(0);
        (busy, rows)
    }

    /// Not a pass/fail check on time: prints how long the packet thread
    /// stalls for `list` on a large table, for one client and for many at
    /// once, and checks only that every client got the whole table.
    #[test]
    fn list_stall_on_a_large_table() {
        for n in [4096usize, 65536] {
            let engine = engine_with(n);
            let tracked = PacketEngine::stats(&engine).connections;
            println!(
                "{n}: {tracked} connections tracked, {} bytes per copied row",
                std::mem::size_of::<ConnectionView>()
            );
            for (clients, coalesce) in [(1, true), (16, false), (16, true)] {
                let mut worst = Duration::ZERO;
                for _ in 0..3 {
                    let (busy, rows) = list_round(&engine, clients, coalesce);
                    assert_eq!(rows, tracked, "a client got a partial table");
                    worst = worst.max(busy);
                }
                println!(
                    "{n}: {clients} concurrent list(s), {}: packet thread busy up to {worst:?}",
                    if coalesce {
                        "one shared snapshot"
                    } else {
                        "one copy each (before)"
                    }
                );
            }
        }
    }

    /// An engine whose table copy takes `cost` and is counted.
    struct SlowListEngine {
        cost: Duration,
        copies: std::cell::Cell<usize>,
    }

    impl PacketEngine for SlowListEngine {
        fn handle_packet(&mut self, _: Instant, _: Direction, _: &mut Vec<u8>) -> Verdict {
            Verdict::Accept
        }
        fn handle_timeout(&mut self, _: Instant) {}
        fn poll_transmit(&mut self) -> Option<Transmit> {
            None
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
        fn poll_event(&mut self) -> Option<EngineEvent> {
            None
        }
        fn lookup(&self, _: SocketAddr, _: SocketAddr) -> LookupState {
            LookupState::Unknown
        }
        fn connections(&self, _: Instant) -> Vec<ConnectionView> {
            self.copies.set(self.copies.get() + 1);
            std::thread::sleep(self.cost);
            Vec::new()
        }
        fn flush_resumption(&mut self) -> usize {
            0
        }
        fn stats(&self) -> crate::engine_api::EngineStats {
            crate::engine_api::EngineStats::default()
        }
    }

    type ListReply = Arc<Vec<ConnectionView>>;

    fn ask_lists(
        n: usize,
    ) -> (
        Vec<Sender<ListReply>>,
        Vec<std::sync::mpsc::Receiver<ListReply>>,
    ) {
        (0..n).map(|_| std::sync::mpsc::channel()).unzip()
    }

    #[test]
    fn lists_of_one_round_share_one_copy() {
        let engine = SlowListEngine {
            cost: Duration::ZERO,
            copies: Default::default(),
        };
        let (tx, rx) = ask_lists(16);
        answer_lists(&engine, Instant::now(), tx, &mut ListSnapshot::default());
        assert_eq!(engine.copies.get(), 1);
        assert!(
            rx.iter().all(|r| r.recv().is_ok()),
            "a client got no answer"
        );
    }

    #[test]
    fn a_held_recent_snapshot_is_reused_and_an_old_one_is_not() {
        let cost = Duration::from_millis(20);
        let engine = SlowListEngine {
            cost,
            copies: Default::default(),
        };
        let mut last = ListSnapshot::default();
        let t0 = Instant::now();
        let (tx, rx) = ask_lists(1);
        answer_lists(&engine, t0, tx, &mut last);
        let held = rx[0].recv().expect("answer");
        assert_eq!(engine.copies.get(), 1);

        // Within the duty window and still held by a control thread.
        let (tx, rx) = ask_lists(1);
        answer_lists(&engine, t0 + cost, tx, &mut last);
        let again = rx[0].recv().expect("answer");
        assert!(Arc::ptr_eq(&held, &again), "not the same snapshot");
        assert_eq!(engine.copies.get(), 1);

        // Past the window: copied anew.
        let (tx, rx) = ask_lists(1);
        answer_lists(&engine, t0 + cost * (LIST_DUTY + 5), tx, &mut last);
        assert!(rx[0].recv().is_ok());
        assert_eq!(engine.copies.get(), 2);
    }

    #[test]
    fn a_snapshot_nobody_holds_is_not_kept() {
        let engine = SlowListEngine {
            cost: Duration::from_millis(20),
            copies: Default::default(),
        };
        let mut last = ListSnapshot::default();
        let t0 = Instant::now();
        let (tx, rx) = ask_lists(1);
        answer_lists(&engine, t0, tx, &mut last);
        drop(rx[0].recv().expect("answer"));
        let (tx, rx) = ask_lists(1);
        answer_lists(&engine, t0, tx, &mut last);
        assert!(rx[0].recv().is_ok());
        assert_eq!(engine.copies.get(), 2);
    }
}
