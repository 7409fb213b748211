"""The worker's check of each message (tasks/task_message.py), py-amqp's guarded decoder, refusal headers.

No broker: messages are built as the receiver, Celery's retries and ``dlq replay`` build them.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from amqp import serialization
from amqp.basic_message import Message as AmqpMessage
from amqp.spec import Basic
from kombu.message import Message

from cli.dlq.dead_letters import replay_headers
from kernel import amqp_properties
from kernel.amqp_properties import MARKER_HEADER, Unreadable, flaw
from kernel.wire import REASON_HEADER, SOURCE_HEADER, TASK_NAME
from tasks.celery_app import app
from tasks.refusal import copy_headers
from tasks.task_message import body_problem, headers_problem, max_body_bytes, message_problem
from tests.helpers import make_record

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
LARGEST = max_body_bytes(10 * 1024 * 1024)


def receiver_message(record: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[Any]]:
    """Headers and body as app/publisher.py builds them (Celery's as_task_v2 with the task's limits)."""
    record = record or make_record("s")
    kwargs = {"event_type": "s", "log_id": record["log_id"], "received_at": NOW.isoformat()}
    headers, _properties, body, _event = app.amqp.as_task_v2(
        str(uuid.uuid4()),
        TASK_NAME,
        args=(record,),
        kwargs=kwargs,
        argsrepr=f"(<auth0 log s {record['log_id']}>,)",
        kwargsrepr=repr(kwargs),
        origin="gen1@host",
        time_limit=300,
        soft_time_limit=285,
    )
    return headers, json.loads(json.dumps(body))  # as it arrives: lists, not tuples


def retry_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """What Celery's retry of the task publishes (captured from a real worker): eta, parent, result flag."""
    eta = (NOW + timedelta(seconds=300)).isoformat()
    return {**headers, "retries": 1, "eta": eta, "parent_id": headers["id"], "ignore_result": False}


def kombu_message(body: Any, headers: dict[str, Any] | None, **properties: Any) -> Message:
    """A received message as kombu hands it to the consumer."""
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return Message(
        body=data,
        headers=headers,
        content_type=properties.pop("content_type", "application/json"),
        content_encoding=properties.pop("content_encoding", "utf-8"),
        properties=properties,
        accept=["application/json"],
    )


def test_what_the_receiver_its_retries_and_replays_publish_passes() -> None:
    """Every shape this service publishes is taken: first attempt, retry, replay, delayed (quorum queue)."""
    headers, body = receiver_message()
    retried = retry_headers(headers)
    death = [{"reason": "rejected", "queue": "auth0.s", "count": 1, "time": NOW, "routing-keys": ["auth0.s"]}]
    replayed = replay_headers({**retried, "x-death": death}, str(uuid.uuid4()))
    delayed = {**retried, "x-death": [{"reason": "expired", "queue": "celery_delayed_3", "count": 1}]}
    for shape in (headers, retried, replayed, delayed):
        assert message_problem(kombu_message(body, shape), NOW, LARGEST) is None, shape


