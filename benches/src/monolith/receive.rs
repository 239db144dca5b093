//! The request connection: subscribes to the update topics and queues each request for the
//! handler thread of its thing.

use std::time::Duration;

use ingest::mqtt::{BrokerAddress, MqttClientConfig, now_ms};
use pipeline::dataflow::Operation;
use pipeline::protocol::{ShadowTopic, TopicError};
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS, SubscribeFilter, SubscribeReasonCode};
use tokio::sync::{mpsc, oneshot, watch};

use super::handler::UpdateJob;
use super::publish::RECONNECT_DELAY;
use super::server::{REQUEST_CHANNEL_CAPACITY, spread};

/// Request topic filters: classic and named shadows' `/update`.
const UPDATE_FILTERS: [&str; 2] = [
    "$aws/things/+/shadow/update",
    "$aws/things/+/shadow/name/+/update",
];

/// The connection that subscribes to the update topics.
pub(super) struct RequestConnection {
    client: AsyncClient,
    event_loop: EventLoop,
}

impl RequestConnection {
    pub(super) fn open(config: &MqttClientConfig, address: &BrokerAddress) -> Self {
        let (client, mut event_loop) = AsyncClient::new(
            config.options(address, "requests"),
            REQUEST_CHANNEL_CAPACITY,
        );
        event_loop.set_network_options(config.network_options());
        RequestConnection { client, event_loop }
    }
}

/// Receives update requests and queues each for its thing's handler thread, until `stop`
/// turns true or every handler has ended. Returns the number of requests received.
pub(super) async fn receive_requests(
    connection: RequestConnection,
    senders: Vec<mpsc::Sender<UpdateJob>>,
    ready: oneshot::Sender<()>,
    mut stop: watch::Receiver<bool>,
) -> u64 {
    let RequestConnection {
        client,
        mut event_loop,
    } = connection;
    let mut ready = Some(ready);
    let mut received = 0;
    let mut connection_failed = false;
    loop {
        let event = tokio::select! {
            _ = stop.changed() => break,
            event = event_loop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                tracing::info!("request connection connected");
                connection_failed = false;
                let filters = UPDATE_FILTERS
                    .map(|filter| SubscribeFilter::new(filter.to_owned(), QoS::AtLeastOnce));
                if let Err(error) = client.subscribe_many(filters).await {
                    tracing::error!(error = %error, "subscribing to the update topics failed");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                    tracing::error!("the broker rejected a subscription to the update topics");
                    continue;
                }
                tracing::info!(filters = ?UPDATE_FILTERS, "subscribed to the update topics");
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let key = match ShadowTopic::parse(&publish.topic) {
                    Ok(topic) if topic.operation == Operation::Update => topic.key,
                    Ok(_) | Err(TopicError::ResponseTopic(_)) => continue,
                    Err(error) => {
                        tracing::debug!(error = %error, "ignoring a message on a non-request topic");
                        continue;
                    }
                };
                received += 1;
                let index = spread(&key) as usize % senders.len();
                let job = UpdateJob {
                    key,
                    payload: publish.payload,
                    received_at_ms: now_ms(),
                };
                if senders[index].send(job).await.is_err() {
                    tracing::error!(
                        "a handler thread ended early; the monolith stops taking requests"
                    );
                    break;
                }
            }
            Ok(_) => {}
            Err(error) => {
                if connection_failed {
                    tracing::debug!(error = %error, "request connection: reconnecting failed");
                } else {
                    tracing::warn!(error = %error, "request connection lost; retrying every second");
                    connection_failed = true;
                }
                tokio::time::sleep(RECONNECT_DELAY).await;
            }
        }
    }
    drop(senders);
    if client.disconnect().await.is_ok() {
        // Drives the event loop until the DISCONNECT packet is out, for at most a second.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while event_loop.poll().await.is_ok() {}
        })
        .await;
    }
    tracing::info!(received, "request connection closed");
    received
}
