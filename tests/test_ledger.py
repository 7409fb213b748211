"""The ledger's plain functions on SQLite and PostgreSQL: events recorded, claims, done marks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from tasks.db import session_scope
from tasks.events import parse_event
from tasks.ledger import claim, done_handlers, mark_done, record_attempt, record_outcome, release_claims
from tasks.models import Event, HandlerRun
from tests.helpers import make_record

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
STALE = timedelta(minutes=6)


def test_event_is_stored_once_and_attempts_counted(database_url: str) -> None:
    """The first attempt stores the record's fields and raw record; later attempts only count."""
    record = make_record("fp", ip="203.0.113.9", user_id="auth0|42")
    event = parse_event(record)
    for _ in range(3):
        with session_scope(database_url) as session:
            record_attempt(session, event, NOW - timedelta(seconds=5), NOW)
    with session_scope(database_url) as session:
        record_outcome(session, event.log_id, "processed", NOW)
    with session_scope(database_url) as session:
        row = session.scalars(select(Event).where(Event.log_id == event.log_id)).one()
        assert (row.type, row.ip, row.user_id, row.attempts, row.state) == (
            "fp",
            "203.0.113.9",
            "auth0|42",
            3,
            "processed",
        )
        assert row.raw == record
        assert row.received_at == NOW - timedelta(seconds=5)
        assert row.date == datetime(2026, 11, 26, 8, 25, 14, 466000, tzinfo=UTC)


def test_claim_then_done_then_skip(database_url: str) -> None:
    """A first claim runs; after the done mark every later claim, by any task, is 'done'."""
    log_id = make_record("s")["log_id"]
    with session_scope(database_url) as session:
        assert claim(session, log_id, "h", "task-1", NOW, STALE) == "run"
    with session_scope(database_url) as session:
        mark_done(session, log_id, "h", "task-1", NOW)
    for task in ("task-1", "task-2"):
        with session_scope(database_url) as session:
            assert claim(session, log_id, "h", task, NOW, STALE) == "done"
    with session_scope(database_url) as session:
        assert done_handlers(session, log_id) == {"h"}


def test_fresh_claim_of_another_task_is_owned_but_its_own_retry_runs(database_url: str) -> None:
    """A duplicate task leaves a fresh claim to its owner; the owner's retry (same task id) runs again."""
    log_id = make_record("s")["log_id"]
    with session_scope(database_url) as session:
        assert claim(session, log_id, "h", "owner", NOW, STALE) == "run"
    with session_scope(database_url) as session:
        assert claim(session, log_id, "h", "duplicate", NOW + timedelta(seconds=1), STALE) == "owned"
    with session_scope(database_url) as session:
        assert claim(session, log_id, "h", "owner", NOW + timedelta(seconds=2), STALE) == "run"


def test_stale_claim_is_taken_over(database_url: str) -> None:
    """A claim older than the hard time limit belongs to a dead task: another task takes it over."""
    log_id = make_record("s")["log_id"]
    with session_scope(database_url) as session:
        claim(session, log_id, "h", "dead", NOW, STALE)
    with session_scope(database_url) as session:
        assert claim(session, log_id, "h", "other", NOW + STALE + timedelta(seconds=1), STALE) == "run"
        run = session.get(HandlerRun, (log_id, "h"))
        assert run is not None
        assert run.task_id == "other"


def test_released_claims_let_a_later_delivery_run(database_url: str) -> None:
    """A dead-lettered task releases its unfinished claims but keeps the done marks."""
    log_id = make_record("s")["log_id"]
    with session_scope(database_url) as session:
        claim(session, log_id, "finished", "t1", NOW, STALE)
        mark_done(session, log_id, "finished", "t1", NOW)
        claim(session, log_id, "unfinished", "t1", NOW, STALE)
    with session_scope(database_url) as session:
        release_claims(session, log_id, "t1")
    with session_scope(database_url) as session:
        assert claim(session, log_id, "unfinished", "t2", NOW, STALE) == "run"
        assert claim(session, log_id, "finished", "t2", NOW, STALE) == "done"


def test_rolled_back_claim_leaves_nothing(database_url: str) -> None:
    """A transaction that claims and then fails leaves no claim behind (the transactional handler path)."""
    log_id = make_record("s")["log_id"]
    try:
        with session_scope(database_url) as session:
            claim(session, log_id, "tx", "t1", NOW, STALE)
            raise RuntimeError("handler failed")
    except RuntimeError:
        pass
    with session_scope(database_url) as session:
        assert session.get(HandlerRun, (log_id, "tx")) is None
