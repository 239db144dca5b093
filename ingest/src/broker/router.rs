//! The router: every session, the subscription index and the retained messages, and the
//! routing of each published message to the sessions that subscribed to it.
//!
//! The router does no network I/O. It wakes a connection through its [`ConnectionSignals`]
//! when the connection has messages to send or has been replaced, and the connection then
//! takes its messages with [`Router::take_outgoing`].
//!
//! # Notes
//! - A message reaches each matching session once, at the lower of the published QoS and
//!   the highest QoS granted to that session's matching subscriptions. Each share group that
//!   matches adds one copy for one of its members.
//! - Retained messages are sent to plain subscriptions only, not to share groups (as in
//!   MQTT 5 shared subscriptions), and are found by testing every retained topic.
//! - Persistent sessions never expire; they end when the client connects again with clean
//!   session set.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::SubscribeReasonCode;

use super::link::{ConnectRequest, ConnectionSignals, SessionHandle, SessionTakenOver};
use super::metrics::Counters;
use super::session::{Enqueued, Message, OutgoingBatch, Session, SessionLimits, min_qos};
use super::topic;
use super::tree::{ClientId, SubscriptionTree};

/// A connection attached to a session.
#[derive(Debug)]
struct Link {
    connection_id: u64,
    signals: Arc<ConnectionSignals>,
    will: Option<Message>,
}

#[derive(Debug)]
struct SessionEntry {
    session: Session,
    link: Option<Link>,
}

/// All routing state of the broker.
#[derive(Debug)]
pub(crate) struct Router {
    sessions: HashMap<ClientId, SessionEntry>,
    subscriptions: SubscriptionTree,
    retained: HashMap<Arc<str>, Message>,
    limits: SessionLimits,
    counters: Arc<Counters>,
}

impl Router {
    /// Creates a router with no sessions.
    pub(crate) fn new(limits: SessionLimits, counters: Arc<Counters>) -> Self {
        Router {
            sessions: HashMap::new(),
            subscriptions: SubscriptionTree::default(),
            retained: HashMap::new(),
            limits,
            counters,
        }
    }

    /// Attaches a new connection to its session and returns whether a stored persistent
    /// session was resumed (CONNACK session present).
    ///
    /// A connection that owns the session already gets the signal to close, and its will is
    /// published. A clean-session request, or a stored clean session, starts a new session.
    pub(crate) fn connect(&mut self, request: ConnectRequest) -> bool {
        let client_id = Arc::clone(&request.handle.client_id);
        let mut replaced_will = None;
        let mut resumed = None;
        if let Some(mut entry) = self.sessions.remove(&client_id) {
            if let Some(old) = entry.link.take() {
                old.signals.replaced.notify_one();
                replaced_will = old.will;
                tracing::debug!(client_id = %client_id, old_connection = old.connection_id,
                    "client id reused; closing the older connection");
            }
            if request.clean_session || entry.session.clean_session() {
                self.remove_subscriptions(&client_id, &entry.session);
            } else {
                entry.session.resume();
                resumed = Some(entry.session);
            }
        }
        let session_present = resumed.is_some();
        let session = resumed.unwrap_or_else(|| Session::new(request.clean_session));
        let link = Link {
            connection_id: request.handle.connection_id,
            signals: request.signals,
            will: request.will,
        };
        self.sessions.insert(
            client_id,
            SessionEntry {
                session,
                link: Some(link),
            },
        );
        if let Some(will) = replaced_will {
            self.publish(will);
        }
        session_present
    }

    /// Detaches the connection `handle` from its session, unless another connection took the
    /// session over. Publishes the will when `publish_will` is set, ends a clean session and
    /// keeps a persistent one.
    pub(crate) fn disconnect(&mut self, handle: &SessionHandle, publish_will: bool) {
        let Some(entry) = self.sessions.get_mut(&handle.client_id) else {
            return;
        };
        if !is_linked(entry, handle) {
            return;
        }
        let will = entry.link.take().and_then(|link| link.will);
        if entry.session.clean_session() {
            if let Some(entry) = self.sessions.remove(&handle.client_id) {
                self.remove_subscriptions(&handle.client_id, &entry.session);
            }
        } else {
            // TODO: expire offline persistent sessions. Until then each one keeps its
            // subscriptions and up to `max_queued_messages` messages until its client connects
            // again with clean session set.
            entry.session.suspend();
        }
        if let (true, Some(will)) = (publish_will, will) {
            self.publish(will);
        }
    }

    /// Subscribes the session of `handle` to `filter` and returns the SUBACK return code.
    ///
    /// QoS 2 is granted as QoS 1. Matching retained messages are queued for the client.
    ///
    /// # Errors
    /// Returns [`SessionTakenOver`] when `handle` no longer owns its session.
    pub(crate) fn subscribe(
        &mut self,
        handle: &SessionHandle,
        filter: &str,
        requested: QoS,
    ) -> Result<SubscribeReasonCode, SessionTakenOver> {
        let entry = self.linked_entry(handle)?;
        let Some(spec) = topic::parse_filter(filter) else {
            tracing::debug!(client_id = %handle.client_id, filter,
                "rejecting invalid topic filter");
            return Ok(SubscribeReasonCode::Failure);
        };
        let granted = min_qos(requested, QoS::AtLeastOnce);
        entry.session.subscribe(filter, granted);
        self.subscriptions.insert(spec, &handle.client_id, granted);
        if spec.group.is_none() {
            self.send_retained(&handle.client_id, spec.filter, granted);
        }
        Ok(SubscribeReasonCode::Success(granted))
    }

