"""shadowflow driven by the unmodified AWS IoT Device SDK v2 for Python (package awsiotsdk).

The device side uses only the SDK's public clients and its request, response and event model
classes: IotShadowClient over MQTT 3.1.1, and IotShadowClientV2 over MQTT 5 and MQTT 3.1.1.
The app side uses shadowflow's HTTP API or a second SDK connection. Each test starts its own
shadowflow, with the embedded broker or with mosquitto, and stops it with SIGTERM.
"""

import awsiot
import pytest
from awscrt import mqtt, mqtt_request_response
from awsiot import iotshadow

from conftest import (
    BROKERS,
    EMBEDDED_BROKER_LACKS_MQTT5,
    Inbox,
    SILENCE_S,
    TIMEOUT_S,
    Mqtt5Client,
    http_request,
)

THING = "lamp"
SHADOW = "config"

on_both_brokers = pytest.mark.parametrize("deployment", BROKERS, indirect=True)


class ClassicShadowInboxes:
    """Inboxes for every response and event topic of one thing's classic shadow."""

    def __init__(self, device, thing: str):
        shadow = device.shadow
        self.get_accepted = device.subscribe(
            shadow.subscribe_to_get_shadow_accepted,
            iotshadow.GetShadowSubscriptionRequest(thing_name=thing),
            "get/accepted",
        )
        self.get_rejected = device.subscribe(
            shadow.subscribe_to_get_shadow_rejected,
            iotshadow.GetShadowSubscriptionRequest(thing_name=thing),
            "get/rejected",
        )
        self.update_accepted = device.subscribe(
            shadow.subscribe_to_update_shadow_accepted,
            iotshadow.UpdateShadowSubscriptionRequest(thing_name=thing),
            "update/accepted",
        )
        self.update_rejected = device.subscribe(
            shadow.subscribe_to_update_shadow_rejected,
            iotshadow.UpdateShadowSubscriptionRequest(thing_name=thing),
            "update/rejected",
        )
        self.delete_accepted = device.subscribe(
            shadow.subscribe_to_delete_shadow_accepted,
            iotshadow.DeleteShadowSubscriptionRequest(thing_name=thing),
            "delete/accepted",
        )
        self.delete_rejected = device.subscribe(
            shadow.subscribe_to_delete_shadow_rejected,
            iotshadow.DeleteShadowSubscriptionRequest(thing_name=thing),
            "delete/rejected",
        )
        self.delta = device.subscribe(
            shadow.subscribe_to_shadow_delta_updated_events,
            iotshadow.ShadowDeltaUpdatedSubscriptionRequest(thing_name=thing),
            "update/delta",
        )
        self.documents = device.subscribe(
            shadow.subscribe_to_shadow_updated_events,
            iotshadow.ShadowUpdatedSubscriptionRequest(thing_name=thing),
            "update/documents",
        )


def update(device, token: str, desired=None, reported=None, version=None) -> None:
    """Publish an UpdateShadowRequest for THING's classic shadow."""
    request = iotshadow.UpdateShadowRequest(
        thing_name=THING,
        client_token=token,
        state=iotshadow.ShadowState(desired=desired, reported=reported),
        version=version,
    )
    device.publish(device.shadow.publish_update_shadow, request)


def get(device, token: str) -> None:
    device.publish(
        device.shadow.publish_get_shadow,
        iotshadow.GetShadowRequest(thing_name=THING, client_token=token),
    )


def assert_leaf_timestamps(metadata: dict, state: dict) -> None:
    """Assert that metadata has an integer `timestamp` for every leaf of state, and nothing else."""
    assert set(metadata) == set(state), f"metadata {metadata} does not mirror state {state}"
    for key, value in state.items():
        if isinstance(value, dict):
            assert_leaf_timestamps(metadata[key], value)
        else:
            assert isinstance(metadata[key].get("timestamp"), int), f"{key}: {metadata[key]}"


@on_both_brokers
def test_get_missing_shadow_rejected_404(deployment, connect_device):
    device = connect_device("lamp-device")
    inboxes = ClassicShadowInboxes(device, THING)

    get(device, "get-missing")

    error = inboxes.get_rejected.next()
    assert isinstance(error, iotshadow.ErrorResponse)
    assert error.code == 404
    assert error.message == f"No shadow exists with name: '{THING}'"
    assert error.client_token == "get-missing"
    inboxes.get_accepted.assert_empty()


