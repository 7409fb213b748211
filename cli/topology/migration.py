"""Move every queue of the service to another queue type by drain-and-swap, losing no message.

RabbitMQ cannot change a queue's type or arguments in place (406 PRECONDITION_FAILED), and the names must
stay (receivers publish to the exchange by routing key, workers consume by name, the dead-letter exchange
routes by the work queue's name). So each queue ``Q`` is swapped through a holding queue ``Q.migrating``
(of the target type) that takes ``Q``'s bindings while ``Q`` is deleted and declared again:

1. declare ``Q.migrating`` and bind it as ``Q`` is bound; unbind ``Q`` (new messages now wait there);
2. move every message of ``Q`` into it; delete ``Q`` once empty and unused;
3. declare ``Q`` with the target arguments, unbound; move the holding queue's messages into it;
4. bind ``Q``; unbind the holding queue; move what arrived meanwhile; delete the holding queue.

Each message is moved by ``basic.get``, a publish the broker confirms, then the ack of the original: a
process killed at any point leaves every message in one queue or (confirmed but not yet acked) in two,
never in none. Each step is read back from the broker's state (which queue exists, of which type, with
which bindings), so running the migration again finishes an interrupted one. Between each pair of binding
changes (1 and 4) a message published in that instant routes to both queues and is later delivered twice;
the ledger makes its effects happen once, as for any redelivery.

Hand-written because RabbitMQ 3.10 has no in-place type change and its shovel plugin (off by default)
moves messages but neither swaps bindings nor resumes a half-done swap.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from amqp import Message
from amqp.exceptions import AMQPNotImplementedError, NotFound, PreconditionFailed
from kombu.connection import Connection
from kombu.entity import Queue

from kernel import amqp_properties
from kernel.settings import QueueType
from kernel.topology import EVENTS_EXCHANGE, all_queues

HOLDING_SUFFIX = ".migrating"
#: How long an unbound queue may still receive a message routed just before (in flight between the
#: publisher's channel and the queue) before it is drained for the last time.
SETTLE_SECONDS = 1.0
#: Rounds of move-then-delete before a queue that keeps getting messages or consumers is given up on.
DELETE_ATTEMPTS = 5


class MigrationError(Exception):
    """Raised when a queue cannot be migrated now (it has consumers, or the broker refused a step)."""


@dataclass(frozen=True)
class QueueMigration:
    """One queue's state before the migration, and what the migration did or would do to it."""

    name: str
    #: "target": already of the target type; "other": exists with other arguments (to migrate);
    #: "missing": does not exist (declared with the target type)
    state: str
    messages: int
    consumers: int
    #: A holding queue left by an interrupted migration, and the messages it holds.
    holding_messages: int | None
    #: Messages moved into the queue of the target type.
    moved: int = 0

    @property
    def needs_work(self) -> bool:
        """Whether the queue is not yet of the target type, or a holding queue is left over."""
        return self.state != "target" or self.holding_messages is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {**dataclasses.asdict(self), "needs_work": self.needs_work}


Progress = Callable[[str], None]


def target_queues(work_queue_names: Iterable[str], queue_type: QueueType) -> list[Queue]:
    """Every queue of the service as declared with ``queue_type``: work queues, their DLQs, quarantine."""
    return all_queues(work_queue_names, queue_type)


def inspect(connection: Connection, queues: Iterable[Queue]) -> list[QueueMigration]:
    """Each queue's state against its target declaration; changes nothing on the broker (the dry run)."""
    return [_inspect(connection, queue) for queue in queues]


def migrate(connection: Connection, queues: Iterable[Queue], progress: Progress) -> list[QueueMigration]:
    """Swap each queue that is not of its target declaration; finish any interrupted swap.

    Raises MigrationError, before touching a queue, when it has consumers (stop the workers first).
    """
    # Headers nested too deep to decode, or naming a compression, must not stop a move (the worker
    # refuses such messages itself once they are in place).
    amqp_properties.install()
    queues = list(queues)
    before = inspect(connection, queues)
    busy = [item for item in before if item.consumers and item.needs_work]
    if busy:
        names = ", ".join(f"{item.name} ({item.consumers})" for item in busy)
        raise MigrationError(f"queues with consumers: {names}; stop the workers consuming them first")
    done = []
    for queue, state in zip(queues, before, strict=True):
        moved = _swap(connection, queue, state, progress) if state.needs_work else 0
        done.append(dataclasses.replace(state, moved=moved))
    return done


def _inspect(connection: Connection, queue: Queue) -> QueueMigration:
    holding = _depth(connection, queue.name + HOLDING_SUFFIX)
    found = _depth(connection, queue.name)
    if found is None:
        return QueueMigration(queue.name, "missing", 0, 0, holding[0] if holding else None)
    state = "target" if _declares(connection, queue) else "other"
    return QueueMigration(queue.name, state, found[0], found[1], holding[0] if holding else None)


def _swap(connection: Connection, queue: Queue, state: QueueMigration, progress: Progress) -> int:
    holding = _holding_queue(queue)
    moved = 0
    if state.state == "other":
        if not _declares(connection, holding):
            raise MigrationError(f"{holding.name} exists with other arguments; delete it if it is empty")
        _bind(connection, holding.name, queue)
        _unbind(connection, queue.name, queue)
        _drain_and_delete(connection, queue.name, holding.name, progress)
        progress(f"{queue.name}: deleted; declaring it again with the target arguments")
    if not _declares(connection, queue):  # declared by someone else meanwhile, with other arguments
        raise MigrationError(f"{queue.name} was declared again with other arguments; run the migration again")
    if state.state == "other" or state.holding_messages is not None:
        moved += _move(connection, holding.name, queue.name, progress)
        _bind(connection, queue.name, queue)
        _unbind(connection, holding.name, queue)
        moved += _drain_and_delete(connection, holding.name, queue.name, progress)
    _bind(connection, queue.name, queue)
    progress(f"{queue.name}: migrated ({moved} messages moved)")
    return moved


