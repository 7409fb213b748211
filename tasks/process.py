"""Run the handlers subscribed to an event: the plain function behind the Celery task."""

from __future__ import annotations

import logging

from tasks.events import Auth0Event
from tasks.handlers import handlers_for

logger = logging.getLogger(__name__)


def process_event(event: Auth0Event) -> list[str]:
    """Run every handler for the event's type in registration order; return the names that ran.

    The first handler to raise stops the run and its exception propagates, so the retry policy sees it.
    """
    ran = []
    for registration in handlers_for(event.type):
        registration.func(event)
        ran.append(registration.name)
    if not ran:
        logger.debug("no handler subscribed to %s (log_id=%s)", event.type, event.log_id)
    return ran
