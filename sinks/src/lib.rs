//! Outputs of the shadow dataflow: MQTT responses and deltas, the Parquet history archive.
//!
//! # Layout
//! - [`mqtt`]: the response publisher, one MQTT connection for every outgoing message.
//! - [`parquet_archive`]: the history archive, one Parquet row per accepted change.
#![warn(missing_docs)]

pub mod error;
pub mod mqtt;
pub mod parquet_archive;
