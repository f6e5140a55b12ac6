//! The packet thread: the only owner of the engine.
//!
//! It waits on the queue socket and an eventfd, feeds packets and the clock
//! to the engine, sends the verdicts in batches, injects what the engine
//! wants sent, and answers the control server's questions between batches.
//! It never blocks on anything but `poll`: replies to control clients go
//! through unbounded channels, events to the outcome thread likewise, and the
//! raw sockets are non-blocking. The one exception is the journal of
//! guarded connections: a connection's `+` line is written here before the
//! verdict that lets its first guarded packet go, so a successor started
//! after a crash knows every connection our rules hold back; its `-` line
//! is written here too, because only this thread sees the two in the
//! engine's order (a port reused at once must not be struck off by the
//! end of its predecessor). That is one `write` per guarded connection at
//! each end, and an occasional compaction of a file of open connections.
//! Settled outcomes are published to the control threads through
//! [`OutcomeTable`], whose shard locks are held only for one probe, so the
//! packet thread can wait there no longer than that.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::conn_journal::{ConnKey, Journal};
use crate::control_protocol::{ApplyUpdate as _, PolicyUpdate};
use crate::engine_api::{
    Checksum, ConnectionView, Direction, EngineEvent, LookupState, PacketEngine, PacketMeta,
    PolicyError, PolicyScope, Transmit, Verdict,
};
use crate::firewall::verdict_mark;
use crate::inject::Injector;
use crate::nfqueue::{Hook, Message, NfVerdict, NfqError, Queue, RecvBatch, VerdictBatch};
use crate::outcome_table::OutcomeTable;
use crate::stats_report::StatsReport;
use crate::sys::{EventFd, poll_readable};
use crate::trim::{DrainWatch, release_free_memory};
use tcpcrypt_control::Lookup;
use tcpcrypt_engine::wire::{Packet, TcpFlags};

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
    SetPolicy {
        scope: PolicyScope,
        local: SocketAddr,
        update: PolicyUpdate,
        reply: Sender<Result<(), PolicyError>>,
    },
    ClearPolicy {
        scope: PolicyScope,
        local: SocketAddr,
        reply: Sender<bool>,
    },
    /// A path-MTU report another packet thread took from its queue about a
    /// connection it does not track: handled here if the connection is
    /// ours, and the verdict sent back, since only the thread owning a
    /// queue can pass a verdict on its packets.
    Report {
        packet: Arc<[u8]>,
        meta: PacketMeta,
        id: u32,
        reply: Sender<ReportAnswer>,
        wake: Arc<EventFd>,
    },
}

/// The answer to [`EngineRequest::Report`].
pub struct ReportAnswer {
    id: u32,
    /// `None`: not a connection of the answering thread.
    verdict: Option<OwnerVerdict>,
}

/// What the thread owning a report's connection decided for it.
struct OwnerVerdict {
    verdict: NfVerdict,
    /// The rewritten report, if the engine changed it.
    rewrite: Option<Vec<u8>>,
    /// Its connection is guarded (for the verdict's mark).
    guarded: bool,
}

/// How control threads reach the packet threads, and the outcomes they
/// publish.
#[derive(Clone)]
pub struct EngineHandle {
    shards: Arc<[ShardLink]>,
    outcomes: Arc<OutcomeTable>,
}

/// The way into one packet thread.
#[derive(Clone)]
pub struct ShardLink {
    pub tx: SyncSender<EngineRequest>,
    pub wake: Arc<EventFd>,
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
    /// One packet thread. `outcomes` must be the table it publishes to.
    pub fn new(
        tx: SyncSender<EngineRequest>,
        wake: Arc<EventFd>,
        outcomes: Arc<OutcomeTable>,
    ) -> EngineHandle {
        EngineHandle::sharded(vec![ShardLink { tx, wake }], outcomes)
    }

    /// Several packet threads, each owning the connections the kernel
    /// queues to it; `outcomes` is the table they all publish to.
    pub fn sharded(shards: Vec<ShardLink>, outcomes: Arc<OutcomeTable>) -> EngineHandle {
        EngineHandle {
            shards: shards.into(),
            outcomes,
        }
    }

