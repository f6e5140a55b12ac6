//! The old `tcpcrypt_setsockopt` (RFC 8548 section 3.5 controls) against a
//! fake control socket. A test binary of its own: the old API's control
//! path is process-wide, and this is the only test here that sets it.

mod support;

use std::ffi::{CString, c_int, c_uint, c_void};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::ptr;

use serde_json::Value;
use support::fake_daemon::{FakeDaemon, Reply};
use tcpcrypt::capi::{
    TCP_CRYPT_NOCACHE, TCP_CRYPT_RESUME, TCPCRYPT_PARAM_CTLPATH, tcpcrypt_setparam,
    tcpcrypt_setsockopt,
};

fn set(fd: c_int, level: c_int, optname: c_int, value: Option<c_int>, len: c_uint) -> (c_int, i32) {
    let optval: *const c_void = value
        .as_ref()
        .map_or(ptr::null(), |v| (v as *const c_int).cast());
    // SAFETY: optval is NULL or points to a live int; len never exceeds
    // its size except where the test passes NULL.
    let rc = unsafe { tcpcrypt_setsockopt(fd, level, optname, optval, len) };
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    (rc, if rc == 0 { 0 } else { errno })
}

const INT: c_uint = size_of::<c_int>() as c_uint;

fn local_of(fd: c_int) -> SocketAddr {
    // SAFETY: sockaddr_storage is plain old data; all zero bytes is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: storage and len describe a live buffer of that size.
    let rc = unsafe {
        libc::getsockname(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0);
    assert_eq!(c_int::from(storage.ss_family), libc::AF_INET);
    // SAFETY: the family says it holds a sockaddr_in.
    let sin = unsafe { &*(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
    SocketAddr::new(
        std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).into(),
        u16::from_be(sin.sin_port),
    )
}

#[test]
fn old_setsockopt_registers_one_field_for_the_sockets_endpoint() {
    let fake = FakeDaemon::start(|req: &Value| match req["op"].as_str() {
        Some("set_policy") => Reply::Line(r#"{"v":1,"ok":true}"#.into()),
        _ => Reply::Line(r#"{"v":1,"ok":false,"error":"unknown_op","message":"x"}"#.into()),
    });
    let path = CString::new(fake.path().as_os_str().as_encoded_bytes()).expect("no NUL");
    // SAFETY: a NUL-terminated string that outlives every call below.
    unsafe { tcpcrypt_setparam(TCPCRYPT_PARAM_CTLPATH, path.as_ptr().cast_mut().cast()) };

    // A client socket with no port yet: bound to a kernel-chosen one.
    // SAFETY: plain socket(2); closed at the end.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(fd >= 0);
    assert_eq!(
        set(fd, libc::IPPROTO_TCP, TCP_CRYPT_NOCACHE, Some(1), INT),
        (0, 0)
    );
    let bound = local_of(fd);
    assert_ne!(bound.port(), 0);
    // Resumption off: RESUME = 0.
    assert_eq!(
        set(fd, libc::IPPROTO_TCP, TCP_CRYPT_RESUME, Some(0), INT),
        (0, 0)
    );
    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0]["scope"], "connect");
    assert_eq!(requests[0]["local"], format!("0.0.0.0:{}", bound.port()));
    assert_eq!(requests[0]["no_cache"], true);
    assert!(requests[0].get("no_resumption").is_none(), "{requests:?}");
    assert_eq!(requests[1]["no_resumption"], true);
    assert!(requests[1].get("no_cache").is_none(), "{requests:?}");

    // A listening socket registers for its listening endpoint.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = listener.local_addr().expect("addr");
    let lfd = listener.as_raw_fd();
    assert_eq!(
        set(lfd, libc::IPPROTO_TCP, TCP_CRYPT_RESUME, Some(1), INT),
        (0, 0)
    );
    let last = fake.requests().pop().expect("a request");
    assert_eq!(last["scope"], "listen");
    assert_eq!(last["local"], server.to_string());
    assert_eq!(last["no_resumption"], false);

    // Refused before asking the daemon.
    let before = fake.requests().len();
    let cases: [(c_int, c_int, Option<c_int>, c_uint, i32); 4] = [
        (
            libc::SOL_SOCKET,
            TCP_CRYPT_NOCACHE,
            Some(1),
            INT,
            libc::ENOPROTOOPT,
        ),
        (libc::IPPROTO_TCP, 2, Some(1), INT, libc::ENOPROTOOPT),
        (
            libc::IPPROTO_TCP,
            TCP_CRYPT_NOCACHE,
            None,
            INT,
            libc::EFAULT,
        ),
        (
            libc::IPPROTO_TCP,
            TCP_CRYPT_NOCACHE,
            Some(1),
            2,
            libc::EINVAL,
        ),
    ];
    for (level, optname, value, len, errno) in cases {
        assert_eq!(
            set(fd, level, optname, value, len),
            (-1, errno),
            "level {level} optname {optname}"
        );
    }
    // Too late on a connected socket: its SYN has left.
    let stream = TcpStream::connect(server).expect("connect");
    assert_eq!(
        set(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_CRYPT_NOCACHE,
            Some(1),
            INT
        ),
        (-1, libc::EISCONN)
    );
    assert_eq!(fake.requests().len(), before);
    // SAFETY: fd is ours and open.
    unsafe { libc::close(fd) };
}
