//! Conformance with the AWS IoT Device Shadow service, driven by the case files under
//! `tests/conformance/cases/`.
//!
//! Each case states one AWS rule, sets a shadow up, sends one request and lists every message
//! the request must publish on the shadow response topics, plus the HTTP reply for its REST
//! form. The runner starts one service per broker (the embedded one, and Debian's mosquitto) and
//! runs every case over MQTT and, where the case applies to it, over HTTP. Each run uses its own
//! thing name, so runs share the service and several go at once. A run fails when an expected
//! message is missing or differs, or when any other message appears on the response topics.
//!
//! `conformance/case.rs` describes the case format, and `conformance/pattern.rs` the
//! placeholders of expected documents.

mod support;

#[path = "conformance/case.rs"]
mod case;
#[path = "conformance/pattern.rs"]
mod pattern;
#[path = "conformance/run.rs"]
mod run;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use case::{Case, Transport, load_cases};
use run::{Target, run_case};
use support::{Http, Mosquitto, Service};

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
    let data = tempfile::tempdir().expect("temp dir");
    let service = Service::start_embedded(data.path(), 2);
    let port = service.mqtt_port;
    run_all_cases(service, port, "the embedded broker");
}

/// Every case, over MQTT and HTTP, against the service as a client of Debian's mosquitto.
#[test]
fn cases_pass_on_mosquitto() {
    let mosquitto = Mosquitto::start();
    let data = tempfile::tempdir().expect("temp dir");
    let service = Service::start_with_broker(&mosquitto.url(), data.path(), 2);
    run_all_cases(service, mosquitto.port, "mosquitto");
}

/// Runs every case over each of its transports, stops the service, and fails with a report of
/// every failed run.
fn run_all_cases(service: Service, mqtt_port: u16, broker: &str) {
    let cases = load_cases();
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

    let http = Http::new(&service.http);
    let target = Target {
        mqtt_port,
        http: &http,
    };
    let next_run = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL_RUNS {
            scope.spawn(|| {
                while let Some(&(index, transport)) =
                    runs.get(next_run.fetch_add(1, Ordering::Relaxed))
                {
                    let case = &cases[index];
                    if let Some(report) = run_one(case, index, transport, &target, broker) {
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
        "{} cases, {} runs ({} over MQTT, {http_runs} over HTTP) on {broker} in {elapsed:.1?}",
        cases.len(),
        runs.len(),
        runs.len() - http_runs
    );

    let (status, stderr) = service.stop();
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
    assert!(
        status.success(),
        "shadowflow exited with {status}; stderr:\n{stderr}"
    );
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
