//! Session lookups against real tcpcryptd instances in two network
//! namespaces: the Rust library, the old C call, Python via ctypes, and the
//! `tcpcrypt` command must all report the same session ID on both ends.
//!
//! Needs root and the `tcpcryptd` binary built in the same profile
//! (`cargo build -p tcpcryptd [--release]`), or its path in `TCPCRYPTD_BIN`.

#[path = "../../tcpcrypt-client/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::native::{LinkDir, field};
use tcpcrypt::{Client, Lookup, Session};
use tcpcrypt_testnet::{Daemon, DaemonOptions, Topology, require_root};

/// Long enough for any handshake on a veth link, short enough to fail fast.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(5);

fn tcpcryptd_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("TCPCRYPTD_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile dir");
    let bin = profile_dir.join("tcpcryptd");
    assert!(
        bin.exists(),
        "{} missing: build it first (cargo build -p tcpcryptd, same profile) or set TCPCRYPTD_BIN",
        bin.display()
    );
    bin
}

/// Two namespaces on one veth pair, a daemon in each (or only the client's).
/// Fields drop in order: the daemons stop (removing their rules) before
/// their namespaces are deleted.
struct Net {
    client_daemon: Daemon,
    server_daemon: Option<Daemon>,
    topo: Topology,
}

impl Net {
    fn start(server_runs_daemon: bool) -> Net {
        require_root();
        let topo = Topology::pair().expect("create namespaces");
        let opts = DaemonOptions::new(tcpcryptd_bin());
        let client_daemon = Daemon::start(&topo.client, &opts).expect("client tcpcryptd");
        let server_daemon = server_runs_daemon
            .then(|| Daemon::start(&topo.server, &opts).expect("server tcpcryptd"));
        Net {
            client_daemon,
            server_daemon,
            topo,
        }
    }

    fn client_lib(&self) -> Client {
        Client::with_control_path(self.client_daemon.control_socket())
            .timeout(Duration::from_secs(2))
    }

    fn server_lib(&self) -> Client {
        let daemon = self.server_daemon.as_ref().expect("server daemon");
        Client::with_control_path(daemon.control_socket()).timeout(Duration::from_secs(2))
    }

    /// A listener in the server namespace on an ephemeral port.
    fn listen(&self, v6: bool) -> (TcpListener, SocketAddr) {
        let ip = self.topo.server_addrs.ip(v6);
        let listener = self
            .topo
            .server
            .run(move || TcpListener::bind(SocketAddr::new(ip, 0)))
            .expect("bind in server namespace");
        let addr = listener.local_addr().expect("addr");
        (listener, addr)
    }

    /// A connection from the client namespace, accepted on the server, with
    /// a few bytes sent each way so the handshake has certainly run.
    fn connect(&self, v6: bool) -> (TcpStream, TcpStream) {
        let (listener, addr) = self.listen(v6);
        let client = self
            .topo
            .client
            .run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
            .expect("connect from client namespace");
        let (server, _) = listener.accept().expect("accept");
        for s in [&client, &server] {
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
        }
        exchange(&client, &server, b"ping");
        exchange(&server, &client, b"pong");
        (client, server)
    }
}

fn exchange(from: &TcpStream, to: &TcpStream, msg: &[u8]) {
    let mut from = from;
    let mut to = to;
    from.write_all(msg).expect("send");
    let mut buf = vec![0u8; msg.len()];
    to.read_exact(&mut buf).expect("receive");
    assert_eq!(buf, msg, "data arrives intact");
}

fn encrypted(lookup: Lookup, side: &str) -> Session {
    match lookup {
        Lookup::Tcpcrypt(s) => s,
        other => panic!("{side}: expected an encrypted connection, got {other:?}"),
    }
}

