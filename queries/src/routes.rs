//! Warp filters and handlers of the HTTP API.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;

use std::sync::Arc;

use ingest::http::{HttpRequests, SubmitError};
use pipeline::dataflow::{ListRequest, MAX_LIST_PAGE_SIZE, Operation};
use pipeline::shadow::{
    Limits, ShadowError, ShadowKey, decode_client_token, error_document, validate_shadow_name,
    validate_thing_name,
};
use sinks::parquet_archive::HistoryReader;
use warp::http::{Method, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::body::{BodyError, read_capped};
use crate::fleet::FleetViews;
use crate::history::{self, PastDocument};

/// State shared by the handlers.
#[derive(Debug)]
pub struct ApiState {
    /// Forwards requests into the dataflow and waits for replies.
    pub requests: Arc<HttpRequests>,
    /// Limits on names and payloads.
    pub limits: Limits,
    /// Reads the history archive, for the history routes.
    pub history: HistoryReader,
    /// Fleet queries and views.
    pub fleet: Arc<FleetViews>,
}

/// Builds every route of the API.
pub fn routes(
    state: Arc<ApiState>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let health = warp::path!("healthz")
        .and(warp::get())
        .map(|| json_response(StatusCode::OK, br#"{"status":"ok"}"#.to_vec()));

    let fleet = crate::fleet::routes(Arc::clone(&state.fleet));
    let with_state = warp::any().map(move || Arc::clone(&state));
    let list = warp::path!("api" / "things" / "shadow" / "ListNamedShadowsForThing" / String)
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_state.clone())
        .then(
            |thing: String, query: HashMap<String, String>, state: Arc<ApiState>| async move {
                handle_list(&state, &thing, &query).await
            },
        );
    let history = warp::path!("things" / String / "shadow" / "history")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_state.clone())
        .then(
            |thing: String, query: HashMap<String, String>, state: Arc<ApiState>| async move {
                handle_history(&state, &thing, &query).await
            },
        );
    let shadow = warp::path!("things" / String / "shadow")
        .and(warp::method())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::body::stream())
        .and(with_state)
        .then(
            |thing: String,
             method: Method,
             query: HashMap<String, String>,
             body,
             state: Arc<ApiState>| async move {
                let body = read_capped(body, state.limits.max_payload_bytes).await;
                handle_shadow(&state, &thing, &method, &query, body).await
            },
        );

    health
        .or(fleet)
        .unify()
        .or(list)
        .unify()
        .or(history)
        .unify()
        .or(shadow)
        .unify()
        .recover(handle_rejection)
        .unify()
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    warp::serve(routes(state))
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
}

async fn handle_shadow(
    state: &ApiState,
    thing: &str,
    method: &Method,
    query: &HashMap<String, String>,
    body: Result<Vec<u8>, BodyError>,
) -> Response {
    let operation = match *method {
        Method::GET => Operation::Get,
        Method::POST => Operation::Update,
        Method::DELETE => Operation::Delete,
        _ => {
            return error_response(
                &ShadowError::new(
                    405,
                    format!("method {method} is not allowed on a shadow; use GET, POST or DELETE"),
                ),
                None,
            );
        }
    };
    let key = match shadow_key(thing, query.get("name"), &state.limits) {
        Ok(key) => key,
        Err(error) => return error_response(&error, None),
    };
    // `version` or `at` turn a GET into a read of the history archive.
    if operation == Operation::Get {
        match PastDocument::parse(query) {
            Ok(None) => {}
            Ok(Some(past)) => {
                let document = history::past_document(&state.history, key, past).await;
                return document_response(document);
            }
            Err(error) => return error_response(&error, None),
        }
    }
    let payload = match body {
        Ok(payload) => payload,
        Err(BodyError::TooLarge) => return error_response(&ShadowError::payload_too_large(), None),
        Err(BodyError::Read(error)) => {
            tracing::debug!(thing = %key.thing_name, error = %error, "reading an HTTP request body failed");
            return error_response(
                &ShadowError::new(400, format!("reading the request body failed: {error}")),
                None,
            );
        }
    };
    submit(state, thing, key, operation, payload).await
}

/// Returns one page of the changes of a shadow from the history archive.
async fn handle_history(
    state: &ApiState,
    thing: &str,
    query: &HashMap<String, String>,
) -> Response {
    let key = match shadow_key(thing, query.get("name"), &state.limits) {
        Ok(key) => key,
        Err(error) => return error_response(&error, None),
    };
    document_response(history::changes_document(&state.history, key, query).await)
}

