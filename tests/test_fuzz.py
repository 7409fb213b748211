"""Bounded property-based fuzzing of the real receiver (the Procfile's gunicorn) and a real worker.

Generated and mutated bodies (every format, both HTTP framings, hostile values, sizes around the limit)
are posted to the receiver; generated messages are published straight to a work queue. The invariants
are the issue's: never a 5xx for anything in a body; what is accepted is exactly what reaches the work
queues; bad records are kept with their reason; nothing is truncated; no message crashes, wedges or loops
a worker, and the next event is handled.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu import Connection
from sqlalchemy import create_engine, text

from tests.helpers import TEST_TOKEN, ReceiverProcess, WorkerProcess, procfile_receiver, wait_for

pytestmark = pytest.mark.worker

#: Small, so generated bodies reach and cross the limit cheaply.
MAX_BODY = 48 * 1024
CODES = ("s", "f", "fp", "ss", "sapi", "pwd_leak", "not_a_code", "")
#: Values that broke something once (issue 10) or that no database or encoder takes.
HOSTILE_TOKENS = (
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "9" * 5000,
    '"\\u0000"',
    '"a\\u0000b"',
    '"\\ud800"',
    '"x\\udc00y"',
    '"' + "u" * 300 + '"',
    '"line\\nforged level=ERROR"',
    "12345678901234567890123456789012345678901234567890",
)


@dataclass
class Receiver:
    """A gunicorn receiver on queues of the test's own, and what it needs for the checks."""

    process: ReceiverProcess
    queues: tuple[str, ...]
    quarantine: str
    database_url: str

    @property
    def url(self) -> str:
        """Where it listens."""
        return self.process.url


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    """The Procfile's web line with a small body limit, routing everything to three queues of its own."""
    from kernel.storage.db import upgrade

    directory = tmp_path_factory.mktemp("fuzz")
    prefix = f"fuzz-{uuid.uuid4().hex[:8]}"
    queues = (f"{prefix}.s", f"{prefix}.f", f"{prefix}.other")
    database_url = f"sqlite:///{directory / 'ledger.sqlite3'}"
    upgrade(database_url)
    (directory / "metrics").mkdir()
    env = {
        "AUTH0_EVENTS_ROUTES": f"s={queues[0]},f={queues[1]},fp={queues[1]},*={queues[2]}",
        "AUTH0_EVENTS_MAX_BODY_BYTES": str(MAX_BODY),
        "DATABASE_URL": database_url,
        "PROMETHEUS_MULTIPROC_DIR": str(directory / "metrics"),
        "AUTH0_EVENTS_LOG_MASK_PII": "true",
    }
    with procfile_receiver(directory / "gunicorn.log", env, workers=2) as process:
        yield Receiver(process, queues, "auth0.quarantine", database_url)


# --- what the fuzzer sends -------------------------------------------------------------------------------


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


#: Personal data the fuzzed records carry anywhere; with masking on, no log line of any process may hold it.
EMAIL = "fuzz.person@example.org"
IP = "203.0.113.77"
IPV6 = "2001:db8::77"

scalars = st.one_of(
    st.sampled_from([EMAIL, IP, IPV6, f"user {EMAIL} from {IP}", f"[{IPV6}]:443"]).map(_json_text),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=40).map(_json_text),
    st.text(max_size=20).map(lambda value: json.dumps(value, ensure_ascii=True)),
    st.sampled_from(["true", "false", "null"]),
    st.sampled_from(HOSTILE_TOKENS),
)


def _array(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def _object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{_json_text(key)}:{value}" for key, value in pairs) + "}"


json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(_array),
        st.lists(st.tuples(st.text(max_size=10), children), max_size=4).map(_object),
    ),
    max_leaves=12,
)
deep_nesting = st.integers(min_value=1, max_value=3000).map(lambda depth: "[" * depth + "]" * depth)


@st.composite
def records(draw: st.DrawFn) -> str:
    """One record as JSON text: mostly Auth0-shaped, with fields drawn from anything JSON can hold."""
    log_id = draw(
        st.one_of(
            st.integers(min_value=0, max_value=10**56).map(lambda n: _json_text(str(n))),
            json_values,
        )
    )
    code = draw(st.one_of(st.sampled_from(CODES).map(_json_text), json_values))
    fields = [("type", code)]
    for name in ("date", "user_name", "user_id", "ip", "client_id", "connection", "description"):
        if draw(st.booleans()):
            fields.append((name, draw(json_values)))
    if draw(st.booleans()):
        fields.append(("details", draw(st.one_of(json_values, deep_nesting))))
    data = _object(fields)
    shape = draw(st.sampled_from(["envelope", "bare", "value"]))
    if shape == "envelope":
        return _object([("log_id", log_id), ("data", data)])
    if shape == "bare":
        return _object([("log_id", log_id), *fields])
    body: str = draw(st.one_of(json_values, deep_nesting))
    return body


