//! One update request in, its response messages out: the handler threads' work.
//!
//! [`handle_update`] checks the names, decodes the payload outside the lock and applies it
//! through [`ShadowStore::apply`]. It then renders the responses with shadowflow's own document
//! functions, as the service does. They are `/update/accepted` (or `/update/rejected` with the
//! error document), `/update/delta` when the new shadow has a delta, and `/update/documents`.
//!
//! # Notes
//! - The response order is accepted, delta, documents. The service sends delta and documents
//!   from two operators, so their order there may differ; clients of AWS IoT must not rely on
//!   it either.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use pipeline::dataflow::Operation;
use pipeline::protocol::{ResponseKind, ShadowTopic};
use pipeline::shadow::{
    ShadowError, ShadowKey, accepted_document, compute_delta, decode_update, delta_document,
    documents_document, error_document, validate_shadow_name, validate_thing_name,
};
use serde_json::Value;

use super::store::ShadowStore;

/// One update request, as the receiving connection hands it to a handler thread.
#[derive(Debug)]
pub struct UpdateJob {
    /// The shadow the request's topic names.
    pub key: ShadowKey,

    /// The request payload, shared with the received MQTT packet.
    pub payload: Bytes,

    /// When the request arrived, in milliseconds since the Unix epoch.
    pub received_at_ms: i64,
}

/// A response to publish at QoS 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Topic to publish on.
    pub topic: String,

    /// JSON payload.
    pub payload: Vec<u8>,
}

/// Counts of handled updates, shared by the handler threads.
#[derive(Debug, Default)]
pub struct HandlerCounts {
    /// Updates that got an `/update/accepted` response.
    pub accepted: AtomicU64,

    /// Updates that got an `/update/rejected` response.
    pub rejected: AtomicU64,

    /// Rejections because the database write failed (also counted in `rejected`).
    pub database_errors: AtomicU64,

    /// Responses that could not be handed to the MQTT client.
    pub publish_errors: AtomicU64,
}

/// Applies one update and returns its responses, in publishing order.
pub fn handle_update(
    store: &ShadowStore,
    job: &UpdateJob,
    counts: &HandlerCounts,
) -> Vec<Response> {
    let now_s = job.received_at_ms.div_euclid(1000);
    let key = &job.key;
    if let Err(error) = validate_names(key, store) {
        return reject(key, &error, now_s, None, counts);
    }
    let request = match decode_update(&job.payload, store.limits()) {
        Ok(request) => request,
        Err(rejected) => {
            let token = rejected.client_token.as_deref();
            return reject(key, &rejected.error, now_s, token, counts);
        }
    };
    let token = request.client_token();
    let applied = match store.apply(key, &request, now_s) {
        Ok(applied) => applied,
        Err(error) => {
            if error.code() == ShadowError::unavailable().code() {
                counts.database_errors.fetch_add(1, Ordering::Relaxed);
            }
            return reject(key, &error, now_s, token, counts);
        }
    };
    counts.accepted.fetch_add(1, Ordering::Relaxed);

    let version = applied.current.version();
    let mut responses = Vec::with_capacity(3);
    responses.push(response(
        key,
        ResponseKind::Accepted,
        &accepted_document(&request, version, now_s),
    ));
    if let Some(delta) = compute_delta(&applied.current) {
        let document = delta_document(&delta, version, now_s, token);
        responses.push(response(key, ResponseKind::Delta, &document));
    }
    let documents = documents_document(applied.previous.as_ref(), &applied.current, now_s, token);
    responses.push(response(key, ResponseKind::Documents, &documents));
    responses
}

fn validate_names(key: &ShadowKey, store: &ShadowStore) -> Result<(), ShadowError> {
    validate_thing_name(&key.thing_name, store.limits())?;
    if let Some(shadow) = &key.shadow_name {
        validate_shadow_name(shadow, store.limits())?;
    }
    Ok(())
}

