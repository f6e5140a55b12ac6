//! Issue 9 part 4: a daemon killed with `kill -9` in the middle of an
//! encrypted transfer lets no plaintext of that connection onto the wire,
//! neither during the outage nor after its successor starts, while plain
//! connections keep working under the default fail-open mode. Real daemons
//! in namespaces, real kernel TCP; needs root.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tcpcrypt_testnet::{Capture, Daemon, DaemonOptions, Frame, Netns, Topology, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_tcpcryptd");
const ENO_KIND: u8 = 69;

fn options(ports: &str) -> DaemonOptions {
    DaemonOptions::new(BIN)
        .arg("--ports")
        .arg(ports)
        .arg("--cleanup-delay")
        .arg("2")
}

fn listen(ns: &Netns, ip: IpAddr, port: u16) -> TcpListener {
    ns.run(|| TcpListener::bind(SocketAddr::new(ip, port)))
        .expect("listen")
}

fn connect(ns: &Netns, to: SocketAddr) -> TcpStream {
    let s = ns
        .run(|| TcpStream::connect_timeout(&to, Duration::from_secs(10)))
        .expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

/// Reads exactly `buf.len()` bytes, retrying reads a signal interrupted
/// (other tests' child processes end while this one reads).
fn read_full(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        match s.read(&mut buf[at..]) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes `msg` and expects it back from an echo server.
fn ping(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    s.write_all(msg)?;
    let mut back = vec![0u8; msg.len()];
    read_full(s, &mut back)?;
    if back == msg {
        Ok(())
    } else {
        Err(std::io::Error::other("echo differs"))
    }
}

/// Echoes every connection it accepts, each on its own thread.
fn echo_server(listener: TcpListener) {
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => return,
                    }
                }
            });
        }
    });
}

fn carries(frame: &Frame, marker: &[u8]) -> bool {
    frame.data.windows(marker.len()).any(|w| w == marker)
}

/// Waits until `counter` stops growing for `quiet`, at most `limit`.
fn settle(counter: &AtomicUsize, quiet: Duration, limit: Duration) -> usize {
    let end = Instant::now() + limit;
    let mut last = counter.load(Ordering::Relaxed);
    let mut since = Instant::now();
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
        let now = counter.load(Ordering::Relaxed);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            break;
        }
    }
    last
}

fn kill9_mid_transfer(v6: bool, port: u16) {
    require_root();
    let marker: &[u8] = b"FAIL-CLOSED-PLAINTEXT-MARKER-91c3e7";
    let t = Topology::pair().expect("topology");
    let opts = options(&port.to_string());
    let mut client_d = Daemon::start(&t.client, &opts).expect("client daemon");
    let server_d = Daemon::start(&t.server, &opts).expect("server daemon");
    let cap = Capture::start(&t.server, "veth0").expect("capture");
    let to = SocketAddr::new(t.server_addrs.ip(v6), port);
    let listener = listen(&t.server, to.ip(), port);

    // The server counts what the first connection delivers, then echoes a
    // second one.
    let received = Arc::new(AtomicUsize::new(0));
    let got = received.clone();
    let server = std::thread::spawn(move || {
        let (mut first, _) = listener.accept().expect("accept first");
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match first.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        got.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        });
        let (second, _) = listener.accept().expect("accept second");
        echo_server_on(second);
        reader
    });

    let c = connect(&t.client, to);
    let local = c.local_addr().expect("local");
    let answer = client_d.lookup(local, to, 5000).expect("lookup");
    assert_eq!(answer["state"], "tcpcrypt", "{answer}");
    c.set_write_timeout(Some(Duration::from_millis(200)))
        .expect("write timeout");
    let stop = Arc::new(AtomicBool::new(false));
    let stop_writer = stop.clone();
    let chunk = marker.repeat(64);
    let mut wc = c.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        while !stop_writer.load(Ordering::Relaxed) {
            match wc.write(&chunk) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Some(e.kind()),
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    });

    // Let the transfer run, then crash the client's daemon in its middle.
    let start = Instant::now();
    while received.load(Ordering::Relaxed) < 200_000 && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        received.load(Ordering::Relaxed) >= 200_000,
        "the transfer never got going"
    );
    client_d.kill9();
    // What was in flight may still land; after that nothing may arrive,
    // though the application keeps writing.
    let at_crash = settle(
        &received,
        Duration::from_millis(500),
        Duration::from_secs(3),
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        received.load(Ordering::Relaxed),
        at_crash,
        "bytes reached the server while the client had no daemon"
    );
    if writer.is_finished() {
        panic!("the writer stopped during the outage: {:?}", writer.join());
    }

    let client_d = client_d.restart(&t.client, &opts).expect("restart");
    assert!(
        client_d
            .log_text()
            .contains("aborting 1 tcpcrypt connection(s) a previous instance left"),
        "the successor did not abort the left-over connection"
    );
    // The successor aborted the socket: the application learns it.
    let end = Instant::now() + Duration::from_secs(10);
    while !writer.is_finished() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let writer_end = writer.join().expect("writer");
    assert!(
        matches!(
            writer_end,
            Some(ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe)
        ),
        "the left-over connection was not aborted: {writer_end:?}"
    );

    // A new connection is encrypted again and carries the marker safely.
    let mut c2 = connect(&t.client, to);
    let answer = client_d
        .lookup(c2.local_addr().expect("local"), to, 5000)
        .expect("lookup");
    assert_eq!(answer["state"], "tcpcrypt", "{answer}");
    ping(&mut c2, &marker.repeat(100)).expect("echo on the new connection");
    std::thread::sleep(Duration::from_millis(300));
    drop(c2);
    drop(c);

    assert!(!cap.truncated(), "capture truncated");
    let frames = cap.finish();
    let leaked: Vec<_> = frames.iter().filter(|f| carries(f, marker)).collect();
    assert!(
        leaked.is_empty(),
        "{} captured frames carry the plaintext marker, the first outgoing={}",
        leaked.len(),
        leaked[0].outgoing
    );
    let syns: Vec<_> = frames
        .iter()
        .filter(|f| f.tcp_flags().is_some_and(|fl| fl & 0x12 == 0x02))
        .collect();
    assert_eq!(syns.len(), 2, "expected one SYN per connection");
    assert!(
        syns.iter().all(|s| s.has_tcp_option(ENO_KIND)),
        "a SYN without ENO"
    );
    let payload_frames = frames
        .iter()
        .filter(|f| f.tcp_payload().is_some_and(|p| !p.is_empty()))
        .count();
    assert!(payload_frames > 0, "the capture saw no data at all");
    drop(client_d);
    drop(server_d);
    let reader = server.join().expect("server");
    let _ = reader.join();
}