@on_both_brokers
def test_reported_update_then_get(deployment, connect_device, recorder):
    device = connect_device("lamp-device")
    inboxes = ClassicShadowInboxes(device, THING)
    reported = {"color": "RED", "state": "ON", "bulb": {"watts": 9}}

    update(device, "report-1", reported=reported)

    accepted = inboxes.update_accepted.next()
    raw = recorder.payloads(f"$aws/things/{THING}/shadow/update/accepted")
    assert isinstance(accepted, iotshadow.UpdateShadowResponse)
    assert accepted.client_token == "report-1", raw
    assert accepted.version == 1, raw
    assert accepted.state.reported == reported, raw
    assert accepted.state.desired is None, raw
    assert_leaf_timestamps(accepted.metadata.reported, reported)
    assert accepted.timestamp is not None, raw
    inboxes.update_rejected.assert_empty(within=0)

    get(device, "get-1")

    document = inboxes.get_accepted.next()
    raw = recorder.payloads(f"$aws/things/{THING}/shadow/get/accepted")
    assert isinstance(document, iotshadow.GetShadowResponse)
    assert document.client_token == "get-1", raw
    assert document.version == 1, raw
    assert document.state.reported == reported, raw
    assert document.state.desired is None, raw
    assert document.state.delta is None, raw
    assert_leaf_timestamps(document.metadata.reported, reported)
    assert document.metadata.desired is None, raw
    inboxes.delta.assert_empty(within=0)


@on_both_brokers
def test_sdk_desired_update_sends_delta(deployment, connect_device, recorder):
    device = connect_device("lamp-device")
    app = connect_device("lamp-app")
    inboxes = ClassicShadowInboxes(device, THING)
    update(device, "report-1", reported={"color": "RED", "state": "ON"})
    inboxes.update_accepted.next()

    update(app, "app-1", desired={"color": "GREEN", "state": "ON"})

    accepted = inboxes.update_accepted.next()
    assert accepted.client_token == "app-1"
    assert accepted.version == 2
    assert accepted.state.desired == {"color": "GREEN", "state": "ON"}
    delta = inboxes.delta.next()
    raw = recorder.payloads(f"$aws/things/{THING}/shadow/update/delta")
    assert isinstance(delta, iotshadow.ShadowDeltaUpdatedEvent)
    assert delta.state == {"color": "GREEN"}, raw
    assert delta.version == 2, raw
    assert_leaf_timestamps(delta.metadata, {"color": "GREEN"})
    assert delta.timestamp is not None, raw

    get(device, "get-1")

    document = inboxes.get_accepted.next()
    assert document.client_token == "get-1"
    assert document.version == 2
    assert document.state.desired == {"color": "GREEN", "state": "ON"}
    assert document.state.reported == {"color": "RED", "state": "ON"}
    assert document.state.delta == {"color": "GREEN"}
    assert_leaf_timestamps(document.metadata.desired, {"color": "GREEN", "state": "ON"})


@on_both_brokers
def test_http_desired_update_sends_delta(deployment, connect_device, recorder):
    device = connect_device("lamp-device")
    inboxes = ClassicShadowInboxes(device, THING)
    update(device, "report-1", reported={"color": "RED"})
    inboxes.update_accepted.next()

    status, body = http_request(
        "POST",
        deployment.shadow_url(THING),
        {"state": {"desired": {"color": "BLUE"}}, "clientToken": "app-http"},
    )

    assert status == 200, body
    assert body["version"] == 2, body
    assert body["clientToken"] == "app-http", body
    delta = inboxes.delta.next()
    raw = recorder.payloads(f"$aws/things/{THING}/shadow/update/delta")
    assert delta.state == {"color": "BLUE"}, raw
    assert delta.version == 2, raw
    assert_leaf_timestamps(delta.metadata, {"color": "BLUE"})
    accepted = inboxes.update_accepted.next()
    assert accepted.client_token == "app-http"
    assert accepted.version == 2
    assert accepted.state.desired == {"color": "BLUE"}


