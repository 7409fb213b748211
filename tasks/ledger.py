"""The ledger: records each event and makes each handler's effect happen once per (log_id, handler).

A handler's run is claimed in the database before it runs and marked done after it succeeds. A duplicate
delivery that finds a fresh claim of another task leaves the handler to that task: its message is still
unacked, so it will finish, retry, or be dead-lettered (releasing the claim). A claim is taken over by
a retry or redelivery of the same task at once, and by any task once it is older than the hard time limit.

Every function runs in the caller's transaction. A transaction that writes both an event's row and its
handler runs locks the event's row first (record_attempt or lock_event), so two deliveries of one event
cannot deadlock on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Literal, NamedTuple, cast

from sqlalchemy import Connection, Delete, Select, Table, Update, bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from kernel.events import Auth0Event
from kernel.storage.models import Event, HandlerRun, fit
from kernel.wire import STREAM

EVENTS = cast(Table, Event.__table__)
RUNS = cast(Table, HandlerRun.__table__)

Claim = Literal["run", "done", "owned"]


@dataclass(frozen=True)
class _Statements:
    """The ledger's statements for one dialect, built once.

    Every event runs them all; building SQLAlchemy statements per call was most of the ledger's cost
    (BENCHMARKS.md, end to end). Values are bound at execution.
    """

    upsert_event: Any
    claim_new: Any
    read_run: Select[Any]
    take_over: Update
    upsert_done: Any
    lock_event: Select[Any]
    mark_processed: Update
    set_outcome: Update
    release: Delete


@cache
def _statements(dialect: str) -> _Statements:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    upsert_event = insert(EVENTS)
    upsert_event = upsert_event.on_conflict_do_update(
        index_elements=["log_id"],
        set_={
            "state": "processing",
            "attempts": EVENTS.c.attempts + 1,
            "updated_at": upsert_event.excluded.updated_at,
        },
    )
    upsert_done = insert(RUNS)
    upsert_done = upsert_done.on_conflict_do_update(
        index_elements=["log_id", "handler"],
        set_={
            "state": "done",
            "task_id": upsert_done.excluded.task_id,
            "done_at": upsert_done.excluded.done_at,
        },
    )
    this_run = (RUNS.c.log_id == bindparam("run_log_id")) & (RUNS.c.handler == bindparam("run_handler"))
    this_event = EVENTS.c.log_id == bindparam("event_log_id")
    done_count = (
        select(func.count())
        .where(
            RUNS.c.log_id == bindparam("event_log_id"),
            RUNS.c.state == "done",
            RUNS.c.handler.in_(bindparam("handlers", expanding=True)),
        )
        .scalar_subquery()
    )
    return _Statements(
        upsert_event=upsert_event,
        # RETURNING rather than rowcount, which psycopg reports as -1 for this statement; the log_id and
        # handler of each new claim, as one statement may carry several.
        claim_new=insert(RUNS).on_conflict_do_nothing().returning(RUNS.c.log_id, RUNS.c.handler),
        read_run=select(RUNS.c.state, RUNS.c.task_id, RUNS.c.claimed_at).where(this_run).with_for_update(),
        take_over=update(RUNS).where(this_run),
        upsert_done=upsert_done,
        lock_event=select(EVENTS.c.log_id).where(this_event).with_for_update(),
        mark_processed=update(EVENTS)
        .where(this_event, done_count == bindparam("handler_count"))
        .values(state="processed", last_error=None),
        set_outcome=update(EVENTS).where(this_event),
        release=delete(RUNS).where(
            RUNS.c.log_id == bindparam("run_log_id"),
            RUNS.c.task_id == bindparam("run_task_id"),
            RUNS.c.state == "claimed",
        ),
    )


def _sql(connection: Connection) -> _Statements:
    return _statements(connection.dialect.name)


def record_attempt(
    connection: Connection, event: Auth0Event, received_at: datetime, now: datetime, source: str = STREAM
) -> None:
    """Store the event on first sight (its fields, raw record and source) and count this processing attempt.

    The source stays the first delivery's: a fill that publishes an event the stream delivered meanwhile
    does not make it a backfilled one.

    The searchable copies of type, user_id, user_name, client_id and ip are cut to their columns' length;
    raw keeps them whole. (The log_id is never cut: parse_event refuses one longer than its column.)
    """
    record_attempts(connection, [(event, received_at, source)], now)


def record_attempts(
    connection: Connection, attempts: list[tuple[Auth0Event, datetime, str]], now: datetime
) -> None:
    """record_attempt for each (event, received_at, source) of ``attempts``, in one multi-row statement.

    Their log_ids must differ (PostgreSQL refuses a statement that updates one row twice).
    """
    rows = [_event_values(event, received_at, now, source) for event, received_at, source in attempts]
    connection.execute(_sql(connection).upsert_event, rows)


def _event_values(event: Auth0Event, received_at: datetime, now: datetime, source: str) -> dict[str, Any]:
    return {
        "log_id": event.log_id,
        "type": fit(EVENTS.c.type, event.type),
        "date": event.date,
        "user_id": fit(EVENTS.c.user_id, event.user_id),
        "user_name": fit(EVENTS.c.user_name, event.user_name),
        "client_id": fit(EVENTS.c.client_id, event.client_id),
        "ip": fit(EVENTS.c.ip, event.ip),
        "raw": dict(event.raw),
        "received_at": received_at,
        "source": fit(EVENTS.c.source, source),
        "state": "processing",
        "attempts": 1,
        "updated_at": now,
    }


def lock_event(connection: Connection, log_id: str) -> None:
    """Lock the event's row until the transaction ends (PostgreSQL; SQLite's BEGIN IMMEDIATE already has)."""
    connection.execute(_sql(connection).lock_event, {"event_log_id": log_id})


def mark_processed_if_done(
    connection: Connection, log_id: str, handlers: Collection[str], now: datetime
) -> bool:
    """Mark the event processed if every one of ``handlers`` is done; return whether it was.

    Call it after lock_event in the same transaction: two deliveries that each finished some handlers
    then check one after the other, and the second sees every done mark.
    """
    names = sorted(set(handlers))
    if not names:
        result = connection.execute(
            _sql(connection).set_outcome,
            {"event_log_id": log_id, "state": "processed", "last_error": None, "updated_at": now},
        )
    else:
        result = connection.execute(
            _sql(connection).mark_processed,
            {"event_log_id": log_id, "handlers": names, "handler_count": len(names), "updated_at": now},
        )
    return bool(result.rowcount)


def record_outcome(
    connection: Connection, log_id: str, state: str, now: datetime, error: str | None = None
) -> None:
    """Set the event's state (processed, retrying, dead_lettered) and its last error."""
    connection.execute(_sql(connection).set_outcome, _outcome_values(log_id, state, now, error))


