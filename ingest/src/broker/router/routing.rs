//! Routing of one message to the sessions whose subscriptions match its topic, and the
//! queuing of each copy in its session.

use std::sync::Arc;

use rumqttc::mqttbytes::QoS;

use super::Router;
use crate::broker::flow::{CongestedSession, Congestion};
use crate::broker::metrics::Counters;
use crate::broker::session::{Enqueued, Message, min_qos};
use crate::broker::topic;
use crate::broker::tree::ClientId;

impl Router {
    /// Routes `message` to every matching session and returns the congested sessions that
    /// `publisher` must wait for: connected ones other than its own that got a QoS 1 copy.
    pub(super) fn route(
        &mut self,
        message: Message,
        publisher: Option<&str>,
    ) -> Vec<CongestedSession> {
        // Highest granted QoS per plain subscriber, then one member per matching share group.
        // A message usually matches a handful of subscriptions, so a `Vec` with a linear
        // search beats a `HashMap` (no hashing, one small allocation). Past
        // `LINEAR_DEDUP_LIMIT` targets the duplicates are merged by sorting instead.
        let mut targets: Vec<(ClientId, QoS)> = Vec::new();
        let mut group_targets: Vec<(ClientId, QoS)> = Vec::new();
        let sessions = &self.sessions;
        let is_connected = |client_id: &str| {
            sessions
                .get(client_id)
                .is_some_and(|entry| entry.link.is_some())
        };
        self.subscriptions
            .for_each_match(&message.topic, &mut |subscribers| {
                for (client_id, &qos) in &subscribers.clients {
                    add_target(&mut targets, client_id, qos);
                }
                group_targets.extend(
                    subscribers
                        .groups
                        .values()
                        .filter_map(|group| group.choose(is_connected)),
                );
            });
        if targets.len() > LINEAR_DEDUP_LIMIT {
            merge_duplicates(&mut targets);
        }
        let mut congested = Vec::new();
        for (client_id, granted) in targets.into_iter().chain(group_targets) {
            let copy = Message {
                qos: min_qos(message.qos, granted),
                retain: false,
                ..message.clone()
            };
            let congestion = self.deliver(&client_id, copy);
            if let Some(congestion) = congestion
                && publisher != Some(&*client_id)
            {
                congested.push(CongestedSession::new(client_id, &congestion));
            }
        }
        congested
    }

    pub(super) fn send_retained(&mut self, client_id: &str, filter: &str, granted: QoS) {
        let matching: Vec<Message> = self
            .retained
            .values()
            .filter(|retained| topic::matches(filter, &retained.topic))
            .map(|retained| Message {
                qos: min_qos(retained.qos, granted),
                retain: true,
                ..retained.clone()
            })
            .collect();
        for message in matching {
            self.deliver(client_id, message);
        }
    }

    /// Queues `message` for `client_id`'s session and wakes its connection. Returns the
    /// session's congestion when the message is a QoS 1 copy for a connected session that
    /// is congested now.
    fn deliver(&mut self, client_id: &str, message: Message) -> Option<Arc<Congestion>> {
        let entry = self.sessions.get_mut(client_id)?;
        let is_qos1 = message.qos == QoS::AtLeastOnce;
        let connected = entry.link.is_some();
        let outcome = entry.session.enqueue(message, connected, &self.limits);
        match outcome {
            Enqueued::Queued => {}
            Enqueued::QueuedDroppingOldest { first } => {
                Counters::add(&self.counters.queued_dropped, 1);
                if first {
                    tracing::warn!(
                        client_id,
                        max_queued_messages = self.limits.max_queued_messages,
                        "session queue full; dropping its oldest messages, and counting later drops"
                    );
                }
            }
            Enqueued::DroppedQos0 => Counters::add(&self.counters.qos0_dropped, 1),
            Enqueued::DroppedOffline => return None,
        }
        let link = entry.link.as_ref()?;
        link.signals.outgoing.notify_one();
        if !is_qos1 {
            return None;
        }
        let congestion = &link.signals.congestion;
        if entry.session.queued() >= self.flow_limits.high_messages {
            congestion.activate();
        }
        congestion.is_active().then(|| Arc::clone(congestion))
    }
}

/// Targets up to which [`add_target`] searches for an earlier subscription of the same client;
/// beyond it, it appends and [`merge_duplicates`] merges them afterwards.
const LINEAR_DEDUP_LIMIT: usize = 16;

/// Adds `client_id` with `qos` to `targets`, or raises the QoS of its earlier entry.
fn add_target(targets: &mut Vec<(ClientId, QoS)>, client_id: &ClientId, qos: QoS) {
    if targets.len() <= LINEAR_DEDUP_LIMIT
        && let Some((_, highest)) = targets.iter_mut().find(|(known, _)| known == client_id)
    {
        *highest = max_qos(*highest, qos);
        return;
    }
    targets.push((Arc::clone(client_id), qos));
}

/// Merges the entries of each client into one with the highest QoS.
fn merge_duplicates(targets: &mut Vec<(ClientId, QoS)>) {
    targets.sort_by(|first, second| first.0.cmp(&second.0));
    targets.dedup_by(|later, kept| {
        if later.0 == kept.0 {
            kept.1 = max_qos(kept.1, later.1);
            true
        } else {
            false
        }
    });
}

fn max_qos(first: QoS, second: QoS) -> QoS {
    if (first as u8) >= (second as u8) {
        first
    } else {
        second
    }
}
