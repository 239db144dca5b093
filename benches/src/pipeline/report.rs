//! The result of a pipeline run, as one JSON line and one line for people.

use serde::Serialize;

use super::config::{DurabilityFlag, Pacing};
use crate::latency::{LatencySummary, format_ms};

/// Figures of one run. The numeric fields are top-level so that a shell script can pick them
/// out of the JSON line.
#[derive(Debug, Serialize)]
pub struct PipelineReport {
    /// Always `"pipeline"`, which marks the line among other benchmarks' lines.
    pub bench: &'static str,

    /// Timely worker threads.
    pub workers: usize,

    /// Things in the fleet.
    pub things: u64,

    /// Measured updates.
    pub updates: u64,

    /// Pacing of the measured updates.
    pub pacing: Pacing,

    /// Open loop: target rate in updates per second.
    pub target_rate: Option<u64>,

    /// Write-ahead log mode.
    pub durability: DurabilityFlag,

    /// Whether history rows went to the Parquet archive (otherwise they were dropped).
    pub archive: bool,

    /// Time of the load phase in seconds, until every creation's delta was delivered.
    pub load_s: f64,

    /// Time from the first measured submission to the last measured delta, in seconds.
    pub measured_s: f64,

    /// Measured updates per second over `measured_s`.
    pub updates_per_s: f64,

    /// CPU time of the whole process in the measured phase per update, in microseconds. It
    /// includes the sender thread and, with `--archive`, the archive writer.
    pub cpu_us_per_update: f64,

    /// Latency from submission (open loop: scheduled submission) to delta delivery.
    pub latency: LatencySummary,

    /// Open loop: largest lag of a submission behind its schedule, in microseconds.
    pub max_send_lag_us: u64,

    /// Messages other than deltas, such as `/update/accepted` and `/update/documents`.
    pub other_messages: u64,

    /// Rows the archive wrote to finished files; 0 without `--archive`.
    pub archived_rows: u64,

    /// Peak resident set size after the load phase, in bytes.
    pub peak_rss_after_load_bytes: u64,

    /// `peak_rss_after_load_bytes` divided by the number of things.
    pub rss_per_shadow_bytes: u64,

    /// Peak resident set size at the end of the measured phase, in bytes.
    pub peak_rss_bytes: u64,
}

impl PipelineReport {
    /// Returns the report as one line of JSON.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("the report has only string keys and plain values")
    }

    /// Returns the report as one line for people.
    pub fn to_human_line(&self) -> String {
        let pacing = match self.pacing {
            Pacing::Saturated => "saturated".to_owned(),
            Pacing::Open => format!(
                "open loop at {} updates/s (max send lag {})",
                self.target_rate.unwrap_or(0),
                format_ms(self.max_send_lag_us)
            ),
        };
        let archive = if self.archive {
            "archive"
        } else {
            "no archive"
        };
        let durability = match self.durability {
            DurabilityFlag::None => "none",
            DurabilityFlag::Batch => "batch",
            DurabilityFlag::Sync => "sync",
        };
        format!(
            "{} workers, {} things, {pacing}, durability {durability}, {archive}: {} updates in {:.2} s, \
             {:.0} updates/s, {:.2} µs CPU/update; delta latency p50 {}, p99 {}, p99.9 {}, max \
             {}; load {:.1} s, peak RSS after load {:.2} GiB ({} B/shadow)",
            self.workers,
            self.things,
            self.updates,
            self.measured_s,
            self.updates_per_s,
            self.cpu_us_per_update,
            format_ms(self.latency.p50_us),
            format_ms(self.latency.p99_us),
            format_ms(self.latency.p999_us),
            format_ms(self.latency.max_us),
            self.load_s,
            self.peak_rss_after_load_bytes as f64 / (1u64 << 30) as f64,
            self.rss_per_shadow_bytes,
        )
    }
}
