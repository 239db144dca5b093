//! The dataflow without a broker: update throughput and input-to-delta latency.
//!
//! [`run`] starts the real dataflow ([`pipeline::dataflow::spawn`]) in this process with
//! [`TimingOutputs`](outputs::TimingOutputs), which do no I/O but record when each delta is
//! delivered. Then it sends requests straight into the [`RequestSender`] from this thread:
//!
//! 1. Load phase, not measured: one update per thing creates its classic shadow with about
//!    200 bytes of state, reported and desired. The desired settings are never reported, so
//!    every later version of every shadow has a delta.
//! 2. Measured phase: `--updates` sensor reports of about 200 bytes of reported state, each to
//!    a thing picked at random. Each report carries its sequence number in its `clientToken`,
//!    and so does the `/update/delta` message it causes. The latency of an update runs from its
//!    submission (open loop: its scheduled time) to the delivery of that delta.
//!
//! Each response is encoded as the service encodes it (`/update/accepted`, `/update/documents`
//! and `/update/delta`), and then dropped. With `--archive` the history rows go to the real
//! Parquet archive; without it they are dropped. With `--durability batch|sync` the workers
//! write the write-ahead log in a temporary folder.
//!
//! # Layout
//! - `config`: [`PipelineConfig`], the flags.
//! - `payload`: the request payloads and the client tokens that carry sequence numbers.
//! - `outputs`: the dataflow outputs that time deltas.
//! - `report`: [`PipelineReport`], the JSON and human lines.
//!
//! # Notes
//! - The sender thread shares the machine's cores with the workers and the archive writer.
//!   Its cost per update (copying a payload and a key, one channel send) is part of the figure.
//! - Peak RSS is read after the load phase, before the measured payloads and keys are built,
//!   so per shadow it contains the dataflow's state and the process's fixed overhead.

pub mod config;
mod outputs;
mod payload;
pub mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use pipeline::dataflow::{
    self, DataflowConfig, DataflowHandle, DurableSetup, Operation, ReplyTo, Request, RequestSender,
    ShadowOutputs,
};
use pipeline::durable::{Checkpoints, Durability, DurableDirs, recover};
use pipeline::history::Origin;
use pipeline::shadow::{Limits, ShadowKey};
use sinks::parquet_archive::{ArchiveConfig, ArchiveHandle, ArchiveWriter};

pub use config::{DurabilityFlag, Pacing, PipelineConfig};
use outputs::TimingOutputs;
use payload::{ReportPool, creation_payload};
pub use report::PipelineReport;

use crate::latency::{LatencySummary, new_histogram};
use crate::process;
use crate::recovery::sensor;

/// Interval at which the waits poll the outputs' counters.
const POLL_INTERVAL: Duration = Duration::from_millis(1);

/// Folders the run writes to; temporary ones are deleted when this is dropped.
struct Folders {
    _temporary: Vec<tempfile::TempDir>,
    archive: Option<PathBuf>,
    data: Option<PathBuf>,
}

impl Folders {
    fn new(config: &PipelineConfig) -> anyhow::Result<Self> {
        let mut temporary = Vec::new();
        let mut make_temporary = || -> anyhow::Result<PathBuf> {
            let dir = tempfile::tempdir().context("creating a temporary folder")?;
            let path = dir.path().to_owned();
            temporary.push(dir);
            Ok(path)
        };
        let archive = match (&config.archive_dir, config.archive) {
            (Some(path), _) => Some(path.clone()),
            (None, true) => Some(make_temporary()?),
            (None, false) => None,
        };
        let data = match config.durability {
            DurabilityFlag::None => None,
            DurabilityFlag::Batch | DurabilityFlag::Sync => Some(make_temporary()?),
        };
        Ok(Folders {
            _temporary: temporary,
            archive,
            data,
        })
    }
}

/// The running dataflow and what it writes to.
struct Running {
    sender: RequestSender,
    handle: DataflowHandle,
    outputs: Arc<TimingOutputs>,
    archive: Option<ArchiveHandle>,
    checkpoints: Option<Checkpoints>,
}

