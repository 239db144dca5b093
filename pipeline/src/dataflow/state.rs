//! The single-writer state of the shadows one worker owns, and how requests change it.
//!
//! [`ShadowState::apply`] contains the whole shadow semantics of the dataflow, free of timely so it
//! can be tested directly. It decodes a request and applies it to the shadow it addresses. It
//! returns the [`Outcome`] for the requester and the change of the shadows collection.
//!
//! # Notes
//! - Each worker owns the shadows whose keys hash to it, so no two threads ever touch one
//!   shadow and no lock is needed.
//! - A deleted shadow leaves a tombstone with its last version, so a re-created shadow continues
//!   the numbering. Tombstones are kept for the life of the process.

use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use super::request::{
    DEFAULT_LIST_PAGE_SIZE, ListRequest, MAX_LIST_PAGE_SIZE, Operation, ReplyTo, Request,
};
use super::version::ShadowVersion;
use super::{Time, epoch_start};
use crate::faults;
use crate::history::Origin;
use crate::shadow::{
    Limits, ShadowError, ShadowKey, accepted_json, apply_update, decode_client_token, decode_update,
};

/// Result of one request, for the requester and the history.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// An update was accepted and produced `current`.
    Updated(Box<Updated>),
    /// A get found the shadow.
    Read {
        /// Shadow read.
        key: ShadowKey,
        /// The shadow as it is.
        current: Arc<ShadowVersion>,
        /// `clientToken` of the get request.
        client_token: Option<String>,
        /// When the request was received, in milliseconds since the Unix epoch.
        at_ms: i64,
        /// Destination of the response.
        reply_to: ReplyTo,
    },
    /// A delete removed the shadow.
    Deleted {
        /// Shadow deleted.
        key: ShadowKey,
        /// Last version of the deleted shadow.
        version: u64,
        /// `clientToken` of the delete request.
        client_token: Option<String>,
        /// When the request was received, in milliseconds since the Unix epoch.
        at_ms: i64,
        /// Channel the request arrived on.
        origin: Origin,
        /// Destination of the response.
        reply_to: ReplyTo,
    },
    /// A list request found these named shadows.
    Listed {
        /// Thing whose named shadows were listed (its `shadow_name` is `None`).
        key: ShadowKey,
        /// Names of this page, in ascending order.
        names: Vec<String>,
        /// Token for the next page, when more names follow.
        next_token: Option<String>,
        /// When the request was received, in milliseconds since the Unix epoch.
        at_ms: i64,
        /// Destination of the response.
        reply_to: ReplyTo,
    },
    /// The request was rejected and changed nothing.
    Rejected {
        /// Shadow addressed.
        key: ShadowKey,
        /// Operation that was rejected.
        operation: Operation,
        /// Error document contents.
        error: ShadowError,
        /// `clientToken` of the request, when it could be read.
        client_token: Option<String>,
        /// When the request was received, in milliseconds since the Unix epoch.
        at_ms: i64,
        /// Destination of the response.
        reply_to: ReplyTo,
    },
}

impl Outcome {
    /// Returns the shadow the request addressed (for a list: the thing, without shadow name).
    pub fn key(&self) -> &ShadowKey {
        match self {
            Outcome::Updated(updated) => &updated.key,
            Outcome::Read { key, .. }
            | Outcome::Deleted { key, .. }
            | Outcome::Listed { key, .. }
            | Outcome::Rejected { key, .. } => key,
        }
    }

    /// Returns the destination of the response.
    pub fn reply_to(&self) -> ReplyTo {
        match self {
            Outcome::Updated(updated) => updated.reply_to,
            Outcome::Read { reply_to, .. }
            | Outcome::Deleted { reply_to, .. }
            | Outcome::Listed { reply_to, .. }
            | Outcome::Rejected { reply_to, .. } => *reply_to,
        }
    }
}

/// An accepted update.
#[derive(Clone, Debug)]
pub struct Updated {
    /// Shadow updated.
    pub key: ShadowKey,
    /// The shadow before the update, `None` when the update created it.
    pub previous: Option<Arc<ShadowVersion>>,
    /// The shadow after the update.
    pub current: Arc<ShadowVersion>,
    /// The `/update/accepted` document as JSON: the request's state with metadata for its
    /// leaves.
    pub accepted: Vec<u8>,
    /// The request's `state` node as compact JSON, for the history.
    pub request_state: String,
    /// Channel the request arrived on.
    pub origin: Origin,
    /// Destination of the response.
    pub reply_to: ReplyTo,
}

