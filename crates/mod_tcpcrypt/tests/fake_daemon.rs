//! mod_tcpcrypt in a real httpd, against a fake tcpcryptd that the test
//! tells which connections are encrypted. Needs root (httpd runs its
//! children as www-data) and Debian's apache2, php, python3, ruby and
//! nghttp2-client.
//!
//! Each behaviour runs under the event and the prefork MPM.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use support::daemon::{FakeDaemon, FakeSession, Misbehaviour, Unlisted};
use support::http::Response;
use support::httpd::{Config, Httpd, Mpm, TempDir, write_file};

/// A running site: the fake daemon, httpd using it, and their directory
/// (dropped in this order: httpd first).
struct Site {
    httpd: Httpd,
    daemon: Option<FakeDaemon>,
    _dir: TempDir,
}

fn socket_path(dir: &TempDir) -> PathBuf {
    dir.path().join("control.sock")
}

/// A site whose fake daemon says `unlisted` about connections the test did
/// not register.
fn site(mpm: Mpm, unlisted: Unlisted) -> Site {
    site_with(mpm, unlisted, |_| {})
}

fn site_with(mpm: Mpm, unlisted: Unlisted, tweak: impl FnOnce(&mut Config)) -> Site {
    let dir = TempDir::new(&format!("site-{}", mpm_tag(mpm)));
    let daemon = FakeDaemon::start(&socket_path(&dir), unlisted);
    let mut config = Config::new(mpm);
    config.control_socket = Some(socket_path(&dir));
    tweak(&mut config);
    let httpd = Httpd::start(dir.path(), &config);
    Site {
        httpd,
        daemon: Some(daemon),
        _dir: dir,
    }
}

impl Site {
    fn daemon(&self) -> &FakeDaemon {
        self.daemon
            .as_ref()
            .unwrap_or_else(|| panic!("this site has no fake daemon"))
    }

    /// Opens a connection and registers it as a tcpcrypt session.
    fn tcpcrypt_conn(&self) -> (support::http::HttpConn, FakeSession) {
        let conn = self.httpd.connect();
        let session = self
            .daemon()
            .add_session(self.httpd.local_addr(), conn.local_addr());
        (conn, session)
    }

    fn assert_no_crash(&self) {
        let crashes = self.httpd.crash_lines();
        assert!(crashes.is_empty(), "crash in error log: {crashes:#?}");
    }
}

fn mpm_tag(mpm: Mpm) -> &'static str {
    match mpm {
        Mpm::Event => "event",
        Mpm::Prefork => "prefork",
    }
}

fn ok(r: Response) -> Response {
    assert_eq!(r.status, 200, "body:\n{}", r.body);
    r
}

fn assert_all_unset(r: &Response) {
    for (name, value) in r.vars() {
        assert_eq!(value, None, "{name} must be unset; body:\n{}", r.body);
    }
    assert_eq!(r.vars().len(), 5, "body:\n{}", r.body);
}

fn assert_session_vars(r: &Response, session: &FakeSession) {
    assert_eq!(r.var("TCP_CRYPT_SESSID"), Some(session.upper_hex()));
    assert_eq!(r.var("TCP_CRYPT_ROLE").as_deref(), Some(session.role()));
    assert_eq!(r.var("TCP_CRYPT_TEP").as_deref(), Some(session.tep()));
    assert_eq!(r.var("TCP_CRYPT_AEAD").as_deref(), Some(session.aead()));
    assert_eq!(r.var("TCP_CRYPT_RESUMED").as_deref(), Some("0"));
}

// ---- the behaviours, each a function of the MPM ----

fn shell_cgi_sees_all_session_variables(mpm: Mpm) {
    let site = site(mpm, Unlisted::Plain);
    let (mut conn, session) = site.tcpcrypt_conn();
    let r = ok(conn.get("/env.sh"));
    assert_session_vars(&r, &session);
    assert_eq!(session.upper_hex().len(), 66);
    site.assert_no_crash();
}

fn python_cgi_sees_the_session_id(mpm: Mpm) {
    let site = site(mpm, Unlisted::Plain);
    let (mut conn, session) = site.tcpcrypt_conn();
    let r = ok(conn.get("/env.py"));
    assert_session_vars(&r, &session);
}

