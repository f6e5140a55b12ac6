//! libtcpcrypt's C ABI: exported symbols, struct layout, the original
//! `tcpcrypt_getsockopt` from C and Python, and the new calls, all against a
//! fake control socket.

mod support;

use std::collections::BTreeSet;
use std::ffi::{CStr, CString, c_int, c_uint};
use std::mem::{offset_of, size_of};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::ptr;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::fake_daemon::{
    EXAMPLE_ID, FakeDaemon, Reply, state_answer, tcpcrypt_answer, temp_dir,
};
use support::native::{LinkDir, built_library, crate_dir, field};
use tcpcrypt::capi::{
    TCP_CRYPT_SESSID, TCPCRYPT_PARAM_CTLPATH, TCPCRYPT_ROLE_B, TCPCRYPT_STATE_ENCRYPTED,
    TCPCRYPT_STATE_PENDING, TCPCRYPT_STATE_PLAIN, TcpcryptInfo, tcpcrypt_getsockopt,
    tcpcrypt_lookup_addr, tcpcrypt_lookup_fd, tcpcrypt_setparam, tcpcrypt_strerror,
};

const SLACK: Duration = Duration::from_secs(3);

/// A fake daemon that reports `EXAMPLE_ID` for connections to `server` and
/// `unknown` for anything else, so answers prove the right addresses were sent.
fn fake_for_server(server: SocketAddr) -> FakeDaemon {
    let server = server.to_string();
    FakeDaemon::start(move |req: &Value| {
        if req["remote"] == server.as_str() {
            Reply::Line(tcpcrypt_answer(EXAMPLE_ID, "A"))
        } else {
            Reply::Line(state_answer("unknown"))
        }
    })
}

fn c_path(fake: &FakeDaemon) -> CString {
    CString::new(fake.path().as_os_str().as_encoded_bytes()).expect("no NUL in path")
}

fn zeroed_info() -> TcpcryptInfo {
    // SAFETY: TcpcryptInfo is integers and arrays only; all zero bytes is valid.
    unsafe { std::mem::zeroed() }
}

fn text(chars: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8(bytes).expect("utf-8")
}

#[test]
fn only_the_documented_symbols_are_exported() {
    let header = std::fs::read_to_string(crate_dir().join("include/tcpcrypt/tcpcrypt.h"))
        .expect("read header");
    // Every `tcpcrypt_name(` in the header is a documented function.
    let documented: BTreeSet<String> = header
        .match_indices("tcpcrypt_")
        .filter_map(|(at, _)| {
            let rest = &header[at..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
            rest[end..]
                .starts_with('(')
                .then(|| rest[..end].to_string())
        })
        .collect();
    let output = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(built_library())
        .output()
        .expect("run nm");
    assert!(output.status.success());
    let exported: BTreeSet<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2))
        .map(str::to_string)
        .collect();
    // The login functions exist only in a build with the `auth` feature
    // (which a workspace build turns on for everyone): all or none.
    let is_login = |name: &String| name.starts_with("tcpcrypt_login_");
    let documented: BTreeSet<String> = if exported.iter().any(is_login) {
        documented
    } else {
        documented.into_iter().filter(|n| !is_login(n)).collect()
    };
    assert_eq!(exported, documented);
    assert!(exported.contains("tcpcrypt_getsockopt"));
}

#[test]
fn struct_layout_matches_the_header() {
    let link = LinkDir::new();
    let program = link.compile("layout.c");
    let output = link.command(&program).output().expect("run layout");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let expect = [
        ("size", size_of::<TcpcryptInfo>()),
        ("state", offset_of!(TcpcryptInfo, state)),
        ("role", offset_of!(TcpcryptInfo, role)),
        ("sessid_len", offset_of!(TcpcryptInfo, sessid_len)),
        ("sessid", offset_of!(TcpcryptInfo, sessid)),
        ("sessid_hex", offset_of!(TcpcryptInfo, sessid_hex)),
        ("tep", offset_of!(TcpcryptInfo, tep)),
        ("tep_name", offset_of!(TcpcryptInfo, tep_name)),
        ("aead", offset_of!(TcpcryptInfo, aead)),
        ("aead_name", offset_of!(TcpcryptInfo, aead_name)),
        ("resumed", offset_of!(TcpcryptInfo, resumed)),
        ("peer_app_aware", offset_of!(TcpcryptInfo, peer_app_aware)),
        ("reason", offset_of!(TcpcryptInfo, reason)),
    ];
    for (name, rust) in expect {
        assert_eq!(
            field(&stdout, name),
            Some(rust.to_string().as_str()),
            "{name} in\n{stdout}"
        );
    }
}

