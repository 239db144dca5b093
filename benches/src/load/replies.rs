//! The reply task of one connection: polls rumqttc's event loop and matches each reply to the
//! update it replies to, by client token.
//!
//! Replies are `/update/accepted`, `/update/rejected` and `/update/delta` from a shadow
//! service, or the relayed copy of the update itself (topic `/update`) from a bare relay. An
//! update is complete once it has every reply it waits for; a rejected update waits for no
//! delta. In closed-loop mode a complete update frees its in-flight slot.

use std::sync::{Arc, Mutex, PoisonError};

use rumqttc::{Event, EventLoop, Outgoing, Packet, Publish};
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::connection::{
    AWAITING_DELTA, AWAITING_REPLY, Clock, ConnectionState, Phases, SETUP_CLIENT_TOKEN,
};
use super::token::ClientToken;
use crate::latency::MAX_TRACKED_LATENCY_US;

/// The fields of a reply the generator reads.
#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(rename = "clientToken", borrow)]
    client_token: Option<std::borrow::Cow<'a, str>>,
    code: Option<u16>,
}

/// Kinds of reply, by topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReplyKind {
    /// `/update/accepted`, or the relayed update.
    Accepted,
    /// `/update/rejected`.
    Rejected,
    /// `/update/delta`.
    Delta,
}

impl ReplyKind {
    fn of(topic: &str) -> Option<Self> {
        if topic.ends_with("/update/accepted") || topic.ends_with("/update") {
            Some(ReplyKind::Accepted)
        } else if topic.ends_with("/update/delta") {
            Some(ReplyKind::Delta)
        } else if topic.ends_with("/update/rejected") {
            Some(ReplyKind::Rejected)
        } else {
            None
        }
    }
}

