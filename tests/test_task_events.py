"""The worker's task-event dispatcher publishes only from the consumer's thread (tasks/task_events.py)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest
from kombu import Connection, Exchange, Queue
from kombu.asynchronous import Hub, get_event_loop, set_event_loop

from tasks.celery_app import app
from tasks.task_events import ConsumerThreadDispatcher

TASK_EVENTS = 60  # more than Celery's buffer_limit (24): a pool thread would flush (and deadlock) at 24


class RecordingDispatcher(ConsumerThreadDispatcher):
    """The worker's dispatcher, noting which thread each publish comes from."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.publishes: list[int] = []  # the publishing thread of each message

    @property
    def publishing_threads(self) -> set[int]:
        return set(self.publishes)

    def _publish(self, *args: Any, **kwargs: Any) -> Any:
        self.publishes.append(threading.get_ident())
        return super()._publish(*args, **kwargs)


def _watching_dispatcher(
    connection: Connection, watch: Queue, on_send_buffered: Callable[[], Any]
) -> RecordingDispatcher:
    """A worker's dispatcher on a connection of its own, and ``watch`` bound to the events exchange."""
    watch(connection.default_channel).declare()
    return cast(
        RecordingDispatcher,
        app.subclass_with_self(RecordingDispatcher)(
            connection.clone(), hostname="test@pool", buffer_group=["task"], on_send_buffered=on_send_buffered
        ),
    )


@pytest.fixture
def no_event_loop() -> Iterator[None]:
    """No kombu event loop in this process (an embedded worker of an earlier test may have set one)."""
    previous = get_event_loop()
    set_event_loop(None)
    yield
    set_event_loop(previous)


def _events_received(connection: Connection, queue: Queue, deadline: float) -> list[dict[str, Any]]:
    """Every event on ``queue`` (a task.multi message holds a list of them), until none comes for 1 s."""
    received: list[dict[str, Any]] = []
    with connection.SimpleQueue(queue) as simple:
        while time.monotonic() < deadline:
            try:
                message = simple.get(timeout=1)
            except simple.Empty:
                break
            body = message.decode()
            received.extend(body if isinstance(body, list) else [body])
            message.ack()
    return received


def test_the_workers_app_uses_the_consumer_thread_dispatcher() -> None:
    assert issubclass(app.events.Dispatcher, ConsumerThreadDispatcher)


def test_pool_threads_only_buffer_and_the_consumer_thread_publishes(
    broker_url: str, no_event_loop: None
) -> None:
    """Events sent from pool threads wait for the consumer's flush; none is lost, none published elsewhere."""
    exchange = Exchange("celeryev", type="topic")
    watch = Queue("task-events-watch", exchange, routing_key="#", auto_delete=True, durable=False)
    flush_requests: list[int] = []
    consumer_thread = threading.get_ident()
    with Connection(broker_url, transport_options={"confirm_publish": True}) as connection:
        dispatcher = _watching_dispatcher(
            connection, watch, lambda: flush_requests.append(threading.get_ident())
        )
        try:

            def pool_thread_work() -> None:
                for number in range(TASK_EVENTS):
                    dispatcher.send("task-succeeded", uuid=f"task-{number}", result="None", runtime=0.01)
                dispatcher.send("worker-custom", note="outside the buffered groups")

            with ThreadPoolExecutor(max_workers=2) as pool:
                list(pool.map(lambda _: pool_thread_work(), range(2)))

            assert dispatcher.publishing_threads == set(), "a pool thread published"
            # One request to the consumer's loop stands for every event buffered until its flush runs.
            assert len(flush_requests) == 1, "the pool threads asked the loop once per event"
            assert consumer_thread not in flush_requests

            dispatcher.flush()  # what the consumer's event loop does on the request
            assert dispatcher.publishing_threads == {consumer_thread}
            dispatcher.send("task-succeeded", uuid="after-the-flush", result="None", runtime=0.01)
            assert len(flush_requests) == 2, "an event buffered after a flush did not ask for the next"
            dispatcher.flush()
        finally:
            dispatcher.close()
            dispatcher.connection.close()

        events = _events_received(connection, watch, time.monotonic() + 30)
    task_ids = sorted(event["uuid"] for event in events if event["type"] == "task-succeeded")
    expected = [f"task-{number}" for number in range(TASK_EVENTS) for _ in range(2)] + ["after-the-flush"]
    assert task_ids == sorted(expected)
    assert [event["note"] for event in events if event["type"] == "worker-custom"] == [
        "outside the buffered groups"
    ] * 2


def test_without_an_event_loop_the_sender_publishes_as_celery_does(
    broker_url: str, no_event_loop: None
) -> None:
    """No event loop to flush for it (no on_send_buffered): the sending thread publishes, as in Celery."""
    with Connection(broker_url, transport_options={"confirm_publish": True}) as connection:
        dispatcher = app.subclass_with_self(RecordingDispatcher)(connection, hostname="test@solo")
        try:
            with ThreadPoolExecutor(max_workers=1) as pool:
                sender = pool.submit(
                    lambda: (dispatcher.send("task-succeeded", uuid="solo"), threading.get_ident())[1]
                ).result()
        finally:
            dispatcher.close()
    assert dispatcher.publishing_threads == {sender}


def test_the_event_loop_publishes_one_batch_per_interval(broker_url: str) -> None:
    """Events that arrive within FLUSH_INTERVAL of a flush go out together, when the loop's timer fires."""
    exchange = Exchange("celeryev", type="topic")
    watch = Queue("task-events-batches", exchange, routing_key="task.#", auto_delete=True, durable=False)
    hub = Hub()
    previous = get_event_loop()
    set_event_loop(hub)
    with Connection(broker_url, transport_options={"confirm_publish": True}) as connection:
        made: list[RecordingDispatcher] = []  # the loop's callback needs the dispatcher it is given to
        dispatcher = _watching_dispatcher(connection, watch, lambda: hub.call_soon(made[0].flush))
        made.append(dispatcher)
        # A socket that stays readable, so that each turn of the loop returns at once (as in a busy worker)
        # instead of sleeping up to 0.1 s for want of anything to read.
        busy, other_end = socket.socketpair()
        other_end.send(b"x")
        hub.add_reader(busy, lambda *_: None)
        loop = hub.create_loop()
        try:
            with ThreadPoolExecutor(max_workers=1) as pool:
                for number in range(10):
                    pool.submit(dispatcher.send, "task-succeeded", uuid=f"t{number}", runtime=0.0).result()
                    for _ in range(3):  # the loop turns between the events
                        next(loop)
            deadline = time.monotonic() + 10
            while dispatcher._waiting() and time.monotonic() < deadline:
                next(loop)
        finally:
            set_event_loop(previous)
            dispatcher.close()
            dispatcher.connection.close()
            hub.close()
            busy.close()
            other_end.close()
        events = _events_received(connection, watch, time.monotonic() + 30)
    assert sorted(event["uuid"] for event in events) == sorted(f"t{number}" for number in range(10))
    # The first event goes out at once; the nine sent within the interval after it, in one or two more.
    assert 2 <= len(dispatcher.publishes) <= 3, f"{len(dispatcher.publishes)} publishes for 10 events"
