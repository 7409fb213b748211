"""The alerts' shared state in the database: hits counted per key in a window, and incidents opened,
extended and marked sent (tables alert_hits and alert_incidents), so every worker sees the same."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy import CursorResult, Result, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from kernel.storage.models import AlertHit, AlertIncident, Event
from tasks.builtin.alerts.keys import AlertKey, shift

#: Hits of a key older than this (plus the window) before its newest event are deleted as events arrive;
#: kept longer than the window so that events delivered late still find their neighbours.
HIT_RETENTION = timedelta(days=1)


@dataclass(frozen=True)
class Hit:
    """One event counted against a key; ``type`` comes from the event archive when it is there."""

    log_id: str
    occurred_at: datetime
    type: str | None = None


@dataclass(frozen=True)
class WindowCount:
    """The most events of a key within one window that contains the current event, and which they are."""

    count: int
    hits: tuple[Hit, ...]


@dataclass(frozen=True)
class IncidentState:
    """A snapshot of an alert_incidents row."""

    key: str
    opened_by: str
    opened_at: datetime
    last_seen_at: datetime
    events: int
    alert_sent_at: datetime | None

    @classmethod
    def of(cls, row: AlertIncident) -> IncidentState:
        """Copy the row's values."""
        return cls(row.key, row.opened_by, row.opened_at, row.last_seen_at, row.events, row.alert_sent_at)


@dataclass(frozen=True)
class IncidentDecision:
    """What one event did to its key's incident.

    ``opened``: this event opened the current incident (also on its retry or redelivery, which must still
    send an unsent alert); ``extended``: the event belongs to an open incident; ``none``: no incident is
    open and the threshold is not reached; ``stale``: the event is older than the key's latest incident by
    more than a window, so it neither extends nor opens one.
    """

    action: Literal["opened", "extended", "none", "stale"]
    incident: IncidentState | None = None

    @property
    def should_alert(self) -> bool:
        """Whether this event must (still) send the incident's alert."""
        return self.action == "opened" and self.incident is not None and self.incident.alert_sent_at is None


@dataclass(frozen=True)
class Alert:
    """One incident an event opened, with what the message says about it."""

    key: AlertKey
    threshold: int
    window: WindowCount
    incident: IncidentState


def _rowcount(result: Result[Any]) -> int:
    # UPDATE and DELETE return a CursorResult (with its rowcount), which Session.execute's annotation hides.
    return int(cast("CursorResult[Any]", result).rowcount)


