//! The `tcpcrypt` command against a fake control socket and a loopback HTTP
//! server: output, exit codes and time limits.

#[path = "../../tcpcrypt-client/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::fake_daemon::{
    EXAMPLE_ID, FakeDaemon, Reply, list_answer, state_answer, tcpcrypt_answer, temp_dir,
};

const SLACK: Duration = Duration::from_secs(3);

fn tcpcrypt(control: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tcpcrypt"));
    cmd.arg("--control").arg(control);
    cmd
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run tcpcrypt");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn missing_socket() -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = temp_dir("cli-nodaemon");
    let path = dir.join("control.sock");
    (dir, path)
}

#[test]
fn help_of_every_subcommand_says_what_it_does_and_lists_exit_codes() {
    for (sub, words) in [
        (None, "Inspect tcpcrypt connections"),
        (Some("status"), "List the connections"),
        (Some("lookup"), "Show one connection in full"),
        (Some("fetch"), "GET an http:// URL"),
        (
            Some("policy set"),
            "Register controls for the socket bound to LOCAL",
        ),
        (Some("policy clear"), "Remove the registration"),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tcpcrypt"));
        cmd.args(sub.iter().flat_map(|s| s.split(' ')))
            .arg("--help");
        let (code, stdout, _) = run(&mut cmd);
        assert_eq!(code, 0, "{sub:?}");
        assert!(stdout.contains(words), "{sub:?}: {stdout}");
        assert!(
            stdout.contains("2  tcpcryptd unreachable"),
            "{sub:?}: {stdout}"
        );
    }
}

#[test]
fn usage_errors_exit_1() {
    let (dir, path) = missing_socket();
    for args in [
        vec!["frobnicate"],
        vec!["lookup", "10.0.0.1:80"],
        vec!["lookup", "nonsense", "10.0.0.1:80"],
        vec!["fetch", "https://example.org/"],
        vec!["policy", "set"],
        vec!["policy", "set", "10.0.0.1"],
        vec!["policy", "clear", "10.0.0.1:80", "--no-cache"],
        vec!["policy", "set", "10.0.0.1:80", "--app-aware=maybe"],
        vec!["policy", "set", "10.0.0.1:80", "--app-aware", "mandatory"],
    ] {
        let (code, _, stderr) = run(tcpcrypt(&path).args(&args));
        assert_eq!(code, 1, "{args:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn every_subcommand_without_a_daemon_exits_2_within_its_timeout() {
    let (dir, path) = missing_socket();
    let server = HttpServer::start(Body::Length(b"hello".to_vec()));
    let url = server.url();
    for args in [
        vec!["status"],
        vec!["status", "--json"],
        vec!["lookup", "10.0.0.2:80", "10.0.0.1:4000"],
        vec!["fetch", url.as_str()],
    ] {
        let start = Instant::now();
        let (code, _, stderr) = run(tcpcrypt(&path).args(["--timeout", "300"]).args(&args));
        let elapsed = start.elapsed();
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains("not running"), "{args:?}: {stderr}");
        assert!(
            elapsed < Duration::from_millis(300) + SLACK,
            "{args:?} took {elapsed:?}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn silent_daemon_makes_status_exit_2_after_the_timeout() {
    let fake = FakeDaemon::start(|_| Reply::Silence);
    let start = Instant::now();
    let (code, _, stderr) = run(tcpcrypt(fake.path()).args(["--timeout", "300", "status"]));
    let elapsed = start.elapsed();
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("did not answer"), "{stderr}");
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(300) + SLACK, "{elapsed:?}");
}

#[test]
fn control_socket_comes_from_the_environment_without_the_flag() {
    let fake = FakeDaemon::always(list_answer(3));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tcpcrypt"));
    cmd.env("TCPCRYPT_CONTROL", fake.path()).arg("status");
    let (code, stdout, stderr) = run(&mut cmd);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("10.0.0.1:80"), "{stdout}");
}

#[test]
fn status_table_prints_every_one_of_ten_thousand_rows() {
    let fake = FakeDaemon::always(list_answer(10_000));
    let (code, stdout, stderr) = run(tcpcrypt(fake.path()).args(["status", "--all"]));
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 10_001);
    assert!(lines[0].starts_with("LOCAL"));
    assert!(lines.iter().all(|l| !l.contains("...")), "no truncation");
    // One row per generated connection: every remote port 40000..49999 appears.
    let row = lines
        .iter()
        .find(|l| l.contains("10.1.39.250:49999"))
        .expect("last row present");
    assert!(row.contains("10.0.39.250:80"), "{row}");
}

#[test]
fn status_hides_plain_connections_unless_all() {
    let fake = FakeDaemon::always(list_answer(9));
    let (code, stdout, stderr) = run(tcpcrypt(fake.path()).arg("status"));
    assert_eq!(code, 0);
    assert_eq!(stdout.lines().count(), 1 + 6);
    assert!(!stdout.contains("plain"));
    assert!(stderr.contains("3 plain hidden"), "{stderr}");
}

