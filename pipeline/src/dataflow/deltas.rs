//! The `Delta: Pending` operator: the collection of non-empty deltas, derived from shadows.

use differential_dataflow::VecCollection;

use super::Time;
use super::version::{PendingDelta, ShadowRecord};
use crate::shadow::ShadowKey;

/// Derives pending deltas from the shadows collection.
pub trait PendingDeltas<'scope> {
    /// Returns the collection of shadow versions whose desired state differs from reported.
    ///
    /// The collection changes incrementally with the shadows: an update retracts the delta of the
    /// version it replaced and inserts the delta of the new version, if either is non-empty.
    fn pending_deltas(self) -> VecCollection<'scope, Time, (ShadowKey, PendingDelta), isize>;
}

impl<'scope> PendingDeltas<'scope> for VecCollection<'scope, Time, ShadowRecord, isize> {
    fn pending_deltas(self) -> VecCollection<'scope, Time, (ShadowKey, PendingDelta), isize> {
        self.flat_map(|(key, version)| {
            version
                .delta()
                .is_some()
                .then(|| (key, PendingDelta { version }))
        })
    }
}
