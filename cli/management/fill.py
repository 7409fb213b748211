"""Fill a range of the tenant's logs through the pipeline: confirmed pages, then their checkpoint.

Each page goes through the receiver's filter, routing and confirmed publishing, its events tagged with
where they came from (``source``: backfill); only then is its last log_id saved as the tenant's checkpoint,
so a run stopped at any point (Ctrl-C, SIGKILL, a failure) resumes with the first page that was not
confirmed. Events the ledger already has are not published again. `auth0-events backfill` and the stream
watcher both fill through run_backfill, with the same checkpoint of the tenant.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, Protocol

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.intake import Intake, sort_records
from app.publisher import PublishError
from cli.management.api import BackfillError, NoCheckpoint, ServiceUnavailable
from cli.management.logs import (
    MAX_TAKE,
    Checkpoint,
    Log,
    LogsClient,
    iso_millis,
    last_checkpoint,
    log_date,
    log_id_of,
)
from kernel.routing import RouteTable
from kernel.storage.db import session_scope
from kernel.storage.explain import error_reason, safe_url
from kernel.storage.models import BackfillCheckpoint, Event, utcnow
from kernel.wire import BACKFILL

StopReason = Literal["end of logs", "--max-pages", "--until", "no logs at or after --since"]
#: Which events the ledger has that a fill skips: processed ones (backfill), or any it received (watcher).
Skip = Literal["processed", "received"]


# -- checkpoints and the ledger ------------------------------------------------------------------------


def load_checkpoint(session: Session, domain: str) -> Checkpoint | None:
    """The checkpoint saved for ``domain``, if any."""
    row = session.get(BackfillCheckpoint, domain)
    return None if row is None else Checkpoint(row.log_id, row.log_date)


def save_checkpoint(session: Session, domain: str, checkpoint: Checkpoint, now: datetime) -> None:
    """Record ``checkpoint`` as where ``domain``'s backfill stands."""
    row = session.get(BackfillCheckpoint, domain)
    if row is None:
        session.add(
            BackfillCheckpoint(
                domain=domain, log_id=checkpoint.log_id, log_date=checkpoint.date, updated_at=now
            )
        )
    else:
        row.log_id, row.log_date, row.updated_at = checkpoint.log_id, checkpoint.date, now


def known_log_ids(session: Session, log_ids: Collection[str], skip: Skip = "processed") -> set[str]:
    """Those of ``log_ids`` whose event the ledger records as processed (or, for ``received``, at all)."""
    if not log_ids:
        return set()
    statement = select(Event.log_id).where(Event.log_id.in_(log_ids))
    if skip == "processed":
        statement = statement.where(Event.state == "processed")
    return set(session.scalars(statement))


class CheckpointStore:
    """Checkpoints and ledger look-ups for one tenant in DATABASE_URL; database failures are explained.

    ``skip``: which events of the ledger a fill leaves out (processed ones, or any it received).
    """

    def __init__(self, database_url: str, domain: str, skip: Skip = "processed") -> None:
        self.database_url = database_url
        self.domain = domain
        self.skip: Skip = skip

    def load(self) -> Checkpoint | None:
        """The tenant's saved checkpoint, if any."""
        with (
            database_errors("reading the checkpoint", self.database_url),
            session_scope(self.database_url, read_only=True) as session,
        ):
            return load_checkpoint(session, self.domain)

    def save(self, checkpoint: Checkpoint) -> None:
        """Save the tenant's checkpoint (committed when this returns)."""
        with (
            database_errors("saving the checkpoint", self.database_url),
            session_scope(self.database_url) as session,
        ):
            save_checkpoint(session, self.domain, checkpoint, utcnow())

    def known(self, log_ids: Collection[str]) -> set[str]:
        """Those of ``log_ids`` the ledger has as ``skip`` says: a fill does not publish them again."""
        with (
            database_errors("reading the ledger", self.database_url),
            session_scope(self.database_url, read_only=True) as session,
        ):
            return known_log_ids(session, log_ids, self.skip)


