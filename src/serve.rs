//! `shadowflow serve`: starts every part of the service and stops them in order.
//!
//! Start: embedded broker (unless `--mqtt-broker`), archive writer, dataflow workers, response
//! publisher, MQTT request source, HTTP API; then one `shadowflow ready` line on stdout.
//! Stop (SIGINT or SIGTERM): intake first (MQTT source, HTTP API), then the dataflow drains
//! every queued request, then the publisher flushes and the archive closes its files.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use ingest::broker::{EmbeddedBroker, start_embedded_broker};
use ingest::http::{HttpReplies, HttpRequests};
use ingest::mqtt::{BrokerAddress, RequestIntake, run_source};
use ingest::replay::{Dataset, replay_into_dataflow};
use pipeline::dataflow::{
    self, DataflowConfig, DataflowHandle, DurableSetup, HttpReply, InFlight, MqttMessage,
    RequestSender, ShadowOutputs,
};
use pipeline::durable::{
    ArchiveBarrier, Checkpoints, Durability, DurableDirs, RecoveryStats, recover,
};
use pipeline::history::{HistoryRow, LogPosition};
use queries::ApiState;
use queries::fleet::FleetViews;
use sinks::mqtt::{MessagePublisher, PublisherHandle, in_process_publisher, spawn_publisher};
use sinks::parquet_archive::{ArchiveHandle, ArchiveSender, ArchiveWriter, HistoryReader};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::{ServeArgs, ServeConfig};

/// How long start-up waits for the request source to subscribe.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(15);

/// The dataflow's outputs: MQTT publisher, HTTP replies and the archive.
struct ServiceOutputs {
    publisher: MessagePublisher,
    http: Arc<HttpReplies>,
    archive: ArchiveSender,
    in_flight: Option<Arc<InFlight>>,
}

impl ShadowOutputs for ServiceOutputs {
    fn publish(&self, message: MqttMessage) {
        self.publisher.publish(message);
    }

    fn reply_http(&self, reply: HttpReply) {
        self.http.complete(reply);
    }

    fn archive(&self, row: HistoryRow, position: Option<LogPosition>) {
        let sent = match position {
            Some(position) => self.archive.send_logged(row, position),
            None => self.archive.send(row),
        };
        if let Err(error) = sent {
            tracing::error!(error = %error, "history row not archived");
        }
    }

    fn archive_barrier(&self) -> ArchiveBarrier {
        match self.archive.barrier() {
            Ok(barrier) => Box::new(move || {
                barrier
                    .wait()
                    .map(|_| ())
                    .map_err(|error| error.to_string())
            }),
            Err(error) => {
                let error = error.to_string();
                Box::new(move || Err(error))
            }
        }
    }

    fn tracks_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    fn finished(&self, thing: &str) {
        if let Some(in_flight) = &self.in_flight {
            in_flight.release(thing);
        }
    }
}

/// Runs the service until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = ServeConfig::load(&args)?;
    let replay = match (&args.replay_dataset, args.replay.is_empty()) {
        (Some(dataset), false) => Some((args.replay.clone(), *dataset)),
        (Some(_), true) => anyhow::bail!("--replay-dataset needs --replay PATH"),
        _ => None,
    };
    let io_threads = match config.io_threads {
        0 => {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            cores.saturating_sub(config.workers).max(1)
        }
        threads => threads,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(io_threads)
        .enable_all()
        .thread_name("shadowflow-io")
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(config, replay))
}

/// A data set to feed into the dataflow at start-up: its files or folders and its kind.
type StartupReplay = (Vec<PathBuf>, Dataset);

/// The parts of a running service that start-up hands to shutdown.
struct Running {
    requests: RequestSender,
    dataflow: DataflowHandle,
    publisher: PublisherHandle,
    archive: ArchiveHandle,
    checkpoints: Option<Checkpoints>,
    embedded_broker: Option<EmbeddedBroker>,
}

