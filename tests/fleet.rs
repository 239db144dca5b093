//! Fleet queries, continuous views and watches over HTTP, against a running service.

mod support;

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Http, Service};

/// Sets each thing's reported state over HTTP.
fn report(http: &Http, things: &[(&str, Value)]) {
    for (thing, reported) in things {
        let body = json!({"state": {"reported": reported}}).to_string();
        let (status, document) = http.post(&format!("/things/{thing}/shadow"), &body);
        assert_eq!(status, 200, "update of {thing} failed: {document}");
    }
}

fn fleet() -> Vec<(&'static str, Value)> {
    vec![
        ("lamp-1", json!({"temp": 18, "firmware": "1.0", "on": true})),
        (
            "lamp-2",
            json!({"temp": 22, "firmware": "1.0", "on": false}),
        ),
        ("lamp-3", json!({"temp": 25, "firmware": "2.0", "on": true})),
        ("lamp-4", json!({"temp": 30, "firmware": "2.0", "on": true})),
        ("fan-1", json!({"speed": 3, "firmware": "2.0"})),
    ]
}

fn create_view(http: &Http, definition: Value) -> u64 {
    let (status, view) = http.post("/views", &definition.to_string());
    assert_eq!(status, 201, "creating view {definition} failed: {view}");
    view["id"].as_u64().expect("view id")
}

fn answer(http: &Http, id: u64) -> Value {
    let (status, document) = http.get(&format!("/views/{id}"));
    assert_eq!(status, 200, "reading view {id} failed: {document}");
    document["answer"].clone()
}

fn thing_names(answer: &Value) -> Vec<String> {
    answer["things"]
        .as_array()
        .expect("things array")
        .iter()
        .map(|thing| thing["thingName"].as_str().expect("thingName").to_owned())
        .collect()
}

#[test]
fn views_follow_every_update() {
    let data = tempfile::tempdir().expect("temp dir");
    let service = Service::start_embedded(data.path(), 2);
    let http = Http::new(&service.http);
    report(&http, &fleet());

    let warm = create_view(&http, json!({"queryString": "shadow.reported.temp > 20"}));
    let stats = create_view(
        &http,
        json!({"queryString": "thingName:lamp*",
               "aggregation": {"type": "statistics", "field": "shadow.reported.temp"}}),
    );
    let firmware = create_view(
        &http,
        json!({"queryString": "*",
               "aggregation": {"type": "buckets", "field": "shadow.reported.firmware", "maxBuckets": 10}}),
    );

    assert_eq!(
        thing_names(&answer(&http, warm)),
        ["lamp-2", "lamp-3", "lamp-4"]
    );
    let statistics = answer(&http, stats)["statistics"].clone();
    assert_eq!(statistics["count"], 4, "{statistics}");
    assert_eq!(statistics["minimum"], 18.0, "{statistics}");
    assert_eq!(statistics["maximum"], 30.0, "{statistics}");
    assert_eq!(statistics["average"], 23.75, "{statistics}");
    let buckets = answer(&http, firmware);
    assert_eq!(
        buckets["buckets"],
        json!([{"keyValue": "2.0", "count": 3}, {"keyValue": "1.0", "count": 2}]),
        "{buckets}"
    );

    // A read right after an acknowledged update reflects it.
    report(&http, &[("lamp-1", json!({"temp": 40}))]);
    assert_eq!(
        thing_names(&answer(&http, warm)),
        ["lamp-1", "lamp-2", "lamp-3", "lamp-4"]
    );
    assert_eq!(answer(&http, stats)["statistics"]["maximum"], 40.0);
    let (status, _) = http.delete("/things/lamp-4/shadow");
    assert_eq!(status, 200);
    assert_eq!(
        thing_names(&answer(&http, warm)),
        ["lamp-1", "lamp-2", "lamp-3"]
    );
    assert_eq!(answer(&http, stats)["statistics"]["count"], 3);

    let (status, _) = http.delete(&format!("/views/{warm}"));
    assert_eq!(status, 200);
    let (status, _) = http.get(&format!("/views/{warm}"));
    assert_eq!(status, 404, "a deleted view is gone");
    service.stop();
}

#[test]
fn one_off_queries_use_aws_documents() {
    let data = tempfile::tempdir().expect("temp dir");
    let service = Service::start_embedded(data.path(), 2);
    let http = Http::new(&service.http);
    report(&http, &fleet());

    let (status, found) = http.post(
        "/indices/search",
        &json!({"queryString": "shadow.reported.firmware:2.0 AND NOT thingName:fan*", "maxResults": 1})
            .to_string(),
    );
    assert_eq!(status, 200, "{found}");
    assert_eq!(
        thing_names(&found),
        ["lamp-3"],
        "first page holds one thing"
    );
    let token = found["nextToken"].as_str().expect("a second page follows");
    let (_, next) = http.post(
        "/indices/search",
        &json!({"queryString": "shadow.reported.firmware:2.0 AND NOT thingName:fan*",
                "maxResults": 1, "nextToken": token})
        .to_string(),
    );
    assert_eq!(thing_names(&next), ["lamp-4"]);
    assert!(next.get("nextToken").is_none(), "last page: {next}");

    let (status, cardinality) = http.post(
        "/indices/cardinality",
        &json!({"queryString": "*", "aggregationField": "shadow.reported.firmware"}).to_string(),
    );
    assert_eq!(status, 200, "{cardinality}");
    assert_eq!(cardinality, json!({"cardinality": 2}));

    let (status, percentiles) = http.post(
        "/indices/percentiles",
        &json!({"queryString": "shadow.reported.temp:*", "aggregationField": "shadow.reported.temp",
                "percents": [50]})
        .to_string(),
    );
    assert_eq!(status, 200, "{percentiles}");
    assert_eq!(
        percentiles["percentiles"][0]["percent"], 50.0,
        "{percentiles}"
    );

    let (status, error) = http.post(
        "/indices/search",
        &json!({"queryString": "shadow.reported.temp:[1 TO"}).to_string(),
    );
    assert_eq!(status, 400, "{error}");
    let message = error["message"].as_str().expect("message");
    assert!(
        message.contains("position"),
        "the error names the position: {message}"
    );
    service.stop();
}

