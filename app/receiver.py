"""The receiving pipeline behind POST /webhooks/auth0: authenticate, parse, sort, publish."""

from __future__ import annotations

import gc
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import Any, NamedTuple, TypeVar

from app import metrics
from app.auth import is_authorized
from app.errors import BrokerUnavailable, Unauthorized, UnparsableBody
from app.intake import BatchCounts, Intake, Source, restore_event, sort_records
from app.payload import PayloadError, Span, decode_body, iter_spans, strict_lines, value_at
from app.publisher import EventPublisher, PublishError
from app.quarantine import QuarantineReport
from kernel.routing import QUARANTINE_QUEUE, RouteTable
from kernel.settings import Settings

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

        A body up to SLICE_ABOVE_BYTES is parsed, sorted and published at once. A larger one is first
        read through and sorted SLICE_RECORDS records at a time, so nothing of a malformed body is
        published and its records never all exist as Python objects at once: of each slice it keeps the
        counts, its bad records in the request's quarantine message, and where its accepted events' text
        is; those events are then parsed again and published SLICE_RECORDS at a time (a body of bad
        records is parsed once). The quarantine message goes with the last publish.

        Raises UnparsableBody (nothing is published) or BrokerUnavailable (Auth0 must re-send; what was
        confirmed before is a duplicate the workers' ledger skips).
        """
        report = QuarantineReport(request_id)
        with _collection_paused():
            if len(body) > SLICE_ABOVE_BYTES:
                totals = self._receive_in_slices(_decoded(body), report)
            else:
                totals = self._publish_all([sort_body(body, self.routes)], report)
        metrics.observe_batch_size(totals.received)
        log_quarantined(report, totals.received)
        logger.info("received batch request_id=%s %s", request_id, totals.summary(), extra=totals.summary())
        return totals

    def _receive_in_slices(self, text: str, report: QuarantineReport) -> BatchCounts:
        totals = BatchCounts()
        settled: metrics.RecordTally = Counter()  # the records whose outcome needs no publish
        seen: set[str] = set()
        accepted: list[_Deferred] = []
        spans = _spans(text)
        while chunk := list(islice(spans, SLICE_RECORDS)):
            first = totals.received
            records, source = _slice(text, chunk, first)
            intake = sort_records(records, self.routes, seen, first, source)
            report.add(intake)
            for event in intake.accepted:
                _value, start, end = chunk[event.index - first]
                accepted.append(_Deferred(event.index, start, end, event.queue))
            intake.accepted = []
            settled += metrics.tally_records(intake)
            totals.add(intake)
        chunks = [accepted[at : at + SLICE_RECORDS] for at in range(0, len(accepted), SLICE_RECORDS)]
        published = self._publish_all((_restored(text, chunk) for chunk in chunks or [[]]), report)
        metrics.count_records(settled)
        totals.add_counts(published)
        return totals

    def _publish_all(self, intakes: Iterable[Intake], report: QuarantineReport) -> BatchCounts:
        """Publish each intake, the quarantine message with the last; count what the broker confirmed."""
        totals = BatchCounts()
        for intake, last in _with_last(iter(intakes)):
            if intake.accepted or intake.quarantined or (last and report):
                self._publish(intake, report, last)
            metrics.count_records(metrics.tally_records(intake))
            log_accepted(intake)
            totals.add(intake)
        return totals

    def _publish(self, intake: Intake, report: QuarantineReport, last: bool) -> None:
        request_id = report.request_id
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


class _Deferred(NamedTuple):
    """An accepted event of a large body between reading it through and publishing it: where its text is."""

    position: int  # the record's index in the request
    start: int
    end: int
    queue: str


def _decoded(body: bytes) -> str:
    try:
        return decode_body(body)
    except PayloadError as exc:
        raise UnparsableBody(str(exc), line=exc.line, column=exc.column) from exc


def _spans(text: str) -> Iterator[Span]:
    """iter_spans, its PayloadError answered as UnparsableBody."""
    try:
        yield from iter_spans(text)
    except PayloadError as exc:
        raise UnparsableBody(str(exc), line=exc.line, column=exc.column) from exc


def _restored(text: str, chunk: list[_Deferred]) -> Intake:
    """The accepted events of ``chunk``, parsed again from their text, as an intake to publish."""
    where = {deferred.position: (deferred.start, deferred.end) for deferred in chunk}

    def source(index: int) -> str:
        start, end = where[index]
        return text[start:end]

    intake = Intake(source=source)
    intake.accepted = [
        restore_event(value_at(text, deferred.start), deferred.queue, deferred.position) for deferred in chunk
    ]
    return intake


def _slice(text: str, spans: list[Span], first: int) -> tuple[list[Any], Source]:
    """The records of ``spans`` and where their text is, by request-wide index (``first`` is spans[0]'s)."""

    def source(index: int) -> str:
        _value, start, end = spans[index - first]
        return text[start:end]

    return [value for value, _start, _end in spans], source


def sort_body(body: bytes, routes: RouteTable) -> Intake:
    """The intake of a body handled at once (up to SLICE_ABOVE_BYTES); raises UnparsableBody.

    Through the JSON Lines fast path (app.payload.strict_lines) when it takes the body, else parsed with
    json as parse_body does: the same records, sorted the same way (tests/test_task_body.py).
    """
    strict = strict_lines(body)
    if strict is not None:
        records, texts = strict
        return sort_records(records, routes, source=_texts_source(texts), texts=texts)
    text = _decoded(body)
    records, source = _slice(text, list(_spans(text)), 0)
    return sort_records(records, routes, source=source)


def _texts_source(texts: list[bytes]) -> Source:
    """Where the records of strict_lines are, by index: the text of each (UTF-8, strict_lines checked)."""

    def source(index: int) -> str:
        return texts[index].decode()

    return source


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
