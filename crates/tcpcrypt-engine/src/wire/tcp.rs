//! TCP header view, option walk and the owned segment representation.
//!
//! `TcpPacket` is a checked view over header bytes with one accessor per
//! field; `TcpRepr` is the parsed meaning of a segment (header fields,
//! options in their original order, payload), with `parse` and `emit`
//! mirroring each other. The engine rewrites a segment by editing its repr and
//! emitting it again, which keeps option layouts the kernel chose byte-exact.
//! A parsed repr borrows its payload from the packet it was read from
//! ([`Payload`]): most rewrites replace the payload anyway (sealed or opened
//! frames), so copying it on the way in would be wasted.

use std::borrow::Cow;
use std::net::IpAddr;
use std::ops::Deref;

use super::{WireError, checksum};

/// TCP control bits (RFC 9293 section 3.1, plus ECN's ECE/CWR and AE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpFlags(u16);

impl TcpFlags {
    pub const FIN: TcpFlags = TcpFlags(0x001);
    pub const SYN: TcpFlags = TcpFlags(0x002);
    pub const RST: TcpFlags = TcpFlags(0x004);
    pub const PSH: TcpFlags = TcpFlags(0x008);
    pub const ACK: TcpFlags = TcpFlags(0x010);
    pub const URG: TcpFlags = TcpFlags(0x020);
    pub const ECE: TcpFlags = TcpFlags(0x040);
    pub const CWR: TcpFlags = TcpFlags(0x080);
    /// Low 9 bits of the 16-bit word that holds data offset and flags.
    const MASK: u16 = 0x1ff;

    pub fn from_bits(bits: u16) -> TcpFlags {
        TcpFlags(bits & Self::MASK)
    }
    pub fn bits(self) -> u16 {
        self.0
    }
    pub fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn set(&mut self, other: TcpFlags, on: bool) {
        if on {
            self.0 |= other.0;
        } else {
            self.0 &= !other.0;
        }
    }
}

impl std::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

/// Option kinds the engine reads or writes.
pub mod kind {
    pub const EOL: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WINDOW_SCALE: u8 = 3;
    pub const SACK_PERMITTED: u8 = 4;
    pub const SACK: u8 = 5;
    pub const TIMESTAMPS: u8 = 8;
    /// TCP Fast Open cookie (RFC 7413).
    pub const FAST_OPEN: u8 = 34;
    /// TCP-ENO (RFC 8547 section 4.1).
    pub const ENO: u8 = 69;
}

/// Largest TCP options area (data offset 15 words minus the fixed header).
pub const MAX_OPTIONS_LEN: usize = 40;
/// Fixed part of the TCP header.
pub const HEADER_LEN: usize = 20;

/// One TCP option as it appeared; unknown kinds keep their bytes so a
/// rewritten header carries them unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TcpOption {
    /// End of option list. Parsing stops here; bytes after it are padding.
    Eol,
    Nop,
    Mss(u16),
    WindowScale(u8),
    SackPermitted,
    /// SACK blocks as (left edge, right edge) sequence numbers.
    Sack(Vec<(u32, u32)>),
    Timestamps {
        tsval: u32,
        tsecr: u32,
    },
    /// Any other kind (ENO and TFO included), with its data after kind and
    /// length.
    Other {
        kind: u8,
        data: Vec<u8>,
    },
    /// Bytes after an option whose length was unusable: not options, but
    /// kept as they were.
    Trailing(Vec<u8>),
}

impl TcpOption {
    pub fn kind(&self) -> u8 {
        match self {
            TcpOption::Eol => kind::EOL,
            TcpOption::Nop => kind::NOP,
            TcpOption::Mss(_) => kind::MSS,
            TcpOption::WindowScale(_) => kind::WINDOW_SCALE,
            TcpOption::SackPermitted => kind::SACK_PERMITTED,
            TcpOption::Sack(_) => kind::SACK,
            TcpOption::Timestamps { .. } => kind::TIMESTAMPS,
            TcpOption::Other { kind, .. } => *kind,
            TcpOption::Trailing(bytes) => bytes.first().copied().unwrap_or(kind::EOL),
        }
    }

