//! What a run measured, round by round, and its two renderings: the table
//! for people and the JSON for scripts. Both carry every figure's median
//! and range over the rounds and the tcpcrypt/plain ratios; neither judges
//! a number.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::stats::Spread;
use crate::testbed::Tally;

/// What a measurement ran over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Variant {
    /// Kernel TCP on ports the daemons do not handle.
    Plain,
    /// Through both daemons, with their default settings (sessions resume
    /// when a secret is cached).
    Tcpcrypt,
    /// Through both daemons, the server refusing resumption, so every
    /// connection pays a full key exchange.
    Fresh,
}

impl Variant {
    pub fn key(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Tcpcrypt => "tcpcrypt",
            Variant::Fresh => "tcpcrypt_no_resumption",
        }
    }

    pub fn crypt(self) -> bool {
        self != Variant::Plain
    }
}

/// One row family of the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    BulkUp,
    BulkDown,
    RateCps,
    RateTtfbP50,
    RateTtfbP99,
    SerialTtfbP50,
    SerialTtfbP99,
    DaemonCpu,
    IdleRssClient,
    IdleRssServer,
}

const ALL: [Metric; 10] = [
    Metric::BulkUp,
    Metric::BulkDown,
    Metric::RateCps,
    Metric::RateTtfbP50,
    Metric::RateTtfbP99,
    Metric::SerialTtfbP50,
    Metric::SerialTtfbP99,
    Metric::DaemonCpu,
    Metric::IdleRssClient,
    Metric::IdleRssServer,
];

const WITH_FRESH: &[Variant] = &[Variant::Plain, Variant::Tcpcrypt, Variant::Fresh];
const PAIR: &[Variant] = &[Variant::Plain, Variant::Tcpcrypt];
const CRYPT_ONLY: &[Variant] = &[Variant::Tcpcrypt];

impl Metric {
    pub fn key(self) -> &'static str {
        match self {
            Metric::BulkUp => "bulk_client_to_server",
            Metric::BulkDown => "bulk_server_to_client",
            Metric::RateCps => "connection_rate",
            Metric::RateTtfbP50 => "connection_rate_ttfb_median",
            Metric::RateTtfbP99 => "connection_rate_ttfb_p99",
            Metric::SerialTtfbP50 => "serial_ttfb_median",
            Metric::SerialTtfbP99 => "serial_ttfb_p99",
            Metric::DaemonCpu => "daemon_cpu_per_gb",
            Metric::IdleRssClient => "idle_rss_per_1000_client_daemon",
            Metric::IdleRssServer => "idle_rss_per_1000_server_daemon",
        }
    }

    fn label(self, clients: usize) -> String {
        match self {
            Metric::BulkUp => "bulk, one stream, client to server".into(),
            Metric::BulkDown => "bulk, one stream, server to client".into(),
            Metric::RateCps => format!("connections/s, {clients} clients"),
            Metric::RateTtfbP50 => format!("time to first byte, {clients} clients, median"),
            Metric::RateTtfbP99 => format!("time to first byte, {clients} clients, p99"),
            Metric::SerialTtfbP50 => "time to first byte, one at a time, median".into(),
            Metric::SerialTtfbP99 => "time to first byte, one at a time, p99".into(),
            Metric::DaemonCpu => "daemon CPU during bulk, both daemons".into(),
            Metric::IdleRssClient => "RSS per 1,000 idle connections, client daemon".into(),
            Metric::IdleRssServer => "RSS per 1,000 idle connections, server daemon".into(),
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Metric::BulkUp | Metric::BulkDown => "MB/s",
            Metric::RateCps => "conn/s",
            Metric::RateTtfbP50
            | Metric::RateTtfbP99
            | Metric::SerialTtfbP50
            | Metric::SerialTtfbP99 => "ms",
            Metric::DaemonCpu => "s/GB",
            Metric::IdleRssClient | Metric::IdleRssServer => "KiB",
        }
    }

    fn variants(self) -> &'static [Variant] {
        match self {
            Metric::BulkUp | Metric::BulkDown | Metric::DaemonCpu => PAIR,
            Metric::IdleRssClient | Metric::IdleRssServer => CRYPT_ONLY,
            _ => WITH_FRESH,
        }
    }

    /// Whether tcpcrypt/plain means anything: the daemons' CPU during plain
    /// traffic is a check that they were idle, not a baseline.
    fn has_ratio(self) -> bool {
        self.variants().contains(&Variant::Plain) && self != Metric::DaemonCpu
    }

    fn is_idle_rss(self) -> bool {
        matches!(self, Metric::IdleRssClient | Metric::IdleRssServer)
    }
}

