use std::convert::Infallible;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use super::super::{
    CheckpointManifest, LogError, ReplayFrom, SnapshotEntry, WorkerCheckpoint, checkpoint_dir,
    create_checkpoint_dir, latest_checkpoint, next_checkpoint_id, read_snapshot,
    remove_checkpoints_except, snapshot_path, write_snapshot,
};
use super::{expect_corrupt, replay_all, shadow_at};
use crate::dataflow::ShadowVersion;
use crate::shadow::ShadowKey;

/// Returns entries with every kind of key and value: classic and named shadows, with and
/// without a client token, and a tombstone.
fn sample_entries() -> Vec<(ShadowKey, Option<Arc<ShadowVersion>>, u64)> {
    vec![
        (
            ShadowKey::classic("lamp"),
            Some(ShadowVersion::new(
                shadow_at(3, "on"),
                1_700_000_000_123,
                None,
            )),
            0,
        ),
        (
            ShadowKey::named("lamp", "$package"),
            Some(ShadowVersion::new(
                shadow_at(9, "eco"),
                -5,
                Some("token-1".to_owned()),
            )),
            4,
        ),
        (ShadowKey::classic("gone"), None, 17),
    ]
}

fn write_entries(path: &Path, entries: &[(ShadowKey, Option<Arc<ShadowVersion>>, u64)]) -> u64 {
    let stats = write_snapshot(
        path,
        entries
            .iter()
            .map(|(key, live, deleted)| (key, live.as_deref(), *deleted)),
    )
    .expect("write snapshot");
    assert_eq!(stats.entries, entries.len() as u64);
    assert_eq!(stats.bytes, fs::metadata(path).expect("metadata").len());
    stats.bytes
}

fn read_entries(path: &Path) -> Result<Vec<SnapshotEntry>, LogError> {
    let mut entries = Vec::new();
    let count = read_snapshot(path, |entry| {
        entries.push(entry);
        Ok::<(), Infallible>(())
    })?;
    assert_eq!(count, entries.len() as u64);
    Ok(entries)
}

#[test]
fn snapshot_round_trips_live_and_deleted_shadows() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("worker-0000.snap");
    let original = sample_entries();
    write_entries(&path, &original);
    assert!(!dir.path().join("worker-0000.snap.tmp").exists());

    let read = read_entries(&path).expect("read");
    assert_eq!(read.len(), original.len());
    for (entry, (key, live, deleted_version)) in read.iter().zip(&original) {
        assert_eq!(&entry.key, key);
        assert_eq!(entry.deleted_version, *deleted_version, "{key:?}");
        match (&entry.live, live) {
            (None, None) => {}
            (Some(read), Some(written)) => {
                assert_eq!(read.shadow, written.shadow, "{key:?}");
                assert_eq!(read.updated_at_ms, written.updated_at_ms, "{key:?}");
                assert_eq!(read.client_token, written.client_token, "{key:?}");
            }
            (read, written) => panic!("{key:?}: read {read:?}, wrote {written:?}"),
        }
    }
}

#[test]
fn empty_snapshot_round_trips() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("worker-0000.snap");
    assert_eq!(write_entries(&path, &[]), 12 + 16, "header and trailer");
    assert!(read_entries(&path).expect("read").is_empty());
}

#[test]
fn snapshot_replaces_an_older_file() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("worker-0000.snap");
    write_entries(&path, &sample_entries());
    write_entries(&path, &sample_entries()[2..]);
    assert_eq!(read_entries(&path).expect("read").len(), 1);
}

#[test]
fn every_damaged_byte_is_corruption() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("worker-0001.snap");
    write_entries(&path, &sample_entries());
    let bytes = fs::read(&path).expect("read");

    for index in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[index] ^= 0x04;
        fs::write(&path, &damaged).expect("write");
        let (error_path, offset, reason) = expect_corrupt(read_entries(&path));
        assert_eq!(error_path, path, "byte {index}");
        assert!(
            offset <= index as u64,
            "byte {index}: offset {offset}, {reason}"
        );
    }
}

