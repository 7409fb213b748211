"""Run the handlers subscribed to an event once each, through the ledger (the task calls this)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection

from kernel.events import Auth0Event
from kernel.storage.db import session_scope
from kernel.storage.models import utcnow
from kernel.wire import STREAM
from tasks import metrics
from tasks.group_commit import Bulk, commit_together
from tasks.handlers import Registration, handlers_for
from tasks.ledger import (
    Claim,
    ClaimRequest,
    claim,
    claim_many,
    finish_many,
    lock_event,
    mark_done,
    mark_processed_if_done,
    record_attempts,
    record_outcome,
    release_claims,
)

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    """Which handlers ran on this attempt, which were already done, which another task is running."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    owned_elsewhere: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Attempt(Bulk):
    """An attempt's ledger write: the event stored (or its attempts counted) and its handlers outside the
    database claimed; the event marked processed if it has no handler left to run."""

    event: Auth0Event
    received_at: datetime
    source: str
    task_id: str
    stale_after: timedelta
    #: Every handler of the event, and those of them outside the database (the ones claimed here).
    names: tuple[str, ...]
    outside: tuple[str, ...]

    @property
    def key(self) -> str:
        """The event's log_id."""
        return self.event.log_id

    @classmethod
    def run_many(cls, connection: Connection, items: list[Attempt]) -> list[dict[str, Claim]]:
        """The attempts of ``items``: their events in one statement, then their claims in another."""
        now = utcnow()
        record_attempts(connection, [(item.event, item.received_at, item.source) for item in items], now)
        requests = [
            ClaimRequest(item.event.log_id, name, item.task_id, item.stale_after)
            for item in items
            for name in item.outside
        ]
        claims = iter(claim_many(connection, requests, now))
        results = []
        for item in items:
            taken = {name: next(claims) for name in item.outside}
            if len(item.outside) == len(item.names) and "run" not in taken.values():
                mark_processed_if_done(connection, item.event.log_id, item.names, now)  # nothing left to run
            results.append(taken)
        return results


@dataclass(frozen=True)
class Finish(Bulk):
    """The done mark of an event's only handler, which makes the event processed (no other mark waits)."""

    log_id: str
    handler: str
    task_id: str

    @property
    def key(self) -> str:
        """The event's log_id."""
        return self.log_id

    @classmethod
    def run_many(cls, connection: Connection, items: list[Finish]) -> list[None]:
        """The done marks of ``items`` in one statement, their events' states in another."""
        finish_many(connection, [(item.log_id, item.handler, item.task_id) for item in items], utcnow())
        return [None] * len(items)


def process_event(
    event: Auth0Event,
    task_id: str,
    received_at: datetime,
    stale_after: timedelta,
    database_url: str | None = None,
    source: str = STREAM,
) -> Outcome:
    """Record the event, run each handler whose effect is not yet done, then mark the event processed.

    The first handler to raise stops the run and its exception propagates to the retry policy; handlers
    that completed before it are skipped on the retry.
    """
    registrations = handlers_for(event.type)
    names = [registration.name for registration in registrations]
    outside = [registration.name for registration in registrations if not registration.transactional]
    # Two ledger writes for an event whose handlers act outside the database: the attempt with every claim,
    # then the last done mark with the outcome (BENCHMARKS.md: each transaction was a measured share). Each
    # commits together with the writes of the events running beside it (tasks/group_commit.py), in
    # statements shared with them.
    attempt = Attempt(event, received_at, source, task_id, stale_after, tuple(names), tuple(outside))
    claims: dict[str, Claim] = commit_together(attempt, database_url)
    to_run = [r for r in registrations if r.transactional or claims[r.name] == "run"]
    outcome = Outcome()
    for registration in registrations:
        finish = names if to_run and registration is to_run[-1] else None
        if registration.transactional:
            result = run_in_transaction(registration, event, task_id, stale_after, database_url, finish)
        elif claims[registration.name] == "run":
            result = run_outside(registration, event, task_id, database_url, finish)
        else:
            result = claims[registration.name]
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
    metrics.observe_lag(event, outcome)
    return outcome


def run_outside(
    registration: Registration,
    event: Auth0Event,
    task_id: str,
    database_url: str | None = None,
    finish: list[str] | None = None,
) -> Claim:
    """Run a claimed handler whose effect is outside the database, then mark it done.

    ``finish`` (the event's handlers, when this is the last to run) also marks the event processed if
    all of them are done, in the same transaction as the mark.
    """
    # An effect outside the database: at least once. A crash between the effect and the mark below
    # repeats it on the retry; the ledger prevents every other repetition.
    with metrics.timed_handler(event.type, registration.name):
        registration.func(event)

    if finish == [registration.name]:
        commit_together(Finish(event.log_id, registration.name, task_id), database_url)
        return "run"

    def mark(connection: Connection) -> None:
        now = utcnow()
        if finish is not None:
            lock_event(connection, event.log_id)
        mark_done(connection, event.log_id, registration.name, task_id, now)
        if finish is not None:
            mark_processed_if_done(connection, event.log_id, finish, now)

    commit_together(mark, database_url)
    return "run"


def run_in_transaction(
    registration: Registration,
    event: Auth0Event,
    task_id: str,
    stale_after: timedelta,
    database_url: str | None = None,
    finish: list[str] | None = None,
) -> Claim:
    """Claim, run and mark done a transactional handler in one transaction, unless done or owned elsewhere.

    Returns the claim: "run" when it ran now, "done" or "owned" when it was skipped. ``finish`` as for
    run_outside.
    """
    name = registration.name
    # Claim, the handler's own writes and the done mark commit together, or not at all.
    with session_scope(database_url) as session:
        connection = session.connection()
        now = utcnow()
        if finish is not None:
            lock_event(connection, event.log_id)
        status = claim(connection, event.log_id, name, task_id, now, stale_after)
        if status == "run":
            with metrics.timed_handler(event.type, name):
                registration.func(event, session)
            session.flush()
            mark_done(connection, event.log_id, name, task_id, utcnow())
        if finish is not None:
            mark_processed_if_done(connection, event.log_id, finish, utcnow())
    return status


def record_failure(log_id: str, task_id: str, state: str, reason: str) -> None:
    """Record a retry or dead-lettering on the event; a dead-lettered task gives up its claims.

    Never raises: the database may be what failed, and the message must still be retried or rejected.
    """
    try:

        def outcome(connection: Connection) -> None:
            record_outcome(connection, log_id, state, utcnow(), reason)
            if state == "dead_lettered":
                release_claims(connection, log_id, task_id)

        commit_together(outcome)
    except Exception:  # noqa: BLE001 - see docstring
        logger.exception("could not record %s for log_id=%s in the ledger", state, log_id)
