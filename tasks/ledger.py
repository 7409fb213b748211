"""The ledger: records each event and makes each handler's effect happen once per (log_id, handler).

A handler's run is claimed in the database before it runs and marked done after it succeeds. A duplicate
delivery that finds a fresh claim of another task leaves the handler to that task: its message is still
unacked, so it will finish, retry, or be dead-lettered (releasing the claim). A claim is taken over by
a retry or redelivery of the same task at once, and by any task once it is older than the hard time limit.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tasks.events import Auth0Event
from tasks.models import Event, HandlerRun


def _insert(session: Session, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def record_attempt(session: Session, event: Auth0Event, received_at: datetime, now: datetime) -> None:
    """Store the event on first sight (its fields and raw record) and count this processing attempt."""
    values = {
        "log_id": event.log_id,
        "type": event.type,
        "date": event.date,
        "user_id": event.user_id,
        "user_name": event.user_name,
        "client_id": event.client_id,
        "ip": event.ip,
        "raw": dict(event.raw),
        "received_at": received_at,
        "state": "processing",
        "attempts": 1,
        "updated_at": now,
    }
    statement = _insert(session, Event).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=["log_id"],
        set_={"state": "processing", "attempts": Event.attempts + 1, "updated_at": now},
    )
    session.execute(statement)


def record_outcome(
    session: Session, log_id: str, state: str, now: datetime, error: str | None = None
) -> None:
    """Set the event's state (processed, retrying, dead_lettered) and its last error."""
    row = session.scalar(select(Event).where(Event.log_id == log_id))
    if row is not None:
        row.state, row.last_error, row.updated_at = state, error, now


Claim = Literal["run", "done", "owned"]


def claim(
    session: Session, log_id: str, handler: str, task_id: str, now: datetime, stale_after: timedelta
) -> Claim:
    """Claim the handler's run for this event: "run" it, or skip it as "done" or "owned" by another task."""
    # RETURNING rather than rowcount, which psycopg reports as -1 for this statement.
    inserted = session.execute(
        _insert(session, HandlerRun)
        .values(log_id=log_id, handler=handler, state="claimed", task_id=task_id, claimed_at=now)
        .on_conflict_do_nothing()
        .returning(HandlerRun.handler)
    ).first()
    if inserted is not None:
        return "run"
    run = session.get(HandlerRun, (log_id, handler), with_for_update=True, populate_existing=True)
    assert run is not None  # the insert conflicted with it, and runs are only deleted by their owner
    if run.state == "done":
        return "done"
    if run.task_id != task_id and run.claimed_at > now - stale_after:
        return "owned"
    run.task_id, run.claimed_at = task_id, now
    return "run"


def mark_done(session: Session, log_id: str, handler: str, task_id: str, now: datetime) -> None:
    """Record that the handler's effect for this event completed."""
    session.execute(
        _insert(session, HandlerRun)
        .values(log_id=log_id, handler=handler, state="done", task_id=task_id, claimed_at=now, done_at=now)
        .on_conflict_do_update(
            index_elements=["log_id", "handler"], set_={"state": "done", "task_id": task_id, "done_at": now}
        )
    )


def release_claims(session: Session, log_id: str, task_id: str) -> None:
    """Drop the unfinished claims of a task that gives up, so a later delivery may run those handlers."""
    session.execute(
        delete(HandlerRun).where(
            HandlerRun.log_id == log_id, HandlerRun.task_id == task_id, HandlerRun.state == "claimed"
        )
    )


def done_handlers(session: Session, log_id: str) -> set[str]:
    """The handlers whose effect for ``log_id`` is recorded as done."""
    rows = session.scalars(
        select(HandlerRun.handler).where(HandlerRun.log_id == log_id, HandlerRun.state == "done")
    )
    return set(rows)
