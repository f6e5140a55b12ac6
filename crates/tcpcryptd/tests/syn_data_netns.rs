//! Data on SYNs (RFC 8547 section 4.7) through the real daemon and real
//! kernels that use TCP Fast Open. The daemon is transparent, so a kernel
//! may put data on a SYN: ours must then go out without ENO, and a peer's
//! SYN that carries ENO must reach our kernel without its data, so that
//! the SYN-ACK acknowledges the SYN alone. Needs root.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::FromRawFd;
use std::time::Duration;

use tcpcrypt_engine::wire::TcpOption;
use tcpcrypt_testnet::forge::{self, RawSender, Sniffer};
use tcpcrypt_testnet::{Capture, Daemon, DaemonOptions, Netns, Topology, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_tcpcryptd");
const CURVE25519: u8 = 0x23;
const ENO: u8 = 69;
const FAST_OPEN: u8 = 34;
/// A TEP identifier no RFC assigns: negotiation fails on it.
const UNKNOWN_TEP: u8 = 0x30;
/// net.ipv4.tcp_fastopen: client on (0x1), server on (0x2), on every
/// listener (0x400), and data accepted on a SYN without a cookie (0x200),
/// the most accepting kernel there is.
const FAST_OPEN_EVERYWHERE: &str = "1539";

fn options(port: u16) -> DaemonOptions {
    DaemonOptions::new(BIN)
        .arg("--ports")
        .arg(port.to_string())
        .arg("--cleanup-delay")
        .arg("2")
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("IPv4 expected"),
    }
}

fn listen(ns: &Netns, at: SocketAddr) -> TcpListener {
    ns.run(|| TcpListener::bind(at)).expect("listen")
}

/// The acknowledgment number of the server's SYN-ACK to a forged SYN from
/// client port `port` carrying `options` (after the usual ones) and data.
fn ack_of_syn_with_data(t: &Topology, to: SocketAddr, port: u16, options: Vec<TcpOption>) -> u32 {
    let client = SocketAddrV4::new(
        match t.client_addrs.ip(false) {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => unreachable!(),
        },
        port,
    );
    let sniffer = Sniffer::start(&t.client, SocketAddr::V4(client), to).expect("sniffer");
    let mut raw = RawSender::open(&t.client).expect("raw socket");
    let mut syn = forge::syn(client, v4(to), SEQ, false);
    syn.tcp.options.extend(options);
    syn.tcp.payload = DATA.into();
    raw.send(&syn).expect("send SYN");
    sniffer
        .wait_for(to, 1, Duration::from_secs(5))
        .expect("the server answered the SYN")
        .ack
}

const SEQ: u32 = 0x1234_5678;
const DATA: &[u8] = b"early request";

#[test]
fn a_peers_syn_data_with_eno_never_reaches_the_kernel_that_would_take_it() {
    require_root();
    let t = Topology::pair().expect("topology");
    t.server
        .sysctl("net.ipv4.tcp_fastopen", FAST_OPEN_EVERYWHERE)
        .expect("sysctl");
    let port = 7301;
    let _daemon = Daemon::start(&t.server, &options(port)).expect("daemon");
    let to = SocketAddr::new(t.server_addrs.ip(false), port);
    let _listener = listen(&t.server, to);
    let only_syn = SEQ.wrapping_add(1);
    let with_data = only_syn.wrapping_add(DATA.len() as u32);
    // Without ENO the kernel takes the data: the setup can show a discard.
    assert_eq!(ack_of_syn_with_data(&t, to, 41001, vec![]), with_data);
    let eno = |d: &[u8]| forge::eno_option(d);
    // ENO negotiated on the SYN (the client never completes it).
    assert_eq!(
        ack_of_syn_with_data(&t, to, 41002, vec![eno(&[CURVE25519])]),
        only_syn
    );
    // ENO failing on the SYN.
    assert_eq!(
        ack_of_syn_with_data(&t, to, 41003, vec![eno(&[UNKNOWN_TEP])]),
        only_syn
    );
    // Two ENO options: ignored for negotiation, the data still goes.
    let two = vec![eno(&[CURVE25519]), eno(&[CURVE25519])];
    assert_eq!(ack_of_syn_with_data(&t, to, 41004, two), only_syn);
}

