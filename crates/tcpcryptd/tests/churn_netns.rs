//! Connection churn with real daemons on both ends (issue 10, "Must show"):
//! 10,000 connections opened, used both ways and closed, then the daemons
//! must still run, their connection tables must be back to where they
//! started, and their resident memory back near its starting point. Needs
//! root. Takes about 25 s.
//!
//! Choices, so the numbers can be read:
//! - The client closes first, with an ordinary FIN, so every connection
//!   goes through the engine's whole close path (FINp both ways) rather
//!   than a reset. The client's sockets then wait in TIME-WAIT for 60 s,
//!   each holding its ephemeral port; the namespace's default range
//!   (32768-60999) has room for all of them, so neither `SO_LINGER` 0 nor
//!   `tcp_tw_reuse` is needed, and the namespace takes the TIME-WAIT
//!   sockets with it when it goes.
//! - `--cleanup-delay 1`: a closed connection is forgotten one second after
//!   its last FIN instead of 30, so the table drains within the test.
//! - A few workers in parallel, each with its own connections one after
//!   the other, keep the run short on two cores.
//! - Every connection is checked to be encrypted through the daemons' info
//!   log (one `tcpcrypt` line per session, and no `plain` or `aborted`
//!   line); every 100th one is also looked up on both daemons while open,
//!   which must agree on its session ID.
//! - Memory is compared with a reading taken after a short warm-up, and
//!   read twice: `VmRSS`, what the issue names, and `RssAnon`, its part
//!   that is the daemon's own data. The rest is pages of the binary and
//!   libraries, which grow as code runs for the first time (the closing
//!   and cleanup paths, here) and hold no state.
//! - Two loops of 10,000. What the allocator keeps after the first depends
//!   on how many connections were open at once (faster machines and
//!   release builds reach three times the debug build's peak), so an
//!   absolute limit would judge the machine. A leak grows with the number
//!   of connections instead, so the second loop must leave the daemon's
//!   own data where the first left it; and the first must hand most of
//!   its peak back.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tcpcrypt_testnet::{Daemon, DaemonOptions, Memory, Topology, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_tcpcryptd");
const PORT: u16 = 7050;
const CONNECTIONS: usize = 10_000;
/// Opened before the first memory reading that counts: the first
/// connections allocate what the daemon keeps for good (the resumption
/// cache for this peer, the allocator's arenas for its threads, the pages
/// of the receive buffers the kernel has written to).
const WARM_UP: usize = 200;
const WORKERS: usize = 8;
const SAMPLE_EVERY: usize = 100;
const MESSAGE: usize = 64;
/// How much more of its own data a daemon may hold after the second loop
/// than after the first. What the allocator keeps moves by up to about 2
/// MiB from one loop to the next, either way (measured over five loops in
/// a row: 4.2, 6.2, 7.4, 9.2, 5.2 MiB); a leak of 400 bytes per connection
/// or more fails it. Before the timer heap dropped the deadlines that had
/// moved earlier, every closed connection left 50 to 100 bytes there for
/// the idle timeout (over two hours).
const LEAK_SLACK_KIB: u64 = 4 * 1024;
/// Of the resident memory gained between the start and the peak, the share
/// that must be given back by the end of the first loop. Without
/// `tcpcryptd::trim` about a quarter was (7 MiB kept of 9 MiB gained);
/// with it about three quarters is.
const GIVEN_BACK_SHARE: f64 = 0.5;

fn options() -> DaemonOptions {
    DaemonOptions::new(BIN)
        .arg("--ports")
        .arg(PORT.to_string())
        .arg("--cleanup-delay")
        .arg("1")
        .arg("--log-level")
        .arg("info")
}

/// Echoes each connection until the client's FIN, then closes: the server
/// never holds TIME-WAIT.
fn serve(listener: TcpListener) {
    for _ in 0..WORKERS {
        let listener = listener.try_clone().expect("clone listener");
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { return };
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        });
    }
}

fn message(i: usize) -> [u8; MESSAGE] {
    let mut m = [b'.'; MESSAGE];
    let label = format!("connection {i} ");
    m[..label.len()].copy_from_slice(label.as_bytes());
    m
}