#[test]
fn status_table_shows_session_fields() {
    let fake = FakeDaemon::always(list_answer(1));
    let (_, stdout, _) = run(tcpcrypt(fake.path()).arg("status"));
    let row = stdout.lines().nth(1).expect("one row");
    for cell in [
        "10.0.0.1:80",
        "10.1.0.1:40000",
        "tcpcrypt",
        "established",
        "X25519",
        "AES-256-GCM",
        "2300000000000000",
    ] {
        assert!(row.contains(cell), "{cell} missing in {row}");
    }
}

#[test]
fn status_json_lists_every_connection_with_protocol_fields() {
    let fake = FakeDaemon::always(list_answer(10_000));
    let (code, stdout, _) = run(tcpcrypt(fake.path()).args(["status", "--json", "--all"]));
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&stdout).expect("json output");
    let list = v["connections"].as_array().expect("array");
    assert_eq!(list.len(), 10_000);
    let first = list
        .iter()
        .find(|c| c["remote"] == "10.1.0.1:40000")
        .expect("row 0");
    assert_eq!(first["session_id"], format!("23{:064x}", 0));
    assert_eq!(first["role"], "A");
    assert_eq!(first["tep"], "TCPCRYPT_ECDHE_Curve25519");
    assert_eq!(first["aead"], "AEAD_AES_256_GCM");
    assert_eq!(first["resumed"], true);
}

#[test]
fn lookup_prints_the_whole_session_and_exits_0() {
    let fake = FakeDaemon::always(tcpcrypt_answer(EXAMPLE_ID, "B"));
    let (code, stdout, _) = run(tcpcrypt(fake.path()).args([
        "lookup",
        "[::ffff:10.0.0.2]:80",
        "10.0.0.1:40312",
        "--wait",
        "500",
    ]));
    assert_eq!(code, 0);
    for text in [
        EXAMPLE_ID,
        "role:            B",
        "TCPCRYPT_ECDHE_Curve25519 (0x23)",
        "AEAD_AES_128_GCM (0x0001)",
        "peer app-aware:  yes",
    ] {
        assert!(stdout.contains(text), "{text} missing in {stdout}");
    }
    let request = &fake.requests()[0];
    assert_eq!(request["local"], "10.0.0.2:80");
    assert_eq!(request["wait_ms"], 500);
}

#[test]
fn lookup_json_has_the_protocol_fields() {
    let fake = FakeDaemon::always(tcpcrypt_answer(EXAMPLE_ID, "A"));
    let (code, stdout, _) =
        run(tcpcrypt(fake.path()).args(["lookup", "[fd00::2]:443", "[fd00::1]:5000", "--json"]));
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(v["session_id"], EXAMPLE_ID);
    assert_eq!(v["local"], "[fd00::2]:443");
    assert_eq!(v["state"], "tcpcrypt");
}

#[test]
fn lookup_of_plain_pending_or_unknown_exits_3() {
    for answer in [
        r#"{"v":1,"ok":true,"state":"plain","reason":"peer sent no ENO option"}"#.to_string(),
        state_answer("pending"),
        state_answer("unknown"),
    ] {
        let fake = FakeDaemon::always(answer.clone());
        let (code, stdout, _) =
            run(tcpcrypt(fake.path()).args(["lookup", "10.0.0.2:80", "10.0.0.1:1"]));
        assert_eq!(code, 3, "{answer}: {stdout}");
    }
}

#[test]
fn malformed_daemon_answer_exits_4() {
    let fake = FakeDaemon::always(r#"{"v":1,"ok":true,"state":"tcpcrypt"}"#);
    let (code, _, stderr) =
        run(tcpcrypt(fake.path()).args(["lookup", "10.0.0.2:80", "10.0.0.1:1"]));
    assert_eq!(code, 4);
    assert!(stderr.contains("session_id"), "{stderr}");
}

#[test]
fn permission_denied_is_reported_as_such() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // Only root can run the command as another user to provoke this.
        return;
    }
    let fake = FakeDaemon::always(list_answer(1));
    std::fs::set_permissions(
        fake.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    let dir = fake.path().parent().expect("dir");
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod dir");
    // The build tree may sit below a directory only root can enter (a
    // `mktemp -d` checkout): run a copy of the command from the socket's
    // world-readable directory instead.
    let exe = dir.join("tcpcrypt");
    std::fs::copy(env!("CARGO_BIN_EXE_tcpcrypt"), &exe).expect("copy the command");
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod the command");
    let mut cmd = Command::new(&exe);
    cmd.arg("--control").arg(fake.path());
    std::os::unix::process::CommandExt::uid(&mut cmd, 65534);
    std::os::unix::process::CommandExt::gid(&mut cmd, 65534);
    cmd.arg("status");
    // Another test thread may fork while the copy is still open for
    // writing; until its child execs, it holds that descriptor and exec
    // of the copy fails with ETXTBSY. That passes within moments.
    let mut tries = 0;
    let output = loop {
        match cmd.output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => break other.expect("run the copied tcpcrypt"),
        }
    };
    let (code, stderr) = (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");
}

