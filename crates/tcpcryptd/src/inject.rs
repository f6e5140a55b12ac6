//! Raw-socket packet injection.
//!
//! The engine produces whole IP packets of two kinds: wire packets for the
//! peer (Init messages, retransmitted frames, extra segments) and plaintext
//! packets for the local stack. Both are sent through raw sockets carrying
//! the daemon's mark, which the firewall rules exclude, so an injected packet
//! is never queued to us again. A packet for the local stack is addressed to
//! a local address, so routing sends it over loopback into the local stack
//! (loopback is also excluded from the rules).
//!
//! All raw-socket `unsafe` lives here.

use std::io;
use std::net::IpAddr;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use tcpcrypt_engine::wire::ip::{Ipv4Packet, Ipv6Packet};

/// Why a packet could not be injected.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("opening the raw IPv{version} socket: {source}")]
    Open { version: u8, source: io::Error },
    #[error("setting SO_MARK on the raw IPv{version} socket: {source}")]
    Mark { version: u8, source: io::Error },
    #[error("packet is not an IPv4 or IPv6 packet with a complete header")]
    NotIp,
    #[error("sending an injected packet: {0}")]
    Send(io::Error),
}

/// The two raw sockets.
pub struct Injector {
    v4: OwnedFd,
    v6: OwnedFd,
}

fn raw_socket(family: i32, version: u8, mark: u32) -> Result<OwnedFd, InjectError> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    if raw < 0 {
        return Err(InjectError::Open {
            version,
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: `mark` is a live u32 and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(InjectError::Mark {
            version,
            source: io::Error::last_os_error(),
        });
    }
    Ok(fd)
}

impl Injector {
    /// Opens both sockets with `mark` as their packets' mark. With
    /// `IPPROTO_RAW` the kernel takes the IP header from the packet as is.
    pub fn new(mark: u32) -> Result<Injector, InjectError> {
        Ok(Injector {
            v4: raw_socket(libc::AF_INET, 4, mark)?,
            v6: raw_socket(libc::AF_INET6, 6, mark)?,
        })
    }

    /// Sends one whole IP packet to the destination in its header.
    pub fn send(&self, packet: &[u8]) -> Result<(), InjectError> {
        let dst = match packet.first().map(|b| b >> 4) {
            Some(4) => Ipv4Packet::new_checked(packet).map(|p| IpAddr::V4(p.dst())),
            Some(6) => Ipv6Packet::new_checked(packet).map(|p| IpAddr::V6(p.dst())),
            _ => return Err(InjectError::NotIp),
        };
        self.send_to_addr(packet, dst.map_err(|_| InjectError::NotIp)?)
    }

    /// Sends one whole IP packet to `dst`, which must be the destination in
    /// its header (the engine's [`Transmit`](tcpcrypt_engine::Transmit)
    /// carries it, so the packet is not read again). The sockets do not
    /// block: a full send buffer drops the packet (TCP on one side or the
    /// engine's retransmission recovers it), which the caller sees as
    /// `Send(WouldBlock)`.
    pub fn send_to_addr(&self, packet: &[u8], dst: IpAddr) -> Result<(), InjectError> {
        match dst {
            IpAddr::V4(dst) => {
                // SAFETY: sockaddr_in is plain data; all-zero is valid.
                let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                sa.sin_family = libc::AF_INET as libc::sa_family_t;
                sa.sin_addr.s_addr = u32::from_ne_bytes(dst.octets());
                send_to(
                    &self.v4,
                    packet,
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>(),
                )
            }
            IpAddr::V6(dst) => {
                // SAFETY: sockaddr_in6 is plain data; all-zero is valid.
                let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
                sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sa.sin6_addr.s6_addr = dst.octets();
                send_to(
                    &self.v6,
                    packet,
                    (&sa as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>(),
                )
            }
        }
    }
}

fn send_to(
    fd: &OwnedFd,
    packet: &[u8],
    addr: *const libc::sockaddr,
    addr_len: usize,
) -> Result<(), InjectError> {
    loop {
        // SAFETY: `packet` is valid for its length and `addr` points at a
        // live socket address of `addr_len` bytes owned by the caller.
        let rc = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                addr,
                addr_len as libc::socklen_t,
            )
        };
        if rc >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(InjectError::Send(err));
        }
    }
}
