//! Packet rewriting for the impairment tool: pure functions from IP packet
//! bytes to IP packet bytes, built on the engine's `wire` module so lengths
//! and checksums are computed by the same code the daemon uses.

use std::net::SocketAddr;

use tcpcrypt_engine::wire::checksum;
use tcpcrypt_engine::wire::{Packet, TcpFlags, TcpOption, WireError};

/// Why a packet could not be rewritten as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("not a TCP packet the wire module can edit: {0}")]
    Wire(#[from] WireError),
    #[error("the segment has {have} payload bytes; {need} are needed")]
    TooShort { need: usize, have: usize },
    #[error("cut points must rise strictly inside the payload")]
    BadCuts,
    #[error("the segments are not consecutive bytes of one flow")]
    NotConsecutive,
    #[error("IPv6 extension headers and IPv4 options are left alone")]
    UnusualHeader,
}

/// The flow of a TCP packet: (source, destination).
pub type Flow = (SocketAddr, SocketAddr);

/// The few facts the decisions need, read once per packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub flow: Flow,
    pub seq: u32,
    pub payload_len: usize,
    pub flags: TcpFlags,
    pub has_sack: bool,
    /// ECN field of the IP header (0 not-ECT, 1/2 ECT, 3 CE).
    pub ecn: u8,
}

impl Segment {
    pub fn of(bytes: &[u8]) -> Result<Segment, RewriteError> {
        let p = Packet::parse(bytes)?;
        Ok(Segment {
            flow: (p.src(), p.dst()),
            seq: p.tcp.seq,
            payload_len: p.tcp.payload.len(),
            flags: p.tcp.flags,
            has_sack: p
                .tcp
                .options
                .iter()
                .any(|o| matches!(o, TcpOption::Sack(b) if !b.is_empty())),
            ecn: ecn_field(&p.ip.header),
        })
    }

    /// Data that may be cut or joined: payload and none of SYN, RST, URG
    /// (their meaning is tied to one segment).
    pub fn is_plain_data(&self) -> bool {
        self.payload_len > 0
            && !self.flags.contains(TcpFlags::SYN)
            && !self.flags.contains(TcpFlags::RST)
            && !self.flags.contains(TcpFlags::URG)
    }

    /// The sequence number just past this segment's payload.
    pub fn end(&self) -> u32 {
        self.seq.wrapping_add(self.payload_len as u32)
    }
}

fn ecn_field(ip_header: &[u8]) -> u8 {
    match ip_header.first().map(|b| b >> 4) {
        Some(4) => ip_header.get(1).map_or(0, |tos| tos & 3),
        // The traffic class straddles bytes 0 and 1; ECN is its low 2 bits.
        Some(6) => ip_header.get(1).map_or(0, |b| (b >> 4) & 3),
        _ => 0,
    }
}

fn set_ce(ip_header: &mut [u8]) {
    match ip_header.first().map(|b| b >> 4) {
        Some(4) => {
            if let Some(tos) = ip_header.get_mut(1) {
                *tos |= 3;
            }
        }
        Some(6) => {
            if let Some(b) = ip_header.get_mut(1) {
                *b |= 3 << 4;
            }
        }
        _ => {}
    }
}

/// Splits a data segment at `cuts` (payload offsets, strictly rising, each
/// inside the payload) into `cuts.len() + 1` packets that together carry the
/// same bytes. FIN and PSH stay on the last piece only; every piece keeps
/// the original's IP header, ACK, window and options.
pub fn split(bytes: &[u8], cuts: &[usize]) -> Result<Vec<Vec<u8>>, RewriteError> {
    let p = Packet::parse(bytes)?;
    let len = p.tcp.payload.len();
    let mut bounds = Vec::with_capacity(cuts.len() + 2);
    bounds.push(0);
    bounds.extend_from_slice(cuts);
    bounds.push(len);
    if bounds.windows(2).any(|w| w[0] >= w[1]) {
        return Err(RewriteError::BadCuts);
    }
    let mut out = Vec::with_capacity(bounds.len() - 1);
    for (i, w) in bounds.windows(2).enumerate() {
        let last = i + 2 == bounds.len();
        let mut piece = p.clone();
        piece.tcp.seq = p.tcp.seq.wrapping_add(w[0] as u32);
        piece.tcp.payload = p.tcp.payload[w[0]..w[1]].into();
        if !last {
            piece.tcp.flags.set(TcpFlags::FIN, false);
            piece.tcp.flags.set(TcpFlags::PSH, false);
        }
        out.push(piece.to_bytes()?);
    }
    Ok(out)
}

