//! The running monolith: broker, MQTT connections, handler threads, and their shutdown.
//!
//! One MQTT connection subscribes at QoS 1 to `$aws/things/+/shadow/update` and
//! `$aws/things/+/shadow/name/+/update`. Its task hands each request to the handler thread of
//! its thing over a bounded queue, and waits when that queue is full, so a slow handler slows
//! the broker's deliveries down instead of growing memory. The handler threads apply the
//! updates through the one [`ShadowStore`] and publish the responses at QoS 1 through a
//! [`Responder`]: over the publisher connection of their thing, or, with the embedded broker,
//! straight into the broker as `shadowflow serve` does. Each thing thus always goes through the
//! same thread and connection, so its responses keep the order of its requests.
//!
//! # Notes
//! - The MQTT settings are the service's (TCP_NODELAY, 1,000 unacknowledged publishes per
//!   connection), and the request subscription acknowledges each request on receipt, as the
//!   service's request source does.
//! - Handler threads are OS threads outside the tokio runtime, so they may block: on the lock,
//!   on SQLite, and on a full rumqttc request channel or a congested subscriber.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use ingest::broker::{EmbeddedBroker, EmbeddedBrokerConfig, start_embedded_broker};
use ingest::mqtt::BrokerAddress;
use pipeline::shadow::{Limits, ShadowKey};
use rumqttc::AsyncClient;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle as TaskHandle;

use super::config::{BrokerMode, MonolithConfig, Synchronous};
use super::handler::{HandlerCounts, UpdateJob, handle_update};
use super::publish::{Responder, drive_publisher};
use super::receive::{RequestConnection, receive_requests};
use super::store::{Database, ShadowStore};

/// Capacity of rumqttc's request channel per connection.
pub(super) const REQUEST_CHANNEL_CAPACITY: usize = 1024;

/// Time allowed from start to the broker's SubAck.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Time a publisher connection gets at shutdown to send what is queued and disconnect.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A started monolith, stopped by [`Monolith::shutdown`].
pub struct Monolith {
    mqtt_address: SocketAddr,
    db_path: PathBuf,
    threads: usize,
    publishers: Vec<AsyncClient>,
    publisher_tasks: Vec<TaskHandle<()>>,
    handlers: Vec<JoinHandle<()>>,
    receiver_task: TaskHandle<u64>,
    stop_receiving: watch::Sender<bool>,
    broker: Option<EmbeddedBroker>,
    store: Arc<ShadowStore>,
    counts: Arc<HandlerCounts>,
    started_at: Instant,
    synchronous: Synchronous,
    /// Removes the default database's folder when the monolith is dropped.
    _temp_dir: Option<tempfile::TempDir>,
}

/// Counts and lock times of one run, from start to shutdown.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Update requests received.
    pub received: u64,
    /// Updates that got an `/update/accepted` response.
    pub accepted: u64,
    /// Updates that got an `/update/rejected` response.
    pub rejected: u64,
    /// Rejections because the database write failed.
    pub database_errors: u64,
    /// Responses that could not be handed to the MQTT client.
    pub publish_errors: u64,
    /// Shadows in the store at shutdown.
    pub shadows: usize,
    /// Mean time an update waited for the store's lock, in microseconds.
    pub lock_wait_mean_us: f64,
    /// Mean time an update held the store's lock, in microseconds.
    pub lock_hold_mean_us: f64,
    /// Seconds from start to shutdown.
    pub elapsed_secs: f64,
    /// CPU time of the whole process (user plus system) at shutdown, in seconds; it includes
    /// the embedded broker when the monolith runs it.
    pub cpu_secs: f64,
}

impl Summary {
    /// Formats the summary as one `key=value` line.
    pub fn to_line(&self) -> String {
        format!(
            "monolith stopped received={} accepted={} rejected={} database_errors={} \
             publish_errors={} shadows={} lock_wait_mean_us={:.1} lock_hold_mean_us={:.1} \
             elapsed_s={:.1} cpu_s={:.2}",
            self.received,
            self.accepted,
            self.rejected,
            self.database_errors,
            self.publish_errors,
            self.shadows,
            self.lock_wait_mean_us,
            self.lock_hold_mean_us,
            self.elapsed_secs,
            self.cpu_secs,
        )
    }
}

