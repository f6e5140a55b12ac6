//! Wire formats: IPv4, IPv6 and TCP headers, options and checksums.
//!
//! Views (`Ipv4Packet`, `Ipv6Packet`, `TcpPacket`) check bounds once and then
//! read fields by name; `TcpRepr` and [`Packet`] are the owned meaning that
//! the engine edits and emits again. Nothing here panics on any input.

pub mod checksum;
pub mod icmp;
pub mod ip;
pub mod tcp;

use std::net::{IpAddr, SocketAddr};

pub use ip::IpLayer;
pub use tcp::{Payload, TcpFlags, TcpOption, TcpRepr};

/// Why bytes could not be read or written as an IP/TCP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{what} truncated: need {need} bytes, have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("{field} invalid: expected {expected}")]
    Invalid {
        field: &'static str,
        expected: &'static str,
    },
    #[error("{0} is not handled")]
    Unsupported(&'static str),
    #[error("{what} too long: {len} bytes")]
    TooLong { what: &'static str, len: usize },
}

/// A whole IP packet carrying one TCP segment; a parsed one borrows its
/// payload from the bytes it was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    pub ip: IpLayer,
    pub tcp: TcpRepr<'a>,
}

impl<'a> Packet<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Packet<'a>, WireError> {
        let (ip, seg) = IpLayer::parse(bytes)?;
        let tcp = TcpRepr::parse(seg)?;
        Ok(Packet { ip, tcp })
    }

    /// The same packet with a payload of its own.
    pub fn into_owned(self) -> Packet<'static> {
        Packet {
            ip: self.ip,
            tcp: self.tcp.into_owned(),
        }
    }

    /// Writes the packet into `out` (replacing its contents) with every
    /// length and checksum recomputed.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        self.emit_gathered(out, std::iter::empty())
    }

    /// Like [`Packet::emit`], with the bytes of `more` appended to the
    /// payload ([`TcpRepr::emit_gathered`]).
    pub fn emit_gathered<'m>(
        &self,
        out: &mut Vec<u8>,
        more: impl Iterator<Item = &'m [u8]> + Clone,
    ) -> Result<(), WireError> {
        out.clear();
        out.extend_from_slice(&self.ip.header);
        self.tcp
            .emit_gathered(self.ip.src, self.ip.dst, out, more)?;
        self.ip.fix_lengths(out)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, WireError> {
        let mut v = Vec::new();
        self.emit(&mut v)?;
        Ok(v)
    }

    pub fn src(&self) -> SocketAddr {
        SocketAddr::new(self.ip.src, self.tcp.src_port)
    }

    pub fn dst(&self) -> SocketAddr {
        SocketAddr::new(self.ip.dst, self.tcp.dst_port)
    }

    /// Bytes of IP and TCP header in front of the payload, as emitted.
    pub fn header_len(&self) -> usize {
        self.ip.header.len() + self.tcp.header_len()
    }
}