class Body:
    """A request body, how it is framed, and how many records it holds when that is known."""

    def __init__(
        self, data: bytes, chunked: bool, records: int | None, request_id: str | None = None
    ) -> None:
        self.data = data
        self.chunked = chunked
        self.records = records  # None once mutated: the count is then unknown
        self.request_id = request_id  # the X-Request-Id header, which the receiver logs and publishes

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def __repr__(self) -> str:
        # Hypothesis prints a failing case; a whole 48 KiB body would drown the report.
        head = self.data[:300] + (b"..." + self.data[-100:] if len(self.data) > 400 else b"")
        return f"Body({len(self.data)} bytes, chunked={self.chunked}, records={self.records}, {head!r})"


@st.composite
def bodies(draw: st.DrawFn) -> Body:
    """A body in one of Auth0's formats (or none), maybe padded to the limit, maybe mutated."""
    items = draw(st.lists(records(), min_size=1, max_size=30))
    form = draw(st.sampled_from(["jsonl", "array", "object", "concatenated", "pretty"]))
    if form == "object":
        items = items[:1]
    joined = {
        "jsonl": "\n".join,
        "array": _array,
        "object": "".join,
        "concatenated": "".join,
        "pretty": "\n\n  ".join,
    }[form](items)
    data = joined.encode("utf-8", "surrogatepass")
    count: int | None = len(items)
    if form != "array" and any(item.lstrip().startswith("[") for item in items):
        count = None  # a top-level array outside the array format: its items are the records
    if draw(st.integers(0, 9)) == 0:
        # Around the limit: padding whitespace, which no format counts as a record.
        target = MAX_BODY + draw(st.integers(-2, 2))
        data += b" " * max(0, target - len(data))
    if draw(st.integers(0, 4)) == 0:
        data = draw(_mutated(data))
        count = None
    request_id = draw(
        st.none()
        | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300).map(str.strip)
    )
    return Body(data, draw(st.booleans()), count, request_id)


@st.composite
def _mutated(draw: st.DrawFn, data: bytes) -> bytes:
    position = draw(st.integers(0, len(data)))
    kind = draw(st.sampled_from(["truncate", "insert", "replace", "bom"]))
    if kind == "truncate":
        return data[:position]
    if kind == "bom":
        return b"\xef\xbb\xbf" + data
    junk = draw(st.binary(min_size=1, max_size=8))
    end = position + (len(junk) if kind == "replace" else 0)
    return data[:position] + junk + data[end:]


# --- the checks ------------------------------------------------------------------------------------------


def queue_depths(broker_url: str, names: tuple[str, ...]) -> dict[str, int]:
    """Ready messages in each queue (nothing consumes them while the receiver is fuzzed)."""
    depths = {}
    with Connection(broker_url) as connection:
        channel = connection.channel()
        for name in names:
            depths[name] = channel.queue_declare(name, passive=True).message_count
        channel.close()
    return depths


def post(url: str, body: Body) -> requests.Response:
    """POST the body with a Content-Length, or chunked (no Content-Length) when the case says so."""
    headers = {"Authorization": f"Bearer {TEST_TOKEN}", "Content-Type": "application/json"}
    if body.request_id is not None:
        headers["X-Request-Id"] = body.request_id
    if body.chunked:
        pieces = [body.data[start : start + 4096] for start in range(0, len(body.data), 4096)]
        return requests.post(f"{url}/webhooks/auth0", data=iter(pieces), headers=headers, timeout=30)
    return requests.post(f"{url}/webhooks/auth0", data=body.data, headers=headers, timeout=30)


def check_answer(body: Body, response: requests.Response, elapsed: float) -> dict[str, Any]:
    """The answer alone: never a 5xx, always JSON, 413 exactly above the limit, counts that add up."""
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    assert response.status_code in (202, 400, 413), response.text[:500]
    answer = response.json()
    assert elapsed < 15, f"answered after {elapsed:.1f}s"
    assert (response.status_code == 413) == (len(body.data) > MAX_BODY), (len(body.data), answer)
    if response.status_code == 202:
        parts = answer["accepted"] + answer["filtered"] + answer["quarantined"] + answer["duplicates"]
        assert parts == answer["received"], answer
        if body.records is not None:
            assert answer["received"] == body.records, answer
    return dict(answer)


