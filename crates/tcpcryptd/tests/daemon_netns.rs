//! The real daemon between two network namespaces, real kernel TCP on both
//! ends: the "Must show" list of issue 3. Needs root.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use serde_json::Value;
use tcpcrypt_testnet::{Capture, Daemon, DaemonOptions, Netns, Topology, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_tcpcryptd");
const ENO_KIND: u8 = 69;

fn options(port: u16) -> DaemonOptions {
    DaemonOptions::new(BIN)
        .arg("--ports")
        .arg(port.to_string())
        .arg("--cleanup-delay")
        .arg("2")
}

/// Deterministic test data: xorshift64 bytes.
struct Stream(u64);

impl Stream {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let bytes = self.0.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// Writes `total` bytes of the seeded stream; returns their SHA-256.
fn send_stream(mut w: impl Write, seed: u64, total: usize) -> Vec<u8> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut s = Stream(seed);
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = total;
    while left > 0 {
        let n = left.min(buf.len());
        s.fill(&mut buf[..n]);
        w.write_all(&buf[..n]).expect("write stream");
        ctx.update(&buf[..n]);
        left -= n;
    }
    ctx.finish().as_ref().to_vec()
}

/// Reads exactly `total` bytes; returns their SHA-256.
fn receive_stream(mut r: impl Read, total: usize) -> Vec<u8> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = total;
    while left > 0 {
        let want = left.min(buf.len());
        let n = r.read(&mut buf[..want]).expect("read stream");
        assert!(n > 0, "stream ended {left} bytes early");
        ctx.update(&buf[..n]);
        left -= n;
    }
    ctx.finish().as_ref().to_vec()
}

fn listen(ns: &Netns, ip: IpAddr, port: u16) -> TcpListener {
    ns.run(|| TcpListener::bind(SocketAddr::new(ip, port)))
        .expect("listen")
}

fn connect(ns: &Netns, to: SocketAddr) -> TcpStream {
    let s = ns
        .run(|| TcpStream::connect_timeout(&to, Duration::from_secs(10)))
        .expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    s
}

fn session_id(answer: &Value) -> String {
    assert_eq!(answer["state"], "tcpcrypt", "not tcpcrypt: {answer}");
    answer["session_id"]
        .as_str()
        .expect("session_id string")
        .to_string()
}

/// Both daemons' answers for one connection: (client's, server's).
fn lookups(client: &Daemon, server: &Daemon, conn: &TcpStream) -> (Value, Value) {
    let local = conn.local_addr().expect("local");
    let remote = conn.peer_addr().expect("peer");
    let c = client.lookup(local, remote, 5000).expect("client lookup");
    let s = server.lookup(remote, local, 5000).expect("server lookup");
    (c, s)
}

/// Both ways at once; returns the daemons (dropped before the namespaces)
/// so a test can look at them.
fn bulk_exchange(v6: bool, size: usize, port: u16) -> (Daemon, Daemon, Topology) {
    bulk_exchange_on(Topology::pair().expect("topology"), v6, size, port)
}

fn bulk_exchange_on(t: Topology, v6: bool, size: usize, port: u16) -> (Daemon, Daemon, Topology) {
    require_root();
    let client_d = Daemon::start(&t.client, &options(port)).expect("client daemon");
    let server_d = Daemon::start(&t.server, &options(port)).expect("server daemon");
    let server_addr = SocketAddr::new(t.server_addrs.ip(v6), port);
    let listener = listen(&t.server, server_addr.ip(), port);
    let server = std::thread::spawn(move || {
        let (s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let reader = s.try_clone().expect("clone");
        let rx = std::thread::spawn(move || receive_stream(reader, size));
        let sent = send_stream(&s, 2, size);
        let got = rx.join().expect("server reader");
        (sent, got)
    });
    let c = connect(&t.client, server_addr);
    let (ca, sa) = lookups(&client_d, &server_d, &c);
    let reader = c.try_clone().expect("clone");
    let rx = std::thread::spawn(move || receive_stream(reader, size));
    let client_sent = send_stream(&c, 1, size);
    let client_got = rx.join().expect("client reader");
    let (server_sent, server_got) = server.join().expect("server");

    assert_eq!(server_got, client_sent, "server received other bytes");
    assert_eq!(client_got, server_sent, "client received other bytes");
    assert_eq!(ca["role"], "A", "client: {ca}");
    assert_eq!(sa["role"], "B", "server: {sa}");
    assert_eq!(session_id(&ca), session_id(&sa));
    assert_eq!(ca["tep"], sa["tep"]);
    assert_eq!(ca["aead"], sa["aead"]);
    (client_d, server_d, t)
}

#[test]
fn hundred_megabytes_each_way_arrive_intact_with_one_session_id() {
    bulk_exchange(false, 100 << 20, 7001);
}

#[test]
fn ipv6_exchange_arrives_intact_with_one_session_id() {
    bulk_exchange(true, 8 << 20, 7002);
}

/// How many large (GSO/GRO) packets a stopped daemon says it handled.
fn large_packets_handled(mut d: Daemon) -> u64 {
    d.terminate(Duration::from_secs(10));
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("stopped: "))
        .unwrap_or_else(|| panic!("no stop line in the log:\n{log}"));
    line.split(" large)")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no large count in {line:?}"))
}