@on_both_brokers
def test_reporting_desired_value_clears_delta(deployment, connect_device):
    device = connect_device("lamp-device")
    inboxes = ClassicShadowInboxes(device, THING)
    update(device, "report-1", reported={"color": "RED", "state": "ON"})
    inboxes.update_accepted.next()
    status, body = http_request(
        "POST", deployment.shadow_url(THING), {"state": {"desired": {"color": "GREEN"}}}
    )
    assert status == 200, body
    delta = inboxes.delta.next()
    assert delta.state == {"color": "GREEN"}
    inboxes.update_accepted.next()

    # The device applies the delta and reports the new value.
    update(device, "report-2", reported=delta.state)

    accepted = inboxes.update_accepted.next()
    assert accepted.client_token == "report-2"
    assert accepted.version == 3
    inboxes.delta.assert_empty(within=SILENCE_S)
    get(device, "get-1")
    document = inboxes.get_accepted.next()
    assert document.client_token == "get-1"
    assert document.version == 3
    assert document.state.delta is None
    assert document.state.desired == {"color": "GREEN"}
    assert document.state.reported == {"color": "GREEN", "state": "ON"}


@on_both_brokers
def test_null_desired_removes_section(deployment, connect_device, recorder):
    device = connect_device("lamp-device")
    inboxes = ClassicShadowInboxes(device, THING)
    update(device, "desire-1", desired={"color": "GREEN"}, reported={"color": "RED"})
    inboxes.update_accepted.next()
    inboxes.delta.next()

    # desired_is_nullable makes the SDK send "desired": null, which removes the whole section.
    request = iotshadow.UpdateShadowRequest(
        thing_name=THING,
        client_token="clear-desired",
        state=iotshadow.ShadowState(reported={"color": "GREEN"}, desired=None, desired_is_nullable=True),
    )
    device.publish(device.shadow.publish_update_shadow, request)

    accepted = inboxes.update_accepted.next()
    raw = recorder.payloads(f"$aws/things/{THING}/shadow/update/accepted")
    assert accepted.client_token == "clear-desired", raw
    assert accepted.version == 2, raw
    assert accepted.state.desired_is_nullable, raw
    assert accepted.state.desired is None, raw
    assert accepted.state.reported == {"color": "GREEN"}, raw
    inboxes.delta.assert_empty(within=SILENCE_S)
    get(device, "get-1")
    document = inboxes.get_accepted.next()
    assert document.version == 2
    assert document.state.desired is None
    assert document.state.delta is None
    assert document.metadata.desired is None
    assert document.state.reported == {"color": "GREEN"}


@on_both_brokers
def test_documents_event_has_previous_and_current(deployment, connect_device, recorder):
    device = connect_device("lamp-device")
    inboxes = ClassicShadowInboxes(device, THING)
    update(device, "report-1", reported={"color": "RED"})
    inboxes.update_accepted.next()
    inboxes.documents.next()

    update(device, "desire-1", desired={"color": "GREEN"})

    inboxes.update_accepted.next()
    event = inboxes.documents.next()
    raw = recorder.payloads(f"$aws/things/{THING}/shadow/update/documents")
    assert isinstance(event, iotshadow.ShadowUpdatedEvent)
    assert event.timestamp is not None, raw
    assert event.previous.version == 1, raw
    assert event.previous.state.reported == {"color": "RED"}, raw
    assert event.previous.state.desired is None, raw
    assert_leaf_timestamps(event.previous.metadata.reported, {"color": "RED"})
    assert event.current.version == 2, raw
    assert event.current.state.reported == {"color": "RED"}, raw
    assert event.current.state.desired == {"color": "GREEN"}, raw
    assert_leaf_timestamps(event.current.metadata.desired, {"color": "GREEN"})
    assert_leaf_timestamps(event.current.metadata.reported, {"color": "RED"})