/// Polls the connection's event loop, matching replies to updates, until DISCONNECT is sent or
/// the connection fails. The outcome is in the shared state.
pub async fn handle_replies(
    index: u32,
    mut event_loop: EventLoop,
    state: Arc<Mutex<ConnectionState>>,
    permits: Arc<Semaphore>,
    clock: Clock,
    phases: Phases,
) {
    loop {
        match event_loop.poll().await {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let now_us = clock.now_us();
                let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                if record_reply(&mut state, index, &publish, now_us, phases) {
                    permits.add_permits(1);
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(error) => {
                let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                state.stats.error = Some(error.to_string());
                return;
            }
        }
    }
}

/// Counts one reply and returns whether it completed an outstanding update.
pub(super) fn record_reply(
    state: &mut ConnectionState,
    index: u32,
    publish: &Publish,
    now_us: u64,
    phases: Phases,
) -> bool {
    let Some(kind) = ReplyKind::of(&publish.topic) else {
        state.stats.unexpected += 1;
        return false;
    };
    let reply: Option<Reply<'_>> = serde_json::from_slice(&publish.payload).ok();
    let token_text = reply
        .as_ref()
        .and_then(|reply| reply.client_token.as_deref());
    if token_text == Some(SETUP_CLIENT_TOKEN) {
        // A late delta of the desired-state set-up.
        return false;
    }
    let token = token_text
        .and_then(ClientToken::parse)
        .filter(|token| token.connection == index);
    let Some(token) = token else {
        state.stats.unexpected += 1;
        return false;
    };
    let Some(awaiting) = state.outstanding.get_mut(&token.sequence) else {
        state.stats.duplicate += 1;
        return false;
    };
    let bit = match kind {
        ReplyKind::Delta => AWAITING_DELTA,
        ReplyKind::Accepted | ReplyKind::Rejected => AWAITING_REPLY,
    };
    if *awaiting & bit == 0 {
        state.stats.duplicate += 1;
        return false;
    }
    *awaiting &= !bit;
    if kind == ReplyKind::Rejected {
        // A rejected update changes no shadow, so no delta follows.
        *awaiting = 0;
    }
    let complete = *awaiting == 0;
    if complete {
        state.outstanding.remove(&token.sequence);
    }

    let stats = &mut state.stats;
    let measured = token.sent_at_us >= phases.measure_from_us;
    let latency_us = now_us
        .saturating_sub(token.sent_at_us)
        .min(MAX_TRACKED_LATENCY_US);
    match kind {
        ReplyKind::Accepted => {
            stats.accepted += 1;
            stats.last_accepted_us = now_us;
            if (phases.measure_from_us..=phases.send_until_us).contains(&now_us) {
                stats.accepted_in_window += 1;
            }
            if measured {
                stats.latency.saturating_record(latency_us);
            }
        }
        ReplyKind::Delta => {
            stats.deltas += 1;
            if measured {
                stats.delta_latency.saturating_record(latency_us);
            }
        }
        ReplyKind::Rejected => {
            let code = reply.and_then(|reply| reply.code).unwrap_or(0);
            *stats.rejected.entry(code).or_default() += 1;
        }
    }
    complete
}

#[cfg(test)]
mod tests {
    use rumqttc::QoS;

    use super::*;
    use crate::load::connection::{Budget, update_payload};

    const PHASES: Phases = Phases {
        measure_from_us: 1_000,
        send_until_us: 10_000,
    };

    fn reply(topic: &str, payload: &str) -> Publish {
        Publish::new(topic, QoS::AtLeastOnce, payload.as_bytes().to_vec())
    }

    fn state_with_outstanding(sequences: &[u64]) -> ConnectionState {
        let mut state = ConnectionState::default();
        state
            .outstanding
            .extend(sequences.iter().map(|sequence| (*sequence, AWAITING_REPLY)));
        state
    }

    #[test]
    fn accepted_reply_records_latency() {
        let mut state = state_with_outstanding(&[3]);
        let publish = reply(
            "$aws/things/load-3/shadow/update/accepted",
            r#"{"state":{},"version":2,"clientToken":"0.3.2000"}"#,
        );
        assert!(record_reply(&mut state, 0, &publish, 2_500, PHASES));
        assert!(state.outstanding.is_empty());
        assert_eq!(state.stats.accepted, 1);
        assert_eq!(state.stats.accepted_in_window, 1);
        assert_eq!(state.stats.latency.len(), 1);
        assert_eq!(state.stats.latency.max(), 500);
    }

    #[test]
    fn warm_up_update_is_not_measured() {
        let mut state = state_with_outstanding(&[0]);
        let publish = reply(
            "$aws/things/load-0/shadow/update/accepted",
            r#"{"clientToken":"0.0.500"}"#,
        );
        assert!(record_reply(&mut state, 0, &publish, 1_200, PHASES));
        assert_eq!(state.stats.accepted, 1);
        assert_eq!(state.stats.latency.len(), 0);
    }

    #[test]
    fn rejected_reply_is_counted_by_code() {
        let mut state = state_with_outstanding(&[5]);
        let publish = reply(
            "$aws/things/load-5/shadow/update/rejected",
            r#"{"code":503,"message":"Service unavailable","clientToken":"0.5.2000"}"#,
        );
        assert!(record_reply(&mut state, 0, &publish, 2_500, PHASES));
        assert_eq!(state.stats.rejected.get(&503), Some(&1));
        assert_eq!(state.stats.accepted, 0);
    }

    #[test]
    fn second_reply_counts_as_duplicate() {
        let mut state = state_with_outstanding(&[1]);
        let publish = reply(
            "$aws/things/load-1/shadow/update/accepted",
            r#"{"clientToken":"0.1.2000"}"#,
        );
        assert!(record_reply(&mut state, 0, &publish, 2_500, PHASES));
        assert!(!record_reply(&mut state, 0, &publish, 2_600, PHASES));
        assert_eq!(state.stats.duplicate, 1);
    }

    #[test]
    fn reply_of_other_connection_is_unexpected() {
        let mut state = state_with_outstanding(&[1]);
        let publish = reply(
            "$aws/things/load-1/shadow/update/accepted",
            r#"{"clientToken":"4.1.2000"}"#,
        );
        assert!(!record_reply(&mut state, 0, &publish, 2_500, PHASES));
        assert_eq!(state.stats.unexpected, 1);
        assert_eq!(state.outstanding.len(), 1);
    }

    #[test]
    fn update_waits_for_accepted_and_delta() {
        let mut state = ConnectionState::default();
        state.outstanding.insert(4, AWAITING_REPLY | AWAITING_DELTA);
        let accepted = reply(
            "$aws/things/load-4/shadow/update/accepted",
            r#"{"clientToken":"0.4.2000"}"#,
        );
        let delta = reply(
            "$aws/things/load-4/shadow/update/delta",
            r#"{"state":{"mode":"eco"},"version":3,"clientToken":"0.4.2000"}"#,
        );
        assert!(!record_reply(&mut state, 0, &accepted, 2_400, PHASES));
        assert_eq!(state.missing(), (0, 1));
        assert!(record_reply(&mut state, 0, &delta, 2_700, PHASES));
        assert_eq!(state.missing(), (0, 0));
        assert_eq!(state.stats.deltas, 1);
        assert_eq!(state.stats.delta_latency.max(), 700);
        assert!(!record_reply(&mut state, 0, &delta, 2_800, PHASES));
        assert_eq!(state.stats.duplicate, 1);
    }

    #[test]
    fn rejected_update_waits_for_no_delta() {
        let mut state = ConnectionState::default();
        state.outstanding.insert(6, AWAITING_REPLY | AWAITING_DELTA);
        let rejected = reply(
            "$aws/things/load-6/shadow/update/rejected",
            r#"{"code":409,"message":"Version conflict","clientToken":"0.6.2000"}"#,
        );
        assert!(record_reply(&mut state, 0, &rejected, 2_400, PHASES));
        assert_eq!(state.missing(), (0, 0));
    }

    #[test]
    fn relayed_update_counts_as_reply() {
        let mut state = state_with_outstanding(&[2]);
        let relayed = reply(
            "$aws/things/load-2/shadow/update",
            &String::from_utf8(update_payload(2, "0.2.2000")).expect("UTF-8"),
        );
        assert!(record_reply(&mut state, 0, &relayed, 2_300, PHASES));
        assert_eq!(state.stats.accepted, 1);
        assert_eq!(state.stats.latency.max(), 300);
    }

    #[test]
    fn setup_delta_is_ignored() {
        let mut state = state_with_outstanding(&[1]);
        let delta = reply(
            "$aws/things/load-1/shadow/update/delta",
            r#"{"state":{"mode":"eco"},"clientToken":"load-setup"}"#,
        );
        assert!(!record_reply(&mut state, 0, &delta, 2_300, PHASES));
        assert_eq!(state.stats.unexpected, 0);
        assert_eq!(state.outstanding.len(), 1);
    }

    #[test]
    fn payload_is_a_valid_update() {
        let payload = update_payload(17, "0.17.5000123");
        let value: serde_json::Value = serde_json::from_slice(&payload).expect("payload is JSON");
        assert_eq!(value["clientToken"], "0.17.5000123");
        assert!(value["state"]["reported"]["temperature"].is_f64());
        assert!(value["state"]["reported"]["rssi"].is_i64());
    }

    #[test]
    fn budget_runs_out() {
        let budget = Budget::new(2);
        assert!(budget.take());
        assert!(budget.take());
        assert!(!budget.take());
    }
}
