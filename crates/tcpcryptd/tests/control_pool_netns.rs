//! The client library's two quick paths against the real daemon: pooled
//! control connections and the published session table. Both must follow
//! a daemon restart by themselves; a daemon that hangs or dies must turn
//! into an error within the caller's time limit for anything the table
//! cannot answer, and a table whose daemon died must not be believed.
//! Needs root (network namespaces).
//!
//! A file of its own because the pool is one per process: no other test's
//! lookups share it here.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use tcpcrypt::{Client, Error, Lookup, SessionId};
use tcpcrypt_testnet::{Daemon, DaemonOptions, Netns, Topology, require_root, wait_stopped};

const BIN: &str = env!("CARGO_BIN_EXE_tcpcryptd");
const PORT: u16 = 7050;
/// The caller's limit for each call in this test.
const LIMIT: Duration = Duration::from_millis(500);
/// Room for a loaded machine on top of a limit; catches a call that
/// ignores its limit, not one that is slow.
const SLACK: Duration = Duration::from_secs(2);

fn options() -> DaemonOptions {
    DaemonOptions::new(BIN)
        .arg("--ports")
        .arg(PORT.to_string())
        .arg("--cleanup-delay")
        .arg("2")
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

fn connect(ns: &Netns, to: SocketAddr) -> TcpStream {
    let s = ns
        .run(|| TcpStream::connect_timeout(&to, Duration::from_secs(10)))
        .expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s
}

/// The server side's view of `c`: (local, remote) as its daemon names it.
fn server_view(c: &TcpStream) -> (SocketAddr, SocketAddr) {
    (c.peer_addr().expect("peer"), c.local_addr().expect("local"))
}

fn session(answer: Result<Lookup, Error>) -> SessionId {
    match answer {
        Ok(Lookup::Tcpcrypt(s)) => s.session_id,
        other => panic!("not a tcpcrypt session: {other:?}"),
    }
}

fn signal(d: &Daemon, sig: libc::c_int) {
    let pid = d.pid().expect("daemon pid") as libc::pid_t;
    // SAFETY: kill(2) with a pid of a child this test started.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

#[test]
fn pooled_and_table_lookups_follow_a_restart_and_fail_within_their_limit_when_the_daemon_hangs_or_dies()
 {
    require_root();
    let t = Topology::pair().expect("topology");
    let _client_d = Daemon::start(&t.client, &options()).expect("client daemon");
    let server_d = Daemon::start(&t.server, &options()).expect("server daemon");
    let to = SocketAddr::new(t.server_addrs.ip(false), PORT);
    echo_server(t.server.run(|| TcpListener::bind(to)).expect("listen"));
    let client = Client::with_control_path(server_d.control_socket()).timeout(LIMIT);
    // The same lookups over the socket alone (the pool).
    let asking = client.clone().read_table(false);
    let table = tcpcrypt_control::table::path_for(server_d.control_socket());

    let mut old = connect(&t.client, to);
    old.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    old.read_exact(&mut buf).expect("echo");
    let (local, remote) = server_view(&old);
    let old_id = session(asking.lookup_addrs_wait(local, remote, Duration::from_secs(5)));
    // Asked again on the connection the first lookup left in the pool.
    assert_eq!(session(asking.lookup_addrs(local, remote)), old_id);
    // And read from the table, which the daemon publishes for its group.
    assert_eq!(session(client.lookup_addrs(local, remote)), old_id);
    let meta = std::fs::metadata(&table).expect("session table published");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o640
    );

    // The pooled connection went with the old daemon; the next lookup must
    // reach the new one, which never saw the old connection.
    let server_d = server_d.restart(&t.server, &options()).expect("restart");
    for c in [&asking, &client] {
        assert_eq!(
            c.lookup_addrs(local, remote).expect("lookup after restart"),
            Lookup::Unknown
        );
    }
    // A lookup racing the handshake of a new connection ends with its
    // outcome, on the connection pooled since the restart.
    let new = connect(&t.client, to);
    let (local, remote) = server_view(&new);
    let new_id = session(client.lookup_addrs_wait(local, remote, Duration::from_secs(5)));
    assert_ne!(new_id, old_id, "the new daemon reported the old session");
    assert_eq!(session(asking.lookup_addrs(local, remote)), new_id);
    assert_eq!(session(client.lookup_addrs(local, remote)), new_id);

    // Stopped, the daemon keeps the pooled connection open but never
    // answers: the caller's limit must end the call. The table still
    // holds what was settled (and is still true: the daemon lives), so
    // only what it lacks goes to the socket and times out.
    signal(&server_d, libc::SIGSTOP);
    assert!(
        wait_stopped(server_d.pid().expect("daemon pid"), Duration::from_secs(5)),
        "the daemon did not stop"
    );
    let from_table = client.lookup_addrs(local, remote);
    let start = Instant::now();
    let hung = asking.lookup_addrs(local, remote);
    let took = start.elapsed();
    let unsettled = client.lookup_addrs(remote, local);
    signal(&server_d, libc::SIGCONT);
    assert_eq!(
        session(from_table),
        new_id,
        "the table needs no daemon thread"
    );
    assert!(matches!(hung, Err(Error::Timeout { .. })), "{hung:?}");
    assert!(
        matches!(unsettled, Err(Error::Timeout { .. })),
        "{unsettled:?}"
    );
    assert!(
        took < LIMIT + SLACK,
        "a hung daemon held the caller {took:?}"
    );
    eprintln!("lookup against a stopped daemon failed after {took:?} (limit {LIMIT:?})");
    // Running again, it answers on a fresh connection: the one that timed
    // out may still carry the late answer and is not reused.
    assert_eq!(session(asking.lookup_addrs(local, remote)), new_id);

    // Killed outright, the daemon leaves its table file behind, but not
    // the lock that vouches for it.
    let mut server_d = server_d;
    server_d.kill9();
    assert!(table.exists(), "a killed daemon cannot remove its table");
    for c in [&client, &asking] {
        let start = Instant::now();
        let gone = c.lookup_addrs(local, remote);
        let took = start.elapsed();
        assert!(
            matches!(gone, Err(Error::DaemonNotRunning { .. })),
            "{gone:?}"
        );
        assert!(
            took < LIMIT + SLACK,
            "a dead daemon held the caller {took:?}"
        );
    }
    drop((old, new));
}
