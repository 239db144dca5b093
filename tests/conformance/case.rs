//! The conformance case format, and loading, checking and preparing case files.
//!
//! Every `*.json` file under `tests/conformance/cases/` contains a JSON array of cases, which
//! run against a service with the default settings, or an object with the settings of the
//! service its cases run against and the array of cases:
//!
//! ```json
//! {"service": {"limits": {"max_requests_per_second": 0}}, "cases": [...]}
//! ```
//!
//! `service` is a non-empty JSON object that mirrors the TOML file of `shadowflow serve --config`:
//! the example becomes `[limits]` with `max_requests_per_second = 0`. It may not contain `null`
//! or the settings the runner passes as flags (`workers`, `data_dir`, `embedded_broker.listen`,
//! `mqtt.broker` and `http.listen`). The runner starts one service per distinct `service` and
//! broker, so files with equal settings share a service.
//!
//! A case looks like this:
//!
//! ```json
//! {
//!   "name": "null deletes a key",
//!   "rule": "a null value deletes that key and its metadata",
//!   "transports": ["mqtt", "http"],
//!   "thing": "conformance-${id}",
//!   "prior": [{"operation": "update", "payload": {"state": {"reported": {"a": 1, "b": 2}}}}],
//!   "request": {"operation": "update", "payload": {"state": {"reported": {"a": null}}}},
//!   "expect": {
//!     "mqtt": {"update/accepted": {...}, "update/documents": {...}},
//!     "http": {"status": 200, "body": {...}}
//!   }
//! }
//! ```
//!
//! - `name` is unique across all files. `rule` is one sentence stating the AWS behaviour the
//!   case pins.
//! - `transports` lists where the case applies: `mqtt` (request topics) and `http` (REST API).
//! - `thing` is optional and must contain `${id}`, which the runner replaces with a 5-character
//!   id unique to the case and transport (such as `c017m`), so cases can share one service. The
//!   default is `conformance-${id}`.
//! - A step (`request`, and each entry of `prior`) has an `operation` (`update`, `get` or
//!   `delete`), an optional `shadow` name (none means the classic shadow) and at most one payload:
//!   `payload` (JSON), `payload_text` (raw text, e.g. malformed JSON) or `payload_hex` (raw bytes,
//!   e.g. invalid UTF-8). `delay_ms` waits before the step is sent.
//! - A `list` step pages through the named shadows of the thing with
//!   `GET /api/things/shadow/ListNamedShadowsForThing/{thing}`. It has no shadow and no payload,
//!   and may set `page_size` (an integer, or a string sent as it is, e.g. `"ten"`) and
//!   `next_token` (a string). AWS offers this operation over HTTP only, so a list step is always
//!   sent over HTTP, and the case's transports decide only how its other steps are sent. The
//!   `next_token` `"$previous_next_token"` stands for the `nextToken` of the case's previous
//!   list reply, which must have one. A case whose request is a list step needs `expect.http`,
//!   and its `expect.mqtt` must be empty, because listing publishes nothing: its run watches every
//!   topic under `$aws/things/{thing}/shadow/` apart from the request topics.
//! - `prior` steps set the shadow up over the case's transport. Each must be accepted, unless it
//!   sets `"outcome": "rejected"`. The runner gives every prior JSON payload a `clientToken`
//!   (`prior-N`, unless it has one) and ignores every message that carries a prior token, such as
//!   a late `/update/delta` of a prior step. Over HTTP, a get or delete step has no body.
//! - `expect.mqtt` maps every response topic on which exactly one message must arrive to the
//!   pattern of that message (see the `pattern` module). A topic is written as the part after
//!   `$aws/things/{thing}/shadow/`, e.g. `update/delta` or `name/config/get/accepted`. Any other
//!   message on the response topics of the case's shadows fails the case.
//! - Over HTTP the expected MQTT messages are those of `expect.mqtt` except the `/rejected` and
//!   `get/accepted` ones, because REST requests publish only what changes a shadow. The expected
//!   reply is `expect.http`, or else the request's own `{operation}/accepted` message with status
//!   200, or its `{operation}/rejected` message with the status in its `code`.
//!
//! In payloads and patterns, `${thing}` and `${id}` inside strings are replaced by the thing name
//! and the id, and a string `"$repeat:N:TEXT"` becomes TEXT repeated N times. The expected body
//! of a list request may contain `"$previous_next_token"`, which matches only the `nextToken` of
//! the previous list reply.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::pattern::{PREVIOUS_NEXT_TOKEN, unknown_placeholder};

