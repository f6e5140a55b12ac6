//! `--lookups`: what a session lookup costs the application that asks, the
//! way a web server asks: through the client library, from several threads
//! at once, to the server's daemon.
//!
//! Five runs, each printed as p50/p99/max in microseconds and lookups per
//! second:
//!
//! - **settled, idle**: connections whose key exchange is long over, with
//!   no other traffic. Three ways: with a new control connection per
//!   lookup (the library's `reuse_connections(false)` and
//!   `read_table(false)`, how every lookup went before the pool), on the
//!   pooled connections the library keeps open (`read_table(false)`), and
//!   from the session table the daemon publishes (the library's default:
//!   no round trip to the daemon at all).
//! - **settled, during bulk**: the same three while one bulk stream
//!   crosses both daemons, so their packet threads are as busy as they get.
//! - **right after accept**: each lookup is made on a connection the
//!   server has just accepted, as a web server module does; it may have to
//!   wait for the key exchange, so it shows what a new connection costs.
//!
//! Every answer must be `tcpcrypt`; anything else is counted and reported,
//! and makes the exit status 3. A slow number never does.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tcpcrypt::{Client, Lookup};

use crate::interrupt;
use crate::stats::percentile_ms;
use crate::testbed::{Ports, Testbed};
use crate::traffic::{self, Direction, Failure};

/// Settled connections the lookups cycle through.
const SETTLED: usize = 64;
/// How long a lookup may wait for a key exchange in progress.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(5);

/// One run's latencies and what went wrong.
#[derive(Default)]
struct Run {
    samples: Vec<Duration>,
    seconds: f64,
    /// Answers other than `tcpcrypt`, and failed lookups; the first reason.
    wrong: u64,
    first_wrong: Option<String>,
}

impl Run {
    fn merge(&mut self, other: Run) {
        self.samples.extend(other.samples);
        self.wrong += other.wrong;
        self.first_wrong = self.first_wrong.take().or(other.first_wrong);
    }

    fn note(&mut self, started: Instant, answer: Result<Lookup, tcpcrypt::Error>) {
        self.samples.push(started.elapsed());
        let problem = match answer {
            Ok(Lookup::Tcpcrypt(_)) => return,
            Ok(other) => format!("answer {other:?}"),
            Err(e) => e.to_string(),
        };
        self.wrong += 1;
        self.first_wrong.get_or_insert(problem);
    }

    fn micros(&mut self, p: f64) -> Option<f64> {
        percentile_ms(&mut self.samples, p).map(|ms| ms * 1e3)
    }

    fn line(&mut self, name: &str) -> (String, Value) {
        let (p50, p99, max) = (self.micros(50.0), self.micros(99.0), self.micros(100.0));
        let rate = self.samples.len() as f64 / self.seconds.max(1e-9);
        // Table lookups take well under a microsecond.
        let us = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        let text = format!(
            "{name:<34} {:>8} {:>8} {:>8} {:>10.0} {:>8}",
            us(p50),
            us(p99),
            us(max),
            rate,
            self.samples.len()
        );
        let json = json!({
            "p50_us": p50, "p99_us": p99, "max_us": max,
            "lookups_per_second": rate, "lookups": self.samples.len(),
            "wrong": self.wrong, "first_wrong": self.first_wrong,
        });
        (text, json)
    }
}

/// How the library is told to reach the daemon.
#[derive(Clone, Copy)]
struct Route {
    reuse: bool,
    table: bool,
}

/// Lookups of `conns` (the server's view: local, remote) from `threads`
/// threads, round robin, until `stop` is set.
fn settled(
    path: &PathBuf,
    conns: &[(SocketAddr, SocketAddr)],
    threads: usize,
    how: Route,
    stop: &AtomicBool,
) -> Run {
    let began = Instant::now();
    let mut run = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let client = Client::with_control_path(path)
                        .reuse_connections(how.reuse)
                        .read_table(how.table);
                    let mut run = Run::default();
                    let mut i = t;
                    while !stop.load(Ordering::Relaxed) && !interrupt::requested() {
                        let (local, remote) = conns[i % conns.len()];
                        i += 1;
                        let started = Instant::now();
                        run.note(started, client.lookup_addrs(local, remote));
                    }
                    run
                })
            })
            .collect();
        let mut all = Run::default();
        for w in workers {
            match w.join() {
                Ok(r) => all.merge(r),
                Err(_) => {
                    all.wrong += 1;
                    all.first_wrong
                        .get_or_insert("a lookup thread panicked".into());
                }
            }
        }
        all
    });
    run.seconds = began.elapsed().as_secs_f64();
    run
}

/// Sets `stop` after `d`, or at once when interrupted.
fn stop_after(d: Duration, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let end = Instant::now() + d;
        while Instant::now() < end && !interrupt::requested() {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
    })
}

