//! State shared by the accept loop and every connection task.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use super::auth::Authorizer;
use super::config::EmbeddedBrokerConfig;
use super::flow::{FlowControlLimits, LongPauseLog};
use super::local::LocalSubscription;
use super::metrics::Counters;
use super::router::Router;
use super::session::SessionLimits;

/// Limits that each connection checks on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConnectionLimits {
    /// Largest PUBLISH payload accepted, in bytes.
    pub(crate) max_payload_bytes: usize,
    /// Largest remaining length of an incoming packet, in bytes.
    pub(crate) max_packet_bytes: usize,
    /// Time a new connection has to send CONNECT.
    pub(crate) connect_timeout: Duration,
    /// Time a congested subscriber may go without progress before it is disconnected.
    pub(crate) slow_subscriber_timeout: Duration,
}

/// Router, counters, authorizer and limits of one broker.
pub(crate) struct Shared {
    /// All routing state behind one std `Mutex`, not an actor task. Each operation is short
    /// (a walk of the subscription tree and some queue pushes) and never waits on I/O or
    /// `.await`, so a std lock is cheaper than a message hop. Routing under the lock also
    /// means a publisher's PUBACK goes out only after its message sits in every subscriber's
    /// session queue, and each publisher's messages enter every queue in publish order.
    router: Mutex<Router>,
    /// Counters, updated without the lock.
    pub(crate) counters: Arc<Counters>,
    /// Decides what each client may do.
    pub(crate) authorizer: Arc<dyn Authorizer>,
    /// Limits checked by each connection.
    pub(crate) limits: ConnectionLimits,
    /// Rate limit of the WARN line about publishers paused for a long time.
    pub(crate) long_pause_log: LongPauseLog,
    /// The subscriber inside this process, once registered.
    pub(crate) local_subscription: OnceLock<LocalSubscription>,
}

impl Shared {
    /// Creates the shared state for a broker with `config`, which must be valid.
    pub(crate) fn new(config: &EmbeddedBrokerConfig, authorizer: Arc<dyn Authorizer>) -> Self {
        let counters = Arc::new(Counters::default());
        let session_limits = SessionLimits {
            max_inflight: config.max_inflight,
            max_queued_messages: config.max_queued_messages,
            max_queued_qos0_messages: config.max_queued_qos0_messages,
        };
        let flow_limits = FlowControlLimits::new(config.flow_control_high_messages);
        let router = Router::new(session_limits, flow_limits, Arc::clone(&counters));
        Shared {
            router: Mutex::new(router),
            counters,
            authorizer,
            limits: ConnectionLimits {
                max_payload_bytes: config.max_payload_bytes,
                max_packet_bytes: config.max_packet_bytes(),
                connect_timeout: config.connect_timeout(),
                slow_subscriber_timeout: config.slow_subscriber_timeout(),
            },
            long_pause_log: LongPauseLog::default(),
            local_subscription: OnceLock::new(),
        }
    }

    /// Locks the router.
    ///
    /// A panic while the lock was held would poison it. The broker keeps serving with the
    /// state as the panic left it rather than failing every later client.
    pub(crate) fn router(&self) -> MutexGuard<'_, Router> {
        self.router.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
