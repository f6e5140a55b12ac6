//! The Rust API against a fake control socket: every answer state, broken
//! answers, a silent daemon and no daemon at all.

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::fake_daemon::{
    EXAMPLE_ID, FakeDaemon, Reply, list_answer, state_answer, tcpcrypt_answer, temp_dir,
};
use tcpcrypt::{Aead, Client, Error, Lookup, Phase, ProtocolError, Role, Tep};

/// Generous: these bounds catch a call that ignores its limit, not slowness.
const SLACK: Duration = Duration::from_secs(3);

fn client(fake: &FakeDaemon) -> Client {
    Client::with_control_path(fake.path()).timeout(Duration::from_secs(5))
}

fn pair() -> (SocketAddr, SocketAddr) {
    (
        "10.0.0.2:80".parse().expect("literal"),
        "10.0.0.1:40312".parse().expect("literal"),
    )
}

fn lookup_with(fake: &FakeDaemon) -> Result<Lookup, Error> {
    let (local, remote) = pair();
    client(fake).lookup_addrs(local, remote)
}

fn connected_pair() -> (TcpListener, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let stream = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    (listener, stream)
}

#[test]
fn encrypted_answer_gives_the_whole_session() {
    let fake = FakeDaemon::always(tcpcrypt_answer(EXAMPLE_ID, "A"));
    let Lookup::Tcpcrypt(s) = lookup_with(&fake).expect("lookup") else {
        panic!("expected an encrypted connection");
    };
    assert_eq!(s.session_id.to_hex(), EXAMPLE_ID);
    assert_eq!(s.role, Role::A);
    assert_eq!(s.tep, Tep::EcdheCurve25519);
    assert_eq!(s.aead, Aead::Aes128Gcm);
    assert!(!s.resumed);
    assert!(s.peer_app_aware);
}

