//! The two yardsticks of an archive: the same rows as JSON lines, and an independent read-back.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use pipeline::history::HistoryRow;

/// A writer that only counts bytes.
struct ByteCounter(u64);

impl Write for ByteCounter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0 += bytes.len() as u64;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Returns the size in bytes of `rows` as JSON lines: one compact JSON object per row with the
/// archive's column names, each followed by a newline. Every column is present (nulls
/// included), `accepted_at` is in epoch ms, and the JSON columns are embedded as JSON, not as
/// strings that hold JSON, which is the smaller and usual form.
///
/// # Errors
/// Fails when a JSON column does not hold valid JSON.
pub fn json_lines_bytes(rows: &[HistoryRow]) -> anyhow::Result<u64> {
    let mut counter = ByteCounter(0);
    for row in rows {
        write_json_line(&mut counter, row)
            .with_context(|| format!("encoding a JSON line of {}", row.thing_name))?;
    }
    Ok(counter.0)
}

/// Writes one row as a JSON line.
fn write_json_line(out: &mut impl Write, row: &HistoryRow) -> anyhow::Result<()> {
    let text = |value: Option<&str>| match value {
        Some(value) => serde_json::to_string(value),
        None => Ok("null".to_owned()),
    };
    let json = |column: &'static str, value: Option<&str>| -> anyhow::Result<String> {
        match value {
            Some(value) => {
                serde_json::from_str::<serde::de::IgnoredAny>(value)
                    .with_context(|| format!("column {column} contains invalid JSON"))?;
                Ok(value.to_owned())
            }
            None => Ok("null".to_owned()),
        }
    };
    writeln!(
        out,
        "{{\"thing_name\":{},\"shadow_name\":{},\"change\":\"{}\",\"version\":{},\
         \"accepted_at\":{},\"origin\":\"{}\",\"client_token\":{},\"request_state\":{},\
         \"desired\":{},\"reported\":{},\"delta\":{}}}",
        text(Some(&row.thing_name))?,
        text(row.shadow_name.as_deref())?,
        row.change.as_str(),
        row.version,
        row.accepted_at_ms,
        row.origin.as_str(),
        text(row.client_token.as_deref())?,
        json("request_state", row.request_state.as_deref())?,
        json("desired", row.desired.as_deref())?,
        json("reported", row.reported.as_deref())?,
        json("delta", row.delta.as_deref())?,
    )?;
    Ok(())
}

/// Findings of the read-back of an archive folder.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReadBack {
    /// Finished `.parquet` files under the `date=` folders.
    pub files: u64,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Rows decoded from them, every column.
    pub rows: u64,
    /// Row groups in their footers.
    pub row_groups: u64,
    /// Encodings of each column chunk, from the first file's first row group, as
    /// `column: ENCODING,...`.
    pub column_encodings: Vec<String>,
}

/// Decodes every row of every finished `.parquet` file under `directory` with the `parquet`
/// crate's Arrow reader, independently of the archive's own reader.
///
/// # Errors
/// Fails when a folder or file cannot be read or a file is not valid Parquet.
pub fn read_back(directory: &Path) -> anyhow::Result<ReadBack> {
    let mut report = ReadBack::default();
    for path in parquet_files(directory)? {
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        report.bytes += file.metadata()?.len();
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .with_context(|| format!("reading the footer of {}", path.display()))?;
        let metadata = Arc::clone(builder.metadata());
        report.row_groups += metadata.num_row_groups() as u64;
        if report.files == 0
            && let Some(group) = metadata.row_groups().first()
        {
            report.column_encodings = group
                .columns()
                .iter()
                .map(|column| {
                    let encodings: Vec<String> = column
                        .encodings()
                        .map(|encoding| format!("{encoding:?}"))
                        .collect();
                    format!("{}: {}", column.column_path(), encodings.join(","))
                })
                .collect();
        }
        for batch in builder
            .build()
            .with_context(|| format!("decoding {}", path.display()))?
        {
            let batch = batch.with_context(|| format!("decoding {}", path.display()))?;
            report.rows += batch.num_rows() as u64;
        }
        report.files += 1;
    }
    Ok(report)
}

/// Lists the finished files, `date=*/*.parquet`, in name order.
fn parquet_files(directory: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let entries =
        std::fs::read_dir(directory).with_context(|| format!("listing {}", directory.display()))?;
    for partition in entries {
        let partition = partition?.path();
        let is_partition = partition
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("date="));
        if !is_partition || !partition.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&partition)? {
            let file = file?.path();
            if file
                .extension()
                .is_some_and(|extension| extension == "parquet")
            {
                files.push(file);
            }
        }
    }
    files.sort();
    Ok(files)
}