async fn serve(config: ServeConfig, replay: Option<StartupReplay>) -> anyhow::Result<()> {
    // Installed first, so a signal during start-up also stops the service cleanly.
    let signals = Signals::install()?;
    let (broker, embedded_broker) = connect_broker(&config).await?;
    // Every step that can fail on its own runs before the dataflow starts, because a running
    // dataflow must be drained before the process can exit.
    let listener = bind_http(&config).await?;
    let history_dir = config.data_dir.join("history");
    let archive = ArchiveWriter::spawn(history_dir.clone(), config.archive.clone())
        .with_context(|| format!("starting the history archive in {}", history_dir.display()))?;

    let durable = start_durability(&config, &archive).await?;
    let (checkpoints, durable_setup) = match durable {
        Some((checkpoints, setup)) => (Some(checkpoints), Some(setup)),
        None => (None, None),
    };

    let (publisher, publisher_handle) = match &embedded_broker {
        Some(embedded) if config.mqtt.in_process_responses => {
            in_process_publisher(embedded.local_publisher())
        }
        _ => spawn_publisher(&broker, &config.mqtt.client),
    };
    let (requests, dataflow, http, in_flight) =
        start_dataflow(&config, publisher, &archive, durable_setup)?;
    let running = Running {
        requests,
        dataflow,
        publisher: publisher_handle,
        archive,
        checkpoints,
        embedded_broker,
    };
    let fleet = match start_fleet_views(&config, &running) {
        Ok(fleet) => fleet,
        Err(error) => {
            stop(running, Instant::now()).await?;
            return Err(error);
        }
    };

    let (shutdown_sender, shutdown) = watch::channel(false);
    let intake = match start_intake(&config, &broker, &running, in_flight, shutdown.clone()).await {
        Ok(intake) => intake,
        Err(error) => {
            let _ = shutdown_sender.send(true);
            stop(running, Instant::now()).await?;
            return Err(error);
        }
    };
    let http_address = listener
        .local_addr()
        .context("reading the HTTP listen address")?;
    let api = serve_http(
        &config,
        listener,
        http,
        running.archive.reader(),
        Arc::clone(&fleet),
        shutdown,
    );

    tracing::info!(http = %http_address, mqtt = %broker, workers = config.workers,
        data_dir = %config.data_dir.display(), "shadowflow started");
    println!(
        "shadowflow ready http=http://{http_address} mqtt={broker} data_dir={}",
        config.data_dir.display()
    );
    let stop_replay = Arc::new(AtomicBool::new(false));
    let replay_task = replay.map(|replay| start_replay(replay, &running.requests, &stop_replay));

    signals.wait().await;
    let stopping = Instant::now();
    tracing::info!("stopping: closing MQTT and HTTP intake");
    let _ = shutdown_sender.send(true);
    fleet.close();
    intake.close().await;
    let _ = api.await;
    stop_replay.store(true, Ordering::Relaxed);
    if let Some(task) = replay_task {
        let _ = task.await;
    }
    stop(running, stopping).await
}

/// Path of MQTT requests to the dataflow.
enum Intake {
    /// Straight from the embedded broker's connection tasks.
    InProcess(Arc<RequestIntake>),
    /// Through the service's request client, a task that ends on shutdown.
    Client(JoinHandle<()>),
}

impl Intake {
    /// Stops taking requests. Call it after the request client's task has been signalled to stop.
    async fn close(self) {
        match self {
            Intake::InProcess(intake) => intake.close(),
            Intake::Client(source) => {
                let _ = source.await;
            }
        }
    }
}