def _outcome_values(log_id: str, state: str, now: datetime, error: str | None = None) -> dict[str, Any]:
    return {"event_log_id": log_id, "state": state, "last_error": error, "updated_at": now}


def claim(
    connection: Connection, log_id: str, handler: str, task_id: str, now: datetime, stale_after: timedelta
) -> Claim:
    """Claim the handler's run for this event: "run" it, or skip it as "done" or "owned" by another task."""
    return claim_many(connection, [ClaimRequest(log_id, handler, task_id, stale_after)], now)[0]


class ClaimRequest(NamedTuple):
    """One claim of claim_many: the arguments of claim other than the connection and the time."""

    log_id: str
    handler: str
    task_id: str
    stale_after: timedelta


def claim_many(connection: Connection, requests: list[ClaimRequest], now: datetime) -> list[Claim]:
    """claim for each of ``requests``, the new claims in one multi-row statement; their results in order.

    The (log_id, handler) pairs must differ. A handler run already recorded is decided on its own, as
    claim decides it.
    """
    if not requests:
        return []
    rows = [
        {
            "log_id": r.log_id,
            "handler": r.handler,
            "state": "claimed",
            "task_id": r.task_id,
            "claimed_at": now,
        }
        for r in requests
    ]
    new = {(row.log_id, row.handler) for row in connection.execute(_sql(connection).claim_new, rows)}
    return [
        "run"
        if (r.log_id, r.handler) in new
        else _claim_taken(connection, r.log_id, r.handler, r.task_id, now, r.stale_after)
        for r in requests
    ]


def _claim_taken(
    connection: Connection, log_id: str, handler: str, task_id: str, now: datetime, stale_after: timedelta
) -> Claim:
    """Decide on a handler run another claim recorded first: done, owned by a live task, or taken over."""
    sql = _sql(connection)
    this_run = {"run_log_id": log_id, "run_handler": handler}
    run = connection.execute(sql.read_run, this_run).one()  # runs are only deleted by their owner
    if run.state == "done":
        return "done"
    if run.task_id != task_id and run.claimed_at > now - stale_after:
        return "owned"
    connection.execute(sql.take_over, {**this_run, "task_id": task_id, "claimed_at": now})
    return "run"


def mark_done(connection: Connection, log_id: str, handler: str, task_id: str, now: datetime) -> None:
    """Record that the handler's effect for this event completed."""
    connection.execute(_sql(connection).upsert_done, _done_values(log_id, handler, task_id, now))


def _done_values(log_id: str, handler: str, task_id: str, now: datetime) -> dict[str, Any]:
    return {
        "log_id": log_id,
        "handler": handler,
        "state": "done",
        "task_id": task_id,
        "claimed_at": now,
        "done_at": now,
    }


def finish_many(connection: Connection, marks: list[tuple[str, str, str]], now: datetime) -> None:
    """For each (log_id, handler, task_id) of ``marks``, the event's only handler: its done mark, and the
    event processed. Two multi-row statements, the events' rows first; the log_ids must differ.
    """
    sql = _sql(connection)
    connection.execute(
        sql.set_outcome, [_outcome_values(log_id, "processed", now) for log_id, _handler, _task_id in marks]
    )
    connection.execute(sql.upsert_done, [_done_values(*mark, now) for mark in marks])


def release_claims(connection: Connection, log_id: str, task_id: str) -> None:
    """Drop the unfinished claims of a task that gives up, so a later delivery may run those handlers."""
    connection.execute(_sql(connection).release, {"run_log_id": log_id, "run_task_id": task_id})
