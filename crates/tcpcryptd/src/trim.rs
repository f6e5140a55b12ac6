//! Giving memory back to the system once a burst of connections is over.
//!
//! Freed memory stays with the allocator, spread over its per-thread
//! arenas, ready for reuse; after a few thousand connections have come and
//! gone that is megabytes the daemon no longer needs and still holds, and
//! its resident size never comes down. glibc hands such memory back only
//! when asked (`malloc_trim`), so the packet thread asks when the table
//! has drained, which is also when it has least else to do.

/// Peaks smaller than this leave too little behind to be worth a trim.
pub const MIN_PEAK: usize = 64;

/// Follows the number of tracked connections and says when a burst has
/// drained: the count has fallen to an eighth of the highest seen since
/// the last trim, and that highest was at least [`MIN_PEAK`].
#[derive(Debug, Default)]
pub struct DrainWatch {
    peak: usize,
    /// A burst worth trimming after has not drained to nothing yet: the
    /// last connections of a burst, and what the other threads free as
    /// they finish with them, are worth one more trim at zero.
    burst: bool,
}

impl DrainWatch {
    /// Records the current count; true when it is time to trim. The peak
    /// then starts again from the current count, so a table that drains
    /// to nothing is trimmed at each eighth of the way down, until what
    /// is left is below [`MIN_PEAK`], and once more when nothing is left:
    /// a trim frees only what was already freed, and a big table that is
    /// still draining has much to come.
    pub fn drained(&mut self, connections: usize) -> bool {
        self.peak = self.peak.max(connections);
        if self.peak >= MIN_PEAK {
            self.burst = true;
            if connections <= self.peak / 8 {
                self.peak = connections;
                self.burst = connections > 0;
                return true;
            }
        }
        if connections == 0 && self.burst {
            self.burst = false;
            return true;
        }
        false
    }
}

/// Asks the allocator to return the whole free pages it holds, in every
/// arena. It takes each arena's lock in turn: around a millisecond per
/// few megabytes of heap, during which this thread does nothing else.
/// Other C libraries have no such call, and there this does nothing.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only rearranges the
    // allocator's own free lists under its own locks; any thread may call
    // it at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draining_burst_is_trimmed_at_each_eighth_while_it_is_worth_it() {
        let mut w = DrainWatch::default();
        for n in [10, 400, 1200, 900, 300] {
            assert!(!w.drained(n), "{n} of a peak of 1200");
        }
        assert!(w.drained(150));
        assert!(!w.drained(100));
        // 150 is still a peak worth trimming after; 18 is not, but the
        // burst ends with one more trim once nothing is left.
        assert!(w.drained(18));
        assert!(!w.drained(5));
        assert!(w.drained(0));
        assert!(!w.drained(0));
    }

    #[test]
    fn small_peaks_are_never_trimmed() {
        let mut w = DrainWatch::default();
        for _ in 0..3 {
            assert!(!w.drained(MIN_PEAK - 1));
            assert!(!w.drained(0));
        }
    }

    #[test]
    fn a_second_burst_is_trimmed_again() {
        let mut w = DrainWatch::default();
        assert!(!w.drained(2000));
        assert!(w.drained(0));
        assert!(!w.drained(MIN_PEAK));
        assert!(w.drained(MIN_PEAK / 8));
    }
}
