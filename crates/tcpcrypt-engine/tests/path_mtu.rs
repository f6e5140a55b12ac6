//! A path narrower than the peer's MSS (RFC 1191, RFC 8201): a router's
//! packet-too-big report reaches the engine before the kernel, which must
//! be able to believe it (its quoted sequence number moved into the
//! kernel's space), and the engine must never send a wire packet above the
//! path's limit again: not when it resends frames sealed for the wider
//! path, and not when a kernel segment that fills the path gets a frame's
//! overhead added.

#![allow(clippy::unwrap_used)]

mod harness;

use std::net::IpAddr;

use harness::{Fate, Side, Sim};
use tcpcrypt_engine::wire::checksum;
use tcpcrypt_engine::wire::icmp::TooBig;
use tcpcrypt_engine::wire::{IpLayer, Packet};
use tcpcrypt_engine::{Direction, Verdict};

const PATH_MTU: usize = 1280;

fn pattern(n: usize, salt: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(13) ^ salt).collect()
}

/// The report a router at `router` sends to `host` about `quote`, quoting
/// as much of it as fits a minimum-size ICMP message.
fn too_big(router: IpAddr, host: IpAddr, mtu: u32, quote: &[u8]) -> Vec<u8> {
    let v6 = router.is_ipv6();
    let quote = &quote[..quote.len().min(if v6 { 1232 } else { 548 })];
    let mut msg = vec![0u8; 8];
    if v6 {
        msg[0] = 2;
        msg[4..8].copy_from_slice(&mtu.to_be_bytes());
    } else {
        msg[0] = 3;
        msg[1] = 4;
        msg[6..8].copy_from_slice(&(mtu as u16).to_be_bytes());
    }
    msg.extend_from_slice(quote);
    let c = if v6 {
        checksum::finish(checksum::accumulate(
            checksum::pseudo_header_for(router, host, msg.len(), 58),
            &msg,
        ))
    } else {
        checksum::of(&msg)
    };
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    let mut out = IpLayer::new_minimal(router, host).header;
    if v6 {
        out[6] = 58;
        out[4..6].copy_from_slice(&(msg.len() as u16).to_be_bytes());
    } else {
        out[9] = 1;
        out[2..4].copy_from_slice(&((20 + msg.len()) as u16).to_be_bytes());
        out[10..12].copy_from_slice(&[0, 0]);
        let c = checksum::of(&out[..20]);
        out[10..12].copy_from_slice(&c.to_be_bytes());
    }
    out.extend_from_slice(&msg);
    out
}

/// Runs A → B over a path that drops A's packets above 1,280 bytes, with
/// the router's report delivered to A's engine for the first one dropped.
/// Returns how many packets the path dropped after the report.
fn narrow_path(mut sim: Sim, router: &str) -> usize {
    sim.connect();
    let first = pattern(30_000, 1);
    sim.a.kernel.write(&first);
    sim.a.kernel.push();
    sim.run();
    assert_eq!(sim.b.kernel.received, first, "the wide path works");

    let dropped = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let log = dropped.clone();
    sim.filter = Some(Box::new(move |from, p| {
        if from == Side::A && p.len() > PATH_MTU {
            log.borrow_mut().push(p.clone());
            return Fate::Drop;
        }
        Fate::Pass
    }));
    let second = pattern(30_000, 2);
    sim.a.kernel.write(&second);
    sim.a.kernel.push();
    sim.run();
    let quote = dropped.borrow().first().cloned().expect("a packet too big");
    let before_report = dropped.borrow().len();

    let router: IpAddr = router.parse().unwrap();
    let mut report = too_big(router, sim.a.kernel.local.ip(), PATH_MTU as u32, &quote);
    let now = sim.now;
    let verdict =
        sim.a
            .engine
            .as_mut()
            .unwrap()
            .handle_packet(now, Direction::Inbound, &mut report);
    assert_eq!(verdict, Verdict::AcceptModified);
    let seen = TooBig::parse(&report).expect("still a valid report");
    assert_eq!(
        seen.mtu as usize, PATH_MTU,
        "the kernel keeps the path's MTU"
    );
    let kernel = &sim.a.kernel;
    let in_kernel_space = (kernel.snd_una..=kernel.snd_nxt)
        .any(|off| kernel.isn.wrapping_add(1).wrapping_add(off as u32) == seen.quoted_seq);
    assert!(
        in_kernel_space,
        "quoted sequence number not in the kernel's window"
    );

    // What Linux does with the report: a smaller MSS (never below the
    // IPv6 minimum link MTU), then everything unacknowledged again.
    let q = Packet::parse(&quote).unwrap();
    let headers = q.header_len();
    let floor = if router.is_ipv6() { 1280 } else { 552 };
    sim.a.kernel.mss = (seen.mtu as usize).max(floor) - headers;
    let (una, nxt) = (sim.a.kernel.snd_una, sim.a.kernel.snd_nxt);
    let mut off = una;
    while off < nxt {
        let len = ((nxt - off) as usize).min(sim.a.kernel.mss);
        sim.a.kernel.send_range(off, len);
        off += len as u64;
    }
    sim.run();
    let third = pattern(20_000, 3);
    sim.a.kernel.write(&third);
    sim.a.kernel.push();
    sim.run();
    let want = [first, second, third].concat();
    assert!(sim.b.kernel.received == want, "data lost or wrong");
    dropped.borrow().len() - before_report
}

#[test]
fn ipv4_report_reaches_the_kernel_and_every_later_packet_fits_the_path() {
    let dropped_after = narrow_path(Sim::v4(), "10.0.0.254");
    assert_eq!(
        dropped_after, 0,
        "packets above the path MTU after the report"
    );
}

#[test]
fn ipv6_report_reaches_the_kernel_and_every_later_packet_fits_the_path() {
    let dropped_after = narrow_path(Sim::v6(), "fd00::fe");
    assert_eq!(
        dropped_after, 0,
        "packets above the path MTU after the report"
    );
}

#[test]
fn a_report_quoting_bytes_not_in_flight_changes_nothing() {
    let mut sim = Sim::v4();
    sim.connect();
    sim.a.kernel.write(&pattern(5000, 4));
    sim.a.kernel.push();
    sim.run();
    let quote = sim
        .tap
        .iter()
        .rev()
        .find(|(s, p)| *s == Side::A && p.len() > 1000)
        .map(|(_, p)| p.clone())
        .unwrap();
    // Everything quoted is acknowledged already: a stale or forged report.
    let mut report = too_big(
        "10.0.0.254".parse().unwrap(),
        sim.a.kernel.local.ip(),
        576,
        &quote,
    );
    let untouched = report.clone();
    let now = sim.now;
    let engine = sim.a.engine.as_mut().unwrap();
    assert_eq!(
        engine.handle_packet(now, Direction::Inbound, &mut report),
        Verdict::Accept
    );
    assert_eq!(report, untouched);
    assert_eq!(engine.stats().too_big_reports, 0);
    let more = pattern(20_000, 5);
    sim.a.kernel.write(&more);
    sim.a.kernel.push();
    sim.run();
    assert!(
        sim.tap.iter().any(|(s, p)| *s == Side::A && p.len() > 1400),
        "full-size packets still go out"
    );
}
