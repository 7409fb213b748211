"""Hostile bodies at the receiver (issue 10): deep nesting, numbers JSON cannot carry, records whose task
message cannot be built, and many bad records.

The invariants: never a 5xx for anything in a body; one bad record never costs the others (it is kept in
the request's one quarantine message with its reason); what is accepted is exactly what reaches the work
queues; quarantine is cheap and bounded: one message per request.
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from typing import Any

import pytest

from app.quarantine import MAX_KEPT_BYTES, MAX_KEPT_RECORDS
from app.receiver import SLICE_ABOVE_BYTES
from kernel.record_limits import MAX_RECORD_DEPTH
from tests.helpers import BEARER_AUTH, as_jsonl, make_record, take_messages, task_kwargs

QUARANTINE = "auth0.quarantine"
TOO_DEEP = f"record nests deeper than {MAX_RECORD_DEPTH} levels of objects and arrays"
NOT_A_NUMBER = "record has a number JSON cannot carry (NaN, Infinity, or out of range)"
TOO_LONG = f"record has an integer of more than {sys.get_int_max_str_digits()} digits"


@pytest.fixture
def prefix() -> str:
    """A queue-name prefix of this test's own."""
    return f"test.{uuid.uuid4().hex[:8]}"


@pytest.fixture
def client(make_app: Any, broker: Any, prefix: str) -> Any:
    """A receiver routing s to a queue of the test's own; the quarantine queue starts empty."""
    client = make_app(routes=f"s={prefix}.logins").test_client()
    take_messages(broker, QUARANTINE)
    return client


def log_ids(broker: Any, queue: str) -> list[str]:
    """Take the queue's task messages and return their log_ids in order."""
    return [task_kwargs(message)["log_id"] for message in take_messages(broker, queue)]


def quarantine_messages(broker: Any) -> list[dict[str, Any]]:
    """Take every message of the quarantine queue and return their bodies."""
    return [message.decode() for message in take_messages(broker, QUARANTINE)]


def with_field(record: dict[str, Any], value_text: str) -> str:
    """``record`` as JSON text with a field ``hostile`` holding ``value_text`` verbatim in its data."""
    text = json.dumps(record)
    return text.replace('"data": {', '"data": {"hostile": ' + value_text + ", ", 1)


def post_around_two_good_records(client: Any, bad_text: str) -> tuple[Any, list[dict[str, Any]]]:
    """POST [good, bad, good] as JSON Lines; return the answer and the two good records."""
    good = [make_record("s"), make_record("s")]
    body = "\n".join([json.dumps(good[0]), bad_text, json.dumps(good[1])]).encode()
    return client.post("/webhooks/auth0", data=body, headers=BEARER_AUTH), good


def assert_one_quarantined(
    response: Any, broker: Any, prefix: str, good: list[dict[str, Any]], reason: str, text: str
) -> None:
    """The good records were enqueued; the bad one is the request's one quarantine message, as sent."""
    assert response.status_code == 202, response.json
    assert response.json == {"received": 3, "accepted": 2, "filtered": 0, "quarantined": 1, "duplicates": 0}
    assert log_ids(broker, f"{prefix}.logins") == [record["log_id"] for record in good]
    [message] = quarantine_messages(broker)
    assert message["quarantined"] == 1
    assert message["reasons"] == {reason: 1}
    assert message["records"] == [{"index": 1, "reason": reason, "record_text": text}]
    assert message["request_id"] == response.headers["X-Request-Id"]


@pytest.mark.parametrize("depth", [MAX_RECORD_DEPTH + 1, 480, 940, 970, 2000, 50_000])
def test_a_record_nested_too_deep_is_quarantined_with_the_rest_enqueued(
    client: Any, broker: Any, prefix: str, depth: int
) -> None:
    """Deeper than MAX_RECORD_DEPTH: quarantined as sent (its text), whether or not Python could parse it."""
    inner = "[" * (depth - 2) + "]" * (depth - 2)  # the record and its data are two levels
    bad = with_field(make_record("s"), inner)
    response, good = post_around_two_good_records(client, bad)
    assert_one_quarantined(response, broker, prefix, good, TOO_DEEP, bad)


def test_a_record_at_the_depth_limit_is_accepted(client: Any, broker: Any, prefix: str) -> None:
    """Exactly MAX_RECORD_DEPTH levels is an ordinary event."""
    record = make_record("s", details={"deep": json.loads("[" * 61 + "]" * 61)})  # 3 + 61 levels
    response = client.post("/webhooks/auth0", data=as_jsonl([record]), headers=BEARER_AUTH)
    assert response.json["accepted"] == 1
    assert log_ids(broker, f"{prefix}.logins") == [record["log_id"]]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("NaN", NOT_A_NUMBER),
        ("Infinity", NOT_A_NUMBER),
        ("-Infinity", NOT_A_NUMBER),
        ("1e999", NOT_A_NUMBER),
        ("9" * 5000, TOO_LONG),
        ("-" + "1" * 5000, TOO_LONG),
        ('[1, {"n": ' + "7" * 4301 + "}]", TOO_LONG),
    ],
)
def test_a_number_json_cannot_carry_is_quarantined_not_a_500(
    client: Any, broker: Any, prefix: str, value: str, reason: str
) -> None:
    """NaN, ±Infinity, overflowing floats and integers over Python's digit limit: quarantined as sent."""
    bad = with_field(make_record("s"), value)
    response, good = post_around_two_good_records(client, bad)
    assert_one_quarantined(response, broker, prefix, good, reason, bad)


