//! The registry of views: creating, listing, reading and dropping them, and keeping their
//! definitions across restarts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use pipeline::dataflow::{Time, ViewCommand, ViewControl, ViewLogic, ViewSink, ViewSpec};
use pipeline::fleet::{
    Bucket, FieldType, Query, QueryLimits, Statistics, buckets, buckets_document,
    cardinality_document, percentiles, percentiles_document,
};
use serde_json::{Value, json};

use super::view::{Aggregation, LiveView, ViewDefinition, row_logic};

/// Id of the built-in view of things with a pending delta.
pub const OUT_OF_SYNC_VIEW: u64 = 1;

/// Ids below this are reserved for built-in views.
const FIRST_USER_VIEW: u64 = 100;

/// Ids of temporary views, for one-off queries, start here.
const FIRST_TEMPORARY_VIEW: u64 = 1 << 62;

/// How long a read waits for a view to catch up with the acknowledged changes.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Failure of a view request.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The query or aggregation is invalid.
    #[error("{0}")]
    Invalid(String),
    /// No view has this id.
    #[error("no view has id {0}")]
    NotFound(u64),
    /// The view did not catch up in time.
    #[error("the view did not reflect the latest changes within {0:?}; retry")]
    TimedOut(Duration),
    /// The definitions could not be stored.
    #[error("storing the view definitions in {path} failed: {source}")]
    Store {
        /// The definitions file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Returns the first time of the dataflow's open epoch (see `RequestSender::open_time`).
pub type OpenTime = Arc<dyn Fn() -> Time + Send + Sync>;

/// Every view of the service.
pub struct FleetViews {
    control: Arc<ViewControl>,
    open_time: OpenTime,
    workers: usize,
    views: RwLock<BTreeMap<u64, Arc<LiveView>>>,
    next_id: AtomicU64,
    next_temporary: AtomicU64,
    store: Option<PathBuf>,
    /// Turns true when the service stops, which ends every change stream.
    closing: tokio::sync::watch::Sender<bool>,
}

impl FleetViews {
    /// Creates the registry, installs the built-in view and the views stored in `store`.
    ///
    /// # Errors
    /// Returns what is wrong with the stored definitions.
    pub fn start(
        control: Arc<ViewControl>,
        open_time: OpenTime,
        workers: usize,
        store: Option<PathBuf>,
    ) -> Result<Self, ViewError> {
        let stored: Vec<ViewDefinition> = match &store {
            Some(path) if path.exists() => {
                let text = std::fs::read(path).map_err(|source| ViewError::Store {
                    path: path.clone(),
                    source,
                })?;
                serde_json::from_slice(&text).map_err(|error| {
                    ViewError::Invalid(format!(
                        "the view definitions in {} are invalid ({error}); fix or remove the file",
                        path.display()
                    ))
                })?
            }
            _ => Vec::new(),
        };
        let next_id = stored
            .iter()
            .map(|definition| definition.id + 1)
            .max()
            .unwrap_or(FIRST_USER_VIEW)
            .max(FIRST_USER_VIEW);
        let registry = FleetViews {
            control,
            open_time,
            workers,
            views: RwLock::new(BTreeMap::new()),
            next_id: AtomicU64::new(next_id),
            next_temporary: AtomicU64::new(FIRST_TEMPORARY_VIEW),
            store,
            closing: tokio::sync::watch::Sender::new(false),
        };
        registry.install(ViewDefinition {
            id: OUT_OF_SYNC_VIEW,
            query_string: "*".to_owned(),
            aggregation: Aggregation::OutOfSync,
        })?;
        for definition in stored {
            registry.install(definition)?;
        }
        Ok(registry)
    }

    /// Registers a new view and returns its definition with its id.
    ///
    /// # Errors
    /// Returns [`ViewError::Invalid`] for a bad query or field, and [`ViewError::Store`] when
    /// the definition cannot be stored.
    pub fn create(
        &self,
        query_string: String,
        aggregation: Aggregation,
    ) -> Result<ViewDefinition, ViewError> {
        let definition = ViewDefinition {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            query_string,
            aggregation,
        };
        self.install(definition.clone())?;
        if let Err(error) = self.save() {
            self.remove(definition.id)?;
            return Err(error);
        }
        Ok(definition)
    }

    /// Drops a view and frees its memory.
    ///
    /// # Errors
    /// Returns [`ViewError::NotFound`] for an unknown or built-in id.
    pub fn delete(&self, id: u64) -> Result<(), ViewError> {
        if id < FIRST_USER_VIEW {
            return Err(ViewError::Invalid(format!(
                "view {id} is built in and cannot be deleted"
            )));
        }
        self.remove(id)?;
        self.save()
    }

    /// Ends every change stream, so the HTTP server can stop.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Returns a receiver that turns true when the service stops.
    pub(crate) fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Returns every view's definition.
    pub fn definitions(&self) -> Vec<ViewDefinition> {
        self.views
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|view| view.definition.id < FIRST_TEMPORARY_VIEW)
            .map(|view| view.definition.clone())
            .collect()
    }

    /// Returns the view with `id`, once it reflects every change acknowledged before the call.
    ///
    /// # Errors
    /// Returns [`ViewError::NotFound`] or [`ViewError::TimedOut`].
    pub fn current(&self, id: u64) -> Result<Arc<LiveView>, ViewError> {
        let view = self.get(id)?;
        let time = (self.open_time)();
        if !view.wait_until(time, READ_TIMEOUT) {
            return Err(ViewError::TimedOut(READ_TIMEOUT));
        }
        Ok(view)
    }

    /// Returns the view with `id` without waiting.
    ///
    /// # Errors
    /// Returns [`ViewError::NotFound`].
    pub fn get(&self, id: u64) -> Result<Arc<LiveView>, ViewError> {
        self.views
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
            .ok_or(ViewError::NotFound(id))
    }

    /// Evaluates a one-off query: installs a temporary view, waits until it reflects every
    /// acknowledged change, renders it with `render`, and drops it.
    ///
    /// # Errors
    /// Returns [`ViewError::Invalid`] or [`ViewError::TimedOut`].
    pub fn once<T>(
        &self,
        query_string: String,
        aggregation: Aggregation,
        render: impl FnOnce(&LiveView) -> T,
    ) -> Result<T, ViewError> {
        let id = self.next_temporary.fetch_add(1, Ordering::Relaxed);
        self.install(ViewDefinition {
            id,
            query_string,
            aggregation,
        })?;
        let result = self.current(id).map(|view| render(&view));
        self.remove(id)?;
        result
    }

    /// Installs a temporary view with its own row logic, for watching, and returns it with
    /// a guard that drops it.
    pub(crate) fn watch(self: &Arc<Self>, logic: Arc<ViewLogic>) -> (Arc<LiveView>, TemporaryView) {
        let id = self.next_temporary.fetch_add(1, Ordering::Relaxed);
        let definition = ViewDefinition {
            id,
            query_string: String::new(),
            aggregation: Aggregation::Search,
        };
        let view = self.install_logic(definition, logic);
        let guard = TemporaryView {
            registry: Arc::clone(self),
            id,
        };
        (view, guard)
    }

    fn install(&self, definition: ViewDefinition) -> Result<(), ViewError> {
        let query = Query::parse_with_limits(&definition.query_string, &QueryLimits::default())
            .map_err(|error| ViewError::Invalid(error.to_string()))?;
        let field = definition
            .field()
            .map(pipeline::fleet::Field::parse)
            .transpose()
            .map_err(|error| ViewError::Invalid(format!("invalid aggregation field: {error}")))?;
        let logic = Arc::new(row_logic(query, &definition.aggregation, field));
        self.install_logic(definition, logic);
        Ok(())
    }

    fn install_logic(&self, definition: ViewDefinition, logic: Arc<ViewLogic>) -> Arc<LiveView> {
        let view = Arc::new(LiveView::new(definition.clone(), self.workers));
        let spec = ViewSpec {
            id: definition.id,
            logic,
            sink: Arc::clone(&view) as Arc<dyn ViewSink>,
        };
        self.views
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(definition.id, Arc::clone(&view));
        self.control.send(&ViewCommand::Install(spec));
        view
    }

    fn remove(&self, id: u64) -> Result<(), ViewError> {
        let removed = self
            .views
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        if removed.is_none() {
            return Err(ViewError::NotFound(id));
        }
        self.control.send(&ViewCommand::Remove(id));
        Ok(())
    }

    /// Writes the user views' definitions atomically.
    fn save(&self) -> Result<(), ViewError> {
        let Some(path) = &self.store else {
            return Ok(());
        };
        let definitions: Vec<ViewDefinition> = self
            .definitions()
            .into_iter()
            .filter(|definition| definition.id >= FIRST_USER_VIEW)
            .collect();
        let store = |source| ViewError::Store {
            path: path.clone(),
            source,
        };
        let text = serde_json::to_vec_pretty(&definitions).map_err(|error| store(error.into()))?;
        let temporary = path.with_extension("json.tmp");
        std::fs::write(&temporary, text).map_err(store)?;
        std::fs::File::open(&temporary)
            .and_then(|file| file.sync_all())
            .map_err(store)?;
        std::fs::rename(&temporary, path).map_err(store)?;
        if let Some(parent) = path.parent() {
            std::fs::File::open(parent)
                .and_then(|dir| dir.sync_all())
                .map_err(store)?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for FleetViews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetViews")
            .field("workers", &self.workers)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Drops a temporary view when it goes out of scope.
pub(crate) struct TemporaryView {
    registry: Arc<FleetViews>,
    id: u64,
}

impl Drop for TemporaryView {
    fn drop(&mut self) {
        let _ = self.registry.remove(self.id);
    }
}

/// Renders a view's current result.
///
/// Search views page through the matching things in name order: `max_results` per page,
/// starting after `next_token` (the last thing name of the previous page).
pub fn render(view: &LiveView, max_results: usize, next_token: Option<&str>) -> Value {
    view.read(|answer| match &view.definition.aggregation {
        Aggregation::Search => {
            let mut things = Vec::new();
            let mut last = None;
            let mut more = false;
            let range = answer
                .rows
                .iter()
                .filter(|(thing, _)| next_token.is_none_or(|token| thing.as_str() > token));
            for (thing, row) in range {
                if things.len() == max_results {
                    more = true;
                    break;
                }
                things.push(serde_json::from_str::<Value>(row).unwrap_or(Value::Null));
                last = Some(thing.clone());
            }
            let token = if more { last } else { None };
            pipeline::fleet::search_index_document(things, token.as_deref())
        }
        Aggregation::Statistics { .. } => {
            let field_type = FieldType::infer(&answer.values);
            Statistics::compute(&answer.values, field_type).to_document()
        }
        Aggregation::Cardinality { .. } => cardinality_document(&answer.values),
        Aggregation::Percentiles { percents, .. } => {
            percentiles_document(&percentiles(&answer.values, percents))
        }
        Aggregation::Buckets { max_buckets, .. } => {
            let found: Vec<Bucket> = buckets(&answer.values, *max_buckets);
            buckets_document(&found, answer.rows.len() as u64)
        }
        Aggregation::OutOfSync => {
            let now_s = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs() as i64);
            let things: Vec<Value> = answer
                .rows
                .iter()
                .map(|(thing, row)| {
                    let mut entry = serde_json::from_str::<Value>(row).unwrap_or(Value::Null);
                    let since = entry["pendingSince"].as_i64();
                    entry["thingName"] = json!(thing);
                    entry["ageSeconds"] = json!(since.map(|since| (now_s - since).max(0)));
                    entry
                })
                .collect();
            json!({"things": things, "count": answer.rows.len()})
        }
    })
}
