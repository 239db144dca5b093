//! Write-ahead log segments: the writer that appends records to one segment file.
//!
//! A segment is one file of a `(generation, worker)` log. It starts with a fixed header (see
//! `header`) and continues with one frame per [`LogRecord`], whose lsns are consecutive from the
//! header's `first_lsn`. Reading segments back is in `scan`, and recovery over a folder in
//! `replay`.
//!
//! # Notes
//!
//! The writer does not use `O_DIRECT`, so written records sit in the OS page cache until
//! [`SegmentWriter::sync`]. A record is durable once `sync` has returned `Ok` after the
//! [`SegmentWriter::write`] that wrote it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::{RecordTooLarge, with_path};
use super::fs::sync_dir_named;
use super::header::{SEGMENT_HEADER_BYTES, SegmentHeader, SegmentId};
use super::record::LogRecord;

/// Appends records to one new segment file, with explicit control of writes and syncs.
///
/// Records go through three stages: [`push`](Self::push) encodes them into a pending buffer,
/// [`write`](Self::write) hands the buffer to the OS, and [`sync`](Self::sync) makes everything
/// written durable. A caller acknowledges a record only after a successful `sync`.
///
/// Design: writes use `pwrite` at the writer's own end offset, so after a failed write the file
/// is cut back with `set_len` to the end of the last successful write, and the next write starts
/// there. When cutting back fails, the file may end in a partial frame that later writes would
/// follow. Then the writer is *poisoned*: every later `write`, `sync` and `truncate_to_synced`
/// fails at once. The caller continues in a new segment from [`synced_lsn`](Self::synced_lsn).
///
/// # Memory usage
///
/// The pending buffer keeps its capacity between writes, which is the size of the largest
/// batch pushed between two writes.
#[derive(Debug)]
pub struct SegmentWriter {
    file: File,
    path: PathBuf,
    id: SegmentId,
    pending: Vec<u8>,
    /// The first pushed record that was too large to encode, which fails the next write.
    too_large: Option<RecordTooLarge>,
    /// Lsn of the next record to push, counting the pending ones.
    next_lsn: u64,
    /// File length and next lsn after the last successful write.
    written_len: u64,
    written_lsn: u64,
    /// File length and next lsn after the last successful sync.
    synced_len: u64,
    synced_lsn: u64,
    poisoned: bool,
}

impl SegmentWriter {
    /// Creates the segment `id` in `dir`, whose first record will have `first_lsn`.
    ///
    /// Writes and syncs the header, then syncs `dir` so the new name survives a crash.
    ///
    /// # Errors
    ///
    /// Fails when the file already exists or cannot be created, written or synced, with a
    /// message that names the file. A file created before the failure is removed again where
    /// possible.
    pub fn create(dir: &Path, id: SegmentId, first_lsn: u64) -> io::Result<Self> {
        let path = dir.join(id.file_name());
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|error| with_path(error, "creating write-ahead log segment", &path))?;

