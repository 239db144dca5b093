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
//! - `connection`: the socket loop of one connection; `transport`: its socket halves,
//!   buffers and packet codec.
//! - `protocol`: CONNECT checks and the reaction to each client packet, without I/O.
//! - `router`: sessions, subscriptions, retained messages and message routing, without I/O;
//!   `link`: the handle and wake-up signals that tie a connection to its session.
//! - `session`: one session's queue, inflight window and packet ids.
//! - `tree` and `topic`: the subscription index, filter validation and topic matching.
//! - `auth`: the single place where CONNECT, SUBSCRIBE and PUBLISH are authorised.
//! - `metrics`: counters, read as [`BrokerMetrics`].
//!
//! # Notes
//! - Supported: QoS 0 and 1, retained messages, wills, keep-alive, persistent sessions with
//!   offline queues, take-over by client id, and `$share/{group}/{filter}` subscriptions,
//!   which hand each message to one group member in turn.
//! - Not supported: QoS 2 (as on AWS IoT, a QoS 2 PUBLISH closes the connection, and QoS 2
//!   subscriptions are granted QoS 1), MQTT 3.1 and MQTT 5, TLS, WebSockets, authentication,
//!   `$SYS` topics, and session expiry.
//! - Everything lives in memory. Sessions and retained messages end with the process.
//! - A message reaches each subscriber in the order its publisher sent it. A subscriber that
//!   reads slowly never holds up the publisher or other subscribers. Its QoS 0 messages are
//!   dropped once `max_queued_qos0_messages` wait, and its QoS 1 messages wait in its
//!   session, up to `max_queued_messages`.
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
pub mod config;
mod connection;
mod error;
mod link;
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
    DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_LISTEN, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_INFLIGHT,
    DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_MAX_QUEUED_MESSAGES, DEFAULT_MAX_QUEUED_QOS0_MESSAGES,
    EmbeddedBrokerConfig,
};
pub use error::BrokerError;
pub use metrics::BrokerMetrics;
pub use server::{EmbeddedBroker, start_embedded_broker};

#[cfg(test)]
mod tests;
