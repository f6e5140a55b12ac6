//! Order statistics for the samples of one measurement and for one figure
//! across rounds. The benchmark reports medians and ranges rather than means
//! because a busy 2-core machine produces outliers in one direction only.

use std::time::Duration;

/// A figure over the rounds it was measured in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// How many rounds produced a value.
    pub n: usize,
}

impl Spread {
    /// `None` when no round produced a value; non-finite values (a ratio
    /// over zero) are left out rather than poisoning the order.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Spread {
            median: median_sorted(&v),
            min: v[0],
            max: v[v.len() - 1],
            n: v.len(),
        })
    }
}

/// Median of an ascending, non-empty slice (mean of the middle two for an
/// even length).
fn median_sorted(v: &[f64]) -> f64 {
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

/// Nearest-rank percentile (`p` in 0..=100) of durations, in milliseconds;
/// `None` for no samples. Sorts `samples` in place.
pub fn percentile_ms(samples: &mut [Duration], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, samples.len()) - 1;
    Some(samples[idx].as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_an_odd_count_takes_the_middle_value() {
        let s = Spread::of(&[5.0, 1.0, 3.0]).expect("values");
        assert_eq!((s.median, s.min, s.max, s.n), (3.0, 1.0, 5.0, 3));
    }

    #[test]
    fn spread_of_an_even_count_averages_the_middle_two() {
        let s = Spread::of(&[4.0, 1.0, 2.0, 10.0]).expect("values");
        assert_eq!(s.median, 3.0);
    }

    #[test]
    fn spread_ignores_non_finite_values_and_is_none_without_values() {
        let s = Spread::of(&[f64::INFINITY, 2.0, f64::NAN]).expect("one value");
        assert_eq!((s.median, s.n), (2.0, 1));
        assert_eq!(Spread::of(&[f64::NAN]), None);
        assert_eq!(Spread::of(&[]), None);
    }

    #[test]
    fn percentile_uses_the_nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&mut v, 50.0), Some(50.0));
        assert_eq!(percentile_ms(&mut v, 99.0), Some(99.0));
        assert_eq!(percentile_ms(&mut v, 100.0), Some(100.0));
        let mut one = vec![Duration::from_millis(7)];
        assert_eq!(percentile_ms(&mut one, 99.0), Some(7.0));
        assert_eq!(percentile_ms(&mut [], 50.0), None);
    }
}
