//! Checks of the service against the [`Ledger`]: the shadows after a restart, and the Parquet
//! history after a graceful stop.
//!
//! # Notes
//!
//! - A `Pending` request got no response before the crash, so the service may or may not have
//!   applied it. The checks accept both, but an applied one must still fit in the version
//!   sequence, and its history row must match the request.
//! - Each check returns violations as text instead of panicking, so one failure report lists
//!   every broken shadow.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::ledger::{Change, Ledger, Outcome, Request, ShadowId, ShadowSummary};
use crate::load::http_update;
use crate::support::Http;

/// Most violations listed for one shadow; the rest are counted.
const MAX_VIOLATIONS_PER_SHADOW: usize = 8;

/// What a restart recovered, as seen over HTTP.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Shadows that exist.
    pub live: usize,
    /// Shadows that return 404.
    pub missing: usize,
    /// Contradictions with the ledger.
    pub violations: Vec<String>,
}

/// Versions that the first update after a restart may get, both ends included.
#[derive(Debug, Clone, Copy)]
struct ProbeVersions {
    min: u64,
    max: u64,
}

/// Reads every shadow in the ledger after a restart and checks it against the acknowledged
/// requests. Then sends one probe update per shadow, which must continue the version sequence.
///
/// A shadow must have at least the version of its last acknowledged change, and at most one
/// more for each pending update. It must contain the value of the acknowledged update with its
/// version, or else of a pending update, because a pending change may survive a crash.
pub fn check_recovered(ledger: &Ledger, http: &Http, generation: u32) -> Recovered {
    let mut recovered = Recovered::default();
    for (shadow, requests) in ledger.by_shadow() {
        let summary = ShadowSummary::of(&requests);
        check_unique_versions(&shadow, &summary, &mut recovered.violations);

        let expected = match http.try_get(&shadow.http_path()) {
            Err(error) => {
                recovered
                    .violations
                    .push(format!("{shadow}: GET failed after the restart: {error}"));
                continue;
            }
            Ok((200, body)) => {
                recovered.live += 1;
                check_live_shadow(ledger, &shadow, &summary, &body, &mut recovered.violations)
            }
            Ok((404, _)) => {
                recovered.missing += 1;
                check_missing_shadow(&shadow, &summary, &mut recovered.violations)
            }
            Ok((status, body)) => {
                recovered.violations.push(format!(
                    "{shadow}: GET returned {status} after the restart: {body}"
                ));
                continue;
            }
        };
        probe(
            ledger,
            http,
            &shadow,
            generation,
            expected,
            &mut recovered.violations,
        );
    }
    recovered
}

/// Checks that no two acknowledged changes of one kind share a version.
fn check_unique_versions(shadow: &ShadowId, summary: &ShadowSummary, violations: &mut Vec<String>) {
    let kinds = [("updates", &summary.updates), ("deletes", &summary.deletes)];
    for (kind, by_version) in kinds {
        for (version, tokens) in by_version {
            if tokens.len() > 1 {
                violations.push(format!(
                    "{shadow}: acknowledged {kind} {tokens:?} all got version {version}"
                ));
            }
        }
    }
}

/// Checks a shadow that exists after the restart, and returns the version its next update
/// must get.
fn check_live_shadow(
    ledger: &Ledger,
    shadow: &ShadowId,
    summary: &ShadowSummary,
    body: &Value,
    violations: &mut Vec<String>,
) -> ProbeVersions {
    let Some(version) = body["version"].as_u64() else {
        violations.push(format!("{shadow}: GET returned no version: {body}"));
        return ProbeVersions {
            min: 1,
            max: u64::MAX,
        };
    };
    let token = body["state"]["reported"]["token"].as_str().unwrap_or("");

    // The version lies between the last acknowledged one and that plus the pending updates.
    let (min, max) = summary.possible_versions();
    if let Some((acknowledged, true)) = summary.last_acknowledged()
        && version == acknowledged
    {
        violations.push(format!(
            "{shadow}: exists with version {version} after the restart, but its delete at that \
             version was acknowledged before the crash"
        ));
    }
    if version < min || version > max {
        violations.push(format!(
            "{shadow}: version {version} after the restart, expected {min}..={max} (the last \
             acknowledged version plus {} pending updates)",
            summary.pending_updates
        ));
    }

    // The value is the one written at this version.
    match summary.updates.get(&version) {
        Some(tokens) if !tokens.iter().any(|known| known == token) => {
            violations.push(format!(
                "{shadow}: version {version} contains {token:?}, but update {tokens:?} was \
                 acknowledged with that version; state: {}",
                body["state"]
            ));
        }
        Some(_) => {}
        None => check_unacknowledged_value(ledger, shadow, version, token, violations),
    }
    ProbeVersions {
        min: version + 1,
        max: version + 1,
    }
}

