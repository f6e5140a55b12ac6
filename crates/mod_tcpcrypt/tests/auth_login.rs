//! `AuthType tcpcrypt` end to end: real tcpcryptd in client and server
//! namespaces (and on a router in the middle), httpd with mod_tcpcrypt, and
//! the `tcpcrypt` command or the client library logging in. Needs root and
//! `tcpcryptd` and `tcpcrypt` built in the same profile (`cargo test
//! --workspace` builds both).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use support::http::HttpConn;
use support::httpd::{Config, Httpd, Mpm, TempDir, in_netns, profile_dir, write_file};
use tcpcrypt::login::{PasswordLogin, key_authorization};
use tcpcrypt::{Client, Lookup, Session};
use tcpcrypt_testnet::{Capture, Daemon, DaemonOptions, Netns, Topology};

const PORT: u16 = 8080;
const MODULES: &str = "/usr/lib/apache2/modules";
/// Distinctive, so a search of a capture cannot match by accident.
const ALICE_PASSWORD: &str = "alice-Pw-7f3q9-never-on-the-wire";
const BOB_PASSWORD: &str = "bob-Pw-k2m8x";

fn binary(name: &str) -> PathBuf {
    let bin = profile_dir().join(name);
    assert!(
        bin.exists(),
        "{} not built: run `cargo build -p tcpcryptd -p tcpcrypt-cli` (same profile) or `cargo test --workspace`",
        bin.display()
    );
    bin
}

fn daemon_options() -> DaemonOptions {
    DaemonOptions::new(binary("tcpcryptd"))
        .arg("--ports")
        .arg(PORT.to_string())
        .arg("--control-group")
        .arg("www-data")
}

const WHOAMI: &str = r#"#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
printf 'REMOTE_USER=%s\nAUTH_TYPE=%s\nTCP_CRYPT_SESSID=%s\n' "$REMOTE_USER" "$AUTH_TYPE" "$TCP_CRYPT_SESSID"
"#;

fn auth_config(root: &Path) -> String {
    let r = root.display();
    let block = |path: &str, realm: &str, require: &str| {
        format!(
            "<Location {path}>
  AuthType tcpcrypt
  AuthName \"{realm}\"
  TcpcryptAuthUserFile {r}/users.scram
  TcpcryptAuthKeyFile {r}/keys
  {require}
</Location>
"
        )
    };
    format!(
        "LoadModule authn_core_module {MODULES}/mod_authn_core.so
LoadModule authz_user_module {MODULES}/mod_authz_user.so
{}{}",
        block("/login/", "tcpcrypt test", "Require valid-user"),
        block(
            "/alice/",
            "alice only",
            "<RequireAll>\n    Require user alice\n    Require tcpcrypt\n  </RequireAll>"
        ),
    )
}

