//! Conformance with the AWS IoT Device Shadow service, driven by the case files under
//! `tests/conformance/cases/`.
//!
//! Each case states one AWS rule, sets a shadow up, sends one request and lists every message
//! the request must publish on the shadow response topics, plus the HTTP reply for its REST
//! form. For each broker (the embedded one, and Debian's mosquitto) the runner starts one service
//! per distinct service settings of the case files. It runs every case against the service with
//! the case's settings, over MQTT and, where the case applies to it, over HTTP. With mosquitto,
//! each service gets a mosquitto of its own, because services on one broker would all respond to
//! every request. Each run uses its own thing name, so runs share a service and several go at
//! once. A run fails when an expected message is missing or differs, or when any other message
//! appears on the response topics.
//!
//! `conformance/case.rs` describes the case format, and `conformance/pattern.rs` the
//! placeholders of expected documents.
//!
//! The MQTT payload size limit has its own tests, because the embedded broker enforces it by
//! closing the publisher's connection, which the case format cannot express.

mod support;

#[path = "conformance/case.rs"]
mod case;
#[path = "conformance/pattern.rs"]
mod pattern;
#[path = "conformance/run.rs"]
mod run;

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use case::{Case, Transport, load_cases};
use run::{Target, run_case};
use serde_json::Value;
use support::{Device, Http, MESSAGE_TIMEOUT, Mosquitto, Service};

/// Case runs in flight at once against one service. Most of a run is spent waiting for the
/// settle window, so this is well above the number of cores.
const PARALLEL_RUNS: usize = 8;

/// Every case file parses and every case follows the format.
#[test]
fn case_files_are_valid() {
    let cases = load_cases();
    assert!(!cases.is_empty(), "no cases under {}", case::CASES_DIR);
}

/// Every case, over MQTT and HTTP, against the service with its embedded broker.
#[test]
fn cases_pass_on_embedded_broker() {
    let cases = load_cases();
    let data = tempfile::tempdir().expect("temp dir");
    let services = distinct_settings(&cases)
        .into_iter()
        .enumerate()
        .map(|(index, settings)| {
            let dir = service_dir(data.path(), index);
            let flags = config_flags(settings.as_deref(), &dir);
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            let service = Service::start_embedded_with(&flags, &dir, 2);
            ServiceUnderTest {
                mqtt_port: service.mqtt_port,
                service,
                settings,
                _mosquitto: None,
            }
        })
        .collect();
    run_all_cases(&cases, services, "the embedded broker");
}

/// Every case, over MQTT and HTTP, against the service as a client of Debian's mosquitto.
#[test]
fn cases_pass_on_mosquitto() {
    let cases = load_cases();
    let data = tempfile::tempdir().expect("temp dir");
    let services = distinct_settings(&cases)
        .into_iter()
        .enumerate()
        .map(|(index, settings)| {
            let mosquitto = Mosquitto::start();
            let dir = service_dir(data.path(), index);
            let flags = config_flags(settings.as_deref(), &dir);
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            let service = Service::start_with_broker_and_flags(&mosquitto.url(), &flags, &dir, 2);
            ServiceUnderTest {
                service,
                mqtt_port: mosquitto.port,
                settings,
                _mosquitto: Some(mosquitto),
            }
        })
        .collect();
    run_all_cases(&cases, services, "mosquitto");
}

/// A running service, with the settings of the cases it serves.
struct ServiceUnderTest {
    service: Service,

    /// Port of the MQTT broker the service uses.
    mqtt_port: u16,

    /// Text of the service's TOML config file, or `None` for the default settings.
    settings: Option<String>,

    /// The service's own mosquitto, stopped when this is dropped.
    _mosquitto: Option<Mosquitto>,
}

/// Returns the distinct service settings of `cases`, the default settings (`None`) first.
fn distinct_settings(cases: &[Case]) -> Vec<Option<String>> {
    let settings: BTreeSet<Option<String>> =
        cases.iter().map(|case| case.settings.clone()).collect();
    settings.into_iter().collect()
}

/// Creates and returns the data directory of the service with this index.
fn service_dir(data: &Path, index: usize) -> PathBuf {
    let dir = data.join(format!("service-{index}"));
    std::fs::create_dir(&dir)
        .unwrap_or_else(|error| panic!("creating {} failed: {error}", dir.display()));
    dir
}

