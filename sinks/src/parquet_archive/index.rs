//! In-memory index of the rows in open archive files, so that history reads see them before
//! their file is committed.
//!
//! The writer thread adds every row that it appends to an open file, keyed by the file's
//! in-progress path and the row's shadow. It removes a file's rows once the file has its
//! `.parquet` name, or once the file is given up after a failure. A [`HistoryReader`] copies the
//! rows of one shadow out of the index before it lists the committed files, so every row is in
//! the copy, in a listed file, or in both (see `reader.rs`).
//!
//! # Notes
//!
//! - Rows are stored compactly: the five optional text columns of a row share one allocation.
//!   [`UncommittedIndex::bytes`] estimates the memory in use, and the writer commits its open
//!   files early once it passes [`ArchiveConfig::uncommitted_index_bytes`].
//! - Rows of an open file whose commit failed leave the index with the file, so reads no longer
//!   return them until a restart re-archives them from the write-ahead log.
//!
//! [`HistoryReader`]: super::HistoryReader
//! [`ArchiveConfig::uncommitted_index_bytes`]: super::ArchiveConfig::uncommitted_index_bytes

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use pipeline::history::{ChangeKind, HistoryRow, Origin};

use super::change::HistoryChange;

/// Estimated memory of one indexed row besides its text: the `IndexedRow` itself, its slot in
/// the shadow's `Vec` and the allocator's overhead for the text allocation.
const ROW_OVERHEAD_BYTES: usize = 96;

/// Estimated memory of one shadow entry of one file besides its key text: the hash-map slot,
/// the `Vec` header and the allocator's overhead for the key allocation.
const SHADOW_OVERHEAD_BYTES: usize = 96;

/// Rows of open archive files by file and shadow, shared by the writer thread and readers.
///
/// NOTE: each row costs an estimated [`ROW_OVERHEAD_BYTES`] plus its client token and four
/// JSON texts, and each shadow of each open file [`SHADOW_OVERHEAD_BYTES`] plus its names. The
/// writer commits its open files once the estimate passes
/// `ArchiveConfig::uncommitted_index_bytes`, 64 MiB by default, so the index stays near that.
///
/// Design: a std `Mutex`, because the writer holds it for one insert per row and a reader for
/// a copy of one shadow's rows, and neither awaits while holding it. The outer map is keyed by
/// file so that a commit removes a file's rows in one step. There are at most a few open files
/// at a time, one per UTC date with rows in flight.
#[derive(Default)]
pub(super) struct UncommittedIndex {
    state: Mutex<IndexState>,
}

impl std::fmt::Debug for UncommittedIndex {
    /// Prints the size only, because the rows can number millions.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        formatter
            .debug_struct("UncommittedIndex")
            .field("files", &state.files.len())
            .field("bytes", &state.bytes)
            .finish()
    }
}

#[derive(Debug, Default)]
struct IndexState {
    /// Rows by the in-progress path of their file. Keyed by the path's bytes rather than a
    /// `PathBuf`, because the writer looks up the path once per row, and comparing bytes is
    /// cheaper than comparing path components.
    files: BTreeMap<OsString, FileRows>,
    /// Sum of `FileRows::bytes` over `files`.
    bytes: usize,
}

#[derive(Debug, Default)]
struct FileRows {
    /// Rows by [`shadow_key`].
    shadows: HashMap<Box<str>, Vec<IndexedRow>>,
    /// Estimated memory of this file's rows and keys.
    bytes: usize,
}

impl FileRows {
    /// Adds `row` under the shadow `key`. Returns the estimated memory it added.
    fn push(&mut self, key: Cow<'_, str>, row: IndexedRow) -> usize {
        let mut added = row.text.len() + ROW_OVERHEAD_BYTES;
        match self.shadows.get_mut(key.as_ref()) {
            Some(rows) => rows.push(row),
            None => {
                added += key.len() + SHADOW_OVERHEAD_BYTES;
                self.shadows
                    .insert(key.into_owned().into_boxed_str(), vec![row]);
            }
        }
        self.bytes += added;
        added
    }
}

