//! The control socket of the real daemon under hostile local clients
//! (issue 9): slow clients are cut off by their deadline, a well-behaved
//! client is served meanwhile, and the socket is never reachable with the
//! wrong permissions. Needs root; every daemon runs in a namespace of its
//! own and is stopped on drop.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tcpcrypt_testnet::{Daemon, DaemonOptions, Netns, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_tcpcryptd");
/// The deadline the daemons here run with (`--control-client-timeout`).
const DEADLINE: Duration = Duration::from_secs(3);
/// More slow clients than the daemon has slots for.
const SLOW_CLIENTS: usize = 300;

fn start_daemon(tag: &str, extra: &[&str]) -> (Netns, Daemon) {
    require_root();
    let ns = Netns::new(tag).expect("namespace");
    let mut opts = DaemonOptions::new(BIN)
        .arg("--control-client-timeout")
        .arg(DEADLINE.as_secs().to_string());
    for a in extra {
        opts = opts.arg(*a);
    }
    let daemon = Daemon::start(&ns, &opts).expect("daemon starts");
    (ns, daemon)
}

/// What happened to one slow client.
enum SlowEnd {
    /// The daemon closed the connection this long after it was opened.
    Closed(Duration),
    /// Still open when the test stopped watching.
    StillOpen,
    /// The daemon answered, which it should not have had time to.
    Answered(String),
}

/// A client that sends a valid request one byte at a time, `interval`
/// apart, and notes when the daemon hangs up.
fn slow_client(path: PathBuf, interval: Duration, give_up: Instant) -> SlowEnd {
    let opened = Instant::now();
    let Ok(mut s) = UnixStream::connect(&path) else {
        // The accept queue overflowing would be a refusal: count it as a
        // close at once, which the test reports.
        return SlowEnd::Closed(Duration::ZERO);
    };
    let request = b"{\"v\":1,\"op\":\"version\"}\n";
    let mut buf = [0u8; 512];
    for byte in request.iter().cycle() {
        if Instant::now() >= give_up {
            return SlowEnd::StillOpen;
        }
        if s.write_all(&[*byte]).is_err() {
            return SlowEnd::Closed(opened.elapsed());
        }
        // Waiting for the next byte doubles as watching for the hang-up.
        let wait_until = (Instant::now() + interval).min(give_up);
        loop {
            let left = wait_until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s.set_read_timeout(Some(left)).expect("read timeout");
            match s.read(&mut buf) {
                Ok(0) => return SlowEnd::Closed(opened.elapsed()),
                Ok(n) => return SlowEnd::Answered(String::from_utf8_lossy(&buf[..n]).into()),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return SlowEnd::Closed(opened.elapsed()),
            }
        }
    }
    SlowEnd::StillOpen
}

/// One request on a fresh connection, as the client library does it;
/// the answer and how long it took.
fn ask(path: &Path, request: &Value) -> (Result<Value, String>, Duration) {
    let start = Instant::now();
    let result = (|| {
        let mut s = UnixStream::connect(path).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let mut line = request.to_string();
        line.push('\n');
        s.write_all(line.as_bytes())
            .map_err(|e| format!("send: {e}"))?;
        let mut answer = String::new();
        BufReader::new(s)
            .read_line(&mut answer)
            .map_err(|e| format!("receive: {e}"))?;
        serde_json::from_str::<Value>(&answer).map_err(|e| format!("{answer:?}: {e}"))
    })();
    (result, start.elapsed())
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted
        .get((sorted.len().saturating_sub(1)) * p / 100)
        .copied()
        .unwrap_or_default()
}