/// With receive offload on the link, as on a physical NIC, both daemons
/// take large segments whole in both directions (GSO from their own
/// kernel, GRO-merged from the wire) and the data still arrives intact.
#[test]
fn large_segments_both_ways_with_receive_offload_arrive_intact() {
    for (v6, port) in [(false, 7003), (true, 7004)] {
        let t = Topology::pair().expect("topology");
        t.enable_gro().expect("GRO on (ethtool)");
        let (client_d, server_d, _t) = bulk_exchange_on(t, v6, 24 << 20, port);
        let (c, s) = (
            large_packets_handled(client_d),
            large_packets_handled(server_d),
        );
        // 24 MiB each way in up to 64 KiB pieces is at least 384 of them
        // per direction; a daemon that got every MSS alone saw none.
        assert!(
            c > 200 && s > 200,
            "large packets: client {c}, server {s} (IPv6: {v6})"
        );
    }
}

#[test]
fn capture_shows_eno_in_syns_and_never_the_plaintext_marker() {
    require_root();
    let marker = b"PLAINTEXT-MARKER-7c1f0e";
    let t = Topology::pair().expect("topology");
    let _cd = Daemon::start(&t.client, &options(7003)).expect("client daemon");
    let _sd = Daemon::start(&t.server, &options(7003)).expect("server daemon");
    let cap = Capture::start(&t.server, "veth0").expect("capture");
    let listener = listen(&t.server, t.server_addrs.ip(false), 7003);
    let payload: Vec<u8> = marker.repeat(2000);
    let len = payload.len();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut got = vec![0u8; len];
        s.read_exact(&mut got).expect("read");
        s.write_all(&got).expect("echo");
        got
    });
    let mut c = connect(&t.client, SocketAddr::new(t.server_addrs.ip(false), 7003));
    c.write_all(&payload).expect("write");
    let mut echoed = vec![0u8; len];
    c.read_exact(&mut echoed).expect("read echo");
    assert_eq!(server.join().expect("server"), payload);
    assert_eq!(echoed, payload);
    std::thread::sleep(Duration::from_millis(200));
    let frames = cap.finish();
    let syns: Vec<_> = frames
        .iter()
        .filter(|f| f.tcp_flags().is_some_and(|fl| fl & 0x02 != 0))
        .collect();
    assert_eq!(syns.len(), 2, "expected SYN and SYN-ACK once each");
    for s in &syns {
        assert!(
            s.has_tcp_option(ENO_KIND),
            "SYN without ENO: {:?}",
            s.tcp_options()
        );
    }
    let leaked = frames
        .iter()
        .filter(|f| f.data.windows(marker.len()).any(|w| w == marker))
        .count();
    assert_eq!(
        leaked, 0,
        "{leaked} captured frames contain the plaintext marker"
    );
}

/// Connects, exchanges a few bytes, asks the client daemon for the ID.
fn one_connection(t: &Topology, client_d: &Daemon, to: SocketAddr) -> String {
    let mut c = connect(&t.client, to);
    c.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).expect("echo");
    assert_eq!(&buf, b"ping");
    let a = client_d
        .lookup(
            c.local_addr().expect("local"),
            c.peer_addr().expect("peer"),
            5000,
        )
        .expect("lookup");
    session_id(&a)
}

fn echo_server(listener: TcpListener) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