/// Whether one connection of a measurement was what it should have been.
#[derive(Clone, Debug)]
pub struct CheckRecord {
    pub round: usize,
    pub what: &'static str,
    pub variant: Variant,
    pub ok: bool,
    pub observed: String,
}

/// How the client's daemon saw all connections of one measurement.
#[derive(Clone, Debug)]
pub struct TallyRecord {
    pub round: usize,
    pub what: &'static str,
    pub variant: Variant,
    pub completed: u64,
    pub tally: Tally,
}

impl TallyRecord {
    /// Plain: the daemons tracked none of it. Tcpcrypt: they tracked some,
    /// and every one they tracked was encrypted.
    pub fn ok(&self) -> bool {
        if self.variant.crypt() {
            self.tally.listed > 0 && self.tally.tcpcrypt == self.tally.listed
        } else {
            self.tally.listed == 0
        }
    }
}

/// Everything a run measured.
#[derive(Debug)]
pub struct Results {
    rounds: usize,
    clients: usize,
    values: BTreeMap<(Metric, Variant), Vec<Option<f64>>>,
    pub checks: Vec<CheckRecord>,
    pub tallies: Vec<TallyRecord>,
    /// Measurements that produced no number, and why.
    pub problems: Vec<String>,
    /// TEP and AEAD the checked connections negotiated.
    pub negotiated: BTreeSet<String>,
    pub interrupted: bool,
}

impl Results {
    pub fn new(rounds: usize, clients: usize) -> Results {
        Results {
            rounds,
            clients,
            values: BTreeMap::new(),
            checks: Vec::new(),
            tallies: Vec::new(),
            problems: Vec::new(),
            negotiated: BTreeSet::new(),
            interrupted: false,
        }
    }

    pub fn record(&mut self, metric: Metric, variant: Variant, round: usize, value: f64) {
        let slots = self
            .values
            .entry((metric, variant))
            .or_insert_with(|| vec![None; self.rounds]);
        if let Some(slot) = slots.get_mut(round) {
            *slot = Some(value);
        }
    }

    fn per_round(&self, metric: Metric, variant: Variant) -> Vec<Option<f64>> {
        self.values
            .get(&(metric, variant))
            .cloned()
            .unwrap_or_else(|| vec![None; self.rounds])
    }

    fn spread(&self, metric: Metric, variant: Variant) -> Option<Spread> {
        let v: Vec<f64> = self
            .per_round(metric, variant)
            .into_iter()
            .flatten()
            .collect();
        Spread::of(&v)
    }

    /// tcpcrypt/plain of each round where both were measured: the rounds
    /// alternate the two, so a round's pair shares the machine's mood.
    fn ratios(&self, metric: Metric, variant: Variant) -> Vec<Option<f64>> {
        let plain = self.per_round(metric, Variant::Plain);
        self.per_round(metric, variant)
            .into_iter()
            .zip(plain)
            .map(|(c, p)| match (c, p) {
                (Some(c), Some(p)) if p != 0.0 => Some(c / p),
                _ => None,
            })
            .collect()
    }

    fn ratio_spread(&self, metric: Metric, variant: Variant) -> Option<Spread> {
        let v: Vec<f64> = self.ratios(metric, variant).into_iter().flatten().collect();
        Spread::of(&v)
    }

    pub fn failed_checks(&self) -> usize {
        self.checks.iter().filter(|c| !c.ok).count()
            + self.tallies.iter().filter(|t| !t.ok()).count()
    }