/// Joins two consecutive data segments of one flow into one: `a`'s
/// sequence number, `b`'s IP header, ACK, window, options and flags (so a
/// FIN on `b` stays last), both payloads.
pub fn merge(a: &[u8], b: &[u8]) -> Result<Vec<u8>, RewriteError> {
    let (pa, mut pb) = consecutive(a, b)?;
    pb.tcp.seq = pa.tcp.seq;
    let mut payload = pa.tcp.payload;
    payload.to_mut().extend_from_slice(&pb.tcp.payload);
    pb.tcp.payload = payload;
    Ok(pb.to_bytes()?)
}

/// Re-cuts two consecutive data segments into three: the first piece is the
/// head of `a`, the middle one the tail of `a` and the head of `b`, the
/// last the tail of `b`. Every piece carries `b`'s header, and the middle
/// is at most `max_packet` bytes long (the pieces must still fit the path),
/// while a boundary now falls where the sender never put one.
pub fn bridge(a: &[u8], b: &[u8], max_packet: usize) -> Result<Vec<Vec<u8>>, RewriteError> {
    let (pa, pb) = consecutive(a, b)?;
    let (la, lb) = (pa.tcp.payload.len(), pb.tcp.payload.len());
    let room = max_packet.saturating_sub(pb.header_len());
    if la < 2 || lb < 2 || room < 2 {
        return Err(RewriteError::TooShort {
            need: 2,
            have: la.min(lb).min(room),
        });
    }
    let from_a = (la / 2).min(room / 2).max(1);
    let from_b = (lb / 2).min(room - from_a).max(1);
    let joined = merge(a, b)?;
    split(&joined, &[la - from_a, la + from_b])
}

fn consecutive<'a>(a: &'a [u8], b: &'a [u8]) -> Result<(Packet<'a>, Packet<'a>), RewriteError> {
    let pa = Packet::parse(a)?;
    let pb = Packet::parse(b)?;
    let contiguous = pa.tcp.seq.wrapping_add(pa.tcp.payload.len() as u32) == pb.tcp.seq;
    let same_flow = (pa.src(), pa.dst()) == (pb.src(), pb.dst());
    let a_open = !pa.tcp.flags.contains(TcpFlags::FIN)
        && !pa.tcp.flags.contains(TcpFlags::SYN)
        && !pa.tcp.flags.contains(TcpFlags::RST);
    if !(contiguous && same_flow && a_open) {
        return Err(RewriteError::NotConsecutive);
    }
    Ok((pa, pb))
}

/// Where the TCP payload starts in `bytes`, and how long it is.
fn payload_range(bytes: &[u8]) -> Result<(usize, usize), RewriteError> {
    let p = Packet::parse(bytes)?;
    let len = p.tcp.payload.len();
    // Position from the raw data offset, checked against the parser's
    // view, so a flip lands exactly on a byte the receiver sees as payload.
    let start = p.ip.header.len() + tcp_header_len(bytes, p.ip.header.len())?;
    if bytes.get(start..start + len) != Some(&p.tcp.payload[..]) {
        return Err(RewriteError::UnusualHeader);
    }
    Ok((start, len))
}

fn tcp_header_len(bytes: &[u8], ip_len: usize) -> Result<usize, RewriteError> {
    let off = bytes
        .get(ip_len + 12)
        .ok_or(RewriteError::Wire(WireError::Truncated {
            what: "TCP header",
            need: ip_len + 13,
            have: bytes.len(),
        }))?;
    Ok(usize::from(off >> 4) * 4)
}