@contextmanager
def database_errors(doing: str, url: str) -> Iterator[None]:
    """Turn SQLAlchemy errors into ServiceUnavailable naming the database (without its password)."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise ServiceUnavailable(
            f"{doing} in {safe_url(url)} failed: {error_reason(exc)} (is the database reachable and "
            "migrated? `auth0-events db upgrade`)"
        ) from exc


# -- the run -------------------------------------------------------------------------------------------


class Publisher(Protocol):
    """What publishes a page's events and returns once the broker confirmed them (EventPublisher)."""

    def publish(self, intake: Intake, request_id: str) -> None:
        """Publish and wait for the broker's confirms; raise PublishError otherwise.

        Each accepted event's ``source`` travels in its task message to the archive.
        """


class Store(Protocol):
    """Where checkpoints are kept and the ledger is asked (CheckpointStore)."""

    def save(self, checkpoint: Checkpoint) -> None:
        """Save the tenant's checkpoint."""

    def known(self, log_ids: Collection[str]) -> set[str]:
        """Those of ``log_ids`` the ledger has already (not published again)."""


@dataclass(frozen=True)
class Start:
    """Where a run starts: after a log_id, or at the first log dated at or after ``since``."""

    after_log_id: str | None = None
    since: datetime | None = None


@dataclass(frozen=True)
class Limits:
    """When a run stops before the end of the logs."""

    max_pages: int | None = None
    until: datetime | None = None  # the first log dated at or after it is not processed
    stop_short: bool = False  # a page shorter than asked for is the last (the watcher's steady state)


