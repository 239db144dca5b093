//! Inputs of the shadow benchmarks: shapes of the real data sets and synthetic documents.

use ingest::replay::Dataset;
use pipeline::history::Origin;
use pipeline::shadow::{Limits, Shadow, UpdateRequest, apply_update, decode_update};
use serde_json::{Map, Value, json};
use shadowflow_benches::archive::replay::{
    ShadowReplay, UpdatePayload, dataset_folder, datasets_root, read_updates,
};

/// CSV rows read from each data set: enough for every device to have its shadow.
const DATASET_ROWS: u64 = 2_000;

/// `now_s` of the benchmarked updates.
pub const NOW_S: i64 = 1_796_428_800;

/// One benchmark input: an update payload and the shadows it applies to.
pub struct ShadowCase {
    /// Criterion case name.
    pub slug: String,
    /// The `/update` payload.
    pub payload: Vec<u8>,
    /// The payload decoded.
    pub request: UpdateRequest,
    /// The stored shadow that the update applies to.
    pub stored: Shadow,
    /// `stored` after the update.
    pub updated: Shadow,
    /// `updated` after an app also set some of its reported keys as desired, to other values,
    /// so that it has a delta.
    pub with_desired: Shadow,
    /// Limits that the case's shadows fit in.
    pub limits: Limits,
}

/// Returns the cases of every data set found under the data-set folder, then the synthetic
/// 1 KB and 8 KB documents. Prints a line on stderr for each data set it skips.
pub fn shadow_cases() -> Vec<ShadowCase> {
    let mut cases = Vec::new();
    let root = datasets_root();
    for dataset in Dataset::ALL {
        let folder = dataset_folder(&root, dataset);
        if !folder.is_dir() {
            eprintln!(
                "skipping the {dataset} cases: {} not found (set SHADOWFLOW_DATASETS to the \
                 folder of the raw data sets)",
                folder.display()
            );
            continue;
        }
        match dataset_case(dataset, &folder) {
            Ok(case) => cases.push(case),
            Err(error) => eprintln!("skipping the {dataset} cases: {error:#}"),
        }
    }
    for target_bytes in [1024, 8 * 1024] {
        cases.push(synthetic_case(target_bytes));
    }
    cases
}

/// Builds the case of a data set: the last update of its first thing, on that thing's shadow
/// after every earlier update of the first rows.
fn dataset_case(dataset: Dataset, folder: &std::path::Path) -> anyhow::Result<ShadowCase> {
    let updates = read_updates(folder, dataset, Some(DATASET_ROWS))?;
    let thing = updates[0].thing_name.clone();
    let last = updates
        .iter()
        .rposition(|update| update.thing_name == thing)
        .expect("the first update is of this thing");

    let mut replay = ShadowReplay::new(Origin::Mqtt, 1);
    for update in &updates[..last] {
        replay.apply(update)?;
    }
    let stored = replay
        .shadow(&thing)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("{thing} has a single update in the first rows"))?;
    let case = build_case(
        format!("{dataset}"),
        &updates[last],
        stored,
        Limits::default(),
    );
    Ok(case)
}

/// Builds a case whose stored shadow reports a synthetic document of about `target_bytes`
/// compact JSON bytes, and whose update reports the same keys with new values.
///
/// The limits allow 64 KiB of state, because the 8 KB document plus its desired keys pass the
/// 8 KiB default.
fn synthetic_case(target_bytes: usize) -> ShadowCase {
    let limits = Limits {
        max_state_bytes: 64 * 1024,
        ..Limits::default()
    };
    let first = UpdatePayload {
        thing_name: "synthetic".to_owned(),
        payload: reported_payload(synthetic_document(target_bytes, 0), "bench-0"),
    };
    let request = decode_update(&first.payload, &limits).expect("synthetic payload is valid");
    let stored = apply_update(None, 0, &request, NOW_S - 60, &limits)
        .expect("synthetic document fits the limits");
    let update = UpdatePayload {
        thing_name: "synthetic".to_owned(),
        payload: reported_payload(synthetic_document(target_bytes, 1), "bench-1"),
    };
    build_case(
        format!("synthetic-{}k", target_bytes / 1024),
        &update,
        stored,
        limits,
    )
}

fn build_case(slug: String, update: &UpdatePayload, stored: Shadow, limits: Limits) -> ShadowCase {
    let request = decode_update(&update.payload, &limits).expect("replayed payload is valid");
    let updated = apply_update(Some(&stored), 0, &request, NOW_S, &limits)
        .expect("the update applies to its own shadow");

    let reported = updated.reported().unwrap_or_default();
    let desired_payload = desired_payload(&reported);
    let desired_request =
        decode_update(&desired_payload, &limits).expect("desired payload is valid");
    let with_desired = apply_update(Some(&updated), 0, &desired_request, NOW_S, &limits)
        .expect("the desired update fits the limits");

    ShadowCase {
        slug,
        payload: update.payload.clone(),
        request,
        stored,
        updated,
        with_desired,
        limits,
    }
}

/// Returns an update that sets every fourth top-level reported key as desired, with a value
/// that differs from the reported one.
fn desired_payload(reported: &Map<String, Value>) -> Vec<u8> {
    let desired: Map<String, Value> = reported
        .iter()
        .step_by(4)
        .map(|(key, value)| (key.clone(), changed(value)))
        .collect();
    serde_json::to_vec(&json!({ "state": { "desired": desired }, "clientToken": "app-1" }))
        .expect("a JSON object always serialises")
}

fn changed(value: &Value) -> Value {
    match value {
        Value::Number(number) => json!(number.as_f64().unwrap_or(0.0) + 1.5),
        Value::String(text) => json!(format!("{text}-set")),
        Value::Bool(flag) => json!(!flag),
        // A nested object: set its first member only, as an app changes one setting.
        Value::Object(members) => Value::Object(
            members
                .iter()
                .take(1)
                .map(|(key, value)| (key.clone(), changed(value)))
                .collect(),
        ),
        _ => json!("set"),
    }
}

fn reported_payload(reported: Map<String, Value>, client_token: &str) -> Vec<u8> {
    shadowflow_benches::archive::replay::encode_reported(reported, client_token)
}

/// Generates a reported document of about `target_bytes` compact JSON bytes: groups of nested
/// objects with numbers, strings, a flag and a small array. `seed` changes every value but no
/// key, as a device's next report would.
pub fn synthetic_document(target_bytes: usize, seed: u64) -> Map<String, Value> {
    let mut document = Map::new();
    let mut group = 0u64;
    while serde_json::to_vec(&document).map_or(0, |bytes| bytes.len()) < target_bytes {
        let value = group * 7 + seed * 3;
        document.insert(
            format!("sensor_{group:03}"),
            json!({
                "temperature": 20.0 + (value % 100) as f64 / 10.0,
                "humidity": 40 + value % 50,
                "status": if value % 3 == 0 { "ok" } else { "degraded" },
                "firmware": format!("1.{}.{}", value % 10, seed),
                "enabled": value % 2 == 0,
                "calibration": { "offset": (value % 13) as f64 / 100.0, "gain": 1 + value % 4 },
                "samples": [value % 11, value % 17, value % 23],
            }),
        );
        group += 1;
    }
    // The last group may pass the target by one group's size (about 200 bytes).
    document
}