#[test]
fn c_program_using_the_old_setter_registers_its_socket_before_connect() {
    let fake = FakeDaemon::always(r#"{"v":1,"ok":true}"#);
    let link = LinkDir::new();
    let program = link.compile("old_setsockopt.c");
    let output = link
        .command(&program)
        .env("TCPCRYPT_CONTROL", fake.path())
        .output()
        .expect("run program");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{stdout}");
    assert_eq!(field(&stdout, "nocache"), Some("rc=0 errno=0"), "{stdout}");
    assert_eq!(field(&stdout, "resume"), Some("rc=0 errno=0"), "{stdout}");
    let port = field(&stdout, "port").expect("port line");
    assert_ne!(port, "0", "the library bound the socket to a port");
    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for r in &requests {
        assert_eq!(r["op"], "set_policy");
        assert_eq!(r["scope"], "connect");
        assert_eq!(r["local"], format!("0.0.0.0:{port}"));
    }
    assert_eq!(requests[0]["no_cache"], true);
    assert_eq!(requests[1]["no_resumption"], true);
}

#[test]
fn c_program_sets_the_app_aware_bit_through_the_old_setter() {
    // Stands in for a daemon that sees a caller other than root.
    let fake = FakeDaemon::start(|req: &Value| {
        if req["app_aware"] == "mandatory" {
            Reply::Line(
                r#"{"v":1,"ok":false,"error":"permission_denied","message":"needs uid 0"}"#.into(),
            )
        } else {
            Reply::Line(r#"{"v":1,"ok":true}"#.into())
        }
    });
    let link = LinkDir::new();
    let program = link.compile("app_support.c");
    let output = link
        .command(&program)
        .env("TCPCRYPT_CONTROL", fake.path())
        .output()
        .expect("run program");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{stdout}");
    assert_eq!(field(&stdout, "on"), Some("rc=0 errno=0"), "{stdout}");
    let einval = format!("rc=-1 errno={}", libc::EINVAL);
    assert_eq!(field(&stdout, "bad"), Some(einval.as_str()), "{stdout}");
    let eperm = format!("rc=-1 errno={}", libc::EPERM);
    assert_eq!(
        field(&stdout, "mandatory"),
        Some(eperm.as_str()),
        "{stdout}"
    );
    let port = field(&stdout, "port").expect("port line");
    let listen = field(&stdout, "listen").expect("listen line");
    // The undefined value never reached the daemon.
    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0]["op"], "set_policy");
    assert_eq!(requests[0]["scope"], "connect");
    assert_eq!(requests[0]["local"], format!("0.0.0.0:{port}"));
    assert_eq!(requests[0]["app_aware"], "on");
    for other in ["no_resumption", "no_cache"] {
        assert!(requests[0].get(other).is_none(), "{requests:?}");
    }
    assert_eq!(requests[1]["scope"], "listen");
    assert_eq!(requests[1]["local"], format!("127.0.0.1:{listen}"));
    assert_eq!(requests[1]["app_aware"], "mandatory");
}

