//! Write-ahead log positions that the archive contains, kept apart from file I/O.
//!
//! Every logged row carries a [`LogPosition`]. `(generation, worker)` names one write-ahead log,
//! and within a log the lsn counts up from 0. The archive tracks three things per log:
//!
//! - [`ArchiveWatermark`]: one past the highest lsn in a committed file. The state file stores
//!   it, so it survives restarts.
//! - [`LogRanges`]: first and last lsn of each log among the rows of one open file.
//! - [`PositionFilter`]: which arriving rows to archive. It drops rows that the archive already
//!   contains and holds back the rows of a log once one of its rows was lost.
//!
//! # Notes
//!
//! - The filter relies on the rows of one log arriving in lsn order. A row whose lsn is not
//!   above the last accepted lsn of its log is taken for a re-sent copy and dropped.
//! - Rows of one log can go to several open files, one per UTC date. The writer commits such
//!   files together (see `LogRanges::shares_log_with`). So once a commit advances a log's
//!   watermark, every accepted row of that log below the new watermark is in a committed file.
//! - The watermark keeps one entry per log forever: restarts times workers, 24 bytes each in
//!   memory.
//!
//! # Example
//!
//! ```
//! use pipeline::history::LogPosition;
//! use sinks::parquet_archive::ArchiveWatermark;
//!
//! let watermark: ArchiveWatermark =
//!     serde_json::from_str(r#"[{"generation": 2, "worker": 0, "next_lsn": 10}]"#)?;
//!
//! assert_eq!(watermark.next_lsn(2, 0), 10);
//! assert_eq!(watermark.next_lsn(2, 1), 0);
//! assert!(watermark.covers(LogPosition { generation: 2, worker: 0, lsn: 9 }));
//! assert!(!watermark.covers(LogPosition { generation: 2, worker: 0, lsn: 10 }));
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use pipeline::history::LogPosition;
use serde::{Deserialize, Serialize};

/// One write-ahead log: the service start that wrote it and the dataflow worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct LogId {
    generation: u64,
    worker: u32,
}

impl LogId {
    fn of(position: LogPosition) -> Self {
        Self {
            generation: position.generation,
            worker: position.worker,
        }
    }

    fn at(self, lsn: u64) -> LogPosition {
        LogPosition {
            generation: self.generation,
            worker: self.worker,
            lsn,
        }
    }
}

/// For each write-ahead log, one past the highest lsn in a committed archive file.
///
/// The archive contains every logged row below the watermark in a committed file: a file with its
/// `.parquet` name, or one that the next start renames to it. After a crash, the service
/// re-sends the log records from [`next_lsn`](Self::next_lsn) on. Re-sending more is harmless,
/// because the writer drops rows that it already contains.
///
/// Serialized as a JSON array of `{"generation", "worker", "next_lsn"}` objects sorted by log,
/// because JSON object keys cannot be pairs.
///
/// Design: `next_lsns` never contains two entries for one log, and an entry never decreases.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Vec<WatermarkEntry>", try_from = "Vec<WatermarkEntry>")]
pub struct ArchiveWatermark {
    /// `BTreeMap` so that the serialized form and `next_positions` are sorted by log.
    next_lsns: BTreeMap<LogId, u64>,
}

/// One log of the watermark in its JSON form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WatermarkEntry {
    generation: u64,
    worker: u32,
    next_lsn: u64,
}

impl ArchiveWatermark {
    /// Creates an empty watermark, which covers no position.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns one past the highest lsn of log `(generation, worker)` in a committed file, or 0
    /// if no committed file contains a row of that log.
    pub fn next_lsn(&self, generation: u64, worker: u32) -> u64 {
        let log = LogId { generation, worker };
        self.next_lsns.get(&log).copied().unwrap_or(0)
    }

    /// Returns whether a committed file contains the row at `position`, that is whether its lsn is
    /// below [`next_lsn`](Self::next_lsn) of its log.
    pub fn covers(&self, position: LogPosition) -> bool {
        position.lsn < self.next_lsn(position.generation, position.worker)
    }