@on_both_brokers
def test_stale_version_rejected_409(deployment, connect_device):
    device = connect_device("lamp-device")
    inboxes = ClassicShadowInboxes(device, THING)
    update(device, "report-1", reported={"color": "RED"})
    update(device, "report-2", reported={"color": "AMBER"})
    assert inboxes.update_accepted.next().version == 1
    assert inboxes.update_accepted.next().version == 2

    update(device, "stale", reported={"color": "GREEN"}, version=1)

    error = inboxes.update_rejected.next()
    assert isinstance(error, iotshadow.ErrorResponse)
    assert error.code == 409
    assert error.message == "Version conflict"
    assert error.client_token == "stale"
    inboxes.update_accepted.assert_empty(within=0)

    update(device, "current", reported={"color": "GREEN"}, version=2)

    accepted = inboxes.update_accepted.next()
    assert accepted.client_token == "current"
    assert accepted.version == 3


@on_both_brokers
def test_delete_returns_deleted_version(deployment, connect_device):
    device = connect_device("lamp-device")
    inboxes = ClassicShadowInboxes(device, THING)
    update(device, "report-1", reported={"color": "RED"})
    update(device, "report-2", reported={"color": "GREEN"})
    inboxes.update_accepted.next()
    inboxes.update_accepted.next()

    device.publish(
        device.shadow.publish_delete_shadow,
        iotshadow.DeleteShadowRequest(thing_name=THING, client_token="delete-1"),
    )

    deleted = inboxes.delete_accepted.next()
    assert isinstance(deleted, iotshadow.DeleteShadowResponse)
    assert deleted.version == 2
    assert deleted.client_token == "delete-1"
    assert deleted.timestamp is not None
    get(device, "get-after-delete")
    error = inboxes.get_rejected.next()
    assert error.code == 404
    assert error.client_token == "get-after-delete"

    device.publish(
        device.shadow.publish_delete_shadow,
        iotshadow.DeleteShadowRequest(thing_name=THING, client_token="delete-2"),
    )

    error = inboxes.delete_rejected.next()
    assert error.code == 404
    assert error.client_token == "delete-2"


@on_both_brokers
def test_pipelined_requests_correlate_by_client_token(deployment, connect_device):
    device = connect_device("lamp-device")
    inboxes = ClassicShadowInboxes(device, THING)
    tokens = [f"report-{number}" for number in range(1, 6)]

    # Publish every request before reading any response, as a device with several
    # requests in flight does.
    for number, token in enumerate(tokens, start=1):
        update(device, token, reported={"reading": number})
    get(device, "get-1")

    responses = [inboxes.update_accepted.next() for _ in tokens]
    assert [response.client_token for response in responses] == tokens
    for number, response in enumerate(responses, start=1):
        assert response.version == number, response
        assert response.state.reported == {"reading": number}, response
    document = inboxes.get_accepted.next()
    assert document.client_token == "get-1"
    assert document.version == len(tokens)