/// One connection: a message each way, then the client's FIN. For sampled
/// ones, both daemons are asked about it while it is open.
fn one(i: usize, to: SocketAddr, daemons: Option<(&Daemon, &Daemon)>) {
    let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connection {i}: connect: {e}"));
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let sent = message(i);
    c.write_all(&sent)
        .unwrap_or_else(|e| panic!("connection {i}: write: {e}"));
    let mut got = [0u8; MESSAGE];
    c.read_exact(&mut got)
        .unwrap_or_else(|e| panic!("connection {i}: read: {e}"));
    assert_eq!(got, sent, "connection {i}: other bytes came back");
    if let Some((client, server)) = daemons {
        let (local, remote) = (c.local_addr().expect("local"), c.peer_addr().expect("peer"));
        let a = client.lookup(local, remote, 5000).expect("client lookup");
        let b = server.lookup(remote, local, 5000).expect("server lookup");
        assert_eq!(a["state"], "tcpcrypt", "connection {i}, client: {a}");
        assert_eq!(b["state"], "tcpcrypt", "connection {i}, server: {b}");
        assert_eq!(a["session_id"], b["session_id"], "connection {i}");
    }
    c.shutdown(Shutdown::Write)
        .unwrap_or_else(|e| panic!("connection {i}: shutdown: {e}"));
    // The server's FIN: the connection is closed on both ends before the
    // next one starts, so at most WORKERS are open at once.
    let mut rest = [0u8; 1];
    assert_eq!(c.read(&mut rest).ok(), Some(0), "connection {i}: no EOF");
}

/// Opens `range` connections from `WORKERS` threads in the client's
/// namespace; each thread takes the next index until none is left.
fn churn(t: &Topology, to: SocketAddr, range: std::ops::Range<usize>, daemons: (&Daemon, &Daemon)) {
    let next = AtomicUsize::new(range.start);
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                t.client.run(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= range.end {
                            return;
                        }
                        let sample = i.is_multiple_of(SAMPLE_EVERY).then_some(daemons);
                        one(i, to, sample);
                    }
                })
            });
        }
    });
}

