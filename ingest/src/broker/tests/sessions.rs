//! Session life cycle end to end: persistent and clean sessions, take-over, wills and
//! keep-alive.

use std::time::{Duration, Instant};

use rumqttc::mqttbytes::v4::{ConnectReturnCode, LastWill, Packet as RawPacket, PubAck};
use rumqttc::{LastWill as ClientLastWill, QoS};

use super::support::{
    RawClient, TestClient, connect_packet, options, start, test_config, wait_until,
};
use crate::broker::EmbeddedBroker;

const ACCEPTED: &str = "$aws/things/lamp/shadow/update/accepted";

/// Waits until the broker has `count` open connections.
async fn wait_for_connections(broker: &EmbeddedBroker, count: u64) {
    wait_until(&format!("{count} connections are open"), || {
        broker.metrics().connections_active == count
    })
    .await;
}

/// A persistent session receives the QoS 1 messages published while it was offline, in
/// order and with session present. QoS 0 messages for it are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_receives_offline_messages() {
    let broker = start(&test_config()).await;
    let (mut device, connack) = TestClient::connect(options(&broker, "lamp", false)).await;
    assert!(!connack.session_present);
    device.subscribe(ACCEPTED, QoS::AtLeastOnce).await;
    device.disconnect().await;
    wait_for_connections(&broker, 0).await;

    let (mut service, _) = TestClient::connect(options(&broker, "shadow-service", true)).await;
    for index in 0..50 {
        service
            .publish(ACCEPTED, QoS::AtLeastOnce, false, format!("q1-{index}"))
            .await;
        service
            .publish(ACCEPTED, QoS::AtMostOnce, false, format!("q0-{index}"))
            .await;
    }
    service
        .publish(ACCEPTED, QoS::AtLeastOnce, false, "end")
        .await;
    service.wait_for_pubacks(51).await;

    let (mut device, connack) = TestClient::connect(options(&broker, "lamp", false)).await;
    assert!(connack.session_present);
    let mut received = Vec::new();
    while received.last().map(String::as_str) != Some("end") {
        assert!(
            received.len() <= 101,
            "more messages than published: {received:?}"
        );
        received.push(device.next_payload().await);
    }
    let mut expected: Vec<String> = (0..50).map(|index| format!("q1-{index}")).collect();
    expected.push("end".to_owned());
    assert_eq!(received, expected);
    broker.shutdown().await;
}

/// Connecting with clean session discards the stored session and its queued messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_session_discards_queued_messages() {
    let broker = start(&test_config()).await;
    let (mut device, _) = TestClient::connect(options(&broker, "lamp", false)).await;
    device.subscribe(ACCEPTED, QoS::AtLeastOnce).await;
    device.disconnect().await;
    wait_for_connections(&broker, 0).await;

    let (mut service, _) = TestClient::connect(options(&broker, "shadow-service", true)).await;
    for index in 0..10 {
        service
            .publish(ACCEPTED, QoS::AtLeastOnce, false, format!("old-{index}"))
            .await;
    }
    service.wait_for_pubacks(10).await;

    let (mut device, connack) = TestClient::connect(options(&broker, "lamp", true)).await;
    assert!(!connack.session_present);
    device.subscribe(ACCEPTED, QoS::AtLeastOnce).await;
    service
        .publish(ACCEPTED, QoS::AtLeastOnce, false, "new")
        .await;
    assert_eq!(
        device.next_payload().await,
        "new",
        "no message of the old session is left"
    );
    device.disconnect().await;
    wait_for_connections(&broker, 1).await;

    let (_device, connack) = TestClient::connect(options(&broker, "lamp", false)).await;
    assert!(
        !connack.session_present,
        "the clean session ended with its connection"
    );
    broker.shutdown().await;
}

/// A second connection with the same client id closes the first and takes over its
/// persistent session with its subscriptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_client_id_takes_over() {
    let broker = start(&test_config()).await;
    let (mut first, _) = TestClient::connect(options(&broker, "lamp", false)).await;
    first.subscribe(ACCEPTED, QoS::AtLeastOnce).await;

    let (mut second, connack) = TestClient::connect(options(&broker, "lamp", false)).await;
    assert!(connack.session_present);
    first.wait_for_close().await;

    let (service, _) = TestClient::connect(options(&broker, "shadow-service", true)).await;
    service
        .publish(ACCEPTED, QoS::AtLeastOnce, false, "to-second")
        .await;
    assert_eq!(second.next_payload().await, "to-second");
    wait_for_connections(&broker, 2).await;
    broker.shutdown().await;
}

