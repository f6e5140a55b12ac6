//! The client and server namespaces, their daemons, and what the benchmark
//! asks of the daemons: whether a connection was encrypted, how many of a
//! run's connections were, and how much CPU and memory they used.
//!
//! Both daemons handle only [`CRYPT_PORTS`]; plain measurements use ports
//! outside it on the same link, so plain and tcpcrypt rounds can alternate
//! without restarting anything. The client's ephemeral ports are set to lie
//! outside both ranges, because the daemons match either end of a
//! connection.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tcpcrypt_testnet::{Daemon, DaemonOptions, Topology};

use crate::interrupt;
use crate::traffic::Ends;

/// Server ports the daemons handle.
pub const CRYPT_PORTS: (u16, u16) = (7100, 7999);
/// Server ports the daemons leave alone.
pub const PLAIN_PORTS: (u16, u16) = (9100, 9999);
/// The client's ephemeral ports: the kernel's usual range, set explicitly
/// so neither of the ranges above can ever be a client port.
const EPHEMERAL: &str = "32768 60999";

/// How long the daemons must use no CPU to count as idle, and how long
/// [`Testbed::quiesce`] waits for that at most. CPU time is counted in
/// clock ticks (10 ms), so a quiet daemon shows no change at all.
const QUIET: Duration = Duration::from_millis(200);
const QUIET_LIMIT: Duration = Duration::from_secs(3);

/// Hands out a fresh server port per measurement, so a daemon's connection
/// list can be filtered to exactly one measurement's connections.
#[derive(Debug)]
pub struct Ports {
    next_crypt: u16,
    next_plain: u16,
}

impl Ports {
    pub fn new() -> Ports {
        Ports {
            next_crypt: CRYPT_PORTS.0,
            next_plain: PLAIN_PORTS.0,
        }
    }

    /// The next port of the handled (`crypt`) or the unhandled range.
    pub fn take(&mut self, crypt: bool) -> Result<u16, String> {
        let (next, (first, last)) = if crypt {
            (&mut self.next_crypt, CRYPT_PORTS)
        } else {
            (&mut self.next_plain, PLAIN_PORTS)
        };
        if *next > last {
            return Err(format!(
                "ran out of server ports ({first}-{last}, one per measurement); use fewer --rounds"
            ));
        }
        let p = *next;
        *next += 1;
        Ok(p)
    }
}

/// The namespaces and, while they run, the daemons.
pub struct Testbed {
    /// Declared before the topology so the daemons stop (and remove their
    /// rules) before their namespaces are deleted.
    daemons: Option<(Daemon, Daemon)>,
    topo: Topology,
    opts: DaemonOptions,
}

/// Whether one connection was what the measurement expected.
#[derive(Clone, Debug)]
pub struct Check {
    pub ok: bool,
    /// What the daemons said, for the report: `tcpcrypt` (with TEP and
    /// AEAD), `plain`, `unknown`, or the failure to ask.
    pub observed: String,
}

/// How the client's daemon saw one measurement's connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub listed: u64,
    pub tcpcrypt: u64,
    pub resumed: u64,
}

/// CPU time of both daemons, in seconds.
#[derive(Clone, Copy, Debug)]
pub struct Cpu {
    pub client: f64,
    pub server: f64,
}

impl Cpu {
    pub fn total_since(&self, earlier: &Cpu) -> f64 {
        (self.client - earlier.client) + (self.server - earlier.server)
    }
}

