//! Routing, shared subscriptions, retained messages and session life cycle in the router,
//! without sockets.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::SubscribeReasonCode;

use crate::broker::flow::FlowControlLimits;
use crate::broker::link::{ConnectRequest, ConnectionSignals, SessionHandle, SessionTakenOver};
use crate::broker::metrics::Counters;
use crate::broker::router::Router;
use crate::broker::session::{Message, SessionLimits};

const LIMITS: SessionLimits = SessionLimits {
    max_inflight: 100,
    max_queued_messages: 1_000,
    max_queued_qos0_messages: 2,
};

const FLOW_CONTROL_HIGH_MESSAGES: usize = 4;

struct Client {
    handle: SessionHandle,
    signals: Arc<ConnectionSignals>,
    session_present: bool,
}

fn router() -> (Router, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let flow_limits = FlowControlLimits::new(FLOW_CONTROL_HIGH_MESSAGES);
    (
        Router::new(LIMITS, flow_limits, Arc::clone(&counters)),
        counters,
    )
}

fn connect(
    router: &mut Router,
    client_id: &str,
    connection_id: u64,
    clean_session: bool,
) -> Client {
    connect_with_will(router, client_id, connection_id, clean_session, None)
}

fn connect_with_will(
    router: &mut Router,
    client_id: &str,
    connection_id: u64,
    clean_session: bool,
    will: Option<Message>,
) -> Client {
    let handle = SessionHandle {
        client_id: Arc::from(client_id),
        connection_id,
    };
    let signals = Arc::new(ConnectionSignals::default());
    let session_present = router.connect(ConnectRequest {
        handle: handle.clone(),
        clean_session,
        will,
        signals: Arc::clone(&signals),
    });
    Client {
        handle,
        signals,
        session_present,
    }
}

fn message(topic: &str, qos: QoS, payload: &str) -> Message {
    Message {
        topic: Arc::from(topic),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos,
        retain: false,
    }
}

fn retained(topic: &str, payload: &str) -> Message {
    Message {
        retain: true,
        ..message(topic, QoS::AtLeastOnce, payload)
    }
}

fn subscribe(router: &mut Router, client: &Client, filter: &str, qos: QoS) {
    let code = router
        .subscribe(&client.handle, filter, qos)
        .expect("session owned");
    assert!(
        matches!(code, SubscribeReasonCode::Success(_)),
        "subscribe to {filter:?}: {code:?}"
    );
}

/// Takes every message the client can be sent now, acknowledging each QoS 1 message, as
/// `(topic, payload, qos, retain)`.
fn received(router: &mut Router, client: &Client) -> Vec<(String, String, QoS, bool)> {
    let batch = router
        .take_outgoing(&client.handle, usize::MAX)
        .expect("session owned");
    batch
        .packets
        .into_iter()
        .map(|publish| {
            if publish.qos == QoS::AtLeastOnce {
                router
                    .acknowledge(&client.handle, publish.pkid)
                    .expect("session owned");
            }
            let payload = String::from_utf8(publish.payload.to_vec()).expect("UTF-8");
            (publish.topic, payload, publish.qos, publish.retain)
        })
        .collect()
}

fn payloads(router: &mut Router, client: &Client) -> Vec<String> {
    received(router, client)
        .into_iter()
        .map(|(_, payload, ..)| payload)
        .collect()
}

#[test]
fn overlapping_filters_deliver_once_at_highest_qos() {
    let (mut router, _) = router();
    let lamp = connect(&mut router, "lamp", 1, true);
    subscribe(
        &mut router,
        &lamp,
        "$aws/things/+/shadow/update",
        QoS::AtMostOnce,
    );
    subscribe(
        &mut router,
        &lamp,
        "$aws/things/lamp/shadow/#",
        QoS::AtLeastOnce,
    );
    subscribe(&mut router, &lamp, "#", QoS::AtLeastOnce);

    router.publish(message(
        "$aws/things/lamp/shadow/update",
        QoS::AtLeastOnce,
        "on",
    ));
    let delivered = received(&mut router, &lamp);
    assert_eq!(
        delivered.len(),
        1,
        "one copy despite two matching filters: {delivered:?}"
    );
    assert_eq!(delivered[0].2, QoS::AtLeastOnce);
    assert!(!delivered[0].3, "a routed message is not marked retained");
}

