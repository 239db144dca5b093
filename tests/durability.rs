//! Durability of `shadowflow serve`: acknowledged updates survive kill -9, graceful stops, a
//! full disk, and each `--durability` mode behaves as its help text describes.
//!
//! The crash suite drives the service with concurrent MQTT devices and HTTP apps and kills it at
//! seeded random moments. It restarts the service on the same data directory and checks the
//! shadows and the Parquet history against a ledger of every request and response.
//!
//! # Notes
//!
//! - The seed fixes the kill delays and every client's choices, but not the thread
//!   interleaving, so a failure may need a few runs with its seed to come back. The seed is
//!   printed at the start and in every failure message. Set `SHADOWFLOW_DURABILITY_SEED` to
//!   repeat a run.
//! - The full-disk test mounts a tmpfs, so it needs root or CAP_SYS_ADMIN. It fails, rather
//!   than passing silently, without them.

mod support;

#[path = "durability/checks.rs"]
mod checks;
#[path = "durability/disk.rs"]
mod disk;
#[path = "durability/harness.rs"]
mod harness;
#[path = "durability/ledger.rs"]
mod ledger;
#[path = "durability/load.rs"]
mod load;
#[path = "durability/rng.rs"]
mod rng;
#[path = "durability/rounds.rs"]
mod rounds;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use disk::{DiskClients, TmpfsMount};
use harness::{
    Context, WORKERS, acknowledged_updates, client_violations, expect_recovered, fail,
    recovery_line, replayed_log_records, response_topics, serve_flags, start,
    stop_and_check_history, write_config,
};
use ledger::{Ledger, Outcome, ShadowId, ShadowSummary};
use load::{HTTP_TIMEOUT, Load, http_delete};
use rng::{Rng, SEED_VARIABLE, seed_from_env};
use rounds::{KILLS_PER_ROUND, client_plans, run_crash_round};
use support::{Device, Http};

/// Rounds of the crash suite. Each round starts from an empty data directory.
const ROUNDS: u32 = 7;

/// Size of the tmpfs of the full-disk test, in MiB.
const TMPFS_MIB: u64 = 16;

/// Kill -9 at seeded random moments under concurrent MQTT and HTTP load loses no acknowledged
/// update, keeps versions contiguous, and leaves each accepted change in the history once.
#[test]
fn crash_suite_keeps_acknowledged_updates() {
    let seed = seed_from_env();
    println!("crash suite: seed {seed}; repeat with {SEED_VARIABLE}={seed}");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), 1000);
    let flags = serve_flags("sync", &config, 1);
    let workers = [WORKERS; KILLS_PER_ROUND as usize + 1];

    let started = Instant::now();
    let mut kills = 0;
    let mut interrupted_starts = 0;
    for round in 1..=ROUNDS {
        let round_started = Instant::now();
        let summary = run_crash_round(seed, round, &flags, &workers, &mut rng.fork());
        kills += summary.kills;
        interrupted_starts += summary.interrupted_starts;
        println!(
            "seed {seed} round {round}: passed in {} ms",
            round_started.elapsed().as_millis()
        );
    }
    println!(
        "crash suite: seed {seed}: {kills} kills under load and {interrupted_starts} during \
         start-up passed in {} ms",
        started.elapsed().as_millis()
    );
}

/// Each worker writes a log of its own, so recovery after kill -9 must also work when the next
/// start has a different number of workers.
#[test]
fn crash_with_other_worker_count() {
    let seed = seed_from_env();
    println!("worker count change: seed {seed}; repeat with {SEED_VARIABLE}={seed}");
    let mut rng = Rng::for_test(seed, "crash_with_other_worker_count");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), 1000);
    let flags = serve_flags("sync", &config, 1);
    run_crash_round(seed, 1, &flags, &[2, 3, 1, 2], &mut rng);
}

