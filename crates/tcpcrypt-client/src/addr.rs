//! The addresses of a TCP socket read from its file descriptor, normalised
//! as the control protocol keys connections (`tcpcrypt_control`).

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use tcpcrypt_control::normalize_addr as normalize;

use crate::error::Error;

/// The local (`getsockname`) and remote (`getpeername`) addresses of a
/// connected IPv4 or IPv6 TCP socket, normalised.
pub fn socket_pair(fd: RawFd) -> Result<(SocketAddr, SocketAddr), Error> {
    check_tcp(fd)?;
    let local = read_addr(fd, Side::Local)?;
    let remote = read_addr(fd, Side::Remote)?;
    Ok((normalize(local), normalize(remote)))
}

fn check_tcp(fd: RawFd) -> Result<(), Error> {
    let sock_type = int_option(fd, libc::SO_TYPE)?;
    if sock_type != libc::SOCK_STREAM {
        return Err(Error::NotTcp {
            fd,
            what: "not a stream socket",
        });
    }
    let domain = int_option(fd, libc::SO_DOMAIN)?;
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return Err(Error::NotTcp {
            fd,
            what: "not an IPv4 or IPv6 socket",
        });
    }
    let protocol = int_option(fd, libc::SO_PROTOCOL)?;
    if protocol != libc::IPPROTO_TCP {
        return Err(Error::NotTcp {
            fd,
            what: "stream socket of another protocol",
        });
    }
    Ok(())
}

fn int_option(fd: RawFd, option: libc::c_int) -> Result<libc::c_int, Error> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len point to live locals of the sizes getsockopt is told.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(fd_error(fd, io::Error::last_os_error()))
    }
}

/// Where a policy for TCP socket `fd` must be registered: its local
/// endpoint (normalised) and whether it listens. A socket with no port yet
/// is bound to the unspecified address with port 0 first, so the kernel
/// picks its port now rather than at `connect`, and the daemon can be told
/// which one.
pub fn policy_endpoint(fd: RawFd) -> Result<(SocketAddr, bool), Error> {
    check_tcp(fd)?;
    let listening = int_option(fd, libc::SO_ACCEPTCONN)? != 0;
    if read_addr(fd, Side::Remote).is_ok() {
        // Its SYN has left: a registration now would wait for a connection
        // that never comes, then apply to the port's next socket.
        return Err(Error::Socket {
            fd,
            source: io::Error::from_raw_os_error(libc::EISCONN),
        });
    }
    let mut local = read_addr(fd, Side::Local)?;
    if local.port() == 0 && !listening {
        bind_any_port(fd, local)?;
        local = read_addr(fd, Side::Local)?;
    }
    Ok((normalize(local), listening))
}

/// Binds `fd` to `local`'s address with port 0 (a kernel-chosen port).
fn bind_any_port(fd: RawFd, local: SocketAddr) -> Result<(), Error> {
    // SAFETY: sockaddr_storage is plain old data; all zero bytes is valid.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match local {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            sin6.sin6_scope_id = v6.scope_id();
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    let ptr = (&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr>();
    // SAFETY: ptr points to `len` initialised bytes of `storage`, which
    // outlives the call.
    let rc = unsafe { libc::bind(fd, ptr, len as libc::socklen_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(fd_error(fd, io::Error::last_os_error()))
    }
}

#[derive(Clone, Copy)]
enum Side {
    Local,
    Remote,
}

fn read_addr(fd: RawFd, side: Side) -> Result<SocketAddr, Error> {
    // SAFETY: sockaddr_storage is plain old data; all zero bytes is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let ptr = (&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr>();
    // SAFETY: ptr and len describe the whole of `storage`, which outlives the call.
    let rc = unsafe {
        match side {
            Side::Local => libc::getsockname(fd, ptr, &mut len),
            Side::Remote => libc::getpeername(fd, ptr, &mut len),
        }
    };
    if rc != 0 {
        return Err(fd_error(fd, io::Error::last_os_error()));
    }
    from_storage(&storage, len as usize).ok_or(Error::NotTcp {
        fd,
        what: "address family is not IPv4 or IPv6",
    })
}

fn fd_error(fd: RawFd, err: io::Error) -> Error {
    match err.raw_os_error() {
        Some(libc::ENOTSOCK) => Error::NotASocket { fd },
        Some(libc::ENOTCONN) => Error::NotConnected { fd },
        _ => Error::Socket { fd, source: err },
    }
}

/// Converts a kernel socket address to a `SocketAddr`, if it is IPv4/IPv6.
pub fn from_storage(storage: &libc::sockaddr_storage, len: usize) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, which
            // is smaller than sockaddr_storage and less strictly aligned.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream, UdpSocket};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn policy_endpoint_binds_an_unbound_socket_and_sees_a_listener() {
        // SAFETY: plain socket(2) call; the descriptor is closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0);
        let (local, listening) = policy_endpoint(fd).expect("endpoint");
        assert!(!listening);
        assert_ne!(local.port(), 0, "the kernel picked a port");
        assert!(local.ip().is_unspecified());
        // A second call sees the same port: no second bind.
        assert_eq!(policy_endpoint(fd).expect("again").0, local);
        // SAFETY: fd is ours and open.
        unsafe { libc::close(fd) };
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (local, listening) = policy_endpoint(listener.as_raw_fd()).expect("listener");
        assert!(listening);
        assert_eq!(local, listener.local_addr().expect("addr"));
        let client = TcpStream::connect(local).expect("connect");
        match policy_endpoint(client.as_raw_fd()) {
            Err(e) => assert_eq!(e.errno(), libc::EISCONN),
            Ok(other) => panic!("a connected socket got {other:?}"),
        }
    }

    #[test]
    fn tcp_socket_pair_matches_std() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let stream = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (local, remote) = socket_pair(stream.as_raw_fd()).expect("pair");
        assert_eq!(local, stream.local_addr().expect("local"));
        assert_eq!(remote, listener.local_addr().expect("addr"));
    }

    #[test]
    fn dual_stack_socket_reports_ipv4() {
        let Ok(listener) = TcpListener::bind("[::]:0") else {
            // No IPv6 in this environment: nothing to check.
            return;
        };
        let port = listener.local_addr().expect("addr").port();
        let stream = TcpStream::connect(("::ffff:127.0.0.1", port)).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        let (local, remote) = socket_pair(accepted.as_raw_fd()).expect("pair");
        assert_eq!(local, SocketAddr::from(([127, 0, 0, 1], port)));
        assert_eq!(remote, normalize(stream.local_addr().expect("local")));
        assert!(remote.is_ipv4());
    }

    #[test]
    fn udp_socket_is_not_tcp() {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
        assert!(matches!(
            socket_pair(udp.as_raw_fd()),
            Err(Error::NotTcp { .. })
        ));
    }

    #[test]
    fn unix_socket_is_not_tcp() {
        let (a, _b) = UnixStream::pair().expect("pair");
        assert!(matches!(
            socket_pair(a.as_raw_fd()),
            Err(Error::NotTcp { .. })
        ));
    }

    #[test]
    fn regular_file_is_not_a_socket() {
        let file = std::fs::File::open("/proc/self/status").expect("open");
        assert!(matches!(
            socket_pair(file.as_raw_fd()),
            Err(Error::NotASocket { .. })
        ));
    }

    #[test]
    fn unconnected_tcp_socket_is_not_connected() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        assert!(matches!(
            socket_pair(listener.as_raw_fd()),
            Err(Error::NotConnected { .. })
        ));
    }
}
