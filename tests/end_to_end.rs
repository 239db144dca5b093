//! End to end: a device over MQTT and an app over HTTP share one shadow, on the embedded broker
//! and on Debian's mosquitto, and the Parquet history contains every accepted update.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Device, Http, Mosquitto, Service, read_history};

const PREFIX: &str = "$aws/things/lamp/shadow";

fn topic(suffix: &str) -> String {
    format!("{PREFIX}/{suffix}")
}

/// Runs the report, desire, delta, report-back story against `service` on `broker_port`.
fn lamp_story(service: Service, broker_port: u16) {
    let device = Device::connect(
        "lamp-device",
        broker_port,
        &[
            topic("update/accepted"),
            topic("update/rejected"),
            topic("update/delta"),
            topic("update/documents"),
        ],
    );
    let app = Http::new(&service.http);

    // The device reports its state.
    device.publish(
        &topic("update"),
        r#"{"state":{"reported":{"color":"RED","state":"ON"}},"clientToken":"report-1"}"#,
    );
    let accepted = device.expect_on(&topic("update/accepted"));
    assert_eq!(accepted["version"], 1);
    assert_eq!(accepted["clientToken"], "report-1");
    assert_eq!(
        accepted["state"]["reported"],
        json!({"color": "RED", "state": "ON"})
    );
    let documents = device.expect_on(&topic("update/documents"));
    assert_eq!(
        documents["previous"],
        Value::Null,
        "first update creates the shadow"
    );
    assert_eq!(documents["current"]["version"], 1);

    // The app reads it.
    let (status, shadow) = app.get("/things/lamp/shadow");
    assert_eq!(status, 200, "{shadow}");
    assert_eq!(
        shadow["state"]["reported"],
        json!({"color": "RED", "state": "ON"})
    );
    assert_eq!(shadow["version"], 1);
    assert!(
        shadow["state"].get("delta").is_none(),
        "no desired state, so no delta: {shadow}"
    );
    assert!(shadow["metadata"]["reported"]["color"]["timestamp"].is_i64());

    // The app requests green, and the device receives the delta.
    let (status, accepted) = app.post(
        "/things/lamp/shadow",
        r#"{"state":{"desired":{"color":"GREEN"}},"clientToken":"app-1"}"#,
    );
    assert_eq!(status, 200, "{accepted}");
    assert_eq!(accepted["version"], 2);
    assert_eq!(accepted["clientToken"], "app-1");
    let delta = device.expect_on(&topic("update/delta"));
    assert_eq!(delta["state"], json!({"color": "GREEN"}));
    assert_eq!(delta["version"], 2);
    assert_eq!(delta["clientToken"], "app-1");
    assert!(delta["metadata"]["color"]["timestamp"].is_i64());

    // The device reports green: no delta is left.
    device.publish(
        &topic("update"),
        r#"{"state":{"reported":{"color":"GREEN"}},"clientToken":"report-2"}"#,
    );
    let accepted = device.expect_on(&topic("update/accepted"));
    assert_eq!(accepted["version"], 3);
    let (status, shadow) = app.get("/things/lamp/shadow");
    assert_eq!(status, 200);
    assert_eq!(shadow["version"], 3);
    assert!(
        shadow["state"].get("delta").is_none(),
        "in sync, so no delta: {shadow}"
    );
    assert_eq!(
        shadow["state"]["reported"],
        json!({"color": "GREEN", "state": "ON"})
    );
    assert_eq!(shadow["state"]["desired"], json!({"color": "GREEN"}));

    // Malformed JSON is rejected and changes nothing.
    device.publish(&topic("update"), r#"{"state": {"reported": "#);
    let rejected = device.expect_on(&topic("update/rejected"));
    assert_eq!(rejected["code"], 400);
    assert_eq!(rejected["message"], "Invalid JSON");
    let (_, shadow) = app.get("/things/lamp/shadow");
    assert_eq!(shadow["version"], 3, "a rejected update changes nothing");

    // Nothing else arrives: in particular no delta after the device caught up.
    let late: Vec<_> = device.drain(Duration::from_millis(300));
    assert!(
        late.iter().all(|(topic, _)| !topic.ends_with("/delta")),
        "unexpected delta: {late:?}"
    );

    let data_dir = service.data_dir.clone();
    let (status, stderr) = service.stop();
    assert!(
        status.success(),
        "shadowflow exited with {status}; stderr:\n{stderr}"
    );

    let rows = read_history(&data_dir.join("history"));
    assert_eq!(
        rows.len(),
        3,
        "one history row per accepted update: {rows:?}"
    );
    let mut rows = rows;
    rows.sort_by_key(|row| row["version"].as_i64());
    let versions: Vec<i64> = rows
        .iter()
        .map(|row| row["version"].as_i64().expect("version"))
        .collect();
    assert_eq!(versions, [1, 2, 3]);
    let origins: Vec<&str> = rows
        .iter()
        .map(|row| row["origin"].as_str().expect("origin"))
        .collect();
    assert_eq!(origins, ["mqtt", "http", "mqtt"]);
    assert!(
        rows.iter()
            .all(|row| row["thing_name"] == "lamp" && row["shadow_name"].is_null())
    );
    let delta: Value =
        serde_json::from_str(rows[1]["delta"].as_str().expect("delta of version 2")).expect("JSON");
    assert_eq!(delta, json!({"color": "GREEN"}));
    assert!(rows[2]["delta"].is_null(), "version 3 is in sync");
    let reported: Value =
        serde_json::from_str(rows[2]["reported"].as_str().expect("reported")).expect("JSON");
    assert_eq!(reported, json!({"color": "GREEN", "state": "ON"}));
    assert_eq!(rows[0]["client_token"], "report-1");
}

/// The whole device/app story on the embedded broker, with two dataflow workers.
#[test]
fn lamp_story_on_embedded_broker() {
    let data = tempfile::tempdir().expect("temp dir");
    let service = Service::start_embedded(data.path(), 2);
    let port = service.mqtt_port;
    lamp_story(service, port);
}

/// The same story with the service as a client of Debian's mosquitto.
#[test]
fn lamp_story_on_mosquitto() {
    let mosquitto = Mosquitto::start();
    let data = tempfile::tempdir().expect("temp dir");
    let service = Service::start_with_broker(&mosquitto.url(), data.path(), 2);
    lamp_story(service, mosquitto.port);
}

/// HTTP errors use the AWS error document and status.
#[test]
fn http_errors_use_aws_documents() {
    let data = tempfile::tempdir().expect("temp dir");
    let service = Service::start_embedded(data.path(), 1);
    let app = Http::new(&service.http);

    let (status, body) = app.get("/things/nothing-here/shadow");
    assert_eq!(status, 404);
    assert_eq!(body["code"], 404);
    assert_eq!(
        body["message"],
        "No shadow exists with name: 'nothing-here'"
    );

    let (status, body) = app.post("/things/lamp/shadow", "{not json");
    assert_eq!(status, 400);
    assert_eq!(body["message"], "Invalid JSON");

    let (status, body) = app.post("/things/bad.name/shadow", r#"{"state":{}}"#);
    assert_eq!(status, 400, "{body}");

    let (status, body) = app.get("/healthz");
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");

    let (status, _) = service.stop();
    assert!(status.success());
}

/// Named shadows over HTTP: each has its own version, the list pages through them in name
/// order, and a deleted one leaves the list and comes back with its numbering continued.
#[test]
fn named_shadows_list_and_delete_over_http() {
    let data = tempfile::tempdir().expect("temp dir");
    let service = Service::start_embedded(data.path(), 2);
    let app = Http::new(&service.http);

    for (name, updates) in [("config", 2), ("firmware", 1), ("alarm", 1)] {
        for _ in 0..updates {
            let (status, body) = app.post(
                &format!("/things/pump/shadow?name={name}"),
                r#"{"state":{"desired":{"mode":"auto"}}}"#,
            );
            assert_eq!(status, 200, "{name}: {body}");
        }
    }
    let (status, body) = app.post(
        "/things/pump/shadow",
        r#"{"state":{"reported":{"on":true}}}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 1, "the classic shadow has its own version");

    let (status, body) = app.get("/things/pump/shadow?name=config");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 2);
    assert_eq!(body["state"]["delta"], json!({"mode": "auto"}));

    let list = "/api/things/shadow/ListNamedShadowsForThing/pump";
    let (status, first) = app.get(&format!("{list}?pageSize=2"));
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["results"], json!(["alarm", "config"]));
    let token = first["nextToken"].as_str().expect("a second page");
    let (_, second) = app.get(&format!("{list}?pageSize=2&nextToken={token}"));
    assert_eq!(second["results"], json!(["firmware"]));
    assert!(second.get("nextToken").is_none(), "{second}");
    assert!(second["timestamp"].is_i64());

    let (status, deleted) = app.delete("/things/pump/shadow?name=config");
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["version"], 2);
    let (status, _) = app.get("/things/pump/shadow?name=config");
    assert_eq!(status, 404);
    let (_, page) = app.get(list);
    assert_eq!(page["results"], json!(["alarm", "firmware"]));

    let (_, recreated) = app.post(
        "/things/pump/shadow?name=config",
        r#"{"state":{"reported":{"mode":"auto"}}}"#,
    );
    assert_eq!(
        recreated["version"], 3,
        "numbering continues after a delete"
    );

    let (status, empty) = app.get("/api/things/shadow/ListNamedShadowsForThing/nobody");
    assert_eq!(status, 200);
    assert_eq!(empty["results"], json!([]));
    let (status, _) = app.get(&format!("{list}?pageSize=0"));
    assert_eq!(status, 400);

    let (status, _) = service.stop();
    assert!(status.success());
}

