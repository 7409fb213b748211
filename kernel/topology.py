"""RabbitMQ exchanges and queues, built from the routes so every declarer uses identical arguments."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from amqp.exceptions import PreconditionFailed
from kombu.connection import Connection
from kombu.entity import Exchange, Queue

from kernel.routing import DLQ_SUFFIX, QUARANTINE_QUEUE
from kernel.settings import QueueType

logger = logging.getLogger(__name__)

# Topic rather than direct: Celery publishes to a direct exchange through the default exchange, and
# quorum queues' native delayed delivery refuses direct exchanges (Celery logs "Direct exchanges are not
# supported with native delayed delivery" and ETA tasks then block the worker).
EVENTS_EXCHANGE = Exchange("auth0.events", type="topic", durable=True)
DEAD_LETTER_EXCHANGE = Exchange("auth0.events.dlx", type="direct", durable=True)

#: How often a quorum queue hands out one message before dead-lettering it (reason ``delivery_limit``).
#: A backstop only: a task redelivered after its worker died publishes its own retry and acks on that
#: second delivery (tasks/retry_policy.decide_redelivery), so the service's count of failed attempts is
#: AUTH0_EVENTS_MAX_RETRIES. The broker's count also sees what the task never does: a message that kills
#: the worker's main process before the task runs (decoding, the consumer), which would otherwise loop.
#: Each warm shutdown returns the prefetched messages and counts too, hence the room above the retries.
QUORUM_DELIVERY_LIMIT = 20


def _type_arguments(queue_type: QueueType) -> dict[str, Any]:
    if queue_type == "classic":
        return {}
    # Raft-replicated over the cluster's nodes; durable by nature, a queue the loss of one node keeps.
    return {"x-queue-type": "quorum"}


def _dead_lettering_arguments(work_queue_name: str, queue_type: QueueType) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE.name,
        # Keeping the source queue name as the DLQ routing key tells replay where a message came from.
        "x-dead-letter-routing-key": work_queue_name,
    }
    if queue_type == "quorum":
        arguments.update(
            {
                # A quorum queue dead-letters at-most-once by default: a dead letter the DLQ cannot take
                # at that moment (its leader on a node that is down) is dropped. at-least-once keeps it in
                # the work queue until the DLQ confirms it (RabbitMQ >= 3.10, stream_queue feature flag).
                "x-dead-letter-strategy": "at-least-once",
                # at-least-once needs reject-publish: with the default drop-head RabbitMQ silently falls
                # back to at-most-once. No max-length is set, so no publish is ever refused for it.
                "x-overflow": "reject-publish",
                "x-delivery-limit": QUORUM_DELIVERY_LIMIT,
            }
        )
    return arguments


def work_queue(name: str, queue_type: QueueType) -> Queue:
    """Return the durable work queue ``name``, which dead-letters to its own DLQ."""
    return Queue(
        name,
        EVENTS_EXCHANGE,
        routing_key=name,
        durable=True,
        queue_arguments={**_type_arguments(queue_type), **_dead_lettering_arguments(name, queue_type)},
    )


def dead_letter_queue(work_queue_name: str, queue_type: QueueType) -> Queue:
    """Return ``<queue>.dlq``: where the work queue's rejected messages wait, consumed by no worker.

    No delivery limit: `auth0-events dlq list` borrows each message and returns it, which a quorum queue
    counts as a delivery; a limit would drop dead letters that were only read.
    """
    return Queue(
        work_queue_name + DLQ_SUFFIX,
        DEAD_LETTER_EXCHANGE,
        routing_key=work_queue_name,
        durable=True,
        queue_arguments=_type_arguments(queue_type) or None,
    )


def quarantine_queue(queue_type: QueueType) -> Queue:
    """Return the queue that keeps invalid records with the reason they were refused."""
    return Queue(
        QUARANTINE_QUEUE,
        EVENTS_EXCHANGE,
        routing_key=QUARANTINE_QUEUE,
        durable=True,
        queue_arguments=_type_arguments(queue_type) or None,
    )


def all_queues(work_queue_names: Iterable[str], queue_type: QueueType) -> list[Queue]:
    """Return every queue of the service: each work queue, its DLQ, and the quarantine queue."""
    queues: list[Queue] = []
    for name in work_queue_names:
        queues += [work_queue(name, queue_type), dead_letter_queue(name, queue_type)]
    queues.append(quarantine_queue(queue_type))
    return queues


def declare_all(
    connection: Connection,
    work_queue_names: Iterable[str],
    queue_type: QueueType,
    *,
    keep_other_arguments: bool = False,
) -> list[Queue]:
    """Declare every exchange, queue and binding on ``connection``; safe to repeat.

    Raises amqp.exceptions.PreconditionFailed when a queue exists with other arguments or of another type,
    unless ``keep_other_arguments``: the receiver's choice, as it only publishes to the exchange by routing
    key, which reaches the queue whatever its type (during and after `auth0-events topology migrate`,
    before the receiver is restarted with the new AUTH0_EVENTS_QUEUE_TYPE); such a queue is logged.
    """
    queues = all_queues(work_queue_names, queue_type)
    for queue in queues:
        # A channel each when tolerating: a 406 closes the channel it was answered on.
        channel = connection.channel() if keep_other_arguments else connection.default_channel
        try:
            queue.bind(channel).declare()
        except PreconditionFailed as exc:
            if not keep_other_arguments:
                raise
            logger.warning(
                "queue %s exists with other arguments than AUTH0_EVENTS_QUEUE_TYPE=%s gives (%s); "
                "publishing to it anyway",
                queue.name,
                queue_type,
                exc.reply_text,
            )
        finally:
            if keep_other_arguments:
                channel.close()  # a no-op on a channel the broker closed
    return queues


# Native delayed delivery routes a delayed message by its delay's 28 binary digits before the routing key
# ("0.0.….1.0.auth0.s"), and the message reaches its queue with that key.
_DELAY_PREFIX = re.compile(r"^(?:[01]\.){28}")


def source_queue(routing_key: str) -> str:
    """The work queue a delivery's routing key names, without native delayed delivery's delay prefix."""
    return _DELAY_PREFIX.sub("", routing_key, count=1)