enum Body {
    Length(Vec<u8>),
    Chunked(Vec<&'static [u8]>),
    /// Answers with the request's head (request line and headers) as body.
    EchoRequestHead,
}

/// A one-shot HTTP server on loopback that reports the client address it saw.
struct HttpServer {
    addr: SocketAddr,
    peer: mpsc::Receiver<SocketAddr>,
}

impl HttpServer {
    fn start(body: Body) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, peer) = mpsc::channel();
        thread::spawn(move || {
            let Ok((mut stream, client)) = listener.accept() else {
                return;
            };
            let _ = tx.send(client);
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            let mut request_head = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                request_head.push_str(&line);
                line.clear();
            }
            let body = match body {
                Body::EchoRequestHead => Body::Length(request_head.into_bytes()),
                other => other,
            };
            let _ = match body {
                Body::Length(bytes) => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        bytes.len()
                    );
                    stream
                        .write_all(head.as_bytes())
                        .and_then(|()| stream.write_all(&bytes))
                }
                Body::Chunked(chunks) => {
                    let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                    for c in chunks {
                        out.extend(format!("{:x}\r\n", c.len()).bytes());
                        out.extend(c);
                        out.extend(b"\r\n");
                    }
                    out.extend(b"0\r\n\r\n");
                    stream.write_all(&out)
                }
                Body::EchoRequestHead => Ok(()),
            };
        });
        Self { addr, peer }
    }

    fn url(&self) -> String {
        format!("http://{}/index.html", self.addr)
    }
}

/// Answers `EXAMPLE_ID` only for connections to `server`.
fn fake_for_server(server: SocketAddr) -> FakeDaemon {
    let server = server.to_string();
    FakeDaemon::start(move |req: &Value| {
        if req["remote"] == server.as_str() {
            Reply::Line(tcpcrypt_answer(EXAMPLE_ID, "A"))
        } else {
            Reply::Line(state_answer("unknown"))
        }
    })
}

