//! IPv4 and IPv6 header views: just enough to find the TCP segment inside a
//! packet, learn its addresses, and rewrite lengths and checksums.
//!
//! Fragments, non-TCP packets and anything malformed are reported as errors;
//! for TCP fragments and cut-short segments [`TcpRemnant`] still reads the
//! addresses and, where present, the ports, so the engine can tell whether
//! such a packet may belong to an encrypted connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{WireError, checksum};

/// IP protocol / IPv6 next-header number of TCP.
pub const PROTO_TCP: u8 = 6;

/// A read/write view of an IPv4 header (RFC 791).
#[derive(Debug)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

mod v4field {
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: Range<usize> = 2..4;
    pub const FLAGS_FRAG: Range<usize> = 6..8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
    pub const MIN_HEADER_LEN: usize = 20;
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buffer` after checking that every accessor stays in bounds.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Ipv4Packet { buffer };
        let b = p.buffer.as_ref();
        if b.len() < v4field::MIN_HEADER_LEN {
            return Err(WireError::Truncated {
                what: "IPv4 header",
                need: v4field::MIN_HEADER_LEN,
                have: b.len(),
            });
        }
        if p.version() != 4 {
            return Err(WireError::Invalid {
                field: "IPv4 version",
                expected: "4",
            });
        }
        let hl = p.header_len();
        if hl < v4field::MIN_HEADER_LEN || hl > b.len() {
            return Err(WireError::Invalid {
                field: "IPv4 IHL",
                expected: "at least 5 words and within the packet",
            });
        }
        let tl = usize::from(p.total_len());
        if tl < hl || tl > b.len() {
            return Err(WireError::Invalid {
                field: "IPv4 total length",
                expected: "between the header length and the buffer length",
            });
        }
        Ok(p)
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    pub fn version(&self) -> u8 {
        self.b()[v4field::VER_IHL] >> 4
    }
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[v4field::VER_IHL] & 0x0f) * 4
    }
    pub fn total_len(&self) -> u16 {
        u16::from_be_bytes([self.b()[2], self.b()[3]])
    }
    /// More-fragments flag set or a non-zero fragment offset.
    pub fn is_fragment(&self) -> bool {
        let ff = u16::from_be_bytes([self.b()[6], self.b()[7]]);
        ff & 0x3fff != 0
    }
    /// Where this fragment's data sits in the original payload, in 8-byte
    /// units (0 for the first fragment and for unfragmented packets).
    pub fn fragment_offset(&self) -> u16 {
        u16::from_be_bytes([self.b()[6], self.b()[7]]) & 0x1fff
    }
    pub fn protocol(&self) -> u8 {
        self.b()[v4field::PROTOCOL]
    }
    pub fn src(&self) -> Ipv4Addr {
        let s = &self.b()[v4field::SRC];
        Ipv4Addr::new(s[0], s[1], s[2], s[3])
    }
    pub fn dst(&self) -> Ipv4Addr {
        let d = &self.b()[v4field::DST];
        Ipv4Addr::new(d[0], d[1], d[2], d[3])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    pub fn set_total_len(&mut self, len: u16) {
        self.buffer.as_mut()[v4field::TOTAL_LEN].copy_from_slice(&len.to_be_bytes());
    }
    /// Recomputes the header checksum over the header as it now stands.
    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        let buf = self.buffer.as_mut();
        buf[v4field::CHECKSUM].copy_from_slice(&[0, 0]);
        let c = checksum::of(&buf[..hl]);
        buf[v4field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }
    /// Clears the fragment offset bits we never produce, keeping DF.
    pub fn clear_fragment_offset(&mut self) {
        let buf = self.buffer.as_mut();
        buf[v4field::FLAGS_FRAG.start] &= 0x40;
        buf[v4field::FLAGS_FRAG.start + 1] = 0;
    }
}

/// A read/write view of an IPv6 fixed header (RFC 8200) and the extension
/// headers that may precede TCP.
#[derive(Debug)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

mod v6field {
    use std::ops::Range;
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
    pub const HEADER_LEN: usize = 40;
}

/// Extension headers that may sit between the IPv6 header and TCP and that
/// share the generic `next header | length in 8-octet units` layout.
const V6_HOP_BY_HOP: u8 = 0;
const V6_ROUTING: u8 = 43;
const V6_FRAGMENT: u8 = 44;
const V6_DEST_OPTS: u8 = 60;

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Ipv6Packet { buffer };
        let b = p.buffer.as_ref();
        if b.len() < v6field::HEADER_LEN {
            return Err(WireError::Truncated {
                what: "IPv6 header",
                need: v6field::HEADER_LEN,
                have: b.len(),
            });
        }
        if b[0] >> 4 != 6 {
            return Err(WireError::Invalid {
                field: "IPv6 version",
                expected: "6",
            });
        }
        let end = v6field::HEADER_LEN + usize::from(p.payload_len());
        if end > b.len() {
            return Err(WireError::Invalid {
                field: "IPv6 payload length",
                expected: "within the buffer (jumbograms are not supported)",
            });
        }
        Ok(p)
    }
    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    pub fn payload_len(&self) -> u16 {
        u16::from_be_bytes([self.b()[4], self.b()[5]])
    }
    pub fn src(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.b()[v6field::SRC]);
        Ipv6Addr::from(a)
    }
    pub fn dst(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.b()[v6field::DST]);
        Ipv6Addr::from(a)
    }
    /// Walks the extension headers and returns `(upper protocol, offset of
    /// its header)`. A fragment header ends the walk with an error: the
    /// engine cannot rewrite a fragment of a segment.
    pub fn upper_layer(&self) -> Result<(u8, usize), WireError> {
        match self.walk()? {
            V6Walk {
                fragment: None,
                next,
                offset,
            } => Ok((next, offset)),
            V6Walk {
                fragment: Some(_), ..
            } => Err(WireError::Unsupported("IPv6 fragment")),
        }
    }

    /// Follows the extension header chain. Past the fragment header of a
    /// first fragment the walk goes on (its fragmentable part starts with
    /// the upper-layer header); in a later fragment it stops right after
    /// the fragment header, whose next-header field still names what the
    /// fragmentable part started with.
    fn walk(&self) -> Result<V6Walk, WireError> {
        let b = self.b();
        let end = v6field::HEADER_LEN + usize::from(self.payload_len());
        let mut next = b[v6field::NEXT_HEADER];
        let mut off = v6field::HEADER_LEN;
        let mut fragment = None;
        let truncated = |need: usize| WireError::Truncated {
            what: "IPv6 extension header",
            need,
            have: end,
        };
        loop {
            match next {
                V6_HOP_BY_HOP | V6_ROUTING | V6_DEST_OPTS => {
                    let hdr = b
                        .get(off..off + 2)
                        .filter(|_| off + 2 <= end)
                        .ok_or(truncated(off + 2))?;
                    next = hdr[0];
                    off += (usize::from(hdr[1]) + 1) * 8;
                    if off > end {
                        return Err(truncated(off));
                    }
                }
                V6_FRAGMENT if fragment.is_none() => {
                    let hdr = b
                        .get(off..off + V6_FRAGMENT_HEADER_LEN)
                        .filter(|_| off + V6_FRAGMENT_HEADER_LEN <= end)
                        .ok_or(truncated(off + V6_FRAGMENT_HEADER_LEN))?;
                    next = hdr[0];
                    let frag_offset = u16::from_be_bytes([hdr[2], hdr[3]]) >> 3;
                    off += V6_FRAGMENT_HEADER_LEN;
                    fragment = Some(frag_offset);
                    if frag_offset != 0 {
                        return Ok(V6Walk {
                            next,
                            offset: off,
                            fragment,
                        });
                    }
                }
                V6_FRAGMENT => {
                    return Err(WireError::Invalid {
                        field: "IPv6 fragment header",
                        expected: "at most one per packet",
                    });
                }
                proto => {
                    return Ok(V6Walk {
                        next: proto,
                        offset: off,
                        fragment,
                    });
                }
            }
        }
    }
}

/// Where the extension header walk of an IPv6 packet ended.
struct V6Walk {
    /// The protocol of the header at `offset`.
    next: u8,
    offset: usize,
    /// The fragment offset (in 8-byte units) if the packet is a fragment.
    fragment: Option<u16>,
}

const V6_FRAGMENT_HEADER_LEN: usize = 8;

/// What can still be learned from an IP packet carrying TCP that
/// [`IpLayer::parse`] refuses or whose TCP header does not parse: a
/// fragment, or a segment cut short. The engine cannot rewrite such a
/// packet, but must still know whether it belongs to an encrypted
/// connection, so that it never lets one pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpRemnant {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// (source port, destination port), when the bytes that hold them are
    /// present: not in a fragment other than the first.
    pub ports: Option<(u16, u16)>,
}

