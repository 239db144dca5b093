//! HTTP routes of fleet queries, views and shadow watching.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use futures_util::stream::{self, Stream};
use pipeline::dataflow::ThingShadow;
use pipeline::fleet::{
    AggregationRequest, BucketsRequest, FleetApiError, PercentilesRequest, QueryLimits,
    SearchIndexRequest, request::DEFAULT_MAX_RESULTS,
};
use pipeline::shadow::get_document;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::sse::Event;
use warp::{Filter, Rejection, Reply};

use super::registry::{FleetViews, TemporaryView, ViewError, render};
use super::view::{Aggregation, ViewChange};
use crate::body::{BodyError, read_capped};

/// Largest request body of the fleet routes.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Builds the fleet routes over `views`.
pub fn routes(
    views: Arc<FleetViews>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    let with_views = warp::any().map(move || Arc::clone(&views));
    let body = warp::body::stream().then(|body| read_capped(body, MAX_BODY_BYTES));

    let indices = warp::path!("indices" / String)
        .and(warp::post())
        .and(body)
        .and(with_views.clone())
        .then(
            |kind: String, body: Result<Vec<u8>, BodyError>, views: Arc<FleetViews>| async move {
                match body {
                    Ok(body) => blocking(move || one_off(&views, &kind, &body)).await,
                    Err(error) => body_error(&error),
                }
            },
        );
    let create = warp::path!("views")
        .and(warp::post())
        .and(body)
        .and(with_views.clone())
        .then(
            |body: Result<Vec<u8>, BodyError>, views: Arc<FleetViews>| async move {
                match body {
                    Ok(body) => blocking(move || create_view(&views, &body)).await,
                    Err(error) => body_error(&error),
                }
            },
        );
    let list = warp::path!("views")
        .and(warp::get())
        .and(with_views.clone())
        .map(|views: Arc<FleetViews>| {
            json_response(StatusCode::OK, &json!({"views": views.definitions()}))
        });
    let read = warp::path!("views" / u64)
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_views.clone())
        .then(
            |id: u64, query: HashMap<String, String>, views: Arc<FleetViews>| async move {
                blocking(move || read_view(&views, id, &query)).await
            },
        );
    let changes = warp::path!("views" / u64 / "changes")
        .and(warp::get())
        .and(with_views.clone())
        .map(|id: u64, views: Arc<FleetViews>| match views.get(id) {
            Ok(view) => change_stream(view.subscribe(), views.closing(), None, false),
            Err(error) => view_error(&error),
        });
    let delete = warp::path!("views" / u64)
        .and(warp::delete())
        .and(with_views.clone())
        .map(|id: u64, views: Arc<FleetViews>| match views.delete(id) {
            Ok(()) => json_response(StatusCode::OK, &json!({"deleted": id})),
            Err(error) => view_error(&error),
        });
    let watch = warp::path!("things" / String / "shadow" / "changes")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_views)
        .map(
            |thing: String, query: HashMap<String, String>, views: Arc<FleetViews>| {
                watch_shadow(&views, thing, query.get("name").cloned())
            },
        );

    indices
        .or(create)
        .unify()
        .or(list)
        .unify()
        .or(changes)
        .unify()
        .or(read)
        .unify()
        .or(delete)
        .unify()
        .or(watch)
        .unify()
}

/// Runs a handler that waits for the dataflow on a blocking thread.
async fn blocking(handler: impl FnOnce() -> Response + Send + 'static) -> Response {
    match tokio::task::spawn_blocking(handler).await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(error = %error, "a fleet request handler failed");
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"message": "Internal service failure"}),
            )
        }
    }
}

/// Responds to one of AWS's fleet-indexing requests with a temporary view.
fn one_off(views: &FleetViews, kind: &str, body: &[u8]) -> Response {
    let limits = QueryLimits::default();
    let parsed = match kind {
        "search" => SearchIndexRequest::parse(body, &limits).map(|request| {
            let query = request.query.to_string();
            let token = request.next_token.clone();
            (query, Aggregation::Search, request.max_results, token)
        }),
        "statistics" | "cardinality" => {
            AggregationRequest::parse(body, &limits).and_then(|request| {
                let field = aggregation_field(request.aggregation_field.as_ref())?;
                let aggregation = if kind == "statistics" {
                    Aggregation::Statistics { field }
                } else {
                    Aggregation::Cardinality { field }
                };
                Ok((request.query.to_string(), aggregation, 0, None))
            })
        }
        "percentiles" => PercentilesRequest::parse(body, &limits).and_then(|request| {
            let field = aggregation_field(request.aggregation_field.as_ref())?;
            let aggregation = Aggregation::Percentiles {
                field,
                percents: request.percents,
            };
            Ok((request.query.to_string(), aggregation, 0, None))
        }),
        "buckets" => BucketsRequest::parse(body, &limits).map(|request| {
            let aggregation = Aggregation::Buckets {
                field: request.aggregation_field.to_string(),
                max_buckets: request.max_buckets,
            };
            (request.query.to_string(), aggregation, 0, None)
        }),
        _ => {
            let message = format!(
                "unknown fleet request /indices/{kind}: use search, statistics, cardinality, \
                 percentiles or buckets"
            );
            return fleet_error(&FleetApiError::ResourceNotFound { message });
        }
    };
    let (query, aggregation, max_results, token) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => return fleet_error(&error),
    };
    match views.once(query, aggregation, |view| {
        render(view, max_results, token.as_deref())
    }) {
        Ok(document) => json_response(StatusCode::OK, &document),
        Err(error) => view_error(&error),
    }
}

