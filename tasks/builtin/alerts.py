"""Built-in handler ``alerts``: suspicious activity raises one Slack-compatible webhook alert per incident.

Failed logins (f, fp, fu) alert when AUTH0_EVENTS_ALERT_THRESHOLD of them from one IP, or against one user,
fall within AUTH0_EVENTS_ALERT_WINDOW seconds of each other (measured on the events' own ``date``). Blocked
accounts and IPs, breached passwords and refresh-token reuse alert at once. An incident is an alert key
(``ip:1.2.3.4``, ``user:auth0|123``, ``pwd_leak:user:auth0|123``) whose events keep arriving within the
window of the previous one; it alerts once, when it opens. The state lives in the database (tables
alert_hits and alert_incidents), so every worker shares it.

The decisions are plain functions (record_hit, count_in_window, open_or_extend_incident, build_alert_message,
send_alert), composed by alert_for_event; the registered handler only reads the settings and calls it.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

import httpx
from sqlalchemy import CursorResult, Result, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from kernel.events import Auth0Event
from kernel.retry_after import retry_after_seconds
from kernel.settings import Settings, get_settings
from kernel.storage.db import session_scope
from kernel.storage.models import AlertHit, AlertIncident, Event, utcnow
from tasks.handlers import PermanentError, RetryableError, handles

logger = logging.getLogger(__name__)

#: Counted in a sliding window; an incident opens at the threshold.
WINDOW_CODES = ("f", "fp", "fu")
#: Serious on their own: the first event opens an incident.
IMMEDIATE_CODES = (
    "limit_wc",
    "limit_mu",
    "limit_sul",
    "pwd_leak",
    "signup_pwd_leak",
    "reset_pwd_leak",
    "ferrt",
)
#: Codes whose subject is the IP first (a blocked IP), rather than the user.
_IP_FIRST = frozenset({"limit_mu"})
#: alert_hits.key and alert_incidents.key are String(320).
MAX_KEY_LENGTH = 320
#: Hits of a key older than this (plus the window) before its newest event are deleted as events arrive;
#: kept longer than the window so that events delivered late still find their neighbours.
HIT_RETENTION = timedelta(days=1)
#: How many log_ids one alert lists.
MAX_LISTED_LOG_IDS = 10
TRANSIENT_STATUSES = frozenset({408, 429})
_FIRST, _LAST = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
USER_AGENT = "auth0-events-alerts"


@dataclass(frozen=True)
class AlertConfig:
    """Where alerts go and when failures become one."""

    webhook_url: str
    threshold: int
    window: timedelta
    timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertConfig:
        """Read AUTH0_EVENTS_ALERT_WEBHOOK_URL, _THRESHOLD, _WINDOW and _TIMEOUT."""
        return cls(
            webhook_url=settings.alert_webhook_url,
            threshold=settings.alert_threshold,
            window=timedelta(seconds=settings.alert_window_seconds),
            timeout=settings.alert_timeout,
        )


@dataclass(frozen=True)
class AlertKey:
    """One thing an event counts against: an IP or a user (``kind``), or a serious code's subject."""

    key: str
    kind: Literal["ip", "user"]
    subject: str
    #: The serious event code for an immediate key; "" for a failed-login window key.
    code: str = ""

    @property
    def immediate(self) -> bool:
        """Whether one event is enough to open an incident."""
        return bool(self.code)


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


# --- which keys an event counts against -------------------------------------------------------------------


def event_time(event: Auth0Event, now: datetime | None = None) -> datetime:
    """The event's own ``date`` in UTC, or ``now`` when Auth0 sent none (or an unparsable one)."""
    at = event.date or now or utcnow()
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def shift(at: datetime, delta: timedelta) -> datetime:
    """Return ``at + delta``, held within the dates Python can hold (an event may be dated at their edge)."""
    try:
        return at + delta
    except OverflowError:
        return _LAST if delta > timedelta(0) else _FIRST


def alert_keys(event: Auth0Event) -> list[AlertKey]:
    """Return the keys the event counts against, sorted (the order incident rows are locked in).

    A failed login counts against its IP and its user (user_id, else user_name); a serious event against
    ``<code>:user:…`` (``<code>:ip:…`` for limit_mu, and when no user is known). Empty for other codes.
    """
    user = event.user_id or event.user_name
    if event.type in WINDOW_CODES:
        keys = []
        if event.ip:
            keys.append(AlertKey(_key("ip:", event.ip), "ip", event.ip))
        if user:
            keys.append(AlertKey(_key("user:", user), "user", user))
        return sorted(keys, key=lambda k: k.key)
    if event.type in IMMEDIATE_CODES:
        subjects: list[tuple[Literal["ip", "user"], str]] = [("user", user), ("ip", event.ip)]
        if event.type in _IP_FIRST:
            subjects.reverse()
        for kind, subject in subjects:
            if subject:
                return [AlertKey(_key(f"{event.type}:{kind}:", subject), kind, subject, event.type)]
        # Nothing to group by: all such events of a window form one incident rather than one alert each.
        return [AlertKey(f"{event.type}:unknown", "user", "", event.type)]
    return []


