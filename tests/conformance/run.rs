//! Running one prepared case over one transport and comparing what the service produces.
//!
//! A run connects a device that subscribes to every response topic of the case's shadows, sends
//! the prior steps and waits for each one's response, then sends the request. It collects the
//! messages on the response topics until every expected one has arrived, and for [`SETTLE`]
//! after that, so a message that should not be published at all has time to show up. A run
//! whose request is a list step subscribes to every topic under `$aws/things/{thing}/shadow/`
//! instead, and skips the request topics there, because listing must publish nothing at all.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::case::{Operation, Outcome, PreparedCase, PreparedStep, Transport};
use crate::pattern::{
    PREVIOUS_NEXT_TOKEN, TimeWindows, differences, render, with_previous_next_token,
};
use crate::support::{Device, Http, MESSAGE_TIMEOUT};

/// How long a run keeps listening after the last expected message, for unexpected ones.
pub const SETTLE: Duration = Duration::from_millis(300);

/// Response topics of one shadow, after its topic prefix, to which the device subscribes.
const RESPONSE_TOPICS: [&str; 8] = [
    "update/accepted",
    "update/rejected",
    "update/delta",
    "update/documents",
    "get/accepted",
    "get/rejected",
    "delete/accepted",
    "delete/rejected",
];

/// The service a run talks to.
pub struct Target<'a> {
    /// Port of the MQTT broker the service uses.
    pub mqtt_port: u16,

    /// Client of the service's HTTP API.
    pub http: &'a Http,
}

/// Runs `case` over `transport` and returns every difference from its expectations.
pub fn run_case(
    case: &PreparedCase,
    transport: Transport,
    target: &Target,
    client_id: &str,
) -> Vec<String> {
    let case_started_at = now_s();
    let topic_prefix = format!("$aws/things/{}/shadow/", case.thing);
    let filters: Vec<String> = if case.request.operation == Operation::List {
        // One wildcard filter: overlapping filters could deliver a message twice.
        vec![format!("{topic_prefix}#")]
    } else {
        case.shadows
            .iter()
            .flat_map(|shadow| {
                let shadow_prefix = shadow
                    .as_ref()
                    .map_or_else(String::new, |shadow| format!("name/{shadow}/"));
                let topic_prefix = &topic_prefix;
                RESPONSE_TOPICS
                    .iter()
                    .map(move |kind| format!("{topic_prefix}{shadow_prefix}{kind}"))
            })
            .collect()
    };
    let device = Device::connect(client_id, target.mqtt_port, &filters);

    let mut sender = Sender {
        transport,
        device: &device,
        http: target.http,
        thing: &case.thing,
        topic_prefix: &topic_prefix,
        previous_next_token: None,
    };
    for (index, step) in case.prior.iter().enumerate() {
        if let Err(problem) = sender.run_prior(step) {
            return vec![format!("prior step {index}: {problem}")];
        }
    }
    let priors_done_at = now_s();
    let token_before_request = sender.previous_next_token.clone();

    std::thread::sleep(Duration::from_millis(case.request.delay_ms));
    let request_sent_at = now_s();
    let reply = match sender.send(&case.request) {
        Ok(reply) => reply,
        Err(problem) => return vec![format!("request: {problem}")],
    };

    let prior_tokens: BTreeSet<&str> = case
        .prior
        .iter()
        .filter_map(|step| step.client_token.as_deref())
        .collect();
    let received = collect(&device, &topic_prefix, &case.mqtt, &prior_tokens);
    let checked_at = now_s();
    let windows = TimeWindows {
        case: (case_started_at, checked_at),
        prior: (case_started_at, priors_done_at),
        request: (request_sent_at, checked_at),
    };

    let mut problems = compare_messages(&case.mqtt, &received, &windows);
    if let Some(expected) = &case.http {
        let (status, body) = reply.expect("an HTTP request returns a reply");
        let expected_body = match &token_before_request {
            Some(token) => with_previous_next_token(&expected.body, token),
            // An unreplaced placeholder fails the comparison below with its own message.
            None => expected.body.clone(),
        };
        if status != expected.status {
            problems.push(format!(
                "HTTP status: expected {}, got {status} with body {}",
                expected.status,
                render(&body)
            ));
        }
        let found = differences(&expected_body, &body, &windows);
        if !found.is_empty() {
            problems.push(format!(
                "HTTP body differs from the pattern:\n      {}\n      received: {}",
                found.join("\n      "),
                render(&body)
            ));
        }
    }
    problems
}