/// A change of the shadows collection caused by one accepted request.
#[derive(Clone, Debug)]
pub struct Change {
    /// Shadow that changed.
    pub key: ShadowKey,
    /// Version the request replaced (retracted from the collection).
    pub retracted: Option<Arc<ShadowVersion>>,
    /// Version the request produced (inserted into the collection).
    pub inserted: Option<Arc<ShadowVersion>>,
}

/// State one worker keeps for one shadow key.
#[derive(Debug, Default)]
struct Entry {
    /// The live shadow, `None` after a delete.
    live: Option<Arc<ShadowVersion>>,
    /// Last version of the shadow before it was deleted (0 if it never was).
    deleted_version: u64,
    /// Requests admitted by the rate limit: the current one-second window and its count.
    rate_window: (i64, u32),
    /// Time of the last change, so that every change of the key gets a later time.
    last_change: Option<Time>,
}

/// The shadows owned by one worker.
#[derive(Debug)]
pub struct ShadowState {
    entries: HashMap<ShadowKey, Entry>,
    /// Live named shadows per thing, ordered so list pages are stable.
    named: HashMap<String, BTreeSet<String>>,
    limits: Limits,
}

impl ShadowState {
    /// Creates an empty state that enforces `limits`.
    pub fn new(limits: Limits) -> Self {
        ShadowState {
            entries: HashMap::new(),
            named: HashMap::new(),
            limits,
        }
    }

    /// Returns the live version of `key`, if any.
    pub fn get(&self, key: &ShadowKey) -> Option<&Arc<ShadowVersion>> {
        self.entries.get(key).and_then(|entry| entry.live.as_ref())
    }

    /// Applies `request`, received in `epoch`, and returns its outcome and the time and
    /// contents of the collection change it causes, if any.
    ///
    /// Changes of one key within one epoch get increasing sequence numbers, so that each
    /// accepted update is its own collection change even when a burst lands in one epoch.
    pub fn apply(&mut self, request: Request, epoch: u64) -> (Outcome, Option<(Time, Change)>) {
        if let Some(limit) = self.limits.max_requests_per_second
            && request.operation != Operation::ListNamed
            && !self.admit(&request, limit)
        {
            let client_token = decode_client_token(&request.payload, &self.limits)
                .ok()
                .flatten();
            return (
                rejected_outcome(request, ShadowError::throttled(), client_token),
                None,
            );
        }
        match request.operation {
            Operation::Update => self.update(request, epoch),
            Operation::Get => (self.read(request), None),
            Operation::Delete => self.delete(request, epoch),
            Operation::ListNamed => (self.list(request), None),
        }
    }

    fn update(&mut self, request: Request, epoch: u64) -> (Outcome, Option<(Time, Change)>) {
        let entry = self.entries.get(&request.key);
        let current = entry.and_then(|entry| entry.live.as_deref());
        let deleted_version = entry.map_or(0, |entry| entry.deleted_version);
        // The computation only reads the state, so a panic in it leaves every shadow as it was.
        let computed = panic::catch_unwind(AssertUnwindSafe(|| {
            compute_update(&request, current, deleted_version, &self.limits)
        }));
        let computed = match computed {
            Ok(Ok(computed)) => computed,
            Ok(Err((error, client_token))) => {
                return (rejected_outcome(request, error, client_token), None);
            }
            Err(panic) => {
                tracing::error!(
                    thing = %request.key.thing_name,
                    shadow = request.key.shadow_name.as_deref().unwrap_or(""),
                    panic = panic_message(panic.as_ref()),
                    "applying an update failed, so it was rejected with 500 and changed nothing; please report this as a bug"
                );
                let client_token =
                    panic::catch_unwind(|| decode_client_token(&request.payload, &self.limits))
                        .ok()
                        .and_then(|token| token.ok().flatten());
                return (
                    rejected_outcome(request, ShadowError::internal(), client_token),
                    None,
                );
            }
        };
        let ComputedUpdate {
            current,
            accepted,
            request_state,
        } = computed;
        // Look up before inserting, so an update of an existing shadow clones no key.
        let entry = match self.entries.get_mut(&request.key) {
            Some(entry) => entry,
            None => self.entries.entry(request.key.clone()).or_default(),
        };
        let previous = entry.live.replace(Arc::clone(&current));
        if previous.is_none()
            && let Some(shadow) = &request.key.shadow_name
        {
            let names = self
                .named
                .entry(request.key.thing_name.clone())
                .or_default();
            names.insert(shadow.clone());
        }
        let time = next_time(&mut entry.last_change, epoch);
        let change = Change {
            key: request.key.clone(),
            retracted: previous.clone(),
            inserted: Some(Arc::clone(&current)),
        };
        let updated = Updated {
            key: request.key,
            previous,
            current,
            accepted,
            request_state,
            origin: request.origin,
            reply_to: request.reply_to,
        };
        (Outcome::Updated(Box::new(updated)), Some((time, change)))
    }

