//! History reads over HTTP: `GET /things/{thing}/shadow/history` and the shadow document at
//! `?version=N` or `?at=T`, against a running service and against a replayed real data set.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ingest::replay::{Dataset, DatasetReader};
use serde_json::{Map, Value, json};
use support::{Device, Http, Service, datasets_dir};

/// Maximum time a test polls for the service to reach a state.
const POLL_LIMIT: Duration = Duration::from_secs(20);

/// Writes a service config in which archive files are committed `max_file_age_ms` after their
/// first row, so a test reads rows from committed files and from open files.
fn write_config(dir: &Path, max_file_age_ms: u64) -> PathBuf {
    let path = dir.join("shadowflow.toml");
    std::fs::write(
        &path,
        format!("[archive]\nmax_file_age_ms = {max_file_age_ms}\n"),
    )
    .expect("write the service config");
    path
}

/// Returns the committed archive files under `data_dir`.
fn committed_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(partitions) = std::fs::read_dir(data_dir.join("history")) else {
        return files;
    };
    for partition in partitions.flatten() {
        let Ok(entries) = std::fs::read_dir(partition.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("part-") && name.ends_with(".parquet") {
                files.push(entry.path());
            }
        }
    }
    files
}

/// Reads every change of a shadow through the history route, `limit` per page.
fn all_changes(app: &Http, path: &str, limit: usize) -> Vec<Value> {
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut changes = Vec::new();
    let mut next_token: Option<String> = None;
    // A bound on the pages, so that a token that never ends fails instead of looping.
    for _ in 0..1_000 {
        let mut url = format!("{path}{separator}limit={limit}");
        if let Some(token) = &next_token {
            url.push_str(&format!("&nextToken={token}"));
        }
        let (status, page) = app.get(&url);
        assert_eq!(status, 200, "GET {url}: {page}");
        let listed = page["changes"].as_array().expect("changes is a list");
        assert!(listed.len() <= limit, "page larger than limit {limit}");
        changes.extend(listed.iter().cloned());
        match page["nextToken"].as_str() {
            Some(token) => next_token = Some(token.to_owned()),
            None => return changes,
        }
    }
    panic!("{path} has more than 1,000 pages");
}

/// Returns the version and change kind that `?at=at_ms` must show: the highest position among
/// `changes` (sorted by position) accepted at or before `at_ms`.
fn expected_at(changes: &[Value], at_ms: i64) -> Option<(u64, String)> {
    changes
        .iter()
        .rfind(|change| change["acceptedAt"].as_i64().expect("acceptedAt") <= at_ms)
        .map(|change| {
            (
                change["version"].as_u64().expect("version"),
                change["change"].as_str().expect("change").to_owned(),
            )
        })
}

