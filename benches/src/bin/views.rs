//! `views`: the cost of one shadow update in the dataflow with 0, 10 or 100 continuous views
//! installed, for fleets of different sizes.
//!
//! For each fleet size N the tool starts the dataflow in this process (no durability, no MQTT,
//! outputs that drop everything) and loads N sensors with a classic shadow of about 200 bytes.
//! It then installs a probe view, whose logic returns no row for any thing, so the dataflow
//! always has one view to wait for. For each view count V it installs V views, waits until
//! their initial import is complete, and sends `--updates` readings to random sensors with
//! `RequestSender::blocking_send`. The measured time runs from the first send until every view
//! on every worker has a frontier past the last update. Then it removes the V views.
//!
//! The views copy what the `queries` crate builds for a view: parse the query, build the
//! thing's `FleetDocument` from its shadows, and return a row for a matching thing. Even views
//! return the values of `shadow.reported.humidity` (the row of a statistics view), odd views
//! return the thing document (the row of a search view). Each view selects
//! `shadow.reported.temperature > X` with X from 27.0 to 29.4, so 20 % to 4 % of the sensors.
//!
//! Prints one JSON line per run on stdout, one line for people per run on stderr, and a table of
//! medians at the end. Run it with:
//!
//! ```sh
//! cargo build --release -p shadowflow-benches --bin views
//! target/release/views --things 10000,100000 --views 0,10,100 --updates 200000 --runs 3
//! ```
//!
//! # Notes
//! - View sinks only count changes and record frontiers. The service's sink also applies each
//!   change to the view's current result and broadcasts it, which is not measured here.
//! - The sender waits while the request queue is full, so the updates enter the dataflow as
//!   fast as the dataflow takes them, and the figure is the throughput of the whole dataflow
//!   (apply, deltas, outcomes and every view) on the machine's cores, not the latency of one
//!   update.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use pipeline::dataflow::{
    self, DataflowConfig, EpochClock, Operation, ReplyTo, Request, RequestSender, ShadowOutputs,
    ShadowVersion, ThingShadow, Time, ViewCommand, ViewControl, ViewLogic, ViewSink, ViewSpec,
};
use pipeline::fleet::{AggregationValue, Field, FleetDocument, Query};
use pipeline::history::Origin;
use pipeline::shadow::{Limits, ShadowKey};
use serde_json::{Value, json};
use shadowflow_benches::outputs::CountingOutputs;
use shadowflow_benches::process;
use shadowflow_benches::recovery::sensor;

/// mimalloc, as in the service: both allocate per update, so the allocator is part of the figure.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measures the cost of a shadow update with continuous views installed.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Fleet sizes to measure, in things.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    things: Vec<u64>,

    /// View counts to measure at each fleet size, besides the probe view.
    #[arg(long, value_delimiter = ',', default_value = "0,10,100")]
    views: Vec<usize>,

    /// Updates sent in each measured run.
    #[arg(long, default_value_t = 200_000)]
    updates: u64,

    /// Runs of each (fleet size, view count) cell; the table shows the median.
    #[arg(long, default_value_t = 3)]
    runs: usize,

    /// Timely worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,

    /// Maximum wait for one phase (loading, importing views, one measured run), in seconds.
    #[arg(long, default_value_t = 300)]
    phase_timeout_s: u64,
}

/// Records each worker's frontier of one view and counts the view's row changes.
struct FrontierSink {
    /// Frontier per worker; `u64::MAX` once the dataflow has ended, 0 before the first report.
    frontiers: Vec<AtomicU64>,
    changes: AtomicU64,
}

impl FrontierSink {
    fn new(workers: usize) -> Self {
        FrontierSink {
            frontiers: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            changes: AtomicU64::new(0),
        }
    }

    /// Returns the least frontier over the workers.
    fn frontier(&self) -> Time {
        self.frontiers
            .iter()
            .map(|frontier| frontier.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    }
}

impl ViewSink for FrontierSink {
    fn changes(&self, _worker: usize, changes: Vec<((String, String), Time, isize)>) {
        self.changes
            .fetch_add(changes.len() as u64, Ordering::Relaxed);
    }

