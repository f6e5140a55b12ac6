//! Test support for integration tests that need real kernels on both ends
//! of a TCP connection: uniquely named network namespaces joined by veth
//! pairs, closures and processes run inside them, `tcpcryptd` instances with
//! their own control sockets, packet captures on a veth, attacker tools
//! ([`forge`]: forged segments, SYN floods, an on-path sniffer) and, with
//! the `impair` feature, a seeded impairment tool for a router namespace
//! (loss, reordering, duplication, resegmentation, corruption, CE marks,
//! MSS rewriting, ICMP loss).
//!
//! Everything it creates is torn down on `Drop` (processes killed, namespaces
//! deleted), also when a test panics. Addresses are 10.77.x.x and fd00:77::
//! and exist only inside the namespaces: nothing is ever routed outside.
//! It needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN); [`require_root`] lets a
//! test say so clearly.
//!
//! Every daemon a test starts also gets the arguments in the environment
//! variable `TCPCRYPT_TEST_DAEMON_ARGS` ([`EXTRA_ARGS_VAR`]),
//! so a whole suite can be run against another configuration, e.g.
//! `TCPCRYPT_TEST_DAEMON_ARGS=--large-segments=off cargo test`.
//!
//! It must not be used by production code.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod capture;
mod daemon;
pub mod forge;
#[cfg(feature = "impair")]
pub mod impair;
mod netns;
mod topology;

pub use capture::{Capture, Frame};
pub use daemon::{Daemon, DaemonOptions, EXTRA_ARGS_VAR, Memory, wait_stopped};
#[cfg(feature = "impair")]
pub use impair::{Impairment, Plan};
pub use netns::{Netns, ProcessGuard};
pub use topology::{Addrs, Topology};

/// Failures of the test environment itself (as opposed to the code under
/// test), each naming what was being done.
#[derive(Debug, thiserror::Error)]
pub enum TestnetError {
    #[error("running `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` exited with {status}: {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Daemon(String),
    #[error("forging a packet: {0}")]
    Forge(#[from] tcpcrypt_engine::wire::WireError),
}

pub type Result<T> = std::result::Result<T, TestnetError>;

/// True when the process can create namespaces; tests that cannot run
/// without root call this first and fail with a clear message otherwise.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (network namespaces, iptables, NFQUEUE)"
    );
}

/// A per-process counter so names are unique across parallel tests.
pub(crate) fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