impl TcpRemnant {
    /// Reads `packet` as far as a valid IP header allows. `None` when the IP
    /// header itself is unreadable or the packet is certainly not TCP.
    pub fn peek(packet: &[u8]) -> Option<TcpRemnant> {
        let ports_at = |seg: Option<&[u8]>| {
            seg.and_then(|s| s.get(0..4)).map(|p| {
                (
                    u16::from_be_bytes([p[0], p[1]]),
                    u16::from_be_bytes([p[2], p[3]]),
                )
            })
        };
        match packet.first().map(|b| b >> 4) {
            Some(4) => {
                let p = Ipv4Packet::new_checked(packet).ok()?;
                if p.protocol() != PROTO_TCP {
                    return None;
                }
                let first = p.fragment_offset() == 0;
                let seg = packet.get(p.header_len()..usize::from(p.total_len()));
                Some(TcpRemnant {
                    src: p.src().into(),
                    dst: p.dst().into(),
                    ports: if first { ports_at(seg) } else { None },
                })
            }
            Some(6) => {
                let p = Ipv6Packet::new_checked(packet).ok()?;
                let walk = p.walk().ok()?;
                let later_fragment = walk.fragment.is_some_and(|o| o != 0);
                let maybe_tcp = match walk.next {
                    PROTO_TCP => true,
                    // A later fragment only names the first header of the
                    // fragmentable part, which may precede TCP.
                    V6_HOP_BY_HOP | V6_ROUTING | V6_DEST_OPTS => later_fragment,
                    _ => false,
                };
                if !maybe_tcp {
                    return None;
                }
                let end = v6field::HEADER_LEN + usize::from(p.payload_len());
                let seg = packet.get(walk.offset..end);
                Some(TcpRemnant {
                    src: p.src().into(),
                    dst: p.dst().into(),
                    ports: if later_fragment { None } else { ports_at(seg) },
                })
            }
            _ => None,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[v6field::PAYLOAD_LEN].copy_from_slice(&len.to_be_bytes());
    }
}

/// What the engine needs from the IP layer of a packet holding a TCP segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpLayer {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Every byte before the TCP header (IPv4 header with options, or IPv6
    /// header with extension headers), kept so that a rewritten packet keeps
    /// TTL, TOS/ECN, flow label and the rest as the kernel set them.
    pub header: Vec<u8>,
}

