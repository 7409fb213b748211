"""Publish a request's events as Celery task messages on one channel; wait for RabbitMQ's confirms together.

The py-amqp details it builds on (confirms per channel, frames written together, properties encoded once,
the socket-bounded deadline) are in app/amqp_wire.py; this module is the event publisher: a connection
per thread, a request's batch, and what happens when a connection is lost.

The fast path (BENCHMARKS.md has the measurements and the profiles behind each step):

- each task message is built once with Celery's own ``app.amqp.as_task_v2`` (the same headers, properties
  and body as ``send_task``), serialized once with kombu's json serializer, and handed straight to the
  channel: no per-call routing, option merging, producer pool or publish signals;
- the ``task-sent`` events that let Flower show a task as soon as it is published go out as one
  ``task.multi`` message per request (per 500 tasks; Celery's own batched-event format, which Flower's
  event receiver reads), not one message per task;
- the frames of a request are written to the socket together (up to 1 MiB at a time) instead of one
  ``sendall`` per message; RabbitMQ then confirms them as usual, and the request waits for every confirm;
- the AMQP properties of the headers that are the same for every task are encoded once per connection
  (checked against py-amqp's own encoding), and py-amqp's per-message poll for ``connection.blocked`` is
  skipped (a blocked broker shows as missing confirms, hence a 503);
- each serving thread has a connection of its own, so no request waits behind another's confirms.

Every message is still persistent, mandatory, on a durable queue and confirmed before the 2xx.

What a record holds never turns into a 503: every message of a request is built before any of its frames
is written, and an event whose message cannot be built or would not fit in a frame is quarantined instead.
The request's bad records travel as one quarantine message (app/quarantine.py), confirmed with the rest.

A lost connection (a broker restart, a connection dropped by a NAT or a load balancer) costs no 503 when
the broker is back within AUTH0_EVENTS_PUBLISH_TIMEOUT: a connection found dead while idle is replaced
before anything is written on it, and one lost during a publish is replaced and what it left unconfirmed is
published again (under new task ids: see ``_Batch``), all within the one deadline of the publish. Only the
broker's own refusals (a nack, a return, a channel error) and the deadline end a publish early.
"""

from __future__ import annotations

import logging
import select
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from amqp.basic_message import Message
from amqp.exceptions import AMQPError, RecoverableConnectionError
from celery import Celery
from celery.utils.nodenames import anon_nodename
from celery.utils.saferepr import saferepr
from kombu.common import maybe_declare
from kombu.connection import Connection
from kombu.exceptions import EncodeError, KombuError, OperationalError
from kombu.serialization import dumps

from app.amqp_wire import (
    BatchedWrites,
    ConfirmTracker,
    Deadline,
    PropertiesEncoder,
    PublishError,
    encoded_properties,
    socket_bounded,
)
from app.intake import AcceptedEvent, Intake, QuarantinedRecord
from app.quarantine import QuarantineReport
from kernel.broker_url import broker_nodes, retries_over_nodes
from kernel.celery_app import task_time_limits
from kernel.routing import QUARANTINE_QUEUE
from kernel.settings import QueueType
from kernel.topology import EVENTS_EXCHANGE, declare_all
from kernel.wire import STREAM, TASK_NAME

__all__ = ["EventPublisher", "PublishError", "kwargs_repr"]

logger = logging.getLogger(__name__)

