//! Commits of archive files: seal a group of open files, replace the state file, rename them.
//!
//! A commit makes a group of open files part of the archive in four steps:
//!
//! 1. Compute the watermark that applies once the group is committed.
//! 2. Seal every file: write its footer with that watermark in the key-value metadata and sync
//!    it, still under its in-progress name.
//! 3. Replace the state file with the new watermark and the group's final names. This is the
//!    commit point.
//! 4. Rename every file to its final name and sync its partition folder.
//!
//! A failure in steps 2 or 3 fails the whole group: the watermark stays, the in-progress files
//! stay on disk unfinished, and the next start deletes them because the state file does not
//! list them. A failure in step 4 comes after the commit point, so the files are committed
//! anyway. They stay listed in the state file and the next commit retries their rename and
//! folder sync. If the process stops first, the next start finishes them.
//!
//! [`group_of`] picks the group: the file being closed and every open file that shares a log
//! with it, see `LogRanges::shares_log_with`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tracing::{error, info};

use super::file::{OpenFile, SealedFile, rename_to_final, sync_directory};
use super::io_retry::Shared;
use super::state::{ArchiveState, relative_entry, write_state};
use super::watermark::{ArchiveWatermark, LogRanges};
use crate::error::ArchiveError;

/// Commits groups of files in one archive directory and keeps the committed watermark.
#[derive(Debug)]
pub(super) struct Committer {
    directory: PathBuf,
    /// Watermark of the latest commit that reached the state file.
    watermark: ArchiveWatermark,
    /// Committed files whose rename or folder sync has not succeeded yet. Every state file
    /// lists them until both succeed, so that a start finishes them.
    unconfirmed: Vec<SealedFile>,
}

/// Rows, paths and log positions of a group of files, kept to report them if the group cannot
/// be committed.
#[derive(Debug)]
pub(super) struct FileGroup {
    /// Rows in the group's files.
    pub(super) rows: u64,
    /// In-progress paths of the group's files.
    pub(super) in_progress_paths: Vec<PathBuf>,
    /// Log positions of the group's rows, one entry per file.
    pub(super) log_ranges: Vec<LogRanges>,
}

impl FileGroup {
    /// Describes `files`.
    pub(super) fn of(files: &[OpenFile]) -> Self {
        Self {
            rows: files.iter().map(OpenFile::rows).sum(),
            in_progress_paths: files
                .iter()
                .map(|file| file.in_progress_path().to_path_buf())
                .collect(),
            log_ranges: files.iter().map(|file| file.log_ranges().clone()).collect(),
        }
    }
}

/// A group of files whose commit failed, so none of their rows is archived. Their in-progress
/// files stay on disk unfinished.
#[derive(Debug)]
pub(super) struct CommitFailure {
    pub(super) group: FileGroup,
    pub(super) error: ArchiveError,
}

impl Committer {
    /// Creates a committer for `directory` whose state file contains `watermark`.
    pub(super) fn new(directory: PathBuf, watermark: ArchiveWatermark) -> Self {
        Self {
            directory,
            watermark,
            unconfirmed: Vec::new(),
        }
    }

    /// Watermark of the latest commit that reached the state file.
    pub(super) fn watermark(&self) -> &ArchiveWatermark {
        &self.watermark
    }

    /// Final paths of committed files whose rename or folder sync has not succeeded yet.
    pub(super) fn unconfirmed_paths(&self) -> Vec<PathBuf> {
        self.unconfirmed
            .iter()
            .map(|file| file.paths.final_path.clone())
            .collect()
    }

    /// Commits `files` as one group, in the steps of the module docs.
    ///
    /// # Errors
    ///
    /// Returns every file's rows and paths if sealing a file or writing the state file failed.
    /// The watermark is then unchanged.
    pub(super) fn commit(
        &mut self,
        files: Vec<OpenFile>,
        shared: &Shared,
    ) -> Result<(), Box<CommitFailure>> {
        let mut watermark = self.watermark.clone();
        for file in &files {
            watermark.advance(file.log_ranges());
        }
        let watermark_json = serde_json::to_string(&watermark)
            .expect("a watermark has only integers, which always serialize");

        // Seal every file. Describe the group first, because sealing consumes the files.
        let group = FileGroup::of(&files);
        let mut sealed = Vec::with_capacity(files.len());
        for file in files {
            match file.seal(&watermark_json, shared) {
                Ok(file) => sealed.push(file),
                Err(error) => return Err(Box::new(CommitFailure { group, error })),
            }
        }

        // Replace the state file: the commit point.
        let committing = self
            .unconfirmed
            .iter()
            .chain(&sealed)
            .map(|file| relative_entry(&self.directory, &file.paths.final_path))
            .collect();
        let state = ArchiveState::new(watermark.clone(), committing);
        if let Err(error) = write_state(&self.directory, &state, shared) {
            return Err(Box::new(CommitFailure { group, error }));
        }
        self.watermark = watermark;
        shared.set_watermark(self.watermark.clone());

        self.unconfirmed.extend(sealed);
        self.finish_unconfirmed(shared);
        Ok(())
    }

    /// Renames the committed files and syncs their folders, keeping those that fail for the
    /// next commit.
    fn finish_unconfirmed(&mut self, shared: &Shared) {
        let mut still_unconfirmed = Vec::new();
        for mut file in std::mem::take(&mut self.unconfirmed) {
            if let Err(error) = finish_committed(&mut file, shared) {
                error!(
                    path = %file.paths.final_path.display(),
                    renamed = file.renamed,
                    error = &error as &dyn std::error::Error,
                    "committed archive file not finished, the next commit or start retries it"
                );
                still_unconfirmed.push(file);
            }
        }
        self.unconfirmed = still_unconfirmed;
    }
}

/// Returns `date` and the dates of all files in `open_files` that share a log with its file,
/// directly or through other files of the group.
pub(super) fn group_of(open_files: &BTreeMap<String, OpenFile>, date: &str) -> Vec<String> {
    let mut group = vec![date.to_owned()];
    // Each pass adds at least one file or ends the search, so it needs at most one pass per
    // open file.
    for _ in 0..open_files.len() {
        let joining: Vec<String> = open_files
            .iter()
            .filter(|(candidate, _)| !group.contains(candidate))
            .filter(|(_, candidate)| {
                group.iter().any(|member| {
                    open_files.get(member).is_some_and(|member| {
                        member.log_ranges().shares_log_with(candidate.log_ranges())
                    })
                })
            })
            .map(|(candidate, _)| candidate.clone())
            .collect();
        if joining.is_empty() {
            break;
        }
        group.extend(joining);
    }
    group
}

/// Renames a committed file to its final name unless it has it already, counts it as closed,
/// and syncs its partition folder.
fn finish_committed(file: &mut SealedFile, shared: &Shared) -> Result<(), ArchiveError> {
    if !file.renamed {
        rename_to_final(&file.paths, shared)?;
        file.renamed = true;
        // Readers find the rows in the renamed file from now on, see `reader.rs`.
        shared.index.remove_file(&file.paths.in_progress_path);
        shared.counters.record_file_closed(file.rows, file.bytes);
        info!(
            path = %file.paths.final_path.display(),
            rows = file.rows,
            bytes = file.bytes,
            "closed archive file"
        );
    }

    let partition = file.paths.final_path.parent().unwrap_or(Path::new("."));
    sync_directory(partition).inspect_err(|_| shared.counters.record_io_error())
}
