//! The dataflow with its write-ahead log and checkpoints, against a sequential model.
//!
//! Each test runs a request stream through the dataflow with durability on, stops it in some
//! way, and recovers the shadows from the data folder. The recovered shadows must equal those of
//! a single [`ShadowState`] that applied the same requests in order, whatever the number of
//! workers before and after.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use pipeline::dataflow::{
    self, DataflowConfig, DurableSetup, HttpReply, KeyState, MqttMessage, Operation, ReplyTo,
    Request, ShadowOutputs, ShadowState,
};
use pipeline::durable::{Checkpoints, Durability, DurableDirs, Recovered, recover};
use pipeline::history::{HistoryRow, LogPosition, Origin};
use pipeline::shadow::{Limits, ShadowKey};
use serde_json::json;

/// Collects history rows with their log positions.
#[derive(Default)]
struct Archive {
    rows: Mutex<Vec<(HistoryRow, Option<LogPosition>)>>,
}

impl ShadowOutputs for Archive {
    fn publish(&self, _message: MqttMessage) {}
    fn reply_http(&self, _reply: HttpReply) {}
    fn archive(&self, row: HistoryRow, position: Option<LogPosition>) {
        self.rows.lock().expect("lock").push((row, position));
    }
}

/// Returns a deterministic stream of updates and deletes over `things` classic and named
/// shadows, starting at request number `from`.
fn workload(things: usize, count: usize, from: usize) -> Vec<Request> {
    (from..from + count)
        .map(|index| {
            let thing = format!("thing-{}", index % things);
            let key = if index % 5 == 0 {
                ShadowKey::named(thing, "config")
            } else {
                ShadowKey::classic(thing)
            };
            let (operation, payload) = match index % 11 {
                7 => (Operation::Delete, Vec::new()),
                3 => (
                    Operation::Update,
                    json!({"state": {"desired": {"level": index % 4, "mode": null}}})
                        .to_string()
                        .into_bytes(),
                ),
                _ => (
                    Operation::Update,
                    json!({
                        "state": {"reported": {"level": index % 3, "seen": index, "nested": {"a": [index]}}},
                        "clientToken": format!("token-{index}"),
                    })
                    .to_string()
                    .into_bytes(),
                ),
            };
            Request {
                key,
                operation,
                payload,
                origin: Origin::Mqtt,
                reply_to: ReplyTo::Nobody,
                received_at_ms: 1_700_000_000_000 + index as i64 * 7,
            }
        })
        .collect()
}

/// Applies `requests` in order to one state: the sequential model.
fn model(requests: &[Request]) -> BTreeMap<ShadowKey, KeyState> {
    let mut state = ShadowState::new(Limits::default());
    for (index, request) in requests.iter().enumerate() {
        let _ = state.apply(request.clone(), 1 + index as u64);
    }
    state.snapshot().into_iter().collect()
}

/// Returns how many of `requests` the model accepts as changes (updates and deletes).
fn accepted_changes(requests: &[Request]) -> usize {
    let mut state = ShadowState::new(Limits::default());
    requests
        .iter()
        .enumerate()
        .filter(|(index, request)| {
            state
                .apply((*request).clone(), 1 + *index as u64)
                .1
                .is_some()
        })
        .count()
}

/// Returns the recovered shadows of every worker as one map.
fn merged(recovered: &Recovered) -> BTreeMap<ShadowKey, KeyState> {
    recovered
        .shards
        .iter()
        .flatten()
        .map(|(key, state)| (key.clone(), state.clone()))
        .collect()
}

/// Asserts that two sets of shadows hold the same documents, versions and tombstones.
fn assert_same(
    recovered: &BTreeMap<ShadowKey, KeyState>,
    expected: &BTreeMap<ShadowKey, KeyState>,
) {
    assert_eq!(
        recovered.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "recovered keys differ from the model"
    );
    for (key, want) in expected {
        let got = &recovered[key];
        assert_eq!(
            got.deleted_version, want.deleted_version,
            "tombstone of {key:?}"
        );
        let got_shadow = got
            .live
            .as_ref()
            .map(|live| (&live.shadow, live.updated_at_ms));
        let want_shadow = want
            .live
            .as_ref()
            .map(|live| (&live.shadow, live.updated_at_ms));
        assert_eq!(got_shadow, want_shadow, "shadow {key:?}");
    }
}