fn wait_until_empty(d: &Daemon, timeout: Duration) -> Vec<Value> {
    let end = Instant::now() + timeout;
    loop {
        let list = d.list().expect("list");
        if list.is_empty() || Instant::now() > end {
            return list;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn many_sequential_and_concurrent_connections_get_distinct_ids_and_are_forgotten() {
    require_root();
    let t = Topology::pair().expect("topology");
    let client_d = Daemon::start(&t.client, &options(7004)).expect("client daemon");
    let server_d = Daemon::start(&t.server, &options(7004)).expect("server daemon");
    let to = SocketAddr::new(t.server_addrs.ip(false), 7004);
    echo_server(listen(&t.server, to.ip(), 7004));
    let mut ids = std::collections::HashSet::new();
    for _ in 0..200 {
        assert!(ids.insert(one_connection(&t, &client_d, to)), "repeated ID");
    }
    let concurrent: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|_| s.spawn(|| one_connection(&t, &client_d, to)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("connection thread"))
            .collect()
    });
    for id in concurrent {
        assert!(ids.insert(id), "repeated ID among concurrent connections");
    }
    assert_eq!(ids.len(), 250);
    let left_c = wait_until_empty(&client_d, Duration::from_secs(60));
    let left_s = wait_until_empty(&server_d, Duration::from_secs(60));
    assert!(left_c.is_empty(), "client daemon still tracks {left_c:?}");
    assert!(left_s.is_empty(), "server daemon still tracks {left_s:?}");
}

fn fallback(daemon_on_client: bool) {
    require_root();
    let t = Topology::pair().expect("topology");
    let (ns, port) = if daemon_on_client {
        (&t.client, 7005)
    } else {
        (&t.server, 7006)
    };
    let d = Daemon::start(ns, &options(port)).expect("daemon");
    let to = SocketAddr::new(t.server_addrs.ip(false), port);
    echo_server(listen(&t.server, to.ip(), port));
    let mut c = connect(&t.client, to);
    let data = vec![0x5au8; 300_000];
    let writer = c.try_clone().expect("clone");
    let w = std::thread::spawn(move || {
        let mut writer = writer;
        writer.write_all(&vec![0x5au8; 300_000]).expect("write");
    });
    let mut got = vec![0u8; data.len()];
    c.read_exact(&mut got).expect("echo");
    w.join().expect("writer");
    assert!(got == data);
    let (local, remote) = (c.local_addr().expect("local"), c.peer_addr().expect("peer"));
    let answer = if daemon_on_client {
        d.lookup(local, remote, 5000)
    } else {
        d.lookup(remote, local, 5000)
    }
    .expect("lookup");
    assert_eq!(answer["state"], "plain", "{answer}");
    assert!(answer["reason"].as_str().is_some_and(|r| !r.is_empty()));
}

#[test]
fn daemon_only_on_client_falls_back_to_plain_tcp() {
    fallback(true);
}

#[test]
fn daemon_only_on_server_falls_back_to_plain_tcp() {
    fallback(false);
}

fn rules_dump(ns: &Netns) -> String {
    let mut out = String::new();
    for cmd in ["iptables", "ip6tables"] {
        for table in ["raw", "mangle", "filter"] {
            let o = ns.exec(cmd, &["-t", table, "-S"]).expect("iptables -S");
            out.push_str(&String::from_utf8_lossy(&o.stdout));
        }
    }
    out
}

#[test]
fn sigterm_removes_rules_and_control_socket() {
    require_root();
    let ns = Netns::new("term").expect("netns");
    let before = rules_dump(&ns);
    let mut d = Daemon::start(&ns, &options(7007)).expect("daemon");
    let during = rules_dump(&ns);
    assert!(during.contains("TCPCRYPT_OUT") && during.contains("TCPCRYPT_IN"));
    let socket = d.control_socket().to_path_buf();
    let status = d.terminate(Duration::from_secs(10)).expect("exited");
    assert!(status.success(), "exit status {status}");
    assert_eq!(rules_dump(&ns), before);
    assert!(!socket.exists(), "control socket left behind");
}

#[test]
fn restart_after_kill9_removes_stale_rules_and_encrypts_again() {
    require_root();
    let t = Topology::pair().expect("topology");
    let mut client_d = Daemon::start(&t.client, &options(7008)).expect("client daemon");
    let server_d = Daemon::start(&t.server, &options(7008)).expect("server daemon");
    client_d.kill9();
    assert!(
        rules_dump(&t.client).contains("TCPCRYPT_OUT"),
        "kill -9 removed rules"
    );
    let client_d = client_d
        .restart(&t.client, &options(7008))
        .expect("restart");
    assert!(
        client_d.log_text().contains("stale"),
        "no stale-rule notice"
    );
    let jumps = rules_dump(&t.client)
        .lines()
        .filter(|l| l.contains("-j TCPCRYPT_"))
        .count();
    // One per chain and family, and one more per family for the path-MTU
    // reports the inbound chain takes.
    assert_eq!(jumps, 10, "jumps per chain and family");
    let to = SocketAddr::new(t.server_addrs.ip(false), 7008);
    echo_server(listen(&t.server, to.ip(), 7008));
    let id = one_connection(&t, &client_d, to);
    assert_eq!(id.len(), 66);
    drop(server_d);
}

#[test]
fn control_socket_is_group_readable_and_only_flushing_and_mandatory_mode_need_root() {
    require_root();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let ns = Netns::new("perm").expect("netns");
    let d =
        Daemon::start(&ns, &options(7009).arg("--control-group").arg("nogroup")).expect("daemon");
    let sock = d.control_socket();
    let meta = std::fs::metadata(sock).expect("stat socket");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.uid(), 0);
    assert_eq!(meta.gid(), 65534);
    // The test's directory must be traversable by the unprivileged client.
    if let Some(dir) = sock.parent() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(b'{"v":1,"op":"version"}\n{"v":1,"op":"flush_resumption"}\n'
          b'{"v":1,"op":"set_policy","scope":"listen","local":"0.0.0.0:7009","no_cache":true}\n'
          b'{"v":1,"op":"set_policy","scope":"listen","local":"0.0.0.0:7009","app_aware":"on"}\n'
          b'{"v":1,"op":"set_policy","scope":"listen","local":"0.0.0.0:7009","app_aware":"mandatory"}\n')
f = s.makefile()
for _ in range(5):
    print(f.readline().strip())
"#;
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(sock)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run python3 as nobody");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(
        lines.len(),
        5,
        "stdout {text:?} stderr {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines[0]["ok"], true);
    assert_eq!(lines[1]["error"], "permission_denied");
    // A policy only makes one socket's sessions slower or less cached:
    // the control group may set one.
    assert_eq!(lines[2]["ok"], true, "{}", lines[2]);
    // So may the a bit, a signal that weakens nothing; mandatory mode
    // turns encryption off for peers without it, and needs root.
    assert_eq!(lines[3]["ok"], true, "{}", lines[3]);
    assert_eq!(lines[4]["error"], "permission_denied", "{}", lines[4]);
    let root = d
        .request(&serde_json::json!({"v":1,"op":"flush_resumption"}))
        .expect("flush as root");
    assert_eq!(root["ok"], true, "{root}");
}

