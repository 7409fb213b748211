"""The receiver's fast publishing path sends exactly the task messages Celery's send_task sends, and Flower's
task-sent events in Celery's batched format, all confirmed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from amqp.basic_message import Message
from celery.utils.saferepr import saferepr
from kombu.connection import Connection
from kombu.entity import Exchange, Queue

from app.amqp_wire import PropertiesEncoder
from app.intake import AcceptedEvent, Intake, sort_records
from app.publisher import EVENTS_PER_MESSAGE, EventPublisher, kwargs_repr
from kernel.routing import QUARANTINE_QUEUE, parse_routes
from kernel.topology import declare_all, work_queue
from kernel.wire import TASK_NAME
from tasks.celery_app import app as celery_app
from tests.helpers import make_record, take_messages


@pytest.fixture
def queue_name() -> str:
    """A work queue of the test's own."""
    return f"test.publisher.{uuid.uuid4().hex[:8]}"


@pytest.fixture
def publisher(broker_url: str, queue_name: str) -> Iterator[EventPublisher]:
    """The receiver's publisher, routing every event to ``queue_name``."""
    publisher = EventPublisher(celery_app, broker_url, [queue_name], timeout=5, queue_type="classic")
    yield publisher
    publisher.close()


@pytest.fixture
def task_events(broker: Connection) -> Iterator[str]:
    """A queue bound to Celery's event exchange for task events, as Flower's receiver binds one."""
    name = f"test.events.{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange("celeryev", type="topic"), routing_key="task.#", durable=False)
    queue.bind(broker.default_channel).declare()
    yield name
    broker.default_channel.queue_delete(name)


def publish(publisher: EventPublisher, queue_name: str, records: list[dict[str, Any]]) -> None:
    """Sort and publish ``records`` as one request."""
    publisher.publish(sort_records(records, parse_routes(f"*={queue_name}")), request_id="req-1")


def test_task_message_is_the_one_send_task_sends(
    publisher: EventPublisher, broker: Connection, broker_url: str, queue_name: str
) -> None:
    """Same headers, properties and body as Celery's send_task with the same arguments (ids aside)."""
    record = make_record("s")
    publish(publisher, queue_name, [record])
    [ours] = take_messages(broker, queue_name)
    kwargs = ours.decode()[1]
    with Connection(broker_url) as connection:
        declare_all(connection, [queue_name], "classic")
        celery_app.send_task(
            TASK_NAME,
            args=(record,),
            kwargs=kwargs,
            queue=work_queue(queue_name, "classic"),
            connection=connection,
            argsrepr=f"(<auth0 log s {record['log_id']}>,)",
            declare=[],
            retry=False,
        )
    [reference] = take_messages(broker, queue_name)
    assert ours.decode() == reference.decode()
    identity = {"id", "root_id"}
    assert {k: v for k, v in ours.headers.items() if k not in identity} == {
        k: v for k, v in reference.headers.items() if k not in identity
    }
    assert ours.headers["root_id"] == ours.headers["id"]
    properties = {"correlation_id", "application_headers"}
    assert {k: v for k, v in ours.properties.items() if k not in properties} == {
        k: v for k, v in reference.properties.items() if k not in properties
    }
    assert ours.properties["correlation_id"] == ours.headers["id"]
    assert ours.properties["delivery_mode"] == 2
    assert ours.delivery_info["exchange"] == "auth0.events"
    assert ours.delivery_info["routing_key"] == queue_name


def test_task_sent_events_go_out_batched_for_flower(
    publisher: EventPublisher, broker: Connection, queue_name: str, task_events: str
) -> None:
    """One task.multi message carries a task-sent event per task, as Celery's own task-sent event has it."""
    records = [make_record("s"), make_record("ss"), make_record("f")]
    publish(publisher, queue_name, records)
    tasks = {message.headers["id"]: message for message in take_messages(broker, queue_name)}
    [multi] = take_messages(broker, task_events)
    assert multi.delivery_info["routing_key"] == "task.multi"
    events = json.loads(multi.body)
    assert [event["type"] for event in events] == ["task-sent"] * 3
    assert {event["uuid"] for event in events} == set(tasks)
    for event in events:
        headers = tasks[event["uuid"]].headers
        assert event["name"] == TASK_NAME
        assert event["args"] == headers["argsrepr"]
        assert event["kwargs"] == headers["kwargsrepr"]
        assert (event["queue"], event["exchange"], event["routing_key"]) == (
            queue_name,
            "auth0.events",
            queue_name,
        )
        assert {"hostname", "timestamp", "clock", "pid", "utcoffset"} <= set(event)