#[test]
fn c_program_using_only_the_old_call_gets_the_session_id() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = listener.local_addr().expect("addr");
    let fake = fake_for_server(server);
    let link = LinkDir::new();
    let program = link.compile("old_getsockopt.c");
    let output = link
        .command(&program)
        .args(["127.0.0.1", &server.port().to_string()])
        .env("TCPCRYPT_CONTROL", fake.path())
        .output()
        .expect("run program");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{stdout}");
    assert_eq!(field(&stdout, "sessid"), Some(EXAMPLE_ID), "{stdout}");
    assert_eq!(field(&stdout, "enable"), Some("1 optlen=4"), "{stdout}");

    // The library sent the program's own socket addresses.
    let (_, client_addr) = listener.accept().expect("accept");
    let requests = fake.requests();
    assert!(!requests.is_empty());
    for request in requests {
        assert_eq!(request["local"], client_addr.to_string());
        assert_eq!(request["remote"], server.to_string());
    }
}

#[test]
fn old_call_with_a_max_ss_buffer_reports_erange_and_the_needed_length() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = listener.local_addr().expect("addr");
    let fake = fake_for_server(server);
    let link = LinkDir::new();
    let program = link.compile("old_getsockopt.c");
    let output = link
        .command(&program)
        .args(["127.0.0.1", &server.port().to_string()])
        .env("TCPCRYPT_CONTROL", fake.path())
        .output()
        .expect("run program");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(
        field(&stdout, "small"),
        Some(format!("rc=-1 errno={} optlen=33", libc::ERANGE).as_str()),
        "{stdout}"
    );
}

#[test]
fn old_call_rejects_unsupported_options_with_enoprotoopt() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = listener.local_addr().expect("addr");
    let fake = fake_for_server(server);
    let link = LinkDir::new();
    let program = link.compile("old_getsockopt.c");
    let output = link
        .command(&program)
        .args(["127.0.0.1", &server.port().to_string()])
        .env("TCPCRYPT_CONTROL", fake.path())
        .output()
        .expect("run program");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(
        field(&stdout, "cmode"),
        Some(format!("rc=-1 errno={}", libc::ENOPROTOOPT).as_str()),
        "{stdout}"
    );
}

#[test]
fn c_program_reports_plain_connection_as_enodata_and_not_enabled() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = listener.local_addr().expect("addr");
    let fake = FakeDaemon::always(r#"{"v":1,"ok":true,"state":"plain","reason":"no ENO"}"#);
    let link = LinkDir::new();
    let program = link.compile("old_getsockopt.c");
    let output = link
        .command(&program)
        .args(["127.0.0.1", &server.port().to_string()])
        .env("TCPCRYPT_CONTROL", fake.path())
        .output()
        .expect("run program");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(
        field(&stdout, "sessid"),
        Some(format!("error errno={}", libc::ENODATA).as_str()),
        "{stdout}"
    );
    assert_eq!(field(&stdout, "enable"), Some("0 optlen=4"), "{stdout}");
}

#[test]
fn c_program_without_daemon_fails_fast_with_enoent() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = listener.local_addr().expect("addr");
    let dir = temp_dir("c-nodaemon");
    let link = LinkDir::new();
    let program = link.compile("old_getsockopt.c");
    let start = Instant::now();
    let output = link
        .command(&program)
        .args(["127.0.0.1", &server.port().to_string()])
        .env("TCPCRYPT_CONTROL", dir.join("control.sock"))
        .output()
        .expect("run program");
    let elapsed = start.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(
        field(&stdout, "sessid"),
        Some(format!("error errno={}", libc::ENOENT).as_str()),
        "{stdout}"
    );
    // Four calls, each bounded by 1 s.
    assert!(elapsed < Duration::from_secs(4) + SLACK, "took {elapsed:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn python_ctypes_gets_the_session_id_with_the_old_call() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = listener.local_addr().expect("addr");
    let fake = fake_for_server(server);
    let link = LinkDir::new();
    let output = link
        .python("old_getsockopt.py")
        .args(["127.0.0.1", &server.port().to_string()])
        .env("TCPCRYPT_CONTROL", fake.path())
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(field(&stdout, "sessid"), Some(EXAMPLE_ID), "{stdout}");
}

