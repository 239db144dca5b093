//! The listener: binds the TCP socket, accepts connections within `max_connections`, runs
//! one task per connection, and stops them all at shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::auth::{AllowAll, Authorizer};
use super::config::EmbeddedBrokerConfig;
use super::connection::serve_connection;
use super::error::BrokerError;
use super::local::{LocalPublisher, LocalSubscriber, LocalSubscription};
use super::metrics::{BrokerMetrics, Counters};
use super::shared::Shared;
use super::topic;

/// Pause after a failed accept (for example, out of file descriptors) before the next one.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Time connection tasks get to finish at shutdown before they are aborted.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// A running embedded broker.
///
/// Dropping the handle also stops the broker, without waiting for its connections to close;
/// [`EmbeddedBroker::shutdown`] waits.
///
/// # Example
/// ```no_run
/// # async fn example() -> Result<(), ingest::broker::BrokerError> {
/// use ingest::broker::{EmbeddedBrokerConfig, start_embedded_broker};
///
/// let config = EmbeddedBrokerConfig {
///     listen: "127.0.0.1:0".parse().expect("loopback address"),
///     ..EmbeddedBrokerConfig::default()
/// };
/// let broker = start_embedded_broker(&config).await?;
/// println!("MQTT broker on {}", broker.local_addr());
/// broker.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct EmbeddedBroker {
    local_addr: SocketAddr,
    local: LocalPublisher,
    shutdown: watch::Sender<bool>,
    accept_task: JoinHandle<()>,
    counters: Arc<Counters>,
    /// One permit per connection that may still open; the missing permits are open ones.
    slots: Arc<Semaphore>,
    max_connections: usize,
}

/// Starts the embedded broker on the current tokio runtime and returns its handle once the
/// listener is bound.
///
/// # Errors
/// Returns [`BrokerError::InvalidConfig`] for a setting out of range, and
/// [`BrokerError::Bind`] when the listen address cannot be bound.
pub async fn start_embedded_broker(
    config: &EmbeddedBrokerConfig,
) -> Result<EmbeddedBroker, BrokerError> {
    start_with_authorizer(config, Arc::new(AllowAll)).await
}

/// Starts the broker with `authorizer` deciding what clients may do.
pub(crate) async fn start_with_authorizer(
    config: &EmbeddedBrokerConfig,
    authorizer: Arc<dyn Authorizer>,
) -> Result<EmbeddedBroker, BrokerError> {
    config.validate()?;
    let address = config.listen;
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| BrokerError::Bind { address, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| BrokerError::Bind { address, source })?;
    let shared = Arc::new(Shared::new(config, authorizer));
    let counters = Arc::clone(&shared.counters);
    let local = LocalPublisher::new(Arc::clone(&shared));
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let (shutdown, shutdown_receiver) = watch::channel(false);
    let acceptor = Acceptor {
        listener,
        shared,
        slots: Arc::clone(&slots),
        max_connections: config.max_connections,
        shutdown: shutdown_receiver,
    };
    let accept_task = tokio::spawn(acceptor.run());
    tracing::info!(address = %local_addr, max_connections = config.max_connections,
        max_payload_bytes = config.max_payload_bytes, "embedded MQTT broker listening");
    Ok(EmbeddedBroker {
        local_addr,
        local,
        shutdown,
        accept_task,
        counters,
        slots,
        max_connections: config.max_connections,
    })
}

impl EmbeddedBroker {
    /// Address the broker listens on, with the port picked by the system for port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Returns a publisher that routes messages into this broker from the same process,
    /// without a network connection.
    pub fn local_publisher(&self) -> LocalPublisher {
        self.local.clone()
    }

