//! The engines' own cost of setting up a connection, without a kernel or
//! a queue: what the daemons' packet threads spend in user space per new
//! connection, against what a connection costs end to end.
//!
//! Each connection is what `tcpcrypt-bench` times for its connection rate:
//! the client connects, sends one byte, the server answers one byte, both
//! close. It runs in the simulated pair of the tests three ways in the same
//! round: with no engines (the simulated kernels alone, the baseline), with
//! both engines resuming a cached session, and with both engines running a
//! fresh X25519 key exchange (their resumption caches flushed before each
//! connection). The engines' cost is the difference to the baseline. It
//! also counts the packets on the wire per connection: with NFQUEUE each
//! of them makes one round trip through each host's queue, which in the
//! namespace benchmark costs far more than the engines' work.
//!
//! `cargo bench -p tcpcrypt-engine --bench connection_setup`;
//! `TCPCRYPT_BENCH_CONNECTIONS` sets the connections per round and mode
//! (default 2000), `TCPCRYPT_BENCH_ROUNDS` the rounds (default 5). Prints
//! numbers; never fails on one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../tests/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use common::{env, median};
use harness::{Side, Sim};
use tcpcrypt_engine::Lookup;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Plain,
    Resumed,
    Fresh,
}

/// Runs `n` connections one after another; returns the time per
/// connection and the wire packets per connection.
fn round(mode: Mode, n: usize) -> (Duration, f64) {
    let engines = mode != Mode::Plain;
    let mut sim = Sim::new("10.0.0.1:40000", "10.0.0.2:80", (engines, engines));
    // One connection first, so resumed runs start with a cached session.
    one_connection(&mut sim);
    let mut packets = 0;
    let mut spent = Duration::ZERO;
    for i in 0..n {
        sim.next_connection(20_000 + (i % 40_000) as u16);
        if mode == Mode::Fresh {
            for side in [Side::A, Side::B] {
                sim.host(side).engine.as_mut().unwrap().flush_resumption();
            }
        }
        let start = Instant::now();
        let session = one_connection(&mut sim);
        spent += start.elapsed();
        let expected = match mode {
            Mode::Plain => None,
            Mode::Resumed => Some(true),
            Mode::Fresh => Some(false),
        };
        assert_eq!(session, expected, "encryption and resumption as asked");
        packets += sim.tap.len();
    }
    (spent / n as u32, packets as f64 / n as f64)
}

/// One connection; whether its session resumed (None: not encrypted).
fn one_connection(sim: &mut Sim) -> Option<bool> {
    sim.connect();
    sim.a.kernel.write(b"?");
    sim.a.kernel.push();
    sim.run();
    sim.b.kernel.write(b"!");
    sim.b.kernel.push();
    sim.run();
    let session = match sim.lookup(Side::A) {
        Lookup::Tcpcrypt(s) => Some(s.resumed),
        _ => None,
    };
    sim.a.kernel.close();
    sim.run();
    sim.b.kernel.close();
    sim.run();
    assert_eq!(sim.b.kernel.received, b"?", "request lost");
    assert_eq!(sim.a.kernel.received, b"!", "reply lost");
    assert!(
        sim.a.kernel.fin_received && sim.b.kernel.fin_received,
        "close"
    );
    session
}

fn main() {
    let n = env("TCPCRYPT_BENCH_CONNECTIONS", 2000);
    let rounds = env("TCPCRYPT_BENCH_ROUNDS", 5);
    println!(
        "engine connection setup: {n} connections per mode and round, rounds: {rounds}; \
         connect, 1 byte each way, close; both engines on one CPU"
    );
    let mut rows: [(Vec<f64>, f64); 3] = Default::default();
    for r in 1..=rounds {
        let mut line = format!("round {r}:");
        for (i, (mode, name)) in [
            (Mode::Plain, "no engines"),
            (Mode::Resumed, "resumed"),
            (Mode::Fresh, "fresh key exchange"),
        ]
        .into_iter()
        .enumerate()
        {
            let (per, packets) = round(mode, n);
            let us = per.as_secs_f64() * 1e6;
            line.push_str(&format!(" {name} {us:.1} µs,"));
            rows[i].0.push(us);
            rows[i].1 = packets;
        }
        println!("{}", line.trim_end_matches(','));
    }
    let base = median(rows[0].0.clone());
    println!("median per connection (wire packets per connection in brackets):");
    println!(
        "  simulated kernels alone    {base:8.1} µs  [{:.0}]",
        rows[0].1
    );
    for (i, name) in [(1, "resumed session"), (2, "fresh key exchange")] {
        let t = median(rows[i].0.clone());
        println!(
            "  {name:<26} {t:8.1} µs  [{:.0}]  engines' own share {:.1} µs",
            rows[i].1,
            t - base
        );
    }
}
