//! The Internet checksum (RFC 1071) and the TCP pseudo-headers.
//!
//! Kept in one place so no caller does ones'-complement arithmetic by hand.

use std::net::IpAddr;

/// Adds `data` to a running 32-bit ones'-complement accumulator.
pub fn accumulate(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
        // Fold early so the accumulator never overflows, however long the data.
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
