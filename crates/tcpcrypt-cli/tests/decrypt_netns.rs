//! `tcpcrypt decrypt` on a capture of real daemons (issue 14): tcpdump in
//! the server's namespace records an HTTP exchange (fresh session), a
//! transfer of a few MiB each way under `--rekey-after 64K` (which resumes
//! the first session's chain) and a second HTTP exchange over IPv6 (fresh
//! again: resumption is per peer address). The decrypted
//! capture must carry, per connection and direction, exactly the bytes the
//! applications wrote, as TCP with valid checksums that `tcpdump -A` reads;
//! a wrong key log, a flipped ciphertext byte and damaged captures must be
//! reported, never decrypted wrongly or crash the tool.
//!
//! Needs root, tcpdump, and the `tcpcryptd` binary built in the same
//! profile (`cargo build -p tcpcryptd [--release]`) or in `TCPCRYPTD_BIN`.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tcpcrypt_decrypt::{Capture, KeyLog, Outcome};
use tcpcrypt_testnet::{Daemon, DaemonOptions, Topology, require_root};

const PORT: u16 = 7140;
const BULK: usize = 3 << 20;

fn tcpcryptd_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("TCPCRYPTD_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile dir");
    let bin = profile_dir.join("tcpcryptd");
    assert!(
        bin.exists(),
        "{} missing: build it first (cargo build -p tcpcryptd, same profile) or set TCPCRYPTD_BIN",
        bin.display()
    );
    bin
}

fn tcpcrypt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tcpcrypt"))
        .args(args)
        .output()
        .expect("run tcpcrypt")
}

/// Deterministic bytes (xorshift64), so each side's data is distinct.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// What one connection's applications wrote: (client's bytes, server's).
type Sent = (Vec<u8>, Vec<u8>);

/// One connection: the client writes `request` and half-closes, the server
/// reads everything, writes `response` and closes; both sides read to EOF.
fn exchange(t: &Topology, v6: bool, request: Vec<u8>, response: Vec<u8>) -> (u16, Sent) {
    let server_addr = SocketAddr::new(t.server_addrs.ip(v6), PORT);
    let listener: TcpListener = t
        .server
        .run(|| TcpListener::bind(server_addr))
        .expect("listen");
    let reply = response.clone();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(60))).ok();
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("server read");
        s.write_all(&reply).expect("server write");
        got
    });
    let mut c: TcpStream = t
        .client
        .run(|| TcpStream::connect_timeout(&server_addr, Duration::from_secs(10)))
        .expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let port = c.local_addr().expect("local").port();
    c.write_all(&request).expect("client write");
    c.shutdown(std::net::Shutdown::Write).expect("half-close");
    let mut got = Vec::new();
    c.read_to_end(&mut got).expect("client read");
    let server_got = server.join().expect("server");
    assert_eq!(server_got, request, "the server got other bytes");
    assert_eq!(got, response, "the client got other bytes");
    (port, (request, response))
}

fn http_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 10.77.0.2\r\nConnection: close\r\n\r\n").into_bytes()
}