/// Starts taking MQTT requests: in process from the embedded broker when
/// `[mqtt] in_process_requests` is set, or else with a request client that subscribes to the
/// broker. Returns once requests flow.
async fn start_intake(
    config: &ServeConfig,
    broker: &BrokerAddress,
    running: &Running,
    in_flight: Option<Arc<InFlight>>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Intake> {
    if let Some(embedded) = running.embedded_broker.as_ref()
        && config.mqtt.in_process_requests
    {
        let intake = RequestIntake::subscribe(
            embedded,
            config.limits.clone(),
            running.requests.clone(),
            in_flight,
        )
        .context("subscribing the request intake to the embedded broker")?;
        return Ok(Intake::InProcess(intake));
    }
    let (ready_sender, ready) = oneshot::channel();
    let source = tokio::spawn(run_source(
        broker.clone(),
        config.mqtt.client.clone(),
        config.limits.clone(),
        running.requests.clone(),
        in_flight,
        Some(ready_sender),
        shutdown,
    ));
    if tokio::time::timeout(SUBSCRIBE_TIMEOUT, ready)
        .await
        .is_err()
    {
        source.abort();
        let _ = source.await;
        anyhow::bail!(
            "no MQTT subscription acknowledged by {broker} within {SUBSCRIBE_TIMEOUT:?}: check that the broker runs and accepts this client"
        );
    }
    Ok(Intake::Client(source))
}

/// Starts the embedded broker, or returns the configured running broker.
async fn connect_broker(
    config: &ServeConfig,
) -> anyhow::Result<(BrokerAddress, Option<EmbeddedBroker>)> {
    if let Some(broker) = &config.mqtt.broker {
        return Ok((broker.clone(), None));
    }
    let started = start_embedded_broker(&config.embedded_broker).await?;
    let address = started.local_addr();
    let broker = BrokerAddress {
        host: address.ip().to_string(),
        port: address.port(),
    };
    Ok((broker, Some(started)))
}

/// The dataflow's request sender and handle, the HTTP request side, and the in-flight counter
/// (when that limit is set).
type StartedDataflow = (
    RequestSender,
    DataflowHandle,
    Arc<HttpRequests>,
    Option<Arc<InFlight>>,
);

/// Recovers the shadows from the data folder, re-archives the changes the archive lacks, and
/// starts the checkpoint coordinator. Returns `None` when changes are not logged.
async fn start_durability(
    config: &ServeConfig,
    archive: &ArchiveHandle,
) -> anyhow::Result<Option<(Checkpoints, Arc<DurableSetup>)>> {
    let mode = config.durability.durability();
    if mode == Durability::None {
        tracing::warn!("durability none: shadows live in memory only and a restart starts empty");
        return Ok(None);
    }
    let dirs = DurableDirs::under(&config.data_dir);
    dirs.create()?;
    let watermark = archive.watermark();
    let workers = config.workers;
    let recover_dirs = dirs.clone();
    tracing::info!(wal = %dirs.wal.display(), checkpoints = %dirs.checkpoints.display(),
        "recovering shadows");
    let recovered = tokio::task::spawn_blocking(move || {
        recover(&recover_dirs, workers, &|position| {
            watermark.covers(position)
        })
    })
    .await
    .context("waiting for recovery")?
    .context("recovering the shadows")?;
    log_recovery(
        &recovered.stats,
        recovered.unarchived.len(),
        recovered.generation,
    );

    let sender = archive.sender();
    for (row, position) in recovered.unarchived {
        sender
            .send_logged(row, position)
            .context("re-archiving recovered changes")?;
    }
    let checkpoints = Checkpoints::start(
        dirs.clone(),
        recovered.generation,
        workers,
        recovered.next_checkpoint_id,
        config.durability.checkpoint_interval(),
    )
    .context("starting the checkpoint thread")?;
    let setup = Arc::new(DurableSetup {
        mode,
        wal_dir: dirs.wal,
        generation: recovered.generation,
        checkpoints: checkpoints.requests(),
        recovered: std::sync::Mutex::new(recovered.shards),
    });
    Ok(Some((checkpoints, setup)))
}

/// Logs what recovery read.
fn log_recovery(stats: &RecoveryStats, unarchived: usize, generation: u64) {
    let source = stats.checkpoint.map_or_else(
        || "no checkpoint".to_owned(),
        |id| format!("checkpoint {id}"),
    );
    tracing::info!(
        checkpoint_entries = stats.checkpoint_entries,
        torn_tails = stats.torn_tails,
        re_archived = unarchived,
        generation,
        "recovered {} shadows from {source} and {} log records in {} ms",
        stats.shadows,
        stats.log_records,
        stats.duration.as_millis()
    );
}

/// Starts the dataflow with its outputs.
fn start_dataflow(
    config: &ServeConfig,
    publisher: MessagePublisher,
    archive: &ArchiveHandle,
    durable: Option<Arc<DurableSetup>>,
) -> anyhow::Result<StartedDataflow> {
    let dataflow_config = DataflowConfig {
        workers: config.workers,
        limits: config.limits.clone(),
        durable,
        ..DataflowConfig::default()
    };
    // The HTTP request side needs the request sender and the outputs need the reply side, so
    // the channel is made first and handed to the dataflow together with the outputs.
    let (requests, receiver) = dataflow::request_channel(dataflow_config.request_queue);
    let replies = Arc::new(HttpReplies::default());
    let in_flight = config
        .limits
        .max_in_flight_per_thing
        .map(|limit| Arc::new(InFlight::new(limit)));
    let http_timeout = Duration::from_secs(config.http.reply_timeout_s.max(1));
    let http = Arc::new(HttpRequests::new(
        requests.clone(),
        Arc::clone(&replies),
        in_flight.clone(),
        http_timeout,
    ));
    let outputs = Arc::new(ServiceOutputs {
        publisher,
        http: replies,
        archive: archive.sender(),
        in_flight: in_flight.clone(),
    });
    let handle = dataflow::spawn_with_receiver(dataflow_config, receiver, outputs)?;
    Ok((requests, handle, http, in_flight))
}

/// Installs the built-in view and the views stored in `DATA/views.json`.
fn start_fleet_views(config: &ServeConfig, running: &Running) -> anyhow::Result<Arc<FleetViews>> {
    let clock = running.requests.epoch_clock();
    let store = config.data_dir.join("views.json");
    let views = FleetViews::start(
        running.dataflow.views(),
        Arc::new(move || clock.open_time()),
        config.workers,
        Some(store),
    )
    .context("installing the fleet views")?;
    Ok(Arc::new(views))
}

/// Binds the HTTP API's listener.
async fn bind_http(config: &ServeConfig) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| {
            format!(
                "binding the HTTP API to {}: pass another --http-listen address",
                config.http.listen
            )
        })
}

