//! MQTT load generator: simulated devices that report state and time the service's replies.
//!
//! Device `n` is thing `load-{n}` and uses connection `n % connections`. A run connects and
//! subscribes every connection first, then starts the clock: updates go out for the warm-up
//! plus the measured time (or until `--max-requests`), then the generator waits up to
//! `--drain-secs` for outstanding replies and disconnects. Only replies to updates sent after
//! the warm-up enter the latency histograms, and only accepted replies that arrive between the
//! end of the warm-up and the end of sending count towards the throughput.
//!
//! Against a shadow service (`--target shadow`, the default) every device first sets a
//! desired value that its reports never contain, so every accepted report also produces an
//! `/update/delta`, and the generator times both. Against a bare broker with a subscriber
//! (`--target relay`) each connection subscribes to its own update topics, and the reply is
//! the broker's relayed copy of the update.
//!
//! # Notes
//! - Latency is measured on the generator's clock, from just before the update is handed to
//!   rumqttc (closed loop) or from its scheduled time (open loop) to the arrival of
//!   `/update/accepted` (or the relayed copy) and of `/update/delta`. It includes MQTT in both
//!   directions, the broker and the service's durability wait.
//! - In closed-loop mode an update keeps its in-flight slot until it has both replies.
//! - Open-loop updates of all connections leave from one pacing thread (see `pacer`), which
//!   sleeps and then spins to each scheduled time instead of using tokio's 1 ms timer
//!   (`--pacer tokio` uses that timer, for less CPU). How late they still leave is part of the
//!   open-loop latency, and the report shows it separately (`send_lag_p99_us`).
//!
//! # Example
//!
//! ```text
//! load --broker 127.0.0.1:1883 --devices 1000 --connections 8 --mode closed --in-flight 32
//! load --broker 127.0.0.1:1883 --mode open --rate 10000 --qos 0
//! ```

mod config;
mod connection;
mod pacer;
mod replies;
mod report;
mod token;

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;

pub use config::{LoadConfig, LoadConfigError, LoopMode, Pacer, Target};
pub use report::LoadReport;
pub use token::ClientToken;

use connection::{
    Budget, Clock, Connection, ConnectionHandles, ConnectionOptions, ConnectionStats, Phases,
    SendPlan, next_run_number, send_updates,
};
use pacer::pace_open_loop;
use replies::handle_replies;

/// How often the drain checks whether every reply has arrived.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// Time allowed for a connection's event loop to send DISCONNECT and end.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs one load run against `broker` and returns its report.
///
/// # Errors
/// Fails when a connection cannot be set up. Errors during the run end only the connection
/// they happen on, and the report lists them.
pub async fn run(config: &LoadConfig, broker: SocketAddr) -> anyhow::Result<LoadReport> {
    let cpu_before = crate::process::cpu_seconds().context("reading the generator's CPU time")?;
    let options = ConnectionOptions {
        target: config.target,
        qos: config.mqtt_qos(),
        deltas: config.deltas,
        in_flight: config.in_flight,
        tcp_nodelay: config.tcp_nodelay,
        run: next_run_number(),
    };
    let mut connections = Vec::with_capacity(config.connections as usize);
    for index in 0..config.connections {
        let things: Vec<String> = (index..config.devices)
            .step_by(config.connections as usize)
            .map(|device| format!("load-{device}"))
            .collect();
        let connection = Connection::open(broker, index, &things, options)
            .await
            .with_context(|| {
                format!(
                    "setting up MQTT connection {index} of {}",
                    config.connections
                )
            })?;
        connections.push(connection);
    }

    let clock = Clock::start();
    let measure_from = config.warmup();
    let phases = Phases {
        measure_from_us: measure_from.as_micros() as u64,
        send_until_us: (measure_from + config.duration()).as_micros() as u64,
    };
    let budget = Arc::new(Budget::new(config.max_requests));
    let period_ns = 1_000_000_000 * u64::from(config.connections) / u64::from(config.rate);

    let mut handles: Vec<ConnectionHandles> = Vec::new();
    let mut senders = Vec::new();
    let mut paced = Vec::new();
    let mut receivers = Vec::new();
    for connection in connections {
        let handle = connection.handles;
        receivers.push(tokio::spawn(handle_replies(
            handle.index,
            connection.event_loop,
            Arc::clone(&handle.state),
            Arc::clone(&handle.permits),
            clock,
            phases,
        )));
        let plan = SendPlan {
            mode: config.mode,
            period_ns,
            offset_ns: period_ns * u64::from(handle.index) / u64::from(config.connections),
        };
        match config.mode {
            LoopMode::Open if config.pacer == Pacer::Thread => {
                paced.push((handle.clone(), plan));
            }
            LoopMode::Closed | LoopMode::Open => senders.push(tokio::spawn(send_updates(
                handle.clone(),
                plan,
                clock,
                phases,
                Arc::clone(&budget),
            ))),
        }
        handles.push(handle);
    }

    if !paced.is_empty() {
        let runtime = tokio::runtime::Handle::current();
        let budget = Arc::clone(&budget);
        tokio::task::spawn_blocking(move || {
            pace_open_loop(paced, clock, phases, &budget, &runtime);
        })
        .await
        .context("the open-loop pacer panicked")?;
    }
    for (sender, handle) in senders.into_iter().zip(&handles) {
        let result = sender.await.context("the sender task panicked")?;
        if let Err(error) = result {
            let mut state = handle.state.lock().unwrap_or_else(PoisonError::into_inner);
            state
                .stats
                .error
                .get_or_insert_with(|| format!("{error:#}"));
        }
    }
    wait_for_replies(&handles, Instant::now() + config.drain()).await;

    let mut stats: Vec<ConnectionStats> = Vec::with_capacity(handles.len());
    let mut missing = (0, 0);
    for (receiver, handle) in receivers.into_iter().zip(&handles) {
        // The event loop sends DISCONNECT and ends; a failed connection has ended already.
        let _ = handle.client.try_disconnect();
        let abort = receiver.abort_handle();
        if tokio::time::timeout(DISCONNECT_TIMEOUT, receiver)
            .await
            .is_err()
        {
            abort.abort();
        }
        let mut state = handle.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (replies, deltas) = state.missing();
        missing.0 += replies;
        missing.1 += deltas;
        stats.push(std::mem::take(&mut state.stats));
    }
    let cpu_secs = crate::process::cpu_seconds().context("reading the generator's CPU time")?;
    Ok(LoadReport::new(
        config,
        phases,
        &stats,
        missing,
        cpu_secs - cpu_before,
    ))
}

/// Waits until no update is outstanding on any connection, or until `deadline`.
async fn wait_for_replies(handles: &[ConnectionHandles], deadline: Instant) {
    loop {
        let outstanding: usize = handles
            .iter()
            .map(|handle| {
                let state = handle.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.outstanding.len()
            })
            .sum();
        if outstanding == 0 || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}
