//! MQTT side of the replay: connections, shadow update requests and PubAck counting.
//!
//! [`Publisher`] sends each update as `$aws/things/{thing}/shadow/update` at QoS 1 with the
//! payload `{"state":{"reported":{...}},"clientToken":"replay-<row number>"}`. It opens up
//! to `max_connections` MQTT connections lazily. The n-th distinct thing goes to connection
//! `n % max_connections` and stays there, so each thing's updates leave in file order on
//! one connection, and MQTT keeps that order up to the broker.
//!
//! # Notes
//!
//! - Each connection runs its rumqttc event loop in its own task. The task maps packet ids
//!   to row numbers, because rumqttc 0.25 reports `Outgoing::Publish(pkid)` in the order
//!   requests were queued. It reports every PubAck to the shared [`AckTracker`].
//! - A connection error is fatal. There is no reconnect, because a resent QoS 1 message
//!   could arrive after newer updates of the same thing and break per-thing order.
//! - The client id is `sfr-<process id>-<publisher number>-<connection index>`, unique
//!   within the host. Process ids on Linux have at most 7 digits, so the id stays within the
//!   23 bytes that MQTT 3.1.1 brokers must accept for the first 10 million publishers of a
//!   process. Sessions are clean.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::acks::AckTracker;
use super::config::{BrokerAddress, MAX_PACKET_SIZE_BYTES, ReplayConfig};
use super::dataset::ThingUpdate;
use super::error::ReplayError;

/// Capacity of each connection's rumqttc request channel.
const REQUEST_CHANNEL_CAPACITY: usize = 256;

/// QoS 1 publishes that may wait for a PubAck on one connection (the rumqttc default).
const MAX_INFLIGHT: u16 = 100;

/// MQTT keep-alive interval.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Maximum time to wait for a connection task to end after the DISCONNECT request.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Number of publishers created by this process, used to keep client ids unique.
static PUBLISHERS_CREATED: AtomicU64 = AtomicU64::new(0);

/// A row's updates, encoded and ready to send.
#[derive(Debug, Clone)]
pub(crate) struct EncodedRow {
    pub row_number: u64,
    pub updates: Vec<EncodedUpdate>,
}

/// One shadow update request, encoded.
#[derive(Debug, Clone)]
pub(crate) struct EncodedUpdate {
    pub thing_name: String,
    pub topic: String,
    pub payload: Bytes,
}

#[derive(Serialize)]
struct UpdateRequest<'a> {
    state: ReportedState<'a>,
    #[serde(rename = "clientToken")]
    client_token: &'a str,
}

#[derive(Serialize)]
struct ReportedState<'a> {
    reported: &'a Map<String, Value>,
}

/// Returns the shadow update topic of a thing.
pub(crate) fn update_topic(thing_name: &str) -> String {
    format!("$aws/things/{thing_name}/shadow/update")
}

/// Encodes the updates of one row as shadow update requests.
///
/// The client token is `replay-<row number>`, at most 27 bytes, within the 64-byte limit of
/// AWS IoT.
pub(crate) fn encode_row(row_number: u64, updates: Vec<ThingUpdate>) -> EncodedRow {
    let client_token = format!("replay-{row_number}");
    let updates = updates
        .into_iter()
        .map(|update| {
            let request = UpdateRequest {
                state: ReportedState {
                    reported: &update.reported,
                },
                client_token: &client_token,
            };
            let payload = serde_json::to_vec(&request)
                .expect("a JSON object with string keys always serialises");
            EncodedUpdate {
                topic: update_topic(&update.thing_name),
                thing_name: update.thing_name,
                payload: Bytes::from(payload),
            }
        })
        .collect();
    EncodedRow {
        row_number,
        updates,
    }
}

/// One open MQTT connection.
struct Connection {
    client: AsyncClient,
    /// Row numbers of queued publishes, in queue order, not yet given a packet id.
    queued_rows: Arc<Mutex<VecDeque<u64>>>,
    task: JoinHandle<()>,
}

/// Publishes encoded rows over a pool of MQTT connections.
pub(crate) struct Publisher {
    broker: BrokerAddress,
    client_id_prefix: String,
    max_connections: usize,
    ack_timeout: Duration,
    connections: Vec<Connection>,
    connection_by_thing: HashMap<String, usize>,
    acks: Arc<AckTracker>,
}

