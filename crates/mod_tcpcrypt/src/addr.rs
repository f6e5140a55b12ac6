//! Turns the pieces of an `apr_sockaddr_t` (family, raw address bytes, port)
//! into a `SocketAddr`, so the FFI layer only copies bytes out of httpd's
//! structures and the decision about what they mean is tested here.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// The address family as APR reports it (`APR_INET`/`APR_INET6` have the
/// values of `AF_INET`/`AF_INET6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Inet,
    Inet6,
    /// A Unix socket or anything else a lookup cannot name.
    Other,
}

impl Family {
    pub fn from_raw(family: i32) -> Self {
        match family {
            libc::AF_INET => Self::Inet,
            libc::AF_INET6 => Self::Inet6,
            _ => Self::Other,
        }
    }
}

/// The socket address, or `None` when the family has no IP address or the
/// byte count does not fit it (a connection on a Unix socket, or a damaged
/// record: either way there is nothing to look up).
pub fn socket_addr(family: Family, ip: &[u8], port: u16) -> Option<SocketAddr> {
    match family {
        Family::Inet => {
            let octets: [u8; 4] = ip.try_into().ok()?;
            Some(SocketAddr::from((Ipv4Addr::from(octets), port)))
        }
        Family::Inet6 => {
            let octets: [u8; 16] = ip.try_into().ok()?;
            Some(SocketAddr::from((Ipv6Addr::from(octets), port)))
        }
        Family::Other => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_bytes_are_in_network_order() {
        assert_eq!(
            socket_addr(Family::Inet, &[10, 0, 0, 2], 80),
            Some("10.0.0.2:80".parse().unwrap_or_else(|e| panic!("{e}")))
        );
    }

    #[test]
    fn ipv6_address_keeps_its_port() {
        let mut ip = [0u8; 16];
        ip[0] = 0xfd;
        ip[15] = 1;
        assert_eq!(
            socket_addr(Family::Inet6, &ip, 443),
            Some("[fd00::1]:443".parse().unwrap_or_else(|e| panic!("{e}")))
        );
    }

    #[test]
    fn wrong_length_for_the_family_gives_no_address() {
        assert_eq!(socket_addr(Family::Inet, &[1, 2, 3], 80), None);
        assert_eq!(socket_addr(Family::Inet6, &[1, 2, 3, 4], 80), None);
    }

    #[test]
    fn unix_socket_connections_have_no_address() {
        assert_eq!(Family::from_raw(libc::AF_UNIX), Family::Other);
        assert_eq!(socket_addr(Family::Other, &[127, 0, 0, 1], 80), None);
    }

    #[test]
    fn apr_family_values_are_the_kernels() {
        assert_eq!(Family::from_raw(libc::AF_INET), Family::Inet);
        assert_eq!(Family::from_raw(libc::AF_INET6), Family::Inet6);
    }
}