def test_a_large_request_is_published_whole_in_bounded_pieces(
    publisher: EventPublisher, broker: Connection, queue_name: str, task_events: str
) -> None:
    """Every event of a request larger than one write chunk arrives; task-sent events come 500 a message."""
    count = 2 * EVENTS_PER_MESSAGE + 37
    records = [make_record("s", details={"padding": "x" * 1500}) for _ in range(count)]
    publish(publisher, queue_name, records)
    log_ids = [message.decode()[1]["log_id"] for message in take_messages(broker, queue_name)]
    assert log_ids == [record["log_id"] for record in records]
    sizes = [len(json.loads(message.body)) for message in take_messages(broker, task_events)]
    assert sizes == [EVENTS_PER_MESSAGE, EVENTS_PER_MESSAGE, 37]


@pytest.mark.parametrize(
    "text", ["s", "it's", "back\\slash", "ünï 😀", "new\nline", '"double"', "'''", "", "x" * 2000]
)
def test_kwargs_repr_is_celerys_saferepr(text: str) -> None:
    """The shortcut gives saferepr's text exactly, truncation of long values included."""
    kwargs = {"event_type": text, "log_id": text[::-1], "received_at": "2026-11-26T08:25:14.466000+00:00"}
    assert kwargs_repr(kwargs, 1024) == saferepr(kwargs, 1024)


def test_properties_encoder_agrees_with_py_amqp() -> None:
    """The cached encoding of a task message's properties is py-amqp's, byte for byte, each message."""
    encoder = PropertiesEncoder()
    for number in range(3):
        task_id = str(uuid.uuid4())
        headers, properties, body, _ = celery_app.amqp.as_task_v2(
            task_id, TASK_NAME, args=({"n": number},), kwargs={"log_id": str(number)}, argsrepr=f"({number},)"
        )
        properties.update(
            content_type="application/json", content_encoding="utf-8", delivery_mode=2, priority=0
        )
        message = encoder.message(b"{}", headers, properties)
        variable = {key: headers[key] for key in PropertiesEncoder.VARIABLE}
        ordered = {**{k: v for k, v in headers.items() if k not in variable}, **variable}
        reference = Message(b"{}", **{**properties, "application_headers": ordered})
        assert message._serialize_properties() == reference._serialize_properties()
        assert encoder.enabled


def test_an_event_whose_message_cannot_be_encoded_is_quarantined_not_a_broker_fault(
    publisher: EventPublisher, broker: Connection, queue_name: str
) -> None:
    """A message that cannot be encoded is a property of its record: that event moves to the quarantine
    with the reason, the others are published and confirmed; no PublishError (which would mean 503)."""
    take_messages(broker, QUARANTINE_QUEUE)
    records: list[dict[str, Any]] = [make_record("s"), make_record("s"), make_record("s")]
    intake = sort_records(records, parse_routes(f"*={queue_name}"))
    records[1]["data"]["details"]["unencodable"] = {1, 2}  # a set: not JSON (only a hand-made intake has one)
    publisher.publish(intake, request_id="req-2")
    published = [message.decode()[1]["log_id"] for message in take_messages(broker, queue_name)]
    assert published == [records[0]["log_id"], records[2]["log_id"]]
    assert [event.log_id for event in intake.accepted] == published
    [bad] = intake.quarantined
    assert (bad.index, bad.record) == (1, records[1])
    assert bad.reason.startswith("task message cannot be sent:")
    [message] = [m.decode() for m in take_messages(broker, QUARANTINE_QUEUE)]
    assert message["request_id"] == "req-2"
    assert [(entry["index"], entry["reason"]) for entry in message["records"]] == [(1, bad.reason)]


def test_an_event_whose_headers_exceed_a_frame_is_quarantined(
    publisher: EventPublisher, broker: Connection, queue_name: str
) -> None:
    """py-amqp writes a message's properties as one frame; over frame_max RabbitMQ closes the connection.
    Such an event (a log_id of 200,000 characters, made here by hand) is quarantined before any write."""
    good = make_record("s")
    huge = make_record("s", log_id="9" * 200_000)
    intake = Intake(received=2)
    intake.accepted = [
        AcceptedEvent(good["log_id"], "s", queue_name, good, index=0),
        AcceptedEvent(huge["log_id"], "s", queue_name, huge, index=1),
    ]
    publisher.publish(intake, request_id="req-3")
    assert [message.decode()[1]["log_id"] for message in take_messages(broker, queue_name)] == [
        good["log_id"]
    ]
    [bad] = intake.quarantined
    assert bad.index == 1
    assert "over the broker's 131064" in bad.reason
    take_messages(broker, QUARANTINE_QUEUE)