/// A taken HTTP port stops start-up with an error that names the address, instead of a hang.
#[test]
fn taken_http_port_fails_start_up() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let address = taken.local_addr().expect("local address").to_string();
    let data = tempfile::tempdir().expect("temp dir");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_shadowflow"))
        .args([
            "serve",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--http-listen",
            &address,
            "--data-dir",
        ])
        .arg(data.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn shadowflow serve");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("serve still running 30 s after failing to bind {address}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(
        !status.success(),
        "serve must fail when its HTTP port is taken"
    );
    assert!(
        stderr.contains(&format!("binding the HTTP API to {address}")),
        "stderr: {stderr}"
    );
}

/// The optional limits from a config file: past 2 requests per second a shadow gets 429, and
/// with 1 request in flight per thing, requests that wait for their response all pass, which
/// shows each response frees its slot.
#[test]
fn optional_request_limits_apply() {
    let data = tempfile::tempdir().expect("temp dir");
    let config = data.path().join("shadowflow.toml");
    std::fs::write(
        &config,
        "[limits]\nmax_requests_per_second = 2\nmax_in_flight_per_thing = 1\n",
    )
    .expect("write config");
    let config = config.to_str().expect("UTF-8 path").to_owned();
    let service = Service::start_embedded_with(&["--config", &config], data.path(), 2);
    let app = Http::new(&service.http);

    // Five updates within one second span at most two windows of two requests each.
    let statuses: Vec<u16> = (0..5)
        .map(|index| {
            let body = format!(r#"{{"state":{{"reported":{{"n":{index}}}}}}}"#);
            let (status, reply) = app.post("/things/fast/shadow", &body);
            assert!(
                status == 200 || reply["code"] == 429,
                "unexpected reply {status}: {reply}"
            );
            status
        })
        .collect();
    let throttled = statuses.iter().filter(|status| **status == 429).count();
    assert!(throttled >= 1, "statuses {statuses:?}");

    let prefix = "$aws/things/slow/shadow/name";
    let filters: Vec<String> = (0..10)
        .map(|index| format!("{prefix}/s{index}/update/accepted"))
        .collect();
    let device = Device::connect("slow-device", service.mqtt_port, &filters);
    for index in 0..10 {
        device.publish(
            &format!("{prefix}/s{index}/update"),
            r#"{"state":{"reported":{"on":true}}}"#,
        );
        let accepted = device.expect_on(&format!("{prefix}/s{index}/update/accepted"));
        assert_eq!(
            accepted["version"], 1,
            "request {index} passed the in-flight limit"
        );
    }

    let (status, _) = service.stop();
    assert!(status.success());
}
