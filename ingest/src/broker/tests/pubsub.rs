//! Publish and subscribe end to end with rumqttc clients and raw packets.

use std::collections::HashMap;
use std::time::Duration;

use rumqttc::QoS;
use rumqttc::mqttbytes::v4::{Packet as RawPacket, PubAck, SubscribeReasonCode};

use super::support::{RawClient, TestClient, connect_packet, options, start, test_config};

const ACCEPTED: &str = "$aws/things/lamp/shadow/update/accepted";

/// QoS 0 and QoS 1 messages on an AWS shadow topic reach a subscriber at the granted QoS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_topic_qos0_and_qos1() {
    let broker = start(&test_config()).await;
    let (mut subscriber, _) = TestClient::connect(options(&broker, "lamp-app", true)).await;
    let codes = subscriber.subscribe(ACCEPTED, QoS::AtLeastOnce).await;
    assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    let (mut publisher, _) = TestClient::connect(options(&broker, "shadow-service", true)).await;

    publisher
        .publish(ACCEPTED, QoS::AtMostOnce, false, "qos0")
        .await;
    publisher
        .publish(ACCEPTED, QoS::AtLeastOnce, false, "qos1")
        .await;
    publisher.wait_for_pubacks(1).await;

    let first = subscriber.next_publish().await;
    assert_eq!(
        (first.topic.as_str(), &first.payload[..], first.qos),
        (ACCEPTED, &b"qos0"[..], QoS::AtMostOnce)
    );
    let second = subscriber.next_publish().await;
    assert_eq!(
        (second.topic.as_str(), &second.payload[..], second.qos),
        (ACCEPTED, &b"qos1"[..], QoS::AtLeastOnce)
    );

    let metrics = broker.metrics();
    assert_eq!(metrics.messages_received, 2);
    assert_eq!(metrics.messages_sent, 2);
    assert_eq!(metrics.connections_active, 2);
    broker.shutdown().await;
}

/// A `+` filter under `$aws` receives 2,000 QoS 1 messages from four publishers, none lost
/// and each publisher's messages in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wildcard_keeps_each_publisher_in_order() {
    const PUBLISHERS: usize = 4;
    const PER_PUBLISHER: usize = 500;
    let broker = start(&test_config()).await;
    let (mut subscriber, _) = TestClient::connect(options(&broker, "ingest", true)).await;
    subscriber
        .subscribe("$aws/things/+/shadow/update", QoS::AtLeastOnce)
        .await;

    let mut tasks = Vec::new();
    for publisher_index in 0..PUBLISHERS {
        let (mut publisher, _) =
            TestClient::connect(options(&broker, &format!("thing-{publisher_index}"), true)).await;
        tasks.push(tokio::spawn(async move {
            let topic = format!("$aws/things/thing-{publisher_index}/shadow/update");
            for sequence in 0..PER_PUBLISHER {
                publisher
                    .publish(&topic, QoS::AtLeastOnce, false, sequence.to_string())
                    .await;
            }
            publisher.wait_for_pubacks(PER_PUBLISHER).await;
        }));
    }

    let mut next_expected: HashMap<String, usize> = HashMap::new();
    for _ in 0..PUBLISHERS * PER_PUBLISHER {
        let publish = subscriber.next_publish().await;
        let sequence: usize = std::str::from_utf8(&publish.payload)
            .expect("UTF-8")
            .parse()
            .expect("number");
        let expected = next_expected.entry(publish.topic.clone()).or_default();
        assert_eq!(
            sequence, *expected,
            "order of messages on {}",
            publish.topic
        );
        *expected += 1;
    }
    for task in tasks {
        task.await.expect("publisher task");
    }
    assert_eq!(next_expected.len(), PUBLISHERS);
    assert!(next_expected.values().all(|&count| count == PER_PUBLISHER));
    broker.shutdown().await;
}