    /// Returns whether no log has a committed row.
    pub fn is_empty(&self) -> bool {
        self.next_lsns.is_empty()
    }

    /// Returns, for every log with a committed row, the first position that no committed file
    /// contains, sorted by generation and worker.
    pub fn next_positions(&self) -> impl Iterator<Item = LogPosition> + '_ {
        self.next_lsns.iter().map(|(log, &lsn)| log.at(lsn))
    }

    /// Raises each log's entry to one past the last lsn in `ranges`. Entries never go down.
    pub(super) fn advance(&mut self, ranges: &LogRanges) {
        for (&log, range) in &ranges.ranges {
            let next_lsn = self.next_lsns.entry(log).or_insert(0);
            *next_lsn = (*next_lsn).max(range.last.saturating_add(1));
        }
    }
}

impl From<ArchiveWatermark> for Vec<WatermarkEntry> {
    fn from(watermark: ArchiveWatermark) -> Self {
        watermark
            .next_lsns
            .into_iter()
            .map(|(log, next_lsn)| WatermarkEntry {
                generation: log.generation,
                worker: log.worker,
                next_lsn,
            })
            .collect()
    }
}

impl TryFrom<Vec<WatermarkEntry>> for ArchiveWatermark {
    type Error = String;

    fn try_from(entries: Vec<WatermarkEntry>) -> Result<Self, Self::Error> {
        let mut next_lsns = BTreeMap::new();
        for entry in entries {
            let log = LogId {
                generation: entry.generation,
                worker: entry.worker,
            };
            if next_lsns.insert(log, entry.next_lsn).is_some() {
                return Err(format!(
                    "log generation {} worker {} appears twice in the watermark",
                    entry.generation, entry.worker
                ));
            }
        }
        Ok(Self { next_lsns })
    }
}

/// First and last lsn of one log among the rows of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LsnRange {
    first: u64,
    last: u64,
}

/// First and last lsn of each write-ahead log among the rows of one open file.
///
/// The lsns between `first` and `last` need not all be in the file: rows of one log can go to
/// two files around midnight, and some log records have no history row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct LogRanges {
    ranges: BTreeMap<LogId, LsnRange>,
}

impl LogRanges {
    /// Adds the row at `position`, which must come after every earlier row of its log.
    pub(super) fn record(&mut self, position: LogPosition) {
        let lsn = position.lsn;
        self.ranges
            .entry(LogId::of(position))
            .and_modify(|range| range.last = range.last.max(lsn))
            .or_insert(LsnRange {
                first: lsn,
                last: lsn,
            });
    }

    /// Returns whether both files contain rows of some common log, so that they must be committed
    /// together.
    ///
    /// Committing only one of them could advance the watermark past a row that the other contains:
    /// `[5, 7]` in one file and `[6]` in the other gives 8 while lsn 6 is not yet committed.
    pub(super) fn shares_log_with(&self, other: &LogRanges) -> bool {
        self.ranges.keys().any(|log| other.ranges.contains_key(log))
    }

    /// Returns the first position of each log in the file.
    pub(super) fn first_positions(&self) -> impl Iterator<Item = LogPosition> + '_ {
        self.ranges.iter().map(|(log, range)| log.at(range.first))
    }
}

/// Verdict of [`PositionFilter::admit`] on one arriving row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Admission {
    /// Archive the row.
    Accept,
    /// The archive already contains this lsn of the log, in a committed or an open file.
    Duplicate {
        /// Lowest lsn of the log that the filter would accept.
        next_lsn: u64,
    },
    /// An earlier row of the log was lost. Archiving this one would let the watermark skip the
    /// lost row, or duplicate this row after a restart, so it stays in the log only.
    AfterLoss {
        /// Lowest lost lsn of the log.
        lost_from: u64,
    },
}