/// Canonical form of an address for table keys: an IPv4-mapped IPv6 address
/// is the IPv4 address it maps.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn seg(payload: &[u8]) -> TcpRepr<'static> {
        TcpRepr {
            src_port: 1234,
            dst_port: 443,
            seq: 1,
            ack: 2,
            flags: TcpFlags::ACK | TcpFlags::PSH,
            window: 1000,
            urgent: 0,
            options: vec![
                TcpOption::Nop,
                TcpOption::Nop,
                TcpOption::Timestamps { tsval: 5, tsecr: 6 },
            ],
            payload: payload.to_vec().into(),
        }
    }

    #[test]
    fn ipv4_packet_round_trips_with_valid_checksums() {
        let p = Packet {
            ip: IpLayer::new_minimal(
                Ipv4Addr::new(192, 0, 2, 1).into(),
                Ipv4Addr::new(192, 0, 2, 2).into(),
            ),
            tcp: seg(b"hello"),
        };
        let bytes = p.to_bytes().unwrap();
        assert_eq!(checksum::of(&bytes[..20]), 0, "IPv4 header checksum");
        assert_eq!(checksum::tcp(p.ip.src, p.ip.dst, &bytes[20..]), 0);
        let parsed = Packet::parse(&bytes).unwrap();
        assert_eq!(parsed.tcp, p.tcp);
        assert_eq!(parsed.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn a_gathered_payload_emits_as_the_joined_one_does() {
        let joined = Packet {
            ip: IpLayer::new_minimal(
                Ipv4Addr::new(192, 0, 2, 1).into(),
                Ipv4Addr::new(192, 0, 2, 2).into(),
            ),
            tcp: seg(b"head, middle and tail"),
        };
        let mut gathered = joined.clone();
        gathered.tcp.payload = b"head, ".into();
        let mut out = vec![0xee; 7];
        gathered
            .emit_gathered(&mut out, [&b"middle"[..], b"", b" and tail"].into_iter())
            .unwrap();
        assert_eq!(out, joined.to_bytes().unwrap());
    }

    #[test]
    fn ipv6_packet_round_trips_with_valid_checksum() {
        let p = Packet {
            ip: IpLayer::new_minimal(
                "2001:db8::1".parse::<Ipv6Addr>().unwrap().into(),
                "2001:db8::2".parse::<Ipv6Addr>().unwrap().into(),
            ),
            tcp: seg(b"hello6"),
        };
        let bytes = p.to_bytes().unwrap();
        assert_eq!(checksum::tcp(p.ip.src, p.ip.dst, &bytes[40..]), 0);
        let parsed = Packet::parse(&bytes).unwrap();
        assert_eq!((parsed.src(), parsed.dst()), (p.src(), p.dst()));
        assert_eq!(parsed.tcp, p.tcp);
        assert_eq!(parsed.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn ipv6_hop_by_hop_header_is_skipped_and_kept() {
        let p = Packet {
            ip: IpLayer::new_minimal(
                "2001:db8::1".parse::<Ipv6Addr>().unwrap().into(),
                "2001:db8::2".parse::<Ipv6Addr>().unwrap().into(),
            ),
            tcp: seg(b"x"),
        };
        let mut bytes = p.to_bytes().unwrap();
        // Insert an 8-byte hop-by-hop header (next header TCP, PadN).
        bytes[6] = 0;
        let hbh = [6u8, 0, 1, 4, 0, 0, 0, 0];
        bytes.splice(40..40, hbh);
        let plen = u16::from_be_bytes([bytes[4], bytes[5]]) + 8;
        bytes[4..6].copy_from_slice(&plen.to_be_bytes());
        let parsed = Packet::parse(&bytes).unwrap();
        assert_eq!(parsed.ip.header.len(), 48);
        assert_eq!(parsed.tcp, p.tcp);
        assert_eq!(parsed.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn ipv4_fragments_are_not_parsed() {
        let p = Packet {
            ip: IpLayer::new_minimal(Ipv4Addr::LOCALHOST.into(), Ipv4Addr::LOCALHOST.into()),
            tcp: seg(b""),
        };
        let mut bytes = p.to_bytes().unwrap();
        bytes[6] |= 0x20; // more fragments
        assert_eq!(
            Packet::parse(&bytes),
            Err(WireError::Unsupported("IPv4 fragment"))
        );
    }

    #[test]
    fn a_first_ipv4_fragment_shows_its_ports_and_a_later_one_does_not() {
        let p = Packet {
            ip: IpLayer::new_minimal(
                Ipv4Addr::new(192, 0, 2, 1).into(),
                Ipv4Addr::new(192, 0, 2, 2).into(),
            ),
            tcp: seg(b"0123456789abcdef"),
        };
        let mut bytes = p.to_bytes().unwrap();
        bytes[6] = 0x20; // more fragments, offset 0
        let first = ip::TcpRemnant::peek(&bytes).unwrap();
        assert_eq!(first.ports, Some((1234, 443)));
        assert_eq!((first.src, first.dst), (p.ip.src, p.ip.dst));
        bytes[6..8].copy_from_slice(&3u16.to_be_bytes()); // offset 24, last
        let later = ip::TcpRemnant::peek(&bytes).unwrap();
        assert_eq!(later.ports, None);
        assert_eq!((later.src, later.dst), (p.ip.src, p.ip.dst));
    }

    #[test]
    fn an_ipv6_fragment_header_is_seen_through_for_the_ports_of_a_first_fragment() {
        let p = Packet {
            ip: IpLayer::new_minimal(
                "2001:db8::1".parse::<Ipv6Addr>().unwrap().into(),
                "2001:db8::2".parse::<Ipv6Addr>().unwrap().into(),
            ),
            tcp: seg(b"x"),
        };
        let mut bytes = p.to_bytes().unwrap();
        bytes[6] = 44;
        // Next header TCP, offset 0, more fragments, identification 7.
        bytes.splice(40..40, [6u8, 0, 0, 1, 0, 0, 0, 7]);
        let plen = u16::from_be_bytes([bytes[4], bytes[5]]) + 8;
        bytes[4..6].copy_from_slice(&plen.to_be_bytes());
        assert_eq!(
            Packet::parse(&bytes),
            Err(WireError::Unsupported("IPv6 fragment"))
        );
        assert_eq!(
            ip::TcpRemnant::peek(&bytes).unwrap().ports,
            Some((1234, 443))
        );
        bytes[42..44].copy_from_slice(&(2u16 << 3).to_be_bytes()); // offset 16
        assert_eq!(ip::TcpRemnant::peek(&bytes).unwrap().ports, None);
    }

    #[test]
    fn packets_that_are_not_tcp_leave_no_remnant() {
        let p = Packet {
            ip: IpLayer::new_minimal(Ipv4Addr::LOCALHOST.into(), Ipv4Addr::LOCALHOST.into()),
            tcp: seg(b""),
        };
        let mut bytes = p.to_bytes().unwrap();
        bytes[9] = 17; // UDP
        assert_eq!(ip::TcpRemnant::peek(&bytes), None);
        assert_eq!(ip::TcpRemnant::peek(&bytes[..10]), None);
    }

    #[test]
    fn mapped_ipv6_addresses_are_canonicalised_to_ipv4() {
        let m: SocketAddr = "[::ffff:10.0.0.1]:80".parse().unwrap();
        assert_eq!(canonical(m), "10.0.0.1:80".parse().unwrap());
    }

    fn arb_option() -> impl Strategy<Value = TcpOption> {
        prop_oneof![
            Just(TcpOption::Nop),
            any::<u16>().prop_map(TcpOption::Mss),
            any::<u8>().prop_map(TcpOption::WindowScale),
            Just(TcpOption::SackPermitted),
            proptest::collection::vec((any::<u32>(), any::<u32>()), 1..3).prop_map(TcpOption::Sack),
            (any::<u32>(), any::<u32>())
                .prop_map(|(tsval, tsecr)| TcpOption::Timestamps { tsval, tsecr }),
            (9u8..=255, proptest::collection::vec(any::<u8>(), 0..8))
                .prop_map(|(kind, data)| TcpOption::Other { kind, data }),
        ]
    }

    proptest! {
        #[test]
        fn emit_then_parse_is_the_identity(
            v6 in any::<bool>(),
            src_port in any::<u16>(), dst_port in any::<u16>(),
            seq in any::<u32>(), ack in any::<u32>(), flags in any::<u16>(),
            window in any::<u16>(), urgent in any::<u16>(),
            options in proptest::collection::vec(arb_option(), 0..4),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let (src, dst): (std::net::IpAddr, std::net::IpAddr) = if v6 {
                ("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap())
            } else {
                ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap())
            };
            let tcp = TcpRepr {
                src_port, dst_port, seq, ack,
                flags: TcpFlags::from_bits(flags),
                window, urgent, options, payload: payload.into(),
            };
            prop_assume!(tcp::options_len(&tcp.options) <= tcp::MAX_OPTIONS_LEN);
            let p = Packet { ip: IpLayer::new_minimal(src, dst), tcp };
            let bytes = p.to_bytes().unwrap();
            let mut back = Packet::parse(&bytes).unwrap();
            // Emitting pads the options with end-of-list bytes.
            while back.tcp.options.last() == Some(&TcpOption::Eol) && p.tcp.options.last() != Some(&TcpOption::Eol) {
                back.tcp.options.pop();
            }
            prop_assert_eq!(&back.tcp, &p.tcp);
            prop_assert_eq!((back.src(), back.dst()), (p.src(), p.dst()));
            prop_assert_eq!(back.to_bytes().unwrap(), bytes);
        }

        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(p) = Packet::parse(&bytes) {
                let _ = p.to_bytes();
            }
            let _ = ip::TcpRemnant::peek(&bytes);
        }

        #[test]
        fn parsing_mutated_valid_packets_never_panics(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            flips in proptest::collection::vec((0usize..120, any::<u8>()), 1..6),
        ) {
            let p = Packet {
                ip: IpLayer::new_minimal(Ipv4Addr::LOCALHOST.into(), Ipv4Addr::LOCALHOST.into()),
                tcp: seg(&payload),
            };
            let mut bytes = p.to_bytes().unwrap();
            for (i, v) in flips {
                if let Some(b) = bytes.get_mut(i) { *b = v; }
            }
            if let Ok(p) = Packet::parse(&bytes) {
                let _ = p.to_bytes();
            }
            let _ = ip::TcpRemnant::peek(&bytes);
        }
    }
}