    fn frontier(&self, worker: usize, frontier: Option<Time>) {
        if let Some(slot) = self.frontiers.get(worker) {
            slot.store(frontier.unwrap_or(u64::MAX), Ordering::Release);
        }
    }
}

/// One installed view and its sink.
struct InstalledView {
    id: u64,
    sink: Arc<FrontierSink>,
}

/// Returns the query text and the row logic of bench view `index`.
fn bench_view(index: usize) -> anyhow::Result<(String, Arc<ViewLogic>)> {
    let threshold = 27.0 + (index % 25) as f64 * 0.1;
    let text = format!("shadow.reported.temperature > {threshold:.1}");
    let query = Query::parse(&text).with_context(|| format!("parsing view query {text:?}"))?;
    let field = (index % 2 == 0)
        .then(|| Field::parse("shadow.reported.humidity"))
        .transpose()
        .context("parsing the aggregated field")?;
    Ok((text, Arc::new(row_logic(query, field))))
}

/// Returns the row logic of a view, as `queries::fleet::view::row_logic` builds it: the values
/// of `field` for a statistics view, the thing document for a search view (`field` is `None`).
fn row_logic(
    query: Query,
    field: Option<Field>,
) -> impl Fn(&str, &[&ThingShadow]) -> Option<String> + Send + Sync + 'static {
    move |thing: &str, shadows: &[&ThingShadow]| {
        let document = FleetDocument::from_shadows(thing, shadows);
        if !query.matches(&document) {
            return None;
        }
        let row = match &field {
            Some(field) => Value::Array(document.values(field).iter().map(value_json).collect()),
            None => search_row(thing, shadows),
        };
        Some(row.to_string())
    }
}

fn search_row(thing: &str, shadows: &[&ThingShadow]) -> Value {
    let classic = shadows
        .iter()
        .find(|(name, _)| name.is_none())
        .map(|(_, version)| version.as_ref());
    let named: Vec<(&str, &ShadowVersion)> = shadows
        .iter()
        .filter_map(|(name, version)| name.as_deref().map(|name| (name, version.as_ref())))
        .collect();
    pipeline::fleet::thing_document(thing, classic, &named)
}

fn value_json(value: &AggregationValue) -> Value {
    match value {
        AggregationValue::Bool(value) => Value::Bool(*value),
        AggregationValue::Number(number) => json!(number.get()),
        AggregationValue::String(text) => Value::String(text.clone()),
    }
}

