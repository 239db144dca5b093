use serde_json::{Value as JsonValue, json};

use super::*;
use crate::dataflow::ShadowVersion;
use crate::shadow::{Limits, apply_update, decode_update};

/// One shadow of the fixture: desired, reported and delta as compact JSON objects, and the
/// version.
struct ShadowData {
    desired: Option<String>,
    reported: Option<String>,
    delta: Option<String>,
    version: u64,
}

/// One thing of the fixture.
struct Thing {
    name: &'static str,
    classic: Option<ShadowData>,
    named: Vec<(&'static str, ShadowData)>,
}

fn object(value: JsonValue) -> Option<String> {
    match value {
        JsonValue::Object(object) if !object.is_empty() => {
            Some(JsonValue::Object(object).to_string())
        }
        _ => None,
    }
}

fn shadow(desired: JsonValue, reported: JsonValue, delta: JsonValue, version: u64) -> ShadowData {
    ShadowData {
        desired: object(desired),
        reported: object(reported),
        delta: object(delta),
        version,
    }
}

fn fields(data: &ShadowData) -> ShadowFields<'_> {
    ShadowFields {
        desired: data.desired.as_deref(),
        reported: data.reported.as_deref(),
        delta: data.delta.as_deref(),
        version: data.version,
    }
}

/// Ten things with known query results for each operator.
fn fleet() -> Vec<Thing> {
    let none = json!({});
    vec![
        Thing {
            name: "lamp-1",
            classic: Some(shadow(
                json!({"on": true, "brightness": 80}),
                json!({"on": true, "brightness": 80, "color": "Red", "tags": ["a", "b"],
                       "stats": {"battery": 78}}),
                none.clone(),
                5,
            )),
            named: vec![],
        },
        Thing {
            name: "lamp-2",
            classic: Some(shadow(
                json!({"on": true}),
                json!({"on": false, "brightness": 20, "color": "blue"}),
                json!({"on": true}),
                3,
            )),
            named: vec![],
        },
        Thing {
            name: "lamp-3",
            classic: None,
            named: vec![(
                "config",
                shadow(
                    none.clone(),
                    json!({"mode": "eco", "items": [{"id": 1}, {"id": 2}]}),
                    none.clone(),
                    1,
                ),
            )],
        },
        Thing {
            name: "fan-1",
            classic: Some(shadow(
                none.clone(),
                json!({"speed": 3.5, "myvalues": [1, 2, 3]}),
                none.clone(),
                10,
            )),
            named: vec![],
        },
        Thing {
            name: "fan-2",
            classic: Some(shadow(
                json!({"speed": 2}),
                json!({"speed": -1, "fw": "1.10"}),
                json!({"speed": 2}),
                2,
            )),
            named: vec![(
                "config",
                shadow(none.clone(), json!({"mode": "turbo"}), none.clone(), 4),
            )],
        },
        Thing {
            name: "sensor-α",
            classic: Some(shadow(
                none.clone(),
                json!({"temp": 21.5, "location": "Room 101"}),
                none.clone(),
                1,
            )),
            named: vec![],
        },
        Thing {
            name: "sensor-2",
            classic: Some(shadow(
                none.clone(),
                serde_json::from_str(r#"{"temp": 1e2, "location": "hall"}"#).expect("valid JSON"),
                none.clone(),
                7,
            )),
            named: vec![],
        },
        Thing {
            name: "gateway",
            classic: Some(shadow(
                none.clone(),
                json!({"serialNumber": "abce"}),
                none.clone(),
                1,
            )),
            named: vec![],
        },
        Thing {
            name: "desired-only",
            classic: None,
            named: vec![(
                "config",
                shadow(
                    json!({"mode": "eco"}),
                    none.clone(),
                    json!({"mode": "eco"}),
                    1,
                ),
            )],
        },
        Thing {
            name: "big",
            classic: Some(shadow(
                none.clone(),
                json!({"counter": 9_007_199_254_740_993_u64}),
                none,
                1,
            )),
            named: vec![],
        },
    ]
}

fn document(thing: &Thing) -> FleetDocument<'_> {
    let mut document = FleetDocument::new(thing.name);
    if let Some(classic) = &thing.classic {
        document = document.with_classic(fields(classic));
    }
    for (name, data) in &thing.named {
        document = document.with_named(name, fields(data));
    }
    document
}