impl Testbed {
    /// Creates the namespaces (with GRO on the link if `gro`) and starts
    /// both daemons from `binary` with `extra` arguments.
    pub fn new(binary: &Path, gro: bool, extra: &[String]) -> Result<Testbed, String> {
        let topo = Topology::pair().map_err(|e| format!("creating the namespaces: {e}"))?;
        if gro {
            topo.enable_gro()
                .map_err(|e| format!("turning GRO on (is ethtool installed?): {e}"))?;
        }
        topo.client
            .sysctl("net.ipv4.ip_local_port_range", EPHEMERAL)
            .map_err(|e| format!("setting the client's ephemeral ports: {e}"))?;
        // Rate runs open thousands of connections per second from one
        // address to one server port; without reuse, TIME-WAIT would run
        // the client out of ports and turn the figure into a port-exhaustion
        // one.
        topo.client
            .sysctl("net.ipv4.tcp_tw_reuse", "1")
            .map_err(|e| format!("enabling TIME-WAIT reuse on the client: {e}"))?;
        let opts = DaemonOptions::new(PathBuf::from(binary))
            .arg("--ports")
            .arg(format!("{}-{}", CRYPT_PORTS.0, CRYPT_PORTS.1))
            // The testnet default is debug, which logs per connection and
            // would slow the rate runs down.
            .arg("--log-level")
            .arg("warn");
        let opts = extra.iter().fold(opts, |o, a| o.arg(a));
        let mut bed = Testbed {
            daemons: None,
            topo,
            opts,
        };
        bed.restart_daemons()?;
        Ok(bed)
    }

    /// Stops the daemons if they run and starts fresh ones, so a memory
    /// measurement starts from a daemon that has seen no traffic.
    pub fn restart_daemons(&mut self) -> Result<(), String> {
        self.daemons = None;
        let pair = self
            .topo
            .start_daemons(&self.opts)
            .map_err(|e| format!("starting tcpcryptd: {e}"))?;
        self.daemons = Some(pair);
        Ok(())
    }

    fn daemons(&self) -> Result<&(Daemon, Daemon), String> {
        self.daemons
            .as_ref()
            .ok_or_else(|| "the daemons are not running".to_string())
    }

    pub fn ends(&self) -> Ends<'_> {
        Ends {
            client: &self.topo.client,
            server: &self.topo.server,
            server_ip: self.topo.server_addrs.ip(false),
        }
    }

    /// Asks both daemons about one connection, given by the client's
    /// (local, peer) addresses. Encrypted means: both say `tcpcrypt` and
    /// agree on the session ID.
    pub fn check(&self, local: SocketAddr, peer: SocketAddr, want_crypt: bool) -> Check {
        let answers = self.daemons().and_then(|(c, s)| {
            let wait = if want_crypt { 5000 } else { 0 };
            let a = c
                .lookup(local, peer, wait)
                .map_err(|e| format!("asking the client's daemon: {e}"))?;
            let b = s
                .lookup(peer, local, wait)
                .map_err(|e| format!("asking the server's daemon: {e}"))?;
            Ok((a, b))
        });
        let (a, b) = match answers {
            Ok(ab) => ab,
            Err(e) => {
                return Check {
                    ok: false,
                    observed: e,
                };
            }
        };
        let crypt = |v: &Value| v["state"] == "tcpcrypt";
        let observed = if crypt(&a) && crypt(&b) && a["session_id"] == b["session_id"] {
            format!(
                "tcpcrypt {} {}",
                a["tep"].as_str().unwrap_or("?"),
                a["aead"].as_str().unwrap_or("?")
            )
        } else if !crypt(&a) && !crypt(&b) {
            format!(
                "not encrypted (client's daemon: {}, server's: {})",
                a["state"].as_str().unwrap_or("?"),
                b["state"].as_str().unwrap_or("?")
            )
        } else {
            format!("daemons disagree: client's {a}, server's {b}")
        };
        let ok = if want_crypt {
            observed.starts_with("tcpcrypt ")
        } else {
            observed.starts_with("not encrypted")
        };
        Check { ok, observed }
    }

    /// The control sockets of the client's and the server's daemon.
    pub fn control_sockets(&self) -> Result<(PathBuf, PathBuf), String> {
        let (c, s) = self.daemons()?;
        Ok((
            c.control_socket().to_path_buf(),
            s.control_socket().to_path_buf(),
        ))
    }

    /// Counts the client daemon's connections to server port `port`.
    pub fn tally(&self, port: u16) -> Result<Tally, String> {
        let (c, _) = self.daemons()?;
        let list = c
            .list()
            .map_err(|e| format!("listing the client daemon's connections: {e}"))?;
        let mut t = Tally::default();
        for conn in &list {
            let to_port = conn["remote"]
                .as_str()
                .and_then(|r| r.parse::<SocketAddr>().ok())
                .map(|a| a.port());
            if to_port != Some(port) {
                continue;
            }
            t.listed += 1;
            if conn["state"] == "tcpcrypt" {
                t.tcpcrypt += 1;
                if conn["resumed"] == true {
                    t.resumed += 1;
                }
            }
        }
        Ok(t)
    }

    /// Makes the server's daemon refuse session resumption on connections
    /// to `port`, so every one of them runs a full key exchange.
    pub fn forbid_resumption(&self, port: u16) -> Result<(), String> {
        let (_, s) = self.daemons()?;
        let answer = s
            .request(&json!({
                "v": 1, "op": "set_policy", "scope": "listen",
                "local": format!("0.0.0.0:{port}"), "no_resumption": true,
            }))
            .map_err(|e| format!("registering a no-resumption policy: {e}"))?;
        if answer["ok"] != true {
            return Err(format!(
                "the server's daemon refused a no-resumption policy: {answer}"
            ));
        }
        Ok(())
    }

    /// User plus system CPU time of both daemons so far.
    pub fn cpu(&self) -> Result<Cpu, String> {
        let (c, s) = self.daemons()?;
        Ok(Cpu {
            client: cpu_seconds(c)?,
            server: cpu_seconds(s)?,
        })
    }

    /// Waits, at most [`QUIET_LIMIT`], until neither daemon has used CPU
    /// for [`QUIET`], so work left from the previous measurement (thousands
    /// of connections closing) is not billed to the next one.
    pub fn quiesce(&self) {
        let deadline = Instant::now() + QUIET_LIMIT;
        let mut last = self.cpu().ok();
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline && !interrupt::requested() {
            std::thread::sleep(Duration::from_millis(50));
            let now = self.cpu().ok();
            let same = match (&last, &now) {
                (Some(a), Some(b)) => a.client == b.client && a.server == b.server,
                _ => false,
            };
            if !same {
                last = now;
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= QUIET {
                return;
            }
        }
    }

    /// Resident memory (KiB) of the client's and the server's daemon.
    pub fn rss_kib(&self) -> Result<(u64, u64), String> {
        let (c, s) = self.daemons()?;
        let rss = |d: &Daemon| {
            d.memory()
                .map(|m| m.rss_kib)
                .map_err(|e| format!("reading a daemon's memory: {e}"))
        };
        Ok((rss(c)?, rss(s)?))
    }
}