fn reject(
    key: &ShadowKey,
    error: &ShadowError,
    now_s: i64,
    client_token: Option<&str>,
    counts: &HandlerCounts,
) -> Vec<Response> {
    counts.rejected.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(thing = %key.thing_name, code = error.code(), message = error.message(),
        "rejected shadow update");
    let document = error_document(error, now_s, client_token);
    vec![response(key, ResponseKind::Rejected, &document)]
}

fn response(key: &ShadowKey, kind: ResponseKind, document: &Value) -> Response {
    Response {
        topic: ShadowTopic::response(key, Operation::Update, kind),
        // serde_json fails only on maps with non-string keys, which a `Value` cannot have.
        payload: serde_json::to_vec(document).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use pipeline::shadow::Limits;

    use super::*;
    use crate::monolith::config::Synchronous;
    use crate::monolith::store::Database;

    /// Opens an empty store on a new database in a temporary folder, which lives as long as
    /// the returned guard.
    fn temp_store() -> (tempfile::TempDir, ShadowStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let database =
            Database::open(&dir.path().join("shadows.db"), Synchronous::Off).expect("opens");
        let store = ShadowStore::open(database, Limits::default()).expect("store opens");
        (dir, store)
    }

    fn job(key: ShadowKey, payload: &str) -> UpdateJob {
        UpdateJob {
            key,
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            received_at_ms: 1_700_000_000_500,
        }
    }

    fn topics(responses: &[Response]) -> Vec<&str> {
        responses
            .iter()
            .map(|response| response.topic.as_str())
            .collect()
    }

    fn json(response: &Response) -> Value {
        serde_json::from_slice(&response.payload).expect("response is JSON")
    }

    #[test]
    fn update_responses_follow_the_service() {
        let (_dir, store) = temp_store();
        let counts = HandlerCounts::default();
        let key = ShadowKey::classic("lamp");

        let first = handle_update(
            &store,
            &job(
                key.clone(),
                r#"{"state":{"desired":{"on":true}},"clientToken":"c1"}"#,
            ),
            &counts,
        );
        assert_eq!(
            topics(&first),
            [
                "$aws/things/lamp/shadow/update/accepted",
                "$aws/things/lamp/shadow/update/delta",
                "$aws/things/lamp/shadow/update/documents",
            ]
        );
        assert_eq!(json(&first[0])["clientToken"], "c1");
        assert_eq!(json(&first[0])["version"], 1);
        assert_eq!(json(&first[1])["state"], serde_json::json!({"on": true}));
        assert_eq!(json(&first[2])["previous"], Value::Null);

        let second = handle_update(
            &store,
            &job(
                key,
                r#"{"state":{"reported":{"on":true}},"clientToken":"c2"}"#,
            ),
            &counts,
        );
        assert_eq!(
            topics(&second),
            [
                "$aws/things/lamp/shadow/update/accepted",
                "$aws/things/lamp/shadow/update/documents",
            ]
        );
        assert_eq!(json(&second[1])["previous"]["version"], 1);
        assert_eq!(json(&second[1])["current"]["version"], 2);
        assert_eq!(counts.accepted.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn invalid_update_is_rejected_with_token() {
        let (_dir, store) = temp_store();
        let counts = HandlerCounts::default();

        let responses = handle_update(
            &store,
            &job(ShadowKey::classic("lamp"), r#"{"clientToken":"c9"}"#),
            &counts,
        );
        assert_eq!(
            topics(&responses),
            ["$aws/things/lamp/shadow/update/rejected"]
        );
        assert_eq!(json(&responses[0])["code"], 400);
        assert_eq!(json(&responses[0])["clientToken"], "c9");
        assert_eq!(counts.rejected.load(Ordering::Relaxed), 1);
        assert!(store.is_empty());
    }

    #[test]
    fn invalid_thing_name_is_rejected() {
        let (_dir, store) = temp_store();
        let counts = HandlerCounts::default();

        let responses = handle_update(
            &store,
            &job(
                ShadowKey::classic("bad.name"),
                r#"{"state":{"reported":{"on":true}}}"#,
            ),
            &counts,
        );
        assert_eq!(
            topics(&responses),
            ["$aws/things/bad.name/shadow/update/rejected"]
        );
        assert!(store.is_empty());
    }
}