/// Folder of the case files.
pub const CASES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance/cases");

/// Where a request is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// The shadow request topics of the MQTT broker.
    Mqtt,
    /// The REST API.
    Http,
}

impl Transport {
    /// Returns the transport's name as case files write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Mqtt => "mqtt",
            Transport::Http => "http",
        }
    }
}

/// A shadow operation: the request topic suffix and HTTP method of a shadow request, or a list
/// of the thing's named shadows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// `update`, HTTP `POST`.
    Update,
    /// `get`, HTTP `GET`.
    Get,
    /// `delete`, HTTP `DELETE`.
    Delete,
    /// `ListNamedShadowsForThing`, HTTP `GET` only.
    List,
}

impl Operation {
    /// Returns the topic segment of the operation.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Update => "update",
            Operation::Get => "get",
            Operation::Delete => "delete",
            Operation::List => "list",
        }
    }
}

/// The response a prior step must get before the case goes on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// `/accepted`, or HTTP 200.
    #[default]
    Accepted,
    /// `/rejected`, or an HTTP error status.
    Rejected,
}

/// One conformance case, as written in a case file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Unique name.
    pub name: String,

    /// The AWS behaviour the case pins, in one sentence.
    pub rule: String,

    /// Transports the case runs over.
    pub transports: Vec<Transport>,

    /// Thing name template, containing `${id}`.
    #[serde(default = "default_thing")]
    pub thing: String,

    /// Steps that set the shadow up.
    #[serde(default)]
    pub prior: Vec<Step>,

    /// The request under test.
    pub request: Step,

    /// What the request must produce.
    pub expect: Expect,

    /// Case file, relative to [`CASES_DIR`].
    #[serde(skip)]
    pub file: String,

    /// Settings of the service the case runs against, as the text of a TOML config file, or
    /// `None` for the default settings.
    #[serde(skip)]
    pub settings: Option<String>,
}

fn default_thing() -> String {
    "conformance-${id}".to_owned()
}

/// One request of a case.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Operation requested.
    pub operation: Operation,

    /// Named shadow, or `None` for the classic shadow.
    #[serde(default)]
    pub shadow: Option<String>,

    /// JSON payload.
    #[serde(default)]
    payload: Option<Value>,

    /// Raw text payload.
    #[serde(default)]
    payload_text: Option<String>,

    /// Raw bytes payload, as hexadecimal digits.
    #[serde(default)]
    payload_hex: Option<String>,

    /// Milliseconds to wait before sending the step.
    #[serde(default)]
    pub delay_ms: u64,

    /// Response a prior step must get.
    #[serde(default)]
    pub outcome: Outcome,

    /// `pageSize` of a list step: an integer, or a string sent as it is.
    #[serde(default)]
    page_size: Option<Value>,

    /// `nextToken` of a list step, or [`PREVIOUS_NEXT_TOKEN`].
    #[serde(default)]
    next_token: Option<String>,
}

impl Step {
    fn has_raw_payload(&self) -> bool {
        self.payload_text.is_some() || self.payload_hex.is_some()
    }
}

/// Expected results of a case's request.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Pattern of the message on each response topic, by topic suffix.
    #[serde(default)]
    pub mqtt: BTreeMap<String, Value>,

    /// The HTTP reply, when it cannot be derived from `mqtt`.
    #[serde(default)]
    pub http: Option<HttpExpect>,
}

/// An expected HTTP reply.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpExpect {
    /// Status code.
    pub status: u16,

    /// Pattern of the JSON body.
    pub body: Value,
}

/// A step ready to send: names substituted and the payload encoded.
#[derive(Clone, Debug)]
pub struct PreparedStep {
    /// Operation requested.
    pub operation: Operation,