/// Sends steps of one case over its transport.
struct Sender<'a> {
    transport: Transport,
    device: &'a Device,
    http: &'a Http,
    thing: &'a str,
    topic_prefix: &'a str,

    /// `nextToken` of the last list reply, `None` before the first one or when it had none.
    previous_next_token: Option<String>,
}

impl Sender<'_> {
    /// Sends a step and returns the HTTP reply, or `None` over MQTT. A list step always goes
    /// over HTTP.
    ///
    /// # Errors
    ///
    /// Returns an error when a list step needs the previous `nextToken` and there is none.
    fn send(&mut self, step: &PreparedStep) -> Result<Option<(u16, Value)>, String> {
        if step.operation == Operation::List {
            return self.list(step).map(Some);
        }
        let reply = match self.transport {
            Transport::Mqtt => {
                let topic = format!(
                    "{}{}{}",
                    self.topic_prefix,
                    step.shadow_prefix(),
                    step.operation.as_str()
                );
                self.device
                    .publish(&topic, step.body.clone().unwrap_or_default());
                None
            }
            Transport::Http => {
                let mut path = format!("/things/{}/shadow", self.thing);
                if let Some(shadow) = &step.shadow {
                    path.push_str(&format!("?name={shadow}"));
                }
                let reply = match step.operation {
                    Operation::Update => self
                        .http
                        .post_bytes(&path, step.body.as_deref().unwrap_or_default()),
                    Operation::Get => self.http.get(&path),
                    Operation::Delete => self.http.delete(&path),
                    Operation::List => unreachable!("list steps return above"),
                };
                Some(reply)
            }
        };
        Ok(reply)
    }

    /// Sends `GET /api/things/shadow/ListNamedShadowsForThing/{thing}` and keeps the reply's
    /// `nextToken` for the next list step.
    fn list(&mut self, step: &PreparedStep) -> Result<(u16, Value), String> {
        let mut query = Vec::new();
        if let Some(page_size) = &step.page_size {
            query.push(format!("pageSize={}", encode_query_value(page_size)));
        }
        if let Some(token) = &step.next_token {
            let token = if token == PREVIOUS_NEXT_TOKEN {
                self.previous_next_token.as_deref().ok_or_else(|| {
                    format!("{PREVIOUS_NEXT_TOKEN} is used, but the previous list reply had no nextToken")
                })?
            } else {
                token.as_str()
            };
            query.push(format!("nextToken={}", encode_query_value(token)));
        }
        let mut path = format!("/api/things/shadow/ListNamedShadowsForThing/{}", self.thing);
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query.join("&"));
        }

        let (status, body) = self.http.get(&path);
        self.previous_next_token = body
            .get("nextToken")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok((status, body))
    }

    /// Sends a prior step and waits until it got the response the case expects.
    fn run_prior(&mut self, step: &PreparedStep) -> Result<(), String> {
        let response_prefix = format!(
            "{}{}{}",
            self.topic_prefix,
            step.shadow_prefix(),
            step.operation.as_str()
        );
        let accepted_topic = format!("{response_prefix}/accepted");
        std::thread::sleep(Duration::from_millis(step.delay_ms));
        let reply = self.send(step)?;

        let Some((status, body)) = reply else {
            let (topic, payload) = self.wait_for(|topic, payload| {
                (topic == accepted_topic || topic == format!("{response_prefix}/rejected"))
                    && client_token(payload) == step.client_token.as_deref()
            })?;
            let accepted = topic == accepted_topic;
            return check_outcome(step.outcome, accepted, &topic, &payload);
        };

        check_outcome(
            step.outcome,
            status == 200,
            &format!("HTTP status {status}"),
            &body,
        )?;
        let publishes = matches!(step.operation, Operation::Update | Operation::Delete);
        if status == 200 && publishes {
            // The service also publishes the reply on MQTT. Waiting for it keeps it from being
            // taken for a message of the request, since a delete reply carries no clientToken.
            self.wait_for(|topic, payload| topic == accepted_topic && *payload == body)?;
        }
        Ok(())
    }

    /// Waits for the first message that `wanted` accepts, skipping others.
    fn wait_for(&self, wanted: impl Fn(&str, &Value) -> bool) -> Result<(String, Value), String> {
        let deadline = Instant::now() + MESSAGE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.device.next_message(left) {
                Some((topic, payload)) if wanted(&topic, &payload) => return Ok((topic, payload)),
                Some(_) => continue,
                None => {
                    return Err(format!("no response arrived within {MESSAGE_TIMEOUT:?}"));
                }
            }
        }
    }
}

