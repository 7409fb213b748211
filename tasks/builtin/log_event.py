"""Built-in handler ``log``: one structured log line per processed event."""

from __future__ import annotations

import logging

from kernel.events import Auth0Event
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
        "user_name": event.user_name,
        "client_id": event.client_id,
        "ip": event.ip,
    }
    # Who and where go in fields only, so AUTH0_EVENTS_LOG_MASK_PII can mask them.
    logger.info("auth0 event %s (%s)", event.type, fields["event_name"], extra=fields)
