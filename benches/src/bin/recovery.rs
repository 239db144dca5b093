//! `recovery`: writes a large data folder as the service leaves it and times its recovery.
//!
//! For each variant it writes a fresh folder under `--data-root`, then recovers it `--runs`
//! times, each in a fresh child process so that the peak memory is recovery's alone. With a
//! cold cache, the folder's pages are dropped from the page cache before each run. Prints one
//! JSON line per variant and cache state on stdout and one line for people on stderr.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use serde::Serialize;
use shadowflow_benches::process::evict_from_page_cache;
use shadowflow_benches::recovery::{
    ArchivedChanges, FolderSpec, FolderStats, RecoveryRun, measure_once, median_run,
    write_data_folder,
};

/// mimalloc, as in the service: both allocate per update, so the allocator is part of the figure.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Times shadowflow's start-up recovery on a synthetic data folder.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Number of shadows (sensors).
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    shadows: u64,

    /// Number of write-ahead log records.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    log_records: u64,

    /// Data folders to build and recover.
    #[arg(long, value_enum, default_value_t = Variant::Both)]
    variant: Variant,

    /// Dataflow workers: one snapshot and one log per worker.
    #[arg(long, value_name = "N", default_value_t = 2)]
    workers: u32,

    /// Recoveries per variant and cache state; the report gives the median.
    #[arg(long, value_name = "N", default_value_t = 3)]
    runs: u32,

    /// Logged changes the history archive contains. With none, recovery rebuilds a history
    /// row per log record.
    #[arg(long, value_enum, default_value_t = ArchivedChanges::None)]
    archived: ArchivedChanges,

    /// Page cache state before each recovery.
    #[arg(long, value_enum, default_value_t = CacheState::Both)]
    cache: CacheState,

    /// Folder in which the data folders are made [default: the system's temporary folder].
    /// It should be on the disk the service would use, not a tmpfs.
    #[arg(long, value_name = "DIR")]
    data_root: Option<PathBuf>,

    /// Keep the data folders instead of deleting them.
    #[arg(long)]
    keep: bool,

    /// Internal: recover DIR once and print the result as JSON.
    #[arg(long, value_name = "DIR", hide = true)]
    measure_once: Option<PathBuf>,
}

/// Data folders to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Variant {
    /// A checkpoint of every shadow and the log records after it.
    Checkpoint,
    /// Only a log, whose first record of each shadow creates it.
    LogOnly,
    /// Both, one after the other.
    Both,
}

/// Page cache state before a recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
enum CacheState {
    /// The folder's pages stay cached, as after a process crash.
    Warm,
    /// The folder's pages are dropped, as after a reboot.
    Cold,
    /// Warm runs, then cold runs.
    Both,
}

impl CacheState {
    /// Returns the name the flag uses.
    fn name(self) -> &'static str {
        match self {
            CacheState::Warm => "warm",
            CacheState::Cold => "cold",
            CacheState::Both => "both",
        }
    }
}