impl Monolith {
    /// Opens the database, starts the embedded broker if asked, connects and subscribes, and
    /// returns once the broker has acknowledged the subscription.
    ///
    /// Must be called inside a tokio runtime, which then also runs the MQTT connections.
    ///
    /// # Errors
    /// Fails on invalid flags, when the database cannot be opened, when the embedded broker
    /// cannot bind, or when the broker does not acknowledge the subscription within 30 s.
    pub async fn start(config: &MonolithConfig) -> anyhow::Result<Self> {
        let started_at = Instant::now();
        let mode = config.validate()?;
        let (db_path, temp_dir) = match &config.db {
            Some(path) => (path.clone(), None),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("monolith-")
                    .tempdir()
                    .context("creating a temporary folder for the database")?;
                (dir.path().join("shadows.db"), Some(dir))
            }
        };
        let database = Database::open(&db_path, config.synchronous)?;
        let store = Arc::new(ShadowStore::open(database, Limits::default())?);
        tracing::info!(db = %db_path.display(), shadows = store.len(),
            synchronous = config.synchronous.pragma_value(), "database opened");

        let (broker, mqtt_address) = match mode {
            BrokerMode::Connect(address) => (None, address),
            BrokerMode::Embedded(listen) => {
                let broker_config = EmbeddedBrokerConfig {
                    listen,
                    ..EmbeddedBrokerConfig::default()
                };
                let broker = start_embedded_broker(&broker_config)
                    .await
                    .with_context(|| format!("starting the embedded broker on {listen}"))?;
                let address = broker.local_addr();
                (Some(broker), address)
            }
        };
        let address = BrokerAddress {
            host: mqtt_address.ip().to_string(),
            port: mqtt_address.port(),
        };
        let client_config = config.mqtt_client();

        let mut publishers = Vec::new();
        let mut publisher_tasks = Vec::new();
        let responder = match &broker {
            Some(broker) if config.in_process_responses => {
                Responder::InProcess(broker.local_publisher())
            }
            _ => {
                for index in 0..config.publisher_connections {
                    let role = format!("responses-{index}");
                    let (client, mut event_loop) = AsyncClient::new(
                        client_config.options(&address, &role),
                        REQUEST_CHANNEL_CAPACITY,
                    );
                    event_loop.set_network_options(client_config.network_options());
                    publisher_tasks.push(tokio::spawn(drive_publisher(event_loop, index)));
                    publishers.push(client);
                }
                Responder::Mqtt {
                    clients: publishers.clone(),
                    runtime: Handle::current(),
                }
            }
        };

        let counts = Arc::new(HandlerCounts::default());
        let mut senders = Vec::with_capacity(config.threads);
        let mut handlers = Vec::with_capacity(config.threads);
        for index in 0..config.threads {
            let (sender, jobs) = mpsc::channel(config.queue_capacity);
            let context = HandlerContext {
                store: Arc::clone(&store),
                counts: Arc::clone(&counts),
                responder: responder.clone(),
            };
            let handler = std::thread::Builder::new()
                .name(format!("monolith-handler-{index}"))
                .spawn(move || run_handler(jobs, context))
                .context("starting a handler thread")?;
            senders.push(sender);
            handlers.push(handler);
        }

        let (ready_sender, ready) = oneshot::channel();
        let (stop_receiving, stop) = watch::channel(false);
        let receiver_task = tokio::spawn(receive_requests(
            RequestConnection::open(&client_config, &address),
            senders,
            ready_sender,
            stop,
        ));
        tokio::time::timeout(READY_TIMEOUT, ready)
            .await
            .with_context(|| {
                format!("the broker at {mqtt_address} acknowledged no subscription within 30 s")
            })?
            .context("the request connection ended before it subscribed")?;

