"""The stream's health: which streams point at us, our last delivered event, Auth0's newest log, the gap."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from cli.management.fill import database_errors
from cli.management.logs import Log, LogsClient, iso_millis, log_date, log_id_of
from cli.stream.streams import Stream, StreamsClient, points_at_us, printable
from kernel.routing import RouteTable
from kernel.storage.db import session_scope
from kernel.storage.models import Event, utcnow
from kernel.wire import STREAM


@dataclass(frozen=True)
class Seen:
    """A log: its log_id and date, and when we received it (for our own events)."""

    log_id: str
    date: datetime | None
    received_at: datetime | None = None

    def as_dict(self, now: datetime) -> dict[str, Any]:
        """JSON-ready values; ``age_seconds`` since it was received (ours) or dated (Auth0's)."""
        moment = self.received_at or self.date
        return {
            "log_id": self.log_id,
            "date": iso_millis(self.date) if self.date else None,
            "received_at": iso_millis(self.received_at) if self.received_at else None,
            "age_seconds": None if moment is None else round((now - moment).total_seconds(), 1),
        }


@dataclass(frozen=True)
class Gap:
    """Whether Auth0 has logs we never received: ``open``, and why it says so."""

    open: bool
    reason: str
    seconds: float | None = None  # from our last delivered event to Auth0's newest log


@dataclass
class Health:
    """What `stream status` reports and the watcher exposes as metrics."""

    streams: list[Stream] = field(default_factory=list)
    last_received: Seen | None = None
    newest: Seen | None = None
    gap: Gap = field(default_factory=lambda: Gap(False, "not checked"))
    checked_at: datetime = field(default_factory=utcnow)

    @property
    def ours(self) -> list[Stream]:
        """The streams that deliver to this service."""
        return [stream for stream in self.streams if stream.ours]

    @property
    def healthy(self) -> bool:
        """A stream points at us, every one that does is active, and no gap is open."""
        return bool(self.ours) and all(stream.active for stream in self.ours) and not self.gap.open

    def as_dict(self) -> dict[str, Any]:
        """The `stream status --json` document."""
        now = self.checked_at
        return {
            "checked_at": iso_millis(now),
            "streams": [stream.as_dict() for stream in self.streams],
            "last_received": None if self.last_received is None else self.last_received.as_dict(now),
            "newest_log": None if self.newest is None else self.newest.as_dict(now),
            "gap": {"open": self.gap.open, "reason": self.gap.reason, "seconds": self.gap.seconds},
            "healthy": self.healthy,
        }


def our_streams(client: StreamsClient, stream_id: str) -> list[Stream]:
    """The tenant's streams, those pointing at us marked (AUTH0_EVENTS_STREAM_ID, else by endpoint path)."""
    return [replace(stream, ours=points_at_us(stream, stream_id)) for stream in client.list()]


def last_delivered(database_url: str) -> Seen | None:
    """The event the stream delivered last (by received_at), or None when it never delivered one."""
    with (
        database_errors("reading the archive", database_url),
        session_scope(database_url, read_only=True) as s,
    ):
        row = s.execute(
            select(Event.log_id, Event.date, Event.received_at)
            .where(Event.source == STREAM)
            .order_by(Event.received_at.desc())
            .limit(1)
        ).first()
    return None if row is None else Seen(row.log_id, row.date, row.received_at)


def oldest_log_id(database_url: str) -> str | None:
    """The smallest log_id the ledger holds (Auth0 orders checkpoint reads by log_id), or None."""
    with (
        database_errors("reading the archive", database_url),
        session_scope(database_url, read_only=True) as s,
    ):
        value = s.scalar(select(func.min(Event.log_id)))
    return value if isinstance(value, str) else None


def received(database_url: str, log_id: str) -> bool:
    """Whether the ledger has the event ``log_id`` (in any state)."""
    with (
        database_errors("reading the archive", database_url),
        session_scope(database_url, read_only=True) as s,
    ):
        return s.scalar(select(Event.id).where(Event.log_id == log_id)) is not None


def seen(log: Log | None) -> Seen | None:
    """A Seen of a Management API log entry, None when there is none or it has no log_id."""
    log_id = log_id_of(log)
    return None if log_id is None else Seen(printable(log_id, 128), log_date(log))


def judge_gap(
    newest: Log | None, last: Seen | None, has_it: bool, routes: RouteTable, grace: float, now: datetime
) -> Gap:
    """Whether Auth0's newest log says a gap is open: older than the grace, routed, and not in the ledger."""
    entry = seen(newest)
    if newest is None or entry is None:
        return Gap(False, "the tenant has no logs")
    seconds = None
    if entry.date is not None and last is not None and last.date is not None:
        seconds = max(0.0, round((entry.date - last.date).total_seconds(), 1))
    if has_it:
        return Gap(False, "the newest log was received", 0.0)
    if entry.date is None or entry.date > now - timedelta(seconds=grace):
        return Gap(False, f"the newest log is within AUTH0_EVENTS_WATCH_GRACE ({grace:g} s)", seconds)
    event_type = newest.get("type")
    if not isinstance(event_type, str) or routes.queue_for(event_type) is None:
        return Gap(
            False, "the newest log's type is filtered out by AUTH0_EVENTS_ROUTES: cannot tell", seconds
        )
    return Gap(True, "Auth0's newest log is older than the grace and was never received", seconds)


def check_health(
    streams: StreamsClient,
    logs: LogsClient,
    database_url: str,
    routes: RouteTable,
    stream_id: str,
    grace: float,
) -> Health:
    """Everything `stream status` shows: four look-ups (streams, newest log, our last, the ledger)."""
    now = utcnow()
    listed = our_streams(streams, stream_id)
    newest = logs.newest()
    last = last_delivered(database_url)
    entry = seen(newest)
    has_it = entry is not None and received(database_url, entry.log_id)
    gap = judge_gap(newest, last, has_it, routes, grace, now)
    return Health(listed, last, entry, gap, now)
