"""A handler failing with the event's personal data in its error texts and log lines (test_pii_masking).

Loaded by the masking tests' worker through AUTH0_EVENTS_PLUGINS. It acts only on records whose
``details.pii_action`` is ``leak``: the first attempt fails as a database does, with the user and the IP
in the statement's parameters; every later attempt as an upstream API does, naming them in its text (as
the Management API actions name the user); so the event is retried, then dead-lettered with that text.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy import text

from tasks.db import get_engine
from tasks.events import Auth0Event
from tasks.handlers import ALL_EVENTS, RetryableError, handles

logger = logging.getLogger("tests.pii_handlers")


def _first_attempt(log_id: str) -> bool:
    marker = Path(os.environ["AUTH0_EVENTS_TEST_EFFECTS"]) / f"pii-{log_id}"
    try:
        marker.touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


@handles(ALL_EVENTS)
def leaky_handler(event: Auth0Event) -> None:
    """Log and fail with the user's e-mail, id and IP in the texts, as careless handler code does."""
    if event.details.get("pii_action") != "leak":
        return
    # In the message text, not as fields: what the README tells handler authors not to do.
    logger.warning("looking up %s (%s) from %s", event.user_name, event.user_id, event.ip)
    if _first_attempt(event.log_id):
        with get_engine().begin() as connection:
            connection.execute(
                text("INSERT INTO pii_test_no_such_table (user_name, ip) VALUES (:user_name, :ip)"),
                {"user_name": event.user_name, "ip": event.ip},
            )
    try:
        raise ConnectionError(f"connection reset while asking about {event.user_name}")
    except ConnectionError:
        logger.exception("upstream failed for %s at %s", event.user_name, event.ip)
    raise RetryableError(
        f"PATCH /api/v2/users/{event.user_id}: upstream refused {event.user_name} from {event.ip}"
    )
