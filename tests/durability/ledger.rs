//! The ledger: every request the test clients sent and the response each one got.
//!
//! A request is recorded before it is sent, so a crash leaves it `Pending`: the service may or
//! may not have applied it. Every update sets `reported` to `{"seq": N, "token": T}`, where `N`
//! is unique across the ledger and `T` is the request's `clientToken`, so a shadow read back
//! after a restart, or a history row, names the request that wrote it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Mutex;

use serde_json::{Value, json};

/// One shadow: a thing and, for a named shadow, its name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShadowId {
    /// Thing name.
    pub thing: String,
    /// Shadow name, `None` for the classic shadow.
    pub name: Option<String>,
}

impl ShadowId {
    /// Returns the classic shadow of `thing`.
    pub fn classic(thing: &str) -> ShadowId {
        ShadowId {
            thing: thing.to_owned(),
            name: None,
        }
    }

    /// Returns the named shadow `name` of `thing`.
    pub fn named(thing: &str, name: &str) -> ShadowId {
        ShadowId {
            thing: thing.to_owned(),
            name: Some(name.to_owned()),
        }
    }

    /// Path of the shadow in the HTTP API.
    pub fn http_path(&self) -> String {
        match &self.name {
            None => format!("/things/{}/shadow", self.thing),
            Some(name) => format!("/things/{}/shadow?name={name}", self.thing),
        }
    }

    /// MQTT topic of the shadow with `suffix`, e.g. `update/accepted`.
    pub fn topic(&self, suffix: &str) -> String {
        match &self.name {
            None => format!("$aws/things/{}/shadow/{suffix}", self.thing),
            Some(name) => format!("$aws/things/{}/shadow/name/{name}/{suffix}", self.thing),
        }
    }
}

impl fmt::Display for ShadowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            None => write!(f, "{} (classic)", self.thing),
            Some(name) => write!(f, "{}/{name}", self.thing),
        }
    }
}

/// Kind of change that a request requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// An update that sets `reported.seq` to `seq`.
    Update {
        /// Sequence number, unique in the ledger.
        seq: u64,
    },
    /// A delete of the shadow.
    Delete,
}

/// The response to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No response yet, or none ever because the service crashed.
    Pending,
    /// `/accepted` or HTTP 200, with the version the service reported.
    Accepted {
        /// Version of the shadow after an update, or of the deleted shadow.
        version: u64,
    },
    /// `/rejected` or an HTTP error status.
    Rejected {
        /// Error code or HTTP status.
        code: u16,
    },
}

/// One request in the ledger.
#[derive(Clone, Debug)]
pub struct Request {
    /// Target shadow.
    pub shadow: ShadowId,
    /// Update or delete.
    pub change: Change,
    /// Channel of the request as the history names it: `mqtt` or `http`.
    pub origin: &'static str,
    /// Start of the service that the request was sent to, counting from 1.
    pub generation: u32,
    /// The response so far.
    pub outcome: Outcome,
}

/// Every request of one test, keyed by `clientToken`.
#[derive(Debug, Default)]
pub struct Ledger {
    /// std `Mutex`: clients hold it only to insert or update one entry.
    inner: Mutex<LedgerInner>,
}

#[derive(Debug, Default)]
struct LedgerInner {
    next_seq: u64,
    requests: HashMap<String, Request>,
}

impl Ledger {
    /// Records a new update of `shadow` and returns its `clientToken` and sequence number.
    pub fn new_update(
        &self,
        client: &str,
        shadow: &ShadowId,
        origin: &'static str,
        generation: u32,
    ) -> (String, u64) {
        let mut inner = self.inner.lock().expect("ledger lock");
        inner.next_seq += 1;
        let seq = inner.next_seq;
        let token = format!("{client}-{seq}");
        let request = Request {
            shadow: shadow.clone(),
            change: Change::Update { seq },
            origin,
            generation,
            outcome: Outcome::Pending,
        };
        inner.requests.insert(token.clone(), request);
        (token, seq)
    }

    /// Records a new delete of `shadow` and returns its `clientToken`.
    pub fn new_delete(
        &self,
        client: &str,
        shadow: &ShadowId,
        origin: &'static str,
        generation: u32,
    ) -> String {
        let mut inner = self.inner.lock().expect("ledger lock");
        inner.next_seq += 1;
        let token = format!("{client}-delete-{}", inner.next_seq);
        let request = Request {
            shadow: shadow.clone(),
            change: Change::Delete,
            origin,
            generation,
            outcome: Outcome::Pending,
        };
        inner.requests.insert(token.clone(), request);
        token
    }