#[test]
fn lookup_of_unfinished_handshake_waits_then_says_pending_and_list_shows_it() {
    require_root();
    let t = Topology::pair().expect("topology");
    let d = Daemon::start(&t.client, &options(7010)).expect("client daemon");
    // The server swallows the SYN, so the handshake never finishes.
    t.server
        .exec(
            "iptables",
            &["-A", "INPUT", "-p", "tcp", "--dport", "7010", "-j", "DROP"],
        )
        .expect("drop rule");
    let to = SocketAddr::new(t.server_addrs.ip(false), 7010);
    let attempt = t.client.spawn_thread(move || {
        let _ = TcpStream::connect_timeout(&to, Duration::from_secs(4));
    });
    let end = Instant::now() + Duration::from_secs(3);
    let entry = loop {
        let list = d.list().expect("list");
        if let Some(e) = list.into_iter().find(|e| e["remote"] == to.to_string()) {
            break e;
        }
        assert!(Instant::now() < end, "connection never listed");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(entry["state"], "pending", "{entry}");
    assert_eq!(entry["phase"], "handshake", "{entry}");
    let local: SocketAddr = entry["local"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("local address in list");
    let asked = Instant::now();
    let answer = d.lookup(local, to, 600).expect("lookup");
    assert_eq!(answer["state"], "pending", "{answer}");
    assert!(
        asked.elapsed() >= Duration::from_millis(550),
        "did not wait"
    );
    attempt.join().expect("connect thread");
}

#[test]
fn lookup_of_untracked_connection_is_unknown() {
    require_root();
    let ns = Netns::new("unk").expect("netns");
    let d = Daemon::start(&ns, &options(7011)).expect("daemon");
    let a = d
        .lookup(
            "10.1.2.3:80".parse().expect("addr"),
            "[::ffff:10.3.2.1]:5555".parse().expect("addr"),
            0,
        )
        .expect("lookup");
    assert_eq!(a["state"], "unknown", "{a}");
}

#[test]
fn keylog_records_ss_and_es_for_each_fresh_session_in_a_private_file() {
    require_root();
    use std::os::unix::fs::PermissionsExt;
    let t = Topology::pair().expect("topology");
    let dir = std::env::temp_dir().join(format!("tcpcryptd-keylog-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("keys.log");
    let client_d = Daemon::start(
        &t.client,
        &options(7012).arg("--keylog").arg(path.to_string_lossy()),
    )
    .expect("client daemon");
    let _server_d = Daemon::start(&t.server, &options(7012)).expect("server daemon");
    let to = SocketAddr::new(t.server_addrs.ip(false), 7012);
    echo_server(listen(&t.server, to.ip(), 7012));
    let id = one_connection(&t, &client_d, to);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
    let log = client_d.log_text();
    std::fs::remove_dir_all(&dir).ok();
    let is_hex = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    };
    let ss: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("TCPCRYPT_SS "))
        .collect();
    let es: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("TCPCRYPT_ES "))
        .collect();
    assert_eq!(ss.len(), 1, "{text}");
    assert_eq!(es.len(), 1, "{text}");
    for line in ss.iter().chain(&es) {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 3, "{line}");
        assert_eq!(f[1], id);
        assert!(is_hex(f[2]), "{line}");
    }
    assert_eq!(mode.expect("stat key log"), 0o600);
    assert!(log.contains("key log is ON"), "no warning in the log");
}

/// Kills the daemon (its rules stay) and tries a fresh connection.
fn connect_after_crash(fail_closed: bool, port: u16) -> std::io::Result<TcpStream> {
    let t = Topology::pair().expect("topology");
    let mut opts = options(port);
    if fail_closed {
        opts = opts.arg("--fail-closed");
    }
    let mut d = Daemon::start(&t.client, &opts).expect("daemon");
    d.kill9();
    assert!(rules_dump(&t.client).contains("TCPCRYPT_OUT"));
    let to = SocketAddr::new(t.server_addrs.ip(false), port);
    echo_server(listen(&t.server, to.ip(), port));
    t.client
        .run(|| TcpStream::connect_timeout(&to, Duration::from_secs(2)))
}