    /// The human table, with the check summary and problems below it.
    pub fn table(&self) -> String {
        let mut rows: Vec<[String; 5]> = vec![[
            "figure".into(),
            "unit".into(),
            "plain".into(),
            "tcpcrypt".into(),
            "tcpcrypt/plain".into(),
        ]];
        for m in ALL {
            for &v in m.variants() {
                if v == Variant::Plain && m.variants().len() > 1 {
                    continue;
                }
                let (label, plain) = if v == Variant::Fresh {
                    ("  same, no resumption".to_string(), String::new())
                } else if m.variants().contains(&Variant::Plain) {
                    (m.label(self.clients), show(self.spread(m, Variant::Plain)))
                } else {
                    (m.label(self.clients), "-".into())
                };
                let ratio = if m.has_ratio() {
                    show(self.ratio_spread(m, v))
                } else {
                    "-".into()
                };
                rows.push([
                    label,
                    m.unit().into(),
                    plain,
                    show(self.spread(m, v)),
                    ratio,
                ]);
            }
        }
        let widths: Vec<usize> = (0..5)
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for r in &rows {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out.push_str(&self.notes());
        out
    }

    fn notes(&self) -> String {
        let mut out = String::new();
        let per_conn: Vec<String> = [Metric::IdleRssClient, Metric::IdleRssServer]
            .iter()
            .filter_map(|&m| {
                self.spread(m, Variant::Tcpcrypt).map(|s| {
                    format!(
                        "{} daemon {} bytes",
                        if m == Metric::IdleRssClient {
                            "client"
                        } else {
                            "server"
                        },
                        num(s.median * 1.024)
                    )
                })
            })
            .collect();
        if !per_conn.is_empty() {
            out.push_str(&format!(
                "\nper idle connection (median): {}\n",
                per_conn.join(", ")
            ));
        }
        if !self.negotiated.is_empty() {
            let list: Vec<&str> = self.negotiated.iter().map(String::as_str).collect();
            out.push_str(&format!("negotiated: {}\n", list.join("; ")));
        }
        let good = |crypt: bool| {
            let c = self.checks.iter().filter(|c| c.variant.crypt() == crypt);
            let t = self.tallies.iter().filter(|t| t.variant.crypt() == crypt);
            let total = c.clone().count() + t.clone().count();
            let ok = c.filter(|c| c.ok).count() + t.filter(|t| t.ok()).count();
            (ok, total)
        };
        let (crypt_ok, crypt_n) = good(true);
        let (plain_ok, plain_n) = good(false);
        out.push_str(&format!(
            "checks: {crypt_ok}/{crypt_n} tcpcrypt measurements encrypted, \
             {plain_ok}/{plain_n} plain measurements untouched by the daemons\n"
        ));
        for v in [Variant::Tcpcrypt, Variant::Fresh] {
            let (resumed, encrypted) = self
                .tallies
                .iter()
                .filter(|t| t.variant == v)
                .fold((0, 0), |(r, e), t| {
                    (r + t.tally.resumed, e + t.tally.tcpcrypt)
                });
            if encrypted > 0 {
                out.push_str(&format!(
                    "resumed sessions, {}: {resumed} of {encrypted} encrypted connections\n",
                    if v == Variant::Fresh {
                        "no-resumption runs"
                    } else {
                        "default runs"
                    }
                ));
            }
        }
        for c in self.checks.iter().filter(|c| !c.ok) {
            out.push_str(&format!(
                "CHECK round {}: {} ({}): {}\n",
                c.round + 1,
                c.what,
                c.variant.key(),
                c.observed
            ));
        }
        for t in self.tallies.iter().filter(|t| !t.ok()) {
            out.push_str(&format!(
                "CHECK round {}: {} ({}): the client's daemon listed {} connections, {} encrypted, for {} completed\n",
                t.round + 1,
                t.what,
                t.variant.key(),
                t.tally.listed,
                t.tally.tcpcrypt,
                t.completed
            ));
        }
        for p in &self.problems {
            out.push_str(&format!("PROBLEM {p}\n"));
        }
        if self.interrupted {
            out.push_str("INTERRUPTED: the figures cover the rounds run so far\n");
        }
        out
    }

    /// The JSON report; `settings` and `host` are embedded as given.
    pub fn json(&self, settings: Value, host: Value, seconds: f64) -> Value {
        let figures: Vec<Value> = ALL
            .iter()
            .map(|&m| {
                let mut f = Map::new();
                f.insert("key".into(), json!(m.key()));
                f.insert("label".into(), json!(m.label(self.clients)));
                f.insert("unit".into(), json!(m.unit()));
                for &v in m.variants() {
                    f.insert(
                        v.key().into(),
                        spread_json(self.spread(m, v), &self.per_round(m, v)),
                    );
                }
                if m.has_ratio() {
                    let mut r = Map::new();
                    for &v in m.variants().iter().filter(|v| v.crypt()) {
                        r.insert(
                            v.key().into(),
                            spread_json(self.ratio_spread(m, v), &self.ratios(m, v)),
                        );
                    }
                    f.insert("ratio_to_plain".into(), Value::Object(r));
                }
                if m.is_idle_rss() {
                    let bytes: Vec<Option<f64>> = self
                        .per_round(m, Variant::Tcpcrypt)
                        .into_iter()
                        .map(|k| k.map(|k| k * 1.024))
                        .collect();
                    let flat: Vec<f64> = bytes.iter().flatten().copied().collect();
                    f.insert(
                        "bytes_per_connection".into(),
                        spread_json(Spread::of(&flat), &bytes),
                    );
                }
                Value::Object(f)
            })
            .collect();
        let checks: Vec<Value> = self
            .checks
            .iter()
            .map(|c| {
                json!({"round": c.round + 1, "what": c.what, "variant": c.variant.key(),
                       "ok": c.ok, "observed": c.observed})
            })
            .collect();
        let tallies: Vec<Value> = self
            .tallies
            .iter()
            .map(|t| {
                json!({"round": t.round + 1, "what": t.what, "variant": t.variant.key(),
                       "ok": t.ok(), "completed": t.completed, "listed": t.tally.listed,
                       "tcpcrypt": t.tally.tcpcrypt, "resumed": t.tally.resumed})
            })
            .collect();
        json!({
            "tool": "tcpcrypt-bench",
            "version": env!("CARGO_PKG_VERSION"),
            "settings": settings,
            "host": host,
            "seconds": seconds,
            "interrupted": self.interrupted,
            "figures": figures,
            "negotiated": self.negotiated,
            "checks": checks,
            "rate_tallies": tallies,
            "failed_checks": self.failed_checks(),
            "problems": self.problems,
        })
    }
}

fn spread_json(s: Option<Spread>, rounds: &[Option<f64>]) -> Value {
    match s {
        Some(s) => json!({"median": s.median, "min": s.min, "max": s.max, "rounds": rounds}),
        None => json!({"median": null, "min": null, "max": null, "rounds": rounds}),
    }
}

/// A number with about three significant digits.
fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// `median [min..max]`, the median alone for a single round, `n/a` for none.
fn show(s: Option<Spread>) -> String {
    match s {
        None => "n/a".into(),
        Some(s) if s.n == 1 => num(s.median),
        Some(s) => format!("{} [{}..{}]", num(s.median), num(s.min), num(s.max)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(table: &'a str, label: &str) -> &'a str {
        table
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no row {label:?} in\n{table}"))
    }

    #[test]
    fn ratios_pair_each_round_and_skip_rounds_missing_a_side() {
        let mut r = Results::new(3, 4);
        for (round, plain, crypt) in [(0, 100.0, 50.0), (1, 200.0, 20.0), (2, 300.0, f64::NAN)] {
            r.record(Metric::BulkUp, Variant::Plain, round, plain);
            if !crypt.is_nan() {
                r.record(Metric::BulkUp, Variant::Tcpcrypt, round, crypt);
            }
        }
        assert_eq!(
            r.ratios(Metric::BulkUp, Variant::Tcpcrypt),
            vec![Some(0.5), Some(0.1), None]
        );
        let s = r
            .ratio_spread(Metric::BulkUp, Variant::Tcpcrypt)
            .expect("two ratios");
        assert_eq!((s.min, s.max, s.n), (0.1, 0.5, 2));
    }

    #[test]
    fn table_shows_median_and_range_and_marks_missing_figures() {
        let mut r = Results::new(2, 4);
        r.record(Metric::BulkUp, Variant::Plain, 0, 1000.0);
        r.record(Metric::BulkUp, Variant::Plain, 1, 1200.0);
        r.record(Metric::BulkUp, Variant::Tcpcrypt, 0, 250.0);
        r.record(Metric::BulkUp, Variant::Tcpcrypt, 1, 300.0);
        let t = r.table();
        let up = row(&t, "bulk, one stream, client to server");
        assert!(up.contains("1100 [1000..1200]"), "{up}");
        assert!(up.contains("275 [250..300]"), "{up}");
        assert!(up.contains("0.250 [0.250..0.250]"), "{up}");
        assert!(row(&t, "bulk, one stream, server to client").contains("n/a"));
    }

    #[test]
    fn daemon_cpu_and_memory_rows_have_no_ratio() {
        let mut r = Results::new(1, 4);
        r.record(Metric::DaemonCpu, Variant::Plain, 0, 0.01);
        r.record(Metric::DaemonCpu, Variant::Tcpcrypt, 0, 5.0);
        r.record(Metric::IdleRssClient, Variant::Tcpcrypt, 0, 900.0);
        let t = r.table();
        assert!(row(&t, "daemon CPU").trim_end().ends_with("  -"));
        let rss = row(&t, "RSS per 1,000 idle connections, client");
        assert!(
            rss.contains("900") && rss.trim_end().ends_with("  -"),
            "{rss}"
        );
        let j = r.json(json!({}), json!({}), 1.0);
        let cpu = &j["figures"][7];
        assert_eq!(cpu["key"], "daemon_cpu_per_gb");
        assert!(cpu.get("ratio_to_plain").is_none());
        assert_eq!(j["figures"][8]["bytes_per_connection"]["median"], 921.6);
    }

    #[test]
    fn failed_checks_count_lookups_and_tallies() {
        let mut r = Results::new(1, 4);
        r.checks.push(CheckRecord {
            round: 0,
            what: "bulk",
            variant: Variant::Tcpcrypt,
            ok: false,
            observed: "not encrypted".into(),
        });
        r.tallies.push(TallyRecord {
            round: 0,
            what: "rate",
            variant: Variant::Plain,
            completed: 10,
            tally: Tally {
                listed: 3,
                tcpcrypt: 0,
                resumed: 0,
            },
        });
        r.tallies.push(TallyRecord {
            round: 0,
            what: "rate",
            variant: Variant::Fresh,
            completed: 10,
            tally: Tally {
                listed: 10,
                tcpcrypt: 10,
                resumed: 0,
            },
        });
        assert_eq!(r.failed_checks(), 2);
        let t = r.table();
        assert!(t.contains("1/2 tcpcrypt measurements encrypted"), "{t}");
        assert!(t.contains("0/1 plain measurements"), "{t}");
    }

    #[test]
    fn json_keeps_every_round_with_nulls_for_missing_ones() {
        let mut r = Results::new(3, 2);
        r.record(Metric::RateCps, Variant::Fresh, 1, 42.0);
        let j = r.json(json!({"rounds": 3}), json!({}), 1.0);
        let rate = &j["figures"][2];
        assert_eq!(rate["key"], "connection_rate");
        assert_eq!(
            rate["tcpcrypt_no_resumption"]["rounds"],
            json!([null, 42.0, null])
        );
        assert_eq!(rate["plain"]["median"], Value::Null);
        assert_eq!(
            rate["ratio_to_plain"]["tcpcrypt_no_resumption"]["median"],
            Value::Null
        );
    }
}
