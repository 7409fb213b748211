"""Dead-letter a message the worker refuses: a copy with the reason to ``<queue>.dlq``, the original acked.

RabbitMQ's own dead-lettering (``basic.reject(requeue=False)``) can carry no reason, so the copy is
published by the worker itself, to the dead-letter exchange with the source queue as routing key (the
binding of ``<queue>.dlq``), persistent and confirmed by the broker before the original is acked. When
that copy cannot be published the original is rejected instead: RabbitMQ then dead-letters it as sent,
and the reason is in the worker's log only. Either way the message is kept, and the worker goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from celery import Celery
from kombu.connection import Connection
from kombu.messaging import Producer

from kernel.amqp_properties import MARKER_HEADER, flaw
from kernel.broker_url import retries_over_nodes
from kernel.record_limits import deepest
from kernel.storage.models import utcnow
from kernel.topology import DEAD_LETTER_EXCHANGE
from kernel.wire import COMPRESSION_HEADER, REASON_HEADER, REFUSED_AT_HEADER, REFUSED_BY_HEADER, SOURCE_HEADER
from tasks.task_message import MAX_HEADER_DEPTH

logger = logging.getLogger(__name__)

#: The properties a copy keeps; an ``expiration`` in particular would let the copy expire in the DLQ.
KEPT_PROPERTIES = ("content_type", "content_encoding", "correlation_id", "reply_to", "message_id", "priority")
PERSISTENT = 2
#: After a copy could not be published, refusals reject for this long before trying a copy again: each
#: try blocks the worker's event loop for up to the publish timeout.
RETRY_COPIES_AFTER = 30.0


class Refuser:
    """Dead-letters refused messages over a broker connection of its own, opened when first needed.

    Not the consumer's connection: waiting there for the copy's confirm would deliver the next messages
    into this one's handling.
    """

    def __init__(self, app: Celery, hostname: str, timeout: float) -> None:
        self._app, self._hostname, self._timeout = app, hostname, timeout
        self._connection: Connection | None = None
        self._producer: Producer | None = None
        self._copies_from = 0.0  # time.monotonic() from which copies are tried again

    def refuse(self, message: Any, queue: str | None, reason: str) -> None:
        """Dead-letter ``message`` (kombu's or py-amqp's, from ``queue``) with ``reason``; never raises."""
        try:
            how = self._dead_letter(message, queue, reason)
        except Exception as exc:  # noqa: BLE001 - the worker must go on whatever happens here
            how = f"left unsettled ({type(exc).__name__}); the broker redelivers it"
        _log(message, queue, reason, how)

    def close(self) -> None:
        """Close the connection, if open."""
        connection, self._connection, self._producer = self._connection, None, None
        if connection is not None:
            connection.collect()

    def _dead_letter(self, message: Any, queue: str | None, reason: str) -> str:
        if queue is not None and time.monotonic() >= self._copies_from:
            try:
                self._publish_copy(message, queue, reason)
            except Exception as exc:  # noqa: BLE001 - a failed copy falls back to RabbitMQ's dead-lettering
                self.close()
                self._copies_from = time.monotonic() + RETRY_COPIES_AFTER
                logger.warning(
                    "could not publish a refused message's copy (%s); rejecting refused messages for %ds",
                    type(exc).__name__,
                    RETRY_COPIES_AFTER,
                )
            else:
                _settle(message, ack=True)
                return f"dead-lettered to {queue}.dlq with the reason"
        _settle(message, ack=False)
        return "rejected: RabbitMQ dead-letters it without the reason"

    def _publish_copy(self, message: Any, queue: str, reason: str) -> None:
        properties = message.properties or {}
        kept = {name: properties[name] for name in KEPT_PROPERTIES if properties.get(name) is not None}
        if "content_type" not in kept:
            kept.update(content_type="application/octet-stream", content_encoding="binary")
        headers = copy_headers(message_headers(message), reason, queue, self._hostname, utcnow())
        self._producer_for().publish(
            message.body,
            exchange=DEAD_LETTER_EXCHANGE.name,
            routing_key=queue,
            headers=headers,
            delivery_mode=PERSISTENT,
            mandatory=True,
            retry=False,
            declare=[],
            confirm_timeout=self._timeout,
            **kept,
        )

    def _producer_for(self) -> Producer:
        if self._producer is None:
            # No heartbeats: nothing would send them on this mostly idle connection, and the broker
            # would close it; a lost connection is opened again on the next refusal.
            connection = self._app.connection_for_write(connect_timeout=self._timeout, heartbeat=0)
            try:
                connection.ensure_connection(
                    max_retries=retries_over_nodes(connection, 2), interval_start=0.2, interval_step=0
                )
                self._producer = Producer(connection.channel(), auto_declare=False)
            except BaseException:
                connection.collect()
                raise
            self._connection = connection
        return self._producer


def message_headers(message: Any) -> Mapping[Any, Any]:
    """The application headers of a kombu or a py-amqp message."""
    headers = getattr(message, "headers", None)
    if headers is None:
        headers = (getattr(message, "properties", None) or {}).get("application_headers")
    return headers if isinstance(headers, Mapping) else {}


def copy_headers(
    headers: Mapping[Any, Any], reason: str, queue: str, hostname: str, now: datetime
) -> dict[str, Any]:
    """The headers of a refused message's copy: its own (when they can travel), plus the refusal's."""
    marker = flaw(headers)
    kept: dict[str, Any] = {}
    if marker is None and deepest(headers) <= MAX_HEADER_DEPTH:
        kept = {key: value for key, value in headers.items() if isinstance(key, str)}
    kept.pop(MARKER_HEADER, None)
    if marker is not None and marker.compression is not None:
        # Under another name, so that nothing reading the copy decompresses it.
        kept[COMPRESSION_HEADER] = marker.compression
    kept.update(
        {
            REASON_HEADER: reason,
            SOURCE_HEADER: queue,
            REFUSED_AT_HEADER: now,
            REFUSED_BY_HEADER: hostname,
        }
    )
    return kept


def _settle(message: Any, ack: bool) -> None:
    """Ack, or reject without requeue, a kombu message or a py-amqp one kombu could not convert."""
    if hasattr(message, "ack"):
        message.ack() if ack else message.reject(requeue=False)
        return
    channel, tag = message.channel, message.delivery_tag
    channel.basic_ack(tag) if ack else channel.basic_reject(tag, requeue=False)


def _log(message: Any, queue: str | None, reason: str, how: str) -> None:
    headers = message_headers(message)
    task_id = headers.get("id") if flaw(headers) is None else None
    shown_id = ascii(task_id[:64]) if isinstance(task_id, str) else "-"
    body = getattr(message, "body", b"")
    # The body and headers are not logged: they may hold personal data, and a refused one anything.
    logger.error(
        "refused message task_id=%s from %s (delivery %s, %d bytes): %s; %s",
        shown_id,
        queue or "an unknown queue",
        getattr(message, "delivery_tag", "-"),
        len(body) if isinstance(body, bytes | str) else 0,
        reason,
        how,
        extra={"queue": queue, "reason": reason},
    )