        let header = SegmentHeader { id, first_lsn }.encode();
        let written = file
            .write_all_at(&header, 0)
            .and_then(|()| file.sync_data())
            .map_err(|error| with_path(error, "writing the header of segment", &path))
            .and_then(|()| sync_dir_named(dir));
        if let Err(error) = written {
            // The segment contains no records yet, so removing it loses nothing. If removing
            // fails, recovery reads the file as a torn or an empty segment.
            let _ = fs::remove_file(&path);
            return Err(error);
        }
        Ok(Self::from_file(
            file,
            path,
            id,
            first_lsn,
            SEGMENT_HEADER_BYTES as u64,
        ))
    }

    /// Wraps an open file whose first `len` bytes are synced, with the next record at
    /// `next_lsn`.
    pub(crate) fn from_file(
        file: File,
        path: PathBuf,
        id: SegmentId,
        next_lsn: u64,
        len: u64,
    ) -> Self {
        SegmentWriter {
            file,
            path,
            id,
            pending: Vec::new(),
            too_large: None,
            next_lsn,
            written_len: len,
            written_lsn: next_lsn,
            synced_len: len,
            synced_lsn: next_lsn,
            poisoned: false,
        }
    }

    /// Encodes `record` into the pending buffer. Nothing reaches the file before
    /// [`write`](Self::write).
    ///
    /// `record.lsn` must equal [`next_lsn`](Self::next_lsn). Debug builds assert it, and in
    /// release builds a wrong lsn makes the segment unreadable from that record on.
    ///
    /// A record above [`MAX_RECORD_BYTES`](super::MAX_RECORD_BYTES) is not buffered. Instead
    /// the next `write` fails with [`io::ErrorKind::InvalidInput`] and drops the whole batch,
    /// because the records after it would leave a gap in the lsns.
    pub fn push(&mut self, record: &LogRecord) {
        debug_assert_eq!(
            record.lsn, self.next_lsn,
            "records must be pushed in lsn order"
        );
        if let Err(too_large) = record.encode_frame(&mut self.pending) {
            self.too_large.get_or_insert(too_large);
        }
        self.next_lsn += 1;
    }

    /// Writes the pending records to the file.
    ///
    /// # Errors
    ///
    /// Fails when the writer is poisoned, a pushed record was too large, or the OS rejects the
    /// write. Then the pending records are dropped, [`next_lsn`](Self::next_lsn) is back at the
    /// end of the last successful write, and the file is cut back there. If cutting back fails
    /// too, the writer is poisoned and the error message states it.
    pub fn write(&mut self) -> io::Result<()> {
        self.check_poisoned()?;
        if let Some(too_large) = self.too_large.take() {
            self.pending.clear();
            self.next_lsn = self.written_lsn;
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "writing write-ahead log segment {}: {too_large}",
                    self.path.display()
                ),
            ));
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        match self.file.write_all_at(&self.pending, self.written_len) {
            Ok(()) => {
                self.written_len += self.pending.len() as u64;
                self.written_lsn = self.next_lsn;
                self.pending.clear();
                Ok(())
            }
            Err(error) => {
                self.pending.clear();
                self.next_lsn = self.written_lsn;
                let error = with_path(error, "writing write-ahead log segment", &self.path);
                match self.file.set_len(self.written_len) {
                    Ok(()) => Err(error),
                    Err(cut_error) => {
                        self.poisoned = true;
                        Err(io::Error::new(
                            error.kind(),
                            format!(
                                "{error}; cutting the partial write back to byte {} also \
                                 failed ({cut_error}), so the segment takes no more writes",
                                self.written_len
                            ),
                        ))
                    }
                }
            }
        }
    }

    /// Syncs the data written so far (`fdatasync`), which makes those records durable.
    ///
    /// # Errors
    ///
    /// Fails when the writer is poisoned or the sync fails. After a failed sync the OS may have
    /// dropped written pages, so the caller calls [`truncate_to_synced`](Self::truncate_to_synced)
    /// and continues in a new segment.
    pub fn sync(&mut self) -> io::Result<()> {
        self.check_poisoned()?;
        self.file
            .sync_data()
            .map_err(|error| with_path(error, "syncing write-ahead log segment", &self.path))?;
        self.synced_len = self.written_len;
        self.synced_lsn = self.written_lsn;
        Ok(())
    }

    /// Drops every record written or pending after the last successful sync: cuts the file back,
    /// syncs it, and sets [`next_lsn`](Self::next_lsn) to [`synced_lsn`](Self::synced_lsn).
    ///
    /// # Errors
    ///
    /// Fails, and poisons the writer, when cutting or syncing fails. It also fails when the
    /// writer is already poisoned.
    pub fn truncate_to_synced(&mut self) -> io::Result<()> {
        self.check_poisoned()?;
        self.pending.clear();
        self.too_large = None;
        self.next_lsn = self.synced_lsn;
        let cut = self
            .file
            .set_len(self.synced_len)
            .and_then(|()| self.file.sync_data());
        if let Err(error) = cut {
            self.poisoned = true;
            return Err(with_path(
                error,
                "cutting write-ahead log segment back to its synced length",
                &self.path,
            ));
        }
        self.written_len = self.synced_len;
        self.written_lsn = self.synced_lsn;
        Ok(())
    }

    fn check_poisoned(&self) -> io::Result<()> {
        if !self.poisoned {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "write-ahead log segment {} takes no more writes after a failed cut-back; continue \
             in a new segment from lsn {}",
            self.path.display(),
            self.synced_lsn
        )))
    }

    /// Returns the lsn that the next pushed record must have.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Returns the lsn after the last synced record: every record below it is durable.
    pub fn synced_lsn(&self) -> u64 {
        self.synced_lsn
    }

    /// Returns the segment's id.
    pub fn id(&self) -> SegmentId {
        self.id
    }

    /// Returns the file length after the last successful write, header included.
    #[allow(
        clippy::len_without_is_empty,
        reason = "a segment always has its header, so it is never empty"
    )]
    pub fn len(&self) -> u64 {
        self.written_len
    }

    /// Returns the size of the records pushed but not yet written.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Returns the segment file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns whether a failed cut-back stopped the writer, so that it takes no more writes.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}
