//! In-process publishing into and subscribing to the embedded broker, for a service that runs
//! in the same process as its broker.
//!
//! A [`LocalPublisher`] routes a message straight into the broker's subscriber sessions, as a
//! PUBLISH from a connected client would be routed, but without a TCP connection, packet
//! encoding, decoding or PUBACK. `shadowflow serve` publishes its responses this way when it
//! runs the embedded broker.
//!
//! A [`LocalSubscriber`] receives the messages that connected clients publish on its topic
//! filters straight from their connection tasks. `shadowflow serve` takes its requests this
//! way when it runs the embedded broker.
//!
//! # Notes
//! - Flow control matches that of a connected publisher: when a QoS 1 copy lands in a
//!   congested session, [`LocalPublisher::publish`] blocks the calling thread until that
//!   session drains to its low-water mark, loses its connection, or
//!   `slow_subscriber_timeout_ms` passes. Call it from a plain thread, never from an async
//!   task.
//! - Messages published by one thread reach each subscriber in the order that thread
//!   published them.
//! - A local subscriber gets each matching message at the publisher's QoS, once, after the
//!   connected subscribers got their copies. The publisher's connection awaits the
//!   subscriber's [`Delivery`] before it sends the PUBACK and before it handles the client's
//!   next PUBLISH, so a subscriber that takes messages slowly slows its publishers down, and
//!   each publisher's messages reach it in the order they were published. Meanwhile the
//!   connection keeps writing to its client and handles its PUBACK and PINGREQ packets.
//! - NOTE: a hand-over has no timeout. A local subscriber that never takes a message stalls
//!   its publishers' connections until it takes the message or the broker shuts down, where
//!   a stalled connected subscriber is disconnected after `slow_subscriber_timeout_ms`.
//! - Only PUBLISH packets of connected clients reach a local subscriber: not wills, not
//!   retained messages, and not messages of a [`LocalPublisher`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::mqttbytes::QoS;

use super::flow::CongestedSession;
use super::metrics::Counters;
use super::session::Message;
use super::shared::Shared;
use super::topic;

/// Pause between two checks of a congested session while a publish waits for it to drain.
const DRAIN_POLL: Duration = Duration::from_micros(500);

/// A message that the broker rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalPublishError {
    /// The topic is empty, contains a wildcard or a NUL character.
    #[error("invalid topic name {topic:?}: it must be non-empty and contain no '+', '#' or NUL")]
    InvalidTopic {
        /// The topic as given.
        topic: String,
    },

    /// The payload exceeds `max_payload_bytes` of the broker.
    #[error("payload of {size} bytes on {topic} exceeds the broker's limit of {max} bytes")]
    PayloadTooLarge {
        /// The topic of the message.
        topic: String,
        /// Payload size in bytes.
        size: usize,
        /// The broker's limit in bytes.
        max: usize,
    },
}

/// The hand-over of one message to a [`LocalSubscriber`], which the publisher's connection
/// awaits.
pub type Delivery = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A subscriber inside the broker's process, registered with
/// [`EmbeddedBroker::subscribe_local`](super::EmbeddedBroker::subscribe_local).
pub trait LocalSubscriber: Send + Sync {
    /// Takes one message that a connected client published on a topic that matches one of the
    /// subscriber's filters. Returns `None` when the message has been handled, or the
    /// [`Delivery`] that the publisher's connection must await before it goes on.
    fn deliver(&self, topic: &str, payload: &Bytes) -> Option<Delivery>;
}

/// A [`LocalSubscriber`] with its topic filters.
pub(crate) struct LocalSubscription {
    filters: Vec<String>,
    subscriber: Arc<dyn LocalSubscriber>,
}

impl LocalSubscription {
    pub(crate) fn new(filters: Vec<String>, subscriber: Arc<dyn LocalSubscriber>) -> Self {
        LocalSubscription {
            filters,
            subscriber,
        }
    }

    /// Hands `payload` to the subscriber when `topic` matches one of its filters.
    pub(crate) fn deliver(&self, topic: &str, payload: &Bytes) -> Option<Delivery> {
        if self
            .filters
            .iter()
            .any(|filter| topic::matches(filter, topic))
        {
            self.subscriber.deliver(topic, payload)
        } else {
            None
        }
    }
}

/// Publishes messages into a running embedded broker from the same process. Cheap to clone.
#[derive(Clone)]
pub struct LocalPublisher {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LocalPublisher {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LocalPublisher")
            .finish_non_exhaustive()
    }
}

impl LocalPublisher {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        LocalPublisher { shared }
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Routes one message, not retained, to every matching subscription, at the lower of
    /// `qos` and each subscription's QoS. Blocks while a subscriber that receives a QoS 1
    /// copy is congested (see the module notes).
    ///
    /// # Errors
    /// Returns [`LocalPublishError`] for an invalid topic or a payload above the broker's
    /// limit; the message is then not routed.
    pub fn publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        qos: QoS,
    ) -> Result<(), LocalPublishError> {
        let congested = self.route(topic, payload, qos)?;
        if congested.is_empty() {
            return Ok(());
        }

        // Wait like a paused connection would, but on this thread: poll each session until it
        // drains or the slow-subscriber timeout, after which the broker disconnects it anyway.
        let deadline = Instant::now() + self.shared.limits.slow_subscriber_timeout;
        for session in &congested {
            while !session.has_drained() && Instant::now() < deadline {
                std::thread::sleep(DRAIN_POLL);
            }
        }
        Ok(())
    }

    /// Routes one message like [`publish`](Self::publish), but returns at once, also when a
    /// subscriber is congested. For a rare message sent from an async task, such as a
    /// rejection.
    ///
    /// # Errors
    /// Returns [`LocalPublishError`] for an invalid topic or a payload above the broker's
    /// limit; the message is then not routed.
    pub fn publish_without_waiting(
        &self,
        topic: &str,
        payload: Vec<u8>,
        qos: QoS,
    ) -> Result<(), LocalPublishError> {
        self.route(topic, payload, qos).map(drop)
    }

    fn route(
        &self,
        topic: &str,
        payload: Vec<u8>,
        qos: QoS,
    ) -> Result<Vec<CongestedSession>, LocalPublishError> {
        if !topic::is_valid_topic(topic) {
            return Err(LocalPublishError::InvalidTopic {
                topic: topic.to_owned(),
            });
        }
        let max = self.shared.limits.max_payload_bytes;
        if payload.len() > max {
            return Err(LocalPublishError::PayloadTooLarge {
                topic: topic.to_owned(),
                size: payload.len(),
                max,
            });
        }
        Counters::add(&self.shared.counters.messages_received, 1);
        let qos = if qos == QoS::AtMostOnce {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let message = Message {
            topic: Arc::from(topic),
            payload: payload.into(),
            qos,
            retain: false,
        };
        Ok(self.shared.router().publish_local(message))
    }
}
