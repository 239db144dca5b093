//! Handlers of the history routes: run the read on a blocking thread and build the JSON.
//!
//! Both handlers return the JSON document of a 200 response, or the [`ShadowError`] that the
//! route turns into the AWS error document. The errors are:
//!
//! - 400 for invalid parameters,
//! - 404 for a version or time at which the shadow did not exist,
//! - 503 when the archive writer does not catch up in time,
//! - 500 for a failed read, which is logged.

use std::collections::HashMap;
use std::error::Error;

use pipeline::history::ChangeKind;
use pipeline::shadow::{ShadowError, ShadowKey};
use serde_json::{Map, Value};
use sinks::parquet_archive::{HistoryChange, HistoryQuery, HistoryReadError, HistoryReader};

use super::params::{HistoryParams, PastDocument, encode_next_token};

/// Returns one page of a shadow's changes, for `GET /things/{thing}/shadow/history`.
///
/// # Errors
///
/// Returns the error to send, see the module docs.
pub async fn changes_document(
    reader: &HistoryReader,
    key: ShadowKey,
    query: &HashMap<String, String>,
) -> Result<Value, ShadowError> {
    let params = HistoryParams::parse(query)?;
    let history_query = HistoryQuery {
        shadow: key.clone(),
        accepted_from_ms: params.from_ms,
        accepted_before_ms: params.to_ms,
        after: params.after,
        limit: params.limit,
    };
    let reader = reader.clone();
    let page = run_read(&key, move || reader.changes(&history_query)).await?;

    let mut changes = Vec::with_capacity(page.changes.len());
    for change in &page.changes {
        changes.push(change_json(&key, change)?);
    }
    let mut document = Map::new();
    document.insert("changes".to_owned(), Value::Array(changes));
    if let Some(next) = page.next {
        document.insert(
            "nextToken".to_owned(),
            Value::String(encode_next_token(next)),
        );
    }
    Ok(Value::Object(document))
}

/// Returns the shadow document at a past version or time, for
/// `GET /things/{thing}/shadow?version=N` and `?at=T`.
///
/// The document has the live GET's `state`, `version` and `timestamp`, where `timestamp` is
/// when the change was accepted, in seconds. It has no `metadata`, because the archive does
/// not store it.
///
/// # Errors
///
/// Returns the error to send, see the module docs.
pub async fn past_document(
    reader: &HistoryReader,
    key: ShadowKey,
    past: PastDocument,
) -> Result<Value, ShadowError> {
    let read_reader = reader.clone();
    let read_key = key.clone();
    let found = run_read(&key, move || match past {
        PastDocument::Version(version) => read_reader.change_at_version(&read_key, version),
        PastDocument::At(at_ms) => read_reader.change_at(&read_key, at_ms),
    })
    .await?;

    let name = key.shadow_name.as_deref().unwrap_or(&key.thing_name);
    let change = match (found, past) {
        (Some(change), _) if change.change == ChangeKind::Update => change,
        (Some(deleted), PastDocument::At(at_ms)) => {
            return Err(ShadowError::new(
                404,
                format!(
                    "Shadow '{name}' did not exist at {at_ms} ms: version {} was deleted at {} ms",
                    deleted.version, deleted.accepted_at_ms
                ),
            ));
        }
        (_, PastDocument::Version(version)) => {
            return Err(ShadowError::new(
                404,
                format!("No version {version} of shadow '{name}' is in the history"),
            ));
        }
        (None, PastDocument::At(at_ms)) => {
            return Err(ShadowError::new(
                404,
                format!(
                    "Shadow '{name}' did not exist at {at_ms} ms: no change was accepted at or \
                     before that time"
                ),
            ));
        }
    };

    let mut state = Map::new();
    for (field, text) in [
        ("desired", &change.desired),
        ("reported", &change.reported),
        ("delta", &change.delta),
    ] {
        if let Some(text) = text {
            state.insert(field.to_owned(), parse_column(&key, &change, field, text)?);
        }
    }
    let mut document = Map::new();
    document.insert("state".to_owned(), Value::Object(state));
    document.insert("version".to_owned(), Value::from(change.version));
    document.insert(
        "timestamp".to_owned(),
        Value::from(change.accepted_at_ms.div_euclid(1000)),
    );
    Ok(Value::Object(document))
}

/// Builds one entry of the `changes` list. Absent text fields are left out.
fn change_json(key: &ShadowKey, change: &HistoryChange) -> Result<Value, ShadowError> {
    let mut entry = Map::new();
    entry.insert("version".to_owned(), Value::from(change.version));
    entry.insert("change".to_owned(), Value::from(change.change.as_str()));
    entry.insert("acceptedAt".to_owned(), Value::from(change.accepted_at_ms));
    entry.insert("origin".to_owned(), Value::from(change.origin.as_str()));
    if let Some(token) = &change.client_token {
        entry.insert("clientToken".to_owned(), Value::from(token.as_str()));
    }
    for (field, text) in [
        ("state", &change.request_state),
        ("desired", &change.desired),
        ("reported", &change.reported),
        ("delta", &change.delta),
    ] {
        if let Some(text) = text {
            entry.insert(field.to_owned(), parse_column(key, change, field, text)?);
        }
    }
    Ok(Value::Object(entry))
}

/// Parses a JSON column of an archived change. The service writes only valid JSON there, so a
/// failure means a damaged archive and is logged as a 500.
fn parse_column(
    key: &ShadowKey,
    change: &HistoryChange,
    field: &str,
    text: &str,
) -> Result<Value, ShadowError> {
    serde_json::from_str(text).map_err(|error| {
        tracing::error!(
            thing = %key.thing_name,
            shadow = key.shadow_name.as_deref().unwrap_or(""),
            version = change.version,
            field,
            error = %error,
            "archived history text is not valid JSON"
        );
        ShadowError::internal()
    })
}

/// Runs `read` on a blocking thread, because history reads block on file I/O, and maps its
/// errors to the responses of the module docs.
async fn run_read<T: Send + 'static>(
    key: &ShadowKey,
    read: impl FnOnce() -> Result<T, HistoryReadError> + Send + 'static,
) -> Result<T, ShadowError> {
    let shadow = key.shadow_name.as_deref().unwrap_or("");
    match tokio::task::spawn_blocking(read).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(HistoryReadError::CatchUpTimedOut { timeout })) => {
            tracing::warn!(thing = %key.thing_name, shadow, timeout_ms = timeout.as_millis() as u64,
                "history read gave up waiting for the archive writer");
            Err(ShadowError::new(
                503,
                format!(
                    "The history archive did not take the latest changes within {} ms; retry later",
                    timeout.as_millis()
                ),
            ))
        }
        Ok(Err(error)) => {
            tracing::error!(thing = %key.thing_name, shadow, error = %error_chain(&error),
                "history read failed");
            Err(ShadowError::internal())
        }
        Err(error) => {
            tracing::error!(thing = %key.thing_name, shadow, error = %error,
                "history read task failed");
            Err(ShadowError::internal())
        }
    }
}

/// Formats `error` with its sources, joined by `": "`.
fn error_chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    // A source chain is a few links long, so 16 steps cover every real one.
    for _ in 0..16 {
        let Some(cause) = source else { break };
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
