//! Publishing responses: over MQTT publisher connections, or into the embedded broker in
//! process.
//!
//! Each thing always uses the same connection, and each handler thread publishes its
//! responses one after another, so a thing's responses reach subscribers in the order of its
//! requests.

use std::time::Duration;

use ingest::broker::LocalPublisher;
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, Outgoing, Packet, QoS};
use tokio::runtime::Handle;

use super::handler::Response;

/// Delay between reconnection attempts after a connection error.
pub const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Destination of the handler threads' responses.
#[derive(Clone, Debug)]
pub enum Responder {
    /// MQTT client connections, driven by tasks on `runtime`.
    Mqtt {
        /// One client per publisher connection.
        clients: Vec<AsyncClient>,
        /// The runtime that polls the connections' event loops.
        runtime: Handle,
    },
    /// The embedded broker of this process.
    InProcess(LocalPublisher),
}

impl Responder {
    /// Publishes `response` at QoS 1 for the thing whose spread hash is `spread`. Blocks while
    /// rumqttc's request channel is full, or while a subscriber of the embedded broker is
    /// congested.
    ///
    /// Must be called from a plain thread, not from an async task.
    ///
    /// # Errors
    /// Returns the client's or the broker's error as text.
    pub fn publish(&self, spread: u64, response: Response) -> Result<(), String> {
        match self {
            Responder::Mqtt { clients, runtime } => {
                let client = &clients[spread as usize % clients.len()];
                runtime
                    .block_on(client.publish(
                        response.topic,
                        QoS::AtLeastOnce,
                        false,
                        response.payload,
                    ))
                    .map_err(|error| error.to_string())
            }
            Responder::InProcess(publisher) => publisher
                .publish(&response.topic, response.payload, QoS::AtLeastOnce)
                .map_err(|error| error.to_string()),
        }
    }
}

/// Polls one publisher connection until it has sent its DISCONNECT.
pub async fn drive_publisher(mut event_loop: EventLoop, index: usize) {
    let mut connection_failed = false;
    loop {
        match event_loop.poll().await {
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                tracing::debug!(publisher = index, "publisher connection connected");
                connection_failed = false;
            }
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => break,
            Err(error) => {
                if connection_failed {
                    tracing::debug!(publisher = index, error = %error,
                        "publisher connection: reconnecting failed");
                } else {
                    tracing::warn!(publisher = index, error = %error,
                        "publisher connection lost; retrying every second");
                    connection_failed = true;
                }
                tokio::time::sleep(RECONNECT_DELAY).await;
            }
        }
    }
}
