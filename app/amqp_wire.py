"""py-amqp on the wire for a confirmed batch: the confirms counted per channel, the frames written together,
the task messages' AMQP properties encoded once per connection, and a deadline every socket call keeps.

Written by hand where py-amqp and kombu offer only a message at a time (each class says why); the event
publisher (app/publisher.py) builds its batches on these.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from struct import pack
from typing import Any

from amqp import spec
from amqp.basic_message import Message
from amqp.exceptions import RecoverableConnectionError
from amqp.method_framing import frame_writer
from amqp.serialization import dumps as amqp_dumps
from kombu.connection import Connection

logger = logging.getLogger(__name__)

# A request's frames are written in pieces of at most this size, so a huge batch is not copied whole.
WRITE_CHUNK = 1 << 20


class PublishError(Exception):
    """Raised when the broker did not confirm every message of a batch: unreachable, nack, return, timeout."""


@dataclass(frozen=True)
class Deadline:
    """When a publish must be confirmed by: AUTH0_EVENTS_PUBLISH_TIMEOUT after it began, for every attempt."""

    timeout: float
    at: float

    @classmethod
    def after(cls, timeout: float) -> Deadline:
        """The deadline ``timeout`` seconds from now."""
        return cls(timeout, time.monotonic() + timeout)

    def remaining(self) -> float:
        """Seconds left (negative once passed)."""
        return self.at - time.monotonic()


class ConfirmTracker:
    """Counts publishes on one confirm-mode channel and collects the broker's acks, nacks and returns.

    Written by hand because py-amqp only offers a per-message confirm wait (one round trip each), and
    kombu's Producer.batch() falls back to that on AMQP (kombu 5.7 batches on its Redis transport only).
    """

    def __init__(self, channel: Any) -> None:
        channel.confirm_select()
        self._channel = channel
        self.outstanding: set[int] = set()
        self.failures: list[str] = []
        self._published = 0
        publish = channel.basic_publish

        def counting_publish(*args: Any, **kwargs: Any) -> Any:
            # Confirm-mode delivery tags count every publish on the channel from 1, the task-sent events
            # included, so each one is tracked.
            self._published += 1
            self.outstanding.add(self._published)
            return publish(*args, **kwargs)

        channel.basic_publish = counting_publish
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        channel.events["basic_return"].add(self._on_return)

    def publish_mandatory(self, message: Message, exchange: str, routing_key: str) -> int:
        """``basic_publish(message, exchange, routing_key, mandatory=True)``, tracked, minus py-amqp's poll
        of the socket for a connection.blocked notice before each message (a read and a caught timeout
        every time). A blocked broker shows anyway: its confirms do not come, and the request gets its 503
        when the publish timeout runs out. Returns the message's delivery tag.
        """
        if not self._channel.connection:
            raise RecoverableConnectionError("basic_publish: connection closed")
        self._published += 1
        self.outstanding.add(self._published)
        # As py-amqp's basic_publish sends them: ticket, exchange, routing key, mandatory, immediate.
        self._channel.send_method(
            spec.Basic.Publish, "Bssbb", (0, exchange, routing_key, True, False), message
        )
        return self._published

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

    def wait(self, connection: Connection, deadline: Deadline) -> None:
        """Block until every publish so far is confirmed; raise PublishError on nack, return or deadline."""
        while self.outstanding and not self.failures:
            remaining = deadline.remaining()
            if remaining <= 0:
                raise PublishError(
                    f"{len(self.outstanding)} message(s) unconfirmed after {deadline.timeout}s"
                )
            try:
                connection.drain_events(timeout=remaining)
            except TimeoutError:
                continue
        if self.failures:
            raise PublishError("; ".join(self.failures))


class BatchedWrites:
    """Stands in for py-amqp's transport in its frame writer: while ``held()``, frames collect in memory and
    go to the socket together when the block ends (or every WRITE_CHUNK bytes); otherwise they pass through.

    One ``sendall`` per request instead of one per message: on loopback each write also pays for the
    TCP delivery to RabbitMQ, and was the largest single cost of the old path (BENCHMARKS.md).
    """

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._pending = bytearray()
        self._holding = False

    def write(self, data: Any) -> None:
        """Called by the frame writer for each frame (a memoryview of its reused buffer, so copied here)."""
        if not self._holding:
            self._transport.write(data)
            return
        self._pending += data
        if len(self._pending) >= WRITE_CHUNK:
            self.flush()

    def flush(self) -> None:
        """Write what has collected."""
        if self._pending:
            pending, self._pending = self._pending, bytearray()
            self._transport.write(pending)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Collect the frames written inside the block; write them when it ends without an error."""
        self._holding = True
        try:
            yield
        except BaseException:
            self._pending = bytearray()  # the connection is reset after any error: nothing half-sent is kept
            raise
        finally:
            self._holding = False
        self.flush()

    @classmethod
    def install(cls, connection: Connection) -> BatchedWrites:
        """Route the frames of ``connection`` (established, kombu over py-amqp) through a new instance."""
        amqp_connection = connection.connection
        writes = cls(amqp_connection.transport)
        amqp_connection.frame_writer = frame_writer(amqp_connection, writes)
        return writes


