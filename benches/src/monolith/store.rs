//! The monolith's state: every shadow in one map behind one lock, and its SQLite table.
//!
//! [`ShadowStore::apply`] is the whole update path of the classic design. It takes the lock,
//! applies the update to the stored shadow with `pipeline::shadow::apply_update`, writes the new
//! document as one row in its own SQLite transaction, puts it in the map and releases the lock.
//! Every update thus waits for the lock, and in `--synchronous full` for the sync of every
//! commit before it.
//!
//! # Notes
//! - The database write happens under the lock, so the rows are written in the order of the
//!   versions, and the map never holds a version that the database failed to store.
//! - Rows are keyed by thing and shadow name; the classic shadow has the shadow name `''`,
//!   which no named shadow can have.
//! - Deleted shadows are not supported, so every new shadow starts at version 1.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use anyhow::Context;
use pipeline::shadow::{Limits, Shadow, ShadowError, ShadowKey, UpdateRequest, apply_update};
use rusqlite::{Connection, params};

use super::config::Synchronous;

/// Table of the shadows: one row per shadow, replaced by every accepted update.
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS shadows (
    thing TEXT NOT NULL,
    shadow TEXT NOT NULL,
    version INTEGER NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (thing, shadow)
) WITHOUT ROWID";

/// The UPSERT of one shadow. It runs in autocommit mode, so each execution is its own
/// transaction and commit.
const UPSERT: &str = "INSERT INTO shadows (thing, shadow, version, document)
    VALUES (?1, ?2, ?3, ?4)
    ON CONFLICT (thing, shadow) DO UPDATE SET version = excluded.version, document = excluded.document";

const SELECT_ALL: &str = "SELECT thing, shadow, document FROM shadows";

const SELECT_ONE: &str = "SELECT version, document FROM shadows WHERE thing = ?1 AND shadow = ?2";

/// The SQLite database of the shadows, on one connection opened at start.
///
/// Design: the connection lives inside the store's lock, so one connection serves every
/// handler thread and its prepared UPSERT stays in rusqlite's statement cache.
#[derive(Debug)]
pub struct Database {
    connection: Connection,
}

impl Database {
    /// Opens or creates the database at `path` in WAL mode with `synchronous`, and creates the
    /// table if it is missing.
    ///
    /// # Errors
    /// Fails when the file cannot be opened or is not a SQLite database, or when a pragma or
    /// the table creation fails.
    pub fn open(path: &Path, synchronous: Synchronous) -> anyhow::Result<Self> {
        let connection = Connection::open(path)
            .with_context(|| format!("opening SQLite database {}", path.display()))?;

        // This connection is the database's only user, so it keeps SQLite's file lock from its
        // first access on. That saves the lock and unlock system calls of every transaction,
        // and, set before WAL mode is entered, the WAL index in shared memory. Other processes
        // cannot open the file meanwhile.
        connection
            .pragma_update(None, "locking_mode", "EXCLUSIVE")
            .context("setting PRAGMA locking_mode")?;
        let journal_mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .with_context(|| format!("switching {} to WAL mode", path.display()))?;
        if !journal_mode.eq_ignore_ascii_case("wal") {
            anyhow::bail!(
                "SQLite kept journal mode {journal_mode} for {}; the monolith needs WAL, which \
                 needs a file on a local file system",
                path.display()
            );
        }

        connection
            .pragma_update(None, "synchronous", synchronous.pragma_value())
            .context("setting PRAGMA synchronous")?;
        connection
            .execute(CREATE_TABLE, [])
            .context("creating the shadows table")?;
        // Prepares the UPSERT once; every later write takes it from the statement cache.
        connection
            .prepare_cached(UPSERT)
            .context("preparing the shadow UPSERT")?;
        Ok(Database { connection })
    }

    /// Writes `document` as the row of `key`, replacing its previous row, and commits.
    ///
    /// # Errors
    /// Fails when SQLite fails to write or sync the row.
    pub fn upsert(
        &mut self,
        key: &ShadowKey,
        version: u64,
        document: &str,
    ) -> rusqlite::Result<()> {
        let mut statement = self.connection.prepare_cached(UPSERT)?;
        statement.execute(params![
            key.thing_name,
            key.shadow_name.as_deref().unwrap_or(""),
            version as i64,
            document
        ])?;
        Ok(())
    }

