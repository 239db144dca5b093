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
//! - A QoS 1 message that leaves a connected session's queue at or above the flow-control
//!   high-water mark makes the session congested. [`Router::publish_from`] returns the
//!   congested sessions the message went to, other than the publisher's own, for the
//!   publisher's connection to wait for. Congestion ends when [`Router::take_outgoing`]
//!   leaves the queue at the low-water mark or below, or when the connection detaches.

use std::collections::HashMap;
use std::sync::Arc;

use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::SubscribeReasonCode;

use super::flow::{CongestedSession, FlowControlLimits};
use super::link::{ConnectRequest, ConnectionSignals, SessionHandle, SessionTakenOver};
use super::metrics::Counters;
use super::session::{Message, OutgoingBatch, Session, SessionLimits, min_qos};
use super::topic;
use super::tree::{ClientId, SubscriptionTree};

mod routing;

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
    flow_limits: FlowControlLimits,
    counters: Arc<Counters>,
}

impl Router {
    /// Creates a router with no sessions.
    pub(crate) fn new(
        limits: SessionLimits,
        flow_limits: FlowControlLimits,
        counters: Arc<Counters>,
    ) -> Self {
        Router {
            sessions: HashMap::new(),
            subscriptions: SubscriptionTree::default(),
            retained: HashMap::new(),
            limits,
            flow_limits,
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
                old.signals.congestion.release();
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
        let will = entry.link.take().and_then(|link| {
            link.signals.congestion.release();
            link.will
        });
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

    /// Publishes a message that `handle`'s client sent, and returns the congested sessions
    /// that its connection must wait for before it handles further packets.
    ///
    /// # Errors
    /// Returns [`SessionTakenOver`] when `handle` no longer owns its session; the message is
    /// then not routed.
    pub(crate) fn publish_from(
        &mut self,
        handle: &SessionHandle,
        message: Message,
    ) -> Result<Vec<CongestedSession>, SessionTakenOver> {
        self.linked_entry(handle)?;
        self.store_retained(&message);
        Ok(self.route(message, Some(&handle.client_id)))
    }

    /// Publishes a message from a publisher inside this process, and returns the congested
    /// sessions that got a QoS 1 copy, which the publisher must wait for.
    pub(crate) fn publish_local(&mut self, message: Message) -> Vec<CongestedSession> {
        self.store_retained(&message);
        self.route(message, None)
    }

    /// Publishes a message that no client's connection waits for, such as a will.
    pub(crate) fn publish(&mut self, message: Message) {
        self.store_retained(&message);
        self.route(message, None);
    }

    /// Stores or clears the retained message when `message.retain` is set. An empty retained
    /// payload clears the topic's retained message, and is still routed.
    fn store_retained(&mut self, message: &Message) {
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
    /// Ends the session's congestion once its queue is down to the low-water mark.
    ///
    /// # Errors
    /// Returns [`SessionTakenOver`] when `handle` no longer owns its session.
    pub(crate) fn take_outgoing(
        &mut self,
        handle: &SessionHandle,
        max_bytes: usize,
    ) -> Result<OutgoingBatch, SessionTakenOver> {
        let limits = self.limits;
        let low_messages = self.flow_limits.low_messages;
        let entry = self.linked_entry(handle)?;
        let batch = entry.session.take_outgoing(&limits, max_bytes);
        if entry.session.queued() <= low_messages
            && let Some(link) = &entry.link
        {
            link.signals.congestion.release();
        }
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