        Ok(Monolith {
            mqtt_address,
            db_path,
            threads: config.threads,
            publishers,
            publisher_tasks,
            handlers,
            receiver_task,
            stop_receiving,
            broker,
            store,
            counts,
            started_at,
            synchronous: config.synchronous,
            _temp_dir: temp_dir,
        })
    }

    /// Returns the address of the MQTT broker in use.
    pub fn mqtt_address(&self) -> SocketAddr {
        self.mqtt_address
    }

    /// Returns the path of the SQLite database.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// Returns the one line printed once the monolith takes requests.
    pub fn ready_line(&self) -> String {
        format!(
            "monolith ready mqtt=mqtt://{} db={} threads={} publishers={} synchronous={} broker={}",
            self.mqtt_address,
            self.db_path.display(),
            self.threads,
            if self.broker.is_some() && self.publishers.is_empty() {
                "in-process".to_owned()
            } else {
                self.publishers.len().to_string()
            },
            self.synchronous.pragma_value().to_ascii_lowercase(),
            if self.broker.is_some() {
                "embedded"
            } else {
                "external"
            },
        )
    }

    /// Stops taking requests, handles the ones already received, publishes their responses,
    /// disconnects and stops the embedded broker.
    pub async fn shutdown(self) -> Summary {
        let _ = self.stop_receiving.send(true);
        let received = match self.receiver_task.await {
            Ok(received) => received,
            Err(error) => {
                tracing::error!(error = %error, "the request connection's task failed");
                0
            }
        };
        // The request task dropped the queues' senders, so each handler ends after its queue.
        let handlers = self.handlers;
        let joined = tokio::task::spawn_blocking(move || {
            for handler in handlers {
                if handler.join().is_err() {
                    tracing::error!("a handler thread panicked");
                }
            }
        })
        .await;
        if let Err(error) = joined {
            tracing::error!(error = %error, "waiting for the handler threads failed");
        }

        for (client, task) in self.publishers.iter().zip(self.publisher_tasks) {
            // rumqttc sends DISCONNECT after every publish queued before it.
            let _ = client.disconnect().await;
            let abort = task.abort_handle();
            if tokio::time::timeout(DISCONNECT_TIMEOUT, task)
                .await
                .is_err()
            {
                tracing::warn!("a publisher connection did not disconnect within 5 s");
                abort.abort();
            }
        }
        if let Some(broker) = self.broker {
            broker.shutdown().await;
        }

        let lock_times = self.store.lock_times();
        let acquisitions = lock_times.acquisitions.load(Ordering::Relaxed).max(1) as f64;
        let mean_us = |total_ns: u64| total_ns as f64 / acquisitions / 1000.0;
        Summary {
            received,
            accepted: self.counts.accepted.load(Ordering::Relaxed),
            rejected: self.counts.rejected.load(Ordering::Relaxed),
            database_errors: self.counts.database_errors.load(Ordering::Relaxed),
            publish_errors: self.counts.publish_errors.load(Ordering::Relaxed),
            shadows: self.store.len(),
            lock_wait_mean_us: mean_us(lock_times.wait_ns.load(Ordering::Relaxed)),
            lock_hold_mean_us: mean_us(lock_times.hold_ns.load(Ordering::Relaxed)),
            elapsed_secs: self.started_at.elapsed().as_secs_f64(),
            cpu_secs: crate::process::cpu_seconds().unwrap_or(f64::NAN),
        }
    }
}

/// Shared state of the handler threads.
struct HandlerContext {
    store: Arc<ShadowStore>,
    counts: Arc<HandlerCounts>,
    responder: Responder,
}

/// Applies the updates of one queue until its sender is dropped.
fn run_handler(mut jobs: mpsc::Receiver<UpdateJob>, context: HandlerContext) {
    let mut publish_failed = false;
    while let Some(job) = jobs.blocking_recv() {
        let responses = handle_update(&context.store, &job, &context.counts);
        // The low bits of the hash picked this thread, so the high bits pick the connection.
        let publisher = spread(&job.key).rotate_right(32);
        for response in responses {
            if let Err(error) = context.responder.publish(publisher, response) {
                context
                    .counts
                    .publish_errors
                    .fetch_add(1, Ordering::Relaxed);
                if !publish_failed {
                    tracing::warn!(error = %error, "handing a response to the MQTT client failed; \
                        later failures are counted only");
                    publish_failed = true;
                }
            }
        }
    }
}

/// Returns a hash of the thing name, the same in every run, that picks a thing's handler
/// thread (low bits) and publisher connection (high bits).
pub(super) fn spread(key: &ShadowKey) -> u64 {
    let mut hasher = DefaultHasher::new();
    key.thing_name.hash(&mut hasher);
    hasher.finish()
}
