//! `sync-latency`: measures the latency of one append plus `fdatasync` on a disk, the floor
//! under every acknowledgement in `--durability sync` mode.
//!
//! Appends `--writes` blocks of `--bytes` bytes to a new file in `--dir`, each followed by
//! `fdatasync`, as the write-ahead log does for one group commit, and reports the latency of
//! each write-plus-sync pair. The file is deleted at the end.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use serde::Serialize;
use shadowflow_benches::latency::{LatencySummary, format_ms, new_histogram};

/// Times append + fdatasync pairs on one file.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Folder on the disk to measure [default: the system's temporary folder].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,

    /// Number of write + fdatasync pairs.
    #[arg(long, value_name = "N", default_value_t = 2000)]
    writes: u32,

    /// Bytes per write: about one group commit of 16 sensor updates at the default.
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    bytes: usize,
}

/// The JSON line printed on stdout.
#[derive(Serialize)]
struct SyncReport {
    bench: &'static str,
    writes: u32,
    bytes: usize,
    syncs_per_s: f64,
    #[serde(flatten)]
    latency: LatencySummary,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(cli.writes >= 1, "invalid --writes 0: pass 1 or more");
    let dir = cli.dir.unwrap_or_else(std::env::temp_dir);
    let file = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    let mut handle = OpenOptions::new()
        .append(true)
        .open(file.path())
        .with_context(|| format!("opening {}", file.path().display()))?;

    let block = vec![0x5a_u8; cli.bytes];
    let mut histogram = new_histogram();
    let started = Instant::now();
    for _ in 0..cli.writes {
        let write_started = Instant::now();
        handle.write_all(&block).context("writing a block")?;
        handle.sync_data().context("syncing the file")?;
        histogram.saturating_record(write_started.elapsed().as_micros() as u64);
    }
    let seconds = started.elapsed().as_secs_f64();

    let report = SyncReport {
        bench: "sync-latency",
        writes: cli.writes,
        bytes: cli.bytes,
        syncs_per_s: f64::from(cli.writes) / seconds,
        latency: LatencySummary::of(&histogram),
    };
    println!("{}", serde_json::to_string(&report)?);
    eprintln!(
        "{} writes of {} bytes + fdatasync in {}: {:.0} syncs/s; p50 {}, p99 {}, p99.9 {}, max {}",
        cli.writes,
        cli.bytes,
        dir.display(),
        report.syncs_per_s,
        format_ms(report.latency.p50_us),
        format_ms(report.latency.p99_us),
        format_ms(report.latency.p999_us),
        format_ms(report.latency.max_us),
    );
    Ok(())
}
