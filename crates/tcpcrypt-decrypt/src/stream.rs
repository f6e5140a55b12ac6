//! One direction of a TCP connection as captured: its initial sequence
//! number, the ENO option of its SYN, and its payload reassembled from
//! segments that may repeat, overlap or arrive out of order.

use std::collections::BTreeMap;

/// Streams longer than this are not reassembled further: a relative
/// offset must stay unambiguous in the 32-bit sequence space.
pub const MAX_STREAM: u32 = 1 << 31;

#[derive(Debug, Default)]
pub struct Direction {
    /// Sequence number of the SYN.
    pub isn: Option<u32>,
    /// The whole ENO option of the SYN (kind and length included).
    pub eno_option: Option<Vec<u8>>,
    /// A FIN or RST of this direction was captured.
    pub closed: bool,
    /// Payload pieces by offset from ISN+1; at one offset the longest wins.
    pieces: BTreeMap<u32, Vec<u8>>,
}

/// A reassembled stream: the bytes from offset 0 up to the first hole.
#[derive(Debug, Default)]
pub struct Stream {
    pub bytes: Vec<u8>,
    /// Offset of the first missing byte when later bytes were captured.
    pub hole_at: Option<u64>,
}

impl Direction {
    /// Offset of sequence number `seq` from ISN+1, if the SYN was seen and
    /// the offset is in range.
    pub fn offset_of(&self, seq: u32) -> Option<u32> {
        let off = seq.wrapping_sub(self.isn?.wrapping_add(1));
        (off < MAX_STREAM).then_some(off)
    }

    pub fn add(&mut self, seq: u32, payload: &[u8]) {
        if payload.is_empty() {
            return;
        }
        let Some(off) = self.offset_of(seq) else {
            return;
        };
        let slot = self.pieces.entry(off).or_default();
        if payload.len() > slot.len() {
            *slot = payload.to_vec();
        }
    }

    pub fn reassemble(&self) -> Stream {
        let mut s = Stream::default();
        for (&off, piece) in &self.pieces {
            let (off, have) = (off as usize, s.bytes.len());
            if off > have {
                s.hole_at = Some(have as u64);
                break;
            }
            if let Some(new) = piece.get(have - off..) {
                s.bytes.extend_from_slice(new);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reassembles_repeats_overlaps_and_reordering_and_stops_at_a_hole() {
        let mut d = Direction {
            isn: Some(u32::MAX - 2),
            ..Direction::default()
        };
        let base = u32::MAX - 1; // ISN+1, so the stream wraps the sequence space
        d.add(base.wrapping_add(3), b"defg");
        d.add(base, b"abc");
        d.add(base, b"ab");
        d.add(base.wrapping_add(2), b"cde");
        d.add(base.wrapping_add(10), b"zz");
        let s = d.reassemble();
        assert_eq!(s.bytes, b"abcdefg");
        assert_eq!(s.hole_at, Some(7));
    }
}
