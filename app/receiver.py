"""The receiving pipeline behind POST /webhooks/auth0: authenticate, parse, sort, publish."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import Any, TypeVar

from app import metrics
from app.auth import is_authorized
from app.errors import BrokerUnavailable, Unauthorized, UnparsableBody
from app.intake import BatchCounts, Intake, Source, sort_records
from app.payload import PayloadError, Span, decode_body, iter_spans
from app.publisher import EventPublisher, PublishError
from app.quarantine import QuarantineReport
from tasks.routing import QUARANTINE_QUEUE, RouteTable
from tasks.settings import Settings

logger = logging.getLogger(__name__)

#: Bodies larger than this are handled in slices of SLICE_RECORDS records, which keeps a receiver process
#: near its usual memory even for a body at AUTH0_EVENTS_MAX_BODY_BYTES (BENCHMARKS.md, memory).
SLICE_ABOVE_BYTES = 1024 * 1024
SLICE_RECORDS = 1000

T = TypeVar("T")


@dataclass
class Receiver:
    """Everything a request needs, built once per process by the app factory."""

    settings: Settings
    routes: RouteTable
    publisher: EventPublisher

    def authenticate(self, authorization: str | None) -> None:
        """Raise Unauthorized unless the header carries a configured token (or auth is switched off)."""
        if self.settings.allow_unauthenticated and not self.settings.log_stream_tokens:
            return
        if not is_authorized(authorization, self.settings.log_stream_tokens):
            raise Unauthorized("missing or wrong log stream token in the Authorization header")

    def receive(self, body: bytes, request_id: str) -> BatchCounts:
        """Parse, sort and publish a batch; return how many records went where.

        A body over SLICE_ABOVE_BYTES is read through once (so nothing of a malformed body is published)
        and then handled SLICE_RECORDS records at a time, so its records never all exist as Python
        objects at once. The bad records of every slice go into the request's one quarantine message,
        published with the last slice. Raises UnparsableBody (nothing is published) or BrokerUnavailable
        (Auth0 must re-send; what was confirmed before is a duplicate the workers' ledger skips).
        """
        totals = BatchCounts()
        seen: set[str] = set()
        report = QuarantineReport(request_id)
        with _collection_paused():
            for (records, source), last in _with_last(self._record_slices(body)):
                intake = sort_records(records, self.routes, seen, totals.received, source)
                if intake.accepted or intake.quarantined or (last and report):
                    self._publish(intake, request_id, report, last)
                metrics.count_records(intake)
                log_accepted(intake)
                totals.add(intake)
        metrics.observe_batch_size(totals.received)
        log_quarantined(report, totals.received)
        logger.info("received batch request_id=%s %s", request_id, totals.summary(), extra=totals.summary())
        return totals

    def _record_slices(self, body: bytes) -> Iterator[tuple[list[Any], Source]]:
        try:
            text = decode_body(body)
            if len(body) <= SLICE_ABOVE_BYTES:
                yield _slice(text, list(iter_spans(text)), 0)
                return
            for _ in iter_spans(text):
                pass
        except PayloadError as exc:
            raise UnparsableBody(str(exc), line=exc.line, column=exc.column) from exc
        spans = iter_spans(text)
        first = 0
        while chunk := list(islice(spans, SLICE_RECORDS)):
            yield _slice(text, chunk, first)
            first += len(chunk)

    def _publish(self, intake: Intake, request_id: str, report: QuarantineReport, last: bool) -> None:
        try:
            with metrics.timed_publish():
                self.publisher.publish(intake, request_id, report, last)
        except PublishError as exc:
            logger.error(
                "broker did not confirm batch request_id=%s: %s",
                request_id,
                exc,
                extra={"request_id": request_id},
            )
            raise BrokerUnavailable(
                f"the broker did not confirm the batch; retry later ({exc})",
                retry_after=self.settings.retry_after_seconds,
            ) from exc


def _slice(text: str, spans: list[Span], first: int) -> tuple[list[Any], Source]:
    """The records of ``spans`` and where their text is, by request-wide index (``first`` is spans[0]'s)."""

    def source(index: int) -> str:
        _value, start, end = spans[index - first]
        return text[start:end]

    return [value for value, _start, _end in spans], source


@contextmanager
def _collection_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block, back on after (if it was on before).

    A body of a million tiny records makes millions of objects, none in a cycle (reference counting frees
    them), and each allocation burst triggers collections that walk every tracked object of the process
    (about 110,000 after the imports): half the time of such a request when measured (2.9 µs a record
    instead of 5.4). Requests of one gunicorn sync worker do not overlap; in a threaded server another
    request may run without collection meanwhile, which only defers it.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _with_last(items: Iterator[T]) -> Iterator[tuple[T, bool]]:
    """Each item with whether it is the last one."""
    for previous in items:
        for item in items:
            yield previous, False
            previous = item
        yield previous, True


def log_accepted(intake: Intake) -> None:
    """One line per accepted event.

    Its task_id is the one the worker's lines carry, so one log_id can be followed from the request that
    brought it to every handler that ran for it.
    """
    for event in intake.accepted:
        extra = {
            "log_id": event.log_id,
            "event_type": event.event_type,
            "queue": event.queue,
            "task_id": event.task_id,
        }
        logger.info(
            "accepted event log_id=%s type=%s queue=%s",
            event.log_id,
            event.event_type,
            event.queue,
            extra=extra,
        )


def log_quarantined(report: QuarantineReport, received: int) -> None:
    """One line per request with bad records, counting them by reason (a line per record was itself the
    cost of a hostile body: a million lines for a million records)."""
    if not report:
        return
    reasons = "; ".join(f"{count} × {reason}" for reason, count in report.reasons.most_common())
    logger.warning(
        "quarantined %d of %d records of request_id=%s, %d kept in the message: %s",
        report.total,
        received,
        report.request_id,
        len(report.kept),
        reasons,
        extra={
            "request_id": report.request_id,
            "queue": QUARANTINE_QUEUE,
            "quarantined": report.total,
            "reasons": dict(report.reasons),
        },
    )