fn wait_until_drained(d: &Daemon, timeout: Duration) -> Vec<Value> {
    let end = Instant::now() + timeout;
    loop {
        let list = d.list().expect("list");
        if list.is_empty() || Instant::now() > end {
            return list;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Session, plain and aborted info lines in a daemon's log, and error
/// lines (an engine panic is one, and so is a lookup outcome left
/// published after its connection left the table, which the daemon checks
/// each time its table drains).
fn outcomes(d: &Daemon) -> (usize, usize, usize, usize) {
    let log = d.log_text();
    let field = |n: usize, w: &str| {
        log.lines()
            .filter(|l| l.split_whitespace().nth(n) == Some(w))
            .count()
    };
    (
        field(2, "tcpcrypt"),
        field(2, "plain"),
        field(2, "aborted"),
        field(1, "ERROR"),
    )
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[test]
fn ten_thousand_connections_leave_no_entries_and_no_memory_behind() {
    require_root();
    let t = Topology::pair().expect("topology");
    let client = Daemon::start(&t.client, &options()).expect("client daemon");
    let server = Daemon::start(&t.server, &options()).expect("server daemon");
    let to = SocketAddr::new(t.server_addrs.ip(false), PORT);
    serve(
        t.server
            .run(|| TcpListener::bind(to))
            .expect("listen on the server"),
    );
    let fresh = [client.memory().expect("rss"), server.memory().expect("rss")];
    assert!(client.list().expect("list").is_empty());
    assert!(server.list().expect("list").is_empty());

    churn(&t, to, 0..WARM_UP, (&client, &server));
    assert!(wait_until_drained(&client, Duration::from_secs(20)).is_empty());
    assert!(wait_until_drained(&server, Duration::from_secs(20)).is_empty());
    let start = [client.memory().expect("rss"), server.memory().expect("rss")];

    let begun = Instant::now();
    churn(&t, to, WARM_UP..WARM_UP + CONNECTIONS, (&client, &server));
    let loop_time = begun.elapsed();
    let busy = [
        client.list().expect("list").len(),
        server.list().expect("list").len(),
    ];
    let left_c = wait_until_drained(&client, Duration::from_secs(30));
    let left_s = wait_until_drained(&server, Duration::from_secs(30));
    let drain_time = begun.elapsed() - loop_time;
    let end: [Memory; 2] = [client.memory().expect("rss"), server.memory().expect("rss")];

    for (name, d, f, s, e, b) in [
        ("client", &client, fresh[0], start[0], end[0], busy[0]),
        ("server", &server, fresh[1], start[1], end[1], busy[1]),
    ] {
        eprintln!(
            "{name} daemon: RSS {:.1} MiB fresh, {:.1} MiB at the start (after {WARM_UP} \
             connections), peak {:.1} MiB, {:.1} MiB at the end; its own data (RssAnon) \
             {:.1} MiB at the start, {:.1} MiB at the end; {b} table entries right after the \
             loop, 0 expected at the end; (encrypted, plain, aborted, errors) {:?}",
            mib(f.rss_kib),
            mib(s.rss_kib),
            mib(e.peak_kib),
            mib(e.rss_kib),
            mib(s.anon_kib),
            mib(e.anon_kib),
            outcomes(d),
        );
    }
    eprintln!(
        "{CONNECTIONS} connections in {loop_time:.1?} ({:.0}/s), tables drained {drain_time:.1?} later",
        CONNECTIONS as f64 / loop_time.as_secs_f64()
    );
    assert!(left_c.is_empty(), "client daemon still tracks {left_c:?}");
    assert!(left_s.is_empty(), "server daemon still tracks {left_s:?}");
    for (name, s, e) in [("client", start[0], end[0]), ("server", start[1], end[1])] {
        let gained = e.peak_kib.saturating_sub(s.rss_kib) as f64;
        let kept = e.rss_kib.saturating_sub(s.rss_kib) as f64;
        assert!(
            kept <= gained * (1.0 - GIVEN_BACK_SHARE),
            "{name} daemon kept {:.1} of the {:.1} MiB it gained (start {:.1}, peak {:.1}, \
             end {:.1} MiB)",
            kept / 1024.0,
            gained / 1024.0,
            mib(s.rss_kib),
            mib(e.peak_kib),
            mib(e.rss_kib),
        );
    }

    // The second loop: the daemons must come back to where the first left
    // them.
    let second = WARM_UP + CONNECTIONS..WARM_UP + 2 * CONNECTIONS;
    churn(&t, to, second, (&client, &server));
    let left_c = wait_until_drained(&client, Duration::from_secs(30));
    let left_s = wait_until_drained(&server, Duration::from_secs(30));
    let again: [Memory; 2] = [client.memory().expect("rss"), server.memory().expect("rss")];
    eprintln!(
        "after a second loop of {CONNECTIONS}: own data client {:.1} MiB, server {:.1} MiB; \
         RSS client {:.1} MiB, server {:.1} MiB",
        mib(again[0].anon_kib),
        mib(again[1].anon_kib),
        mib(again[0].rss_kib),
        mib(again[1].rss_kib),
    );

    // Still alive: both answer and have counted every session.
    assert_eq!(
        client
            .request(&serde_json::json!({"v":1,"op":"version"}))
            .expect("version")["ok"],
        true
    );
    assert_eq!(
        server
            .request(&serde_json::json!({"v":1,"op":"version"}))
            .expect("version")["ok"],
        true
    );
    assert!(left_c.is_empty(), "client daemon still tracks {left_c:?}");
    assert!(left_s.is_empty(), "server daemon still tracks {left_s:?}");
    for (name, d) in [("client", &client), ("server", &server)] {
        assert_eq!(
            outcomes(d),
            (WARM_UP + 2 * CONNECTIONS, 0, 0, 0),
            "{name}: (encrypted, plain, aborted) sessions and error lines"
        );
    }
    for (name, e, a) in [("client", end[0], again[0]), ("server", end[1], again[1])] {
        assert!(
            a.anon_kib <= e.anon_kib + LEAK_SLACK_KIB,
            "{name} daemon's own data grew from {} KiB after the first loop to {} KiB after \
             the second: a leak",
            e.anon_kib,
            a.anon_kib,
        );
    }
}