    /// Named shadow, or `None` for the classic shadow.
    pub shadow: Option<String>,

    /// Payload bytes, `None` for an empty MQTT payload or no HTTP body.
    pub body: Option<Vec<u8>>,

    /// `clientToken` of the payload, if it has one.
    pub client_token: Option<String>,

    /// Milliseconds to wait before sending.
    pub delay_ms: u64,

    /// Response a prior step must get.
    pub outcome: Outcome,

    /// `pageSize` query value of a list step.
    pub page_size: Option<String>,

    /// `nextToken` query value of a list step, possibly [`PREVIOUS_NEXT_TOKEN`], which the
    /// runner replaces.
    pub next_token: Option<String>,
}

impl PreparedStep {
    /// Returns the topic part between `$aws/things/{thing}/shadow/` and the operation.
    pub fn shadow_prefix(&self) -> String {
        shadow_prefix(self.shadow.as_deref())
    }
}

/// A case prepared for one run over one transport.
#[derive(Clone, Debug)]
pub struct PreparedCase {
    /// Thing name of this run.
    pub thing: String,

    /// Shadows whose response topics are watched: `None` is the classic shadow.
    pub shadows: BTreeSet<Option<String>>,

    /// Set-up steps.
    pub prior: Vec<PreparedStep>,

    /// The request under test.
    pub request: PreparedStep,

    /// Pattern of every expected MQTT message, by topic suffix.
    pub mqtt: BTreeMap<String, Value>,

    /// Expected reply, for HTTP runs and for every run of a list request.
    pub http: Option<HttpExpect>,
}

/// Loads every case file, sorted by file name, and checks each case.
///
/// # Panics
///
/// Panics with the file and case name when a file cannot be read or parsed, or a case is
/// invalid, or two cases share a name.
pub fn load_cases() -> Vec<Case> {
    let mut files: Vec<_> = std::fs::read_dir(CASES_DIR)
        .unwrap_or_else(|error| panic!("reading {CASES_DIR} failed: {error}"))
        .map(|entry| entry.expect("reading a directory entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    files.sort();

    let mut cases = Vec::new();
    for path in files {
        cases.extend(load_file(&path));
    }
    let mut names = BTreeSet::new();
    for case in &cases {
        assert!(
            names.insert(case.name.as_str()),
            "two cases are named {:?}",
            case.name
        );
    }
    cases
}

fn load_file(path: &Path) -> Vec<Case> {
    let file = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("reading {} failed: {error}", path.display()));
    let invalid =
        |error: &dyn std::fmt::Display| -> ! { panic!("{file} is not a valid case file: {error}") };
    let content: Value = serde_json::from_str(&text).unwrap_or_else(|error| invalid(&error));
    let (mut cases, settings) = if content.is_array() {
        let cases: Vec<Case> =
            serde_json::from_value(content).unwrap_or_else(|error| invalid(&error));
        (cases, None)
    } else {
        let with_service: CaseFileWithService =
            serde_json::from_value(content).unwrap_or_else(|error| invalid(&error));
        let settings = settings_toml(&with_service.service)
            .unwrap_or_else(|error| panic!("{file} has invalid service settings: {error}"));
        (with_service.cases, Some(settings))
    };
    for case in &mut cases {
        case.file = file.clone();
        case.settings = settings.clone();
        expand_case(case);
        if let Err(problem) = check(case) {
            panic!("case {:?} in {file} is invalid: {problem}", case.name);
        }
    }
    cases
}

/// A case file that sets the service settings of its cases.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFileWithService {
    /// The settings, shaped like the TOML config file.
    service: Map<String, Value>,

    /// The cases.
    cases: Vec<Case>,
}

/// Settings that the runner passes as command-line flags, which override the config file.
const FLAG_SETTINGS: [&[&str]; 5] = [
    &["workers"],
    &["data_dir"],
    &["embedded_broker", "listen"],
    &["mqtt", "broker"],
    &["http", "listen"],
];

