//! Settings of the embedded MQTT broker, with their defaults and validation.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::BrokerError;

/// Default listen address of the embedded broker.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:1883";

/// Default largest PUBLISH payload the broker accepts, in bytes (AWS IoT's limit is 128 KiB).
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 128 * 1024;

/// Default maximum number of client connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Default number of unacknowledged QoS 1 messages the broker sends to one client.
pub const DEFAULT_MAX_INFLIGHT: usize = 100;

/// Default number of QoS 1 messages one session keeps queued for its client.
pub const DEFAULT_MAX_QUEUED_MESSAGES: usize = 100_000;

/// Default queue length at which QoS 0 messages for a client are dropped.
pub const DEFAULT_MAX_QUEUED_QOS0_MESSAGES: usize = 1_000;

/// Default time a new connection has to send its CONNECT packet, in milliseconds.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;

/// Default queue length of a connected session at which its publishers pause.
///
/// A tenth of [`DEFAULT_MAX_QUEUED_MESSAGES`], so the rest of the queue is left for the one
/// message each publishing connection may add after the mark, for messages queued while
/// the client was offline, and for retained messages sent on SUBSCRIBE. Bursts of up to
/// 10,000 messages ahead of a subscriber pass without a pause. A subscriber that handles,
/// say, 40,000 messages a second drains the 5,000 messages between the marks in 125 ms.
pub const DEFAULT_FLOW_CONTROL_HIGH_MESSAGES: usize = 10_000;

/// Default time a connected subscriber may stay at or above the flow-control high-water mark
/// without progress before it is disconnected, in milliseconds.
///
/// Long enough to ride out a brief stall of a working client (a long garbage-collection
/// pause, a network hiccup), short enough that its publishers do not wait for minutes.
pub const DEFAULT_SLOW_SUBSCRIBER_TIMEOUT_MS: u64 = 30_000;

/// Largest remaining length of an MQTT packet (four length bytes, MQTT 3.1.1 section 2.2.3).
const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Bytes a PUBLISH packet carries besides its payload at most: a topic of up to 65,535 bytes
/// with its 2-byte length, and the 2-byte packet id.
pub(crate) const MAX_PUBLISH_OVERHEAD_BYTES: usize = 2 + 65_535 + 2;

/// Largest `max_connections`, kept far below the permit limit of tokio's semaphore.
const MAX_CONNECTIONS_LIMIT: usize = 1 << 24;

/// Settings of the embedded broker.
///
/// # Memory usage
/// Each connection buffers at most one incoming packet (up to `max_payload_bytes` plus 64 KiB
/// of header) and about 64 KiB of outgoing packets plus one more packet. A publisher paused
/// by flow control also keeps about 64 KiB of packets read ahead, plus one more packet.
/// Each session queues at most `max_queued_messages` messages. Flow control keeps a
/// connected session near `flow_control_high_messages` or below, unless it resumed a longer
/// offline queue. Subscribers share one copy of each payload, so the
/// queues of a fan-out hold one payload and a topic copy per subscriber.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedBrokerConfig {
    /// Address the broker listens on; port 0 picks a free port.
    pub listen: SocketAddr,

    /// Largest PUBLISH payload accepted, in bytes. A client that sends a larger one is
    /// disconnected.
    pub max_payload_bytes: usize,

    /// Maximum number of simultaneous client connections. Further connections are closed as
    /// soon as they are accepted.
    pub max_connections: usize,

    /// Maximum number of QoS 1 messages sent to one client and not yet acknowledged, from 1 to
    /// 65,535. Further messages wait in the session's queue.
    pub max_inflight: usize,

    /// Maximum number of messages waiting in one session's queue, for a connected client that
    /// reads slowly or for a persistent session whose client is offline. When a QoS 1 message
    /// arrives at a full queue, the oldest queued message is dropped. For a connected client,
    /// flow control normally keeps the queue well below this bound, see
    /// `flow_control_high_messages`.
    pub max_queued_messages: usize,

    /// Queue length at which new QoS 0 messages for a session are dropped. The queue counts
    /// waiting messages of both QoS levels, so a slow reader loses QoS 0 messages first.
    pub max_queued_qos0_messages: usize,

    /// Time a new connection has to send its CONNECT packet, in milliseconds.
    pub connect_timeout_ms: u64,

    /// Queue length of a connected session, the flow-control high-water mark, at which
    /// publishers of QoS 1 messages for it pause, from 1 to `max_queued_messages`.
    ///
    /// The broker handles no further PUBLISH from each publisher whose QoS 1 message leaves
    /// such a queue at or above the mark. After about 64 KiB it stops reading the
    /// publisher's socket too, so the publisher's inflight window and TCP slow it down. The
    /// publisher resumes once the queue has drained to half the mark, or its client has
    /// disconnected. Queues of
    /// offline sessions, QoS 0 messages and a client's messages to itself never pause a
    /// publisher.
    ///
    /// A lower mark bounds the memory of a slow subscriber more tightly, but pauses
    /// publishers at smaller bursts. Each publishing connection can still add one message
    /// after the mark, so keep the gap to `max_queued_messages` above the number of
    /// publishing connections.
    pub flow_control_high_messages: usize,

    /// Time a connected subscriber may stay at or above the flow-control high-water mark
    /// without progress (no PUBACK read and no byte written to it) before the broker
    /// disconnects it, in milliseconds. Its will is published, and a persistent session
    /// keeps queuing offline up to `max_queued_messages`.
    pub slow_subscriber_timeout_ms: u64,
}

