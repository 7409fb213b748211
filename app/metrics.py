"""Receiver metrics at GET /metrics, without authentication (like Flower's /metrics).

- Records by event type and outcome, batch sizes, publish (confirm) time, requests by status and their
  duration. Under gunicorn every worker process writes its own files in PROMETHEUS_MULTIPROC_DIR
  (prometheus-client's multiprocess mode, set up by gunicorn.conf.py) and a scrape adds them up.
- Every configured queue's ready messages and consumers and the age of each DLQ's oldest message, read
  from RabbitMQ by BrokerCollector when scraped (passive declares: no management plugin), with a short
  timeout and a small cache; ``auth0_events_broker_up`` is 0 when the broker did not answer.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from amqp.exceptions import AMQPError
from flask import Blueprint, Flask, Response, current_app, g, request
from kombu.connection import Connection
from kombu.entity import Queue
from kombu.exceptions import KombuError
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from app.intake import Intake
from kernel import amqp_properties
from kernel.broker_status import queue_state
from kernel.broker_url import retries_over_nodes
from kernel.celery_app import app as celery_app
from kernel.metrics import DIR_VARIABLE, event_type_label
from kernel.settings import QueueType
from kernel.topology import dead_letter_queue, quarantine_queue, work_queue
from kernel.wire import REFUSED_AT_HEADER

logger = logging.getLogger(__name__)

EXTENSION = "auth0_events_broker_metrics"
BROKER_TIMEOUT = 2.0  # seconds for the connection and for each broker call
BROKER_BUDGET = 4.0  # seconds for one whole read of the queues; beyond it the broker counts as down
BROKER_CACHE_SECONDS = 5.0  # scrapes within this long after a read are answered from it
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

#: The receiver's metric objects; served as they are without gunicorn, through the files with it.
REGISTRY = CollectorRegistry(auto_describe=True)

RECORDS = Counter(
    "auth0_events_records_total",
    "Records of batches the broker confirmed, by event type and outcome: accepted, filtered, quarantined "
    "or duplicate (a log_id repeated within its batch). Their sum over outcome is what was received.",
    ["event_type", "outcome"],
    registry=REGISTRY,
)
BATCH_RECORDS = Histogram(
    "auth0_events_batch_records",
    "Records per batch the broker confirmed.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
    registry=REGISTRY,
)
PUBLISH_DURATION = Histogram(
    "auth0_events_publish_duration_seconds",
    "Time to publish a batch and receive the broker's confirms, by outcome: confirmed or failed.",
    ["outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "auth0_events_http_requests_total",
    "HTTP requests answered by the receiver, by method, route and status code.",
    ["method", "path", "status"],
    registry=REGISTRY,
)
HTTP_REQUEST_DURATION = Histogram(
    "auth0_events_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route.",
    ["method", "path"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)


#: Records by the label of their (claimed) event type and their outcome.
RecordTally = Tally[tuple[str, str]]


def tally_records(intake: Intake) -> RecordTally:
    """The records of (a slice of) a batch by their type and where they went, for count_records."""
    by_outcome: dict[str, Tally[str]] = {
        "accepted": Tally(event.event_type for event in intake.accepted),
        "filtered": intake.filtered,
        "quarantined": Tally(_claimed_type(bad.record) for bad in intake.quarantined),
        "duplicate": intake.duplicates,
    }
    tally: RecordTally = Tally()
    for outcome, by_type in by_outcome.items():
        for code, count in by_type.items():
            tally[event_type_label(code), outcome] += count
    return tally


def count_records(tally: RecordTally) -> None:
    """Count records of a batch the broker confirmed (tally_records says which)."""
    for (label, outcome), count in tally.items():
        RECORDS.labels(label, outcome).inc(count)


def observe_batch_size(records: int) -> None:
    """Count a batch the broker confirmed by its number of records."""
    BATCH_RECORDS.observe(records)


def _claimed_type(record: Any) -> str:
    """The type an invalid record claims, or "" (a record may lack only its log_id)."""
    if not isinstance(record, dict):
        return ""
    data = record.get("data")
    code = data.get("type") if isinstance(data, dict) else record.get("type")
    return code if isinstance(code, str) else ""


@contextmanager
def timed_publish() -> Iterator[None]:
    """Observe how long publishing a batch took, as confirmed or (when it raises) failed."""
    started, outcome = time.perf_counter(), "failed"
    try:
        yield
        outcome = "confirmed"
    finally:
        PUBLISH_DURATION.labels(outcome).observe(time.perf_counter() - started)


def init_app(
    app: Flask, broker_url: str, work_queues: Sequence[str], queue_type: QueueType = "classic"
) -> None:
    """Serve GET /metrics, count every request, and read the queues of ``work_queues`` when scraped."""
    # The scrape reads the head of each DLQ, which anyone with broker access may have filled with
    # headers py-amqp cannot decode (nested thousands deep): decoded through the guard, as in the worker.
    amqp_properties.install()

    def connect() -> Connection:
        connection: Connection = celery_app.connection_for_read(
            url=broker_url,
            connect_timeout=BROKER_TIMEOUT,
            transport_options={"read_timeout": BROKER_TIMEOUT, "write_timeout": BROKER_TIMEOUT},
        )
        return connection

    app.extensions[EXTENSION] = BrokerCollector(connect, work_queues, queue_type=queue_type)
    app.before_request(_start_timer)
    app.after_request(_count_request)
    app.register_blueprint(bp)


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _count_request(response: Response) -> Response:
    method = request.method if request.method in HTTP_METHODS else "other"
    # The route's pattern, not the path: /events/<log_id> is one series, and unknown paths share one.
    path = request.url_rule.rule if request.url_rule is not None else "unmatched"
    HTTP_REQUESTS.labels(method, path, str(response.status_code)).inc()
    started = g.pop("metrics_started", None)
    if started is not None:
        HTTP_REQUEST_DURATION.labels(method, path).observe(time.perf_counter() - started)
    return response


bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    """Every metric of this receiver (all its gunicorn workers together) and of the broker's queues."""
    registry = CollectorRegistry()
    directory = os.environ.get(DIR_VARIABLE)
    if directory:
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    else:
        registry.register(REGISTRY)
    registry.register(current_app.extensions[EXTENSION])
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(registry), content_type=content_type)


