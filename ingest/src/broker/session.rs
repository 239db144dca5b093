//! State of one MQTT session, without network I/O: its subscriptions, the messages waiting for
//! its client, and the QoS 1 messages sent but not yet acknowledged.
//!
//! # Notes
//! - One queue contains the waiting messages of both QoS levels in routing order, so a client
//!   receives each publisher's messages in the order they were published. When the inflight
//!   window is full, a QoS 0 message waits behind the QoS 1 message at the head of the queue.
//! - After a reconnect, the unacknowledged messages are sent again with DUP set, in their
//!   original order, before anything from the queue.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::Publish;

/// A message on its way to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Message {
    /// Topic name, shared by every copy of a routed message.
    pub(crate) topic: Arc<str>,
    /// Payload, shared by every copy of a routed message.
    pub(crate) payload: Bytes,
    /// QoS of this copy: 0 or 1.
    pub(crate) qos: QoS,
    /// Whether the copy is a retained message sent because of a new subscription.
    pub(crate) retain: bool,
}

/// Limits that apply to every session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SessionLimits {
    /// Maximum number of unacknowledged QoS 1 messages, at most 65,535.
    pub(crate) max_inflight: usize,
    /// Queue length at which a QoS 1 message replaces the oldest queued message.
    pub(crate) max_queued_messages: usize,
    /// Queue length at which a QoS 0 message is dropped.
    pub(crate) max_queued_qos0_messages: usize,
}

/// What [`Session::enqueue`] did with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Enqueued {
    /// The message waits in the queue.
    Queued,
    /// The message waits in the queue, and the oldest queued message was dropped for it.
    /// `first` is true for the first such drop of this session.
    QueuedDroppingOldest {
        /// Whether this is the session's first dropped message.
        first: bool,
    },
    /// A QoS 0 message was dropped because the queue was at its QoS 0 limit.
    DroppedQos0,
    /// A QoS 0 message was dropped because the client is offline.
    DroppedOffline,
}

/// Messages taken from a session for its connection to send.
#[derive(Debug, Default)]
pub(crate) struct OutgoingBatch {
    /// PUBLISH packets, in the order to send them.
    pub(crate) packets: Vec<Publish>,
    /// Whether more messages can be sent right away.
    pub(crate) more: bool,
}

/// A QoS 1 message sent (or to be sent again) and not yet acknowledged.
#[derive(Debug)]
struct Inflight {
    packet_id: u16,
    message: Message,
}

/// One client's session.
///
/// Design: `inflight` is in send order, and its first `sent_inflight` entries have been sent
/// on the current connection. The rest were sent on an earlier connection and are sent again
/// with DUP before anything from `queue`.
#[derive(Debug)]
pub(crate) struct Session {
    clean_session: bool,
    /// Subscribed filters as the client wrote them (`$share/...` included), with granted QoS.
    subscriptions: HashMap<String, QoS>,
    queue: VecDeque<Message>,
    inflight: VecDeque<Inflight>,
    sent_inflight: usize,
    next_packet_id: u16,
    has_dropped: bool,
}

/// Returns the lower of two QoS levels.
pub(crate) fn min_qos(first: QoS, second: QoS) -> QoS {
    if (first as u8) <= (second as u8) {
        first
    } else {
        second
    }
}

impl Session {
    /// Creates an empty session; `clean_session` sessions end with their connection.
    pub(crate) fn new(clean_session: bool) -> Self {
        Session {
            clean_session,
            subscriptions: HashMap::new(),
            queue: VecDeque::new(),
            inflight: VecDeque::new(),
            sent_inflight: 0,
            next_packet_id: 1,
            has_dropped: false,
        }
    }

    /// Returns whether the session ends with its connection.
    pub(crate) fn clean_session(&self) -> bool {
        self.clean_session
    }

    /// Subscribed filters with the QoS granted to each.
    pub(crate) fn subscriptions(&self) -> &HashMap<String, QoS> {
        &self.subscriptions
    }

    /// Records a subscription; returns the QoS previously granted to the same filter.
    pub(crate) fn subscribe(&mut self, filter: &str, qos: QoS) -> Option<QoS> {
        self.subscriptions.insert(filter.to_owned(), qos)
    }

    /// Removes a subscription; returns whether it existed.
    pub(crate) fn unsubscribe(&mut self, filter: &str) -> bool {
        self.subscriptions.remove(filter).is_some()
    }

