//! End-to-end replay tests against a real mosquitto broker and small fake brokers, all on
//! 127.0.0.1. Every replay here is bounded by a row limit and by timeouts.

mod mosquitto;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::*;
use mosquitto::{Mosquitto, free_port};

/// Maximum time for a test to receive every expected message.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Folder of the raw data sets, next to the repository.
pub(super) fn raw_datasets_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets/raw");
    assert!(
        dir.is_dir(),
        "raw data sets not found at {}; the replay tests need the shared gzipped CSV copies there",
        dir.display()
    );
    dir
}

fn occupancy_dir() -> PathBuf {
    raw_datasets_dir().join("uci-room-occupancy-estimation")
}

/// Subscribes to every shadow update topic and forwards `(topic, payload)` pairs.
///
/// Returns after the broker's SubAck, so no replayed message can be missed.
async fn subscribe_to_updates(
    port: u16,
) -> (mpsc::UnboundedReceiver<(String, Bytes)>, JoinHandle<()>) {
    let mut options = MqttOptions::new("replay-test-subscriber", "127.0.0.1", port);
    options.set_max_packet_size(MAX_PACKET_SIZE_BYTES, MAX_PACKET_SIZE_BYTES);
    let (client, mut event_loop) = AsyncClient::new(options, 16);
    client
        .subscribe("$aws/things/+/shadow/update", QoS::AtLeastOnce)
        .await
        .expect("queue SUBSCRIBE");

    let (messages, received) = mpsc::unbounded_channel();
    let (subscribed, suback) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut subscribed = Some(subscribed);
        loop {
            match event_loop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(sender) = subscribed.take() {
                        let _ = sender.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let _ = messages.send((publish.topic, publish.payload));
                }
                Ok(_) => {}
                Err(error) => panic!("subscriber connection failed: {error}"),
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), suback)
        .await
        .expect("SubAck within 10 s")
        .expect("subscriber task running");
    (received, task)
}

/// Receives exactly `count` messages, or panics after [`RECEIVE_TIMEOUT`].
async fn receive(
    received: &mut mpsc::UnboundedReceiver<(String, Bytes)>,
    count: usize,
) -> Vec<(String, Bytes)> {
    let mut messages = Vec::with_capacity(count);
    let deadline = tokio::time::Instant::now() + RECEIVE_TIMEOUT;
    while messages.len() < count {
        match tokio::time::timeout_at(deadline, received.recv()).await {
            Ok(Some(message)) => messages.push(message),
            Ok(None) => panic!(
                "subscriber stopped after {} of {count} messages",
                messages.len()
            ),
            Err(_) => panic!(
                "received {} of {count} messages within {RECEIVE_TIMEOUT:?}",
                messages.len()
            ),
        }
    }
    messages
}

/// Groups `(topic, payload)` pairs by topic, keeping arrival order within each topic.
fn by_topic(messages: impl IntoIterator<Item = (String, Value)>) -> BTreeMap<String, Vec<Value>> {
    let mut grouped: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (topic, payload) in messages {
        grouped.entry(topic).or_default().push(payload);
    }
    grouped
}

/// Shadow update requests that the replay should send for the first `limit` rows.
fn expected_requests(paths: &[PathBuf], dataset: Dataset, limit: u64) -> Vec<(String, Value)> {
    let reader = DatasetReader::open(paths, dataset)
        .expect("input opens")
        .with_limit(Some(limit));
    let mut requests = Vec::new();
    for row in reader {
        let row = row.expect("row reads");
        let Ok(updates) = row.outcome else { continue };
        for update in encode_row(row.row_number, updates).updates {
            let payload = serde_json::from_slice(&update.payload).expect("payload is JSON");
            requests.push((update.topic, payload));
        }
    }
    requests
}

