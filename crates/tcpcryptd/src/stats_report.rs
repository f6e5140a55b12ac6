//! Aggregated log lines for the engine's limits and sequence checks.
//!
//! Under a SYN flood or a blind-injection attack the engine turns away or
//! drops thousands of packets a second; a line per packet would bury the
//! journal and cost the packet thread more than the attack itself. Instead
//! the packet thread hands the engine's [`EngineStats`] to a
//! [`StatsReport`] each round, and it produces at most one report per
//! interval, only when a counter moved, saying how much and which option
//! an operator could change.

use std::time::{Duration, Instant};

use crate::config::Limits;
use crate::engine_api::{EngineStats, PacketEngine};

/// How often, at most, the packet thread logs a report.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// One line to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportLine {
    pub level: log::Level,
    pub text: String,
}

/// Remembers what was last reported and when.
pub struct StatsReport {
    interval: Duration,
    limits: Limits,
    reported: EngineStats,
    last_report: Option<Instant>,
    /// A counter moved while the interval had not passed yet.
    unreported: bool,
}

impl StatsReport {
    /// Starts with every counter at zero, as a new engine's are.
    pub fn new(interval: Duration, limits: Limits) -> StatsReport {
        StatsReport {
            interval,
            limits,
            reported: EngineStats::default(),
            last_report: None,
            unreported: false,
        }
    }

    fn due(&self, now: Instant) -> bool {
        self.last_report
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval)
    }

    /// When the packet thread should wake to report counters that moved
    /// too soon after the previous report.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.unreported, self.last_report) {
            (true, Some(last)) => Some(last + self.interval),
            _ => None,
        }
    }

    /// The lines to log now for the engine's current counters, if any.
    /// Reads the counters only when a report could be due, so calling it
    /// every round costs next to nothing.
    pub fn poll<E: PacketEngine + ?Sized>(&mut self, now: Instant, engine: &E) -> Vec<ReportLine> {
        if !self.due(now) && self.unreported {
            return Vec::new();
        }
        let current = engine.stats();
        if !moved(&self.reported, &current) {
            return Vec::new();
        }
        if !self.due(now) {
            self.unreported = true;
            return Vec::new();
        }
        let lines = self.lines(&current);
        self.reported = current;
        self.last_report = Some(now);
        self.unreported = false;
        lines
    }

    fn lines(&self, now: &EngineStats) -> Vec<ReportLine> {
        let was = &self.reported;
        let d = |new: u64, old: u64| new.saturating_sub(old);
        let limits = &self.limits;
        let mut out = Vec::new();

        let mut limit_parts = Vec::new();
        let syn_half_open = d(now.refused_half_open_full, was.refused_half_open_full);
        if syn_half_open > 0 {
            limit_parts.push(format!(
                "{} passed as plain TCP because {} half-open connections were pending (--max-half-open)",
                count(syn_half_open, "SYN", "SYNs"),
                limits.max_half_open
            ));
        }
        let syn_table = d(now.refused_table_full, was.refused_table_full);
        if syn_table > 0 {
            limit_parts.push(format!(
                "{} passed as plain TCP because {} connections were tracked (--max-connections)",
                count(syn_table, "SYN", "SYNs"),
                limits.max_connections
            ));
        }
        let ooo = d(now.out_of_order_refused, was.out_of_order_refused);
        if ooo > 0 {
            limit_parts.push(format!(
                "{} not kept for want of room (--max-out-of-order-pieces {} per connection, --max-out-of-order-bytes {} in all; {} bytes held now)",
                count(ooo, "out-of-order segment", "out-of-order segments"),
                limits.max_out_of_order_pieces,
                limits.max_out_of_order_bytes,
                now.out_of_order_bytes
            ));
        }
        let refused = !limit_parts.is_empty();
        let expired = d(now.half_open_expired, was.half_open_expired);
        if expired > 0 {
            limit_parts.push(format!(
                "{} expired after {} s (--half-open-timeout)",
                count(expired, "half-open connection", "half-open connections"),
                limits.half_open_timeout.as_secs()
            ));
        }
        if !limit_parts.is_empty() {
            out.push(ReportLine {
                // Expiry alone is what the timeout is for; turning
                // connections away is what an operator may need to act on.
                level: if refused {
                    log::Level::Warn
                } else {
                    log::Level::Info
                },
                text: format!(
                    "limits: {} ({} connections tracked, {} half-open)",
                    limit_parts.join("; "),
                    now.connections,
                    now.half_open
                ),
            });
        }

        let mut check_parts = Vec::new();
        let checksum = d(now.bad_checksum, was.bad_checksum);
        if checksum > 0 {
            check_parts.push(format!(
                "{} dropped for a bad TCP checksum",
                count(checksum, "inbound packet", "inbound packets")
            ));
        }
        let window = d(now.out_of_window, was.out_of_window);
        if window > 0 {
            check_parts.push(format!(
                "{} outside the window dropped",
                count(window, "inbound segment", "inbound segments")
            ));
        }
        let challenges = d(now.challenge_acks, was.challenge_acks);
        if challenges > 0 {
            check_parts.push(format!(
                "{} sent",
                count(challenges, "challenge ACK", "challenge ACKs")
            ));
        }
        if !check_parts.is_empty() {
            out.push(ReportLine {
                // Nothing to configure: these are the engine doing its job
                // against corruption and blind injection.
                level: log::Level::Debug,
                text: format!("sequence checks: {}", check_parts.join("; ")),
            });
        }
        out
    }
}