    /// Reads every stored shadow.
    ///
    /// # Errors
    /// Fails when a row cannot be read or its document is not a valid shadow.
    pub fn load_all(&self) -> anyhow::Result<HashMap<ShadowKey, Shadow>> {
        let mut statement = self
            .connection
            .prepare(SELECT_ALL)
            .context("reading the shadows table")?;
        let mut rows = statement.query([]).context("reading the shadows table")?;
        let mut shadows = HashMap::new();
        while let Some(row) = rows.next().context("reading a shadow row")? {
            let thing: String = row.get(0).context("reading a thing name")?;
            let shadow: String = row.get(1).context("reading a shadow name")?;
            let document: String = row.get(2).context("reading a shadow document")?;
            let key = if shadow.is_empty() {
                ShadowKey::classic(thing)
            } else {
                ShadowKey::named(thing, shadow)
            };
            let parsed: Shadow = serde_json::from_str(&document).with_context(|| {
                format!("decoding the stored document of {key:?}; the row is not a shadow")
            })?;
            shadows.insert(key, parsed);
        }
        Ok(shadows)
    }

    /// Returns the stored version and document of `key`, or `None` when it has no row.
    ///
    /// # Errors
    /// Fails when SQLite fails to read the row.
    pub fn row(&self, key: &ShadowKey) -> rusqlite::Result<Option<(u64, String)>> {
        let mut statement = self.connection.prepare_cached(SELECT_ONE)?;
        let mut rows = statement.query(params![
            key.thing_name,
            key.shadow_name.as_deref().unwrap_or("")
        ])?;
        match rows.next()? {
            Some(row) => Ok(Some((row.get::<_, i64>(0)? as u64, row.get(1)?))),
            None => Ok(None),
        }
    }
}

/// The shadow before and after an accepted update.
#[derive(Debug)]
pub struct Applied {
    /// The shadow before the update, or `None` when the update created it.
    pub previous: Option<Shadow>,

    /// The shadow after the update, as stored.
    pub current: Shadow,
}

/// Time spent waiting for and holding the store's lock, summed over all updates.
#[derive(Debug, Default)]
pub struct LockTimes {
    /// Updates that took the lock.
    pub acquisitions: AtomicU64,

    /// Nanoseconds from asking for the lock to holding it.
    pub wait_ns: AtomicU64,

    /// Nanoseconds from taking the lock to releasing it.
    pub hold_ns: AtomicU64,
}

/// The map of every shadow and its database, behind one lock.
///
/// Design: one std `Mutex` around both the map and the SQLite connection, as in the classic
/// design this program stands for. A lock per shadow or a pool of connections would be a
/// different design, and measuring that design is not this program's purpose.
#[derive(Debug)]
pub struct ShadowStore {
    state: Mutex<StoreState>,
    limits: Limits,
    lock_times: LockTimes,
}

#[derive(Debug)]
struct StoreState {
    shadows: HashMap<ShadowKey, Shadow>,
    database: Database,
}

impl ShadowStore {
    /// Creates the store on `database`, with the shadows already stored in it.
    ///
    /// # Errors
    /// Fails when the stored shadows cannot be read.
    pub fn open(database: Database, limits: Limits) -> anyhow::Result<Self> {
        let shadows = database.load_all()?;
        Ok(ShadowStore {
            state: Mutex::new(StoreState { shadows, database }),
            limits,
            lock_times: LockTimes::default(),
        })
    }

    /// Returns the limits updates are checked against.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Returns the number of shadows.
    pub fn len(&self) -> usize {
        self.lock().shadows.len()
    }

    /// Returns true when the store contains no shadow.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the time updates waited for and held the lock.
    pub fn lock_times(&self) -> &LockTimes {
        &self.lock_times
    }

    /// Returns the stored version and document of `key` (see [`Database::row`]).
    ///
    /// # Errors
    /// Fails when SQLite fails to read the row.
    pub fn stored_row(&self, key: &ShadowKey) -> rusqlite::Result<Option<(u64, String)>> {
        self.lock().database.row(key)
    }

    /// Applies `request` to the shadow of `key`, accepted at `now_s` (epoch seconds), and
    /// commits the new document to the database before it returns.
    ///
    /// # Errors
    /// Returns the error `apply_update` returns (409, 413, 500), or 503 when the database
    /// write fails. On error neither the map nor the database changes.
    pub fn apply(
        &self,
        key: &ShadowKey,
        request: &UpdateRequest,
        now_s: i64,
    ) -> Result<Applied, ShadowError> {
        let requested_at = Instant::now();
        let mut state = self.lock();
        let locked_at = Instant::now();
        let result = apply_locked(&mut state, key, request, now_s, &self.limits);
        let released_at = Instant::now();
        drop(state);

        let times = &self.lock_times;
        times.acquisitions.fetch_add(1, Ordering::Relaxed);
        times
            .wait_ns
            .fetch_add(nanos(locked_at - requested_at), Ordering::Relaxed);
        times
            .hold_ns
            .fetch_add(nanos(released_at - locked_at), Ordering::Relaxed);
        result
    }

