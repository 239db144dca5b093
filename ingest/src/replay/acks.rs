//! PubAck bookkeeping shared by the publisher and its connection tasks.
//!
//! A row counts as published once the broker has acknowledged every update of it, and the
//! updates of one row may travel on different connections. [`AckTracker`] therefore counts
//! outstanding updates per row across all connections. It also stores the first connection
//! failure and the time of the last PubAck, so a waiting publisher can stop with an error
//! instead of hanging.
//!
//! Design: the state sits behind a std `Mutex`, because every critical section is a few
//! map operations and none spans an `.await`. Waiters are woken through a `Notify`.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::config::BrokerAddress;
use super::error::ReplayError;
use super::summary::ReplayCounters;

/// Outstanding updates per row, shared across connections.
pub(crate) struct AckTracker {
    state: Mutex<AckState>,
    changed: Notify,
    counters: Arc<ReplayCounters>,
}

struct AckState {
    /// Updates of each row still waiting for a PubAck. A row leaves the map when it reaches 0.
    remaining_by_row: HashMap<u64, usize>,
    outstanding_updates: u64,
    /// Time of the last PubAck, or of the moment updates started waiting after none did.
    last_progress_at: Instant,
    failure: Option<(usize, rumqttc::ConnectionError)>,
}

/// Condition that ends a wait.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WaitTarget {
    /// Return only on a failure or a timeout.
    Failure,
    /// Return also when no update is outstanding.
    AllAcknowledged,
}

impl AckTracker {
    pub fn new(counters: Arc<ReplayCounters>) -> Self {
        Self {
            state: Mutex::new(AckState {
                remaining_by_row: HashMap::new(),
                outstanding_updates: 0,
                last_progress_at: Instant::now(),
                failure: None,
            }),
            changed: Notify::new(),
            counters,
        }
    }

    fn lock(&self) -> MutexGuard<'_, AckState> {
        // A panic while holding the lock leaves only counters behind, which stay usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `updates` updates of `row` are about to be sent.
    pub fn register_row(&self, row: u64, updates: usize) {
        let mut state = self.lock();
        if state.outstanding_updates == 0 {
            // The stall clock starts when something starts waiting, not at the last PubAck.
            state.last_progress_at = Instant::now();
        }
        state.outstanding_updates += updates as u64;
        state.remaining_by_row.insert(row, updates);
    }

    /// Records the PubAck of one update of `row`.
    pub fn acknowledge(&self, row: u64) {
        let mut state = self.lock();
        let Some(remaining) = state.remaining_by_row.get_mut(&row) else {
            return;
        };
        *remaining -= 1;
        if *remaining == 0 {
            state.remaining_by_row.remove(&row);
            self.counters.rows_published.fetch_add(1, Ordering::Relaxed);
        }
        state.outstanding_updates -= 1;
        state.last_progress_at = Instant::now();
        self.counters
            .updates_published
            .fetch_add(1, Ordering::Relaxed);
        drop(state);
        self.changed.notify_waiters();
    }