    /// Encoded length in bytes (never zero).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        match self {
            TcpOption::Eol | TcpOption::Nop => 1,
            TcpOption::Mss(_) => 4,
            TcpOption::WindowScale(_) => 3,
            TcpOption::SackPermitted => 2,
            TcpOption::Sack(blocks) => 2 + 8 * blocks.len(),
            TcpOption::Timestamps { .. } => 10,
            TcpOption::Other { data, .. } => 2 + data.len(),
            TcpOption::Trailing(bytes) => bytes.len(),
        }
    }

    fn emit(&self, out: &mut Vec<u8>) {
        match self {
            TcpOption::Eol | TcpOption::Nop => out.push(self.kind()),
            TcpOption::Mss(v) => {
                out.extend_from_slice(&[kind::MSS, 4]);
                out.extend_from_slice(&v.to_be_bytes());
            }
            TcpOption::WindowScale(s) => out.extend_from_slice(&[kind::WINDOW_SCALE, 3, *s]),
            TcpOption::SackPermitted => out.extend_from_slice(&[kind::SACK_PERMITTED, 2]),
            TcpOption::Sack(blocks) => {
                // Never more than four blocks fit the options area, so the
                // length byte cannot overflow.
                out.extend_from_slice(&[kind::SACK, (2 + 8 * blocks.len()) as u8]);
                for (l, r) in blocks {
                    out.extend_from_slice(&l.to_be_bytes());
                    out.extend_from_slice(&r.to_be_bytes());
                }
            }
            TcpOption::Timestamps { tsval, tsecr } => {
                out.extend_from_slice(&[kind::TIMESTAMPS, 10]);
                out.extend_from_slice(&tsval.to_be_bytes());
                out.extend_from_slice(&tsecr.to_be_bytes());
            }
            TcpOption::Other { kind, data } => {
                out.push(*kind);
                out.push((2 + data.len()) as u8);
                out.extend_from_slice(data);
            }
            TcpOption::Trailing(bytes) => out.extend_from_slice(bytes),
        }
    }

    /// The complete encoded option (kind and length included), as it goes
    /// into the ENO transcript.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        self.emit(&mut v);
        v
    }
}

/// Walks an options area the way common TCP stacks do: a known kind with a
/// length its kind does not define is kept as an opaque option, and the walk
/// stops at a length byte that is missing, below 2 or runs past the area;
/// whatever follows is kept verbatim as [`TcpOption::Trailing`] so a
/// rewritten header still carries it.
pub fn parse_options(area: &[u8]) -> Vec<TcpOption> {
    let mut opts = Vec::new();
    let mut i = 0;
    while let Some(&k) = area.get(i) {
        match k {
            kind::EOL => {
                opts.push(TcpOption::Eol);
                break;
            }
            kind::NOP => {
                opts.push(TcpOption::Nop);
                i += 1;
                continue;
            }
            _ => {}
        }
        let len = area.get(i + 1).map_or(0, |l| usize::from(*l));
        if len < 2 || i + len > area.len() {
            opts.push(TcpOption::Trailing(area[i..].to_vec()));
            break;
        }
        let data = &area[i + 2..i + len];
        let opt = match (k, data) {
            (kind::MSS, [a, b]) => TcpOption::Mss(u16::from_be_bytes([*a, *b])),
            (kind::WINDOW_SCALE, [s]) => TcpOption::WindowScale(*s),
            (kind::SACK_PERMITTED, []) => TcpOption::SackPermitted,
            (kind::SACK, _) if !data.is_empty() && data.len().is_multiple_of(8) => TcpOption::Sack(
                data.chunks_exact(8)
                    .map(|c| {
                        (
                            u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                            u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
                        )
                    })
                    .collect(),
            ),
            (kind::TIMESTAMPS, [a, b, c, d, e, f, g, h]) => TcpOption::Timestamps {
                tsval: u32::from_be_bytes([*a, *b, *c, *d]),
                tsecr: u32::from_be_bytes([*e, *f, *g, *h]),
            },
            _ => TcpOption::Other {
                kind: k,
                data: data.to_vec(),
            },
        };
        opts.push(opt);
        i += len;
    }
    opts
}

