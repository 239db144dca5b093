//! One timed call of `pipeline::durable::recover`, and the median of several.
//!
//! Peak memory is the process's `VmHWM`. To get the peak of recovery alone, a caller runs
//! [`measure_once`] in a fresh process, as the `recovery` binary does.

use std::path::Path;
use std::time::Instant;

use clap::ValueEnum;
use pipeline::durable::{DurableDirs, recover};
use serde::{Deserialize, Serialize};

use crate::process::peak_rss_bytes;

/// Logged changes that the history archive contains, as recovery's `archived` callback reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ArchivedChanges {
    /// The archive contains every logged change, so recovery keeps no history rows.
    All,
    /// The archive contains none, so recovery builds a history row for every log record, as after
    /// a crash that lost every open Parquet file.
    None,
}

/// Result of one recovery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoveryRun {
    /// Wall time of the `recover` call, in seconds.
    pub seconds: f64,

    /// Shadows and tombstones read from the checkpoint.
    pub checkpoint_entries: u64,

    /// Log records applied after the checkpoint.
    pub log_records: u64,

    /// Live shadows after recovery.
    pub shadows: u64,

    /// History rows rebuilt for the archive.
    pub unarchived: u64,

    /// Peak resident memory of the process, in bytes.
    pub peak_rss_bytes: u64,
}

/// Recovers the data folder `data_dir` for `workers` workers and returns what it read, how
/// long it took and the process's peak memory.
///
/// # Errors
/// Fails when recovery fails or `/proc/self/status` cannot be read.
pub fn measure_once(
    data_dir: &Path,
    workers: usize,
    archived: ArchivedChanges,
) -> anyhow::Result<RecoveryRun> {
    let dirs = DurableDirs::under(data_dir);
    let all_archived = archived == ArchivedChanges::All;
    let started = Instant::now();
    let recovered = recover(&dirs, workers, &|_| all_archived)?;
    let seconds = started.elapsed().as_secs_f64();
    let run = RecoveryRun {
        seconds,
        checkpoint_entries: recovered.stats.checkpoint_entries,
        log_records: recovered.stats.log_records,
        shadows: recovered.stats.shadows,
        unarchived: recovered.unarchived.len() as u64,
        peak_rss_bytes: peak_rss_bytes()?,
    };
    drop(recovered);
    Ok(run)
}

/// Returns the run with the median time, or `None` for no runs. With an even count it takes
/// the slower of the two middle runs.
pub fn median_run(runs: &[RecoveryRun]) -> Option<&RecoveryRun> {
    let mut sorted: Vec<&RecoveryRun> = runs.iter().collect();
    sorted.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    sorted.get(runs.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_of(seconds: f64) -> RecoveryRun {
        RecoveryRun {
            seconds,
            checkpoint_entries: 0,
            log_records: 0,
            shadows: 0,
            unarchived: 0,
            peak_rss_bytes: 0,
        }
    }

    #[test]
    fn median_of_three_is_the_middle_time() {
        let runs = [run_of(3.0), run_of(1.0), run_of(2.0)];
        assert_eq!(median_run(&runs).map(|run| run.seconds), Some(2.0));
    }

    #[test]
    fn median_of_none_is_none() {
        assert_eq!(median_run(&[]), None);
    }
}
