//! The MQTT request source: subscribes to every shadow request topic and forwards each request
//! into the dataflow.
//!
//! # Notes
//! - Requests past the optional in-flight limit of their thing get 429 here, on their
//!   `/rejected` topic.
//! - Requests whose topic names an invalid thing or shadow name are rejected here on their
//!   `/rejected` topic and never reach the dataflow, so they cannot touch any shadow.
//! - The subscription uses QoS 1, so the broker does not drop requests on their way to the
//!   service. The session is clean: requests published while the service is down are lost.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pipeline::dataflow::{InFlight, ReplyTo, Request, RequestSender};
use pipeline::history::Origin;
use pipeline::protocol::{ResponseKind, ShadowTopic, TopicError};
use pipeline::shadow::{
    Limits, ShadowError, decode_client_token, error_document, validate_shadow_name,
    validate_thing_name,
};
use rumqttc::{AsyncClient, Event, EventLoop, Packet, Publish, QoS, SubscribeFilter};
use tokio::sync::{oneshot, watch};

use super::address::BrokerAddress;
use super::config::MqttClientConfig;

/// Signal sent once the source's subscriptions are acknowledged by the broker.
#[derive(Debug)]
pub struct SourceReady;

/// Delay between reconnection attempts after a connection error.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Connection errors logged at WARN at most this often; the rest go to DEBUG.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Runs the request source until `shutdown` turns true or the dataflow stops.
///
/// `ready` fires once the broker has acknowledged the subscriptions.
pub async fn run_source(
    broker: BrokerAddress,
    config: MqttClientConfig,
    limits: Limits,
    requests: RequestSender,
    in_flight: Option<Arc<InFlight>>,
    ready: Option<oneshot::Sender<SourceReady>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (client, mut event_loop) = AsyncClient::new(config.options(&broker, "requests"), 1024);
    event_loop.set_network_options(config.network_options());
    let mut ready = ready;
    let mut last_error_log: Option<Instant> = None;
    loop {
        let event = tokio::select! {
            _ = shutdown.changed() => break,
            event = event_loop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                tracing::info!(broker = %broker, "request source connected");
                let filters = ShadowTopic::request_filters()
                    .into_iter()
                    .map(|filter| SubscribeFilter::new(filter, QoS::AtLeastOnce));
                if let Err(error) = client.subscribe_many(filters).await {
                    tracing::error!(broker = %broker, error = %error, "subscribing to shadow request topics failed");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(SourceReady);
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if forward(&client, &limits, &requests, in_flight.as_deref(), publish)
                    .await
                    .is_err()
                {
                    tracing::info!("dataflow stopped; request source is closing");
                    break;
                }
            }
            Ok(_) => {}
            Err(error) => {
                let now = Instant::now();
                if last_error_log.is_none_or(|last| now - last >= ERROR_LOG_INTERVAL) {
                    tracing::warn!(broker = %broker, error = %error, "request source lost its broker connection; retrying every second");
                    last_error_log = Some(now);
                } else {
                    tracing::debug!(broker = %broker, error = %error, "request source reconnect failed");
                }
                tokio::time::sleep(RECONNECT_DELAY).await;
            }
        }
    }
    disconnect(&client, &mut event_loop).await;
}

/// Forwards one publish to the dataflow, or rejects it here when its names are invalid.
async fn forward(
    client: &AsyncClient,
    limits: &Limits,
    requests: &RequestSender,
    in_flight: Option<&InFlight>,
    publish: Publish,
) -> Result<(), pipeline::dataflow::DataflowClosed> {
    match admit(&publish.topic, &publish.payload, limits, in_flight) {
        Admission::Ignored => Ok(()),
        Admission::Rejected { topic, body } => {
            if let Err(error) = client.publish(topic, QoS::AtLeastOnce, false, body).await {
                tracing::warn!(error = %error, "publishing a rejection failed");
            }
            Ok(())
        }
        Admission::Admitted(request) => send_request(requests, in_flight, request).await,
    }
}

