//! Turning outcomes and deltas into messages, replies and history rows.
//!
//! The dataflow ends in two sink operators that call [`ShadowOutputs`]: `Shadow: Deliver` for
//! the outcome of every request, and `Delta: Publish` for every insertion into the deltas
//! collection. Documents are encoded to JSON here, on the worker that produced them.
//!
//! # Notes
//! - Updates and deletes made over HTTP also publish their `/accepted` and `/documents` messages
//!   on MQTT, as AWS does for updates made in its console, but never a `/rejected` message.

use serde_json::Value;

use super::request::{Operation, ReplyTo};
use super::state::{Outcome, Updated};
use super::version::{PendingDelta, ShadowVersion};
use crate::durable::ArchiveBarrier;
use crate::history::{ChangeKind, HistoryRow, LogPosition, Origin};
use crate::protocol::{ResponseKind, ShadowTopic};
use crate::shadow::{
    ShadowKey, delete_document, delta_json, documents_json, error_document, get_json,
};

/// A message for the MQTT broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttMessage {
    /// Topic to publish on.
    pub topic: String,
    /// JSON payload.
    pub payload: Vec<u8>,
}

/// A response for a waiting HTTP request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpReply {
    /// Id under which the HTTP handler waits.
    pub request_id: u64,
    /// HTTP status code (200, or the error document's code).
    pub status: u16,
    /// JSON body.
    pub body: Vec<u8>,
}

/// Destinations of the dataflow's results, implemented by the service wiring.
///
/// Worker threads call these methods, so implementations must not block for long.
pub trait ShadowOutputs: Send + Sync + 'static {
    /// Publishes a message on MQTT.
    fn publish(&self, message: MqttMessage);
    /// Completes a waiting HTTP request.
    fn reply_http(&self, reply: HttpReply);
    /// Archives an accepted change, at its position in the write-ahead log if it is logged.
    /// Called once the change is durable.
    fn archive(&self, row: HistoryRow, position: Option<LogPosition>);

    /// Places a barrier behind the history rows archived so far, and returns the wait for it.
    /// The default has no archive to wait for.
    fn archive_barrier(&self) -> ArchiveBarrier {
        Box::new(|| Ok(()))
    }

    /// Returns whether [`ShadowOutputs::finished`] must be called; false by default.
    fn tracks_in_flight(&self) -> bool {
        false
    }

    /// Marks a request of `thing` from MQTT or HTTP as responded to (see [`super::InFlight`]).
    fn finished(&self, _thing: &str) {}
}

/// Sends everything that `outcome` produces to `outputs`.
pub fn deliver_outcome(outcome: Outcome, outputs: &dyn ShadowOutputs) {
    // Only requests with a reply destination were admitted by an ingest task.
    let finished = outputs
        .tracks_in_flight()
        .then(|| (outcome.key().thing_name.clone(), outcome.reply_to()))
        .filter(|(_, reply_to)| *reply_to != ReplyTo::Nobody);
    deliver(outcome, outputs);
    if let Some((thing, _)) = finished {
        outputs.finished(&thing);
    }
}

fn deliver(outcome: Outcome, outputs: &dyn ShadowOutputs) {
    match outcome {
        Outcome::Updated(updated) => deliver_update(*updated, outputs),
        Outcome::Read {
            key,
            current,
            client_token,
            at_ms,
            reply_to,
        } => {
            let document = get_json(
                &current.shadow,
                current.delta(),
                seconds(at_ms),
                client_token.as_deref(),
            );
            respond(outputs, &key, Operation::Get, reply_to, 200, document);
        }
        Outcome::Deleted {
            key,
            version,
            client_token,
            at_ms,
            reply_to,
            ..
        } => {
            let document = delete_document(version, seconds(at_ms), client_token.as_deref());
            respond(
                outputs,
                &key,
                Operation::Delete,
                reply_to,
                200,
                encode(&document),
            );
        }
        Outcome::Listed {
            key,
            names,
            next_token,
            at_ms,
            reply_to,
        } => {
            let mut document = serde_json::json!({
                "results": names,
                "timestamp": seconds(at_ms),
            });
            if let Some(token) = next_token {
                document["nextToken"] = Value::String(token);
            }
            respond(
                outputs,
                &key,
                Operation::ListNamed,
                reply_to,
                200,
                encode(&document),
            );
        }
        Outcome::Rejected {
            key,
            operation,
            error,
            client_token,
            at_ms,
            reply_to,
        } => {
            let document = error_document(&error, seconds(at_ms), client_token.as_deref());
            tracing::debug!(thing = %key.thing_name, operation = operation.as_str(),
                code = error.code(), message = error.message(), "rejected shadow request");
            respond(
                outputs,
                &key,
                operation,
                reply_to,
                error.code(),
                encode(&document),
            );
        }
    }
}