/// Writes the settings, if any, to `shadowflow.toml` in `dir` and returns the `serve` flags that
/// load it.
fn config_flags(settings: Option<&str>, dir: &Path) -> Vec<String> {
    let Some(settings) = settings else {
        return Vec::new();
    };
    let path = dir.join("shadowflow.toml");
    std::fs::write(&path, settings)
        .unwrap_or_else(|error| panic!("writing {} failed: {error}", path.display()));
    let path = path
        .to_str()
        .expect("the temp dir path is UTF-8")
        .to_owned();
    vec!["--config".to_owned(), path]
}

/// Names the broker and, unless they are the defaults, the service settings.
fn describe_service(broker: &str, settings: Option<&str>) -> String {
    match settings {
        None => broker.to_owned(),
        Some(settings) => {
            let lines: Vec<&str> = settings.lines().filter(|line| !line.is_empty()).collect();
            format!("{broker} with the settings `{}`", lines.join(" "))
        }
    }
}

/// Size of the oversized update payload: 140 KiB, over AWS IoT's 128 KiB MQTT payload limit.
const OVERSIZED_PAYLOAD_BYTES: usize = 140 * 1024;

/// How long the payload size tests keep listening after the last expected message.
const QUIET_WINDOW: Duration = Duration::from_millis(300);

/// AWS IoT's broker rejects an MQTT payload over 128 KiB. The embedded broker closes the
/// connection of a device that publishes a 140 KiB update, and the shadow stays unchanged.
#[test]
fn oversized_payload_closes_embedded_connection() {
    let data = tempfile::tempdir().expect("temp dir");
    let service = Service::start_embedded(data.path(), 2);
    check_oversized_update(service.mqtt_port, BrokerLimit::ClosesConnection);
    stop_cleanly(service);
}

/// mosquitto accepts a 140 KiB payload, so the service rejects such an update itself: it
/// publishes update/rejected with 413 `The payload exceeds the maximum size allowed`, and the
/// shadow stays unchanged.
#[test]
fn oversized_payload_rejected_on_mosquitto() {
    let mosquitto = Mosquitto::start();
    let data = tempfile::tempdir().expect("temp dir");
    let service = Service::start_with_broker(&mosquitto.url(), data.path(), 2);
    check_oversized_update(mosquitto.port, BrokerLimit::AcceptsPayload);
    stop_cleanly(service);
}

/// Requests on topics with an empty thing or shadow name get no response and touch no shadow,
/// on the embedded broker.
#[test]
fn empty_topic_names_are_ignored_on_embedded_broker() {
    let data = tempfile::tempdir().expect("temp dir");
    let service = Service::start_embedded(data.path(), 2);
    check_empty_topic_names(service.mqtt_port);
    stop_cleanly(service);
}

/// Requests on topics with an empty thing or shadow name get no response and touch no shadow,
/// on mosquitto.
#[test]
fn empty_topic_names_are_ignored_on_mosquitto() {
    let mosquitto = Mosquitto::start();
    let data = tempfile::tempdir().expect("temp dir");
    let service = Service::start_with_broker(&mosquitto.url(), data.path(), 2);
    check_empty_topic_names(mosquitto.port);
    stop_cleanly(service);
}

/// Publishes requests whose thing or shadow name segment is empty, then a get of a missing
/// shadow as a marker. Checks that the marker's 404 is the only response, which also shows that
/// the requests naming the marker's thing did not create its shadow.
///
/// MQTT forbids wildcards in the topic of a PUBLISH, so brokers never deliver such a request;
/// the topic parser's unit tests cover those names.
fn check_empty_topic_names(mqtt_port: u16) {
    let thing = "conformance-empty-segments";
    let device = Device::connect(
        "conformance-empty-segments",
        mqtt_port,
        &["$aws/things/+/shadow/#".to_owned()],
    );
    let update = r#"{"state":{"reported":{"a":1}}}"#;
    for topic in [
        "$aws/things//shadow/update".to_owned(),
        "$aws/things//shadow/get".to_owned(),
        "$aws/things//shadow/delete".to_owned(),
        format!("$aws/things/{thing}/shadow/name//update"),
        "$aws/things//shadow/name/config/update".to_owned(),
        format!("$aws/things/{thing}/shadow//update"),
    ] {
        device.publish(&topic, update);
    }
    let marker = format!("$aws/things/{thing}/shadow/get/rejected");
    device.publish(&format!("$aws/things/{thing}/shadow/get"), "");

    let mut received = messages_until(&device, &marker);
    received.extend(device.drain(QUIET_WINDOW));
    let responses: Vec<&(String, Value)> = received
        .iter()
        .filter(|(topic, _)| {
            ["/accepted", "/rejected", "/delta", "/documents"]
                .iter()
                .any(|suffix| topic.ends_with(suffix))
        })
        .collect();
    assert_eq!(
        responses.len(),
        1,
        "requests on empty names got responses: {responses:?}"
    );
    assert_eq!(
        responses[0].1["code"], 404,
        "the marker get did not get 404: {responses:?}"
    );
}