/// One row without its thing and shadow name, with its optional text columns in one string.
#[derive(Debug)]
struct IndexedRow {
    version: u64,
    accepted_at_ms: i64,
    change: ChangeKind,
    origin: Origin,
    /// `client_token`, `request_state`, `desired`, `reported` and `delta`, concatenated.
    text: Box<str>,
    /// End offset in `text` of each of the five columns, or `None` for a null column.
    ends: [Option<u32>; 5],
}

impl UncommittedIndex {
    /// Adds `row`, which the writer appends to the open file at `in_progress_path`. Returns the
    /// estimated memory of the whole index afterwards.
    pub(super) fn insert(&self, in_progress_path: &Path, row: &HistoryRow) -> usize {
        let indexed = IndexedRow::new(row);
        let key = shadow_key(&row.thing_name, row.shadow_name.as_deref());

        let mut guard = self.lock();
        let state = &mut *guard;
        // One lookup per row. Only the first row of a file allocates its path.
        let added = match state.files.get_mut(in_progress_path.as_os_str()) {
            Some(file) => file.push(key, indexed),
            None => {
                let mut file = FileRows::default();
                let added = file.push(key, indexed);
                state
                    .files
                    .insert(in_progress_path.as_os_str().to_owned(), file);
                added
            }
        };
        state.bytes += added;
        state.bytes
    }

    /// Removes the rows of the file at `in_progress_path`, after it was committed and renamed or
    /// given up.
    pub(super) fn remove_file(&self, in_progress_path: &Path) {
        let mut state = self.lock();
        if let Some(file) = state.files.remove(in_progress_path.as_os_str()) {
            state.bytes -= file.bytes;
        }
    }

    /// Estimated memory of the indexed rows in bytes.
    pub(super) fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Returns copies of the rows of one shadow for which `keep` returns true, in no order.
    pub(super) fn changes(
        &self,
        thing_name: &str,
        shadow_name: Option<&str>,
        mut keep: impl FnMut(u64, ChangeKind, i64) -> bool,
    ) -> Vec<HistoryChange> {
        let key = shadow_key(thing_name, shadow_name);
        let state = self.lock();
        state
            .files
            .values()
            .filter_map(|file| file.shadows.get(key.as_ref()))
            .flatten()
            .filter(|row| keep(row.version, row.change, row.accepted_at_ms))
            .map(IndexedRow::to_change)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IndexState> {
        // Every update leaves the state whole before it can panic, so a poisoned lock still
        // contains a valid index.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Returns the index key of a shadow: the thing name, then a NUL and the shadow name for a
/// named shadow. Thing names cannot contain NUL, so keys of different shadows differ.
/// The key of a classic shadow borrows the thing name, so a lookup allocates nothing.
fn shadow_key<'a>(thing_name: &'a str, shadow_name: Option<&str>) -> Cow<'a, str> {
    match shadow_name {
        None => Cow::Borrowed(thing_name),
        Some(shadow_name) => Cow::Owned(format!("{thing_name}\0{shadow_name}")),
    }
}

impl IndexedRow {
    fn new(row: &HistoryRow) -> Self {
        let columns = [
            row.client_token.as_deref(),
            row.request_state.as_deref(),
            row.desired.as_deref(),
            row.reported.as_deref(),
            row.delta.as_deref(),
        ];
        let length = columns.iter().flatten().map(|text| text.len()).sum();
        let mut text = String::with_capacity(length);
        let mut ends = [None; 5];
        for (end, column) in ends.iter_mut().zip(columns) {
            if let Some(column) = column {
                text.push_str(column);
                // A row longer than 4 GiB cannot occur: shadow documents are capped far lower.
                *end = Some(u32::try_from(text.len()).expect("history row text below 4 GiB"));
            }
        }

        Self {
            version: row.version,
            accepted_at_ms: row.accepted_at_ms,
            change: row.change,
            origin: row.origin,
            text: text.into_boxed_str(),
            ends,
        }
    }

    /// Returns column `index` of the five text columns.
    fn column(&self, index: usize) -> Option<String> {
        let end = self.ends[index]? as usize;
        let start = self.ends[..index]
            .iter()
            .rev()
            .find_map(|end| *end)
            .map_or(0, |end| end as usize);
        Some(self.text[start..end].to_owned())
    }