class PropertiesEncoder:
    """Encodes a task message's AMQP properties as py-amqp does, without re-encoding the headers that are
    the same for every task of a connection (15 of the 19; py-amqp encodes tables in pure Python, and that
    was the largest cost left per message).

    The constant headers are encoded once and kept while they stay equal; the four that vary (id, root_id,
    argsrepr, kwargsrepr) follow them in the table. The first message of each connection is checked byte
    for byte against py-amqp's own encoding of the same properties; on any difference the encoder turns
    itself off and messages are encoded by py-amqp as before.
    """

    VARIABLE = ("id", "root_id", "argsrepr", "kwargsrepr")
    # In the order of amqp.Message.PROPERTIES; the task messages set exactly these.
    LAYOUT = ("content_type", "content_encoding", "application_headers", "delivery_mode", "priority",
              "correlation_id", "reply_to")  # fmt: skip

    def __init__(self) -> None:
        self.enabled = True
        self._checked = False
        self._constant: dict[str, Any] | None = None
        self._constant_entries = b""
        flags = 0
        for position, (name, _kind) in enumerate(Message.PROPERTIES[:15]):
            if name in self.LAYOUT:
                flags |= 1 << (15 - position)
        self._flags = pack(">H", flags)

    def message(self, body: bytes, headers: dict[str, Any], properties: dict[str, Any]) -> Message:
        """An amqp.Message of ``body`` with ``properties`` (``application_headers`` = ``headers``)."""
        properties = {**properties, "application_headers": headers}
        if not self.enabled or set(properties) != set(self.LAYOUT):
            return Message(body, **properties)
        constant = {key: value for key, value in headers.items() if key not in self.VARIABLE}
        variable = {key: headers[key] for key in self.VARIABLE if key in headers}
        if constant != self._constant:
            self._constant, self._constant_entries = constant, amqp_dumps("F", [constant])[4:]
        entries = self._constant_entries + amqp_dumps("F", [variable])[4:]
        encoded = b"".join(
            [
                self._flags,
                _shortstr(properties["content_type"]),
                _shortstr(properties["content_encoding"]),
                pack(">I", len(entries)),
                entries,
                pack("BB", properties["delivery_mode"], properties["priority"]),
                _shortstr(properties["correlation_id"]),
                _shortstr(properties["reply_to"]),
            ]
        )
        message = _EncodedMessage(body, encoded, properties)
        if not self._checked:
            self._checked = True
            # The same table in the same order, encoded by py-amqp itself.
            reference = Message(body, **{**properties, "application_headers": {**constant, **variable}})
            if reference._serialize_properties() != encoded:
                logger.warning("task message properties differ from py-amqp's encoding; not caching them")
                self.enabled = False
                return Message(body, **properties)
        return message


class _EncodedMessage(Message):  # type: ignore[misc]
    """An amqp.Message whose properties PropertiesEncoder has already encoded."""

    def __init__(self, body: bytes, encoded: bytes, properties: dict[str, Any]) -> None:
        super().__init__(body, **properties)
        self._encoded = encoded

    def _serialize_properties(self) -> bytes:
        return self._encoded


def encoded_properties(message: Message) -> bytes:
    """The properties as they go on the wire (encoded again only when the encoder did not do it)."""
    if isinstance(message, _EncodedMessage):
        return message._encoded
    encoded: bytes = message._serialize_properties()
    return encoded


def _shortstr(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 255:
        raise ValueError(f"shortstr too long: {len(data)} bytes")
    return bytes([len(data)]) + data


@contextmanager
def socket_bounded(connection: Connection, deadline: Deadline) -> Iterator[None]:
    """Every read and write on the connection's socket inside the block gives up at ``deadline``.

    py-amqp's own socket timeouts are set once per connection, AUTH0_EVENTS_PUBLISH_TIMEOUT each: a write
    to a broker that stopped reading, or a declare on a connection opened late in a publish, would run
    past the publish's deadline.
    """
    sock = connection.connection.transport.sock
    sock.settimeout(max(deadline.remaining(), 0.001))
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(None)  # back to py-amqp's blocking socket with its own timeouts
