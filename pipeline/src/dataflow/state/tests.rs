//! Tests of [`ShadowState`] without timely.

use super::*;

fn request(key: ShadowKey, operation: Operation, payload: &str) -> Request {
    Request {
        key,
        operation,
        payload: payload.as_bytes().to_vec(),
        origin: Origin::Http,
        reply_to: ReplyTo::Nobody,
        received_at_ms: 1_700_000_000_000,
    }
}

fn create(state: &mut ShadowState, thing: &str, shadow: &str) {
    let update = request(
        ShadowKey::named(thing, shadow),
        Operation::Update,
        r#"{"state":{"reported":{"on":true}}}"#,
    );
    let (outcome, _) = state.apply(update, 1);
    assert!(
        matches!(outcome, Outcome::Updated(_)),
        "creating {thing}/{shadow}: {outcome:?}"
    );
}

/// Returns the names and next token of one list page.
fn page(state: &mut ShadowState, thing: &str, paging: &str) -> (Vec<String>, Option<String>) {
    let list = request(ShadowKey::classic(thing), Operation::ListNamed, paging);
    match state.apply(list, 2).0 {
        Outcome::Listed {
            names, next_token, ..
        } => (names, next_token),
        other => panic!("expected a list page, got {other:?}"),
    }
}

#[test]
fn list_pages_through_named_shadows_in_order() {
    let mut state = ShadowState::new(Limits::default());
    for shadow in ["e", "a", "d", "b", "c"] {
        create(&mut state, "lamp", shadow);
    }
    create(&mut state, "other", "x");

    let (first, token) = page(&mut state, "lamp", r#"{"pageSize":2}"#);
    assert_eq!(first, ["a", "b"]);
    let token = token.expect("more pages");
    let (second, token) = page(
        &mut state,
        "lamp",
        &format!(r#"{{"pageSize":2,"nextToken":"{token}"}}"#),
    );
    assert_eq!(second, ["c", "d"]);
    let token = token.expect("one more page");
    let (third, token) = page(
        &mut state,
        "lamp",
        &format!(r#"{{"pageSize":2,"nextToken":"{token}"}}"#),
    );
    assert_eq!(third, ["e"]);
    assert_eq!(token, None);
}

#[test]
fn list_omits_classic_and_deleted_shadows() {
    let mut state = ShadowState::new(Limits::default());
    let classic = request(
        ShadowKey::classic("lamp"),
        Operation::Update,
        r#"{"state":{"desired":{"on":true}}}"#,
    );
    state.apply(classic, 1);
    create(&mut state, "lamp", "config");
    create(&mut state, "lamp", "firmware");
    let delete = request(ShadowKey::named("lamp", "config"), Operation::Delete, "");
    assert!(matches!(state.apply(delete, 1).0, Outcome::Deleted { .. }));

    let (names, token) = page(&mut state, "lamp", "{}");
    assert_eq!(names, ["firmware"]);
    assert_eq!(token, None);
}

#[test]
fn list_of_unknown_thing_is_empty() {
    let mut state = ShadowState::new(Limits::default());
    let (names, token) = page(&mut state, "nobody", "{}");
    assert!(names.is_empty());
    assert_eq!(token, None);
}

#[test]
fn list_rejects_page_size_out_of_range() {
    let mut state = ShadowState::new(Limits::default());
    for paging in [r#"{"pageSize":0}"#, r#"{"pageSize":101}"#] {
        let list = request(ShadowKey::classic("lamp"), Operation::ListNamed, paging);
        match state.apply(list, 1).0 {
            Outcome::Rejected { error, .. } => assert_eq!(error.code(), 400, "{paging}"),
            other => panic!("expected a rejection for {paging}, got {other:?}"),
        }
    }
}

#[test]
fn recreated_shadow_continues_version() {
    let mut state = ShadowState::new(Limits::default());
    let key = ShadowKey::classic("lamp");
    for _ in 0..3 {
        state.apply(
            request(
                key.clone(),
                Operation::Update,
                r#"{"state":{"reported":{"n":1}}}"#,
            ),
            1,
        );
    }
    let (outcome, _) = state.apply(request(key.clone(), Operation::Delete, ""), 1);
    assert!(
        matches!(outcome, Outcome::Deleted { version: 3, .. }),
        "{outcome:?}"
    );
    let (outcome, _) = state.apply(request(key.clone(), Operation::Get, ""), 1);
    assert!(
        matches!(outcome, Outcome::Rejected { .. }),
        "a deleted shadow is not found: {outcome:?}"
    );
    let (outcome, _) = state.apply(
        request(key, Operation::Update, r#"{"state":{"reported":{"n":2}}}"#),
        1,
    );
    match outcome {
        Outcome::Updated(updated) => {
            assert_eq!(updated.current.version(), 4);
            assert!(
                updated.previous.is_none(),
                "the update re-creates the shadow"
            );
        }
        other => panic!("expected an update, got {other:?}"),
    }
}

#[test]
fn rate_limit_rejects_past_limit_per_second() {
    let limits = Limits {
        max_requests_per_second: Some(2),
        ..Limits::default()
    };
    let mut state = ShadowState::new(limits);
    let key = ShadowKey::classic("lamp");
    let at = |ms: i64| {
        let mut update = request(
            key.clone(),
            Operation::Update,
            r#"{"state":{"reported":{"n":1}},"clientToken":"t"}"#,
        );
        update.received_at_ms = ms;
        update
    };
    assert!(matches!(state.apply(at(10_000), 1).0, Outcome::Updated(_)));
    assert!(matches!(state.apply(at(10_500), 1).0, Outcome::Updated(_)));
    match state.apply(at(10_900), 1).0 {
        Outcome::Rejected {
            error,
            client_token,
            ..
        } => {
            assert_eq!(error.code(), 429);
            assert_eq!(client_token.as_deref(), Some("t"));
        }
        other => panic!("expected 429, got {other:?}"),
    }
    assert!(
        matches!(state.apply(at(11_000), 1).0, Outcome::Updated(_)),
        "a new second admits again"
    );
    assert_eq!(
        state.get(&key).map(|version| version.version()),
        Some(3),
        "the throttled update changed nothing"
    );
}
