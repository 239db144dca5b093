//! Tests of rows with write-ahead log positions: watermark, state file, recovery, barriers and
//! failures, against real files in temporary folders.
//!
//! Crash points are built on disk directly, or copied from a live archive directory, because a
//! test cannot kill the writer thread.

use std::collections::BTreeMap;

use pipeline::history::LogPosition;

use super::*;

/// A row that identifies its log position: thing `g{generation}-w{worker}`, version `lsn + 1`.
fn logged_row(position: LogPosition, accepted_at_ms: i64) -> HistoryRow {
    let thing = format!("g{}-w{}", position.generation, position.worker);
    row(&thing, position.lsn + 1, accepted_at_ms)
}

fn position(generation: u64, worker: u32, lsn: u64) -> LogPosition {
    LogPosition {
        generation,
        worker,
        lsn,
    }
}

fn send_logged(sender: &ArchiveSender, position: LogPosition, accepted_at_ms: i64) {
    sender
        .send_logged(logged_row(position, accepted_at_ms), position)
        .expect("queue logged row");
}

/// Parses the state file of the archive `directory` as JSON.
fn read_state_json(directory: &Path) -> serde_json::Value {
    let text = fs::read(directory.join(STATE_FILE_NAME)).expect("read state file");
    serde_json::from_slice(&text).expect("state file is JSON")
}

fn state_watermark(directory: &Path) -> ArchiveWatermark {
    serde_json::from_value(read_state_json(directory)["watermark"].clone())
        .expect("state file has a watermark")
}

/// Counts each `(thing, version)` in the finished files of `directory`.
fn archived_rows(directory: &Path) -> BTreeMap<(String, u64), usize> {
    let mut counts = BTreeMap::new();
    for path in parquet_files(directory) {
        for row in read_rows(&path) {
            *counts.entry((row.thing_name, row.version)).or_insert(0) += 1;
        }
    }
    counts
}

/// Asserts that `directory` contains lsn `0..count` of `log` once each.
fn assert_log_archived_once(directory: &Path, log: LogPosition, count: u64) {
    let counts = archived_rows(directory);
    let thing = format!("g{}-w{}", log.generation, log.worker);
    for lsn in 0..count {
        let copies = counts.get(&(thing.clone(), lsn + 1)).copied().unwrap_or(0);
        assert_eq!(copies, 1, "{thing} lsn {lsn} archived {copies} times");
    }
    let extra = counts
        .keys()
        .filter(|(name, version)| *name == thing && *version > count)
        .count();
    assert_eq!(extra, 0, "{thing} has rows beyond lsn {}", count - 1);
}

