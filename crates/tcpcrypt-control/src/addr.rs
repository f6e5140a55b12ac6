//! Socket addresses as the control protocol writes them. Both ends key a
//! connection on what these produce, so a dual-stack socket's mapped
//! address and the daemon's IPv4 key meet.

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};

/// The address the daemon knows a connection by: an IPv4-mapped IPv6
/// address becomes the IPv4 address it maps, and IPv6 scope and flow
/// information are dropped (the daemon keys on addresses and ports only).
pub fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => addr,
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
            None => SocketAddr::V6(SocketAddrV6::new(*v6.ip(), v6.port(), 0, 0)),
        },
    }
}

/// `IPV4:PORT` or `[IPV6]:PORT`, without a scope id, after [`normalize`].
pub fn to_wire(addr: SocketAddr) -> String {
    match normalize(addr) {
        SocketAddr::V4(v4) => format!("{}:{}", v4.ip(), v4.port()),
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    }
}

/// Reads `IPV4:PORT` or `[IPV6]:PORT`, normalised.
pub fn from_wire(text: &str) -> Option<SocketAddr> {
    text.parse().ok().map(normalize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv6_is_written_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:80".parse().expect("literal");
        assert_eq!(to_wire(mapped), "10.0.0.1:80");
        assert_eq!(from_wire("[::ffff:10.0.0.1]:80"), from_wire("10.0.0.1:80"));
    }

    #[test]
    fn ipv6_keeps_brackets_and_loses_its_scope() {
        let scoped = SocketAddr::V6(SocketAddrV6::new(
            "fe80::1".parse().expect("literal"),
            443,
            7,
            3,
        ));
        assert_eq!(to_wire(scoped), "[fe80::1]:443");
    }

    #[test]
    fn an_address_without_a_port_is_not_read() {
        assert_eq!(from_wire("10.0.0.2"), None);
        assert_eq!(from_wire("fd00::1:80"), None);
    }
}
