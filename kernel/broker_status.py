"""Declare the configured topology entity by entity, and read each queue's depth and consumers.

Every declaration and every passive check runs on a channel of its own: RabbitMQ closes a channel on
406 PRECONDITION_FAILED (a queue that exists with other arguments) and on 404 NOT_FOUND, and the other
entities must still be declared or checked.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from amqp.exceptions import ChannelError, NotFound
from kombu.connection import Connection
from kombu.entity import Exchange, Queue

from kernel.routing import DLQ_SUFFIX, QUARANTINE_QUEUE
from kernel.settings import QueueType
from kernel.topology import (
    DEAD_LETTER_EXCHANGE,
    EVENTS_EXCHANGE,
    dead_letter_queue,
    quarantine_queue,
    work_queue,
)


@dataclass(frozen=True)
class Declaration:
    """One exchange or queue as declared; ``error`` is what RabbitMQ answered when it refused."""

    kind: str  # "exchange" or "queue"
    name: str
    role: str  # "events", "dead-letter", "work", "dlq", "quarantine"
    arguments: dict[str, Any]
    binding: str | None = None  # queues: "<exchange> <routing key>"
    exchange_type: str | None = None  # exchanges: "topic", "direct"
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the broker accepted the declaration."""
        return self.error is None


@dataclass(frozen=True)
class DeclareReport:
    """Every declaration of one ``declare_topology`` run, in order."""

    declarations: tuple[Declaration, ...]

    @property
    def refused(self) -> tuple[Declaration, ...]:
        """The declarations the broker refused, such as a queue that exists with other arguments."""
        return tuple(item for item in self.declarations if not item.ok)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: each declaration with its error, and whether all were accepted."""
        return {
            "declarations": [{**asdict(item), "ok": item.ok} for item in self.declarations],
            "ok": not self.refused,
        }


def declare_topology(
    connection: Connection, work_queue_names: Iterable[str], queue_type: QueueType
) -> DeclareReport:
    """Declare both exchanges, each work queue and its binding, each DLQ, and the quarantine queue.

    Idempotent. An entity the broker refuses (406: it exists with other arguments or type) is reported
    with the broker's reason and the others are still declared. Connection-level failures propagate.
    """
    declarations = [
        _declare_exchange(connection, EVENTS_EXCHANGE, "events"),
        _declare_exchange(connection, DEAD_LETTER_EXCHANGE, "dead-letter"),
    ]
    for name in work_queue_names:
        declarations.append(_declare_queue(connection, work_queue(name, queue_type), "work"))
        declarations.append(_declare_queue(connection, dead_letter_queue(name, queue_type), "dlq"))
    declarations.append(_declare_queue(connection, quarantine_queue(queue_type), "quarantine"))
    return DeclareReport(tuple(declarations))


def _declare_exchange(connection: Connection, exchange: Exchange, role: str) -> Declaration:
    with connection.channel() as channel:
        try:
            exchange.bind(channel).declare()
        except ChannelError as exc:
            return Declaration(
                "exchange", exchange.name, role, {}, exchange_type=exchange.type, error=_reason(exc)
            )
    return Declaration("exchange", exchange.name, role, {}, exchange_type=exchange.type)


def _declare_queue(connection: Connection, queue: Queue, role: str) -> Declaration:
    arguments: dict[str, Any] = dict(getattr(queue, "queue_arguments", None) or {})
    binding = f"{queue.exchange.name} {queue.routing_key}"
    with connection.channel() as channel:
        bound = queue.bind(channel)
        try:
            # Not Queue.declare(): that declares the exchange again, and an exchange's own conflict
            # would then be reported against every queue.
            bound.queue_declare()
            bound.queue_bind()
        except ChannelError as exc:
            return Declaration("queue", queue.name, role, arguments, binding, error=_reason(exc))
    return Declaration("queue", queue.name, role, arguments, binding)


def _reason(exc: ChannelError) -> str:
    return str(getattr(exc, "reply_text", "") or exc)


@dataclass(frozen=True)
class QueueState:
    """A queue's depth and consumers as the broker reports them; None for both when it does not exist."""

    name: str
    messages: int | None
    consumers: int | None

    @property
    def exists(self) -> bool:
        """Whether the queue exists on the broker."""
        return self.messages is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with ``exists``."""
        return {**asdict(self), "exists": self.exists}


@dataclass(frozen=True)
class WorkQueueStatus:
    """A work queue and its dead-letter queue."""

    queue: QueueState
    dlq: QueueState


@dataclass(frozen=True)
class TopologyStatus:
    """Every configured work queue with its DLQ, and the quarantine queue."""

    work_queues: tuple[WorkQueueStatus, ...]
    quarantine: QueueState

    @property
    def missing(self) -> tuple[str, ...]:
        """Configured queues that do not exist on the broker."""
        states = [state for item in self.work_queues for state in (item.queue, item.dlq)]
        return tuple(state.name for state in [*states, self.quarantine] if not state.exists)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: per work queue its state and its DLQ's, the quarantine, the missing names."""
        return {
            "work_queues": [{**item.queue.to_dict(), "dlq": item.dlq.to_dict()} for item in self.work_queues],
            "quarantine": self.quarantine.to_dict(),
            "missing": list(self.missing),
        }


def queue_state(connection: Connection, name: str) -> QueueState:
    """Read ``name``'s depth and consumer count with a passive declare; 404 means it does not exist."""
    with connection.channel() as channel:
        try:
            _name, messages, consumers = Queue(name).bind(channel).queue_declare(passive=True)
        except NotFound:
            return QueueState(name, None, None)
    return QueueState(name, int(messages), int(consumers))


def topology_status(connection: Connection, work_queue_names: Iterable[str]) -> TopologyStatus:
    """Return the state of each work queue, its DLQ, and the quarantine queue."""
    work_queues = tuple(
        WorkQueueStatus(queue_state(connection, name), queue_state(connection, name + DLQ_SUFFIX))
        for name in work_queue_names
    )
    return TopologyStatus(work_queues, queue_state(connection, QUARANTINE_QUEUE))