/// Runs the `tcpcrypt` command in `ns` against `daemon`.
fn tcpcrypt_cli(ns: &Netns, daemon: &Daemon, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = ns.command(&binary("tcpcrypt").to_string_lossy());
    cmd.arg("--control").arg(daemon.control_socket()).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("running tcpcrypt {args:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// httpd in the server namespace with two users and one key; tcpcryptd on
/// both ends (or only on the server).
struct Net {
    httpd: Httpd,
    client_daemon: Option<Daemon>,
    _server_daemon: Daemon,
    router_daemon: Option<Daemon>,
    topo: Topology,
    dir: TempDir,
}

impl Net {
    fn start(routed: bool, with_client_daemon: bool) -> Self {
        Self::start_with(Mpm::Event, routed, with_client_daemon)
    }

    fn start_with(mpm: Mpm, routed: bool, with_client_daemon: bool) -> Self {
        tcpcrypt_testnet::require_root();
        let topo = if routed {
            Topology::routed()
        } else {
            Topology::pair()
        }
        .unwrap_or_else(|e| panic!("namespaces: {e}"));
        let server_daemon = Daemon::start(&topo.server, &daemon_options())
            .unwrap_or_else(|e| panic!("server tcpcryptd: {e}"));
        let client_daemon = with_client_daemon.then(|| {
            Daemon::start(&topo.client, &daemon_options())
                .unwrap_or_else(|e| panic!("client tcpcryptd: {e}"))
        });
        let dir = TempDir::new("auth");
        let root = dir.path();
        for page in ["login/whoami.sh", "alice/whoami.sh", "ht/whoami.sh"] {
            write_file(&root.join("htdocs").join(page), WHOAMI, 0o755);
        }
        // A CGI local redirect: an internal redirect into another
        // protected location, which authenticates again.
        write_file(
            &root.join("htdocs/alice/to-login.sh"),
            "#!/bin/sh\nprintf 'Location: /login/whoami.sh\\r\\n\\r\\n'\n",
            0o755,
        );
        write_file(
            &root.join("htdocs/ht/.htaccess"),
            &format!(
                "AuthType tcpcrypt\nAuthName htaccess\nTcpcryptAuthUserFile {}/users.scram\nRequire user bob\n",
                root.display()
            ),
            0o644,
        );
        write_file(&root.join("keys"), "# name per key\n", 0o644);
        let mut net = Self {
            httpd: {
                let mut config = Config::new(mpm);
                config.control_socket = Some(server_daemon.control_socket().to_path_buf());
                config.listen_ip = topo.server_addrs.ip(false);
                config.port = Some(PORT);
                config.netns = Some(topo.server.name().to_owned());
                config.lookup_timeout_ms = Some(500);
                config.extra = auth_config(root);
                Httpd::start(root, &config)
            },
            client_daemon,
            _server_daemon: server_daemon,
            router_daemon: None,
            topo,
            dir,
        };
        net.passwd("alice", ALICE_PASSWORD);
        net.passwd("bob", BOB_PASSWORD);
        if routed {
            net.router_daemon = Some(
                Daemon::start(net.router(), &DaemonOptions::new(binary("tcpcryptd")))
                    .unwrap_or_else(|e| panic!("router tcpcryptd: {e}")),
            );
        }
        net
    }

    fn router(&self) -> &Netns {
        self.topo
            .router
            .as_ref()
            .unwrap_or_else(|| panic!("no router"))
    }

    fn client_daemon(&self) -> &Daemon {
        self.client_daemon
            .as_ref()
            .unwrap_or_else(|| panic!("no client tcpcryptd in this test"))
    }

    /// `tcpcrypt passwd` as an admin would run it (cheap iterations: the
    /// tests measure logins, not PBKDF2).
    fn passwd(&self, user: &str, password: &str) {
        let file = self.dir.path().join("users.scram");
        let out = tcpcrypt_cli(
            &self.topo.server,
            &self._server_daemon,
            &[
                "passwd",
                &file.to_string_lossy(),
                user,
                "--iterations",
                "4096",
                "--password-env",
                "PW",
            ],
            &[("PW", password)],
        );
        assert!(out.status.success(), "passwd: {}", text(&out.stderr));
        support::httpd::set_mode(&file, 0o644);
    }

    /// Makes a key for `name`; `authorize` adds it to the server's file.
    fn keygen(&self, file: &str, name: &str, authorize: bool) -> PathBuf {
        let path = self.dir.path().join(file);
        let out = tcpcrypt_cli(
            &self.topo.client,
            self.client_daemon(),
            &["keygen", &path.to_string_lossy(), "--name", name],
            &[],
        );
        assert!(out.status.success(), "keygen: {}", text(&out.stderr));
        if authorize {
            let keys = self.dir.path().join("keys");
            let mut all = std::fs::read_to_string(&keys).unwrap_or_default();
            all.push_str(&text(&out.stdout));
            write_file(&keys, &all, 0o644);
        }
        path
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.httpd.local_addr())
    }

    fn fetch(&self, login: &[&str], path: &str, password: &str) -> Output {
        let url = self.url(path);
        let mut args = vec!["fetch"];
        args.extend_from_slice(login);
        args.push(&url);
        tcpcrypt_cli(
            &self.topo.client,
            self.client_daemon(),
            &args,
            &[("PW", password)],
        )
    }

    fn fetch_user(&self, user: &str, password: &str, path: &str) -> Output {
        self.fetch(&["--user", user, "--password-env", "PW"], path, password)
    }

    fn fetch_key(&self, key: &Path, path: &str) -> Output {
        self.fetch(&["--key", &key.to_string_lossy()], path, "")
    }

    fn connect(&self) -> HttpConn {
        let addr = self.httpd.local_addr();
        in_netns(Some(self.topo.client.name()), move || {
            HttpConn::connect_to(addr)
        })
    }

    /// The session of `conn` as the client's tcpcryptd reports it.
    fn client_session(&self, conn: &HttpConn) -> Session {
        let client = Client::with_control_path(self.client_daemon().control_socket())
            .timeout(Duration::from_secs(2));
        match client.lookup_addrs_wait(
            conn.local_addr(),
            self.httpd.local_addr(),
            Duration::from_secs(2),
        ) {
            Ok(Lookup::Tcpcrypt(s)) => s,
            other => panic!("client side sees no tcpcrypt session: {other:?}"),
        }
    }

    /// Error-log lines of `AuthType tcpcrypt` containing `needle`, waiting
    /// up to 5 s for at least `min` of them.
    fn auth_log(&self, needle: &str, min: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let lines: Vec<String> = self
                .httpd
                .error_log()
                .lines()
                .filter(|l| l.contains("AuthType tcpcrypt") && l.contains(needle))
                .map(str::to_owned)
                .collect();
            if lines.len() >= min || std::time::Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn page_var(out: &Output, name: &str) -> Option<String> {
    text(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")).map(str::to_owned))
}

/// The session ID the CLI printed for its own connection.
fn cli_session(out: &Output) -> Option<String> {
    text(&out.stderr)
        .lines()
        .find_map(|l| l.strip_prefix("tcpcrypt: as a web server shows it: TCP_CRYPT_SESSID="))
        .map(str::to_owned)
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn password_login_sets_remote_user_and_no_password_crosses_the_wire() {
    let net = Net::start(false, true);
    let capture =
        Capture::start(&net.topo.client, "veth0").unwrap_or_else(|e| panic!("capture: {e}"));
    let out = net.fetch_user("alice", ALICE_PASSWORD, "/login/whoami.sh");
    let frames = capture.finish();
    assert_ok(&out);
    assert_eq!(page_var(&out, "REMOTE_USER").as_deref(), Some("alice"));
    assert_eq!(
        page_var(&out, "AUTH_TYPE").as_deref(),
        Some("SCRAM-SHA-256")
    );
    assert_eq!(page_var(&out, "TCP_CRYPT_SESSID"), cli_session(&out));
    assert!(text(&out.stderr).contains("the server proved it knows the verifier"));
    let payload: Vec<u8> = frames
        .iter()
        .filter_map(|f| f.tcp_payload())
        .flatten()
        .copied()
        .collect();
    assert!(
        payload.len() > 200,
        "the capture saw the exchange: {} bytes",
        payload.len()
    );
    let needle = ALICE_PASSWORD.as_bytes();
    assert!(
        !payload.windows(needle.len()).any(|w| w == needle),
        "the password crossed the wire"
    );

    let wrong = net.fetch_user("alice", "not-her-password", "/login/whoami.sh");
    assert_eq!(wrong.status.code(), Some(5), "{}", text(&wrong.stderr));
    assert!(page_var(&wrong, "REMOTE_USER").is_none());
    assert_eq!(
        net.auth_log("user \"alice\": authentication failed: wrong password", 1)
            .len(),
        1
    );

    let stranger = net.fetch_user("mallory", "whatever", "/login/whoami.sh");
    assert_eq!(stranger.status.code(), Some(5));
    assert_eq!(net.auth_log("unknown user", 1).len(), 1);
    assert!(
        net.httpd.crash_lines().is_empty(),
        "{:#?}",
        net.httpd.crash_lines()
    );
}

#[test]
fn password_and_key_logins_work_under_prefork_too() {
    let net = Net::start_with(Mpm::Prefork, false, true);
    let out = net.fetch_user("alice", ALICE_PASSWORD, "/login/whoami.sh");
    assert_ok(&out);
    assert_eq!(page_var(&out, "REMOTE_USER").as_deref(), Some("alice"));
    let key = net.keygen("frank.key", "frank", true);
    let out = net.fetch_key(&key, "/login/whoami.sh");
    assert_ok(&out);
    assert_eq!(page_var(&out, "REMOTE_USER").as_deref(), Some("frank"));
    assert!(
        net.httpd.crash_lines().is_empty(),
        "{:#?}",
        net.httpd.crash_lines()
    );
}

#[test]
fn an_htaccess_file_can_require_a_login() {
    let net = Net::start(false, true);
    let bob = net.fetch_user("bob", BOB_PASSWORD, "/ht/whoami.sh");
    assert_ok(&bob);
    assert_eq!(page_var(&bob, "REMOTE_USER").as_deref(), Some("bob"));
    let alice = net.fetch_user("alice", ALICE_PASSWORD, "/ht/whoami.sh");
    assert_eq!(alice.status.code(), Some(5), "{}", text(&alice.stderr));
}

#[test]
fn require_user_and_require_all_see_the_logged_in_user() {
    let net = Net::start(false, true);
    let alice = net.fetch_user("alice", ALICE_PASSWORD, "/alice/whoami.sh");
    assert_ok(&alice);
    assert_eq!(page_var(&alice, "REMOTE_USER").as_deref(), Some("alice"));
    // bob proves his password, but `Require user alice` does not admit him.
    let bob = net.fetch_user("bob", BOB_PASSWORD, "/alice/whoami.sh");
    assert_eq!(bob.status.code(), Some(5), "{}", text(&bob.stderr));
    // An internal redirect to another protected location keeps the login
    // (the SCRAM exchange is used up by then; the hook must not ask again).
    let redirected = net.fetch_user("alice", ALICE_PASSWORD, "/alice/to-login.sh");
    assert_ok(&redirected);
    assert_eq!(
        page_var(&redirected, "REMOTE_USER").as_deref(),
        Some("alice")
    );
    let bob_elsewhere = net.fetch_user("bob", BOB_PASSWORD, "/login/whoami.sh");
    assert_ok(&bob_elsewhere);
    assert_eq!(
        page_var(&bob_elsewhere, "REMOTE_USER").as_deref(),
        Some("bob")
    );
}

#[test]
fn key_login_sets_remote_user_and_an_unknown_key_is_refused() {
    let net = Net::start(false, true);
    let carol = net.keygen("carol.key", "carol", true);
    let stranger = net.keygen("stranger.key", "stranger", false);
    let out = net.fetch_key(&carol, "/login/whoami.sh");
    assert_ok(&out);
    assert_eq!(page_var(&out, "REMOTE_USER").as_deref(), Some("carol"));
    assert_eq!(
        page_var(&out, "AUTH_TYPE").as_deref(),
        Some("Tcpcrypt-Ed25519")
    );
    assert_eq!(page_var(&out, "TCP_CRYPT_SESSID"), cli_session(&out));
    let refused = net.fetch_key(&stranger, "/login/whoami.sh");
    assert_eq!(refused.status.code(), Some(5), "{}", text(&refused.stderr));
    assert_eq!(net.auth_log("unknown key", 1).len(), 1);
}

#[test]
fn plain_connection_is_refused_with_a_clear_message() {
    let net = Net::start(false, false);
    let mut plain = net.connect();
    let r = plain
        .try_get("/login/whoami.sh", &[])
        .unwrap_or_else(|e| panic!("GET: {e}"));
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(net.auth_log("not encrypted with tcpcrypt", 1).len(), 1);
}

#[test]
fn malformed_and_oversized_headers_get_400_and_a_log_line() {
    let net = Net::start(false, true);
    let oversized = format!("SCRAM-SHA-256 data=\"{}\"", "QUFB".repeat(1500));
    let bad = [
        "SCRAM-SHA-256 data=!!!",
        "SCRAM-SHA-256 data=\"unterminated",
        "SCRAM-SHA-256 realm=x, realm=y, data=YQ==",
        "Tcpcrypt-Ed25519 key=AAAA, sig=AAAA",
        // Valid framing, but the SCRAM message inside is not.
        "SCRAM-SHA-256 data=\"cD10Y3BjcnlwdC11bmlxdWUsLG49LHI9eA==\"",
        oversized.as_str(),
    ];
    for value in bad {
        let mut conn = net.connect();
        let r = conn
            .try_get("/login/whoami.sh", &[("Authorization", value)])
            .unwrap_or_else(|e| panic!("GET with {value:.40}: {e}"));
        assert_eq!(r.status, 400, "{value:.60}: {}", r.body);
    }
    assert_eq!(
        net.auth_log("bad Authorization header", bad.len()).len(),
        bad.len()
    );
    // A client without a binding gets a 401 and a log line naming why.
    let mut conn = net.connect();
    let r = conn
        .try_get(
            "/login/whoami.sh",
            &[(
                "Authorization",
                "SCRAM-SHA-256 data=\"biwsbj1hbGljZSxyPXh5eg==\"",
            )],
        )
        .unwrap_or_else(|e| panic!("GET: {e}"));
    assert_eq!(r.status, 401);
    assert_eq!(net.auth_log("channel binding required", 1).len(), 1);
    assert!(
        net.httpd.crash_lines().is_empty(),
        "{:#?}",
        net.httpd.crash_lines()
    );
}

#[test]
fn a_captured_login_replayed_on_a_new_connection_fails() {
    let net = Net::start(false, true);
    // Password: a complete login through the library on connection 1.
    let mut first_conn = net.connect();
    let session = net.client_session(&first_conn);
    let (login, first) = PasswordLogin::start(&session, "alice").unwrap_or_else(|e| panic!("{e}"));
    let challenge = first_conn
        .try_get("/login/whoami.sh", &[("Authorization", &first)])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(challenge.status, 401);
    let www = challenge
        .header("www-authenticate")
        .unwrap_or_default()
        .to_owned();
    let (proof, last) = login
        .answer([www.as_str()], ALICE_PASSWORD)
        .unwrap_or_else(|e| panic!("{e}"));
    let ok = first_conn
        .try_get("/login/whoami.sh", &[("Authorization", &last)])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.var("REMOTE_USER").as_deref(), Some("alice"));
    proof
        .verify(ok.header("authentication-info"))
        .unwrap_or_else(|e| panic!("server proof: {e}"));

    // The proof alone on a new connection: no exchange to continue.
    let mut replay = net.connect();
    let r = replay
        .try_get("/login/whoami.sh", &[("Authorization", &last)])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 401);
    assert_eq!(net.auth_log("no SCRAM exchange is pending", 1).len(), 1);
    // Both captured messages, the proof's sid swapped for the new one:
    // the proof is bound to connection 1's session.
    let r = replay
        .try_get("/login/whoami.sh", &[("Authorization", &first)])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 401);
    let new_sid =
        tcpcrypt_auth::http::parse_scram_continue(r.header("www-authenticate").unwrap_or_default())
            .ok()
            .flatten()
            .map(|(sid, _)| sid)
            .unwrap_or_else(|| panic!("no continuation: {:?}", r.headers));
    let old_sid = tcpcrypt_auth::http::parse_authorization(&last)
        .ok()
        .flatten()
        .and_then(|c| match c {
            tcpcrypt_auth::http::Credentials::ScramFinal { sid, .. } => Some(sid),
            _ => None,
        })
        .unwrap_or_else(|| panic!("captured proof has no sid"));
    let spliced = last.replace(&old_sid, &new_sid);
    let r = replay
        .try_get("/login/whoami.sh", &[("Authorization", &spliced)])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 401);
    assert_eq!(net.auth_log("channel-binding mismatch", 1).len(), 1);

    // Key: a signed header from connection 2, replayed on connection 3.
    let key = net.keygen("dave.key", "dave", true);
    let key_text = std::fs::read_to_string(&key).unwrap_or_else(|e| panic!("{e}"));
    let mut signed_on = net.connect();
    let header = key_authorization(&net.client_session(&signed_on), &key_text)
        .unwrap_or_else(|e| panic!("{e}"));
    let ok = signed_on
        .try_get("/login/whoami.sh", &[("Authorization", &header)])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.var("REMOTE_USER").as_deref(), Some("dave"));
    let mut replay = net.connect();
    let r = replay
        .try_get("/login/whoami.sh", &[("Authorization", &header)])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 401);
    assert_eq!(net.auth_log("channel-binding mismatch", 2).len(), 2);
}