#[test]
fn lookup_fd_fills_every_field_for_an_encrypted_connection() {
    let fake = FakeDaemon::always(tcpcrypt_answer(EXAMPLE_ID, "B"));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let stream = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let mut info = zeroed_info();
    let path = c_path(&fake);
    // SAFETY: valid path string, open fd, info is a live TcpcryptInfo.
    let rc = unsafe { tcpcrypt_lookup_fd(path.as_ptr(), stream.as_raw_fd(), 0, 0, &mut info) };
    assert_eq!(rc, 0);
    assert_eq!(info.state, TCPCRYPT_STATE_ENCRYPTED);
    assert_eq!(info.role, TCPCRYPT_ROLE_B);
    assert_eq!(info.sessid_len, 33);
    let hex: String = info.sessid[..33]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hex, EXAMPLE_ID);
    assert_eq!(text(&info.sessid_hex), EXAMPLE_ID);
    assert_eq!(info.tep, 0x23);
    assert_eq!(text(&info.tep_name), "TCPCRYPT_ECDHE_Curve25519");
    assert_eq!(info.aead, 0x0001);
    assert_eq!(text(&info.aead_name), "AEAD_AES_128_GCM");
    assert_eq!(info.resumed, 0);
    assert_eq!(info.peer_app_aware, 1);
}

