//! Counters of a running replay, and the summary printed when it ends.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::{debug, warn};

use super::config::BrokerAddress;
use super::dataset::{Dataset, SkipReason};

/// Number of skipped rows logged at WARN for each reason. Later ones are logged at DEBUG.
const WARNINGS_PER_REASON: u64 = 5;

/// Live counters, shared by the reader thread, the connections and the progress display.
#[derive(Debug, Default)]
pub(crate) struct ReplayCounters {
    pub rows_read: AtomicU64,
    pub rows_skipped: AtomicU64,
    pub rows_published: AtomicU64,
    pub updates_published: AtomicU64,
}

/// Point-in-time copy of [`ReplayCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CounterSnapshot {
    pub rows_read: u64,
    pub rows_skipped: u64,
    pub rows_published: u64,
    pub updates_published: u64,
}

impl ReplayCounters {
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            rows_read: self.rows_read.load(Ordering::Relaxed),
            rows_skipped: self.rows_skipped.load(Ordering::Relaxed),
            rows_published: self.rows_published.load(Ordering::Relaxed),
            updates_published: self.updates_published.load(Ordering::Relaxed),
        }
    }
}

/// Skipped rows counted by reason, with the first few of each reason logged.
#[derive(Debug, Default)]
pub(crate) struct SkipCounter {
    counts: BTreeMap<SkipReason, u64>,
}

impl SkipCounter {
    /// Counts a skipped row and logs it at WARN if it is among the first of its reason.
    pub fn record(&mut self, reason: SkipReason, path: &Path, line: u64) {
        let count = self.counts.entry(reason).or_default();
        *count += 1;
        if *count <= WARNINGS_PER_REASON {
            warn!(path = %path.display(), line, %reason, "skipping row");
        } else {
            debug!(path = %path.display(), line, %reason, "skipping row");
        }
        if *count == WARNINGS_PER_REASON {
            warn!(%reason, "further rows skipped for this reason are logged at DEBUG only");
        }
    }

    pub fn into_counts(self) -> BTreeMap<SkipReason, u64> {
        self.counts
    }
}

/// Result of a completed replay.
///
/// `Display` prints a multi-line report for the terminal.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplaySummary {
    /// Data set the files were read as.
    pub dataset: Dataset,

    /// Broker the updates went to.
    pub broker: BrokerAddress,

    /// Number of input files, after expanding folders.
    pub files: usize,

    /// Data rows read, skipped rows included.
    pub rows_read: u64,

    /// Rows whose every update the broker acknowledged with a PubAck.
    pub rows_published: u64,

    /// Updates acknowledged with a PubAck. An occupancy row yields up to seven.
    pub updates_published: u64,

    /// Rows that yielded no update, by reason.
    pub rows_skipped: BTreeMap<SkipReason, u64>,

    /// Distinct things that received updates.
    pub things: usize,

    /// MQTT connections opened.
    pub connections: usize,

    /// Time from the start of the replay until the last PubAck.
    pub elapsed: Duration,
}

impl ReplaySummary {
    /// Returns the number of skipped rows over all reasons.
    pub fn rows_skipped_total(&self) -> u64 {
        self.rows_skipped.values().sum()
    }

    /// Returns rows read per second of elapsed time, or 0 for an empty replay.
    pub fn rows_per_second(&self) -> f64 {
        per_second(self.rows_read, self.elapsed)
    }

    /// Returns updates published per second of elapsed time, or 0 for an empty replay.
    pub fn updates_per_second(&self) -> f64 {
        per_second(self.updates_published, self.elapsed)
    }
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// Formats `count word`, adding an `s` unless the count is 1.
fn count_of(count: usize, word: &str) -> String {
    if count == 1 {
        format!("1 {word}")
    } else {
        format!("{count} {word}s")
    }
}

impl fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "replayed {} of the {} data set to {} in {:.2} s",
            count_of(self.files, "file"),
            self.dataset,
            self.broker,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(f, "  rows read          {}", self.rows_read)?;
        writeln!(f, "  rows published     {}", self.rows_published)?;
        writeln!(
            f,
            "  updates published  {} to {} over {}",
            self.updates_published,
            count_of(self.things, "thing"),
            count_of(self.connections, "connection")
        )?;
        writeln!(f, "  rows skipped       {}", self.rows_skipped_total())?;
        for (reason, count) in &self.rows_skipped {
            writeln!(f, "    {count:>8}  {reason}")?;
        }
        write!(
            f,
            "  rate               {:.1} rows/s, {:.1} updates/s",
            self.rows_per_second(),
            self.updates_per_second()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> ReplaySummary {
        ReplaySummary {
            dataset: Dataset::Chicago,
            broker: BrokerAddress::default(),
            files: 1,
            rows_read: 34_923,
            rows_published: 34_917,
            updates_published: 34_917,
            rows_skipped: BTreeMap::from([
                (SkipReason::NoMeasurement, 6),
                (
                    SkipReason::InvalidNumber {
                        column: "Turbidity",
                    },
                    2,
                ),
            ]),
            things: 6,
            connections: 6,
            elapsed: Duration::from_millis(2_500),
        }
    }

    #[test]
    fn summary_rates_use_elapsed_time() {
        let summary = summary();
        assert_eq!(summary.rows_skipped_total(), 8);
        assert!((summary.rows_per_second() - 13_969.2).abs() < 1e-9);
        assert!((summary.updates_per_second() - 13_966.8).abs() < 1e-9);

        let empty = ReplaySummary {
            elapsed: Duration::ZERO,
            ..summary
        };
        assert_eq!(empty.rows_per_second(), 0.0);
    }

    #[test]
    fn summary_display_lists_skip_reasons() {
        let expected = "\
replayed 1 file of the chicago data set to mqtt://127.0.0.1:1883 in 2.50 s
  rows read          34923
  rows published     34917
  updates published  34917 to 6 things over 6 connections
  rows skipped       8
           6  no measured value
           2  invalid number in column Turbidity
  rate               13969.2 rows/s, 13966.8 updates/s";
        assert_eq!(summary().to_string(), expected);
    }

    #[test]
    fn skip_counter_counts_by_reason() {
        let mut counter = SkipCounter::default();
        for line in 0..7 {
            counter.record(SkipReason::NoMeasurement, Path::new("a.csv"), line);
        }
        counter.record(SkipReason::MalformedRecord, Path::new("a.csv"), 9);
        let counts = counter.into_counts();
        assert_eq!(counts.get(&SkipReason::NoMeasurement), Some(&7));
        assert_eq!(counts.get(&SkipReason::MalformedRecord), Some(&1));
    }
}