/// utime + stime of every thread of the daemon, from `/proc/PID/stat`.
fn cpu_seconds(d: &Daemon) -> Result<f64, String> {
    let pid = d.pid().ok_or("a daemon was already reaped")?;
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    let ticks = stat_cpu_ticks(&text).ok_or_else(|| format!("unexpected format of {path}"))?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return Err("sysconf(_SC_CLK_TCK) failed".into());
    }
    Ok(ticks as f64 / hz as f64)
}

/// Fields 14 and 15 of a `/proc/PID/stat` line. The command name (field 2)
/// may contain spaces and parentheses, so counting starts after its last
/// closing parenthesis, where field 3 begins.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_a_command_name_with_spaces_and_parentheses() {
        let line = "1234 (tcp cryptd) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 5 0 100 1000 200 18446744073709551615";
        assert_eq!(stat_cpu_ticks(line), Some(325));
        assert_eq!(stat_cpu_ticks("1234 (x) S 1 2"), None);
    }

    #[test]
    fn ports_come_from_their_own_range_and_run_out_with_an_error() {
        let mut p = Ports::new();
        assert_eq!(p.take(true), Ok(CRYPT_PORTS.0));
        assert_eq!(p.take(false), Ok(PLAIN_PORTS.0));
        assert_eq!(p.take(true), Ok(CRYPT_PORTS.0 + 1));
        for _ in 0..(PLAIN_PORTS.1 - PLAIN_PORTS.0) {
            assert!(p.take(false).is_ok());
        }
        assert!(p.take(false).is_err());
    }

    #[test]
    fn port_ranges_leave_out_the_client_ephemeral_ports() {
        let low: u16 = EPHEMERAL
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .expect("range start");
        assert!(CRYPT_PORTS.1 < low && PLAIN_PORTS.1 < low);
        assert!(CRYPT_PORTS.1 < PLAIN_PORTS.0 || PLAIN_PORTS.1 < CRYPT_PORTS.0);
    }
}