/// Flips payload bit `bit` (taken modulo the payload's bits). With
/// `fix_checksum` the packet is emitted again with a correct checksum (only
/// authentication can notice); without, the original checksum stays and no
/// longer matches (the receiver's checksum check drops it).
pub fn flip_payload_bit(
    bytes: &[u8],
    bit: u64,
    fix_checksum: bool,
) -> Result<Vec<u8>, RewriteError> {
    let (start, len) = payload_range(bytes)?;
    if len == 0 {
        return Err(RewriteError::TooShort { need: 1, have: 0 });
    }
    let bit = bit % (len as u64 * 8);
    let mut out = bytes.to_vec();
    let at = start + (bit / 8) as usize;
    if let Some(b) = out.get_mut(at) {
        *b ^= 1 << (bit % 8);
    }
    if fix_checksum {
        // Parsed again, the packet carries the flipped payload; emitting it
        // recomputes the checksum over it.
        return Ok(Packet::parse(&out)?.to_bytes()?);
    }
    Ok(out)
}

/// Whether the TCP checksum of `bytes` is correct.
pub fn tcp_checksum_ok(bytes: &[u8]) -> Result<bool, RewriteError> {
    let p = Packet::parse(bytes)?;
    let ip_len = p.ip.header.len();
    let seg_len = tcp_header_len(bytes, ip_len)? + p.tcp.payload.len();
    let seg = bytes
        .get(ip_len..ip_len + seg_len)
        .ok_or(RewriteError::UnusualHeader)?;
    Ok(checksum::tcp(p.ip.src, p.ip.dst, seg) == 0)
}

/// Sets the MSS option of a SYN to `mss`; `None` when the packet is not a
/// SYN or has no MSS option (nothing to rewrite).
pub fn rewrite_mss(bytes: &[u8], mss: u16) -> Result<Option<Vec<u8>>, RewriteError> {
    let mut p = Packet::parse(bytes)?;
    if !p.tcp.flags.contains(TcpFlags::SYN) {
        return Ok(None);
    }
    let mut found = false;
    for o in &mut p.tcp.options {
        if let TcpOption::Mss(v) = o {
            *v = mss;
            found = true;
        }
    }
    if !found {
        return Ok(None);
    }
    Ok(Some(p.to_bytes()?))
}