#[test]
fn delivery_qos_is_lower_of_publish_and_grant() {
    let (mut router, _) = router();
    let lamp = connect(&mut router, "lamp", 1, true);
    subscribe(&mut router, &lamp, "low", QoS::AtMostOnce);
    subscribe(&mut router, &lamp, "high", QoS::ExactlyOnce);

    router.publish(message("low", QoS::AtLeastOnce, "a"));
    router.publish(message("high", QoS::AtMostOnce, "b"));
    router.publish(message("high", QoS::AtLeastOnce, "c"));
    let qos: Vec<QoS> = received(&mut router, &lamp)
        .into_iter()
        .map(|(_, _, qos, _)| qos)
        .collect();
    assert_eq!(qos, [QoS::AtMostOnce, QoS::AtMostOnce, QoS::AtLeastOnce]);
}

#[test]
fn qos2_subscription_is_granted_qos1() {
    let (mut router, _) = router();
    let lamp = connect(&mut router, "lamp", 1, true);
    let code = router
        .subscribe(&lamp.handle, "a", QoS::ExactlyOnce)
        .expect("session owned");
    assert_eq!(code, SubscribeReasonCode::Success(QoS::AtLeastOnce));
    let invalid = router
        .subscribe(&lamp.handle, "a/#/b", QoS::AtMostOnce)
        .expect("session owned");
    assert_eq!(invalid, SubscribeReasonCode::Failure);
}

#[test]
fn share_group_takes_turns() {
    let (mut router, _) = router();
    let members: Vec<Client> = (1..=3)
        .map(|id| connect(&mut router, &format!("worker-{id}"), id, true))
        .collect();
    for member in &members {
        subscribe(
            &mut router,
            member,
            "$share/ingest/$aws/things/+/shadow/update",
            QoS::AtLeastOnce,
        );
    }
    let monitor = connect(&mut router, "monitor", 9, true);
    subscribe(
        &mut router,
        &monitor,
        "$aws/things/+/shadow/update",
        QoS::AtLeastOnce,
    );

    for index in 0..6 {
        router.publish(message(
            "$aws/things/lamp/shadow/update",
            QoS::AtLeastOnce,
            &index.to_string(),
        ));
    }
    let shares: Vec<usize> = members
        .iter()
        .map(|member| payloads(&mut router, member).len())
        .collect();
    assert_eq!(shares, [2, 2, 2]);
    assert_eq!(
        payloads(&mut router, &monitor).len(),
        6,
        "plain subscribers get every message"
    );
}

#[test]
fn share_group_prefers_connected_members() {
    let (mut router, _) = router();
    let offline = connect(&mut router, "offline", 1, false);
    subscribe(&mut router, &offline, "$share/g/jobs/+", QoS::AtLeastOnce);
    router.disconnect(&offline.handle, false);
    let online = connect(&mut router, "online", 2, true);
    subscribe(&mut router, &online, "$share/g/jobs/+", QoS::AtLeastOnce);

    for index in 0..4 {
        router.publish(message("jobs/a", QoS::AtLeastOnce, &index.to_string()));
    }
    assert_eq!(payloads(&mut router, &online), ["0", "1", "2", "3"]);
    assert_eq!(
        router.session("offline").map(|session| session.queued()),
        Some(0)
    );
}