BROKER_ERRORS = (OSError, AMQPError, KombuError)


class BrokerCollector:
    """Ready messages and consumers of each configured queue, and each DLQ's oldest message's age.

    Reads at most once per BROKER_CACHE_SECONDS (per process), within BROKER_BUDGET seconds; on any broker
    error or timeout it reports only ``auth0_events_broker_up 0``.
    """

    def __init__(
        self,
        connect: Callable[[], Connection],
        work_queues: Sequence[str],
        cache_seconds: float = BROKER_CACHE_SECONDS,
        queue_type: QueueType = "classic",
    ) -> None:
        self._connect = connect
        self._queues: list[tuple[Queue, str]] = []
        for name in work_queues:
            self._queues += [
                (work_queue(name, queue_type), "work"),
                (dead_letter_queue(name, queue_type), "dlq"),
            ]
        self._queues.append((quarantine_queue(queue_type), "quarantine"))
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None
        self._failing = False  # to log an outage once, not on every scrape

    def describe(self) -> list[Metric]:
        """The metric families, without reading the broker."""
        return list(_broker_families(up=False))

    def collect(self) -> list[Metric]:
        """The families from the last read, reading the broker again when that is older than the cache."""
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self._cache_seconds:
                self._cached = (now, self._read())
            return self._cached[1]

    def _read(self) -> list[Metric]:
        up, messages, consumers, age = _broker_families(up=True)
        deadline = time.monotonic() + BROKER_BUDGET
        try:
            with self._connect() as connection:
                connection.ensure_connection(max_retries=retries_over_nodes(connection))
                for queue, role in self._queues:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"reading the {len(self._queues)} queues took over {BROKER_BUDGET}s"
                        )
                    state = queue_state(connection, queue.name)
                    if state.messages is None or state.consumers is None:
                        continue  # not declared yet; the receiver and the workers declare it on connecting
                    messages.add_metric([queue.name, role], state.messages)
                    consumers.add_metric([queue.name, role], state.consumers)
                    if role == "dlq":
                        oldest = self._head_age(connection, queue, state.messages, state.consumers)
                        if oldest is not None:
                            age.add_metric([queue.name], oldest)
        except BROKER_ERRORS as exc:
            if not self._failing:
                logger.warning("queue metrics unavailable: the broker did not answer: %s", exc)
            self._failing = True
            return [_broker_families(up=False)[0]]
        if self._failing:
            logger.info("queue metrics available again")
        self._failing = False
        return [up, messages, consumers, age]

    @staticmethod
    def _head_age(connection: Connection, queue: Queue, messages: int, consumers: int) -> float | None:
        """Seconds since the DLQ's first message was dead-lettered; 0 when empty, None when unknown.

        Takes the head without acking it and gives it back at once: its place is kept, and a DLQ has no
        consumer that could miss it. Only classic queues: a quorum queue counts each give-back towards
        its delivery limit.
        """
        if messages == 0:
            return 0.0
        arguments = getattr(queue, "queue_arguments", None) or {}
        if consumers or arguments.get("x-queue-type", "classic") != "classic":
            return None
        with connection.channel() as channel:
            message = channel.basic_get(queue.name, no_ack=False)
            if message is None:  # emptied since the passive declare
                return 0.0
            try:
                dead_lettered = _dead_lettered_at(message.headers or {})
            finally:
                channel.basic_reject(message.delivery_tag, requeue=True)
        if dead_lettered is None:
            return None
        return max(0.0, (datetime.now(UTC) - dead_lettered).total_seconds())


def _dead_lettered_at(headers: dict[str, Any]) -> datetime | None:
    """When the message was dead-lettered: the worker's refusal time, else the latest ``time`` of its
    x-death entries (a refused message is copied to the DLQ by the worker, so it has no x-death of its
    own). py-amqp gives naive UTC datetimes."""
    stamps = [headers.get(REFUSED_AT_HEADER)]
    stamps += [entry.get("time") for entry in headers.get("x-death") or [] if isinstance(entry, dict)]
    times = [stamp.replace(tzinfo=stamp.tzinfo or UTC) for stamp in stamps if isinstance(stamp, datetime)]
    return max(times, default=None)


def _broker_families(
    up: bool,
) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(
            "auth0_events_broker_up",
            "1 when the last read of the queues from RabbitMQ succeeded, 0 when the broker did not answer.",
            value=1 if up else 0,
        ),
        GaugeMetricFamily(
            "auth0_events_queue_messages",
            "Messages ready in each configured queue, by role: work, dlq or quarantine.",
            labels=["queue", "role"],
        ),
        GaugeMetricFamily(
            "auth0_events_queue_consumers",
            "Consumers of each configured queue, by role: work, dlq or quarantine.",
            labels=["queue", "role"],
        ),
        GaugeMetricFamily(
            "auth0_events_dlq_oldest_message_age_seconds",
            "Seconds since the oldest message of each DLQ was dead-lettered (x-death time); 0 when empty.",
            labels=["queue"],
        ),
    )
