//! The response publisher: one MQTT connection that publishes every outgoing shadow message.
//!
//! Worker threads hand messages to a [`MessagePublisher`] without blocking; a forwarding task
//! passes them to rumqttc and a second task drives the connection, so a full rumqttc request
//! queue never stalls the connection that would drain it.
//!
//! # Notes
//! - Messages are published at QoS 1; the broker delivers each at the QoS of the subscription.
//! - The queue between workers and the forwarding task is unbounded so that workers never wait
//!   on the network. Its length stays small while the broker keeps up; `queued()` reports it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ingest::mqtt::{BrokerAddress, MqttClientConfig};
use pipeline::dataflow::MqttMessage;
use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long a stopping publisher waits for outstanding acknowledgements.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters of one publisher.
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// Messages handed to the publisher.
    pub queued: AtomicU64,
    /// Messages passed to the MQTT connection.
    pub sent: AtomicU64,
    /// Messages the broker acknowledged.
    pub acknowledged: AtomicU64,
}

/// Hands messages to the publisher. Cheap to clone; never blocks.
#[derive(Clone, Debug)]
pub struct MessagePublisher {
    sender: mpsc::UnboundedSender<MqttMessage>,
    stats: Arc<PublisherStats>,
}

impl MessagePublisher {
    /// Queues `message` for publishing. Messages queued after the publisher stopped are dropped
    /// with a WARN log line.
    pub fn publish(&self, message: MqttMessage) {
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = self.sender.send(message) {
            tracing::warn!(topic = %error.0.topic, "dropping MQTT message: the publisher has stopped");
        }
    }

    /// Returns the number of messages queued but not yet passed to the connection.
    pub fn queued(&self) -> u64 {
        let stats = &self.stats;
        stats
            .queued
            .load(Ordering::Relaxed)
            .saturating_sub(stats.sent.load(Ordering::Relaxed))
    }
}

/// The running publisher's tasks.
#[derive(Debug)]
pub struct PublisherHandle {
    forward: JoinHandle<()>,
    stats: Arc<PublisherStats>,
}

impl PublisherHandle {
    /// Waits until every queued message has been acknowledged (or [`DRAIN_TIMEOUT`] passed) after
    /// all [`MessagePublisher`]s were dropped, then disconnects.
    pub async fn finish(self) -> Arc<PublisherStats> {
        if let Err(error) = self.forward.await {
            tracing::error!(error = %error, "MQTT publisher task failed");
        }
        self.stats
    }
}

/// Starts a publisher connected to `broker`. Must be called within a tokio runtime.
pub fn spawn_publisher(
    broker: &BrokerAddress,
    config: &MqttClientConfig,
) -> (MessagePublisher, PublisherHandle) {
    let (client, event_loop) = AsyncClient::new(config.options(broker, "responses"), 4096);
    let (sender, receiver) = mpsc::unbounded_channel();
    let stats = Arc::new(PublisherStats::default());
    let connection = tokio::spawn(drive_connection(
        event_loop,
        broker.clone(),
        Arc::clone(&stats),
    ));
    let forward = tokio::spawn(forward(client, receiver, connection, Arc::clone(&stats)));
    (
        MessagePublisher {
            sender,
            stats: Arc::clone(&stats),
        },
        PublisherHandle { forward, stats },
    )
}

async fn forward(
    client: AsyncClient,
    mut receiver: mpsc::UnboundedReceiver<MqttMessage>,
    connection: JoinHandle<()>,
    stats: Arc<PublisherStats>,
) {
    while let Some(message) = receiver.recv().await {
        let topic = message.topic;
        if let Err(error) = client
            .publish(topic.clone(), QoS::AtLeastOnce, false, message.payload)
            .await
        {
            tracing::error!(topic = %topic, error = %error, "MQTT publisher connection closed; message lost");
            continue;
        }
        stats.sent.fetch_add(1, Ordering::Relaxed);
    }

    // Every sender is gone: wait for the broker to acknowledge what was sent, then disconnect.
    let started = Instant::now();
    while stats.acknowledged.load(Ordering::Relaxed) < stats.sent.load(Ordering::Relaxed) {
        if started.elapsed() > DRAIN_TIMEOUT {
            let missing =
                stats.sent.load(Ordering::Relaxed) - stats.acknowledged.load(Ordering::Relaxed);
            tracing::warn!(
                missing,
                "stopping the MQTT publisher with unacknowledged messages"
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
    stats: Arc<PublisherStats>,
) {
    let mut last_warning: Option<Instant> = None;
    loop {
        match event_loop.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                stats.acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                tracing::info!(broker = %broker, "response publisher connected");
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