impl Running {
    fn start(config: &PipelineConfig, folders: &Folders, origin: Instant) -> anyhow::Result<Self> {
        let archive = match &folders.archive {
            Some(dir) => Some(
                ArchiveWriter::spawn(dir.clone(), ArchiveConfig::default())
                    .with_context(|| format!("starting the archive in {}", dir.display()))?,
            ),
            None => None,
        };
        let (durable, checkpoints) = match (&folders.data, config.durability_mode()) {
            (Some(data), mode) if mode != Durability::None => {
                let (setup, checkpoints) = start_durability(data, config.workers, mode)?;
                (Some(setup), Some(checkpoints))
            }
            _ => (None, None),
        };
        let outputs = Arc::new(TimingOutputs::new(
            origin,
            config.updates,
            archive.as_ref().map(ArchiveHandle::sender),
        ));
        let dataflow_config = DataflowConfig {
            workers: config.workers,
            limits: Limits::default(),
            durable,
            ..DataflowConfig::default()
        };
        let shared = Arc::clone(&outputs) as Arc<dyn ShadowOutputs>;
        let (sender, handle) =
            dataflow::spawn(dataflow_config, shared).context("starting the dataflow")?;
        Ok(Running {
            sender,
            handle,
            outputs,
            archive,
            checkpoints,
        })
    }

    /// Stops the dataflow, then the checkpoint thread, and closes the archive. Returns the
    /// rows the archive wrote.
    fn stop(self) -> anyhow::Result<u64> {
        drop(self.sender);
        self.handle.join();
        if let Some(checkpoints) = self.checkpoints {
            checkpoints.stop();
        }
        match self.archive {
            Some(archive) => Ok(archive.close().context("closing the archive")?.rows_written),
            None => Ok(0),
        }
    }
}

/// Prepares an empty write-ahead log folder under `data` and the checkpoint thread, which
/// takes no checkpoint on its own.
fn start_durability(
    data: &std::path::Path,
    workers: usize,
    mode: Durability,
) -> anyhow::Result<(Arc<DurableSetup>, Checkpoints)> {
    let dirs = DurableDirs::under(data);
    dirs.create()?;
    let recovered = recover(&dirs, workers, &|_| false).context("recovering the empty folder")?;
    let checkpoints = Checkpoints::start(
        dirs.clone(),
        recovered.generation,
        workers,
        recovered.next_checkpoint_id,
        None,
    )
    .context("starting the checkpoint thread")?;
    let setup = DurableSetup {
        mode,
        wal_dir: dirs.wal,
        generation: recovered.generation,
        checkpoints: checkpoints.requests(),
        recovered: std::sync::Mutex::new(recovered.shards),
    };
    Ok((Arc::new(setup), checkpoints))
}

/// Returns the current wall-clock time in milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// Returns an update request of the classic shadow `key` with `payload`.
fn update(key: ShadowKey, payload: Vec<u8>) -> Request {
    Request {
        key,
        operation: Operation::Update,
        payload,
        origin: Origin::Mqtt,
        reply_to: ReplyTo::Mqtt,
        received_at_ms: now_ms(),
    }
}

/// Polls `done` until it returns true, or fails after `timeout` naming `what`.
fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            bail!("timed out after {} s waiting for {what}", timeout.as_secs());
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    Ok(())
}

