//! Tests of the archive writer against real files in temporary folders.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::basic::{Compression, Encoding, LogicalType, TimeUnit};
use parquet::file::metadata::ParquetMetaData;
use pipeline::history::{ChangeKind, HistoryRow, Origin};

use super::io_retry::{RetryingFile, Shared};
use super::schema::{self, history_schema, parquet_schema, rows_to_batch, writer_properties};
use super::*;

mod history_reads;
mod log_positions;

/// 2024-05-01T00:00:00Z in ms since the Unix epoch.
const MAY_1: i64 = 1_714_521_600_000;
/// 2024-05-02T00:00:00Z in ms since the Unix epoch.
const MAY_2: i64 = MAY_1 + 86_400_000;

/// Maximum time that a test waits for the writer thread to do something.
const WAIT_LIMIT: Duration = Duration::from_secs(20);

/// A temporary folder, removed on drop.
struct TestDir {
    path: PathBuf,
}

impl TestDir {
    fn new(name: &str) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "shadowflow-archive-{name}-{}-{id}",
            std::process::id()
        ));
        // A folder of the same name can only be left over from a crashed run.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create test folder");
        Self { path }
    }

    /// Archive directory inside the test folder, not created yet.
    fn archive(&self) -> PathBuf {
        self.path.join("history")
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Returns an update of the classic shadow of `thing` with small JSON sections.
fn row(thing: &str, version: u64, accepted_at_ms: i64) -> HistoryRow {
    HistoryRow {
        thing_name: thing.to_owned(),
        shadow_name: None,
        change: ChangeKind::Update,
        version,
        accepted_at_ms,
        origin: Origin::Mqtt,
        client_token: Some(format!("token-{version}")),
        request_state: Some(format!(r#"{{"reported":{{"v":{version}}}}}"#)),
        desired: None,
        reported: Some(format!(r#"{{"v":{version}}}"#)),
        delta: None,
    }
}

/// Rows on two dates with every nullable column both set and null, non-ASCII JSON text and
/// every change kind and origin.
fn varied_rows() -> Vec<HistoryRow> {
    vec![
        HistoryRow {
            thing_name: "lamp-1".to_owned(),
            shadow_name: None,
            change: ChangeKind::Update,
            version: 1,
            accepted_at_ms: MAY_1 + 1_000,
            origin: Origin::Mqtt,
            client_token: Some("tök-✓".to_owned()),
            request_state: Some(r#"{"desired":{"on":true}}"#.to_owned()),
            desired: Some(r#"{"on":true}"#.to_owned()),
            reported: None,
            delta: Some(r#"{"on":true}"#.to_owned()),
        },
        HistoryRow {
            thing_name: "lamp-1".to_owned(),
            shadow_name: Some("config".to_owned()),
            change: ChangeKind::Update,
            version: 2,
            accepted_at_ms: MAY_1 + 2_000,
            origin: Origin::Http,
            client_token: None,
            request_state: Some(r#"{"reported":{"room":"Küche 🌡","温度":21.5}}"#.to_owned()),
            desired: None,
            reported: Some(r#"{"room":"Küche 🌡","温度":21.5}"#.to_owned()),
            delta: None,
        },
        HistoryRow {
            thing_name: "sensor:7".to_owned(),
            shadow_name: None,
            change: ChangeKind::Update,
            version: 9,
            accepted_at_ms: MAY_2 + 5,
            origin: Origin::Replay,
            client_token: None,
            request_state: Some("null".to_owned()),
            desired: None,
            reported: None,
            delta: None,
        },
        HistoryRow {
            thing_name: "lamp-1".to_owned(),
            shadow_name: None,
            change: ChangeKind::Delete,
            version: 3,
            accepted_at_ms: MAY_1 + 3_000,
            origin: Origin::Http,
            client_token: Some("delete-1".to_owned()),
            request_state: None,
            desired: None,
            reported: None,
            delta: None,
        },
        // The last ms of May 1 belongs to the May 1 partition.
        row("lamp-2", 1, MAY_2 - 1),
        row("sensor:7", 10, MAY_2 + 6),
        row(
            "lamp-2",
            u64::try_from(i64::MAX).expect("fits"),
            MAY_1 + 4_000,
        ),
    ]
}

fn spawn(directory: &Path, config: ArchiveConfig) -> ArchiveHandle {
    ArchiveWriter::spawn(directory, config).expect("spawn archive writer")
}

/// Files under `directory` whose name ends in `.parquet`, as `**/*.parquet` would list them.
fn parquet_files(directory: &Path) -> Vec<PathBuf> {
    files_ending_with(directory, ".parquet")
}

fn in_progress_files(directory: &Path) -> Vec<PathBuf> {
    files_ending_with(directory, IN_PROGRESS_SUFFIX)
}

fn files_ending_with(directory: &Path, ending: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(directory) else {
        return found;
    };
    for entry in entries {
        let path = entry.expect("read folder entry").path();
        if path.is_dir() {
            found.extend(files_ending_with(&path, ending));
        } else if path.to_string_lossy().ends_with(ending) {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// Polls `condition` until it holds, panicking with `what` after [`WAIT_LIMIT`].
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < WAIT_LIMIT,
            "timed out waiting until {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Archives [`varied_rows`] with the default settings in a new folder named after `tag`, and
/// returns the metadata of the first file written.
fn archived_varied_rows(tag: &str) -> Arc<ParquetMetaData> {
    let dir = TestDir::new(tag);
    let archive = spawn(&dir.archive(), ArchiveConfig::default());
    for row in varied_rows() {
        archive.sender().send(row).expect("queue row");
    }
    archive.close().expect("close archive");

    let files = parquet_files(&dir.archive());
    read_metadata(&files[0])
}

fn read_metadata(path: &Path) -> Arc<ParquetMetaData> {
    let file = File::open(path).expect("open Parquet file");
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("read Parquet footer");
    Arc::clone(builder.metadata())
}

/// Reads every row of one archive file back into history rows.
fn read_rows(path: &Path) -> Vec<HistoryRow> {
    let file = File::open(path).expect("open Parquet file");
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("read Parquet footer")
        .build()
        .expect("build reader");

    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.expect("decode record batch");
        assert_eq!(
            batch.schema().fields(),
            history_schema().fields(),
            "{}",
            path.display()
        );
        rows.extend(batch_to_rows(&batch));
    }
    rows
}

fn batch_to_rows(batch: &RecordBatch) -> Vec<HistoryRow> {
    let strings = |name: &str| {
        batch
            .column_by_name(name)
            .unwrap_or_else(|| panic!("column {name} missing"))
            .as_string::<i32>()
            .clone()
    };
    let optional = |array: &arrow_array::StringArray, index: usize| {
        array.is_valid(index).then(|| array.value(index).to_owned())
    };

    let thing_name = strings(schema::THING_NAME);
    let shadow_name = strings(schema::SHADOW_NAME);
    let change = strings(schema::CHANGE);
    let origin = strings(schema::ORIGIN);
    let client_token = strings(schema::CLIENT_TOKEN);
    let request_state = strings(schema::REQUEST_STATE);
    let desired = strings(schema::DESIRED);
    let reported = strings(schema::REPORTED);
    let delta = strings(schema::DELTA);
    let version = batch
        .column_by_name(schema::VERSION)
        .expect("version")
        .as_primitive::<Int64Type>();
    let accepted_at = batch
        .column_by_name(schema::ACCEPTED_AT)
        .expect("accepted_at")
        .as_primitive::<TimestampMillisecondType>();

    (0..batch.num_rows())
        .map(|index| HistoryRow {
            thing_name: thing_name.value(index).to_owned(),
            shadow_name: optional(&shadow_name, index),
            change: match change.value(index) {
                "update" => ChangeKind::Update,
                "delete" => ChangeKind::Delete,
                other => panic!("unexpected change {other}"),
            },
            version: u64::try_from(version.value(index)).expect("version is not negative"),
            accepted_at_ms: accepted_at.value(index),
            origin: match origin.value(index) {
                "mqtt" => Origin::Mqtt,
                "http" => Origin::Http,
                "replay" => Origin::Replay,
                other => panic!("unexpected origin {other}"),
            },
            client_token: optional(&client_token, index),
            request_state: optional(&request_state, index),
            desired: optional(&desired, index),
            reported: optional(&reported, index),
            delta: optional(&delta, index),
        })
        .collect()
}

fn sorted(mut rows: Vec<HistoryRow>) -> Vec<HistoryRow> {
    rows.sort_by(|a, b| {
        (a.accepted_at_ms, &a.thing_name, a.version).cmp(&(
            b.accepted_at_ms,
            &b.thing_name,
            b.version,
        ))
    });
    rows
}

fn partition_of(path: &Path) -> String {
    let folder = path
        .parent()
        .and_then(Path::file_name)
        .expect("file has a partition folder");
    folder.to_string_lossy().into_owned()
}

#[test]
fn round_trip_across_dates_and_row_rolls() {
    let dir = TestDir::new("round-trip");
    let config = ArchiveConfig {
        max_file_rows: 3,
        ..ArchiveConfig::default()
    };
    let archive = spawn(&dir.archive(), config);
    let sender = archive.sender();
    let sent = varied_rows();

    for row in sent.clone() {
        sender.send(row).expect("queue row");
    }
    let stats = archive.close().expect("close archive");

    // May 1 has 5 rows, so a 3-row file and a 2-row file. May 2 has 2 rows.
    assert_eq!(stats.rows_received, 7);
    assert_eq!(stats.rows_written, 7);
    assert_eq!(stats.files_closed, 3);
    assert_eq!(stats.io_errors, 0);
    assert!(in_progress_files(&dir.archive()).is_empty());

    let files = parquet_files(&dir.archive());
    assert_eq!(files.len(), 3, "{files:?}");
    let partitions: BTreeSet<String> = files.iter().map(|path| partition_of(path)).collect();
    let expected_partitions =
        BTreeSet::from(["date=2024-05-01".to_owned(), "date=2024-05-02".to_owned()]);
    assert_eq!(partitions, expected_partitions);

    let mut read_back = Vec::new();
    let mut bytes = 0;
    for path in &files {
        let rows = read_rows(path);
        assert!(
            rows.len() <= 3,
            "{} has {} rows",
            path.display(),
            rows.len()
        );
        for row in &rows {
            let expected = format!("date={}", utc_date(row.accepted_at_ms));
            assert_eq!(partition_of(path), expected, "row {row:?}");
        }
        bytes += fs::metadata(path).expect("file metadata").len();
        read_back.extend(rows);
    }
    assert_eq!(sorted(read_back), sorted(sent));
    assert_eq!(stats.bytes_written, bytes);
}

#[test]
fn metadata_has_json_types_and_statistics() {
    let metadata = archived_varied_rows("metadata");
    let schema = metadata.file_metadata().schema_descr();
    let row_group = metadata.row_group(0);

    for index in 0..schema.num_columns() {
        let column = schema.column(index);
        let name = column.name();
        let expected_type = match name {
            schema::VERSION => None,
            schema::ACCEPTED_AT => Some(LogicalType::timestamp(true, TimeUnit::MILLIS)),
            _ if schema::JSON_COLUMNS.contains(&name) => Some(LogicalType::Json),
            _ => Some(LogicalType::String),
        };
        assert_eq!(
            column.logical_type_ref().cloned(),
            expected_type,
            "column {name}"
        );
        assert!(
            matches!(row_group.column(index).compression(), Compression::ZSTD(_)),
            "column {name} is not zstd-compressed"
        );
    }

    for name in [schema::THING_NAME, schema::ACCEPTED_AT] {
        let index = (0..schema.num_columns())
            .find(|&index| schema.column(index).name() == name)
            .expect("column exists");
        let chunk = row_group.column(index);
        let statistics = chunk.statistics().expect("chunk statistics");
        assert!(statistics.min_bytes_opt().is_some(), "{name} has no min");
        assert!(statistics.max_bytes_opt().is_some(), "{name} has no max");
        assert!(
            chunk.column_index_offset().is_some(),
            "{name} has no column index"
        );
    }
}

#[test]
fn columns_use_chosen_encodings() {
    let metadata = archived_varied_rows("encodings");
    let schema = metadata.file_metadata().schema_descr();
    let row_group = metadata.row_group(0);

    for index in 0..schema.num_columns() {
        let name = schema.column(index).name().to_owned();
        let encodings: Vec<Encoding> = row_group.column(index).encodings().collect();
        let dictionary = encodings.contains(&Encoding::RLE_DICTIONARY);
        match name.as_str() {
            schema::VERSION | schema::ACCEPTED_AT => {
                assert!(
                    encodings.contains(&Encoding::DELTA_BINARY_PACKED),
                    "column {name}: {encodings:?}"
                );
                assert!(!dictionary, "column {name}: {encodings:?}");
            }
            schema::THING_NAME | schema::SHADOW_NAME | schema::CHANGE | schema::ORIGIN => {
                assert!(dictionary, "column {name}: {encodings:?}");
            }
            _ => assert!(!dictionary, "column {name}: {encodings:?}"),
        }
    }
}

#[test]
fn row_group_rows_caps_row_groups() {
    let dir = TestDir::new("row-groups");
    let config = ArchiveConfig {
        row_group_rows: 100,
        ..ArchiveConfig::default()
    };
    let archive = spawn(&dir.archive(), config);
    let sender = archive.sender();

    for version in 1..=250 {
        sender
            .send(row("lamp-1", version, MAY_1 + version as i64))
            .expect("queue row");
    }
    archive.close().expect("close archive");

    let files = parquet_files(&dir.archive());
    assert_eq!(files.len(), 1, "{files:?}");
    let metadata = read_metadata(&files[0]);
    let row_counts: Vec<i64> = metadata
        .row_groups()
        .iter()
        .map(|group| group.num_rows())
        .collect();
    assert_eq!(row_counts, vec![100, 100, 50]);
}

#[test]
fn row_group_bytes_caps_row_groups() {
    let dir = TestDir::new("row-group-bytes");
    let config = ArchiveConfig {
        row_group_bytes: 64 * 1024,
        ..ArchiveConfig::default()
    };
    let archive = spawn(&dir.archive(), config);
    let sender = archive.sender();

    // About 1 KB of distinct JSON per row, so 3,000 rows are far above 64 KiB.
    for version in 1..=3_000_u64 {
        let mut update = row(&format!("thing-{version}"), version, MAY_1);
        let values: Vec<String> = (0..100)
            .map(|key| format!("\"k{key}\":{}", version * 101 + key))
            .collect();
        update.reported = Some(format!("{{{}}}", values.join(",")));
        sender.send(update).expect("queue row");
    }
    archive.close().expect("close archive");

    let files = parquet_files(&dir.archive());
    let metadata = read_metadata(&files[0]);
    let row_counts: Vec<i64> = metadata
        .row_groups()
        .iter()
        .map(|group| group.num_rows())
        .collect();
    assert!(
        row_counts.len() > 1,
        "one row group despite the byte cap: {row_counts:?}"
    );
    assert_eq!(row_counts.iter().sum::<i64>(), 3_000);
}

#[test]
fn idle_file_is_finished_after_max_age() {
    let dir = TestDir::new("age");
    let config = ArchiveConfig {
        max_file_age_ms: 200,
        ..ArchiveConfig::default()
    };
    let archive = spawn(&dir.archive(), config);
    archive
        .sender()
        .send(row("lamp-1", 1, MAY_1))
        .expect("queue row");

    // No further rows and no close: only the age limit can finish the file.
    wait_until("the file is finished by age", || {
        !parquet_files(&dir.archive()).is_empty()
    });

    let files = parquet_files(&dir.archive());
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(read_rows(&files[0]), vec![row("lamp-1", 1, MAY_1)]);
    assert!(in_progress_files(&dir.archive()).is_empty());
    wait_until("the counters are updated", || archive.files_closed() == 1);
    assert_eq!(archive.rows_written(), 1);

    let stats = archive.close().expect("close archive");
    assert_eq!(stats.files_closed, 1);
}

#[test]
fn huge_max_age_is_accepted() {
    let dir = TestDir::new("huge-age");
    let config = ArchiveConfig {
        max_file_age_ms: u64::MAX,
        ..ArchiveConfig::default()
    };
    let archive = spawn(&dir.archive(), config);
    archive
        .sender()
        .send(row("lamp-1", 1, MAY_1))
        .expect("queue row");

    let stats = archive.close().expect("close archive");

    assert_eq!(stats.rows_written, 1);
}

#[test]
fn live_directory_lists_only_finished_files() {
    let dir = TestDir::new("live");
    let config = ArchiveConfig {
        max_file_rows: 10,
        row_group_rows: 4,
        ..ArchiveConfig::default()
    };
    let archive = spawn(&dir.archive(), config);
    let sender = archive.sender();

    // 15 rows: a finished 10-row file and an open file with 5 rows.
    for version in 1..=15 {
        sender
            .send(row("lamp-1", version, MAY_1 + version as i64))
            .expect("queue row");
    }
    wait_until("the first file is finished", || archive.files_closed() == 1);
    wait_until("the second file is open", || {
        !in_progress_files(&dir.archive()).is_empty()
    });

    let finished = parquet_files(&dir.archive());
    assert_eq!(finished.len(), 1, "{finished:?}");
    assert_eq!(read_rows(&finished[0]).len(), 10);
    let open = in_progress_files(&dir.archive());
    assert_eq!(open.len(), 1, "{open:?}");
    let open_name = open[0]
        .file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned();
    assert!(open_name.starts_with(".part-"), "{open_name} is not hidden");

    let stats = archive.close().expect("close archive");
    assert_eq!(stats.rows_written, 15);
    let finished = parquet_files(&dir.archive());
    assert_eq!(finished.len(), 2, "{finished:?}");
    let total: usize = finished.iter().map(|path| read_rows(path).len()).sum();
    assert_eq!(total, 15);
    assert!(in_progress_files(&dir.archive()).is_empty());
}

#[test]
fn dropping_handle_and_senders_finishes_files() {
    let dir = TestDir::new("drop");
    let archive = spawn(&dir.archive(), ArchiveConfig::default());
    let sender = archive.sender();
    let counters = archive.counters();
    sender.send(row("lamp-1", 1, MAY_1)).expect("queue row");

    drop(archive);
    drop(sender);

    // The default age limit is a minute, so only the disconnect can finish the file in time.
    wait_until("the writer finishes its file", || {
        counters.files_closed() == 1
    });
    let files = parquet_files(&dir.archive());
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(read_rows(&files[0]).len(), 1);
}

#[test]
fn send_after_close_returns_row() {
    let dir = TestDir::new("after-close");
    let archive = spawn(&dir.archive(), ArchiveConfig::default());
    let sender = archive.sender();
    archive.close().expect("close archive");

    let error = sender
        .send(row("lamp-1", 1, MAY_1))
        .expect_err("writer is closed");

    assert!(
        matches!(error, ArchiveSendError::WriterStopped(_)),
        "{error:?}"
    );
    assert_eq!(error.into_row(), row("lamp-1", 1, MAY_1));
}

#[test]
fn send_rejects_version_above_i64_max() {
    let dir = TestDir::new("version");
    let archive = spawn(&dir.archive(), ArchiveConfig::default());
    let too_large = row("lamp-1", u64::MAX, MAY_1);

    let error = archive
        .sender()
        .send(too_large.clone())
        .expect_err("version too large");

    assert!(
        matches!(error, ArchiveSendError::VersionOutOfRange(_)),
        "{error:?}"
    );
    assert_eq!(error.into_row(), too_large);
    let stats = archive.close().expect("close archive");
    assert_eq!(stats.rows_received, 0);
}

#[test]
fn senders_on_many_threads_lose_no_rows() {
    let dir = TestDir::new("threads");
    let config = ArchiveConfig {
        queue_rows: 16,
        max_file_rows: 700,
        ..ArchiveConfig::default()
    };
    let archive = spawn(&dir.archive(), config);

    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let sender = archive.sender();
            thread::spawn(move || {
                for version in 1..=500 {
                    let thing = format!("thing-{worker}");
                    sender
                        .send(row(&thing, version, MAY_1 + version as i64))
                        .expect("queue row");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("sender thread");
    }
    let stats = archive.close().expect("close archive");

    assert_eq!(stats.rows_written, 2_000);
    let mut keys = BTreeSet::new();
    for path in parquet_files(&dir.archive()) {
        for row in read_rows(&path) {
            keys.insert((row.thing_name, row.version));
        }
    }
    assert_eq!(keys.len(), 2_000);
}

#[test]
fn spawn_rejects_invalid_config() {
    let dir = TestDir::new("invalid");
    let config = ArchiveConfig {
        row_group_rows: 0,
        ..ArchiveConfig::default()
    };

    let error = ArchiveWriter::spawn(dir.archive(), config).expect_err("row_group_rows = 0");

    assert!(
        matches!(
            error,
            ArchiveError::Config(ArchiveConfigError::Zero {
                field: "row_group_rows"
            })
        ),
        "{error:?}"
    );
    assert!(!dir.archive().exists());
}

#[test]
fn file_in_place_of_partition_is_reported() {
    let dir = TestDir::new("blocked");
    fs::create_dir_all(dir.archive()).expect("create archive directory");
    let blocker = dir.archive().join("date=2024-05-01");
    fs::write(&blocker, b"not a folder").expect("write blocking file");
    let archive = spawn(&dir.archive(), ArchiveConfig::default());

    for version in 1..=3 {
        archive
            .sender()
            .send(row("lamp-1", version, MAY_1))
            .expect("queue row");
    }
    for version in 1..=2 {
        archive
            .sender()
            .send(row("lamp-1", version, MAY_2))
            .expect("queue row");
    }
    let error = archive
        .close()
        .expect_err("May 1 rows have no partition folder");

    let ArchiveError::Incomplete {
        stats,
        rows_not_archived,
        unfinished_files,
        first_error,
    } = error
    else {
        panic!("expected Incomplete, got {error:?}");
    };
    assert_eq!(rows_not_archived, 3);
    assert!(unfinished_files.is_empty(), "{unfinished_files:?}");
    assert_eq!(stats.rows_written, 2);
    assert!(
        matches!(
            *first_error,
            ArchiveError::Io { action: "creating partition folder", ref path, .. } if *path == blocker
        ),
        "{first_error:?}"
    );
    assert_eq!(parquet_files(&dir.archive()).len(), 1);
}

/// A file whose write calls listed in `failing_calls` fail with "no space left on device"
/// before writing anything, as a full disk does.
struct FlakyFile {
    file: File,
    calls: u32,
    failing_calls: [u32; 2],
}

impl Write for FlakyFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.failing_calls.contains(&self.calls) {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device",
            ));
        }
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[test]
fn failed_writes_are_retried_into_valid_file() {
    let dir = TestDir::new("flaky");
    let path = dir.path.join("flaky.parquet");
    let shared = Arc::new(Shared::default());
    let flaky = FlakyFile {
        file: File::create(&path).expect("create file"),
        calls: 0,
        failing_calls: [2, 3],
    };
    let schema = history_schema();
    let config = ArchiveConfig {
        row_group_rows: 500,
        ..ArchiveConfig::default()
    };
    let options = ArrowWriterOptions::new()
        .with_properties(writer_properties(&config).expect("valid config"))
        .with_parquet_schema(parquet_schema(&schema).expect("Parquet schema"));
    let retrying = RetryingFile::new(flaky, path.clone(), Arc::clone(&shared));
    let mut writer =
        ArrowWriter::try_new_with_options(retrying, Arc::clone(&schema), options).expect("writer");

    let rows: Vec<HistoryRow> = (1..=2_000)
        .map(|version| row("lamp-1", version, MAY_1 + version as i64))
        .collect();
    // Batches of the Parquet writer's default write batch size.
    for chunk in rows.chunks(1024) {
        let batch = rows_to_batch(&schema, chunk).expect("batch");
        writer
            .write(&batch)
            .expect("the writer never receives the failed calls");
    }
    writer.close().expect("write footer");

    assert_eq!(shared.counters.io_errors(), 2);
    assert_eq!(read_rows(&path), rows);
}

/// Reads the archive with pyarrow's dataset API and prints the row count, the rows sorted by
/// `accepted_at` and `thing_name`, and each row's `date` partition value, as JSON.
const PYARROW_SCRIPT: &str = r#"
import json, sys
import pyarrow.dataset as ds
table = ds.dataset(sys.argv[1], format="parquet", partitioning="hive").to_table()
table = table.sort_by([("accepted_at", "ascending"), ("thing_name", "ascending")])
rows = []
for row in table.to_pylist():
    row["accepted_at"] = round(row["accepted_at"].timestamp() * 1000)
    row["date"] = str(row["date"])
    rows.append(row)
print(json.dumps({"num_rows": table.num_rows, "rows": rows}))
"#;

/// Runs [`PYARROW_SCRIPT`] on `directory` and returns its JSON output.
fn read_with_pyarrow(directory: &Path) -> serde_json::Value {
    let output = Command::new("python3")
        .args(["-c", PYARROW_SCRIPT])
        .arg(directory)
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "pyarrow failed to read {}: {}",
        directory.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("pyarrow script prints JSON")
}

/// pyarrow, an independent Parquet implementation, reads the live and the closed archive as a
/// Hive-partitioned dataset.
#[test]
fn pyarrow_reads_hive_partitioned_archive() {
    let probe = Command::new("python3")
        .args(["-c", "import pyarrow"])
        .output();
    let has_pyarrow = probe.is_ok_and(|output| output.status.success());
    assert!(
        has_pyarrow,
        "this test needs python3 with pyarrow: run `pip install pyarrow`"
    );

    let dir = TestDir::new("pyarrow");
    let config = ArchiveConfig {
        max_file_rows: 3,
        ..ArchiveConfig::default()
    };
    let archive = spawn(&dir.archive(), config);
    let sender = archive.sender();
    let sent = varied_rows();
    for row in sent.clone() {
        sender.send(row).expect("queue row");
    }
    // One May 1 file is finished. The second May 1 file and the May 2 file stay open.
    wait_until("the first file is finished", || archive.files_closed() == 1);
    wait_until("two files are open", || {
        in_progress_files(&dir.archive()).len() == 2
    });

    let live = read_with_pyarrow(&dir.archive());
    assert_eq!(
        live["num_rows"], 3,
        "pyarrow read rows of unfinished files: {live}"
    );

    archive.close().expect("close archive");
    assert!(
        dir.archive().join(STATE_FILE_NAME).is_file(),
        "pyarrow must skip the state file"
    );
    let closed = read_with_pyarrow(&dir.archive());
    assert_eq!(closed["num_rows"], 7, "{closed}");

    let expected = sorted(sent);
    let rows = closed["rows"].as_array().expect("rows array");
    for (index, (actual, expected)) in rows.iter().zip(&expected).enumerate() {
        let context = format!("row {index}: {actual}");
        assert_eq!(
            actual["thing_name"],
            expected.thing_name.as_str(),
            "{context}"
        );
        assert_eq!(
            actual["shadow_name"].as_str(),
            expected.shadow_name.as_deref(),
            "{context}"
        );
        assert_eq!(
            actual["version"].as_u64(),
            Some(expected.version),
            "{context}"
        );
        assert_eq!(
            actual["accepted_at"].as_i64(),
            Some(expected.accepted_at_ms),
            "{context}"
        );
        assert_eq!(
            actual["reported"].as_str(),
            expected.reported.as_deref(),
            "{context}"
        );
        assert_eq!(
            actual["client_token"].as_str(),
            expected.client_token.as_deref(),
            "{context}"
        );
        let expected_date = utc_date(expected.accepted_at_ms);
        assert_eq!(
            actual["date"].as_str(),
            Some(expected_date.as_str()),
            "{context}"
        );
    }
}
