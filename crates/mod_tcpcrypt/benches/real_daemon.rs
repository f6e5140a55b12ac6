//! Requests per second through httpd (event MPM) with real tcpcryptd on
//! both ends of a veth pair, `ab` in the client namespace: `Tcpcrypt On`
//! (one lookup per connection) against `Tcpcrypt Off` (the module loaded
//! but asking nothing) and against httpd without the module, for one
//! request per connection and for keep-alive, in rotating rounds in one
//! run. Prints numbers and ab's failed requests by kind; asserts nothing
//! about speed. Needs root, `ab` (apache2-utils) and a tcpcryptd built in the
//! same profile:
//!
//!     cargo build --release -p tcpcryptd
//!     cargo bench -p mod_tcpcrypt --bench real_daemon

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;

use support::httpd::{Config, Httpd, Mpm, TempDir, profile_dir};
use tcpcrypt_testnet::{Daemon, DaemonOptions, Topology};

const PORT: u16 = 8080;
const CONCURRENCY: &str = "16";
/// Rounds unless `TCPCRYPT_BENCH_ROUNDS` asks for more (the machine's
/// noise is several percent; more rounds narrow the medians).
const ROUNDS: usize = 3;

fn rounds() -> usize {
    std::env::var("TCPCRYPT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(ROUNDS)
}
/// Requests per `ab` run: new connection, keep-alive.
const REQUESTS: (&str, &str) = ("6000", "30000");

fn daemon_options() -> DaemonOptions {
    let bin = profile_dir().join("tcpcryptd");
    assert!(
        bin.exists(),
        "{} not built: cargo build --release -p tcpcryptd",
        bin.display()
    );
    DaemonOptions::new(bin)
        .arg("--ports")
        .arg(PORT.to_string())
        .arg("--control-group")
        .arg("www-data")
        // Per-connection log lines would be part of what is measured.
        .arg("--log-level")
        .arg("warn")
}

/// `ab`'s requests per second, its failed requests, and its line saying
/// what kind of failures they were.
fn ab(topo: &Topology, url: &str, keep_alive: bool) -> (f64, u64, String) {
    let mut args = vec!["-q", "-c", CONCURRENCY];
    if keep_alive {
        args.extend(["-k", "-n", REQUESTS.1]);
    } else {
        args.extend(["-n", REQUESTS.0]);
    }
    args.push(url);
    let out = Command::new("ip")
        .args(["netns", "exec", topo.client.name(), "ab"])
        .args(&args)
        .output()
        .unwrap_or_else(|e| panic!("running ab (install apache2-utils): {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let rate = field("Requests per second:").unwrap_or_else(|| {
        panic!(
            "ab gave no rate: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    // ab prints the kinds on the line after the count, when there are any.
    let kinds = text
        .lines()
        .skip_while(|l| !l.starts_with("Failed requests:"))
        .nth(1)
        .filter(|l| l.trim_start().starts_with('('))
        .map(|l| l.trim().to_owned())
        .unwrap_or_default();
    let failed = field("Failed requests:").unwrap_or(0.0) as u64;
    (rate, failed, kinds)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    support::httpd::require_root();
    let topo = Topology::pair().unwrap_or_else(|e| panic!("namespaces: {e}"));
    let server_daemon =
        Daemon::start(&topo.server, &daemon_options()).unwrap_or_else(|e| panic!("tcpcryptd: {e}"));
    let _client_daemon =
        Daemon::start(&topo.client, &daemon_options()).unwrap_or_else(|e| panic!("tcpcryptd: {e}"));
    // The module asking (On), loaded but silent (Off), not loaded.
    const MODES: [&str; 3] = ["Tcpcrypt On", "Tcpcrypt Off", "not loaded"];
    let start = |mode: usize| {
        let dir = TempDir::new(["real-bench-on", "real-bench-off", "real-bench-none"][mode]);
        let mut config = Config::new(Mpm::Event);
        config.control_socket = Some(server_daemon.control_socket().to_path_buf());
        config.listen_ip = topo.server_addrs.ip(false);
        config.port = Some(PORT);
        config.netns = Some(topo.server.name().to_owned());
        match mode {
            0 => {}
            1 => config.extra = "Tcpcrypt Off".to_owned(),
            _ => config.load_module = false,
        }
        let httpd = Httpd::start(dir.path(), &config);
        (httpd, dir)
    };
    let url = format!("http://{}:{PORT}/static.txt", topo.server_addrs.ip(false));
    // [mode] × [new connection, keep-alive]
    let mut rates: [[Vec<f64>; 2]; 3] = Default::default();
    let rounds = rounds();
    for round in 0..rounds {
        // Rotate which goes first, so a change in the machine's load hits
        // each alike.
        for i in 0..MODES.len() {
            let mode = (round + i) % MODES.len();
            let (httpd, _dir) = start(mode);
            for (k, keep_alive) in [false, true].into_iter().enumerate() {
                let (rate, failed, kinds) = ab(&topo, &url, keep_alive);
                if failed > 0 {
                    println!(
                        "round {round}, {}, {}: ab counted {failed} failed requests {kinds}",
                        MODES[mode],
                        if keep_alive {
                            "keep-alive"
                        } else {
                            "new connection"
                        }
                    );
                }
                rates[mode][k].push(rate);
            }
            drop(httpd);
        }
    }
    println!(
        "httpd event MPM, GET /static.txt, ab -c {CONCURRENCY}, real tcpcryptd on both ends; \
         median of {rounds} rounds [all rounds]"
    );
    println!(
        "{:<24} {:>12} {:>12} {:>12} {:>9} {:>9}",
        "", MODES[0], MODES[1], MODES[2], "On/none", "Off/none"
    );
    for (k, name) in ["new connection/request", "keep-alive requests/s"]
        .into_iter()
        .enumerate()
    {
        let m: Vec<f64> = (0..MODES.len())
            .map(|mode| median(rates[mode][k].clone()))
            .collect();
        println!(
            "{name:<24} {:>12.0} {:>12.0} {:>12.0} {:>9.3} {:>9.3}",
            m[0],
            m[1],
            m[2],
            m[0] / m[2],
            m[1] / m[2]
        );
        for (mode, label) in MODES.iter().enumerate() {
            println!(
                "    {label:<20} {:?}",
                rates[mode][k].iter().map(|r| r.round()).collect::<Vec<_>>()
            );
        }
    }
}