@on_both_brokers
def test_named_shadow_update_get_delete(deployment, connect_device, recorder):
    device = connect_device("lamp-device")
    shadow = device.shadow
    names = {"thing_name": THING, "shadow_name": SHADOW}
    update_accepted = device.subscribe(
        shadow.subscribe_to_update_named_shadow_accepted,
        iotshadow.UpdateNamedShadowSubscriptionRequest(**names),
        "named update/accepted",
    )
    update_rejected = device.subscribe(
        shadow.subscribe_to_update_named_shadow_rejected,
        iotshadow.UpdateNamedShadowSubscriptionRequest(**names),
        "named update/rejected",
    )
    get_accepted = device.subscribe(
        shadow.subscribe_to_get_named_shadow_accepted,
        iotshadow.GetNamedShadowSubscriptionRequest(**names),
        "named get/accepted",
    )
    get_rejected = device.subscribe(
        shadow.subscribe_to_get_named_shadow_rejected,
        iotshadow.GetNamedShadowSubscriptionRequest(**names),
        "named get/rejected",
    )
    delete_accepted = device.subscribe(
        shadow.subscribe_to_delete_named_shadow_accepted,
        iotshadow.DeleteNamedShadowSubscriptionRequest(**names),
        "named delete/accepted",
    )
    delta = device.subscribe(
        shadow.subscribe_to_named_shadow_delta_updated_events,
        iotshadow.NamedShadowDeltaUpdatedSubscriptionRequest(**names),
        "named update/delta",
    )
    documents = device.subscribe(
        shadow.subscribe_to_named_shadow_updated_events,
        iotshadow.NamedShadowUpdatedSubscriptionRequest(**names),
        "named update/documents",
    )
    classic = ClassicShadowInboxes(device, THING)
    topic = f"$aws/things/{THING}/shadow/name/{SHADOW}"

    device.publish(
        shadow.publish_update_named_shadow,
        iotshadow.UpdateNamedShadowRequest(
            **names,
            client_token="named-1",
            state=iotshadow.ShadowState(reported={"interval_s": 60}, desired={"interval_s": 30}),
        ),
    )

    accepted = update_accepted.next()
    assert accepted.client_token == "named-1", recorder.payloads(f"{topic}/update/accepted")
    assert accepted.version == 1
    assert accepted.state.reported == {"interval_s": 60}
    assert accepted.state.desired == {"interval_s": 30}
    event = delta.next()
    assert event.state == {"interval_s": 30}, recorder.payloads(f"{topic}/update/delta")
    assert event.version == 1
    snapshot = documents.next()
    assert snapshot.current.version == 1, recorder.payloads(f"{topic}/update/documents")
    assert snapshot.current.state.desired == {"interval_s": 30}
    update_rejected.assert_empty(within=0)

    device.publish(
        shadow.publish_get_named_shadow,
        iotshadow.GetNamedShadowRequest(**names, client_token="named-get"),
    )

    document = get_accepted.next()
    assert document.client_token == "named-get"
    assert document.version == 1
    assert document.state.delta == {"interval_s": 30}
    assert_leaf_timestamps(document.metadata.reported, {"interval_s": 60})
    status, body = http_request("GET", deployment.shadow_url(THING, SHADOW))
    assert status == 200, body
    assert body["state"]["reported"] == {"interval_s": 60}, body
    # The named shadow leaves the classic shadow of the same thing untouched.
    get(device, "classic-get")
    assert classic.get_rejected.next().code == 404
    classic.update_accepted.assert_empty(within=0)
    classic.delta.assert_empty(within=0)

    device.publish(
        shadow.publish_delete_named_shadow,
        iotshadow.DeleteNamedShadowRequest(**names, client_token="named-delete"),
    )

    deleted = delete_accepted.next()
    assert deleted.client_token == "named-delete"
    assert deleted.version == 1
    device.publish(
        shadow.publish_get_named_shadow,
        iotshadow.GetNamedShadowRequest(**names, client_token="named-get-2"),
    )
    error = get_rejected.next()
    assert error.code == 404
    assert error.client_token == "named-get-2"


@on_both_brokers
def test_persistent_session_receives_missed_delta(deployment, connect_device):
    device = connect_device("lamp-persistent", clean_session=False)
    delta = device.subscribe(
        device.shadow.subscribe_to_shadow_delta_updated_events,
        iotshadow.ShadowDeltaUpdatedSubscriptionRequest(thing_name=THING),
        "update/delta",
        qos=mqtt.QoS.AT_LEAST_ONCE,
    )
    update_accepted = device.subscribe(
        device.shadow.subscribe_to_update_shadow_accepted,
        iotshadow.UpdateShadowSubscriptionRequest(thing_name=THING),
        "update/accepted",
    )
    update(device, "report-1", reported={"color": "RED"})
    # The broker's PUBACK does not mean that shadowflow applied the update, so the device
    # waits for the response before it goes offline.
    assert update_accepted.next().version == 1
    device.disconnect()

    status, body = http_request(
        "POST",
        deployment.shadow_url(THING),
        {"state": {"desired": {"color": "GREEN"}}, "clientToken": "app-offline"},
    )
    assert status == 200, body
    assert body["version"] == 2, body

    # The same SDK connection reconnects, as after a network loss, so its callbacks stay registered.
    session_present = device.connect()

    assert session_present, "the broker did not resume the persistent session"
    event = delta.next()
    assert event.state == {"color": "GREEN"}
    assert event.version == 2


def v2_client(protocol_client) -> iotshadow.IotShadowClientV2:
    options = mqtt_request_response.ClientOptions(
        max_request_response_subscriptions=4,
        max_streaming_subscriptions=2,
        operation_timeout_in_seconds=int(TIMEOUT_S),
    )
    return iotshadow.IotShadowClientV2(protocol_client, options)