/// Converts the `service` object of a case file to the text of a TOML config file.
fn settings_toml(service: &Map<String, Value>) -> Result<String, String> {
    if service.is_empty() {
        return Err(
            "service is empty: use a plain array of cases for the default settings".to_owned(),
        );
    }
    for path in FLAG_SETTINGS {
        let (last, parents) = path.split_last().expect("every path has a key");
        let mut section = Some(service);
        for parent in parents {
            section = section
                .and_then(|members| members.get(*parent))
                .and_then(Value::as_object);
        }
        if section.is_some_and(|members| members.contains_key(*last)) {
            return Err(format!(
                "{} is set by the runner's command-line flags, which override the config file, so \
                 remove it from service",
                path.join(".")
            ));
        }
    }
    if contains_null(&Value::Object(service.clone())) {
        return Err("TOML has no null, so service may not contain one".to_owned());
    }
    toml::to_string(service).map_err(|error| format!("converting service to TOML failed: {error}"))
}

fn contains_null(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(elements) => elements.iter().any(contains_null),
        Value::Object(members) => members.values().any(contains_null),
        _ => false,
    }
}

/// Expands every `"$repeat:N:TEXT"` string of the payloads and patterns.
fn expand_case(case: &mut Case) {
    for step in case.prior.iter_mut().chain([&mut case.request]) {
        if let Some(payload) = &mut step.payload {
            expand_repeats(payload);
        }
    }
    for pattern in case.expect.mqtt.values_mut() {
        expand_repeats(pattern);
    }
    if let Some(http) = &mut case.expect.http {
        expand_repeats(&mut http.body);
    }
}

fn expand_repeats(value: &mut Value) {
    match value {
        Value::String(text) => {
            if let Some(spec) = text.strip_prefix("$repeat:") {
                let (count, unit) = spec
                    .split_once(':')
                    .unwrap_or_else(|| panic!("{text:?} is not $repeat:COUNT:TEXT"));
                let count: usize = count
                    .parse()
                    .unwrap_or_else(|_| panic!("{text:?} has a count that is not a number"));
                *text = unit.repeat(count);
            }
        }
        Value::Array(elements) => elements.iter_mut().for_each(expand_repeats),
        Value::Object(members) => members.values_mut().for_each(expand_repeats),
        _ => {}
    }
}

/// Checks the rules of the format that serde cannot check.
fn check(case: &Case) -> Result<(), String> {
    if case.rule.trim().is_empty() {
        return Err("rule is empty".to_owned());
    }
    if case.transports.is_empty() {
        return Err("transports is empty".to_owned());
    }
    if !case.thing.contains("${id}") {
        return Err(format!("thing {:?} lacks ${{id}}", case.thing));
    }

    for step in case.prior.iter().chain([&case.request]) {
        check_step(step, &case.transports)?;
    }
    check_list_tokens(case)?;
    if case.request.outcome != Outcome::Accepted {
        return Err("outcome applies to prior steps only".to_owned());
    }
    check_client_tokens(case)?;

    for (topic, pattern) in &case.expect.mqtt {
        parse_topic(topic)?;
        if let Some(unknown) = unknown_placeholder(pattern) {
            return Err(format!("{topic} has the unknown placeholder {unknown:?}"));
        }
    }
    let http_body = case.expect.http.as_ref().map(|http| &http.body);
    if let Some(unknown) = http_body.and_then(unknown_placeholder) {
        return Err(format!("http body has the unknown placeholder {unknown:?}"));
    }
    if case.request.operation == Operation::List {
        if case.expect.http.is_none() {
            return Err("a list request needs expect.http".to_owned());
        }
        if !case.expect.mqtt.is_empty() {
            return Err(
                "a list request publishes nothing, so expect.mqtt must be empty".to_owned(),
            );
        }
    } else if case.transports.contains(&Transport::Http) && case.expect.http.is_none() {
        derive_http(case)?;
    }
    Ok(())
}

