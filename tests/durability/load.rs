//! Concurrent test clients: MQTT devices and HTTP apps that update their own shadows and record
//! every request and response in the [`Ledger`].
//!
//! Each shadow has exactly one client, so the ledger alone determines which values a shadow may
//! hold. Devices also read `/update/documents`, and HTTP apps read the devices' shadows with
//! GET. The service sends either only once the log contains the change, so the clients record
//! what they see there as acknowledged too.
//!
//! A client keeps sending until [`Load::stop`], its deadline or its request limit, whichever
//! comes first. Once the service is gone, its requests fail and it waits for the stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::ledger::{Change, Ledger, Outcome, ShadowId, delete_body, update_body};
use crate::rng::Rng;
use crate::support::{Device, Http, Service};

/// Maximum time one client sends requests, in case the test never stops it.
const MAX_DRIVE: Duration = Duration::from_secs(30);

/// Maximum number of requests one client sends in one generation.
const MAX_REQUESTS: u64 = 50_000;

/// Updates an MQTT device keeps in flight.
const MQTT_IN_FLIGHT: usize = 4;

/// Chance in percent that an HTTP client deletes a shadow that it has updated since its last
/// delete in this generation.
const DELETE_PERCENT: u64 = 8;

/// Chance in percent that an HTTP client reads one of its `read_shadows` instead of a change.
const READ_PERCENT: u64 = 15;

/// Timeout of one HTTP request.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client waits for the response to one MQTT request in [`mqtt_update`].
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(20);

/// Protocol of a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// An MQTT device with several QoS 1 updates in flight.
    Mqtt,
    /// An HTTP app with one request at a time, some of them deletes.
    Http,
}

/// One client: its name, protocol and the shadows it owns.
#[derive(Clone, Debug)]
pub struct ClientPlan {
    /// Client name; it prefixes the client's `clientToken`s and is its MQTT client id.
    pub name: String,
    /// Protocol of the client.
    pub protocol: Protocol,
    /// Shadows that only this client changes.
    pub shadows: Vec<ShadowId>,
    /// Shadows of other clients that an HTTP client reads with GET.
    pub read_shadows: Vec<ShadowId>,
}

/// What one client did in one generation.
#[derive(Debug, Default)]
pub struct ClientReport {
    /// Client name.
    pub name: String,
    /// Requests sent.
    pub sent: u64,
    /// Requests acknowledged.
    pub accepted: u64,
    /// Changes seen in `/update/documents` or a GET, which count as acknowledged too.
    pub observed: u64,
    /// Rejections other than a delete of a missing shadow, as `token: code message`.
    pub rejected: Vec<String>,
    /// Responses that contradict the ledger or the request, as text.
    pub violations: Vec<String>,
}

/// Clients running against one service.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<(String, JoinHandle<ClientReport>)>,
}

impl Load {
    /// Starts one thread per client and waits until every client is connected.
    ///
    /// # Panics
    ///
    /// Panics when a client does not connect within 20 s.
    pub fn start(
        service: &Service,
        plans: &[ClientPlan],
        ledger: &Arc<Ledger>,
        generation: u32,
        rng: &mut Rng,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_sender, ready) = mpsc::channel();
        let mut threads = Vec::new();
        for plan in plans {
            let client = Client {
                plan: plan.clone(),
                ledger: Arc::clone(ledger),
                generation,
                rng: rng.fork(),
                stop: Arc::clone(&stop),
                ready: ready_sender.clone(),
            };
            let thread = match plan.protocol {
                Protocol::Mqtt => {
                    let port = service.mqtt_port;
                    std::thread::spawn(move || client.run_mqtt(port))
                }
                Protocol::Http => {
                    let base = service.http.clone();
                    std::thread::spawn(move || client.run_http(&base))
                }
            };
            threads.push((plan.name.clone(), thread));
        }
        for _ in plans {
            ready
                .recv_timeout(Duration::from_secs(20))
                .expect("every client connects within 20 s");
        }
        Load { stop, threads }
    }

    /// Stops every client and returns their reports; a client that panicked reports the panic
    /// as a violation.
    pub fn stop(self) -> Vec<ClientReport> {
        self.stop.store(true, Ordering::Relaxed);
        let mut reports = Vec::new();
        for (name, thread) in self.threads {
            let report = thread.join().unwrap_or_else(|panic| {
                let message = panic_message(panic.as_ref());
                ClientReport {
                    name: name.clone(),
                    violations: vec![format!("client {name} panicked: {message}")],
                    ..ClientReport::default()
                }
            });
            reports.push(report);
        }
        reports
    }
}

