//! "Packet too big" reports: ICMPv4 destination unreachable, fragmentation
//! needed (RFC 1191) and ICMPv6 packet too big (RFC 8201).
//!
//! A router sends one when a packet of ours exceeds the next link's MTU; it
//! quotes the start of that packet. The quoted TCP header is a wire segment
//! (sequence numbers in the wire space), which the kernel would find
//! outside its own window and ignore; the engine rewrites it for the
//! kernel's plaintext space: see the engine's `on_too_big`.
//!
//! Only what the rewrite needs is read: the reported MTU, the quoted
//! addresses, ports and sequence number. The quote is often cut short, so
//! only the quoted TCP header's first eight bytes are required.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::checksum;
use super::ip::{Ipv4Packet, Ipv6Packet};

const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;
const PROTO_TCP: u8 = 6;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
const ICMP_HEADER_LEN: usize = 8;
const V6_HEADER_LEN: usize = 40;

/// A valid packet-too-big report quoting a TCP segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TooBig {
    /// The MTU the router reported.
    pub mtu: u32,
    /// Source and destination of the quoted segment: for a report about a
    /// packet this host sent, the local and the remote endpoint.
    pub quoted_src: SocketAddr,
    pub quoted_dst: SocketAddr,
    pub quoted_seq: u32,
    /// Length of the quoted IP header (with IPv4 options).
    pub quoted_ip_header_len: usize,
    /// Where the ICMP message starts in the packet, and where its end is.
    icmp: std::ops::Range<usize>,
    /// Outer addresses, for the ICMPv6 pseudo-header.
    outer: (IpAddr, IpAddr),
}

impl TooBig {
    /// Reads `packet` as a report about a TCP segment. `None` for anything
    /// else, including a report whose checksum is wrong (the kernel drops
    /// it; the engine must not make it valid by rewriting it).
    pub fn parse(packet: &[u8]) -> Option<TooBig> {
        match packet.first()? >> 4 {
            4 => Self::parse_v4(packet),
            6 => Self::parse_v6(packet),
            _ => None,
        }
    }

    fn parse_v4(packet: &[u8]) -> Option<TooBig> {
        // Cheap test first: every inbound packet passes here.
        if *packet.get(9)? != PROTO_ICMP {
            return None;
        }
        let outer = Ipv4Packet::new_checked(packet).ok()?;
        if outer.is_fragment() {
            return None;
        }
        let start = outer.header_len();
        let icmp = start..usize::from(outer.total_len());
        let msg = packet.get(icmp.clone())?;
        if msg.len() < ICMP_HEADER_LEN
            || msg[0] != ICMP_DEST_UNREACH
            || msg[1] != ICMP_FRAG_NEEDED
            || checksum::of(msg) != 0
        {
            return None;
        }
        let mtu = u32::from(u16::from_be_bytes([msg[6], msg[7]]));
        let quote = &msg[ICMP_HEADER_LEN..];
        if quote.first()? >> 4 != 4 || *quote.get(9)? != PROTO_TCP {
            return None;
        }
        let hl = usize::from(quote[0] & 0x0f) * 4;
        let addr = |r: std::ops::Range<usize>| -> Option<IpAddr> {
            let b: [u8; 4] = quote.get(r)?.try_into().ok()?;
            Some(IpAddr::from(b))
        };
        let (src, dst) = (addr(12..16)?, addr(16..20)?);
        let tcp = quote.get(hl.max(20)..hl.max(20) + 8)?;
        Some(TooBig {
            mtu,
            quoted_src: SocketAddr::new(src, u16::from_be_bytes([tcp[0], tcp[1]])),
            quoted_dst: SocketAddr::new(dst, u16::from_be_bytes([tcp[2], tcp[3]])),
            quoted_seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
            quoted_ip_header_len: hl.max(20),
            icmp,
            outer: (outer.src().into(), outer.dst().into()),
        })
    }