/// After SIGTERM the service writes a checkpoint, so the next start has every shadow,
/// tombstones included, and replays no log records.
#[test]
fn graceful_stop_replays_no_log_records() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let config = write_config(dir.path(), 60_000);
    let flags = serve_flags("sync", &config, 300);
    let ledger = Ledger::default();
    let http_shadows = [
        ShadowId::classic("graceful-app"),
        ShadowId::named("graceful-app", "config"),
    ];
    let mqtt_shadows = [
        ShadowId::classic("graceful-device"),
        ShadowId::named("graceful-device", "firmware"),
    ];
    let deleted = ShadowId::named("graceful-app", "retired");

    // Update every shadow a few times, then delete one at version 2.
    let service = start(&flags, &data_dir);
    let http = Http::with_timeout(&service.http, HTTP_TIMEOUT);
    let device = Device::connect(
        "graceful-device",
        service.mqtt_port,
        &response_topics(&mqtt_shadows),
    );
    let mqtt = Some((&device, &mqtt_shadows[..]));
    acknowledged_updates(&ledger, &http, mqtt, &http_shadows, 5, 1);
    acknowledged_updates(&ledger, &http, None, std::slice::from_ref(&deleted), 2, 1);
    let response = http_delete(&http, &ledger, "app", &deleted, 1).expect("delete over HTTP");
    assert_eq!(
        response.outcome,
        Outcome::Accepted { version: 2 },
        "delete of {deleted}"
    );
    let (status, first_stderr) = service.stop();
    assert!(
        status.success(),
        "the first service exited with {status}:\n{first_stderr}"
    );

    // Restart: every shadow is back, and the deleted one continues from version 2.
    let service = start(&flags, &data_dir);
    let (service, recovered) =
        expect_recovered(service, &ledger, 2, &"graceful stop", &first_stderr);
    assert_eq!(recovered.live, 4, "live shadows after the restart");
    assert_eq!(recovered.missing, 1, "deleted shadows after the restart");
    let requests = ledger.by_shadow();
    let summary = ShadowSummary::of(&requests[&deleted]);
    assert_eq!(
        summary.updates.keys().next_back(),
        Some(&3),
        "the update after the restart re-creates {deleted} at version 3"
    );

    // The restart found a checkpoint, so it replayed no log records.
    let stderr = stop_and_check_history(service, &ledger, &"graceful stop", &first_stderr);
    let line = recovery_line(&stderr)
        .unwrap_or_else(|| panic!("no recovery line in the restarted service's stderr:\n{stderr}"));
    println!("graceful stop: {line}");
    let records = replayed_log_records(line)
        .unwrap_or_else(|| panic!("no count of log records in the recovery line: {line}"));
    assert_eq!(
        records, 0,
        "log records replayed after a graceful stop: {line}"
    );
}