/// Changes made over HTTP and MQTT, including a delete and a named shadow, read back through
/// the history route and as past documents.
#[test]
fn history_and_past_documents_follow_changes() {
    let data = tempfile::tempdir().expect("temp dir");
    let config = write_config(data.path(), 300);
    let config = config.to_str().expect("UTF-8 path");
    let service = Service::start_embedded_with(&["--config", config], data.path(), 2);
    let app = Http::new(&service.http);
    let shadow = "/things/history-lamp/shadow";
    let mut live_states = BTreeMap::new();
    let mut record_live = |app: &Http| {
        let (status, live) = app.get(shadow);
        assert_eq!(status, 200, "live GET: {live}");
        let version = live["version"].as_u64().expect("live version");
        live_states.insert(version, live["state"].clone());
    };

    // Version 1 over HTTP.
    let (status, body) = app.post(
        shadow,
        r#"{"state":{"desired":{"color":"red"}},"clientToken":"first"}"#,
    );
    assert_eq!(status, 200, "{body}");
    record_live(&app);

    // Version 2 over MQTT, acknowledged on /update/accepted.
    let accepted = "$aws/things/history-lamp/shadow/update/accepted".to_owned();
    let device = Device::connect(
        "history-lamp",
        service.mqtt_port,
        std::slice::from_ref(&accepted),
    );
    device.publish(
        "$aws/things/history-lamp/shadow/update",
        r#"{"state":{"reported":{"color":"red"}}}"#,
    );
    device.expect_on(&accepted);
    record_live(&app);

    // Versions 1 and 2 reach a committed file before the next changes.
    let started = Instant::now();
    while committed_files(&service.data_dir).is_empty() {
        assert!(started.elapsed() < POLL_LIMIT, "no archive file committed");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Version 3, a delete of version 3, and version 4 after the delete.
    let (status, body) = app.post(shadow, r#"{"state":{"desired":{"color":"blue"}}}"#);
    assert_eq!(status, 200, "{body}");
    record_live(&app);
    let (status, body) = app.delete(shadow);
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.post(shadow, r#"{"state":{"reported":{"color":"green"}}}"#);
    assert_eq!(status, 200, "{body}");
    record_live(&app);
    let (status, body) = app.post(
        &format!("{shadow}?name=config"),
        r#"{"state":{"desired":{"mode":"eco"}}}"#,
    );
    assert_eq!(status, 200, "{body}");

    // The history lists every change of the classic shadow, oldest first, right after the
    // acknowledgements.
    let (status, history) = app.get(&format!("{shadow}/history"));
    assert_eq!(status, 200, "{history}");
    assert!(history.get("nextToken").is_none(), "{history}");
    let changes = history["changes"].as_array().expect("changes").clone();
    let summary: Vec<(u64, &str, &str)> = changes
        .iter()
        .map(|change| {
            (
                change["version"].as_u64().expect("version"),
                change["change"].as_str().expect("change"),
                change["origin"].as_str().expect("origin"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "update", "http"),
            (2, "update", "mqtt"),
            (3, "update", "http"),
            (3, "delete", "http"),
            (4, "update", "http"),
        ]
    );
    assert_eq!(changes[0]["clientToken"], "first");
    assert_eq!(changes[0]["state"], json!({"desired": {"color": "red"}}));
    assert_eq!(changes[0]["desired"], json!({"color": "red"}));
    assert_eq!(changes[0]["delta"], json!({"color": "red"}));
    assert!(changes[1].get("delta").is_none(), "in sync: {}", changes[1]);
    assert!(
        changes[3].get("state").is_none(),
        "a delete has no request state"
    );
    let accepted_times: Vec<i64> = changes
        .iter()
        .map(|change| change["acceptedAt"].as_i64().expect("acceptedAt"))
        .collect();
    assert!(accepted_times.windows(2).all(|pair| pair[0] <= pair[1]));

    // Pages of two give the same changes.
    assert_eq!(all_changes(&app, &format!("{shadow}/history"), 2), changes);

    // The named shadow has its own history.
    let (status, named) = app.get(&format!("{shadow}/history?name=config"));
    assert_eq!(status, 200, "{named}");
    assert_eq!(named["changes"].as_array().map(Vec::len), Some(1));
    assert_eq!(named["changes"][0]["desired"], json!({"mode": "eco"}));

    // `?version=N` shows the state the live GET showed at version N.
    for (version, state) in &live_states {
        let (status, document) = app.get(&format!("{shadow}?version={version}"));
        assert_eq!(status, 200, "version {version}: {document}");
        assert_eq!(document["version"].as_u64(), Some(*version));
        assert_eq!(&document["state"], state, "state at version {version}");
        assert!(document.get("metadata").is_none());
        let listed = summary
            .iter()
            .position(|entry| entry.0 == *version)
            .expect("version is listed");
        let accepted_s = accepted_times[listed].div_euclid(1000);
        assert_eq!(document["timestamp"].as_i64(), Some(accepted_s));
    }
    let (status, missing) = app.get(&format!("{shadow}?version=5"));
    assert_eq!(status, 404, "{missing}");
    assert_eq!(missing["code"], 404);
    assert!(
        missing["message"]
            .as_str()
            .is_some_and(|message| message.contains("version 5"))
    );

    // `?at=T` shows the last change accepted at or before T; a delete or no change is a 404.
    let mut probes: Vec<i64> = accepted_times.clone();
    probes.push(accepted_times[0] - 1);
    probes.push(accepted_times[4] + 60_000);
    for at_ms in probes {
        let (status, document) = app.get(&format!("{shadow}?at={at_ms}"));
        match expected_at(&changes, at_ms) {
            Some((version, kind)) if kind == "update" => {
                assert_eq!(status, 200, "at {at_ms}: {document}");
                assert_eq!(document["version"].as_u64(), Some(version), "at {at_ms}");
                assert_eq!(document["state"], live_states[&version], "at {at_ms}");
            }
            _ => {
                assert_eq!(status, 404, "at {at_ms}: {document}");
                assert_eq!(document["code"], 404);
            }
        }
    }
    let (status, latest) = app.get(&format!("{shadow}?at=2100-01-01T00:00:00Z"));
    assert_eq!(status, 200, "{latest}");
    assert_eq!(latest["version"], 4);

    // Without `version` or `at`, GET is the live document, with metadata.
    let (status, live) = app.get(shadow);
    assert_eq!(status, 200);
    assert!(live.get("metadata").is_some(), "{live}");

    // Invalid parameters are rejected with the parameter's name.
    let bad_requests = [
        (format!("{shadow}/history?limit=0"), "limit"),
        (format!("{shadow}/history?limit=1001"), "limit"),
        (format!("{shadow}/history?from=yesterday"), "from"),
        (format!("{shadow}/history?from=2000&to=1000"), "from"),
        (format!("{shadow}/history?nextToken=garbage"), "nextToken"),
        (format!("{shadow}?version=0"), "version"),
        (format!("{shadow}?at=noon"), "at"),
        (format!("{shadow}?version=1&at=1"), "either version or at"),
    ];
    for (url, named) in bad_requests {
        let (status, error) = app.get(&url);
        assert_eq!(status, 400, "{url}: {error}");
        assert_eq!(error["code"], 400, "{url}");
        let message = error["message"].as_str().expect("message");
        assert!(message.contains(named), "{url}: {message}");
    }

    let (status, stderr) = service.stop();
    assert!(
        status.success(),
        "shadowflow exited with {status}; stderr:\n{stderr}"
    );
}

/// Reported state and client token of each update of one thing, in replay order.
type ThingUpdates = Vec<(Map<String, Value>, String)>;

/// Merges `patch` into `target` as a reported update does (replayed rows have no nulls).
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

/// Returns, per thing, the reported state after each of its updates and the update's client
/// token, computed from the CSV rows as the replay maps them.
fn expected_updates(dataset: Dataset, path: &Path) -> BTreeMap<String, ThingUpdates> {
    let reader = DatasetReader::open(&[path.to_owned()], dataset).expect("open data set");
    let mut expected: BTreeMap<String, ThingUpdates> = BTreeMap::new();
    for row in reader {
        let row = row.expect("readable row");
        for update in row.outcome.unwrap_or_default() {
            let states = expected.entry(update.thing_name).or_default();
            let mut reported = states
                .last()
                .map(|(state, _)| state.clone())
                .unwrap_or_default();
            merge(&mut reported, &update.reported);
            states.push((reported, format!("replay-{}", row.row_number)));
        }
    }
    expected
}

/// The Chicago data set replayed in-process: each beach's history contains one change per CSV
/// row of that beach, with the reported state the rows add up to, and `?version=` and `?at=`
/// show those states.
#[test]
fn replayed_chicago_history_matches_csv_rows() {
    let path = datasets_dir().join("chicago-beach-water-sensors");
    let expected = expected_updates(Dataset::Chicago, &path);

    let data = tempfile::tempdir().expect("temp dir");
    let config = write_config(data.path(), 1_000);
    let path_text = path.to_str().expect("UTF-8 path").to_owned();
    let config_text = config.to_str().expect("UTF-8 path").to_owned();
    let service = Service::start_embedded_with(
        &[
            "--replay",
            &path_text,
            "--replay-dataset",
            "chicago",
            "--config",
            &config_text,
        ],
        data.path(),
        2,
    );
    let app = Http::new(&service.http);

    // Wait until every update is applied: the last thing's live version reaches its count.
    for (thing, updates) in &expected {
        let target = updates.len() as u64;
        let waiting = Instant::now();
        loop {
            let (status, live) = app.get(&format!("/things/{thing}/shadow"));
            if status == 200 && live["version"].as_u64() == Some(target) {
                break;
            }
            assert!(
                waiting.elapsed() < POLL_LIMIT,
                "{thing} did not reach version {target}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // The two things with the most and the fewest rows: every change in full.
    let mut by_size: Vec<(&String, &ThingUpdates)> = expected.iter().collect();
    by_size.sort_by_key(|(_, updates)| updates.len());
    let checked = [by_size[0], by_size[by_size.len() - 1]];
    for (thing, updates) in checked {
        let shadow = format!("/things/{thing}/shadow");
        let changes = all_changes(&app, &format!("{shadow}/history"), 1_000);
        assert_eq!(
            changes.len(),
            updates.len(),
            "one change per row of {thing}"
        );
        for (index, (change, (reported, token))) in changes.iter().zip(updates).enumerate() {
            let version = index as u64 + 1;
            assert_eq!(change["version"].as_u64(), Some(version), "{thing}");
            assert_eq!(change["origin"], "replay", "{thing} version {version}");
            assert_eq!(
                change["clientToken"],
                token.as_str(),
                "{thing} version {version}"
            );
            assert_eq!(
                change["reported"],
                Value::Object(reported.clone()),
                "{thing} v{version}"
            );
        }

        // Past documents at a few versions and at the accepted times of a few changes.
        let count = updates.len();
        for version in [1, count / 3, count / 2, count - 1, count] {
            let (status, document) = app.get(&format!("{shadow}?version={version}"));
            assert_eq!(status, 200, "{thing} version {version}: {document}");
            let expected_state = json!({"reported": updates[version - 1].0});
            assert_eq!(
                document["state"], expected_state,
                "{thing} version {version}"
            );
        }
        for index in [0, count / 4, count / 2, count - 1] {
            let at_ms = changes[index]["acceptedAt"].as_i64().expect("acceptedAt");
            let (version, _) = expected_at(&changes, at_ms).expect("a change at or before");
            let (status, document) = app.get(&format!("{shadow}?at={at_ms}"));
            assert_eq!(status, 200, "{thing} at {at_ms}: {document}");
            assert_eq!(
                document["version"].as_u64(),
                Some(version),
                "{thing} at {at_ms}"
            );
            let expected_state = json!({"reported": updates[version as usize - 1].0});
            assert_eq!(document["state"], expected_state, "{thing} at {at_ms}");
        }
        let before_first = changes[0]["acceptedAt"].as_i64().expect("acceptedAt") - 1;
        let (status, _) = app.get(&format!("{shadow}?at={before_first}"));
        assert_eq!(status, 404, "{thing} before its first change");
    }

    let (status, stderr) = service.stop();
    assert!(
        status.success(),
        "shadowflow exited with {status}; stderr:\n{stderr}"
    );
}