/// A retained message reaches a later subscriber with RETAIN set, and an empty retained
/// payload clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_message_on_subscribe() {
    let broker = start(&test_config()).await;
    let (mut publisher, _) = TestClient::connect(options(&broker, "lamp", true)).await;
    publisher
        .publish(
            "$aws/things/lamp/shadow/reported",
            QoS::AtLeastOnce,
            true,
            "on",
        )
        .await;
    publisher.wait_for_pubacks(1).await;

    let (mut late, _) = TestClient::connect(options(&broker, "late", true)).await;
    late.subscribe("$aws/things/+/shadow/reported", QoS::AtLeastOnce)
        .await;
    let publish = late.next_publish().await;
    assert!(publish.retain);
    assert_eq!(&publish.payload[..], b"on");

    publisher
        .publish(
            "$aws/things/lamp/shadow/reported",
            QoS::AtLeastOnce,
            true,
            "",
        )
        .await;
    publisher.wait_for_pubacks(1).await;
    let cleared = late.next_publish().await;
    assert!(cleared.payload.is_empty());
    assert!(!cleared.retain, "a live message is sent without RETAIN");

    let (mut later, _) = TestClient::connect(options(&broker, "later", true)).await;
    later
        .subscribe("$aws/things/+/shadow/reported", QoS::AtLeastOnce)
        .await;
    publisher
        .publish(
            "$aws/things/lamp/shadow/reported",
            QoS::AtLeastOnce,
            false,
            "marker",
        )
        .await;
    assert_eq!(
        later.next_payload().await,
        "marker",
        "no retained message is left"
    );
    broker.shutdown().await;
}

/// Invalid filters get return code 0x80, QoS 2 is granted as QoS 1, and valid `$` and
/// `$share` filters are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_return_codes() {
    let broker = start(&test_config()).await;
    let (mut client, connack) =
        RawClient::connect(broker.local_addr(), connect_packet("raw", true, 30)).await;
    assert!(!connack.session_present);
    let filters = [
        ("a/#/b", QoS::AtMostOnce),
        ("a+", QoS::AtLeastOnce),
        ("$aws/things/+/shadow/update", QoS::ExactlyOnce),
        ("#", QoS::AtMostOnce),
        (
            "$share/ingest/$aws/things/+/shadow/update",
            QoS::AtLeastOnce,
        ),
        ("$share//x", QoS::AtMostOnce),
    ];
    let suback = client.subscribe(7, &filters).await;
    assert_eq!(suback.pkid, 7);
    assert_eq!(
        suback.return_codes,
        [
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Success(QoS::AtMostOnce),
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure,
        ]
    );
    client.send(RawPacket::PingReq).await;
    assert_eq!(
        client.receive().await,
        Some(RawPacket::PingResp),
        "the connection stays open"
    );
    broker.shutdown().await;
}

/// Members of a `$share` group split the messages between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_group_splits_messages() {
    let broker = start(&test_config()).await;
    let filter = "$share/ingest/$aws/things/+/shadow/update";
    let (mut first, _) = TestClient::connect(options(&broker, "ingest-1", true)).await;
    first.subscribe(filter, QoS::AtLeastOnce).await;
    let (mut second, _) = TestClient::connect(options(&broker, "ingest-2", true)).await;
    second.subscribe(filter, QoS::AtLeastOnce).await;

    let (mut publisher, _) = TestClient::connect(options(&broker, "lamp", true)).await;
    for index in 0..10 {
        publisher
            .publish(
                "$aws/things/lamp/shadow/update",
                QoS::AtLeastOnce,
                false,
                index.to_string(),
            )
            .await;
    }
    publisher.wait_for_pubacks(10).await;

    let mut first_payloads = Vec::new();
    let mut second_payloads = Vec::new();
    for _ in 0..5 {
        first_payloads.push(first.next_payload().await);
        second_payloads.push(second.next_payload().await);
    }
    assert_eq!(first_payloads, ["0", "2", "4", "6", "8"]);
    assert_eq!(second_payloads, ["1", "3", "5", "7", "9"]);
    broker.shutdown().await;
}

/// At most `max_inflight` QoS 1 messages wait for PUBACK; each PUBACK lets one more through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inflight_window_limits_unacknowledged() {
    let config = super::support::test_config();
    let config = crate::broker::EmbeddedBrokerConfig {
        max_inflight: 3,
        ..config
    };
    let broker = start(&config).await;
    let (mut subscriber, _) =
        RawClient::connect(broker.local_addr(), connect_packet("slow-acker", true, 30)).await;
    subscriber.subscribe(1, &[("jobs", QoS::AtLeastOnce)]).await;
    let (mut publisher, _) = TestClient::connect(options(&broker, "producer", true)).await;
    for index in 0..5 {
        publisher
            .publish("jobs", QoS::AtLeastOnce, false, index.to_string())
            .await;
    }
    publisher.wait_for_pubacks(5).await;

    let mut window = Vec::new();
    for _ in 0..3 {
        window.push(subscriber.receive_publish().await);
    }
    let extra = subscriber.receive_within(Duration::from_millis(300)).await;
    assert_eq!(extra, None, "a fourth message arrived before any PUBACK");

    subscriber
        .send(RawPacket::PubAck(PubAck::new(window[0].pkid)))
        .await;
    let fourth = subscriber.receive_publish().await;
    assert_eq!(&fourth.payload[..], b"3");
    broker.shutdown().await;
}
