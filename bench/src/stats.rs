//! Order statistics of measured samples. Percentiles use the nearest-rank method, so
//! every reported value is one that was actually measured.

use std::time::Duration;

/// Median, tail percentiles and count of a set of durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub count: usize,
    pub median: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Summary {
    /// Summarises `samples`; an empty slice gives all zeros and a count of 0.
    pub fn of(samples: &[Duration]) -> Summary {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();

        Summary {
            count: sorted.len(),
            median: nearest_rank(&sorted, 50.0).unwrap_or_default(),
            p90: nearest_rank(&sorted, 90.0).unwrap_or_default(),
            p99: nearest_rank(&sorted, 99.0).unwrap_or_default(),
            max: sorted.last().copied().unwrap_or_default(),
        }
    }
}

/// Returns the `percent` percentile of `sorted` by nearest rank: the smallest sample
/// with at least `percent` % of the samples at or below it.
pub fn nearest_rank<T: Copy>(sorted: &[T], percent: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }

    let rank = (percent / 100.0 * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    Some(sorted[index])
}

/// Median of `values` by nearest rank, or `None` for an empty slice. NaN sorts last.
pub fn median_f64(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    nearest_rank(&sorted, 50.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&ms| Duration::from_millis(ms)).collect()
    }

    #[test]
    fn summary_of_hundred_samples() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();

        let summary = Summary::of(&samples);

        assert_eq!(summary.count, 100);
        assert_eq!(summary.median, Duration::from_millis(50));
        assert_eq!(summary.p90, Duration::from_millis(90));
        assert_eq!(summary.p99, Duration::from_millis(99));
        assert_eq!(summary.max, Duration::from_millis(100));
    }

    #[test]
    fn summary_of_one_sample() {
        let summary = Summary::of(&millis(&[7]));

        assert_eq!(summary.median, Duration::from_millis(7));
        assert_eq!(summary.p99, Duration::from_millis(7));
    }

    #[test]
    fn summary_of_nothing_is_zero() {
        let summary = Summary::of(&[]);

        assert_eq!(summary.count, 0);
        assert_eq!(summary.median, Duration::ZERO);
    }

    #[test]
    fn median_of_odd_count_is_middle() {
        assert_eq!(median_f64(&[3.0, 1.0, 2.0]), Some(2.0));
    }

    #[test]
    fn median_of_even_count_is_lower_middle() {
        assert_eq!(median_f64(&[4.0, 1.0, 3.0, 2.0]), Some(2.0));
    }

    #[test]
    fn median_of_nothing_is_none() {
        assert_eq!(median_f64(&[]), None);
    }
}
