//! A `tcpcryptd` running inside a namespace, with its own control socket
//! and log file, stopped on drop.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tcpcrypt_control::Request;

use crate::{Netns, ProcessGuard, Result, TestnetError, unique_suffix};

/// How to start a daemon.
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    /// Path of the `tcpcryptd` binary (`env!("CARGO_BIN_EXE_tcpcryptd")`).
    pub binary: PathBuf,
    /// Extra flags, e.g. `["--ports", "5000"]`.
    pub args: Vec<String>,
    /// How long to wait for the control socket to answer.
    pub ready_timeout: Duration,
}

impl DaemonOptions {
    pub fn new(binary: impl Into<PathBuf>) -> DaemonOptions {
        DaemonOptions {
            binary: binary.into(),
            args: Vec::new(),
            ready_timeout: Duration::from_secs(20),
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> DaemonOptions {
        self.args.push(a.into());
        self
    }
}

/// Environment variable with more arguments (split at whitespace) for
/// every daemon a test starts, after the test's own.
pub const EXTRA_ARGS_VAR: &str = "TCPCRYPT_TEST_DAEMON_ARGS";

/// How much of the end of a daemon's log a failing test prints.
const LOG_TAIL: usize = 64 << 10;

/// Resident memory of a process, in KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the most it was ever resident (high-water mark).
    pub peak_kib: u64,
    /// `RssAnon`: the part of `rss_kib` that is the process's own data
    /// (heap, stacks), without the pages of its binary and libraries,
    /// which grow as code paths are first used and say nothing of state
    /// kept.
    pub anon_kib: u64,
}

/// A running daemon.
pub struct Daemon {
    /// Removed on drop; `None` once handed on by [`Daemon::restart`].
    dir: Option<PathBuf>,
    socket: PathBuf,
    log: PathBuf,
    process: ProcessGuard,
    ns_name: String,
}

impl Daemon {
    /// Starts the daemon in `ns` with a control socket in a fresh temporary
    /// directory (so `opts` must not give `--control-socket`) and
    /// `--log-level debug` unless `opts` sets a level, and waits until it
    /// answers a `version` request.
    pub fn start(ns: &Netns, opts: &DaemonOptions) -> Result<Daemon> {
        let dir = std::env::temp_dir().join(format!("tcpcryptd-test-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).map_err(|source| TestnetError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        let socket = dir.join("control.sock");
        let log = dir.join("daemon.log");
        Self::start_in(ns, opts, dir, socket, log)
    }

    /// Stops this daemon if it still runs (SIGTERM) and starts another
    /// with the same directory, socket path and log file (appended to), e.g.
    /// after [`Daemon::kill9`].
    pub fn restart(mut self, ns: &Netns, opts: &DaemonOptions) -> Result<Daemon> {
        let dir = self.dir.take().unwrap_or_else(std::env::temp_dir);
        let (socket, log) = (self.socket.clone(), self.log.clone());
        drop(self);
        Self::start_in(ns, opts, dir, socket, log)
    }

    fn start_in(
        ns: &Netns,
        opts: &DaemonOptions,
        dir: PathBuf,
        socket: PathBuf,
        log: PathBuf,
    ) -> Result<Daemon> {
        let io = |what: String| move |source| TestnetError::Io { what, source };
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io(format!("opening {}", log.display())))?;
        let log_err = log_file
            .try_clone()
            .map_err(io("duplicating the log descriptor".into()))?;
        let binary = opts.binary.to_string_lossy().into_owned();
        let mut cmd = ns.command(&binary);
        cmd.arg("--control-socket").arg(&socket);
        let mut args = opts.args.clone();
        // Lets a whole suite run against another daemon configuration
        // (say `--large-segments=off`) without editing each test.
        if let Some(extra) = std::env::var_os(EXTRA_ARGS_VAR) {
            args.extend(extra.to_string_lossy().split_whitespace().map(String::from));
        }
        if !args
            .iter()
            .any(|a| a == "--log-level" || a.starts_with("--log-level="))
        {
            cmd.arg("--log-level").arg("debug");
        }
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        let command = format!("{cmd:?}");
        let child = cmd
            .spawn()
            .map_err(|source| TestnetError::Spawn { command, source })?;
        let mut daemon = Daemon {
            dir: Some(dir),
            socket,
            log,
            process: ProcessGuard { child: Some(child) },
            ns_name: ns.name().to_string(),
        };
        let deadline = Instant::now() + opts.ready_timeout;
        loop {
            if let Ok(v) = daemon.exchange(&Request::Version.encode())
                && v["ok"] == json!(true)
            {
                return Ok(daemon);
            }
            if !daemon.process.is_running() {
                return Err(TestnetError::Daemon(format!(
                    "tcpcryptd in {} exited during start; log:\n{}",
                    daemon.ns_name,
                    daemon.log_text()
                )));
            }
            if Instant::now() > deadline {
                return Err(TestnetError::Daemon(format!(
                    "tcpcryptd in {} not ready after {:?}; log:\n{}",
                    daemon.ns_name,
                    opts.ready_timeout,
                    daemon.log_text()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn control_socket(&self) -> &Path {
        &self.socket
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The daemon's resident memory now and at its peak, from
    /// `/proc/PID/status` (`ip netns exec` execs the daemon in place, so
    /// the child's pid is the daemon's).
    pub fn memory(&self) -> Result<Memory> {
        let pid = self
            .pid()
            .ok_or_else(|| TestnetError::Daemon("the daemon was already reaped".into()))?;
        let path = format!("/proc/{pid}/status");
        let text = std::fs::read_to_string(&path).map_err(|source| TestnetError::Io {
            what: format!("reading {path}"),
            source,
        })?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .ok_or_else(|| TestnetError::Daemon(format!("no {name} in {path}")))
        };
        Ok(Memory {
            rss_kib: field("VmRSS:")?,
            peak_kib: field("VmHWM:")?,
            anon_kib: field("RssAnon:")?,
        })
    }

    /// Size of the daemon's log file in bytes.
    pub fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends one request, written as the test chose (even one the protocol
    /// does not allow), and reads one response line.
    pub fn request(&self, req: &Value) -> Result<Value> {
        let mut line = req.to_string();
        line.push('\n');
        self.exchange(&line)
    }

    /// Sends one request line, newline included, and reads one response line.
    fn exchange(&self, line: &str) -> Result<Value> {
        let io = |what: &str| {
            let what = format!("{what} ({})", self.socket.display());
            move |source| TestnetError::Io { what, source }
        };
        let mut stream = UnixStream::connect(&self.socket).map_err(io("connecting"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(io("setting a timeout"))?;
        stream.write_all(line.as_bytes()).map_err(io("sending"))?;
        let mut reader = BufReader::new(stream);
        let mut answer = String::new();
        reader.read_line(&mut answer).map_err(io("receiving"))?;
        serde_json::from_str(&answer).map_err(|e| TestnetError::Io {
            what: format!("parsing the answer {answer:?}"),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
    }

    /// `lookup` of a connection from this host's point of view.
    pub fn lookup(&self, local: SocketAddr, remote: SocketAddr, wait_ms: u64) -> Result<Value> {
        let request = Request::Lookup {
            local,
            remote,
            wait: Duration::from_millis(wait_ms),
        };
        self.exchange(&request.encode())
    }

    /// The `connections` array of a `list` answer.
    pub fn list(&self) -> Result<Vec<Value>> {
        let v = self.exchange(&Request::List.encode())?;
        match v.get("connections") {
            Some(Value::Array(a)) => Ok(a.clone()),
            _ => Err(TestnetError::Daemon(format!(
                "list answer without connections: {v}"
            ))),
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.process.signal(libc::SIGTERM);
        self.process.wait_timeout(timeout)
    }

    /// Sends SIGKILL and reaps the process: a crash, leaving rules behind.
    pub fn kill9(&mut self) {
        self.process.signal(libc::SIGKILL);
        let _ = self.process.wait_timeout(Duration::from_secs(5));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.process.is_running() {
            self.process.signal(libc::SIGTERM);
            if self.process.wait_timeout(Duration::from_secs(5)).is_none() {
                self.process.signal(libc::SIGKILL);
                let _ = self.process.wait_timeout(Duration::from_secs(5));
            }
        }
        if std::thread::panicking() {
            // A flood can make the log megabytes long; its end tells most.
            let text = self.log_text();
            let cut = text.len().saturating_sub(LOG_TAIL);
            let start = (cut..text.len())
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(text.len());
            let omitted = if start > 0 {
                format!("[{start} earlier bytes omitted]\n")
            } else {
                String::new()
            };
            eprintln!(
                "---- tcpcryptd log ({}) ----\n{omitted}{}",
                self.ns_name,
                &text[start..]
            );
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Waits until every thread of process `pid` is stopped (after a SIGSTOP),
/// up to `within`; false if one still runs then. kill(2) returns before the
/// group stop has reached every thread, and a thread still running could
/// handle one more packet or request meanwhile.
pub fn wait_stopped(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        let running = tasks.flatten().any(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            // The state follows the parenthesised command name.
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !state.is_some_and(|s| s.starts_with('T') || s.starts_with('t'))
        });
        if !running {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
