//! End to end: real tcpcryptd on both sides of a veth pair (client and
//! server network namespaces), httpd with mod_tcpcrypt in the server
//! namespace, and the client's view of the session from the client library
//! talking to the client's own tcpcryptd. Needs root and a built tcpcryptd
//! next to the module (`cargo build -p tcpcryptd`, or `cargo test
//! --workspace`, builds it).

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::http::{HttpConn, Response};
use support::httpd::{Config, Httpd, Mpm, TempDir, in_netns, profile_dir};
use tcpcrypt::{Client, Lookup};
use tcpcrypt_testnet::{Daemon, DaemonOptions, Topology};

const PORT: u16 = 8080;

fn tcpcryptd_binary() -> PathBuf {
    let bin = profile_dir().join("tcpcryptd");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build -p tcpcryptd` (or `cargo test --workspace`) first",
        bin.display()
    );
    bin
}

fn daemon_options() -> DaemonOptions {
    DaemonOptions::new(tcpcryptd_binary())
        .arg("--ports")
        .arg(PORT.to_string())
        // httpd's children (www-data) must be able to ask.
        .arg("--control-group")
        .arg("www-data")
}

/// The two namespaces, their daemons and httpd in the server namespace.
struct Net {
    httpd: Httpd,
    client_daemon: Option<Daemon>,
    server_daemon: Option<Daemon>,
    topo: Topology,
    _dir: TempDir,
}

impl Net {
    fn start(mpm: Mpm, with_client_daemon: bool) -> Self {
        Self::start_on(mpm, with_client_daemon, false)
    }

    /// `ipv6`: httpd listens on the server's IPv6 address instead of IPv4.
    fn start_on(mpm: Mpm, with_client_daemon: bool, ipv6: bool) -> Self {
        tcpcrypt_testnet::require_root();
        let topo = Topology::pair().unwrap_or_else(|e| panic!("namespaces: {e}"));
        let server_daemon = Daemon::start(&topo.server, &daemon_options())
            .unwrap_or_else(|e| panic!("server tcpcryptd: {e}"));
        let client_daemon = with_client_daemon.then(|| {
            Daemon::start(&topo.client, &daemon_options())
                .unwrap_or_else(|e| panic!("client tcpcryptd: {e}"))
        });
        let dir = TempDir::new(&format!("e2e-{mpm:?}"));
        let mut config = Config::new(mpm);
        config.control_socket = Some(server_daemon.control_socket().to_path_buf());
        config.listen_ip = topo.server_addrs.ip(ipv6);
        config.port = Some(PORT);
        config.netns = Some(topo.server.name().to_owned());
        config.lookup_timeout_ms = Some(500);
        let httpd = Httpd::start(dir.path(), &config);
        Self {
            httpd,
            client_daemon,
            server_daemon: Some(server_daemon),
            topo,
            _dir: dir,
        }
    }

    fn server_addr(&self) -> SocketAddr {
        self.httpd.local_addr()
    }

    /// A connection from the client namespace.
    fn connect(&self) -> HttpConn {
        let addr = self.server_addr();
        in_netns(Some(self.topo.client.name()), move || {
            HttpConn::connect_to(addr)
        })
    }

    /// The session ID (upper-case hex) the client's tcpcryptd reports for
    /// `conn`, through the client library.
    fn client_side_id(&self, conn: &HttpConn) -> String {
        let daemon = self
            .client_daemon
            .as_ref()
            .unwrap_or_else(|| panic!("no client tcpcryptd in this test"));
        let client =
            Client::with_control_path(daemon.control_socket()).timeout(Duration::from_secs(2));
        match client.lookup_addrs_wait(
            conn.local_addr(),
            self.server_addr(),
            Duration::from_secs(2),
        ) {
            Ok(Lookup::Tcpcrypt(session)) => session.session_id.to_upper_hex(),
            other => panic!("client side does not see a tcpcrypt session: {other:?}"),
        }
    }
}

fn ok(r: Response) -> Response {
    assert_eq!(r.status, 200, "body:\n{}", r.body);
    r
}

fn sessid(r: &Response) -> Option<String> {
    r.var("TCP_CRYPT_SESSID")
}

#[test]
fn cgi_pages_see_the_id_the_client_reports_under_event() {
    let net = Net::start(Mpm::Event, true);
    let mut conn = net.connect();
    let first = ok(conn.get("/env.sh"));
    let client_id = net.client_side_id(&conn);
    assert_eq!(sessid(&first), Some(client_id.clone()));
    assert_eq!(first.var("TCP_CRYPT_ROLE").as_deref(), Some("B"));
    assert_eq!(first.var("TCP_CRYPT_RESUMED").as_deref(), Some("0"));
    assert!(
        first
            .var("TCP_CRYPT_TEP")
            .is_some_and(|t| t.starts_with("TCPCRYPT_ECDHE_"))
    );
    assert!(
        first
            .var("TCP_CRYPT_AEAD")
            .is_some_and(|a| a.starts_with("AEAD_"))
    );
    // Same keep-alive connection: the Python and Ruby pages see the same ID.
    assert_eq!(sessid(&ok(conn.get("/env.py"))), Some(client_id.clone()));
    assert_eq!(sessid(&ok(conn.get("/env.rb"))), Some(client_id));
}

#[test]
fn ipv6_connection_sees_the_id_the_client_reports() {
    let net = Net::start_on(Mpm::Event, true, true);
    assert!(net.server_addr().is_ipv6());
    let mut conn = net.connect();
    let r = ok(conn.get("/env.sh"));
    assert_eq!(sessid(&r), Some(net.client_side_id(&conn)));
}

#[test]
fn php_and_shell_pages_see_the_id_the_client_reports_under_prefork() {
    let net = Net::start(Mpm::Prefork, true);
    let mut conn = net.connect();
    let php = ok(conn.get("/env.php"));
    let client_id = net.client_side_id(&conn);
    assert_eq!(sessid(&php), Some(client_id.clone()));
    assert_eq!(sessid(&ok(conn.get("/env.sh"))), Some(client_id));
}

#[test]
fn two_connections_see_two_ids_and_each_matches_its_client() {
    let net = Net::start(Mpm::Event, true);
    let mut a = net.connect();
    let mut b = net.connect();
    let id_a = sessid(&ok(a.get("/env.sh")));
    let id_b = sessid(&ok(b.get("/env.sh")));
    assert_eq!(id_a, Some(net.client_side_id(&a)));
    assert_eq!(id_b, Some(net.client_side_id(&b)));
    assert_ne!(id_a, id_b);
}

#[test]
fn client_without_tcpcryptd_is_served_without_variables_and_denied_by_require() {
    let mut net = Net::start(Mpm::Event, false);
    let mut plain = net.connect();
    let r = ok(plain.get("/env.sh"));
    assert_eq!(sessid(&r), None);
    assert_eq!(plain.get("/private/env.sh").status, 403);
    net.client_daemon = Some(
        Daemon::start(&net.topo.client, &daemon_options())
            .unwrap_or_else(|e| panic!("client tcpcryptd: {e}")),
    );
    let mut encrypted = net.connect();
    let r = ok(encrypted.get("/private/env.sh"));
    assert_eq!(sessid(&r), Some(net.client_side_id(&encrypted)));
}

#[test]
fn access_log_and_proxied_header_carry_the_id() {
    let net = Net::start(Mpm::Event, true);
    let mut conn = net.connect();
    let r = ok(conn.get("/proxied/headers.sh"));
    let client_id = net.client_side_id(&conn);
    assert_eq!(r.var("FORWARDED"), Some(client_id.clone()));
    let logged = |l: &str| l.starts_with(&client_id) && l.contains("/proxied/headers.sh 200");
    let log = net.httpd.access_log_with(logged);
    assert!(log.lines().any(logged), "{log}");
}

#[test]
fn tcpcrypt_off_hides_the_variables_end_to_end() {
    let net = Net::start(Mpm::Event, true);
    let mut conn = net.connect();
    assert_eq!(sessid(&ok(conn.get("/off/env.sh"))), None);
    assert_eq!(sessid(&ok(conn.get("/htoff/env.sh"))), None);
    assert_eq!(
        sessid(&ok(conn.get("/env.sh"))),
        Some(net.client_side_id(&conn))
    );
}

#[test]
fn h2c_streams_see_the_id_the_client_reports() {
    let net = Net::start(Mpm::Event, true);
    let base = format!("http://{}", net.server_addr());
    let urls: Vec<String> = (0..3)
        .map(|i| format!("{base}/env.sh?stream={i}"))
        .collect();
    let out = net
        .topo
        .client
        .command("nghttp")
        .args(&urls)
        .output()
        .unwrap_or_else(|e| panic!("nghttp in the client namespace: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = String::from_utf8_lossy(&out.stdout);
    let ids: BTreeSet<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("TCP_CRYPT_SESSID="))
        .collect();
    assert_eq!(ids.len(), 1, "{body}");
    // nghttp's connection is closed by now; the client daemon still lists
    // it for its cleanup delay.
    let daemon = net
        .client_daemon
        .as_ref()
        .unwrap_or_else(|| panic!("client daemon"));
    let listed = Client::with_control_path(daemon.control_socket())
        .list()
        .unwrap_or_else(|e| panic!("list on the client daemon: {e}"));
    let client_ids: BTreeSet<String> = listed
        .iter()
        .filter(|c| c.remote == net.server_addr())
        .filter_map(|c| c.lookup.session().map(|s| s.session_id.to_upper_hex()))
        .collect();
    assert!(
        ids.iter().all(|id| client_ids.contains(*id)),
        "server saw {ids:?}, client daemon lists {client_ids:?}"
    );
}

#[test]
fn stopped_daemon_means_served_without_variables_and_one_error() {
    let mut net = Net::start(Mpm::Event, true);
    if let Some(mut daemon) = net.server_daemon.take() {
        daemon.terminate(Duration::from_secs(10));
    }
    for _ in 0..3 {
        let mut conn = net.connect();
        let started = Instant::now();
        assert_eq!(sessid(&ok(conn.get("/env.sh"))), None);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
    let errors = net.httpd.module_errors();
    assert_eq!(errors.len(), 1, "{errors:#?}");
}

#[test]
fn keep_alive_requests_share_one_id_under_prefork_without_a_crash() {
    let net = Net::start(Mpm::Prefork, true);
    for _ in 0..3 {
        let mut conn = net.connect();
        let ids: BTreeSet<Option<String>> =
            (0..3).map(|_| sessid(&ok(conn.get("/env.sh")))).collect();
        assert_eq!(ids, BTreeSet::from([Some(net.client_side_id(&conn))]));
    }
    let crashes = net.httpd.crash_lines();
    assert!(crashes.is_empty(), "{crashes:#?}");
}