fn check_outcome(
    outcome: Outcome,
    accepted: bool,
    response: &str,
    payload: &Value,
) -> Result<(), String> {
    match (outcome, accepted) {
        (Outcome::Accepted, true) | (Outcome::Rejected, false) => Ok(()),
        (Outcome::Accepted, false) => Err(format!(
            "expected to be accepted, got {response}: {}",
            render(payload)
        )),
        (Outcome::Rejected, true) => Err(format!(
            "expected to be rejected, got {response}: {}",
            render(payload)
        )),
    }
}

/// Collects the request's messages, by topic suffix, in arrival order.
///
/// Messages that carry a prior step's `clientToken` are skipped, and so are the requests on the
/// request topics, which the device receives when it subscribes to a wildcard.
fn collect(
    device: &Device,
    topic_prefix: &str,
    expected: &BTreeMap<String, Value>,
    prior_tokens: &BTreeSet<&str>,
) -> Vec<(String, Value)> {
    let mut waiting: BTreeSet<&str> = expected.keys().map(String::as_str).collect();
    let mut received = Vec::new();
    let mut settling = waiting.is_empty();
    let mut deadline = Instant::now() + if settling { SETTLE } else { MESSAGE_TIMEOUT };
    // Ends when the settle window closes, or when MESSAGE_TIMEOUT passes with messages missing.
    while let Some((topic, payload)) =
        device.next_message(deadline.saturating_duration_since(Instant::now()))
    {
        if client_token(&payload).is_some_and(|token| prior_tokens.contains(token)) {
            continue;
        }
        let suffix = topic
            .strip_prefix(topic_prefix)
            .unwrap_or(&topic)
            .to_owned();
        if is_request_topic(&suffix) {
            continue;
        }
        waiting.remove(suffix.as_str());
        received.push((suffix, payload));
        if waiting.is_empty() && !settling {
            settling = true;
            deadline = Instant::now() + SETTLE;
        }
    }
    received
}

/// Compares received messages with the expected ones: one message per expected topic, and none
/// on any other topic.
fn compare_messages(
    expected: &BTreeMap<String, Value>,
    received: &[(String, Value)],
    windows: &TimeWindows,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut matched = BTreeSet::new();
    for (topic, payload) in received {
        let Some(pattern) = expected.get(topic) else {
            problems.push(format!("{topic}: unexpected message {}", render(payload)));
            continue;
        };
        if !matched.insert(topic.as_str()) {
            problems.push(format!(
                "{topic}: a second message arrived: {}",
                render(payload)
            ));
            continue;
        }
        let found = differences(pattern, payload, windows);
        if !found.is_empty() {
            problems.push(format!(
                "{topic}: differs from the pattern:\n      {}\n      received: {}",
                found.join("\n      "),
                render(payload)
            ));
        }
    }
    for (topic, pattern) in expected {
        if !matched.contains(topic.as_str()) {
            problems.push(format!(
                "{topic}: no message within {MESSAGE_TIMEOUT:?}, expected {}",
                render(pattern)
            ));
        }
    }
    problems
}

/// Returns true for a request topic suffix such as `update` or `name/config/get`.
fn is_request_topic(suffix: &str) -> bool {
    let operation = match suffix.strip_prefix("name/") {
        Some(named) => named.split_once('/').map_or("", |(_, rest)| rest),
        None => suffix,
    };
    matches!(operation, "update" | "get" | "delete")
}

/// Percent-encodes every byte of `value` except the unreserved characters of RFC 3986.
fn encode_query_value(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn client_token(payload: &Value) -> Option<&str> {
    payload.get("clientToken").and_then(Value::as_str)
}

/// Returns the current time in whole epoch seconds, as shadow documents write it.
fn now_s() -> i64 {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(elapsed.as_secs()).expect("epoch seconds fit in i64")
}