/// Checks that every `"$previous_next_token"` follows a list step.
fn check_list_tokens(case: &Case) -> Result<(), String> {
    let mut list_seen = false;
    for (index, step) in case.prior.iter().enumerate() {
        if step.next_token.as_deref() == Some(PREVIOUS_NEXT_TOKEN) && !list_seen {
            return Err(format!(
                "prior step {index} uses {PREVIOUS_NEXT_TOKEN:?}, but no list step comes before it"
            ));
        }
        list_seen |= step.operation == Operation::List;
    }
    if case.request.next_token.as_deref() == Some(PREVIOUS_NEXT_TOKEN) && !list_seen {
        return Err(format!(
            "the request uses {PREVIOUS_NEXT_TOKEN:?}, but no prior step is a list step"
        ));
    }
    let body_uses_token = case
        .expect
        .http
        .as_ref()
        .is_some_and(|http| contains_string(&http.body, PREVIOUS_NEXT_TOKEN));
    if body_uses_token && !(case.request.operation == Operation::List && list_seen) {
        return Err(format!(
            "expect.http may contain {PREVIOUS_NEXT_TOKEN:?} only for a list request after a \
             prior list step"
        ));
    }
    let mqtt_uses_token = case
        .expect
        .mqtt
        .values()
        .any(|pattern| contains_string(pattern, PREVIOUS_NEXT_TOKEN));
    if mqtt_uses_token {
        return Err(format!(
            "expect.mqtt may not contain {PREVIOUS_NEXT_TOKEN:?}"
        ));
    }
    Ok(())
}

fn contains_string(value: &Value, wanted: &str) -> bool {
    match value {
        Value::String(text) => text == wanted,
        Value::Array(elements) => elements
            .iter()
            .any(|element| contains_string(element, wanted)),
        Value::Object(members) => members
            .values()
            .any(|member| contains_string(member, wanted)),
        _ => false,
    }
}

/// Checks that the messages of every prior step can be distinguished from the request's by their
/// `clientToken`.
fn check_client_tokens(case: &Case) -> Result<(), String> {
    let mut prior_tokens = BTreeSet::new();
    for (index, step) in case.prior.iter().enumerate() {
        // An accepted update publishes several messages, and the runner recognises them by the
        // clientToken it adds to a JSON object payload.
        let raw = step.has_raw_payload();
        let object = step.payload.as_ref().is_some_and(Value::is_object);
        if step.outcome == Outcome::Accepted
            && (raw || (step.operation == Operation::Update && !object))
        {
            return Err(format!(
                "prior step {index} is expected to be accepted, so it needs a JSON object payload"
            ));
        }
        let token = prior_token(step, index);
        if !prior_tokens.insert(token.clone()) {
            return Err(format!("prior steps share the clientToken {token:?}"));
        }
    }

    let request_token = json_client_token(case.request.payload.as_ref());
    if let Some(token) = request_token.filter(|token| prior_tokens.contains(token)) {
        return Err(format!(
            "the request reuses the prior clientToken {token:?}"
        ));
    }
    Ok(())
}

fn check_step(step: &Step, transports: &[Transport]) -> Result<(), String> {
    let payloads = [
        step.payload.is_some(),
        step.payload_text.is_some(),
        step.payload_hex.is_some(),
    ];
    if payloads.iter().filter(|given| **given).count() > 1 {
        return Err("a step has more than one of payload, payload_text and payload_hex".to_owned());
    }
    let has_payload = payloads.contains(&true);
    if step.operation == Operation::List {
        return check_list_step(step, has_payload);
    }
    if step.page_size.is_some() || step.next_token.is_some() {
        return Err(format!(
            "page_size and next_token apply to list steps only, not to {}",
            step.operation.as_str()
        ));
    }
    if has_payload && step.operation != Operation::Update && transports.contains(&Transport::Http) {
        return Err(format!(
            "a {} step with a payload can run over mqtt only, because an HTTP {} has no body",
            step.operation.as_str(),
            step.operation.as_str()
        ));
    }
    if let Some(hex) = &step.payload_hex {
        decode_hex(hex)?;
    }
    Ok(())
}