def _insert(session: Session, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def record_hit(session: Session, key: str, log_id: str, occurred_at: datetime) -> bool:
    """Count the event against ``key``; return False when (key, log_id) was already counted."""
    # RETURNING, not rowcount: SQLAlchemy does not keep an INSERT's rowcount (it reads -1 on psycopg).
    inserted = session.scalar(
        _insert(session, AlertHit)
        .values(key=key, log_id=log_id, occurred_at=occurred_at)
        .on_conflict_do_nothing(index_elements=["key", "log_id"])
        .returning(AlertHit.log_id)
    )
    return inserted is not None


def prune_hits(session: Session, before: datetime, key: str | None = None) -> int:
    """Delete hits that occurred before ``before`` (of one key, or of all keys); return how many."""
    statement = delete(AlertHit).where(AlertHit.occurred_at < before)
    if key is not None:
        statement = statement.where(AlertHit.key == key)
    result = session.execute(statement)
    return _rowcount(result)


def count_in_window(session: Session, key: str, at: datetime, window: timedelta) -> WindowCount:
    """Return the most hits of ``key`` that fit in one ``window`` holding ``at``, and which they are.

    Sliding over the hits rather than looking back from ``at`` only: Auth0 does not deliver in order, so
    the last of a burst to arrive may be the earliest in time.
    """
    rows = session.execute(
        select(AlertHit.log_id, AlertHit.occurred_at, Event.type)
        .outerjoin(Event, Event.log_id == AlertHit.log_id)
        .where(AlertHit.key == key, AlertHit.occurred_at.between(shift(at, -window), shift(at, window)))
        .order_by(AlertHit.occurred_at, AlertHit.log_id)
    ).all()
    hits = [Hit(log_id, occurred_at, type_) for log_id, occurred_at, type_ in rows]
    times = [hit.occurred_at for hit in hits]
    best: tuple[int, int] = (0, 0)
    for start, first in enumerate(times):
        if first > at:
            break
        end = bisect.bisect_right(times, shift(first, window))
        if end - start >= best[1] - best[0]:
            best = (start, end)
    return WindowCount(best[1] - best[0], tuple(hits[best[0] : best[1]]))


def open_or_extend_incident(
    session: Session,
    key: str,
    log_id: str,
    at: datetime,
    window: timedelta,
    *,
    reached: bool,
    count: int = 1,
    new_hit: bool = True,
) -> IncidentDecision:
    """Decide what the event at ``at`` does to ``key``'s incident, holding the incident row's lock.

    The incident is open for events from a window before it opened to a window after its last event: such
    an event extends it (last_seen_at, and events unless ``new_hit`` is False because this log_id was
    already counted). Otherwise, when ``reached`` (the threshold), the event opens a new incident with
    ``count`` events and alert_sent_at NULL. The incident's opener, seen again, is "opened" once more, so its
    retry still sends an alert that was not sent. Concurrent openers are serialized by the primary key (an
    insert that conflicts waits for the other transaction) and the row lock (SELECT … FOR UPDATE); SQLite
    runs the whole transaction under BEGIN IMMEDIATE.
    """
    for _ in range(2):
        row = session.get(AlertIncident, key, with_for_update=True, populate_existing=True)
        if row is not None:
            return _decide(row, log_id, at, window, reached, count, new_hit)
        if not reached:
            return IncidentDecision("none")
        inserted = session.scalar(
            _insert(session, AlertIncident)
            .values(
                key=key, opened_by=log_id, opened_at=at, last_seen_at=at, events=count, alert_sent_at=None
            )
            .on_conflict_do_nothing(index_elements=["key"])
            .returning(AlertIncident.key)
        )
        if inserted is not None:
            return IncidentDecision("opened", IncidentState(key, log_id, at, at, count, None))
        # Another worker opened it since our read; its row is committed now: decide against it.
    raise RuntimeError(f"alert incident {key!r} vanished while it was being opened")  # rows are never deleted


def _decide(
    row: AlertIncident, log_id: str, at: datetime, window: timedelta, reached: bool, count: int, new_hit: bool
) -> IncidentDecision:
    if row.opened_by == log_id:
        return IncidentDecision("opened", IncidentState.of(row))
    if shift(row.opened_at, -window) <= at <= shift(row.last_seen_at, window):
        row.last_seen_at = max(row.last_seen_at, at)
        if new_hit:
            row.events += 1
        return IncidentDecision("extended", IncidentState.of(row))
    if at < shift(row.opened_at, -window):
        return IncidentDecision("stale", IncidentState.of(row))
    if not reached:
        return IncidentDecision("none", IncidentState.of(row))
    row.opened_by, row.opened_at, row.last_seen_at = log_id, at, at
    row.events, row.alert_sent_at = count, None
    return IncidentDecision("opened", IncidentState.of(row))


def mark_alert_sent(session: Session, keys: Iterable[str], log_id: str, now: datetime) -> int:
    """Record that the alert of the incidents ``log_id`` opened was delivered; return how many rows."""
    result = session.execute(
        update(AlertIncident)
        .where(
            AlertIncident.key.in_(list(keys)),
            AlertIncident.opened_by == log_id,
            AlertIncident.alert_sent_at.is_(None),
        )
        .values(alert_sent_at=now)
    )
    return _rowcount(result)
