//! Shared steps of the durability tests: starting and crashing the service, reading its
//! recovery log line, and failing with the context needed to repeat a run.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::checks::{Recovered, check_history, check_recovered};
use crate::ledger::{Ledger, Outcome, ShadowId};
use crate::load::{ClientReport, HTTP_TIMEOUT, http_update, mqtt_update};
use crate::rng::SEED_VARIABLE;
use crate::support::{Device, Http, Service, free_port, read_history};

/// Dataflow workers of the services under test, unless a test varies them.
pub const WORKERS: usize = 2;

/// Where a failure happened: enough to repeat it.
#[derive(Clone, Copy, Debug)]
pub struct Context {
    /// Seed of the run.
    pub seed: u64,
    /// Round of the crash suite, counting from 1.
    pub round: u32,
    /// Start of the service in the round, counting from 1.
    pub generation: u32,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} ({SEED_VARIABLE}={}), round {}, generation {}",
            self.seed, self.seed, self.round, self.generation
        )
    }
}

/// Panics with every violation and the warnings, errors and recovery lines of each stderr.
pub fn fail(context: &dyn fmt::Display, stage: &str, violations: &[String], stderrs: &[&str]) -> ! {
    let mut message = format!("{context}: {} violations {stage}:\n", violations.len());
    for violation in violations.iter().take(40) {
        message.push_str(&format!("  - {violation}\n"));
    }
    if violations.len() > 40 {
        message.push_str(&format!("  ... and {} more\n", violations.len() - 40));
    }
    for (index, stderr) in stderrs.iter().enumerate() {
        message.push_str(&format!(
            "--- stderr of service {}, notable lines ---\n",
            index + 1
        ));
        message.push_str(&notable_lines(stderr));
    }
    panic!("{message}");
}

/// Returns the warning, error, recovery and checkpoint lines of a service's stderr, at most
/// the last 40.
fn notable_lines(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| {
            let lower = line.to_lowercase();
            line.contains(" WARN ")
                || line.contains(" ERROR ")
                || lower.contains("recover")
                || lower.contains("checkpoint")
                || lower.contains("panicked")
        })
        .collect();
    let skip = lines.len().saturating_sub(40);
    let mut text = String::new();
    for line in &lines[skip..] {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// Returns every client violation, each prefixed with its client's name.
pub fn client_violations(reports: &[ClientReport]) -> Vec<String> {
    let mut violations = Vec::new();
    for report in reports {
        for violation in &report.violations {
            violations.push(format!("{}: {violation}", report.name));
        }
    }
    violations
}

/// Returns the service's recovery log line, which reports how many shadows and log records it
/// recovered, as in `recovered 4 shadows from checkpoint 1 and 0 log records in 0 ms`.
pub fn recovery_line(stderr: &str) -> Option<&str> {
    stderr
        .lines()
        .find(|line| line.contains("recovered") && line.contains("log records"))
}

/// Returns the number of log records that a recovery line reports, from its `log_records=N`
/// field or else from the `N log records` in its message.
pub fn replayed_log_records(line: &str) -> Option<u64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let field = words.iter().find_map(|word| {
        let value = word.strip_prefix("log_records=")?;
        value.parse().ok()
    });
    let in_message = words
        .windows(3)
        .find(|window| window[1] == "log" && window[2].starts_with("records"))
        .and_then(|window| window[0].parse().ok());
    field.or(in_message)
}

/// Writes the service's TOML config, in which archive files close after `max_file_age_ms`.
pub fn write_config(dir: &Path, max_file_age_ms: u64) -> PathBuf {
    let path = dir.join("shadowflow.toml");
    std::fs::write(
        &path,
        format!("[archive]\nmax_file_age_ms = {max_file_age_ms}\n"),
    )
    .expect("write the service config");
    path
}

/// Returns the `serve` flags for `durability` (`sync`, `batch` or `none`), `config` and a
/// checkpoint every `checkpoint_interval_secs` seconds.
pub fn serve_flags(durability: &str, config: &Path, checkpoint_interval_secs: u64) -> Vec<String> {
    vec![
        "--durability".to_owned(),
        durability.to_owned(),
        "--checkpoint-interval-secs".to_owned(),
        checkpoint_interval_secs.to_string(),
        "--config".to_owned(),
        config.display().to_string(),
    ]
}

/// Starts `serve` on `data_dir` with its embedded broker and `flags`.
pub fn start(flags: &[String], data_dir: &Path) -> Service {
    start_with_workers(flags, data_dir, WORKERS)
}

/// Starts `serve` on `data_dir` with its embedded broker, `flags` and `workers` workers.
pub fn start_with_workers(flags: &[String], data_dir: &Path, workers: usize) -> Service {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Service::start_embedded_with(&flags, data_dir, workers)
}