def _key(prefix: str, subject: str) -> str:
    key = prefix + subject
    if len(key) <= MAX_KEY_LENGTH:
        return key
    return f"{prefix}sha256:{hashlib.sha256(subject.encode()).hexdigest()}"


# --- the shared state: hits and incidents ------------------------------------------------------------------


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


def evaluate_event(event: Auth0Event, config: AlertConfig, url: str | None = None) -> list[Alert]:
    """Count the event against its keys and return the alerts it must send (opened, still unsent).

    Two transactions: the hits commit before any key is counted, so whichever worker counts last sees
    every hit of a burst, and a burst processed by several workers at once cannot go unnoticed.
    """
    keys = alert_keys(event)
    if not keys:
        return []
    at = event_time(event)
    with session_scope(url) as session:
        new_hits = {k.key: record_hit(session, k.key, event.log_id, at) for k in keys}
        for k in keys:
            prune_hits(session, shift(at, -(config.window + HIT_RETENTION)), key=k.key)
    alerts = []
    with session_scope(url) as session:
        for k in keys:  # sorted, so two events lock shared incident rows in the same order
            threshold = 1 if k.immediate else config.threshold
            window = count_in_window(session, k.key, at, config.window)
            decision = open_or_extend_incident(
                session,
                k.key,
                event.log_id,
                at,
                config.window,
                reached=window.count >= threshold,
                count=window.count,
                new_hit=new_hits[k.key],
            )
            logger.debug(
                "log_id=%s key=%s: %s (%d in window)", event.log_id, k.key, decision.action, window.count
            )
            if decision.should_alert and decision.incident is not None:
                alerts.append(Alert(k, threshold, window, decision.incident))
    return alerts


def alert_for_event(event: Auth0Event, config: AlertConfig, url: str | None = None) -> dict[str, Any] | None:
    """Evaluate the event and send the one alert for the incidents it opened; return the message sent.

    Raises RetryableError or PermanentError from send_alert; alert_sent_at stays NULL until the POST
    succeeded, so the retry of this event sends it. A crash between the POST and that mark sends it twice.
    """
    alerts = evaluate_event(event, config, url)
    if not alerts:
        return None
    message = build_alert_message(event, alerts, config.window)
    send_alert(config.webhook_url, message, config.timeout)
    with session_scope(url) as session:
        mark_alert_sent(session, [alert.key.key for alert in alerts], event.log_id, utcnow())
    logger.info(
        "sent alert for log_id=%s type=%s: %s",
        event.log_id,
        event.type,
        ", ".join(alert.key.key for alert in alerts),
        extra={"log_id": event.log_id, "event_type": event.type},
    )
    return message


# --- the message and its delivery --------------------------------------------------------------------------


def build_alert_message(event: Auth0Event, alerts: Sequence[Alert], window: timedelta) -> dict[str, Any]:
    """Return a Slack-compatible body: ``text`` (the summary, also the notification) and ``blocks``.

    Everything Auth0 sent is escaped (&, <, >), so a user name cannot mention ``<!channel>`` or forge links.
    """
    headlines = [_headline(event, alert, window) for alert in alerts]
    where = _where(event)
    text = "Auth0 alert: " + "; ".join(headlines) + (f" ({where})" if where else "")
    log_ids = _log_ids(event, alerts)
    codes = sorted({hit.type for alert in alerts for hit in alert.window.hits if hit.type} | {event.type})
    shown = ", ".join(f"`{_esc(log_id)}`" for log_id in log_ids[:MAX_LISTED_LOG_IDS])
    more = len(log_ids) - MAX_LISTED_LOG_IDS
    context = [
        f"*codes:* {', '.join(_esc(code) for code in codes)}",
        f"*log_ids:* {shown}" + (f" and {more} more" if more > 0 else ""),
        f"*incident:* {', '.join(_esc(alert.key.key) for alert in alerts)}",
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _header(event, alerts)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(f"*{h}*" for h in headlines)}},
        {"type": "section", "fields": _fields(event, alerts, window)},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": line} for line in context]},
    ]
    return {"text": text, "blocks": blocks}