fn ruby_cgi_sees_the_session_id(mpm: Mpm) {
    let site = site(mpm, Unlisted::Plain);
    let (mut conn, session) = site.tcpcrypt_conn();
    let r = ok(conn.get("/env.rb"));
    assert_session_vars(&r, &session);
}

fn keep_alive_requests_share_one_lookup_and_one_id(mpm: Mpm) {
    let site = site(mpm, Unlisted::Plain);
    let (mut conn, session) = site.tcpcrypt_conn();
    for path in ["/env.sh", "/env.py", "/env.sh"] {
        let r = ok(conn.get(path));
        assert_eq!(
            r.var("TCP_CRYPT_SESSID"),
            Some(session.upper_hex()),
            "{path}"
        );
    }
    assert_eq!(site.daemon().lookups_from(conn.local_addr()), 1);
}

fn two_connections_see_two_ids(mpm: Mpm) {
    let site = site(mpm, Unlisted::Plain);
    let (mut first, first_session) = site.tcpcrypt_conn();
    let (mut second, second_session) = site.tcpcrypt_conn();
    let a = ok(first.get("/env.sh")).var("TCP_CRYPT_SESSID");
    let b = ok(second.get("/env.sh")).var("TCP_CRYPT_SESSID");
    assert_eq!(a, Some(first_session.upper_hex()));
    assert_eq!(b, Some(second_session.upper_hex()));
    assert_ne!(a, b);
}

fn plain_connection_has_no_variables(mpm: Mpm) {
    let site = site(mpm, Unlisted::Plain);
    let mut conn = site.httpd.connect();
    assert_all_unset(&ok(conn.get("/env.sh")));
    assert_all_unset(&ok(conn.get("/env.py")));
    assert_eq!(site.daemon().lookups_from(conn.local_addr()), 1);
    assert!(
        site.httpd.module_errors().is_empty(),
        "{:#?}",
        site.httpd.module_errors()
    );
}

fn require_tcpcrypt_denies_plain_and_grants_tcpcrypt(mpm: Mpm) {
    let site = site(mpm, Unlisted::Plain);
    let mut plain = site.httpd.connect();
    assert_eq!(plain.get("/private/env.sh").status, 403);
    let (mut encrypted, session) = site.tcpcrypt_conn();
    let r = ok(encrypted.get("/private/env.sh"));
    assert_eq!(r.var("TCP_CRYPT_SESSID"), Some(session.upper_hex()));
    // The authz check and the fixups of the same request share the lookup.
    assert_eq!(site.daemon().lookups_from(encrypted.local_addr()), 1);
}

fn require_tcpcrypt_works_inside_require_any(mpm: Mpm) {
    let site = site(mpm, Unlisted::Plain);
    let mut plain = site.httpd.connect();
    assert_eq!(plain.get("/either/env.sh").status, 403);
    assert_eq!(plain.get("/either/env.sh?letmein").status, 200);
    let (mut encrypted, _) = site.tcpcrypt_conn();
    assert_eq!(encrypted.get("/either/env.sh").status, 200);
}

fn log_format_logs_the_session_id(mpm: Mpm) {
    let site = site(mpm, Unlisted::Plain);
    let (mut conn, session) = site.tcpcrypt_conn();
    ok(conn.get("/static.txt"));
    let client = conn.local_addr().ip().to_string();
    let mut plain = site.httpd.connect();
    ok(plain.get("/static.txt?plain"));
    let expected = format!("{} {client} /static.txt 200", session.upper_hex());
    let log = site.httpd.access_log_with(|l| l == expected);
    assert!(
        log.lines().any(|l| l == expected),
        "want {expected:?} in:\n{log}"
    );
    // %U is the path without the query string.
    let plain_line = format!("- {client} /static.txt 200");
    let log = site.httpd.access_log_with(|l| l == plain_line);
    assert!(
        log.lines().any(|l| l == plain_line),
        "plain request must log '-':\n{log}"
    );
}