    /// Asks every packet thread and gathers their answers until all have
    /// answered or `enough` says one answer settles it. A thread that
    /// cannot take the request fails the whole question: an answer
    /// missing one thread's connections would be wrong, not partial.
    fn ask_all<T>(
        &self,
        make: impl Fn(Sender<T>) -> EngineRequest,
        timeout: Duration,
        enough: impl Fn(&T) -> bool,
    ) -> Result<Vec<T>, HandleError> {
        let (reply, rx) = std::sync::mpsc::channel();
        for shard in self.shards.iter() {
            match shard.tx.try_send(make(reply.clone())) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => return Err(HandleError::Busy),
                Err(TrySendError::Disconnected(_)) => return Err(HandleError::Stopped),
            }
            shard.wake.wake();
        }
        drop(reply);
        let deadline = Instant::now() + timeout;
        let mut answers = Vec::with_capacity(self.shards.len());
        while answers.len() < self.shards.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = rx.recv_timeout(left).map_err(|e| match e {
                std::sync::mpsc::RecvTimeoutError::Timeout => HandleError::Timeout,
                std::sync::mpsc::RecvTimeoutError::Disconnected => HandleError::Stopped,
            })?;
            let settles = enough(&answer);
            answers.push(answer);
            if settles {
                break;
            }
        }
        Ok(answers)
    }

    /// Looks a connection up, waiting up to `wait` for a pending one.
    ///
    /// A settled outcome comes from the published table without involving
    /// the packet threads; only a connection still pending, or one the
    /// table does not know, is asked about there, since only an engine can
    /// tell those two apart and wake a waiter when the handshake ends. The
    /// kernel's choice of thread cannot be computed here, so every thread
    /// is asked; all but the owner answer at once that they do not know it.
    pub fn lookup(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        wait: Duration,
    ) -> Result<Lookup<String>, HandleError> {
        if let Some(settled) = self.outcomes.get(local, remote) {
            return Ok(settled);
        }
        let answers = self.ask_all(
            |reply| EngineRequest::Lookup {
                local,
                remote,
                wait,
                reply,
            },
            wait + Duration::from_secs(5),
            |state| *state != LookupState::Unknown,
        )?;
        let state = answers
            .into_iter()
            .find(|state| *state != LookupState::Unknown)
            .unwrap_or(LookupState::Unknown);
        Ok(state.map_reason(|reason| reason.to_string()))
    }

    pub fn list(&self) -> Result<Arc<Vec<ConnectionView>>, HandleError> {
        let mut parts = self.ask_all(
            |reply| EngineRequest::List { reply },
            Duration::from_secs(5),
            |_| false,
        )?;
        if parts.len() == 1 {
            return Ok(parts.remove(0));
        }
        Ok(Arc::new(
            parts.iter().flat_map(|p| p.iter().cloned()).collect(),
        ))
    }

    pub fn flush_resumption(&self) -> Result<usize, HandleError> {
        let counts = self.ask_all(
            |reply| EngineRequest::FlushResumption { reply },
            Duration::from_secs(5),
            |_| false,
        )?;
        Ok(counts.into_iter().sum())
    }

    /// Every thread holds the policies, since a socket's connections may
    /// land on any of them.
    pub fn set_policy(
        &self,
        scope: PolicyScope,
        local: SocketAddr,
        update: PolicyUpdate,
    ) -> Result<Result<(), PolicyError>, HandleError> {
        let results = self.ask_all(
            |reply| EngineRequest::SetPolicy {
                scope,
                local,
                update,
                reply,
            },
            Duration::from_secs(5),
            |_| false,
        )?;
        Ok(results.into_iter().collect())
    }

    pub fn clear_policy(&self, scope: PolicyScope, local: SocketAddr) -> Result<bool, HandleError> {
        let cleared = self.ask_all(
            |reply| EngineRequest::ClearPolicy {
                scope,
                local,
                reply,
            },
            Duration::from_secs(5),
            |_| false,
        )?;
        Ok(cleared.into_iter().any(|c| c))
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
    /// Large (GSO/GRO) packets among `packets`.
    pub large: u64,
    /// Packets the queue copied only in part (longer than 65531 bytes:
    /// BIG TCP, which the daemon does not support).
    pub truncated: u64,
    /// Path-MTU reports passed to the other packet threads because they
    /// quoted a connection this one does not track.
    pub reports_forwarded: u64,
}

impl LoopStats {
    /// Adds another packet thread's counters.
    pub fn add(&mut self, other: &LoopStats) {
        self.packets += other.packets;
        self.modified += other.modified;
        self.dropped += other.dropped;
        self.injected += other.injected;
        self.inject_failures += other.inject_failures;
        self.engine_panics += other.engine_panics;
        self.large += other.large;
        self.truncated += other.truncated;
        self.reports_forwarded += other.reports_forwarded;
    }
}

/// Everything a packet thread owns.
pub struct PacketLoop<E: PacketEngine> {
    pub engine: E,
    pub queue: Queue,
    pub injector: Injector,
    pub requests: Receiver<EngineRequest>,
    pub wake: Arc<EventFd>,
    /// The events of one batch go to the outcome thread together.
    pub events: Sender<Vec<EngineEvent>>,
    /// Where settled outcomes are published for the control threads.
    pub outcomes: Arc<OutcomeTable>,
    pub stop: Arc<AtomicBool>,
    /// Shared by the packet threads; each writes its own connections' lines.
    pub journal: Option<Arc<Mutex<Journal>>>,
    /// Turns the engine's counters into rate-limited log lines.
    pub report: StatsReport,
    /// The other packet threads, asked about path-MTU reports that quote a
    /// connection this one does not track.
    pub peers: Vec<ShardLink>,
    /// Put before this thread's log lines when there are several.
    pub label: String,
}

/// Path-MTU reports passed to the other threads and not yet answered
/// (their packets wait in the queue meanwhile). Past it a report for an
/// unknown connection is passed on unchanged, as a single thread does, so
/// a flood of forged reports cannot tie the threads up.
const MAX_FORWARDED_REPORTS: usize = 64;

/// A forwarded report waiting for its answers.
struct Forwarded {
    mark: u32,
    /// Threads that have not answered yet.
    unanswered: usize,
}

