//! `shadowflow replay`: publishes a device data set over MQTT, one shadow update per CSV row.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use ingest::replay::{self, BrokerAddress, Dataset, ReplayConfig};

/// Flags of `replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// CSV files or folders of CSV files, plain or gzipped.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Data set the files belong to: beijing, chicago or occupancy.
    #[arg(long, value_name = "NAME")]
    pub dataset: Dataset,
    /// Broker to publish to.
    #[arg(long, value_name = "URL", default_value = "mqtt://127.0.0.1:1883")]
    pub mqtt: BrokerAddress,
    /// Rows per second; omit to publish as fast as the broker acknowledges.
    #[arg(long, value_name = "N")]
    pub rate: Option<f64>,
    /// Stop after this many rows.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
}

/// Runs the replay and prints its summary on stdout.
pub fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let config = ReplayConfig::new(args.paths, args.dataset)
        .with_broker(args.mqtt)
        .with_rate(args.rate)
        .with_limit(args.limit);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let summary = runtime.block_on(replay::run(config))?;
    println!("{summary}");
    Ok(())
}
