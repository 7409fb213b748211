"""The alert's message (Slack-compatible blocks) and its delivery to the webhook."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from kernel.events import Auth0Event
from kernel.retry_after import retry_after_seconds
from tasks.builtin.alerts.incidents import Alert
from tasks.builtin.alerts.keys import event_time
from tasks.handlers import PermanentError, RetryableError

#: How many log_ids one alert lists.
MAX_LISTED_LOG_IDS = 10
TRANSIENT_STATUSES = frozenset({408, 429})
USER_AGENT = "auth0-events-alerts"


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