#[test]
fn without_a_daemon_default_rules_let_plain_tcp_through() {
    require_root();
    assert!(connect_after_crash(false, 7013).is_ok());
}

#[test]
fn without_a_daemon_fail_closed_rules_drop_tcp() {
    require_root();
    assert!(connect_after_crash(true, 7014).is_err());
}

#[test]
fn sigterm_aborts_live_tcpcrypt_connections_on_both_ends() {
    require_root();
    let t = Topology::pair().expect("topology");
    let mut client_d = Daemon::start(&t.client, &options(7015)).expect("client daemon");
    let server_d = Daemon::start(&t.server, &options(7015)).expect("server daemon");
    let to = SocketAddr::new(t.server_addrs.ip(false), 7015);
    let listener = listen(&t.server, to.ip(), 7015);
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).expect("first bytes");
        s.write_all(&buf).expect("echo");
        // The next read ends the way the connection ends.
        s.read(&mut buf)
    });
    let mut c = connect(&t.client, to);
    c.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).expect("echo");
    let a = client_d
        .lookup(c.local_addr().expect("local"), to, 5000)
        .expect("lookup");
    assert_eq!(a["state"], "tcpcrypt", "{a}");
    let status = client_d.terminate(Duration::from_secs(10)).expect("exited");
    assert!(status.success());
    let client_end = c.read(&mut buf);
    let server_end = server.join().expect("server");
    assert!(
        client_end
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionAborted),
        "client socket: {client_end:?}"
    );
    assert!(
        server_end
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "server socket: {server_end:?}"
    );
    drop(server_d);
}

#[test]
fn two_daemons_with_one_queue_number_each_track_only_their_own_side() {
    require_root();
    let t = Topology::pair().expect("topology");
    // Both use the default queue number: queues are per network namespace.
    let (client_d, server_d) = t.start_daemons(&options(7016)).expect("daemons");
    let to = SocketAddr::new(t.server_addrs.ip(false), 7016);
    let listener = listen(&t.server, to.ip(), 7016);
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).expect("read");
        s.write_all(&buf).expect("echo");
        s
    });
    let mut c = connect(&t.client, to);
    c.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).expect("echo");
    let _server_socket = server.join().expect("server");
    let local = c.local_addr().expect("local").to_string();
    let client_list = client_d.list().expect("client list");
    let server_list = server_d.list().expect("server list");
    assert_eq!(client_list.len(), 1, "{client_list:?}");
    assert_eq!(server_list.len(), 1, "{server_list:?}");
    assert_eq!(client_list[0]["local"], local.as_str());
    assert_eq!(client_list[0]["remote"], to.to_string().as_str());
    assert_eq!(server_list[0]["local"], to.to_string().as_str());
    assert_eq!(server_list[0]["remote"], local.as_str());
    assert_ne!(client_d.control_socket(), server_d.control_socket());
    assert_eq!(client_list[0]["session_id"], server_list[0]["session_id"]);
    // Application bytes, as the kernels sent and received them.
    for entry in [&client_list[0], &server_list[0]] {
        assert_eq!(entry["bytes_sent"], 4, "{entry}");
        assert_eq!(entry["bytes_received"], 4, "{entry}");
    }
}

#[test]
fn data_sent_after_the_peer_half_closed_arrives() {
    require_root();
    let t = Topology::pair().expect("topology");
    let (_cd, _sd) = t.start_daemons(&options(7017)).expect("daemons");
    let to = SocketAddr::new(t.server_addrs.ip(false), 7017);
    let listener = listen(&t.server, to.ip(), 7017);
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read to the client's FIN");
        // Only now, after the client's FIN, the answer flows.
        s.write_all(&got).expect("answer after FIN");
    });
    let mut c = connect(&t.client, to);
    let request = vec![7u8; 50_000];
    c.write_all(&request).expect("write");
    c.shutdown(std::net::Shutdown::Write).expect("half-close");
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).expect("answer");
    server.join().expect("server");
    assert!(
        answer == request,
        "got {} of {} bytes",
        answer.len(),
        request.len()
    );
}

/// The journal of encrypted connections next to a daemon's control socket.
fn journal_of(d: &Daemon) -> std::path::PathBuf {
    d.control_socket().with_file_name("encrypted-connections")
}

