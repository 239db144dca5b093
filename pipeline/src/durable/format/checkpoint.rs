//! Checkpoint folders and the manifest that completes them.
//!
//! A checkpoint `id` is the folder `{id:010}` in the checkpoints folder, with one snapshot per
//! worker, `worker-{worker:04}.snap`, and a `MANIFEST` written last. A folder without a
//! `MANIFEST` is a checkpoint that was still being written, and recovery ignores it. The
//! snapshot format is in `snapshot`.
//!
//! # Notes
//!
//! - The manifest is JSON: the fields of [`CheckpointManifest`] plus `"format_version": 1`.
//!   Unknown fields are ignored, so a newer writer may add fields.
//! - A `MANIFEST` that lists a snapshot file that does not exist makes [`latest_checkpoint`]
//!   fail instead of falling back to an older checkpoint. A fallback would silently lose the
//!   updates between the two checkpoints once the write-ahead log segments they were in have
//!   been removed.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::debug;

use super::error::{LogError, with_path};
use super::fs::{list_dir, rename_durably, sync_dir_named, tmp_path};
use super::replay::ReplayFrom;

/// File name of the manifest in a checkpoint folder.
pub const MANIFEST_FILE_NAME: &str = "MANIFEST";

const MANIFEST_FORMAT_VERSION: u32 = 1;

/// Contents of a checkpoint's `MANIFEST`: what the checkpoint covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointManifest {
    /// Checkpoint id, equal to the folder name; ids increase.
    pub id: u64,

    /// Generation of the service that took the checkpoint.
    pub generation: u64,

    /// One entry per worker, each with its own snapshot file.
    pub workers: Vec<WorkerCheckpoint>,

    /// When the checkpoint was completed, in milliseconds since the Unix epoch (UTC).
    pub created_at_ms: i64,
}

/// The part of a checkpoint written by one worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCheckpoint {
    /// Worker index.
    pub worker: u32,

    /// Lsn of the first record of the worker's log in the manifest's generation that the
    /// snapshot does not contain.
    pub next_lsn: u64,

    /// Number of entries in the worker's snapshot.
    pub entries: u64,
}

impl CheckpointManifest {
    /// Returns where log replay starts on top of this checkpoint.
    pub fn replay_from(&self) -> ReplayFrom {
        ReplayFrom {
            generation: self.generation,
            next_lsn: self
                .workers
                .iter()
                .map(|worker| (worker.worker, worker.next_lsn))
                .collect(),
        }
    }

    /// Writes this manifest as the `MANIFEST` of `checkpoint_dir`, which completes the
    /// checkpoint.
    ///
    /// Call it after every snapshot of the checkpoint is written. The manifest goes to a
    /// temporary file that is synced and renamed, and the folder is synced, so a crash leaves
    /// either no `MANIFEST` or a complete one.
    ///
    /// # Errors
    ///
    /// Fails, naming the file, when writing, syncing or renaming fails.
    pub fn write(&self, checkpoint_dir: &Path) -> io::Result<()> {
        let path = checkpoint_dir.join(MANIFEST_FILE_NAME);
        let tmp = tmp_path(&path);
        let file = ManifestFile {
            format_version: MANIFEST_FORMAT_VERSION,
            manifest: self,
        };
        let mut json = serde_json::to_vec_pretty(&file).map_err(io::Error::from)?;
        json.push(b'\n');
        File::create(&tmp)
            .and_then(|mut file| {
                file.write_all(&json)?;
                file.sync_all()
            })
            .map_err(|error| with_path(error, "writing checkpoint manifest", &tmp))?;
        rename_durably(&tmp, &path)
    }

    /// Reads the `MANIFEST` of `checkpoint_dir`.
    ///
    /// # Errors
    ///
    /// Returns [`LogError::InvalidCheckpoint`] when the manifest is not valid JSON of a
    /// supported format version or lists a worker twice, and [`LogError::Io`] when it cannot be
    /// read.
    pub fn read(checkpoint_dir: &Path) -> Result<Self, LogError> {
        let path = checkpoint_dir.join(MANIFEST_FILE_NAME);
        let invalid = |reason| LogError::InvalidCheckpoint {
            path: path.clone(),
            reason,
        };
        let json = fs::read(&path)
            .map_err(|error| LogError::io("reading checkpoint manifest", &path, error))?;
        let file: ManifestFile<CheckpointManifest> = serde_json::from_slice(&json)
            .map_err(|error| invalid(format!("the JSON does not parse ({error})")))?;
        if file.format_version != MANIFEST_FORMAT_VERSION {
            return Err(invalid(format!(
                "unsupported manifest format version {}; this build reads version \
                 {MANIFEST_FORMAT_VERSION}",
                file.format_version
            )));
        }
        let mut workers = BTreeSet::new();
        if let Some(duplicate) = file
            .manifest
            .workers
            .iter()
            .find(|w| !workers.insert(w.worker))
        {
            return Err(invalid(format!(
                "worker {} is listed twice",
                duplicate.worker
            )));
        }
        Ok(file.manifest)
    }
}

/// On-disk form of the manifest, with its format version.
#[derive(Serialize, Deserialize)]
struct ManifestFile<M> {
    format_version: u32,
    #[serde(flatten)]
    manifest: M,
}

/// Returns the folder of checkpoint `id`.
pub fn checkpoint_dir(checkpoints_dir: &Path, id: u64) -> PathBuf {
    checkpoints_dir.join(format!("{id:010}"))
}

/// Returns the path of `worker`'s snapshot in a checkpoint folder.
pub fn snapshot_path(checkpoint_dir: &Path, worker: u32) -> PathBuf {
    checkpoint_dir.join(format!("worker-{worker:04}.snap"))
}