/// Returns the names of the things that `text` matches, in fixture order.
fn matching(text: &str) -> Vec<&'static str> {
    let query = Query::parse(text).unwrap_or_else(|error| panic!("{text:?}: {error}"));
    fleet()
        .iter()
        .filter(|thing| query.matches(&document(thing)))
        .map(|thing| thing.name)
        .collect()
}

#[test]
fn each_operator_selects_known_things() {
    let everything = vec![
        "lamp-1",
        "lamp-2",
        "lamp-3",
        "fan-1",
        "fan-2",
        "sensor-α",
        "sensor-2",
        "gateway",
        "desired-only",
        "big",
    ];
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("*", everything.clone()),
        ("NOT *", vec![]),
        ("thingName:lamp-1", vec!["lamp-1"]),
        ("thingName:LAMP-*", vec!["lamp-1", "lamp-2", "lamp-3"]),
        ("thingName:lamp-?", vec!["lamp-1", "lamp-2", "lamp-3"]),
        ("thingName:*-2", vec!["lamp-2", "fan-2", "sensor-2"]),
        ("thingName:SENSOR-Α", vec!["sensor-α"]),
        ("thingName:[fan TO gz]", vec!["fan-1", "fan-2", "gateway"]),
        ("shadow.reported.on:true", vec!["lamp-1"]),
        ("shadow.reported.on:TRUE", vec!["lamp-1"]),
        ("shadow.reported.on:yes", vec![]),
        (
            "shadow.reported.on:[false TO true]",
            vec!["lamp-1", "lamp-2"],
        ),
        ("shadow.reported.color:red", vec!["lamp-1"]),
        ("shadow.reported.brightness:80.0", vec!["lamp-1"]),
        ("shadow.reported.brightness:8*", vec![]),
        ("shadow.reported.brightness>=20", vec!["lamp-1", "lamp-2"]),
        ("shadow.reported.brightness:{20 TO 80]", vec!["lamp-1"]),
        ("shadow.reported.brightness:[a TO z]", vec![]),
        ("shadow.reported.speed<0", vec!["fan-2"]),
        ("shadow.reported.speed:[* TO 3.5}", vec!["fan-2"]),
        ("shadow.reported.temp:100", vec!["sensor-2"]),
        ("shadow.reported.myvalues:2", vec!["fan-1"]),
        ("shadow.reported.myvalues>2", vec!["fan-1"]),
        ("shadow.reported.myvalues>3", vec![]),
        ("shadow.reported.tags:B", vec!["lamp-1"]),
        ("shadow.name.config.reported.items.id:2", vec!["lamp-3"]),
        ("shadow.reported.location:*", vec!["sensor-α", "sensor-2"]),
        ("shadow.reported.stats:*", vec!["lamp-1"]),
        ("shadow.reported.stats:78", vec![]),
        ("shadow.reported.stats.battery:78", vec!["lamp-1"]),
        ("shadow.reported.location:\"room 101\"", vec!["sensor-α"]),
        (
            "shadow.reported.serialNumber:[\"abcd\" TO \"abcf\"]",
            vec!["gateway"],
        ),
        ("shadow.reported.fw:[1.1 TO 1.2]", vec!["fan-2"]),
        ("shadow.reported.fw:[1.2 TO 1.9]", vec![]),
        ("shadow.reported.counter:9007199254740993", vec!["big"]),
        ("shadow.reported.counter:9007199254740992", vec![]),
        ("shadow.hasDelta:true", vec!["lamp-2", "fan-2"]),
        (
            "shadow.hasDelta:false",
            vec!["lamp-1", "fan-1", "sensor-α", "sensor-2", "gateway", "big"],
        ),
        (
            "NOT shadow.hasDelta:true",
            vec![
                "lamp-1",
                "lamp-3",
                "fan-1",
                "sensor-α",
                "sensor-2",
                "gateway",
                "desired-only",
                "big",
            ],
        ),
        ("shadow.name.config.hasDelta:true", vec!["desired-only"]),
        ("shadow.version>5", vec!["fan-1", "sensor-2"]),
        ("shadow.name.config.version:4", vec!["fan-2"]),
        ("shadow.delta.on:true", vec!["lamp-2"]),
        ("shadow.desired.speed:2", vec!["fan-2"]),
        ("shadow.name.config.delta.mode:eco", vec!["desired-only"]),
        ("shadow.name.missing.version:*", vec![]),
        ("eco", vec!["lamp-3", "desired-only"]),
        ("turbo", vec!["fan-2"]),
        ("78", vec!["lamp-1"]),
        ("LAMP-1", vec!["lamp-1"]),
        ("\"room 101\"", vec!["sensor-α"]),
        ("room", vec![]),
        (
            "thingName:lamp-* AND NOT shadow.reported.on:true",
            vec!["lamp-2", "lamp-3"],
        ),
        (
            "thingName:lamp-* -shadow.reported.on:true",
            vec!["lamp-2", "lamp-3"],
        ),
        (
            "shadow.reported.brightness>50 OR shadow.reported.speed>0",
            vec!["lamp-1", "fan-1"],
        ),
        ("thingName:(fan* AND -fan-1)", vec!["fan-2"]),
        ("thingName:(lamp-1 OR gateway)", vec!["lamp-1", "gateway"]),
        (
            "(thingName:fan* OR thingName:lamp*) shadow.hasDelta:true",
            vec!["lamp-2", "fan-2"],
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(matching(text), expected, "query {text:?}");
    }
}