/// Returns nanoseconds from `origin` to `instant`.
fn nanos_since(origin: Instant, instant: Instant) -> u64 {
    u64::try_from(instant.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}

/// Sends the measured updates and returns the submit time of each, in nanoseconds after
/// `origin`, and the largest lag behind the schedule (open loop only).
fn send_measured(
    config: &PipelineConfig,
    sender: &RequestSender,
    origin: Instant,
) -> anyhow::Result<(Vec<u64>, Duration)> {
    let pool = ReportPool::new(config.payload_variants);
    let keys: Vec<ShadowKey> = (0..config.things)
        .map(|n| ShadowKey::classic(sensor::thing_name(n)))
        .collect();
    let mut submitted_ns = Vec::with_capacity(config.updates as usize);
    let mut max_lag = Duration::ZERO;
    let started_at = Instant::now();
    for sequence in 0..config.updates {
        let thing = sensor::mix(sequence ^ 0xB1E5) % config.things;
        let request = update(keys[thing as usize].clone(), pool.report(sequence));
        let submitted = match config.pacing {
            Pacing::Saturated => Instant::now(),
            Pacing::Open => {
                let offset = Duration::from_nanos(sequence * 1_000_000_000 / config.rate);
                let scheduled = started_at + offset;
                let now = Instant::now();
                if now < scheduled {
                    std::thread::sleep(scheduled - now);
                } else {
                    max_lag = max_lag.max(now - scheduled);
                }
                scheduled
            }
        };
        submitted_ns.push(nanos_since(origin, submitted));
        sender
            .blocking_send(request)
            .context("sending a measured update")?;
    }
    Ok((submitted_ns, max_lag))
}

/// Runs the load phase and the measured phase, and returns the report.
///
/// # Errors
/// Fails when the dataflow, the archive or the write-ahead log cannot start, or when a phase
/// does not finish within `--phase-timeout-s`.
pub fn run(config: &PipelineConfig) -> anyhow::Result<PipelineReport> {
    config.validate()?;
    let folders = Folders::new(config)?;
    let origin = Instant::now();
    let running = Running::start(config, &folders, origin)?;

    // Load phase: create every shadow.
    let load_started = Instant::now();
    for n in 0..config.things {
        let key = ShadowKey::classic(sensor::thing_name(n));
        running
            .sender
            .blocking_send(update(key, creation_payload(n)))
            .context("sending a load-phase update")?;
    }
    let outputs = Arc::clone(&running.outputs);
    wait_until(config.phase_timeout(), "the load phase's deltas", || {
        outputs.other_deltas() >= config.things
    })?;
    let load_s = load_started.elapsed().as_secs_f64();
    let rss_after_load = process::peak_rss_bytes().context("reading the peak RSS")?;

    // Measured phase.
    let cpu_before = process::cpu_seconds().context("reading the CPU time")?;
    let (submitted_ns, max_send_lag) = send_measured(config, &running.sender, origin)?;
    wait_until(config.phase_timeout(), "the measured deltas", || {
        outputs.measured_deltas() >= config.updates
    })?;
    let cpu_s = process::cpu_seconds().context("reading the CPU time")? - cpu_before;

    let mut histogram = new_histogram();
    let mut last_delivered_ns = 0;
    for (sequence, &submitted) in submitted_ns.iter().enumerate() {
        let delivered = outputs
            .delivered_ns(sequence as u64)
            .with_context(|| format!("measured update {sequence} has no delta"))?;
        last_delivered_ns = last_delivered_ns.max(delivered);
        let latency_us = delivered.saturating_sub(submitted) / 1000;
        histogram.saturating_record(latency_us.max(1));
    }
    let first_submitted_ns = submitted_ns.first().copied().unwrap_or(0);
    let measured_s = last_delivered_ns.saturating_sub(first_submitted_ns) as f64 / 1e9;
    let other_messages = outputs.other_messages();
    let peak_rss = process::peak_rss_bytes().context("reading the peak RSS")?;
    let archived_rows = running.stop()?;

    Ok(PipelineReport {
        bench: "pipeline",
        workers: config.workers,
        things: config.things,
        updates: config.updates,
        pacing: config.pacing,
        target_rate: (config.pacing == Pacing::Open).then_some(config.rate),
        durability: config.durability,
        archive: folders.archive.is_some(),
        load_s,
        measured_s,
        updates_per_s: config.updates as f64 / measured_s.max(1e-9),
        cpu_us_per_update: cpu_s * 1e6 / config.updates as f64,
        latency: LatencySummary::of(&histogram),
        max_send_lag_us: max_send_lag.as_micros() as u64,
        other_messages,
        archived_rows,
        peak_rss_after_load_bytes: rss_after_load,
        rss_per_shadow_bytes: rss_after_load / config.things,
        peak_rss_bytes: peak_rss,
    })
}
