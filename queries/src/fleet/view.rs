//! One live view: its definition, its current result, and the stream of its changes.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use pipeline::dataflow::{ThingShadow, Time, ViewSink};
use pipeline::fleet::{AggregationValue, Field, FleetDocument, Query, ValueCounts};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// Changes a lagging change stream may fall behind before it misses some.
const CHANGE_BUFFER: usize = 4096;

/// Computation of a view over the things its query matches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "type"
)]
pub enum Aggregation {
    /// The matching things with their shadows (as SearchIndex returns them).
    Search,
    /// AWS GetStatistics over a field.
    Statistics {
        /// The aggregated field.
        field: String,
    },
    /// AWS GetCardinality over a field.
    Cardinality {
        /// The aggregated field.
        field: String,
    },
    /// AWS GetPercentiles over a field.
    Percentiles {
        /// The aggregated field.
        field: String,
        /// Percents to report, each from 0 to 100.
        percents: Vec<f64>,
    },
    /// AWS GetBucketsAggregation (terms) over a field.
    Buckets {
        /// The aggregated field.
        field: String,
        /// Maximum number of buckets to return.
        max_buckets: usize,
    },
    /// Things with a pending delta, with the time their oldest pending desired value was set.
    OutOfSync,
}

/// A view as clients define it and as the service stores it across restarts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewDefinition {
    /// Id of the view.
    pub id: u64,
    /// Fleet-indexing query that selects the things.
    pub query_string: String,
    /// Computation over the matching things.
    pub aggregation: Aggregation,
}

impl ViewDefinition {
    /// Returns the aggregated field, for the aggregations that have one.
    pub fn field(&self) -> Option<&str> {
        match &self.aggregation {
            Aggregation::Statistics { field }
            | Aggregation::Cardinality { field }
            | Aggregation::Percentiles { field, .. }
            | Aggregation::Buckets { field, .. } => Some(field),
            Aggregation::Search | Aggregation::OutOfSync => None,
        }
    }
}

/// Returns the function that turns one thing's shadows into the view's row for that thing.
///
/// Rows are JSON text: the thing's search document for `Search`, the array of the field's
/// values for the field aggregations, and the pending-delta summary for `OutOfSync`.
pub fn row_logic(
    query: Query,
    aggregation: &Aggregation,
    field: Option<Field>,
) -> impl Fn(&str, &[&ThingShadow]) -> Option<String> + Send + Sync + 'static {
    let aggregation = aggregation.clone();
    move |thing: &str, shadows: &[&ThingShadow]| {
        let document = FleetDocument::from_shadows(thing, shadows);
        if !query.matches(&document) {
            return None;
        }
        let row = match &aggregation {
            Aggregation::Search => search_row(thing, shadows),
            Aggregation::OutOfSync => out_of_sync_row(shadows)?,
            _ => {
                let values = field
                    .as_ref()
                    .map(|field| document.values(field))
                    .unwrap_or_default();
                Value::Array(values.iter().map(value_json).collect())
            }
        };
        Some(row.to_string())
    }
}

fn search_row(thing: &str, shadows: &[&ThingShadow]) -> Value {
    let classic = shadows
        .iter()
        .find(|(name, _)| name.is_none())
        .map(|(_, version)| version.as_ref());
    let named: Vec<(&str, &pipeline::dataflow::ShadowVersion)> = shadows
        .iter()
        .filter_map(|(name, version)| name.as_deref().map(|name| (name, version.as_ref())))
        .collect();
    pipeline::fleet::thing_document(thing, classic, &named)
}

/// Returns the pending deltas of a thing's shadows, or `None` when none has a delta.
fn out_of_sync_row(shadows: &[&ThingShadow]) -> Option<Value> {
    let mut pending = Vec::new();
    for (name, version) in shadows {
        if let Some(delta) = version.delta() {
            pending.push(json!({
                "shadowName": name,
                "pendingSince": delta.oldest_timestamp(),
                "version": version.version(),
            }));
        }
    }
    if pending.is_empty() {
        return None;
    }
    let oldest = pending
        .iter()
        .filter_map(|entry| entry["pendingSince"].as_i64())
        .min();
    Some(json!({"pendingSince": oldest, "shadows": pending}))
}