#[test]
fn lookup_fd_reports_plain_with_its_reason() {
    let fake = FakeDaemon::always(r#"{"v":1,"ok":true,"state":"plain","reason":"no ENO"}"#);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let stream = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let mut info = zeroed_info();
    let path = c_path(&fake);
    // SAFETY: valid path string, open fd, info is a live TcpcryptInfo.
    let rc = unsafe { tcpcrypt_lookup_fd(path.as_ptr(), stream.as_raw_fd(), 0, 0, &mut info) };
    assert_eq!(rc, 0);
    assert_eq!(info.state, TCPCRYPT_STATE_PLAIN);
    assert_eq!(info.sessid_len, 0);
    assert_eq!(text(&info.reason), "no ENO");
}

#[test]
fn lookup_fd_passes_wait_ms_and_reports_pending() {
    let fake = FakeDaemon::always(state_answer("pending"));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let stream = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let mut info = zeroed_info();
    let path = c_path(&fake);
    // SAFETY: valid path string, open fd, info is a live TcpcryptInfo.
    let rc = unsafe { tcpcrypt_lookup_fd(path.as_ptr(), stream.as_raw_fd(), 120, 0, &mut info) };
    assert_eq!(rc, 0);
    assert_eq!(info.state, TCPCRYPT_STATE_PENDING);
    assert_eq!(fake.requests()[0]["wait_ms"], 120);
}

#[test]
fn lookup_addr_sends_the_given_addresses_normalised() {
    let fake = FakeDaemon::always(state_answer("unknown"));
    let local: SocketAddr = "[::ffff:10.0.0.2]:80".parse().expect("literal");
    let remote: SocketAddr = "[fd00::1]:5000".parse().expect("literal");
    let (local_raw, local_len) = sockaddr(local);
    let (remote_raw, remote_len) = sockaddr(remote);
    let mut info = zeroed_info();
    let path = c_path(&fake);
    // SAFETY: the sockaddrs are live and their lengths match; info is live.
    let rc = unsafe {
        tcpcrypt_lookup_addr(
            path.as_ptr(),
            (&local_raw as *const libc::sockaddr_storage).cast(),
            local_len,
            (&remote_raw as *const libc::sockaddr_storage).cast(),
            remote_len,
            0,
            0,
            &mut info,
        )
    };
    assert_eq!(rc, 0);
    let request = &fake.requests()[0];
    assert_eq!(request["local"], "10.0.0.2:80");
    assert_eq!(request["remote"], "[fd00::1]:5000");
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all zero bytes is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let SocketAddr::V6(v6) = addr else {
        panic!("test helper takes IPv6 literals");
    };
    // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
    let sin6 =
        unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
    sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sin6.sin6_port = v6.port().to_be();
    sin6.sin6_addr.s6_addr = v6.ip().octets();
    (storage, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
}

#[test]
fn lookup_fd_rejects_non_tcp_descriptors() {
    let fake = FakeDaemon::always(state_answer("unknown"));
    let path = c_path(&fake);
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let file = std::fs::File::open("/proc/self/status").expect("open");
    let mut info = zeroed_info();
    let cases = [
        (udp.as_raw_fd(), -libc::EPROTOTYPE),
        (file.as_raw_fd(), -libc::ENOTSOCK),
        (-1, -libc::EBADF),
    ];
    for (fd, expected) in cases {
        // SAFETY: valid path string; info is live; any fd value is allowed.
        let rc = unsafe { tcpcrypt_lookup_fd(path.as_ptr(), fd, 0, 0, &mut info) };
        assert_eq!(rc, expected, "fd {fd}");
    }
    assert!(fake.requests().is_empty());
}

#[test]
fn lookup_fd_with_null_info_is_einval() {
    // SAFETY: NULL info is part of the documented contract.
    let rc = unsafe { tcpcrypt_lookup_fd(ptr::null(), 0, 0, 0, ptr::null_mut()) };
    assert_eq!(rc, -libc::EINVAL);
}

#[test]
fn c_entry_points_fail_fast_without_a_daemon() {
    let dir = temp_dir("capi-nodaemon");
    let path =
        CString::new(dir.join("control.sock").as_os_str().as_encoded_bytes()).expect("no NUL");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let stream = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let mut info = zeroed_info();

    let start = Instant::now();
    // SAFETY: valid path string, open fd, live info.
    let rc = unsafe { tcpcrypt_lookup_fd(path.as_ptr(), stream.as_raw_fd(), 200, 300, &mut info) };
    assert_eq!(rc, -libc::ENOENT);
    assert!(start.elapsed() < Duration::from_millis(500) + SLACK);

    let (raw, len) = sockaddr("[fd00::1]:80".parse().expect("literal"));
    let start = Instant::now();
    // SAFETY: sockaddrs live with matching lengths; info live.
    let rc = unsafe {
        tcpcrypt_lookup_addr(
            path.as_ptr(),
            (&raw as *const libc::sockaddr_storage).cast(),
            len,
            (&raw as *const libc::sockaddr_storage).cast(),
            len,
            200,
            300,
            &mut info,
        )
    };
    assert_eq!(rc, -libc::ENOENT);
    assert!(start.elapsed() < Duration::from_millis(500) + SLACK);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn c_lookup_against_a_silent_daemon_returns_etimedout_in_time() {
    let fake = FakeDaemon::start(|_| Reply::Silence);
    let path = c_path(&fake);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let stream = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let mut info = zeroed_info();
    let start = Instant::now();
    // SAFETY: valid path string, open fd, live info.
    let rc = unsafe { tcpcrypt_lookup_fd(path.as_ptr(), stream.as_raw_fd(), 100, 250, &mut info) };
    let elapsed = start.elapsed();
    assert_eq!(rc, -libc::ETIMEDOUT);
    assert!(elapsed >= Duration::from_millis(350), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(350) + SLACK, "{elapsed:?}");
    assert_eq!(info.state, 0, "info untouched on failure");
}

#[test]
fn old_call_checks_level_and_pointers_before_asking() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let stream = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let mut buf = [0u8; 64];
    let mut len: c_uint = 64;
    let cases: [(c_int, c_int, bool, c_int); 3] = [
        (libc::SOL_SOCKET, 2, true, libc::ENOPROTOOPT),
        (libc::IPPROTO_TCP, 99, true, libc::ENOPROTOOPT),
        (libc::IPPROTO_TCP, 2, false, libc::EFAULT),
    ];
    for (level, optname, with_buffer, errno) in cases {
        let optval = if with_buffer {
            buf.as_mut_ptr().cast()
        } else {
            ptr::null_mut()
        };
        // SAFETY: buf and len are live; NULL optval is part of the contract.
        let rc =
            unsafe { tcpcrypt_getsockopt(stream.as_raw_fd(), level, optname, optval, &mut len) };
        assert_eq!(rc, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(errno),
            "level {level} optname {optname}"
        );
    }
}

#[test]
fn strerror_names_the_daemon_problem() {
    // SAFETY: tcpcrypt_strerror returns a static NUL-terminated string.
    let text = unsafe { CStr::from_ptr(tcpcrypt_strerror(-libc::ENOENT)) };
    assert!(text.to_string_lossy().contains("tcpcryptd running"));
}

#[test]
fn install_script_gives_a_working_pkg_config_setup() {
    let prefix = temp_dir("prefix");
    let profile_dir = built_library().parent().expect("library dir").to_path_buf();
    let status = Command::new("bash")
        .arg(crate_dir().join("install.sh"))
        .arg(&prefix)
        .arg(&profile_dir)
        .status()
        .expect("run install.sh");
    assert!(status.success());
    for installed in [
        "include/tcpcrypt/tcpcrypt.h",
        "lib/libtcpcrypt.so.0",
        "lib/libtcpcrypt.a",
    ] {
        assert!(prefix.join(installed).exists(), "{installed} missing");
    }
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "tcpcrypt"])
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .output()
        .expect("run pkg-config");
    assert!(flags.status.success());
    let flags = String::from_utf8_lossy(&flags.stdout).to_string();
    assert!(
        flags.contains(&format!("-I{}/include", prefix.display())),
        "{flags}"
    );

    let program = prefix.join("strerror");
    let compiled = Command::new("cc")
        .arg("-o")
        .arg(&program)
        .arg(crate_dir().join("tests/c/strerror.c"))
        .args(flags.split_whitespace())
        .arg(format!("-Wl,-rpath,{}/lib", prefix.display()))
        .status()
        .expect("run cc");
    assert!(compiled.success());
    let output = Command::new(&program).output().expect("run program");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("tcpcryptd running"),
        "{output:?}"
    );
    let _ = std::fs::remove_dir_all(prefix);
}