fn http_response(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// TCP payload per (source port, destination port), reassembled by
/// sequence number, with this test's own parsing of Ethernet/IPv4/TCP;
/// fails on ENO options or gaps.
fn payloads(capture: &Capture) -> HashMap<(u16, u16), Vec<u8>> {
    // Per port pair: ISN+1 and the payload pieces by offset from it.
    type Pieces = (u32, BTreeMap<u32, Vec<u8>>);
    let mut pieces: HashMap<(u16, u16), Pieces> = HashMap::new();
    for r in &capture.records {
        let d = &r.data;
        let tcp = match d.get(12..14) {
            Some([0x08, 0x00]) if d.len() >= 14 + 20 && d[14 + 9] == 6 => {
                let ip = &d[14..];
                let ihl = usize::from(ip[0] & 0x0f) * 4;
                let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
                &ip[ihl..total]
            }
            // IPv6 without extension headers, as the kernel sends TCP.
            Some([0x86, 0xdd]) if d.len() >= 14 + 40 && d[14 + 6] == 6 => {
                let ip = &d[14..];
                let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
                &ip[40..40 + payload]
            }
            _ => continue,
        };
        let ports = (
            u16::from_be_bytes([tcp[0], tcp[1]]),
            u16::from_be_bytes([tcp[2], tcp[3]]),
        );
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        let doff = usize::from(tcp[12] >> 4) * 4;
        let mut opts = &tcp[20..doff];
        while let Some(&kind) = opts.first() {
            if kind == 0 {
                break;
            }
            if kind == 1 {
                opts = &opts[1..];
                continue;
            }
            assert_ne!(kind, 69, "an ENO option is left in the output");
            opts = &opts[usize::from(opts[1]).max(2)..];
        }
        let entry = pieces.entry(ports).or_default();
        if tcp[13] & 0x02 != 0 {
            entry.0 = seq.wrapping_add(1);
            continue;
        }
        let payload = &tcp[doff..];
        if !payload.is_empty() {
            entry.1.insert(seq.wrapping_sub(entry.0), payload.to_vec());
        }
    }
    pieces
        .into_iter()
        .map(|(ports, (_, map))| {
            let mut bytes = Vec::new();
            for (off, p) in map {
                let off = off as usize;
                assert!(
                    off <= bytes.len(),
                    "hole in the output stream {ports:?} at {}",
                    bytes.len()
                );
                if off + p.len() > bytes.len() {
                    bytes.extend_from_slice(&p[bytes.len() - off..]);
                }
            }
            (ports, bytes)
        })
        .collect()
}

fn read_capture(path: &Path) -> Capture {
    let c = Capture::read(&std::fs::read(path).expect("read capture")).expect("parse capture");
    assert!(c.damage.is_none(), "{:?}", c.damage);
    c
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

#[test]
fn decrypts_a_capture_of_real_daemons_byte_for_byte() {
    require_root();
    let dir =
        Scratch(std::env::temp_dir().join(format!("tcpcrypt-decrypt-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("dir");
    let keylog = dir.0.join("keys.log");
    let input = dir.0.join("in.pcap");
    let output = dir.0.join("out.pcap");
    let t = Topology::pair().expect("topology");
    let opts = DaemonOptions::new(tcpcryptd_bin())
        .arg("--ports")
        .arg(PORT.to_string())
        .arg("--rekey-after")
        .arg("64K");
    let client_d = Daemon::start(
        &t.client,
        &opts.clone().arg("--keylog").arg(keylog.to_string_lossy()),
    )
    .expect("client daemon");
    let server_d = Daemon::start(&t.server, &opts).expect("server daemon");

    let mut tcpdump = t
        .server
        .spawn(
            "tcpdump",
            // A 64 MiB buffer: a busy test machine must not make the kernel
            // drop packets of the bulk transfer before tcpdump reads them.
            &[
                "-i",
                "veth0",
                "-U",
                "-B",
                "65536",
                "-s",
                "0",
                "-w",
                &input.to_string_lossy(),
                "tcp",
                "port",
                &PORT.to_string(),
            ],
        )
        .expect("start tcpdump (is it installed? scripts/deps.sh)");
    // The file header is written once tcpdump listens.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&input).map_or(0, |m| m.len()) < 24 {
        assert!(Instant::now() < deadline, "tcpdump did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));

    let sent: Vec<(u16, Sent)> = vec![
        exchange(
            &t,
            false,
            http_request("/first"),
            http_response(b"hello, decrypted world\n"),
        ),
        exchange(&t, false, pattern(1, BULK), pattern(2, BULK)),
        // Over IPv6: another peer address, so a fresh session again.
        exchange(
            &t,
            true,
            http_request("/again"),
            http_response(&pattern(3, 5000)),
        ),
    ];
    // tcpdump may lag behind the transfer, and what it has not read when
    // interrupted is lost: stop it only once the file stopped growing.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = 0;
    loop {
        std::thread::sleep(Duration::from_millis(700));
        let now = std::fs::metadata(&input).map_or(0, |m| m.len());
        if now == last || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    tcpdump.signal(libc::SIGINT);
    assert!(
        tcpdump.wait_timeout(Duration::from_secs(10)).is_some(),
        "tcpdump did not stop"
    );
    drop(client_d);
    drop(server_d);

    // Decrypt, with a summary.
    let run = tcpcrypt(&[
        "decrypt",
        "--keylog",
        &keylog.to_string_lossy(),
        "--summary",
        &input.to_string_lossy(),
        &output.to_string_lossy(),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    let stderr = String::from_utf8_lossy(&run.stderr).to_string();
    eprintln!("summary:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(run.status.code(), Some(0), "decrypt failed: {stderr}");
    assert!(
        stdout.contains("fresh") && stdout.contains("resumed"),
        "{stdout}"
    );

    // The library's own view: sessions, rekeys.
    let keys = KeyLog::parse(&std::fs::read_to_string(&keylog).expect("key log")).expect("parse");
    let report = tcpcrypt_decrypt::decrypt(&read_capture(&input), &keys);
    assert_eq!(
        report.connections.len(),
        3,
        "{:#?}",
        report
            .connections
            .iter()
            .map(|c| &c.outcome)
            .collect::<Vec<_>>()
    );
    let mut resumed = 0;
    for conn in &report.connections {
        let Outcome::Decrypted { facts, directions } = &conn.outcome else {
            panic!("not decrypted: {:?}", conn.outcome);
        };
        resumed += usize::from(facts.resumed);
        let (_, (request, response)) = sent
            .iter()
            .find(|(port, _)| *port == conn.client.port())
            .expect("a connection the test made");
        assert!(
            directions[0].plaintext == *request,
            "client-to-server plaintext differs"
        );
        assert!(directions.iter().all(|d| d.closed), "a FIN is missing");
        assert!(
            directions[1].plaintext == *response,
            "server-to-client plaintext differs"
        );
        if request.len() == BULK {
            assert!(
                directions[0].rekeys >= 8 && directions[1].rekeys >= 8,
                "{} / {} rekeys over {BULK} bytes",
                directions[0].rekeys,
                directions[1].rekeys
            );
        }
    }
    assert!(resumed >= 1, "no connection resumed");
    assert!(resumed < 3, "no fresh connection");

    // The output capture as plain TCP: payloads, checksums, tcpdump -A.
    let out = payloads(&read_capture(&output));
    for (port, (request, response)) in &sent {
        let up = out.get(&(*port, PORT)).expect("client stream in output");
        let down = out.get(&(PORT, *port)).expect("server stream in output");
        assert!(
            up == request,
            "output client-to-server stream of port {port} differs ({} vs {} bytes)",
            up.len(),
            request.len()
        );
        assert!(
            down == response,
            "output server-to-client stream of port {port} differs ({} vs {} bytes)",
            down.len(),
            response.len()
        );
    }
    let ascii = Command::new("tcpdump")
        .args(["-nn", "-A", "-r", &output.to_string_lossy()])
        .output()
        .expect("tcpdump -A");
    let text = String::from_utf8_lossy(&ascii.stdout);
    assert!(
        text.contains("GET /first HTTP/1.1"),
        "tcpdump -A does not show the request line"
    );
    assert!(text.contains("GET /again HTTP/1.1"));
    let verbose = Command::new("tcpdump")
        .args(["-nn", "-vv", "-r", &output.to_string_lossy()])
        .output()
        .expect("tcpdump -vv");
    let verbose = String::from_utf8_lossy(&verbose.stdout);
    assert!(
        verbose.contains("(correct)"),
        "tcpdump verified no checksum"
    );
    assert!(!verbose.contains("incorrect"), "a checksum is wrong");

    // A wrong key log: every connection reported, copied as captured, exit 4.
    let wrong = dir.0.join("wrong.log");
    let mut text = String::new();
    for line in std::fs::read_to_string(&keylog).expect("key log").lines() {
        let mut f: Vec<String> = line.split(' ').map(str::to_string).collect();
        f[2] = f[2]
            .chars()
            .map(|c| if c == '0' { '1' } else { '0' })
            .collect();
        text.push_str(&f.join(" "));
        text.push('\n');
    }
    std::fs::write(&wrong, text).expect("write");
    let copied = dir.0.join("copied.pcap");
    let run = tcpcrypt(&[
        "decrypt",
        "--keylog",
        &wrong.to_string_lossy(),
        &input.to_string_lossy(),
        &copied.to_string_lossy(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(4), "{stderr}");
    assert_eq!(stderr.matches("not decrypted").count(), 3, "{stderr}");
    assert_eq!(read_capture(&copied).records, read_capture(&input).records);

    // A flipped ciphertext byte in the middle of the bulk transfer: the
    // frame fails authentication and is reported with its offset.
    let mut damaged = read_capture(&input);
    let bulk_port = sent[1].0;
    let is_bulk_data = |r: &tcpcrypt_decrypt::Record| {
        r.data.len() > 1000
            && r.data[12..14] == [0x08, 0x00]
            && r.data[34..36] == bulk_port.to_be_bytes()
    };
    let middle = damaged.records.iter().filter(|r| is_bulk_data(r)).count() / 2;
    let victim = damaged
        .records
        .iter_mut()
        .filter(|r| is_bulk_data(r))
        .nth(middle)
        .expect("a bulk data packet");
    let last = victim.data.len() - 1;
    victim.data[last] ^= 0x01;
    let tampered = dir.0.join("tampered.pcap");
    std::fs::write(&tampered, damaged.to_pcap().expect("pcap")).expect("write");
    let run = tcpcrypt(&[
        "decrypt",
        "--keylog",
        &keylog.to_string_lossy(),
        "--summary",
        &tampered.to_string_lossy(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("client to server: frame at offset")
            && stderr.contains("authentication failed"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("1 authentication failures"));

    // Damaged captures: cut anywhere or with bytes flipped, the library
    // reports and never panics.
    let bytes = std::fs::read(&input).expect("read");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..40 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = (x as usize) % bytes.len();
        let mut mutated = if i % 2 == 0 {
            bytes[..at].to_vec()
        } else {
            bytes.clone()
        };
        if i % 2 == 1 {
            for k in 0..8 {
                let p = (at + k * 977) % mutated.len();
                mutated[p] ^= (x >> (k * 8)) as u8 | 1;
            }
        }
        if let Ok(c) = Capture::read(&mutated) {
            let d = tcpcrypt_decrypt::decrypt(&c, &keys);
            let _ = d.output.to_pcap();
        }
    }
}
