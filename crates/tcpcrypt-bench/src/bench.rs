//! The order of a run. Each round measures every figure once, plain and
//! tcpcrypt back to back (which goes first alternates from round to round),
//! so drift in the machine's load hits both sides of a ratio alike.
//!
//! A round: fresh daemons; idle-connection memory; bulk client to server;
//! bulk server to client; connection rate with `clients` clients; the same
//! one connection at a time. A measurement that fails is reported and the
//! round goes on; only the test bed itself failing ends the run.

use std::time::Duration;

use crate::interrupt;
use crate::report::{CheckRecord, Metric, Results, TallyRecord, Variant};
use crate::stats::percentile_ms;
use crate::testbed::{Check, Ports, Testbed};
use crate::traffic::{self, Direction, Failure};

/// What a run does, after defaults and `--smoke` are applied.
#[derive(Clone, Debug)]
pub struct Plan {
    pub rounds: usize,
    pub bulk_bytes: u64,
    pub rate_seconds: f64,
    pub clients: usize,
    pub idle_connections: usize,
}

struct Round<'a> {
    bed: &'a mut Testbed,
    plan: &'a Plan,
    res: &'a mut Results,
    ports: &'a mut Ports,
    round: usize,
}

/// Runs every round; returns early only for a test-bed failure.
pub fn run(bed: &mut Testbed, plan: &Plan, res: &mut Results) -> Result<(), String> {
    let mut ports = Ports::new();
    for round in 0..plan.rounds {
        if interrupt::requested() {
            break;
        }
        eprintln!("tcpcrypt-bench: round {} of {}", round + 1, plan.rounds);
        if round > 0 {
            bed.restart_daemons()?;
        }
        let mut r = Round {
            bed,
            plan,
            res,
            ports: &mut ports,
            round,
        };
        r.idle()?;
        let mut cpu = CpuTally::default();
        for dir in [Direction::ClientToServer, Direction::ServerToClient] {
            for v in r.order(&[Variant::Plain, Variant::Tcpcrypt]) {
                r.bulk(dir, v, &mut cpu)?;
            }
        }
        cpu.record(r.res, round);
        for serial in [false, true] {
            for v in r.order(&[Variant::Plain, Variant::Tcpcrypt, Variant::Fresh]) {
                r.rate(v, serial)?;
            }
        }
    }
    res.interrupted = interrupt::requested();
    Ok(())
}

/// Daemon CPU seconds and bytes moved, per variant, over a round's bulk
/// streams.
#[derive(Default)]
struct CpuTally {
    plain: (f64, u64),
    crypt: (f64, u64),
}

impl CpuTally {
    fn add(&mut self, v: Variant, seconds: f64, bytes: u64) {
        let slot = if v.crypt() {
            &mut self.crypt
        } else {
            &mut self.plain
        };
        slot.0 += seconds;
        slot.1 += bytes;
    }

    fn record(&self, res: &mut Results, round: usize) {
        for (v, (secs, bytes)) in [
            (Variant::Plain, self.plain),
            (Variant::Tcpcrypt, self.crypt),
        ] {
            if bytes > 0 {
                res.record(Metric::DaemonCpu, v, round, secs / (bytes as f64 / 1e9));
            }
        }
    }
}