/// Turns a JSON document into a 200 response, or an error into its error document.
fn document_response(document: Result<serde_json::Value, ShadowError>) -> Response {
    match document {
        Ok(document) => json_response(
            StatusCode::OK,
            serde_json::to_vec(&document).unwrap_or_default(),
        ),
        Err(error) => error_response(&error, None),
    }
}

/// Lists one page of the named shadows of `thing`.
async fn handle_list(state: &ApiState, thing: &str, query: &HashMap<String, String>) -> Response {
    let key = match shadow_key(thing, None, &state.limits) {
        Ok(key) => key,
        Err(error) => return error_response(&error, None),
    };
    let page_size = match query.get("pageSize").map(|text| text.parse::<usize>()) {
        None => None,
        Some(Ok(size)) => Some(size),
        Some(Err(_)) => {
            let message = format!(
                "Invalid pageSize {:?}: expected an integer from 1 to {MAX_LIST_PAGE_SIZE}",
                query["pageSize"]
            );
            return error_response(&ShadowError::new(400, message), None);
        }
    };
    let paging = ListRequest {
        page_size,
        next_token: query.get("nextToken").cloned(),
    };
    let payload = serde_json::to_vec(&paging).unwrap_or_default();
    submit(state, thing, key, Operation::ListNamed, payload).await
}

/// Sends a request into the dataflow and turns its reply into an HTTP response.
async fn submit(
    state: &ApiState,
    thing: &str,
    key: ShadowKey,
    operation: Operation,
    payload: Vec<u8>,
) -> Response {
    // Read now, because a rejection before the dataflow must echo the request's clientToken.
    let client_token = state
        .limits
        .max_in_flight_per_thing
        .and_then(|_| decode_client_token(&payload, &state.limits).ok().flatten());
    match state.requests.submit(key, operation, payload).await {
        Ok(reply) => {
            let status =
                StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            json_response(status, reply.body)
        }
        Err(SubmitError::TooManyInFlight) => {
            error_response(&ShadowError::too_many_in_flight(), client_token.as_deref())
        }
        Err(error @ SubmitError::Closed) => {
            error_response(&ShadowError::new(503, error.to_string()), None)
        }
        Err(error) => {
            tracing::warn!(thing = %thing, error = %error, "HTTP shadow request got no reply");
            error_response(&ShadowError::new(503, error.to_string()), None)
        }
    }
}

/// Builds the key from the path and query, decoding percent-escapes and validating both names.
fn shadow_key(
    thing: &str,
    shadow: Option<&String>,
    limits: &Limits,
) -> Result<ShadowKey, ShadowError> {
    let thing = percent_decode(thing).ok_or_else(|| {
        ShadowError::new(
            400,
            format!("thing name {thing:?} is not valid percent-encoded UTF-8"),
        )
    })?;
    validate_thing_name(&thing, limits)?;
    match shadow {
        None => Ok(ShadowKey::classic(thing)),
        Some(shadow) => {
            validate_shadow_name(shadow, limits)?;
            Ok(ShadowKey::named(thing, shadow.clone()))
        }
    }
}

/// Decodes `%XX` escapes; returns `None` for a malformed escape or invalid UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

async fn handle_rejection(rejection: Rejection) -> Result<Response, Infallible> {
    let error = if rejection.is_not_found() {
        ShadowError::new(
            404,
            "no such route; shadows live under /things/{thingName}/shadow".to_owned(),
        )
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ShadowError::new(405, "method not allowed on this route".to_owned())
    } else if rejection.find::<warp::reject::InvalidQuery>().is_some() {
        ShadowError::new(400, "invalid query string".to_owned())
    } else {
        tracing::debug!(rejection = ?rejection, "unhandled HTTP rejection");
        ShadowError::new(400, format!("invalid request: {rejection:?}"))
    };
    Ok(error_response(&error, None))
}

fn error_response(error: &ShadowError, client_token: Option<&str>) -> Response {
    let document = error_document(error, ingest::mqtt::now_ms().div_euclid(1000), client_token);
    let status = StatusCode::from_u16(error.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, serde_json::to_vec(&document).unwrap_or_default())
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    warp::reply::with_status(
        warp::reply::with_header(body, "content-type", "application/json"),
        status,
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decode_handles_escapes() {
        assert_eq!(percent_decode("lamp%3A1").as_deref(), Some("lamp:1"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%4"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
