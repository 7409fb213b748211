"""Which alert keys an event counts against: its IP, its user, or a serious code's subject."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from kernel.events import Auth0Event
from kernel.storage.models import utcnow

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
_FIRST, _LAST = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)


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
