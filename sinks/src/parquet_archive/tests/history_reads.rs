//! Tests of history reads against archives written by the real writer in temporary folders.

use std::thread;

use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
use pipeline::shadow::ShadowKey;

use super::super::prune::{FilterColumns, candidate_rows};
use super::super::scan::{Columns, RowPredicate, read_matching};
use super::*;

const DAY_MS: i64 = 86_400_000;

fn lamp() -> ShadowKey {
    ShadowKey::classic("lamp-1")
}

fn query(limit: usize) -> HistoryQuery {
    HistoryQuery {
        shadow: lamp(),
        accepted_from_ms: None,
        accepted_before_ms: None,
        after: None,
        limit,
    }
}

fn versions(changes: &[HistoryChange]) -> Vec<u64> {
    changes.iter().map(|change| change.version).collect()
}

fn delete(thing: &str, version: u64, accepted_at_ms: i64) -> HistoryRow {
    HistoryRow {
        change: ChangeKind::Delete,
        client_token: None,
        request_state: None,
        reported: None,
        ..row(thing, version, accepted_at_ms)
    }
}

/// Writes `rows` with the default settings, closes the writer and returns a reader of the
/// closed archive.
fn closed_archive(dir: &TestDir, rows: &[HistoryRow]) -> HistoryReader {
    let archive = spawn(&dir.archive(), ArchiveConfig::default());
    for row in rows {
        archive.sender().send(row.clone()).expect("queue row");
    }
    archive.close().expect("close archive");
    HistoryReader::open(dir.archive())
}

/// lamp-1 versions 1 to 3 on May 1 and 4 to 5 on May 2, between rows of other things.
fn two_day_rows() -> Vec<HistoryRow> {
    vec![
        row("lamp-1", 1, MAY_1 + 1_000),
        row("fan-2", 1, MAY_1 + 1_500),
        row("lamp-1", 2, MAY_1 + 2_000),
        row("lamp-1", 3, MAY_1 + 3_000),
        row("zeppelin", 1, MAY_1 + 3_500),
        row("lamp-1", 4, MAY_2 + 1_000),
        row("fan-2", 2, MAY_2 + 1_500),
        row("lamp-1", 5, MAY_2 + 2_000),
    ]
}

