"""Publish a request's events over one channel and wait for RabbitMQ's confirms together."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from amqp.exceptions import AMQPError
from celery import Celery
from kombu.connection import Connection
from kombu.exceptions import KombuError
from kombu.messaging import Producer

from app.intake import AcceptedEvent, Intake, QuarantinedRecord
from tasks.event_task import TASK_NAME
from tasks.routing import QUARANTINE_QUEUE
from tasks.topology import EVENTS_EXCHANGE, declare_all, work_queue

logger = logging.getLogger(__name__)

# What a dead broker, a closed channel or a lost socket raise from kombu and py-amqp.
BROKER_ERRORS = (OSError, AMQPError, KombuError)


class PublishError(Exception):
    """Raised when the broker did not confirm every message of a batch: unreachable, nack, return, timeout."""


class ConfirmTracker:
    """Counts publishes on one confirm-mode channel and collects the broker's acks, nacks and returns.

    Written by hand because py-amqp only offers a per-message confirm wait (one round trip each), and
    kombu's Producer.batch() falls back to that on AMQP (shared/reference/celery-rabbitmq.md §4).
    """

    def __init__(self, channel: Any) -> None:
        channel.confirm_select()
        self.outstanding: set[int] = set()
        self.failures: list[str] = []
        self._published = 0
        publish = channel.basic_publish

        def counting_publish(*args: Any, **kwargs: Any) -> Any:
            # Confirm-mode delivery tags count every publish on the channel from 1, Celery's own
            # task-sent events included, so each one is tracked.
            self._published += 1
            self.outstanding.add(self._published)
            return publish(*args, **kwargs)

        channel.basic_publish = counting_publish
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        channel.events["basic_return"].add(self._on_return)

    def _settle(self, delivery_tag: int, multiple: bool) -> int:
        settled = {tag for tag in self.outstanding if tag <= delivery_tag} if multiple else {delivery_tag}
        self.outstanding -= settled
        return len(settled)

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        count = self._settle(delivery_tag, multiple)
        self.failures.append(f"broker refused {count} message(s) (basic.nack)")

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        # A mandatory message that reached no queue is returned before its ack: the ack alone would
        # claim safety for a message RabbitMQ dropped.
        self.failures.append(f"no queue bound for routing key {routing_key!r} on {exchange!r}: {exc}")

    def wait(self, connection: Connection, timeout: float) -> None:
        """Block until every publish so far is confirmed; raise PublishError on nack, return or timeout."""
        deadline = time.monotonic() + timeout
        while self.outstanding and not self.failures:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PublishError(f"{len(self.outstanding)} message(s) unconfirmed after {timeout}s")
            try:
                connection.drain_events(timeout=remaining)
            except TimeoutError:
                continue
        if self.failures:
            raise PublishError("; ".join(self.failures))


class EventPublisher:
    """One long-lived broker connection per receiver process; reconnects after any failure.

    Thread-safe: requests take turns on the channel, since confirms are counted per channel.
    """

    def __init__(self, celery_app: Celery, broker_url: str, queue_names: Iterable[str], timeout: float):
        self._celery = celery_app
        self._broker_url = broker_url
        self._queue_names = tuple(queue_names)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self._producer: Producer | None = None
        self._tracker: ConfirmTracker | None = None

    def publish(self, intake: Intake, request_id: str) -> None:
        """Publish every accepted event and quarantined record; return once the broker confirmed all.

        Raises PublishError when any message is not confirmed; the caller answers 503 so Auth0 retries.
        """
        with self._lock:
            try:
                producer, tracker = self._connected()
                received_at = datetime.now(UTC).isoformat()
                for event in intake.accepted:
                    self._send_event(producer, event, received_at)
                for bad in intake.quarantined:
                    self._send_quarantined(producer, bad, request_id)
                tracker.wait(producer.connection, self._timeout)
            except (PublishError, *BROKER_ERRORS) as exc:
                self._reset()
                raise PublishError(str(exc) or type(exc).__name__) from exc

    def check(self) -> None:
        """Connect if needed; raises PublishError when the broker cannot be reached."""
        with self._lock:
            try:
                self._connected()
            except BROKER_ERRORS as exc:
                self._reset()
                raise PublishError(str(exc) or type(exc).__name__) from exc

    def close(self) -> None:
        """Close the broker connection politely."""
        with self._lock:
            connection = self._connection
            self._reset(drop=False)
            if connection is not None:
                try:
                    connection.release()
                except BROKER_ERRORS:
                    logger.debug("ignoring error while closing the broker connection", exc_info=True)

    def _connected(self) -> tuple[Producer, ConfirmTracker]:
        if self._producer is None or self._tracker is None:
            connection = self._celery.connection_for_write(
                url=self._broker_url,
                connect_timeout=self._timeout,
                # This connection waits for confirms per batch itself (ConfirmTracker); the socket
                # timeouts bound every synchronous call (declares, channel open) on a silent broker.
                transport_options={
                    "confirm_publish": False,
                    "read_timeout": self._timeout,
                    "write_timeout": self._timeout,
                },
            )
            self._connection = connection
            # One quick second try covers a blip; a down broker must turn into a 503 fast, not hold the
            # request (kombu's default connect() waits 2 s before its retry).
            connection.ensure_connection(max_retries=1, interval_start=0.2, interval_step=0, interval_max=0.2)
            declare_all(connection, self._queue_names)
            channel = connection.channel()
            self._tracker = ConfirmTracker(channel)
            self._producer = Producer(channel)
            logger.info("connected to the broker and declared %d work queues", len(self._queue_names))
        return self._producer, self._tracker

    def _send_event(self, producer: Producer, event: AcceptedEvent, received_at: str) -> None:
        event_type, log_id = event.event_type, event.log_id
        self._celery.send_task(
            TASK_NAME,
            args=(event.record,),
            kwargs={"event_type": event_type, "log_id": log_id, "received_at": received_at},
            task_id=str(uuid.uuid4()),
            queue=work_queue(event.queue),
            producer=producer,
            retry=False,  # a failure fails the whole batch, which Auth0 then re-sends
            # Declared once per connection in _connected(); mandatory makes a queue deleted since then
            # come back as a return (and a 503) instead of a silent drop.
            declare=[],
            mandatory=True,
            # Flower and logs show the type and id; the record (names, emails, IPs) stays out of them.
            argsrepr=f"(<auth0 log {event_type} {log_id}>,)",
        )

    def _send_quarantined(self, producer: Producer, bad: QuarantinedRecord, request_id: str) -> None:
        producer.publish(
            {"reason": bad.reason, "record": bad.record, "index": bad.index, "request_id": request_id},
            exchange=EVENTS_EXCHANGE,
            routing_key=QUARANTINE_QUEUE,
            serializer="json",
            delivery_mode=2,
            mandatory=True,
            declare=[],
            headers={"x-quarantine-reason": bad.reason, "x-request-id": request_id},
            retry=False,
        )

    def _reset(self, drop: bool = True) -> None:
        connection, self._connection, self._producer, self._tracker = self._connection, None, None, None
        if connection is not None and drop:
            # collect() frees the socket without the close handshake, which a broken broker never answers.
            connection.collect()
