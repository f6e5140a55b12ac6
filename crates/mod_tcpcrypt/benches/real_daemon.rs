//! Requests per second through httpd (event MPM) with real tcpcryptd on
//! both ends of a veth pair, `ab` in the client namespace: `Tcpcrypt On`
//! (one lookup per connection) against `Tcpcrypt Off` (the module loaded
//! but asking nothing), for one request per connection and for keep-alive,
//! in alternating rounds in one run. Prints numbers; asserts nothing about
//! speed. Needs root, `ab` (apache2-utils) and a tcpcryptd built in the
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
const ROUNDS: usize = 3;
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

/// `ab`'s requests per second, and its failed requests.
fn ab(topo: &Topology, url: &str, keep_alive: bool) -> (f64, u64) {
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
    (rate, field("Failed requests:").unwrap_or(0.0) as u64)
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
    let start = |on: bool| {
        let dir = TempDir::new(if on {
            "real-bench-on"
        } else {
            "real-bench-off"
        });
        let mut config = Config::new(Mpm::Event);
        config.control_socket = Some(server_daemon.control_socket().to_path_buf());
        config.listen_ip = topo.server_addrs.ip(false);
        config.port = Some(PORT);
        config.netns = Some(topo.server.name().to_owned());
        if !on {
            config.extra = "Tcpcrypt Off".to_owned();
        }
        let httpd = Httpd::start(dir.path(), &config);
        (httpd, dir)
    };
    let url = format!("http://{}:{PORT}/static.txt", topo.server_addrs.ip(false));
    // [on, off] × [new connection, keep-alive]
    let mut rates = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    let mut failed = 0;
    for round in 0..ROUNDS {
        // Alternate which goes first, so a change in the machine's load
        // hits both alike.
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for on in order {
            let (httpd, _dir) = start(on);
            for (k, keep_alive) in [false, true].into_iter().enumerate() {
                let (rate, f) = ab(&topo, &url, keep_alive);
                failed += f;
                rates[usize::from(!on)][k].push(rate);
            }
            drop(httpd);
        }
    }
    println!(
        "httpd event MPM, GET /static.txt, ab -c {CONCURRENCY}, real tcpcryptd on both ends; \
         median of {ROUNDS} rounds [all rounds]"
    );
    println!(
        "{:<26} {:>12} {:>12} {:>8}",
        "", "Tcpcrypt On", "Tcpcrypt Off", "On/Off"
    );
    for (k, name) in ["new connection/request", "keep-alive requests/s"]
        .into_iter()
        .enumerate()
    {
        let (on, off) = (median(rates[0][k].clone()), median(rates[1][k].clone()));
        println!(
            "{name:<26} {on:>12.0} {off:>12.0} {:>8.3}   on {:?} off {:?}",
            on / off,
            rates[0][k].iter().map(|r| r.round()).collect::<Vec<_>>(),
            rates[1][k].iter().map(|r| r.round()).collect::<Vec<_>>(),
        );
    }
    println!("failed requests (ab): {failed}");
}
