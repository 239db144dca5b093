//! `archive`: writes a real data set's history to the Parquet archive and measures it.
//!
//! It reads the data set (the whole Beijing data set by default: 420,768 rows of 12 stations),
//! applies each row to its shadow as the service does and builds the history rows. Each run
//! sends every row from one thread to a real `ArchiveWriter` in a fresh folder and closes it.
//! It then decodes the finished files again with the `parquet` crate's reader and compares
//! their size with the same rows as JSON lines. Prints one JSON line per run on stdout and a
//! summary for people on stderr.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use ingest::replay::Dataset;
use shadowflow_benches::archive::check::{json_lines_bytes, read_back};
use shadowflow_benches::archive::replay::{
    DEFAULT_ROWS_PER_SECOND, dataset_folder, datasets_root, history_rows, read_updates,
};
use shadowflow_benches::archive::write_archive;
use sinks::parquet_archive::ArchiveConfig;

/// mimalloc, as in the service: both allocate per update, so the allocator is part of the figure.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measures the Parquet history archive on the history of a real data set.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Data set to replay: beijing, chicago or occupancy.
    #[arg(long, default_value = "beijing")]
    dataset: Dataset,

    /// Folder with one subfolder per data set [default: $SHADOWFLOW_DATASETS, or
    /// ../shared/datasets/raw beside the workspace].
    #[arg(long, value_name = "DIR")]
    datasets: Option<PathBuf>,

    /// Read at most N CSV rows [default: all].
    #[arg(long, value_name = "N")]
    limit: Option<u64>,

    /// Writes of the whole history; each gets a fresh folder.
    #[arg(long, value_name = "N", default_value_t = 3)]
    runs: u32,

    /// Rows per second of the synthetic `accepted_at` clock.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_ROWS_PER_SECOND)]
    rows_per_second: u32,

    /// Archive setting `zstd_level` [default: the archive's default].
    #[arg(long, value_name = "LEVEL")]
    zstd_level: Option<i32>,

    /// Archive setting `row_group_rows` [default: the archive's default].
    #[arg(long, value_name = "N")]
    row_group_rows: Option<usize>,

    /// Folder in which the archive folders are made [default: the system's temporary folder].
    /// It should be on the disk the service would use, not a tmpfs.
    #[arg(long, value_name = "DIR")]
    data_root: Option<PathBuf>,

    /// Keep the archive folders instead of deleting them.
    #[arg(long)]
    keep: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = cli.datasets.clone().unwrap_or_else(datasets_root);
    let folder = dataset_folder(&root, cli.dataset);
    if !folder.is_dir() {
        bail!(
            "data set folder {} not found; pass --datasets DIR or set SHADOWFLOW_DATASETS",
            folder.display()
        );
    }

    let updates = read_updates(&folder, cli.dataset, cli.limit)?;
    let rows = history_rows(&updates, cli.rows_per_second)?;
    drop(updates);
    let json_bytes = json_lines_bytes(&rows)?;
    eprintln!(
        "{} history rows of {}; as JSON lines {} bytes ({:.1} bytes per row)",
        rows.len(),
        cli.dataset,
        json_bytes,
        json_bytes as f64 / rows.len() as f64
    );

    let mut config = ArchiveConfig::default();
    if let Some(level) = cli.zstd_level {
        config.zstd_level = level;
    }
    if let Some(row_group_rows) = cli.row_group_rows {
        config.row_group_rows = row_group_rows;
    }
    let data_root = cli.data_root.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&data_root)
        .with_context(|| format!("creating {}", data_root.display()))?;

    for run in 1..=cli.runs {
        let folder = tempfile::Builder::new()
            .prefix("archive-bench-")
            .tempdir_in(&data_root)
            .with_context(|| format!("creating a folder in {}", data_root.display()))?;
        let written = write_archive(folder.path(), rows.clone(), config.clone())?;
        let files = read_back(folder.path())?;
        if files.rows != written.rows {
            bail!(
                "the archive in {} has {} rows, {} were sent",
                folder.path().display(),
                files.rows,
                written.rows
            );
        }

        let ratio = json_bytes as f64 / files.bytes as f64;
        eprintln!(
            "run {run}: {:.0} rows/s per writer core ({:.2} s writer CPU, {:.2} s sender CPU), \
             {:.0} rows/s wall; {} files, {} row groups, {} bytes ({:.1} bytes per row), \
             JSON lines / Parquet = {ratio:.2}",
            written.rows_per_cpu_second(),
            written.writer_cpu.as_secs_f64(),
            written.sender_cpu.as_secs_f64(),
            written.rows_per_second(),
            files.files,
            files.row_groups,
            files.bytes,
            files.bytes as f64 / files.rows as f64,
        );
        if run == 1 {
            eprintln!("column encodings: {}", files.column_encodings.join("; "));
        }
        let line = serde_json::json!({
            "run": run,
            "dataset": cli.dataset.name(),
            "rows": written.rows,
            "writer_cpu_s": written.writer_cpu.as_secs_f64(),
            "sender_cpu_s": written.sender_cpu.as_secs_f64(),
            "wall_s": written.wall.as_secs_f64(),
            "rows_per_writer_cpu_s": written.rows_per_cpu_second(),
            "files": files.files,
            "row_groups": files.row_groups,
            "parquet_bytes": files.bytes,
            "json_lines_bytes": json_bytes,
            "json_to_parquet_ratio": ratio,
            "zstd_level": config.zstd_level,
            "row_group_rows": config.row_group_rows,
        });
        println!("{line}");
        if cli.keep {
            let kept_folder = folder.keep();
            eprintln!("kept {}", kept_folder.display());
        }
    }
    Ok(())
}