/// Returns the message of a panic payload, or an empty string when it has none.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
        .unwrap_or_default()
}

/// One client thread.
struct Client {
    plan: ClientPlan,
    ledger: Arc<Ledger>,
    generation: u32,
    rng: Rng,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<()>,
}

impl Client {
    fn keep_going(&self, started: Instant, report: &ClientReport) -> bool {
        !self.stop.load(Ordering::Relaxed)
            && started.elapsed() < MAX_DRIVE
            && report.sent < MAX_REQUESTS
    }

    fn pick_shadow(&mut self) -> ShadowId {
        let index = self.rng.below(self.plan.shadows.len() as u64) as usize;
        self.plan.shadows[index].clone()
    }

    /// Publishes updates, with up to [`MQTT_IN_FLIGHT`] pending, until stopped.
    fn run_mqtt(mut self, port: u16) -> ClientReport {
        let filters: Vec<String> = self
            .plan
            .shadows
            .iter()
            .flat_map(|shadow| {
                [
                    shadow.topic("update/accepted"),
                    shadow.topic("update/rejected"),
                    shadow.topic("update/documents"),
                ]
            })
            .collect();
        let device = Device::connect(&self.plan.name, port, &filters);
        let _ = self.ready.send(());
        let mut report = ClientReport {
            name: self.plan.name.clone(),
            ..ClientReport::default()
        };
        let mut in_flight = 0;
        let mut connected = true;
        let started = Instant::now();
        while self.keep_going(started, &report) {
            // Fill the window of pending updates.
            while connected && in_flight < MQTT_IN_FLIGHT && report.sent < MAX_REQUESTS {
                let shadow = self.pick_shadow();
                let (token, seq) =
                    self.ledger
                        .new_update(&self.plan.name, &shadow, "mqtt", self.generation);
                let body = update_body(&token, seq, 0);
                if device.try_publish(&shadow.topic("update"), body).is_err() {
                    connected = false;
                    break;
                }
                report.sent += 1;
                in_flight += 1;
            }

            // Read one response, or notice that the connection closed.
            match device.next_message_or_closed(Duration::from_millis(20)) {
                Ok(Some((topic, payload))) => {
                    if self.record_mqtt_response(&topic, &payload, &mut report) {
                        in_flight = in_flight.saturating_sub(1);
                    }
                }
                Ok(None) => {}
                Err(_) => {
                    connected = false;
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        report
    }

    /// Records an `/update/accepted`, `/update/rejected` or `/update/documents` message. Returns
    /// whether the message was the response to one of this client's requests.
    fn record_mqtt_response(
        &self,
        topic: &str,
        payload: &Value,
        report: &mut ClientReport,
    ) -> bool {
        if topic.ends_with("/update/documents") {
            report.observed += 1;
            record_document(&self.ledger, topic, payload, &mut report.violations);
            return false;
        }
        let Some(token) = payload["clientToken"].as_str() else {
            report
                .violations
                .push(format!("message on {topic} without clientToken: {payload}"));
            return false;
        };
        let Some(request) = self.ledger.request(token) else {
            report.violations.push(format!(
                "message on {topic} for unknown clientToken {token}: {payload}"
            ));
            return false;
        };
        if !topic.starts_with(&request.shadow.topic("update/")) {
            report.violations.push(format!(
                "response to {token} for {} on {topic}: {payload}",
                request.shadow
            ));
        }
        let outcome = if topic.ends_with("/update/accepted") {
            check_update_echo(token, &request.change, payload, &mut report.violations);
            report.accepted += 1;
            accepted_outcome(token, payload, &mut report.violations)
        } else {
            let code = payload["code"].as_u64().unwrap_or(0) as u16;
            report
                .rejected
                .push(format!("{token}: {code} {}", payload["message"]));
            Outcome::Rejected { code }
        };
        if let Err(violation) = self.ledger.record(token, outcome) {
            report.violations.push(violation);
        }
        true
    }

    /// Sends one request at a time over HTTP, some of them deletes, until stopped.
    fn run_http(mut self, base: &str) -> ClientReport {
        let http = Http::with_timeout(base, HTTP_TIMEOUT);
        let _ = self.ready.send(());
        let mut report = ClientReport {
            name: self.plan.name.clone(),
            ..ClientReport::default()
        };
        // Shadows this client created in this generation and did not delete since.
        let mut existing: Vec<ShadowId> = Vec::new();
        let mut connected = true;
        let started = Instant::now();
        while self.keep_going(started, &report) {
            if !connected {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            if !self.plan.read_shadows.is_empty() && self.rng.chance(READ_PERCENT) {
                let index = self.rng.below(self.plan.read_shadows.len() as u64) as usize;
                let shadow = &self.plan.read_shadows[index];
                match http_read(&http, &self.ledger, shadow) {
                    Err(_) => connected = false,
                    Ok(violations) => {
                        report.observed += 1;
                        report.violations.extend(violations);
                    }
                }
                continue;
            }
            let shadow = self.pick_shadow();
            let delete = existing.contains(&shadow) && self.rng.chance(DELETE_PERCENT);
            report.sent += 1;
            let response = if delete {
                http_delete(
                    &http,
                    &self.ledger,
                    &self.plan.name,
                    &shadow,
                    self.generation,
                )
            } else {
                http_update(
                    &http,
                    &self.ledger,
                    &self.plan.name,
                    &shadow,
                    self.generation,
                    0,
                )
            };
            match response {
                Err(_) => connected = false,
                Ok(response) => {
                    report.violations.extend(response.violations);
                    match response.outcome {
                        Outcome::Accepted { .. } => {
                            report.accepted += 1;
                            existing.retain(|known| *known != shadow);
                            if !delete {
                                existing.push(shadow);
                            }
                        }
                        Outcome::Rejected { code: 404 } if delete => {
                            existing.retain(|known| *known != shadow);
                        }
                        Outcome::Rejected { code } => {
                            report.rejected.push(format!("{}: {code}", response.token));
                        }
                        Outcome::Pending => {}
                    }
                }
            }
        }
        report
    }
}

/// The response to one synchronous request.
#[derive(Debug)]
pub struct Response {
    /// `clientToken` of the request.
    pub token: String,
    /// The response, as recorded in the ledger.
    pub outcome: Outcome,
    /// Contradictions between the response, the request and the ledger.
    pub violations: Vec<String>,
}

/// Sends one update over HTTP and records it; `padding` adds that many bytes to the state.
///
/// # Errors
///
/// Returns the transport error when the service cannot be reached or the connection breaks;
/// the request then stays `Pending`.
pub fn http_update(
    http: &Http,
    ledger: &Ledger,
    client: &str,
    shadow: &ShadowId,
    generation: u32,
    padding: usize,
) -> Result<Response, ureq::Error> {
    let (token, seq) = ledger.new_update(client, shadow, "http", generation);
    let (status, body) = http.try_post(&shadow.http_path(), &update_body(&token, seq, padding))?;
    let mut violations = Vec::new();
    let outcome = if status == 200 {
        let change = Change::Update { seq };
        check_update_echo(&token, &change, &body, &mut violations);
        accepted_outcome(&token, &body, &mut violations)
    } else {
        Outcome::Rejected { code: status }
    };
    if let Err(violation) = ledger.record(&token, outcome) {
        violations.push(violation);
    }
    Ok(Response {
        token,
        outcome,
        violations,
    })
}

/// Sends one delete over HTTP and records it.
///
/// # Errors
///
/// Returns the transport error when the service cannot be reached or the connection breaks;
/// the request then stays `Pending`.
pub fn http_delete(
    http: &Http,
    ledger: &Ledger,
    client: &str,
    shadow: &ShadowId,
    generation: u32,
) -> Result<Response, ureq::Error> {
    let token = ledger.new_delete(client, shadow, "http", generation);
    let (status, body) = http.try_delete_with_body(&shadow.http_path(), &delete_body(&token))?;
    let mut violations = Vec::new();
    let outcome = if status == 200 {
        if body["clientToken"] != token.as_str() {
            violations.push(format!(
                "the response to delete {token} echoes another token: {body}"
            ));
        }
        accepted_outcome(&token, &body, &mut violations)
    } else {
        Outcome::Rejected { code: status }
    };
    if let Err(violation) = ledger.record(&token, outcome) {
        violations.push(violation);
    }
    Ok(Response {
        token,
        outcome,
        violations,
    })
}

/// Publishes one update and waits for its response on `/update/accepted` or `/update/rejected`,
/// which `device` must subscribe to; `padding` adds that many bytes to the state. Records the
/// `/update/documents` messages that arrive meanwhile, if `device` subscribes to them.
///
/// # Panics
///
/// Panics when the publish fails or no response arrives within 20 s.
pub fn mqtt_update(
    device: &Device,
    ledger: &Ledger,
    client: &str,
    shadow: &ShadowId,
    generation: u32,
    padding: usize,
) -> Response {
    let (token, seq) = ledger.new_update(client, shadow, "mqtt", generation);
    device
        .try_publish(&shadow.topic("update"), update_body(&token, seq, padding))
        .expect("publish an update");
    let deadline = Instant::now() + RESPONSE_TIMEOUT;
    let mut violations = Vec::new();
    let outcome = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (topic, payload) = device
            .next_message_or_closed(left)
            .expect("the MQTT connection stays open")
            .unwrap_or_else(|| panic!("no response to {token} on {shadow} within 20 s"));
        if topic.ends_with("/update/documents") {
            record_document(ledger, &topic, &payload, &mut violations);
            continue;
        }
        if payload["clientToken"] != token.as_str() {
            continue;
        }
        if topic == shadow.topic("update/accepted") {
            let change = Change::Update { seq };
            check_update_echo(&token, &change, &payload, &mut violations);
            break accepted_outcome(&token, &payload, &mut violations);
        }
        if topic == shadow.topic("update/rejected") {
            let code = payload["code"].as_u64().unwrap_or(0) as u16;
            break Outcome::Rejected { code };
        }
    };
    if let Err(violation) = ledger.record(&token, outcome) {
        violations.push(violation);
    }
    Response {
        token,
        outcome,
        violations,
    }
}

/// Records the change that an `/update/documents` message shows as acknowledged.
fn record_document(ledger: &Ledger, topic: &str, payload: &Value, violations: &mut Vec<String>) {
    let token = payload["clientToken"].as_str();
    let version = payload["current"]["version"].as_u64();
    let (Some(token), Some(version)) = (token, version) else {
        violations.push(format!(
            "document on {topic} without clientToken or version: {payload}"
        ));
        return;
    };
    if let Err(violation) = ledger.record(token, Outcome::Accepted { version }) {
        violations.push(format!("document on {topic}: {violation}"));
    }
}

/// Reads `shadow` with GET and records the update it shows as acknowledged; returns the
/// contradictions with the ledger.
///
/// # Errors
///
/// Returns the transport error when the service cannot be reached or the connection breaks.
pub fn http_read(
    http: &Http,
    ledger: &Ledger,
    shadow: &ShadowId,
) -> Result<Vec<String>, ureq::Error> {
    let (status, body) = http.try_get(&shadow.http_path())?;
    let mut violations = Vec::new();
    match status {
        200 => {
            let token = body["state"]["reported"]["token"].as_str().unwrap_or("");
            let Some(version) = body["version"].as_u64() else {
                violations.push(format!("GET {shadow} returned no version: {body}"));
                return Ok(violations);
            };
            if let Err(violation) = ledger.record(token, Outcome::Accepted { version }) {
                violations.push(format!(
                    "GET {shadow} returned version {version}: {violation}"
                ));
            }
        }
        404 => {}
        _ => violations.push(format!("GET {shadow} returned {status}: {body}")),
    }
    Ok(violations)
}

/// Returns `Accepted` with the version in `body`, or `Pending` and a violation when it has none.
fn accepted_outcome(token: &str, body: &Value, violations: &mut Vec<String>) -> Outcome {
    match body["version"].as_u64() {
        Some(version) => Outcome::Accepted { version },
        None => {
            violations.push(format!(
                "acknowledgement of {token} without a version: {body}"
            ));
            Outcome::Pending
        }
    }
}

/// Checks that an accepted update echoes its token and sequence number.
fn check_update_echo(token: &str, change: &Change, body: &Value, violations: &mut Vec<String>) {
    if let Change::Update { seq } = change
        && body["state"]["reported"]["seq"].as_u64() != Some(*seq)
    {
        violations.push(format!(
            "acknowledgement of {token} lacks seq {seq}: {body}"
        ));
    }
}
