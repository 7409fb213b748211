"""Search the event archive: filters, newest-first keyset pagination, and JSON-safe event dicts.

Pages are ordered newest first by (date desc, id desc), with the events that carry no date (Auth0 sent
none, or one that did not parse) after every dated one, newest stored first. ``id`` is unique, so the
order is total even when dates tie, and the cursor of a page is the (date, id) of its last event: the
next page holds what sorts strictly after it. An event stored while a client pages through the results
therefore never makes another one repeat or go missing; it shows up in that walk only if it sorts after
the page the client is at (an undated one, say).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, or_, select
from sqlalchemy.orm import Session

from kernel.events import storable_text
from kernel.storage.models import Event, fit

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
STATES = ("received", "processing", "retrying", "processed", "dead_lettered")
NEWEST_FIRST = (Event.date.desc().nulls_last(), Event.id.desc())
EVENTS = cast(Table, Event.__table__)
#: events.id is an Integer: PostgreSQL's holds at most 2**31 - 1, and refuses to compare with more.
MAX_EVENT_ID = 2**31 - 1
#: A cursor this page issues is under 70 characters; a longer one is refused before it is decoded.
MAX_CURSOR_LENGTH = 128


class InvalidQuery(ValueError):
    """Raised when a search parameter has a value the archive cannot search with; names the parameter."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


@dataclass(frozen=True)
class EventFilters:
    """What to search for; every given filter must match. Dates compare with the event's ``date``.

    ``since`` is inclusive and ``until`` exclusive, so consecutive windows neither overlap nor leave gaps;
    events without a date match neither. ``after`` is the cursor of the previous page.
    Raises InvalidQuery when the limit, the state, the window or the cursor cannot be searched with.
    """

    types: tuple[str, ...] = ()
    user: str | None = None
    ip: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    state: str | None = None
    limit: int = DEFAULT_LIMIT
    after: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidQuery("limit", f"must be between 1 and {MAX_LIMIT}, not {self.limit}")
        if self.state is not None and self.state not in STATES:
            raise InvalidQuery("state", f"must be one of {', '.join(STATES)}, not {self.state!r}")
        if self.since is not None and self.until is not None and _utc(self.since) >= _utc(self.until):
            raise InvalidQuery("until", "must be later than since")
        for parameter, value in (("user", self.user), ("ip", self.ip), *(("type", t) for t in self.types)):
            if value is not None:
                check_text(value, parameter)
        if self.after is not None:
            decode_cursor(self.after)


@dataclass(frozen=True)
class Page:
    """One page of search results, newest first; ``next_cursor`` is None on the last page."""

    events: list[Event]
    next_cursor: str | None


def search_events(session: Session, filters: EventFilters) -> Page:
    """Return the page of events matching ``filters`` that follows the cursor ``filters.after``."""
    statement = select(Event).where(*_conditions(filters)).order_by(*NEWEST_FIRST)
    if filters.after is not None:
        statement = statement.where(_sorts_after(*decode_cursor(filters.after)))
    # One row more than asked tells whether another page exists without counting the matches.
    rows = list(session.scalars(statement.limit(filters.limit + 1)))
    events = rows[: filters.limit]
    more = len(rows) > filters.limit
    return Page(events, encode_cursor(events[-1]) if more else None)


def get_event(session: Session, log_id: str) -> Event | None:
    """Return the archived event with this ``log_id``, or None when none is stored.

    Raises InvalidQuery naming log_id when it holds a character no stored event holds.
    """
    check_text(log_id, "log_id")
    return session.scalar(select(Event).where(Event.log_id == log_id))


def check_text(value: str, parameter: str) -> None:
    """Raise InvalidQuery naming ``parameter`` when ``value`` holds a NUL or a lone surrogate.

    The workers store such characters as U+FFFD, so nothing stored holds them, and PostgreSQL refuses
    a NUL even in a query.
    """
    if storable_text(value) != value:
        raise InvalidQuery(
            parameter, "holds a character no stored event holds (NUL or a lone surrogate; stored as U+FFFD)"
        )