impl Publisher {
    /// Opens the first connection, so an unreachable broker fails before any row is read.
    pub async fn connect(
        config: &ReplayConfig,
        acks: Arc<AckTracker>,
    ) -> Result<Self, ReplayError> {
        let publisher_number = PUBLISHERS_CREATED.fetch_add(1, Ordering::Relaxed);
        let mut publisher = Self {
            broker: config.broker.clone(),
            client_id_prefix: format!("sfr-{}-{publisher_number}", std::process::id()),
            max_connections: config.max_connections,
            ack_timeout: config.ack_timeout,
            connections: Vec::new(),
            connection_by_thing: HashMap::new(),
            acks,
        };
        publisher.open_connection().await?;
        Ok(publisher)
    }

    /// Returns the number of distinct things seen so far.
    pub fn things(&self) -> usize {
        self.connection_by_thing.len()
    }

    /// Returns the number of open connections.
    pub fn connections(&self) -> usize {
        self.connections.len()
    }

    /// Queues every update of a row. Returns once the updates are queued, not acknowledged.
    ///
    /// # Errors
    ///
    /// Returns a connection failure or a PubAck timeout seen while waiting to queue.
    pub async fn publish_row(&mut self, row: EncodedRow) -> Result<(), ReplayError> {
        self.acks.register_row(row.row_number, row.updates.len());
        for update in row.updates {
            let index = self.connection_for(&update.thing_name).await?;
            let connection = &self.connections[index];
            connection
                .queued_rows
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_back(row.row_number);

            let send = connection.client.publish_bytes(
                update.topic,
                QoS::AtLeastOnce,
                false,
                update.payload,
            );
            tokio::select! {
                result = send => {
                    if result.is_err() {
                        // The event loop has ended, and its task recorded why.
                        return Err(self.wait_for_failure().await);
                    }
                }
                error = self.wait_for_failure() => return Err(error),
            }
        }
        Ok(())
    }

    /// Sleeps until `deadline`, returning early with an error if a connection fails.
    pub async fn sleep_until(&self, deadline: tokio::time::Instant) -> Result<(), ReplayError> {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => Ok(()),
            error = self.wait_for_failure() => Err(error),
        }
    }

    /// Waits until a connection fails or PubAcks stall, and returns the error.
    async fn wait_for_failure(&self) -> ReplayError {
        self.acks
            .wait_for_failure(&self.broker, self.ack_timeout)
            .await
    }

    /// Waits for every PubAck, then disconnects all connections.
    ///
    /// # Errors
    ///
    /// Returns a connection failure or a PubAck timeout.
    pub async fn finish(&mut self) -> Result<(), ReplayError> {
        self.acks
            .wait_until_acknowledged(&self.broker, self.ack_timeout)
            .await?;
        for connection in &self.connections {
            if let Err(error) = connection.client.disconnect().await {
                debug!(error = %error, "connection already closed before DISCONNECT");
            }
        }
        for (index, connection) in self.connections.drain(..).enumerate() {
            let mut task = connection.task;
            if tokio::time::timeout(DISCONNECT_TIMEOUT, &mut task)
                .await
                .is_err()
            {
                warn!(
                    broker = %self.broker,
                    connection = index,
                    "connection did not close in time; aborting it"
                );
                task.abort();
            }
        }
        Ok(())
    }

    /// Returns the connection of a thing, assigning and opening one for a new thing.
    async fn connection_for(&mut self, thing_name: &str) -> Result<usize, ReplayError> {
        if let Some(&index) = self.connection_by_thing.get(thing_name) {
            return Ok(index);
        }
        let index = self.connection_by_thing.len() % self.max_connections;
        if index == self.connections.len() {
            self.open_connection().await?;
        }
        self.connection_by_thing
            .insert(thing_name.to_owned(), index);
        Ok(index)
    }

    /// Opens the next connection and waits for its ConnAck.
    async fn open_connection(&mut self) -> Result<(), ReplayError> {
        let index = self.connections.len();
        let client_id = format!("{}-{index}", self.client_id_prefix);
        let mut options = MqttOptions::new(
            client_id.as_str(),
            self.broker.host.as_str(),
            self.broker.port,
        );
        options
            .set_max_packet_size(MAX_PACKET_SIZE_BYTES, MAX_PACKET_SIZE_BYTES)
            .set_keep_alive(KEEP_ALIVE)
            .set_inflight(MAX_INFLIGHT)
            .set_clean_session(true);
        let (client, mut event_loop) = AsyncClient::new(options, REQUEST_CHANNEL_CAPACITY);

        // rumqttc bounds the TCP connect and the ConnAck wait by its connection timeout (5 s).
        loop {
            match event_loop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => break,
                Ok(_) => {}
                Err(source) => {
                    return Err(ReplayError::Connect {
                        broker: self.broker.clone(),
                        source: Box::new(source),
                    });
                }
            }
        }
        info!(broker = %self.broker, connection = index, client_id, "connected to MQTT broker");

        let queued_rows = Arc::new(Mutex::new(VecDeque::new()));
        let task = tokio::spawn(drive_connection(
            index,
            event_loop,
            Arc::clone(&queued_rows),
            Arc::clone(&self.acks),
        ));
        self.connections.push(Connection {
            client,
            queued_rows,
            task,
        });
        Ok(())
    }
}

