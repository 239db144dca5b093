//! Session queue, inflight window and packet ids, without sockets.

use std::sync::Arc;

use bytes::Bytes;
use rumqttc::mqttbytes::QoS;

use crate::broker::session::{Enqueued, Message, Session, SessionLimits};

const LIMITS: SessionLimits = SessionLimits {
    max_inflight: 2,
    max_queued_messages: 4,
    max_queued_qos0_messages: 3,
};

fn message(payload: &str, qos: QoS) -> Message {
    Message {
        topic: Arc::from("t"),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos,
        retain: false,
    }
}

/// Takes every packet the session can send now, as `(payload, packet id, dup)`.
fn take_all(session: &mut Session) -> Vec<(String, u16, bool)> {
    let batch = session.take_outgoing(&LIMITS, usize::MAX);
    assert!(
        !batch.more,
        "an unlimited batch leaves nothing that can be sent"
    );
    batch
        .packets
        .into_iter()
        .map(|publish| {
            let payload = String::from_utf8(publish.payload.to_vec()).expect("UTF-8");
            (payload, publish.pkid, publish.dup)
        })
        .collect()
}

#[test]
fn inflight_window_holds_back_qos1() {
    let mut session = Session::new(false);
    for payload in ["a", "b", "c"] {
        assert_eq!(
            session.enqueue(message(payload, QoS::AtLeastOnce), true, &LIMITS),
            Enqueued::Queued
        );
    }
    assert_eq!(
        take_all(&mut session),
        [("a".to_owned(), 1, false), ("b".to_owned(), 2, false)]
    );
    assert_eq!(session.inflight(), 2);
    assert!(take_all(&mut session).is_empty());

    assert!(session.acknowledge(1));
    assert!(
        !session.acknowledge(1),
        "a second PUBACK for the same id is unknown"
    );
    assert_eq!(take_all(&mut session), [("c".to_owned(), 3, false)]);
    assert_eq!(session.queued(), 0);
}

#[test]
fn qos0_waits_behind_blocked_qos1() {
    let mut session = Session::new(true);
    for payload in ["a", "b", "c"] {
        session.enqueue(message(payload, QoS::AtLeastOnce), true, &LIMITS);
    }
    let first: Vec<String> = take_all(&mut session)
        .into_iter()
        .map(|(payload, ..)| payload)
        .collect();
    assert_eq!(first, ["a", "b"]);
    assert_eq!(
        session.enqueue(message("d", QoS::AtMostOnce), true, &LIMITS),
        Enqueued::Queued
    );
    assert!(
        take_all(&mut session).is_empty(),
        "QoS 0 must not overtake the waiting QoS 1 message"
    );

    session.acknowledge(1);
    let second = take_all(&mut session);
    assert_eq!(
        second,
        [("c".to_owned(), 3, false), ("d".to_owned(), 0, false)]
    );
}

#[test]
fn resume_resends_inflight_with_dup_first() {
    let mut session = Session::new(false);
    for payload in ["a", "b", "c"] {
        session.enqueue(message(payload, QoS::AtLeastOnce), true, &LIMITS);
    }
    take_all(&mut session);
    session.suspend();
    session.enqueue(message("d", QoS::AtLeastOnce), false, &LIMITS);
    session.resume();

    assert_eq!(
        take_all(&mut session),
        [("a".to_owned(), 1, true), ("b".to_owned(), 2, true)]
    );
    session.acknowledge(2);
    session.acknowledge(1);
    assert_eq!(
        take_all(&mut session),
        [("c".to_owned(), 3, false), ("d".to_owned(), 4, false)]
    );
}

#[test]
fn acknowledging_before_resend_skips_the_message() {
    let mut session = Session::new(false);
    for payload in ["a", "b"] {
        session.enqueue(message(payload, QoS::AtLeastOnce), true, &LIMITS);
    }
    take_all(&mut session);
    session.suspend();
    session.resume();
    assert!(session.acknowledge(1));
    assert_eq!(take_all(&mut session), [("b".to_owned(), 2, true)]);
}

#[test]
fn offline_session_drops_qos0() {
    let mut session = Session::new(false);
    session.enqueue(message("live", QoS::AtMostOnce), true, &LIMITS);
    session.suspend();
    assert_eq!(session.queued(), 0, "suspend drops queued QoS 0 messages");
    assert_eq!(
        session.enqueue(message("a", QoS::AtMostOnce), false, &LIMITS),
        Enqueued::DroppedOffline
    );
    assert_eq!(
        session.enqueue(message("b", QoS::AtLeastOnce), false, &LIMITS),
        Enqueued::Queued
    );
    assert_eq!(session.queued(), 1);
}

#[test]
fn full_queue_drops_qos0() {
    let mut session = Session::new(true);
    for payload in ["a", "b", "c"] {
        assert_eq!(
            session.enqueue(message(payload, QoS::AtMostOnce), true, &LIMITS),
            Enqueued::Queued
        );
    }
    assert_eq!(
        session.enqueue(message("d", QoS::AtMostOnce), true, &LIMITS),
        Enqueued::DroppedQos0
    );
    assert_eq!(
        session.enqueue(message("e", QoS::AtLeastOnce), true, &LIMITS),
        Enqueued::Queued
    );
    assert_eq!(session.queued(), 4);
}

#[test]
fn full_queue_drops_oldest_for_qos1() {
    let mut session = Session::new(false);
    let outcomes: Vec<Enqueued> = ["a", "b", "c", "d", "e", "f"]
        .into_iter()
        .map(|payload| session.enqueue(message(payload, QoS::AtLeastOnce), false, &LIMITS))
        .collect();
    assert_eq!(outcomes[..4], [Enqueued::Queued; 4]);
    assert_eq!(outcomes[4], Enqueued::QueuedDroppingOldest { first: true });
    assert_eq!(outcomes[5], Enqueued::QueuedDroppingOldest { first: false });

    session.resume();
    let payloads: Vec<String> = take_all(&mut session)
        .into_iter()
        .map(|(payload, ..)| payload)
        .collect();
    assert_eq!(payloads, ["c", "d"]);
}

#[test]
fn byte_budget_splits_batches() {
    let mut session = Session::new(true);
    for payload in ["aaaa", "bbbb", "cccc"] {
        session.enqueue(message(payload, QoS::AtMostOnce), true, &LIMITS);
    }
    let first = session.take_outgoing(&LIMITS, 1);
    assert_eq!(
        first.packets.len(),
        1,
        "a budget below one message still takes one"
    );
    assert!(first.more);
    let rest = session.take_outgoing(&LIMITS, usize::MAX);
    assert_eq!(rest.packets.len(), 2);
    assert!(!rest.more);
}

#[test]
fn packet_ids_wrap_and_skip_ids_in_use() {
    let mut session = Session::new(true);
    session.enqueue(message("held", QoS::AtLeastOnce), true, &LIMITS);
    assert_eq!(take_all(&mut session), [("held".to_owned(), 1, false)]);

    // Cycle through every other id while id 1 stays unacknowledged.
    for expected_id in 2..=u16::MAX {
        session.enqueue(message("x", QoS::AtLeastOnce), true, &LIMITS);
        let sent = take_all(&mut session);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].1, expected_id);
        assert!(session.acknowledge(expected_id));
    }
    session.enqueue(message("wrapped", QoS::AtLeastOnce), true, &LIMITS);
    assert_eq!(take_all(&mut session), [("wrapped".to_owned(), 2, false)]);
}
