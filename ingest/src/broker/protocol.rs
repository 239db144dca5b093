//! MQTT 3.1.1 handling of one connection, without network I/O: the checks of CONNECT and the
//! broker's reaction to each later packet from the client.
//!
//! # Notes
//! - QoS 2 is not supported, as on AWS IoT: a QoS 2 PUBLISH, PUBREC, PUBREL or PUBCOMP from a
//!   client closes its connection. A QoS 2 will message is published at QoS 1.
//! - MQTT 3.1 clients (`MQIsdp`, level 3) get CONNACK "unacceptable protocol version",
//!   because the codec reads only 3.1.1 packets. So do MQTT 5 clients whose CONNECT the 3.1.1
//!   codec can read. Other MQTT 5 CONNECT packets are malformed to it and close the connection.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::mqttbytes::v4::{
    Connect, ConnectReturnCode, Packet, PubAck, Publish, SubAck, Subscribe, SubscribeReasonCode,
    UnsubAck, Unsubscribe,
};
use rumqttc::mqttbytes::{self, Protocol, QoS};

use super::auth::Authorizer;
use super::flow::{CongestedSession, PendingDelivery};
use super::link::{SessionHandle, SessionTakenOver};
use super::metrics::Counters;
use super::session::{Message, min_qos};
use super::shared::Shared;
use super::topic;
use super::tree::ClientId;

/// Prefix of the client ids that the broker assigns to clients that send an empty one.
const ASSIGNED_CLIENT_ID_PREFIX: &str = "shadowflow-auto-";

