//! The daemon's I/O pieces against the real kernel, in namespaces: NFQUEUE
//! binding, verdicts and their marks, the checksum flag, injection towards
//! the network and towards the local stack, and the firewall rules. Needs
//! root.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser;
use tcpcrypt_testnet::{Netns, Topology, require_root};
use tcpcryptd::config::{Args, Config};
use tcpcryptd::firewall::{self, Backend};
use tcpcryptd::inject::Injector;
use tcpcryptd::nfqueue::{Hook, NfVerdict, Queue, RecvBatch, VerdictBatch};

const MARK: u32 = 0x7463_7270;

fn poll_readable(fd: i32, ms: i32) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) };
}

/// Runs `handle` on every queued packet until `stop` is set; `handle`
/// returns the verdict and an optional replacement payload.
fn queue_loop(
    ns: &Netns,
    queue: u16,
    stop: Arc<AtomicBool>,
    handle: impl FnMut(Hook, &[u8]) -> (NfVerdict, Option<Vec<u8>>) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    queue_loop_marking(ns, queue, stop, None, handle)
}

/// [`queue_loop`], and when `guarded` is given every accepted packet gets
/// the daemon's verdict mark for a guarded (or not) connection.
fn queue_loop_marking(
    ns: &Netns,
    queue: u16,
    stop: Arc<AtomicBool>,
    guarded: Option<bool>,
    mut handle: impl FnMut(Hook, &[u8]) -> (NfVerdict, Option<Vec<u8>>) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let h = ns.spawn_thread(move || {
        let q = Queue::bind(queue, 1024, 4 << 20).expect("bind queue");
        ready_tx.send(()).expect("ready");
        let mut batch = RecvBatch::new(16);
        let mut verdicts = VerdictBatch::new(queue);
        while !stop.load(Ordering::Relaxed) {
            use std::os::fd::AsRawFd;
            poll_readable(q.as_raw_fd(), 50);
            if q.recv_batch(&mut batch).expect("recv") == 0 {
                continue;
            }
            for d in batch.datagrams() {
                for m in tcpcryptd::nfqueue::parse_datagram(d) {
                    if let tcpcryptd::nfqueue::Message::Packet(p) = m {
                        let (v, payload) = handle(p.hook, p.payload);
                        let mark = guarded.map(|g| firewall::verdict_mark(p.mark, g));
                        q.push_verdict(&mut verdicts, p.id, v, mark, payload.as_deref())
                            .expect("verdict");
                    }
                }
            }
            q.send_verdicts(&mut verdicts).expect("send verdicts");
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("queue bound");
    h
}

/// The rules of a one-thread daemon: these tests read the one queue
/// themselves.
fn config(flags: &[&str]) -> Config {
    let mut v = vec!["tcpcryptd", "--threads", "1"];
    v.extend_from_slice(flags);
    Config::from_args(&Args::try_parse_from(v).expect("flags")).expect("config")
}

#[test]
fn tcp_through_daemon_rules_and_accept_all_queue_arrives_intact() {
    require_root();
    let t = Topology::pair().expect("topology");
    let cfg = config(&["--queue", "11", "--ports", "5001"]);
    let backend = Backend::select(cfg.iptables).expect("backend");
    t.client
        .run(|| firewall::install_rules(&backend, &cfg))
        .expect("install rules");
    let stop = Arc::new(AtomicBool::new(false));
    let (outbound, inbound) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (o, i) = (outbound.clone(), inbound.clone());
    let lp = queue_loop(&t.client, 11, stop.clone(), move |hook, _| {
        if hook.is_outbound() {
            o.fetch_add(1, Ordering::Relaxed);
        } else {
            i.fetch_add(1, Ordering::Relaxed);
        }
        (NfVerdict::Accept, None)
    });
    let listener = t
        .server
        .run(|| TcpListener::bind("10.77.0.2:5001"))
        .expect("listen");
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read");
        got
    });
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut c = t
        .client
        .run(|| TcpStream::connect("10.77.0.2:5001"))
        .expect("connect");
    c.write_all(&data).expect("write");
    drop(c);
    let got = server.join().expect("server");
    stop.store(true, Ordering::Relaxed);
    lp.join().expect("loop");
    assert_eq!(got.len(), data.len());
    assert!(got == data);
    assert!(
        outbound.load(Ordering::Relaxed) > 0,
        "no outbound packet queued"
    );
    assert!(
        inbound.load(Ordering::Relaxed) > 0,
        "no inbound packet queued"
    );
    t.client
        .run(|| firewall::remove_rules(&backend))
        .expect("remove rules");
}

/// Internet checksum over `data`, folded.
fn csum(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        sum += u32::from(*b) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Upper-cases the UDP payload of an IPv4/IPv6 packet and fixes checksums.
fn shout(packet: &[u8]) -> Vec<u8> {
    let mut p = packet.to_vec();
    let (l4, pseudo) = if p[0] >> 4 == 4 {
        let ihl = usize::from(p[0] & 15) * 4;
        let mut ps = Vec::new();
        ps.extend_from_slice(&p[12..20]);
        ps.extend_from_slice(&[0, 17]);
        ps.extend_from_slice(&((p.len() - ihl) as u16).to_be_bytes());
        (ihl, ps)
    } else {
        let mut ps = Vec::new();
        ps.extend_from_slice(&p[8..40]);
        ps.extend_from_slice(&((p.len() - 40) as u32).to_be_bytes());
        ps.extend_from_slice(&[0, 0, 0, 17]);
        (40, ps)
    };
    for b in &mut p[l4 + 8..] {
        b.make_ascii_uppercase();
    }
    p[l4 + 6] = 0;
    p[l4 + 7] = 0;
    let mut c = fold(csum(csum(0, &pseudo), &p[l4..]));
    if c == 0 {
        c = 0xffff;
    }
    p[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
    p
}

/// The queued inbound datagram is dropped and an edited copy is injected
/// towards the local stack; the socket must receive the copy.
fn inbound_injection(v6: bool) {
    require_root();
    let t = Topology::pair().expect("topology");
    // Strict reverse-path filtering must not get in the way of packets that
    // come back over loopback with a remote source address.
    t.server
        .sysctl("net.ipv4.conf.all.rp_filter", "1")
        .expect("sysctl");
    t.server
        .sysctl("net.ipv4.conf.veth0.rp_filter", "1")
        .expect("sysctl");
    let ipt = if v6 { "ip6tables" } else { "iptables" };
    t.server
        .exec(
            ipt,
            &[
                "-t",
                "mangle",
                "-A",
                "INPUT",
                "!",
                "-i",
                "lo",
                "-p",
                "udp",
                "--dport",
                "6000",
                "-j",
                "NFQUEUE",
                "--queue-num",
                "12",
            ],
        )
        .expect("rule");
    let stop = Arc::new(AtomicBool::new(false));
    let injector = Arc::new(t.server.run(|| Injector::new(MARK)).expect("injector"));
    let inj = injector.clone();
    let lp = queue_loop(&t.server, 12, stop.clone(), move |hook, payload| {
        assert_eq!(hook, Hook::LocalIn);
        inj.send(&shout(payload)).expect("inject");
        (NfVerdict::Drop, None)
    });
    let server_ip = t.server_addrs.ip(v6);
    let client_ip = t.client_addrs.ip(v6);
    let sock = t
        .server
        .run(|| UdpSocket::bind(SocketAddr::new(server_ip, 6000)))
        .expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let client = t
        .client
        .run(|| UdpSocket::bind(SocketAddr::new(client_ip, 0)))
        .expect("bind");
    client
        .send_to(b"hello", SocketAddr::new(server_ip, 6000))
        .expect("send");
    let mut buf = [0u8; 64];
    let (n, from) = sock.recv_from(&mut buf).expect("injected datagram arrives");
    stop.store(true, Ordering::Relaxed);
    lp.join().expect("loop");
    assert_eq!(&buf[..n], b"HELLO");
    assert_eq!(from.ip(), client_ip);
}

#[test]
fn inbound_injection_over_loopback_reaches_local_socket_ipv4() {
    inbound_injection(false);
}

#[test]
fn inbound_injection_over_loopback_reaches_local_socket_ipv6() {
    inbound_injection(true);
}

/// An outbound packet re-sent through the marked raw socket reaches the peer
/// and is not queued a second time.
fn outbound_injection_skips_queue(v6: bool) {
    require_root();
    let t = Topology::pair().expect("topology");
    let ipt = if v6 { "ip6tables" } else { "iptables" };
    let mark = format!("{MARK:#x}");
    t.client
        .exec(
            ipt,
            &[
                "-t",
                "raw",
                "-A",
                "OUTPUT",
                "-m",
                "mark",
                "!",
                "--mark",
                &mark,
                "-p",
                "udp",
                "--dport",
                "6001",
                "-j",
                "NFQUEUE",
                "--queue-num",
                "13",
            ],
        )
        .expect("rule");
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicUsize::new(0));
    let injector = Arc::new(t.client.run(|| Injector::new(MARK)).expect("injector"));
    let (inj, s) = (injector.clone(), seen.clone());
    let lp = queue_loop(&t.client, 13, stop.clone(), move |hook, payload| {
        assert_eq!(hook, Hook::LocalOut);
        s.fetch_add(1, Ordering::Relaxed);
        inj.send(&shout(payload)).expect("inject");
        (NfVerdict::Drop, None)
    });
    let server_ip = t.server_addrs.ip(v6);
    let sock = t
        .server
        .run(|| UdpSocket::bind(SocketAddr::new(server_ip, 6001)))
        .expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let client = t
        .client
        .run(|| UdpSocket::bind(SocketAddr::new(t.client_addrs.ip(v6), 0)))
        .expect("bind");
    client
        .send_to(b"ping", SocketAddr::new(server_ip, 6001))
        .expect("send");
    let mut buf = [0u8; 64];
    let (n, _) = sock.recv_from(&mut buf).expect("injected datagram arrives");
    // Give a wrongly re-queued copy time to show up.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    lp.join().expect("loop");
    assert_eq!(&buf[..n], b"PING");
    assert_eq!(seen.load(Ordering::Relaxed), 1);
}

#[test]
fn outbound_injection_with_mark_is_not_queued_again_ipv4() {
    outbound_injection_skips_queue(false);
}

#[test]
fn outbound_injection_with_mark_is_not_queued_again_ipv6() {
    outbound_injection_skips_queue(true);
}

#[test]
fn modified_payload_verdict_replaces_the_packet() {
    require_root();
    let t = Topology::pair().expect("topology");
    t.server
        .exec(
            "iptables",
            &[
                "-t",
                "mangle",
                "-A",
                "INPUT",
                "-p",
                "udp",
                "--dport",
                "6002",
                "-j",
                "NFQUEUE",
                "--queue-num",
                "14",
            ],
        )
        .expect("rule");
    let stop = Arc::new(AtomicBool::new(false));
    let lp = queue_loop(&t.server, 14, stop.clone(), |_, payload| {
        (NfVerdict::Accept, Some(shout(payload)))
    });
    let sock = t
        .server
        .run(|| UdpSocket::bind("10.77.0.2:6002"))
        .expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let client = t
        .client
        .run(|| UdpSocket::bind("10.77.0.1:0"))
        .expect("bind");
    client.send_to(b"quiet", "10.77.0.2:6002").expect("send");
    let mut buf = [0u8; 64];
    let (n, _) = sock.recv_from(&mut buf).expect("datagram arrives");
    stop.store(true, Ordering::Relaxed);
    lp.join().expect("loop");
    assert_eq!(&buf[..n], b"QUIET");
}

/// Reads what arrives within `wait`; an empty result means nothing came.
fn read_for(s: &mut TcpStream, wait: Duration) -> Vec<u8> {
    let end = std::time::Instant::now() + wait;
    let mut buf = [0u8; 64];
    loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Vec::new();
        }
        s.set_read_timeout(Some(left)).expect("timeout");
        match s.read(&mut buf) {
            Ok(n) => return buf[..n].to_vec(),
            // Other tests' child processes end meanwhile: SIGCHLD.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Vec::new();
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

#[test]
fn a_guarded_connection_stops_when_the_reader_goes_and_new_ones_bypass() {
    require_root();
    let t = Topology::pair().expect("topology");
    let cfg = config(&["--queue", "17", "--ports", "5017"]);
    let backend = Backend::select(cfg.iptables).expect("backend");
    t.client
        .run(|| firewall::install_rules(&backend, &cfg))
        .expect("install rules");
    let stop = Arc::new(AtomicBool::new(false));
    // Every packet counts as guarded, as the engine would say of an
    // encrypted connection.
    let lp = queue_loop_marking(&t.client, 17, stop.clone(), Some(true), |_, _| {
        (NfVerdict::Accept, None)
    });
    let listener = t
        .server
        .run(|| TcpListener::bind("10.77.0.2:5017"))
        .expect("listen");
    let mut c = t
        .client
        .run(|| TcpStream::connect("10.77.0.2:5017"))
        .expect("connect");
    let (mut s, _) = listener.accept().expect("accept");
    c.write_all(b"before").expect("write");
    assert_eq!(read_for(&mut s, Duration::from_secs(5)), b"before");
    // The reader goes away: the kernel bypasses the outbound queue now.
    stop.store(true, Ordering::Relaxed);
    lp.join().expect("loop");
    c.write_all(b"after").expect("write");
    assert_eq!(
        read_for(&mut s, Duration::from_millis(1500)),
        b"",
        "a guarded connection's bytes left without the reader"
    );
    s.write_all(b"back").expect("write back");
    assert_eq!(
        read_for(&mut c, Duration::from_millis(1500)),
        b"",
        "a guarded connection's bytes reached the stack without the reader"
    );
    // A connection that was never guarded keeps the fail-open bypass.
    let mut c2 = t
        .client
        .run(|| {
            TcpStream::connect_timeout(
                &"10.77.0.2:5017".parse().expect("addr"),
                Duration::from_secs(5),
            )
        })
        .expect("connect without a reader");
    let (mut s2, _) = listener.accept().expect("accept");
    c2.write_all(b"plain").expect("write");
    assert_eq!(read_for(&mut s2, Duration::from_secs(5)), b"plain");
    s2.write_all(b"reply").expect("write");
    assert_eq!(read_for(&mut c2, Duration::from_secs(5)), b"reply");
    t.client
        .run(|| firewall::remove_rules(&backend))
        .expect("remove rules");
}

#[test]
fn second_bind_of_a_queue_in_the_same_namespace_is_refused() {
    require_root();
    let ns = Netns::new("q").expect("netns");
    let first = ns.run(|| Queue::bind(15, 16, 1 << 20)).expect("first bind");
    let second = ns.run(|| Queue::bind(15, 16, 1 << 20));
    assert!(second.is_err(), "second bind of queue 15 succeeded");
    drop(first);
}

#[test]
fn remove_rules_leaves_no_trace_and_finds_stale_ones() {
    require_root();
    let ns = Netns::new("fw").expect("netns");
    let cfg = config(&[
        "--queue",
        "16",
        "--ports",
        "80,443",
        "--interfaces",
        "veth0",
    ]);
    let backend = Backend::select(cfg.iptables).expect("backend");
    let before = ns.run(|| dump(&backend));
    ns.run(|| firewall::install_rules(&backend, &cfg))
        .expect("install");
    let during = ns.run(|| dump(&backend));
    for chain in [
        "TCPCRYPT_OUT",
        "TCPCRYPT_IN",
        "TCPCRYPT_OUT_GUARD",
        "TCPCRYPT_IN_GUARD",
    ] {
        assert!(during.contains(&format!("-N {chain}")), "no {chain}");
    }
    assert!(during.contains("--queue-bypass"));
    // A fresh start finds what the "crashed" instance left: four jumps per
    // address family, and the second jump for path-MTU reports in each.
    let found = ns.run(|| firewall::remove_rules(&backend)).expect("remove");
    assert_eq!(found, 10);
    assert_eq!(ns.run(|| dump(&backend)), before);
}

fn dump(backend: &Backend) -> String {
    let mut out = String::new();
    for cmd in [&backend.v4, &backend.v6] {
        for table in ["raw", "mangle", "filter"] {
            let o = std::process::Command::new(cmd)
                .args(["-t", table, "-S"])
                .output()
                .expect("iptables -S");
            out.push_str(&String::from_utf8_lossy(&o.stdout));
        }
    }
    out
}

/// A TUN device `tun0` with 10.88.0.1/24 in `ns`. Packets written to it
/// arrive as if from a network card that checked nothing (CHECKSUM_NONE),
/// so whether a checksum counts as verified is up to the kernel's own
/// checks.
fn tun_device(ns: &Netns) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let file = ns
        .run(|| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
        })
        .expect("open /dev/net/tun");
    // struct ifreq: the name, then the flags as a short.
    let mut ifr = [0u8; 40];
    ifr[..4].copy_from_slice(b"tun0");
    let flags = (libc::IFF_TUN | libc::IFF_NO_PI) as i16;
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes one ifreq, which `ifr` is large
    // enough for.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, ifr.as_mut_ptr()) };
    assert_eq!(rc, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    for args in [
        &["addr", "add", "10.88.0.1/24", "dev", "tun0"][..],
        &["link", "set", "tun0", "up"][..],
    ] {
        let out = ns.exec("ip", args).expect("ip");
        assert!(out.status.success(), "ip {args:?} failed");
    }
    file
}

/// A TCP SYN 10.88.0.2:40000 -> 10.88.0.1:`port`, with a correct IP header
/// checksum and a TCP checksum that is right or, if `corrupt`, wrong.
fn syn_to_tun(port: u16, corrupt: bool) -> Vec<u8> {
    let (src, dst) = ([10u8, 88, 0, 2], [10u8, 88, 0, 1]);
    let mut p = vec![0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let ip_sum = fold(csum(0, &p[..20]));
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&port.to_be_bytes());
    p[24..28].copy_from_slice(&12345u32.to_be_bytes());
    p[32] = 0x50;
    p[33] = 0x02;
    p[34..36].copy_from_slice(&0xffffu16.to_be_bytes());
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    let mut tcp_sum = fold(csum(csum(0, &pseudo), &p[20..]));
    if corrupt {
        tcp_sum ^= 0x0101;
    }
    p[36..38].copy_from_slice(&tcp_sum.to_be_bytes());
    p
}

/// Writes `packet` into the TUN device and returns the checksum flag of
/// the copy the daemon's rules queue from `mangle INPUT`.
fn queued_checksum_flag(tun: &mut std::fs::File, q: &Queue, packet: &[u8]) -> bool {
    use std::os::fd::AsRawFd;
    tun.write_all(packet).expect("write to tun");
    let mut batch = RecvBatch::new(4);
    let mut verdicts = VerdictBatch::new(q.queue_num());
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < end {
        poll_readable(q.as_raw_fd(), 100);
        if q.recv_batch(&mut batch).expect("recv") == 0 {
            continue;
        }
        let mut flag = None;
        for d in batch.datagrams() {
            for (id, verified) in queued_ids_and_flags(d) {
                q.push_verdict(&mut verdicts, id, NfVerdict::Drop, None, None)
                    .expect("verdict");
                flag = Some(verified);
            }
        }
        q.send_verdicts(&mut verdicts).expect("send verdicts");
        if let Some(f) = flag {
            return f;
        }
    }
    panic!("the packet was never queued");
}

/// (packet id, checksum verified) of every queued packet in a datagram.
fn queued_ids_and_flags(d: &[u8]) -> Vec<(u32, bool)> {
    tcpcryptd::nfqueue::parse_datagram(d)
        .filter_map(|m| match m {
            tcpcryptd::nfqueue::Message::Packet(p) => Some((p.id, p.checksum_verified)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_kernel_reports_inbound_checksums_verified_only_when_it_checked_them() {
    require_root();
    let ns = Netns::new("csum").expect("netns");
    let mut tun = tun_device(&ns);
    // The daemon's own rules; their conntrack matches also switch conntrack
    // on in the namespace, which checks TCP checksums in PREROUTING.
    let cfg = config(&["--queue", "18", "--ports", "5099"]);
    let backend = Backend::select(cfg.iptables).expect("backend");
    ns.run(|| firewall::install_rules(&backend, &cfg))
        .expect("install rules");
    let q = ns.run(|| Queue::bind(18, 64, 1 << 20)).expect("bind");
    assert!(
        queued_checksum_flag(&mut tun, &q, &syn_to_tun(5099, false)),
        "conntrack verified a good checksum, yet the packet came as unverified"
    );
    assert!(
        !queued_checksum_flag(&mut tun, &q, &syn_to_tun(5099, true)),
        "a wrong checksum came as verified"
    );
    ns.sysctl("net.netfilter.nf_conntrack_checksum", "0")
        .expect("sysctl");
    assert!(
        !queued_checksum_flag(&mut tun, &q, &syn_to_tun(5099, false)),
        "nobody checked the checksum, yet it came as verified"
    );
}