#[test]
fn values_flatten_arrays_and_skip_objects() {
    let fleet = fleet();
    let fan = document(&fleet[3]);
    let field = |name: &str| Field::parse(name).expect("valid field");
    assert_eq!(
        fan.values(&field("shadow.reported.myvalues")),
        [1.0, 2.0, 3.0].map(AggregationValue::number).to_vec()
    );
    assert_eq!(
        fan.values(&field("shadow.version")),
        vec![AggregationValue::number(10.0)]
    );
    assert_eq!(
        fan.values(&field("shadow.hasDelta")),
        vec![AggregationValue::Bool(false)]
    );
    assert_eq!(
        fan.values(&field("thingName")),
        vec![AggregationValue::String("fan-1".to_owned())]
    );
    let lamp = document(&fleet[0]);
    assert!(lamp.values(&field("shadow.reported.stats")).is_empty());
    assert!(lamp.values(&field("shadow.name.config.version")).is_empty());
}

#[test]
fn shadow_versions_feed_documents() {
    let limits = Limits::default();
    let request = decode_update(
        br#"{"state":{"desired":{"on":true},"reported":{"on":false,"level":3}}}"#,
        &limits,
    )
    .expect("valid update");
    let shadow = apply_update(None, 0, &request, 1_700_000_000, &limits).expect("update applies");
    let version = ShadowVersion::new(shadow, 1_700_000_000_000, None);
    let document =
        FleetDocument::new("lamp").with_named("state", ShadowFields::from_version(&version));

    let matches = |text: &str| Query::parse(text).expect("valid").matches(&document);
    assert!(matches("shadow.name.state.hasDelta:true"));
    assert!(matches("shadow.name.state.delta.on:true"));
    assert!(matches(
        "shadow.name.state.reported.level:3 shadow.name.state.version:1"
    ));
    assert!(
        !matches("shadow.hasDelta:*"),
        "the thing has no classic shadow"
    );
}

#[test]
fn wildcard_matching_backtracks() {
    let pattern = |text: &str| match Query::parse(&format!("thingName:{text}"))
        .expect("valid")
        .expr()
    {
        Expr::Term(Term {
            predicate: Predicate::Equals(Value::Pattern(parts)),
            ..
        }) => parts.clone(),
        other => panic!("{text:?} is not a pattern: {other:?}"),
    };
    let cases = [
        ("a*b*c", "aXbYbZc", true),
        ("a*b*c", "aXbYbZ", false),
        ("*a", "aaaa", true),
        ("a?c", "abc", true),
        ("a?c", "ac", false),
        ("**", "", true),
        ("a**", "a", true),
        ("?*", "", false),
        ("*é*", "CAFÉ", true),
    ];
    for (text, candidate, expected) in cases {
        assert_eq!(
            wildcard_matches(&pattern(text), candidate),
            expected,
            "{text:?} against {candidate:?}"
        );
    }
    let long = "a".repeat(2_000);
    assert!(!wildcard_matches(&pattern("*a*a*a*a*b"), &long));
}