/// One JSON line of the report.
#[derive(Serialize)]
struct VariantReport<'a> {
    bench: &'static str,
    variant: &'static str,
    shadows: u64,
    log_records: u64,
    workers: u32,
    archived: ArchivedChanges,
    cache: CacheState,
    snapshot_bytes: u64,
    wal_bytes: u64,
    segments: u64,
    runs_seconds: Vec<f64>,
    median: &'a RecoveryRun,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(data_dir) = &cli.measure_once {
        let run = measure_once(data_dir, cli.workers as usize, cli.archived)?;
        println!("{}", serde_json::to_string(&run)?);
        return Ok(());
    }
    anyhow::ensure!(cli.runs >= 1, "invalid --runs 0: pass 1 or more");
    let data_root = cli.data_root.clone().unwrap_or_else(std::env::temp_dir);
    let variants: &[(bool, &str)] = match cli.variant {
        Variant::Checkpoint => &[(true, "checkpoint+log")],
        Variant::LogOnly => &[(false, "log-only")],
        Variant::Both => &[(true, "checkpoint+log"), (false, "log-only")],
    };
    for &(checkpoint, name) in variants {
        let folder = tempfile::Builder::new()
            .prefix("shadowflow-recovery-")
            .tempdir_in(&data_root)
            .with_context(|| format!("creating a data folder in {}", data_root.display()))?;
        let spec = FolderSpec {
            shadows: cli.shadows,
            log_records: cli.log_records,
            checkpoint,
            workers: cli.workers,
        };
        eprintln!("{name}: writing {} ...", folder.path().display());
        let stats = write_data_folder(folder.path(), spec)?;
        eprintln!(
            "{name}: wrote {:.0} MB of snapshots and {:.0} MB of log in {} segments in {:.1} s",
            stats.snapshot_bytes as f64 / 1e6,
            stats.wal_bytes as f64 / 1e6,
            stats.segments,
            stats.duration.as_secs_f64()
        );
        let caches: &[CacheState] = match cli.cache {
            CacheState::Both => &[CacheState::Warm, CacheState::Cold],
            CacheState::Warm => &[CacheState::Warm],
            CacheState::Cold => &[CacheState::Cold],
        };
        for &cache in caches {
            report_variant(&cli, name, spec, &stats, cache, folder.path())?;
        }
        if cli.keep {
            eprintln!("{name}: kept {}", folder.keep().display());
        }
    }
    Ok(())
}

/// Recovers `folder` `--runs` times and prints the median.
fn report_variant(
    cli: &Cli,
    name: &'static str,
    spec: FolderSpec,
    stats: &FolderStats,
    cache: CacheState,
    folder: &Path,
) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for _ in 0..cli.runs {
        if cache == CacheState::Cold {
            evict_from_page_cache(folder).context("dropping the folder from the page cache")?;
        }
        runs.push(recover_in_child(folder, cli.workers, cli.archived)?);
    }
    let median = median_run(&runs).expect("at least one run");
    let report = VariantReport {
        bench: "recovery",
        variant: name,
        shadows: spec.shadows,
        log_records: spec.log_records,
        workers: spec.workers,
        archived: cli.archived,
        cache,
        snapshot_bytes: stats.snapshot_bytes,
        wal_bytes: stats.wal_bytes,
        segments: stats.segments,
        runs_seconds: runs.iter().map(|run| run.seconds).collect(),
        median,
    };
    println!("{}", serde_json::to_string(&report)?);
    let times: Vec<String> = runs
        .iter()
        .map(|run| format!("{:.2}", run.seconds))
        .collect();
    eprintln!(
        "{name}, {} cache: recovered {} shadows ({} from the checkpoint, {} log records) \
         in {:.2} s, median of [{}] s; peak RSS {:.2} GiB; {} history rows rebuilt",
        cache.name(),
        median.shadows,
        median.checkpoint_entries,
        median.log_records,
        median.seconds,
        times.join(", "),
        median.peak_rss_bytes as f64 / (1u64 << 30) as f64,
        median.unarchived,
    );
    Ok(())
}

/// Runs this binary with `--measure-once` on `folder` and parses its result.
fn recover_in_child(
    folder: &Path,
    workers: u32,
    archived: ArchivedChanges,
) -> anyhow::Result<RecoveryRun> {
    let exe = std::env::current_exe().context("finding this program's path")?;
    let archived = archived
        .to_possible_value()
        .expect("every value has a name")
        .get_name()
        .to_owned();
    let output = Command::new(exe)
        .arg("--measure-once")
        .arg(folder)
        .args(["--workers", &workers.to_string(), "--archived", &archived])
        .output()
        .context("starting the recovery child process")?;
    if !output.status.success() {
        bail!(
            "the recovery child process failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "parsing the recovery child's output {:?}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}