# What a dead broker, a closed channel or a lost socket raise from kombu and py-amqp.
BROKER_ERRORS = (OSError, AMQPError, KombuError)
# Of those, what a lost connection raises, which a new connection may cure: the socket's errors, the
# connection-level closes py-amqp calls recoverable (320 CONNECTION_FORCED from a broker shutting down, a
# publish on a closed channel) and kombu's "could not connect". The broker's refusals (nack, return, a
# channel error such as 404 or 406) are not among them: publishing again would be refused again.
CONNECTION_LOST = (OSError, RecoverableConnectionError, OperationalError)
# Between two attempts to reach a broker that is restarting, and kombu's pauses between connects.
RECONNECT_PAUSE = 0.25
# How long the liveness check may read what an idle connection received (a close frame, normally).
LIVENESS_READ_SECONDS = 0.1
PERSISTENT = 2
# task-sent events per task.multi message: one message for a 100-record batch, and a bounded buffer for
# a body at the size limit (ten thousand records and more).
EVENTS_PER_MESSAGE = 500
# A content header frame's payload beside the properties (class, weight, body size), and what every frame
# adds to its payload (type, channel, size, end octet): RabbitMQ refuses a frame over frame_max.
HEADER_FRAME_FIXED = 12
FRAME_OVERHEAD = 8
# What building a task message raises for a record that cannot travel in one: the serializer's error,
# an encoder's (ValueError, TypeError, RecursionError), and the frame check below.
UNSENDABLE = (EncodeError, ValueError, TypeError, RecursionError)


def kwargs_repr(kwargs: dict[str, str], maxsize: int) -> str:
    """``celery.utils.saferepr.saferepr(kwargs, maxsize)`` for a dict of strings, without its token stream.

    saferepr quotes every string in single quotes and escapes only single quotes; when the result fits in
    ``maxsize`` nothing is truncated and the two agree exactly. Longer ones are left to saferepr itself.
    """
    text = "{" + ", ".join(f"{_quoted(key)}: {_quoted(value)}" for key, value in kwargs.items()) + "}"
    return text if len(text) <= maxsize else saferepr(kwargs, maxsize)


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "\\'") + "'"


#: A task message ready to write, its event, and its task-sent event for Flower (None when those are off).
_Built = tuple[Message, AcceptedEvent, dict[str, Any] | None]


@dataclass
class _Link:
    """One established connection and what publishing on it needs."""

    connection: Connection
    channel: Any
    tracker: ConfirmTracker
    writes: BatchedWrites
    events: Any  # celery.events.EventDispatcher buffering task-sent events, or None when they are off
    origin: str
    encoder: PropertiesEncoder
    poller: Any  # a select.poll of the connection's socket, for alive()

    def alive(self) -> bool:
        """Whether the connection, idle since its last publish, is still open.

        Nothing is due on it between publishes (no heartbeats: nothing would send them), so anything to
        read is news: the broker's close (a restart, 320 CONNECTION_FORCED), an end of file or a reset (a
        dropped connection, once TCP keepalive or the peer told). Reading it says which. When all is well
        this is one poll() that does not wait (0.7 µs measured, against milliseconds per request).
        """
        if not self.poller.poll(0):
            return True
        try:
            self.connection.drain_events(timeout=LIVENESS_READ_SECONDS)
        except TimeoutError:
            return True  # part of a frame, the rest still on its way: the socket is open
        except BROKER_ERRORS:
            return False
        return True


@dataclass
class _Batch:
    """A publish's messages across attempts: those not yet confirmed, and their delivery tags in this one.

    After a lost connection, what the broker confirmed is not sent again, and the rest is, the task
    messages under new task ids. The broker may hold a copy it took but never confirmed, and two copies of
    one task id can both run a handler: the ledger lets a task id take over its own claim at once (it is
    a retry or a redelivery of a task that no longer runs), so two copies running together would both
    run it. A copy under another id finds the first one's claim and leaves the handler to it
    (tasks/ledger.py), as for any duplicate of an event. The quarantine message goes again only when
    unconfirmed; a second copy has the same request id and body.
    """

    request_id: str
    built: list[_Built]
    report: Message | None  # the request's quarantine message, while unconfirmed
    pending: list[int]  # indexes into built of the task messages not yet confirmed
    tags: list[int] = field(default_factory=list)  # the delivery tags of pending[: len(tags)] this attempt
    report_tag: int | None = None

    @classmethod
    def of(cls, request_id: str, built: list[_Built], report: Message | None) -> _Batch:
        """A batch of which nothing is confirmed yet."""
        return cls(request_id, built, report, list(range(len(built))))

    def keep_unconfirmed(self, outstanding: set[int]) -> None:
        """Keep only what the broker did not confirm before the connection was lost; what got no delivery
        tag was never sent."""
        sent = len(self.tags)
        sent_tags = zip(self.pending[:sent], self.tags, strict=True)
        unconfirmed = [index for index, tag in sent_tags if tag in outstanding]
        self.pending = unconfirmed + self.pending[sent:]
        if self.report_tag is not None and self.report_tag not in outstanding:
            self.report = None
        self.tags, self.report_tag = [], None

    def __len__(self) -> int:
        return len(self.pending) + (self.report is not None)