/// Connects from `threads` client threads to `port` until `stop`; the
/// server accepts and looks each connection up at once, timed from the
/// accept's return to the answer.
fn after_accept(
    bed: &Testbed,
    path: &PathBuf,
    port: u16,
    threads: usize,
    seconds: f64,
) -> Result<Run, String> {
    let ends = bed.ends();
    let addr = SocketAddr::new(ends.server_ip, port);
    let listener = ends
        .server
        .run(|| TcpListener::bind(addr))
        .map_err(|e| format!("listening on {addr}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("making the listener non-blocking: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let connected = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, connected) = (Arc::clone(&stop), Arc::clone(&connected));
            ends.client.spawn_thread(move || {
                let mut failures = 0u64;
                while !stop.load(Ordering::Relaxed) && !interrupt::requested() {
                    match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
                        Ok(s) => {
                            connected.fetch_add(1, Ordering::Relaxed);
                            // Held until the server has looked it up and
                            // closed, so the lookup never finds it gone.
                            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                            let _ = std::io::Read::read(&mut &s, &mut [0u8; 1]);
                        }
                        // Refusals once the run is over are the listener
                        // going away, not a failure.
                        Err(_) if !stop.load(Ordering::Relaxed) => failures += 1,
                        Err(_) => {}
                    }
                }
                failures
            })
        })
        .collect();
    let timer = stop_after(Duration::from_secs_f64(seconds), Arc::clone(&stop));
    let client = Client::with_control_path(path);
    let mut run = Run::default();
    let began = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                let started = Instant::now();
                run.note(started, client.lookup_fd_wait(&s, HANDSHAKE_WAIT));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => return Err(format!("accepting: {e}")),
        }
    }
    run.seconds = began.elapsed().as_secs_f64();
    // Clients still blocked in their read see the listener go.
    drop(listener);
    let _ = timer.join();
    for c in clients {
        let failed = c.join().unwrap_or(1);
        if failed > 0 {
            run.wrong += failed;
            run.first_wrong
                .get_or_insert("a client's connect failed".into());
        }
    }
    Ok(run)
}

/// Runs the three measurements; returns the report and the number of
/// wrong answers.
pub fn run(
    bed: &Testbed,
    threads: usize,
    seconds: f64,
    bulk_bytes: u64,
) -> Result<(Value, u64), String> {
    let (_, server_path) = bed.control_sockets()?;
    let mut ports = Ports::new();
    let port = ports.take(true)?;
    let idle = traffic::open_idle(bed.ends(), port, SETTLED, 4)
        .map_err(|e| format!("opening the settled connections: {e:?}"))?;
    let mut conns = Vec::with_capacity(SETTLED);
    let waiter = Client::with_control_path(&server_path);
    for c in &idle.clients {
        let (local, peer) = match (c.local_addr(), c.peer_addr()) {
            (Ok(l), Ok(p)) => (l, p),
            _ => return Err("reading a settled connection's addresses".into()),
        };
        // Waited for once, so every later lookup finds it settled.
        match waiter.lookup_addrs_wait(peer, local, HANDSHAKE_WAIT) {
            Ok(Lookup::Tcpcrypt(_)) => conns.push((peer, local)),
            other => return Err(format!("a settled connection is not encrypted: {other:?}")),
        }
    }

    let mut lines = Vec::new();
    let mut report = serde_json::Map::new();
    let mut wrong = 0;
    let mut record = |name: &str, key: &str, mut r: Run| {
        wrong += r.wrong;
        if let Some(why) = &r.first_wrong {
            eprintln!("{name}: {} wrong answers, the first: {why}", r.wrong);
        }
        let (text, json) = r.line(name);
        lines.push(text);
        report.insert(key.into(), json);
    };

    const MODES: [(Route, &str, &str); 3] = [
        (
            Route {
                reuse: false,
                table: false,
            },
            "new connection each",
            "fresh",
        ),
        (
            Route {
                reuse: true,
                table: false,
            },
            "pooled connection",
            "pooled",
        ),
        (
            Route {
                reuse: true,
                table: true,
            },
            "session table",
            "table",
        ),
    ];
    for (path, how, key) in MODES {
        let stop = Arc::new(AtomicBool::new(false));
        let timer = stop_after(Duration::from_secs_f64(seconds), Arc::clone(&stop));
        let r = settled(&server_path, &conns, threads, path, &stop);
        let _ = timer.join();
        record(
            &format!("settled, idle, {how}"),
            &format!("settled_idle_{key}"),
            r,
        );
    }

    let mut bulk_rates = serde_json::Map::new();
    for (path, how, key) in MODES {
        let bulk_port = ports.take(true)?;
        let done = Arc::new(AtomicBool::new(false));
        let bulk_done = Arc::clone(&done);
        let ends = bed.ends();
        let (bulk, r) = std::thread::scope(|s| {
            let bulk = s.spawn(move || {
                let b = traffic::bulk(
                    ends,
                    bulk_port,
                    bulk_bytes,
                    Direction::ClientToServer,
                    |_, _| {},
                );
                bulk_done.store(true, Ordering::Relaxed);
                b
            });
            let r = settled(&server_path, &conns, threads, path, &done);
            (bulk.join(), r)
        });
        let bulk_rate = match bulk {
            Ok(Ok(b)) => Some(b.megabytes_per_second()),
            Ok(Err(Failure::Interrupted)) => None,
            Ok(Err(Failure::Broken(why))) => {
                return Err(format!("the bulk stream failed: {why}"));
            }
            Err(_) => return Err("the bulk thread panicked".into()),
        };
        record(
            &format!("settled, bulk, {how}"),
            &format!("settled_during_bulk_{key}"),
            r,
        );
        bulk_rates.insert(key.into(), json!(bulk_rate));
    }

    let accept_port = ports.take(true)?;
    let r = after_accept(bed, &server_path, accept_port, threads, seconds)?;
    record("right after accept (new conn.)", "after_accept", r);
    drop(idle);

    println!(
        "\nlookups from {threads} threads through the client library, to the server's \
         daemon (the session table, then pooled connections, are its default and \
         mod_tcpcrypt's)\n"
    );
    println!(
        "{:<34} {:>8} {:>8} {:>8} {:>10} {:>8}",
        "run", "p50 µs", "p99 µs", "max µs", "lookups/s", "n"
    );
    for l in &lines {
        println!("{l}");
    }
    for (key, rate) in &bulk_rates {
        if let Some(mb) = rate.as_f64() {
            println!("bulk stream during the {key} bulk run: {mb:.1} MB/s");
        }
    }
    report.insert("bulk_mb_per_second".into(), Value::Object(bulk_rates));
    Ok((Value::Object(report), wrong))
}