#[test]
fn retained_message_sent_on_subscribe() {
    let (mut router, _) = router();
    router.publish(retained("$aws/things/lamp/shadow/reported", "on"));
    router.publish(retained("$aws/things/fan/shadow/reported", "off"));
    assert_eq!(router.retained_count(), 2);

    let lamp = connect(&mut router, "lamp", 1, true);
    subscribe(
        &mut router,
        &lamp,
        "$aws/things/lamp/shadow/#",
        QoS::AtMostOnce,
    );
    let delivered = received(&mut router, &lamp);
    assert_eq!(
        delivered,
        [(
            "$aws/things/lamp/shadow/reported".to_owned(),
            "on".to_owned(),
            QoS::AtMostOnce,
            true
        )]
    );

    let group = connect(&mut router, "worker", 2, true);
    subscribe(
        &mut router,
        &group,
        "$share/g/$aws/things/+/shadow/reported",
        QoS::AtLeastOnce,
    );
    assert!(
        payloads(&mut router, &group).is_empty(),
        "share groups get no retained messages"
    );
}

#[test]
fn empty_retained_payload_clears() {
    let (mut router, _) = router();
    let lamp = connect(&mut router, "lamp", 1, true);
    subscribe(&mut router, &lamp, "state", QoS::AtLeastOnce);
    router.publish(retained("state", "on"));
    router.publish(retained("state", ""));
    assert_eq!(router.retained_count(), 0);
    assert_eq!(
        payloads(&mut router, &lamp),
        ["on", ""],
        "the clearing message is routed too"
    );
}

#[test]
fn takeover_closes_old_connection_and_publishes_its_will() {
    let (mut router, _) = router();
    let watcher = connect(&mut router, "watcher", 1, true);
    subscribe(&mut router, &watcher, "status/+", QoS::AtLeastOnce);
    let will = Some(message("status/lamp", QoS::AtLeastOnce, "offline"));
    let old = connect_with_will(&mut router, "lamp", 2, true, will);

    let new = connect(&mut router, "lamp", 3, true);
    assert!(!new.session_present);
    assert!(
        has_permit(&old.signals.replaced),
        "the old connection is told to close"
    );
    assert_eq!(payloads(&mut router, &watcher), ["offline"]);

    assert_eq!(
        router.subscribe(&old.handle, "x", QoS::AtMostOnce),
        Err(SessionTakenOver)
    );
    assert!(router.take_outgoing(&old.handle, 1).is_err());
    router.disconnect(&old.handle, true);
    assert!(
        router.take_outgoing(&new.handle, 1).is_ok(),
        "the old connection cannot detach the new one"
    );
    assert!(
        payloads(&mut router, &watcher).is_empty(),
        "the will is published once"
    );
}

#[test]
fn persistent_session_queues_qos1_while_offline() {
    let (mut router, _) = router();
    let lamp = connect(&mut router, "lamp", 1, false);
    assert!(!lamp.session_present);
    subscribe(&mut router, &lamp, "cmd", QoS::AtLeastOnce);
    router.disconnect(&lamp.handle, true);

    router.publish(message("cmd", QoS::AtLeastOnce, "1"));
    router.publish(message("cmd", QoS::AtMostOnce, "dropped"));
    router.publish(message("cmd", QoS::AtLeastOnce, "2"));

    let lamp = connect(&mut router, "lamp", 2, false);
    assert!(lamp.session_present);
    assert_eq!(payloads(&mut router, &lamp), ["1", "2"]);
    router.publish(message("cmd", QoS::AtLeastOnce, "3"));
    assert_eq!(
        payloads(&mut router, &lamp),
        ["3"],
        "subscriptions survive the reconnect"
    );
}

#[test]
fn clean_connect_discards_stored_session() {
    let (mut router, _) = router();
    let lamp = connect(&mut router, "lamp", 1, false);
    subscribe(&mut router, &lamp, "cmd", QoS::AtLeastOnce);
    router.disconnect(&lamp.handle, true);
    router.publish(message("cmd", QoS::AtLeastOnce, "1"));

    let lamp = connect(&mut router, "lamp", 2, true);
    assert!(!lamp.session_present);
    assert!(payloads(&mut router, &lamp).is_empty());
    assert!(router.has_no_subscriptions());

    router.disconnect(&lamp.handle, true);
    assert!(
        router.session("lamp").is_none(),
        "a clean session ends with its connection"
    );
}

