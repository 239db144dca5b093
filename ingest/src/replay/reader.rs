//! Streaming reader over the CSV files of one data set.
//!
//! [`DatasetReader`] expands folders into their CSV files, checks every file's header before
//! the first row is returned, and then yields one [`ReplayRow`] per data row in file order.
//! Files are read record by record, so memory use does not grow with file size. A file whose
//! first two bytes are the gzip magic number (`1f 8b`) is decompressed whatever its name,
//! and concatenated gzip members are read as one stream.
//!
//! It does not publish anything, so it can also feed other consumers, such as tests that
//! push a data set straight into the pipeline.
//!
//! # Notes
//!
//! - A folder contributes the files directly inside it whose names end in `.csv` or
//!   `.csv.gz` (ASCII case ignored), sorted by file name. Subfolders are not searched.
//! - A malformed record (wrong field count, invalid UTF-8) is returned as a row with
//!   [`SkipReason::MalformedRecord`]. An I/O or gzip error ends the iteration with an error,
//!   because the rest of that file cannot be trusted.
//!
//! # Example
//!
//! ```no_run
//! use ingest::replay::{Dataset, DatasetReader};
//!
//! let reader = DatasetReader::open(&["data/beijing".into()], Dataset::Beijing)?;
//! for row in reader.with_limit(Some(10)) {
//!     let row = row?;
//!     println!("{}:{} -> {:?}", row.path.display(), row.line, row.outcome);
//! }
//! # Ok::<(), ingest::replay::ReplayError>(())
//! ```

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use csv::StringRecord;
use flate2::bufread::MultiGzDecoder;

use super::dataset::{Dataset, RowMapper, SkipReason, ThingUpdate};
use super::error::ReplayError;

/// First two bytes of every gzip member (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// One data row of an input file and what it maps to.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayRow {
    /// File the row came from.
    pub path: Arc<Path>,

    /// Line in that file where the record starts, counting the header as line 1.
    pub line: u64,

    /// Position of the row among all data rows read so far, from 1.
    pub row_number: u64,

    /// Updates of the row, or why it yields none.
    pub outcome: Result<Vec<ThingUpdate>, SkipReason>,
}

/// Iterator over the data rows of a list of CSV files, in order.
pub struct DatasetReader {
    dataset: Dataset,
    files: Vec<PathBuf>,
    pending: VecDeque<PathBuf>,
    current: Option<OpenFile>,
    rows_read: u64,
    limit: Option<u64>,
}

struct OpenFile {
    path: Arc<Path>,
    reader: csv::Reader<Box<dyn Read + Send>>,
    mapper: RowMapper,
    record: StringRecord,
}

impl DatasetReader {
    /// Expands `paths` into files and checks that each one has the data set's columns.
    ///
    /// # Errors
    ///
    /// Returns [`ReplayError::Open`] for a path that cannot be opened,
    /// [`ReplayError::NoInputFiles`] for a folder without CSV files, [`ReplayError::Read`]
    /// for a header that cannot be read, and [`ReplayError::MissingColumn`] for a file of
    /// another data set.
    pub fn open(paths: &[PathBuf], dataset: Dataset) -> Result<Self, ReplayError> {
        let files = expand_paths(paths)?;
        for file in &files {
            open_file(file, dataset)?;
        }
        Ok(Self {
            dataset,
            pending: files.iter().cloned().collect(),
            files,
            current: None,
            rows_read: 0,
            limit: None,
        })
    }

    /// Stops after `limit` data rows, skipped rows included. `None` reads every row.
    pub fn with_limit(mut self, limit: Option<u64>) -> Self {
        self.limit = limit;
        self
    }

    /// Returns the input files in the order they are read.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Returns the data set the files are read as.
    pub fn dataset(&self) -> Dataset {
        self.dataset
    }

