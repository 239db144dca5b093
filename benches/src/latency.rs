//! Summary of a latency histogram: the percentiles that the benchmark reports print.
//!
//! Latencies are recorded in microseconds in an HDR histogram with 3 significant digits, so
//! every reported value is within 0.1 % of the recorded one.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms track: 10 minutes, in microseconds. Larger values are
/// recorded as this maximum.
pub const MAX_TRACKED_LATENCY_US: u64 = 600_000_000;

/// Significant decimal digits the histograms keep.
const SIGNIFICANT_DIGITS: u8 = 3;

/// Creates an empty latency histogram in microseconds, from 1 µs to
/// [`MAX_TRACKED_LATENCY_US`].
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_LATENCY_US, SIGNIFICANT_DIGITS)
        .expect("the bounds are constants with low < high and 3 significant digits")
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    /// Number of recorded latencies.
    pub count: u64,

    /// Median.
    pub p50_us: u64,

    /// 99th percentile.
    pub p99_us: u64,

    /// 99.9th percentile.
    pub p999_us: u64,

    /// Largest recorded latency.
    pub max_us: u64,
}

impl LatencySummary {
    /// Reads the percentiles of `histogram`; an empty histogram gives all zeros.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: histogram.len(),
            p50_us: histogram.value_at_quantile(0.50),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }
}

/// A [`LatencySummary`] of the delay to `/update/delta`, whose JSON keys start with `delta_`
/// so that it can sit beside the acknowledgement latency in one flat report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeltaLatencySummary {
    /// Number of recorded latencies.
    pub delta_count: u64,

    /// Median.
    pub delta_p50_us: u64,

    /// 99th percentile.
    pub delta_p99_us: u64,

    /// 99.9th percentile.
    pub delta_p999_us: u64,

    /// Largest recorded latency.
    pub delta_max_us: u64,
}

impl From<LatencySummary> for DeltaLatencySummary {
    fn from(summary: LatencySummary) -> Self {
        DeltaLatencySummary {
            delta_count: summary.count,
            delta_p50_us: summary.p50_us,
            delta_p99_us: summary.p99_us,
            delta_p999_us: summary.p999_us,
            delta_max_us: summary.max_us,
        }
    }
}

/// Formats microseconds as milliseconds with two decimals, such as `1.25 ms`.
pub fn format_ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_uniform_values() {
        let mut histogram = new_histogram();
        for us in 1..=1000 {
            histogram.record(us).expect("value within bounds");
        }
        let summary = LatencySummary::of(&histogram);
        assert_eq!(summary.count, 1000);
        assert_eq!(summary.p50_us, 500);
        assert_eq!(summary.p99_us, 990);
        assert_eq!(summary.p999_us, 999);
        assert_eq!(summary.max_us, 1000);
    }

    #[test]
    fn summary_of_empty_histogram_is_zero() {
        assert_eq!(
            LatencySummary::of(&new_histogram()),
            LatencySummary::default()
        );
    }

    #[test]
    fn format_ms_rounds_to_hundredths() {
        assert_eq!(format_ms(1254), "1.25 ms");
        assert_eq!(format_ms(0), "0.00 ms");
    }
}