fn value_json(value: &AggregationValue) -> Value {
    match value {
        AggregationValue::Bool(value) => Value::Bool(*value),
        AggregationValue::Number(number) => json!(number.get()),
        AggregationValue::String(text) => Value::String(text.clone()),
    }
}

fn json_value(value: &Value) -> Option<AggregationValue> {
    match value {
        Value::Bool(value) => Some(AggregationValue::Bool(*value)),
        Value::Number(number) => number.as_f64().map(AggregationValue::number),
        Value::String(text) => Some(AggregationValue::String(text.clone())),
        _ => None,
    }
}

/// One change of a view, as the change stream sends it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewChange {
    /// Dataflow time of the change.
    pub time: Time,
    /// Thing whose row changed.
    pub thing_name: String,
    /// The row, as JSON.
    pub row: Value,
    /// +1 when the row entered the result, -1 when it left.
    pub diff: isize,
}

/// Current result of a view: each matching thing's row, and the multiset of aggregated values.
#[derive(Default)]
pub struct Answer {
    /// Row of each matching thing, in thing-name order.
    pub rows: BTreeMap<String, String>,
    /// Values of the aggregated field over all matching things.
    pub values: ValueCounts,
}

/// A view installed in the dataflow: it receives the view's changes from every worker.
pub struct LiveView {
    /// The view's definition.
    pub definition: ViewDefinition,
    answer: Mutex<Answer>,
    /// Frontier of each worker: every change before it has arrived (`None`: all of them).
    frontiers: Mutex<Vec<Option<Time>>>,
    progressed: Condvar,
    changes: broadcast::Sender<ViewChange>,
}

impl LiveView {
    /// Creates the receiving side of a view on `workers` workers.
    pub fn new(definition: ViewDefinition, workers: usize) -> Self {
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        LiveView {
            definition,
            answer: Mutex::new(Answer::default()),
            frontiers: Mutex::new(vec![Some(0); workers]),
            progressed: Condvar::new(),
            changes,
        }
    }

    /// Waits until every worker has sent every change before `time`, or `timeout` passes.
    /// Returns whether the answer is complete up to `time`.
    pub fn wait_until(&self, time: Time, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut frontiers = self
            .frontiers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            let complete = frontiers
                .iter()
                .all(|frontier| frontier.is_none_or(|frontier| frontier >= time));
            if complete {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            frontiers = self
                .progressed
                .wait_timeout(frontiers, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Runs `read` on the current answer.
    pub fn read<T>(&self, read: impl FnOnce(&Answer) -> T) -> T {
        read(&self.answer.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Returns a receiver of the view's changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ViewChange> {
        self.changes.subscribe()
    }
}

impl ViewSink for LiveView {
    fn changes(&self, _worker: usize, changes: Vec<((String, String), Time, isize)>) {
        let mut answer = self.answer.lock().unwrap_or_else(PoisonError::into_inner);
        let aggregates = self.definition.field().is_some();
        // Insertions first, so that a row replaced within one batch never counts below zero.
        let (insertions, retractions): (Vec<_>, Vec<_>) =
            changes.into_iter().partition(|(_, _, diff)| *diff > 0);
        for ((thing, row), time, diff) in insertions.into_iter().chain(retractions) {
            let parsed: Value = serde_json::from_str(&row).unwrap_or(Value::Null);
            if aggregates && let Value::Array(values) = &parsed {
                for value in values.iter().filter_map(json_value) {
                    if let Err(error) = answer.values.update(value, diff as i64) {
                        tracing::error!(view = self.definition.id, error = %error,
                            "a view's values went out of step with its rows");
                    }
                }
            }
            if diff > 0 {
                answer.rows.insert(thing.clone(), row);
            } else if answer.rows.get(&thing) == Some(&row) {
                answer.rows.remove(&thing);
            }
            // Sending fails when no stream is open, which is normal.
            let _ = self.changes.send(ViewChange {
                time,
                thing_name: thing,
                row: parsed,
                diff,
            });
        }
    }

    fn frontier(&self, worker: usize, frontier: Option<Time>) {
        let mut frontiers = self
            .frontiers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = frontiers.get_mut(worker) {
            *slot = frontier;
        }
        self.progressed.notify_all();
    }
}