fn request_header_carries_the_id_through_proxy_pass(mpm: Mpm) {
    let site = site(mpm, Unlisted::Plain);
    let (mut conn, session) = site.tcpcrypt_conn();
    let r = ok(conn.get("/proxied/headers.sh"));
    assert_eq!(r.var("FORWARDED"), Some(session.upper_hex()));
    // The backend's own incoming connection (from the proxy) is plain.
    assert_eq!(r.var("TCP_CRYPT_SESSID"), None);
    // Nothing asked about the proxy's outgoing connection as if it were the
    // client's: the only lookup with the client's address is one.
    assert_eq!(site.daemon().lookups_from(conn.local_addr()), 1);
}

fn h2c_streams_on_one_connection_see_its_id(mpm: Mpm) {
    let site = site(mpm, Unlisted::FreshSession);
    let base = format!("http://127.0.0.1:{}", site.httpd.port);
    let urls: Vec<String> = (0..4)
        .map(|i| format!("{base}/env.sh?stream={i}"))
        .collect();
    let out = Command::new("nghttp")
        .args(&urls)
        .output()
        .unwrap_or_else(|e| panic!("running nghttp (install nghttp2-client): {e}"));
    assert!(
        out.status.success(),
        "nghttp failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = String::from_utf8_lossy(&out.stdout);
    let ids: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("TCP_CRYPT_SESSID="))
        .collect();
    assert_eq!(ids.len(), 4, "nghttp output:\n{body}");
    let distinct: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), 1, "streams saw different IDs: {ids:?}");
    let answered = site.daemon().answered();
    assert_eq!(
        answered.len(),
        1,
        "one lookup per h2 connection: {answered:#?}"
    );
    let expected = answered[0]
        .session
        .as_ref()
        .map(FakeSession::upper_hex)
        .unwrap_or_default();
    assert_eq!(ids[0], expected);
}

fn daemon_absent_serves_without_variables_and_logs_one_error(mpm: Mpm) {
    let dir = TempDir::new(&format!("absent-{}", mpm_tag(mpm)));
    let mut config = Config::new(mpm);
    config.control_socket = Some(socket_path(&dir));
    config.lookup_timeout_ms = Some(150);
    let httpd = Httpd::start(dir.path(), &config);
    for _ in 0..4 {
        let mut conn = httpd.connect();
        for _ in 0..2 {
            let started = Instant::now();
            let r = ok(conn.get("/env.sh"));
            assert_all_unset(&r);
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{:?}",
                started.elapsed()
            );
        }
    }
    let errors = httpd.module_errors();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("control.sock"), "{}", errors[0]);
}

fn slow_daemon_is_abandoned_after_the_lookup_timeout(mpm: Mpm) {
    let site = site_with(mpm, Unlisted::FreshSession, |c| {
        c.lookup_timeout_ms = Some(200)
    });
    site.daemon().set_delay(Duration::from_secs(5));
    for _ in 0..3 {
        let mut conn = site.httpd.connect();
        let started = Instant::now();
        let r = ok(conn.get("/env.sh"));
        let took = started.elapsed();
        assert_all_unset(&r);
        // The daemon would answer after 5 s; the module gave up after 0.2 s.
        // The bound is generous for a loaded CI machine running a CGI.
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }
    let errors = site.httpd.module_errors();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("did not answer"), "{}", errors[0]);
}

fn broken_daemon_answers_are_survived(mpm: Mpm, how: Misbehaviour, expected_error: &str) {
    let site = site(mpm, Unlisted::FreshSession);
    site.daemon().set_misbehaviour(how);
    for _ in 0..3 {
        let mut conn = site.httpd.connect();
        assert_all_unset(&ok(conn.get("/env.sh")));
    }
    let errors = site.httpd.module_errors();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains(expected_error), "{}", errors[0]);
    site.assert_no_crash();
}

fn daemon_answering_garbage_is_logged_and_survived(mpm: Mpm) {
    broken_daemon_answers_are_survived(mpm, Misbehaviour::Garbage, "malformed answer");
}

fn daemon_hanging_up_is_logged_and_survived(mpm: Mpm) {
    broken_daemon_answers_are_survived(
        mpm,
        Misbehaviour::HangUp,
        "closed the connection before a complete answer",
    );
}

fn tcpcrypt_off_in_location_hides_the_variables(mpm: Mpm) {
    let site = site(mpm, Unlisted::Plain);
    let (mut conn, session) = site.tcpcrypt_conn();
    assert_all_unset(&ok(conn.get("/off/env.sh")));
    let r = ok(conn.get("/env.sh"));
    assert_eq!(r.var("TCP_CRYPT_SESSID"), Some(session.upper_hex()));
}

