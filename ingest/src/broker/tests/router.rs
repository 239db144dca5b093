//! Routing, shared subscriptions, retained messages and session life cycle in the router,
//! without sockets.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::SubscribeReasonCode;

use crate::broker::link::{ConnectRequest, ConnectionSignals, SessionHandle, SessionTakenOver};
use crate::broker::metrics::Counters;
use crate::broker::router::Router;
use crate::broker::session::{Message, SessionLimits};

const LIMITS: SessionLimits = SessionLimits {
    max_inflight: 100,
    max_queued_messages: 1_000,
    max_queued_qos0_messages: 2,
};

struct Client {
    handle: SessionHandle,
    signals: Arc<ConnectionSignals>,
    session_present: bool,
}

fn router() -> (Router, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    (Router::new(LIMITS, Arc::clone(&counters)), counters)
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