/// Sends SIGTERM to `service` without waiting for it to stop.
pub fn send_sigterm(service: &Service) {
    let status = Command::new("kill")
        .args(["-TERM", &service.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {} failed", service.id());
}

/// How far an interrupted start got before the kill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartPhase {
    /// Killed before it logged its recovery line.
    Recovering,
    /// Killed after recovery, before it was ready for requests.
    Recovered,
    /// Killed after it was ready for requests.
    Ready,
}

/// Starts `serve` as [`start_with_workers`] would and kills it with SIGKILL after `delay`,
/// usually while it recovers, as a crash during start-up would. Returns how far it got and its
/// stderr.
pub fn interrupted_start(
    flags: &[String],
    data_dir: &Path,
    workers: usize,
    delay: Duration,
) -> (StartPhase, String) {
    let mqtt_listen = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_shadowflow"))
        .args(["serve", "--http-listen", "127.0.0.1:0", "--mqtt-listen"])
        .arg(&mqtt_listen)
        .args(["--workers", &workers.to_string(), "--data-dir"])
        .arg(data_dir)
        .args(flags)
        .env("RUST_LOG", "info,rumqttc=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shadowflow serve");
    std::thread::sleep(delay);
    let _ = child.kill();
    let output = child.wait_with_output().expect("wait for shadowflow serve");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let phase = if stderr.contains("shadowflow started") {
        StartPhase::Ready
    } else if recovery_line(&stderr).is_some() {
        StartPhase::Recovered
    } else {
        StartPhase::Recovering
    };
    (phase, stderr)
}

/// Checks what `service` recovered against `ledger` and probes every shadow. On a violation,
/// kills the service and panics with `earlier_stderr` and the service's own stderr.
pub fn expect_recovered(
    service: Service,
    ledger: &Ledger,
    generation: u32,
    context: &dyn fmt::Display,
    earlier_stderr: &str,
) -> (Service, Recovered) {
    let http = Http::with_timeout(&service.http, HTTP_TIMEOUT);
    let recovered = check_recovered(ledger, &http, generation);
    if !recovered.violations.is_empty() {
        let stderr = service.kill();
        fail(
            context,
            "after the restart",
            &recovered.violations,
            &[earlier_stderr, &stderr],
        );
    }
    (service, recovered)
}

/// Stops `service` with SIGTERM and checks its history against `ledger`; returns its stderr.
pub fn stop_and_check_history(
    service: Service,
    ledger: &Ledger,
    context: &dyn fmt::Display,
    earlier_stderr: &str,
) -> String {
    let data_dir = service.data_dir.clone();
    let (status, stderr) = service.stop();
    if !status.success() {
        let violation = format!("the graceful stop exited with {status}");
        fail(context, "at the graceful stop", &[violation], &[&stderr]);
    }
    let rows = read_history(&data_dir.join("history"));
    let violations = check_history(ledger, &rows);
    if !violations.is_empty() {
        fail(
            context,
            "in the history",
            &violations,
            &[earlier_stderr, &stderr],
        );
    }
    stderr
}

/// Sends `count` updates to each shadow, over HTTP or, for `device`'s shadows, MQTT, and
/// panics unless every one is acknowledged.
pub fn acknowledged_updates(
    ledger: &Ledger,
    http: &Http,
    mqtt: Option<(&Device, &[ShadowId])>,
    http_shadows: &[ShadowId],
    count: usize,
    generation: u32,
) {
    for _ in 0..count {
        for shadow in http_shadows {
            let response = http_update(http, ledger, "app", shadow, generation, 0)
                .unwrap_or_else(|error| panic!("update of {shadow} over HTTP failed: {error}"));
            assert!(response.violations.is_empty(), "{:?}", response.violations);
            assert!(
                matches!(response.outcome, Outcome::Accepted { .. }),
                "update {} of {shadow} over HTTP got {:?}",
                response.token,
                response.outcome
            );
        }
        if let Some((device, shadows)) = mqtt {
            for shadow in shadows {
                let response = mqtt_update(device, ledger, "device", shadow, generation, 0);
                assert!(response.violations.is_empty(), "{:?}", response.violations);
                assert!(
                    matches!(response.outcome, Outcome::Accepted { .. }),
                    "update {} of {shadow} over MQTT got {:?}",
                    response.token,
                    response.outcome
                );
            }
        }
    }
}

/// Returns the `/update/accepted`, `/update/rejected` and `/update/documents` topics of
/// `shadows`.
pub fn response_topics(shadows: &[ShadowId]) -> Vec<String> {
    let mut topics = Vec::new();
    for shadow in shadows {
        topics.push(shadow.topic("update/accepted"));
        topics.push(shadow.topic("update/rejected"));
        topics.push(shadow.topic("update/documents"));
    }
    topics
}
