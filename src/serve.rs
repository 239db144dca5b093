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
use ingest::broker::start_embedded_broker;
use ingest::http::{HttpReplies, HttpRequests};
use ingest::mqtt::{BrokerAddress, run_source};
use ingest::replay::{Dataset, replay_into_dataflow};
use pipeline::dataflow::{self, DataflowConfig, HttpReply, MqttMessage, ShadowOutputs};
use pipeline::history::HistoryRow;
use queries::ApiState;
use sinks::mqtt::{MessagePublisher, spawn_publisher};
use sinks::parquet_archive::{ArchiveSender, ArchiveWriter};
use tokio::sync::{oneshot, watch};

use crate::config::{ServeArgs, ServeConfig};

/// How long start-up waits for the request source to subscribe.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(15);

/// The dataflow's outputs: MQTT publisher, HTTP replies and the archive.
struct ServiceOutputs {
    publisher: MessagePublisher,
    http: Arc<HttpReplies>,
    archive: ArchiveSender,
}

impl ShadowOutputs for ServiceOutputs {
    fn publish(&self, message: MqttMessage) {
        self.publisher.publish(message);
    }

    fn reply_http(&self, reply: HttpReply) {
        self.http.complete(reply);
    }

    fn archive(&self, row: HistoryRow) {
        if let Err(error) = self.archive.send(row) {
            tracing::error!(error = %error, "history row not archived");
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("shadowflow-io")
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(config, replay))
}

async fn serve(config: ServeConfig, replay: Option<(Vec<PathBuf>, Dataset)>) -> anyhow::Result<()> {
    // The embedded broker, if any, lives until the end of `serve` and is shut down last.
    let mut embedded_broker = None;
    let broker = match &config.mqtt.broker {
        Some(broker) => broker.clone(),
        None => {
            let started = start_embedded_broker(&config.embedded_broker).await?;
            let address = started.local_addr();
            embedded_broker = Some(started);
            BrokerAddress {
                host: address.ip().to_string(),
                port: address.port(),
            }
        }
    };

    let history_dir = config.data_dir.join("history");
    let archive = ArchiveWriter::spawn(history_dir.clone(), config.archive.clone())
        .with_context(|| format!("starting the history archive in {}", history_dir.display()))?;

    let (publisher, publisher_handle) = spawn_publisher(&broker, &config.mqtt.client);

    // The HTTP registry needs the request sender and the outputs need the registry, so the
    // channel is made first and handed to the dataflow together with the outputs.
    let (requests, dataflow_handle, http) = {
        let dataflow_config = DataflowConfig {
            workers: config.workers,
            limits: config.limits.clone(),
            ..DataflowConfig::default()
        };
        let http_timeout = Duration::from_secs(config.http.reply_timeout_s.max(1));
        let (requests, receiver) = dataflow::request_channel(dataflow_config.request_queue);
        let replies = Arc::new(HttpReplies::default());
        let http = Arc::new(HttpRequests::new(
            requests.clone(),
            Arc::clone(&replies),
            http_timeout,
        ));
        let outputs = Arc::new(ServiceOutputs {
            publisher,
            http: replies,
            archive: archive.sender(),
        });
        let handle = dataflow::spawn_with_receiver(dataflow_config, receiver, outputs)?;
        (requests, handle, http)
    };

    let (shutdown_sender, shutdown) = watch::channel(false);
    let (ready_sender, ready) = oneshot::channel();
    let source = tokio::spawn(run_source(
        broker.clone(),
        config.mqtt.client.clone(),
        config.limits.clone(),
        requests.clone(),
        Some(ready_sender),
        shutdown.clone(),
    ));
    tokio::time::timeout(SUBSCRIBE_TIMEOUT, ready).await.map_err(|_| {
        anyhow::anyhow!("no MQTT subscription acknowledged by {broker} within {SUBSCRIBE_TIMEOUT:?}: check that the broker runs and accepts this client")
    })?.context("MQTT request source stopped before subscribing")?;

    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| {
            format!(
                "binding the HTTP API to {}: pass another --http-listen address",
                config.http.listen
            )
        })?;
    let http_address = listener
        .local_addr()
        .context("reading the HTTP listen address")?;
    let state = Arc::new(ApiState {
        requests: http,
        limits: config.limits.clone(),
    });
    let mut http_shutdown = shutdown.clone();
    let api = tokio::spawn(queries::serve(listener, state, async move {
        let _ = http_shutdown.changed().await;
    }));

    tracing::info!(http = %http_address, mqtt = %broker, workers = config.workers,
        data_dir = %config.data_dir.display(), "shadowflow started");
    println!(
        "shadowflow ready http=http://{http_address} mqtt={broker} data_dir={}",
        config.data_dir.display()
    );

    let stop_replay = Arc::new(AtomicBool::new(false));
    let replay_task = replay.map(|(paths, dataset)| {
        let requests = requests.clone();
        let stop = Arc::clone(&stop_replay);
        tokio::task::spawn_blocking(move || {
            if let Err(error) = replay_into_dataflow(&paths, dataset, None, &requests, &stop) {
                tracing::error!(error = %error, "in-process replay failed");
            }
        })
    });

    wait_for_signal().await;
    let stopping = Instant::now();
    tracing::info!("stopping: closing MQTT and HTTP intake");
    let _ = shutdown_sender.send(true);
    let _ = source.await;
    let _ = api.await;
    stop_replay.store(true, Ordering::Relaxed);
    if let Some(task) = replay_task {
        let _ = task.await;
    }

    tracing::info!("stopping: draining the dataflow");
    drop(requests);
    tokio::task::spawn_blocking(move || dataflow_handle.join())
        .await
        .context("waiting for the dataflow workers")?;

    let published = publisher_handle.finish().await;
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

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("installing signal handlers failed; stop the service with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "stop requested"),
        _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "stop requested"),
    }
}