/// Creates the folder of checkpoint `id`, and the checkpoints folder if needed, and syncs the
/// checkpoints folder so the new name survives a crash. Returns the new folder.
///
/// # Errors
///
/// Fails, naming the folder, when it already exists or cannot be created or synced.
pub fn create_checkpoint_dir(checkpoints_dir: &Path, id: u64) -> io::Result<PathBuf> {
    fs::create_dir_all(checkpoints_dir)
        .map_err(|error| with_path(error, "creating checkpoints folder", checkpoints_dir))?;
    let dir = checkpoint_dir(checkpoints_dir, id);
    fs::create_dir(&dir).map_err(|error| with_path(error, "creating checkpoint folder", &dir))?;
    sync_dir_named(checkpoints_dir)?;
    Ok(dir)
}

/// Finds the newest complete checkpoint in `checkpoints_dir` and returns its manifest and
/// folder, or `None` when there is none.
///
/// Folders without a `MANIFEST` are skipped as incomplete. A missing `checkpoints_dir` has no
/// checkpoints.
///
/// # Errors
///
/// Returns [`LogError::InvalidCheckpoint`] when the newest `MANIFEST` is invalid (see
/// [`CheckpointManifest::read`]), names another id than its folder, or lists a snapshot file
/// that does not exist. [`LogError::Io`] names the file or folder that cannot be read.
pub fn latest_checkpoint(
    checkpoints_dir: &Path,
) -> Result<Option<(CheckpointManifest, PathBuf)>, LogError> {
    let ids = checkpoint_ids(checkpoints_dir)
        .map_err(|error| LogError::io("listing checkpoints folder", checkpoints_dir, error))?;
    for (id, dir) in ids.into_iter().rev() {
        if !has_manifest(&dir).map_err(|error| LogError::io("reading", &dir, error))? {
            debug!(checkpoint = %dir.display(), "skipping checkpoint without a manifest");
            continue;
        }
        let manifest = CheckpointManifest::read(&dir)?;
        if manifest.id != id {
            return Err(LogError::InvalidCheckpoint {
                path: dir.join(MANIFEST_FILE_NAME),
                reason: format!("it names checkpoint {}, not the folder's {id}", manifest.id),
            });
        }
        for worker in &manifest.workers {
            let path = snapshot_path(&dir, worker.worker);
            match fs::metadata(&path) {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    return Err(LogError::InvalidCheckpoint {
                        path,
                        reason: format!("the file is missing, but {MANIFEST_FILE_NAME} lists it"),
                    });
                }
                Err(error) => {
                    return Err(LogError::io("reading checkpoint snapshot", &path, error));
                }
            }
        }
        return Ok(Some((manifest, dir)));
    }
    Ok(None)
}

/// Removes every checkpoint folder older than `keep_id`, and every other folder without a
/// `MANIFEST`, and returns how many were removed.
///
/// Call it only while no checkpoint is being written, because that checkpoint has no
/// `MANIFEST` yet. Each removal deletes the `MANIFEST` first and syncs, so a crash in the middle
/// leaves an incomplete folder, which recovery ignores, and not a damaged checkpoint.
///
/// # Errors
///
/// Fails, naming the folder, when listing, removing or syncing fails. Folders removed before the
/// failure stay removed.
pub fn remove_checkpoints_except(checkpoints_dir: &Path, keep_id: u64) -> io::Result<usize> {
    let mut removed = 0;
    for (id, dir) in checkpoint_ids(checkpoints_dir)? {
        if id == keep_id {
            continue;
        }
        let complete = has_manifest(&dir).map_err(|error| with_path(error, "reading", &dir))?;
        if id > keep_id && complete {
            continue;
        }
        if complete {
            let manifest = dir.join(MANIFEST_FILE_NAME);
            fs::remove_file(&manifest)
                .map_err(|error| with_path(error, "removing checkpoint manifest", &manifest))?;
            sync_dir_named(&dir)?;
        }
        fs::remove_dir_all(&dir)
            .map_err(|error| with_path(error, "removing checkpoint folder", &dir))?;
        removed += 1;
    }
    if removed > 0 {
        sync_dir_named(checkpoints_dir)?;
    }
    Ok(removed)
}

/// Returns the id for a new checkpoint: one more than the highest checkpoint folder, complete
/// or not, or 1 when there is none.
///
/// # Errors
///
/// Fails, naming the folder, when it exists but cannot be listed.
pub fn next_checkpoint_id(checkpoints_dir: &Path) -> io::Result<u64> {
    let highest = checkpoint_ids(checkpoints_dir)?
        .last()
        .map_or(0, |(id, _)| *id);
    Ok(highest.saturating_add(1))
}

/// Lists the checkpoint folders in `checkpoints_dir` by ascending id. Other names are ignored.
fn checkpoint_ids(checkpoints_dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let names = list_dir(checkpoints_dir)
        .map_err(|error| with_path(error, "listing checkpoints folder", checkpoints_dir))?;
    let mut ids: Vec<(u64, PathBuf)> = names
        .into_iter()
        .filter_map(|(name, path)| {
            let name = name.to_str()?;
            let id: u64 = name.parse().ok()?;
            // Only the canonical spelling is a checkpoint, so two folders never share an id.
            (checkpoint_dir(Path::new(""), id).as_os_str() == name && path.is_dir())
                .then_some((id, path))
        })
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

fn has_manifest(dir: &Path) -> io::Result<bool> {
    match fs::metadata(dir.join(MANIFEST_FILE_NAME)) {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    }
}