def _holding_queue(queue: Queue) -> Queue:
    # Durable and of the target type, with no dead-lettering: nothing consumes it.
    arguments = {
        k: v for k, v in (getattr(queue, "queue_arguments", None) or {}).items() if k == "x-queue-type"
    }
    return Queue(queue.name + HOLDING_SUFFIX, durable=True, queue_arguments=arguments or None)


def _routing_keys(queue: Queue) -> tuple[str, ...]:
    """The routing keys ``queue`` is bound with on its exchange.

    A work queue also takes ``#.<name>``: the binding Celery's native delayed delivery adds (quorum
    queues), through which a delayed retry comes back with its delay's digits before the routing key.
    Kept on a classic queue too, so the retries still waiting after a move back to classic arrive.
    """
    if queue.exchange.name == EVENTS_EXCHANGE.name and "x-dead-letter-exchange" in (
        getattr(queue, "queue_arguments", None) or {}
    ):
        return (queue.routing_key, f"#.{queue.routing_key}")
    return (queue.routing_key,)


def _depth(connection: Connection, name: str) -> tuple[int, int] | None:
    """(messages, consumers) of queue ``name``, or None when it does not exist."""
    with connection.channel() as channel:
        try:
            _, messages, consumers = channel.queue_declare(queue=name, passive=True)
        except NotFound:
            return None
    return int(messages), int(consumers)


def _declares(connection: Connection, queue: Queue) -> bool:
    """Declare ``queue`` (unbound) with its arguments: False when it exists with others (406)."""
    with connection.channel() as channel:
        try:
            queue.bind(channel).queue_declare()
        except PreconditionFailed:
            return False
    return True


def _bind(connection: Connection, name: str, like: Queue) -> None:
    """Bind queue ``name`` as ``like`` is bound (its exchange, declared first, and routing keys)."""
    with connection.channel() as channel:
        like.exchange.bind(channel).declare()
        for key in _routing_keys(like):
            channel.queue_bind(queue=name, exchange=like.exchange.name, routing_key=key)


def _unbind(connection: Connection, name: str, like: Queue) -> None:
    """Remove from queue ``name`` the bindings ``like`` has (removing an absent binding is a no-op)."""
    with connection.channel() as channel:
        for key in _routing_keys(like):
            channel.queue_unbind(queue=name, exchange=like.exchange.name, routing_key=key)


def _move(connection: Connection, source: str, destination: str, progress: Progress) -> int:
    """Move every message of ``source`` to ``destination``: confirmed publish, then ack; return the count."""
    moved = 0
    with connection.channel() as channel:
        channel.confirm_select()
        while (message := channel.basic_get(queue=source, no_ack=False)) is not None:
            copy = Message(message.body, **_movable(message.properties))
            # Confirmed before the original is acked: a crash in between leaves the message in both.
            channel.basic_publish_confirm(copy, exchange="", routing_key=destination)
            channel.basic_ack(message.delivery_tag)
            moved += 1
            if moved % 1000 == 0:
                progress(f"{source} -> {destination}: {moved} messages moved")
    return moved


def _movable(properties: dict[str, Any]) -> dict[str, Any]:
    """The message's properties as they can be published again."""
    headers = dict(properties.get("application_headers") or {})
    marker = amqp_properties.flaw(headers)
    if marker is None:
        return {**properties, "application_headers": headers}
    del headers[amqp_properties.MARKER_HEADER]
    if marker.compression is not None:
        headers["compression"] = marker.compression  # moved aside by the decoder: put back as sent
    else:
        # Headers py-amqp could not decode cannot be sent again; say so (the worker then refuses it).
        headers["x-auth0-events-moved-without-headers"] = marker.reason
    return {**properties, "application_headers": headers}


def _drain_and_delete(connection: Connection, source: str, destination: str, progress: Progress) -> int:
    """Move ``source``'s messages to ``destination``, then delete ``source`` once it is empty and unused.

    Called once ``source`` is unbound. A message routed just before that may still be on its way, so the
    move waits SETTLE_SECONDS first, and one that still arrives is moved on the next round.
    """
    time.sleep(SETTLE_SECONDS)
    moved, reason = 0, ""
    for _ in range(DELETE_ATTEMPTS):
        moved += _move(connection, source, destination, progress)
        reason = _delete_if_empty(connection, source)
        if not reason:
            return moved
    raise MigrationError(f"{source} could not be deleted ({reason}); stop its consumers and run again")


def _delete_if_empty(connection: Connection, name: str) -> str:
    """Delete queue ``name`` if it has no message and no consumer; else return why not."""
    # On a connection of its own: a quorum queue refuses if-empty and if-unused with 540 NOT_IMPLEMENTED,
    # which closes the whole connection.
    with connection.clone() as probe:
        try:
            probe.channel().queue_delete(queue=name, if_unused=True, if_empty=True)
            return ""
        except PreconditionFailed as exc:
            return str(exc.reply_text)
        except AMQPNotImplementedError:
            pass
    # RabbitMQ 3.10 cannot delete a quorum queue on condition: count, then delete. The queue is unbound
    # and was just drained, so nothing can arrive in between.
    depth = _depth(connection, name)
    if depth is None:
        return ""
    if depth != (0, 0):
        return f"{depth[0]} messages, {depth[1]} consumers"
    with connection.channel() as channel:
        channel.queue_delete(queue=name)
    return ""