    /// Records the response to the request `token`.
    ///
    /// # Errors
    ///
    /// Returns a description when the token is unknown, or when the request already got a
    /// different response.
    pub fn record(&self, token: &str, outcome: Outcome) -> Result<(), String> {
        let mut inner = self.inner.lock().expect("ledger lock");
        let Some(request) = inner.requests.get_mut(token) else {
            return Err(format!(
                "response {outcome:?} for unknown clientToken {token:?}"
            ));
        };
        match request.outcome {
            Outcome::Pending => {
                request.outcome = outcome;
                Ok(())
            }
            previous if previous == outcome => Ok(()),
            previous => Err(format!(
                "{token} on {}: got {previous:?} first, then {outcome:?}",
                request.shadow
            )),
        }
    }

    /// Returns a copy of the request `token`.
    pub fn request(&self, token: &str) -> Option<Request> {
        let inner = self.inner.lock().expect("ledger lock");
        inner.requests.get(token).cloned()
    }

    /// Returns every request, grouped by shadow, each group sorted by token.
    pub fn by_shadow(&self) -> BTreeMap<ShadowId, Vec<(String, Request)>> {
        let inner = self.inner.lock().expect("ledger lock");
        let mut shadows: BTreeMap<ShadowId, Vec<(String, Request)>> = BTreeMap::new();
        for (token, request) in &inner.requests {
            shadows
                .entry(request.shadow.clone())
                .or_default()
                .push((token.clone(), request.clone()));
        }
        for requests in shadows.values_mut() {
            requests.sort_by(|left, right| left.0.cmp(&right.0));
        }
        shadows
    }

    /// Returns how many requests were sent in `generation`, and how many of them were accepted.
    pub fn counts(&self, generation: u32) -> (usize, usize) {
        let inner = self.inner.lock().expect("ledger lock");
        let sent = inner
            .requests
            .values()
            .filter(|request| request.generation == generation);
        let mut total = 0;
        let mut accepted = 0;
        for request in sent {
            total += 1;
            if matches!(request.outcome, Outcome::Accepted { .. }) {
                accepted += 1;
            }
        }
        (total, accepted)
    }
}

/// Returns the JSON body of the update `token` with sequence number `seq`, and `padding` extra
/// bytes in `reported.padding` when it is non-zero.
pub fn update_body(token: &str, seq: u64, padding: usize) -> String {
    let mut reported = json!({"seq": seq, "token": token});
    if padding > 0 {
        reported["padding"] = Value::String("x".repeat(padding));
    }
    json!({"state": {"reported": reported}, "clientToken": token}).to_string()
}

/// Returns the JSON body of the delete `token`.
pub fn delete_body(token: &str) -> String {
    json!({"clientToken": token}).to_string()
}

/// The requests of one shadow, summarised for the checks.
#[derive(Debug, Default)]
pub struct ShadowSummary {
    /// Accepted updates by version; two updates with one version are a violation.
    pub updates: BTreeMap<u64, Vec<String>>,
    /// Accepted deletes by version.
    pub deletes: BTreeMap<u64, Vec<String>>,
    /// Whether a delete got no response, so the service may or may not have applied it.
    pub pending_delete: bool,
    /// Updates without a response. Each one that the service applied added one version.
    pub pending_updates: u64,
}

impl ShadowSummary {
    /// Summarises `requests`, all of one shadow.
    pub fn of(requests: &[(String, Request)]) -> ShadowSummary {
        let mut summary = ShadowSummary::default();
        for (token, request) in requests {
            match (request.change, request.outcome) {
                (Change::Update { .. }, Outcome::Accepted { version }) => {
                    summary
                        .updates
                        .entry(version)
                        .or_default()
                        .push(token.clone());
                }
                (Change::Delete, Outcome::Accepted { version }) => {
                    summary
                        .deletes
                        .entry(version)
                        .or_default()
                        .push(token.clone());
                }
                (Change::Delete, Outcome::Pending) => summary.pending_delete = true,
                (Change::Update { .. }, Outcome::Pending) => summary.pending_updates += 1,
                _ => {}
            }
        }
        summary
    }

    /// Returns the last acknowledged change as `(version, is_delete)`: a delete of version `v`
    /// comes after the update to `v`.
    pub fn last_acknowledged(&self) -> Option<(u64, bool)> {
        let update = self
            .updates
            .keys()
            .next_back()
            .map(|version| (*version, false));
        let delete = self
            .deletes
            .keys()
            .next_back()
            .map(|version| (*version, true));
        update.max(delete)
    }

    /// Returns the range of versions the shadow may have after a crash: from the last
    /// acknowledged version to that plus one for every pending update.
    pub fn possible_versions(&self) -> (u64, u64) {
        let acknowledged = self.last_acknowledged().map_or(0, |(version, _)| version);
        (acknowledged, acknowledged + self.pending_updates)
    }
}