    /// Number of messages waiting to be sent, not counting unacknowledged ones.
    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Number of QoS 1 messages sent and not yet acknowledged.
    #[cfg(test)]
    pub(crate) fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Queues `message` for the client, within `limits`.
    ///
    /// QoS 0 messages are dropped while the client is offline or the queue is at
    /// `max_queued_qos0_messages`. A QoS 1 message always joins the queue, and drops the
    /// oldest queued message when the queue is at `max_queued_messages`.
    pub(crate) fn enqueue(
        &mut self,
        message: Message,
        connected: bool,
        limits: &SessionLimits,
    ) -> Enqueued {
        if message.qos == QoS::AtMostOnce {
            if !connected {
                return Enqueued::DroppedOffline;
            }
            if self.queue.len() >= limits.max_queued_qos0_messages {
                return Enqueued::DroppedQos0;
            }
        }
        let mut outcome = Enqueued::Queued;
        if self.queue.len() >= limits.max_queued_messages {
            self.queue.pop_front();
            outcome = Enqueued::QueuedDroppingOldest {
                first: !self.has_dropped,
            };
            self.has_dropped = true;
        }
        self.queue.push_back(message);
        outcome
    }

    /// Takes the next PUBLISH packets to send: first unacknowledged messages from an earlier
    /// connection (with DUP), then queued messages while the inflight window has room.
    /// Stops once the packets hold `max_bytes` of topic and payload, but always takes at
    /// least one packet when one can be sent.
    pub(crate) fn take_outgoing(
        &mut self,
        limits: &SessionLimits,
        max_bytes: usize,
    ) -> OutgoingBatch {
        let mut batch = OutgoingBatch::default();
        let mut bytes = 0;
        while bytes < max_bytes.max(1) {
            let Some(publish) = self.next_publish(limits) else {
                return batch;
            };
            bytes += publish.topic.len() + publish.payload.len();
            batch.packets.push(publish);
        }
        batch.more = self.can_send(limits);
        batch
    }

    /// Removes the acknowledged message `packet_id`; returns whether it was inflight.
    pub(crate) fn acknowledge(&mut self, packet_id: u16) -> bool {
        let Some(position) = self
            .inflight
            .iter()
            .position(|entry| entry.packet_id == packet_id)
        else {
            return false;
        };
        self.inflight.remove(position);
        if position < self.sent_inflight {
            self.sent_inflight -= 1;
        }
        true
    }

    /// Prepares the session for a new connection: every unacknowledged message is sent again.
    pub(crate) fn resume(&mut self) {
        self.sent_inflight = 0;
    }

    /// Keeps the session for a later connection. Queued QoS 0 messages are dropped, as they
    /// are for an offline client.
    pub(crate) fn suspend(&mut self) {
        self.sent_inflight = 0;
        self.queue.retain(|message| message.qos != QoS::AtMostOnce);
    }

    fn can_send(&self, limits: &SessionLimits) -> bool {
        if self.sent_inflight < self.inflight.len() {
            return true;
        }
        match self.queue.front() {
            None => false,
            Some(message) if message.qos == QoS::AtMostOnce => true,
            Some(_) => self.inflight.len() < limits.max_inflight,
        }
    }

    fn next_publish(&mut self, limits: &SessionLimits) -> Option<Publish> {
        if let Some(entry) = self.inflight.get(self.sent_inflight) {
            self.sent_inflight += 1;
            let mut publish = to_publish(&entry.message, entry.packet_id);
            publish.dup = true;
            return Some(publish);
        }
        if !self.can_send(limits) {
            return None;
        }
        let message = self.queue.pop_front()?;
        if message.qos == QoS::AtMostOnce {
            return Some(to_publish(&message, 0));
        }
        let packet_id = self.allocate_packet_id();
        let publish = to_publish(&message, packet_id);
        self.inflight.push_back(Inflight { packet_id, message });
        self.sent_inflight += 1;
        Some(publish)
    }

    /// Returns the next packet id not in use, from 1 to 65,535.
    ///
    /// # Panics
    /// Panics if all 65,535 ids are in use, which `max_inflight` (at most 65,535) prevents:
    /// callers only allocate while the window has room.
    fn allocate_packet_id(&mut self) -> u16 {
        for _ in 0..u16::MAX {
            let packet_id = self.next_packet_id;
            self.next_packet_id = packet_id.checked_add(1).unwrap_or(1);
            if !self
                .inflight
                .iter()
                .any(|entry| entry.packet_id == packet_id)
            {
                return packet_id;
            }
        }
        panic!("all 65,535 packet ids are in use although the inflight window is not full");
    }
}

fn to_publish(message: &Message, packet_id: u16) -> Publish {
    Publish {
        dup: false,
        qos: message.qos,
        retain: message.retain,
        topic: message.topic.to_string(),
        pkid: packet_id,
        payload: message.payload.clone(),
    }
}