    /// Registers `subscriber` for the messages that connected clients publish on `filters`
    /// (see [`LocalSubscriber`] for the flow control). At most one local subscriber can be
    /// registered.
    ///
    /// # Errors
    /// Returns [`BrokerError::InvalidLocalFilter`] for a filter that is not a valid MQTT topic
    /// filter, and [`BrokerError::LocalSubscriberExists`] when one is registered already.
    pub fn subscribe_local(
        &self,
        filters: Vec<String>,
        subscriber: Arc<dyn LocalSubscriber>,
    ) -> Result<(), BrokerError> {
        if let Some(filter) = filters
            .iter()
            .find(|filter| !topic::is_valid_filter(filter))
        {
            return Err(BrokerError::InvalidLocalFilter {
                filter: filter.clone(),
            });
        }
        self.local
            .shared()
            .local_subscription
            .set(LocalSubscription::new(filters, subscriber))
            .map_err(|_| BrokerError::LocalSubscriberExists)
    }

    /// Current counter values.
    pub fn metrics(&self) -> BrokerMetrics {
        let open = self
            .max_connections
            .saturating_sub(self.slots.available_permits());
        self.counters.snapshot(open as u64)
    }

    /// Stops accepting connections, closes every connection and waits for their tasks, at
    /// most about five seconds before the remaining tasks are aborted. Wills are not
    /// published, and persistent sessions end with the broker.
    pub async fn shutdown(self) {
        // An error means the accept task has ended already, which is what shutdown wants.
        let _ = self.shutdown.send(true);
        if let Err(error) = self.accept_task.await {
            tracing::error!(error = %error, "embedded MQTT broker task failed");
        }
        let metrics = self.counters.snapshot(0);
        tracing::info!(address = %self.local_addr, messages_received = metrics.messages_received,
            messages_sent = metrics.messages_sent, "embedded MQTT broker stopped");
    }
}

/// The accept loop and the tasks of its connections.
struct Acceptor {
    listener: TcpListener,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    max_connections: usize,
    shutdown: watch::Receiver<bool>,
}

impl Acceptor {
    async fn run(mut self) {
        let mut connections = JoinSet::new();
        let mut next_connection_id: u64 = 0;
        let mut at_limit = false;
        loop {
            tokio::select! {
                // Either `true` was sent or the handle was dropped: stop in both cases.
                _ = self.shutdown.changed() => break,
                Some(joined) = connections.join_next() => {
                    if let Err(error) = joined {
                        tracing::error!(error = %error, "MQTT connection task failed");
                    }
                }
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        next_connection_id += 1;
                        let connection_id = next_connection_id;
                        self.admit(&mut connections, stream, peer, connection_id, &mut at_limit);
                    }
                    Err(error) => {
                        tracing::warn!(error = %error,
                            "accepting an MQTT connection failed; retrying");
                        tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                    }
                },
            }
        }
        drop(self.listener);
        close_connections(connections).await;
    }

    /// Spawns the task of a new connection, or closes the connection at the limit.
    fn admit(
        &self,
        connections: &mut JoinSet<()>,
        stream: TcpStream,
        peer: SocketAddr,
        connection_id: u64,
        at_limit: &mut bool,
    ) {
        let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            Counters::add(&self.shared.counters.connections_rejected, 1);
            if !*at_limit {
                tracing::warn!(peer = %peer, max_connections = self.max_connections,
                    "connection limit reached; closing new connections until one ends");
                *at_limit = true;
            }
            return;
        };
        *at_limit = false;
        Counters::add(&self.shared.counters.connections_accepted, 1);
        let shared = Arc::clone(&self.shared);
        let shutdown = self.shutdown.clone();
        connections.spawn(async move {
            serve_connection(stream, peer, connection_id, shared, shutdown).await;
            drop(slot);
        });
    }
}

/// Waits for every connection task to see the shutdown signal, then aborts the rest.
async fn close_connections(mut connections: JoinSet<()>) {
    let drained = tokio::time::timeout(SHUTDOWN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            timeout_s = SHUTDOWN_TIMEOUT.as_secs(),
            "MQTT connections did not close in time; aborting them"
        );
        connections.shutdown().await;
    }
}