    /// Reads the next record, opening the next file when one ends.
    fn next_row(&mut self) -> Result<Option<ReplayRow>, ReplayError> {
        loop {
            let file = match &mut self.current {
                Some(file) => file,
                None => match self.pending.pop_front() {
                    Some(path) => self.current.insert(open_file(&path, self.dataset)?),
                    None => return Ok(None),
                },
            };

            let outcome = match file.reader.read_record(&mut file.record) {
                Ok(true) => {
                    let line = file.record.position().map_or(0, |position| position.line());
                    Ok((line, file.mapper.map_row(&file.record)))
                }
                Ok(false) => {
                    self.current = None;
                    continue;
                }
                Err(error) if error.is_io_error() => Err(ReplayError::Read {
                    path: file.path.to_path_buf(),
                    source: error,
                }),
                Err(error) => {
                    let line = error.position().map_or(0, |position| position.line());
                    Ok((line, Err(SkipReason::MalformedRecord)))
                }
            };
            let (line, outcome) = outcome?;
            self.rows_read += 1;
            return Ok(Some(ReplayRow {
                path: Arc::clone(&file.path),
                line,
                row_number: self.rows_read,
                outcome,
            }));
        }
    }
}

impl Iterator for DatasetReader {
    type Item = Result<ReplayRow, ReplayError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.limit.is_some_and(|limit| self.rows_read >= limit) {
            return None;
        }
        match self.next_row() {
            Ok(row) => row.map(Ok),
            Err(error) => {
                // Stop after an I/O error instead of reading on from a broken stream.
                self.current = None;
                self.pending.clear();
                Some(Err(error))
            }
        }
    }
}

/// Expands folders into their `*.csv` and `*.csv.gz` files, sorted by name.
///
/// # Errors
///
/// Returns [`ReplayError::Open`] for a path that cannot be read, and
/// [`ReplayError::NoInputFiles`] for a folder without matching files.
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ReplayError> {
    let mut files = Vec::new();
    for path in paths {
        let open_error = |source| ReplayError::Open {
            path: path.clone(),
            source,
        };
        let metadata = std::fs::metadata(path).map_err(open_error)?;
        if !metadata.is_dir() {
            files.push(path.clone());
            continue;
        }

        let mut found = Vec::new();
        for entry in std::fs::read_dir(path).map_err(open_error)? {
            let entry_path = entry.map_err(open_error)?.path();
            if entry_path.is_file() && is_csv_name(&entry_path) {
                found.push(entry_path);
            }
        }
        if found.is_empty() {
            return Err(ReplayError::NoInputFiles { path: path.clone() });
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

fn is_csv_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
        return false;
    };
    let name = name.to_ascii_lowercase();
    name.ends_with(".csv") || name.ends_with(".csv.gz")
}

/// Opens a file, decompressing it if it starts with the gzip magic number.
fn open_input(path: &Path) -> std::io::Result<Box<dyn Read + Send>> {
    let mut buffered = BufReader::new(File::open(path)?);
    let is_gzip = buffered.fill_buf()?.starts_with(&GZIP_MAGIC);
    if is_gzip {
        Ok(Box::new(MultiGzDecoder::new(buffered)))
    } else {
        Ok(Box::new(buffered))
    }
}

/// Opens a CSV file and builds its row mapper from the header.
fn open_file(path: &Path, dataset: Dataset) -> Result<OpenFile, ReplayError> {
    let input = open_input(path).map_err(|source| ReplayError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    // With the default CRLF terminator, csv 1.4 reports the line of a record in a CRLF file
    // one too low, because the `\n` of the previous terminator is read as part of the next
    // record. Splitting on `\n` alone keeps line numbers right, and the `\r` left at the end
    // of the last field is removed where cells are trimmed.
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(input);
    let headers = reader.headers().map_err(|source| ReplayError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mapper = dataset
        .row_mapper(headers)
        .map_err(|column| ReplayError::MissingColumn {
            path: path.to_path_buf(),
            column,
            dataset,
        })?;
    Ok(OpenFile {
        path: Arc::from(path),
        reader,
        mapper,
        record: StringRecord::new(),
    })
}

#[cfg(test)]
mod tests;
