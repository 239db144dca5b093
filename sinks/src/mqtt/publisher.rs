//! The response publisher: publishes every outgoing shadow message, over MQTT connections to
//! a broker or straight into the embedded broker of this process.
//!
//! Worker threads hand messages to a [`MessagePublisher`]. With [`spawn_publisher`], each
//! message goes to one of several connections, chosen by the thing name in its topic, so all
//! messages of one shadow leave in order on one connection. Per connection, a forwarding task
//! passes messages to rumqttc and a second task drives the network, so a full rumqttc request
//! queue never stalls the task that would drain it. With [`in_process_publisher`], the calling
//! worker routes each message into the embedded broker's sessions itself: no socket, no
//! packet encoding and decoding, no PUBACK, and no hop through a tokio task.
//!
//! # Notes
//! - Messages are published at QoS 1; the broker delivers each at the QoS of the subscription.
//! - The queue in front of each connection is bounded. When the broker is slower than the
//!   dataflow, [`MessagePublisher::publish`] blocks the calling worker, which slows the intake
//!   of new requests instead of letting queued messages grow without limit. In process, the
//!   embedded broker's flow control blocks the worker while a subscriber is congested.
//! - All messages of one thing come from the worker that owns the thing, so in process they
//!   also reach each subscriber in order.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ingest::broker::LocalPublisher;
use ingest::mqtt::{BrokerAddress, MqttClientConfig};
use pipeline::dataflow::MqttMessage;
use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long a stopping publisher waits for outstanding acknowledgements.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages queued in front of each connection before `publish` blocks.
pub const DEFAULT_QUEUE_MESSAGES: usize = 16_384;

/// Counters of one publisher, summed over its connections.
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// Messages handed to the publisher.
    pub queued: AtomicU64,
    /// Messages passed to an MQTT connection.
    pub sent: AtomicU64,
    /// Messages the broker acknowledged.
    pub acknowledged: AtomicU64,
}

/// Hands messages to the publisher. Cheap to clone.
#[derive(Clone, Debug)]
pub struct MessagePublisher {
    route: Route,
    stats: Arc<PublisherStats>,
}

/// Destination of the messages of a [`MessagePublisher`].
#[derive(Clone, Debug)]
enum Route {
    /// To the forwarding tasks of MQTT connections.
    Connections(Arc<[mpsc::Sender<MqttMessage>]>),
    /// Straight into the embedded broker of this process.
    InProcess(LocalPublisher),
}

impl MessagePublisher {
    /// Queues `message`, blocking while its connection's queue is full, or routes it into the
    /// embedded broker, blocking while a subscriber is congested. Messages queued after the
    /// publisher stopped are dropped with a WARN log line.
    ///
    /// # Panics
    /// Panics when called from within an async runtime; call it from a dataflow worker or
    /// another plain thread.
    pub fn publish(&self, message: MqttMessage) {
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        match &self.route {
            Route::Connections(senders) => {
                let sender = &senders[connection_index(&message.topic, senders.len())];
                if let Err(error) = sender.blocking_send(message) {
                    tracing::warn!(topic = %error.0.topic, "dropping MQTT message: the publisher has stopped");
                }
            }
            Route::InProcess(local) => {
                let MqttMessage { topic, payload } = message;
                match local.publish(&topic, payload, QoS::AtLeastOnce) {
                    Ok(()) => {
                        self.stats.sent.fetch_add(1, Ordering::Relaxed);
                        self.stats.acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        tracing::error!(topic = %topic, error = %error, "embedded broker rejected a response; message lost");
                    }
                }
            }
        }
    }

    /// Returns the number of messages queued but not yet passed to a connection.
    pub fn queued(&self) -> u64 {
        let stats = &self.stats;
        stats
            .queued
            .load(Ordering::Relaxed)
            .saturating_sub(stats.sent.load(Ordering::Relaxed))
    }
}

/// Returns the connection for `topic`: the hash of its thing name (the third topic level), so
/// every message of one thing uses the same connection.
fn connection_index(topic: &str, connections: usize) -> usize {
    let thing = topic.split('/').nth(2).unwrap_or(topic);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    thing.hash(&mut hasher);
    (hasher.finish() % connections.max(1) as u64) as usize
}

/// The running publisher's tasks.
#[derive(Debug)]
pub struct PublisherHandle {
    forwards: Vec<JoinHandle<()>>,
    stats: Arc<PublisherStats>,
}

impl PublisherHandle {
    /// Waits, after every [`MessagePublisher`] was dropped, until each queued message has been
    /// acknowledged (or [`DRAIN_TIMEOUT`] passed), then disconnects.
    pub async fn finish(self) -> Arc<PublisherStats> {
        for forward in self.forwards {
            if let Err(error) = forward.await {
                tracing::error!(error = %error, "MQTT publisher task failed");
            }
        }
        self.stats
    }
}