fn deliver_update(updated: Updated, outputs: &dyn ShadowOutputs) {
    let Updated {
        key,
        previous,
        current,
        accepted,
        reply_to,
        ..
    } = updated;
    let at_s = current.updated_at_s();
    respond(outputs, &key, Operation::Update, reply_to, 200, accepted);

    let documents = documents_json(
        previous.as_ref().map(|previous| &previous.shadow),
        &current.shadow,
        at_s,
        current.client_token.as_deref(),
    );
    outputs.publish(MqttMessage {
        topic: ShadowTopic::response(&key, Operation::Update, ResponseKind::Documents),
        payload: documents,
    });
}

/// Publishes the `/update/delta` message of a newly inserted delta.
pub fn deliver_delta(key: &ShadowKey, pending: &PendingDelta, outputs: &dyn ShadowOutputs) {
    let version: &ShadowVersion = &pending.version;
    let Some(delta) = pending.delta() else { return };
    let document = delta_json(
        delta,
        version.version(),
        version.updated_at_s(),
        version.client_token.as_deref(),
    );
    outputs.publish(MqttMessage {
        topic: ShadowTopic::response(key, Operation::Update, ResponseKind::Delta),
        payload: document,
    });
}

/// Returns the history row of an accepted update.
pub(crate) fn history_row(
    key: ShadowKey,
    current: &ShadowVersion,
    request_state: String,
    origin: Origin,
) -> HistoryRow {
    HistoryRow {
        thing_name: key.thing_name,
        shadow_name: key.shadow_name,
        change: ChangeKind::Update,
        version: current.version(),
        accepted_at_ms: current.updated_at_ms,
        origin,
        client_token: current.client_token.clone(),
        request_state: Some(request_state),
        desired: current.shadow.desired_json(),
        reported: current.shadow.reported_json(),
        delta: current.delta().map(|delta| delta.state_json()),
    }
}

/// Returns the history row of an accepted delete.
pub(crate) fn delete_row(
    key: ShadowKey,
    version: u64,
    at_ms: i64,
    origin: Origin,
    client_token: Option<String>,
) -> HistoryRow {
    HistoryRow {
        thing_name: key.thing_name,
        shadow_name: key.shadow_name,
        change: ChangeKind::Delete,
        version,
        accepted_at_ms: at_ms,
        origin,
        client_token,
        request_state: None,
        desired: None,
        reported: None,
        delta: None,
    }
}

/// Sends a response document, `body` encoded as JSON, to the destination in `reply_to`.
fn respond(
    outputs: &dyn ShadowOutputs,
    key: &ShadowKey,
    operation: Operation,
    reply_to: ReplyTo,
    status: u16,
    body: Vec<u8>,
) {
    let kind = if status == 200 {
        ResponseKind::Accepted
    } else {
        ResponseKind::Rejected
    };
    match reply_to {
        ReplyTo::Mqtt => outputs.publish(MqttMessage {
            topic: ShadowTopic::response(key, operation, kind),
            payload: body,
        }),
        ReplyTo::Http { request_id } => {
            // A successful change over HTTP is announced to MQTT subscribers as well.
            if kind == ResponseKind::Accepted
                && matches!(operation, Operation::Update | Operation::Delete)
            {
                outputs.publish(MqttMessage {
                    topic: ShadowTopic::response(key, operation, kind),
                    payload: body.clone(),
                });
            }
            outputs.reply_http(HttpReply {
                request_id,
                status,
                body,
            });
        }
        ReplyTo::Nobody => {}
    }
}

thread_local! {
    /// Buffer that each worker thread encodes its documents into before copying them out.
    static ENCODE_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn encode(document: &Value) -> Vec<u8> {
    // Encoding into a buffer that keeps its capacity, then copying the result out, allocates
    // each payload once at its exact size instead of growing it step by step.
    ENCODE_BUFFER.with_borrow_mut(|buffer| {
        buffer.clear();
        // serde_json fails to serialise only maps with non-string keys, which a `Value` cannot
        // have, and writing to a `Vec` cannot fail.
        match serde_json::to_writer(&mut *buffer, document) {
            Ok(()) => buffer.clone(),
            Err(_) => Vec::new(),
        }
    })
}

fn seconds(at_ms: i64) -> i64 {
    at_ms.div_euclid(1000)
}