/// The will is published when a client disappears without DISCONNECT, and not after a
/// DISCONNECT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_published_on_abrupt_close() {
    let broker = start(&test_config()).await;
    let (mut watcher, _) = TestClient::connect(options(&broker, "watcher", true)).await;
    watcher
        .subscribe("devices/+/status", QoS::AtLeastOnce)
        .await;

    let mut polite = options(&broker, "polite", true);
    polite.set_last_will(ClientLastWill::new(
        "devices/polite/status",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let (polite, _) = TestClient::connect(polite).await;
    polite.disconnect().await;

    let mut abrupt = options(&broker, "abrupt", true);
    abrupt.set_last_will(ClientLastWill::new(
        "devices/abrupt/status",
        "offline",
        QoS::AtLeastOnce,
        false,
    ));
    let (abrupt, _) = TestClient::connect(abrupt).await;
    wait_for_connections(&broker, 2).await;
    drop(abrupt);

    let will = watcher.next_publish().await;
    assert_eq!(will.topic, "devices/abrupt/status");
    assert_eq!(&will.payload[..], b"offline");
    broker.shutdown().await;
}

/// A client silent for 1.5 times its keep-alive is disconnected and its will published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_timeout_publishes_will() {
    let broker = start(&test_config()).await;
    let (mut watcher, _) = TestClient::connect(options(&broker, "watcher", true)).await;
    watcher
        .subscribe("devices/+/status", QoS::AtLeastOnce)
        .await;

    let mut connect = connect_packet("sleepy", true, 1);
    connect.last_will = Some(LastWill::new(
        "devices/sleepy/status",
        "lost",
        QoS::AtLeastOnce,
        false,
    ));
    let started = Instant::now();
    let (mut sleepy, _) = RawClient::connect(broker.local_addr(), connect).await;
    sleepy.expect_closed().await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1400),
        "closed after {elapsed:?}, before 1.5 s"
    );

    assert_eq!(watcher.next_payload().await, "lost");
    broker.shutdown().await;
}

/// Unacknowledged messages are sent again with DUP after a reconnect, in order, before new
/// ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_messages_resent_with_dup() {
    let broker = start(&test_config()).await;
    let address = broker.local_addr();
    let (mut device, _) = RawClient::connect(address, connect_packet("lamp", false, 30)).await;
    device.subscribe(1, &[(ACCEPTED, QoS::AtLeastOnce)]).await;
    let (mut service, _) = TestClient::connect(options(&broker, "shadow-service", true)).await;
    for index in 0..3 {
        service
            .publish(ACCEPTED, QoS::AtLeastOnce, false, format!("m{index}"))
            .await;
    }
    service.wait_for_pubacks(3).await;
    let mut first_ids = Vec::new();
    for _ in 0..3 {
        let publish = device.receive_publish().await;
        assert!(!publish.dup);
        first_ids.push(publish.pkid);
    }
    drop(device);
    wait_for_connections(&broker, 1).await;

    service
        .publish(ACCEPTED, QoS::AtLeastOnce, false, "m3")
        .await;
    service.wait_for_pubacks(1).await;
    let (mut device, connack) =
        RawClient::connect(address, connect_packet("lamp", false, 30)).await;
    assert!(connack.session_present);
    let mut resent = Vec::new();
    for _ in 0..3 {
        let publish = device.receive_publish().await;
        assert!(publish.dup, "resent message {} without DUP", publish.pkid);
        resent.push((
            publish.pkid,
            String::from_utf8(publish.payload.to_vec()).expect("UTF-8"),
        ));
        device
            .send(RawPacket::PubAck(PubAck::new(publish.pkid)))
            .await;
    }
    let expected: Vec<(u16, String)> = first_ids
        .iter()
        .zip(["m0", "m1", "m2"])
        .map(|(&id, payload)| (id, payload.to_owned()))
        .collect();
    assert_eq!(resent, expected);
    let fresh = device.receive_publish().await;
    assert!(!fresh.dup);
    assert_eq!(&fresh.payload[..], b"m3");
    broker.shutdown().await;
}

/// An empty client id gets an assigned one with clean session, and is rejected without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_client_id() {
    let broker = start(&test_config()).await;
    let (mut anonymous, connack) =
        RawClient::connect(broker.local_addr(), connect_packet("", true, 30)).await;
    assert_eq!(connack.code, ConnectReturnCode::Success);
    anonymous.send(RawPacket::PingReq).await;
    assert_eq!(anonymous.receive().await, Some(RawPacket::PingResp));

    let (mut rejected, connack) =
        RawClient::connect(broker.local_addr(), connect_packet("", false, 30)).await;
    assert_eq!(connack.code, ConnectReturnCode::BadClientId);
    rejected.expect_closed().await;
    broker.shutdown().await;
}