/// Waits until the journal lists `local remote` as added (it is written by
/// the outcome thread, a moment after the handshake).
fn wait_for_journal_entry(d: &Daemon, local: SocketAddr, remote: SocketAddr) -> String {
    let want = format!("+ {local} {remote}");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(journal_of(d)).unwrap_or_default();
        if text.lines().any(|l| l == want) || Instant::now() > end {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tcpcrypt connection with one echoed `ping`; the server side keeps
/// reading until the connection ends and returns what it got after that.
fn encrypted_connection(
    t: &Topology,
    client_d: &Daemon,
    port: u16,
) -> (TcpStream, std::thread::JoinHandle<Vec<u8>>) {
    let to = SocketAddr::new(t.server_addrs.ip(false), port);
    let listener = listen(&t.server, to.ip(), port);
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).expect("first bytes");
        s.write_all(&buf).expect("echo");
        let mut later = Vec::new();
        let _ = s.read_to_end(&mut later);
        later
    });
    let mut c = connect(&t.client, to);
    c.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).expect("echo");
    let a = client_d
        .lookup(c.local_addr().expect("local"), to, 5000)
        .expect("lookup");
    assert_eq!(a["state"], "tcpcrypt", "{a}");
    (c, server)
}

#[test]
fn restart_after_kill9_aborts_encrypted_connections_the_dead_daemon_left() {
    require_root();
    let marker = b"PLAINTEXT-AFTER-RESTART-5d2a91";
    let t = Topology::pair().expect("topology");
    let mut client_d = Daemon::start(&t.client, &options(7018)).expect("client daemon");
    let server_d = Daemon::start(&t.server, &options(7018)).expect("server daemon");
    let (mut c, server) = encrypted_connection(&t, &client_d, 7018);
    let (local, remote) = (c.local_addr().expect("local"), c.peer_addr().expect("peer"));
    let journal = wait_for_journal_entry(&client_d, local, remote);
    assert!(
        journal.contains(&format!("+ {local} {remote}")),
        "journal does not list the connection: {journal:?}"
    );
    client_d.kill9();
    let cap = Capture::start(&t.server, "veth0").expect("capture");
    let client_d = client_d
        .restart(&t.client, &options(7018))
        .expect("restart");
    let written = c.write(marker);
    std::thread::sleep(Duration::from_millis(500));
    let frames = cap.finish();
    assert!(
        written
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionAborted),
        "write on the left-over connection: {written:?}"
    );
    let leaked = frames
        .iter()
        .filter(|f| f.data.windows(marker.len()).any(|w| w == marker))
        .count();
    assert_eq!(
        leaked, 0,
        "{leaked} captured frames contain the plaintext marker"
    );
    assert!(
        client_d
            .log_text()
            .contains("aborting 1 tcpcrypt connection(s) a previous instance left"),
        "no abort notice in the log"
    );
    drop(client_d);
    drop(server_d);
    assert!(
        !server.join().expect("server").ends_with(marker),
        "the server application received the marker"
    );
}

#[test]
fn journal_lists_live_encrypted_connections_and_a_clean_stop_removes_it() {
    require_root();
    use std::os::unix::fs::PermissionsExt;
    let t = Topology::pair().expect("topology");
    let mut client_d = Daemon::start(&t.client, &options(7019)).expect("client daemon");
    let server_d = Daemon::start(&t.server, &options(7019)).expect("server daemon");
    let (c, server) = encrypted_connection(&t, &client_d, 7019);
    let (local, remote) = (c.local_addr().expect("local"), c.peer_addr().expect("peer"));
    let journal = wait_for_journal_entry(&client_d, local, remote);
    assert_eq!(journal, format!("+ {local} {remote}\n"));
    let mode = std::fs::metadata(journal_of(&client_d))
        .expect("stat journal")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let path = journal_of(&client_d);
    let status = client_d.terminate(Duration::from_secs(10)).expect("exited");
    assert!(status.success(), "exit status {status}");
    assert!(!path.exists(), "journal left after a clean stop");
    drop(c);
    drop(server_d);
    let _ = server.join();
}

#[test]
fn second_instance_on_the_same_control_socket_refuses_and_leaves_the_first_alone() {
    require_root();
    let ns = Netns::new("twice").expect("netns");
    let first = Daemon::start(&ns, &options(7020)).expect("daemon");
    let journal = journal_of(&first);
    std::fs::write(&journal, "+ 10.0.0.1:1 10.0.0.2:2\n").expect("seed journal");
    let out = ns
        .command(BIN)
        .arg("--control-socket")
        .arg(first.control_socket())
        .args(["--ports", "7020"])
        .output()
        .expect("run second instance");
    assert!(!out.status.success(), "second instance started");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(rules_dump(&ns).contains("-j TCPCRYPT_OUT"), "rules removed");
    assert_eq!(
        std::fs::read_to_string(&journal).expect("journal"),
        "+ 10.0.0.1:1 10.0.0.2:2\n",
        "journal touched"
    );
    assert!(first.list().is_ok(), "first instance stopped answering");
}