    fn parse_v6(packet: &[u8]) -> Option<TooBig> {
        let outer = Ipv6Packet::new_checked(packet).ok()?;
        let (proto, start) = outer.upper_layer().ok()?;
        if proto != PROTO_ICMPV6 {
            return None;
        }
        let icmp = start..V6_HEADER_LEN + usize::from(outer.payload_len());
        let msg = packet.get(icmp.clone())?;
        let (src, dst) = (IpAddr::V6(outer.src()), IpAddr::V6(outer.dst()));
        if msg.len() < ICMP_HEADER_LEN
            || msg[0] != ICMPV6_PACKET_TOO_BIG
            || msg[1] != 0
            || icmpv6_checksum(src, dst, msg) != 0
        {
            return None;
        }
        let mtu = u32::from_be_bytes([msg[4], msg[5], msg[6], msg[7]]);
        let quote = &msg[ICMP_HEADER_LEN..];
        // A quoted extension header is not followed: our segments carry none.
        if quote.first()? >> 4 != 6 || *quote.get(6)? != PROTO_TCP {
            return None;
        }
        let addr = |r: std::ops::Range<usize>| -> Option<IpAddr> {
            let b: [u8; 16] = quote.get(r)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        };
        let (qsrc, qdst) = (addr(8..24)?, addr(24..40)?);
        let tcp = quote.get(V6_HEADER_LEN..V6_HEADER_LEN + 8)?;
        Some(TooBig {
            mtu,
            quoted_src: SocketAddr::new(qsrc, u16::from_be_bytes([tcp[0], tcp[1]])),
            quoted_dst: SocketAddr::new(qdst, u16::from_be_bytes([tcp[2], tcp[3]])),
            quoted_seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
            quoted_ip_header_len: V6_HEADER_LEN,
            icmp,
            outer: (src, dst),
        })
    }

    fn is_v6(&self) -> bool {
        self.outer.0.is_ipv6()
    }

    /// The smallest MTU the kernel accepts in such a report (it raises
    /// smaller ones to this): IPv4's `min_pmtu` default and IPv6's minimum
    /// link MTU.
    pub fn kernel_floor(&self) -> u32 {
        if self.is_v6() { 1280 } else { 552 }
    }

    /// Writes `mtu` and the quoted sequence number `seq` into `packet` (the
    /// one this report was parsed from) and fixes the ICMP checksum.
    pub fn rewrite(&self, packet: &mut [u8], mtu: u32, seq: u32) {
        let v6 = self.is_v6();
        let Some(msg) = packet.get_mut(self.icmp.clone()) else {
            return;
        };
        if v6 {
            msg[4..8].copy_from_slice(&mtu.to_be_bytes());
        } else {
            let m = u16::try_from(mtu).unwrap_or(u16::MAX);
            msg[6..8].copy_from_slice(&m.to_be_bytes());
        }
        let seq_at = ICMP_HEADER_LEN + self.quoted_ip_header_len + 4;
        if let Some(s) = msg.get_mut(seq_at..seq_at + 4) {
            s.copy_from_slice(&seq.to_be_bytes());
        }
        msg[2..4].copy_from_slice(&[0, 0]);
        let c = if v6 {
            icmpv6_checksum(self.outer.0, self.outer.1, msg)
        } else {
            checksum::of(msg)
        };
        msg[2..4].copy_from_slice(&c.to_be_bytes());
    }
}

