"""Messages published straight to a work queue (by anyone with broker access) against a real worker.

Each one that is not this service's task message ends in the queue's DLQ with the reason, its body stays
out of the log, and the worker takes the next event: it neither dies, nor hangs, nor loops.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import amqp
import pytest
from celery import Celery
from celery.worker.consumer.gossip import Gossip
from kombu import Connection, Exchange, Producer
from kombu.message import Message

from kernel.topology import dead_letter_queue, work_queue
from kernel.wire import REASON_HEADER, REFUSED_AT_HEADER, SOURCE_HEADER, TASK_NAME
from tasks.celery_app import app
from tasks.consumer import GuardedConsumer, SafeGossip
from tasks.refusal import Refuser
from tests.helpers import WorkerProcess, count_lines, make_record, take_messages, wait_for

pytestmark = pytest.mark.worker
#: The worker's AUTH0_EVENTS_MAX_BODY_BYTES: task messages over 5 x this + 64 KiB are refused.
MAX_BODY_BYTES = 20_000


@dataclass
class PoisonQueue:
    """A work queue of this module's own, its worker, and the dead letters read from its DLQ so far."""

    name: str
    worker: WorkerProcess
    url: str
    effects: Path
    dead: list[Any] = field(default_factory=list)

    def publish(self, body: bytes, headers: dict[str, Any] | None, **properties: Any) -> None:
        """Publish ``body`` straight to the work queue, persistent and confirmed."""
        properties.setdefault("content_type", "application/json")
        properties.setdefault("content_encoding", "utf-8")
        with Connection(self.url, transport_options={"confirm_publish": True}) as connection:
            if properties["content_type"] is None:  # kombu would serialize it; py-amqp sends it bare
                connection.default_channel.basic_publish(amqp.Message(body), "auth0.events", self.name)
                return
            Producer(connection.channel()).publish(
                body, exchange="auth0.events", routing_key=self.name, headers=headers, delivery_mode=2,
                retry=False, **properties,
            )  # fmt: skip

    def refused(self, match: Callable[[Any], bool], what: str) -> Any:
        """The dead letter ``match`` picks, once it is in the DLQ."""

        def look() -> Any:
            with Connection(self.url) as connection:
                self.dead += take_messages(connection, self.name + ".dlq")
            return next((message for message in self.dead if match(message)), None)

        return self.wait(look, f"{what} in the DLQ")

    def wait(self, check: Callable[[], Any], what: str) -> Any:
        """wait_for(check), failing with the worker's state and last errors."""
        try:
            return wait_for(check, 30, 0.1, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc} ({self.diagnosis()})") from None

    def diagnosis(self) -> str:
        """Whether the worker still runs, and its last error lines."""
        assert self.worker.process is not None
        exited = self.worker.process.poll()
        state = "worker running" if exited is None else f"worker exited with {exited}"
        lines = self.worker.log_text().splitlines()
        errors = [line[:300] for line in lines if '"CRITICAL"' in line or "Unrecoverable" in line]
        return f"{state}; last errors: {errors[-2:]}"

    def still_working(self) -> None:
        """A valid event published after the poison one is processed, and the worker is the same process."""
        record = make_record("s")
        self.publish(*task_message(record))
        self.wait(
            lambda: count_lines(self.effects, "effects.log", f"effect {record['log_id']}") == 1,
            "the next event's effect",
        )
        assert self.worker.process is not None
        assert self.worker.process.poll() is None
        assert "Unrecoverable error" not in self.worker.log_text()


@pytest.fixture(scope="module")
def poison(
    broker_url: str, effects_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PoisonQueue]:
    """One worker on one queue for the module: a poison message must not stop it for the next test."""
    name = f"test.poison.{uuid.uuid4().hex[:8]}"
    log_path = tmp_path_factory.mktemp("poison") / "worker.log"
    env = {"AUTH0_EVENTS_ROUTES": f"s={name}", "AUTH0_EVENTS_MAX_BODY_BYTES": str(MAX_BODY_BYTES)}
    worker = WorkerProcess([name], f"poison-{uuid.uuid4().hex[:6]}", log_path, env)
    worker.start()
    yield PoisonQueue(name, worker, broker_url, effects_dir)
    worker.stop()