impl IpLayer {
    /// Splits `packet` into its IP layer and the TCP segment bytes.
    pub fn parse(packet: &[u8]) -> Result<(IpLayer, &[u8]), WireError> {
        match packet.first().map(|b| b >> 4) {
            Some(4) => {
                let p = Ipv4Packet::new_checked(packet)?;
                if p.is_fragment() {
                    return Err(WireError::Unsupported("IPv4 fragment"));
                }
                if p.protocol() != PROTO_TCP {
                    return Err(WireError::Unsupported("not TCP"));
                }
                let hl = p.header_len();
                let tl = usize::from(p.total_len());
                Ok((
                    IpLayer {
                        src: p.src().into(),
                        dst: p.dst().into(),
                        header: packet[..hl].to_vec(),
                    },
                    &packet[hl..tl],
                ))
            }
            Some(6) => {
                let p = Ipv6Packet::new_checked(packet)?;
                let (proto, off) = p.upper_layer()?;
                if proto != PROTO_TCP {
                    return Err(WireError::Unsupported("not TCP"));
                }
                let end = v6field::HEADER_LEN + usize::from(p.payload_len());
                Ok((
                    IpLayer {
                        src: p.src().into(),
                        dst: p.dst().into(),
                        header: packet[..off].to_vec(),
                    },
                    &packet[off..end],
                ))
            }
            Some(_) => Err(WireError::Invalid {
                field: "IP version",
                expected: "4 or 6",
            }),
            None => Err(WireError::Truncated {
                what: "IP header",
                need: 1,
                have: 0,
            }),
        }
    }

    /// A minimal header for a packet the engine makes from nothing
    /// (default TTL/hop limit 64, DF set on IPv4, no options).
    pub fn new_minimal(src: IpAddr, dst: IpAddr) -> IpLayer {
        let header = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, PROTO_TCP, 0, 0];
                h.extend_from_slice(&s.octets());
                h.extend_from_slice(&d.octets());
                h
            }
            _ => {
                let to6 = |a: IpAddr| match a {
                    IpAddr::V4(a) => a.to_ipv6_mapped(),
                    IpAddr::V6(a) => a,
                };
                let mut h = vec![0x60, 0, 0, 0, 0, 0, PROTO_TCP, 64];
                h.extend_from_slice(&to6(src).octets());
                h.extend_from_slice(&to6(dst).octets());
                h
            }
        };
        IpLayer { src, dst, header }
    }

    /// The same IP layer with source and destination swapped, for a packet
    /// travelling the other way (options and extension headers dropped).
    pub fn reversed_minimal(&self) -> IpLayer {
        IpLayer::new_minimal(self.dst, self.src)
    }

    /// Writes this IP header followed by `tcp` into `out` (replacing its
    /// contents), with lengths and the IPv4 header checksum fixed. Fails only
    /// when the result would not fit an IP length field.
    pub fn emit(&self, tcp: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
        out.clear();
        out.extend_from_slice(&self.header);
        out.extend_from_slice(tcp);
        self.fix_lengths(out)
    }

    /// Sets the length fields (and the IPv4 header checksum) of `out`,
    /// which holds this header followed by the upper-layer bytes.
    pub(crate) fn fix_lengths(&self, out: &mut [u8]) -> Result<(), WireError> {
        match self.header.first().map(|b| b >> 4) {
            Some(4) => {
                let total = u16::try_from(out.len()).map_err(|_| WireError::TooLong {
                    what: "IPv4 packet",
                    len: out.len(),
                })?;
                let mut p = Ipv4Packet::new_unchecked(&mut *out);
                p.set_total_len(total);
                p.fill_checksum();
            }
            _ => {
                let payload = out.len().saturating_sub(v6field::HEADER_LEN);
                let len = u16::try_from(payload).map_err(|_| WireError::TooLong {
                    what: "IPv6 payload",
                    len: payload,
                })?;
                Ipv6Packet::new_unchecked(&mut *out).set_payload_len(len);
            }
        }
        Ok(())
    }
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer the caller built itself (at least a minimal header).
    fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }
}