def test_a_retry_eta_is_taken_up_to_the_longest_backoff_plus_slack() -> None:
    """An ETA within 1,200 s (the backoff cap) and 5 min of slack passes; later, or not a time, is refused."""
    headers, _body = receiver_message()
    for eta, expected in [
        ((NOW + timedelta(seconds=1500)).isoformat(), None),
        ("2026-11-26T12:20:00", None),  # naive: UTC, as Celery reads it
        ((NOW - timedelta(days=30)).isoformat(), None),  # a backlog: due long ago, runs now
        ((NOW + timedelta(seconds=1501)).isoformat(), "its eta is more than 1500 s ahead"),
        ("1969-12-31T23:59:59+00:00", "its eta is not an ISO 8601 time"),
        ("tomorrow", "its eta is not an ISO 8601 time"),
        (12345, "its eta is not an ISO 8601 time"),
    ]:
        problem = headers_problem({**headers, "eta": eta}, NOW)
        assert problem is None if expected is None else expected in (problem or ""), (eta, problem)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"retries": True}, "its retries header is not a whole number"),
        ({"retries": -1}, "its retries header is not a whole number"),
        ({"id": "x" * 65}, "its task id is not a string of 1 to 64 characters"),
        ({"id": ""}, "its task id is not a string"),
        ({"shadow": "other.name"}, "it carries 'shadow'"),
        ({"timelimit": [300]}, "its timelimit is not two limits"),
        ({"timelimit": [float("nan"), None]}, "its timelimit is not two limits"),
        ({"timelimit": [0, 285]}, "its timelimit is not two limits"),
        ({"timelimit": ["300", 285]}, "its timelimit is not two limits"),
        ({"kwargsrepr": "\ud800"}, "its kwargsrepr header is not a UTF-8 string"),
        ({"task": "x" * 500 + "\x1b[2J"}, "its task 'xxxx"),
    ],
)
def test_headers_only_someone_else_sends_are_refused(changes: dict[str, Any], reason: str) -> None:
    """Each header Celery would act on is checked for the values this service sends."""
    headers, _body = receiver_message()
    problem = headers_problem({**headers, **changes}, NOW) or ""
    assert reason in problem
    assert "\x1b" not in problem
    assert len(problem) < 200


def test_timelimits_of_null_or_at_most_the_safe_countdown_pass() -> None:
    """Null limits fall back to the task's own; numbers up to 1,200 s are what the settings allow."""
    headers, _body = receiver_message()
    for limits in ([None, None], [1200, 1185.5], (60, None)):
        assert headers_problem({**headers, "timelimit": limits}, NOW) is None


def test_a_body_is_refused_for_what_is_wrong_without_quoting_it() -> None:
    """The reason names the shape; the record's values (personal data) are not in it."""
    headers, body = receiver_message(make_record("s", user_name="jane@example.com"))
    [record], kwargs, embed = body
    assert body_problem([[record], kwargs, {**embed, "chain": [{"task": "x"}]}]) is not None
    assert body_problem([[record], kwargs, {**embed, "link": None}]) is not None
    assert body_problem([[record], {**kwargs, "received_at": None}, embed]) is None
    assert body_problem([[record], {"event_type": "s", "log_id": record["log_id"]}, embed]) is None
    mismatch = body_problem([[record], {**kwargs, "event_type": "f"}, embed]) or ""
    assert mismatch == "its log_id or event_type differs from the record's"
    for problem in (body_problem(True), body_problem(3.5), body_problem({"jane@example.com": 1})):
        assert problem is not None
        assert "jane" not in problem


def test_a_body_is_decoded_once_for_celery_and_the_size_is_checked_before() -> None:
    """kombu caches what the check decoded, so Celery does not decode it again."""
    headers, body = receiver_message()
    message = kombu_message(body, headers)
    assert message_problem(message, NOW, LARGEST) is None
    assert message._decoded_cache == body
    large = kombu_message(body, headers)
    assert message_problem(large, NOW, 100) == "its body is over 100 bytes, more than a task message can be"
    assert large._decoded_cache is None


def test_a_body_that_does_not_decode_is_described_without_its_content() -> None:
    """JSON errors give the position, bad UTF-8 the byte, deep nesting the exception's name."""
    headers, _body = receiver_message()
    cases = {
        b'{"email": "jane@example.com"': "Expecting ',' delimiter at character 28",
        b"\xff\xfe": "not UTF-8 at byte 0",
        b"[" * 100_000 + b"]" * 100_000: "RecursionError",
    }
    for data, expected in cases.items():
        problem = message_problem(kombu_message(data, headers), NOW, 10**7) or ""
        assert problem == f"its body is not JSON ({expected})"


def test_the_check_never_raises() -> None:
    """A message whose very attributes fail is refused as one that could not be checked."""

    class Broken:
        @property
        def headers(self) -> dict[str, Any]:
            raise MemoryError

    assert message_problem(Broken(), NOW, LARGEST) == "it could not be checked (MemoryError)"


