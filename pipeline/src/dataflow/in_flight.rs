//! Counting requests in flight per thing, for the optional in-flight limit.
//!
//! A request is in flight from the moment an ingest task admits it until the dataflow delivers
//! its outcome. Ingest calls [`InFlight::try_acquire`] before sending a request; the outputs call
//! [`InFlight::release`] when its outcome has been delivered.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Requests in flight per thing, with a limit.
#[derive(Debug)]
pub struct InFlight {
    limit: u32,
    // A std Mutex: held only to change one counter, never across an await.
    counts: Mutex<HashMap<String, u32>>,
}

impl InFlight {
    /// Creates a registry that admits at most `limit` requests in flight per thing.
    pub fn new(limit: u32) -> Self {
        InFlight {
            limit,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Admits one more request for `thing`, or returns false when it already has `limit`.
    pub fn try_acquire(&self, thing: &str) -> bool {
        let mut counts = self.lock();
        let count = counts.entry(thing.to_owned()).or_insert(0);
        if *count >= self.limit {
            return false;
        }
        *count += 1;
        true
    }

    /// Marks one request of `thing` as responded to.
    pub fn release(&self, thing: &str) {
        let mut counts = self.lock();
        if let Some(count) = counts.get_mut(thing) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(thing);
            }
        }
    }

    /// Returns the number of requests of `thing` in flight.
    pub fn count(&self, thing: &str) -> u32 {
        self.lock().get(thing).copied().unwrap_or(0)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, u32>> {
        // Counters stay valid if a holder panicked, so recover from poison.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_admits_until_released() {
        let in_flight = InFlight::new(2);
        assert!(in_flight.try_acquire("lamp"));
        assert!(in_flight.try_acquire("lamp"));
        assert!(
            !in_flight.try_acquire("lamp"),
            "a third request exceeds the limit"
        );
        assert!(
            in_flight.try_acquire("pump"),
            "other things have their own count"
        );
        in_flight.release("lamp");
        assert!(in_flight.try_acquire("lamp"));
        assert_eq!(in_flight.count("lamp"), 2);
    }

    #[test]
    fn release_without_acquire_is_harmless() {
        let in_flight = InFlight::new(1);
        in_flight.release("lamp");
        assert_eq!(in_flight.count("lamp"), 0);
        assert!(in_flight.try_acquire("lamp"));
    }
}