    fn to_change(&self) -> HistoryChange {
        HistoryChange {
            version: self.version,
            change: self.change,
            accepted_at_ms: self.accepted_at_ms,
            origin: self.origin,
            client_token: self.column(0),
            request_state: self.column(1),
            desired: self.column(2),
            reported: self.column(3),
            delta: self.column(4),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(thing: &str, shadow: Option<&str>, version: u64) -> HistoryRow {
        HistoryRow {
            thing_name: thing.to_owned(),
            shadow_name: shadow.map(str::to_owned),
            change: ChangeKind::Update,
            version,
            accepted_at_ms: 1_000 + version as i64,
            origin: Origin::Http,
            client_token: None,
            request_state: Some(r#"{"reported":{"on":true}}"#.to_owned()),
            desired: None,
            reported: Some(r#"{"on":true}"#.to_owned()),
            delta: Some("{}".to_owned()),
        }
    }

    fn all(_: u64, _: ChangeKind, _: i64) -> bool {
        true
    }

    #[test]
    fn indexed_row_keeps_every_column() {
        let index = UncommittedIndex::default();
        let mut sent = row("lamp", None, 3);
        sent.client_token = Some("tök".to_owned());
        sent.change = ChangeKind::Delete;

        index.insert(Path::new("/a"), &sent);
        let changes = index.changes("lamp", None, all);

        assert_eq!(changes.len(), 1);
        let change = &changes[0];
        assert_eq!(change.version, 3);
        assert_eq!(change.change, ChangeKind::Delete);
        assert_eq!(change.accepted_at_ms, 1_003);
        assert_eq!(change.origin, Origin::Http);
        assert_eq!(change.client_token, sent.client_token);
        assert_eq!(change.request_state, sent.request_state);
        assert_eq!(change.desired, None);
        assert_eq!(change.reported, sent.reported);
        assert_eq!(change.delta, sent.delta);
    }

    #[test]
    fn classic_and_named_shadows_are_apart() {
        let index = UncommittedIndex::default();
        index.insert(Path::new("/a"), &row("lamp", None, 1));
        index.insert(Path::new("/a"), &row("lamp", Some("config"), 7));

        let classic = index.changes("lamp", None, all);
        let named = index.changes("lamp", Some("config"), all);

        assert_eq!(classic.len(), 1);
        assert_eq!(classic[0].version, 1);
        assert_eq!(named.len(), 1);
        assert_eq!(named[0].version, 7);
        assert!(index.changes("lamp", Some("other"), all).is_empty());
    }

    #[test]
    fn removing_a_file_frees_its_rows_and_bytes() {
        let index = UncommittedIndex::default();
        index.insert(Path::new("/a"), &row("lamp", None, 1));
        let after_first_file = index.bytes();
        index.insert(Path::new("/b"), &row("lamp", None, 2));
        assert!(index.bytes() > after_first_file);

        index.remove_file(Path::new("/b"));

        assert_eq!(index.bytes(), after_first_file);
        let versions: Vec<u64> = index
            .changes("lamp", None, all)
            .iter()
            .map(|change| change.version)
            .collect();
        assert_eq!(versions, vec![1]);

        index.remove_file(Path::new("/a"));
        assert_eq!(index.bytes(), 0);
    }

    #[test]
    fn row_overhead_covers_row_struct() {
        // The estimate also covers the allocator's header of the text, 16 bytes on glibc.
        assert!(std::mem::size_of::<IndexedRow>() + 16 <= ROW_OVERHEAD_BYTES);
    }

    #[test]
    fn filter_sees_position_of_each_row() {
        let index = UncommittedIndex::default();
        for version in 1..=5 {
            index.insert(Path::new("/a"), &row("lamp", None, version));
        }

        let changes = index.changes("lamp", None, |version, _, _| version % 2 == 0);

        let mut versions: Vec<u64> = changes.iter().map(|change| change.version).collect();
        versions.sort_unstable();
        assert_eq!(versions, vec![2, 4]);
    }
}