/// Replaying 200 occupancy rows delivers all 1,400 updates, in file order per thing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occupancy_replay_reaches_subscriber_in_order() {
    let broker = Mosquitto::start();
    let (mut received, subscriber) = subscribe_to_updates(broker.port()).await;

    let config = ReplayConfig::new(vec![occupancy_dir()], Dataset::Occupancy)
        .with_broker(broker.url().parse().expect("valid broker URL"))
        .with_limit(Some(200));
    let summary = run(config).await.expect("replay succeeds");
    println!("{summary}");

    assert_eq!(summary.files, 1);
    assert_eq!(summary.rows_read, 200);
    assert_eq!(summary.rows_published, 200);
    assert_eq!(summary.updates_published, 1_400);
    assert_eq!(summary.rows_skipped_total(), 0);
    assert_eq!(summary.things, 7);
    assert_eq!(summary.connections, 7);

    let messages = receive(&mut received, 1_400).await;
    let parsed = messages.into_iter().map(|(topic, payload)| {
        let payload: Value = serde_json::from_slice(&payload).expect("received payload is JSON");
        (topic, payload)
    });
    let received_by_thing = by_topic(parsed);
    let expected_by_thing = by_topic(expected_requests(
        &[occupancy_dir()],
        Dataset::Occupancy,
        200,
    ));
    assert_eq!(received_by_thing.len(), 7);
    for (topic, expected) in &expected_by_thing {
        let received = received_by_thing
            .get(topic)
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert_eq!(received.len(), 200, "messages on {topic}");
        for (index, (got, want)) in received.iter().zip(expected).enumerate() {
            assert_eq!(got, want, "message {index} on {topic}");
        }
        let tokens: Vec<&str> = received
            .iter()
            .filter_map(|payload| payload["clientToken"].as_str())
            .collect();
        let expected_tokens: Vec<String> = (1..=200).map(|row| format!("replay-{row}")).collect();
        assert_eq!(
            tokens, expected_tokens,
            "client tokens on {topic} in row order"
        );
    }

    // The first row of the file, written out by hand:
    // 2017-12-22,10:49:41,24.94,24.75,24.56,25.38,121,34,53,40,0.08,0.19,0.06,0.06,390,0.769230769,0,0,1
    let first_s1 = &received_by_thing["$aws/things/S1/shadow/update"][0];
    let expected_s1 = json!({
        "state": {"reported": {"temperature": 24.94, "light": 121, "sound": 0.08, "observed_at": "2017-12-22T10:49:41"}},
        "clientToken": "replay-1",
    });
    assert_eq!(first_s1, &expected_s1);
    let first_s5 = &received_by_thing["$aws/things/S5/shadow/update"][0];
    assert_eq!(
        first_s5["state"]["reported"],
        json!({"co2": 390, "co2_slope": 0.769230769, "observed_at": "2017-12-22T10:49:41"})
    );

    let log = broker.log();
    assert!(
        !log.contains("Outgoing messages are being dropped"),
        "mosquitto dropped messages:\n{log}"
    );
    subscriber.abort();
}

/// A rate spreads rows over time on the open-loop schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_paces_rows() {
    let broker = Mosquitto::start();
    let config = ReplayConfig::new(vec![occupancy_dir()], Dataset::Occupancy)
        .with_broker(broker.url().parse().expect("valid broker URL"))
        .with_rate(Some(50.0))
        .with_limit(Some(20));
    let summary = run(config).await.expect("replay succeeds");

    assert_eq!(summary.rows_published, 20);
    assert_eq!(summary.updates_published, 140);
    // Row 20 is due 19 / 50 s = 380 ms after the first, so the run cannot be shorter.
    assert!(
        summary.elapsed >= Duration::from_millis(380),
        "20 rows at 50 rows/s took only {:?}",
        summary.elapsed
    );
}

/// A stopped broker gives an error that names its address and how to start one.
#[tokio::test]
async fn closed_port_fails_with_hint() {
    let port = free_port();
    let config = ReplayConfig::new(vec![occupancy_dir()], Dataset::Occupancy)
        .with_broker(
            format!("mqtt://127.0.0.1:{port}")
                .parse()
                .expect("valid broker URL"),
        )
        .with_limit(Some(5));
    let error = run(config).await.expect_err("nothing listens on the port");

    assert!(
        matches!(error, ReplayError::Connect { .. }),
        "got {error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&format!("mqtt://127.0.0.1:{port}")),
        "message: {message}"
    );
    assert!(message.contains("shadowflow serve"), "message: {message}");
    assert!(message.contains("--mqtt"), "message: {message}");
}