/// Decides which arriving logged rows the writer archives.
///
/// Design: `next_expected` starts at the recovered watermark and only grows. `lost_from`
/// only gains entries during a run, because a lost row comes back only through the log replay
/// after a restart.
#[derive(Debug, Default)]
pub(super) struct PositionFilter {
    /// Per log, one past the last accepted lsn.
    next_expected: BTreeMap<LogId, u64>,
    /// Per log, the lowest lsn of a row that was accepted and then not archived.
    lost_from: BTreeMap<LogId, u64>,
}

impl PositionFilter {
    /// Creates a filter that drops every row that `watermark` covers.
    pub(super) fn new(watermark: &ArchiveWatermark) -> Self {
        Self {
            next_expected: watermark.next_lsns.clone(),
            lost_from: BTreeMap::new(),
        }
    }

    /// Decides on the row at `position` and, if it is accepted, expects a higher lsn next.
    pub(super) fn admit(&mut self, position: LogPosition) -> Admission {
        let log = LogId::of(position);
        // Every lost lsn was accepted before, so it is below `next_expected` too. Check losses
        // first, so that a lost row sent again is not taken for an archived one.
        if let Some(&lost_from) = self.lost_from.get(&log)
            && position.lsn >= lost_from
        {
            return Admission::AfterLoss { lost_from };
        }

        match self.next_expected.entry(log) {
            Entry::Occupied(entry) if position.lsn < *entry.get() => Admission::Duplicate {
                next_lsn: *entry.get(),
            },
            Entry::Occupied(mut entry) => {
                entry.insert(position.lsn.saturating_add(1));
                Admission::Accept
            }
            Entry::Vacant(entry) => {
                entry.insert(position.lsn.saturating_add(1));
                Admission::Accept
            }
        }
    }

    /// Records that the accepted row at `position` will not reach a committed file.
    pub(super) fn record_loss(&mut self, position: LogPosition) {
        let lost_from = self
            .lost_from
            .entry(LogId::of(position))
            .or_insert(u64::MAX);
        *lost_from = (*lost_from).min(position.lsn);
    }

    /// Records that the rows of a file with these ranges will not reach a committed file.
    pub(super) fn record_lost_ranges(&mut self, ranges: &LogRanges) {
        for position in ranges.first_positions() {
            self.record_loss(position);
        }
    }