#[test]
fn every_truncation_is_corruption() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("worker-0001.snap");
    write_entries(&path, &sample_entries());
    let bytes = fs::read(&path).expect("read");

    for len in 0..bytes.len() {
        fs::write(&path, &bytes[..len]).expect("write");
        expect_corrupt(read_entries(&path));
    }
}

#[test]
fn bytes_after_the_trailer_are_corruption() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("worker-0001.snap");
    let len = write_entries(&path, &sample_entries());
    let mut bytes = fs::read(&path).expect("read");
    bytes.extend_from_slice(&[0; 3]);
    fs::write(&path, &bytes).expect("write");

    let (_, offset, reason) = expect_corrupt(read_entries(&path));
    assert_eq!(offset, len - 16, "the trailer's offset");
    assert!(
        reason.contains("3 unexpected bytes follow the trailer"),
        "{reason}"
    );
}

#[test]
fn invalid_shadow_json_is_corruption() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("worker-0001.snap");
    write_entries(&path, &sample_entries()[..1]);
    let mut bytes = fs::read(&path).expect("read");
    // Replace the JSON's final `}` and fix the frame checksum, so only the JSON is wrong.
    let frame_end = bytes.len() - 16;
    bytes[frame_end - 1] = b' ';
    let crc = crc32fast::hash(&bytes[12 + 8..frame_end]);
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    fs::write(&path, &bytes).expect("write");

    let (_, offset, reason) = expect_corrupt(read_entries(&path));
    assert_eq!(offset, 12);
    assert!(reason.starts_with("invalid shadow JSON"), "{reason}");
}

fn manifest(id: u64, workers: &[u32]) -> CheckpointManifest {
    CheckpointManifest {
        id,
        generation: 4,
        workers: workers
            .iter()
            .map(|&worker| WorkerCheckpoint {
                worker,
                next_lsn: 100 + u64::from(worker),
                entries: 0,
            })
            .collect(),
        created_at_ms: 1_700_000_000_000,
    }
}

/// Writes a complete checkpoint with empty snapshots.
fn write_checkpoint(checkpoints: &Path, id: u64, workers: &[u32]) -> std::path::PathBuf {
    let dir = create_checkpoint_dir(checkpoints, id).expect("create folder");
    for &worker in workers {
        write_entries(&snapshot_path(&dir, worker), &[]);
    }
    manifest(id, workers).write(&dir).expect("write manifest");
    dir
}

#[test]
fn manifest_round_trips_and_gives_replay_start() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let original = manifest(7, &[0, 2]);
    original.write(dir.path()).expect("write");
    let read = CheckpointManifest::read(dir.path()).expect("read");
    assert_eq!(read, original);
    assert_eq!(
        read.replay_from(),
        ReplayFrom {
            generation: 4,
            next_lsn: [(0, 100), (2, 102)].into_iter().collect(),
        }
    );
    let json = fs::read_to_string(dir.path().join("MANIFEST")).expect("read json");
    assert!(json.contains(r#""format_version": 1"#), "{json}");
}

#[test]
fn latest_checkpoint_skips_incomplete_folders() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let checkpoints = dir.path().join("checkpoints");
    assert!(
        latest_checkpoint(&checkpoints)
            .expect("no folder")
            .is_none()
    );

    write_checkpoint(&checkpoints, 2, &[0, 1]);
    let newest = write_checkpoint(&checkpoints, 3, &[0, 1]);
    // Checkpoint 4 crashed before its manifest.
    let incomplete = create_checkpoint_dir(&checkpoints, 4).expect("create");
    write_entries(&snapshot_path(&incomplete, 0), &[]);

    let (found, found_dir) = latest_checkpoint(&checkpoints)
        .expect("read")
        .expect("found");
    assert_eq!(found, manifest(3, &[0, 1]));
    assert_eq!(found_dir, newest);
    assert_eq!(next_checkpoint_id(&checkpoints).expect("next id"), 5);
}