impl<E: PacketEngine> PacketLoop<E> {
    /// Runs until `stop` is set (and the eventfd woken) or the queue socket
    /// fails.
    /// Hands back the journal for the caller to delete after a clean stop.
    pub fn run(mut self) -> Result<LoopStats, NfqError> {
        let mut batch = RecvBatch::new(BATCH);
        let (answer_tx, answers) = std::sync::mpsc::channel::<ReportAnswer>();
        let mut forwarded: HashMap<u32, Forwarded> = HashMap::new();
        let mut verdicts = VerdictBatch::new(self.queue.queue_num());
        let mut scratch = Vec::with_capacity(65536);
        let mut waiters: Vec<Waiter> = Vec::new();
        let mut pending: Vec<EngineEvent> = Vec::new();
        let mut list = ListBuilder::default();
        let mut stats = LoopStats::default();
        let mut drain = DrainWatch::default();
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
            let timeout = if list.busy() {
                // A `list` copy is under way: go on with it after the
                // packets already queued, without sleeping.
                Some(Duration::ZERO)
            } else {
                deadline.map(|d| d.saturating_duration_since(now))
            };
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
                            let meta = PacketMeta {
                                checksum: if p.checksum_verified {
                                    Checksum::Verified
                                } else {
                                    Checksum::Unverified
                                },
                                large: p.large,
                            };
                            stats.large += u64::from(p.large);
                            if p.truncated {
                                // The engine sees a cut-short packet as one it
                                // cannot parse: dropped if its connection is
                                // guarded, passed unchanged otherwise.
                                stats.truncated += 1;
                                if stats.truncated % 1000 == 1 {
                                    log::warn!(
                                        "the queue cut a packet short ({} so far): \
                                         packets over 64 KiB (BIG TCP, a gso_max_size \
                                         above 65536) cannot be encrypted; lower the \
                                         interface's gso_max_size and gro_max_size",
                                        stats.truncated
                                    );
                                }
                            }
                            if self.forward_report(&p, meta, &answer_tx, &mut forwarded) {
                                stats.reports_forwarded += 1;
                                continue;
                            }
                            let (v, modified, guarded) =
                                self.decide(now, p.hook, meta, p.payload, &mut scratch, &mut stats);
                            // Journalled before the verdict can let the
                            // connection's first guarded packet go.
                            self.take_events(&mut pending);
                            let mark =
                                (v == NfVerdict::Accept).then(|| verdict_mark(p.mark, guarded));
                            if modified {
                                self.queue.push_verdict_taking(
                                    &mut verdicts,
                                    p.id,
                                    v,
                                    mark,
                                    &mut scratch,
                                )?;
                            } else {
                                self.queue
                                    .push_verdict(&mut verdicts, p.id, v, mark, None)?;
                            }
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
                    self.flush_engine(&mut pending, &mut waiters, &mut stats);
                }
            }
            let now = Instant::now();
            if self.engine.poll_timeout().is_some_and(|t| t <= now) {
                self.guarded(&mut stats, |e| e.handle_timeout(now));
                self.flush_engine(&mut pending, &mut waiters, &mut stats);
                // Timers are where connections leave the table.
                let left = self.engine.stats().connections;
                if drain.drained(left) {
                    // Every published outcome belongs to a tracked
                    // connection; more of them than connections means
                    // one was never withdrawn, a leak and, once its
                    // addresses are reused, a wrong answer. Checked only
                    // here, as counting locks every shard.
                    let published = self.outcomes.len();
                    if published > left {
                        log::error!(
                            "{published} lookup outcomes published for {left} tracked \
                             connections: some were never withdrawn"
                        );
                    }
                    let start = Instant::now();
                    release_free_memory();
                    log::debug!(
                        "connection table down to {left}: freed memory returned in {:?}",
                        start.elapsed()
                    );
                }
            }
            self.wake.drain();
            while let Ok(answer) = answers.try_recv() {
                self.take_answer(answer, &mut forwarded, &mut verdicts)?;
            }
            self.queue.send_verdicts(&mut verdicts)?;
            let mut lists = Vec::new();
            for _ in 0..REQUESTS_PER_ROUND {
                let Ok(req) = self.requests.try_recv() else {
                    break;
                };
                self.serve(req, &mut waiters, &mut lists, &mut scratch, &mut stats, now);
            }
            self.flush_engine(&mut pending, &mut waiters, &mut stats);
            list.ask(&self.engine, now, lists);
            list.step(&self.engine, now);
            self.expire_waiters(&mut waiters, Instant::now());
            for line in self.report.poll(Instant::now(), &self.engine) {
                log::log!(line.level, "{}{}", self.label, line.text);
            }
        }
        Ok(stats)
    }

    /// Passes a path-MTU report about a connection this thread does not
    /// track to the other threads, leaving its verdict for their answers.
    /// False if the packet is to be handled here as usual: it is no such
    /// report, there are no other threads, or too many are pending.
    fn forward_report(
        &mut self,
        p: &crate::nfqueue::QueuedPacket<'_>,
        meta: PacketMeta,
        answer_tx: &Sender<ReportAnswer>,
        forwarded: &mut HashMap<u32, Forwarded>,
    ) -> bool {
        if self.peers.is_empty()
            || !matches!(p.hook, Hook::LocalIn | Hook::PreRouting)
            || self.engine.tracks_reported(p.payload) != Some(false)
            || forwarded.len() >= MAX_FORWARDED_REPORTS
        {
            return false;
        }
        let packet: Arc<[u8]> = p.payload.into();
        let mut asked = 0;
        for peer in &self.peers {
            let req = EngineRequest::Report {
                packet: packet.clone(),
                meta,
                id: p.id,
                reply: answer_tx.clone(),
                wake: self.wake.clone(),
            };
            if peer.tx.try_send(req).is_ok() {
                peer.wake.wake();
                asked += 1;
            }
        }
        if asked == 0 {
            return false;
        }
        log::debug!(
            "{}path-MTU report {} for a connection of another thread: asked {asked}",
            self.label,
            p.id
        );
        forwarded.insert(
            p.id,
            Forwarded {
                mark: p.mark,
                unanswered: asked,
            },
        );
        true
    }

    /// Sends the verdict of a forwarded report once its owner answered, or
    /// once every thread said it is not theirs (then it passes unchanged,
    /// as a report about an unknown connection does with one thread).
    fn take_answer(
        &mut self,
        answer: ReportAnswer,
        forwarded: &mut HashMap<u32, Forwarded>,
        verdicts: &mut VerdictBatch,
    ) -> Result<(), NfqError> {
        let Some(f) = forwarded.get_mut(&answer.id) else {
            return Ok(());
        };
        let owner = match answer.verdict {
            Some(owner) => owner,
            None if f.unanswered > 1 => {
                f.unanswered -= 1;
                return Ok(());
            }
            None => OwnerVerdict {
                verdict: NfVerdict::Accept,
                rewrite: None,
                guarded: false,
            },
        };
        let mark =
            (owner.verdict == NfVerdict::Accept).then(|| verdict_mark(f.mark, owner.guarded));
        forwarded.remove(&answer.id);
        self.queue.push_verdict(
            verdicts,
            answer.id,
            owner.verdict,
            mark,
            owner.rewrite.as_deref(),
        )
    }

    /// Runs the engine on one packet. Returns the verdict, whether
    /// `scratch` holds a replacement, and whether the packet's connection is
    /// guarded. A panicking engine drops the packet: passing it unchanged
    /// could put plaintext on the wire.
    fn decide(
        &mut self,
        now: Instant,
        hook: Hook,
        meta: PacketMeta,
        payload: &[u8],
        scratch: &mut Vec<u8>,
        stats: &mut LoopStats,
    ) -> (NfVerdict, bool, bool) {
        let dir = match hook {
            Hook::LocalOut | Hook::PostRouting => Direction::Outbound,
            Hook::LocalIn | Hook::PreRouting => Direction::Inbound,
            // Our rules never queue forwarded packets.
            Hook::Forward => return (NfVerdict::Accept, false, false),
        };
        scratch.clear();
        let engine = &mut self.engine;
        let result = catch_unwind(AssertUnwindSafe(|| {
            let v = engine.handle_packet_into(now, dir, meta, payload, scratch);
            (v, engine.last_packet_guarded())
        }));
        if log::log_enabled!(log::Level::Trace) {
            log::trace!(
                "{dir:?} {} -> {result:?} {}",
                packet_summary(payload),
                if matches!(result, Ok((Verdict::AcceptModified, _))) {
                    packet_summary(scratch)
                } else {
                    String::new()
                }
            );
        }
        match result {
            Ok((Verdict::Accept, guarded)) => (NfVerdict::Accept, false, guarded),
            Ok((Verdict::AcceptModified, guarded)) => {
                stats.modified += 1;
                (NfVerdict::Accept, true, guarded)
            }
            Ok((Verdict::Drop, guarded)) => {
                stats.dropped += 1;
                (NfVerdict::Drop, false, guarded)
            }
            Err(_) => {
                stats.engine_panics += 1;
                stats.dropped += 1;
                log::error!("engine panicked on a {dir:?} packet; dropped it");
                (NfVerdict::Drop, false, false)
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
            match self.injector.send_to_addr(&t.packet, t.dst) {
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

    /// Moves the engine's events to `pending`, keeping the journal in step
    /// on the way.
    fn take_events(&mut self, pending: &mut Vec<EngineEvent>) {
        drain_events(
            &mut self.engine,
            self.journal.as_deref(),
            &self.outcomes,
            pending,
        );
    }

    /// Injects the engine's packets and passes on its events.
    fn flush_engine(
        &mut self,
        pending: &mut Vec<EngineEvent>,
        waiters: &mut Vec<Waiter>,
        stats: &mut LoopStats,
    ) {
        // A packet injected for a connection that just became guarded must
        // not leave before its journal line is written.
        self.take_events(pending);
        if let Some(t) = self.engine.poll_transmit() {
            self.inject(&t, stats);
        }
        self.take_events(pending);
        if pending.is_empty() {
            return;
        }
        for ev in pending.iter() {
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
        }
        // One message, so one wake-up of the outcome thread, per batch:
        // a wake-up per event cost the packet thread a futex call each,
        // several per connection. The outcome thread only goes away at
        // shutdown.
        let _ = self.events.send(std::mem::take(pending));
    }

    /// Answers a request, or parks it: a lookup that waits goes to
    /// `waiters`, a list to `lists` (answered once per round).
    fn serve(
        &mut self,
        req: EngineRequest,
        waiters: &mut Vec<Waiter>,
        lists: &mut Vec<Sender<Arc<Vec<ConnectionView>>>>,
        scratch: &mut Vec<u8>,
        stats: &mut LoopStats,
        now: Instant,
    ) {
        match req {
            EngineRequest::Report {
                packet,
                meta,
                id,
                reply,
                wake,
            } => {
                let verdict = (self.engine.tracks_reported(&packet) == Some(true)).then(|| {
                    let (verdict, modified, guarded) =
                        self.decide(now, Hook::LocalIn, meta, &packet, scratch, stats);
                    OwnerVerdict {
                        verdict,
                        rewrite: modified.then(|| scratch.clone()),
                        guarded,
                    }
                });
                // The asking thread only goes away at shutdown.
                let _ = reply.send(ReportAnswer { id, verdict });
                wake.wake();
            }
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
            EngineRequest::SetPolicy {
                scope,
                local,
                update,
                reply,
            } => {
                // Merged here, on the engine's thread, so two updates of
                // one socket's fields cannot race.
                let base = self.engine.policy(now, scope, local).unwrap_or_default();
                let policy = update.apply(base);
                let _ = reply.send(self.engine.set_policy(now, scope, local, policy));
            }
            EngineRequest::ClearPolicy {
                scope,
                local,
                reply,
            } => {
                let _ = reply.send(self.engine.clear_policy(scope, local));
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

/// Moves `engine`'s events to `pending`, recording each in `journal` and
/// `outcomes` as it goes, so that when this returns both are in step with
/// the engine. Called before each verdict, so an application cannot see
/// data of a connection whose outcome is not yet published, nor a new
/// connection on a reused port while its predecessor's is.
fn drain_events<E: PacketEngine>(
    engine: &mut E,
    journal: Option<&Mutex<Journal>>,
    outcomes: &OutcomeTable,
    pending: &mut Vec<EngineEvent>,
) {
    while let Some(ev) = engine.poll_event() {
        if let Some(j) = journal {
            // A thread that panicked while writing left the file as
            // consistent as a crash would.
            journal_event(&mut j.lock().unwrap_or_else(PoisonError::into_inner), &ev);
        }
        outcomes.apply(&ev);
        pending.push(ev);
    }
}

/// Records guarded connections: from the negotiation on, not only once keys
/// exist, since a connection in its key exchange must be aborted after a
/// crash too.
fn journal_event(journal: &mut Journal, ev: &EngineEvent) {
    let (local, remote) = ev.endpoints();
    let key = ConnKey { local, remote };
    let result = match ev {
        EngineEvent::Guarding { .. } => journal.added(key),
        EngineEvent::Aborted { .. } | EngineEvent::Closed { .. } | EngineEvent::Plain { .. } => {
            journal.removed(key)
        }
        EngineEvent::Established { .. } | EngineEvent::Forgotten { .. } => Ok(()),
    };
    if let Err(e) = result {
        log::error!(
            "writing {}: {e}; a daemon started after a crash may miss {local} <-> {remote}",
            journal.path().display()
        );
    }
}

/// A `list` snapshot is handed out again until `LIST_DUTY - 1` times its
/// copy cost has passed, aiming at copies taking at most about
/// 1/`LIST_DUTY` of the packet thread's time.
const LIST_DUTY: u32 = 10;

/// Rows of `list` copied per round of the packet loop: a large table is
/// copied a slice at a time, with packets handled in between, so no single
/// round holds packets up for long.
const LIST_ROWS_PER_ROUND: usize = 1024;

type ListReply = Sender<Arc<Vec<ConnectionView>>>;

/// Answers `list` with snapshots of the table. The packet thread only
/// copies rows, with their state still typed; the control threads render
/// them. One copy serves every request that arrives while it is being
/// made, and a finished snapshot younger than `LIST_DUTY - 1` times its own
/// cost is handed out again rather than copied anew, so clients asking in
/// a loop cannot keep the packet thread copying. Finished snapshots are
/// held weakly: the last control thread done with one frees it.
#[derive(Default)]
struct ListBuilder {
    building: Option<ListBuild>,
    /// The last finished snapshot: when its copy started, what it cost the
    /// packet thread, and the snapshot while someone still holds it.
    last: Option<(Instant, Duration, std::sync::Weak<Vec<ConnectionView>>)>,
}

/// A copy under way.
struct ListBuild {
    keys: Vec<(SocketAddr, SocketAddr)>,
    next: usize,
    rows: Vec<ConnectionView>,
    replies: Vec<ListReply>,
    started: Instant,
    /// Packet-thread time spent on it so far.
    cost: Duration,
}

impl ListBuilder {
    /// Takes this round's `list` requests.
    fn ask<E: PacketEngine>(&mut self, engine: &E, now: Instant, replies: Vec<ListReply>) {
        if replies.is_empty() {
            return;
        }
        if let Some(b) = &mut self.building {
            b.replies.extend(replies);
            return;
        }
        let recent = self.last.as_ref().and_then(|(taken, cost, snapshot)| {
            let fresh_until = *taken + cost.saturating_mul(LIST_DUTY - 1);
            if now < fresh_until {
                snapshot.upgrade()
            } else {
                None
            }
        });
        if let Some(snapshot) = recent {
            for reply in replies {
                let _ = reply.send(snapshot.clone());
            }
            return;
        }
        let start = Instant::now();
        let keys = engine.connection_keys();
        self.building = Some(ListBuild {
            rows: Vec::with_capacity(keys.len()),
            keys,
            next: 0,
            replies,
            started: now,
            cost: start.elapsed(),
        });
    }

    /// Copies the next slice of rows; answers everyone waiting once the
    /// copy is complete. Connections gone since the copy started are left
    /// out, and those opened since are not in it.
    fn step<E: PacketEngine>(&mut self, engine: &E, now: Instant) {
        let Some(b) = &mut self.building else {
            return;
        };
        let start = Instant::now();
        let end = (b.next + LIST_ROWS_PER_ROUND).min(b.keys.len());
        for (local, remote) in b.keys.get(b.next..end).unwrap_or_default() {
            if let Some(row) = engine.connection(now, *local, *remote) {
                b.rows.push(row);
            }
        }
        b.next = end;
        b.cost += start.elapsed();
        if b.next < b.keys.len() {
            return;
        }
        let Some(done) = self.building.take() else {
            return;
        };
        let snapshot = Arc::new(done.rows);
        self.last = Some((done.started, done.cost, Arc::downgrade(&snapshot)));
        for reply in done.replies {
            let _ = reply.send(snapshot.clone());
        }
    }

    /// A copy is under way.
    fn busy(&self) -> bool {
        self.building.is_some()
    }
}

/// A one-line description of a TCP/IP packet for trace logs: ports,
/// flags, sequence and acknowledgement numbers, payload length.
fn packet_summary(p: &[u8]) -> String {
    let Ok(pkt) = Packet::parse(p) else {
        return format!("not a whole TCP/IP packet, len {}", p.len());
    };
    let t = &pkt.tcp;
    let flags: String = [
        (TcpFlags::SYN, 'S'),
        (TcpFlags::FIN, 'F'),
        (TcpFlags::RST, 'R'),
        (TcpFlags::PSH, 'P'),
        (TcpFlags::ACK, '.'),
    ]
    .iter()
    .filter(|(f, _)| t.flags.contains(*f))
    .map(|(_, c)| *c)
    .collect();
    format!(
        "{}>{} [{flags}] seq {} ack {} win {} data {}",
        t.src_port,
        t.dst_port,
        t.seq,
        t.ack,
        t.window,
        t.payload.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn_journal;
    use std::collections::VecDeque;
    use tcpcrypt_engine as eng;
    use tcpcrypt_engine::wire::{IpLayer, Packet, TcpFlags, TcpOption, TcpRepr};

    /// An IPv4 SYN with an MSS option.
    fn syn(src: ([u8; 4], u16), dst: ([u8; 4], u16), isn: u32) -> Vec<u8> {
        Packet {
            ip: IpLayer::new_minimal(src.0.into(), dst.0.into()),
            tcp: TcpRepr {
                src_port: src.1,
                dst_port: dst.1,
                seq: isn,
                ack: 0,
                flags: TcpFlags::SYN,
                window: 65535,
                urgent: 0,
                options: vec![TcpOption::Mss(1460)],
                payload: Default::default(),
            },
        }
        .to_bytes()
        .expect("a SYN emits")
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

    /// Answers `clients` concurrent `list` requests with a fresh builder,
    /// round after round as the packet loop would. Returns the longest
    /// round (the longest the packet thread holds packets up), the number
    /// of rounds, and the rows each client got (the fewest).
    fn list_rounds<E: PacketEngine>(engine: &E, clients: usize) -> (Duration, usize, usize) {
        let (replies, receivers): (Vec<_>, Vec<_>) =
            (0..clients).map(|_| std::sync::mpsc::channel()).unzip();
        let mut list = ListBuilder::default();
        let mut worst = Duration::ZERO;
        let mut rounds = 0;
        let mut replies = Some(replies);
        loop {
            let start = Instant::now();
            list.ask(engine, Instant::now(), replies.take().unwrap_or_default());
            list.step(engine, Instant::now());
            worst = worst.max(start.elapsed());
            rounds += 1;
            if !list.busy() {
                break;
            }
        }
        let rows = receivers
            .iter()
            .map(|rx: &std::sync::mpsc::Receiver<Arc<Vec<ConnectionView>>>| {
                rx.recv().expect("every client answered").len()
            })
            .min()
            .unwrap_or(0);
        (worst, rounds, rows)
    }

    /// Not a pass/fail check on time: prints how long the packet thread
    /// holds packets up for `list` on a large table, and checks only that
    /// every client got the whole table, in as many rounds as the slices
    /// make.
    #[test]
    fn list_stall_on_a_large_table() {
        for n in [4096usize, 65536] {
            let engine = engine_with(n);
            let tracked = PacketEngine::stats(&engine).connections;
            for clients in [1, 16] {
                let (worst, rounds, rows) = list_rounds(&engine, clients);
                assert_eq!(rows, tracked, "a client got a partial table");
                assert_eq!(rounds, tracked.div_ceil(LIST_ROWS_PER_ROUND).max(1));
                println!(
                    "{n}: {tracked} connections, {clients} concurrent list(s): {rounds} rounds, \
                     packet thread held up at most {worst:?} per round"
                );
            }
        }
    }

    /// An engine that hands out the events it was given, and tracks
    /// `rows` connections whose key copy takes `list_cost` and is counted.
    #[derive(Default)]
    struct Fake {
        events: VecDeque<EngineEvent>,
        rows: usize,
        list_cost: Duration,
        copies: std::cell::Cell<usize>,
    }

    impl Fake {
        fn with_events(events: impl IntoIterator<Item = EngineEvent>) -> Fake {
            Fake {
                events: events.into_iter().collect(),
                ..Fake::default()
            }
        }

        fn slow_list(list_cost: Duration) -> Fake {
            Fake {
                list_cost,
                ..Fake::default()
            }
        }
    }

    impl PacketEngine for Fake {
        fn handle_timeout(&mut self, _: Instant) {}
        fn poll_transmit(&mut self) -> Option<Transmit> {
            None
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
        fn poll_event(&mut self) -> Option<EngineEvent> {
            self.events.pop_front()
        }
        fn lookup(&self, _: SocketAddr, _: SocketAddr) -> LookupState {
            LookupState::Unknown
        }
        fn connection_keys(&self) -> Vec<(SocketAddr, SocketAddr)> {
            self.copies.set(self.copies.get() + 1);
            std::thread::sleep(self.list_cost);
            (0..self.rows)
                .map(|i| {
                    let port = 1024 + i as u16;
                    (
                        addr("10.0.0.1:80"),
                        SocketAddr::new(addr("10.0.0.2:1").ip(), port),
                    )
                })
                .collect()
        }
        fn connection(
            &self,
            _: Instant,
            local: SocketAddr,
            remote: SocketAddr,
        ) -> Option<ConnectionView> {
            Some(ConnectionView {
                conn: tcpcrypt_control::Connection {
                    local,
                    remote,
                    lookup: LookupState::Pending,
                    phase: crate::engine_api::Phase::Handshake,
                    bytes_sent: 0,
                    bytes_received: 0,
                    age: Duration::ZERO,
                },
                guarded: false,
            })
        }
        fn flush_resumption(&mut self) -> usize {
            0
        }
        fn set_policy(
            &mut self,
            _: Instant,
            _: PolicyScope,
            _: SocketAddr,
            _: crate::engine_api::ConnectionPolicy,
        ) -> Result<(), PolicyError> {
            Ok(())
        }
        fn clear_policy(&mut self, _: PolicyScope, _: SocketAddr) -> bool {
            false
        }
        fn policy(
            &self,
            _: Instant,
            _: PolicyScope,
            _: SocketAddr,
        ) -> Option<crate::engine_api::ConnectionPolicy> {
            None
        }
        fn handle_packet_into(
            &mut self,
            _: Instant,
            _: Direction,
            _: PacketMeta,
            _: &[u8],
            _: &mut Vec<u8>,
        ) -> Verdict {
            Verdict::Accept
        }
        fn tracks_reported(&self, _: &[u8]) -> Option<bool> {
            None
        }
        fn last_packet_guarded(&self) -> bool {
            false
        }
        fn stats(&self) -> crate::engine_api::EngineStats {
            crate::engine_api::EngineStats::default()
        }
    }

    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("tcpcryptd-loop-{}-{tag}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn a_guarded_connection_is_in_the_journal_file_once_its_events_are_drained() {
        let dir = TempDir::new("guarding");
        let path = dir.0.join(conn_journal::FILE_NAME);
        let journal = Mutex::new(Journal::create(&path).expect("journal"));
        let (local, remote) = (addr("10.0.0.1:40000"), addr("10.0.0.2:80"));
        let mut engine = Fake::with_events([EngineEvent::Guarding { local, remote }]);
        let mut pending = Vec::new();
        drain_events(
            &mut engine,
            Some(&journal),
            &OutcomeTable::default(),
            &mut pending,
        );
        assert_eq!(
            pending.len(),
            1,
            "the event still goes to the outcome thread"
        );
        let replay = conn_journal::read_previous(&path).expect("read");
        assert_eq!(replay.open, vec![ConnKey { local, remote }]);
    }

    #[test]
    fn a_port_guarded_again_after_its_predecessor_ended_stays_listed() {
        let dir = TempDir::new("reuse");
        let path = dir.0.join(conn_journal::FILE_NAME);
        let journal = Mutex::new(Journal::create(&path).expect("journal"));
        let (local, remote) = (addr("10.0.0.1:40000"), addr("10.0.0.2:80"));
        let mut engine = Fake::with_events([
            EngineEvent::Guarding { local, remote },
            EngineEvent::Aborted {
                local,
                remote,
                reason: "reset".into(),
            },
            EngineEvent::Guarding { local, remote },
            EngineEvent::Plain {
                local: addr("10.0.0.1:40001"),
                remote,
                reason: crate::engine_api::PlainReason::Negotiation("no ENO".into()),
            },
        ]);
        let mut pending = Vec::new();
        drain_events(
            &mut engine,
            Some(&journal),
            &OutcomeTable::default(),
            &mut pending,
        );
        let replay = conn_journal::read_previous(&path).expect("read");
        assert_eq!(replay.open, vec![ConnKey { local, remote }]);
        assert_eq!(pending.len(), 4);
    }

    /// A packet thread stand-in that knows `known` (pending, or settled
    /// once `settle_after` has passed), holds `rows` for `list`, and
    /// counts the policies set on it.
    fn shard(
        known: Option<(SocketAddr, SocketAddr)>,
        settle_after: Duration,
        rows: usize,
        policies: Arc<std::sync::atomic::AtomicUsize>,
    ) -> ShardLink {
        let (tx, rx) = std::sync::mpsc::sync_channel::<EngineRequest>(16);
        std::thread::spawn(move || {
            for req in rx {
                match req {
                    EngineRequest::Lookup {
                        local,
                        remote,
                        wait,
                        reply,
                    } => {
                        if known == Some((local, remote)) {
                            std::thread::sleep(settle_after.min(wait));
                            let _ = reply.send(if wait >= settle_after {
                                LookupState::Plain {
                                    reason: crate::engine_api::PlainReason::NotSeenFromSyn,
                                }
                            } else {
                                LookupState::Pending
                            });
                        } else {
                            let _ = reply.send(LookupState::Unknown);
                        }
                    }
                    EngineRequest::List { reply } => {
                        let row = ConnectionView {
                            conn: tcpcrypt_control::Connection {
                                local: addr("10.0.0.1:1"),
                                remote: addr("10.0.0.2:2"),
                                lookup: LookupState::Pending,
                                phase: crate::engine_api::Phase::Handshake,
                                bytes_sent: 0,
                                bytes_received: 0,
                                age: Duration::ZERO,
                            },
                            guarded: false,
                        };
                        let _ = reply.send(Arc::new(vec![row; rows]));
                    }
                    EngineRequest::FlushResumption { reply } => {
                        let _ = reply.send(rows);
                    }
                    EngineRequest::SetPolicy { reply, .. } => {
                        policies.fetch_add(1, Ordering::Relaxed);
                        let _ = reply.send(Ok(()));
                    }
                    EngineRequest::ClearPolicy { reply, .. } => {
                        let _ = reply.send(rows > 0);
                    }
                    EngineRequest::Report { .. } => {}
                }
            }
        });
        ShardLink {
            tx,
            wake: Arc::new(EventFd::new().expect("eventfd")),
        }
    }

    #[test]
    fn a_lookup_gets_the_owning_threads_answer_and_unknown_from_none() {
        let conn = (addr("10.0.0.1:40000"), addr("10.0.0.2:80"));
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let handle = EngineHandle::sharded(
            vec![
                shard(None, Duration::ZERO, 0, count.clone()),
                shard(Some(conn), Duration::from_millis(50), 0, count.clone()),
                shard(None, Duration::ZERO, 0, count.clone()),
            ],
            Arc::default(),
        );
        // The owner settles within the wait: its answer, not the others'
        // quicker "unknown", is the lookup's.
        let state = handle
            .lookup(conn.0, conn.1, Duration::from_secs(2))
            .expect("answered");
        assert!(matches!(state, Lookup::Plain { .. }), "{state:?}");
        let state = handle
            .lookup(conn.0, conn.1, Duration::from_millis(5))
            .expect("answered");
        assert_eq!(state, Lookup::Pending);
        let state = handle
            .lookup(conn.0, addr("10.0.0.3:80"), Duration::from_millis(5))
            .expect("answered");
        assert_eq!(state, Lookup::Unknown);
    }

    #[test]
    fn control_requests_reach_every_thread_and_their_answers_are_combined() {
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let handle = EngineHandle::sharded(
            vec![
                shard(None, Duration::ZERO, 2, count.clone()),
                shard(None, Duration::ZERO, 0, count.clone()),
                shard(None, Duration::ZERO, 3, count.clone()),
            ],
            Arc::default(),
        );
        assert_eq!(handle.list().expect("list").len(), 5);
        assert_eq!(handle.flush_resumption().expect("flush"), 5);
        assert!(
            handle
                .clear_policy(PolicyScope::Listen, addr("10.0.0.1:80"))
                .expect("clear")
        );
        handle
            .set_policy(
                PolicyScope::Listen,
                addr("10.0.0.1:80"),
                PolicyUpdate::default(),
            )
            .expect("answered")
            .expect("set");
        assert_eq!(count.load(Ordering::Relaxed), 3, "every thread holds it");
    }

    #[test]
    fn a_stopped_thread_fails_the_question_instead_of_hiding_its_connections() {
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        drop(rx);
        let stopped = ShardLink {
            tx,
            wake: Arc::new(EventFd::new().expect("eventfd")),
        };
        let handle = EngineHandle::sharded(
            vec![shard(None, Duration::ZERO, 1, count), stopped],
            Arc::default(),
        );
        assert!(matches!(handle.list(), Err(HandleError::Stopped)));
    }

    /// Outcomes reach the shared table as the events are drained (before
    /// the verdict), and leave it when the engine forgets the connection.
    #[test]
    fn drained_events_publish_and_withdraw_outcomes() {
        let (local, remote) = (addr("10.0.0.1:40000"), addr("10.0.0.2:80"));
        let other = addr("10.0.0.1:40001");
        let reason = crate::engine_api::PlainReason::NotSeenFromSyn;
        let table = OutcomeTable::default();
        let mut engine = Fake::with_events([
            EngineEvent::Guarding { local, remote },
            EngineEvent::Plain {
                local: other,
                remote,
                reason: reason.clone(),
            },
        ]);
        let mut pending = Vec::new();
        drain_events(&mut engine, None, &table, &mut pending);
        assert_eq!(table.get(local, remote), None, "still negotiating");
        assert_eq!(
            table.get(other, remote),
            Some(Lookup::Plain {
                reason: reason.to_string()
            })
        );
        engine.events.push_back(EngineEvent::Forgotten {
            local: other,
            remote,
        });
        drain_events(&mut engine, None, &table, &mut pending);
        assert!(table.is_empty());
        assert_eq!(pending.len(), 3, "every event still goes on");
    }

    type Snapshot = Arc<Vec<ConnectionView>>;

    fn ask_lists(
        n: usize,
    ) -> (
        Vec<Sender<Snapshot>>,
        Vec<std::sync::mpsc::Receiver<Snapshot>>,
    ) {
        (0..n).map(|_| std::sync::mpsc::channel()).unzip()
    }

    /// Asks, then runs rounds until the copy is complete; returns the
    /// number of rounds.
    fn answer_lists<E: PacketEngine>(
        engine: &E,
        now: Instant,
        replies: Vec<Sender<Snapshot>>,
        list: &mut ListBuilder,
    ) -> usize {
        list.ask(engine, now, replies);
        let mut rounds = 0;
        while list.busy() {
            list.step(engine, now);
            rounds += 1;
        }
        rounds
    }

    #[test]
    fn lists_of_one_round_share_one_copy() {
        let engine = Fake::slow_list(Duration::ZERO);
        let (tx, rx) = ask_lists(16);
        answer_lists(&engine, Instant::now(), tx, &mut ListBuilder::default());
        assert_eq!(engine.copies.get(), 1);
        assert!(
            rx.iter().all(|r| r.recv().is_ok()),
            "a client got no answer"
        );
    }

    #[test]
    fn a_large_table_is_copied_a_slice_per_round_and_late_askers_share_it() {
        let engine = Fake {
            rows: 3 * LIST_ROWS_PER_ROUND + 5,
            ..Fake::default()
        };
        let mut list = ListBuilder::default();
        let now = Instant::now();
        let (tx, first) = ask_lists(1);
        list.ask(&engine, now, tx);
        list.step(&engine, now);
        assert!(
            first[0].try_recv().is_err(),
            "answered before the copy ended"
        );
        let (tx, late) = ask_lists(1);
        list.ask(&engine, now, tx);
        let mut rounds = 1;
        while list.busy() {
            list.step(&engine, now);
            rounds += 1;
        }
        assert_eq!(rounds, 4);
        assert_eq!(engine.copies.get(), 1, "the late request joined the copy");
        let a = first[0].recv().expect("answer");
        let b = late[0].recv().expect("answer");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.len(), engine.rows);
    }

    #[test]
    fn a_held_recent_snapshot_is_reused_and_an_old_one_is_not() {
        let cost = Duration::from_millis(20);
        let engine = Fake::slow_list(cost);
        let mut list = ListBuilder::default();
        let t0 = Instant::now();
        let (tx, rx) = ask_lists(1);
        answer_lists(&engine, t0, tx, &mut list);
        let held = rx[0].recv().expect("answer");
        assert_eq!(engine.copies.get(), 1);

        // Within the duty window and still held by a control thread.
        let (tx, rx) = ask_lists(1);
        answer_lists(&engine, t0 + cost, tx, &mut list);
        let again = rx[0].recv().expect("answer");
        assert!(Arc::ptr_eq(&held, &again), "not the same snapshot");
        assert_eq!(engine.copies.get(), 1);

        // Past the window: copied anew.
        let (tx, rx) = ask_lists(1);
        answer_lists(&engine, t0 + cost * (LIST_DUTY + 5), tx, &mut list);
        assert!(rx[0].recv().is_ok());
        assert_eq!(engine.copies.get(), 2);
    }

    #[test]
    fn a_snapshot_nobody_holds_is_not_kept() {
        let engine = Fake::slow_list(Duration::from_millis(20));
        let mut list = ListBuilder::default();
        let t0 = Instant::now();
        let (tx, rx) = ask_lists(1);
        answer_lists(&engine, t0, tx, &mut list);
        drop(rx[0].recv().expect("answer"));
        let (tx, rx) = ask_lists(1);
        answer_lists(&engine, t0, tx, &mut list);
        assert!(rx[0].recv().is_ok());
        assert_eq!(engine.copies.get(), 2);
    }
}
