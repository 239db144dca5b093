//! File-system steps that make new files and names durable.
//!
//! On Linux a new or renamed file survives a crash only once both its data and the directory
//! entry that names it are synced, so every creation, rename and removal here ends with an
//! `fsync` of the parent directory.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::error::with_path;

/// Syncs a directory so that entries created, renamed or removed in it survive a crash.
///
/// Like [`list_dir`], it returns the OS error as it is, and callers add the path.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Syncs a directory like [`sync_dir`], with an error message that names it.
pub(crate) fn sync_dir_named(dir: &Path) -> io::Result<()> {
    sync_dir(dir).map_err(|error| with_path(error, "syncing folder", dir))
}

/// Returns the directory that contains `path`, or `.` for a bare file name.
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Returns `path` with `.tmp` appended, where a file is written before it is renamed.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".tmp");
    PathBuf::from(name)
}

/// Renames the synced file `tmp` to `path` and syncs the directory, replacing any old `path`.
pub(crate) fn rename_durably(tmp: &Path, path: &Path) -> io::Result<()> {
    fs::rename(tmp, path).map_err(|error| with_path(error, "renaming into place", path))?;
    sync_dir_named(parent_dir(path))
}

/// Lists the names in `dir`, or nothing when `dir` does not exist.
pub(crate) fn list_dir(dir: &Path) -> io::Result<Vec<(OsString, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        names.push((entry.file_name(), entry.path()));
    }
    Ok(names)
}
