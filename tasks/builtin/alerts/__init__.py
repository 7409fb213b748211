"""Built-in handler ``alerts``: suspicious activity raises one Slack-compatible webhook alert per incident.

Failed logins (f, fp, fu) alert when AUTH0_EVENTS_ALERT_THRESHOLD of them from one IP, or against one user,
fall within AUTH0_EVENTS_ALERT_WINDOW seconds of each other (measured on the events' own ``date``). Blocked
accounts and IPs, breached passwords and refresh-token reuse alert at once. An incident is an alert key
(``ip:1.2.3.4``, ``user:auth0|123``, ``pwd_leak:user:auth0|123``) whose events keep arriving within the
window of the previous one; it alerts once, when it opens. The state lives in the database (tables
alert_hits and alert_incidents), so every worker shares it.

The decisions are plain functions, one module per part: which keys an event counts against (keys.py), the
hits and incidents in the database (incidents.py), the message and its delivery (message.py). They are
composed here by alert_for_event; the registered handler only reads the settings and calls it. The handler
stays in this module, so its registered name (tasks.builtin.alerts.alert_on_suspicious_event, which the
ledger records) is unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from kernel.events import Auth0Event
from kernel.settings import Settings, get_settings
from kernel.storage.db import session_scope
from kernel.storage.models import utcnow
from tasks.builtin.alerts.incidents import (
    HIT_RETENTION,
    Alert,
    Hit,
    IncidentDecision,
    IncidentState,
    WindowCount,
    count_in_window,
    mark_alert_sent,
    open_or_extend_incident,
    prune_hits,
    record_hit,
)
from tasks.builtin.alerts.keys import (
    IMMEDIATE_CODES,
    MAX_KEY_LENGTH,
    WINDOW_CODES,
    AlertKey,
    alert_keys,
    event_time,
    shift,
)
from tasks.builtin.alerts.message import (
    MAX_LISTED_LOG_IDS,
    TRANSIENT_STATUSES,
    USER_AGENT,
    build_alert_message,
    send_alert,
)
from tasks.handlers import handles

# The sections' names, importable from here as before the package was split.
__all__ = [
    "HANDLER_NAME",
    "HIT_RETENTION",
    "IMMEDIATE_CODES",
    "MAX_KEY_LENGTH",
    "MAX_LISTED_LOG_IDS",
    "TRANSIENT_STATUSES",
    "USER_AGENT",
    "WINDOW_CODES",
    "Alert",
    "AlertConfig",
    "AlertKey",
    "Hit",
    "IncidentDecision",
    "IncidentState",
    "WindowCount",
    "alert_for_event",
    "alert_keys",
    "alert_on_suspicious_event",
    "build_alert_message",
    "count_in_window",
    "evaluate_event",
    "event_time",
    "mark_alert_sent",
    "open_or_extend_incident",
    "prune_hits",
    "record_hit",
    "send_alert",
    "shift",
]

logger = logging.getLogger(__name__)


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