def _headline(event: Auth0Event, alert: Alert, window: timedelta) -> str:
    key = alert.key
    if not key.immediate:
        target = f"from IP {_esc(key.subject)}" if key.kind == "ip" else f"against user {_esc(key.subject)}"
        return f"{alert.window.count} failed logins {target} within {_duration(window)}"
    name = event.event_type.name
    about = f"for {'IP' if key.kind == 'ip' else 'user'} {_esc(key.subject)}" if key.subject else ""
    return " ".join(part for part in (f"{_esc(name)} ({_esc(key.code)})", about) if part)


def _header(event: Auth0Event, alerts: Sequence[Alert]) -> str:
    serious = [alert.key.code for alert in alerts if alert.key.immediate]
    title = f"Auth0: {event.event_type.name}" if serious else "Auth0: repeated failed logins"
    return title[:150]  # Slack's limit for a header


def _where(event: Auth0Event) -> str:
    tenant = _text(event.data.get("tenant_name")) or _text(event.data.get("hostname"))
    client = event.client_name or event.client_id
    parts = [f"tenant {_esc(tenant)}" if tenant else "", f"client {_esc(client)}" if client else ""]
    return ", ".join(part for part in parts if part)


def _fields(event: Auth0Event, alerts: Sequence[Alert], window: timedelta) -> list[dict[str, str]]:
    user = " ".join(
        part for part in (event.user_id, f"({event.user_name})" if event.user_name else "") if part
    )
    tenant = _text(event.data.get("tenant_name")) or _text(event.data.get("hostname"))
    client = " ".join(
        part for part in (event.client_name, f"({event.client_id})" if event.client_id else "") if part
    )
    counted = [alert for alert in alerts if not alert.key.immediate]
    rows = [
        ("Event", f"{event.type}: {event.event_type.name}"),
        ("User", user),
        ("IP", event.ip),
        ("Date", _when(event_time(event))),
        ("Tenant", tenant),
        ("Client", client),
        ("Connection", event.connection),
    ]
    for alert in counted:
        hits = alert.window.hits
        span = f"{_when(hits[0].occurred_at)} to {_when(hits[-1].occurred_at)}" if hits else ""
        rows.append(
            (
                f"Failures ({alert.key.kind})",
                f"{alert.window.count} in {_duration(window)} (threshold {alert.threshold}); {span}",
            )
        )
    # Slack allows ten fields of at most 2000 characters.
    return [{"type": "mrkdwn", "text": f"*{label}*\n{_esc(value)[:1900]}"} for label, value in rows if value][
        :10
    ]


def _log_ids(event: Auth0Event, alerts: Sequence[Alert]) -> list[str]:
    seen = {event.log_id: None}
    for alert in alerts:
        seen.update(dict.fromkeys(hit.log_id for hit in alert.window.hits))
    return list(seen)


def _duration(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _esc(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def send_alert(url: str, message: Mapping[str, Any], timeout: float) -> None:
    """POST the message as JSON; return when the webhook answered 2xx.

    Raises RetryableError on a timeout, a connection failure, 5xx, 408 or 429 (with the Retry-After it
    asked for), PermanentError with the status and an excerpt of the body on any other answer. The URL
    is a secret (a Slack webhook URL is its own credential), so no error names it.
    """
    try:
        response = httpx.post(url, json=dict(message), timeout=timeout, headers={"User-Agent": USER_AGENT})
    except httpx.TimeoutException as exc:
        raise RetryableError(
            f"alert webhook did not answer within {timeout:g}s ({type(exc).__name__})"
        ) from exc
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise PermanentError(f"AUTH0_EVENTS_ALERT_WEBHOOK_URL is not a usable http(s) URL: {exc}") from exc
    except httpx.TransportError as exc:
        raise RetryableError(f"alert webhook unreachable: {type(exc).__name__}: {exc}") from exc
    status = response.status_code
    if 200 <= status < 300:
        return
    excerpt = " ".join(response.text.split())[:200]
    answer = f"alert webhook answered {status}: {excerpt}" if excerpt else f"alert webhook answered {status}"
    if status >= 500 or status in TRANSIENT_STATUSES:
        raise RetryableError(answer, retry_after=retry_after_seconds(response.headers.get("Retry-After")))
    raise PermanentError(answer)


# --- the handler -------------------------------------------------------------------------------------------


@handles(*WINDOW_CODES, *IMMEDIATE_CODES)
def alert_on_suspicious_event(event: Auth0Event) -> None:
    """Send the webhook alert for the incident this event opens, if any (see the module docstring)."""
    settings = get_settings()
    if not settings.alert_webhook_url:
        logger.warning(
            "alerts are loaded but AUTH0_EVENTS_ALERT_WEBHOOK_URL is empty; log_id=%s", event.log_id
        )
        return
    alert_for_event(event, AlertConfig.from_settings(settings))


HANDLER_NAME = f"{__name__}.{alert_on_suspicious_event.__qualname__}"
