//! Options of one pipeline run, as the `pipeline` binary's command-line flags.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, ValueEnum};
use pipeline::durable::Durability;
use serde::Serialize;

/// Default number of timely worker threads.
pub const DEFAULT_WORKERS: usize = 2;

/// Default fleet size, in things.
pub const DEFAULT_THINGS: u64 = 10_000;

/// Default number of measured updates.
pub const DEFAULT_UPDATES: u64 = 1_000_000;

/// Default send rate of the open loop, in updates per second.
pub const DEFAULT_RATE: u64 = 50_000;

/// Default time between two syncs of the write-ahead log in batch mode, in milliseconds. The
/// service uses the same default.
pub const DEFAULT_BATCH_INTERVAL_MS: u64 = 10;

/// Default number of distinct report payloads the measured updates cycle through.
pub const DEFAULT_PAYLOAD_VARIANTS: usize = 4096;

/// Pacing of the measured updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pacing {
    /// Send as fast as the request channel takes updates. This finds the throughput, and the
    /// latency includes queueing in the channel and inside the dataflow.
    Saturated,
    /// Send on a fixed schedule of `--rate` updates per second. Latency counts from the
    /// scheduled send time, so a stalled sender shows up as latency.
    Open,
}

/// When an accepted update counts as durable, as the `--durability` flag names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityFlag {
    /// No write-ahead log: shadows live in memory only.
    None,
    /// The write-ahead log in a temporary folder, synced every `--batch-interval-ms`.
    Batch,
    /// The write-ahead log in a temporary folder, synced before each batch's responses.
    Sync,
}

/// Flags of `pipeline`.
#[derive(Clone, Debug, Args)]
pub struct PipelineConfig {
    /// Timely worker threads.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_WORKERS)]
    pub workers: usize,

    /// Things in the fleet, each with one classic shadow created in the load phase.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_THINGS)]
    pub things: u64,

    /// Updates sent in the measured phase, each to a thing picked at random.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_UPDATES)]
    pub updates: u64,

    /// Pacing of the measured updates.
    #[arg(long, value_enum, default_value_t = Pacing::Saturated)]
    pub pacing: Pacing,

    /// Send rate of the open loop, in updates per second.
    #[arg(long, value_name = "PER_SECOND", default_value_t = DEFAULT_RATE)]
    pub rate: u64,

    /// Archive history rows to Parquet in a temporary folder. Without this flag or
    /// `--archive-dir` history rows are dropped.
    #[arg(long)]
    pub archive: bool,

    /// Archive history rows to Parquet in DIR, which is kept after the run.
    #[arg(long, value_name = "DIR")]
    pub archive_dir: Option<PathBuf>,

    /// Write-ahead log mode; `batch` and `sync` write the log in a temporary folder.
    #[arg(long, value_enum, default_value_t = DurabilityFlag::None)]
    pub durability: DurabilityFlag,

    /// Maximum time between two syncs of the write-ahead log in batch mode, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_BATCH_INTERVAL_MS)]
    pub batch_interval_ms: u64,

    /// Distinct report payloads the measured updates cycle through.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PAYLOAD_VARIANTS)]
    pub payload_variants: usize,

    /// Maximum wait for the load phase and for the measured phase each, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub phase_timeout_s: u64,
}

impl PipelineConfig {
    /// Checks the flags that clap cannot check on its own.
    ///
    /// # Errors
    /// Names the flag whose value is out of range.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.workers == 0 {
            bail!("--workers must be at least 1, got 0");
        }
        if self.things == 0 || self.updates == 0 {
            bail!("--things and --updates must be at least 1");
        }
        if self.pacing == Pacing::Open && !(1..=10_000_000).contains(&self.rate) {
            bail!(
                "--rate must be from 1 to 10000000 updates/s, got {}",
                self.rate
            );
        }
        if self.payload_variants == 0 {
            bail!("--payload-variants must be at least 1, got 0");
        }
        Ok(())
    }

    /// Returns the durability mode of the dataflow.
    pub fn durability_mode(&self) -> Durability {
        match self.durability {
            DurabilityFlag::None => Durability::None,
            DurabilityFlag::Sync => Durability::Sync,
            DurabilityFlag::Batch => Durability::Batch {
                interval: Duration::from_millis(self.batch_interval_ms.max(1)),
            },
        }
    }

    /// Returns the longest wait for one phase.
    pub fn phase_timeout(&self) -> Duration {
        Duration::from_secs(self.phase_timeout_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: PipelineConfig,
    }

    fn parse(args: &[&str]) -> PipelineConfig {
        let mut all = vec!["pipeline"];
        all.extend_from_slice(args);
        Cli::parse_from(all).config
    }

    #[test]
    fn defaults_validate() {
        let config = parse(&[]);
        config.validate().expect("defaults are valid");
        assert_eq!(config.pacing, Pacing::Saturated);
        assert!(!config.archive);
        assert_eq!(config.archive_dir, None);
        assert_eq!(config.durability_mode(), Durability::None);
    }

    #[test]
    fn archive_flags_parse() {
        assert!(parse(&["--archive"]).archive);
        assert_eq!(
            parse(&["--archive-dir", "/tmp/history"]).archive_dir,
            Some(PathBuf::from("/tmp/history"))
        );
    }

    #[test]
    fn zero_workers_is_rejected() {
        assert!(parse(&["--workers", "0"]).validate().is_err());
    }
}