/// Creates a publisher that routes every message into the embedded broker behind `local`, on
/// the calling worker's thread. Needs no tokio runtime; its handle has nothing to drain.
pub fn in_process_publisher(local: LocalPublisher) -> (MessagePublisher, PublisherHandle) {
    let stats = Arc::new(PublisherStats::default());
    let publisher = MessagePublisher {
        route: Route::InProcess(local),
        stats: Arc::clone(&stats),
    };
    let handle = PublisherHandle {
        forwards: Vec::new(),
        stats,
    };
    (publisher, handle)
}

/// Starts `config.publisher_connections` publishing connections to `broker`. Must be called
/// within a tokio runtime.
pub fn spawn_publisher(
    broker: &BrokerAddress,
    config: &MqttClientConfig,
) -> (MessagePublisher, PublisherHandle) {
    let stats = Arc::new(PublisherStats::default());
    let mut senders = Vec::new();
    let mut forwards = Vec::new();
    for index in 0..config.publisher_connections.max(1) {
        let role = format!("responses-{index}");
        let (client, mut event_loop) = AsyncClient::new(config.options(broker, &role), 4096);
        event_loop.set_network_options(config.network_options());
        let (sender, receiver) = mpsc::channel(DEFAULT_QUEUE_MESSAGES);
        let acknowledged = Arc::new(AtomicU64::new(0));
        let connection = tokio::spawn(drive_connection(
            event_loop,
            broker.clone(),
            Arc::clone(&acknowledged),
            Arc::clone(&stats),
        ));
        let counters = Counters {
            acknowledged,
            stats: Arc::clone(&stats),
        };
        forwards.push(tokio::spawn(forward(
            client, receiver, connection, counters,
        )));
        senders.push(sender);
    }
    let publisher = MessagePublisher {
        route: Route::Connections(senders.into()),
        stats: Arc::clone(&stats),
    };
    (publisher, PublisherHandle { forwards, stats })
}

/// Acknowledgements of one connection, and the publisher-wide counters.
struct Counters {
    acknowledged: Arc<AtomicU64>,
    stats: Arc<PublisherStats>,
}

async fn forward(
    client: AsyncClient,
    mut receiver: mpsc::Receiver<MqttMessage>,
    connection: JoinHandle<()>,
    counters: Counters,
) {
    let mut sent = 0u64;
    while let Some(message) = receiver.recv().await {
        let topic = message.topic;
        let result = client
            .publish(topic.clone(), QoS::AtLeastOnce, false, message.payload)
            .await;
        if let Err(error) = result {
            tracing::error!(topic = %topic, error = %error, "MQTT publisher connection closed; message lost");
            continue;
        }
        sent += 1;
        counters.stats.sent.fetch_add(1, Ordering::Relaxed);
    }

    // Every sender is gone: wait for the broker to acknowledge what was sent, then disconnect.
    let started = Instant::now();
    while counters.acknowledged.load(Ordering::Relaxed) < sent {
        if started.elapsed() > DRAIN_TIMEOUT {
            let missing = sent - counters.acknowledged.load(Ordering::Relaxed);
            tracing::warn!(
                missing,
                "stopping an MQTT publisher connection with unacknowledged messages"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), connection).await;
}

async fn drive_connection(
    mut event_loop: EventLoop,
    broker: BrokerAddress,
    acknowledged: Arc<AtomicU64>,
    stats: Arc<PublisherStats>,
) {
    let mut last_warning: Option<Instant> = None;
    loop {
        match event_loop.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                acknowledged.fetch_add(1, Ordering::Relaxed);
                stats.acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                tracing::debug!(broker = %broker, "response publisher connected");
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(rumqttc::ConnectionError::RequestsDone) => break,
            Err(error) => {
                if last_warning.is_none_or(|last| last.elapsed() > Duration::from_secs(30)) {
                    tracing::warn!(broker = %broker, error = %error, "response publisher lost its broker connection; retrying every second");
                    last_warning = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_thing_always_uses_one_connection() {
        let accepted = connection_index("$aws/things/lamp/shadow/update/accepted", 4);
        let delta = connection_index("$aws/things/lamp/shadow/name/cfg/update/delta", 4);
        assert_eq!(accepted, delta);
        assert!(accepted < 4);
    }

    #[test]
    fn things_spread_over_connections() {
        let used: std::collections::BTreeSet<usize> = (0..64)
            .map(|index| connection_index(&format!("$aws/things/t{index}/shadow/update/delta"), 4))
            .collect();
        assert_eq!(used.len(), 4);
    }
}