/// A dataflow with durability on in `data`.
struct Durable {
    sender: Option<dataflow::RequestSender>,
    handle: Option<dataflow::DataflowHandle>,
    checkpoints: Option<Checkpoints>,
    archive: Arc<Archive>,
}

impl Durable {
    fn start(data: &std::path::Path, workers: usize, mode: Durability) -> (Durable, Recovered) {
        let dirs = DurableDirs::under(data);
        dirs.create().expect("create folders");
        let recovered = recover(&dirs, workers, &|_| false).expect("recover");
        let checkpoints = Checkpoints::start(
            dirs.clone(),
            recovered.generation,
            workers,
            recovered.next_checkpoint_id,
            None,
        )
        .expect("start checkpoints");
        let setup = DurableSetup {
            mode,
            wal_dir: dirs.wal.clone(),
            generation: recovered.generation,
            checkpoints: checkpoints.requests(),
            recovered: Mutex::new(recovered.shards.clone()),
        };
        let archive = Arc::new(Archive::default());
        let config = DataflowConfig {
            workers,
            limits: Limits::default(),
            request_queue: 256,
            durable: Some(Arc::new(setup)),
        };
        let (sender, handle) =
            dataflow::spawn(config, Arc::clone(&archive) as Arc<dyn ShadowOutputs>)
                .expect("start dataflow");
        let running = Durable {
            sender: Some(sender),
            handle: Some(handle),
            checkpoints: Some(checkpoints),
            archive,
        };
        (running, recovered)
    }

