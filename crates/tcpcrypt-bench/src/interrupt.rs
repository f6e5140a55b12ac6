//! Ctrl-C and SIGTERM turn into a flag that every loop of the benchmark
//! polls, so the run unwinds normally and the testnet guards delete the
//! namespaces and stop the daemons. A default signal disposition would kill
//! the process with namespaces and firewall rules left behind.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Whether the user asked the run to stop.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write into the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP and starts a thread that waits for
/// them. Must run before any other thread exists, since only threads
/// created afterwards inherit the blocked mask.
pub fn install() -> Result<(), String> {
    let set = signal_set();
    // SAFETY: set is a valid, initialised signal set.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(format!(
            "blocking SIGINT/SIGTERM: {}",
            std::io::Error::from_raw_os_error(rc)
        ));
    }
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: both pointers refer to live locals.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    continue;
                }
                if REQUESTED.swap(true, Ordering::Relaxed) {
                    eprintln!("tcpcrypt-bench: still cleaning up, please wait");
                } else {
                    eprintln!(
                        "\ntcpcrypt-bench: interrupted; stopping the daemons and removing the namespaces"
                    );
                }
            }
        })
        .map(drop)
        .map_err(|e| format!("starting the signal thread: {e}"))
}