/// Returns the aggregation field, which this service needs: AWS's default field
/// (`registry.version`) does not exist here.
fn aggregation_field(field: Option<&pipeline::fleet::Field>) -> Result<String, FleetApiError> {
    field.map(ToString::to_string).ok_or_else(|| {
        FleetApiError::invalid_request(
            "aggregationField is required: name a shadow field such as shadow.reported.temperature",
        )
    })
}

/// Body of `POST /views`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateView {
    query_string: String,
    #[serde(default)]
    aggregation: Option<Aggregation>,
}

fn create_view(views: &FleetViews, body: &[u8]) -> Response {
    let request: CreateView = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(error) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"message": format!(
                    "invalid view definition: {error}; expected {{\"queryString\": \"...\", \
                     \"aggregation\": {{\"type\": \"statistics\", \"field\": \"...\"}}}}"
                )}),
            );
        }
    };
    let aggregation = request.aggregation.unwrap_or(Aggregation::Search);
    match views.create(request.query_string, aggregation) {
        Ok(definition) => json_response(StatusCode::CREATED, &json!(definition)),
        Err(error) => view_error(&error),
    }
}

fn read_view(views: &FleetViews, id: u64, query: &HashMap<String, String>) -> Response {
    let max_results = match query.get("maxResults").map(|text| text.parse::<usize>()) {
        None => DEFAULT_MAX_RESULTS,
        Some(Ok(count)) if (1..=1000).contains(&count) => count,
        Some(_) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"message": "maxResults must be an integer from 1 to 1000"}),
            );
        }
    };
    match views.current(id) {
        Ok(view) => {
            let answer = render(
                &view,
                max_results,
                query.get("nextToken").map(String::as_str),
            );
            json_response(
                StatusCode::OK,
                &json!({"view": view.definition, "answer": answer}),
            )
        }
        Err(error) => view_error(&error),
    }
}

/// Streams the accepted updates of one shadow (classic, or `shadow` when named).
fn watch_shadow(views: &Arc<FleetViews>, thing: String, shadow: Option<String>) -> Response {
    let watched = thing.clone();
    let logic = move |candidate: &str, shadows: &[&ThingShadow]| -> Option<String> {
        if candidate != watched {
            return None;
        }
        let (_, version) = shadows.iter().find(|(name, _)| *name == shadow)?;
        let document = get_document(
            &version.shadow,
            version.delta(),
            version.updated_at_s(),
            version.client_token.as_deref(),
        );
        Some(document.to_string())
    };
    let (view, guard) = views.watch(Arc::new(logic));
    change_stream(view.subscribe(), views.closing(), Some(guard), true)
}

/// Turns a view's change receiver into an SSE response. Each event carries the change, with
/// the dataflow time as its id. A watch of one shadow sends only the new versions.
fn change_stream(
    receiver: broadcast::Receiver<ViewChange>,
    closing: tokio::sync::watch::Receiver<bool>,
    guard: Option<TemporaryView>,
    only_insertions: bool,
) -> Response {
    let events = events(receiver, closing, guard, only_insertions);
    warp::sse::reply(warp::sse::keep_alive().stream(events)).into_response()
}

/// State of one change stream: the changes, the stop signal, and the temporary view it owns.
type StreamState = (
    broadcast::Receiver<ViewChange>,
    tokio::sync::watch::Receiver<bool>,
    Option<TemporaryView>,
);

fn events(
    receiver: broadcast::Receiver<ViewChange>,
    closing: tokio::sync::watch::Receiver<bool>,
    guard: Option<TemporaryView>,
    only_insertions: bool,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let state: StreamState = (receiver, closing, guard);
    stream::unfold(
        state,
        move |(mut receiver, mut closing, guard)| async move {
            loop {
                let received = tokio::select! {
                    received = receiver.recv() => received,
                    _ = closing.wait_for(|closed| *closed) => return None,
                };
                let event = match received {
                    Ok(change) if only_insertions && change.diff < 0 => continue,
                    Ok(change) => Event::default()
                        .id(change.time.to_string())
                        .event(if change.diff > 0 { "insert" } else { "retract" })
                        .json_data(&change)
                        .unwrap_or_else(|_| Event::default().comment("unencodable change")),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        Event::default().event("lagged").data(format!(
                            "{missed} changes were dropped because this stream fell behind; read \
                         the view again"
                        ))
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                return Some((Ok(event), (receiver, closing, guard)));
            }
        },
    )
}

fn body_error(error: &BodyError) -> Response {
    match error {
        BodyError::TooLarge => json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &json!({"message": format!("the request body exceeds {MAX_BODY_BYTES} bytes")}),
        ),
        BodyError::Read(error) => json_response(
            StatusCode::BAD_REQUEST,
            &json!({"message": format!("reading the request body failed: {error}")}),
        ),
    }
}

fn view_error(error: &ViewError) -> Response {
    let status = match error {
        ViewError::Invalid(_) => StatusCode::BAD_REQUEST,
        ViewError::NotFound(_) => StatusCode::NOT_FOUND,
        ViewError::TimedOut(_) => StatusCode::SERVICE_UNAVAILABLE,
        ViewError::Store { .. } => {
            tracing::error!(error = %error, "storing view definitions failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    json_response(status, &json!({"message": error.to_string()}))
}

fn fleet_error(error: &FleetApiError) -> Response {
    let status = StatusCode::from_u16(error.status_code()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = json_response(status, &error.to_document());
    if let Ok(value) = warp::http::HeaderValue::from_str(error.error_type()) {
        response.headers_mut().insert("x-amzn-ErrorType", value);
    }
    response
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = Response::new(body.to_string().into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("application/json"),
    );
    response
}