fn both_ends_agree(v6: bool) {
    let net = Net::start(true);
    let (client, server) = net.connect(v6);
    let a = encrypted(
        net.client_lib()
            .lookup_fd_wait(&client, HANDSHAKE_WAIT)
            .expect("client lookup"),
        "client",
    );
    let b = encrypted(
        net.server_lib()
            .lookup_fd_wait(&server, HANDSHAKE_WAIT)
            .expect("server lookup"),
        "server",
    );
    assert_eq!(a.session_id, b.session_id);
    assert_eq!(a.role, b.role.opposite());
    assert_eq!(a.tep, b.tep);
    assert_eq!(a.aead, b.aead);
    // RFC 8548 section 3.4: the ID starts with the TEP byte.
    assert_eq!(a.session_id.as_bytes()[0] & 0x7f, a.tep.byte());
}

#[test]
fn library_on_both_ends_reports_one_session_id_and_opposite_roles_ipv4() {
    both_ends_agree(false);
}

#[test]
fn library_on_both_ends_reports_one_session_id_and_opposite_roles_ipv6() {
    both_ends_agree(true);
}

#[test]
fn connection_to_a_host_without_tcpcrypt_reads_as_plain() {
    let net = Net::start(false);
    let (client, _server) = net.connect(false);
    let lookup = net
        .client_lib()
        .lookup_fd_wait(&client, HANDSHAKE_WAIT)
        .expect("client lookup");
    assert!(
        matches!(lookup, Lookup::Plain { .. }),
        "expected plain, got {lookup:?}"
    );
}