fn check_list_step(step: &Step, has_payload: bool) -> Result<(), String> {
    if has_payload {
        return Err("a list step has no payload".to_owned());
    }
    if step.shadow.is_some() {
        return Err(
            "a list step lists every named shadow of the thing, so it names no shadow".to_owned(),
        );
    }
    let invalid_page_size = step
        .page_size
        .as_ref()
        .filter(|size| !(size.is_i64() || size.is_u64() || size.is_string()));
    if let Some(page_size) = invalid_page_size {
        return Err(format!(
            "page_size {page_size} is neither an integer nor a string"
        ));
    }
    if let Some(token) = &step.next_token {
        let value = Value::String(token.clone());
        if token != PREVIOUS_NEXT_TOKEN && unknown_placeholder(&value).is_some() {
            return Err(format!(
                "next_token {token:?} looks like a misspelt {PREVIOUS_NEXT_TOKEN:?}"
            ));
        }
    }
    Ok(())
}

/// Returns the `clientToken` a prior step carries: its own, or `prior-{index}`.
fn prior_token(step: &Step, index: usize) -> String {
    json_client_token(step.payload.as_ref()).unwrap_or_else(|| format!("prior-{index}"))
}

fn json_client_token(payload: Option<&Value>) -> Option<String> {
    payload?
        .get("clientToken")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Splits a topic suffix into its shadow, operation and response kind.
fn parse_topic(topic: &str) -> Result<(Option<&str>, &str, &str), String> {
    let (shadow, rest) = match topic.strip_prefix("name/") {
        Some(named) => {
            let (shadow, rest) = named
                .split_once('/')
                .ok_or_else(|| format!("topic {topic:?} has no operation"))?;
            (Some(shadow), rest)
        }
        None => (None, topic),
    };
    let (operation, kind) = rest
        .split_once('/')
        .ok_or_else(|| format!("topic {topic:?} has no response kind"))?;
    let valid = match operation {
        "update" => matches!(kind, "accepted" | "rejected" | "delta" | "documents"),
        "get" | "delete" => matches!(kind, "accepted" | "rejected"),
        _ => false,
    };
    if !valid {
        return Err(format!("{topic:?} is not a shadow response topic"));
    }
    Ok((shadow, operation, kind))
}

fn shadow_prefix(shadow: Option<&str>) -> String {
    shadow.map_or_else(String::new, |shadow| format!("name/{shadow}/"))
}

/// Derives the expected HTTP reply from the request's own `/accepted` or `/rejected` message.
fn derive_http(case: &Case) -> Result<HttpExpect, String> {
    let prefix = format!(
        "{}{}",
        shadow_prefix(case.request.shadow.as_deref()),
        case.request.operation.as_str()
    );
    let accepted = case.expect.mqtt.get(&format!("{prefix}/accepted"));
    let rejected = case.expect.mqtt.get(&format!("{prefix}/rejected"));
    match (accepted, rejected) {
        (Some(body), None) => Ok(HttpExpect {
            status: 200,
            body: body.clone(),
        }),
        (None, Some(body)) => {
            let status = body
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|code| u16::try_from(code).ok())
                .ok_or_else(|| format!("{prefix}/rejected has no integer code"))?;
            Ok(HttpExpect {
                status,
                body: body.clone(),
            })
        }
        _ => Err(format!(
            "expect.http is needed, because exactly one of {prefix}/accepted and \
             {prefix}/rejected must be expected to derive the HTTP reply"
        )),
    }
}

/// Returns true when the service publishes on this topic for requests made over HTTP.
fn published_for_http(topic: &str) -> bool {
    match parse_topic(topic) {
        Ok((_, operation, kind)) => kind != "rejected" && operation != "get",
        Err(_) => false,
    }
}