#[test]
fn next_checkpoint_id_starts_at_one() {
    let dir = tempfile::tempdir().expect("temporary folder");
    assert_eq!(
        next_checkpoint_id(&dir.path().join("missing")).expect("next id"),
        1
    );
    assert_eq!(next_checkpoint_id(dir.path()).expect("next id"), 1);
    assert_eq!(
        checkpoint_dir(dir.path(), 12),
        dir.path().join("0000000012")
    );
}

#[test]
fn unparsable_manifest_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let checkpoint = write_checkpoint(dir.path(), 1, &[0]);
    let manifest_path = checkpoint.join("MANIFEST");
    fs::write(&manifest_path, b"{\"id\": 1,").expect("damage manifest");

    let error = latest_checkpoint(dir.path()).expect_err("invalid");
    let message = error.to_string();
    assert!(
        matches!(&error, LogError::InvalidCheckpoint { path, .. } if *path == manifest_path),
        "{error:?}"
    );
    assert!(
        message.contains(&manifest_path.display().to_string()),
        "{message}"
    );
}

#[test]
fn manifest_with_a_missing_snapshot_is_an_error() {
    let dir = tempfile::tempdir().expect("temporary folder");
    write_checkpoint(dir.path(), 1, &[0]);
    let checkpoint = write_checkpoint(dir.path(), 2, &[0, 1]);
    let missing = snapshot_path(&checkpoint, 1);
    fs::remove_file(&missing).expect("remove snapshot");

    let error = latest_checkpoint(dir.path()).expect_err("missing snapshot");
    assert!(
        matches!(&error, LogError::InvalidCheckpoint { path, .. } if *path == missing),
        "{error:?}"
    );
}

#[test]
fn manifest_of_another_id_is_an_error() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let checkpoint = create_checkpoint_dir(dir.path(), 5).expect("create");
    manifest(6, &[]).write(&checkpoint).expect("write");
    let error = latest_checkpoint(dir.path()).expect_err("wrong id");
    assert!(error.to_string().contains("names checkpoint 6"), "{error}");
}

#[test]
fn removal_keeps_the_given_and_newer_complete_checkpoints() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let older = write_checkpoint(dir.path(), 1, &[0]);
    let older_incomplete = create_checkpoint_dir(dir.path(), 2).expect("create");
    let kept_checkpoint = write_checkpoint(dir.path(), 3, &[0]);
    let newer_incomplete = create_checkpoint_dir(dir.path(), 4).expect("create");
    let newer = write_checkpoint(dir.path(), 5, &[0]);
    fs::write(dir.path().join("notes.txt"), b"x").expect("other file");

    let removed = remove_checkpoints_except(dir.path(), 3).expect("remove");
    assert_eq!(removed, 3);
    assert!(!older.exists());
    assert!(!older_incomplete.exists());
    assert!(!newer_incomplete.exists());
    assert!(kept_checkpoint.exists());
    assert!(newer.exists());
    assert!(dir.path().join("notes.txt").exists());
}

#[test]
fn checkpoint_without_log_recovers() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let checkpoints = dir.path().join("checkpoints");
    let checkpoint = create_checkpoint_dir(&checkpoints, 1).expect("create");
    write_entries(&snapshot_path(&checkpoint, 0), &sample_entries());
    manifest(1, &[0])
        .write(&checkpoint)
        .expect("write manifest");

    let (found, found_dir) = latest_checkpoint(&checkpoints)
        .expect("read")
        .expect("found");
    let entries = read_entries(&snapshot_path(&found_dir, 0)).expect("read snapshot");
    assert_eq!(entries.len(), 3);
    let (report, visited) =
        replay_all(&dir.path().join("wal"), Some(&found.replay_from())).expect("replay");
    assert!(visited.is_empty());
    assert_eq!(report.max_generation, 0);
}