/// The wire stream one way, from a capture: payloads placed by sequence
/// number (retransmissions overlap), from the byte after the SYN up to the
/// first hole.
fn wire_stream(frames: &[tcpcrypt_testnet::Frame], src_port: u16) -> Vec<u8> {
    let port_of = |f: &tcpcrypt_testnet::Frame| {
        f.tcp()
            .and_then(|t| t.get(0..2))
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let seq_of = |f: &tcpcrypt_testnet::Frame| {
        f.tcp()
            .and_then(|t| t.get(4..8))
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let ours: Vec<_> = frames
        .iter()
        .filter(|f| port_of(f) == Some(src_port))
        .collect();
    let Some(isn) = ours
        .iter()
        .find(|f| f.tcp_flags().is_some_and(|fl| fl & 0x02 != 0))
        .and_then(|f| seq_of(f))
    else {
        return Vec::new();
    };
    let mut pieces: std::collections::BTreeMap<u64, Vec<u8>> = Default::default();
    for f in &ours {
        let (Some(seq), Some(data)) = (seq_of(f), f.tcp_payload()) else {
            continue;
        };
        if !data.is_empty() {
            let off = u64::from(seq.wrapping_sub(isn.wrapping_add(1)));
            pieces.entry(off).or_insert_with(|| data.to_vec());
        }
    }
    let mut stream = Vec::new();
    for (off, data) in pieces {
        let have = stream.len() as u64;
        if off > have {
            break;
        }
        let skip = (have - off) as usize;
        stream.extend_from_slice(data.get(skip..).unwrap_or_default());
    }
    stream
}

/// How many frames of a wire stream, after its Init message, carry the
/// rekey flag (RFC 8548 section 4.1: the low bit of the control byte); the
/// stream is walked by each frame's length field.
fn rekeys_in(
    stream: &[u8],
    init: tcpcrypt_proto::init::InitKind,
    tep: tcpcrypt_proto::Tep,
) -> usize {
    use tcpcrypt_proto::init::{InitProgress, init_progress};
    let mut at = match init_progress(init, tep, stream) {
        Ok(InitProgress::Complete(len)) => len,
        other => panic!("no complete Init message at the start of the stream: {other:?}"),
    };
    let mut rekeys = 0;
    while let Some(len) = stream
        .get(at..)
        .and_then(tcpcrypt_proto::frame::frame_len)
        .filter(|len| at + len <= stream.len())
    {
        rekeys += usize::from(stream[at] & 0x01 != 0);
        at += len;
    }
    rekeys
}

#[test]
fn rekeys_both_ways_keep_the_data_and_one_session() {
    require_root();
    use tcpcrypt_proto::init::InitKind;
    let t = Topology::pair().expect("topology");
    let port = 7030;
    let dir = std::env::temp_dir().join(format!("tcpcryptd-rekey-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let keylog = dir.join("keys.log");
    let rekeying = options(port).arg("--rekey-after").arg("256K");
    let client_d = Daemon::start(
        &t.client,
        &rekeying
            .clone()
            .arg("--keylog")
            .arg(keylog.to_string_lossy()),
    )
    .expect("client daemon");
    let server_d = Daemon::start(&t.server, &rekeying).expect("server daemon");
    let cap = Capture::start(&t.server, "veth0").expect("capture");
    let size = 3 << 20;
    let server_addr = SocketAddr::new(t.server_addrs.ip(false), port);
    let listener = listen(&t.server, server_addr.ip(), port);
    let server = std::thread::spawn(move || {
        let (s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let reader = s.try_clone().expect("clone");
        let rx = std::thread::spawn(move || receive_stream(reader, size));
        let sent = send_stream(&s, 4, size);
        (sent, rx.join().expect("server reader"))
    });
    let c = connect(&t.client, server_addr);
    let client_port = c.local_addr().expect("local").port();
    let reader = c.try_clone().expect("clone");
    let rx = std::thread::spawn(move || receive_stream(reader, size));
    let client_sent = send_stream(&c, 3, size);
    let client_got = rx.join().expect("client reader");
    let (server_sent, server_got) = server.join().expect("server");
    let (ca, sa) = lookups(&client_d, &server_d, &c);
    std::thread::sleep(Duration::from_millis(200));
    let frames = cap.finish();
    let keys = std::fs::read_to_string(&keylog).unwrap_or_default();
    std::fs::remove_dir_all(&dir).ok();

    assert_eq!(server_got, client_sent, "server received other bytes");
    assert_eq!(client_got, server_sent, "client received other bytes");
    assert_eq!(session_id(&ca), session_id(&sa));
    let sessions = keys
        .lines()
        .filter(|l| l.starts_with("TCPCRYPT_SS "))
        .count();
    assert_eq!(sessions, 1, "key log: {keys}");
    let tep = tcpcrypt_proto::Tep::ALL
        .into_iter()
        .find(|t| ca["tep"] == t.name())
        .expect("a known TEP");
    // 3 MiB one way under a new key every 256 KiB: about a dozen rekeys.
    let up = rekeys_in(&wire_stream(&frames, client_port), InitKind::Init1, tep);
    let down = rekeys_in(&wire_stream(&frames, port), InitKind::Init2, tep);
    eprintln!("rekeys seen on the wire: {up} client to server, {down} server to client");
    assert!(up >= 8, "only {up} rekeys from the client");
    assert!(down >= 8, "only {down} rekeys from the server");
}

/// Asks `d` about one connection twice: the first answer may come through
/// the packet thread, the second is served from the outcomes it published.
/// Both must be the same session.
fn settled_id(d: &Daemon, local: SocketAddr, remote: SocketAddr) -> String {
    let first = session_id(&d.lookup(local, remote, 5000).expect("lookup"));
    let again = session_id(&d.lookup(local, remote, 0).expect("lookup again"));
    assert_eq!(first, again, "the published answer differs from the first");
    first
}

#[test]
fn lookups_after_a_restart_answer_for_the_new_daemon_even_racing_a_handshake() {
    require_root();
    let t = Topology::pair().expect("topology");
    let client_d = Daemon::start(&t.client, &options(7021)).expect("client daemon");
    let server_d = Daemon::start(&t.server, &options(7021)).expect("server daemon");
    let to = SocketAddr::new(t.server_addrs.ip(false), 7021);
    echo_server(listen(&t.server, to.ip(), 7021));

    let mut old = connect(&t.client, to);
    old.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    old.read_exact(&mut buf).expect("echo");
    let (old_local, old_remote) = (
        old.local_addr().expect("local"),
        old.peer_addr().expect("peer"),
    );
    let old_id = settled_id(&server_d, old_remote, old_local);
    assert_eq!(old_id, settled_id(&client_d, old_local, old_remote));

    let server_d = server_d
        .restart(&t.server, &options(7021))
        .expect("restart the server's daemon");
    // The old daemon aborted the connection on its way out; the new one
    // never saw it and must not answer with its session.
    let gone = server_d
        .lookup(old_remote, old_local, 0)
        .expect("lookup after restart");
    assert_eq!(gone["state"], "unknown", "{gone}");

    // Asked about at once, before any data: the key exchange may still be
    // under way, and the wait must end with its outcome.
    let new = connect(&t.client, to);
    let (local, remote) = (
        new.local_addr().expect("local"),
        new.peer_addr().expect("peer"),
    );
    let raced = server_d.lookup(remote, local, 5000).expect("racing lookup");
    let new_id = session_id(&raced);
    assert_ne!(new_id, old_id, "the new daemon reported the old session");
    assert_eq!(new_id, settled_id(&server_d, remote, local));
    assert_eq!(new_id, settled_id(&client_d, local, remote));
    drop(old);
}

#[test]
fn a_control_group_member_reads_a_settled_session_and_an_outsider_reads_nothing() {
    require_root();
    use std::os::unix::fs::PermissionsExt;
    let t = Topology::pair().expect("topology");
    let client_d = Daemon::start(
        &t.client,
        &options(7022).arg("--control-group").arg("nogroup"),
    )
    .expect("client daemon");
    let _server_d = Daemon::start(&t.server, &options(7022)).expect("server daemon");
    let to = SocketAddr::new(t.server_addrs.ip(false), 7022);
    echo_server(listen(&t.server, to.ip(), 7022));
    let mut c = connect(&t.client, to);
    c.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).expect("echo");
    let (local, remote) = (c.local_addr().expect("local"), c.peer_addr().expect("peer"));
    let id = settled_id(&client_d, local, remote);

    let sock = client_d.control_socket();
    if let Some(dir) = sock.parent() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    // Both paths to the sessions: the socket, and the table beside it
    // (read-only for members: only root changes anything).
    let script = r#"
import socket, sys
table = sys.argv[1].rsplit(".", 1)[0] + ".sessions"
try:
    with open(table, "rb") as f:
        head = f.read(8)
    table_read = head.decode("latin-1")
except PermissionError:
    table_read = "denied"
try:
    open(table, "r+b")
    table_write = "allowed"
except PermissionError:
    table_write = "denied"
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("denied", table_read, table_write)
    sys.exit(0)
s.sendall(('{"v":1,"op":"lookup","local":"%s","remote":"%s"}\n' % (sys.argv[2], sys.argv[3])).encode())
print(s.makefile().readline().strip(), table_read, table_write)
"#;
    let run_as = |gid: u32| {
        let out = std::process::Command::new("/usr/bin/python3")
            .args(["-c", script])
            .arg(sock)
            .arg(local.to_string())
            .arg(remote.to_string())
            .uid(65534)
            .gid(gid)
            .output()
            .expect("run python3 as nobody");
        assert!(
            out.status.success(),
            "stderr {:?}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let member = run_as(65534);
    let (answer, table) = member.rsplit_once('}').expect("an answer");
    let answer: Value = serde_json::from_str(&format!("{answer}}}")).expect("JSON answer");
    assert_eq!(session_id(&answer), id, "{member}");
    assert_eq!(table.trim(), "tcpcTBL1 denied", "member's table access");
    // Group 1 (daemon) is neither root's nor the control group.
    assert_eq!(run_as(1), "denied denied denied");
}
