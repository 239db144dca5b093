//! `monolith`: the classic design of a shadow service (one locked map of shadows, one SQLite
//! commit per update) behind shadowflow's MQTT topics, for comparisons with the same load.
//!
//! Prints one ready line on stdout once it is subscribed, logs to stderr, and on SIGINT or
//! SIGTERM handles the requests it has received, disconnects and prints its counts on stdout.
//! See `shadowflow_benches::monolith` for the design, and `--help` for the flags.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use shadowflow_benches::monolith::{Monolith, MonolithConfig};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// mimalloc, as in the service: both allocate per update, so the allocator is part of the figure.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Reference shadow service for benchmarks: one Mutex<HashMap> of shadows and one SQLite
/// commit per update, on the AWS IoT shadow topics.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: MonolithConfig,
}

fn main() -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rumqttc=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let config = Cli::parse().config;
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(&config))
}

async fn run(config: &MonolithConfig) -> anyhow::Result<()> {
    // Installed first, so a signal during start-up also stops the monolith cleanly.
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let monolith = Monolith::start(config).await?;
    println!("{}", monolith.ready_line());

    tokio::select! {
        _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "stop requested"),
        _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "stop requested"),
    }
    let summary = monolith.shutdown().await;
    println!("{}", summary.to_line());
    Ok(())
}
