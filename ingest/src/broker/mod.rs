//! The embedded MQTT 3.1.1 broker, for running the service with nothing else installed.
//!
//! AWS IoT devices subscribe to `$aws/things/{thing}/shadow/...` topics. rumqttd 0.17 to 0.20
//! rejects every filter that starts with `$` except `$share` filters (`validate_subscription`
//! in its `router/routing.rs`), so the service runs this small broker on rumqttc's MQTT 3.1.1
//! codec instead.
//!
//! # Layout
//! - [`config`]: [`EmbeddedBrokerConfig`] and its defaults.
//! - `server`: the listener, one task per connection, and [`EmbeddedBroker`], the handle.
//! - `connection`: the socket loop of one connection.
//! - `handshake`: the CONNECT check of a new connection, and its rejection.
//! - `close`: the reasons a connection ends, with their log lines.
//! - `transport`: the socket halves of a connection, its buffers and packet codec.
//! - `protocol`: CONNECT checks and the reaction to each client packet, without I/O.
//! - `router`: sessions, subscriptions, retained messages and, in `router::routing`, message
//!   routing, without I/O; `link`: the handle and wake-up signals that tie a connection to
//!   its session.
//! - `flow`: flow control, the congestion of slow subscribers' sessions and the pauses of
//!   their publishers.
//! - `session`: one session's queue, inflight window and packet ids.
//! - `tree` and `topic`: the subscription index, filter validation and topic matching.
//! - `auth`: the single place where CONNECT, SUBSCRIBE and PUBLISH are authorised.
//! - `metrics`: counters, read as [`BrokerMetrics`].
//! - `local`: [`LocalPublisher`], which publishes from the same process without a connection,
//!   and [`LocalSubscriber`], which receives clients' messages in the same process.
//!
//! # Notes
//! - Supported: QoS 0 and 1, retained messages, wills, keep-alive, persistent sessions with
//!   offline queues, take-over by client id, and `$share/{group}/{filter}` subscriptions,
//!   which hand each message to one group member in turn.
//! - Not supported: QoS 2 (as on AWS IoT, a QoS 2 PUBLISH closes the connection, and QoS 2
//!   subscriptions are granted QoS 1), MQTT 3.1 and MQTT 5, TLS, WebSockets, authentication,
//!   `$SYS` topics, and session expiry.
//! - Everything lives in memory. Sessions and retained messages end with the process.
//! - A message reaches each subscriber in the order its publisher sent it.
//! - A connected subscriber that reads more slowly than its publishers send slows them down
//!   instead of losing QoS 1 messages. Once its queue reaches `flow_control_high_messages`,
//!   each publisher whose QoS 1 message is queued there gets its PUBACK, but the broker
//!   handles no further PUBLISH from it until the queue has drained to half the mark. Other
//!   subscribers of those publishers then receive at the slow subscriber's pace too.
//! - A subscriber that stays at or above the mark without a PUBACK or a byte written for
//!   `slow_subscriber_timeout_ms` is disconnected, so a stalled client cannot stall its
//!   publishers for longer.
//! - QoS 0 messages for a slow subscriber are dropped once `max_queued_qos0_messages`
//!   wait, and never slow a publisher down. The queue of an offline persistent session
//!   never slows a publisher down either. It keeps up to `max_queued_messages` QoS 1
//!   messages and then drops the oldest.
//!
//! # Example
//! ```no_run
//! # async fn example() -> Result<(), ingest::broker::BrokerError> {
//! use ingest::broker::{EmbeddedBrokerConfig, start_embedded_broker};
//!
//! let config = EmbeddedBrokerConfig {
//!     listen: "127.0.0.1:0".parse().expect("loopback address"),
//!     ..EmbeddedBrokerConfig::default()
//! };
//! let broker = start_embedded_broker(&config).await?;
//! let port = broker.local_addr().port();
//! // ... connect MQTT clients to 127.0.0.1:{port} ...
//! broker.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod auth;
mod close;
pub mod config;
mod connection;
mod error;
mod flow;
mod handshake;
mod link;
mod local;
mod metrics;
mod protocol;
mod router;
mod server;
mod session;
mod shared;
mod topic;
mod transport;
mod tree;

pub use config::{
    DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_FLOW_CONTROL_HIGH_MESSAGES, DEFAULT_LISTEN,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_INFLIGHT, DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_MAX_QUEUED_MESSAGES, DEFAULT_MAX_QUEUED_QOS0_MESSAGES,
    DEFAULT_SLOW_SUBSCRIBER_TIMEOUT_MS, EmbeddedBrokerConfig,
};
pub use error::BrokerError;
pub use local::{Delivery, LocalPublishError, LocalPublisher, LocalSubscriber};
pub use metrics::BrokerMetrics;
pub use server::{EmbeddedBroker, start_embedded_broker};

#[cfg(test)]
mod tests;
