//! Per-socket policies with real daemons between two network namespaces:
//! an application registers a policy for its socket through libtcpcrypt
//! (the Rust API, or the old C calls) before connecting or once listening.
//! For the resumption controls (RFC 8548 section 3.5) the wire shows
//! whether its connection resumed; for the application-aware bit (RFC 8547
//! section 4.2) the peer's daemon reports `peer_app_aware`. Needs root.
//! Only one test sets the old calls' process-wide control path.

use std::ffi::{CString, c_int, c_uint};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tcpcrypt::capi::{
    TCP_CRYPT_NOCACHE, TCP_CRYPT_RESUME, TCPCRYPT_PARAM_CTLPATH, tcpcrypt_setparam,
    tcpcrypt_setsockopt,
};
use tcpcrypt_testnet::{Capture, Daemon, DaemonOptions, Netns, Topology, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_tcpcryptd");

fn options(port: u16) -> DaemonOptions {
    DaemonOptions::new(BIN).arg("--ports").arg(port.to_string())
}

fn echo_server(ns: &Netns, ip: IpAddr, port: u16) {
    let listener = ns
        .run(|| TcpListener::bind(SocketAddr::new(ip, port)))
        .expect("listen");
    serve_echo(listener);
}

fn serve_echo(listener: TcpListener) {
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

/// A TCP socket in `ns`, not yet connected.
fn socket(ns: &Netns) -> OwnedFd {
    ns.run(|| {
        // SAFETY: plain socket(2); the descriptor is owned from here on.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: fd is a fresh descriptor nobody else owns.
        unsafe { OwnedFd::from_raw_fd(fd) }
    })
}

fn connect_fd(fd: OwnedFd, to: SocketAddr) -> TcpStream {
    let SocketAddr::V4(v4) = to else {
        panic!("IPv4 only here")
    };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sin is a live sockaddr_in of the size passed.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&sin as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
    TcpStream::from(fd)
}

/// How the application registers its policy.
#[derive(Clone, Copy)]
enum Register {
    Nothing,
    /// `Client::set_socket_policy`.
    Rust(tcpcrypt::Policy),
    /// The old C calls: `tcpcrypt_setsockopt` once per option, in order.
    OldCalls(&'static [(c_int, c_int)]),
}

/// What one connection's handshake looked like.
#[derive(Debug)]
struct Outcome {
    resumed: bool,
    /// Segments of this connection that carried payload before any
    /// application data: the Init1/Init2 of a fresh key exchange.
    init_segments: usize,
}

/// Opens one connection from the client namespace (with `policy`
/// registered on its socket first, if any), waits for its session, and
/// counts the payload segments on the wire before the application writes.
fn connection(t: &Topology, client_d: &Daemon, to: SocketAddr, register: Register) -> Outcome {
    let cap = Capture::start(&t.server, "veth0").expect("capture");
    let fd = socket(&t.client);
    match register {
        Register::Nothing => {}
        Register::Rust(policy) => {
            let app = tcpcrypt::Client::with_control_path(client_d.control_socket());
            let local = app.set_socket_policy(&fd, policy).expect("set policy");
            assert_ne!(local.port(), 0);
        }
        Register::OldCalls(calls) => {
            let path = CString::new(client_d.control_socket().as_os_str().as_encoded_bytes())
                .expect("no NUL");
            // SAFETY: a NUL-terminated path that outlives the calls below.
            unsafe { tcpcrypt_setparam(TCPCRYPT_PARAM_CTLPATH, path.as_ptr().cast_mut().cast()) };
            for &(optname, value) in calls {
                let len = size_of::<c_int>() as c_uint;
                // SAFETY: value is a live int of the size passed.
                let rc = unsafe {
                    tcpcrypt_setsockopt(
                        fd.as_raw_fd(),
                        libc::IPPROTO_TCP,
                        optname,
                        (&value as *const c_int).cast(),
                        len,
                    )
                };
                assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
            }
            // SAFETY: NULL restores the default; no other test here uses it.
            unsafe { tcpcrypt_setparam(TCPCRYPT_PARAM_CTLPATH, std::ptr::null_mut()) };
        }
    }
    let c = connect_fd(fd, to);
    let local = c.local_addr().expect("local");
    let answer = client_d
        .lookup(local, c.peer_addr().expect("peer"), 5000)
        .expect("lookup");
    assert_eq!(answer["state"], "tcpcrypt", "{answer}");
    // Let the last handshake segment reach the capture.
    std::thread::sleep(Duration::from_millis(300));
    let frames = cap.finish();
    let port = local.port().to_be_bytes();
    let init_segments = frames
        .iter()
        .filter(|f| {
            f.tcp()
                .is_some_and(|tcp| tcp.get(0..2) == Some(&port) || tcp.get(2..4) == Some(&port))
        })
        .filter(|f| f.tcp_payload().is_some_and(|p| !p.is_empty()))
        .count();
    // The connection still works.
    let mut c = c;
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    c.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).expect("echo");
    assert_eq!(&buf, b"ping");
    Outcome {
        resumed: answer["resumed"] == true,
        init_segments,
    }
}

fn assert_fresh(o: &Outcome, what: &str) {
    assert!(!o.resumed, "{what}: {o:?}");
    assert!(o.init_segments >= 2, "{what}: no Init1/Init2 seen: {o:?}");
}

fn assert_resumed(o: &Outcome, what: &str) {
    assert!(o.resumed, "{what}: {o:?}");
    assert_eq!(
        o.init_segments, 0,
        "{what}: Init messages on the wire: {o:?}"
    );
}

#[test]
fn resumption_follows_the_policy_registered_on_the_client_socket() {
    require_root();
    let port = 7041;
    let t = Topology::pair().expect("topology");
    let cd = Daemon::start(&t.client, &options(port)).expect("client daemon");
    let _sd = Daemon::start(&t.server, &options(port)).expect("server daemon");
    let ip = t.server_addrs.ip(false);
    echo_server(&t.server, ip, port);
    let to = SocketAddr::new(ip, port);

    // Default: the second connection between the hosts resumes.
    assert_fresh(
        &connection(&t, &cd, to, Register::Nothing),
        "first connection",
    );
    assert_resumed(
        &connection(&t, &cd, to, Register::Nothing),
        "second connection",
    );

    // No resumption on this socket: a fresh key exchange although a
    // secret is cached; the next socket, without a policy, resumes again.
    let no_resumption = tcpcrypt::Policy {
        no_resumption: true,
        ..tcpcrypt::Policy::default()
    };
    assert_fresh(
        &connection(&t, &cd, to, Register::Rust(no_resumption)),
        "no_resumption",
    );
    assert_resumed(
        &connection(&t, &cd, to, Register::Nothing),
        "after no_resumption",
    );
}

#[test]
fn a_connection_that_may_not_be_cached_leaves_the_next_nothing_to_resume() {
    require_root();
    let port = 7042;
    let t = Topology::pair().expect("topology");
    let cd = Daemon::start(&t.client, &options(port)).expect("client daemon");
    let _sd = Daemon::start(&t.server, &options(port)).expect("server daemon");
    let ip = t.server_addrs.ip(false);
    echo_server(&t.server, ip, port);
    let to = SocketAddr::new(ip, port);

    // Through the old C calls, as a C program would: no caching, then
    // resumption explicitly allowed, which must keep the first setting.
    let calls: &[(c_int, c_int)] = &[(TCP_CRYPT_NOCACHE, 1), (TCP_CRYPT_RESUME, 1)];
    assert_fresh(
        &connection(&t, &cd, to, Register::OldCalls(calls)),
        "no_cache",
    );
    assert_fresh(
        &connection(&t, &cd, to, Register::Nothing),
        "after no_cache",
    );
    // That one was cached as usual, so resumption itself still works.
    assert_resumed(
        &connection(&t, &cd, to, Register::Nothing),
        "after a cached one",
    );
}

/// Connects from the client namespace (with `policy` registered on the
/// socket first, if any), checks that bytes go both ways, and returns the
/// client daemon's and the server daemon's answers for the connection.
fn exchange(
    t: &Topology,
    cd: &Daemon,
    sd: &Daemon,
    to: SocketAddr,
    policy: Option<tcpcrypt::Policy>,
) -> (serde_json::Value, serde_json::Value) {
    let fd = socket(&t.client);
    if let Some(policy) = policy {
        tcpcrypt::Client::with_control_path(cd.control_socket())
            .set_socket_policy(&fd, policy)
            .expect("client policy");
    }
    let mut c = connect_fd(fd, to);
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    c.write_all(b"are you aware?").expect("write");
    let mut buf = [0u8; 14];
    c.read_exact(&mut buf).expect("echo");
    assert_eq!(&buf, b"are you aware?");
    let (local, remote) = (c.local_addr().expect("local"), c.peer_addr().expect("peer"));
    let client = cd.lookup(local, remote, 5000).expect("client lookup");
    let server = sd.lookup(remote, local, 5000).expect("server lookup");
    (client, server)
}

fn aware(mode: tcpcrypt::AppAware) -> tcpcrypt::Policy {
    tcpcrypt::Policy {
        app_aware: mode,
        ..tcpcrypt::Policy::default()
    }
}

#[test]
fn clients_of_an_app_aware_listener_see_its_a_bit_and_others_do_not() {
    require_root();
    let (aware_port, plain_port) = (7043, 7044);
    let opts = DaemonOptions::new(BIN)
        .arg("--ports")
        .arg(format!("{aware_port},{plain_port}"));
    let t = Topology::pair().expect("topology");
    let cd = Daemon::start(&t.client, &opts).expect("client daemon");
    let sd = Daemon::start(&t.server, &opts).expect("server daemon");
    let ip = t.server_addrs.ip(false);

    // The application-aware server registers its listening socket.
    let listener = t
        .server
        .run(|| TcpListener::bind(SocketAddr::new(ip, aware_port)))
        .expect("listen");
    let registered = tcpcrypt::Client::with_control_path(sd.control_socket())
        .set_socket_policy(&listener, aware(tcpcrypt::AppAware::On))
        .expect("listener policy");
    assert_eq!(registered, SocketAddr::new(ip, aware_port));
    serve_echo(listener);
    echo_server(&t.server, ip, plain_port);
    let (to_aware, to_plain) = (
        SocketAddr::new(ip, aware_port),
        SocketAddr::new(ip, plain_port),
    );

    for round in 0..2 {
        let (client, server) = exchange(&t, &cd, &sd, to_aware, None);
        assert_eq!(client["state"], "tcpcrypt", "round {round}: {client}");
        assert_eq!(client["peer_app_aware"], true, "round {round}: {client}");
        // The client asked for nothing, so the server sees a = 0.
        assert_eq!(server["peer_app_aware"], false, "round {round}: {server}");
        assert_eq!(client["session_id"], server["session_id"]);
    }
    let (client, server) = exchange(&t, &cd, &sd, to_plain, None);
    assert_eq!(client["state"], "tcpcrypt", "{client}");
    assert_eq!(client["peer_app_aware"], false, "{client}");
    assert_eq!(server["peer_app_aware"], false, "{server}");

    // A client socket can say it too; its registration is used up.
    let (client, server) = exchange(&t, &cd, &sd, to_plain, Some(aware(tcpcrypt::AppAware::On)));
    assert_eq!(server["state"], "tcpcrypt", "{server}");
    assert_eq!(server["peer_app_aware"], true, "{server}");
    assert_eq!(client["peer_app_aware"], false, "{client}");
}

#[test]
fn a_mandatory_client_gets_tcpcrypt_only_from_an_app_aware_listener() {
    require_root();
    let (aware_port, plain_port) = (7045, 7046);
    let opts = DaemonOptions::new(BIN)
        .arg("--ports")
        .arg(format!("{aware_port},{plain_port}"));
    let t = Topology::pair().expect("topology");
    let cd = Daemon::start(&t.client, &opts).expect("client daemon");
    let sd = Daemon::start(&t.server, &opts).expect("server daemon");
    let ip = t.server_addrs.ip(false);
    let listener = t
        .server
        .run(|| TcpListener::bind(SocketAddr::new(ip, aware_port)))
        .expect("listen");
    tcpcrypt::Client::with_control_path(sd.control_socket())
        .set_socket_policy(&listener, aware(tcpcrypt::AppAware::On))
        .expect("listener policy");
    serve_echo(listener);
    echo_server(&t.server, ip, plain_port);
    let mandatory = Some(aware(tcpcrypt::AppAware::Mandatory));

    let (client, server) = exchange(&t, &cd, &sd, SocketAddr::new(ip, aware_port), mandatory);
    assert_eq!(client["state"], "tcpcrypt", "{client}");
    assert_eq!(client["peer_app_aware"], true, "{client}");
    assert_eq!(server["peer_app_aware"], true, "{server}");

    // The other listener sends a = 0: both ends fall back to plain TCP,
    // and the bytes still went through (checked inside `exchange`).
    let (client, server) = exchange(&t, &cd, &sd, SocketAddr::new(ip, plain_port), mandatory);
    assert_eq!(client["state"], "plain", "{client}");
    assert!(
        client["reason"]
            .as_str()
            .is_some_and(|r| r.contains("application-aware")),
        "{client}"
    );
    assert_eq!(server["state"], "plain", "{server}");
}