def task_message(record: Any, body: Any = None, **changes: Any) -> tuple[bytes, dict[str, Any]]:
    """The body and headers the receiver publishes for ``record`` (or ``body``), with header ``changes``."""
    log_id = record.get("log_id", "-") if isinstance(record, dict) else "-"
    kwargs = {"event_type": "s", "log_id": log_id, "received_at": datetime.now(UTC).isoformat()}
    headers, _properties, task_body, _event = app.amqp.as_task_v2(
        str(uuid.uuid4()), TASK_NAME, args=(record,), kwargs=kwargs, argsrepr="(<auth0 log>,)"
    )
    headers.update(changes)
    return json.dumps(task_body if body is None else body).encode(), headers


def nested(depth: int) -> Any:
    """``depth`` levels of arrays, built without recursion."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def deep_record(depth: int) -> dict[str, Any]:
    """A login record with ``depth`` levels of arrays inside ``data``."""
    return make_record("s", details={"nested": nested(depth)})


def deep_body(depth: int) -> tuple[bytes, dict[str, Any]]:
    """A task message whose record nests ``depth`` arrays inside ``data``, serialized without recursion."""
    marker = "[0]"
    body, headers = task_message(make_record("s", details={"nested": [0]}))
    return body.replace(marker.encode(), b"[" * depth + b"0" + b"]" * depth, 1), headers


def raw(body: str | bytes) -> bytes:
    """A message body as sent (py-amqp decodes one with a content encoding)."""
    return body.encode() if isinstance(body, str) else body


def by_id(headers: dict[str, Any]) -> Callable[[Any], bool]:
    """Picks the dead letter of the task id in ``headers``."""
    return lambda message: message.headers.get("id") == headers["id"]


def assert_refused(poison: PoisonQueue, message: Any, *reasons: str) -> None:
    """The dead letter carries one of ``reasons``, its source queue and when it was refused."""
    reason = message.headers[REASON_HEADER]
    assert any(expected in reason for expected in reasons), reason
    assert message.headers[SOURCE_HEADER] == poison.name
    assert isinstance(message.headers[REFUSED_AT_HEADER], datetime)
    assert message.properties["delivery_mode"] == 2


@pytest.mark.parametrize("depth", [500, 900, 970])
def test_a_deeply_nested_record_is_dead_lettered_and_the_worker_goes_on(
    poison: PoisonQueue, depth: int
) -> None:
    """Pickled for the pool, such a record killed the worker with RecursionError on every restart."""
    body, headers = deep_body(depth)
    poison.publish(body, headers)
    letter = poison.refused(by_id(headers), f"the {depth}-level record")
    # Decoding in the worker's main process fails near 960 levels; below that the depth check refuses it.
    assert_refused(poison, letter, "nests deeper than 64 levels", "its body is not JSON (RecursionError)")
    assert raw(letter.body) == body
    poison.still_working()


def test_a_null_body_is_dead_lettered(poison: PoisonQueue) -> None:
    """A body of JSON null crashed the worker in a loop (TypeError unpacking the task arguments)."""
    _body, headers = task_message(make_record("s"))
    poison.publish(b"null", headers)
    assert_refused(poison, poison.refused(by_id(headers), "the null body"), "its body is a JSON null")
    poison.still_working()


def test_a_body_that_is_not_json_is_dead_lettered_and_not_logged(poison: PoisonQueue) -> None:
    """Celery acked such a body and logged it whole: the event was lost, and its content was in the log."""
    secret = f"jane.doe+{uuid.uuid4().hex}@example.com"
    _body, headers = task_message(make_record("s"))
    poison.publish(f"not json {secret}".encode(), headers)
    letter = poison.refused(by_id(headers), "the non-JSON body")
    assert_refused(poison, letter, "its body is not JSON (Expecting value at character 0)")
    assert raw(letter.body) == f"not json {secret}".encode()
    poison.still_working()
    assert secret not in poison.worker.log_text()


def good_kwargs(record: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments the receiver sends with ``record``."""
    return {"event_type": "s", "log_id": record["log_id"], "received_at": datetime.now(UTC).isoformat()}


EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def body_case(make: Callable[[dict[str, Any]], Any]) -> Callable[[], tuple[bytes, dict[str, Any]]]:
    """A case whose body is ``make(record)`` under the headers of a real task message."""
    return lambda: task_message(record := make_record("s"), body=make(record))


BODY_CASES = {
    "protocol 1 shape": (
        body_case(lambda r: {"task": TASK_NAME, "args": [r], "kwargs": {}}),
        "a JSON object",
    ),
    "two items": (body_case(lambda r: [[r], {}]), "a JSON array, not Celery's"),
    "a string": (body_case(lambda r: "hello"), "a JSON string"),
    "no record": (body_case(lambda r: [[], good_kwargs(r), EMBED]), "not one record object"),
    "string record": (body_case(lambda r: [["x"], good_kwargs(r), EMBED]), "not one record object"),
    "two records": (body_case(lambda r: [[r, r], good_kwargs(r), EMBED]), "not one record object"),
    "kwargs list": (body_case(lambda r: [[r], [], EMBED]), "keyword arguments are not an object"),
    "log_id number": (
        body_case(lambda r: [[r], {**good_kwargs(r), "log_id": 5}, EMBED]),
        "its log_id is not a non-empty UTF-8 string",
    ),
    "lone surrogate": (
        body_case(lambda r: [[r], {**good_kwargs(r), "log_id": "\ud800"}, EMBED]),
        "its log_id is not a non-empty UTF-8 string",
    ),
    "extra kwarg": (
        body_case(lambda r: [[r], {**good_kwargs(r), "debug": "1"}, EMBED]),
        "its keyword arguments are not event_type, log_id",
    ),
    "other log_id": (
        body_case(lambda r: [[r], {**good_kwargs(r), "log_id": "other"}, EMBED]),
        "differs from the record's",
    ),
    "callbacks": (
        body_case(lambda r: [[r], good_kwargs(r), {**EMBED, "callbacks": [{"task": "celery.ping"}]}]),
        "asks for further tasks",
    ),
    "invalid record": (
        body_case(lambda r: [[{"data": {}}], good_kwargs(r), EMBED]),
        "its record is invalid: record has no 'log_id' string",
    ),
}


def header_case(**changes: Any) -> Callable[[], tuple[bytes, dict[str, Any]]]:
    """A real task message with ``changes`` to its headers (None deletes one)."""

    def make() -> tuple[bytes, dict[str, Any]]:
        body, headers = task_message(make_record("s"), **changes)
        return body, {key: value for key, value in headers.items() if value is not None}

    return make


HEADER_CASES = {
    "unregistered task": (header_case(task="nope.nope"), "its task 'nope.nope' is not"),
    "celery built-in": (header_case(task="celery.chord_unlock"), "its task 'celery.chord_unlock' is not"),
    "no task header": (header_case(task=None), "no task header"),
    "no id": (header_case(id=None), "its task id is not a string"),
    "retries text": (header_case(retries="1"), "its retries header is not a whole number"),
    "eta in 9999": (header_case(eta="9999-12-31T23:59:59+00:00"), "its eta is more than 1500 s ahead"),
    "eta in a day": (
        header_case(eta=(datetime.now(UTC) + timedelta(days=1)).isoformat()),
        "its eta is more than 1500 s ahead",
    ),
    "eta not a time": (header_case(eta="soon"), "its eta is not an ISO 8601 time"),
    "expired": (header_case(expires="2000-01-01T00:00:00+00:00"), "it carries 'expires'"),
    "expires later": (header_case(expires="2999-01-01T00:00:00+00:00"), "it carries 'expires'"),
    "time limit": (header_case(timelimit=[10**9, None]), "its timelimit is not two limits"),
    "group": (header_case(group="g"), "it carries 'group'"),
    "long argsrepr": (header_case(argsrepr="x" * 5000), "its argsrepr header is not"),
    "deep header": (header_case(extra=nested(100)), "its headers nest deeper than 16 levels"),
}


@pytest.mark.parametrize("case", sorted({**BODY_CASES, **HEADER_CASES}))
def test_a_message_that_is_not_our_task_is_dead_lettered_with_the_reason(
    poison: PoisonQueue, case: str
) -> None:
    """Each shape only someone else publishes is refused with what is wrong; the worker goes on."""
    make, reason = {**BODY_CASES, **HEADER_CASES}[case]
    body, headers = make()
    poison.publish(body, headers)
    assert_refused(poison, poison.refused(lambda m: raw(m.body) == body, case), reason)
    poison.still_working()