/// Serves the HTTP API on `listener` until `shutdown` turns true.
fn serve_http(
    config: &ServeConfig,
    listener: tokio::net::TcpListener,
    http: Arc<HttpRequests>,
    history: HistoryReader,
    fleet: Arc<FleetViews>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let state = Arc::new(ApiState {
        requests: http,
        limits: config.limits.clone(),
        history,
        fleet,
    });
    tokio::spawn(queries::serve(listener, state, async move {
        let _ = shutdown.changed().await;
    }))
}

/// Feeds a data set into the dataflow on a blocking thread until it ends or `stop` turns true.
fn start_replay(
    (paths, dataset): StartupReplay,
    requests: &RequestSender,
    stop: &Arc<AtomicBool>,
) -> JoinHandle<()> {
    let requests = requests.clone();
    let stop = Arc::clone(stop);
    tokio::task::spawn_blocking(move || {
        if let Err(error) = replay_into_dataflow(&paths, dataset, None, &requests, &stop) {
            tracing::error!(error = %error, "in-process replay failed");
        }
    })
}

/// Drains the dataflow, then flushes the publisher, closes the archive and stops the broker.
async fn stop(running: Running, stopping: Instant) -> anyhow::Result<()> {
    tracing::info!("stopping: draining the dataflow");
    let Running {
        requests,
        dataflow,
        publisher,
        archive,
        checkpoints,
        embedded_broker,
    } = running;
    // Requested before the input closes: each worker takes it once every request is applied.
    let final_checkpoint = checkpoints.as_ref().map(Checkpoints::request_final);
    drop(requests);
    tokio::task::spawn_blocking(move || dataflow.join())
        .await
        .context("waiting for the dataflow workers")?;
    if let (Some(report), Some(checkpoints)) = (final_checkpoint, checkpoints) {
        let result = tokio::task::spawn_blocking(move || {
            let result = report.recv();
            checkpoints.stop();
            result
        })
        .await
        .context("waiting for the shutdown checkpoint")?;
        match result {
            Ok(Ok(report)) => tracing::info!(
                checkpoint = report.id,
                shadows = report.entries,
                ms = report.duration.as_millis() as u64,
                "shutdown checkpoint written"
            ),
            Ok(Err(error)) => tracing::error!(error = %error,
                "shutdown checkpoint failed; the next start replays the log instead"),
            Err(_) => {
                tracing::error!("the checkpoint thread stopped before the shutdown checkpoint")
            }
        }
    }

    let published = publisher.finish().await;
    let archive_stats = tokio::task::spawn_blocking(move || archive.close())
        .await
        .context("waiting for the history archive")?
        .context("closing the history archive")?;
    tracing::info!(
        messages = published.acknowledged.load(Ordering::Relaxed),
        history_rows = archive_stats.rows_written,
        history_files = archive_stats.files_closed,
        elapsed_ms = stopping.elapsed().as_millis() as u64,
        "shadowflow stopped"
    );
    if let Some(embedded_broker) = embedded_broker {
        embedded_broker.shutdown().await;
    }
    Ok(())
}

/// SIGTERM and SIGINT handlers.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => tracing::info!(signal = "SIGTERM", "stop requested"),
            _ = self.interrupt.recv() => tracing::info!(signal = "SIGINT", "stop requested"),
        }
    }
}
