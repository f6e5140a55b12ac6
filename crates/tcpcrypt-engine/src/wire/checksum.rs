//! The Internet checksum (RFC 1071) and the TCP pseudo-headers.
//!
//! Kept in one place so no caller does ones'-complement arithmetic by hand.

use std::net::IpAddr;

/// Adds `data` to a running 32-bit ones'-complement accumulator.
///
/// Every data packet is summed at least once, so this is on the hot path.
/// The ones'-complement sum does not depend on byte order (RFC 1071 section
/// 2(B)): the bytes are added as 32-bit words in the machine's own order,
/// without swapping each, into eight independent 64-bit lanes (no carry
/// handling needed below 2^32 words, and the lanes let the compiler use
/// vector additions), folded to 16 bits and swapped once at the end. Since
/// 2^16 ≡ 1 modulo 2^16 - 1, summing 32-bit words and folding gives the same
/// sum as summing 16-bit words. A trailing part shorter than a block is
/// summed as a zero-padded block, which also puts an odd last byte in the
/// high half of its 16-bit word, as the RFC wants.
pub fn accumulate(sum: u32, data: &[u8]) -> u32 {
    const BLOCK: usize = 32;
    let mut lanes = [0u64; 8];
    let mut add_block = |b: &[u8]| {
        for (lane, w) in lanes.iter_mut().zip(b.chunks_exact(4)) {
            *lane += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
        }
    };
    let mut blocks = data.chunks_exact(BLOCK);
    for b in &mut blocks {
        add_block(b);
    }
    let rest = blocks.remainder();
    if !rest.is_empty() {
        let mut padded = [0u8; BLOCK];
        padded[..rest.len()].copy_from_slice(rest);
        add_block(&padded);
    }
    // Each lane is below 2^32 times the number of blocks; their sum cannot
    // overflow 64 bits for any slice that fits in memory.
    let mut total: u64 = lanes.iter().sum();
    while total > 0xffff {
        total = (total & 0xffff) + (total >> 16);
    }
    // Folded to 16 bits in machine order; in network order for the caller.
    let data_sum = u32::from(u16::from_be(total as u16));
    // Below 2^17, which `finish` or a further `accumulate` takes.
    let sum = u64::from(sum) + u64::from(data_sum);
    ((sum & 0xffff) + (sum >> 16)) as u32
}

/// The plain RFC 1071 loop, kept to check the fast one against.
#[cfg(test)]
fn accumulate_reference(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// Folds an accumulator and complements it: the value that goes in a header.
pub fn finish(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The checksum of `data` alone (used for the IPv4 header).
pub fn of(data: &[u8]) -> u16 {
    finish(accumulate(0, data))
}

/// The accumulator of the TCP pseudo-header for `src`, `dst` and a TCP
/// length of `tcp_len` bytes (RFC 9293 section 3.1, RFC 8200 section 8.1).
pub fn pseudo_header(src: IpAddr, dst: IpAddr, tcp_len: usize) -> u32 {
    pseudo_header_for(src, dst, tcp_len, 6)
}

/// The pseudo-header accumulator for another upper-layer protocol (ICMPv6
/// uses the same layout).
pub fn pseudo_header_for(src: IpAddr, dst: IpAddr, len: usize, proto: u8) -> u32 {
    let mut sum = 0;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            sum = accumulate(sum, &s.octets());
            sum = accumulate(sum, &d.octets());
        }
        (s, d) => {
            sum = accumulate(sum, &to_v6_octets(s));
            sum = accumulate(sum, &to_v6_octets(d));
        }
    }
    // A segment inside an IP packet is below 2^32 bytes by construction.
    let len = len as u32;
    sum = accumulate(sum, &len.to_be_bytes());
    accumulate(sum, &u32::from(proto).to_be_bytes())
}

fn to_v6_octets(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The checksum of a whole TCP segment (header with its checksum field zeroed
/// or not: the caller decides) under the given pseudo-header.
pub fn tcp(src: IpAddr, dst: IpAddr, segment: &[u8]) -> u16 {
    finish(accumulate(pseudo_header(src, dst, segment.len()), segment))
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 1071 section 3 example: the sum of 0001 f203 f4f5 f6f7 is ddf2
    // (before complementing).
    #[test]
    fn rfc1071_example_sums_to_ddf2() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish(accumulate(0, &data)), !0xddf2);
    }

    proptest::proptest! {
        #[test]
        fn the_fast_sum_equals_the_reference_loop(
            start in 0u32..0x2_0000,
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000),
        ) {
            proptest::prop_assert_eq!(
                finish(accumulate(start, &data)),
                finish(accumulate_reference(start, &data))
            );
        }
    }

    #[test]
    fn all_ones_data_of_every_length_matches_the_reference() {
        let data = vec![0xff; 2000];
        for n in 0..data.len() {
            assert_eq!(
                finish(accumulate(0xffff, &data[..n])),
                finish(accumulate_reference(0xffff, &data[..n])),
                "length {n}"
            );
        }
    }

    #[test]
    fn odd_length_pads_with_a_zero_byte() {
        assert_eq!(of(&[0x12, 0x34, 0x56]), of(&[0x12, 0x34, 0x56, 0x00]));
    }

    // A header with a correct checksum in place sums to zero.
    #[test]
    fn a_correct_ipv4_header_verifies_to_zero() {
        // Well-known example header (Wikipedia "IPv4 header checksum").
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(of(&hdr), 0);
    }
}