impl Round<'_> {
    /// `variants` in this round's order: reversed every other round.
    fn order(&self, variants: &[Variant]) -> Vec<Variant> {
        let mut v = variants.to_vec();
        if self.round % 2 == 1 {
            v.reverse();
        }
        v
    }

    fn problem(&mut self, what: &str, v: Variant, failure: Failure) {
        match failure {
            Failure::Interrupted => {}
            Failure::Broken(e) => self.res.problems.push(format!(
                "round {}: {what} ({}): {e}",
                self.round + 1,
                v.key()
            )),
        }
    }

    fn note_check(&mut self, what: &'static str, v: Variant, check: Check) {
        if check.ok
            && v.crypt()
            && let Some(params) = check.observed.strip_prefix("tcpcrypt ")
        {
            self.res.negotiated.insert(params.to_string());
        }
        self.res.checks.push(CheckRecord {
            round: self.round,
            what,
            variant: v,
            ok: check.ok,
            observed: check.observed,
        });
    }

    fn bulk(&mut self, dir: Direction, v: Variant, cpu: &mut CpuTally) -> Result<(), String> {
        if interrupt::requested() {
            return Ok(());
        }
        let (what, metric) = match dir {
            Direction::ClientToServer => ("bulk client to server", Metric::BulkUp),
            Direction::ServerToClient => ("bulk server to client", Metric::BulkDown),
        };
        let port = self.ports.take(v.crypt())?;
        let bytes = self.plan.bulk_bytes;
        self.bed.quiesce();
        let before = self.bed.cpu();
        let mut check = None;
        let bed = &*self.bed;
        let outcome = traffic::bulk(bed.ends(), port, bytes, dir, |local, peer| {
            check = Some(bed.check(local, peer, v.crypt()));
        });
        let after = self.bed.cpu();
        if let Some(c) = check {
            self.note_check(what, v, c);
        }
        match outcome {
            Ok(b) => {
                self.res
                    .record(metric, v, self.round, b.megabytes_per_second());
                match (before, after) {
                    (Ok(b), Ok(a)) => cpu.add(v, a.total_since(&b), bytes),
                    (Err(e), _) | (_, Err(e)) => {
                        self.problem("daemon CPU", v, Failure::Broken(e));
                    }
                }
            }
            Err(f) => self.problem(what, v, f),
        }
        Ok(())
    }

    fn rate(&mut self, v: Variant, serial: bool) -> Result<(), String> {
        if interrupt::requested() {
            return Ok(());
        }
        let (what, clients, p50, p99) = if serial {
            (
                "connections one at a time",
                1,
                Metric::SerialTtfbP50,
                Metric::SerialTtfbP99,
            )
        } else {
            (
                "connection rate",
                self.plan.clients,
                Metric::RateTtfbP50,
                Metric::RateTtfbP99,
            )
        };
        let port = self.ports.take(v.crypt())?;
        if v == Variant::Fresh
            && let Err(e) = self.bed.forbid_resumption(port)
        {
            self.problem(what, v, Failure::Broken(e));
            return Ok(());
        }
        let duration = Duration::from_secs_f64(self.plan.rate_seconds);
        let mut rate = match traffic::rate(self.bed.ends(), port, clients, duration) {
            Ok(r) => r,
            Err(f) => {
                self.problem(what, v, f);
                return Ok(());
            }
        };
        if rate.errors > 0 {
            let first = rate.first_error.take().unwrap_or_default();
            self.problem(
                what,
                v,
                Failure::Broken(format!(
                    "{} of {} connections failed, the first: {first}",
                    rate.errors,
                    rate.errors + rate.completed
                )),
            );
        }
        if rate.completed > 0 {
            if !serial {
                self.res
                    .record(Metric::RateCps, v, self.round, rate.per_second());
            }
            if let Some(ms) = percentile_ms(&mut rate.ttfb, 50.0) {
                self.res.record(p50, v, self.round, ms);
            }
            if let Some(ms) = percentile_ms(&mut rate.ttfb, 99.0) {
                self.res.record(p99, v, self.round, ms);
            }
        }
        match self.bed.tally(port) {
            Ok(tally) => self.res.tallies.push(TallyRecord {
                round: self.round,
                what,
                variant: v,
                completed: rate.completed,
                tally,
            }),
            Err(e) => self.problem(what, v, Failure::Broken(e)),
        }
        Ok(())
    }

    /// Daemon memory before and after opening `idle_connections` encrypted
    /// connections that carry no data. A few connections first, with the
    /// same control-socket questions as afterwards, so one-time allocations
    /// (first handshake, first control client) land before the baseline.
    fn idle(&mut self) -> Result<(), String> {
        let count = self.plan.idle_connections;
        if count == 0 || interrupt::requested() {
            return Ok(());
        }
        let what = "idle connections";
        let v = Variant::Tcpcrypt;
        let parallel = self.plan.clients.max(1);
        let warm_port = self.ports.take(true)?;
        match traffic::open_idle(self.bed.ends(), warm_port, parallel, parallel) {
            Ok(warm) => {
                for c in &warm.clients {
                    self.ask_about(c);
                }
            }
            Err(f) => {
                self.problem("warming up for idle connections", v, f);
                return Ok(());
            }
        }
        self.bed.quiesce();
        let before = self.bed.rss_kib();
        let port = self.ports.take(true)?;
        let idle = match traffic::open_idle(self.bed.ends(), port, count, parallel) {
            Ok(idle) => idle,
            Err(f) => {
                self.problem(what, v, f);
                return Ok(());
            }
        };
        // Each thread opened its connections in order, so once the last
        // ones are encrypted the earlier ones almost surely are; the list
        // below (taken after the memory reading, so its large answer does
        // not count) says for certain.
        let last = idle.clients.len().saturating_sub(parallel);
        let mut first_check = None;
        for c in &idle.clients[last..] {
            let check = self.ask_about(c);
            first_check.get_or_insert(check);
        }
        self.bed.quiesce();
        let after = self.bed.rss_kib();
        if let Some(c) = first_check {
            self.note_check(what, v, c);
        }
        match (before, after) {
            (Ok((c0, s0)), Ok((c1, s1))) => {
                let per_1000 = |b: u64, a: u64| (a as f64 - b as f64) * 1000.0 / count as f64;
                self.res
                    .record(Metric::IdleRssClient, v, self.round, per_1000(c0, c1));
                self.res
                    .record(Metric::IdleRssServer, v, self.round, per_1000(s0, s1));
            }
            (Err(e), _) | (_, Err(e)) => self.problem(what, v, Failure::Broken(e)),
        }
        match self.bed.tally(port) {
            Ok(tally) => self.res.tallies.push(TallyRecord {
                round: self.round,
                what,
                variant: v,
                completed: count as u64,
                tally,
            }),
            Err(e) => self.problem(what, v, Failure::Broken(e)),
        }
        drop(idle);
        Ok(())
    }

    /// Looks a client socket up in both daemons (waiting for a pending
    /// handshake), for the check and to exercise the control path.
    fn ask_about(&self, c: &std::net::TcpStream) -> Check {
        match (c.local_addr(), c.peer_addr()) {
            (Ok(l), Ok(p)) => self.bed.check(l, p, true),
            (Err(e), _) | (_, Err(e)) => Check {
                ok: false,
                observed: format!("reading the socket's addresses: {e}"),
            },
        }
    }
}