/// Runs `cmd` (a client-side program that connects to the server and holds
/// the connection), accepts its connection, and returns the program's
/// "sessid" line together with the server's own lookup of that connection.
fn program_and_server_ids(net: &Net, listener: TcpListener, mut cmd: Command) -> (String, Session) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start program");
    let (server, _) = listener.accept().expect("accept");
    let stdout = child.stdout.take().expect("stdout");
    let mut program_id = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read program output");
        if let Some(id) = field(&line, "sessid") {
            program_id = Some(id.to_string());
            break;
        }
    }
    let server_side = encrypted(
        net.server_lib()
            .lookup_fd_wait(&server, HANDSHAKE_WAIT)
            .expect("server lookup"),
        "server",
    );
    drop(server);
    let output = child.wait_with_output().expect("program exits");
    let program_id = program_id.unwrap_or_else(|| {
        panic!(
            "program printed no sessid line; stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (program_id, server_side)
}

#[test]
fn c_program_with_the_old_call_prints_the_servers_session_id() {
    let net = Net::start(true);
    let link = LinkDir::new();
    let program = link.compile("old_getsockopt.c");
    let (listener, addr) = net.listen(false);
    let mut cmd = net.topo.client.command(&program.to_string_lossy());
    cmd.args([
        addr.ip().to_string(),
        addr.port().to_string(),
        "hold".into(),
    ])
    .env("LD_LIBRARY_PATH", &link.dir)
    .env("TCPCRYPT_CONTROL", net.client_daemon.control_socket());
    let (c_id, server) = program_and_server_ids(&net, listener, cmd);
    assert_eq!(c_id, server.session_id.to_hex());
}

#[test]
fn python_ctypes_with_the_old_call_prints_the_servers_session_id() {
    let net = Net::start(true);
    let link = LinkDir::new();
    let (listener, addr) = net.listen(false);
    let script = support::native::crate_dir().join("tests/python/old_getsockopt.py");
    let mut cmd = net.topo.client.command("python3");
    cmd.arg(script)
        .arg(&link.library)
        .args([
            addr.ip().to_string(),
            addr.port().to_string(),
            "hold".into(),
        ])
        .env("TCPCRYPT_CONTROL", net.client_daemon.control_socket());
    let (py_id, server) = program_and_server_ids(&net, listener, cmd);
    assert_eq!(py_id, server.session_id.to_hex());
}

#[test]
fn status_json_lists_the_connection_with_the_same_session_id() {
    let net = Net::start(true);
    let (client, server) = net.connect(false);
    let server_side = encrypted(
        net.server_lib()
            .lookup_fd_wait(&server, HANDSHAKE_WAIT)
            .expect("server lookup"),
        "server",
    );
    let output = Command::new(env!("CARGO_BIN_EXE_tcpcrypt"))
        .arg("--control")
        .arg(net.client_daemon.control_socket())
        .args(["status", "--json"])
        .output()
        .expect("run tcpcrypt status");
    assert!(output.status.success(), "{output:?}");
    let v: Value = serde_json::from_slice(&output.stdout).expect("json");
    let local = client.local_addr().expect("local").to_string();
    let entry = v["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .find(|c| c["local"] == local.as_str())
        .unwrap_or_else(|| panic!("{local} not listed in {v}"));
    assert_eq!(entry["state"], "tcpcrypt");
    assert_eq!(entry["session_id"], server_side.session_id.to_hex());
}

#[test]
fn fetch_prints_the_session_id_the_server_side_looks_up() {
    let net = Net::start(true);
    let (listener, addr) = net.listen(false);
    let server_lib = net.server_lib();
    // The server answers with its own lookup of the connection as the body.
    let server = std::thread::spawn(move || -> Result<String, String> {
        let (stream, _) = listener.accept().map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(&stream);
        let mut line = String::new();
        while reader.read_line(&mut line).map_err(|e| e.to_string())? > 0 && line != "\r\n" {
            line.clear();
        }
        let id = match server_lib.lookup_fd_wait(&stream, HANDSHAKE_WAIT) {
            Ok(Lookup::Tcpcrypt(s)) => s.session_id.to_hex(),
            other => format!("not encrypted: {other:?}"),
        };
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{id}",
            id.len()
        );
        (&stream)
            .write_all(response.as_bytes())
            .map_err(|e| e.to_string())?;
        Ok(id)
    });
    let url = format!("http://{addr}/session");
    let output = net
        .topo
        .client
        .command(env!("CARGO_BIN_EXE_tcpcrypt"))
        .arg("--control")
        .arg(net.client_daemon.control_socket())
        .args(["fetch", &url])
        .output()
        .expect("run tcpcrypt fetch");
    let server_id = server.join().expect("server thread").expect("server side");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout, server_id);
    assert!(
        stderr.contains(&format!("session id {server_id}")),
        "{stderr}"
    );
}

#[test]
fn lookup_command_names_the_same_session_as_the_library() {
    let net = Net::start(true);
    let (client, _server) = net.connect(false);
    let lib = encrypted(
        net.client_lib()
            .lookup_fd_wait(&client, HANDSHAKE_WAIT)
            .expect("client lookup"),
        "client",
    );
    let local = client.local_addr().expect("local").to_string();
    let remote = client.peer_addr().expect("peer").to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_tcpcrypt"))
        .arg("--control")
        .arg(net.client_daemon.control_socket())
        .args(["lookup", &local, &remote, "--json"])
        .output()
        .expect("run tcpcrypt lookup");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let v: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(v["session_id"], lib.session_id.to_hex());
    assert_eq!(v["role"], lib.role.name());
}

#[test]
fn lookup_right_after_connect_waits_for_the_handshake_outcome() {
    let net = Net::start(true);
    let (listener, addr) = net.listen(false);
    let client = net
        .topo
        .client
        .run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
        .expect("connect from client namespace");
    // No data sent yet: the daemon may still be exchanging Init1/Init2, and
    // the wait makes it answer with the outcome rather than "pending".
    let lookup = net
        .client_lib()
        .lookup_fd_wait(&client, HANDSHAKE_WAIT)
        .expect("client lookup");
    encrypted(lookup, "client");
    drop(listener);
}

#[test]
fn dual_stack_server_socket_finds_an_ipv4_connection() {
    let net = Net::start(true);
    let listener = net
        .topo
        .server
        .run(|| TcpListener::bind("[::]:0"))
        .expect("bind dual-stack listener");
    let port = listener.local_addr().expect("addr").port();
    let addr = SocketAddr::new(net.topo.server_addrs.ip(false), port);
    let client = net
        .topo
        .client
        .run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
        .expect("connect over IPv4");
    let (server, peer) = listener.accept().expect("accept");
    assert!(
        peer.is_ipv6(),
        "the server socket sees an IPv4-mapped address"
    );
    for s in [&client, &server] {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
    }
    exchange(&client, &server, b"ping");
    let a = encrypted(
        net.client_lib()
            .lookup_fd_wait(&client, HANDSHAKE_WAIT)
            .expect("client lookup"),
        "client",
    );
    let b = encrypted(
        net.server_lib()
            .lookup_fd_wait(&server, HANDSHAKE_WAIT)
            .expect("server lookup through the mapped address"),
        "server",
    );
    assert_eq!(a.session_id, b.session_id);
}

/// The library's pooled connections open no new way in: a member of the
/// daemon's control group reads sessions through `tcpcrypt` (lookup and
/// status, both pooled requests), a user outside it reads nothing.
#[test]
fn a_control_group_member_reads_sessions_through_the_library_and_an_outsider_nothing() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    require_root();
    let topo = Topology::pair().expect("create namespaces");
    let opts = DaemonOptions::new(tcpcryptd_bin())
        .arg("--control-group")
        .arg("nogroup");
    let client_daemon = Daemon::start(&topo.client, &opts).expect("client tcpcryptd");
    let server_daemon =
        Daemon::start(&topo.server, &DaemonOptions::new(tcpcryptd_bin())).expect("server");
    let net = Net {
        client_daemon,
        server_daemon: Some(server_daemon),
        topo,
    };
    let (client, _server) = net.connect(false);
    let id = encrypted(
        net.client_lib()
            .lookup_fd_wait(&client, HANDSHAKE_WAIT)
            .expect("root's lookup"),
        "client",
    )
    .session_id
    .to_hex();
    let sock = net.client_daemon.control_socket().to_path_buf();
    // The test's temporary directory must not be what keeps others out.
    if let Some(dir) = sock.parent() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let (local, remote) = (
        client.local_addr().expect("local").to_string(),
        client.peer_addr().expect("peer").to_string(),
    );
    // The build tree may sit below a directory only root can enter (a
    // `mktemp -d` checkout, as CI's can be): run a copy of the command from
    // the socket's directory, opened up above, instead.
    let exe = sock.parent().expect("socket directory").join("tcpcrypt");
    std::fs::copy(env!("CARGO_BIN_EXE_tcpcrypt"), &exe).expect("copy the command");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the command");
    // nobody, with the control group (nogroup) or with group 1 (daemon);
    // std drops root's supplementary groups when it sets the uid.
    let run_as = |gid: u32, args: &[&str]| {
        let mut cmd = Command::new(&exe);
        cmd.arg("--control")
            .arg(&sock)
            .args(args)
            .uid(65534)
            .gid(gid);
        // Another test thread may fork while the copy is still open for
        // writing; until its child execs, it holds that descriptor and
        // exec of the copy fails with ETXTBSY for a moment.
        let mut tries = 0;
        loop {
            match cmd.output() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other.expect("run the copied tcpcrypt as nobody"),
            }
        }
    };
    let lookup = ["lookup", local.as_str(), remote.as_str(), "--json"];
    let status = ["status", "--json"];
    let member = run_as(65534, &lookup);
    assert_eq!(member.status.code(), Some(0), "{member:?}");
    let v: Value = serde_json::from_slice(&member.stdout).expect("json");
    assert_eq!(v["session_id"], id.as_str());
    let listed = run_as(65534, &status);
    assert_eq!(listed.status.code(), Some(0), "{listed:?}");
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&id));
    for args in [&lookup[..], &status[..]] {
        let outsider = run_as(1, args);
        assert_ne!(outsider.status.code(), Some(0), "{outsider:?}");
        assert!(
            !String::from_utf8_lossy(&outsider.stdout).contains(&id),
            "an outsider read the session: {outsider:?}"
        );
        let stderr = String::from_utf8_lossy(&outsider.stderr);
        assert!(stderr.contains("permission denied"), "{stderr}");
    }
}
