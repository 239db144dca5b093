//! One version of one shadow, the record type of the shadows collection.

use std::cmp::Ordering;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::shadow::{Delta, Shadow, ShadowKey, compute_delta};

/// A shadow as it was after one accepted update, with the facts of that update.
///
/// Design: the shadows collection carries `Arc<ShadowVersion>` so that the operator state, the
/// collection and downstream views share one copy of each document. Equality and order compare
/// `(version, updated_at_ms)` only: within one shadow key a version number is never reused, so
/// two records of the same key are equal exactly when they are the same version.
#[derive(Debug, Serialize, Deserialize)]
pub struct ShadowVersion {
    /// The document after the update.
    pub shadow: Shadow,
    /// When the update was accepted, in milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
    /// `clientToken` of the request that produced this version.
    pub client_token: Option<String>,
    /// The delta of `shadow`, computed on first use and shared by every reader.
    #[serde(skip)]
    delta: OnceLock<Option<Delta>>,
}

impl ShadowVersion {
    /// Wraps the result of an accepted update.
    pub fn new(shadow: Shadow, updated_at_ms: i64, client_token: Option<String>) -> Arc<Self> {
        Arc::new(ShadowVersion {
            shadow,
            updated_at_ms,
            client_token,
            delta: OnceLock::new(),
        })
    }

    /// Returns the shadow's delta, or `None` when desired and reported agree.
    pub fn delta(&self) -> Option<&Delta> {
        self.delta
            .get_or_init(|| compute_delta(&self.shadow))
            .as_ref()
    }

    /// Returns the shadow version number.
    pub fn version(&self) -> u64 {
        self.shadow.version()
    }

    /// Returns the update time in whole seconds, as shadow documents report it.
    pub fn updated_at_s(&self) -> i64 {
        self.updated_at_ms.div_euclid(1000)
    }

    fn identity(&self) -> (u64, i64) {
        (self.shadow.version(), self.updated_at_ms)
    }
}

impl PartialEq for ShadowVersion {
    fn eq(&self, other: &Self) -> bool {
        self.identity() == other.identity()
    }
}

impl Eq for ShadowVersion {}

impl PartialOrd for ShadowVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ShadowVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.identity().cmp(&other.identity())
    }
}

/// A non-empty delta of one shadow version: the record type of the deltas collection.
///
/// Every accepted update produces a new version, so each update whose resulting delta is
/// non-empty inserts exactly one `PendingDelta`, and that insertion is what the service publishes
/// on `/update/delta`. Equality and order follow the shadow version, as for [`ShadowVersion`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingDelta {
    /// The shadow version whose delta this is; the delta itself is `version.delta()`.
    pub version: Arc<ShadowVersion>,
}

impl PendingDelta {
    /// Returns the delta, which is always present because the collection contains only
    /// non-empty deltas.
    pub fn delta(&self) -> Option<&Delta> {
        self.version.delta()
    }
}

impl PartialEq for PendingDelta {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
    }
}

impl Eq for PendingDelta {}

impl PartialOrd for PendingDelta {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PendingDelta {
    fn cmp(&self, other: &Self) -> Ordering {
        self.version.cmp(&other.version)
    }
}

/// A change of the shadows collection: `(key, version)` records with their differences.
pub type ShadowRecord = (ShadowKey, Arc<ShadowVersion>);
