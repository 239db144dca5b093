//! Counters of the embedded broker, updated without locks and read as one [`BrokerMetrics`].

use std::sync::atomic::{AtomicU64, Ordering};

/// Counter values of the embedded broker at one moment. Every count is since the broker
/// started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BrokerMetrics {
    /// Connections accepted below `max_connections`.
    pub connections_accepted: u64,
    /// Connections closed right after accept because `max_connections` were open.
    pub connections_rejected: u64,
    /// Connections open now, including ones that have not sent CONNECT yet.
    pub connections_active: u64,
    /// PUBLISH packets received from clients.
    pub messages_received: u64,
    /// PUBLISH packets sent to clients, retransmissions included.
    pub messages_sent: u64,
    /// QoS 0 messages dropped because the subscriber's queue had reached
    /// `max_queued_qos0_messages`.
    pub qos0_dropped: u64,
    /// Queued messages dropped, oldest first, because a session's queue had reached
    /// `max_queued_messages`.
    pub queued_dropped: u64,
    /// Connections closed because the client broke the protocol.
    pub protocol_errors: u64,
    /// Times a publisher's connection paused reading because a QoS 1 message left a
    /// connected subscriber's queue at or above `flow_control_high_messages`.
    pub flow_control_pauses: u64,
    /// Subscribers disconnected because their queue stayed at or above
    /// `flow_control_high_messages` without progress for `slow_subscriber_timeout_ms`.
    pub slow_subscriber_disconnects: u64,
}

/// The live counters behind [`BrokerMetrics`], shared by the router and every connection.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_rejected: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    pub(crate) messages_sent: AtomicU64,
    pub(crate) qos0_dropped: AtomicU64,
    pub(crate) queued_dropped: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) flow_control_pauses: AtomicU64,
    pub(crate) slow_subscriber_disconnects: AtomicU64,
}

impl Counters {
    /// Adds `count` to `counter`.
    pub(crate) fn add(counter: &AtomicU64, count: u64) {
        counter.fetch_add(count, Ordering::Relaxed);
    }

    /// Reads every counter; `connections_active` comes from the caller, who owns the
    /// connection slots.
    pub(crate) fn snapshot(&self, connections_active: u64) -> BrokerMetrics {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        BrokerMetrics {
            connections_accepted: read(&self.connections_accepted),
            connections_rejected: read(&self.connections_rejected),
            connections_active,
            messages_received: read(&self.messages_received),
            messages_sent: read(&self.messages_sent),
            qos0_dropped: read(&self.qos0_dropped),
            queued_dropped: read(&self.queued_dropped),
            protocol_errors: read(&self.protocol_errors),
            flow_control_pauses: read(&self.flow_control_pauses),
            slow_subscriber_disconnects: read(&self.slow_subscriber_disconnects),
        }
    }
}
