//! The `shadowflow` command: runs the shadow service and replays device data sets.
//!
//! # Layout
//! - `config`: the `serve` settings, from a TOML file and command-line flags.
//! - `serve`: wiring of broker, dataflow, MQTT, HTTP and archive, and graceful shutdown.
//! - `replay`: the `replay` subcommand.

mod config;
mod replay;
mod serve;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// mimalloc: the service allocates on every update, and glibc malloc took a third of the
/// dataflow's CPU with a million shadows.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Device shadows compatible with AWS IoT Device Shadow, kept in a timely/differential dataflow.
#[derive(Debug, Parser)]
#[command(name = "shadowflow", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the shadow service: MQTT shadow topics, HTTP API and Parquet history.
    Serve(config::ServeArgs),
    /// Publish a device data set over MQTT, one shadow update per CSV row.
    Replay(replay::ReplayArgs),
}

fn main() -> ExitCode {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rumqttc=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let cli = Cli::parse();
    // Test builds read injected faults from `FAILPOINTS`; other builds have none.
    let _faults = pipeline::faults::FaultScenario::from_env();
    if pipeline::faults::FaultScenario::enabled() {
        tracing::warn!("this build can inject faults from FAILPOINTS; do not run it in production");
    }
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Replay(args) => replay::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
