"""Built-in handler ``log``: one structured log line per processed event."""

from __future__ import annotations

import logging

from tasks.events import Auth0Event
from tasks.handlers import ALL_EVENTS, handles

logger = logging.getLogger("auth0_events.events")


@handles(ALL_EVENTS)
def log_event(event: Auth0Event) -> None:
    """Log the event's code, description, user, client and IP, keyed by its log_id."""
    fields = {
        "log_id": event.log_id,
        "event_type": event.type,
        "event_name": event.event_type.name,
        "date": event.date.isoformat() if event.date else None,
        "user_id": event.user_id,
        "client_id": event.client_id,
        "ip": event.ip,
    }
    logger.info(
        "auth0 event %s (%s) log_id=%s user_id=%s client_id=%s ip=%s",
        event.type,
        fields["event_name"],
        event.log_id,
        event.user_id,
        event.client_id,
        event.ip,
        extra=fields,
    )
