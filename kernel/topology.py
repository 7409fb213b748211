"""RabbitMQ exchanges and queues, built from the routes so every declarer uses identical arguments."""

from __future__ import annotations

from collections.abc import Iterable

from kombu.connection import Connection
from kombu.entity import Exchange, Queue

from kernel.routing import DLQ_SUFFIX, QUARANTINE_QUEUE

# Topic rather than direct: Celery publishes to a direct exchange through the default exchange, and
# quorum queues' native delayed delivery refuses direct exchanges (Celery logs "Direct exchanges are not
# supported with native delayed delivery" and ETA tasks then block the worker).
EVENTS_EXCHANGE = Exchange("auth0.events", type="topic", durable=True)
DEAD_LETTER_EXCHANGE = Exchange("auth0.events.dlx", type="direct", durable=True)


def work_queue(name: str) -> Queue:
    """Return the durable work queue ``name``, which dead-letters to its own DLQ."""
    return Queue(
        name,
        EVENTS_EXCHANGE,
        routing_key=name,
        durable=True,
        queue_arguments={
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE.name,
            # Keeping the source queue name as the DLQ routing key tells replay where a message came from.
            "x-dead-letter-routing-key": name,
        },
    )


def dead_letter_queue(work_queue_name: str) -> Queue:
    """Return ``<queue>.dlq``: where the work queue's rejected messages wait, consumed by no worker."""
    return Queue(
        work_queue_name + DLQ_SUFFIX,
        DEAD_LETTER_EXCHANGE,
        routing_key=work_queue_name,
        durable=True,
    )


def quarantine_queue() -> Queue:
    """Return the queue that keeps invalid records with the reason they were refused."""
    return Queue(QUARANTINE_QUEUE, EVENTS_EXCHANGE, routing_key=QUARANTINE_QUEUE, durable=True)


def all_queues(work_queue_names: Iterable[str]) -> list[Queue]:
    """Return every queue of the service: each work queue, its DLQ, and the quarantine queue."""
    queues: list[Queue] = []
    for name in work_queue_names:
        queues += [work_queue(name), dead_letter_queue(name)]
    queues.append(quarantine_queue())
    return queues


def declare_all(connection: Connection, work_queue_names: Iterable[str]) -> list[Queue]:
    """Declare every exchange, queue and binding on ``connection``; safe to repeat.

    Raises amqp.exceptions.PreconditionFailed when a queue exists with other arguments.
    """
    queues = all_queues(work_queue_names)
    channel = connection.default_channel
    for queue in queues:
        queue.bind(channel).declare()
    return queues
