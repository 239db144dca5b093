//! Errors that stop a replay.
//!
//! Problems with a single row (a missing value, a number that does not parse) are not errors.
//! The reader skips such a row and counts it under a [`SkipReason`](super::SkipReason).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::config::{BrokerAddress, MAX_CONNECTIONS_LIMIT};
use super::dataset::Dataset;

/// Error that ends a replay before every row was published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The configuration failed validation, so nothing was read or sent.
    #[error("invalid replay configuration")]
    Config(#[from] ConfigError),

    /// An input path does not exist or cannot be opened.
    #[error("opening input {}", path.display())]
    Open {
        /// Path as given, or the file found inside a given folder.
        path: PathBuf,
        /// Error from the file system.
        #[source]
        source: io::Error,
    },

    /// A folder given as input contains no `*.csv` or `*.csv.gz` file.
    #[error("folder {} contains no *.csv or *.csv.gz files", path.display())]
    NoInputFiles {
        /// The folder.
        path: PathBuf,
    },

    /// Reading, decompressing or decoding an input file failed part-way.
    #[error("reading {}", path.display())]
    Read {
        /// The input file.
        path: PathBuf,
        /// Error from the CSV reader, which wraps I/O and gzip errors.
        #[source]
        source: csv::Error,
    },

    /// The CSV header lacks a column that the chosen data set needs.
    #[error(
        "{} has no column `{column}`, so it is not a {dataset} file; check --dataset",
        path.display()
    )]
    MissingColumn {
        /// The input file.
        path: PathBuf,
        /// Header name that was expected.
        column: &'static str,
        /// Data set chosen in the configuration.
        dataset: Dataset,
    },

    /// The first connection to the broker failed.
    #[error(
        "connecting to the MQTT broker at {broker} failed; start `shadowflow serve` or pass \
         --mqtt mqtt://HOST:PORT"
    )]
    Connect {
        /// Broker address from the configuration.
        broker: BrokerAddress,
        /// Error from the MQTT client, boxed to keep `ReplayError` small.
        #[source]
        source: Box<rumqttc::ConnectionError>,
    },

    /// An open connection to the broker failed during the replay.
    #[error("MQTT connection {connection} to the broker at {broker} failed during the replay")]
    Connection {
        /// Broker address from the configuration.
        broker: BrokerAddress,
        /// Index of the connection, from 0.
        connection: usize,
        /// Error from the MQTT client, boxed to keep `ReplayError` small.
        #[source]
        source: Box<rumqttc::ConnectionError>,
    },

    /// Updates were waiting for a PubAck, and none arrived within the timeout.
    #[error(
        "no PubAck from the MQTT broker at {broker} for {} s while {outstanding} updates \
         waited for one; check that the broker is healthy",
        timeout.as_secs_f64()
    )]
    AckTimeout {
        /// Broker address from the configuration.
        broker: BrokerAddress,
        /// Maximum time allowed between two PubAcks.
        timeout: Duration,
        /// Updates sent but not acknowledged.
        outstanding: u64,
    },

    /// The thread that reads the input files panicked.
    #[error("the input reader thread stopped unexpectedly")]
    ReaderTask(#[source] tokio::task::JoinError),
}

/// Invalid replay option, found before anything is read or sent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No file or folder was given.
    #[error("no input paths given; pass at least one CSV file or folder")]
    NoPaths,

    /// The rate is zero, negative, NaN or infinite.
    #[error("rate must be a positive, finite number of rows per second, got {rate}")]
    InvalidRate {
        /// Rate as given.
        rate: f64,
    },

    /// The row limit is zero.
    #[error("limit must be at least 1 row")]
    ZeroLimit,

    /// The connection count is zero or above [`MAX_CONNECTIONS_LIMIT`].
    #[error("max_connections must be from 1 to {MAX_CONNECTIONS_LIMIT}, got {value}")]
    InvalidMaxConnections {
        /// Count as given.
        value: usize,
    },

    /// The PubAck timeout is zero.
    #[error("ack_timeout must be longer than zero")]
    ZeroAckTimeout,

    /// The data set name is not one of [`Dataset::ALL`].
    #[error("unknown data set `{name}`; expected beijing, chicago or occupancy")]
    UnknownDataset {
        /// Name as given.
        name: String,
    },
}