#[test]
fn changes_span_two_date_partitions() {
    let dir = TestDir::new("history-two-days");
    let reader = closed_archive(&dir, &two_day_rows());
    assert_eq!(parquet_files(&dir.archive()).len(), 2);

    let page = reader.changes(&query(100)).expect("read changes");

    assert_eq!(versions(&page.changes), vec![1, 2, 3, 4, 5]);
    assert_eq!(page.next, None);
    let fifth = &page.changes[4];
    assert_eq!(fifth.accepted_at_ms, MAY_2 + 2_000);
    assert_eq!(fifth.reported.as_deref(), Some(r#"{"v":5}"#));
    assert_eq!(
        fifth.request_state.as_deref(),
        Some(r#"{"reported":{"v":5}}"#)
    );
    assert_eq!(fifth.client_token.as_deref(), Some("token-5"));
    assert_eq!(fifth.origin, Origin::Mqtt);
}

#[test]
fn time_range_keeps_from_and_drops_to() {
    let dir = TestDir::new("history-time-range");
    let reader = closed_archive(&dir, &two_day_rows());

    let from_may_2 = HistoryQuery {
        accepted_from_ms: Some(MAY_2 + 1_000),
        ..query(100)
    };
    let before_may_2 = HistoryQuery {
        accepted_before_ms: Some(MAY_2 + 1_000),
        ..query(100)
    };
    let middle = HistoryQuery {
        accepted_from_ms: Some(MAY_1 + 2_000),
        accepted_before_ms: Some(MAY_1 + 3_000),
        ..query(100)
    };

    let read = |query: &HistoryQuery| versions(&reader.changes(query).expect("read").changes);
    assert_eq!(read(&from_may_2), vec![4, 5]);
    assert_eq!(read(&before_may_2), vec![1, 2, 3]);
    assert_eq!(read(&middle), vec![2]);
}

#[test]
fn time_range_skips_other_partitions() {
    let dir = TestDir::new("history-partition-pruning");
    let reader = closed_archive(&dir, &two_day_rows());
    // A damaged file in a partition outside the range: reading it would fail.
    let old_partition = dir.archive().join("date=2024-04-01");
    fs::create_dir_all(&old_partition).expect("create partition");
    fs::write(old_partition.join("part-1-damaged.parquet"), b"not parquet").expect("write");

    let in_range = HistoryQuery {
        accepted_from_ms: Some(MAY_1),
        ..query(100)
    };
    let page = reader
        .changes(&in_range)
        .expect("the damaged partition is skipped");
    assert_eq!(versions(&page.changes), vec![1, 2, 3, 4, 5]);

    let error = reader
        .changes(&query(100))
        .expect_err("no range reads the damaged file");
    assert!(
        matches!(error, HistoryReadError::Parquet { ref path, .. } if path.starts_with(&old_partition)),
        "{error:?}"
    );
}

#[test]
fn pages_return_every_change_once() {
    let dir = TestDir::new("history-pages");
    // 25 versions over three days, sent out of thing order.
    let mut rows = Vec::new();
    for version in 1..=25_u64 {
        let accepted_at_ms = MAY_1 + (version as i64 - 1) * DAY_MS / 10;
        rows.push(row("lamp-1", version, accepted_at_ms));
        rows.push(row("fan-2", version, accepted_at_ms));
    }
    let reader = closed_archive(&dir, &rows);

    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    // 25 changes in pages of 7 take 4 pages, so 10 rounds are plenty.
    for _ in 0..10 {
        let page = reader
            .changes(&HistoryQuery { after, ..query(7) })
            .expect("read page");
        pages += 1;
        seen.extend(versions(&page.changes));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }

    assert_eq!(seen, (1..=25).collect::<Vec<u64>>());
    assert_eq!(pages, 4);
}

#[test]
fn delete_ends_the_shadow_at_its_time() {
    let dir = TestDir::new("history-delete");
    let rows = [
        row("lamp-1", 1, MAY_1 + 1_000),
        row("lamp-1", 2, MAY_1 + 2_000),
        delete("lamp-1", 2, MAY_1 + 3_000),
        row("lamp-1", 3, MAY_1 + 4_000),
    ];
    let reader = closed_archive(&dir, &rows);

    let page = reader.changes(&query(100)).expect("read changes");
    let kinds: Vec<(u64, ChangeKind)> = page
        .changes
        .iter()
        .map(|change| (change.version, change.change))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (1, ChangeKind::Update),
            (2, ChangeKind::Update),
            (2, ChangeKind::Delete),
            (3, ChangeKind::Update),
        ]
    );

    let at = |offset_ms: i64| {
        reader
            .change_at(&lamp(), MAY_1 + offset_ms)
            .expect("read at")
            .map(|change| (change.version, change.change))
    };
    assert_eq!(at(500), None);
    assert_eq!(at(1_000), Some((1, ChangeKind::Update)));
    assert_eq!(at(2_500), Some((2, ChangeKind::Update)));
    assert_eq!(at(3_000), Some((2, ChangeKind::Delete)));
    assert_eq!(at(3_999), Some((2, ChangeKind::Delete)));
    assert_eq!(at(DAY_MS * 5), Some((3, ChangeKind::Update)));

    let version_2 = reader
        .change_at_version(&lamp(), 2)
        .expect("read version")
        .expect("version 2 exists");
    assert_eq!(version_2.change, ChangeKind::Update);
    assert_eq!(version_2.reported.as_deref(), Some(r#"{"v":2}"#));
}

#[test]
fn version_lookup_searches_every_partition() {
    let dir = TestDir::new("history-version");
    let reader = closed_archive(&dir, &two_day_rows());

    let lookup = |version| {
        reader
            .change_at_version(&lamp(), version)
            .expect("read version")
            .map(|change| (change.version, change.accepted_at_ms))
    };

    assert_eq!(lookup(2), Some((2, MAY_1 + 2_000)));
    assert_eq!(lookup(5), Some((5, MAY_2 + 2_000)));
    assert_eq!(lookup(0), None);
    assert_eq!(lookup(6), None);
}

#[test]
fn named_shadow_is_apart_from_classic() {
    let dir = TestDir::new("history-named");
    let named = HistoryRow {
        shadow_name: Some("config".to_owned()),
        ..row("lamp-1", 1, MAY_1 + 500)
    };
    let reader = closed_archive(&dir, &[row("lamp-1", 1, MAY_1 + 1_000), named]);

    let classic = reader.change_at(&lamp(), MAY_2).expect("read classic");
    let config = reader
        .change_at(&ShadowKey::named("lamp-1", "config"), MAY_2)
        .expect("read named");
    let missing = reader
        .change_at(&ShadowKey::named("lamp-1", "other"), MAY_2)
        .expect("read missing");

    assert_eq!(
        classic.map(|change| change.accepted_at_ms),
        Some(MAY_1 + 1_000)
    );
    assert_eq!(
        config.map(|change| change.accepted_at_ms),
        Some(MAY_1 + 500)
    );
    assert_eq!(missing, None);
}

#[test]
fn open_file_rows_are_read_before_commit() {
    let dir = TestDir::new("history-open-file");
    let archive = spawn(&dir.archive(), ArchiveConfig::default());
    let reader = archive.reader();
    let sender = archive.sender();

    for version in 1..=3 {
        sender
            .send(row("lamp-1", version, MAY_1 + version as i64))
            .expect("queue row");
    }
    let page = reader.changes(&query(100)).expect("read open rows");

    assert!(
        parquet_files(&dir.archive()).is_empty(),
        "nothing committed yet"
    );
    assert_eq!(versions(&page.changes), vec![1, 2, 3]);
    assert!(archive.uncommitted_index_bytes() > 0);

    // Commit versions 1 to 3, then add version 4 to a new open file.
    sender
        .barrier()
        .expect("queue barrier")
        .wait()
        .expect("commit");
    assert_eq!(archive.uncommitted_index_bytes(), 0);
    sender.send(row("lamp-1", 4, MAY_1 + 4)).expect("queue row");

    let page = reader.changes(&query(100)).expect("read merged rows");
    assert_eq!(versions(&page.changes), vec![1, 2, 3, 4]);
    let from_index = reader
        .change_at_version(&lamp(), 4)
        .expect("read version 4");
    let from_file = reader
        .change_at_version(&lamp(), 1)
        .expect("read version 1");
    assert_eq!(from_index.map(|change| change.version), Some(4));
    assert_eq!(from_file.map(|change| change.version), Some(1));
    archive.close().expect("close archive");
}

#[test]
fn full_index_commits_open_files_early() {
    let dir = TestDir::new("history-index-budget");
    let config = ArchiveConfig {
        uncommitted_index_bytes: 1,
        ..ArchiveConfig::default()
    };
    let archive = spawn(&dir.archive(), config);
    let reader = archive.reader();

    for version in 1..=3 {
        archive
            .sender()
            .send(row("lamp-1", version, MAY_1 + version as i64))
            .expect("queue row");
    }
    let page = reader.changes(&query(100)).expect("read changes");

    assert_eq!(versions(&page.changes), vec![1, 2, 3]);
    assert_eq!(parquet_files(&dir.archive()).len(), 3, "one file per row");
    assert_eq!(archive.uncommitted_index_bytes(), 0);
    archive.close().expect("close archive");
}

#[test]
fn reads_during_commits_miss_and_repeat_nothing() {
    let dir = TestDir::new("history-concurrent");
    let config = ArchiveConfig {
        max_file_rows: 7,
        ..ArchiveConfig::default()
    };
    let archive = spawn(&dir.archive(), config);
    let reader = archive.reader();
    let sender = archive.sender();
    let total: u64 = 400;

    let writer = thread::spawn(move || {
        for version in 1..=total {
            sender
                .send(row("lamp-1", version, MAY_1 + version as i64))
                .expect("queue row");
        }
    });

    // Each read must see versions 1..=n for some n, never with a gap or a repeat, and n never
    // shrinks. At most 2,000 reads, so the test ends even if the writer stalls.
    let mut seen = 0;
    for _ in 0..2_000 {
        let read = versions(&reader.changes(&query(1_000)).expect("read").changes);
        let expected: Vec<u64> = (1..=read.len() as u64).collect();
        assert_eq!(read, expected, "a read skipped or repeated a version");
        assert!(read.len() as u64 >= seen, "a read lost versions");
        seen = read.len() as u64;
        if seen == total {
            break;
        }
    }
    writer.join().expect("writer thread");
    let read = reader.changes(&query(1_000)).expect("final read");
    assert_eq!(read.changes.len() as u64, total);
    archive.close().expect("close archive");
}

#[test]
fn row_groups_are_sorted_by_thing_and_version() {
    let dir = TestDir::new("history-sorted");
    let rows = [
        row("zeppelin", 2, MAY_1 + 1),
        row("lamp-1", 2, MAY_1 + 2),
        row("zeppelin", 1, MAY_1 + 3),
        row("fan-2", 1, MAY_1 + 4),
        row("lamp-1", 1, MAY_1 + 5),
    ];
    closed_archive(&dir, &rows);

    let files = parquet_files(&dir.archive());
    let order: Vec<(String, u64)> = read_rows(&files[0])
        .into_iter()
        .map(|row| (row.thing_name, row.version))
        .collect();

    let expected = [
        ("fan-2", 1),
        ("lamp-1", 1),
        ("lamp-1", 2),
        ("zeppelin", 1),
        ("zeppelin", 2),
    ];
    let expected: Vec<(String, u64)> = expected
        .iter()
        .map(|(thing, version)| ((*thing).to_owned(), *version))
        .collect();
    assert_eq!(order, expected);
}

#[test]
fn page_index_skips_pages_of_other_things() {
    let dir = TestDir::new("history-page-index");
    // 300 things with 150 versions each, sent interleaved: one row group of 45,000 rows, which
    // the Parquet writer splits into pages of at most 20,000 rows.
    let mut rows = Vec::new();
    for version in 1..=150_u64 {
        for thing in 0..300 {
            rows.push(row(
                &format!("thing-{thing:03}"),
                version,
                MAY_1 + version as i64,
            ));
        }
    }
    closed_archive(&dir, &rows);
    let files = parquet_files(&dir.archive());
    assert_eq!(files.len(), 1);
    let file = File::open(&files[0]).expect("open file");
    let metadata = ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Required)
        .parse_and_finish(&file)
        .expect("read footer and page index");
    let thing_column = FilterColumns::find(&metadata).expect("columns").thing_name;
    assert_eq!(metadata.num_row_groups(), 1);

    let candidates = candidate_rows(&metadata, 0, thing_column, b"thing-150");
    let candidate_count: usize = candidates.iter().map(|range| range.len()).sum();
    assert!(
        candidate_count <= 30_000,
        "pages of other things were selected: {candidates:?}"
    );
    assert!(candidate_rows(&metadata, 0, thing_column, b"other").is_empty());

    let predicate = RowPredicate {
        thing_name: "thing-150".to_owned(),
        shadow_name: None,
        versions: 0..=u64::MAX,
        accepted_at: i64::MIN..i64::MAX,
    };
    let read = read_matching(&files[0], &predicate, Columns::All).expect("read thing-150");
    assert_eq!(versions(&read), (1..=150).collect::<Vec<u64>>());
}