/// Encoded length of `opts`, padded to a multiple of four.
pub fn options_len(opts: &[TcpOption]) -> usize {
    let raw: usize = opts.iter().map(TcpOption::len).sum();
    raw.div_ceil(4) * 4
}

/// A checked view of a TCP header (RFC 9293 section 3.1).
#[derive(Debug)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

mod field {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ_NUM: Range<usize> = 4..8;
    pub const ACK_NUM: Range<usize> = 8..12;
    pub const OFF_FLAGS: Range<usize> = 12..14;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = TcpPacket { buffer };
        let len = p.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated {
                what: "TCP header",
                need: HEADER_LEN,
                have: len,
            });
        }
        let hl = p.header_len();
        if hl < HEADER_LEN || hl > len {
            return Err(WireError::Invalid {
                field: "TCP data offset",
                expected: "at least 5 words and within the segment",
            });
        }
        Ok(p)
    }
    fn u16_at(&self, r: std::ops::Range<usize>) -> u16 {
        let b = &self.buffer.as_ref()[r];
        u16::from_be_bytes([b[0], b[1]])
    }
    fn u32_at(&self, r: std::ops::Range<usize>) -> u32 {
        let b = &self.buffer.as_ref()[r];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
    pub fn src_port(&self) -> u16 {
        self.u16_at(field::SRC_PORT)
    }
    pub fn dst_port(&self) -> u16 {
        self.u16_at(field::DST_PORT)
    }
    pub fn seq_number(&self) -> u32 {
        self.u32_at(field::SEQ_NUM)
    }
    pub fn ack_number(&self) -> u32 {
        self.u32_at(field::ACK_NUM)
    }
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::OFF_FLAGS.start] >> 4) * 4
    }
    pub fn flags(&self) -> TcpFlags {
        TcpFlags::from_bits(self.u16_at(field::OFF_FLAGS))
    }
    pub fn window_len(&self) -> u16 {
        self.u16_at(field::WINDOW)
    }
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }
    pub fn urgent_at(&self) -> u16 {
        self.u16_at(field::URGENT)
    }
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

/// A segment's data: borrowed from the packet it was parsed from, or owned
/// once the engine put other bytes there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Payload<'a>(Cow<'a, [u8]>);

impl Payload<'_> {
    pub fn clear(&mut self) {
        self.0 = Cow::Borrowed(&[]);
    }

    /// Keeps the first `len` bytes, without copying borrowed ones.
    pub fn truncate(&mut self, len: usize) {
        match &mut self.0 {
            Cow::Borrowed(b) => *b = b.get(..len).unwrap_or(b),
            Cow::Owned(v) => v.truncate(len),
        }
    }

    /// The bytes as a vector of their own (copied if borrowed), to edit.
    pub fn to_mut(&mut self) -> &mut Vec<u8> {
        self.0.to_mut()
    }

    pub fn into_owned(self) -> Payload<'static> {
        Payload(Cow::Owned(self.0.into_owned()))
    }
}

impl Deref for Payload<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl<'p> IntoIterator for &'p Payload<'_> {
    type Item = &'p u8;
    type IntoIter = std::slice::Iter<'p, u8>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl AsRef<[u8]> for Payload<'_> {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Payload<'_> {
    fn from(v: Vec<u8>) -> Self {
        Payload(Cow::Owned(v))
    }
}

impl<'a> From<&'a [u8]> for Payload<'a> {
    fn from(b: &'a [u8]) -> Self {
        Payload(Cow::Borrowed(b))
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for Payload<'a> {
    fn from(b: &'a [u8; N]) -> Self {
        Payload(Cow::Borrowed(b))
    }
}

impl PartialEq<[u8]> for Payload<'_> {
    fn eq(&self, other: &[u8]) -> bool {
        *self.0 == *other
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for Payload<'_> {
    fn eq(&self, other: &&[u8; N]) -> bool {
        *self.0 == other[..]
    }
}