/// Returns an update of sensor `n`'s classic shadow with `reported` (and `desired`, if given).
fn update_request(n: u64, reported: &str, desired: Option<&str>, sequence: u64) -> Request {
    let payload = match desired {
        Some(desired) => format!(r#"{{"state":{{"desired":{desired},"reported":{reported}}}}}"#),
        None => format!(r#"{{"state":{{"reported":{reported}}}}}"#),
    };
    Request {
        key: ShadowKey::classic(sensor::thing_name(n)),
        operation: Operation::Update,
        payload: payload.into_bytes(),
        origin: Origin::Mqtt,
        reply_to: ReplyTo::Nobody,
        received_at_ms: 1_700_000_000_000 + sequence as i64,
    }
}

/// Polls `done` every millisecond until it returns true, or fails after `timeout`.
fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            bail!("timed out after {} s waiting for {what}", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Waits until `outputs` has seen `applied` updates, then until every view in `views` has a
/// frontier past every request taken so far.
fn wait_for_views(
    outputs: &CountingOutputs,
    applied: u64,
    clock: &EpochClock,
    views: &[InstalledView],
    timeout: Duration,
) -> anyhow::Result<()> {
    wait_until(timeout, "the updates to be applied", || {
        outputs.documents() >= applied
    })?;
    let target = clock.open_time();
    for view in views {
        wait_until(
            timeout,
            &format!("view {} to pass time {target}", view.id),
            || view.sink.frontier() >= target,
        )
        .with_context(|| format!("view {} reached time {}", view.id, view.sink.frontier()))?;
    }
    Ok(())
}

/// Installs a view with `logic` and returns it.
fn install(control: &ViewControl, id: u64, workers: usize, logic: Arc<ViewLogic>) -> InstalledView {
    let sink = Arc::new(FrontierSink::new(workers));
    control.send(&ViewCommand::Install(ViewSpec {
        id,
        logic,
        sink: Arc::clone(&sink) as Arc<dyn ViewSink>,
    }));
    InstalledView { id, sink }
}

/// A running dataflow with a loaded fleet.
struct Bench {
    sender: RequestSender,
    handle: dataflow::DataflowHandle,
    outputs: Arc<CountingOutputs>,
    probe: InstalledView,
    things: u64,
    workers: usize,
    /// Requests sent so far, which is also the sequence number of the next reading.
    sent: u64,
    next_view_id: u64,
    timeout: Duration,
}

impl Bench {
    /// Starts the dataflow, loads `things` sensors and installs the probe view.
    fn start(things: u64, workers: usize, timeout: Duration) -> anyhow::Result<(Self, Duration)> {
        let config = DataflowConfig {
            workers,
            limits: Limits::default(),
            durable: None,
            ..DataflowConfig::default()
        };
        let outputs = Arc::new(CountingOutputs::default());
        let shared: Arc<dyn ShadowOutputs> = Arc::clone(&outputs) as Arc<dyn ShadowOutputs>;
        let (sender, handle) = dataflow::spawn(config, shared).context("starting the dataflow")?;
        let started_at = Instant::now();
        for n in 0..things {
            let reported = sensor::full_reported_json(n);
            let desired = sensor::desired_json(n);
            sender
                .blocking_send(update_request(n, &reported, Some(&desired), n))
                .context("loading the fleet")?;
        }
        let probe = install(
            &handle.views(),
            0,
            workers,
            Arc::new(|_: &str, _: &[&ThingShadow]| None),
        );
        wait_for_views(
            &outputs,
            things,
            &sender.epoch_clock(),
            std::slice::from_ref(&probe),
            timeout,
        )
        .context("loading the fleet")?;
        let bench = Bench {
            sender,
            handle,
            outputs,
            probe,
            things,
            workers,
            sent: things,
            next_view_id: 1,
            timeout,
        };
        Ok((bench, started_at.elapsed()))
    }

    /// Installs `count` bench views and waits for their initial import; returns them and the
    /// time the import took.
    fn install_views(&mut self, count: usize) -> anyhow::Result<(Vec<InstalledView>, Duration)> {
        let started_at = Instant::now();
        let control = self.handle.views();
        let mut views = Vec::with_capacity(count);
        for index in 0..count {
            let (_text, logic) = bench_view(index)?;
            views.push(install(&control, self.next_view_id, self.workers, logic));
            self.next_view_id += 1;
        }
        wait_for_views(
            &self.outputs,
            self.sent,
            &self.sender.epoch_clock(),
            &views,
            self.timeout,
        )
        .context("importing the views")?;
        Ok((views, started_at.elapsed()))
    }

    /// Sends `updates` readings to random sensors and returns the time until every view,
    /// the probe included, has a frontier past the last one.
    fn measure(&mut self, updates: u64, views: &[InstalledView]) -> anyhow::Result<Duration> {
        let started_at = Instant::now();
        for _ in 0..updates {
            let sequence = self.sent;
            let n = sensor::mix(sequence ^ 0xB1E5) % self.things;
            let reading = sensor::reading_json(n, sequence);
            self.sender
                .blocking_send(update_request(n, &reading, None, sequence))
                .context("sending an update")?;
            self.sent += 1;
        }
        let clock = self.sender.epoch_clock();
        wait_for_views(
            &self.outputs,
            self.sent,
            &clock,
            std::slice::from_ref(&self.probe),
            self.timeout,
        )?;
        wait_for_views(&self.outputs, self.sent, &clock, views, self.timeout)?;
        Ok(started_at.elapsed())
    }

    fn remove_views(&self, views: &[InstalledView]) {
        let control = self.handle.views();
        for view in views {
            control.send(&ViewCommand::Remove(view.id));
        }
    }

    fn stop(self) {
        self.remove_views(std::slice::from_ref(&self.probe));
        drop(self.sender);
        self.handle.join();
    }
}

/// One measured run.
struct RunResult {
    things: u64,
    views: usize,
    elapsed: Duration,
    import: Duration,
}

impl RunResult {
    fn micros_per_update(&self, updates: u64) -> f64 {
        self.elapsed.as_secs_f64() * 1e6 / updates as f64
    }
}

/// Measures every view count at one fleet size.
fn measure_fleet(cli: &Cli, things: u64, results: &mut Vec<RunResult>) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(cli.phase_timeout_s);
    let (mut bench, load) = Bench::start(things, cli.workers, timeout)?;
    eprintln!("things {things}: loaded in {:.1} s", load.as_secs_f64());
    for &view_count in &cli.views {
        for run in 1..=cli.runs {
            let measured = bench.install_views(view_count).and_then(|(views, import)| {
                let elapsed = bench.measure(cli.updates, &views)?;
                Ok((views, import, elapsed))
            });
            let (views, import, elapsed) = match measured {
                Ok(measured) => measured,
                Err(error) => {
                    // NOTE: a view that has not caught up may keep the workers busy for long,
                    // so the dataflow is left running and main exits the process.
                    std::mem::forget(bench);
                    return Err(error);
                }
            };
            let row_changes: u64 = views
                .iter()
                .map(|view| view.sink.changes.load(Ordering::Relaxed))
                .sum();
            bench.remove_views(&views);
            let result = RunResult {
                things,
                views: view_count,
                elapsed,
                import,
            };
            let rss = process::peak_rss_bytes().unwrap_or(0);
            println!(
                "{}",
                json!({
                    "things": things, "views": view_count, "run": run, "updates": cli.updates,
                    "elapsed_s": elapsed.as_secs_f64(), "import_s": import.as_secs_f64(),
                    "updates_per_s": cli.updates as f64 / elapsed.as_secs_f64(),
                    "us_per_update": result.micros_per_update(cli.updates),
                    "row_changes": row_changes, "peak_rss_bytes": rss,
                })
            );
            eprintln!(
                "things {things} views {view_count} run {run}: {:.0} updates/s, {:.2} µs/update, \
                 import {:.2} s, {row_changes} row changes, peak RSS {:.2} GiB",
                cli.updates as f64 / elapsed.as_secs_f64(),
                result.micros_per_update(cli.updates),
                import.as_secs_f64(),
                rss as f64 / (1u64 << 30) as f64,
            );
            results.push(result);
        }
    }
    bench.stop();
    Ok(())
}

/// Prints the median of each cell and the extra cost per view over the cell without views.
fn print_table(cli: &Cli, results: &[RunResult]) {
    eprintln!("| things | views | updates/s | µs/update | extra µs/update per view | import |");
    eprintln!("|---:|---:|---:|---:|---:|---:|");
    for &things in &cli.things {
        let median = |views: usize| {
            let mut cell: Vec<&RunResult> = results
                .iter()
                .filter(|result| result.things == things && result.views == views)
                .collect();
            cell.sort_by_key(|result| result.elapsed);
            cell.get(cell.len() / 2).copied()
        };
        let baseline = median(0).map(|result| result.micros_per_update(cli.updates));
        for &views in &cli.views {
            let Some(result) = median(views) else {
                continue;
            };
            let micros = result.micros_per_update(cli.updates);
            let per_view = match baseline {
                Some(baseline) if views > 0 => format!("{:.2}", (micros - baseline) / views as f64),
                _ => "–".to_owned(),
            };
            eprintln!(
                "| {things} | {views} | {:.0} | {micros:.2} | {per_view} | {:.2} s |",
                cli.updates as f64 / result.elapsed.as_secs_f64(),
                result.import.as_secs_f64(),
            );
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.updates == 0 || cli.runs == 0 || cli.workers == 0 {
        bail!("--updates, --runs and --workers must be at least 1");
    }
    if cli.things.contains(&0) {
        bail!("every --things value must be at least 1");
    }
    let mut results = Vec::new();
    let mut failure = None;
    for &things in &cli.things {
        if let Err(error) = measure_fleet(&cli, things, &mut results) {
            eprintln!("things {things}: {error:#}");
            failure = Some(error);
            break;
        }
    }
    print_table(&cli, &results);
    failure.map_or(Ok(()), Err)
}