/// SIGTERM under load finishes the requests in flight and writes a checkpoint, so the next
/// start replays no log records and has every acknowledged update.
#[test]
fn graceful_stop_under_load_replays_nothing() {
    let seed = seed_from_env();
    println!("graceful stop under load: seed {seed}; repeat with {SEED_VARIABLE}={seed}");
    let mut rng = Rng::for_test(seed, "graceful_stop_under_load_replays_nothing");
    let context = Context {
        seed,
        round: 1,
        generation: 1,
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let config = write_config(dir.path(), 1000);
    let flags = serve_flags("sync", &config, 1);
    let ledger = Arc::new(Ledger::default());

    // Stop the service while every client is sending.
    let service = start(&flags, &data_dir);
    let load = Load::start(&service, &client_plans(), &ledger, 1, &mut rng);
    let delay = rng.duration_between(Duration::from_millis(200), Duration::from_millis(2000));
    std::thread::sleep(delay);
    let (status, first_stderr) = service.stop();
    let reports = load.stop();
    let violations = client_violations(&reports);
    if !violations.is_empty() {
        fail(&context, "in the responses", &violations, &[&first_stderr]);
    }
    assert!(
        status.success(),
        "{context}: the service exited with {status}:\n{first_stderr}"
    );
    let (sent, accepted) = ledger.counts(1);
    println!(
        "{context}: SIGTERM {} ms into the load; {sent} requests, {accepted} acknowledged",
        delay.as_millis()
    );

    // Restart: every acknowledged update is back, and no log record was replayed.
    let context = Context {
        generation: 2,
        ..context
    };
    let service = start(&flags, &data_dir);
    let (service, _) = expect_recovered(service, &ledger, 2, &context, &first_stderr);
    let stderr = stop_and_check_history(service, &ledger, &context, &first_stderr);
    let line = recovery_line(&stderr)
        .unwrap_or_else(|| panic!("{context}: no recovery line in stderr:\n{stderr}"));
    println!("{context}: {line}");
    assert_eq!(
        replayed_log_records(line),
        Some(0),
        "{context}: log records replayed after a graceful stop under load: {line}"
    );
}

/// When the log cannot be written, updates and deletes get 503 over HTTP and MQTT, and none is
/// acknowledged without being durable. Once space returns, updates are accepted again without
/// a restart. Kill -9 after that, and kill -9 while the disk is full, lose nothing acknowledged.
#[test]
fn full_disk_rejects_updates_until_space_returns() {
    let mount = TmpfsMount::new(TMPFS_MIB);
    let config_dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(config_dir.path(), 1000);
    // No periodic checkpoint, so nothing frees log space while the disk is full.
    let flags = serve_flags("sync", &config, 300);
    let data_dir = mount.path().join("data");
    let ledger = Ledger::default();
    let http_shadow = ShadowId::classic("disk-app");
    let mqtt_shadow = ShadowId::classic("disk-device");
    let mqtt_shadows = [mqtt_shadow.clone()];

    // Generation 1: the disk fills, then space returns; kill -9 afterwards.
    let service = start(&flags, &data_dir);
    let http = Http::with_timeout(&service.http, HTTP_TIMEOUT);
    let device = Device::connect(
        "disk-device-1",
        service.mqtt_port,
        &response_topics(&mqtt_shadows),
    );
    let mqtt = Some((&device, &mqtt_shadows[..]));
    acknowledged_updates(
        &ledger,
        &http,
        mqtt,
        std::slice::from_ref(&http_shadow),
        5,
        1,
    );
    let clients = DiskClients {
        ledger: &ledger,
        http: &http,
        device: &device,
        http_shadow: &http_shadow,
        mqtt_shadow: &mqtt_shadow,
        generation: 1,
    };
    let filler = mount.fill();
    let mut violations = clients.update_until_rejected(&mount);
    filler.remove();
    violations.extend(clients.update_until_accepted());
    let first_stderr = service.kill();
    if !violations.is_empty() {
        fail(
            &"full disk, generation 1",
            "with a full disk",
            &violations,
            &[&first_stderr],
        );
    }

    // Generation 2: everything acknowledged is back; kill -9 while the disk is full.
    let service = start(&flags, &data_dir);
    let (service, _) = expect_recovered(
        service,
        &ledger,
        2,
        &"full disk, generation 2",
        &first_stderr,
    );
    let http = Http::with_timeout(&service.http, HTTP_TIMEOUT);
    let device = Device::connect(
        "disk-device-2",
        service.mqtt_port,
        &response_topics(&mqtt_shadows),
    );
    let clients = DiskClients {
        ledger: &ledger,
        http: &http,
        device: &device,
        http_shadow: &http_shadow,
        mqtt_shadow: &mqtt_shadow,
        generation: 2,
    };
    let filler = mount.fill();
    let violations = clients.update_until_rejected(&mount);
    let second_stderr = service.kill();
    filler.remove();
    if !violations.is_empty() {
        fail(
            &"full disk, generation 2",
            "with a full disk",
            &violations,
            &[&second_stderr],
        );
    }

    // Generation 3: everything acknowledged is back, and the history contains each change once.
    let service = start(&flags, &data_dir);
    let context = "full disk, generation 3";
    let (service, _) = expect_recovered(service, &ledger, 3, &context, &second_stderr);
    stop_and_check_history(service, &ledger, &context, &second_stderr);
}

/// With `--durability none` updates are accepted, no log is written and a restart starts with
/// no shadows, as documented: shadows live in memory only.
#[test]
fn durability_none_starts_empty_after_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let config = write_config(dir.path(), 60_000);
    let flags = serve_flags("none", &config, 300);
    let ledger = Ledger::default();
    let http_shadows = [ShadowId::classic("memory-app")];
    let mqtt_shadows = [ShadowId::named("memory-device", "config")];

    let service = start(&flags, &data_dir);
    let http = Http::with_timeout(&service.http, HTTP_TIMEOUT);
    let device = Device::connect(
        "memory-device",
        service.mqtt_port,
        &response_topics(&mqtt_shadows),
    );
    let mqtt = Some((&device, &mqtt_shadows[..]));
    acknowledged_updates(&ledger, &http, mqtt, &http_shadows, 3, 1);
    let (status, stderr) = service.stop();
    assert!(
        status.success(),
        "the service exited with {status}:\n{stderr}"
    );

    let log_files: Vec<PathBuf> = std::fs::read_dir(data_dir.join("wal"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        log_files
            .iter()
            .all(|path| path.extension().is_none_or(|ext| ext != "wal")),
        "--durability none wrote log segments: {log_files:?}"
    );

    let service = start(&flags, &data_dir);
    let http = Http::with_timeout(&service.http, HTTP_TIMEOUT);
    for shadow in http_shadows.iter().chain(&mqtt_shadows) {
        let (status, body) = http.get(&shadow.http_path());
        assert_eq!(
            status, 404,
            "{shadow} after a restart with --durability none: {body}"
        );
    }
    let (status, stderr) = service.stop();
    assert!(
        status.success(),
        "the restarted service exited with {status}:\n{stderr}"
    );
}

/// With `--durability batch` updates are accepted and survive kill -9, because the log is
/// written before the acknowledgement (only its sync is batched).
#[test]
fn durability_batch_survives_a_crash() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let config = write_config(dir.path(), 1000);
    let mut flags = serve_flags("batch", &config, 300);
    flags.extend(["--durability-batch-ms".to_owned(), "20".to_owned()]);
    let ledger = Ledger::default();
    let http_shadows = [
        ShadowId::classic("batch-app"),
        ShadowId::named("batch-app", "config"),
    ];
    let mqtt_shadows = [ShadowId::classic("batch-device")];

    let service = start(&flags, &data_dir);
    let http = Http::with_timeout(&service.http, HTTP_TIMEOUT);
    let device = Device::connect(
        "batch-device",
        service.mqtt_port,
        &response_topics(&mqtt_shadows),
    );
    let mqtt = Some((&device, &mqtt_shadows[..]));
    acknowledged_updates(&ledger, &http, mqtt, &http_shadows, 10, 1);
    drop(device);
    let first_stderr = service.kill();

    let service = start(&flags, &data_dir);
    let (service, _) = expect_recovered(service, &ledger, 2, &"batch", &first_stderr);
    stop_and_check_history(service, &ledger, &"batch", &first_stderr);
}

/// In batch mode a crash of the process loses nothing acknowledged either, also under load and
/// across several kills, because only the sync waits for the batch interval.
#[test]
fn crash_round_in_batch_mode() {
    let seed = seed_from_env();
    println!("batch crash round: seed {seed}; repeat with {SEED_VARIABLE}={seed}");
    let mut rng = Rng::for_test(seed, "crash_round_in_batch_mode");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), 1000);
    let mut flags = serve_flags("batch", &config, 1);
    flags.extend(["--durability-batch-ms".to_owned(), "20".to_owned()]);
    let workers = [WORKERS; KILLS_PER_ROUND as usize + 1];
    run_crash_round(seed, 1, &flags, &workers, &mut rng);
}