/// What the broker under test does with a payload over 128 KiB.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BrokerLimit {
    /// The broker closes the publisher's connection and drops the message.
    ClosesConnection,
    /// The broker delivers the message, so the service receives it.
    AcceptsPayload,
}

/// Creates a shadow at version 1, publishes a 140 KiB update to it from a second device, and
/// checks the broker's and the service's reaction and that a get returns the shadow unchanged.
fn check_oversized_update(mqtt_port: u16, broker_limit: BrokerLimit) {
    let thing = "conformance-oversized-payload";
    let prefix = format!("$aws/things/{thing}/shadow/");
    let filters: Vec<String> = [
        "update/accepted",
        "update/rejected",
        "update/delta",
        "update/documents",
        "get/accepted",
        "get/rejected",
    ]
    .iter()
    .map(|kind| format!("{prefix}{kind}"))
    .collect();
    let watcher = Device::connect("conformance-oversized-watcher", mqtt_port, &filters);

    watcher.publish(
        &format!("{prefix}update"),
        r#"{"state":{"reported":{"a":1}},"clientToken":"before"}"#,
    );
    let created = watcher.expect_on(&format!("{prefix}update/accepted"));
    assert_eq!(
        created["version"], 1,
        "the first update creates version 1: {created}"
    );
    watcher.expect_on(&format!("{prefix}update/documents"));

    // Whitespace pads a small valid update, so only the payload size, and not the 8 KiB state
    // limit, can cause a rejection.
    let head = r#"{"state":{"reported":{"a":2}}"#;
    let padding = " ".repeat(OVERSIZED_PAYLOAD_BYTES - head.len() - 1);
    let payload = format!("{head}{padding}}}");
    assert_eq!(payload.len(), OVERSIZED_PAYLOAD_BYTES);
    let sender = Device::connect("conformance-oversized-sender", mqtt_port, &[]);
    sender.publish(&format!("{prefix}update"), payload);

    let mut received = Vec::new();
    match broker_limit {
        BrokerLimit::ClosesConnection => {
            let closed = sender.wait_for_close(MESSAGE_TIMEOUT);
            assert!(
                closed.is_some(),
                "the embedded broker kept the connection open for {MESSAGE_TIMEOUT:?} after a \
                 {OVERSIZED_PAYLOAD_BYTES}-byte payload"
            );
        }
        BrokerLimit::AcceptsPayload => {
            received.extend(messages_until(
                &watcher,
                &format!("{prefix}update/rejected"),
            ));
            let (_, rejection) = received
                .last()
                .expect("messages_until returns the awaited one");
            assert_eq!(rejection["code"], 413, "update/rejected: {rejection}");
            assert_eq!(
                rejection["message"], "The payload exceeds the maximum size allowed",
                "update/rejected: {rejection}"
            );
            assert!(
                rejection["timestamp"].is_i64(),
                "update/rejected lacks an integer timestamp: {rejection}"
            );
            assert!(
                sender.wait_for_close(Duration::ZERO).is_none(),
                "mosquitto closed the connection that sent the {OVERSIZED_PAYLOAD_BYTES}-byte payload"
            );
        }
    }

    watcher.publish(&format!("{prefix}get"), r#"{"clientToken":"after"}"#);
    received.extend(messages_until(&watcher, &format!("{prefix}get/accepted")));
    received.extend(watcher.drain(QUIET_WINDOW));
    let (_, document) = received
        .iter()
        .find(|(topic, _)| topic.ends_with("/get/accepted"))
        .expect("messages_until returns the awaited one");
    assert_eq!(
        document["state"],
        serde_json::json!({"reported": {"a": 1}}),
        "the oversized update changed the state: {document}"
    );
    assert_eq!(
        document["version"], 1,
        "the oversized update changed the version: {document}"
    );

    let topics: Vec<&str> = received
        .iter()
        .map(|(topic, _)| topic.strip_prefix(&prefix).unwrap_or(topic))
        .collect();
    let expected_topics = match broker_limit {
        BrokerLimit::ClosesConnection => vec!["get/accepted"],
        BrokerLimit::AcceptsPayload => vec!["update/rejected", "get/accepted"],
    };
    assert_eq!(
        topics, expected_topics,
        "messages after the oversized update: {received:?}"
    );
}

/// Returns every message up to and including the first one on `topic`.
///
/// # Panics
///
/// Panics when no message on `topic` arrives within [`MESSAGE_TIMEOUT`].
fn messages_until(device: &Device, topic: &str) -> Vec<(String, Value)> {
    let deadline = Instant::now() + MESSAGE_TIMEOUT;
    let mut received = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some((received_topic, payload)) = device.next_message(left) else {
            panic!("no message on {topic} within {MESSAGE_TIMEOUT:?}; before it: {received:?}");
        };
        let done = received_topic == topic;
        received.push((received_topic, payload));
        if done {
            return received;
        }
    }
}

