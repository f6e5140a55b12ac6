//! Sequence numbers ↔ stream offsets.
//!
//! The engine reasons in 64-bit stream offsets (0 = the byte at ISN+1) so
//! that nothing wraps; a 32-bit sequence number from a header is turned into
//! an offset relative to a nearby known offset (RFC 9293 comparisons are
//! modulo 2^32 and only meaningful within ±2^31).

/// One direction's sequence space, anchored at its initial sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqSpace {
    isn: u32,
}

impl SeqSpace {
    pub fn new(isn: u32) -> SeqSpace {
        SeqSpace { isn }
    }

    pub fn isn(&self) -> u32 {
        self.isn
    }

    /// The sequence number of stream offset `off` (offset −1 is the SYN).
    pub fn seq(&self, off: i64) -> u32 {
        // Truncation to 32 bits is the point: sequence numbers wrap.
        self.isn.wrapping_add(1).wrapping_add(off as u32)
    }

    /// The offset of `seq`, taking the one closest to `near`.
    pub fn offset(&self, seq: u32, near: i64) -> i64 {
        let delta = seq.wrapping_sub(self.seq(near)) as i32;
        near + i64::from(delta)
    }
}

#[cfg(test)]
mod tests {
    use super::SeqSpace;

    #[test]
    fn offsets_survive_sequence_wraparound() {
        let s = SeqSpace::new(u32::MAX - 10);
        assert_eq!(s.seq(-1), u32::MAX - 10);
        assert_eq!(s.seq(0), u32::MAX - 9);
        let far = 5_000_000_000i64;
        assert_eq!(s.offset(s.seq(far), far - 1000), far);
        assert_eq!(s.offset(s.seq(far - 70_000), far), far - 70_000);
        assert_eq!(s.offset(s.isn(), 0), -1);
    }
}
