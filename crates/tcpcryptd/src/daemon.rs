//! Start-up, the threads, and shutdown.
//!
//! Order matters: encrypted connections a crashed instance left are aborted
//! first (their keys died with it), stale rules go next, then the queues
//! are bound and the packet threads run before our rules exist (so
//! `--fail-closed` never drops a packet for want of a reader), and the
//! control socket is created last, so a client that can talk to it knows
//! the daemon is fully up. Shutdown runs the other way round; every step is
//! attempted even if one fails.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::config::Config;
use crate::conn_journal::{self, ConnKey, Journal};
use crate::control_server::{self, ClientLimits, ControlError, ControlSocket};
use crate::engine_api::{LookupState, PacketEngine, Phase};
use crate::firewall::{self, Backend, FirewallError};
use crate::inject::{InjectError, Injector};
use crate::keylog::KeyLog;
use crate::nfqueue::{NfqError, Queue};
use crate::outcome_table::{OutcomeTable, random_key};
use crate::packet_loop::{EngineHandle, LoopStats, PacketLoop, REQUEST_QUEUE, ShardLink};
use crate::session_table::TableFileError;
use crate::stats_report::{REPORT_INTERVAL, StatsReport};
use crate::sys::{self, EventFd};

/// Kernel queue length (packets waiting for a verdict).
const QUEUE_MAX_LEN: u32 = 8192;
/// Netlink receive buffer.
const QUEUE_RCVBUF: usize = 16 << 20;

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("blocking termination signals: {0}")]
    Signals(std::io::Error),
    #[error("selecting the iptables backend: {0}")]
    Backend(FirewallError),
    #[error("removing stale rules: {0}")]
    StaleRules(FirewallError),
    #[error("installing firewall rules: {0}")]
    Rules(FirewallError),
    #[error("reading the journal of encrypted connections {path}: {source}")]
    ReadJournal {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting the journal of encrypted connections {path}: {source}")]
    CreateJournal {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening key log {path}: {source}")]
    KeyLog {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Inject(#[from] InjectError),
    #[error(transparent)]
    Queue(#[from] NfqError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("starting a thread: {0}")]
    Thread(std::io::Error),
    #[error("creating the wake-up eventfd: {0}")]
    EventFd(std::io::Error),
    #[error(transparent)]
    Table(#[from] TableFileError),
    #[error("the packet thread failed: {0}")]
    PacketThread(String),
}

/// Runs the daemon until SIGINT/SIGTERM or a fatal packet-path error, with
/// one engine from `make_engine` per packet thread. Must be called before any other thread is started, so every thread
/// inherits the blocked termination signals.
pub fn run<E>(config: &Config, mut make_engine: impl FnMut() -> E) -> Result<(), DaemonError>
where
    E: PacketEngine + Send + 'static,
{
    sys::block_termination_signals().map_err(DaemonError::Signals)?;
    // A live instance owns the rules, the queue and the journal: leave them
    // alone rather than find out only when binding the socket at the end.
    if UnixStream::connect(&config.control_socket).is_ok() {
        return Err(ControlError::InUse {
            path: config.control_socket.clone(),
        }
        .into());
    }
    let journal_path = conn_journal::path_for(&config.control_socket);
    abort_connections_left_over(&journal_path)?;
    let journal = Journal::create(&journal_path).map_err(|source| DaemonError::CreateJournal {
        path: journal_path.clone(),
        source,
    })?;
    let backend = Backend::select(config.iptables).map_err(DaemonError::Backend)?;
    log::debug!("iptables backend: {} / {}", backend.v4, backend.v6);
    let stale = firewall::remove_rules(&backend).map_err(DaemonError::StaleRules)?;
    if stale > 0 {
        log::warn!("removed {stale} stale jump rule(s) left by an earlier instance");
    }
    let keylog = match &config.keylog {
        Some(path) => {
            let kl = KeyLog::open(path).map_err(|source| DaemonError::KeyLog {
                path: path.display().to_string(),
                source,
            })?;
            log::warn!(
                "key log is ON: session secrets are written to {}; anyone who can read it can decrypt this host's tcpcrypt traffic",
                path.display()
            );
            Some(kl)
        }
        None => None,
    };
    let threads = usize::from(config.threads);
    let mut queues = Vec::with_capacity(threads);
    for n in 0..config.threads {
        let mut queue = Queue::bind(config.queue + n, QUEUE_MAX_LEN, QUEUE_RCVBUF)?;
        if config.large_segments {
            // Without it everything still works, one MSS per queue round trip.
            if let Err(e) = queue.take_large_segments() {
                log::warn!(
                    "large segments stay off ({e}): the kernel cuts them up before queueing"
                );
            }
        }
        queues.push(queue);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicBool::new(false));
    let (ev_tx, ev_rx) = std::sync::mpsc::channel();
    let outcome_thread = std::thread::Builder::new()
        .name("outcomes".into())
        .spawn(move || crate::outcomes::run(ev_rx, keylog))
        .map_err(DaemonError::Thread)?;
    let gid = control_server::resolve_group(&config.control_group)?;
    let outcomes = Arc::new(session_table(config, gid)?);
    let journal = Arc::new(Mutex::new(journal));
    let mut links = Vec::with_capacity(threads);
    let mut inboxes = Vec::with_capacity(threads);
    for _ in 0..threads {
        let (tx, rx) = std::sync::mpsc::sync_channel(REQUEST_QUEUE);
        let wake = Arc::new(EventFd::new().map_err(DaemonError::EventFd)?);
        links.push(ShardLink { tx, wake });
        inboxes.push(rx);
    }
    let limits = config.limits;
    let mut packet_threads = Vec::with_capacity(threads);
    for (n, (queue, requests)) in queues.into_iter().zip(inboxes).enumerate() {
        let packet_loop = PacketLoop {
            engine: make_engine(),
            queue,
            injector: Injector::new(config.mark)?,
            requests,
            wake: links[n].wake.clone(),
            events: ev_tx.clone(),
            outcomes: outcomes.clone(),
            stop: stop.clone(),
            journal: Some(journal.clone()),
            report: StatsReport::new(REPORT_INTERVAL, limits),
            peers: (0..threads)
                .filter(|&m| m != n)
                .map(|m| links[m].clone())
                .collect(),
            label: if threads > 1 {
                format!("queue {}: ", config.queue + n as u16)
            } else {
                String::new()
            },
        };
        let failed_flag = failed.clone();
        let thread = std::thread::Builder::new()
            .name(format!("packets-{n}"))
            .spawn(move || {
                let r = packet_loop.run();
                if r.is_err() {
                    failed_flag.store(true, Ordering::Relaxed);
                }
                r
            })
            .map_err(DaemonError::Thread)?;
        packet_threads.push(thread);
    }
    // The outcome thread stops once every packet thread dropped its sender.
    drop(ev_tx);

    let handle = EngineHandle::sharded(links.clone(), outcomes);
    let result = serve(config, gid, &backend, handle.clone(), &failed);
    let aborted_all = !failed.load(Ordering::Relaxed) && abort_encrypted_connections(&handle);

    stop.store(true, Ordering::Relaxed);
    for link in &links {
        link.wake.wake();
    }
    let mut stats = LoopStats::default();
    let mut loop_result = Ok(());
    for thread in packet_threads {
        match thread.join() {
            Ok(Ok(s)) => stats.add(&s),
            Ok(Err(e)) => loop_result = Err(DaemonError::PacketThread(e.to_string())),
            Err(_) => loop_result = Err(DaemonError::PacketThread("panicked".into())),
        }
    }
    drop(handle);
    // Rules go before anything else so traffic flows plain again at once.
    if let Err(e) = firewall::remove_rules(&backend) {
        log::error!("removing firewall rules at shutdown: {e}");
    }
    if outcome_thread.join().is_err() {
        log::error!("the outcome thread panicked");
    }
    // Every packet thread has ended, so the journal is ours alone again.
    let journal = Arc::try_unwrap(journal)
        .ok()
        .map(|j| j.into_inner().unwrap_or_else(PoisonError::into_inner));
    match journal {
        // Nothing listed is left open, so a successor has nothing to abort.
        Some(j) if aborted_all && loop_result.is_ok() => {
            if let Err(e) = j.remove() {
                log::warn!("removing {}: {e}", journal_path.display());
            }
        }
        _ => log::warn!(
            "keeping {}: the next start aborts what it lists",
            journal_path.display()
        ),
    }
    if loop_result.is_ok() {
        log::info!(
            "stopped: {} packets ({} large), {} modified, {} dropped, {} injected ({} failed), {} engine panics, {} cut short, {} path-MTU reports passed between threads",
            stats.packets,
            stats.large,
            stats.modified,
            stats.dropped,
            stats.injected,
            stats.inject_failures,
            stats.engine_panics,
            stats.truncated,
            stats.reports_forwarded
        );
    }
    result.and(loop_result)
}

/// The table of settled outcomes, published next to the control socket
/// for applications to read without asking; kept private (and lookups go
/// over the socket) if the file cannot be made.
fn session_table(config: &Config, gid: u32) -> Result<OutcomeTable, DaemonError> {
    let path = tcpcrypt_control::table::path_for(&config.control_socket);
    let connections = config.limits.max_connections;
    match OutcomeTable::published(&path, gid, connections, random_key()) {
        Ok(table) => Ok(table),
        Err(e @ TableFileError::InUse { .. }) => Err(e.into()),
        Err(e) => {
            log::warn!("{e}; applications' lookups will all go over the control socket");
            Ok(OutcomeTable::private(connections, random_key()))
        }
    }
}

/// Installs rules, opens the control socket and waits for a signal. The
/// control socket file is removed when this returns.
fn serve(
    config: &Config,
    gid: u32,
    backend: &Backend,
    handle: EngineHandle,
    failed: &AtomicBool,
) -> Result<(), DaemonError> {
    firewall::install_rules(backend, config).map_err(DaemonError::Rules)?;
    let control = ControlSocket::bind_gid(&config.control_socket, gid)?;
    control
        .serve(handle, ClientLimits::new(config.control_client_timeout))
        .map_err(DaemonError::Thread)?;
    log::info!(
        "ready: {}, {}, control socket {}",
        match config.threads {
            1 => format!("queue {}", config.queue),
            n => format!(
                "{n} packet threads on queues {} to {}",
                config.queue,
                config.queue + (n - 1)
            ),
        },
        if config.fail_closed {
            "fail-closed"
        } else {
            "fail-open (queue bypass)"
        },
        control.path().display()
    );
    loop {
        if let Some(sig) = sys::wait_for_termination(Duration::from_millis(250)) {
            log::info!("signal {sig} received, shutting down");
            return Ok(());
        }
        if failed.load(Ordering::Relaxed) {
            return Ok(());
        }
    }
}

/// Connections aborted per `ss` invocation.
const ABORT_BATCH: usize = 32;

/// Resets every guarded connection (encrypted, or negotiating and maybe
/// holding the application's first bytes) before the daemon lets go of the
/// queue. The rules go at a clean stop, so their later segments would
/// leave the host unencrypted, and without its keys the connection is dead
/// anyway. `ss -K` (SOCK_DESTROY) makes the
/// kernel abort each socket: the application sees ECONNABORTED rather than
/// a clean end of stream, and the RST it sends still passes through the
/// engine to the peer. True if the engine's list could be read and every
/// socket is gone afterwards.
fn abort_encrypted_connections(handle: &EngineHandle) -> bool {
    let conns = match handle.list() {
        Ok(c) => c,
        Err(e) => {
            log::error!("cannot list connections to abort them at shutdown: {e}");
            return false;
        }
    };
    let live: Vec<_> = conns
        .iter()
        // Guarded ones, and those still negotiating (our SYN offered ENO):
        // an application that asked for a connection while tcpcrypt was
        // running does not get a plain one from a daemon going away.
        .filter(|c| {
            (c.guarded || c.conn.lookup == LookupState::Pending) && c.conn.phase != Phase::Closed
        })
        .map(|c| ConnKey {
            local: c.conn.local,
            remote: c.conn.remote,
        })
        .collect();
    if live.is_empty() {
        return true;
    }
    log::info!("aborting {} tcpcrypt connection(s) before exit", live.len());
    let report = destroy_sockets(&live);
    // Let the resets pass through the packet thread before it stops.
    std::thread::sleep(Duration::from_millis(200));
    report.complete()
}

/// Aborts what the journal of a previous instance still lists. After a
/// clean stop the journal is gone; after a crash its connections are still
/// open in the kernel but nobody holds their keys; the stale rules drop
/// their packets until they are removed, after which whatever their
/// applications send would leave in plaintext.
fn abort_connections_left_over(journal: &Path) -> Result<(), DaemonError> {
    let previous =
        conn_journal::read_previous(journal).map_err(|source| DaemonError::ReadJournal {
            path: journal.to_path_buf(),
            source,
        })?;
    if previous.skipped_lines > 0 {
        log::warn!(
            "{}: skipped {} malformed line(s)",
            journal.display(),
            previous.skipped_lines
        );
    }
    if previous.open.is_empty() {
        return Ok(());
    }
    log::info!(
        "aborting {} tcpcrypt connection(s) a previous instance left",
        previous.open.len()
    );
    let report = destroy_sockets(&previous.open);
    log::debug!(
        "{} of them were still open, the rest had ended meanwhile",
        report.destroyed
    );
    Ok(())
}

/// What [`destroy_sockets`] achieved.
#[derive(Debug, Default, PartialEq, Eq)]
struct AbortReport {
    /// Sockets `ss -K` reported destroyed.
    destroyed: usize,
    /// `ss` lines of sockets still there afterwards.
    remaining: Vec<String>,
    /// `ss` could not be run or failed, so nothing is known.
    failed: bool,
}

impl AbortReport {
    fn complete(&self) -> bool {
        !self.failed && self.remaining.is_empty()
    }
}

/// Aborts the sockets of exactly these connections with `ss -K` (the
/// kernel's SOCK_DESTROY), then asks `ss` again which of them still exist:
/// `ss -K` succeeds even on a kernel built without SOCK_DESTROY support, or
/// when a socket vanished and another took its place, so its exit code
/// proves nothing. Connections that no longer exist are skipped by the
/// kernel. Every socket still there is logged.
fn destroy_sockets(conns: &[ConnKey]) -> AbortReport {
    let mut report = AbortReport::default();
    for chunk in conns.chunks(ABORT_BATCH) {
        let filter = chunk
            .iter()
            .map(|c| format!("( src {} and dst {} )", c.local, c.remote))
            .collect::<Vec<_>>()
            .join(" or ");
        match run_ss(&["-K"], &filter) {
            Ok(lines) => report.destroyed += lines.len(),
            Err(e) => {
                report.failed = true;
                log::warn!("{e}");
                continue;
            }
        }
        match run_ss(&[], &filter) {
            Ok(lines) => report
                .remaining
                .extend(lines.into_iter().filter(|l| holds_data(l))),
            Err(e) => {
                report.failed = true;
                log::warn!("{e}");
            }
        }
    }
    for line in &report.remaining {
        log::error!("could not abort this connection, it may still send in plaintext: {line}");
    }
    report
}

/// Runs `ss -H -n -t state all EXTRA FILTER`; returns its non-empty output
/// lines (no header, so one per socket, the state first).
fn run_ss(extra: &[&str], filter: &str) -> Result<Vec<String>, String> {
    let mut args = vec!["-H", "-n", "-t"];
    args.extend_from_slice(extra);
    args.extend(["state", "all", filter]);
    let what = format!("ss {}", args.join(" "));
    match std::process::Command::new("ss").args(&args).output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_string())
            .collect()),
        Ok(o) => Err(format!(
            "`{what}` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("running `{what}`: {e}")),
    }
}

/// Whether an `ss` line names a socket that could still carry data: a
/// TIME-WAIT socket cannot, and the kernel does not destroy those.
fn holds_data(ss_line: &str) -> bool {
    ss_line.split_whitespace().next() != Some("TIME-WAIT")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_wait_sockets_do_not_count_as_left_open() {
        assert!(!holds_data("TIME-WAIT 0 0 10.0.0.1:40000 10.0.0.2:80"));
        assert!(holds_data("ESTAB 0 0 10.0.0.1:40000 10.0.0.2:80"));
        assert!(holds_data("SYN-SENT 0 1 10.0.0.1:40000 10.0.0.2:80"));
    }

    #[test]
    fn an_abort_is_complete_only_if_ss_ran_and_nothing_is_left() {
        assert!(AbortReport::default().complete());
        let left = AbortReport {
            remaining: vec!["ESTAB 0 0 a b".into()],
            ..AbortReport::default()
        };
        assert!(!left.complete());
        let failed = AbortReport {
            failed: true,
            ..AbortReport::default()
        };
        assert!(!failed.complete());
    }
}