    fn lock(&self) -> MutexGuard<'_, StoreState> {
        // A handler that panicked under the lock left no half-applied update: the map and the
        // database change only after every fallible step.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Applies and stores the update: the part of [`ShadowStore::apply`] that runs under the lock.
fn apply_locked(
    state: &mut StoreState,
    key: &ShadowKey,
    request: &UpdateRequest,
    now_s: i64,
    limits: &Limits,
) -> Result<Applied, ShadowError> {
    let StoreState { shadows, database } = state;
    let current = apply_update(shadows.get(key), 0, request, now_s, limits)?;
    let document = serde_json::to_string(&current)
        .expect("serializing a shadow to a String cannot fail: its maps have string keys");
    if let Err(error) = database.upsert(key, current.version(), &document) {
        tracing::warn!(thing = %key.thing_name, error = %error, "writing a shadow to SQLite failed");
        return Err(ShadowError::unavailable());
    }
    // The map keeps its own handle on the new shadow; sections are shared through `Arc`, so
    // this clone copies no state.
    let previous = match shadows.get_mut(key) {
        Some(slot) => Some(std::mem::replace(slot, current.clone())),
        None => {
            shadows.insert(key.clone(), current.clone());
            None
        }
    };
    Ok(Applied { previous, current })
}

fn nanos(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use pipeline::shadow::{compute_delta, decode_update};

    use super::*;

    const NOW_S: i64 = 1_700_000_000;

    fn store_in(dir: &Path) -> ShadowStore {
        let database =
            Database::open(&dir.join("shadows.db"), Synchronous::Full).expect("database opens");
        ShadowStore::open(database, Limits::default()).expect("store opens")
    }

    fn update(payload: &str) -> UpdateRequest {
        decode_update(payload.as_bytes(), &Limits::default()).expect("valid update")
    }

    #[test]
    fn two_updates_write_row_and_delta() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store_in(dir.path());
        let key = ShadowKey::classic("lamp");

        let first = store
            .apply(
                &key,
                &update(r#"{"state":{"desired":{"on":true,"level":3}}}"#),
                NOW_S,
            )
            .expect("first update applies");
        assert!(first.previous.is_none());
        assert_eq!(first.current.version(), 1);

        let second = store
            .apply(
                &key,
                &update(r#"{"state":{"reported":{"on":true,"level":1}}}"#),
                NOW_S + 1,
            )
            .expect("second update applies");
        assert_eq!(second.previous.map(|shadow| shadow.version()), Some(1));
        assert_eq!(second.current.version(), 2);

        let delta = compute_delta(&second.current).expect("level differs");
        assert_eq!(delta.state_json(), r#"{"level":3}"#);

        let (version, document) = store
            .stored_row(&key)
            .expect("row reads")
            .expect("row exists");
        assert_eq!(version, 2);
        let stored: Shadow = serde_json::from_str(&document).expect("row is a shadow");
        assert_eq!(stored, second.current);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn rejected_update_changes_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store_in(dir.path());
        let key = ShadowKey::named("lamp", "config");
        store
            .apply(
                &key,
                &update(r#"{"state":{"reported":{"on":true}}}"#),
                NOW_S,
            )
            .expect("first update applies");

        let error = store
            .apply(
                &key,
                &update(r#"{"state":{"reported":{"on":false}},"version":7}"#),
                NOW_S,
            )
            .expect_err("stale version");
        assert_eq!(error.code(), 409);

        let (version, _) = store
            .stored_row(&key)
            .expect("row reads")
            .expect("row exists");
        assert_eq!(version, 1);
        assert_eq!(store.lock_times().acquisitions.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn reopened_store_loads_shadows() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = ShadowKey::classic("lamp");
        let written = {
            let store = store_in(dir.path());
            store
                .apply(
                    &key,
                    &update(r#"{"state":{"reported":{"on":true}}}"#),
                    NOW_S,
                )
                .expect("update applies")
                .current
        };

        let store = store_in(dir.path());
        assert_eq!(store.len(), 1);
        let next = store
            .apply(
                &key,
                &update(r#"{"state":{"reported":{"on":false}},"version":1}"#),
                NOW_S,
            )
            .expect("update on the loaded shadow applies");
        assert_eq!(next.previous, Some(written));
        assert_eq!(next.current.version(), 2);
    }
}