/// Checks a value that no acknowledged update set: it must come from a pending update of
/// the same shadow.
fn check_unacknowledged_value(
    ledger: &Ledger,
    shadow: &ShadowId,
    version: u64,
    token: &str,
    violations: &mut Vec<String>,
) {
    let Some(request) = ledger.request(token) else {
        violations.push(format!(
            "{shadow}: version {version} contains token {token:?}, which no client sent"
        ));
        return;
    };
    if request.shadow != *shadow {
        violations.push(format!(
            "{shadow}: version {version} contains {token}, an update of {}",
            request.shadow
        ));
    }
    match request.outcome {
        Outcome::Pending => {}
        Outcome::Accepted {
            version: acknowledged,
        } => violations.push(format!(
            "{shadow}: version {version} contains {token}, which was acknowledged with version \
             {acknowledged}"
        )),
        Outcome::Rejected { code } => violations.push(format!(
            "{shadow}: version {version} contains {token}, which was rejected with {code}"
        )),
    }
}

/// Checks a shadow that returns 404 after the restart, and returns the versions its next
/// update may get.
fn check_missing_shadow(
    shadow: &ShadowId,
    summary: &ShadowSummary,
    violations: &mut Vec<String>,
) -> ProbeVersions {
    if let Some((version, false)) = summary.last_acknowledged()
        && !summary.pending_delete
    {
        let tokens = &summary.updates[&version];
        violations.push(format!(
            "{shadow}: not found after the restart, but update {tokens:?} to version {version} \
             was acknowledged and no delete is pending"
        ));
    }
    let (min, max) = summary.possible_versions();
    ProbeVersions {
        min: min + 1,
        max: max + 1,
    }
}

/// Sends one update to `shadow` and checks its version.
fn probe(
    ledger: &Ledger,
    http: &Http,
    shadow: &ShadowId,
    generation: u32,
    expected: ProbeVersions,
    violations: &mut Vec<String>,
) {
    let client = format!("probe{generation}");
    let response = match http_update(http, ledger, &client, shadow, generation, 0) {
        Ok(response) => response,
        Err(error) => {
            violations.push(format!("{shadow}: probe update failed: {error}"));
            return;
        }
    };
    violations.extend(response.violations);
    let Outcome::Accepted { version } = response.outcome else {
        violations.push(format!(
            "{shadow}: probe update {} got {:?}",
            response.token, response.outcome
        ));
        return;
    };
    let ProbeVersions { min, max } = expected;
    if version < min || version > max {
        violations.push(format!(
            "{shadow}: the first update after the restart got version {version}, expected \
             {min}..={max}"
        ));
    }
}

/// One history row, as read by pyarrow.
#[derive(Debug)]
struct HistoryRow {
    change: String,
    version: u64,
    client_token: Option<String>,
    origin: String,
    reported: Option<Value>,
}

impl HistoryRow {
    fn parse(row: &Value) -> (ShadowId, HistoryRow) {
        let thing = row["thing_name"].as_str().unwrap_or_default();
        let shadow = match row["shadow_name"].as_str() {
            Some(name) => ShadowId::named(thing, name),
            None => ShadowId::classic(thing),
        };
        let reported = row["reported"]
            .as_str()
            .and_then(|text| serde_json::from_str(text).ok());
        let parsed = HistoryRow {
            change: row["change"].as_str().unwrap_or_default().to_owned(),
            version: row["version"].as_u64().unwrap_or(0),
            client_token: row["client_token"].as_str().map(str::to_owned),
            origin: row["origin"].as_str().unwrap_or_default().to_owned(),
            reported,
        };
        (shadow, parsed)
    }
}

/// Checks the history after a graceful stop against the ledger.
///
/// Per shadow, the update rows must have versions exactly `1..=` the last acknowledged version,
/// each once. Every acknowledged change must have exactly one row with its token. Every row must
/// match a request of its shadow that was not rejected.
pub fn check_history(ledger: &Ledger, rows: &[Value]) -> Vec<String> {
    let mut history: BTreeMap<ShadowId, Vec<HistoryRow>> = BTreeMap::new();
    for row in rows {
        let (shadow, row) = HistoryRow::parse(row);
        history.entry(shadow).or_default().push(row);
    }
    let requests = ledger.by_shadow();
    let mut violations = Vec::new();
    for shadow in history.keys() {
        if !requests.contains_key(shadow) {
            violations.push(format!(
                "history has rows of {shadow}, which no client changed"
            ));
        }
    }
    for (shadow, requests) in &requests {
        let rows = history.get(shadow).map(Vec::as_slice).unwrap_or_default();
        let mut found = check_shadow_history(shadow, requests, rows);
        let extra = found.len().saturating_sub(MAX_VIOLATIONS_PER_SHADOW);
        found.truncate(MAX_VIOLATIONS_PER_SHADOW);
        if extra > 0 {
            found.push(format!("{shadow}: {extra} more history violations"));
        }
        violations.extend(found);
    }
    violations
}

