//! The Parquet history archive under a replay's load: write speed, file size and a read-back.
//!
//! [`replay`] turns a real data set into the history rows that the service would archive.
//! [`write_archive`] sends them from one thread to a real [`ArchiveWriter`] in a fresh folder
//! and closes it, and measures the CPU time of the writer thread. [`check`] sizes the same rows
//! as JSON lines and decodes every row of the finished files with the `parquet` crate's own
//! reader.
//!
//! # Notes
//! - The writer's CPU time is the process's CPU time over the write (from the first send to
//!   the end of `close`) minus that of the sending thread. The process runs no other threads
//!   then, so this is the writer thread's time. Time spent waiting for `fsync` is not CPU time
//!   and is not counted; the wall time includes it.
//! - The whole data set is built in memory first, so the measured phase reads no CSV and runs
//!   no shadow logic.

pub mod check;
pub mod replay;

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use pipeline::history::HistoryRow;
use sinks::parquet_archive::{ArchiveConfig, ArchiveStats, ArchiveWriter};

/// Timings of one archive write.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WriteRun {
    /// Rows sent.
    pub rows: u64,
    /// Wall time from the first send to the end of `close`.
    pub wall: Duration,
    /// CPU time of the writer thread: process CPU minus the sending thread's.
    pub writer_cpu: Duration,
    /// CPU time of the sending thread.
    pub sender_cpu: Duration,
    /// The writer's own counters after `close`.
    #[serde(skip)]
    pub stats: ArchiveStats,
}

impl WriteRun {
    /// Rows per second of writer CPU time.
    pub fn rows_per_cpu_second(&self) -> f64 {
        self.rows as f64 / self.writer_cpu.as_secs_f64().max(f64::EPSILON)
    }

    /// Rows per second of wall time.
    pub fn rows_per_second(&self) -> f64 {
        self.rows as f64 / self.wall.as_secs_f64().max(f64::EPSILON)
    }
}

/// Writes `rows` to a new archive in `directory` (which should be empty) with `config`, from
/// the calling thread, and closes it.
///
/// # Errors
/// Fails when the archive cannot be started, a row cannot be queued, or `close` reports rows
/// that are in no finished file.
pub fn write_archive(
    directory: &Path,
    rows: Vec<HistoryRow>,
    config: ArchiveConfig,
) -> anyhow::Result<WriteRun> {
    let row_count = rows.len() as u64;
    let archive = ArchiveWriter::spawn(directory, config)
        .with_context(|| format!("starting the archive writer in {}", directory.display()))?;
    let sender = archive.sender();

    let process_before = cpu_time(libc::RUSAGE_SELF)?;
    let sender_before = cpu_time(libc::RUSAGE_THREAD)?;
    let started = Instant::now();
    for row in rows {
        sender
            .send(row)
            .map_err(|error| anyhow::anyhow!("queueing a history row: {error}"))?;
    }
    drop(sender);
    let stats = archive.close().context("closing the archive writer")?;
    let wall = started.elapsed();
    let sender_cpu = cpu_time(libc::RUSAGE_THREAD)?.saturating_sub(sender_before);
    let process_cpu = cpu_time(libc::RUSAGE_SELF)?.saturating_sub(process_before);

    Ok(WriteRun {
        rows: row_count,
        wall,
        writer_cpu: process_cpu.saturating_sub(sender_cpu),
        sender_cpu,
        stats,
    })
}

/// Returns the user plus system CPU time of `scope`: `RUSAGE_SELF` (the process) or
/// `RUSAGE_THREAD` (the calling thread).
fn cpu_time(scope: libc::c_int) -> anyhow::Result<Duration> {
    // SAFETY: `rusage` is plain data, so all zeros is a valid value, and `getrusage` writes
    // only into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer refers to a live, writable `rusage`.
    if unsafe { libc::getrusage(scope, &mut usage) } != 0 {
        return Err(io::Error::last_os_error()).context("reading CPU time with getrusage");
    }
    let duration = |time: libc::timeval| {
        Duration::from_secs(time.tv_sec as u64) + Duration::from_micros(time.tv_usec as u64)
    };
    Ok(duration(usage.ru_utime) + duration(usage.ru_stime))
}