    /// Waits until the archive has received `rows` rows, that is, until the changes that produce
    /// them are committed.
    fn wait_for_rows(&self, rows: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.archive.rows.lock().expect("lock").len() < rows {
            assert!(
                std::time::Instant::now() < deadline,
                "the dataflow did not commit {rows} changes within 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn send(&self, requests: &[Request]) {
        let sender = self.sender.as_ref().expect("running");
        for request in requests {
            sender
                .blocking_send(request.clone())
                .expect("dataflow accepts requests");
        }
    }

    /// Stops without a shutdown checkpoint, as a crash after the last commit would.
    fn stop_without_checkpoint(mut self) {
        drop(self.sender.take());
        self.handle.take().expect("running").join();
        self.checkpoints.take().expect("running").stop();
    }

    /// Stops with the shutdown checkpoint.
    fn stop(mut self) {
        let checkpoints = self.checkpoints.take().expect("running");
        let report = checkpoints.request_final();
        drop(self.sender.take());
        self.handle.take().expect("running").join();
        report
            .recv()
            .expect("checkpoint thread replies")
            .expect("shutdown checkpoint succeeds");
        checkpoints.stop();
    }
}

#[test]
fn log_alone_recovers_every_shadow() {
    for workers in [1, 3] {
        let data = tempfile::tempdir().expect("temp dir");
        let requests = workload(20, 600, 0);
        let (running, first) = Durable::start(data.path(), workers, Durability::Sync);
        assert_eq!(first.stats.shadows, 0, "a new data folder has no shadows");
        running.send(&requests);
        running.stop_without_checkpoint();

        let recovered = recover(&DurableDirs::under(data.path()), 2, &|_| true).expect("recover");
        assert_same(&merged(&recovered), &model(&requests));
        assert_eq!(recovered.stats.checkpoint, None, "no checkpoint was taken");
        assert!(recovered.stats.log_records > 0, "the log holds the changes");
        assert!(
            recovered.unarchived.is_empty(),
            "everything counts as archived here"
        );
    }
}

#[test]
fn checkpoint_plus_log_recovers_every_shadow() {
    let data = tempfile::tempdir().expect("temp dir");
    let first_half = workload(15, 400, 0);
    let second_half = workload(15, 300, 400);
    let (running, _) = Durable::start(data.path(), 2, Durability::Sync);
    running.send(&first_half);
    running.wait_for_rows(accepted_changes(&first_half));
    let report = running
        .checkpoints
        .as_ref()
        .expect("running")
        .checkpoint_now()
        .expect("checkpoint succeeds");
    assert!(report.entries > 0, "the checkpoint holds shadows");
    running.send(&second_half);
    running.stop_without_checkpoint();

    let recovered = recover(&DurableDirs::under(data.path()), 2, &|_| false).expect("recover");
    let all: Vec<Request> = first_half.iter().chain(&second_half).cloned().collect();
    assert_same(&merged(&recovered), &model(&all));
    assert_eq!(recovered.stats.checkpoint, Some(report.id));
    let all_changes = accepted_changes(&all);
    let first_changes = accepted_changes(&first_half);
    assert_eq!(
        recovered.stats.log_records as usize,
        all_changes - first_changes,
        "only changes after the checkpoint are replayed"
    );
    assert_eq!(
        recovered.unarchived.len() as u64,
        recovered.stats.log_records,
        "every replayed change is re-archived when the archive holds none"
    );
}

#[test]
fn shutdown_checkpoint_leaves_nothing_to_replay() {
    let data = tempfile::tempdir().expect("temp dir");
    let requests = workload(10, 300, 0);
    let (running, _) = Durable::start(data.path(), 2, Durability::Sync);
    running.send(&requests);
    running.stop();

    let recovered = recover(&DurableDirs::under(data.path()), 2, &|_| false).expect("recover");
    assert_same(&merged(&recovered), &model(&requests));
    assert_eq!(
        recovered.stats.log_records, 0,
        "nothing after the shutdown checkpoint"
    );
    let segments = std::fs::read_dir(data.path().join("wal"))
        .expect("wal folder")
        .count();
    assert_eq!(segments, 0, "the checkpoint covers every log segment");
}

#[test]
fn restarts_continue_versions_across_generations() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut all = Vec::new();
    for (round, workers) in [(0, 2), (1, 4), (2, 1), (3, 2)] {
        let requests = workload(12, 200, round * 200);
        let (running, recovered) = Durable::start(data.path(), workers, Durability::Sync);
        assert_same(&merged(&recovered), &model(&all));
        running.send(&requests);
        all.extend(requests);
        if round % 2 == 0 {
            running.stop_without_checkpoint();
        } else {
            running.stop();
        }
    }
    let recovered = recover(&DurableDirs::under(data.path()), 3, &|_| true).expect("recover");
    assert_same(&merged(&recovered), &model(&all));
    assert_eq!(
        recovered.generation, 5,
        "four starts, so the next is the fifth"
    );
}

#[test]
fn history_rows_carry_contiguous_positions() {
    let data = tempfile::tempdir().expect("temp dir");
    let requests = workload(8, 250, 0);
    let (running, recovered) = Durable::start(
        data.path(),
        2,
        Durability::Batch {
            interval: std::time::Duration::from_millis(5),
        },
    );
    running.send(&requests);
    let archive = Arc::clone(&running.archive);
    running.stop();

    let rows = archive.rows.lock().expect("lock");
    let mut next: BTreeMap<u32, u64> = BTreeMap::new();
    for (row, position) in rows.iter() {
        let position = position.expect("logged changes have positions");
        assert_eq!(position.generation, recovered.generation);
        let expected = next.entry(position.worker).or_insert(0);
        assert_eq!(
            position.lsn, *expected,
            "lsns of worker {} in order",
            position.worker
        );
        *expected += 1;
        assert!(row.version > 0, "rows record versions");
    }
    let total: u64 = next.values().sum();
    assert_eq!(total as usize, rows.len());
}