/// 300 slow clients dribbling at `interval`, and one well-behaved client
/// asking `version` and `lookup` until they are all gone.
fn slow_clients_are_cut_off_and_a_good_client_is_served(tag: &str, interval: Duration) {
    let (_ns, daemon) = start_daemon(tag, &[]);
    let path = daemon.control_socket().to_path_buf();
    // Far beyond the deadline plus the time to start all the clients: a
    // client still open then was not cut off.
    let give_up = Instant::now() + DEADLINE * 6 + interval;
    let slow: Vec<_> = (0..SLOW_CLIENTS)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || slow_client(path, interval, give_up))
        })
        .collect();

    let done = Arc::new(AtomicBool::new(false));
    let good = {
        let (path, done) = (path.clone(), done.clone());
        std::thread::spawn(move || {
            let requests = [
                json!({"v": 1, "op": "version"}),
                json!({"v": 1, "op": "lookup", "local": "10.9.0.1:80", "remote": "10.9.0.2:40000"}),
            ];
            let mut latencies = Vec::new();
            let mut failures = Vec::new();
            let mut i = 0;
            while !done.load(Ordering::Relaxed) {
                let (answer, took) = ask(&path, &requests[i % 2]);
                match answer {
                    Ok(v) if v["ok"] == json!(true) => latencies.push(took),
                    Ok(v) => failures.push(format!("request {i}: {v}")),
                    Err(e) => failures.push(format!("request {i}: {e}")),
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            (latencies, failures)
        })
    };

    let ends: Vec<SlowEnd> = slow
        .into_iter()
        .map(|t| t.join().expect("slow client thread"))
        .collect();
    done.store(true, Ordering::Relaxed);
    let (mut latencies, failures) = good.join().expect("good client thread");

    let mut closed: Vec<Duration> = ends
        .iter()
        .filter_map(|e| match e {
            SlowEnd::Closed(d) => Some(*d),
            _ => None,
        })
        .collect();
    closed.sort();
    latencies.sort();
    println!(
        "{tag}: {} slow clients (one byte every {interval:?}, deadline {DEADLINE:?}) closed after min {:?} / median {:?} / max {:?}",
        closed.len(),
        closed.first().copied().unwrap_or_default(),
        percentile(&closed, 50),
        closed.last().copied().unwrap_or_default(),
    );
    println!(
        "{tag}: well-behaved client: {} answers, latency min {:?} / median {:?} / p99 {:?} / max {:?}",
        latencies.len(),
        latencies.first().copied().unwrap_or_default(),
        percentile(&latencies, 50),
        percentile(&latencies, 99),
        latencies.last().copied().unwrap_or_default(),
    );

    let not_closed: Vec<String> = ends
        .iter()
        .filter_map(|e| match e {
            SlowEnd::Closed(_) => None,
            SlowEnd::StillOpen => Some("still open".to_string()),
            SlowEnd::Answered(text) => Some(format!("answered {text:?}")),
        })
        .collect();
    assert!(
        not_closed.is_empty(),
        "{} slow clients were not cut off: {:?}",
        not_closed.len(),
        &not_closed[..not_closed.len().min(5)]
    );
    assert!(
        failures.is_empty(),
        "the well-behaved client was refused or not answered: {failures:?}"
    );
    assert!(
        !latencies.is_empty(),
        "the well-behaved client asked nothing"
    );
}

#[test]
fn clients_dribbling_faster_than_the_deadline_are_cut_off_by_it() {
    // A byte every 2 s would satisfy any per-read timeout of 3 s.
    slow_clients_are_cut_off_and_a_good_client_is_served("ctl-drib-fast", Duration::from_secs(2));
}

#[test]
fn clients_dribbling_slower_than_the_deadline_are_cut_off_by_it() {
    // The default deadline is 10 s; a byte every 20 s is twice as slow.
    slow_clients_are_cut_off_and_a_good_client_is_served("ctl-drib-slow", DEADLINE * 2);
}

/// The first group in /etc/group other than root, to see the socket take a
/// group that is not the daemon's own.
fn some_other_group() -> Option<(String, u32)> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let gid = fields.nth(1)?.parse::<u32>().ok()?;
        (gid != 0).then(|| (name.to_string(), gid))
    })
}

#[test]
fn control_socket_is_root_and_control_group_0660_from_the_start() {
    require_root();
    let (group, gid) = some_other_group().expect("a group other than root in /etc/group");
    // Watch every daemon test directory while the daemon starts: at no
    // moment may a socket there have another mode, nor may anything else
    // there be open to other users.
    let stop = Arc::new(AtomicBool::new(false));
    // Stops the watcher however this test ends.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let stop_guard = StopOnDrop(stop.clone());
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let tmp = std::env::temp_dir();
            let mut exposed = Vec::new();
            let mut looks = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Ok(dirs) = std::fs::read_dir(&tmp) else {
                    continue;
                };
                for dir in dirs.flatten() {
                    if !dir
                        .file_name()
                        .to_string_lossy()
                        .starts_with("tcpcryptd-test-")
                    {
                        continue;
                    }
                    let Ok(entries) = std::fs::read_dir(dir.path()) else {
                        continue;
                    };
                    for entry in entries.flatten() {
                        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                            continue;
                        };
                        looks += 1;
                        let mode = meta.permissions().mode() & 0o777;
                        let t = meta.file_type();
                        let bad = if t.is_socket() {
                            mode != 0o660
                        } else {
                            t.is_dir() && mode & 0o007 != 0
                        };
                        if bad {
                            exposed.push(format!("{} mode {mode:o}", entry.path().display()));
                        }
                    }
                }
            }
            (exposed, looks)
        })
    };
    let ns = Netns::new("ctl-perm").expect("namespace");
    let opts = DaemonOptions::new(BIN)
        .arg("--control-group")
        .arg(group.clone());
    let daemon = Daemon::start(&ns, &opts).expect("daemon starts");
    drop(stop_guard);
    let (exposed, looks) = watcher.join().expect("watcher");
    println!("looked at {looks} directory entries while the daemon started");

    let path = daemon.control_socket();
    let meta = std::fs::symlink_metadata(path).expect("stat the socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.uid(), 0, "owner");
    assert_eq!(meta.gid(), gid, "group {group}");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert!(
        exposed.is_empty(),
        "seen with other permissions: {exposed:?}"
    );
    let dir = path.parent().expect("socket directory");
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .expect("read the socket directory")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}
