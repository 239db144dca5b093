//! The values that history reads take and return: changes, their positions, and pages.
//!
//! [`HistoryReader`](super::HistoryReader) reads them, see `reader.rs`.

use pipeline::history::{ChangeKind, Origin};
use pipeline::shadow::ShadowKey;

/// One accepted change of one shadow, as history reads return it.
///
/// The text fields contain compact JSON, as in the archive's columns of the same names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryChange {
    /// Shadow version after the change; for a delete, the version of the deleted shadow.
    pub version: u64,
    /// Kind of change: update or delete.
    pub change: ChangeKind,
    /// Time the service accepted the change, in ms since the Unix epoch.
    pub accepted_at_ms: i64,
    /// Channel the request arrived on.
    pub origin: Origin,
    /// The request's `clientToken`. Shadow-document reads skip this column in files, so they
    /// can return `None` for a change that had one.
    pub client_token: Option<String>,
    /// The request's `state` node as JSON, `None` for deletes. Shadow-document reads skip this
    /// column in files, as they skip `client_token`.
    pub request_state: Option<String>,
    /// Resulting `state.desired`, `None` when absent.
    pub desired: Option<String>,
    /// Resulting `state.reported`, `None` when absent.
    pub reported: Option<String>,
    /// Resulting `state.delta`, `None` when desired and reported agree.
    pub delta: Option<String>,
}

impl HistoryChange {
    /// Returns the position of the change in its shadow's history.
    pub fn position(&self) -> ChangePosition {
        ChangePosition {
            version: self.version,
            change: self.change,
            accepted_at_ms: self.accepted_at_ms,
        }
    }
}

/// Position of a change in its shadow's history, which orders the changes: by version, an
/// update before the delete of the same version, then by accepted time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChangePosition {
    /// Shadow version of the change.
    pub version: u64,
    /// Update or delete.
    pub change: ChangeKind,
    /// Accepted time in ms since the Unix epoch.
    pub accepted_at_ms: i64,
}

/// A request for one page of a shadow's changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryQuery {
    /// The shadow whose changes to read.
    pub shadow: ShadowKey,
    /// Earliest accepted time to include, in ms since the Unix epoch.
    pub accepted_from_ms: Option<i64>,
    /// Accepted time to stop before, in ms since the Unix epoch.
    pub accepted_before_ms: Option<i64>,
    /// Position of the last change of the previous page; the page starts after it.
    pub after: Option<ChangePosition>,
    /// Maximum number of changes in the page, at least 1.
    pub limit: usize,
}

/// One page of a shadow's changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryPage {
    /// Changes in [`ChangePosition`] order.
    pub changes: Vec<HistoryChange>,
    /// Position of this page's last change, after which the next page starts, or `None` if
    /// this is the last page.
    pub next: Option<ChangePosition>,
}
