//! Replay options: input paths, data set, broker address, pacing and limits.
//!
//! The options come from the command line, so they have no serde form. Every update is sent at
//! QoS 1, and that is not configurable, because the replay counts a row as published only
//! when the broker has acknowledged each of its updates.

use std::path::PathBuf;
use std::time::Duration;

use super::dataset::Dataset;
use super::error::ConfigError;

pub use crate::mqtt::{BrokerAddress, DEFAULT_BROKER_HOST, DEFAULT_BROKER_PORT};

/// Default maximum number of MQTT connections.
///
/// Each thing stays on one connection, so per-thing order is kept while several connections
/// share the load. The three supported data sets have 6 to 12 things, so each thing gets its
/// own connection.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;

/// Upper bound accepted for [`ReplayConfig::max_connections`].
pub const MAX_CONNECTIONS_LIMIT: usize = 256;

/// Default maximum time without a PubAck while updates wait for one.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Maximum MQTT packet size in bytes, in both directions.
///
/// rumqttc 0.25 defaults to 10 KiB. Shadow update documents may be larger, so the replay
/// raises the limit on every connection.
pub const MAX_PACKET_SIZE_BYTES: usize = 128 * 1024;

/// Options of one replay run.
///
/// # Example
///
/// ```
/// use ingest::replay::{Dataset, ReplayConfig};
///
/// let config = ReplayConfig::new(vec!["data/occupancy.csv.gz".into()], Dataset::Occupancy)
///     .with_rate(Some(100.0))
///     .with_limit(Some(1_000));
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayConfig {
    /// CSV files or folders, replayed in the order given. A folder contributes every `*.csv`
    /// and `*.csv.gz` file directly inside it, sorted by file name.
    pub paths: Vec<PathBuf>,

    /// Data set that the files belong to. It decides the columns and the row mapping.
    pub dataset: Dataset,

    /// MQTT broker to publish to.
    pub broker: BrokerAddress,

    /// Maximum replay rate in rows per second. Rows that yield updates are scheduled at
    /// `start + i / rate`, and skipped rows take no slot. `None` publishes as fast as the
    /// broker acknowledges.
    pub rate: Option<f64>,

    /// Number of data rows to read before stopping, skipped rows included. `None` reads
    /// every row of every file.
    pub limit: Option<u64>,

    /// Maximum number of MQTT connections. Things are assigned to connections in the order
    /// they first appear, round-robin, and a thing never changes connection.
    pub max_connections: usize,

    /// Maximum time without any PubAck while updates wait for one. The replay fails with
    /// [`ReplayError::AckTimeout`](super::ReplayError::AckTimeout) after it.
    pub ack_timeout: Duration,
}

impl ReplayConfig {
    /// Creates a configuration with the default broker, no rate limit and no row limit.
    pub fn new(paths: Vec<PathBuf>, dataset: Dataset) -> Self {
        Self {
            paths,
            dataset,
            broker: BrokerAddress::default(),
            rate: None,
            limit: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            ack_timeout: DEFAULT_ACK_TIMEOUT,
        }
    }

    /// Sets the broker address.
    pub fn with_broker(mut self, broker: BrokerAddress) -> Self {
        self.broker = broker;
        self
    }

    /// Sets the maximum rate in rows per second.
    pub fn with_rate(mut self, rate: Option<f64>) -> Self {
        self.rate = rate;
        self
    }

    /// Sets the number of data rows to read.
    pub fn with_limit(mut self, limit: Option<u64>) -> Self {
        self.limit = limit;
        self
    }

    /// Sets the maximum number of MQTT connections.
    pub fn with_max_connections(mut self, max_connections: usize) -> Self {
        self.max_connections = max_connections;
        self
    }

    /// Sets the maximum time without a PubAck.
    pub fn with_ack_timeout(mut self, ack_timeout: Duration) -> Self {
        self.ack_timeout = ack_timeout;
        self
    }

    /// Checks every option without touching the file system or the network.
    ///
    /// # Errors
    ///
    /// Returns the first invalid option found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.paths.is_empty() {
            return Err(ConfigError::NoPaths);
        }
        let invalid_rate = self.rate.filter(|rate| !(rate.is_finite() && *rate > 0.0));
        if let Some(rate) = invalid_rate {
            return Err(ConfigError::InvalidRate { rate });
        }
        if self.limit == Some(0) {
            return Err(ConfigError::ZeroLimit);
        }
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(&self.max_connections) {
            return Err(ConfigError::InvalidMaxConnections {
                value: self.max_connections,
            });
        }
        if self.ack_timeout.is_zero() {
            return Err(ConfigError::ZeroAckTimeout);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        let config = ReplayConfig::new(vec!["a.csv".into()], Dataset::Beijing);
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.broker.to_string(), "mqtt://127.0.0.1:1883");
        assert_eq!(config.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(config.ack_timeout, DEFAULT_ACK_TIMEOUT);
    }

    #[test]
    fn invalid_options_are_rejected() {
        let base = ReplayConfig::new(vec!["a.csv".into()], Dataset::Chicago);

        let no_paths = ReplayConfig::new(Vec::new(), Dataset::Chicago);
        assert_eq!(no_paths.validate(), Err(ConfigError::NoPaths));

        for rate in [0.0, -1.0, f64::INFINITY] {
            let result = base.clone().with_rate(Some(rate)).validate();
            assert_eq!(result, Err(ConfigError::InvalidRate { rate }));
        }
        let nan = base.clone().with_rate(Some(f64::NAN)).validate();
        assert!(matches!(nan, Err(ConfigError::InvalidRate { .. })));

        let zero_limit = base.clone().with_limit(Some(0)).validate();
        assert_eq!(zero_limit, Err(ConfigError::ZeroLimit));

        let zero_connections = base.clone().with_max_connections(0).validate();
        assert_eq!(
            zero_connections,
            Err(ConfigError::InvalidMaxConnections { value: 0 })
        );

        let zero_timeout = base.with_ack_timeout(Duration::ZERO).validate();
        assert_eq!(zero_timeout, Err(ConfigError::ZeroAckTimeout));
    }
}