/// Echoes one connection on its own thread.
fn echo_server_on(mut s: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    });
}

#[test]
fn kill9_mid_transfer_puts_no_plaintext_on_the_wire_ipv4() {
    kill9_mid_transfer(false, 7101);
}

#[test]
fn kill9_mid_transfer_puts_no_plaintext_on_the_wire_ipv6() {
    kill9_mid_transfer(true, 7102);
}

#[test]
fn plain_connections_keep_working_while_the_daemon_is_dead_under_fail_open() {
    require_root();
    let t = Topology::pair().expect("topology");
    // The server's daemon leaves 7104 alone, so connections to it are plain.
    let mut client_d = Daemon::start(&t.client, &options("7103,7104")).expect("client daemon");
    let server_d = Daemon::start(&t.server, &options("7103")).expect("server daemon");
    let ip = t.server_addrs.ip(false);
    echo_server(listen(&t.server, ip, 7103));
    echo_server(listen(&t.server, ip, 7104));
    let plain_to = SocketAddr::new(ip, 7104);
    let mut old = connect(&t.client, plain_to);
    ping(&mut old, b"before").expect("plain echo with the daemon");
    let answer = client_d
        .lookup(old.local_addr().expect("local"), plain_to, 5000)
        .expect("lookup");
    assert_eq!(answer["state"], "plain", "{answer}");

    client_d.kill9();
    ping(&mut old, b"during").expect("the old plain connection during the outage");
    let mut fresh = connect(&t.client, plain_to);
    ping(&mut fresh, b"fresh").expect("a new plain connection during the outage");
    // Without the client's daemon its SYN carries no ENO: plain TCP even
    // to a port the server's daemon handles.
    let mut other = connect(&t.client, SocketAddr::new(ip, 7103));
    ping(&mut other, b"other").expect("a new connection to the other port");

    let client_d = client_d
        .restart(&t.client, &options("7103,7104"))
        .expect("restart");
    ping(&mut old, b"after").expect("the old plain connection after the restart");
    drop(client_d);
    drop(server_d);
}

/// Sends SIGCONT on drop, so a stopped daemon can still be terminated when
/// an assertion fails.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a pid and a signal number.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[test]
fn sigterm_aborts_a_connection_still_negotiating() {
    require_root();
    let t = Topology::pair().expect("topology");
    let opts = options("7105");
    let mut client_d = Daemon::start(&t.client, &opts).expect("client daemon");
    let server_d = Daemon::start(&t.server, &opts).expect("server daemon");
    let to = SocketAddr::new(t.server_addrs.ip(false), 7105);
    let _listener = listen(&t.server, to.ip(), 7105);
    // A hanging server daemon keeps the handshake from finishing: its queue
    // holds the SYN.
    let server_pid = server_d.pid().expect("server pid") as i32;
    // SAFETY: kill(2) with a pid and a signal number.
    unsafe { libc::kill(server_pid, libc::SIGSTOP) };
    let resume = Resume(server_pid);
    assert!(
        tcpcrypt_testnet::wait_stopped(server_pid as u32, Duration::from_secs(5)),
        "the server daemon did not stop"
    );
    let connecting = t
        .client
        .spawn_thread(move || TcpStream::connect_timeout(&to, Duration::from_secs(20)));
    let end = Instant::now() + Duration::from_secs(10);
    let pending = loop {
        let list = client_d.list().expect("list");
        if let Some(c) = list.iter().find(|c| c["remote"] == to.to_string().as_str()) {
            break c.clone();
        }
        assert!(Instant::now() < end, "the connection never showed up");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(pending["state"], "pending", "{pending}");
    let status = client_d.terminate(Duration::from_secs(10)).expect("exited");
    assert!(status.success(), "exit status {status}");
    let outcome = connecting.join().expect("connect thread");
    assert!(
        outcome
            .as_ref()
            .is_err_and(|e| e.kind() == ErrorKind::ConnectionAborted),
        "connect: {outcome:?}"
    );
    let log = client_d.log_text();
    assert!(
        log.contains("aborting 1 tcpcrypt connection(s) before exit"),
        "no abort notice: {log}"
    );
    assert!(!log.contains("could not abort"), "{log}");
    drop(resume);
    drop(server_d);
}
