"""The receiver against the real broker: formats, auth, bad input, filtering, routing, quarantine."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from app.metrics import REGISTRY
from app.receiver import SLICE_ABOVE_BYTES
from tests.helpers import BEARER_AUTH, TEST_TOKEN, as_jsonl, make_record, take_messages, task_kwargs


@pytest.fixture
def prefix() -> str:
    """A queue-name prefix of this test's own, so no worker and no other test touches its queues."""
    return f"test.{uuid.uuid4().hex[:8]}"


@pytest.fixture
def routed(broker_url: str, make_app: Any, prefix: str) -> Any:
    """A receiver routing logins, signups, failed logins (by category) and everything else apart."""
    routes = f"s={prefix}.logins,ss={prefix}.signups,auth.login.fail={prefix}.failed,*={prefix}.other"
    return make_app(routes=routes).test_client()


def log_ids(broker: Any, queue: str) -> list[str]:
    """Take the queue's task messages and return their log_ids in order."""
    return [task_kwargs(message)["log_id"] for message in take_messages(broker, queue)]


@pytest.mark.parametrize("body_format", ["jsonlines", "array", "object"])
def test_each_body_format_is_enqueued(routed: Any, broker: Any, prefix: str, body_format: str) -> None:
    """JSON Lines, a JSON array and a single JSON object are all accepted, whatever the Content-Type."""
    records = [make_record("s")] if body_format == "object" else [make_record("s"), make_record("s")]
    body = {
        "jsonlines": as_jsonl(records),
        "array": json.dumps(records).encode(),
        "object": json.dumps(records[0]).encode(),
    }[body_format]
    response = routed.post(
        "/webhooks/auth0", data=body, headers={**BEARER_AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 202
    assert response.json["accepted"] == len(records)
    assert log_ids(broker, f"{prefix}.logins") == [r["log_id"] for r in records]


def test_real_batch_with_duplicate_log_id_is_published_once(routed: Any, broker: Any, prefix: str) -> None:
    """A multi-record batch repeating a log_id yields one task per distinct event."""
    batch = (pytest.importorskip("pathlib").Path(__file__).parent / "fixtures" / "batch.jsonl").read_bytes()
    response = routed.post("/webhooks/auth0", data=batch, headers=BEARER_AUTH)
    assert response.status_code == 202
    assert response.json == {"received": 4, "accepted": 3, "filtered": 0, "quarantined": 0, "duplicates": 1}
    assert sorted(log_ids(broker, f"{prefix}.failed")) == sorted(
        [
            "90020211103082515482106767167326018758436529088273317970",
            "90020211103082515482106767167326018758436529088273317971",
        ]
    )
    assert log_ids(broker, f"{prefix}.logins") == ["90020211104001515271334544008635532534914988032684720226"]


def test_task_message_is_persistent_and_labelled(routed: Any, broker: Any, prefix: str) -> None:
    """Each event becomes one persistent Celery task message carrying the record, its type and log_id."""
    record = make_record("ss")
    routed.post("/webhooks/auth0", data=as_jsonl([record]), headers=BEARER_AUTH)
    [message] = take_messages(broker, f"{prefix}.signups")
    args, kwargs, _embed = message.decode()
    assert message.headers["task"] == "auth0_events.handle_event"
    assert message.properties["delivery_mode"] == 2
    assert args == [record]
    assert kwargs.pop("received_at").endswith("+00:00")
    assert kwargs == {"event_type": "ss", "log_id": record["log_id"]}
    assert record["data"]["user_name"] not in message.headers["argsrepr"]


@pytest.mark.parametrize(
    "header",
    [f"Bearer {TEST_TOKEN}", TEST_TOKEN, f"bearer   {TEST_TOKEN} ", "rotated-stream-token-6a0e2f9c41b87d35"],
)
def test_configured_tokens_are_accepted(routed: Any, header: str) -> None:
    """The token is accepted with or without 'Bearer', and every configured token works (rotation)."""
    response = routed.post(
        "/webhooks/auth0", data=as_jsonl([make_record("s")]), headers={"Authorization": header}
    )
    assert response.status_code == 202


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": ""}, {"Authorization": f"Basic {TEST_TOKEN}x"}],
)
def test_wrong_or_missing_token_is_401_and_enqueues_nothing(
    routed: Any, broker: Any, prefix: str, headers: dict[str, str]
) -> None:
    """Without a configured token: 401 with a JSON error, and no message reaches any queue."""
    response = routed.post("/webhooks/auth0", data=as_jsonl([make_record("s")]), headers=headers)
    assert response.status_code == 401
    assert response.json["error"] == "unauthorized"
    assert take_messages(broker, f"{prefix}.logins") == []


def test_unparsable_body_is_400_with_position_and_enqueues_nothing(
    routed: Any, broker: Any, prefix: str
) -> None:
    """A broken line costs the whole request: 400 saying line and column, nothing enqueued."""
    body = as_jsonl([make_record("s")]) + b'\n{"log_id": "1", "data": {"type": "s",}}'
    response = routed.post("/webhooks/auth0", data=body, headers=BEARER_AUTH)
    assert response.status_code == 400
    assert response.json["error"] == "unparsable_body"
    assert (response.json["line"], response.json["column"]) == (2, 38)
    assert "line 2, column 38" in response.json["message"]
    assert take_messages(broker, f"{prefix}.logins") == []


@pytest.mark.parametrize("body", [b"", b"   \n", b"\xff\xfe{}"])
def test_empty_or_non_utf8_body_is_400(routed: Any, body: bytes) -> None:
    """An empty body or bytes that are not UTF-8 get a 400 that says so."""
    response = routed.post("/webhooks/auth0", data=body, headers=BEARER_AUTH)
    assert response.status_code == 400
    assert response.json["message"].startswith(("body is empty", "body is not UTF-8"))


def test_body_over_the_limit_is_413_and_enqueues_nothing(make_app: Any, broker: Any, prefix: str) -> None:
    """A body larger than AUTH0_EVENTS_MAX_BODY_BYTES is refused with a JSON 413."""
    client = make_app(routes=f"s={prefix}.logins", max_body_bytes=1000).test_client()
    body = as_jsonl([make_record("s") for _ in range(10)])
    assert len(body) > 1000
    response = client.post("/webhooks/auth0", data=body, headers=BEARER_AUTH)
    assert response.status_code == 413
    assert response.json["error"] == "request_entity_too_large"
    assert take_messages(broker, f"{prefix}.logins") == []


def test_mixed_batch_enqueues_good_quarantines_bad_counts_filtered(
    make_app: Any, broker: Any, prefix: str
) -> None:
    """Valid records are enqueued, invalid ones kept in the request's one auth0.quarantine message
    (persistent) with their reason and index, others counted."""
    client = make_app(routes=f"s={prefix}.logins").test_client()
    take_messages(broker, "auth0.quarantine")
    good = make_record("s")
    no_type = {"log_id": "900bad1", "data": {"date": "2026-11-26T08:25:14Z"}}
    records = [good, make_record("w"), no_type, "not an object", make_record("brand_new_code")]
    response = client.post("/webhooks/auth0", data=json.dumps(records), headers=BEARER_AUTH)
    assert response.status_code == 202
    assert response.json == {"received": 5, "accepted": 1, "filtered": 2, "quarantined": 2, "duplicates": 0}
    assert log_ids(broker, f"{prefix}.logins") == [good["log_id"]]
    [message] = take_messages(broker, "auth0.quarantine")
    assert message.properties["delivery_mode"] == 2
    assert message.headers == {"x-request-id": response.headers["X-Request-Id"], "x-quarantined": 2}
    quarantined = message.decode()
    assert quarantined["records"] == [
        {"record": no_type, "reason": "record has no 'data.type' string", "index": 2},
        {"record": "not an object", "reason": "record is a JSON string, not an object", "index": 3},
    ]
    assert quarantined["request_id"] == response.headers["X-Request-Id"]
    assert (quarantined["quarantined"], quarantined["omitted"]) == (2, 0)
    assert quarantined["reasons"] == {
        "record has no 'data.type' string": 1,
        "record is a JSON string, not an object": 1,
    }


def test_routing_by_code_category_and_catch_all(routed: Any, broker: Any, prefix: str) -> None:
    """Exact codes, a stream category and '*' send each event to its configured queue."""
    records = {t: make_record(t) for t in ("s", "ss", "f", "fp", "fu", "sapi", "unknown_code")}
    response = routed.post("/webhooks/auth0", data=as_jsonl(records.values()), headers=BEARER_AUTH)
    assert response.json["accepted"] == 7
    assert log_ids(broker, f"{prefix}.logins") == [records["s"]["log_id"]]
    assert log_ids(broker, f"{prefix}.signups") == [records["ss"]["log_id"]]
    assert log_ids(broker, f"{prefix}.failed") == [records[t]["log_id"] for t in ("f", "fp", "fu")]
    assert log_ids(broker, f"{prefix}.other") == [records[t]["log_id"] for t in ("sapi", "unknown_code")]


def test_default_routes_use_one_queue_per_event_type(make_app: Any) -> None:
    """Unconfigured, the 18 default event types each get auth0.<code>, and everything else is filtered."""
    from kernel.settings import DEFAULT_ROUTES

    receiver = make_app(routes=DEFAULT_ROUTES).extensions["auth0_events"]
    assert receiver.routes.queue_for("ss") == "auth0.ss"
    assert receiver.routes.queue_for("limit_wc") == "auth0.limit_wc"
    assert receiver.routes.queue_for("ferrt") == "auth0.ferrt"
    assert receiver.routes.queue_for("sapi") is None
    assert len(receiver.routes.queues) == 18


def test_dead_letter_queues_exist_before_traffic(make_app: Any, broker: Any, prefix: str) -> None:
    """The receiver declares each work queue with its DLX and its DLQ when it connects."""
    app = make_app(routes=f"s={prefix}.logins")
    assert app.test_client().get("/readyz").status_code == 200
    channel = broker.default_channel
    assert channel.queue_declare(f"{prefix}.logins.dlq", passive=True).message_count == 0
    assert channel.queue_declare("auth0.quarantine", passive=True) is not None


def test_healthz_and_unknown_paths_answer_json(client: Any) -> None:
    """/healthz answers 200; unknown paths and methods answer JSON errors, never HTML."""
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/nope").status_code == 404
    response = client.get("/webhooks/auth0")
    assert response.status_code == 405
    assert response.json["error"] == "method_not_allowed"


def test_filtered_only_batch_is_answered_without_publishing(make_app: Any) -> None:
    """A batch with nothing accepted is answered 202 even while the broker is unreachable."""
    client = make_app(routes="s", broker_url="amqp://guest:guest@127.0.0.1:1//").test_client()
    response = client.post("/webhooks/auth0", data=as_jsonl([make_record("w")]), headers=BEARER_AUTH)
    assert response.status_code == 202
    assert response.json["filtered"] == 1


def publishes_so_far() -> float:
    """How many publish-and-confirm rounds this process's receivers have completed."""
    value = REGISTRY.get_sample_value("auth0_events_publish_duration_seconds_count", {"outcome": "confirmed"})
    return value or 0.0


def test_large_body_is_published_in_slices_counting_across_them(
    make_app: Any, broker: Any, prefix: str
) -> None:
    """A body over 1 MiB is handled 1,000 records at a time; duplicates and indexes span the slices."""
    client = make_app(routes=f"s={prefix}.logins").test_client()
    take_messages(broker, "auth0.quarantine")
    records: list[Any] = [make_record("s", description="x" * 400) for _ in range(2500)]
    records[1500] = {"log_id": "900bad2", "data": {"date": "2026-11-26T08:25:14Z"}}
    records[2200] = records[10]  # the same event again, two slices later
    body = json.dumps(records).encode()
    assert len(body) > SLICE_ABOVE_BYTES
    before = publishes_so_far()
    response = client.post("/webhooks/auth0", data=body, headers=BEARER_AUTH)
    assert response.status_code == 202
    assert response.json == {
        "received": 2500,
        "accepted": 2498,
        "filtered": 0,
        "quarantined": 1,
        "duplicates": 1,
    }
    assert publishes_so_far() - before == 3
    expected = [r["log_id"] for i, r in enumerate(records) if i not in (1500, 2200)]
    assert log_ids(broker, f"{prefix}.logins") == expected
    [quarantined] = [message.decode() for message in take_messages(broker, "auth0.quarantine")]
    assert [(q["record"], q["index"]) for q in quarantined["records"]] == [(records[1500], 1500)]


def test_large_body_malformed_near_its_end_is_400_and_enqueues_nothing(
    make_app: Any, broker: Any, prefix: str
) -> None:
    """A body handled in slices is read through first: an error in its last record publishes nothing."""
    client = make_app(routes=f"s={prefix}.logins").test_client()
    records = [make_record("s", description="x" * 400) for _ in range(2500)]
    body = as_jsonl(records) + b'\n{"log_id": "1", "data": {"type": "s",}}'
    assert len(body) > SLICE_ABOVE_BYTES
    response = client.post("/webhooks/auth0", data=body, headers=BEARER_AUTH)
    assert response.status_code == 400
    assert (response.json["line"], response.json["column"]) == (2501, 38)
    assert take_messages(broker, f"{prefix}.logins") == []