def serialized(headers: dict[str, Any], **properties: Any) -> bytes:
    """The basic properties of a message as py-amqp sends them."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # py-amqp encodes tables recursively
    try:
        data: bytes = AmqpMessage(b"", application_headers=headers, **properties)._serialize_properties()
    finally:
        sys.setrecursionlimit(limit)
    return data


@pytest.fixture
def guarded_decoder() -> Iterator[Any]:
    """py-amqp's basic-properties decoder, guarded (as the worker and dlq install it) for one test."""
    original = serialization.PROPERTY_CLASSES[Basic.CLASS_ID]
    amqp_properties.install()
    yield serialization.PROPERTY_CLASSES[Basic.CLASS_ID]
    serialization.PROPERTY_CLASSES[Basic.CLASS_ID] = original


def test_properties_that_cannot_be_decoded_arrive_marked(guarded_decoder: Any) -> None:
    """Deep headers, an unknown field type or a bad string: a marker instead of an exception."""
    deep: Any = 1
    for _ in range(3000):
        deep = [deep]
    unknown_type = bytearray(serialized({"a": 1}))
    unknown_type[unknown_type.index(b"a") + 1] = ord("?")  # the value's type letter
    for data, error in [
        (serialized({"deep": deep}), "RecursionError"),
        (bytes(unknown_type), "FrameSyntaxError"),
    ]:
        properties, end = guarded_decoder(data, 0)
        assert end == len(data)
        marker = flaw(properties["application_headers"])
        assert marker == Unreadable(f"its AMQP properties cannot be decoded ({error})")


def test_a_compression_header_is_moved_aside_and_the_rest_decoded_as_sent(guarded_decoder: Any) -> None:
    """kombu then leaves the body as sent; the consumer refuses it, naming the compression."""
    data = serialized({"compression": "application/x-gzip", "id": "t"}, content_type="application/json")
    properties, _end = guarded_decoder(data, 0)
    assert properties["content_type"] == "application/json"
    headers = properties["application_headers"]
    assert "compression" not in headers
    assert headers["id"] == "t"
    assert flaw(headers) == Unreadable(
        "its body is compressed ('application/x-gzip'), which this service never does", "application/x-gzip"
    )
    plain, _end = guarded_decoder(serialized({"id": "t"}), 0)
    assert plain == {"application_headers": {"id": "t"}}


def test_the_decoder_is_wrapped_once_and_a_marker_cannot_be_forged(guarded_decoder: Any) -> None:
    """Installing again changes nothing; a header of the marker's name sent as text is no marker."""
    amqp_properties.install()
    assert serialization.PROPERTY_CLASSES[Basic.CLASS_ID] is guarded_decoder
    properties, _end = guarded_decoder(serialized({MARKER_HEADER: "forged"}), 0)
    assert flaw(properties["application_headers"]) is None


def test_a_refused_copy_keeps_its_headers_and_adds_the_reason_source_and_time() -> None:
    """Headers that cannot travel (a marker, too deep) are left out; a compression is kept by another name."""
    headers, _body = receiver_message()
    copied = copy_headers(headers, "why", "auth0.s", "w@host", NOW)
    assert copied == {**headers, REASON_HEADER: "why", SOURCE_HEADER: "auth0.s",
                      "x-auth0-events-refused-at": NOW, "x-auth0-events-refused-by": "w@host"}  # fmt: skip
    marked = {"id": "t", MARKER_HEADER: Unreadable("compressed", "zlib")}
    assert copy_headers(marked, "why", "q", "w", NOW)["x-auth0-events-compression"] == "zlib"
    assert "id" not in copy_headers(marked, "why", "q", "w", NOW)
    deep: Any = []
    for _ in range(20):
        deep = [deep]
    assert "deep" not in copy_headers({"deep": deep}, "why", "q", "w", NOW)