    fn read(&self, request: Request) -> Outcome {
        let client_token = match decode_client_token(&request.payload, &self.limits) {
            Ok(token) => token,
            Err(rejected) => {
                return rejected_outcome(request, rejected.error, rejected.client_token);
            }
        };
        match self.get(&request.key) {
            Some(current) => Outcome::Read {
                current: Arc::clone(current),
                key: request.key,
                client_token,
                at_ms: request.received_at_ms,
                reply_to: request.reply_to,
            },
            None => {
                let error = ShadowError::not_found(&request.key);
                rejected_outcome(request, error, client_token)
            }
        }
    }

    fn delete(&mut self, request: Request, epoch: u64) -> (Outcome, Option<(Time, Change)>) {
        let client_token = match decode_client_token(&request.payload, &self.limits) {
            Ok(token) => token,
            Err(rejected) => {
                return (
                    rejected_outcome(request, rejected.error, rejected.client_token),
                    None,
                );
            }
        };
        let Some(entry) = self
            .entries
            .get_mut(&request.key)
            .filter(|entry| entry.live.is_some())
        else {
            let error = ShadowError::not_found(&request.key);
            return (rejected_outcome(request, error, client_token), None);
        };
        let removed = entry.live.take().expect("filtered on a live shadow");
        let version = removed.version();
        entry.deleted_version = version;
        let time = next_time(&mut entry.last_change, epoch);
        if let Some(shadow) = &request.key.shadow_name
            && let Some(names) = self.named.get_mut(&request.key.thing_name)
        {
            names.remove(shadow);
            if names.is_empty() {
                self.named.remove(&request.key.thing_name);
            }
        }
        let change = Change {
            key: request.key.clone(),
            retracted: Some(removed),
            inserted: None,
        };
        let outcome = Outcome::Deleted {
            key: request.key,
            version,
            client_token,
            at_ms: request.received_at_ms,
            origin: request.origin,
            reply_to: request.reply_to,
        };
        (outcome, Some((time, change)))
    }
}

/// State of one shadow key: the live shadow, or the tombstone of a deleted one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeyState {
    /// The live shadow, `None` when it does not exist.
    pub live: Option<Arc<ShadowVersion>>,
    /// Last version of the shadow before it was deleted (0 if it never was).
    pub deleted_version: u64,
}

impl ShadowState {
    /// Returns the current state of `key`, for undoing a change or checkpointing.
    pub fn key_state(&self, key: &ShadowKey) -> KeyState {
        self.entries
            .get(key)
            .map(|entry| KeyState {
                live: entry.live.clone(),
                deleted_version: entry.deleted_version,
            })
            .unwrap_or_default()
    }

    /// Sets what `key` holds, keeping the named-shadow index in step. Used to install recovered
    /// shadows and to undo changes whose log write failed.
    pub fn restore(&mut self, key: &ShadowKey, state: KeyState) {
        if let Some(shadow) = &key.shadow_name {
            if state.live.is_some() {
                self.named
                    .entry(key.thing_name.clone())
                    .or_default()
                    .insert(shadow.clone());
            } else if let Some(names) = self.named.get_mut(&key.thing_name) {
                names.remove(shadow);
                if names.is_empty() {
                    self.named.remove(&key.thing_name);
                }
            }
        }
        if state.live.is_none() && state.deleted_version == 0 {
            if let Some(entry) = self.entries.get_mut(key) {
                entry.live = None;
                entry.deleted_version = 0;
            }
            return;
        }
        let entry = self.entries.entry(key.clone()).or_default();
        entry.live = state.live;
        entry.deleted_version = state.deleted_version;
    }

    /// Returns every live shadow and tombstone, for a checkpoint.
    pub fn snapshot(&self) -> Vec<(ShadowKey, KeyState)> {
        self.entries
            .iter()
            .filter(|(_, entry)| entry.live.is_some() || entry.deleted_version > 0)
            .map(|(key, entry)| {
                let state = KeyState {
                    live: entry.live.clone(),
                    deleted_version: entry.deleted_version,
                };
                (key.clone(), state)
            })
            .collect()
    }

    /// Returns the number of live shadows.
    pub fn live_shadows(&self) -> usize {
        self.entries
            .values()
            .filter(|entry| entry.live.is_some())
            .count()
    }
}

