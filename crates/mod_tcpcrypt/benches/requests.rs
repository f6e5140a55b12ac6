//! Requests per second through httpd with mod_tcpcrypt exporting the
//! variables (one lookup per connection against the fake tcpcryptd) and with
//! `Tcpcrypt Off` (no lookup), measured in the same run, for keep-alive
//! traffic and for one request per connection. Prints numbers; asserts
//! nothing about speed. Needs root, like the integration tests.
//!
//!     cargo bench -p mod_tcpcrypt --bench requests

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::daemon::{FakeDaemon, Unlisted};
use support::http::HttpConn;
use support::httpd::{Config, Httpd, Mpm, TempDir};

const CLIENTS: usize = 4;

/// Runs `per_client` rounds on each of CLIENTS threads; returns rounds/s.
fn rate(per_client: usize, round: impl Fn(&mut Option<HttpConn>) + Sync) -> f64 {
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                let mut conn = None;
                for _ in 0..per_client {
                    round(&mut conn);
                }
            });
        }
    });
    (CLIENTS * per_client) as f64 / started.elapsed().as_secs_f64().max(f64::EPSILON)
}

fn measure(export: bool) -> (f64, f64) {
    let dir = TempDir::new(if export { "bench-on" } else { "bench-off" });
    let socket = dir.path().join("control.sock");
    let _daemon = FakeDaemon::start(&socket, Unlisted::FreshSession);
    let mut config = Config::new(Mpm::Event);
    config.control_socket = Some(socket);
    if !export {
        config.extra = "Tcpcrypt Off".to_owned();
    }
    let httpd = Httpd::start(dir.path(), &config);
    let port = httpd.port;
    let get = |conn: &mut HttpConn| {
        let r = conn
            .try_get("/static.txt", &[])
            .unwrap_or_else(|e| panic!("bench request: {e}"));
        assert_eq!(r.status, 200);
    };
    let keep_alive = rate(5_000, |conn| {
        get(conn.get_or_insert_with(|| HttpConn::connect(port)));
    });
    let per_connection = rate(500, |_| get(&mut HttpConn::connect(port)));
    (keep_alive, per_connection)
}

fn main() {
    support::httpd::require_root();
    // A warm-up run, so the first measurement does not pay for cold caches.
    let _ = measure(true);
    std::thread::sleep(Duration::from_millis(200));
    let (on_ka, on_conn) = measure(true);
    let (off_ka, off_conn) = measure(false);
    println!("mod_tcpcrypt, event MPM, {CLIENTS} clients, GET /static.txt");
    println!(
        "{:<28} {:>12} {:>12} {:>8}",
        "", "Tcpcrypt On", "Tcpcrypt Off", "On/Off"
    );
    println!(
        "{:<28} {:>12.0} {:>12.0} {:>8.3}",
        "keep-alive requests/s",
        on_ka,
        off_ka,
        on_ka / off_ka
    );
    println!(
        "{:<28} {:>12.0} {:>12.0} {:>8.3}",
        "new connections/s (1 req)",
        on_conn,
        off_conn,
        on_conn / off_conn
    );
}