impl Drop for Publisher {
    /// Aborts connection tasks left after an error. Their event loops would otherwise keep
    /// the sockets open, because each event loop contains a sender of its own request channel.
    fn drop(&mut self) {
        for connection in &self.connections {
            connection.task.abort();
        }
    }
}

/// Polls one connection's event loop until DISCONNECT is sent or the connection fails.
async fn drive_connection(
    index: usize,
    mut event_loop: EventLoop,
    queued_rows: Arc<Mutex<VecDeque<u64>>>,
    acks: Arc<AckTracker>,
) {
    let mut row_by_packet_id: HashMap<u16, u64> = HashMap::new();
    loop {
        match event_loop.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(packet_id))) => {
                let row = queued_rows
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pop_front();
                if let Some(row) = row {
                    row_by_packet_id.insert(packet_id, row);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => match row_by_packet_id.remove(&ack.pkid) {
                Some(row) => acks.acknowledge(row),
                None => warn!(
                    connection = index,
                    packet_id = ack.pkid,
                    "PubAck for an unknown packet id"
                ),
            },
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                debug!(connection = index, "sent DISCONNECT");
                return;
            }
            Ok(_) => {}
            Err(error) => {
                warn!(connection = index, error = %error, "MQTT connection failed");
                acks.fail(index, error);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn encoded_update_has_topic_and_token() {
        let Value::Object(reported) = json!({"pir": 1, "observed_at": "2017-12-22T10:49:41"})
        else {
            panic!("literal is an object");
        };
        let row = encode_row(
            42,
            vec![ThingUpdate {
                thing_name: "S7".to_owned(),
                reported,
            }],
        );
        assert_eq!(row.row_number, 42);
        assert_eq!(row.updates.len(), 1);

        let update = &row.updates[0];
        assert_eq!(update.topic, "$aws/things/S7/shadow/update");
        let payload: Value = serde_json::from_slice(&update.payload).expect("payload is JSON");
        let expected = json!({
            "state": {"reported": {"pir": 1, "observed_at": "2017-12-22T10:49:41"}},
            "clientToken": "replay-42",
        });
        assert_eq!(payload, expected);
        let text = std::str::from_utf8(&update.payload).expect("payload is UTF-8");
        assert!(
            text.starts_with(r#"{"state":"#),
            "state comes first: {text}"
        );
    }

    #[test]
    fn client_token_fits_for_largest_row_number() {
        let row = encode_row(
            u64::MAX,
            vec![ThingUpdate {
                thing_name: "S1".to_owned(),
                reported: Map::new(),
            }],
        );
        let payload: Value =
            serde_json::from_slice(&row.updates[0].payload).expect("payload is JSON");
        let token = payload["clientToken"].as_str().expect("token is a string");
        assert!(token.len() <= 64, "token {token} is {} bytes", token.len());
    }
}