def test_a_bare_number_record_too_long_to_parse_is_quarantined(client: Any, broker: Any, prefix: str) -> None:
    """A record that is itself a 5,000-digit number is delimited and kept, not a 500."""
    response, good = post_around_two_good_records(client, "9" * 5000)
    assert_one_quarantined(response, broker, prefix, good, TOO_LONG, "9" * 5000)


@pytest.mark.parametrize("field", ["log_id", "type"])
def test_a_record_whose_task_message_cannot_be_sent_is_quarantined_not_a_503(
    make_app: Any, broker: Any, prefix: str, field: str
) -> None:
    """A 200 KB log_id or type would make task headers larger than an AMQP frame (RabbitMQ then closed the
    connection: 503 on every resend). A property of the record: it is quarantined with the reason and the
    rest of the batch is confirmed. (A log_id that long is refused by validation already.)"""
    client = make_app(routes=f"s={prefix}.logins,*={prefix}.other").test_client()
    take_messages(broker, QUARANTINE)
    record = make_record("s", log_id="9" * 200_000) if field == "log_id" else make_record("s")
    if field == "type":
        record["data"]["type"] = "s" * 200_000
    response, good = post_around_two_good_records(client, json.dumps(record))
    assert response.status_code == 202, response.json
    assert response.json["quarantined"] == 1
    assert log_ids(broker, f"{prefix}.logins") == [r["log_id"] for r in good]
    assert take_messages(broker, f"{prefix}.other") == []
    [message] = quarantine_messages(broker)
    [entry] = message["records"]
    assert (entry["index"], entry["record"]) == (1, record)
    if field == "type":
        assert entry["reason"].startswith("task message cannot be sent: its headers need a frame of")


def test_many_bad_records_make_one_capped_quarantine_message(client: Any, broker: Any, prefix: str) -> None:
    """100,000 empty objects and two good records: 202, the good ones enqueued, one quarantine message
    with the first MAX_KEPT_RECORDS bad records, the count of the rest and the counts by reason."""
    good = [make_record("s"), make_record("s")]
    body = "[" + json.dumps(good[0]) + ",{}" * 100_000 + "," + json.dumps(good[1]) + "]"
    response = client.post("/webhooks/auth0", data=body.encode(), headers=BEARER_AUTH)
    assert response.status_code == 202
    assert response.json == {
        "received": 100_002,
        "accepted": 2,
        "filtered": 0,
        "quarantined": 100_000,
        "duplicates": 0,
    }
    assert log_ids(broker, f"{prefix}.logins") == [record["log_id"] for record in good]
    [message] = quarantine_messages(broker)
    reason = "record has no 'data' object"
    assert message["quarantined"] == 100_000
    assert message["reasons"] == {reason: 100_000}
    assert message["omitted"] == 100_000 - MAX_KEPT_RECORDS
    assert message["records"] == [
        {"index": index, "reason": reason, "record": {}} for index in range(1, MAX_KEPT_RECORDS + 1)
    ]


def test_quarantine_message_keeps_records_within_its_byte_cap(client: Any, broker: Any) -> None:
    """Large bad records are kept whole while they fit in MAX_KEPT_BYTES (the first one always); the rest
    are counted, never cut."""
    size = MAX_KEPT_BYTES // 3
    records = [{"log_id": f"big{n}", "padding": "x" * size} for n in range(5)]
    response = client.post("/webhooks/auth0", data=as_jsonl(records), headers=BEARER_AUTH)
    assert response.json["quarantined"] == 5
    [message] = quarantine_messages(broker)
    assert [entry["record"] for entry in message["records"]] == records[:2]
    assert message["omitted"] == 3
    assert message["quarantined"] == 5


def test_a_huge_first_bad_record_is_kept_whole(client: Any, broker: Any) -> None:
    """However large, a request's first bad record is kept, so every request keeps an example."""
    huge = {"log_id": "huge", "padding": "x" * (2 * MAX_KEPT_BYTES)}
    response = client.post("/webhooks/auth0", data=as_jsonl([huge, {}]), headers=BEARER_AUTH)
    assert response.json["quarantined"] == 2
    [message] = quarantine_messages(broker)
    assert [entry["record"] for entry in message["records"]] == [huge]
    assert message["omitted"] == 1


def test_bad_records_of_a_sliced_body_make_one_quarantine_message(
    client: Any, broker: Any, prefix: str
) -> None:
    """A body handled in slices gathers the bad records of every slice into the request's one message."""
    records: list[Any] = [make_record("s", description="x" * 400) for _ in range(2500)]
    for index in (5, 1500, 2499):
        records[index] = {"log_id": f"bad{index}"}
    body = json.dumps(records).encode()
    assert len(body) > SLICE_ABOVE_BYTES
    response = client.post("/webhooks/auth0", data=body, headers=BEARER_AUTH)
    assert response.json["quarantined"] == 3
    assert len(log_ids(broker, f"{prefix}.logins")) == 2497
    [message] = quarantine_messages(broker)
    assert [(entry["index"], entry["record"]) for entry in message["records"]] == [
        (index, records[index]) for index in (5, 1500, 2499)
    ]


def test_bad_records_are_logged_in_one_line_per_request(
    client: Any, broker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A thousand bad records make one warning line with the counts by reason, not a thousand lines."""
    body = as_jsonl([{}] * 999 + ["text"])
    with caplog.at_level(logging.INFO, logger="app.receiver"):
        response = client.post("/webhooks/auth0", data=body, headers=BEARER_AUTH)
    assert response.json["quarantined"] == 1000
    warnings = [r for r in caplog.records if r.name == "app.receiver" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    line = warnings[0].getMessage()
    assert "quarantined 1000 of 1000 records" in line
    assert "999 × record has no 'data' object" in line
    assert quarantine_messages(broker)[0]["quarantined"] == 1000
