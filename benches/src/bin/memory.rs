//! `memory`: resident memory and live heap bytes per shadow, after loading N shadows.
//!
//! With `--structure dataflow` (the default) the tool starts the real dataflow in this process
//! (no durability, no MQTT, outputs that drop every message) and sends one update per shadow into
//! its request channel, as the MQTT ingest does. Once every update is applied, the figures
//! include everything a running service keeps per shadow: the worker's shadow map, the
//! `Shadows: By Thing` arrangement and each `ShadowVersion` with its cached delta.
//! `--structure shadow` and `--structure version` build the same shadows with
//! `decode_update` and `apply_update` alone and keep them in a `Vec`, as `Shadow`s or as
//! `ShadowVersion`s with their delta computed, which splits the total by structure.
//!
//! The tool reads resident memory (`VmRSS`, and the peak `VmHWM`) and the live heap counters of
//! its counting allocator before and after loading. It prints the differences per shadow as one
//! JSON line on stdout and as a line for people on stderr. Run it with:
//!
//! ```sh
//! cargo build --release -p shadowflow-benches --bin memory
//! target/release/memory --shadows 1000000
//! target/release/memory --shadows 1000000 --structure shadow
//! ```
//!
//! # Notes
//! - The counting allocator adds two relaxed atomic additions to every allocation, which slows
//!   the load a little but does not change what is resident.
//! - The RSS difference includes memory the allocator keeps after the load's temporary
//!   allocations were freed (fragmentation and per-thread arenas), so it is above the live heap.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use pipeline::dataflow::{
    self, DataflowConfig, Operation, ReplyTo, Request, ShadowOutputs, ShadowVersion, ThingShadow,
    Time, ViewCommand, ViewSink, ViewSpec,
};
use pipeline::history::Origin;
use pipeline::shadow::{Limits, Shadow, ShadowKey, apply_update, decode_update};
use shadowflow_benches::memory::{CountingAllocator, HeapCount, Resident, StateShape};
use shadowflow_benches::outputs::CountingOutputs;
use shadowflow_benches::recovery::sensor;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Measures memory per shadow after loading N shadows.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Shadows to load.
    #[arg(long, default_value_t = 1_000_000)]
    shadows: u64,

    /// Container of the shadows: the whole dataflow, or one structure alone.
    #[arg(long, value_enum, default_value_t = Structure::Dataflow)]
    structure: Structure,

    /// State of each shadow.
    #[arg(long, value_enum, default_value_t = StateShape::Nested)]
    shape: StateShape,

    /// Timely worker threads (`dataflow` only).
    #[arg(long, default_value_t = 2)]
    workers: usize,

    /// Maximum wait for the dataflow to apply every update, in seconds.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
}

/// Container of the loaded shadows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Structure {
    /// The dataflow, loaded through its request channel.
    Dataflow,
    /// A `Vec<(ShadowKey, Shadow)>`.
    Shadow,
    /// A `Vec<(ShadowKey, Arc<ShadowVersion>)>`, each with its delta computed.
    Version,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let state_bytes = mean_state_bytes(cli.shape)?;
    let resident_before = Resident::now().context("reading resident memory")?;
    let heap_before = HeapCount::now();
    let started_at = Instant::now();

    // The loaded shadows stay alive until the figures are read.
    let loaded: Box<dyn std::any::Any> = match cli.structure {
        Structure::Dataflow => Box::new(load_dataflow(&cli)?),
        Structure::Shadow => Box::new(load_shadows(&cli)?),
        Structure::Version => Box::new(load_versions(&cli)?),
    };
    let load_s = started_at.elapsed().as_secs_f64();
    let resident_after = Resident::now().context("reading resident memory")?;
    let heap = HeapCount::now().since(heap_before);

    let shadows = cli.shadows.max(1) as f64;
    let per_shadow = |bytes: i64| bytes as f64 / shadows;
    let rss = per_shadow(resident_after.current as i64 - resident_before.current as i64);
    let peak = per_shadow(resident_after.peak as i64 - resident_before.current as i64);
    let heap_bytes = per_shadow(heap.bytes);
    let allocations = per_shadow(heap.allocations);
    println!(
        "{}",
        serde_json::json!({
            "structure": format!("{:?}", cli.structure).to_lowercase(),
            "shape": format!("{:?}", cli.shape).to_lowercase(),
            "shadows": cli.shadows,
            "state_bytes_per_shadow": state_bytes,
            "rss_bytes_per_shadow": rss.round(),
            "peak_rss_bytes_per_shadow": peak.round(),
            "heap_bytes_per_shadow": heap_bytes.round(),
            "allocations_per_shadow": (allocations * 100.0).round() / 100.0,
            "rss_after_bytes": resident_after.current,
            "load_s": (load_s * 100.0).round() / 100.0,
        })
    );
    eprintln!(
        "{} shadows ({:?}, {:?}, {state_bytes:.0} bytes of state each): {rss:.0} B resident, \
         {peak:.0} B peak, {heap_bytes:.0} B live heap in {allocations:.2} allocations per shadow; \
         loaded in {load_s:.1} s",
        cli.shadows, cli.structure, cli.shape
    );
    // Joining the dataflow's workers would only add to the run time, so the process exits with
    // them still running.
    std::mem::forget(loaded);
    Ok(())
}