fn icmpv6_checksum(src: IpAddr, dst: IpAddr, msg: &[u8]) -> u16 {
    checksum::finish(checksum::accumulate(
        checksum::pseudo_header_for(src, dst, msg.len(), PROTO_ICMPV6),
        msg,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{IpLayer, Packet, TcpFlags, TcpRepr};

    fn quoted(src: &str, dst: &str, seq: u32) -> Vec<u8> {
        let (s, d): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        Packet {
            ip: IpLayer::new_minimal(s.ip(), d.ip()),
            tcp: TcpRepr {
                src_port: s.port(),
                dst_port: d.port(),
                seq,
                ack: 1,
                flags: TcpFlags::ACK,
                window: 100,
                urgent: 0,
                options: Vec::new(),
                payload: vec![0x55; 1400].into(),
            },
        }
        .to_bytes()
        .unwrap()
    }

    /// A router's report about `quote`, cut to `keep` bytes of it.
    fn report(router: IpAddr, host: IpAddr, mtu: u32, quote: &[u8], keep: usize) -> Vec<u8> {
        let quote = &quote[..keep.min(quote.len())];
        let mut msg = vec![0u8; ICMP_HEADER_LEN];
        if router.is_ipv6() {
            msg[0] = ICMPV6_PACKET_TOO_BIG;
            msg[4..8].copy_from_slice(&mtu.to_be_bytes());
        } else {
            msg[0] = ICMP_DEST_UNREACH;
            msg[1] = ICMP_FRAG_NEEDED;
            msg[6..8].copy_from_slice(&(mtu as u16).to_be_bytes());
        }
        msg.extend_from_slice(quote);
        let c = if router.is_ipv6() {
            icmpv6_checksum(router, host, &msg)
        } else {
            checksum::of(&msg)
        };
        msg[2..4].copy_from_slice(&c.to_be_bytes());
        let mut out = IpLayer::new_minimal(router, host).header;
        if router.is_ipv6() {
            out[6] = PROTO_ICMPV6;
            out[4..6].copy_from_slice(&(msg.len() as u16).to_be_bytes());
        } else {
            out[9] = PROTO_ICMP;
            out[2..4].copy_from_slice(&((20 + msg.len()) as u16).to_be_bytes());
        }
        out.extend_from_slice(&msg);
        if !router.is_ipv6() {
            let mut p = Ipv4Packet::new_checked(&mut out[..]).unwrap();
            p.fill_checksum();
        }
        out
    }

    #[test]
    fn a_v4_report_with_a_short_quote_is_read_and_rewritten_with_a_valid_checksum() {
        let q = quoted("10.0.0.1:40000", "10.0.0.2:80", 0xdead_beef);
        let router: IpAddr = "10.0.9.9".parse().unwrap();
        let host: IpAddr = "10.0.0.1".parse().unwrap();
        let mut p = report(router, host, 1280, &q, 28);
        let tb = TooBig::parse(&p).expect("a report");
        assert_eq!(tb.mtu, 1280);
        assert_eq!(tb.quoted_src, "10.0.0.1:40000".parse().unwrap());
        assert_eq!(tb.quoted_dst, "10.0.0.2:80".parse().unwrap());
        assert_eq!(tb.quoted_seq, 0xdead_beef);
        tb.rewrite(&mut p, 1258, 77);
        let again = TooBig::parse(&p).expect("still valid after the rewrite");
        assert_eq!((again.mtu, again.quoted_seq), (1258, 77));
    }

    #[test]
    fn a_v6_report_is_read_and_rewritten_with_a_valid_checksum() {
        let q = quoted("[fd00::1]:40000", "[fd00::2]:443", 5);
        let router: IpAddr = "fd00::9".parse().unwrap();
        let host: IpAddr = "fd00::1".parse().unwrap();
        let mut p = report(router, host, 1280, &q, 1232);
        let tb = TooBig::parse(&p).expect("a report");
        assert_eq!((tb.mtu, tb.quoted_seq), (1280, 5));
        assert_eq!(tb.quoted_dst, "[fd00::2]:443".parse().unwrap());
        tb.rewrite(&mut p, 1280, 9);
        assert_eq!(TooBig::parse(&p).map(|t| t.quoted_seq), Some(9));
    }

    #[test]
    fn a_corrupted_report_or_a_tcp_segment_is_not_a_report() {
        let q = quoted("10.0.0.1:40000", "10.0.0.2:80", 1);
        let mut p = report(
            "10.0.9.9".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
            1280,
            &q,
            28,
        );
        let last = p.len() - 1;
        p[last] ^= 1;
        assert_eq!(TooBig::parse(&p), None);
        assert_eq!(TooBig::parse(&q), None);
        // Cut inside the quoted ports and sequence number.
        let short = report(
            "10.0.9.9".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
            1280,
            &q,
            24,
        );
        assert_eq!(TooBig::parse(&short), None);
    }
}