/// A transparent TCP relay in the router namespace (as scripts/demo-relay.py
/// does it): every byte it passes on, it sees in plaintext, since tcpcryptd
/// on the router terminates both legs.
struct Relay {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    fn start(router: &Netns, listen_port: u16, upstream: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let path = format!("/run/netns/{}", router.name());
        let listener = in_netns(Some(router.name()), move || {
            TcpListener::bind(("0.0.0.0", listen_port))
                .unwrap_or_else(|e| panic!("relay bind: {e}"))
        });
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("nonblocking: {e}"));
        let (s, record) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns on a namespace fd we opened moves only this thread.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns");
            while !s.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(server) =
                            TcpStream::connect_timeout(&upstream, Duration::from_secs(5))
                        else {
                            continue;
                        };
                        for (from, to) in [
                            (client.try_clone(), server.try_clone()),
                            (server.try_clone(), client.try_clone()),
                        ] {
                            let (Ok(mut from), Ok(mut to)) = (from, to) else {
                                continue;
                            };
                            let record = record.clone();
                            std::thread::spawn(move || {
                                let mut buf = [0u8; 16384];
                                while let Ok(n) = from.read(&mut buf) {
                                    if n == 0 || to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                    if let Ok(mut r) = record.lock() {
                                        r.extend_from_slice(&buf[..n]);
                                    }
                                }
                                let _ = to.shutdown(std::net::Shutdown::Write);
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<u8> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_relay_in_the_middle_breaks_both_logins_though_each_leg_is_encrypted() {
    let net = Net::start(true, true);
    let key = net.keygen("erin.key", "erin", true);
    let relay_port = 9090;
    let router = net.router();
    router
        .exec(
            "iptables",
            &[
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-i",
                "veth0",
                "-p",
                "tcp",
                "--dport",
                &PORT.to_string(),
                "-j",
                "REDIRECT",
                "--to-ports",
                &relay_port.to_string(),
            ],
        )
        .unwrap_or_else(|e| panic!("iptables on the router: {e}"));
    let relay = Relay::start(router, relay_port, net.httpd.local_addr());

    let by_password = net.fetch_user("alice", ALICE_PASSWORD, "/login/whoami.sh");
    assert_eq!(
        by_password.status.code(),
        Some(5),
        "{}",
        text(&by_password.stderr)
    );
    assert!(
        cli_session(&by_password).is_some(),
        "the client's leg is encrypted: {}",
        text(&by_password.stderr)
    );
    let by_key = net.fetch_key(&key, "/login/whoami.sh");
    assert_eq!(by_key.status.code(), Some(5), "{}", text(&by_key.stderr));
    assert!(cli_session(&by_key).is_some());

    let mismatches = net.auth_log("channel-binding mismatch", 2);
    assert_eq!(mismatches.len(), 2, "{mismatches:#?}");
    assert!(
        mismatches.iter().any(|l| l.contains("user \"alice\"")),
        "{mismatches:#?}"
    );
    assert!(
        mismatches
            .iter()
            .any(|l| l.contains("key of user \"erin\"")),
        "{mismatches:#?}"
    );
    // The client's leg and the server's leg have different sessions.
    let client_sid = cli_session(&by_password).unwrap_or_default();
    assert!(mismatches.iter().any(|l| l.contains(&client_sid)
        && !l.contains(&format!("this connection is session {client_sid}"))));

    // The relay read the whole exchange in plaintext, and no password.
    let seen = relay.seen();
    let seen_text = String::from_utf8_lossy(&seen);
    assert!(
        seen_text.contains("Authorization: SCRAM-SHA-256"),
        "relay saw no login"
    );
    assert!(seen_text.contains("Authorization: Tcpcrypt-Ed25519"));
    assert!(
        !seen_text.contains(ALICE_PASSWORD),
        "the relay saw the password"
    );
    drop(relay);
}

/// `tests/c/login.c` of libtcpcrypt, built against the library cargo just
/// built (the `auth` feature is on for this test's dependencies).
fn compile_c_login(out_dir: &Path) -> PathBuf {
    let client_crate = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tcpcrypt-client");
    let built = profile_dir().join("deps/libtcpcrypt.so");
    assert!(built.exists(), "{} not built", built.display());
    // Linked and loaded under its link name and its soname.
    let lib_dir = out_dir.join("lib");
    std::fs::create_dir_all(&lib_dir).unwrap_or_else(|e| panic!("{e}"));
    for name in ["libtcpcrypt.so", "libtcpcrypt.so.0"] {
        std::os::unix::fs::symlink(&built, lib_dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
    }
    let program = out_dir.join("c-login");
    let out = std::process::Command::new("cc")
        .args([
            "-std=c99",
            "-D_DEFAULT_SOURCE",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-I",
        ])
        .arg(client_crate.join("include"))
        .arg("-o")
        .arg(&program)
        .arg(client_crate.join("tests/c/login.c"))
        .arg("-L")
        .arg(&lib_dir)
        .arg("-ltcpcrypt")
        .output()
        .unwrap_or_else(|e| panic!("cc: {e}"));
    assert!(out.status.success(), "cc login.c:\n{}", text(&out.stderr));
    program
}

#[test]
fn a_c_program_logs_in_with_the_libtcpcrypt_functions() {
    let net = Net::start(false, true);
    let program = compile_c_login(net.dir.path());
    let run = |password: &str| {
        net.topo
            .client
            .command(&program.to_string_lossy())
            .arg(net.client_daemon().control_socket())
            .arg(net.httpd.local_addr().ip().to_string())
            .arg(PORT.to_string())
            .arg("/login/whoami.sh")
            .arg("alice")
            .env("PW", password)
            .env("LD_LIBRARY_PATH", net.dir.path().join("lib"))
            .output()
            .unwrap_or_else(|e| panic!("running the C program: {e}"))
    };
    let ok = run(ALICE_PASSWORD);
    assert_ok(&ok);
    assert_eq!(page_var(&ok, "REMOTE_USER").as_deref(), Some("alice"));
    assert_eq!(page_var(&ok, "verify").as_deref(), Some("0"));
    let wrong = run("wrong");
    assert_eq!(wrong.status.code(), Some(7), "{}", text(&wrong.stdout));
    assert_eq!(page_var(&wrong, "status").as_deref(), Some("401"));
}
