"""Run the handlers subscribed to an event once each, through the ledger (the task calls this)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tasks import metrics
from tasks.db import session_scope
from tasks.events import Auth0Event
from tasks.handlers import Registration, handlers_for
from tasks.ledger import (
    Claim,
    claim,
    done_handlers,
    mark_done,
    record_attempt,
    record_outcome,
    release_claims,
)
from tasks.models import utcnow

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    """Which handlers ran on this attempt, which were already done, which another task is running."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    owned_elsewhere: list[str] = field(default_factory=list)


def process_event(
    event: Auth0Event,
    task_id: str,
    received_at: datetime,
    stale_after: timedelta,
    database_url: str | None = None,
) -> Outcome:
    """Record the event, run each handler whose effect is not yet done, then mark the event processed.

    The first handler to raise stops the run and its exception propagates to the retry policy; handlers
    that completed before it are skipped on the retry.
    """
    with session_scope(database_url) as session:
        record_attempt(session, event, received_at, utcnow())
    outcome = Outcome()
    registrations = handlers_for(event.type)
    for registration in registrations:
        result = run_once(registration, event, task_id, stale_after, database_url)
        metrics.count_skip(event.type, registration.name, result)
        {"run": outcome.ran, "done": outcome.skipped, "owned": outcome.owned_elsewhere}[result].append(
            registration.name
        )
    if outcome.skipped:
        logger.info("log_id=%s: skipped handlers already done: %s", event.log_id, ", ".join(outcome.skipped))
    if outcome.owned_elsewhere:
        logger.info(
            "log_id=%s: handlers running in another task: %s",
            event.log_id,
            ", ".join(outcome.owned_elsewhere),
        )
    with session_scope(database_url) as session:
        # Two deliveries in flight may each leave a handler to the other; whichever checks last (after
        # committing its own done marks) sees every mark, so the event is marked processed exactly then.
        if done_handlers(session, event.log_id) >= {registration.name for registration in registrations}:
            record_outcome(session, event.log_id, "processed", utcnow())
    metrics.observe_lag(event, outcome)
    return outcome


def run_once(
    registration: Registration,
    event: Auth0Event,
    task_id: str,
    stale_after: timedelta,
    database_url: str | None = None,
) -> Claim:
    """Run one handler unless the ledger says its effect is done or owned by another task.

    Returns the claim: "run" when it ran now, "done" or "owned" when it was skipped.
    """
    name = registration.name
    if registration.transactional:
        # Claim, the handler's own writes and the done mark commit together, or not at all.
        with session_scope(database_url) as session:
            status = claim(session, event.log_id, name, task_id, utcnow(), stale_after)
            if status != "run":
                return status
            with metrics.timed_handler(event.type, name):
                registration.func(event, session)
            mark_done(session, event.log_id, name, task_id, utcnow())
        return "run"
    with session_scope(database_url) as session:
        status = claim(session, event.log_id, name, task_id, utcnow(), stale_after)
        if status != "run":
            return status
    # An effect outside the database: at least once. A crash between the effect and the mark below
    # repeats it on the retry; the ledger prevents every other repetition.
    with metrics.timed_handler(event.type, name):
        registration.func(event)
    with session_scope(database_url) as session:
        mark_done(session, event.log_id, name, task_id, utcnow())
    return "run"


def record_failure(log_id: str, task_id: str, state: str, reason: str) -> None:
    """Record a retry or dead-lettering on the event; a dead-lettered task gives up its claims.

    Never raises: the database may be what failed, and the message must still be retried or rejected.
    """
    try:
        with session_scope() as session:
            record_outcome(session, log_id, state, utcnow(), reason)
            if state == "dead_lettered":
                release_claims(session, log_id, task_id)
    except Exception:  # noqa: BLE001 - see docstring
        logger.exception("could not record %s for log_id=%s in the ledger", state, log_id)
