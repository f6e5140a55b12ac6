//! Packet capture on an interface inside a namespace, with an AF_PACKET
//! socket (no tcpdump needed). The socket is bound before `start` returns,
//! so nothing sent afterwards is missed.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::{Netns, Result, TestnetError};

/// Stop keeping frames past this many bytes, so a bulk transfer cannot
/// exhaust memory; [`Capture::truncated`] tells.
const MAX_BYTES: usize = 256 << 20;

/// One captured Ethernet frame.
#[derive(Clone, Debug)]
pub struct Frame {
    /// True if this host sent it, false if it received it.
    pub outgoing: bool,
    /// When the capture read it (for timelines; not the kernel's stamp).
    pub at: std::time::Instant,
    pub data: Vec<u8>,
}

impl Frame {
    /// The IP packet inside the frame (after the 14-byte Ethernet header).
    pub fn ip(&self) -> &[u8] {
        self.data.get(14..).unwrap_or(&[])
    }

    /// The TCP header and payload, if this is an IPv4/IPv6 TCP packet
    /// without IPv6 extension headers.
    pub fn tcp(&self) -> Option<&[u8]> {
        let ip = self.ip();
        match ip.first()? >> 4 {
            4 => {
                let ihl = usize::from(ip.first()? & 0x0f) * 4;
                let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
                (*ip.get(9)? == 6).then(|| ip.get(ihl..total.min(ip.len())))?
            }
            6 => {
                let plen = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
                (*ip.get(6)? == 6).then(|| ip.get(40..(40 + plen).min(ip.len())))?
            }
            _ => None,
        }
    }

    /// TCP flags byte.
    pub fn tcp_flags(&self) -> Option<u8> {
        self.tcp()?.get(13).copied()
    }

    /// The TCP options bytes.
    pub fn tcp_options(&self) -> Option<&[u8]> {
        let tcp = self.tcp()?;
        let off = usize::from(tcp.get(12)? >> 4) * 4;
        tcp.get(20..off)
    }

    /// The TCP payload.
    pub fn tcp_payload(&self) -> Option<&[u8]> {
        let tcp = self.tcp()?;
        let off = usize::from(tcp.get(12)? >> 4) * 4;
        tcp.get(off..)
    }

    /// Whether the TCP options contain kind `kind` (69 is ENO, RFC 8547).
    pub fn has_tcp_option(&self, kind: u8) -> bool {
        let Some(mut opts) = self.tcp_options() else {
            return false;
        };
        while let Some(&k) = opts.first() {
            match k {
                0 => return false,
                1 => opts = opts.get(1..).unwrap_or(&[]),
                _ => {
                    if k == kind {
                        return true;
                    }
                    let len = usize::from(opts.get(1).copied().unwrap_or(0));
                    if len < 2 {
                        return false;
                    }
                    opts = opts.get(len..).unwrap_or(&[]);
                }
            }
        }
        false
    }
}

/// A running capture; [`Capture::finish`] stops it and returns the frames.
pub struct Capture {
    stop: Arc<AtomicBool>,
    frames: Arc<Mutex<(Vec<Frame>, usize, bool)>>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    /// Starts capturing every frame on `iface` in `ns`.
    pub fn start(ns: &Netns, iface: &str) -> Result<Capture> {
        let iface = iface.to_string();
        let fd = ns.run(move || open_socket(Some(&iface)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let frames = Arc::new(Mutex::new((Vec::new(), 0usize, false)));
        let (s, f) = (stop.clone(), frames.clone());
        let thread = std::thread::spawn(move || read_loop(fd, &s, &f));
        Ok(Capture {
            stop,
            frames,
            thread: Some(thread),
        })
    }

    /// Stops the capture and returns the frames in arrival order.
    pub fn finish(mut self) -> Vec<Frame> {
        self.stop_thread();
        let mut guard = match self.frames.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        std::mem::take(&mut guard.0)
    }

    /// Whether frames were dropped because the capture grew too large.
    pub fn truncated(&self) -> bool {
        self.frames.lock().map(|g| g.2).unwrap_or(true)
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// An AF_PACKET socket for every frame on `iface`, or on every interface of
/// the calling thread's namespace when `iface` is `None`.
pub(crate) fn open_socket(iface: Option<&str>) -> Result<OwnedFd> {
    let name = iface.unwrap_or("all interfaces");
    let io = |what: &str| TestnetError::Io {
        what: format!("{what} for capture on {name}"),
        source: std::io::Error::last_os_error(),
    };
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2) call; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    if raw < 0 {
        return Err(io("opening an AF_PACKET socket"));
    }
    // SAFETY: fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // Index 0 binds to every interface.
    let index = match iface {
        None => 0,
        Some(iface) => {
            let cname = std::ffi::CString::new(iface).map_err(|_| TestnetError::Io {
                what: format!("interface name {iface:?}"),
                source: std::io::ErrorKind::InvalidInput.into(),
            })?;
            // SAFETY: `cname` is a valid NUL-terminated string.
            let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
            if index == 0 {
                return Err(io("looking up the interface"));
            }
            index
        }
    };
    // SAFETY: sockaddr_ll is plain data; all-zero is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = index as i32;
    // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io("binding the AF_PACKET socket"));
    }
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: `tv` is a live timeval of the size passed.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    let size: i32 = 32 << 20;
    // SAFETY: `size` is a live c_int of the size passed.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    Ok(fd)
}

fn read_loop(fd: OwnedFd, stop: &AtomicBool, frames: &Mutex<(Vec<Frame>, usize, bool)>) {
    let mut buf = vec![0u8; 70_000];
    loop {
        // Once asked to stop, take what the socket already holds and return.
        let stopping = stop.load(Ordering::Relaxed);
        let flags = if stopping { libc::MSG_DONTWAIT } else { 0 };
        // SAFETY: sockaddr_ll is plain data; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `buf` and `sll` are valid for the lengths passed.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags,
                (&mut sll as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n > 0 {
            let data = buf.get(..n as usize).unwrap_or(&[]).to_vec();
            let outgoing = sll.sll_pkttype == libc::PACKET_OUTGOING;
            if let Ok(mut g) = frames.lock() {
                if g.1 + data.len() > MAX_BYTES {
                    g.2 = true;
                } else {
                    g.1 += data.len();
                    g.0.push(Frame {
                        outgoing,
                        at: std::time::Instant::now(),
                        data,
                    });
                }
            }
        } else if stopping {
            return;
        }
    }
}