#[test]
fn fetch_prints_the_body_and_its_own_connections_session_id() {
    let server = HttpServer::start(Body::Length(b"<h1>hello</h1>\n".to_vec()));
    let fake = fake_for_server(server.addr);
    let (code, stdout, stderr) = run(tcpcrypt(fake.path()).args(["fetch", &server.url()]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "<h1>hello</h1>\n");
    assert!(
        stderr.contains(&format!("session id {EXAMPLE_ID}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("TCP_CRYPT_SESSID={}", EXAMPLE_ID.to_uppercase())),
        "{stderr}"
    );
    let client = server.peer.recv().expect("server saw the client");
    assert_eq!(fake.requests()[0]["local"], client.to_string());
}

#[test]
fn fetch_with_sessid_header_sends_its_session_id_in_the_request() {
    let server = HttpServer::start(Body::EchoRequestHead);
    let fake = fake_for_server(server.addr);
    let (code, stdout, stderr) = run(tcpcrypt(fake.path()).args([
        "fetch",
        "--sessid-header",
        "X-Client-Sessid",
        &server.url(),
    ]));
    assert_eq!(code, 0, "{stderr}");
    let expected = format!("X-Client-Sessid: {}\r\n", EXAMPLE_ID.to_uppercase());
    assert!(stdout.contains(&expected), "{stdout}");
}

#[test]
fn fetch_sends_no_sessid_header_on_a_plain_connection() {
    let server = HttpServer::start(Body::EchoRequestHead);
    let fake = FakeDaemon::always(
        r#"{"v":1,"ok":true,"state":"plain","reason":"peer sent no ENO option"}"#,
    );
    let (code, stdout, _) = run(tcpcrypt(fake.path()).args([
        "fetch",
        "--sessid-header",
        "X-Client-Sessid",
        &server.url(),
    ]));
    assert_eq!(code, 3);
    assert!(stdout.starts_with("GET /index.html"), "{stdout}");
    assert!(!stdout.contains("X-Client-Sessid"), "{stdout}");
}

#[test]
fn fetch_rejects_a_sessid_header_that_is_not_a_header_name() {
    let fake = FakeDaemon::always(state_answer("unknown"));
    let (code, _, stderr) = run(tcpcrypt(fake.path()).args([
        "fetch",
        "--sessid-header",
        "Bad Name:",
        "http://127.0.0.1:1/",
    ]));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("not an HTTP header name"), "{stderr}");
}

#[test]
fn fetch_decodes_a_chunked_body() {
    let server = HttpServer::start(Body::Chunked(vec![b"first ", b"second ", b"third"]));
    let fake = fake_for_server(server.addr);
    let (code, stdout, stderr) = run(tcpcrypt(fake.path()).args(["fetch", &server.url()]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "first second third");
}

#[test]
fn fetch_over_a_plain_connection_prints_the_body_and_exits_3() {
    let server = HttpServer::start(Body::Length(b"body".to_vec()));
    let fake = FakeDaemon::always(
        r#"{"v":1,"ok":true,"state":"plain","reason":"peer sent no ENO option"}"#,
    );
    let (code, stdout, stderr) = run(tcpcrypt(fake.path()).args(["fetch", &server.url()]));
    assert_eq!(code, 3);
    assert_eq!(stdout, "body");
    assert!(stderr.contains("plain"), "{stderr}");
}

#[test]
fn fetch_of_a_closed_port_exits_4() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let fake = FakeDaemon::always(state_answer("unknown"));
    let (code, _, stderr) =
        run(tcpcrypt(fake.path()).args(["fetch", &format!("http://127.0.0.1:{port}/")]));
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

#[test]
fn flush_resumption_sends_the_request_and_prints_the_count() {
    let fake = FakeDaemon::always(r#"{"v":1,"ok":true,"flushed":3}"#);
    let (code, stdout, stderr) = run(tcpcrypt(fake.path()).args(["flush-resumption"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "forgot 3 cached resumption secret(s)\n");
    assert_eq!(fake.requests()[0]["op"], "flush_resumption");
}

#[test]
fn flush_resumption_refused_by_the_daemon_says_permission_denied() {
    let fake = FakeDaemon::always(
        r#"{"v":1,"ok":false,"error":"permission_denied","message":"only root may change daemon state"}"#,
    );
    let (code, _, stderr) = run(tcpcrypt(fake.path()).args(["flush-resumption"]));
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("only root"), "{stderr}");
}

#[test]
fn policy_set_and_clear_send_the_documented_requests() {
    let fake = FakeDaemon::start(|req: &Value| match req["op"].as_str() {
        Some("set_policy") => Reply::Line(r#"{"v":1,"ok":true}"#.into()),
        Some("clear_policy") => Reply::Line(r#"{"v":1,"ok":true,"cleared":false}"#.into()),
        _ => Reply::Close,
    });
    let (code, stdout, stderr) =
        run(tcpcrypt(fake.path()).args(["policy", "set", "10.0.0.1:5555", "--no-resumption"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("connect 10.0.0.1:5555: no_resumption=true no_cache=false"),
        "{stdout}"
    );
    let (code, stdout, stderr) =
        run(tcpcrypt(fake.path()).args(["policy", "clear", "[::]:443", "--listen"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("listen [::]:443: had no policy"),
        "{stdout}"
    );
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0]["op"], "set_policy");
    assert_eq!(requests[0]["scope"], "connect");
    assert_eq!(requests[0]["local"], "10.0.0.1:5555");
    assert_eq!(requests[0]["no_resumption"], true);
    assert_eq!(requests[0]["no_cache"], false);
    assert_eq!(requests[1]["op"], "clear_policy");
    assert_eq!(requests[1]["scope"], "listen");
    assert_eq!(requests[1]["local"], "[::]:443");
}

#[test]
fn policy_set_sends_the_app_aware_mode_and_reports_a_refusal() {
    let fake = FakeDaemon::start(|req: &Value| {
        if req["app_aware"] == "mandatory" {
            Reply::Line(
                r#"{"v":1,"ok":false,"error":"permission_denied","message":"needs uid 0"}"#.into(),
            )
        } else {
            Reply::Line(r#"{"v":1,"ok":true}"#.into())
        }
    });
    let (code, stdout, stderr) =
        run(tcpcrypt(fake.path()).args(["policy", "set", "0.0.0.0:80", "--listen", "--app-aware"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("listen 0.0.0.0:80: no_resumption=false no_cache=false app_aware=on"),
        "{stdout}"
    );
    let (code, _, stderr) =
        run(tcpcrypt(fake.path()).args(["policy", "set", "10.0.0.1:5555", "--no-cache"]));
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run(tcpcrypt(fake.path()).args([
        "policy",
        "set",
        "0.0.0.0:80",
        "--listen",
        "--app-aware=mandatory",
    ]));
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("permission"), "{stderr}");
    let requests = fake.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert_eq!(requests[0]["scope"], "listen");
    assert_eq!(requests[0]["app_aware"], "on");
    // `policy set` states the whole registration: no flag means off.
    assert_eq!(requests[1]["app_aware"], "off");
    assert_eq!(requests[2]["app_aware"], "mandatory");
}