#[test]
fn will_published_only_on_abrupt_disconnect() {
    let (mut router, _) = router();
    let watcher = connect(&mut router, "watcher", 1, true);
    subscribe(&mut router, &watcher, "status/#", QoS::AtLeastOnce);
    for (connection_id, publish_will) in [(2, false), (3, true)] {
        let will = Some(message(
            "status/lamp",
            QoS::AtLeastOnce,
            &format!("will-{connection_id}"),
        ));
        let lamp = connect_with_will(&mut router, "lamp", connection_id, true, will);
        router.disconnect(&lamp.handle, publish_will);
    }
    assert_eq!(payloads(&mut router, &watcher), ["will-3"]);
}

#[test]
fn slow_subscriber_qos0_is_dropped_and_counted() {
    let (mut router, counters) = router();
    let slow = connect(&mut router, "slow", 1, true);
    subscribe(&mut router, &slow, "load", QoS::AtMostOnce);
    for index in 0..5 {
        router.publish(message("load", QoS::AtLeastOnce, &index.to_string()));
    }
    assert_eq!(counters.qos0_dropped.load(Ordering::Relaxed), 3);
    assert_eq!(payloads(&mut router, &slow), ["0", "1"]);
    assert!(
        has_permit(&slow.signals.outgoing),
        "queued messages wake the connection"
    );
}

#[test]
fn unsubscribe_stops_delivery() {
    let (mut router, _) = router();
    let lamp = connect(&mut router, "lamp", 1, true);
    subscribe(&mut router, &lamp, "a/+", QoS::AtLeastOnce);
    subscribe(&mut router, &lamp, "$share/g/a/+", QoS::AtLeastOnce);
    router
        .unsubscribe(
            &lamp.handle,
            &[
                "a/+".to_owned(),
                "$share/g/a/+".to_owned(),
                "never".to_owned(),
            ],
        )
        .expect("session owned");
    router.publish(message("a/b", QoS::AtLeastOnce, "x"));
    assert!(payloads(&mut router, &lamp).is_empty());
    assert!(router.has_no_subscriptions());
}

/// Takes one message for `client` and acknowledges it, like a subscriber that reads one
/// message at a time.
fn take_one(router: &mut Router, client: &Client) {
    let batch = router
        .take_outgoing(&client.handle, 1)
        .expect("session owned");
    assert_eq!(batch.packets.len(), 1, "one message taken");
    for publish in batch.packets {
        router
            .acknowledge(&client.handle, publish.pkid)
            .expect("session owned");
    }
}

/// Publishes a QoS 1 message from `publisher` to `topic` and returns the client ids of the
/// congested sessions the publisher must wait for.
fn publish_qos1(
    router: &mut Router,
    publisher: &Client,
    topic: &str,
    payload: &str,
) -> Vec<String> {
    router
        .publish_from(&publisher.handle, message(topic, QoS::AtLeastOnce, payload))
        .expect("session owned")
        .iter()
        .map(|session| session.client_id.to_string())
        .collect()
}

#[test]
fn congested_subscriber_pauses_publisher_until_low_mark() {
    let (mut router, _) = router();
    let slow = connect(&mut router, "slow", 1, true);
    subscribe(&mut router, &slow, "load", QoS::AtLeastOnce);
    let publisher = connect(&mut router, "publisher", 2, true);
    for index in 0..FLOW_CONTROL_HIGH_MESSAGES - 1 {
        let congested = publish_qos1(&mut router, &publisher, "load", &index.to_string());
        assert!(
            congested.is_empty(),
            "message {index} is below the high-water mark"
        );
    }
    let waiting = router
        .publish_from(
            &publisher.handle,
            message("load", QoS::AtLeastOnce, "at-mark"),
        )
        .expect("session owned");
    assert_eq!(
        waiting.len(),
        1,
        "the message at the mark pauses its publisher"
    );
    assert_eq!(&*waiting[0].client_id, "slow");
    assert!(slow.signals.congestion.is_active());

    // The high-water mark is 4 and the low-water mark 2.
    take_one(&mut router, &slow);
    assert!(
        !waiting[0].has_drained(),
        "3 queued messages are above the low-water mark"
    );
    take_one(&mut router, &slow);
    assert!(
        waiting[0].has_drained(),
        "2 queued messages reach the low-water mark"
    );
    assert!(!slow.signals.congestion.is_active());
}