/// Copies the files of an archive directory two levels deep, as a crash would leave them.
fn copy_archive(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create copy");
    for entry in fs::read_dir(from).expect("list archive") {
        let entry = entry.expect("archive entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            fs::create_dir_all(&target).expect("create partition copy");
            for file in fs::read_dir(entry.path()).expect("list partition") {
                let file = file.expect("partition entry");
                fs::copy(file.path(), target.join(file.file_name())).expect("copy file");
            }
        } else {
            fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// Closes a clean archive with one committed file of log (1, 0) lsn 0..3 and returns the file.
fn archive_with_one_file(directory: &Path) -> PathBuf {
    let archive = spawn(directory, ArchiveConfig::default());
    let sender = archive.sender();
    for lsn in 0..3 {
        send_logged(&sender, position(1, 0, lsn), MAY_1 + lsn as i64);
    }
    archive.close().expect("close archive");
    let files = parquet_files(directory);
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

fn in_progress_name_of(final_path: &Path) -> PathBuf {
    let name = final_path.file_name().expect("file name").to_string_lossy();
    final_path.with_file_name(format!(".{name}{IN_PROGRESS_SUFFIX}"))
}

#[test]
fn state_watermark_is_highest_lsn_plus_one() {
    let dir = TestDir::new("watermark");
    let config = ArchiveConfig {
        max_file_rows: 4,
        ..ArchiveConfig::default()
    };
    let archive = spawn(&dir.archive(), config);
    let sender = archive.sender();
    let logs = [position(1, 0, 0), position(1, 1, 0), position(2, 0, 0)];
    let counts = [7, 3, 5];

    // Interleave the logs and spread each over two dates.
    for lsn in 0..7 {
        for (log, &count) in logs.iter().zip(&counts) {
            if lsn < count {
                let day = if lsn % 3 == 0 { MAY_2 } else { MAY_1 };
                send_logged(&sender, position(log.generation, log.worker, lsn), day + 1);
            }
        }
    }
    sender.send(row("unlogged", 1, MAY_1)).expect("queue row");
    let live_watermark = archive.watermark();
    let stats = archive.close().expect("close archive");

    assert_eq!(stats.rows_written, 16);
    assert_eq!(stats.duplicates_dropped, 0);
    assert!(in_progress_files(&dir.archive()).is_empty());
    let watermark = state_watermark(&dir.archive());
    for (log, &count) in logs.iter().zip(&counts) {
        assert_eq!(
            watermark.next_lsn(log.generation, log.worker),
            count,
            "log {log:?}"
        );
        assert_log_archived_once(&dir.archive(), *log, count);
    }
    assert_eq!(watermark.next_positions().count(), 3);
    assert!(
        live_watermark.next_lsn(1, 0) <= 7,
        "the live watermark never runs ahead: {live_watermark:?}"
    );
}

#[test]
fn committing_entries_name_final_files() {
    let dir = TestDir::new("committing");
    let final_path = archive_with_one_file(&dir.archive());

    let state = read_state_json(&dir.archive());

    let committing = state["committing"].as_array().expect("committing list");
    assert_eq!(committing.len(), 1, "{state}");
    let entry = committing[0].as_str().expect("entry is a string");
    assert_eq!(dir.archive().join(entry), final_path);
    assert_eq!(state["format"], 1);
}

#[test]
fn file_metadata_contains_watermark() {
    let dir = TestDir::new("file-watermark");
    let final_path = archive_with_one_file(&dir.archive());

    let metadata = read_metadata(&final_path);
    let entries = metadata
        .file_metadata()
        .key_value_metadata()
        .expect("key-value metadata");
    let value = entries
        .iter()
        .find(|entry| entry.key == WATERMARK_METADATA_KEY)
        .and_then(|entry| entry.value.as_deref())
        .expect("watermark entry");

    let watermark: ArchiveWatermark = serde_json::from_str(value).expect("watermark JSON");
    assert_eq!(watermark, state_watermark(&dir.archive()));
    assert_eq!(watermark.next_lsn(1, 0), 3);
}

#[test]
fn log_spanning_two_dates_commits_together() {
    let dir = TestDir::new("group");
    let config = ArchiveConfig {
        max_file_rows: 2,
        ..ArchiveConfig::default()
    };
    let archive = spawn(&dir.archive(), config);
    let sender = archive.sender();
    // An unlogged row on May 3 shares no log with the others, so its file stays open.
    let may_3 = MAY_2 + 86_400_000;
    sender.send(row("unlogged", 1, may_3)).expect("queue row");

    send_logged(&sender, position(1, 0, 0), MAY_1);
    send_logged(&sender, position(1, 0, 1), MAY_2);
    // The May 1 file is full now, and the May 2 file contains lsn 1 between its lsns.
    send_logged(&sender, position(1, 0, 2), MAY_1);

    wait_until("the group is committed", || archive.files_closed() == 2);
    assert_eq!(archive.watermark().next_lsn(1, 0), 3);
    let open = in_progress_files(&dir.archive());
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(partition_of(&open[0]), "date=2024-05-03");
    archive.close().expect("close archive");
    assert_log_archived_once(&dir.archive(), position(1, 0, 0), 3);
}

#[test]
fn duplicate_rows_are_dropped_and_counted() {
    let dir = TestDir::new("duplicates");
    let archive = spawn(&dir.archive(), ArchiveConfig::default());
    let sender = archive.sender();

    for lsn in [0, 1, 2, 1, 2, 3, 0] {
        send_logged(&sender, position(1, 0, lsn), MAY_1);
    }
    let stats = archive.close().expect("close archive");

    assert_eq!(stats.rows_received, 7);
    assert_eq!(stats.duplicates_dropped, 3);
    assert_eq!(stats.rows_written, 4);
    assert_log_archived_once(&dir.archive(), position(1, 0, 0), 4);
}

#[test]
fn restart_drops_rows_below_watermark() {
    let dir = TestDir::new("resend");
    archive_with_one_file(&dir.archive());

    let archive = spawn(&dir.archive(), ArchiveConfig::default());
    assert_eq!(archive.recovery().watermark.next_lsn(1, 0), 3);
    let sender = archive.sender();
    for lsn in 0..5 {
        send_logged(&sender, position(1, 0, lsn), MAY_1);
    }
    let stats = archive.close().expect("close archive");

    assert_eq!(stats.duplicates_dropped, 3);
    assert_eq!(stats.rows_written, 2);
    assert_log_archived_once(&dir.archive(), position(1, 0, 0), 5);
    assert_eq!(state_watermark(&dir.archive()).next_lsn(1, 0), 5);
}

/// A crash while rows wait in an open file: the restart deletes that file, and re-sending the
/// whole log archives exactly the missing rows.
#[test]
fn restart_after_crash_archives_each_row_once() {
    let dir = TestDir::new("crash");
    let crashed = dir.path.join("crashed");
    let archive = spawn(&dir.archive(), ArchiveConfig::default());
    let sender = archive.sender();
    for lsn in 0..10 {
        send_logged(&sender, position(1, 0, lsn), MAY_1);
    }
    archive
        .sender()
        .barrier()
        .expect("queue barrier")
        .wait_timeout(WAIT_LIMIT)
        .expect("barrier commits");
    for lsn in 10..15 {
        send_logged(&sender, position(1, 0, lsn), MAY_1);
    }
    wait_until("the writer has every row", || {
        archive.counters().rows_received() == 15
    });
    copy_archive(&dir.archive(), &crashed);
    archive.close().expect("close archive");

    let restarted = spawn(&crashed, ArchiveConfig::default());
    assert_eq!(restarted.recovery().deleted_files.len(), 1);
    assert_eq!(restarted.recovery().watermark.next_lsn(1, 0), 10);
    let sender = restarted.sender();
    for lsn in 0..15 {
        send_logged(&sender, position(1, 0, lsn), MAY_1);
    }
    let stats = restarted.close().expect("close restarted archive");

    assert_eq!(stats.duplicates_dropped, 10);
    assert_log_archived_once(&crashed, position(1, 0, 0), 15);
    assert!(in_progress_files(&crashed).is_empty());
}

/// A crash after the state file names a file but before its rename.
#[test]
fn recovery_renames_committed_file() {
    let dir = TestDir::new("rename");
    let final_path = archive_with_one_file(&dir.archive());
    let in_progress = in_progress_name_of(&final_path);
    fs::rename(&final_path, &in_progress).expect("undo the rename");

    let recovery = recover(&dir.archive()).expect("recover");

    assert_eq!(recovery.renamed_files, vec![final_path.clone()]);
    assert!(recovery.deleted_files.is_empty());
    assert_eq!(recovery.watermark.next_lsn(1, 0), 3);
    assert!(!in_progress.exists());
    assert_eq!(read_rows(&final_path).len(), 3);
}

#[test]
fn uncommitted_in_progress_file_is_deleted() {
    let dir = TestDir::new("leftover");
    archive_with_one_file(&dir.archive());
    let partition = dir.archive().join("date=2024-04-30");
    fs::create_dir_all(&partition).expect("create partition");
    let leftover = partition.join(".part-1714435200000-00000000000000ff-000001.parquet.inprogress");
    fs::write(&leftover, b"PAR1 without footer").expect("write leftover file");

    let archive = spawn(&dir.archive(), ArchiveConfig::default());

    assert_eq!(archive.recovery().deleted_files, vec![leftover.clone()]);
    assert!(archive.recovery().renamed_files.is_empty());
    assert!(!leftover.exists());
    assert_eq!(archive.watermark().next_lsn(1, 0), 3);
    archive.close().expect("close archive");
}

/// A crash after the rename of the last commit: recovery has nothing to do.
#[test]
fn recovery_of_clean_archive_changes_nothing() {
    let dir = TestDir::new("clean");
    let final_path = archive_with_one_file(&dir.archive());
    let state_before = fs::read(dir.archive().join(STATE_FILE_NAME)).expect("read state");

    let recovery = recover(&dir.archive()).expect("recover");

    assert!(recovery.renamed_files.is_empty());
    assert!(recovery.deleted_files.is_empty());
    assert_eq!(recovery.watermark.next_lsn(1, 0), 3);
    assert_eq!(parquet_files(&dir.archive()), vec![final_path]);
    let state_after = fs::read(dir.archive().join(STATE_FILE_NAME)).expect("read state");
    assert_eq!(state_after, state_before);
}

#[test]
fn recovery_of_missing_directory_is_empty() {
    let dir = TestDir::new("missing");

    let recovery = recover(&dir.archive()).expect("recover");

    assert!(recovery.watermark.is_empty());
    assert!(!dir.archive().exists());
}

#[test]
fn leftover_temporary_state_file_is_deleted() {
    let dir = TestDir::new("temp-state");
    archive_with_one_file(&dir.archive());
    let temporary = dir.archive().join("_archive_state.json.tmp");
    fs::write(&temporary, b"{\"format\": 1, \"waterm").expect("write torn state file");

    let recovery = recover(&dir.archive()).expect("recover");

    assert!(!temporary.exists());
    assert_eq!(recovery.watermark.next_lsn(1, 0), 3);
}

#[test]
fn missing_committed_file_is_skipped() {
    let dir = TestDir::new("missing-file");
    let final_path = archive_with_one_file(&dir.archive());
    fs::remove_file(&final_path).expect("remove final file");

    let recovery = recover(&dir.archive()).expect("recover");

    assert!(recovery.renamed_files.is_empty());
    assert_eq!(recovery.watermark.next_lsn(1, 0), 3);
}

#[test]
fn committed_file_under_both_names_is_an_error() {
    let dir = TestDir::new("both-names");
    let final_path = archive_with_one_file(&dir.archive());
    let in_progress = in_progress_name_of(&final_path);
    fs::copy(&final_path, &in_progress).expect("copy final file");

    let error = recover(&dir.archive()).expect_err("two copies");

    assert!(
        matches!(&error, RecoveryError::CommittedFileTwice { path, .. } if *path == final_path),
        "{error:?}"
    );
    assert!(in_progress.exists(), "recovery deletes neither copy");
}

#[test]
fn committed_file_without_footer_is_an_error() {
    let dir = TestDir::new("bad-footer");
    let final_path = archive_with_one_file(&dir.archive());
    let in_progress = in_progress_name_of(&final_path);
    fs::remove_file(&final_path).expect("remove final file");
    fs::write(&in_progress, b"PAR1 cut off before the footer").expect("write broken file");

    let error = recover(&dir.archive()).expect_err("footer is missing");

    assert!(
        matches!(&error, RecoveryError::InvalidCommittedFile { path, .. } if *path == in_progress),
        "{error:?}"
    );
    assert!(in_progress.exists(), "a broken committed file is kept");
}

#[test]
fn invalid_state_file_is_an_error_naming_it() {
    let dir = TestDir::new("bad-state");
    archive_with_one_file(&dir.archive());
    let state_path = dir.archive().join(STATE_FILE_NAME);
    fs::write(&state_path, b"{\"format\": 1, \"watermark\": [").expect("write broken state");

    let error = recover(&dir.archive()).expect_err("state file is cut off");
    let spawn_error =
        ArchiveWriter::spawn(dir.archive(), ArchiveConfig::default()).expect_err("same for spawn");

    assert!(
        matches!(&error, RecoveryError::InvalidState { path, .. } if *path == state_path),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(WATERMARK_METADATA_KEY), "{message}");
    let source = std::error::Error::source(&spawn_error).expect("spawn error has a source");
    assert!(
        source
            .to_string()
            .contains(&state_path.display().to_string()),
        "{spawn_error}: {source}"
    );
}

#[test]
fn barrier_commits_open_file_and_returns_watermark() {
    let dir = TestDir::new("barrier");
    let archive = spawn(&dir.archive(), ArchiveConfig::default());
    let sender = archive.sender();
    for lsn in 0..3 {
        send_logged(&sender, position(1, 0, lsn), MAY_1);
    }
    send_logged(&sender, position(1, 1, 0), MAY_2);

    let watermark = sender
        .barrier()
        .expect("queue barrier")
        .wait_timeout(WAIT_LIMIT)
        .expect("barrier commits");

    assert_eq!(watermark.next_lsn(1, 0), 3);
    assert_eq!(watermark.next_lsn(1, 1), 1);
    assert_eq!(state_watermark(&dir.archive()), watermark);
    assert_eq!(archive.watermark(), watermark);
    assert_eq!(parquet_files(&dir.archive()).len(), 2);
    assert!(in_progress_files(&dir.archive()).is_empty());
    assert_eq!(archive.rows_written(), 4);
    archive.close().expect("close archive");
}

#[test]
fn barrier_with_nothing_open_replies_at_once() {
    let dir = TestDir::new("idle-barrier");
    archive_with_one_file(&dir.archive());
    let archive = spawn(&dir.archive(), ArchiveConfig::default());

    let watermark = archive
        .sender()
        .barrier()
        .expect("queue barrier")
        .wait_timeout(WAIT_LIMIT)
        .expect("barrier replies");

    assert_eq!(watermark.next_lsn(1, 0), 3);
    assert_eq!(archive.files_closed(), 0);
    assert_eq!(parquet_files(&dir.archive()).len(), 1);
    archive.close().expect("close archive");
}

#[test]
fn barrier_after_close_reports_stopped_writer() {
    let dir = TestDir::new("closed-barrier");
    let archive = spawn(&dir.archive(), ArchiveConfig::default());
    let sender = archive.sender();
    archive.close().expect("close archive");

    let error = sender.barrier().expect_err("writer is closed");

    assert!(
        matches!(error, ArchiveBarrierError::WriterStopped),
        "{error:?}"
    );
}

/// A row whose partition folder path is a regular file is lost. The watermark stops below
/// it, barriers fail, and later rows of its log wait in the log until a restart.
#[test]
fn lost_row_stops_watermark_until_restart() {
    let dir = TestDir::new("lost-row");
    fs::create_dir_all(dir.archive()).expect("create archive directory");
    let blocker = dir.archive().join("date=2024-05-02");
    fs::write(&blocker, b"not a folder").expect("write blocking file");
    let archive = spawn(&dir.archive(), ArchiveConfig::default());
    let sender = archive.sender();

    send_logged(&sender, position(1, 0, 0), MAY_1);
    send_logged(&sender, position(1, 0, 1), MAY_2);
    send_logged(&sender, position(1, 0, 2), MAY_1);
    send_logged(&sender, position(1, 1, 0), MAY_1);
    let error = sender
        .barrier()
        .expect("queue barrier")
        .wait_timeout(WAIT_LIMIT)
        .expect_err("lsn 1 of log (1, 0) is lost");

    let ArchiveBarrierError::RowsNotArchived {
        unfinished_files,
        lost_from,
        watermark,
    } = error
    else {
        panic!("expected RowsNotArchived, got {error:?}");
    };
    assert!(unfinished_files.is_empty(), "{unfinished_files:?}");
    assert_eq!(lost_from, vec![position(1, 0, 1)]);
    assert_eq!(watermark.next_lsn(1, 0), 1);
    assert_eq!(watermark.next_lsn(1, 1), 1);
    assert_eq!(state_watermark(&dir.archive()), watermark);
    let close_error = archive.close().expect_err("rows are missing");
    assert!(
        matches!(
            close_error,
            ArchiveError::Incomplete {
                rows_not_archived: 2,
                ..
            }
        ),
        "{close_error:?}"
    );

    // The operator removes the blocking file and restarts. The service re-sends the log.
    fs::remove_file(&blocker).expect("remove blocking file");
    let restarted = spawn(&dir.archive(), ArchiveConfig::default());
    let sender = restarted.sender();
    for lsn in 0..3 {
        send_logged(
            &sender,
            position(1, 0, lsn),
            if lsn == 1 { MAY_2 } else { MAY_1 },
        );
    }
    send_logged(&sender, position(1, 1, 0), MAY_1);
    let stats = restarted.close().expect("close restarted archive");

    assert_eq!(stats.duplicates_dropped, 2);
    assert_log_archived_once(&dir.archive(), position(1, 0, 0), 3);
    assert_log_archived_once(&dir.archive(), position(1, 1, 0), 1);
}

/// The state file cannot be written because a folder is in the way of its temporary name. The writer
/// retries until `close` makes it give up. The barrier then fails with the unfinished file and
/// the watermark stays at the last commit.
#[test]
fn failed_commit_keeps_watermark_and_fails_barrier() {
    let dir = TestDir::new("failed-commit");
    archive_with_one_file(&dir.archive());
    let archive = spawn(&dir.archive(), ArchiveConfig::default());
    let sender = archive.sender();
    for lsn in 3..6 {
        send_logged(&sender, position(1, 0, lsn), MAY_1);
    }
    let blocker = dir.archive().join("_archive_state.json.tmp");
    fs::create_dir(&blocker).expect("create blocking folder");

    let barrier = sender.barrier().expect("queue barrier");
    let close_error = archive.close().expect_err("the commit fails while closing");
    let error = barrier
        .wait_timeout(WAIT_LIMIT)
        .expect_err("the barrier's commit failed");

    let ArchiveBarrierError::RowsNotArchived {
        unfinished_files,
        lost_from,
        watermark,
    } = error
    else {
        panic!("expected RowsNotArchived, got {error:?}");
    };
    assert_eq!(unfinished_files.len(), 1, "{unfinished_files:?}");
    assert!(
        unfinished_files[0].exists(),
        "the sealed file stays on disk"
    );
    assert_eq!(lost_from, vec![position(1, 0, 3)]);
    assert_eq!(watermark.next_lsn(1, 0), 3);
    assert_eq!(state_watermark(&dir.archive()).next_lsn(1, 0), 3);
    assert!(
        matches!(
            close_error,
            ArchiveError::Incomplete {
                rows_not_archived: 3,
                ..
            }
        ),
        "{close_error:?}"
    );

    // After the blocking folder is gone, a restart deletes the unfinished file and the
    // re-sent rows are archived once.
    fs::remove_dir(&blocker).expect("remove blocking folder");
    let restarted = spawn(&dir.archive(), ArchiveConfig::default());
    assert_eq!(restarted.recovery().deleted_files, unfinished_files);
    let sender = restarted.sender();
    for lsn in 0..6 {
        send_logged(&sender, position(1, 0, lsn), MAY_1);
    }
    restarted.close().expect("close restarted archive");
    assert_log_archived_once(&dir.archive(), position(1, 0, 0), 6);
}
