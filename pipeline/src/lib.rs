//! Shadow domain model and the dataflow that maintains shadows.
//!
//! A *shadow* is the JSON document that AWS IoT Device Shadow keeps per device: the `desired`
//! state an app requests, the `reported` state the device last sent, their `delta`, per-leaf
//! metadata and a version. This crate holds the semantics as plain functions ([`shadow`]) and
//! the timely/differential dataflow that applies requests to shadows ([`dataflow`]).
//!
//! # Layout
//! - [`shadow`]: documents, decoding and validation, merge, delta, metadata, versions, errors,
//!   limits and response documents; no I/O.
//! - [`protocol`]: AWS shadow topic names.
//! - [`dataflow`]: the request source, the single-writer shadow operator, the deltas collection
//!   and the outputs it feeds.
//! - [`durable`]: the write-ahead log, checkpoints and recovery.
//! - [`history`]: the record of one accepted change, as the archive stores it.
//! - [`fleet`]: fleet-indexing queries, evaluation, aggregations and API documents; no I/O.
//! - [`faults`]: fault injection for tests, compiled in only with the `failpoints` feature.
#![warn(missing_docs)]

pub mod dataflow;
pub mod durable;
pub mod faults;
pub mod fleet;
pub mod history;
pub mod protocol;
pub mod shadow;
