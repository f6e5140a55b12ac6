//! Named network namespaces (`ip netns`) and what runs inside them.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{Result, TestnetError, unique_suffix};

/// A network namespace deleted on drop, with every process still in it.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

fn run_checked(cmd: &mut Command) -> Result<Output> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| TestnetError::Spawn {
        command: command.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(TestnetError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

/// Runs a command in the root namespace and fails on a non-zero exit.
pub(crate) fn host(program: &str, args: &[&str]) -> Result<Output> {
    run_checked(Command::new(program).args(args))
}

impl Netns {
    /// Creates `tct-<tag>-<pid>-<n>` with loopback up.
    pub fn new(tag: &str) -> Result<Netns> {
        let name = format!("tct-{tag}-{}", unique_suffix());
        host("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.exec("ip", &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `Command` that runs `program` inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `program args` inside the namespace; fails on a non-zero exit.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        run_checked(self.command(program).args(args))
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")])
            .map(drop)
    }

    /// Starts a process in the namespace; it is killed when the guard drops.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Result<ProcessGuard> {
        let mut cmd = self.command(program);
        cmd.args(args).stdin(Stdio::null());
        let command = format!("{cmd:?}");
        let child = cmd
            .spawn()
            .map_err(|source| TestnetError::Spawn { command, source })?;
        Ok(ProcessGuard { child: Some(child) })
    }

    /// Runs `f` on a thread that has entered this namespace, and returns its
    /// result. Sockets `f` creates belong to the namespace for their whole
    /// life, so they can be returned and used from any thread.
    pub fn run<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            let handle = s.spawn(move || {
                enter(&path);
                f()
            });
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Like [`Netns::run`], but returns at once with a handle to join.
    pub fn spawn_thread<F, R>(&self, f: F) -> std::thread::JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
    }

    /// Pids of all processes in the namespace.
    fn pids(&self) -> Vec<i32> {
        host("ip", &["netns", "pids", &self.name])
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Moves the calling thread into the namespace at `path`. A failure here is
/// a broken test environment, so it panics with the reason.
fn enter(path: &str) {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => panic!("opening {path}: {e}"),
    };
    // SAFETY: setns on a valid namespace descriptor affects only this thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert!(
        rc == 0,
        "setns({path}): {}",
        std::io::Error::last_os_error()
    );
}

impl Drop for Netns {
    fn drop(&mut self) {
        for pid in self.pids() {
            // SAFETY: kill(2) with a pid we just listed; at worst ESRCH.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.pids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Err(e) = host("ip", &["netns", "del", &self.name]) {
            eprintln!("tcpcrypt-testnet: cleanup of {}: {e}", self.name);
        }
    }
}

/// A child process killed (SIGKILL) and reaped on drop unless waited for.
#[derive(Debug)]
pub struct ProcessGuard {
    pub(crate) child: Option<Child>,
}

impl ProcessGuard {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid as i32, signal) };
        }
    }

    /// Waits up to `timeout` for the process to exit; returns its status.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Some(status);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => return None,
            }
        }
    }

    /// Whether the process has not exited yet.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