    /// Removes the subscriptions of `handle`'s session to `filters`; unknown filters are
    /// ignored, as MQTT 3.1.1 requires.
    ///
    /// # Errors
    /// Returns [`SessionTakenOver`] when `handle` no longer owns its session.
    pub(crate) fn unsubscribe(
        &mut self,
        handle: &SessionHandle,
        filters: &[String],
    ) -> Result<(), SessionTakenOver> {
        let entry = self.linked_entry(handle)?;
        let removed: Vec<&String> = filters
            .iter()
            .filter(|filter| entry.session.unsubscribe(filter))
            .collect();
        for spec in removed
            .into_iter()
            .filter_map(|filter| topic::parse_filter(filter))
        {
            self.subscriptions.remove(spec, &handle.client_id);
        }
        Ok(())
    }

    /// Publishes a message that `handle`'s client sent.
    ///
    /// # Errors
    /// Returns [`SessionTakenOver`] when `handle` no longer owns its session; the message is
    /// then not routed.
    pub(crate) fn publish_from(
        &mut self,
        handle: &SessionHandle,
        message: Message,
    ) -> Result<(), SessionTakenOver> {
        self.linked_entry(handle)?;
        self.publish(message);
        Ok(())
    }

    /// Stores or clears the retained message when `message.retain` is set, then routes the
    /// message to every matching session. An empty retained payload clears the topic's
    /// retained message and is still routed.
    pub(crate) fn publish(&mut self, message: Message) {
        if message.retain {
            if message.payload.is_empty() {
                self.retained.remove(&message.topic);
            } else {
                // NOTE: the retained store has no bound on its number of topics; each topic
                // keeps one message of up to `max_payload_bytes`.
                self.retained
                    .insert(Arc::clone(&message.topic), message.clone());
            }
        }
        self.route(message);
    }

    /// Frees the inflight slot of the acknowledged message `packet_id`. An unknown packet id
    /// is ignored.
    ///
    /// # Errors
    /// Returns [`SessionTakenOver`] when `handle` no longer owns its session.
    pub(crate) fn acknowledge(
        &mut self,
        handle: &SessionHandle,
        packet_id: u16,
    ) -> Result<(), SessionTakenOver> {
        let entry = self.linked_entry(handle)?;
        if !entry.session.acknowledge(packet_id) {
            tracing::debug!(client_id = %handle.client_id, packet_id,
                "ignoring PUBACK for unknown packet id");
        }
        Ok(())
    }

    /// Takes the next messages for `handle`'s connection to send, up to about `max_bytes`.
    ///
    /// # Errors
    /// Returns [`SessionTakenOver`] when `handle` no longer owns its session.
    pub(crate) fn take_outgoing(
        &mut self,
        handle: &SessionHandle,
        max_bytes: usize,
    ) -> Result<OutgoingBatch, SessionTakenOver> {
        let limits = self.limits;
        let entry = self.linked_entry(handle)?;
        let batch = entry.session.take_outgoing(&limits, max_bytes);
        Counters::add(&self.counters.messages_sent, batch.packets.len() as u64);
        Ok(batch)
    }

    /// Returns the session of `client_id`, connected or not.
    #[cfg(test)]
    pub(crate) fn session(&self, client_id: &str) -> Option<&Session> {
        self.sessions.get(client_id).map(|entry| &entry.session)
    }

    /// Number of retained messages stored.
    #[cfg(test)]
    pub(crate) fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// Returns whether no session has any subscription.
    #[cfg(test)]
    pub(crate) fn has_no_subscriptions(&self) -> bool {
        self.subscriptions.is_empty()
    }

    fn linked_entry(
        &mut self,
        handle: &SessionHandle,
    ) -> Result<&mut SessionEntry, SessionTakenOver> {
        match self.sessions.get_mut(&handle.client_id) {
            Some(entry) if is_linked(entry, handle) => Ok(entry),
            _ => Err(SessionTakenOver),
        }
    }

    fn route(&mut self, message: Message) {
        // Highest granted QoS per plain subscriber, then one member per matching share group.
        let mut targets: HashMap<ClientId, QoS> = HashMap::new();
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
                    match targets.entry(Arc::clone(client_id)) {
                        Entry::Occupied(mut highest) => {
                            *highest.get_mut() = max_qos(*highest.get(), qos)
                        }
                        Entry::Vacant(slot) => {
                            slot.insert(qos);
                        }
                    }
                }
                group_targets.extend(
                    subscribers
                        .groups
                        .values()
                        .filter_map(|group| group.choose(is_connected)),
                );
            });
        for (client_id, granted) in targets.into_iter().chain(group_targets) {
            let copy = Message {
                qos: min_qos(message.qos, granted),
                retain: false,
                ..message.clone()
            };
            self.deliver(&client_id, copy);
        }
    }

    fn send_retained(&mut self, client_id: &str, filter: &str, granted: QoS) {
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

    fn deliver(&mut self, client_id: &str, message: Message) {
        let Some(entry) = self.sessions.get_mut(client_id) else {
            return;
        };
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
            Enqueued::DroppedOffline => return,
        }
        if let Some(link) = &entry.link {
            link.signals.outgoing.notify_one();
        }
    }

    fn remove_subscriptions(&mut self, client_id: &str, session: &Session) {
        for filter in session.subscriptions().keys() {
            if let Some(spec) = topic::parse_filter(filter) {
                self.subscriptions.remove(spec, client_id);
            }
        }
    }
}

fn is_linked(entry: &SessionEntry, handle: &SessionHandle) -> bool {
    entry
        .link
        .as_ref()
        .is_some_and(|link| link.connection_id == handle.connection_id)
}

fn max_qos(first: QoS, second: QoS) -> QoS {
    if (first as u8) >= (second as u8) {
        first
    } else {
        second
    }
}