def check_quarantine_message(broker_url: str, queue: str, quarantined: int) -> None:
    """The request's one quarantine message counts every bad record and keeps each one it holds whole,
    with its reason."""
    with Connection(broker_url) as connection:
        (message,) = take_all(connection, queue)
    kept = json.loads(message.body)
    assert kept["quarantined"] == quarantined
    assert sum(kept["reasons"].values()) == quarantined
    assert len(kept["records"]) + kept["omitted"] == quarantined
    for entry in kept["records"]:
        assert entry["reason"]
        assert "record" in entry or "record_text" in entry or "record_repr" in entry


def test_receiver_under_fuzzed_bodies_then_worker_drains_everything(
    receiver: Receiver, broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Fuzzed bodies: every answer keeps the invariants; then a real worker takes every message and lives."""
    watched = (*receiver.queues, receiver.quarantine)
    totals = {"accepted": 0, "requests": 0}

    @settings(
        max_examples=int(os.environ.get("AUTH0_EVENTS_FUZZ_EXAMPLES", "200")),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(body=bodies())
    def post_one(body: Body) -> None:
        before = queue_depths(broker_url, watched)
        started = time.monotonic()
        response = post(receiver.url, body)
        answer = check_answer(body, response, time.monotonic() - started)
        after = queue_depths(broker_url, watched)
        added = {name: after[name] - before[name] for name in watched}
        work_added = sum(added[name] for name in receiver.queues)
        if response.status_code != 202:
            assert work_added == 0, (response.status_code, added)
            assert added[receiver.quarantine] == 0, (response.status_code, added)
            return
        assert work_added == answer["accepted"], (answer, added)
        assert added[receiver.quarantine] == (1 if answer["quarantined"] else 0), (answer, added)
        if answer["quarantined"]:
            check_quarantine_message(broker_url, receiver.quarantine, answer["quarantined"])
        totals["accepted"] += answer["accepted"]
        totals["requests"] += 1

    post_one()
    assert receiver.process.process.poll() is None, "the receiver died"
    drain_with_a_worker(receiver, broker_url, tmp_path_factory.mktemp("fuzz-worker"))


def drain_with_a_worker(receiver: Receiver, broker_url: str, directory: Path) -> None:
    """A real worker takes every message the fuzzing left, stays alive, and then handles a fresh event."""
    env = {
        key: receiver.process.env[key]
        for key in (
            "AUTH0_EVENTS_ROUTES",
            "DATABASE_URL",
            "AUTH0_EVENTS_MAX_BODY_BYTES",
            "AUTH0_EVENTS_LOG_MASK_PII",
        )
    }
    worker = WorkerProcess(list(receiver.queues), f"fuzz-{uuid.uuid4().hex[:6]}", directory / "w.log", env, 2)
    worker.start()
    try:
        wait_for(
            lambda: not any(queue_depths(broker_url, receiver.queues).values()),
            120,
            0.2,
            "the worker to take every fuzzed message",
        )
        engine = create_engine(receiver.database_url)
        unsettled = "SELECT count(*) FROM events WHERE state NOT IN ('processed', 'dead_lettered')"

        def settled() -> bool:
            assert_alive(worker)
            with engine.connect() as connection:
                return bool(connection.execute(text(unsettled)).scalar_one() == 0)

        wait_for(settled, 120, 0.2, "every fuzzed event to be processed or dead-lettered")
        sentinel = f"sentinel-{uuid.uuid4().hex}"
        record = {"log_id": sentinel, "data": {"type": "s", "date": "2026-11-29T00:00:00Z"}}
        response = requests.post(
            f"{receiver.url}/webhooks/auth0",
            data=json.dumps(record),
            headers={"Authorization": f"Bearer {TEST_TOKEN}"},
            timeout=30,
        )
        assert response.status_code == 202, response.text
        query = text("SELECT state FROM events WHERE log_id = :log_id")

        def sentinel_processed() -> bool:
            with engine.connect() as connection:
                return connection.execute(query, {"log_id": sentinel}).scalar() == "processed"

        wait_for(sentinel_processed, 60, 0.2, "the worker to handle a fresh event after the fuzzing")
        engine.dispose()
        assert_alive(worker)
        assert_no_crash_lines(worker.log_text())
    finally:
        worker.stop()
    for process, log in (
        ("receiver", receiver.process.log_text()),
        ("worker", worker.log_text()),
    ):
        for value in (EMAIL, IP, IPV6):
            assert value not in log, f"{value} in the {process}'s log with masking on"


# --- messages published straight to a work queue ----------------------------------------------------------

HEADER_NAMES = (
    *("task", "id", "root_id", "eta", "expires", "retries", "timelimit", "group", "shadow"),
    *("argsrepr", "kwargsrepr", "origin", "lang", "parent_id", "ignore_result", "compression"),
)
header_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=30),
        st.sampled_from(
            [
                "auth0_events.handle_event",
                "celery.chord_unlock",
                "9999-12-31T23:59:59+00:00",
                "2000-01-01T00:00:00+00:00",
                "zlib",
                "bzip2",
            ]
        ),  # fmt: skip
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=5), children)
    ),
    max_leaves=8,
)


@dataclass(frozen=True)
class Delivery:
    """One message as published: body bytes, content type and encoding, headers."""

    body: bytes
    content_type: str
    content_encoding: str
    headers: dict[str, Any]


def valid_delivery(log_id: str) -> Delivery:
    """What the receiver publishes for one login, built with Celery's own message builder."""
    from kernel.wire import TASK_NAME
    from tasks.celery_app import app

    record = {"log_id": log_id, "data": {"type": "s", "date": "2026-11-29T00:00:00Z", "details": {}}}
    kwargs = {"event_type": "s", "log_id": log_id}
    headers, _properties, body, _sent = app.amqp.as_task_v2(
        str(uuid.uuid4()), TASK_NAME, args=(record,), kwargs=kwargs, argsrepr="()", kwargsrepr="{}"
    )
    return Delivery(json.dumps(body).encode(), "application/json", "utf-8", dict(headers))


@st.composite
def deliveries(draw: st.DrawFn) -> Delivery:
    """A valid task message with one part replaced: the body, a header, the content type, the record."""
    base = valid_delivery(f"fz{draw(st.integers(0, 10**12))}")
    part = draw(st.sampled_from(["body_bytes", "body_json", "header", "drop_header", "content", "record",
                                 "kwargs", "embed", "none"]))  # fmt: skip
    body, headers = base.body, dict(base.headers)
    content_type, encoding = base.content_type, base.content_encoding
    args, kwargs, embed = json.loads(body)
    if part == "body_bytes":
        body = draw(st.binary(max_size=200))
    elif part == "body_json":
        body = draw(st.one_of(json_values, deep_nesting)).encode("utf-8", "surrogatepass")
    elif part == "header":
        headers[draw(st.sampled_from(HEADER_NAMES))] = draw(header_values)
    elif part == "drop_header":
        headers.pop(draw(st.sampled_from(sorted(headers))), None)
    elif part == "content":
        types = ["application/json", "application/x-python-serialize", "text/plain", "application/data", ""]
        content_type = draw(st.sampled_from(types))
        encoding = draw(st.sampled_from(["utf-8", "binary", "latin-1", ""]))
    elif part in ("record", "kwargs", "embed"):
        replacement = draw(st.one_of(json_values, deep_nesting))
        raw_args, raw_kwargs, raw_embed = json.dumps(args), json.dumps(kwargs), json.dumps(embed)
        if part == "record":
            raw_args = f"[{replacement}]"
        elif part == "kwargs":
            raw_kwargs = replacement
        else:
            raw_embed = replacement
        body = f"[{raw_args},{raw_kwargs},{raw_embed}]".encode("utf-8", "surrogatepass")
    if part == "header" and "eta" in headers and isinstance(headers["eta"], str):
        # An ETA inside the retry window is legitimate and would be held for minutes: keep them far.
        headers["eta"] = draw(st.sampled_from(["2000-01-01T00:00:00+00:00", "9999-12-31T23:59:59+00:00"]))
    return Delivery(body, content_type, encoding, headers)


def publish_raw(connection: Connection, queue: str, delivery: Delivery) -> None:
    """Publish the bytes as they are, straight to the work queue, as anyone with broker access could."""
    from kombu import Producer

    from kernel.topology import EVENTS_EXCHANGE

    producer = Producer(connection.default_channel, exchange=EVENTS_EXCHANGE, auto_declare=False)
    producer.publish(
        delivery.body,
        routing_key=queue,
        content_type=delivery.content_type,
        content_encoding=delivery.content_encoding,
        headers=delivery.headers,
        delivery_mode=2,
        retry=False,
    )


def test_worker_under_fuzzed_messages_dead_letters_them_and_goes_on(
    broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Messages anyone with broker access could publish: each is handled or dead-lettered with a reason,
    and the worker (one process, so nothing runs beside a wedged message) then handles a fresh event."""
    from kernel.storage.db import upgrade
    from kernel.topology import declare_all
    from kernel.wire import REASON_HEADER

    directory = tmp_path_factory.mktemp("fuzz-messages")
    queue = f"fuzz-{uuid.uuid4().hex[:8]}.s"
    database_url = f"sqlite:///{directory / 'ledger.sqlite3'}"
    upgrade(database_url)
    env = {
        "AUTH0_EVENTS_ROUTES": f"s={queue}",
        "DATABASE_URL": database_url,
        "AUTH0_EVENTS_LOG_MASK_PII": "true",
    }
    published: list[Delivery] = []
    connections = [Connection(broker_url)]
    declare_all(connections[0], [queue])

    @settings(
        max_examples=int(os.environ.get("AUTH0_EVENTS_FUZZ_EXAMPLES", "200")),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(delivery=deliveries())
    def publish_one(delivery: Delivery) -> None:
        try:
            publish_raw(connections[-1], queue, delivery)
        except Exception:  # noqa: BLE001 - py-amqp's encoder (struct.error, ValueError…) or the broker
            # refused these headers, so no queue holds the message; RabbitMQ closes the connection for some
            # (541 INTERNAL_ERROR): go on with a new one.
            with contextlib.suppress(Exception):
                connections[-1].release()
            connections.append(Connection(broker_url))
            return
        published.append(delivery)

    publish_one()
    sentinel = f"sentinel-{uuid.uuid4().hex}"
    publish_raw(connections[-1], queue, valid_delivery(sentinel))
    connections[-1].release()

    worker = WorkerProcess([queue], f"fuzzm-{uuid.uuid4().hex[:6]}", directory / "w.log", env, 1)
    worker.start()
    try:
        engine = create_engine(database_url)
        query = text("SELECT state FROM events WHERE log_id = :log_id")

        def sentinel_processed() -> bool:
            assert_alive(worker)
            with engine.connect() as connection:
                return connection.execute(query, {"log_id": sentinel}).scalar() == "processed"

        wait_for(sentinel_processed, 120, 0.2, "the worker to handle the event after the fuzzed messages")
        with Connection(broker_url) as connection:
            assert queue_depths(broker_url, (queue,))[queue] == 0
            letters = take_all(connection, f"{queue}.dlq")
        with engine.connect() as connection:
            reasons: dict[str | None, str] = dict(
                connection.execute(
                    text("SELECT log_id, last_error FROM events WHERE state = 'dead_lettered'")
                ).all()
            )
        engine.dispose()
        for letter in letters:
            headers = letter.headers or {}
            reason = headers.get(REASON_HEADER) or reasons.get(_kwarg_log_id(letter))
            assert reason, f"a dead letter without a reason: {headers!r:.500}"
        print(f"fuzzed messages: {len(published)} published, {len(letters)} dead-lettered")
        assert len(letters) <= len(published)
        assert_no_crash_lines(worker.log_text())
    finally:
        worker.stop()
    for value in (EMAIL, IP, IPV6):
        assert value not in worker.log_text(), f"{value} in the worker's log with masking on"


def assert_alive(worker: WorkerProcess) -> None:
    """The worker process is still running."""
    assert worker.process is not None, "the worker never started"
    assert worker.process.poll() is None, f"the worker exited:\n{worker.log_text()[-5000:]}"


def assert_no_crash_lines(log: str) -> None:
    """The worker's log has no line of a crash: nothing CRITICAL, no "Unrecoverable error"."""
    for line in log.splitlines():
        assert '"level": "CRITICAL"' not in line, line
        assert "Unrecoverable error" not in line, line


def take_all(connection: Connection, name: str) -> list[Any]:
    """Remove and return every message of ``name``, undecoded."""
    from amqp.exceptions import NotFound
    from kombu import Queue

    messages = []
    with connection.channel() as channel:
        bound = Queue(name).bind(channel)
        try:
            while (message := bound.get(no_ack=True, accept=["application/json"])) is not None:
                messages.append(message)
        except NotFound:
            return []
    return messages


def _kwarg_log_id(letter: Any) -> str | None:
    try:
        _args, kwargs, _embed = json.loads(letter.body)
        return str(kwargs["log_id"])
    except Exception:  # noqa: BLE001 - a dead letter's body may be anything
        return None
