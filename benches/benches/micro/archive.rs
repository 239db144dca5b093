//! Benchmark of the Parquet archive writer: one row group of history rows, written, footed and
//! synced by a real `ArchiveWriter` in a temporary folder.

use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, Throughput};
use ingest::replay::Dataset;
use pipeline::history::HistoryRow;
use shadowflow_benches::archive::replay::{
    UpdatePayload, dataset_folder, datasets_root, history_rows, read_updates,
};
use shadowflow_benches::archive::write_archive;
use sinks::parquet_archive::{ArchiveConfig, DEFAULT_ROW_GROUP_ROWS};

use crate::inputs::synthetic_document;

/// Rows per iteration: one full row group.
const ROWS: usize = DEFAULT_ROW_GROUP_ROWS;

/// `ArchiveWriter`: spawn, send one row group of rows, close. Throughput in rows.
///
/// The rows are the first history rows of the Beijing data set, or synthetic 1 KB rows of 16
/// things when the data set is not found. Each iteration includes the writer's fixed costs:
/// recovery of the empty folder, creating the file, the footer, two `fsync`s of the file and
/// state file, and the renames. On a 2-core VM those took a few ms of the 170 to 260 ms that
/// one iteration took.
pub fn write(c: &mut Criterion) {
    let (slug, rows) = archive_rows();
    let data_root = std::env::temp_dir();

    let mut group = c.benchmark_group("sinks::parquet_archive::write");
    // One write takes about a quarter of a second, so take 10 samples of one write each.
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(rows.len() as u64));
    group.bench_function(slug, |b| {
        b.iter_batched(
            || {
                let folder = tempfile::Builder::new()
                    .prefix("micro-archive-")
                    .tempdir_in(&data_root)
                    .expect("create a temporary folder");
                (folder, rows.clone())
            },
            |(folder, rows)| {
                write_archive(folder.path(), rows, ArchiveConfig::default())
                    .expect("archive write succeeds");
                folder
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

fn archive_rows() -> (&'static str, Vec<HistoryRow>) {
    let folder = dataset_folder(&datasets_root(), Dataset::Beijing);
    if folder.is_dir() {
        match read_updates(&folder, Dataset::Beijing, Some(ROWS as u64))
            .and_then(|updates| history_rows(&updates, 23_400))
        {
            Ok(rows) => return ("beijing", rows),
            Err(error) => eprintln!("using synthetic archive rows: {error:#}"),
        }
    } else {
        eprintln!(
            "using synthetic archive rows: {} not found (set SHADOWFLOW_DATASETS)",
            folder.display()
        );
    }
    let updates: Vec<UpdatePayload> = (0..ROWS as u64)
        .map(|index| UpdatePayload {
            thing_name: format!("synthetic-{:02}", index % 16),
            payload: shadowflow_benches::archive::replay::encode_reported(
                synthetic_document(1024, index),
                &format!("bench-{index}"),
            ),
        })
        .collect();
    let rows = history_rows(&updates, 23_400).expect("synthetic rows apply");
    ("synthetic-1k", rows)
}