def _report_message(report: QuarantineReport) -> Message:
    """The request's one quarantine message: persistent, mandatory, confirmed with the rest."""
    return Message(
        report.body(),
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=PERSISTENT,
        application_headers={"x-request-id": report.request_id, "x-quarantined": report.total},
    )


class EventPublisher:
    """A long-lived broker connection per serving thread (one per process under gunicorn's sync workers),
    replaced when it is found lost.

    Thread-safe: confirms are counted per channel, so each thread publishes on a connection of its own, and
    one request's wait for its confirms does not hold up another thread's request.
    """

    def __init__(
        self,
        celery_app: Celery,
        broker_url: str,
        queue_names: Iterable[str],
        timeout: float,
        queue_type: QueueType,
    ):
        self._celery = celery_app
        self._broker_url = broker_url
        self._nodes = len(broker_nodes(broker_url))
        self._queue_names = tuple(queue_names)
        self._queue_type: QueueType = queue_type
        self._timeout = timeout
        self._guard = threading.Lock()  # guards _links, not the links themselves
        self._links: dict[int, _Link] = {}  # by thread identifier
        conf = celery_app.conf
        self._send_sent_events = bool(conf.task_send_sent_event)
        self._serializer = conf.task_serializer
        self._kwargsrepr_maxsize = celery_app.amqp.kwargsrepr_maxsize
        # The task's own time limits, which send_task copies into the message headers too.
        self._time_limits = task_time_limits(celery_app)

    def publish(
        self, intake: Intake, request_id: str, report: QuarantineReport | None = None, last: bool = True
    ) -> None:
        """Publish every accepted event and, when ``last``, the request's quarantine message; return once
        the broker confirmed all.

        Every message is built before any frame is written. An event whose message cannot be built or
        sent (a value JSON cannot encode, headers larger than an AMQP frame) moves from
        ``intake.accepted`` to ``intake.quarantined`` with the reason: a property of its record, never a
        broker fault. The quarantined records are added to ``report``, which a request handled in slices
        shares between them (a new one when None: the request is this one intake).

        A connection lost on the way is replaced, and what it left unconfirmed is published again (those
        events' task ids in ``intake.accepted`` are then the new copies'), until the broker has confirmed
        all or AUTH0_EVENTS_PUBLISH_TIMEOUT after the call began.

        Raises PublishError when any message is not confirmed; the caller answers 503 so Auth0 retries.
        """
        report = QuarantineReport(request_id) if report is None else report
        deadline = Deadline.after(self._timeout)
        try:
            link = self._connected(deadline)
            received_at = datetime.now(UTC).isoformat()
            built = self._build_all(link, intake, received_at)
            report.add(intake)
            batch = _Batch.of(request_id, built, _report_message(report) if last and report else None)
            self._publish_batch(link, batch, intake, received_at, deadline)
        except (PublishError, *BROKER_ERRORS) as exc:
            self._reset()
            raise PublishError(str(exc) or type(exc).__name__) from exc

    def check(self) -> None:
        """Connect if needed; raises PublishError when the broker cannot be reached."""
        try:
            self._connected()
        except BROKER_ERRORS as exc:
            self._reset()
            raise PublishError(str(exc) or type(exc).__name__) from exc

    def close(self) -> None:
        """Close every thread's broker connection politely."""
        with self._guard:
            links, self._links = list(self._links.values()), {}
        for link in links:
            try:
                link.connection.release()
            except BROKER_ERRORS:
                logger.debug("ignoring error while closing the broker connection", exc_info=True)

    def _publish_batch(
        self, link: _Link, batch: _Batch, intake: Intake, received_at: str, deadline: Deadline
    ) -> None:
        """Send and confirm the batch, on a new link and again after each lost connection."""
        while True:
            try:
                self._send_and_confirm(link, batch, deadline)
                return
            except CONNECTION_LOST as lost:
                link = self._replace_lost(link, batch, lost, deadline, intake)
                self._renew(link, batch, intake, received_at)

    def _send_and_confirm(self, link: _Link, batch: _Batch, deadline: Deadline) -> None:
        """Write the batch's unconfirmed messages together, then wait for the broker's confirms."""
        with socket_bounded(link.connection, deadline):
            with link.writes.held():
                for index in batch.pending:
                    batch.tags.append(self._send_event(link, *batch.built[index]))
                if link.events is not None and batch.pending:
                    link.events.flush(errors=False, groups=True)
                if batch.report is not None:
                    batch.report_tag = link.tracker.publish_mandatory(
                        batch.report, EVENTS_EXCHANGE.name, QUARANTINE_QUEUE
                    )
            link.tracker.wait(link.connection, deadline)

    def _replace_lost(
        self, link: _Link, batch: _Batch, lost: Exception, deadline: Deadline, intake: Intake
    ) -> _Link:
        """A new link for a batch whose connection was lost, once what the old one confirmed is known."""
        if link.tracker.failures:  # the broker refused a message before the connection went
            raise PublishError("; ".join(link.tracker.failures)) from lost
        batch.keep_unconfirmed(link.tracker.outstanding)
        self._reset()
        if deadline.remaining() <= 0:
            raise lost
        logger.warning(
            "broker connection lost while publishing request_id=%s (%s); connecting again to publish the "
            "%d message(s) it did not confirm",
            batch.request_id,
            lost or type(lost).__name__,
            len(batch),
            extra={"request_id": batch.request_id, "unconfirmed": len(batch)},
        )
        return self._open_within(deadline)

    def _renew(self, link: _Link, batch: _Batch, intake: Intake, received_at: str) -> None:
        """Build the batch's unconfirmed task messages again for ``link``, under new task ids (see _Batch)."""
        for index in batch.pending:
            event = replace(batch.built[index][1], task_id=str(uuid.uuid4()))
            try:
                batch.built[index] = self._build(link, event, received_at)
            except UNSENDABLE as exc:  # built once already: only a broker with a smaller frame_max
                raise PublishError(f"task message cannot be sent again: {exc}") from exc
            intake.accepted[index] = event  # the receiver logs the task id of the copy that was confirmed

    def _connected(self, deadline: Deadline | None = None) -> _Link:
        """This thread's link; a new one when there is none or its connection was lost while idle.

        With a deadline (a publish), connecting is tried again until then, so a broker that restarts
        within the publish timeout costs no 503. Without one (the readiness check), once more only.
        """
        link = self._links.get(threading.get_ident())
        if link is not None:
            if link.alive():
                return link
            logger.info("the broker connection was lost while idle; connecting again")
            self._reset()
        return self._open(None) if deadline is None else self._open_within(deadline)

    def _open_within(self, deadline: Deadline) -> _Link:
        """A new link, tried again after a lost connection (a broker still starting) until the deadline."""
        while True:
            try:
                return self._open(deadline)
            except CONNECTION_LOST:
                if deadline.remaining() <= RECONNECT_PAUSE:
                    raise
                time.sleep(RECONNECT_PAUSE)

    def _open(self, deadline: Deadline | None) -> _Link:
        """Connect, declare the topology, and keep the new link as this thread's."""
        bound = deadline or Deadline.after(self._timeout)
        connection = self._celery.connection_for_write(
            url=self._broker_url,
            # Per node: a node that takes the connection and never answers (its machine gone) must leave
            # the others of a multi-node BROKER_URL their turn within the one deadline.
            connect_timeout=max(min(self._timeout, bound.remaining()) / self._nodes, 0.001),
            # This connection waits for confirms per batch itself (ConfirmTracker); the socket
            # timeouts bound every synchronous call (declares, channel open) on a silent broker.
            transport_options={
                "confirm_publish": False,
                "read_timeout": self._timeout,
                "write_timeout": self._timeout,
            },
        )
        try:
            _ensure_connection(connection, deadline)
            with socket_bounded(connection, bound):
                declare_all(connection, self._queue_names, self._queue_type, keep_other_arguments=True)
                channel = connection.channel()
                tracker = ConfirmTracker(channel)
                writes = BatchedWrites.install(connection)
                events = self._events(channel)
        except BaseException:
            connection.collect()
            raise
        poller = select.poll()
        poller.register(connection.connection.transport.sock, select.POLLIN)
        link = _Link(
            connection, channel, tracker, writes, events, anon_nodename(), PropertiesEncoder(), poller
        )
        with self._guard:
            self._links[threading.get_ident()] = link
        logger.info("connected to the broker and declared %d work queues", len(self._queue_names))
        return link

    def _events(self, channel: Any) -> Any:
        """The link's dispatcher of task-sent events, or None when they are off."""
        if not self._send_sent_events:
            return None
        # Buffers the task-sent events of a request and publishes them as task.multi messages of up to
        # EVENTS_PER_MESSAGE on this channel (so they are confirmed with the rest); publish() flushes the
        # remainder. Errors raise rather than buffer.
        events = self._celery.events.Dispatcher(
            channel=channel,
            buffer_group=["task"],
            buffer_limit=EVENTS_PER_MESSAGE,
            buffer_while_offline=False,
        )
        # Declared now: a declare is a round trip, which must not happen while frames are held.
        maybe_declare(events.exchange, channel)
        return events

    def _build_all(self, link: _Link, intake: Intake, received_at: str) -> list[_Built]:
        """Each accepted event's message; an event whose message cannot be built is quarantined instead."""
        built: list[_Built] = []
        unsendable: list[QuarantinedRecord] = []
        for event in intake.accepted:
            try:
                built.append(self._build(link, event, received_at))
            except UNSENDABLE as exc:
                reason = f"task message cannot be sent: {exc or type(exc).__name__}"
                unsendable.append(QuarantinedRecord(event.record, reason, event.index))
        if unsendable:
            intake.accepted = [event for _message, event, _sent_event in built]
            intake.quarantined = sorted([*intake.quarantined, *unsendable], key=lambda bad: bad.index)
        return built

    def _build(self, link: _Link, event: AcceptedEvent, received_at: str) -> _Built:
        """One task message, as ``send_task`` would build it, and its task-sent event (or None)."""
        event_type, log_id = event.event_type, event.log_id
        task_id = event.task_id  # chosen by the intake, so the receiver's log line names it too
        kwargs = {"event_type": event_type, "log_id": log_id, "received_at": received_at}
        if event.source != STREAM:  # the stream's messages stay as they were: the worker's default
            kwargs["source"] = event.source
        headers, properties, body, sent_event = self._celery.amqp.as_task_v2(
            task_id,
            TASK_NAME,
            args=(event.record,),
            kwargs=kwargs,
            # Flower and logs show the type and id; the record (names, emails, IPs) stays out of them.
            argsrepr=f"(<auth0 log {event_type} {log_id}>,)",
            kwargsrepr=kwargs_repr(kwargs, self._kwargsrepr_maxsize),
            origin=link.origin,
            reply_to=self._celery.thread_oid,
            ignore_result=None,  # as send_task sends it: the worker applies the task's own setting
            time_limit=self._time_limits[0],
            soft_time_limit=self._time_limits[1],
            create_sent_event=link.events is not None,
        )
        content_type, content_encoding, data = self._serialized(body, event.text)
        properties.update(
            content_type=content_type, content_encoding=content_encoding, delivery_mode=PERSISTENT, priority=0
        )
        message = link.encoder.message(data, headers, properties)
        # py-amqp writes a message's properties as one frame, however large; RabbitMQ closes the whole
        # connection on a frame over frame_max (a 200 KB log_id did that, and every resend again).
        header_frame = HEADER_FRAME_FIXED + len(encoded_properties(message))
        frame_limit = link.connection.connection.frame_max - FRAME_OVERHEAD
        if header_frame > frame_limit:
            raise ValueError(
                f"its headers need a frame of {header_frame} bytes, over the broker's {frame_limit} "
                "(log_id or type too long)"
            )
        return message, event, sent_event

    def _serialized(self, body: tuple[Any, ...], text: bytes | None) -> tuple[str, str, str | bytes]:
        """``dumps(body)``, with the record's own JSON ``text`` as the task's argument when there is one.

        Encoding the record again was the largest cost of a task message, and the text is already JSON
        of the same values (app.payload.strict_lines): the rest of the body is encoded by kombu as
        always, around a placeholder, and the text takes the placeholder's place. The body is the same
        JSON document, byte for byte when the text is spaced as Python's json spaces it
        (tests/test_task_body.py).
        """
        if text is None or self._serializer != "json":
            return dumps(body, serializer=self._serializer)  # type: ignore[no-any-return]
        args, *rest = body
        content_type, content_encoding, data = dumps(((0,), *rest), serializer="json")
        if len(args) != 1 or not data.startswith(_SPLICED):
            return dumps(body, serializer=self._serializer)  # type: ignore[no-any-return]
        return content_type, content_encoding, b"[[" + text + data[len(_SPLICED) - 1 :].encode()

    def _send_event(
        self, link: _Link, message: Message, event: AcceptedEvent, sent_event: dict[str, Any] | None
    ) -> int:
        """Publish one task message (and buffer its task-sent event); return its delivery tag."""
        # Declared once per connection in _open(); mandatory makes a queue deleted since then come
        # back as a return (and a 503) instead of a silent drop.
        tag = link.tracker.publish_mandatory(message, EVENTS_EXCHANGE.name, event.queue)
        if sent_event is not None:
            sent_event.update(
                {"queue": event.queue, "exchange": EVENTS_EXCHANGE.name, "routing_key": event.queue}
            )
            link.events.send("task-sent", **sent_event)
        return tag

    def _reset(self) -> None:
        """Drop this thread's connection; its next request connects anew."""
        with self._guard:
            link = self._links.pop(threading.get_ident(), None)
        if link is not None:
            # collect() frees the socket without the close handshake, which a broken broker never answers.
            link.connection.collect()


#: How kombu's json encodes a body whose one argument is the placeholder 0: ``[[0], {kwargs…}, {…}]``.
_SPLICED = "[[0]"


def _ensure_connection(connection: Connection, deadline: Deadline | None) -> None:
    """Connect, through kombu (which also fails over between the hosts of a multi-host BROKER_URL).

    Without a deadline, one quick second round covers a blip and a down broker is a fast answer (kombu's
    default waits 2 s before its retry). With one, tries are a pause apart until a pause before it.
    """
    if deadline is None:
        connection.ensure_connection(
            max_retries=retries_over_nodes(connection, 2),
            interval_start=0.2,
            interval_step=0,
            interval_max=0.2,
        )
        return
    patience = deadline.remaining() - RECONNECT_PAUSE
    if patience <= 0:  # kombu reads a timeout of 0 as none at all
        connection.ensure_connection(max_retries=retries_over_nodes(connection))
        return
    connection.ensure_connection(
        timeout=patience, interval_start=0.1, interval_step=0.1, interval_max=RECONNECT_PAUSE
    )