#[test]
fn plain_answer_reads_as_plain() {
    let fake = FakeDaemon::always(r#"{"v":1,"ok":true,"state":"plain","reason":"no ENO"}"#);
    assert_eq!(
        lookup_with(&fake).expect("lookup"),
        Lookup::Plain {
            reason: "no ENO".into()
        }
    );
}

#[test]
fn pending_answer_reads_as_pending() {
    let fake = FakeDaemon::always(state_answer("pending"));
    assert_eq!(lookup_with(&fake).expect("lookup"), Lookup::Pending);
}

#[test]
fn unknown_answer_reads_as_unknown() {
    let fake = FakeDaemon::always(state_answer("unknown"));
    assert_eq!(lookup_with(&fake).expect("lookup"), Lookup::Unknown);
}

#[test]
fn lookup_sends_the_documented_request() {
    let fake = FakeDaemon::always(state_answer("unknown"));
    lookup_with(&fake).expect("lookup");
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let expected: Value = serde_json::from_str(
        r#"{"v":1,"op":"lookup","local":"10.0.0.2:80","remote":"10.0.0.1:40312"}"#,
    )
    .expect("json");
    assert_eq!(requests[0], expected);
}

#[test]
fn lookup_wait_is_sent_as_wait_ms() {
    let fake = FakeDaemon::always(state_answer("pending"));
    let (local, remote) = pair();
    client(&fake)
        .lookup_addrs_wait(local, remote, Duration::from_millis(750))
        .expect("lookup");
    assert_eq!(fake.requests()[0]["wait_ms"], 750);
}

#[test]
fn lookup_by_stream_sends_the_sockets_own_addresses() {
    let fake = FakeDaemon::always(state_answer("unknown"));
    let (listener, stream) = connected_pair();
    client(&fake).lookup_fd(&stream).expect("lookup");
    let request = &fake.requests()[0];
    assert_eq!(
        request["local"],
        stream.local_addr().expect("local").to_string()
    );
    assert_eq!(
        request["remote"],
        listener.local_addr().expect("addr").to_string()
    );
}

#[test]
fn lookup_of_accepted_socket_sees_the_server_side() {
    let fake = FakeDaemon::always(state_answer("unknown"));
    let (listener, stream) = connected_pair();
    let (accepted, _) = listener.accept().expect("accept");
    client(&fake).lookup_fd(&accepted).expect("lookup");
    let request = &fake.requests()[0];
    assert_eq!(
        request["local"],
        listener.local_addr().expect("addr").to_string()
    );
    assert_eq!(
        request["remote"],
        stream.local_addr().expect("local").to_string()
    );
}

#[test]
fn lookup_of_ipv6_stream_uses_brackets() {
    let Ok(listener) = TcpListener::bind("[::1]:0") else {
        // No IPv6 loopback here: nothing to check.
        return;
    };
    let stream = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let fake = FakeDaemon::always(state_answer("unknown"));
    client(&fake).lookup_fd(&stream).expect("lookup");
    let local = fake.requests()[0]["local"]
        .as_str()
        .expect("string")
        .to_string();
    assert!(local.starts_with("[::1]:"), "{local}");
}

#[test]
fn lookup_of_ipv4_mapped_stream_sends_ipv4() {
    let Ok(listener) = TcpListener::bind("[::]:0") else {
        return;
    };
    let port = listener.local_addr().expect("addr").port();
    let stream = TcpStream::connect(("::ffff:127.0.0.1", port)).expect("connect");
    let fake = FakeDaemon::always(state_answer("unknown"));
    client(&fake).lookup_fd(&stream).expect("lookup");
    assert_eq!(fake.requests()[0]["remote"], format!("127.0.0.1:{port}"));
}

#[test]
fn lookup_of_udp_socket_is_refused_before_asking() {
    let fake = FakeDaemon::always(state_answer("unknown"));
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    assert!(matches!(
        client(&fake).lookup_fd(&udp),
        Err(Error::NotTcp { .. })
    ));
    assert!(fake.requests().is_empty());
}

#[test]
fn daemon_error_answer_is_reported_with_its_message() {
    let fake =
        FakeDaemon::always(r#"{"v":1,"ok":false,"error":"internal","message":"table locked"}"#);
    let err = lookup_with(&fake).expect_err("daemon error");
    assert!(matches!(err, Error::Daemon { .. }));
    assert!(err.to_string().contains("table locked"), "{err}");
}

#[test]
fn non_json_answer_is_a_protocol_error() {
    let fake = FakeDaemon::always("HTTP/1.1 400 Bad Request");
    assert!(matches!(
        lookup_with(&fake),
        Err(Error::Protocol(ProtocolError::NotJson(_)))
    ));
}

#[test]
fn answer_cut_off_before_its_newline_is_a_protocol_error() {
    let fake = FakeDaemon::start(|_| Reply::Bytes(br#"{"v":1,"ok":true,"sta"#.to_vec()));
    assert!(matches!(
        lookup_with(&fake),
        Err(Error::Protocol(ProtocolError::Truncated))
    ));
}

#[test]
fn connection_closed_without_answer_is_a_protocol_error() {
    let fake = FakeDaemon::start(|_| Reply::Close);
    assert!(matches!(
        lookup_with(&fake),
        Err(Error::Protocol(ProtocolError::Truncated))
    ));
}

#[test]
fn endless_answer_line_is_refused() {
    let fake = FakeDaemon::start(|_| Reply::Bytes(vec![b'x'; 200 * 1024]));
    assert!(matches!(
        lookup_with(&fake),
        Err(Error::Protocol(ProtocolError::TooLong { .. }))
    ));
}

#[test]
fn answer_with_missing_field_names_it() {
    let answer = tcpcrypt_answer(EXAMPLE_ID, "A").replace(r#","aead":"AEAD_AES_128_GCM""#, "");
    let fake = FakeDaemon::always(answer);
    let err = lookup_with(&fake).expect_err("missing aead");
    assert!(err.to_string().contains("aead"), "{err}");
}

#[test]
fn silent_daemon_times_out_within_the_limit() {
    let fake = FakeDaemon::start(|_| Reply::Silence);
    let limit = Duration::from_millis(300);
    let (local, remote) = pair();
    let start = Instant::now();
    let result = Client::with_control_path(fake.path())
        .timeout(limit)
        .lookup_addrs(local, remote);
    let elapsed = start.elapsed();
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    assert!(elapsed >= limit, "returned early: {elapsed:?}");
    assert!(elapsed < limit + SLACK, "took {elapsed:?}");
}

#[test]
fn silent_daemon_bounds_a_waiting_lookup_by_wait_plus_timeout() {
    let fake = FakeDaemon::start(|_| Reply::Silence);
    let limit = Duration::from_millis(200);
    let wait = Duration::from_millis(300);
    let (local, remote) = pair();
    let start = Instant::now();
    let result = Client::with_control_path(fake.path())
        .timeout(limit)
        .lookup_addrs_wait(local, remote, wait);
    let elapsed = start.elapsed();
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    assert!(elapsed >= limit + wait, "returned early: {elapsed:?}");
    assert!(elapsed < limit + wait + SLACK, "took {elapsed:?}");
}

#[test]
fn silent_daemon_times_out_list_and_version() {
    let fake = FakeDaemon::start(|_| Reply::Silence);
    let c = Client::with_control_path(fake.path()).timeout(Duration::from_millis(200));
    let start = Instant::now();
    assert!(matches!(c.list(), Err(Error::Timeout { .. })));
    assert!(matches!(c.version(), Err(Error::Timeout { .. })));
    assert!(start.elapsed() < Duration::from_millis(400) + SLACK);
}

#[test]
fn missing_socket_means_daemon_not_running() {
    let dir = temp_dir("nodaemon");
    let c = Client::with_control_path(dir.join("control.sock"));
    let (local, remote) = pair();
    let err = c.lookup_addrs(local, remote).expect_err("no daemon");
    assert!(matches!(err, Error::DaemonNotRunning { .. }), "{err:?}");
    assert!(err.to_string().contains("not running"), "{err}");
    assert_eq!(err.errno(), libc::ENOENT);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn socket_nobody_listens_on_means_daemon_not_running() {
    let dir = temp_dir("stale");
    let path = dir.join("control.sock");
    drop(UnixListener::bind(&path).expect("bind"));
    let (local, remote) = pair();
    let err = Client::with_control_path(&path)
        .lookup_addrs(local, remote)
        .expect_err("nobody listening");
    assert!(matches!(err, Error::DaemonNotRunning { .. }), "{err:?}");
    assert_eq!(err.errno(), libc::ECONNREFUSED);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn every_rust_entry_point_fails_fast_without_a_daemon() {
    let dir = temp_dir("nodaemon-all");
    let limit = Duration::from_millis(300);
    let c = Client::with_control_path(dir.join("control.sock")).timeout(limit);
    let (_listener, stream) = connected_pair();
    let (local, remote) = pair();
    type Call<'a> = (&'static str, Box<dyn Fn() -> Result<(), Error> + 'a>);
    let calls: Vec<Call> = vec![
        (
            "lookup_addrs",
            Box::new(|| c.lookup_addrs(local, remote).map(drop)),
        ),
        (
            "lookup_addrs_wait",
            Box::new(|| c.lookup_addrs_wait(local, remote, limit).map(drop)),
        ),
        ("lookup_fd", Box::new(|| c.lookup_fd(&stream).map(drop))),
        (
            "lookup_fd_wait",
            Box::new(|| c.lookup_fd_wait(&stream, limit).map(drop)),
        ),
        ("list", Box::new(|| c.list().map(drop))),
        ("version", Box::new(|| c.version().map(drop))),
    ];
    for (name, call) in calls {
        let start = Instant::now();
        let result = call();
        let elapsed = start.elapsed();
        assert!(
            matches!(result, Err(Error::DaemonNotRunning { .. })),
            "{name}: {result:?}"
        );
        assert!(elapsed < 2 * limit + SLACK, "{name} took {elapsed:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn list_of_ten_thousand_connections_decodes_completely() {
    let fake = FakeDaemon::always(list_answer(10_000));
    let list = client(&fake).list().expect("list");
    assert_eq!(list.len(), 10_000);
    assert_eq!(
        list.iter()
            .filter(|c| c.lookup.state_name() == "plain")
            .count(),
        3_333
    );
    let last = &list[9_999];
    assert_eq!(last.local.to_string(), "10.0.39.250:80");
    assert_eq!(last.phase, Phase::Established);
    assert_eq!(last.bytes_received, 3 * 9_999);
    assert_eq!(fake.requests()[0]["op"], "list");
}

#[test]
fn version_answer_is_returned() {
    let fake = FakeDaemon::always(r#"{"v":1,"ok":true,"daemon":"tcpcryptd 9.9","supported":[1]}"#);
    let v = client(&fake).version().expect("version");
    assert_eq!(v.daemon, "tcpcryptd 9.9");
    assert_eq!(fake.requests()[0]["op"], "version");
}

/// A fake that answers `flush_resumption` as done and everything else with
/// an encrypted session.
fn session_or_flushed(request: &Value) -> Reply {
    if request["op"] == "flush_resumption" {
        Reply::Line(r#"{"v":1,"ok":true,"flushed":3}"#.to_owned())
    } else {
        Reply::Line(tcpcrypt_answer(EXAMPLE_ID, "B"))
    }
}

#[test]
fn lookups_in_a_row_share_one_connection() {
    let fake = FakeDaemon::start(session_or_flushed);
    for _ in 0..20 {
        assert!(matches!(lookup_with(&fake), Ok(Lookup::Tcpcrypt(_))));
    }
    assert_eq!(fake.requests().len(), 20);
    // One, unless the pool's lock was busy (other tests run in parallel)
    // at the moment a connection went back, which then connects anew.
    assert!(
        fake.connections() <= 3,
        "{} connections",
        fake.connections()
    );
}

#[test]
fn state_changes_open_a_connection_of_their_own() {
    let fake = FakeDaemon::start(session_or_flushed);
    // Each flush opens a connection, to be judged by the caller's
    // credentials at the time, even with a pooled one idle.
    for _ in 0..3 {
        lookup_with(&fake).expect("lookup");
        let before = fake.connections();
        assert_eq!(client(&fake).flush_resumption().expect("flush"), 3);
        assert_eq!(fake.connections(), before + 1);
    }
    assert_eq!(fake.requests().len(), 6);
}

#[test]
fn a_restarted_daemon_is_reached_on_a_new_connection() {
    let old = FakeDaemon::start(|_| Reply::Line(tcpcrypt_answer(EXAMPLE_ID, "A")));
    let dir = old.dir().to_path_buf();
    assert!(matches!(lookup_with(&old), Ok(Lookup::Tcpcrypt(_))));
    drop(old);
    let new = FakeDaemon::start_in(dir, |_| Reply::Line(state_answer("unknown")));
    assert_eq!(lookup_with(&new).expect("lookup"), Lookup::Unknown);
    assert_eq!(new.connections(), 1);
}

#[test]
fn a_connection_closed_under_a_request_is_retried_once_on_a_new_one() {
    // The pool is the process's, shared with the tests running beside this
    // one, and a caller that finds its lock taken connects afresh: then the
    // second request goes out on a new connection, gets the close meant
    // for the pooled one, and shows nothing about the retry. Such a round
    // (two connections, two requests) is run again.
    for _ in 0..20 {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        // The second request, on the pooled connection, is dropped
        // unanswered, as when the daemon's idle timeout fires just as it
        // arrives.
        let fake = FakeDaemon::start(move |_| {
            match calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                1 => Reply::Close,
                _ => Reply::Line(state_answer("pending")),
            }
        });
        assert_eq!(lookup_with(&fake).expect("first"), Lookup::Pending);
        let second = lookup_with(&fake);
        if second.is_err() && fake.connections() == 2 && fake.requests().len() == 2 {
            continue;
        }
        assert_eq!(second.expect("retried"), Lookup::Pending);
        assert_eq!(fake.requests().len(), 3);
        assert_eq!(fake.connections(), 2);
        return;
    }
    panic!("the pool was never free for the second request in 20 rounds");
}

#[test]
fn a_daemon_gone_after_a_pooled_lookup_is_reported_at_once() {
    let fake = FakeDaemon::always(state_answer("unknown"));
    let c = client(&fake);
    let (local, remote) = pair();
    c.lookup_addrs(local, remote).expect("lookup");
    drop(fake);
    let start = Instant::now();
    let err = c.lookup_addrs(local, remote).expect_err("no daemon");
    assert!(matches!(err, Error::DaemonNotRunning { .. }), "{err}");
    assert!(start.elapsed() < SLACK, "took {:?}", start.elapsed());
}

#[test]
fn a_hung_daemon_on_a_pooled_connection_times_out_within_the_limit() {
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let fake = FakeDaemon::start(move |_| {
        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            Reply::Line(state_answer("unknown"))
        } else {
            Reply::Silence
        }
    });
    let limit = Duration::from_millis(300);
    let c = Client::with_control_path(fake.path()).timeout(limit);
    let (local, remote) = pair();
    c.lookup_addrs(local, remote).expect("lookup");
    let start = Instant::now();
    let err = c.lookup_addrs(local, remote).expect_err("silent daemon");
    let took = start.elapsed();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(took >= limit && took < limit + SLACK, "took {took:?}");
    // The connection that timed out is not lent again: its late answer
    // would be taken for the next one.
    drop(fake);
    assert!(matches!(
        c.lookup_addrs(local, remote),
        Err(Error::DaemonNotRunning { .. })
    ));
}
