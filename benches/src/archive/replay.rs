//! Real data sets turned into update payloads, stored shadows and history rows.
//!
//! [`read_updates`] reads a data set with `ingest`'s replay reader and encodes each update as
//! `shadowflow replay` publishes it: `{"state":{"reported":{..}},"clientToken":"replay-N"}`.
//! [`ShadowReplay`] then applies the payloads with `pipeline::shadow` as the dataflow does
//! (decode, merge, delta) and builds the history row of each accepted update, with the columns
//! that the service fills in.
//!
//! # Notes
//! - `accepted_at` is synthetic: a fixed start plus a fixed step per row, because the service
//!   stamps its own clock, not the data set's. The default step spreads the rows at the rate of
//!   a measured MQTT replay of the Beijing data set, 23,400 rows/s.
//! - Only updates are built. The data sets have no deletes, desired state or named shadows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ingest::replay::{Dataset, DatasetReader};
use pipeline::history::{ChangeKind, HistoryRow, Origin};
use pipeline::shadow::{Limits, Shadow, apply_update, compute_delta, decode_update};
use serde_json::{Map, Value};

/// Environment variable that names the folder with one subfolder per data set.
pub const DATASETS_ENV: &str = "SHADOWFLOW_DATASETS";

/// `accepted_at` of the first history row: 2026-12-05T00:00:00Z, in ms since the Unix epoch.
pub const FIRST_ACCEPTED_AT_MS: i64 = 1_796_428_800_000;

/// Default rows per second of the synthetic `accepted_at` clock.
pub const DEFAULT_ROWS_PER_SECOND: u32 = 23_400;

/// One update of one thing, as a device would publish it.
#[derive(Clone, Debug)]
pub struct UpdatePayload {
    /// Thing name from the data set's device id.
    pub thing_name: String,
    /// The `/update` payload.
    pub payload: Vec<u8>,
}

/// Returns the folder of the raw data sets: `$SHADOWFLOW_DATASETS`, or `../shared/datasets/raw`
/// beside the workspace root.
pub fn datasets_root() -> PathBuf {
    match std::env::var_os(DATASETS_ENV) {
        Some(folder) => PathBuf::from(folder),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets/raw"),
    }
}

/// Returns the subfolder of `root` that contains `dataset`'s files.
pub fn dataset_folder(root: &Path, dataset: Dataset) -> PathBuf {
    let name = match dataset {
        Dataset::Beijing => "beijing-multisite-air-quality",
        Dataset::Chicago => "chicago-beach-water-sensors",
        Dataset::Occupancy => "uci-room-occupancy-estimation",
    };
    root.join(name)
}

/// Reads up to `limit` rows of `dataset` from `folder` and returns their updates in file order.
/// Rows that yield no update are skipped, as the replay skips them.
///
/// # Errors
/// Fails when the folder has no CSV files of the data set or a file cannot be read.
pub fn read_updates(
    folder: &Path,
    dataset: Dataset,
    limit: Option<u64>,
) -> anyhow::Result<Vec<UpdatePayload>> {
    let reader = DatasetReader::open(&[folder.to_path_buf()], dataset)
        .with_context(|| format!("opening the {dataset} data set in {}", folder.display()))?
        .with_limit(limit);

    let mut updates = Vec::new();
    for row in reader {
        let row = row.with_context(|| format!("reading the {dataset} data set"))?;
        let Ok(thing_updates) = row.outcome else {
            continue;
        };
        let client_token = format!("replay-{}", row.row_number);
        for update in thing_updates {
            updates.push(UpdatePayload {
                payload: encode_reported(update.reported, &client_token),
                thing_name: update.thing_name,
            });
        }
    }
    if updates.is_empty() {
        bail!(
            "the {dataset} data set in {} has no updates",
            folder.display()
        );
    }
    Ok(updates)
}

/// Encodes `{"state":{"reported":REPORTED},"clientToken":TOKEN}`.
pub fn encode_reported(reported: Map<String, Value>, client_token: &str) -> Vec<u8> {
    let payload = serde_json::json!({
        "state": { "reported": Value::Object(reported) },
        "clientToken": client_token,
    });
    serde_json::to_vec(&payload).expect("a JSON object with string keys always serialises")
}

/// The shadows of a replay, applied update by update as the dataflow applies them.
pub struct ShadowReplay {
    limits: Limits,
    shadows: HashMap<String, Shadow>,
    origin: Origin,
    next_accepted_at_ms: f64,
    step_ms: f64,
}

impl ShadowReplay {
    /// Starts with no shadows. `origin` goes into every history row, and `rows_per_second`
    /// sets the step of the synthetic `accepted_at` clock.
    pub fn new(origin: Origin, rows_per_second: u32) -> Self {
        Self {
            limits: Limits::default(),
            shadows: HashMap::new(),
            origin,
            next_accepted_at_ms: FIRST_ACCEPTED_AT_MS as f64,
            step_ms: 1000.0 / f64::from(rows_per_second.max(1)),
        }
    }

    /// Applies one update and returns its history row.
    ///
    /// # Errors
    /// Fails when the payload is rejected: invalid, too deep, or too large after the merge.
    pub fn apply(&mut self, update: &UpdatePayload) -> anyhow::Result<HistoryRow> {
        let request = decode_update(&update.payload, &self.limits).map_err(|rejected| {
            anyhow::anyhow!(
                "update of {} rejected: {}",
                update.thing_name,
                rejected.error.message()
            )
        })?;
        let accepted_at_ms = self.next_accepted_at_ms as i64;
        self.next_accepted_at_ms += self.step_ms;

        let current = self.shadows.get(&update.thing_name);
        let shadow = apply_update(
            current,
            0,
            &request,
            accepted_at_ms.div_euclid(1000),
            &self.limits,
        )
        .map_err(|error| {
            anyhow::anyhow!(
                "update of {} rejected: {}",
                update.thing_name,
                error.message()
            )
        })?;

        let row = HistoryRow {
            thing_name: update.thing_name.clone(),
            shadow_name: None,
            change: ChangeKind::Update,
            version: shadow.version(),
            accepted_at_ms,
            origin: self.origin,
            client_token: request.client_token().map(str::to_owned),
            request_state: Some(request.state_json()),
            desired: shadow.desired_json(),
            reported: shadow.reported_json(),
            delta: compute_delta(&shadow).map(|delta| delta.state_json()),
        };
        self.shadows.insert(update.thing_name.clone(), shadow);
        Ok(row)
    }

    /// Returns the stored shadow of `thing`, if an update created it.
    pub fn shadow(&self, thing: &str) -> Option<&Shadow> {
        self.shadows.get(thing)
    }
}

/// Applies every update in order and returns their history rows.
///
/// # Errors
/// Fails on the first rejected update.
pub fn history_rows(
    updates: &[UpdatePayload],
    rows_per_second: u32,
) -> anyhow::Result<Vec<HistoryRow>> {
    let mut replay = ShadowReplay::new(Origin::Mqtt, rows_per_second);
    updates.iter().map(|update| replay.apply(update)).collect()
}
