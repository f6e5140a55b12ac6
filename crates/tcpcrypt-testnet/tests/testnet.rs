//! The test environment itself: topologies carry traffic, captures see it,
//! and everything disappears on drop. Needs root.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use tcpcrypt_testnet::{Capture, Netns, Topology, require_root};

fn exchange(t: &Topology, v6: bool, port: u16) {
    let server = SocketAddr::new(t.server_addrs.ip(v6), port);
    let listener = t.server.run(|| TcpListener::bind(server)).expect("listen");
    let h = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().expect("accept");
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).expect("read");
        s.write_all(&buf).expect("echo");
        peer
    });
    let mut c = t
        .client
        .run(|| TcpStream::connect_timeout(&server, Duration::from_secs(5)))
        .expect("connect");
    c.write_all(b"hello").expect("write");
    let mut buf = [0u8; 5];
    c.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"hello");
    assert_eq!(h.join().expect("server").ip(), t.client_addrs.ip(v6));
}

#[test]
fn pair_carries_tcp_over_ipv4_and_ipv6() {
    require_root();
    let t = Topology::pair().expect("topology");
    exchange(&t, false, 9001);
    exchange(&t, true, 9002);
}

#[test]
fn routed_topology_forwards_both_address_families() {
    require_root();
    let t = Topology::routed().expect("topology");
    exchange(&t, false, 9003);
    exchange(&t, true, 9004);
}

#[test]
fn namespace_is_deleted_on_drop_even_when_the_test_panics() {
    require_root();
    let name = std::panic::catch_unwind(|| {
        let ns = Netns::new("gone").expect("netns");
        let name = ns.name().to_string();
        let _sleeper = ns.spawn("sleep", &["60"]).expect("spawn");
        std::panic::panic_any(name);
    })
    .expect_err("closure panics");
    let name = name.downcast::<String>().expect("name payload");
    assert!(
        !Path::new("/run/netns").join(&*name).exists(),
        "{name} left behind"
    );
}

#[test]
fn capture_sees_the_syn_of_a_connection_started_after_it() {
    require_root();
    let t = Topology::pair().expect("topology");
    let cap = Capture::start(&t.server, "veth0").expect("capture");
    exchange(&t, false, 9005);
    let frames = cap.finish();
    let syn = frames
        .iter()
        .find(|f| f.tcp_flags() == Some(0x02))
        .expect("a SYN was captured");
    assert!(!syn.outgoing, "the server received the SYN");
    // Linux SYNs carry MSS (kind 2) and never ENO (kind 69) without tcpcryptd.
    assert!(syn.has_tcp_option(2));
    assert!(!syn.has_tcp_option(69));
    assert!(frames.iter().any(|f| f.tcp_payload() == Some(b"hello")));
}
