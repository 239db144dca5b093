//! Sources of shadow requests: MQTT, HTTP-originated updates and data-set replay.
//!
//! Every source turns what it receives into [`pipeline::dataflow::Request`]s and sends them into
//! the dataflow through a [`pipeline::dataflow::RequestSender`].
//!
//! # Layout
//! - [`broker`]: the embedded MQTT 3.1.1 broker.
//! - [`mqtt`]: MQTT client settings shared with the sinks, and the request source.
//! - [`http`]: requests from the HTTP API that wait for their replies.
//! - [`replay`]: reading real device data sets and publishing each row as a device report.
#![warn(missing_docs)]

pub mod broker;
pub mod http;
pub mod mqtt;
pub mod replay;