/// Marks an ECN-capable packet Congestion Experienced, as an AQM router
/// would; `None` for a packet that is not ECN-capable or already CE.
pub fn mark_ce(bytes: &[u8]) -> Result<Option<Vec<u8>>, RewriteError> {
    let mut p = Packet::parse(bytes)?;
    if !matches!(ecn_field(&p.ip.header), 1 | 2) {
        return Ok(None);
    }
    set_ce(&mut p.ip.header);
    // Emitting fixes the IPv4 header checksum; the TCP checksum does not
    // cover the ECN bits.
    Ok(Some(p.to_bytes()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use tcpcrypt_engine::wire::{IpLayer, TcpRepr};

    fn packet(v6: bool, seq: u32, flags: TcpFlags, payload: &[u8]) -> Vec<u8> {
        let (src, dst): (IpAddr, IpAddr) = if v6 {
            (
                Ipv6Addr::new(0xfd00, 0x77, 1, 0, 0, 0, 0, 1).into(),
                Ipv6Addr::new(0xfd00, 0x77, 2, 0, 0, 0, 0, 2).into(),
            )
        } else {
            (
                Ipv4Addr::new(10, 77, 1, 1).into(),
                Ipv4Addr::new(10, 77, 2, 2).into(),
            )
        };
        Packet {
            ip: IpLayer::new_minimal(src, dst),
            tcp: TcpRepr {
                src_port: 40000,
                dst_port: 7100,
                seq,
                ack: 99,
                flags,
                window: 500,
                urgent: 0,
                options: vec![
                    TcpOption::Nop,
                    TcpOption::Nop,
                    TcpOption::Timestamps { tsval: 1, tsecr: 2 },
                ],
                payload: payload.into(),
            },
        }
        .to_bytes()
        .unwrap()
    }

    fn data(p: &[u8]) -> (u32, Vec<u8>, TcpFlags) {
        let p = Packet::parse(p).unwrap();
        (p.tcp.seq, p.tcp.payload.to_vec(), p.tcp.flags)
    }

    fn psh_fin() -> TcpFlags {
        TcpFlags::from_bits(TcpFlags::ACK.bits() | TcpFlags::PSH.bits() | TcpFlags::FIN.bits())
    }

    #[test]
    fn split_pieces_carry_the_same_bytes_at_their_sequence_numbers_with_valid_checksums() {
        for v6 in [false, true] {
            let payload: Vec<u8> = (0..100u8).collect();
            let orig = packet(v6, 1000, psh_fin(), &payload);
            let pieces = split(&orig, &[10, 55]).unwrap();
            assert_eq!(pieces.len(), 3);
            let mut joined = Vec::new();
            let mut next = 1000u32;
            for (i, piece) in pieces.iter().enumerate() {
                assert!(tcp_checksum_ok(piece).unwrap());
                let (seq, bytes, flags) = data(piece);
                assert_eq!(seq, next);
                next = next.wrapping_add(bytes.len() as u32);
                joined.extend(bytes);
                let last = i == 2;
                assert_eq!(flags.contains(TcpFlags::FIN), last);
                assert_eq!(flags.contains(TcpFlags::PSH), last);
            }
            assert_eq!(joined, payload);
        }
    }

    #[test]
    fn split_refuses_cuts_outside_or_out_of_order() {
        let orig = packet(false, 1, TcpFlags::ACK, b"abcdef");
        for cuts in [&[0usize][..], &[6], &[3, 3], &[4, 2]] {
            assert_eq!(split(&orig, cuts), Err(RewriteError::BadCuts), "{cuts:?}");
        }
    }

    #[test]
    fn sequence_numbers_wrap_when_splitting() {
        let orig = packet(false, u32::MAX - 1, TcpFlags::ACK, b"abcd");
        let pieces = split(&orig, &[3]).unwrap();
        assert_eq!(data(&pieces[1]).0, 1);
    }

    #[test]
    fn merge_joins_consecutive_segments_and_keeps_the_later_fin() {
        let a = packet(false, 500, TcpFlags::ACK, b"hello ");
        let b = packet(false, 506, psh_fin(), b"world");
        let m = merge(&a, &b).unwrap();
        assert!(tcp_checksum_ok(&m).unwrap());
        let (seq, bytes, flags) = data(&m);
        assert_eq!((seq, bytes.as_slice()), (500, &b"hello world"[..]));
        assert!(flags.contains(TcpFlags::FIN));
    }

    #[test]
    fn merge_refuses_a_gap_or_a_fin_in_the_first() {
        let a = packet(false, 500, TcpFlags::ACK, b"hello ");
        let gap = packet(false, 507, TcpFlags::ACK, b"world");
        assert_eq!(merge(&a, &gap), Err(RewriteError::NotConsecutive));
        let fin = packet(false, 500, psh_fin(), b"hello ");
        let b = packet(false, 507, TcpFlags::ACK, b"world");
        assert_eq!(merge(&fin, &b), Err(RewriteError::NotConsecutive));
    }

    #[test]
    fn bridge_makes_three_pieces_and_the_middle_one_fits_the_limit() {
        let a_bytes: Vec<u8> = (0..40u8).collect();
        let b_bytes: Vec<u8> = (40..70u8).collect();
        let a = packet(true, 7, TcpFlags::ACK, &a_bytes);
        let b = packet(true, 47, TcpFlags::ACK, &b_bytes);
        let pieces = bridge(&a, &b, 1500).unwrap();
        assert_eq!(pieces.len(), 3);
        let lens: Vec<usize> = pieces.iter().map(|p| data(p).1.len()).collect();
        assert_eq!(lens, vec![20, 35, 15]);
        // With little room the middle piece shrinks to fit.
        let header = Packet::parse(&b).unwrap().header_len();
        let small = bridge(&a, &b, header + 10).unwrap();
        let lens: Vec<usize> = small.iter().map(|p| data(p).1.len()).collect();
        assert_eq!(lens, vec![35, 10, 25]);
        assert_eq!(small[1].len(), header + 10);
        let joined: Vec<u8> = pieces.iter().flat_map(|p| data(p).1).collect();
        assert_eq!(joined, (0..70u8).collect::<Vec<_>>());
        assert_eq!(data(&pieces[1]).0, 27);
    }

    #[test]
    fn a_flip_without_fixing_breaks_the_checksum_and_with_fixing_keeps_it() {
        for v6 in [false, true] {
            let orig = packet(v6, 1, TcpFlags::ACK, b"0123456789");
            let bad = flip_payload_bit(&orig, 13, false).unwrap();
            let good = flip_payload_bit(&orig, 13, true).unwrap();
            assert!(tcp_checksum_ok(&orig).unwrap());
            assert!(!tcp_checksum_ok(&bad).unwrap());
            assert!(tcp_checksum_ok(&good).unwrap());
            let (_, b, _) = data(&bad);
            let (_, g, _) = data(&good);
            assert_eq!(b, g, "both flip the same bit");
            let diff: Vec<usize> = (0..10).filter(|&i| b[i] != b"0123456789"[i]).collect();
            assert_eq!(diff, vec![1]);
            assert_eq!(b[1] ^ b'1', 1 << 5);
        }
    }

    #[test]
    fn no_payload_no_flip() {
        let orig = packet(false, 1, TcpFlags::ACK, b"");
        assert!(matches!(
            flip_payload_bit(&orig, 0, true),
            Err(RewriteError::TooShort { .. })
        ));
    }

    #[test]
    fn mss_is_rewritten_in_syns_only() {
        let mut syn = Packet::parse(&packet(false, 1, TcpFlags::SYN, b""))
            .unwrap()
            .into_owned();
        syn.tcp.options.insert(0, TcpOption::Mss(1460));
        let syn = syn.to_bytes().unwrap();
        let out = rewrite_mss(&syn, 536).unwrap().unwrap();
        assert_eq!(Packet::parse(&out).unwrap().tcp.mss(), Some(536));
        assert!(tcp_checksum_ok(&out).unwrap());
        let ack = packet(false, 1, TcpFlags::ACK, b"x");
        assert_eq!(rewrite_mss(&ack, 536).unwrap(), None);
        let bare_syn = packet(false, 1, TcpFlags::SYN, b"");
        assert_eq!(rewrite_mss(&bare_syn, 536).unwrap(), None);
    }

    #[test]
    fn ce_marks_only_ecn_capable_packets_and_keeps_the_ipv4_header_valid() {
        for v6 in [false, true] {
            let plain = packet(v6, 1, TcpFlags::ACK, b"x");
            assert_eq!(mark_ce(&plain).unwrap(), None, "not-ECT stays");
            let mut ect = plain.clone();
            if v6 {
                ect[1] |= 2 << 4; // ECT(0)
            } else {
                ect[1] |= 2;
                let p = Packet::parse(&ect).unwrap();
                ect = p.to_bytes().unwrap();
            }
            assert_eq!(Segment::of(&ect).unwrap().ecn, 2);
            let ce = mark_ce(&ect).unwrap().unwrap();
            assert_eq!(Segment::of(&ce).unwrap().ecn, 3);
            if !v6 {
                assert_eq!(checksum::of(&ce[..20]), 0, "IPv4 header checksum");
            }
            assert_eq!(mark_ce(&ce).unwrap(), None, "CE stays CE");
        }
    }
}
