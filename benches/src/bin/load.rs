//! `load`: drives `shadowflow serve` over MQTT with simulated devices and reports accepted
//! updates per second and ack latency.
//!
//! Prints the report as one JSON line on stdout and one line for people on stderr. See
//! `shadowflow_benches::load` for what is measured, and `--help` for the flags.

use anyhow::Context;
use clap::Parser;
use shadowflow_benches::load::{self, LoadConfig};

/// MQTT load generator for shadowflow: devices `load-N` publish shadow updates at QoS 0 or 1
/// and time their `/update/accepted` and `/update/delta` replies.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: LoadConfig,
}

fn main() -> anyhow::Result<()> {
    let config = Cli::parse().config;
    let broker = config.validate()?;
    let runtime = if config.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads)
            .enable_all()
            .build()
    }
    .context("starting the tokio runtime")?;

    let report = runtime.block_on(load::run(&config, broker))?;
    println!("{}", report.to_json_line());
    eprintln!("{}", report.to_human_line());
    Ok(())
}