#[test]
fn pause_ends_at_first_drain() {
    let (mut router, _) = router();
    let slow = connect(&mut router, "slow", 1, true);
    subscribe(&mut router, &slow, "load", QoS::AtLeastOnce);
    let first = connect(&mut router, "first", 2, true);
    let second = connect(&mut router, "second", 3, true);
    for index in 0..FLOW_CONTROL_HIGH_MESSAGES - 1 {
        publish_qos1(&mut router, &second, "load", &index.to_string());
    }
    let waiting = router
        .publish_from(&first.handle, message("load", QoS::AtLeastOnce, "at-mark"))
        .expect("session owned");
    assert_eq!(waiting.len(), 1);

    take_one(&mut router, &slow);
    take_one(&mut router, &slow);
    assert!(publish_qos1(&mut router, &second, "load", "refill-1").is_empty());
    assert_eq!(
        publish_qos1(&mut router, &second, "load", "refill-2"),
        ["slow"]
    );
    assert!(
        waiting[0].has_drained(),
        "the first publisher may resume although the session is congested again"
    );
}

#[test]
fn qos0_offline_and_own_messages_never_pause() {
    let (mut router, _) = router();
    let echo = connect(&mut router, "echo", 1, true);
    subscribe(&mut router, &echo, "load", QoS::AtLeastOnce);
    let offline = connect(&mut router, "offline", 2, false);
    subscribe(&mut router, &offline, "load", QoS::AtLeastOnce);
    router.disconnect(&offline.handle, false);

    for index in 0..2 * FLOW_CONTROL_HIGH_MESSAGES {
        let congested = publish_qos1(&mut router, &echo, "load", &index.to_string());
        assert!(
            congested.is_empty(),
            "message {index} paused its publisher: {congested:?}"
        );
    }
    assert!(
        echo.signals.congestion.is_active(),
        "the publisher's own queue is congested, but it does not wait for itself"
    );

    let other = connect(&mut router, "other", 3, true);
    let congested = router
        .publish_from(&other.handle, message("load", QoS::AtMostOnce, "qos0"))
        .expect("session owned");
    assert!(
        congested.is_empty(),
        "a QoS 0 message never pauses its publisher: {congested:?}"
    );
    assert_eq!(publish_qos1(&mut router, &other, "load", "qos1"), ["echo"]);
}

#[test]
fn detaching_subscriber_ends_its_congestion() {
    let (mut router, _) = router();
    let publisher = connect(&mut router, "publisher", 1, true);
    let leaving = connect(&mut router, "leaving", 2, false);
    subscribe(&mut router, &leaving, "leave", QoS::AtLeastOnce);
    let replaced = connect(&mut router, "replaced", 3, false);
    subscribe(&mut router, &replaced, "replace", QoS::AtLeastOnce);
    let mut waits = Vec::new();
    for index in 0..FLOW_CONTROL_HIGH_MESSAGES {
        for topic in ["leave", "replace"] {
            let message = message(topic, QoS::AtLeastOnce, &index.to_string());
            waits.extend(
                router
                    .publish_from(&publisher.handle, message)
                    .expect("session owned"),
            );
        }
    }
    assert_eq!(waits.len(), 2, "each subscriber pauses the publisher once");

    router.disconnect(&leaving.handle, true);
    let replacing = connect(&mut router, "replaced", 4, false);
    assert!(replacing.session_present);
    assert!(waits.iter().all(|session| session.has_drained()));
    assert!(!leaving.signals.congestion.is_active());
    assert!(!replaced.signals.congestion.is_active());
    assert!(
        !replacing.signals.congestion.is_active(),
        "the new connection starts uncongested until the next QoS 1 message"
    );
}

/// Returns whether `notify` holds a stored permit, consuming it.
fn has_permit(notify: &tokio::sync::Notify) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("test runtime");
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_millis(50), notify.notified())
            .await
            .is_ok()
    })
}
