//! An in-process stand-in for tcpcryptd's control socket: a thread serving a
//! Unix socket in a private temporary directory, answering each request line
//! as the test's closure says, and recording every request it saw.
//!
//! Shared by the tcpcrypt-client and tcpcrypt-cli tests (the CLI includes
//! this file by path), so it uses only std and serde_json.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::Value;

/// What the fake does with one request.
pub enum Reply {
    /// Send this line (a newline is added).
    Line(String),
    /// Send these exact bytes, then close.
    Bytes(Vec<u8>),
    /// Never answer; keep the connection open until the fake stops.
    Silence,
    /// Close the connection without answering.
    Close,
}

type Answer = dyn Fn(&Value) -> Reply + Send + Sync;

pub struct FakeDaemon {
    dir: PathBuf,
    path: PathBuf,
    requests: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    /// Every connection accepted, to count them and to close them all
    /// when the fake goes away, as a daemon that exits does.
    accepted: Arc<Mutex<Vec<UnixStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh private directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tcpcrypt-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

impl FakeDaemon {
    pub fn start(answer: impl Fn(&Value) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_in(temp_dir("fake"), answer)
    }

    /// A fake listening on `dir`/control.sock (`dir` is made if missing),
    /// e.g. the directory of one that was dropped, as a restarted daemon.
    pub fn start_in(
        dir: PathBuf,
        answer: impl Fn(&Value) -> Reply + Send + Sync + 'static,
    ) -> Self {
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let path = dir.join("control.sock");
        let listener = UnixListener::bind(&path).expect("bind fake control socket");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let answer: Arc<Answer> = Arc::new(answer);
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let requests = Arc::clone(&requests);
            let stop = Arc::clone(&stop);
            let accepted = Arc::clone(&accepted);
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    if let (Ok(mut all), Ok(handle)) = (accepted.lock(), stream.try_clone()) {
                        all.push(handle);
                    }
                    let requests = Arc::clone(&requests);
                    let stop = Arc::clone(&stop);
                    let answer = Arc::clone(&answer);
                    thread::spawn(move || {
                        let handle = stream.try_clone();
                        serve(stream, &*answer, &requests, &stop);
                        // `accepted` holds a copy: close for real.
                        if let Ok(handle) = handle {
                            let _ = handle.shutdown(std::net::Shutdown::Both);
                        }
                    });
                }
            })
        };
        Self {
            dir,
            path,
            requests,
            stop,
            accepted,
            acceptor: Some(acceptor),
        }
    }

    /// Answers every request with the same line.
    pub fn always(line: impl Into<String>) -> Self {
        let line = line.into();
        Self::start(move |_| Reply::Line(line.clone()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory the socket is in, to start a successor there.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.lock().map(|a| a.len()).unwrap_or_default()
    }

    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn serve(stream: UnixStream, answer: &Answer, requests: &Mutex<Vec<Value>>, stop: &AtomicBool) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let reader = BufReader::new(stream);
    for line in reader.lines() {
        let Ok(line) = line else { return };
        let request: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if let Ok(mut r) = requests.lock() {
            r.push(request.clone());
        }
        match answer(&request) {
            Reply::Line(mut text) => {
                text.push('\n');
                if writer.write_all(text.as_bytes()).is_err() {
                    return;
                }
            }
            Reply::Bytes(bytes) => {
                let _ = writer.write_all(&bytes);
                return;
            }
            Reply::Silence => {
                while !stop.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(10));
                }
                return;
            }
            Reply::Close => return,
        }
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor so it sees the flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        if let Ok(all) = self.accepted.lock() {
            for stream in all.iter() {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A session ID in the documented format (the control protocol's example).
pub const EXAMPLE_ID: &str = "2360583ca04231aa3be00fb3d3e878f7f5a8e610875816bebcb7cecca7780e386f";

/// A `lookup` answer for an encrypted connection with the given ID and role.
pub fn tcpcrypt_answer(session_id: &str, role: &str) -> String {
    format!(
        r#"{{"v":1,"ok":true,"state":"tcpcrypt","session_id":"{session_id}","role":"{role}","tep":"TCPCRYPT_ECDHE_Curve25519","tep_byte":35,"aead":"AEAD_AES_128_GCM","resumed":false,"peer_app_aware":true}}"#
    )
}

pub fn state_answer(state: &str) -> String {
    format!(r#"{{"v":1,"ok":true,"state":"{state}"}}"#)
}

/// A `list` answer with `n` rows: every third plain, the rest encrypted with
/// distinct IDs, addresses 10.x.y.z, ports varying.
pub fn list_answer(n: usize) -> String {
    let mut rows = Vec::with_capacity(n);
    for i in 0..n {
        let local = format!("10.0.{}.{}:{}", (i / 250) % 250, i % 250 + 1, 80);
        let remote = format!(
            "10.1.{}.{}:{}",
            (i / 250) % 250,
            i % 250 + 1,
            40000 + i % 20000
        );
        let row = if i % 3 == 2 {
            format!(
                r#"{{"local":"{local}","remote":"{remote}","state":"plain","reason":"peer sent no ENO option","phase":"established","bytes_sent":{i},"bytes_received":{},"age_ms":{i}}}"#,
                2 * i
            )
        } else {
            let id = format!("23{:064x}", i);
            format!(
                r#"{{"local":"{local}","remote":"{remote}","state":"tcpcrypt","session_id":"{id}","role":"{}","tep":"TCPCRYPT_ECDHE_Curve25519","tep_byte":35,"aead":"AEAD_AES_256_GCM","resumed":{},"peer_app_aware":false,"phase":"established","bytes_sent":{i},"bytes_received":{},"age_ms":{i}}}"#,
                if i % 2 == 0 { "A" } else { "B" },
                i % 5 == 0,
                3 * i
            )
        };
        rows.push(row);
    }
    format!(r#"{{"v":1,"ok":true,"connections":[{}]}}"#, rows.join(","))
}