def event_to_dict(event: Event, include_raw: bool = False) -> dict[str, Any]:
    """Return the event as JSON-safe values, times in ISO 8601 UTC; the raw record only when asked."""
    result: dict[str, Any] = {
        "log_id": event.log_id,
        "type": event.type,
        "date": iso(event.date),
        "user_id": event.user_id,
        "user_name": event.user_name,
        "client_id": event.client_id,
        "ip": event.ip,
        "state": event.state,
        "attempts": event.attempts,
        "last_error": event.last_error,
        "received_at": iso(event.received_at),
        "source": event.source,
        "updated_at": iso(event.updated_at),
    }
    if include_raw:
        result["raw"] = event.raw
    return result


def iso(value: datetime | None) -> str | None:
    """Format a stored (UTC) time as ISO 8601 with a ``Z``, as Auth0 writes its dates."""
    if value is None:
        return None
    return _utc(value).isoformat().replace("+00:00", "Z")


def parse_time(value: str, parameter: str) -> datetime:
    """Parse an ISO 8601 date or date-time (``2026-11-20``, ``2026-11-20T00:00Z``); UTC unless it says.

    Raises InvalidQuery naming ``parameter`` when the value is not one.
    """
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidQuery(
            parameter, f"{value!r} is not an ISO 8601 date or time (e.g. 2026-11-20 or 2026-11-20T00:00Z)"
        ) from None
    try:
        return _utc(parsed)
    except OverflowError:
        raise InvalidQuery(parameter, f"{value!r} is before year 1 or after year 9999 in UTC") from None


def parse_types(values: Iterable[str]) -> tuple[str, ...]:
    """Split repeated and comma-separated event codes (``["f,fp", "s"]``) into a tuple of codes."""
    return tuple(code.strip() for value in values for code in value.split(",") if code.strip())


def encode_cursor(event: Event) -> str:
    """Return the opaque cursor of ``event``'s position in the newest-first order."""
    position = [iso(event.date), event.id]
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime | None, int]:
    """Return the (date, id) position in ``cursor``; raises InvalidQuery when no page could have sent it."""
    try:
        if len(cursor) > MAX_CURSOR_LENGTH:  # so that no nesting or size reaches the JSON decoder
            raise ValueError(cursor)
        position = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        date, event_id = position
        if not isinstance(event_id, int) or isinstance(event_id, bool) or not 1 <= event_id <= MAX_EVENT_ID:
            raise TypeError(event_id)
        return (None if date is None else _utc(datetime.fromisoformat(date))), event_id
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError, OverflowError):
        raise InvalidQuery("after", "is not a cursor from a previous page (use the 'next' value)") from None


def _conditions(filters: EventFilters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.types:
        conditions.append(Event.type.in_([fit(EVENTS.c.type, code) for code in filters.types]))
    # The columns hold the first characters of an over-long value: so does the value searched for.
    if filters.user:
        user_id, user_name = fit(EVENTS.c.user_id, filters.user), fit(EVENTS.c.user_name, filters.user)
        conditions.append(or_(Event.user_id == user_id, Event.user_name == user_name))
    if filters.ip:
        conditions.append(Event.ip == fit(EVENTS.c.ip, filters.ip))
    if filters.since is not None:
        conditions.append(Event.date >= _utc(filters.since))
    if filters.until is not None:
        conditions.append(Event.date < _utc(filters.until))
    if filters.state:
        conditions.append(Event.state == filters.state)
    return conditions


def _sorts_after(date: datetime | None, event_id: int) -> ColumnElement[bool]:
    # Mirrors NEWEST_FIRST: older dates, then the same date with a smaller id, then every undated event.
    if date is None:
        return and_(Event.date.is_(None), Event.id < event_id)
    return or_(Event.date < date, and_(Event.date == date, Event.id < event_id), Event.date.is_(None))


def _utc(value: datetime) -> datetime:
    # Naive times are UTC, as the archive stores them (kernel.storage.models.UTCDateTime).
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