/// Stops the service and fails when it did not exit successfully.
fn stop_cleanly(service: Service) {
    let (status, stderr) = service.stop();
    assert!(
        status.success(),
        "shadowflow exited with {status}; stderr:\n{stderr}"
    );
}

/// Runs every case over each of its transports against the service with its settings, stops
/// the services, and fails with a report of every failed run.
fn run_all_cases(cases: &[Case], services: Vec<ServiceUnderTest>, broker: &str) {
    assert!(
        cases.len() <= 1000,
        "at most 1000 cases fit the three-digit case number of run ids"
    );
    let runs: Vec<(usize, Transport)> = cases
        .iter()
        .enumerate()
        .flat_map(|(index, case)| {
            case.transports
                .iter()
                .map(move |transport| (index, *transport))
        })
        .collect();

    let labels: Vec<String> = services
        .iter()
        .map(|service| describe_service(broker, service.settings.as_deref()))
        .collect();
    let clients: Vec<Http> = services
        .iter()
        .map(|service| Http::new(&service.service.http))
        .collect();
    let targets: Vec<Target> = services
        .iter()
        .zip(&clients)
        .map(|(service, http)| Target {
            mqtt_port: service.mqtt_port,
            http,
        })
        .collect();
    // The service of each case, as an index into `services`.
    let service_of_case: Vec<usize> = cases
        .iter()
        .map(|case| {
            services
                .iter()
                .position(|service| service.settings == case.settings)
                .expect("a service runs for every distinct setting")
        })
        .collect();

    let next_run = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL_RUNS {
            scope.spawn(|| {
                while let Some(&(index, transport)) =
                    runs.get(next_run.fetch_add(1, Ordering::Relaxed))
                {
                    let service = service_of_case[index];
                    let case = &cases[index];
                    let report =
                        run_one(case, index, transport, &targets[service], &labels[service]);
                    if let Some(report) = report {
                        failures
                            .lock()
                            .expect("no run panics while holding the lock")
                            .push(report);
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let http_runs = runs
        .iter()
        .filter(|(_, transport)| *transport == Transport::Http)
        .count();
    eprintln!(
        "{} cases, {} runs ({} over MQTT, {http_runs} over HTTP) against {} services on {broker} \
         in {elapsed:.1?}",
        cases.len(),
        runs.len(),
        runs.len() - http_runs,
        services.len()
    );

    drop(targets);
    let stopped: Vec<(String, ExitStatus, String)> = services
        .into_iter()
        .zip(labels)
        .map(|(service, label)| {
            let (status, stderr) = service.service.stop();
            (label, status, stderr)
        })
        .collect();
    let failures = failures
        .into_inner()
        .expect("no run panics while holding the lock");
    assert!(
        failures.is_empty(),
        "{} of {} case runs failed on {broker}:\n\n{}",
        failures.len(),
        runs.len(),
        failures.join("\n\n")
    );
    for (label, status, stderr) in stopped {
        assert!(
            status.success(),
            "shadowflow on {label} exited with {status}; stderr:\n{stderr}"
        );
    }
}

/// Runs one case over one transport; returns the failure report, or `None` when it passed.
fn run_one(
    case: &Case,
    index: usize,
    transport: Transport,
    target: &Target,
    broker: &str,
) -> Option<String> {
    let letter = match transport {
        Transport::Mqtt => 'm',
        Transport::Http => 'h',
    };
    let id = format!("c{index:03}{letter}");
    let prepared = case.prepare(&id, transport);
    let client_id = format!("conformance-{id}");
    let problems = catch_unwind(AssertUnwindSafe(|| {
        run_case(&prepared, transport, target, &client_id)
    }))
    .unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
            .unwrap_or_else(|| "a panic without a message".to_owned());
        vec![format!("the run panicked: {message}")]
    });
    if problems.is_empty() {
        return None;
    }
    Some(format!(
        "case {:?} ({}) over {} on {broker}, thing {}\n  rule: {}\n  - {}",
        case.name,
        case.file,
        transport.as_str(),
        prepared.thing,
        case.rule,
        problems.join("\n  - ")
    ))
}