/// Connects with TCP_FASTOPEN_CONNECT, so the kernel puts the first write
/// on the SYN once it holds a cookie for the server.
fn fast_open_connect(ns: &Netns, to: SocketAddr) -> TcpStream {
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 expected")
    };
    ns.run(|| {
        // SAFETY: plain socket calls on a descriptor this function owns;
        // the sockaddr and option value outlive the calls that read them.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let stream = TcpStream::from_raw_fd(fd);
            let one: libc::c_int = 1;
            if libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_FASTOPEN_CONNECT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: to.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*to.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            if libc::connect(
                fd,
                (&sin as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(stream)
        }
    })
    .expect("fast open connect")
}

/// Four connections from a client whose kernel runs TCP Fast Open as
/// `client_sysctl` says, to a server that takes data on any SYN, both with
/// the daemon. Every request must come back, no SYN may carry ENO beside
/// data or a Fast Open option, and a connection whose SYN carried either
/// is plain on both ends. Returns how many SYNs carried data.
fn fast_open_through_both_daemons(client_sysctl: &str, port: u16) -> usize {
    require_root();
    let t = Topology::pair().expect("topology");
    t.client
        .sysctl("net.ipv4.tcp_fastopen", client_sysctl)
        .expect("sysctl");
    t.server
        .sysctl("net.ipv4.tcp_fastopen", FAST_OPEN_EVERYWHERE)
        .expect("sysctl");
    let (client_d, server_d) = t.start_daemons(&options(port)).expect("daemons");
    let to = SocketAddr::new(t.server_addrs.ip(false), port);
    let listener = listen(&t.server, to);
    let capture = Capture::start(&t.server, "veth0").expect("capture");
    const CONNECTIONS: usize = 4;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        for _ in 0..CONNECTIONS {
            let (mut s, _) = listener.accept()?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf)?;
            s.write_all(&buf[..n])?;
        }
        Ok(())
    });
    // The first connection asks for a cookie; later ones may send their
    // request on the SYN, as the kernel decides.
    let mut states = HashMap::new();
    for i in 0..CONNECTIONS {
        let mut c = fast_open_connect(&t.client, to);
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let request = format!("request {i}");
        c.write_all(request.as_bytes()).expect("write");
        let mut echo = vec![0u8; request.len()];
        c.read_exact(&mut echo).expect("echo");
        assert_eq!(echo, request.as_bytes(), "connection {i}");
        let local = c.local_addr().expect("local");
        let a = client_d.lookup(local, to, 2000).expect("client lookup");
        let b = server_d.lookup(to, local, 2000).expect("server lookup");
        assert_eq!(a["state"], b["state"], "connection {i}: {a} / {b}");
        states.insert(local.port(), a["state"].as_str().unwrap_or("").to_string());
    }
    server.join().expect("server thread").expect("server");
    let (mut fast_open_syns, mut data_syns) = (0, 0);
    for f in capture.finish() {
        let (Some(tcp), Some(flags)) = (f.tcp(), f.tcp_flags()) else {
            continue;
        };
        let src_port = u16::from_be_bytes([tcp[0], tcp[1]]);
        if flags & 0x12 != 0x02 || !states.contains_key(&src_port) {
            continue;
        }
        let data = f.tcp_payload().map_or(0, <[u8]>::len);
        let tfo = f.has_tcp_option(FAST_OPEN);
        let eno = f.has_tcp_option(ENO);
        eprintln!("client SYN from port {src_port}: ENO {eno}, Fast Open {tfo}, {data} data bytes");
        assert!(
            !(eno && (tfo || data > 0)),
            "ENO on a SYN with data or Fast Open"
        );
        if tfo || data > 0 {
            fast_open_syns += 1;
            assert_eq!(states[&src_port], "plain", "port {src_port}");
        }
        data_syns += usize::from(data > 0);
    }
    assert!(fast_open_syns > 0, "the clients used Fast Open");
    data_syns
}

#[test]
fn fast_open_cookie_requests_through_both_daemons_keep_every_byte() {
    fast_open_through_both_daemons(FAST_OPEN_EVERYWHERE, 7302);
}

#[test]
fn fast_open_data_on_every_syn_through_both_daemons_keeps_every_byte() {
    // 0x1 | 0x4: the client sends data on each SYN, without a cookie.
    let data_syns = fast_open_through_both_daemons("5", 7303);
    assert!(data_syns > 0, "the client put data on its SYNs");
}
