//! History rows: one record per accepted change of a shadow, as the archive stores it.
//!
//! The dataflow emits a [`HistoryRow`] for every accepted update and delete. Sinks decide how to
//! persist them; the Parquet archive in the `sinks` crate writes one Parquet row per value.

use serde::{Deserialize, Serialize};

/// Channel a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Origin {
    /// Published by a device or app on an MQTT shadow topic.
    Mqtt,
    /// Sent to the HTTP API.
    Http,
    /// Read from a data set by the in-process replay source.
    Replay,
}

impl Origin {
    /// Returns the lowercase name stored in the history (`mqtt`, `http`, `replay`).
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Mqtt => "mqtt",
            Origin::Http => "http",
            Origin::Replay => "replay",
        }
    }
}

/// Kind of change that a history row records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ChangeKind {
    /// An accepted `update` request.
    Update,
    /// An accepted `delete` request; the row carries the version of the deleted shadow.
    Delete,
}

impl ChangeKind {
    /// Returns the lowercase name stored in the history (`update`, `delete`).
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Update => "update",
            ChangeKind::Delete => "delete",
        }
    }
}

/// One accepted change of one shadow.
///
/// JSON columns contain compact JSON text. `None` means the section is absent: an empty shadow
/// has neither `desired` nor `reported`, and a shadow in sync has no `delta`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRow {
    /// Thing name, 1 to 128 characters of `[a-zA-Z0-9:_-]`.
    pub thing_name: String,
    /// Named shadow, or `None` for the classic (unnamed) shadow.
    pub shadow_name: Option<String>,
    /// Whether the row records an update or a delete.
    pub change: ChangeKind,
    /// Shadow version after the change (for a delete: the version of the deleted shadow).
    pub version: u64,
    /// When the service accepted the change, in milliseconds since the Unix epoch (UTC).
    pub accepted_at_ms: i64,
    /// Channel the request arrived on.
    pub origin: Origin,
    /// The request's `clientToken`, if it carried one.
    pub client_token: Option<String>,
    /// The request's `state` node as JSON text (`null` for `{"state":null}`); `None` for deletes.
    pub request_state: Option<String>,
    /// Resulting `state.desired` as JSON text.
    pub desired: Option<String>,
    /// Resulting `state.reported` as JSON text.
    pub reported: Option<String>,
    /// Resulting `state.delta` as JSON text.
    pub delta: Option<String>,
}

/// Position of an accepted change in the write-ahead log.
///
/// Each start of the service is a new `generation`, and each dataflow worker writes its own log,
/// so `(generation, worker)` names one log and `lsn` numbers its records from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogPosition {
    /// Start of the service that wrote the record, counting from 1.
    pub generation: u64,
    /// Index of the dataflow worker that wrote the record.
    pub worker: u32,
    /// Log sequence number of the record in its `(generation, worker)` log.
    pub lsn: u64,
}
