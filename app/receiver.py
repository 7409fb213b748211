"""The receiving pipeline behind POST /webhooks/auth0: authenticate, parse, sort, publish."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from app import metrics
from app.auth import is_authorized
from app.errors import BrokerUnavailable, Unauthorized, UnparsableBody
from app.intake import BatchCounts, Intake, sort_records
from app.payload import PayloadError, decode_body, iter_records
from app.publisher import EventPublisher, PublishError
from tasks.routing import RouteTable
from tasks.settings import Settings

logger = logging.getLogger(__name__)

#: Bodies larger than this are handled in slices of SLICE_RECORDS records, which keeps a receiver process
#: near its usual memory even for a body at AUTH0_EVENTS_MAX_BODY_BYTES (BENCHMARKS.md, memory).
SLICE_ABOVE_BYTES = 1024 * 1024
SLICE_RECORDS = 1000


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
        objects at once. Raises UnparsableBody (nothing is published) or BrokerUnavailable (Auth0 must
        re-send; what was confirmed before is a duplicate the workers' ledger skips).
        """
        totals = BatchCounts()
        seen: set[str] = set()
        for records in self._record_slices(body):
            intake = sort_records(records, self.routes, seen, first_index=totals.received)
            if intake.accepted or intake.quarantined:
                self._publish(intake, request_id)
            metrics.count_records(intake)
            log_intake(intake, request_id)
            totals.add(intake)
        metrics.observe_batch_size(totals.received)
        logger.info("received batch request_id=%s %s", request_id, totals.summary(), extra=totals.summary())
        return totals

    def _record_slices(self, body: bytes) -> Iterator[list[Any]]:
        try:
            text = decode_body(body)
            if len(body) <= SLICE_ABOVE_BYTES:
                yield list(iter_records(text))
                return
            for _ in iter_records(text):
                pass
        except PayloadError as exc:
            raise UnparsableBody(str(exc), line=exc.line, column=exc.column) from exc
        records = iter_records(text)
        while chunk := list(islice(records, SLICE_RECORDS)):
            yield chunk

    def _publish(self, intake: Intake, request_id: str) -> None:
        try:
            with metrics.timed_publish():
                self.publisher.publish(intake, request_id)
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


def log_intake(intake: Intake, request_id: str) -> None:
    """One line per accepted event and per quarantined record.

    The accepted line's task_id is the one the worker's lines carry, so one log_id can be followed from
    the request that brought it to every handler that ran for it.
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
    for bad in intake.quarantined:
        logger.warning(
            "quarantined record %d of request_id=%s: %s",
            bad.index,
            request_id,
            bad.reason,
            extra={"reason": bad.reason, "queue": "auth0.quarantine"},
        )