/// A protocol violation, which closes the client's connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProtocolError {
    /// The bytes do not decode as an MQTT 3.1.1 packet.
    #[error("malformed packet: {0}")]
    Malformed(#[from] mqttbytes::Error),
    /// A packet's remaining length exceeds the payload limit plus the largest PUBLISH header.
    #[error("packet of {size} bytes exceeds the {max}-byte limit")]
    PacketTooLarge {
        /// Remaining length announced by the packet.
        size: usize,
        /// Largest remaining length accepted.
        max: usize,
    },
    /// The first packet of the connection is not CONNECT.
    #[error("first packet starts with byte {first_byte:#04x}, not with a CONNECT header")]
    NotConnect {
        /// First byte received.
        first_byte: u8,
    },
    /// A second CONNECT arrived on the same connection.
    #[error("second CONNECT on one connection")]
    SecondConnect,
    /// The client used QoS 2, which the broker does not support.
    #[error("QoS 2 is not supported ({0} received)")]
    Qos2NotSupported(&'static str),
    /// A PUBLISH topic is empty or contains a wildcard or NUL character.
    #[error("invalid topic name {0:?} in PUBLISH")]
    InvalidTopic(String),
    /// A will topic is empty or contains a wildcard or NUL character.
    #[error("invalid will topic {0:?} in CONNECT")]
    InvalidWillTopic(String),
    /// A PUBLISH or will payload exceeds `max_payload_bytes`.
    #[error("payload of {size} bytes exceeds the {max}-byte limit")]
    PayloadTooLarge {
        /// Size of the payload received.
        size: usize,
        /// Largest payload accepted.
        max: usize,
    },
    /// The authorizer rejected a PUBLISH.
    #[error("not authorised to publish to {0:?}")]
    PublishNotAuthorized(String),
    /// A packet that only a server sends, such as CONNACK or SUBACK.
    #[error("unexpected {0} from a client")]
    UnexpectedPacket(&'static str),
}

/// A CONNECT that passed the checks.
#[derive(Debug)]
pub(crate) struct AcceptedConnect {
    /// Client id sent by the client, or assigned by the broker.
    pub(crate) client_id: ClientId,
    /// Clean session flag.
    pub(crate) clean_session: bool,
    /// Keep-alive interval; zero turns the keep-alive check off.
    pub(crate) keep_alive: Duration,
    /// Will message, at QoS 0 or 1.
    pub(crate) will: Option<Message>,
}

/// Checks a CONNECT packet and returns the accepted connection settings, or the CONNACK
/// return code that rejects it.
///
/// An empty client id gets an assigned one when clean session is set, and is rejected
/// otherwise (MQTT 3.1.1 section 3.1.3.1).
pub(crate) fn check_connect(
    connect: Connect,
    connection_id: u64,
    authorizer: &dyn Authorizer,
) -> Result<AcceptedConnect, ConnectReturnCode> {
    if connect.protocol != Protocol::V4 {
        return Err(ConnectReturnCode::RefusedProtocolVersion);
    }
    let client_id = match (connect.client_id.is_empty(), connect.clean_session) {
        (false, _) => connect.client_id,
        (true, true) => format!("{ASSIGNED_CLIENT_ID_PREFIX}{connection_id}"),
        (true, false) => return Err(ConnectReturnCode::BadClientId),
    };
    authorizer.authorize_connect(&client_id, connect.login.as_ref())?;
    let will = connect.last_will.map(|will| Message {
        topic: will.topic.into(),
        payload: will.message,
        qos: min_qos(will.qos, QoS::AtLeastOnce),
        retain: will.retain,
    });
    Ok(AcceptedConnect {
        client_id: client_id.into(),
        clean_session: connect.clean_session,
        keep_alive: Duration::from_secs(u64::from(connect.keep_alive)),
        will,
    })
}

/// Checks the will of a CONNECT packet like a PUBLISH: a valid topic name, and a payload
/// within `max_payload_bytes`.
///
/// # Errors
/// Returns the [`ProtocolError`] that closes the connection without CONNACK.
pub(crate) fn check_will(connect: &Connect, max_payload_bytes: usize) -> Result<(), ProtocolError> {
    let Some(will) = &connect.last_will else {
        return Ok(());
    };
    if !topic::is_valid_topic(&will.topic) {
        return Err(ProtocolError::InvalidWillTopic(will.topic.clone()));
    }
    if will.message.len() > max_payload_bytes {
        return Err(ProtocolError::PayloadTooLarge {
            size: will.message.len(),
            max: max_payload_bytes,
        });
    }
    Ok(())
}

/// Next action of the connection after a handled packet.
#[derive(Debug)]
pub(crate) enum Step {
    /// Nothing to send.
    Continue,
    /// Send this reply.
    Reply(Packet),
    /// Send this PUBACK, then handle no further packet from the client, except PUBACK and
    /// PINGREQ, until every one of the congested sessions has drained.
    ReplyThenPause {
        /// The PUBACK of the message that went into congested queues.
        reply: Packet,
        /// Subscribers' sessions to wait for.
        congested: Vec<CongestedSession>,
    },
    /// Await the hand-over of the message to the local subscriber. Until it is done, handle
    /// no further packet from the client except PUBACK and PINGREQ. Then send the reply and
    /// pause for the congested sessions.
    Deliver(PendingDelivery),
    /// An inflight slot was freed, so more messages may be sent.
    Acknowledged,
    /// The client sent DISCONNECT: close without publishing the will.
    Disconnect,
    /// Another connection took the session over: close without publishing the will.
    TakenOver,
}

impl From<SessionTakenOver> for Step {
    fn from(_: SessionTakenOver) -> Self {
        Step::TakenOver
    }
}

/// Protocol state of one connection after its CONNECT was accepted.
#[derive(Debug)]
pub(crate) struct ConnectionState {
    handle: SessionHandle,
}

impl ConnectionState {
    /// Creates the state of the connection that owns `handle`'s session.
    pub(crate) fn new(handle: SessionHandle) -> Self {
        ConnectionState { handle }
    }

    /// Returns the handle of the session this connection owns.
    pub(crate) fn handle(&self) -> &SessionHandle {
        &self.handle
    }

    /// Handles one packet from the client.
    ///
    /// # Errors
    /// Returns the [`ProtocolError`] that must close the connection.
    pub(crate) fn handle_packet(
        &mut self,
        shared: &Shared,
        packet: Packet,
    ) -> Result<Step, ProtocolError> {
        let step = match packet {
            Packet::Publish(publish) => self.handle_publish(shared, publish)?,
            Packet::PubAck(ack) => match shared.router().acknowledge(&self.handle, ack.pkid) {
                Ok(()) => Step::Acknowledged,
                Err(taken_over) => taken_over.into(),
            },
            Packet::Subscribe(subscribe) => self.handle_subscribe(shared, subscribe),
            Packet::Unsubscribe(unsubscribe) => self.handle_unsubscribe(shared, unsubscribe),
            Packet::PingReq => Step::Reply(Packet::PingResp),
            Packet::Disconnect => Step::Disconnect,
            Packet::Connect(_) => return Err(ProtocolError::SecondConnect),
            Packet::PubRec(_) | Packet::PubRel(_) | Packet::PubComp(_) => {
                return Err(ProtocolError::Qos2NotSupported(packet_name(&packet)));
            }
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return Err(ProtocolError::UnexpectedPacket(packet_name(&packet)));
            }
        };
        Ok(step)
    }

    fn handle_publish(&mut self, shared: &Shared, publish: Publish) -> Result<Step, ProtocolError> {
        if publish.qos == QoS::ExactlyOnce {
            return Err(ProtocolError::Qos2NotSupported("QoS 2 PUBLISH"));
        }
        if !topic::is_valid_topic(&publish.topic) {
            return Err(ProtocolError::InvalidTopic(publish.topic));
        }
        let max = shared.limits.max_payload_bytes;
        if publish.payload.len() > max {
            return Err(ProtocolError::PayloadTooLarge {
                size: publish.payload.len(),
                max,
            });
        }
        if !shared
            .authorizer
            .authorize_publish(&self.handle.client_id, &publish.topic)
        {
            return Err(ProtocolError::PublishNotAuthorized(publish.topic));
        }

        Counters::add(&shared.counters.messages_received, 1);
        let local = shared.local_subscription.get();
        let topic: Arc<str> = Arc::from(publish.topic);
        let local_payload = local.map(|_| publish.payload.clone());
        let message = Message {
            topic: Arc::clone(&topic),
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
        };
        let routed = shared.router().publish_from(&self.handle, message);
        let congested = match routed {
            Ok(congested) => congested,
            Err(taken_over) => return Ok(taken_over.into()),
        };

        // Only QoS 1 copies congest a session, so a QoS 0 message never pauses its publisher.
        let reply =
            (publish.qos != QoS::AtMostOnce).then(|| Packet::PubAck(PubAck::new(publish.pkid)));
        // Handed over after the router's lock is released: the local subscriber may wait.
        let delivery = local
            .zip(local_payload)
            .and_then(|(local, payload)| local.deliver(&topic, &payload));
        if let Some(delivery) = delivery {
            return Ok(Step::Deliver(PendingDelivery {
                delivery,
                reply,
                congested,
            }));
        }
        match reply {
            None => Ok(Step::Continue),
            Some(reply) if congested.is_empty() => Ok(Step::Reply(reply)),
            Some(reply) => Ok(Step::ReplyThenPause { reply, congested }),
        }
    }

    fn handle_subscribe(&mut self, shared: &Shared, subscribe: Subscribe) -> Step {
        let mut return_codes = Vec::with_capacity(subscribe.filters.len());
        let mut router = shared.router();
        for filter in &subscribe.filters {
            if !shared
                .authorizer
                .authorize_subscribe(&self.handle.client_id, &filter.path)
            {
                tracing::debug!(client_id = %self.handle.client_id, filter = %filter.path,
                    "subscription not authorised");
                return_codes.push(SubscribeReasonCode::Failure);
                continue;
            }
            match router.subscribe(&self.handle, &filter.path, filter.qos) {
                Ok(code) => return_codes.push(code),
                Err(taken_over) => return taken_over.into(),
            }
        }
        Step::Reply(Packet::SubAck(SubAck::new(subscribe.pkid, return_codes)))
    }

    fn handle_unsubscribe(&mut self, shared: &Shared, unsubscribe: Unsubscribe) -> Step {
        match shared
            .router()
            .unsubscribe(&self.handle, &unsubscribe.topics)
        {
            Ok(()) => Step::Reply(Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid))),
            Err(taken_over) => taken_over.into(),
        }
    }
}

/// Returns the packet type's name, for log messages.
pub(crate) fn packet_name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}
