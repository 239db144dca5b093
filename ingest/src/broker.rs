//! The embedded MQTT broker (rumqttd), for running the service with nothing else installed.
//!
//! # Notes
//! - rumqttd has no shutdown call and reports a failed bind only in its own log, so
//!   [`start_embedded_broker`] checks that the address is free before starting it and waits
//!   until the listener accepts connections. The broker lives until the process exits.
//! - Port 0 picks a free port first; another process could take that port in the short window
//!   before the broker binds it.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use serde::{Deserialize, Serialize};

/// Default listen address of the embedded broker.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:1883";

/// Default largest payload the broker accepts, in bytes (AWS IoT's limit is 128 KiB).
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 128 * 1024;

/// Default maximum number of client connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// How long to wait for the broker's listener to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the embedded broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedBrokerConfig {
    /// Address the broker listens on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Largest MQTT payload accepted, in bytes.
    pub max_payload_bytes: usize,
    /// Maximum number of simultaneous client connections.
    pub max_connections: usize,
    /// Unacknowledged QoS 1 messages per connection.
    pub max_inflight: usize,
}

impl Default for EmbeddedBrokerConfig {
    fn default() -> Self {
        EmbeddedBrokerConfig {
            listen: DEFAULT_LISTEN.parse().expect("the default listen address is valid"),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_inflight: 100,
        }
    }
}

/// Error starting the embedded broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The listen address cannot be bound (in use, or not a local address).
    #[error("cannot listen for MQTT on {address}: {source}; pass another --mqtt-listen address, or --mqtt-broker to use a running broker")]
    Bind {
        /// Address that could not be bound.
        address: SocketAddr,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The broker did not accept connections in time.
    #[error("the embedded MQTT broker did not accept connections on {address} within {timeout:?}")]
    NotListening {
        /// Address the broker should listen on.
        address: SocketAddr,
        /// How long the service waited.
        timeout: Duration,
    },
}

/// Starts the embedded broker on its own threads and returns the address it listens on.
///
/// # Errors
/// Returns [`BrokerError`] when the address is taken or the broker does not come up.
pub fn start_embedded_broker(config: &EmbeddedBrokerConfig) -> Result<SocketAddr, BrokerError> {
    let address = reserve(config.listen)?;
    let server = ServerSettings {
        name: "mqtt-v4".to_owned(),
        listen: address,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: config.max_payload_bytes,
            max_inflight_count: config.max_inflight,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let broker_config = Config {
        router: RouterConfig {
            max_connections: config.max_connections,
            max_outgoing_packet_count: 200,
            max_segment_size: 100 << 20,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([("v4".to_owned(), server)])),
        ..Default::default()
    };
    let mut broker = Broker::new(broker_config);
    std::thread::Builder::new()
        .name("mqtt-broker".to_owned())
        .spawn(move || {
            if let Err(error) = broker.start() {
                tracing::error!(error = %error, "embedded MQTT broker stopped");
            }
        })
        .map_err(|source| BrokerError::Bind { address, source })?;

    let started = Instant::now();
    while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
        if started.elapsed() > START_TIMEOUT {
            return Err(BrokerError::NotListening { address, timeout: START_TIMEOUT });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::info!(address = %address, "embedded MQTT broker listening");
    Ok(address)
}

/// Checks that `address` can be bound, resolving port 0 to a free port.
fn reserve(address: SocketAddr) -> Result<SocketAddr, BrokerError> {
    let listener = TcpListener::bind(address).map_err(|source| BrokerError::Bind { address, source })?;
    listener.local_addr().map_err(|source| BrokerError::Bind { address, source })
}