#[test]
fn out_of_sync_view_is_built_in() {
    let data = tempfile::tempdir().expect("temp dir");
    let service = Service::start_embedded(data.path(), 2);
    let http = Http::new(&service.http);
    report(&http, &fleet());
    let (status, _) = http.post(
        "/things/lamp-2/shadow",
        &json!({"state": {"desired": {"on": true}}}).to_string(),
    );
    assert_eq!(status, 200);

    let pending = answer(&http, 1);
    assert_eq!(pending["count"], 1, "{pending}");
    let thing = &pending["things"][0];
    assert_eq!(thing["thingName"], "lamp-2");
    assert!(
        thing["ageSeconds"].as_i64().is_some_and(|age| age >= 0),
        "{thing}"
    );

    report(&http, &[("lamp-2", json!({"on": true}))]);
    assert_eq!(answer(&http, 1)["count"], 0, "the device caught up");
    service.stop();
}

/// Reads Server-Sent Events from `path` on a thread and returns the `data` lines.
fn events(base: &str, path: &str) -> mpsc::Receiver<Value> {
    let url = format!("{base}{path}");
    let (lines, received) = mpsc::channel();
    let (opened, open) = mpsc::channel();
    std::thread::spawn(move || {
        let response = ureq::get(&url).call().expect("open the event stream");
        let _ = opened.send(());
        let reader = BufReader::new(response.into_body().into_reader());
        for line in reader.lines().map_while(Result::ok) {
            if let Some(data) = line.strip_prefix("data:") {
                let value = serde_json::from_str(data.trim()).unwrap_or(Value::Null);
                if lines.send(value).is_err() {
                    return;
                }
            }
        }
    });
    open.recv_timeout(Duration::from_secs(10))
        .expect("the event stream opens");
    received
}

#[test]
fn changes_stream_as_server_sent_events() {
    let data = tempfile::tempdir().expect("temp dir");
    let service = Service::start_embedded(data.path(), 2);
    let http = Http::new(&service.http);
    report(&http, &fleet());
    let warm = create_view(&http, json!({"queryString": "shadow.reported.temp > 20"}));
    answer(&http, warm);

    let view_changes = events(&service.http, &format!("/views/{warm}/changes"));
    let watch = events(&service.http, "/things/lamp-1/shadow/changes");
    // The watch is a view of its own; give the workers a moment to install it.
    std::thread::sleep(Duration::from_millis(300));
    report(&http, &[("lamp-1", json!({"temp": 35}))]);

    let change = view_changes
        .recv_timeout(Duration::from_secs(10))
        .expect("the view streams the change");
    assert_eq!(change["thingName"], "lamp-1", "{change}");
    assert_eq!(change["diff"], 1, "{change}");
    assert!(
        change["time"].as_u64().is_some(),
        "changes carry their time: {change}"
    );

    let current = watch
        .recv_timeout(Duration::from_secs(10))
        .expect("the watch starts with the current document");
    assert_eq!(current["row"]["version"], 1, "{current}");
    let update = watch
        .recv_timeout(Duration::from_secs(10))
        .expect("the watch streams the update");
    assert_eq!(update["row"]["state"]["reported"]["temp"], 35, "{update}");
    assert_eq!(update["row"]["version"], 2, "{update}");
    service.stop();
}

#[test]
fn views_survive_a_restart() {
    let data = tempfile::tempdir().expect("temp dir");
    let service = Service::start_embedded(data.path(), 2);
    let http = Http::new(&service.http);
    report(&http, &fleet());
    let warm = create_view(&http, json!({"queryString": "shadow.reported.temp > 20"}));
    service.stop();

    let service = Service::start_embedded(data.path(), 2);
    let http = Http::new(&service.http);
    let (status, listed) = http.get("/views");
    assert_eq!(status, 200);
    let ids: Vec<u64> = listed["views"]
        .as_array()
        .expect("views")
        .iter()
        .filter_map(|view| view["id"].as_u64())
        .collect();
    assert!(ids.contains(&warm), "view {warm} survives: {listed}");
    assert_eq!(
        thing_names(&answer(&http, warm)),
        ["lamp-2", "lamp-3", "lamp-4"]
    );
    service.stop();
}