/// Outcome of the admission check of one message on a request topic.
pub(crate) enum Admission {
    /// Not a request topic: nothing to do.
    Ignored,
    /// Rejected before the dataflow: publish `body` on `topic` at QoS 1.
    Rejected {
        /// The request's `/rejected` topic.
        topic: String,
        /// The error document.
        body: Vec<u8>,
    },
    /// Send this request into the dataflow with [`send_request`].
    Admitted(Request),
}

/// Parses the topic of one message and checks its names and the in-flight limit of its thing.
/// When `in_flight` is given, an admitted request takes one in-flight slot of its thing.
pub(crate) fn admit(
    topic: &str,
    payload: &[u8],
    limits: &Limits,
    in_flight: Option<&InFlight>,
) -> Admission {
    let topic = match ShadowTopic::parse(topic) {
        Ok(topic) => topic,
        Err(TopicError::ResponseTopic(_)) => return Admission::Ignored,
        Err(error) => {
            tracing::debug!(topic = %topic, error = %error, "ignoring message on a non-request topic");
            return Admission::Ignored;
        }
    };
    let received_at_ms = now_ms();
    let admitted = validate_names(&topic, limits).and_then(|()| match in_flight {
        Some(in_flight) if !in_flight.try_acquire(&topic.key.thing_name) => {
            Err(ShadowError::too_many_in_flight())
        }
        _ => Ok(()),
    });
    if let Err(error) = admitted {
        return rejection(limits, &topic, error, payload, received_at_ms);
    }
    Admission::Admitted(Request {
        key: topic.key,
        operation: topic.operation,
        payload: payload.to_vec(),
        origin: Origin::Mqtt,
        reply_to: ReplyTo::Mqtt,
        received_at_ms,
    })
}

/// Queues an admitted request for the dataflow, waiting while its queue is full, and releases
/// the request's in-flight slot when the dataflow has stopped.
///
/// # Errors
/// Returns [`DataflowClosed`](pipeline::dataflow::DataflowClosed) once the dataflow has shut
/// down.
pub(crate) async fn send_request(
    requests: &RequestSender,
    in_flight: Option<&InFlight>,
    request: Request,
) -> Result<(), pipeline::dataflow::DataflowClosed> {
    let thing = in_flight.map(|_| request.key.thing_name.clone());
    let sent = requests.send(request).await;
    if let (Err(_), Some(in_flight), Some(thing)) = (&sent, in_flight, thing) {
        in_flight.release(&thing);
    }
    sent
}

fn validate_names(topic: &ShadowTopic, limits: &Limits) -> Result<(), ShadowError> {
    validate_thing_name(&topic.key.thing_name, limits)?;
    if let Some(shadow) = &topic.key.shadow_name {
        validate_shadow_name(shadow, limits)?;
    }
    Ok(())
}

/// Builds the rejection of a request on its `/rejected` topic, which never enters the
/// dataflow.
fn rejection(
    limits: &Limits,
    topic: &ShadowTopic,
    error: ShadowError,
    payload: &[u8],
    received_at_ms: i64,
) -> Admission {
    let client_token = decode_client_token(payload, limits).ok().flatten();
    tracing::debug!(thing = %topic.key.thing_name, error = %error, "rejected request before the dataflow");
    let document = error_document(
        &error,
        received_at_ms.div_euclid(1000),
        client_token.as_deref(),
    );
    let response = ShadowTopic::response(&topic.key, topic.operation, ResponseKind::Rejected);
    let body = serde_json::to_vec(&document).unwrap_or_default();
    Admission::Rejected {
        topic: response,
        body,
    }
}

async fn disconnect(client: &AsyncClient, event_loop: &mut EventLoop) {
    if client.disconnect().await.is_err() {
        return;
    }
    // Drive the event loop until the DISCONNECT packet is out, for at most a second.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while event_loop.poll().await.is_ok() {}
    })
    .await;
}

/// Returns the current time in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