@dataclass
class Summary:
    """What a run did; logs_read = published + filtered + quarantined + already_processed + duplicates."""

    pages: int = 0
    logs_read: int = 0
    published: int = 0
    filtered: int = 0
    quarantined: int = 0
    already_processed: int = 0
    duplicates: int = 0
    checkpoint: Checkpoint | None = None
    stopped: StopReason | None = None
    started_at: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.started_at

    def rate(self) -> float:
        """Logs read per second so far."""
        return self.logs_read / self.elapsed if self.elapsed > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready values."""
        checkpoint = self.checkpoint
        return {
            "pages": self.pages,
            "logs_read": self.logs_read,
            "published": self.published,
            "filtered": self.filtered,
            "quarantined": self.quarantined,
            "already_processed": self.already_processed,
            "duplicates": self.duplicates,
            "checkpoint": None if checkpoint is None else checkpoint.log_id,
            "checkpoint_date": None
            if checkpoint is None or checkpoint.date is None
            else iso_millis(checkpoint.date),
            "stopped": self.stopped,
            "seconds": round(self.elapsed, 3),
            "logs_per_second": round(self.rate(), 1),
        }


def resolve_start(from_log_id: str | None, since: datetime | None, saved: Checkpoint | None) -> Start:
    """The start the operator asked for, or the saved checkpoint; raises NoCheckpoint when there is none."""
    if from_log_id is not None and since is not None:
        raise BackfillError("--from and --since exclude each other: give one")
    if from_log_id is not None or since is not None:
        return Start(from_log_id, since)
    if saved is None:
        raise NoCheckpoint(
            "no checkpoint is saved for this tenant yet: start with --since (e.g. --since 2026-11-20T00:00Z) "
            "or --from LOG_ID"
        )
    return Start(after_log_id=saved.log_id)


def log_pages(
    client: LogsClient, start: Start, take: int = MAX_TAKE, stop_short: bool = False
) -> Iterator[list[Log]]:
    """The pages of a run: for ``since``, the first log found by search, then the logs after it."""
    if start.after_log_id is not None:
        yield from client.pages(start.after_log_id, take, stop_short)
        return
    assert start.since is not None
    first = client.first_since(start.since)
    if first is None or not isinstance(first.get("log_id"), str):
        return
    yield [first]
    yield from client.pages(first["log_id"], take, stop_short)


def run_backfill(
    pages: Iterable[list[Log]],
    routes: RouteTable,
    publisher: Publisher,
    store: Store,
    limits: Limits | None = None,
    on_page: Callable[[Summary], None] | None = None,
    run_id: str = "backfill",
    after_log_id: str | None = None,
) -> Summary:
    """Process ``pages`` in order until an empty one (or a limit); return what was done.

    Each page is published and confirmed before its checkpoint is saved. A log repeated from the previous
    page, or ``after_log_id`` itself, counts as a duplicate (should Auth0's ``from`` ever be inclusive).
    Raises ServiceUnavailable when Auth0, the broker or the database fails, saying where the checkpoint
    stays, and AccessDenied or BackfillError when Auth0 refuses.
    """
    run = _Run(routes, publisher, store, limits or Limits(), on_page, run_id)
    run.previous = {after_log_id} if after_log_id else set()
    try:
        run.through(pages)
    except ServiceUnavailable as exc:
        raise type(exc)(f"{exc}; {resume_hint(run.summary.checkpoint)}") from exc
    except BackfillError as exc:
        if run.summary.pages == 0:
            raise
        raise type(exc)(f"{exc}; {resume_hint(run.summary.checkpoint)}") from exc
    return run.summary


@dataclass
class _Run:
    """One run's collaborators and state: the summary so far and the previous page's log_ids."""

    routes: RouteTable
    publisher: Publisher
    store: Store
    limits: Limits
    on_page: Callable[[Summary], None] | None
    run_id: str
    summary: Summary = field(default_factory=lambda: Summary(stopped="no logs at or after --since"))
    previous: set[str] = field(default_factory=set)

    def through(self, pages: Iterable[list[Log]]) -> None:
        """Process pages until an empty one or a limit."""
        for logs in pages:
            if not logs:
                self.summary.stopped = "end of logs"
                return
            kept, reached_until = before(logs, self.limits.until)
            if kept:
                self.page(kept)
            max_pages = self.limits.max_pages
            if reached_until or (max_pages is not None and self.summary.pages >= max_pages):
                self.summary.stopped = "--until" if reached_until else "--max-pages"
                return

    def page(self, logs: list[Log]) -> None:
        """Publish one page's events, confirmed, then save its checkpoint."""
        summary = self.summary
        fresh = [log for log in logs if log_id_of(log) not in self.previous]
        intake = sort_records(fresh, self.routes)
        done = self.store.known([event.log_id for event in intake.accepted])
        intake.accepted = [
            replace(event, source=BACKFILL) for event in intake.accepted if event.log_id not in done
        ]
        if intake.accepted or intake.quarantined:
            try:
                self.publisher.publish(intake, f"{self.run_id}-p{summary.pages + 1}")
            except PublishError as exc:
                raise ServiceUnavailable(
                    f"the broker did not confirm page {summary.pages + 1}: {exc}"
                ) from exc
        checkpoint = last_checkpoint(logs)
        if checkpoint is not None:
            self.store.save(checkpoint)
            summary.checkpoint = checkpoint
        self._count(logs, fresh, intake, len(done))
        self.previous = {log_id for log in logs if (log_id := log_id_of(log)) is not None}
        if self.on_page is not None:
            self.on_page(summary)

    def _count(self, logs: list[Log], fresh: list[Log], intake: Intake, already_processed: int) -> None:
        summary = self.summary
        summary.pages += 1
        summary.logs_read += len(logs)
        summary.duplicates += len(logs) - len(fresh) + sum(intake.duplicates.values())
        summary.published += len(intake.accepted)
        summary.filtered += sum(intake.filtered.values())
        summary.quarantined += len(intake.quarantined)
        summary.already_processed += already_processed


def before(logs: list[Log], until: datetime | None) -> tuple[list[Log], bool]:
    """The logs before the first one dated at or after ``until``, and whether there was one."""
    if until is None:
        return logs, False
    for index, log in enumerate(logs):
        date = log_date(log)
        if date is not None and date >= until:
            return logs[:index], True
    return logs, False


def resume_hint(checkpoint: Checkpoint | None) -> str:
    """What the operator reads after a failure: where the checkpoint stands and how to go on."""
    if checkpoint is None:
        return "no page of this run was confirmed; run the same command again"
    return f"the checkpoint stays at log_id {checkpoint.log_id}: run `auth0-events backfill` again to resume"