impl Default for EmbeddedBrokerConfig {
    fn default() -> Self {
        EmbeddedBrokerConfig {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("the default listen address is valid"),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            max_queued_messages: DEFAULT_MAX_QUEUED_MESSAGES,
            max_queued_qos0_messages: DEFAULT_MAX_QUEUED_QOS0_MESSAGES,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            flow_control_high_messages: DEFAULT_FLOW_CONTROL_HIGH_MESSAGES,
            slow_subscriber_timeout_ms: DEFAULT_SLOW_SUBSCRIBER_TIMEOUT_MS,
        }
    }
}

impl EmbeddedBrokerConfig {
    /// Checks that every limit is in its allowed range.
    ///
    /// # Errors
    /// Returns [`BrokerError::InvalidConfig`] naming the first setting out of range.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let max_payload = MAX_REMAINING_LENGTH - MAX_PUBLISH_OVERHEAD_BYTES;
        check_range("max_payload_bytes", self.max_payload_bytes, 1, max_payload)?;
        check_range(
            "max_connections",
            self.max_connections,
            1,
            MAX_CONNECTIONS_LIMIT,
        )?;
        check_range("max_inflight", self.max_inflight, 1, usize::from(u16::MAX))?;
        check_range(
            "max_queued_messages",
            self.max_queued_messages,
            1,
            usize::MAX,
        )?;
        check_range(
            "max_queued_qos0_messages",
            self.max_queued_qos0_messages,
            1,
            usize::MAX,
        )?;
        check_range(
            "flow_control_high_messages",
            self.flow_control_high_messages,
            1,
            self.max_queued_messages,
        )?;
        check_milliseconds("connect_timeout_ms", self.connect_timeout_ms)?;
        check_milliseconds(
            "slow_subscriber_timeout_ms",
            self.slow_subscriber_timeout_ms,
        )
    }

    /// Largest remaining length of an incoming packet: the payload limit plus the PUBLISH
    /// header.
    pub(crate) fn max_packet_bytes(&self) -> usize {
        self.max_payload_bytes
            .saturating_add(MAX_PUBLISH_OVERHEAD_BYTES)
    }

    /// Time a new connection has to send its CONNECT packet.
    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Time a subscriber may stay congested without progress before it is disconnected.
    pub(crate) fn slow_subscriber_timeout(&self) -> Duration {
        Duration::from_millis(self.slow_subscriber_timeout_ms)
    }
}

/// Checks that a time in milliseconds is at least 1.
fn check_milliseconds(field: &'static str, milliseconds: u64) -> Result<(), BrokerError> {
    let value = usize::try_from(milliseconds).unwrap_or(usize::MAX);
    check_range(field, value, 1, usize::MAX)
}

fn check_range(
    field: &'static str,
    value: usize,
    min: usize,
    max: usize,
) -> Result<(), BrokerError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(BrokerError::InvalidConfig {
        field,
        value: value as u64,
        min: min as u64,
        max: max as u64,
    })
}