impl PartialEq<Vec<u8>> for Payload<'_> {
    fn eq(&self, other: &Vec<u8>) -> bool {
        *self.0 == other[..]
    }
}

/// The meaning of a TCP segment, addresses included (they enter the
/// checksum and key the connection table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpRepr<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    pub window: u16,
    pub urgent: u16,
    pub options: Vec<TcpOption>,
    pub payload: Payload<'a>,
}

impl<'a> TcpRepr<'a> {
    /// Parses segment bytes. The checksum is not verified: NFQUEUE hands
    /// over locally generated packets whose checksum may be left for the
    /// NIC, and the peer's TCP verifies wire checksums anyway.
    pub fn parse(segment: &'a [u8]) -> Result<TcpRepr<'a>, WireError> {
        let p = TcpPacket::new_checked(segment)?;
        Ok(TcpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq: p.seq_number(),
            ack: p.ack_number(),
            flags: p.flags(),
            window: p.window_len(),
            urgent: p.urgent_at(),
            options: parse_options(p.options()),
            payload: Payload::from(&segment[p.header_len()..]),
        })
    }

    /// The same segment with a payload of its own.
    pub fn into_owned(self) -> TcpRepr<'static> {
        TcpRepr {
            src_port: self.src_port,
            dst_port: self.dst_port,
            seq: self.seq,
            ack: self.ack,
            flags: self.flags,
            window: self.window,
            urgent: self.urgent,
            options: self.options,
            payload: self.payload.into_owned(),
        }
    }

    pub fn header_len(&self) -> usize {
        HEADER_LEN + options_len(&self.options)
    }

    /// Sequence space the segment occupies: payload plus one each for SYN
    /// and FIN.
    pub fn seq_len(&self) -> u32 {
        let mut n = self.payload.len() as u32;
        if self.flags.contains(TcpFlags::SYN) {
            n = n.wrapping_add(1);
        }
        if self.flags.contains(TcpFlags::FIN) {
            n = n.wrapping_add(1);
        }
        n
    }

    pub fn option(&self, k: u8) -> Option<&TcpOption> {
        self.options.iter().find(|o| o.kind() == k)
    }

    pub fn mss(&self) -> Option<u16> {
        self.options.iter().find_map(|o| match o {
            TcpOption::Mss(v) => Some(*v),
            _ => None,
        })
    }

    pub fn window_scale(&self) -> Option<u8> {
        self.options.iter().find_map(|o| match o {
            TcpOption::WindowScale(v) => Some(*v),
            _ => None,
        })
    }

    pub fn timestamps(&self) -> Option<(u32, u32)> {
        self.options.iter().find_map(|o| match o {
            TcpOption::Timestamps { tsval, tsecr } => Some((*tsval, *tsecr)),
            _ => None,
        })
    }

    /// Serialises the segment with a correct checksum for `src` → `dst`.
    /// Fails if the options no longer fit the 40-byte area.
    pub fn emit(&self, src: IpAddr, dst: IpAddr, out: &mut Vec<u8>) -> Result<(), WireError> {
        out.clear();
        self.emit_after(src, dst, out)
    }

    /// Like [`TcpRepr::emit`], but appends the segment to what `out`
    /// already holds (an IP header), so a packet is written in one pass
    /// with no intermediate copy of its payload.
    pub fn emit_after(&self, src: IpAddr, dst: IpAddr, out: &mut Vec<u8>) -> Result<(), WireError> {
        self.emit_gathered(src, dst, out, std::iter::empty())
    }

    /// Like [`TcpRepr::emit_after`], with the bytes of `more` following the
    /// payload: data that lies in several buffers reaches the packet in one
    /// copy, without being joined first.
    pub fn emit_gathered<'m>(
        &self,
        src: IpAddr,
        dst: IpAddr,
        out: &mut Vec<u8>,
        more: impl Iterator<Item = &'m [u8]> + Clone,
    ) -> Result<(), WireError> {
        let opt_len = options_len(&self.options);
        if opt_len > MAX_OPTIONS_LEN {
            return Err(WireError::TooLong {
                what: "TCP options",
                len: opt_len,
            });
        }
        let hl = HEADER_LEN + opt_len;
        let start = out.len();
        let more_len: usize = more.clone().map(<[u8]>::len).sum();
        out.reserve(hl + self.payload.len() + more_len);
        out.extend_from_slice(&self.src_port.to_be_bytes());
        out.extend_from_slice(&self.dst_port.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.ack.to_be_bytes());
        // hl <= 60, so the data offset fits its four bits.
        let off_flags = ((hl as u16 / 4) << 12) | self.flags.bits();
        out.extend_from_slice(&off_flags.to_be_bytes());
        out.extend_from_slice(&self.window.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.urgent.to_be_bytes());
        for o in &self.options {
            o.emit(out);
        }
        // Pad with EOL: after the last option they mean "nothing more".
        out.resize(start + hl, kind::EOL);
        out.extend_from_slice(&self.payload);
        for piece in more {
            out.extend_from_slice(piece);
        }
        let seg = &mut out[start..];
        let c = checksum::tcp(src, dst, seg);
        seg[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn sample() -> TcpRepr<'static> {
        TcpRepr {
            src_port: 40000,
            dst_port: 80,
            seq: 0xdead_beef,
            ack: 7,
            flags: TcpFlags::SYN | TcpFlags::ECE | TcpFlags::CWR,
            window: 64240,
            urgent: 0,
            options: vec![
                TcpOption::Mss(1460),
                TcpOption::SackPermitted,
                TcpOption::Timestamps { tsval: 1, tsecr: 0 },
                TcpOption::Nop,
                TcpOption::WindowScale(7),
            ],
            payload: Payload::default(),
        }
    }

    #[test]
    fn emit_then_parse_gives_back_the_same_segment() {
        let r = sample();
        let mut buf = Vec::new();
        let a = Ipv4Addr::new(10, 0, 0, 1).into();
        let b = Ipv4Addr::new(10, 0, 0, 2).into();
        r.emit(a, b, &mut buf).unwrap();
        assert_eq!(buf.len(), 40);
        assert_eq!(TcpRepr::parse(&buf).unwrap(), r);
        // The checksum field makes the whole segment sum to zero.
        assert_eq!(checksum::tcp(a, b, &buf), 0);
    }

    #[test]
    fn an_option_running_past_the_area_ends_the_walk_and_is_kept_verbatim() {
        assert_eq!(
            parse_options(&[kind::NOP, kind::MSS, 4, 5]),
            vec![TcpOption::Nop, TcpOption::Trailing(vec![kind::MSS, 4, 5])]
        );
        assert_eq!(
            parse_options(&[kind::ENO, 1]),
            vec![TcpOption::Trailing(vec![kind::ENO, 1])]
        );
    }

    #[test]
    fn a_known_kind_with_a_wrong_length_is_kept_opaque() {
        assert_eq!(
            parse_options(&[kind::MSS, 3, 5]),
            vec![TcpOption::Other {
                kind: kind::MSS,
                data: vec![5]
            }]
        );
    }

    #[test]
    fn unknown_options_keep_their_bytes() {
        let opts = parse_options(&[kind::ENO, 4, 0x01, 0x23, kind::EOL, 9, 9]);
        assert_eq!(
            opts,
            vec![
                TcpOption::Other {
                    kind: kind::ENO,
                    data: vec![0x01, 0x23]
                },
                TcpOption::Eol
            ]
        );
        assert_eq!(opts[0].to_bytes(), vec![kind::ENO, 4, 0x01, 0x23]);
    }

    #[test]
    fn options_over_forty_bytes_are_refused_on_emit() {
        let mut r = sample();
        r.options.push(TcpOption::Other {
            kind: kind::ENO,
            data: vec![0; 20],
        });
        let mut buf = Vec::new();
        let a = Ipv4Addr::LOCALHOST.into();
        assert!(r.emit(a, a, &mut buf).is_err());
    }
}