def test_a_body_of_another_content_type_is_dead_lettered(poison: PoisonQueue) -> None:
    """A pickled body (which Celery is not configured to accept) is refused before anything decodes it."""
    body, headers = task_message(make_record("s"))
    poison.publish(
        b"\x80\x04N.", headers, content_type="application/x-python-serialize", content_encoding="binary"
    )
    letter = poison.refused(by_id(headers), "the pickled body")
    assert_refused(poison, letter, "its content type is 'application/x-python-serialize'")
    assert letter.content_type == "application/x-python-serialize"
    poison.still_working()


def test_a_compressed_body_is_dead_lettered_without_being_decompressed(poison: PoisonQueue) -> None:
    """kombu would decompress it before Celery sees it: a small body could expand past the worker's memory."""
    body, headers = task_message(make_record("s"))
    compressed = zlib.compress(body)
    poison.publish(compressed, {**headers, "compression": "application/x-gzip"})
    letter = poison.refused(lambda m: raw(m.body) == compressed, "the compressed body")
    assert_refused(poison, letter, "its body is compressed ('application/x-gzip')")
    assert "compression" not in letter.headers
    assert letter.headers["x-auth0-events-compression"] == "application/x-gzip"
    poison.still_working()


def test_headers_too_deep_to_decode_are_dead_lettered(poison: PoisonQueue) -> None:
    """py-amqp decodes headers recursively in the frame reader: 3,000 levels killed the worker there."""
    body, headers = task_message(make_record("s"))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # py-amqp encodes them recursively too
    try:
        poison.publish(body, {**headers, "deep": nested(3000)})
    finally:
        sys.setrecursionlimit(limit)
    letter = poison.refused(lambda m: raw(m.body) == body, "the message with deep headers")
    assert_refused(poison, letter, "its AMQP properties cannot be decoded (RecursionError)")
    assert "deep" not in letter.headers
    poison.still_working()


def test_a_body_larger_than_any_task_message_is_dead_lettered(poison: PoisonQueue) -> None:
    """The receiver accepts requests of AUTH0_EVENTS_MAX_BODY_BYTES; a record cannot grow past 5 x that."""
    record = make_record("s", details={"blob": "x" * (5 * MAX_BODY_BYTES + 64 * 1024)})
    body, headers = task_message(record)
    poison.publish(body, headers)
    letter = poison.refused(by_id(headers), "the huge message")
    assert_refused(poison, letter, "its body is over 165536 bytes, more than a task message can be")
    poison.still_working()


def test_a_message_without_headers_or_properties_is_dead_lettered(poison: PoisonQueue) -> None:
    """A bare body with no headers at all is not a task message; it keeps its (missing) content type."""
    token = uuid.uuid4().hex.encode()
    poison.publish(token, None, content_type=None, content_encoding=None)
    letter = poison.refused(lambda m: raw(m.body) == token, "the bare message")
    assert_refused(poison, letter, "its content type is")
    poison.still_working()


@pytest.fixture
def refusal_queue(broker: Any) -> str:
    """A declared work queue and its DLQ, consumed by no worker."""
    name = f"test.refuse.{uuid.uuid4().hex[:8]}"
    with broker.channel() as channel:
        for queue in (work_queue(name, "classic"), dead_letter_queue(name, "classic")):
            queue.bind(channel).declare()
    return name


def fetch_one(channel: Any, queue: str, body: bytes) -> Any:
    """Publish ``body`` to ``queue`` and fetch it back unacked, as the consumer holds a delivery."""
    Producer(channel).publish(body, routing_key=queue, exchange="", content_type="application/json",
                              content_encoding="utf-8", headers={"id": "t-1"}, delivery_mode=2)  # fmt: skip
    return wait_for(lambda: channel.basic_get(queue, no_ack=False), 10, 0.05, "the message")