    /// Returns, for every log with lost rows, the position of its first lost row.
    pub(super) fn lost_positions(&self) -> Vec<LogPosition> {
        self.lost_from
            .iter()
            .map(|(log, &lsn)| log.at(lsn))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(generation: u64, worker: u32, lsn: u64) -> LogPosition {
        LogPosition {
            generation,
            worker,
            lsn,
        }
    }

    fn ranges_of(positions: &[LogPosition]) -> LogRanges {
        let mut ranges = LogRanges::default();
        for &position in positions {
            ranges.record(position);
        }
        ranges
    }

    #[test]
    fn empty_watermark_covers_nothing() {
        let watermark = ArchiveWatermark::new();

        assert_eq!(watermark.next_lsn(1, 0), 0);
        assert!(!watermark.covers(position(1, 0, 0)));
        assert!(watermark.is_empty());
    }

    #[test]
    fn advance_keeps_one_past_last_lsn_per_log() {
        let mut watermark = ArchiveWatermark::new();

        watermark.advance(&ranges_of(&[
            position(1, 0, 0),
            position(1, 0, 4),
            position(1, 1, 7),
        ]));

        assert_eq!(watermark.next_lsn(1, 0), 5);
        assert_eq!(watermark.next_lsn(1, 1), 8);
        assert_eq!(watermark.next_lsn(2, 0), 0);
        assert!(watermark.covers(position(1, 0, 4)));
        assert!(!watermark.covers(position(1, 0, 5)));
    }

    #[test]
    fn advance_never_lowers_an_entry() {
        let mut watermark = ArchiveWatermark::new();
        watermark.advance(&ranges_of(&[position(1, 0, 9)]));

        watermark.advance(&ranges_of(&[position(1, 0, 3)]));

        assert_eq!(watermark.next_lsn(1, 0), 10);
    }

    #[test]
    fn watermark_round_trips_through_json() {
        let mut watermark = ArchiveWatermark::new();
        watermark.advance(&ranges_of(&[position(2, 1, 41), position(1, 0, 6)]));

        let text = serde_json::to_string(&watermark).expect("serialize watermark");
        let parsed: ArchiveWatermark = serde_json::from_str(&text).expect("parse watermark");

        assert_eq!(
            text,
            r#"[{"generation":1,"worker":0,"next_lsn":7},{"generation":2,"worker":1,"next_lsn":42}]"#
        );
        assert_eq!(parsed, watermark);
    }

    #[test]
    fn watermark_with_repeated_log_is_rejected() {
        let text = r#"[{"generation":1,"worker":0,"next_lsn":7},{"generation":1,"worker":0,"next_lsn":9}]"#;

        let error = serde_json::from_str::<ArchiveWatermark>(text).expect_err("log twice");

        assert!(error.to_string().contains("appears twice"), "{error}");
    }

    #[test]
    fn next_positions_lists_each_log_once() {
        let mut watermark = ArchiveWatermark::new();
        watermark.advance(&ranges_of(&[position(1, 1, 2), position(1, 0, 5)]));

        let positions: Vec<LogPosition> = watermark.next_positions().collect();

        assert_eq!(positions, vec![position(1, 0, 6), position(1, 1, 3)]);
    }

    #[test]
    fn files_with_a_common_log_share_it() {
        let may_1 = ranges_of(&[position(1, 0, 5), position(1, 0, 7)]);
        let may_2 = ranges_of(&[position(1, 0, 6)]);
        let other_worker = ranges_of(&[position(1, 1, 6)]);

        assert!(may_1.shares_log_with(&may_2));
        assert!(!may_1.shares_log_with(&other_worker));
        assert!(!may_1.shares_log_with(&LogRanges::default()));
    }

    #[test]
    fn filter_drops_rows_below_watermark() {
        let mut watermark = ArchiveWatermark::new();
        watermark.advance(&ranges_of(&[position(1, 0, 4)]));
        let mut filter = PositionFilter::new(&watermark);

        assert_eq!(
            filter.admit(position(1, 0, 4)),
            Admission::Duplicate { next_lsn: 5 }
        );
        assert_eq!(filter.admit(position(1, 0, 5)), Admission::Accept);
        assert_eq!(filter.admit(position(2, 0, 0)), Admission::Accept);
    }

    #[test]
    fn filter_drops_repeated_row_of_this_run() {
        let mut filter = PositionFilter::default();

        assert_eq!(filter.admit(position(1, 0, 3)), Admission::Accept);
        assert_eq!(
            filter.admit(position(1, 0, 3)),
            Admission::Duplicate { next_lsn: 4 }
        );
        assert_eq!(filter.admit(position(1, 0, 9)), Admission::Accept);
    }

    #[test]
    fn filter_drops_resent_row_below_loss_as_duplicate() {
        let mut filter = PositionFilter::default();
        filter.admit(position(1, 0, 3));
        filter.admit(position(1, 0, 4));

        filter.record_loss(position(1, 0, 4));

        assert_eq!(
            filter.admit(position(1, 0, 3)),
            Admission::Duplicate { next_lsn: 5 }
        );
    }

    #[test]
    fn filter_holds_back_log_after_loss() {
        let mut filter = PositionFilter::default();
        filter.admit(position(1, 0, 3));
        filter.admit(position(1, 0, 4));

        filter.record_lost_ranges(&ranges_of(&[position(1, 0, 4)]));
        filter.record_loss(position(1, 0, 3));

        assert_eq!(
            filter.admit(position(1, 0, 5)),
            Admission::AfterLoss { lost_from: 3 }
        );
        assert_eq!(
            filter.admit(position(1, 0, 3)),
            Admission::AfterLoss { lost_from: 3 }
        );
        assert_eq!(filter.admit(position(1, 1, 0)), Admission::Accept);
        assert_eq!(filter.lost_positions(), vec![position(1, 0, 3)]);
    }
}
