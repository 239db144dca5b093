//! Recovery benchmark: a large synthetic data folder and the time to recover it.
//!
//! [`write_data_folder`] writes shadows and log records with the service's own file writers,
//! in the layout a crashed service leaves. [`measure_once`] then times
//! `pipeline::durable::recover` on the folder. It reads the checkpoint's snapshots, replays the
//! log after it and partitions the shadows over the workers, which is all the service does
//! before it takes requests again.
//!
//! # Layout
//! - `sensor`: the synthetic sensor fleet, thing names and JSON states.
//! - `generate`: [`write_data_folder`], the checkpoint and log writer.
//! - `measure`: [`measure_once`] and [`median_run`].

mod generate;
mod measure;
pub mod sensor;

pub use generate::{FolderSpec, FolderStats, write_data_folder};
pub use measure::{ArchivedChanges, RecoveryRun, measure_once, median_run};