def test_a_refusal_publishes_a_confirmed_copy_then_acks(
    broker: Any, broker_url: str, refusal_queue: str
) -> None:
    """The copy carries the reason; the original is acked (it does not come back when the channel closes)."""
    refuser = Refuser(app, "tester@host", timeout=5)
    try:
        with broker.channel() as channel:
            raw = fetch_one(channel, refusal_queue, b"null")
            refuser.refuse(channel.message_to_python(raw), refusal_queue, "its body is a JSON null")
    finally:
        refuser.close()
    [copy] = take_messages(broker, refusal_queue + ".dlq")
    assert copy.headers[REASON_HEADER] == "its body is a JSON null"
    assert copy.headers["x-auth0-events-refused-by"] == "tester@host"
    assert copy.headers["id"] == "t-1"
    assert "x-death" not in copy.headers
    assert take_messages(broker, refusal_queue) == []


def test_a_refusal_whose_copy_cannot_be_published_rejects_so_rabbitmq_dead_letters_it(
    broker: Any, refusal_queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With no broker for the copy (here: nothing listens where it publishes) the original is rejected,
    and so are the next refusals for a while, without trying (and waiting) again each time.
    """
    caplog.set_level(logging.WARNING, logger="tasks.refusal")  # whatever an earlier test left the root at
    unreachable = Celery("refuser-test", broker="amqp://guest:guest@127.0.0.1:1//")
    refuser = Refuser(unreachable, "tester@host", timeout=1)
    with broker.channel() as channel:
        for _ in range(2):
            raw = fetch_one(channel, refusal_queue, b"null")
            refuser.refuse(channel.message_to_python(raw), refusal_queue, "its body is a JSON null")
    letters = take_messages(broker, refusal_queue + ".dlq")
    assert [letter.headers["x-death"][0]["reason"] for letter in letters] == ["rejected", "rejected"]
    assert REASON_HEADER not in letters[0].headers
    assert take_messages(broker, refusal_queue) == []
    assert caplog.text.count("could not publish a refused message's copy") == 1
    assert caplog.text.count("rejected: RabbitMQ dead-letters it without the reason") == 2


def test_junk_on_the_remote_control_exchange_is_dropped_unlogged_and_the_worker_still_answers(
    poison: PoisonQueue,
) -> None:
    """Celery reports an undecodable control message to the consumer, which must not reject it (no-ack);
    one that decodes but is no command (a null, an object without ``method``) is dropped too, without
    Celery's restart of the mailbox, which lost the control messages sent just after it.
    """
    secret = f"jane.doe+{uuid.uuid4().hex}@example.com"
    junk = (b"null", f"not json {secret}".encode(), b"[" * 990 + b"]" * 990, b'{"arguments": {}}')
    already = poison.worker.log_text().count("dropped a control message")
    with Connection(poison.url) as connection:
        producer = Producer(connection.channel())
        for body in junk:
            producer.publish(body, exchange=Exchange("celery.pidbox", "fanout"), routing_key="",
                             content_type="application/json", content_encoding="utf-8")  # fmt: skip
    poison.wait(
        lambda: poison.worker.log_text().count("dropped a control message") == already + len(junk),
        "every control message dropped",
    )
    assert "Control command error" not in poison.worker.log_text()
    replies = app.control.ping([f"{poison.worker.name}@{socket.gethostname()}"], timeout=5)
    assert replies, poison.diagnosis()
    poison.still_working()
    assert secret not in poison.worker.log_text()


def test_gossip_ignores_a_worker_event_it_cannot_read() -> None:
    """Celery's Gossip (on unless --without-gossip) ended the worker on a null event; SafeGossip drops it."""
    consumer = SimpleNamespace(app=app, hostname="w@host", pid=1, timer=None, hub=None)
    event = Message(
        body="null",
        content_type="application/json",
        content_encoding="utf-8",
        headers={},
        delivery_info={"routing_key": "worker.heartbeat"},
        accept=["application/json"],
    )
    with pytest.raises(TypeError):
        Gossip(consumer).on_message(lambda payload: payload, event)
    SafeGossip(consumer).on_message(lambda payload: payload, event)
    assert "tasks.consumer:SafeGossip" in GuardedConsumer.Blueprint.default_steps
    assert "celery.worker.consumer.gossip:Gossip" not in GuardedConsumer.Blueprint.default_steps
