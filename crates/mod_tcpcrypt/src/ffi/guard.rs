//! The unwind barrier every `extern "C"` entry point goes through.

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `body`; if it panics, returns `fallback` instead of unwinding into C
/// (which would abort the whole httpd child). The panic message itself
/// reaches the error log through the default hook, as httpd sends stderr
/// there.
pub fn catch<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    // AssertUnwindSafe: after a panic the only state left behind is the
    // connection's lookup cell, which stays empty and is retried.
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}
