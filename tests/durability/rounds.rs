//! Rounds of the crash suite: generations of the service under load on one data directory,
//! each ended by kill -9, some restarts also killed during recovery.

use std::sync::Arc;
use std::time::Duration;

use crate::harness::{
    Context, client_violations, expect_recovered, fail, interrupted_start, recovery_line,
    send_sigterm, start_with_workers, stop_and_check_history,
};
use crate::ledger::{Ledger, ShadowId};
use crate::load::{ClientPlan, Load, Protocol, panic_message};
use crate::rng::{Rng, SEED_VARIABLE};

/// Kills under load per round. Each restart reuses the round's data directory, so the log
/// accumulates.
pub const KILLS_PER_ROUND: u32 = 3;

/// Minimum time between the start of the load and the kill.
const MIN_KILL_DELAY: Duration = Duration::from_millis(50);

/// Maximum time between the start of the load and the kill. With a checkpoint interval of 1 s
/// and archive files that close after 1 s, kills up to 3 s after the start also land during
/// checkpoints and log truncation.
const MAX_KILL_DELAY: Duration = Duration::from_millis(3000);

/// Chance in percent that a restart is first killed during start-up.
const INTERRUPTED_START_PERCENT: u64 = 50;

/// Maximum time between spawning an interrupted start and its kill. A debug build on a 2-core
/// VM took about 30 to 50 ms from spawn to ready, so about half of the kills land in recovery.
const MAX_INTERRUPTED_START_DELAY: Duration = Duration::from_millis(40);

/// Chance in percent that a kill under load comes shortly after SIGTERM, during shutdown.
const KILL_DURING_SHUTDOWN_PERCENT: u64 = 25;

/// Maximum time between SIGTERM and the kill of a shutdown that is cut short.
const MAX_SHUTDOWN_BEFORE_KILL: Duration = Duration::from_millis(100);

/// Returns three MQTT devices and two HTTP apps of two threads each. Every client owns four
/// shadows, classic and named, and the HTTP apps also read the devices' shadows.
pub fn client_plans() -> Vec<ClientPlan> {
    let mut plans = Vec::new();
    for device in 0..3 {
        let name = format!("device{device}");
        let shadows = vec![
            ShadowId::classic(&format!("{name}-a")),
            ShadowId::classic(&format!("{name}-b")),
            ShadowId::named(&format!("{name}-a"), "config"),
            ShadowId::named(&format!("{name}-b"), "firmware"),
        ];
        plans.push(ClientPlan {
            name,
            protocol: Protocol::Mqtt,
            shadows,
            read_shadows: Vec::new(),
        });
    }

    let device_shadows: Vec<ShadowId> =
        plans.iter().flat_map(|plan| plan.shadows.clone()).collect();
    for app in 0..2 {
        for thread in 0..2 {
            let name = format!("app{app}-thread{thread}");
            let shadows = vec![
                ShadowId::classic(&format!("{name}-a")),
                ShadowId::classic(&format!("{name}-b")),
                ShadowId::named(&format!("{name}-a"), "config"),
                ShadowId::named(&format!("{name}-a"), "schedule"),
            ];
            plans.push(ClientPlan {
                name,
                protocol: Protocol::Http,
                shadows,
                read_shadows: device_shadows.clone(),
            });
        }
    }
    plans
}

/// Counts of one round, for the suite's summary line.
#[derive(Debug, Default)]
pub struct RoundSummary {
    /// Kills under load.
    pub kills: u32,
    /// Kills during start-up.
    pub interrupted_starts: u32,
}

