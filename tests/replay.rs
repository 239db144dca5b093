//! Replay of real data sets into `serve`, over MQTT and in-process.
//!
//! Every published update is applied, the final shadow of each device contains its last
//! reported values, and the history has one row per update.

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use ingest::replay::{Dataset, DatasetReader};
use serde_json::{Map, Value};
use support::{Http, Service, datasets_dir, read_history};

/// Merges `patch` into `target` as a reported update does (no nulls occur in replayed rows).
fn merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match (target.get_mut(key), value) {
            (Some(Value::Object(existing)), Value::Object(inner)) => merge(existing, inner),
            _ => {
                target.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Computes the expected final reported state and update count of every thing in the data set.
fn expected_shadows(
    dataset: Dataset,
    path: &std::path::Path,
) -> BTreeMap<String, (Map<String, Value>, u64)> {
    let reader = DatasetReader::open(&[path.to_owned()], dataset).expect("open data set");
    let mut expected: BTreeMap<String, (Map<String, Value>, u64)> = BTreeMap::new();
    for row in reader {
        let row = row.expect("readable row");
        for update in row.outcome.unwrap_or_default() {
            let entry = expected.entry(update.thing_name).or_default();
            merge(&mut entry.0, &update.reported);
            entry.1 += 1;
        }
    }
    expected
}

/// Polls the shadow of each thing until its version reaches the expected update count, then
/// checks its reported state.
fn assert_final_shadows(app: &Http, expected: &BTreeMap<String, (Map<String, Value>, u64)>) {
    for (thing, (reported, count)) in expected {
        let mut shadow = Value::Null;
        for _ in 0..600 {
            let (status, body) = app.get(&format!("/things/{thing}/shadow"));
            shadow = body;
            if status == 200 && shadow["version"].as_u64() == Some(*count) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(
            shadow["version"].as_u64(),
            Some(*count),
            "every update of {thing} applied: {shadow}"
        );
        assert_eq!(
            shadow["state"]["reported"],
            Value::Object(reported.clone()),
            "final state of {thing}"
        );
    }
}

/// Checks the history: `total` rows, all from `origin`, versions 1..=n per thing.
fn assert_history(history: &std::path::Path, total: u64, origin: &str) {
    let rows = read_history(history);
    assert_eq!(
        rows.len() as u64,
        total,
        "one history row per published update"
    );
    assert!(
        rows.iter().all(|row| row["origin"] == origin),
        "every row has origin {origin}"
    );
    let mut versions: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for row in &rows {
        let thing = row["thing_name"].as_str().expect("thing_name").to_owned();
        versions
            .entry(thing)
            .or_default()
            .push(row["version"].as_i64().expect("version"));
    }
    for (thing, mut list) in versions {
        list.sort_unstable();
        let contiguous: Vec<i64> = (1..=list.len() as i64).collect();
        assert_eq!(
            list, contiguous,
            "versions of {thing} are 1..=n without gaps or duplicates"
        );
    }
}

/// The Chicago data set fed into the dataflow in-process, without MQTT.
#[test]
fn chicago_in_process_replay_has_replay_origin() {
    let path = datasets_dir().join("chicago-beach-water-sensors");
    let expected = expected_shadows(Dataset::Chicago, &path);
    let total: u64 = expected.values().map(|(_, count)| count).sum();

    let data = tempfile::tempdir().expect("temp dir");
    let path_text = path.to_str().expect("UTF-8 path").to_owned();
    let service = Service::start_embedded_with(
        &["--replay", &path_text, "--replay-dataset", "chicago"],
        data.path(),
        2,
    );
    assert_final_shadows(&Http::new(&service.http), &expected);

    let data_dir = service.data_dir.clone();
    let (status, stderr) = service.stop();
    assert!(
        status.success(),
        "shadowflow exited with {status}; stderr:\n{stderr}"
    );
    assert_history(&data_dir.join("history"), total, "replay");
}

/// Replays `folder` of `dataset` through `shadowflow replay` into the embedded broker and checks
/// the final shadows and the history.
fn replay_over_mqtt(dataset: Dataset, folder: &str) {
    let path = datasets_dir().join(folder);
    let expected = expected_shadows(dataset, &path);
    let total: u64 = expected.values().map(|(_, count)| count).sum();

    let data = tempfile::tempdir().expect("temp dir");
    let service = Service::start_embedded(data.path(), 2);
    let output = Command::new(env!("CARGO_BIN_EXE_shadowflow"))
        .args([
            "replay",
            "--dataset",
            &dataset.to_string(),
            "--mqtt",
            &service.mqtt,
        ])
        .arg(&path)
        .output()
        .expect("run shadowflow replay");
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "replay failed: {}\n{summary}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        summary.contains(&format!("updates published  {total} ")),
        "summary: {summary}"
    );

    assert_final_shadows(&Http::new(&service.http), &expected);

    let data_dir = service.data_dir.clone();
    let (status, stderr) = service.stop();
    assert!(
        status.success(),
        "shadowflow exited with {status}; stderr:\n{stderr}"
    );
    assert_history(&data_dir.join("history"), total, "mqtt");
}

/// The occupancy data set (7 things, 70,902 updates) through the embedded broker.
#[test]
fn occupancy_replay_reaches_every_shadow() {
    replay_over_mqtt(Dataset::Occupancy, "uci-room-occupancy-estimation");
}

/// All 420,768 rows of the Beijing data set (12 stations) through the embedded broker: each
/// station's shadow ends at version 35,064 with the values of its last row.
#[test]
fn beijing_replay_reaches_every_shadow() {
    replay_over_mqtt(Dataset::Beijing, "beijing-multisite-air-quality");
}
