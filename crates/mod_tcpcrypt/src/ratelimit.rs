//! Keeps a dead or hung tcpcryptd from flooding the error log: lookup
//! failures are logged at most once per interval, with a count of those that
//! were kept quiet in between.
//!
//! The state is two atomics so it can live in memory shared by all httpd
//! children (prefork has one process per connection, and the admin wants one
//! line, not one per child).

use std::sync::atomic::{AtomicU64, Ordering};

/// How often a lookup failure may reach the error log.
pub const LOG_INTERVAL_SECS: u64 = 60;

/// The shared state. All-zero bytes are a valid initial value ("never
/// logged"), which is what a fresh anonymous shared mapping holds.
#[derive(Debug, Default)]
#[repr(C)]
pub struct LogLimiter {
    /// Seconds since the epoch of the last logged failure, plus one, so that
    /// zero can mean "never".
    last_logged_plus_one: AtomicU64,
    /// Failures not logged since the last logged one.
    suppressed: AtomicU64,
}

/// What the caller should do with one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it, mentioning how many were silenced before it.
    Log { suppressed_before: u64 },
    /// Stay quiet.
    Suppress,
}

impl LogLimiter {
    pub const fn new() -> Self {
        Self {
            last_logged_plus_one: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Decides about one failure that happened at `now_secs` (seconds since
    /// the epoch). Of several callers racing in the same interval exactly one
    /// gets `Log`.
    pub fn failure(&self, now_secs: u64, interval_secs: u64) -> Verdict {
        let last = self.last_logged_plus_one.load(Ordering::Acquire);
        let due = last == 0 || now_secs.saturating_add(1) >= last.saturating_add(interval_secs);
        if due
            && self
                .last_logged_plus_one
                .compare_exchange(
                    last,
                    now_secs.saturating_add(1),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            Verdict::Log {
                suppressed_before: self.suppressed.swap(0, Ordering::AcqRel),
            }
        } else {
            self.suppressed.fetch_add(1, Ordering::AcqRel);
            Verdict::Suppress
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_failure_is_logged() {
        let limiter = LogLimiter::new();
        assert_eq!(
            limiter.failure(1_000, 60),
            Verdict::Log {
                suppressed_before: 0
            }
        );
    }

    #[test]
    fn failures_within_the_interval_are_suppressed() {
        let limiter = LogLimiter::new();
        limiter.failure(1_000, 60);
        assert_eq!(limiter.failure(1_000, 60), Verdict::Suppress);
        assert_eq!(limiter.failure(1_059, 60), Verdict::Suppress);
    }

    #[test]
    fn next_failure_after_the_interval_is_logged_with_the_suppressed_count() {
        let limiter = LogLimiter::new();
        limiter.failure(1_000, 60);
        limiter.failure(1_010, 60);
        limiter.failure(1_020, 60);
        assert_eq!(
            limiter.failure(1_060, 60),
            Verdict::Log {
                suppressed_before: 2
            }
        );
        assert_eq!(limiter.failure(1_061, 60), Verdict::Suppress);
    }

    #[test]
    fn a_clock_step_backwards_does_not_unmute() {
        let limiter = LogLimiter::new();
        limiter.failure(1_000, 60);
        assert_eq!(limiter.failure(10, 60), Verdict::Suppress);
    }

    #[test]
    fn a_failure_at_time_zero_still_counts_as_logged() {
        let limiter = LogLimiter::new();
        assert!(matches!(limiter.failure(0, 60), Verdict::Log { .. }));
        assert_eq!(limiter.failure(30, 60), Verdict::Suppress);
    }

    #[test]
    fn racing_threads_log_exactly_once_per_interval() {
        let limiter = LogLimiter::new();
        let logged: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        (0..1_000)
                            .filter(|_| matches!(limiter.failure(5_000, 60), Verdict::Log { .. }))
                            .count() as u64
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        assert_eq!(logged, 1);
    }
}