fn tcpcrypt_off_in_htaccess_hides_the_variables(mpm: Mpm) {
    let site = site(mpm, Unlisted::Plain);
    let (mut conn, session) = site.tcpcrypt_conn();
    assert_all_unset(&ok(conn.get("/htoff/env.sh")));
    let r = ok(conn.get("/env.sh"));
    assert_eq!(r.var("TCP_CRYPT_SESSID"), Some(session.upper_hex()));
}

fn ap_expr_sees_the_session_id_in_if_and_header_expr(mpm: Mpm) {
    let site = site(mpm, Unlisted::Plain);
    let (mut conn, session) = site.tcpcrypt_conn();
    let r = ok(conn.get("/expr/page.txt"));
    assert_eq!(
        r.header("X-Sessid-Expr"),
        Some(session.upper_hex().as_str())
    );
    assert_eq!(r.header("X-If-Tcpcrypt"), Some("yes"));
    let mut plain = site.httpd.connect();
    let r = ok(plain.get("/expr/page.txt"));
    assert_eq!(r.header("X-If-Tcpcrypt"), None);
    assert_eq!(r.header("X-Sessid-Expr").unwrap_or(""), "");
}

fn ten_thousand_requests_without_a_child_crash(mpm: Mpm) {
    let site = site_with(mpm, Unlisted::FreshSession, |c| {
        c.extra = "<Location /static.txt>\n  Header always set X-Sessid \"%{TCP_CRYPT_SESSID}e\"\n</Location>".to_owned();
    });
    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 2_500;
    let port = site.httpd.port;
    let results: Vec<(SocketAddr, BTreeSet<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|_| {
                s.spawn(move || {
                    let mut conn = support::http::HttpConn::connect(port);
                    let mut seen = BTreeSet::new();
                    for i in 0..PER_CLIENT {
                        let r = conn
                            .try_get("/static.txt", &[])
                            .unwrap_or_else(|e| panic!("request {i}: {e}"));
                        assert_eq!(r.status, 200, "request {i}");
                        seen.insert(r.header("X-Sessid").unwrap_or("").to_owned());
                    }
                    (conn.local_addr(), seen)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| panic!("client thread failed")))
            .collect()
    });
    for (addr, seen) in &results {
        assert_eq!(seen.len(), 1, "one ID per connection: {seen:?}");
        assert_eq!(site.daemon().lookups_from(*addr), 1);
        let id = seen.iter().next().cloned().unwrap_or_default();
        assert_eq!(id.len(), 66, "{id:?}");
    }
    site.assert_no_crash();
}

fn php_page_sees_the_session_id_in_server_array() {
    let site = site(Mpm::Prefork, Unlisted::Plain);
    let (mut conn, session) = site.tcpcrypt_conn();
    let r = ok(conn.get("/env.php"));
    assert_session_vars(&r, &session);
    let mut plain = site.httpd.connect();
    assert_all_unset(&ok(plain.get("/env.php")));
}

fn per_directory_rewrite_sees_the_variable() {
    let dir = TempDir::new("rewrite");
    let daemon = FakeDaemon::start(&socket_path(&dir), Unlisted::Plain);
    write_file(
        &dir.path().join("htdocs/rw/.htaccess"),
        "RewriteEngine On\nRewriteCond %{ENV:TCP_CRYPT_SESSID} ^[0-9A-F]{66}$\nRewriteRule ^start\\.txt$ encrypted.txt [L]\n",
        0o644,
    );
    write_file(&dir.path().join("htdocs/rw/start.txt"), "plain\n", 0o644);
    write_file(
        &dir.path().join("htdocs/rw/encrypted.txt"),
        "encrypted\n",
        0o644,
    );
    let mut config = Config::new(Mpm::Event);
    config.control_socket = Some(socket_path(&dir));
    // mod_rewrite is loaded before mod_tcpcrypt, so its fixups would run
    // first unless mod_tcpcrypt orders itself before them.
    config.extra = format!(
        "<Directory {}/htdocs/rw>\n  AllowOverride FileInfo Options\n</Directory>",
        dir.path().display()
    );
    let httpd = Httpd::start(dir.path(), &config);
    let mut conn = httpd.connect();
    daemon.add_session(httpd.local_addr(), conn.local_addr());
    assert_eq!(ok(conn.get("/rw/start.txt")).body, "encrypted\n");
    let mut plain = httpd.connect();
    assert_eq!(ok(plain.get("/rw/start.txt")).body, "plain\n");
}