impl Case {
    /// Prepares the case for one run: `id` is unique to the case and transport.
    ///
    /// # Panics
    ///
    /// Panics when the case was not checked by [`load_cases`].
    pub fn prepare(&self, id: &str, transport: Transport) -> PreparedCase {
        let thing = self.thing.replace("${id}", id);
        let substitute = |value: &Value| substitute(value, &thing, id);

        let prior = self
            .prior
            .iter()
            .enumerate()
            .map(|(index, step)| {
                let mut step = step.clone();
                let token = prior_token(&step, index);
                let raw = step.has_raw_payload();
                match &mut step.payload {
                    Some(Value::Object(members)) => {
                        members
                            .entry("clientToken")
                            .or_insert_with(|| Value::from(token));
                    }
                    Some(_) => {}
                    None if transport == Transport::Mqtt
                        && !raw
                        && step.operation != Operation::List =>
                    {
                        let mut members = Map::new();
                        members.insert("clientToken".to_owned(), Value::from(token));
                        step.payload = Some(Value::Object(members));
                    }
                    None => {}
                }
                prepare_step(&step, &substitute, &thing, id)
            })
            .collect();
        let request = prepare_step(&self.request, &substitute, &thing, id);

        let mqtt: BTreeMap<String, Value> = self
            .expect
            .mqtt
            .iter()
            .filter(|(topic, _)| transport == Transport::Mqtt || published_for_http(topic))
            .map(|(topic, pattern)| (topic.clone(), substitute(pattern)))
            .collect();
        let http = match transport {
            _ if self.request.operation == Operation::List => {
                let expected = self
                    .expect
                    .http
                    .as_ref()
                    .expect("checked when the case was loaded");
                Some(HttpExpect {
                    status: expected.status,
                    body: substitute(&expected.body),
                })
            }
            Transport::Mqtt => None,
            Transport::Http => {
                let expected = match &self.expect.http {
                    Some(http) => http.clone(),
                    None => derive_http(self).expect("checked when the case was loaded"),
                };
                Some(HttpExpect {
                    status: expected.status,
                    body: substitute(&expected.body),
                })
            }
        };

        let mut shadows: BTreeSet<Option<String>> = BTreeSet::from([None]);
        shadows.extend(self.prior.iter().map(|step| step.shadow.clone()));
        shadows.insert(self.request.shadow.clone());
        for topic in self.expect.mqtt.keys() {
            let (shadow, _, _) = parse_topic(topic).expect("checked when the case was loaded");
            shadows.insert(shadow.map(str::to_owned));
        }

        PreparedCase {
            thing,
            shadows,
            prior,
            request,
            mqtt,
            http,
        }
    }
}

fn prepare_step(
    step: &Step,
    substitute: &dyn Fn(&Value) -> Value,
    thing: &str,
    id: &str,
) -> PreparedStep {
    let payload = step.payload.as_ref().map(substitute);
    let body = if let Some(payload) = &payload {
        Some(serde_json::to_vec(payload).expect("a JSON value serializes"))
    } else if let Some(text) = &step.payload_text {
        Some(
            text.replace("${thing}", thing)
                .replace("${id}", id)
                .into_bytes(),
        )
    } else {
        step.payload_hex
            .as_deref()
            .map(|hex| decode_hex(hex).expect("checked when the case was loaded"))
    };
    PreparedStep {
        operation: step.operation,
        shadow: step.shadow.clone(),
        body,
        client_token: json_client_token(payload.as_ref()),
        delay_ms: step.delay_ms,
        outcome: step.outcome,
        page_size: step.page_size.as_ref().map(|size| match size {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        }),
        next_token: step.next_token.clone(),
    }
}

/// Replaces `${thing}` and `${id}` in every string of `value`.
fn substitute(value: &Value, thing: &str, id: &str) -> Value {
    match value {
        Value::String(text) => Value::String(text.replace("${thing}", thing).replace("${id}", id)),
        Value::Array(elements) => Value::Array(
            elements
                .iter()
                .map(|element| substitute(element, thing, id))
                .collect(),
        ),
        Value::Object(members) => Value::Object(
            members
                .iter()
                .map(|(key, member)| (key.clone(), substitute(member, thing, id)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn decode_hex(hex: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = hex
        .bytes()
        .filter(|byte| !byte.is_ascii_whitespace())
        .collect();
    if digits.len() % 2 == 1 {
        return Err(format!("payload_hex {hex:?} has an odd number of digits"));
    }
    digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("payload_hex {hex:?} contains a non-hex digit"))
        })
        .collect()
}