fn check_shadow_history(
    shadow: &ShadowId,
    requests: &[(String, Request)],
    rows: &[HistoryRow],
) -> Vec<String> {
    let summary = ShadowSummary::of(requests);
    let last_version = summary.updates.keys().next_back().copied().unwrap_or(0);
    let by_token: HashMap<&str, &Request> = requests
        .iter()
        .map(|(token, request)| (token.as_str(), request))
        .collect();
    let mut violations = Vec::new();

    // Every row belongs to a request of this shadow that was not rejected.
    let mut update_versions: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    let mut rows_per_token: HashMap<&str, usize> = HashMap::new();
    for row in rows {
        let token = row.client_token.as_deref().unwrap_or("");
        *rows_per_token.entry(token).or_default() += 1;
        if row.change == "update" {
            update_versions.entry(row.version).or_default().push(token);
        }
        match by_token.get(token) {
            None => violations.push(format!(
                "{shadow}: history row {} version {} has token {token:?}, which no client sent \
                 to this shadow",
                row.change, row.version
            )),
            Some(request) => check_row_matches(shadow, token, request, row, &mut violations),
        }
    }

    // Update rows have versions exactly 1..=last_version, each once.
    let missing: Vec<u64> = (1..=last_version)
        .filter(|version| !update_versions.contains_key(version))
        .collect();
    if !missing.is_empty() {
        violations.push(format!(
            "{shadow}: history lacks update versions {} of 1..={last_version}",
            format_ranges(&missing)
        ));
    }
    for (version, tokens) in &update_versions {
        if tokens.len() > 1 {
            violations.push(format!(
                "{shadow}: history has update version {version} {} times: {tokens:?}",
                tokens.len()
            ));
        }
        if *version > last_version || *version == 0 {
            violations.push(format!(
                "{shadow}: history has update version {version} outside 1..={last_version}"
            ));
        }
    }

    // Every acknowledged change has exactly one row; a pending one has at most one.
    for (token, request) in requests {
        let count = rows_per_token.get(token.as_str()).copied().unwrap_or(0);
        let acknowledged = matches!(request.outcome, Outcome::Accepted { .. });
        if (acknowledged && count != 1) || count > 1 {
            violations.push(format!(
                "{shadow}: {:?} {token} ({:?}, generation {}) has {count} history rows",
                request.change, request.outcome, request.generation
            ));
        }
    }

    // A delete row carries the version of an update row in the history.
    for row in rows.iter().filter(|row| row.change == "delete") {
        if !update_versions.contains_key(&row.version) {
            violations.push(format!(
                "{shadow}: history has a delete of version {} but no update with that version",
                row.version
            ));
        }
    }
    violations
}

/// Checks one history row against the request that its token names.
fn check_row_matches(
    shadow: &ShadowId,
    token: &str,
    request: &Request,
    row: &HistoryRow,
    violations: &mut Vec<String>,
) {
    let label = format!(
        "{shadow}: history row {} version {} ({token})",
        row.change, row.version
    );
    match (request.change, row.change.as_str()) {
        (Change::Update { seq }, "update") => {
            let stored = row
                .reported
                .as_ref()
                .and_then(|reported| reported["seq"].as_u64());
            if stored != Some(seq) {
                violations.push(format!("{label}: reported.seq is {stored:?}, sent {seq}"));
            }
        }
        (Change::Delete, "delete") => {}
        (change, _) => violations.push(format!("{label}: the request was {change:?}")),
    }
    match request.outcome {
        Outcome::Accepted { version } if version != row.version => violations.push(format!(
            "{label}: the request was acknowledged with version {version}"
        )),
        Outcome::Rejected { code } => {
            violations.push(format!("{label}: the request was rejected with {code}"));
        }
        _ => {}
    }
    if row.origin != request.origin {
        violations.push(format!(
            "{label}: origin {}, sent over {}",
            row.origin, request.origin
        ));
    }
}

/// Formats sorted numbers as ranges: `[1, 2, 3, 7]` becomes `1-3, 7`.
fn format_ranges(numbers: &[u64]) -> String {
    let mut ranges: Vec<String> = Vec::new();
    let mut index = 0;
    while index < numbers.len() {
        let start = numbers[index];
        let mut end = start;
        while index + 1 < numbers.len() && numbers[index + 1] == end + 1 {
            index += 1;
            end = numbers[index];
        }
        ranges.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        index += 1;
    }
    ranges.join(", ")
}
