//! The monolith end to end over its embedded broker.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::Value;

use super::*;

const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Polls `event_loop` until a publish arrives on `topic` and returns its payload as JSON.
async fn next_message(event_loop: &mut EventLoop, topic: &str) -> Value {
    let wait = async {
        loop {
            let event = event_loop.poll().await.expect("device connection works");
            if let Event::Incoming(Packet::Publish(publish)) = event
                && publish.topic == topic
            {
                return serde_json::from_slice(&publish.payload).expect("response is JSON");
            }
        }
    };
    tokio::time::timeout(REPLY_TIMEOUT, wait)
        .await
        .unwrap_or_else(|_| panic!("no message on {topic} within 10 s"))
}

/// Connects a device and waits until its subscriptions to `filters` are acknowledged.
async fn device(address: std::net::SocketAddr, filters: &[&str]) -> (AsyncClient, EventLoop) {
    let options = MqttOptions::new(
        "monolith-test-device",
        address.ip().to_string(),
        address.port(),
    );
    let (client, mut event_loop) = AsyncClient::new(options, 16);
    for filter in filters {
        client
            .subscribe(*filter, QoS::AtLeastOnce)
            .await
            .expect("SUBSCRIBE queued");
    }
    let mut acks = 0;
    while acks < filters.len() {
        if let Event::Incoming(Packet::SubAck(_)) =
            event_loop.poll().await.expect("device connects")
        {
            acks += 1;
        }
    }
    (client, event_loop)
}

/// In process: a device's two updates get accepted responses with their tokens, a delta while
/// desired and reported differ, and both versions reach the SQLite row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_in_process_are_stored() {
    two_updates_are_answered_and_stored(true).await;
}

/// The same over MQTT publisher connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_over_mqtt_are_stored() {
    two_updates_are_answered_and_stored(false).await;
}

async fn two_updates_are_answered_and_stored(in_process_responses: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = MonolithConfig::embedded("127.0.0.1:0");
    config.db = Some(dir.path().join("shadows.db"));
    config.threads = 2;
    config.in_process_responses = in_process_responses;
    let monolith = Monolith::start(&config).await.expect("monolith starts");

    let (client, mut event_loop) = device(
        monolith.mqtt_address(),
        &[
            "$aws/things/lamp/shadow/update/accepted",
            "$aws/things/lamp/shadow/update/delta",
        ],
    )
    .await;
    let update = "$aws/things/lamp/shadow/update";
    client
        .publish(
            update,
            QoS::AtLeastOnce,
            false,
            r#"{"state":{"desired":{"on":true}},"clientToken":"t1"}"#,
        )
        .await
        .expect("publish queued");
    let accepted = next_message(&mut event_loop, "$aws/things/lamp/shadow/update/accepted").await;
    assert_eq!(accepted["clientToken"], "t1");
    assert_eq!(accepted["version"], 1);
    let delta = next_message(&mut event_loop, "$aws/things/lamp/shadow/update/delta").await;
    assert_eq!(delta["state"], serde_json::json!({"on": true}));

    client
        .publish(
            update,
            QoS::AtLeastOnce,
            false,
            r#"{"state":{"reported":{"on":true}},"clientToken":"t2"}"#,
        )
        .await
        .expect("publish queued");
    let accepted = next_message(&mut event_loop, "$aws/things/lamp/shadow/update/accepted").await;
    assert_eq!(accepted["clientToken"], "t2");
    assert_eq!(accepted["version"], 2);

    let summary = monolith.shutdown().await;
    assert_eq!(summary.received, 2);
    assert_eq!(summary.accepted, 2);
    assert_eq!(summary.rejected, 0);
    assert_eq!(summary.shadows, 1);

    let database = Database::open(&dir.path().join("shadows.db"), Synchronous::Full)
        .expect("database reopens");
    let (version, _) = database
        .row(&pipeline::shadow::ShadowKey::classic("lamp"))
        .expect("row reads")
        .expect("row exists");
    assert_eq!(version, 2);
}