/// Whether a counter (not a gauge) moved.
fn moved(was: &EngineStats, now: &EngineStats) -> bool {
    let counters = |s: &EngineStats| {
        [
            s.refused_half_open_full,
            s.refused_table_full,
            s.half_open_expired,
            s.bad_checksum,
            s.out_of_window,
            s.challenge_acks,
            s.out_of_order_refused,
        ]
    };
    counters(was) != counters(now)
}

fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine_api::{
        ConnectionView, Direction, EngineEvent, LookupState, PacketMeta, Transmit, Verdict,
    };
    use std::cell::Cell;
    use std::net::SocketAddr;

    /// An engine whose only behaviour is the counters the test sets, and
    /// which counts how often they were read.
    #[derive(Default)]
    struct ScriptedEngine {
        stats: EngineStats,
        reads: Cell<usize>,
    }

    impl PacketEngine for ScriptedEngine {
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
        fn connection_keys(&self) -> Vec<(SocketAddr, SocketAddr)> {
            Vec::new()
        }
        fn connection(&self, _: Instant, _: SocketAddr, _: SocketAddr) -> Option<ConnectionView> {
            None
        }
        fn flush_resumption(&mut self) -> usize {
            0
        }
        fn set_policy(
            &mut self,
            _: Instant,
            _: crate::engine_api::PolicyScope,
            _: SocketAddr,
            _: crate::engine_api::ConnectionPolicy,
        ) -> Result<(), crate::engine_api::PolicyError> {
            Ok(())
        }
        fn clear_policy(&mut self, _: crate::engine_api::PolicyScope, _: SocketAddr) -> bool {
            false
        }
        fn policy(
            &self,
            _: Instant,
            _: crate::engine_api::PolicyScope,
            _: SocketAddr,
        ) -> Option<crate::engine_api::ConnectionPolicy> {
            None
        }
        fn stats(&self) -> EngineStats {
            self.reads.set(self.reads.get() + 1);
            self.stats
        }
    }

    const INTERVAL: Duration = Duration::from_millis(100);

    fn report() -> StatsReport {
        StatsReport::new(INTERVAL, Limits::default())
    }

    #[test]
    fn nothing_is_logged_while_no_counter_moves() {
        let mut engine = ScriptedEngine::default();
        let mut r = report();
        let t0 = Instant::now();
        assert!(r.poll(t0, &engine).is_empty());
        // Gauges alone are not news.
        engine.stats.connections = 500;
        engine.stats.half_open = 40;
        engine.stats.out_of_order_bytes = 9000;
        assert!(r.poll(t0 + INTERVAL * 3, &engine).is_empty());
    }

    #[test]
    fn half_open_refusals_are_a_warning_naming_the_option_and_limit() {
        let mut engine = ScriptedEngine::default();
        let mut r = report();
        engine.stats.refused_half_open_full = 1234;
        engine.stats.half_open_expired = 99;
        engine.stats.half_open = 8000;
        let lines = r.poll(Instant::now(), &engine);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line.level, log::Level::Warn);
        let limit = Limits::default().max_half_open;
        assert!(
            line.text.contains(&format!(
                "1234 SYNs passed as plain TCP because {limit} half-open connections were pending (--max-half-open)"
            )),
            "{}",
            line.text
        );
        assert!(
            line.text.contains("99 half-open connections expired after")
                && line.text.contains("(--half-open-timeout)"),
            "{}",
            line.text
        );
    }

    #[test]
    fn each_refusal_names_its_own_option() {
        for (set, option) in [
            (
                (|s: &mut EngineStats| s.refused_table_full = 3) as fn(&mut EngineStats),
                "--max-connections",
            ),
            (|s| s.out_of_order_refused = 3, "--max-out-of-order-pieces"),
            (|s| s.out_of_order_refused = 3, "--max-out-of-order-bytes"),
        ] {
            let mut engine = ScriptedEngine::default();
            set(&mut engine.stats);
            let lines = report().poll(Instant::now(), &engine);
            assert_eq!(lines.len(), 1, "{lines:?}");
            assert_eq!(lines[0].level, log::Level::Warn);
            assert!(lines[0].text.contains(option), "{}", lines[0].text);
            assert!(lines[0].text.contains("3 "), "{}", lines[0].text);
        }
    }

    #[test]
    fn expiry_alone_is_info_and_checks_are_debug() {
        let mut engine = ScriptedEngine::default();
        engine.stats.half_open_expired = 1;
        engine.stats.bad_checksum = 2;
        engine.stats.out_of_window = 3;
        engine.stats.challenge_acks = 4;
        let lines = report().poll(Instant::now(), &engine);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0].level, log::Level::Info);
        assert!(lines[0].text.contains("1 half-open connection expired"));
        assert_eq!(lines[1].level, log::Level::Debug);
        for part in [
            "2 inbound packets dropped for a bad TCP checksum",
            "3 inbound segments outside the window dropped",
            "4 challenge ACKs sent",
        ] {
            assert!(lines[1].text.contains(part), "{part}: {}", lines[1].text);
        }
    }

    #[test]
    fn at_most_one_report_per_interval_with_the_increase_since_the_last() {
        let mut engine = ScriptedEngine::default();
        let mut r = report();
        let t0 = Instant::now();
        engine.stats.refused_table_full = 10;
        assert_eq!(r.poll(t0, &engine).len(), 1);
        assert_eq!(r.deadline(), None);

        // Within the interval: counted, not logged, and a wake-up is asked
        // for at the end of the interval.
        let mut t = t0;
        for step in 1..=9u64 {
            t = t0 + INTERVAL * u32::try_from(step).expect("small") / 10;
            engine.stats.refused_table_full = 10 + step * 5;
            assert!(r.poll(t, &engine).is_empty(), "logged at step {step}");
        }
        assert_eq!(r.deadline(), Some(t0 + INTERVAL));
        assert!(t < t0 + INTERVAL);

        let lines = r.poll(t0 + INTERVAL, &engine);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].text.starts_with("limits: 45 SYNs passed"),
            "{}",
            lines[0].text
        );
        assert_eq!(r.deadline(), None);
    }

    #[test]
    fn counters_are_not_read_again_until_a_pending_report_is_due() {
        let mut engine = ScriptedEngine::default();
        let mut r = report();
        let t0 = Instant::now();
        engine.stats.challenge_acks = 1;
        assert_eq!(r.poll(t0, &engine).len(), 1);
        engine.stats.challenge_acks = 2;
        assert!(r.poll(t0 + INTERVAL / 2, &engine).is_empty());
        let reads = engine.reads.get();
        for i in 0..100u32 {
            assert!(
                r.poll(t0 + INTERVAL / 2 + INTERVAL * i / 400, &engine)
                    .is_empty()
            );
        }
        assert_eq!(engine.reads.get(), reads, "counters read while throttled");
        assert_eq!(r.poll(t0 + INTERVAL, &engine).len(), 1);
    }

    #[test]
    fn one_item_is_singular() {
        assert_eq!(count(1, "SYN", "SYNs"), "1 SYN");
        assert_eq!(count(0, "SYN", "SYNs"), "0 SYNs");
    }
}