/// The only test that sets the old API's process-wide path, so parallel
/// tests never see it.
#[test]
fn old_call_follows_setparam_and_stays_within_its_one_second_bound() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let stream = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let old_call = || {
        let mut buf = [0u8; 64];
        let mut len: c_uint = 64;
        let start = Instant::now();
        // SAFETY: buf and len are live and len matches buf.
        let rc = unsafe {
            tcpcrypt_getsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                TCP_CRYPT_SESSID,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let errno = std::io::Error::last_os_error().raw_os_error();
        (rc, errno, start.elapsed())
    };
    let set_path = |path: Option<&CString>| {
        let ptr = path.map_or(ptr::null_mut(), |p| p.as_ptr().cast_mut().cast());
        // SAFETY: NULL or a NUL-terminated string that outlives the call.
        unsafe { tcpcrypt_setparam(TCPCRYPT_PARAM_CTLPATH, ptr) };
    };

    let dir = temp_dir("setparam");
    let missing =
        CString::new(dir.join("control.sock").as_os_str().as_encoded_bytes()).expect("no NUL");
    set_path(Some(&missing));
    let (rc, errno, elapsed) = old_call();
    assert_eq!((rc, errno), (-1, Some(libc::ENOENT)));
    assert!(elapsed < SLACK, "{elapsed:?}");

    let silent = FakeDaemon::start(|_| Reply::Silence);
    set_path(Some(&c_path(&silent)));
    let (rc, errno, elapsed) = old_call();
    set_path(None);
    assert_eq!((rc, errno), (-1, Some(libc::ETIMEDOUT)));
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(1) + SLACK, "{elapsed:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn c_program_over_ipv6_sends_bracketed_addresses() {
    let Ok(listener) = TcpListener::bind("[::1]:0") else {
        // No IPv6 loopback here: nothing to check.
        return;
    };
    let server = listener.local_addr().expect("addr");
    let fake = fake_for_server(server);
    let link = LinkDir::new();
    let program = link.compile("old_getsockopt.c");
    let output = link
        .command(&program)
        .args(["::1", &server.port().to_string()])
        .env("TCPCRYPT_CONTROL", fake.path())
        .output()
        .expect("run program");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(field(&stdout, "sessid"), Some(EXAMPLE_ID), "{stdout}");
    let (_, client_addr) = listener.accept().expect("accept");
    assert_eq!(fake.requests()[0]["local"], client_addr.to_string());
}