def exercise_v2_client(client: iotshadow.IotShadowClientV2, deployment) -> None:
    """Run get, update and a delta stream through IotShadowClientV2 and check each result."""
    deltas = Inbox("V2 update/delta stream")
    stream_status = Inbox("V2 update/delta stream status")
    stream = client.create_shadow_delta_updated_stream(
        iotshadow.ShadowDeltaUpdatedSubscriptionRequest(thing_name=THING),
        awsiot.ServiceStreamOptions(
            incoming_event_listener=deltas,
            subscription_status_listener=stream_status,
        ),
    )
    stream.open()
    subscription = stream_status.next()
    assert subscription.type == mqtt_request_response.SubscriptionStatusEventType.SUBSCRIPTION_ESTABLISHED, subscription

    missing = iotshadow.GetShadowRequest(thing_name=THING)
    with pytest.raises(awsiot.V2ServiceException) as raised:
        client.get_shadow(missing).result(TIMEOUT_S)
    assert raised.value.modeled_error is not None, f"no modeled error: {raised.value.inner_error!r}"
    assert isinstance(raised.value.modeled_error, iotshadow.V2ErrorResponse)
    assert raised.value.modeled_error.code == 404
    assert raised.value.modeled_error.client_token == missing.client_token

    # IotShadowClientV2 sets a fresh UUID as client_token on each request and matches the
    # response by it, so requests in flight together must each get their own response.
    requests = [
        iotshadow.UpdateShadowRequest(
            thing_name=THING, state=iotshadow.ShadowState(reported={"reading": number})
        )
        for number in range(1, 4)
    ]
    futures = [client.update_shadow(request) for request in requests]
    responses = [future.result(TIMEOUT_S) for future in futures]
    for request, response in zip(requests, responses):
        assert isinstance(response, iotshadow.UpdateShadowResponse)
        assert response.client_token == request.client_token
        assert response.state.reported == request.state.reported
    assert sorted(response.version for response in responses) == [1, 2, 3]
    # The client may publish requests in flight together in any order, so the last update
    # applied is the one that got version 3.
    last_applied = next(response for response in responses if response.version == 3)

    get_request = iotshadow.GetShadowRequest(thing_name=THING)
    document = client.get_shadow(get_request).result(TIMEOUT_S)
    assert isinstance(document, iotshadow.GetShadowResponse)
    assert document.client_token == get_request.client_token
    assert document.version == 3
    assert document.state.reported == last_applied.state.reported

    status, body = http_request("POST", deployment.shadow_url(THING), {"state": {"desired": {"reading": 7}}})
    assert status == 200, body
    stale = iotshadow.UpdateShadowRequest(
        thing_name=THING, state=iotshadow.ShadowState(reported={"reading": 0}), version=1
    )
    with pytest.raises(awsiot.V2ServiceException) as raised:
        client.update_shadow(stale).result(TIMEOUT_S)
    assert raised.value.modeled_error is not None, f"no modeled error: {raised.value.inner_error!r}"
    assert raised.value.modeled_error.code == 409
    assert raised.value.modeled_error.client_token == stale.client_token

    delta = deltas.next()
    assert isinstance(delta, iotshadow.ShadowDeltaUpdatedEvent)
    assert delta.state == {"reading": 7}
    assert delta.version == 4
    deltas.assert_empty(within=0)


@pytest.mark.parametrize(
    "deployment",
    [pytest.param("embedded", marks=pytest.mark.skip(reason=EMBEDDED_BROKER_LACKS_MQTT5)), "mosquitto"],
    indirect=True,
)
def test_v2_client_over_mqtt5(deployment):
    client = Mqtt5Client(deployment.mqtt_port, "lamp-device-v2")
    try:
        client.start()
        exercise_v2_client(v2_client(client.client), deployment)
    finally:
        client.stop()


# The installed SDK also accepts an MQTT 3.1.1 connection in IotShadowClientV2, which lets the
# request-response client run on the embedded broker too.
@on_both_brokers
def test_v2_client_over_mqtt311(deployment, connect_device):
    device = connect_device("lamp-device-v2")

    exercise_v2_client(v2_client(device.connection), deployment)