/// The wrong data set fails on the header, before any connection is attempted.
#[tokio::test]
async fn wrong_dataset_fails_before_connecting() {
    let port = free_port();
    let config = ReplayConfig::new(vec![occupancy_dir()], Dataset::Chicago).with_broker(
        format!("mqtt://127.0.0.1:{port}")
            .parse()
            .expect("valid broker URL"),
    );
    let error = run(config)
        .await
        .expect_err("occupancy file is not a Chicago file");
    assert!(
        matches!(
            error,
            ReplayError::MissingColumn {
                column: "Beach Name",
                ..
            }
        ),
        "got {error:?}"
    );
}

/// A broker that stops mid-replay ends the replay with a connection error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_stopping_mid_replay_fails() {
    let mut broker = Mosquitto::start();
    let config = ReplayConfig::new(
        vec![raw_datasets_dir().join("beijing-multisite-air-quality")],
        Dataset::Beijing,
    )
    .with_broker(broker.url().parse().expect("valid broker URL"))
    .with_rate(Some(1_000.0))
    .with_limit(Some(10_000));
    let replay = tokio::spawn(run(config));

    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.stop();
    let result = tokio::time::timeout(Duration::from_secs(20), replay)
        .await
        .expect("replay ends by itself")
        .expect("replay task does not panic");
    match result {
        Err(ReplayError::Connection { .. }) => {}
        other => panic!("expected a connection error, got {other:?}"),
    }
}

/// Starts a fake broker that accepts every MQTT connection and never sends a PubAck.
async fn start_silent_broker() -> (u16, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake broker");
    let port = listener.local_addr().expect("fake broker address").port();
    let task = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            connections.push(tokio::spawn(async move {
                let mut buffer = [0_u8; 4096];
                // Wait for CONNECT, reply with CONNACK (session not present, accepted),
                // then read and drop everything.
                if matches!(stream.read(&mut buffer).await, Ok(0) | Err(_)) {
                    return;
                }
                if stream.write_all(&[0x20, 0x02, 0x00, 0x00]).await.is_err() {
                    return;
                }
                while matches!(stream.read(&mut buffer).await, Ok(read) if read > 0) {}
            }));
        }
    });
    (port, task)
}

/// A broker that stops sending PubAcks ends the replay with a timeout instead of a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_pubacks_time_out() {
    let (port, fake_broker) = start_silent_broker().await;
    let config = ReplayConfig::new(vec![occupancy_dir()], Dataset::Occupancy)
        .with_broker(
            format!("mqtt://127.0.0.1:{port}")
                .parse()
                .expect("valid broker URL"),
        )
        .with_limit(Some(5))
        .with_ack_timeout(Duration::from_secs(1));

    let result = tokio::time::timeout(Duration::from_secs(20), run(config))
        .await
        .expect("replay ends by itself");
    match result {
        Err(ReplayError::AckTimeout {
            outstanding,
            timeout,
            ..
        }) => {
            assert_eq!(outstanding, 35, "5 rows of 7 updates wait for a PubAck");
            assert_eq!(timeout, Duration::from_secs(1));
        }
        other => panic!("expected AckTimeout, got {other:?}"),
    }
    fake_broker.abort();
}

#[test]
fn due_time_follows_schedule() {
    let start = tokio::time::Instant::now();
    assert_eq!(due_time(start, 0, 10.0), Some(start));
    assert_eq!(
        due_time(start, 25, 10.0),
        Some(start + Duration::from_millis(2_500))
    );
    assert_eq!(
        due_time(start, 1, 1e-300),
        None,
        "schedule beyond any representable time"
    );
}