/// Returns the mean `Shadow::state_bytes` of the first 1,000 shadows.
fn mean_state_bytes(shape: StateShape) -> anyhow::Result<f64> {
    let limits = Limits::default();
    let mut total = 0;
    for n in 0..1000 {
        total += create_shadow(shape, n, &limits)?.state_bytes();
    }
    Ok(total as f64 / 1000.0)
}

fn update_payload(shape: StateShape, n: u64) -> Vec<u8> {
    format!(r#"{{"state":{}}}"#, shape.state_json(n)).into_bytes()
}

fn create_shadow(shape: StateShape, n: u64, limits: &Limits) -> anyhow::Result<Shadow> {
    let request = decode_update(&update_payload(shape, n), limits)
        .map_err(|rejected| anyhow::anyhow!("decoding the update of shadow {n}: {rejected:?}"))?;
    apply_update(None, 0, &request, 1_700_000_000, limits)
        .map_err(|error| anyhow::anyhow!("applying the update of shadow {n}: {error:?}"))
}

fn load_shadows(cli: &Cli) -> anyhow::Result<Vec<(ShadowKey, Shadow)>> {
    let limits = Limits::default();
    let mut shadows = Vec::with_capacity(cli.shadows as usize);
    for n in 0..cli.shadows {
        let shadow = create_shadow(cli.shape, n, &limits)?;
        shadows.push((ShadowKey::classic(sensor::thing_name(n)), shadow));
    }
    Ok(shadows)
}

fn load_versions(cli: &Cli) -> anyhow::Result<Vec<(ShadowKey, Arc<ShadowVersion>)>> {
    let limits = Limits::default();
    let mut versions = Vec::with_capacity(cli.shadows as usize);
    for n in 0..cli.shadows {
        let shadow = create_shadow(cli.shape, n, &limits)?;
        let version = ShadowVersion::new(shadow, 1_700_000_000_000, None);
        version.delta();
        versions.push((ShadowKey::classic(sensor::thing_name(n)), version));
    }
    Ok(versions)
}

/// Records each worker's frontier of the probe view.
struct FrontierSink {
    frontiers: Vec<AtomicU64>,
}

impl ViewSink for FrontierSink {
    fn changes(&self, _worker: usize, _changes: Vec<((String, String), Time, isize)>) {}

    fn frontier(&self, worker: usize, frontier: Option<Time>) {
        if let Some(slot) = self.frontiers.get(worker) {
            slot.store(frontier.unwrap_or(u64::MAX), Ordering::Release);
        }
    }
}

/// A running dataflow that contains the loaded shadows.
struct LoadedDataflow {
    _sender: dataflow::RequestSender,
    _handle: dataflow::DataflowHandle,
}

/// Starts the dataflow and sends one creating update per shadow, then waits until a probe view
/// has seen all of them, so that the arrangement contains every shadow.
fn load_dataflow(cli: &Cli) -> anyhow::Result<LoadedDataflow> {
    let config = DataflowConfig {
        workers: cli.workers,
        limits: Limits::default(),
        durable: None,
        ..DataflowConfig::default()
    };
    let outputs = Arc::new(CountingOutputs::default());
    let shared: Arc<dyn ShadowOutputs> = Arc::clone(&outputs) as Arc<dyn ShadowOutputs>;
    let (sender, handle) = dataflow::spawn(config, shared).context("starting the dataflow")?;
    for n in 0..cli.shadows {
        let request = Request {
            key: ShadowKey::classic(sensor::thing_name(n)),
            operation: Operation::Update,
            payload: update_payload(cli.shape, n),
            origin: Origin::Mqtt,
            reply_to: ReplyTo::Nobody,
            received_at_ms: 1_700_000_000_000 + n as i64,
        };
        sender
            .blocking_send(request)
            .context("sending an update to the dataflow")?;
    }

    let timeout = Duration::from_secs(cli.timeout_s);
    wait_until(timeout, "the updates to be applied", || {
        outputs.documents() >= cli.shadows
    })?;
    let sink = Arc::new(FrontierSink {
        frontiers: (0..cli.workers.max(1)).map(|_| AtomicU64::new(0)).collect(),
    });
    let control = handle.views();
    control.send(&ViewCommand::Install(ViewSpec {
        id: 0,
        logic: Arc::new(|_: &str, _: &[&ThingShadow]| None),
        sink: Arc::clone(&sink) as Arc<dyn ViewSink>,
    }));
    let target = sender.epoch_clock().open_time();
    wait_until(timeout, "the probe view to see every update", || {
        sink.frontiers
            .iter()
            .all(|frontier| frontier.load(Ordering::Acquire) >= target)
    })?;
    control.send(&ViewCommand::Remove(0));
    // Lets the workers drop the probe and finish merging batches before memory is read.
    std::thread::sleep(Duration::from_secs(2));
    Ok(LoadedDataflow {
        _sender: sender,
        _handle: handle,
    })
}

/// Polls `done` every 10 ms until it returns true, or fails after `timeout`.
fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            bail!("timed out after {} s waiting for {what}", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