impl ShadowState {
    /// Counts `request` against its shadow's rate limit of `limit` requests per second and
    /// returns whether it may proceed. Windows follow the request's receive time, so a replay of
    /// the same requests is throttled the same way.
    fn admit(&mut self, request: &Request, limit: u32) -> bool {
        let second = request.received_at_ms.div_euclid(1000);
        // NOTE: with the limit on, a request to a shadow that does not exist keeps an empty
        // entry for its rate window. Such entries are never evicted.
        let entry = self.entries.entry(request.key.clone()).or_default();
        if entry.rate_window.0 != second {
            entry.rate_window = (second, 0);
        }
        if entry.rate_window.1 >= limit {
            return false;
        }
        entry.rate_window.1 += 1;
        true
    }

    /// Returns one page of the named shadows of the request's thing, in name order. A thing
    /// without named shadows gets an empty page.
    fn list(&self, request: Request) -> Outcome {
        let paging: ListRequest = match serde_json::from_slice(&request.payload) {
            Ok(paging) => paging,
            Err(_) => {
                let error = ShadowError::new(400, "Invalid list request");
                return rejected_outcome(request, error, None);
            }
        };
        let page_size = paging.page_size.unwrap_or(DEFAULT_LIST_PAGE_SIZE);
        if !(1..=MAX_LIST_PAGE_SIZE).contains(&page_size) {
            let message = format!(
                "Invalid pageSize {page_size}: expected an integer from 1 to {MAX_LIST_PAGE_SIZE}"
            );
            return rejected_outcome(request, ShadowError::new(400, message), None);
        }
        let all = self.named.get(&request.key.thing_name);
        let mut names: Vec<String> = match (all, &paging.next_token) {
            (None, _) => Vec::new(),
            (Some(all), None) => all.iter().take(page_size + 1).cloned().collect(),
            (Some(all), Some(after)) => all
                .range::<String, _>((Bound::Excluded(after), Bound::Unbounded))
                .take(page_size + 1)
                .cloned()
                .collect(),
        };
        // One name past the page shows whether another page follows.
        let next_token = (names.len() > page_size).then(|| {
            names.truncate(page_size);
            names.last().cloned().unwrap_or_default()
        });
        Outcome::Listed {
            key: request.key,
            names,
            next_token,
            at_ms: request.received_at_ms,
            reply_to: request.reply_to,
        }
    }
}

/// Results of an accepted update, computed before the state changes.
struct ComputedUpdate {
    current: Arc<ShadowVersion>,
    accepted: Vec<u8>,
    request_state: String,
}

/// Decodes `request` and applies it to `current`, without changing any state.
///
/// Returns the error and the request's clientToken when the update is rejected.
fn compute_update(
    request: &Request,
    current: Option<&ShadowVersion>,
    deleted_version: u64,
    limits: &Limits,
) -> Result<ComputedUpdate, (ShadowError, Option<String>)> {
    let decoded = decode_update(&request.payload, limits)
        .map_err(|rejected| (rejected.error, rejected.client_token))?;
    faults::shadow_update(decoded.client_token());
    let now_s = request.received_at_ms.div_euclid(1000);
    let shadow = apply_update(
        current.map(|live| &live.shadow),
        deleted_version,
        &decoded,
        now_s,
        limits,
    )
    .map_err(|error| (error, decoded.client_token().map(str::to_owned)))?;
    let version = shadow.version();
    Ok(ComputedUpdate {
        current: ShadowVersion::new(
            shadow,
            request.received_at_ms,
            decoded.client_token().map(str::to_owned),
        ),
        accepted: accepted_json(&decoded, version, now_s),
        request_state: decoded.state_json(),
    })
}

/// Returns the message of a caught panic, or a placeholder when it carries none.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

fn rejected_outcome(request: Request, error: ShadowError, client_token: Option<String>) -> Outcome {
    Outcome::Rejected {
        key: request.key,
        operation: request.operation,
        error,
        client_token,
        at_ms: request.received_at_ms,
        reply_to: request.reply_to,
    }
}

/// Returns the time of a key's next change in `epoch`.
///
/// That is the epoch's first time, or the time after the key's last change if that is later.
/// So each key's change times strictly increase, even when one epoch changes it many times.
fn next_time(last_change: &mut Option<Time>, epoch: u64) -> Time {
    let first = epoch_start(epoch);
    let time = match *last_change {
        Some(last) if last >= first => last + 1,
        _ => first,
    };
    *last_change = Some(time);
    time
}

#[cfg(test)]
mod tests;