    /// Stores the error of a failed connection. Only the first failure is kept.
    pub fn fail(&self, connection: usize, error: rumqttc::ConnectionError) {
        let mut state = self.lock();
        if state.failure.is_none() {
            state.failure = Some((connection, error));
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Returns the number of updates sent but not yet acknowledged.
    #[cfg(test)]
    pub fn outstanding_updates(&self) -> u64 {
        self.lock().outstanding_updates
    }

    /// Waits until a connection fails or PubAcks stall for `timeout`, and returns the error.
    ///
    /// Use it in `select!` next to an operation that may block on the broker.
    pub async fn wait_for_failure(&self, broker: &BrokerAddress, timeout: Duration) -> ReplayError {
        loop {
            // With this target, `wait` returns only with an error, so the loop runs once.
            if let Err(error) = self.wait(WaitTarget::Failure, broker, timeout).await {
                return error;
            }
        }
    }

    /// Waits until every registered update has been acknowledged.
    ///
    /// # Errors
    ///
    /// Returns [`ReplayError::Connection`] if a connection failed, and
    /// [`ReplayError::AckTimeout`] if no PubAck arrived for `timeout` while updates waited.
    pub async fn wait_until_acknowledged(
        &self,
        broker: &BrokerAddress,
        timeout: Duration,
    ) -> Result<(), ReplayError> {
        self.wait(WaitTarget::AllAcknowledged, broker, timeout)
            .await
    }

    async fn wait(
        &self,
        target: WaitTarget,
        broker: &BrokerAddress,
        timeout: Duration,
    ) -> Result<(), ReplayError> {
        loop {
            // Register for wake-ups before reading the state, so no notification is lost.
            let mut notified = pin!(self.changed.notified());
            notified.as_mut().enable();

            let deadline = {
                let mut state = self.lock();
                if let Some((connection, source)) = state.failure.take() {
                    return Err(ReplayError::Connection {
                        broker: broker.clone(),
                        connection,
                        source: Box::new(source),
                    });
                }
                if state.outstanding_updates == 0 {
                    if target == WaitTarget::AllAcknowledged {
                        return Ok(());
                    }
                    None
                } else {
                    let deadline = state.last_progress_at + timeout;
                    if Instant::now() >= deadline {
                        return Err(ReplayError::AckTimeout {
                            broker: broker.clone(),
                            timeout,
                            outstanding: state.outstanding_updates,
                        });
                    }
                    Some(deadline)
                }
            };

            match deadline {
                Some(deadline) => {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep_until(deadline) => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> (AckTracker, Arc<ReplayCounters>) {
        let counters = Arc::new(ReplayCounters::default());
        (AckTracker::new(Arc::clone(&counters)), counters)
    }

    #[test]
    fn row_counts_once_all_updates_acked() {
        let (tracker, counters) = tracker();
        tracker.register_row(1, 2);
        tracker.register_row(2, 1);
        assert_eq!(tracker.outstanding_updates(), 3);

        tracker.acknowledge(1);
        assert_eq!(counters.snapshot().rows_published, 0);
        tracker.acknowledge(2);
        tracker.acknowledge(1);

        let snapshot = counters.snapshot();
        assert_eq!(snapshot.rows_published, 2);
        assert_eq!(snapshot.updates_published, 3);
        assert_eq!(tracker.outstanding_updates(), 0);
    }

    #[tokio::test]
    async fn stalled_acks_time_out() {
        let (tracker, _counters) = tracker();
        tracker.register_row(7, 3);
        tracker.acknowledge(7);

        let broker = BrokerAddress::default();
        let timeout = Duration::from_millis(200);
        let error = tracker
            .wait_until_acknowledged(&broker, timeout)
            .await
            .expect_err("two updates never get a PubAck");
        match error {
            ReplayError::AckTimeout {
                outstanding,
                timeout,
                ..
            } => {
                assert_eq!(outstanding, 2);
                assert_eq!(timeout, Duration::from_millis(200));
            }
            other => panic!("expected AckTimeout, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn waiter_wakes_on_last_ack() {
        let (tracker, _counters) = tracker();
        let tracker = Arc::new(tracker);
        tracker.register_row(1, 1);

        let acker = Arc::clone(&tracker);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            acker.acknowledge(1);
        });
        let broker = BrokerAddress::default();
        tracker
            .wait_until_acknowledged(&broker, Duration::from_secs(30))
            .await
            .expect("the PubAck arrives before the timeout");
    }

    #[tokio::test]
    async fn failure_is_returned_to_waiter() {
        let (tracker, _counters) = tracker();
        tracker.register_row(1, 1);
        tracker.fail(3, rumqttc::ConnectionError::NetworkTimeout);

        let broker = BrokerAddress::default();
        let error = tracker
            .wait_for_failure(&broker, Duration::from_secs(30))
            .await;
        assert!(
            matches!(error, ReplayError::Connection { connection: 3, .. }),
            "got {error:?}"
        );
    }
}