/// Runs one round: [`KILLS_PER_ROUND`] generations under load, each ended by kill -9, then a
/// last start that checks the shadows, stops gracefully and checks the history. Generation `g`
/// runs `workers[g - 1]` dataflow workers. `flags` are the `serve` flags.
///
/// # Panics
///
/// Panics with the seed and round when a check or a step fails.
pub fn run_crash_round(
    seed: u64,
    round: u32,
    flags: &[String],
    workers: &[usize],
    rng: &mut Rng,
) -> RoundSummary {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_crash_round_unchecked(seed, round, flags, workers, rng)
    }));
    match result {
        Ok(summary) => summary,
        Err(panic) => {
            let message = panic_message(panic.as_ref());
            if message.contains(SEED_VARIABLE) {
                std::panic::resume_unwind(panic);
            }
            panic!("seed {seed} ({SEED_VARIABLE}={seed}), round {round}: {message}");
        }
    }
}

/// Runs one round for [`run_crash_round`], which adds the seed to panics that lack it.
fn run_crash_round_unchecked(
    seed: u64,
    round: u32,
    flags: &[String],
    workers: &[usize],
    rng: &mut Rng,
) -> RoundSummary {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let ledger = Arc::new(Ledger::default());
    let plans = client_plans();
    let mut previous_stderr = String::new();
    let mut summary = RoundSummary::default();

    for generation in 1..=KILLS_PER_ROUND + 1 {
        let context = Context {
            seed,
            round,
            generation,
        };
        let workers = workers[generation as usize - 1];

        // Sometimes crash the restart while it recovers.
        if generation > 1 && rng.chance(INTERRUPTED_START_PERCENT) {
            let delay = rng.duration_between(Duration::ZERO, MAX_INTERRUPTED_START_DELAY);
            let (phase, stderr) = interrupted_start(flags, &data_dir, workers, delay);
            println!(
                "{context}: start killed after {} ms, phase {phase:?}",
                delay.as_millis()
            );
            summary.interrupted_starts += 1;
            previous_stderr.push_str(&stderr);
        }

        // Check what the restart recovered, and probe that versions continue.
        let mut service = start_with_workers(flags, &data_dir, workers);
        if generation > 1 {
            (service, _) =
                expect_recovered(service, &ledger, generation, &context, &previous_stderr);
        }

        // The last start stops gracefully and checks the history.
        if generation == KILLS_PER_ROUND + 1 {
            let stderr = stop_and_check_history(service, &ledger, &context, &previous_stderr);
            print_recovery(&context, &stderr);
            return summary;
        }

        // Drive the service and kill it at a random moment, sometimes during shutdown.
        let load = Load::start(&service, &plans, &ledger, generation, rng);
        let delay = rng.duration_between(MIN_KILL_DELAY, MAX_KILL_DELAY);
        std::thread::sleep(delay);
        let mut crash = format!("kill -9 {} ms into the load", delay.as_millis());
        if rng.chance(KILL_DURING_SHUTDOWN_PERCENT) {
            let grace = rng.duration_between(Duration::ZERO, MAX_SHUTDOWN_BEFORE_KILL);
            send_sigterm(&service);
            std::thread::sleep(grace);
            crash = format!(
                "SIGTERM {} ms into the load, kill -9 {} ms later",
                delay.as_millis(),
                grace.as_millis()
            );
        }
        let stderr = service.kill();
        let reports = load.stop();
        summary.kills += 1;

        let violations = client_violations(&reports);
        if !violations.is_empty() {
            fail(&context, "in the responses", &violations, &[&stderr]);
        }
        let rejected: Vec<&String> = reports.iter().flat_map(|report| &report.rejected).collect();
        let (sent, accepted) = ledger.counts(generation);
        let observed: u64 = reports.iter().map(|report| report.observed).sum();
        println!(
            "{context}: {crash}; {sent} requests, {accepted} acknowledged, {observed} documents \
             and reads seen, {} rejected {:?}",
            rejected.len(),
            rejected.iter().take(3).collect::<Vec<_>>()
        );
        print_recovery(&context, &stderr);
        previous_stderr = stderr;
    }
    summary
}

/// Prints the recovery log line of a service, if it has one.
fn print_recovery(context: &Context, stderr: &str) {
    if context.generation > 1 {
        let line = recovery_line(stderr).unwrap_or("no recovery line in stderr");
        println!("{context}: {line}");
    }
}