macro_rules! for_each_mpm {
    ($($name:ident),* $(,)?) => {
        mod event {
            $( #[test] fn $name() { super::$name(super::Mpm::Event) } )*
        }
        mod prefork {
            $( #[test] fn $name() { super::$name(super::Mpm::Prefork) } )*
        }
    };
}

for_each_mpm!(
    shell_cgi_sees_all_session_variables,
    python_cgi_sees_the_session_id,
    ruby_cgi_sees_the_session_id,
    keep_alive_requests_share_one_lookup_and_one_id,
    two_connections_see_two_ids,
    plain_connection_has_no_variables,
    require_tcpcrypt_denies_plain_and_grants_tcpcrypt,
    require_tcpcrypt_works_inside_require_any,
    log_format_logs_the_session_id,
    request_header_carries_the_id_through_proxy_pass,
    h2c_streams_on_one_connection_see_its_id,
    daemon_absent_serves_without_variables_and_logs_one_error,
    slow_daemon_is_abandoned_after_the_lookup_timeout,
    daemon_answering_garbage_is_logged_and_survived,
    daemon_hanging_up_is_logged_and_survived,
    tcpcrypt_off_in_location_hides_the_variables,
    tcpcrypt_off_in_htaccess_hides_the_variables,
    ap_expr_sees_the_session_id_in_if_and_header_expr,
    ten_thousand_requests_without_a_child_crash,
);

#[test]
fn php_under_prefork_sees_the_session_id() {
    php_page_sees_the_session_id_in_server_array();
}

#[test]
fn rewrite_in_htaccess_sees_the_variable() {
    per_directory_rewrite_sees_the_variable();
}

/// Builds tests/fixtures/mod_tcpcrypt_consumer.c with apxs against
/// include/mod_tcpcrypt.h, in `dir`; returns the shared object.
fn build_consumer_module(dir: &std::path::Path) -> PathBuf {
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = dir.join("mod_tcpcrypt_consumer.c");
    std::fs::copy(
        crate_dir.join("tests/fixtures/mod_tcpcrypt_consumer.c"),
        &source,
    )
    .unwrap_or_else(|e| panic!("copy consumer source: {e}"));
    let out = Command::new("apxs")
        .current_dir(dir)
        .arg("-c")
        .arg(format!("-I{}", crate_dir.join("include").display()))
        .arg(&source)
        .output()
        .unwrap_or_else(|e| panic!("running apxs (install apache2-dev): {e}"));
    assert!(
        out.status.success(),
        "apxs failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join(".libs/mod_tcpcrypt_consumer.so")
}

#[test]
fn optional_functions_give_other_modules_the_session() {
    let build = TempDir::new("consumer");
    let consumer = build_consumer_module(build.path());
    let site = site_with(Mpm::Event, Unlisted::Plain, |c| {
        c.extra = format!(
            "LoadModule tcpcrypt_consumer_module {}\n<Location /off/>\n  Tcpcrypt Off\n</Location>",
            consumer.display()
        );
    });
    let (mut conn, session) = site.tcpcrypt_conn();
    let r = ok(conn.get("/static.txt"));
    assert_eq!(
        r.header("X-Consumer-Sessid"),
        Some(session.upper_hex().as_str())
    );
    assert_eq!(r.header("X-Consumer-Encrypted"), Some("1"));
    // Tcpcrypt Off governs the environment only, not the optional functions.
    let r = ok(conn.get("/off/env.sh"));
    assert_eq!(
        r.header("X-Consumer-Sessid"),
        Some(session.upper_hex().as_str())
    );
    let mut plain = site.httpd.connect();
    let r = ok(plain.get("/static.txt"));
    assert_eq!(r.header("X-Consumer-Sessid"), Some("none"));
    assert_eq!(r.header("X-Consumer-Encrypted"), Some("0"));
}
