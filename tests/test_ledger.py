"""The ledger's plain functions on SQLite and PostgreSQL: events recorded, claims, done marks."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from kernel.events import parse_event
from kernel.storage.db import session_scope, transaction
from kernel.storage.models import Event, HandlerRun
from tasks.ledger import (
    claim,
    lock_event,
    mark_done,
    mark_processed_if_done,
    record_attempt,
    record_outcome,
    release_claims,
)
from tests.helpers import make_record

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
STALE = timedelta(minutes=6)


def test_event_is_stored_once_and_attempts_counted(database_url: str) -> None:
    """The first attempt stores the record's fields and raw record; later attempts only count."""
    record = make_record("fp", ip="203.0.113.9", user_id="auth0|42")
    event = parse_event(record)
    for _ in range(3):
        with transaction(database_url) as connection:
            record_attempt(connection, event, NOW - timedelta(seconds=5), NOW)
    with transaction(database_url) as connection:
        record_outcome(connection, event.log_id, "processed", NOW)
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
    with transaction(database_url) as connection:
        assert claim(connection, log_id, "h", "task-1", NOW, STALE) == "run"
    with transaction(database_url) as connection:
        mark_done(connection, log_id, "h", "task-1", NOW)
    for task in ("task-1", "task-2"):
        with transaction(database_url) as connection:
            assert claim(connection, log_id, "h", task, NOW, STALE) == "done"
    with transaction(database_url) as connection:
        done = select(HandlerRun.handler).where(HandlerRun.log_id == log_id, HandlerRun.state == "done")
        assert set(connection.execute(done).scalars()) == {"h"}


def test_fresh_claim_of_another_task_is_owned_but_its_own_retry_runs(database_url: str) -> None:
    """A duplicate task leaves a fresh claim to its owner; the owner's retry (same task id) runs again."""
    log_id = make_record("s")["log_id"]
    with transaction(database_url) as connection:
        assert claim(connection, log_id, "h", "owner", NOW, STALE) == "run"
    with transaction(database_url) as connection:
        assert claim(connection, log_id, "h", "duplicate", NOW + timedelta(seconds=1), STALE) == "owned"
    with transaction(database_url) as connection:
        assert claim(connection, log_id, "h", "owner", NOW + timedelta(seconds=2), STALE) == "run"


def test_stale_claim_is_taken_over(database_url: str) -> None:
    """A claim older than the hard time limit belongs to a dead task: another task takes it over."""
    log_id = make_record("s")["log_id"]
    with transaction(database_url) as connection:
        claim(connection, log_id, "h", "dead", NOW, STALE)
    with transaction(database_url) as connection:
        assert claim(connection, log_id, "h", "other", NOW + STALE + timedelta(seconds=1), STALE) == "run"
        owner = select(HandlerRun.task_id).where(HandlerRun.log_id == log_id, HandlerRun.handler == "h")
        assert connection.execute(owner).scalar_one() == "other"


def test_released_claims_let_a_later_delivery_run(database_url: str) -> None:
    """A dead-lettered task releases its unfinished claims but keeps the done marks."""
    log_id = make_record("s")["log_id"]
    with transaction(database_url) as connection:
        claim(connection, log_id, "finished", "t1", NOW, STALE)
        mark_done(connection, log_id, "finished", "t1", NOW)
        claim(connection, log_id, "unfinished", "t1", NOW, STALE)
    with transaction(database_url) as connection:
        release_claims(connection, log_id, "t1")
    with transaction(database_url) as connection:
        assert claim(connection, log_id, "unfinished", "t2", NOW, STALE) == "run"
        assert claim(connection, log_id, "finished", "t2", NOW, STALE) == "done"


def test_rolled_back_claim_leaves_nothing(database_url: str) -> None:
    """A transaction that claims and then fails leaves no claim behind (the transactional handler path)."""
    log_id = make_record("s")["log_id"]
    try:
        with transaction(database_url) as connection:
            claim(connection, log_id, "tx", "t1", NOW, STALE)
            raise RuntimeError("handler failed")
    except RuntimeError:
        pass
    with session_scope(database_url) as session:
        assert session.get(HandlerRun, (log_id, "tx")) is None


def test_event_is_processed_only_when_every_handler_is_done(database_url: str) -> None:
    """The outcome check marks the event processed once all its handlers are done, not before."""
    event = parse_event(make_record("s"))
    with transaction(database_url) as connection:
        record_attempt(connection, event, NOW, NOW)
        mark_done(connection, event.log_id, "a", "t1", NOW)
        assert not mark_processed_if_done(connection, event.log_id, ["a", "b"], NOW)
    assert state_of(database_url, event.log_id) == "processing"
    with transaction(database_url) as connection:
        mark_done(connection, event.log_id, "b", "t2", NOW)
        assert mark_processed_if_done(connection, event.log_id, ["a", "b", "a"], NOW)
    assert state_of(database_url, event.log_id) == "processed"


def test_event_without_handlers_is_processed_at_once(database_url: str) -> None:
    """An event no handler subscribes to is processed as soon as it is recorded."""
    event = parse_event(make_record("s"))
    with transaction(database_url) as connection:
        record_attempt(connection, event, NOW, NOW)
        assert mark_processed_if_done(connection, event.log_id, [], NOW)
    assert state_of(database_url, event.log_id) == "processed"


def test_two_deliveries_finishing_different_handlers_at_once_mark_the_event_processed(
    database_url: str,
) -> None:
    """Each delivery marks one handler done and checks: the lock makes the second check see both marks."""
    event = parse_event(make_record("s"))
    with transaction(database_url) as connection:
        record_attempt(connection, event, NOW, NOW)
    second_checked, first_checked = threading.Event(), threading.Event()
    results: list[bool] = []

    def second_delivery() -> None:
        with transaction(database_url) as connection:
            lock_event(connection, event.log_id)
            mark_done(connection, event.log_id, "b", "t2", NOW)
            results.append(mark_processed_if_done(connection, event.log_id, ["a", "b"], NOW))
            second_checked.set()
            first_checked.wait(timeout=30)

    with transaction(database_url) as connection:
        lock_event(connection, event.log_id)
        mark_done(connection, event.log_id, "a", "t1", NOW)
        thread = threading.Thread(target=second_delivery)
        thread.start()
        # Without the lock both would check before either commits, each seeing only its own mark. With
        # it, the second waits for this commit, so this bounded wait runs out and this one checks first.
        second_checked.wait(timeout=1.0)
        results.append(mark_processed_if_done(connection, event.log_id, ["a", "b"], NOW))
        first_checked.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert sorted(results) == [False, True]
    assert state_of(database_url, event.log_id) == "processed"


def state_of(database_url: str, log_id: str) -> str:
    """The event's recorded state."""
    with transaction(database_url) as connection:
        return str(connection.execute(select(Event.state).where(Event.log_id == log_id)).scalar_one())


def test_over_long_fields_are_cut_to_their_columns_and_raw_keeps_them(database_url: str) -> None:
    """user_name, user_id, client_id (255), ip and type (64) are cut in their columns; raw holds all."""
    long = "x" * 299 + "y"
    record = make_record("t" * 70, user_name=long, user_id=long, client_id=long, ip="2001:db8:" + "1" * 70)
    event = parse_event(record)
    with transaction(database_url) as connection:
        record_attempt(connection, event, NOW, NOW)
    with session_scope(database_url) as session:
        row = session.scalars(select(Event).where(Event.log_id == event.log_id)).one()
        assert (row.user_name, row.user_id, row.client_id) == (long[:255], long[:255], long[:255])
        assert (row.ip, row.type) == (record["data"]["ip"][:64], "t" * 64)
        assert row.raw == record


def test_text_with_nul_or_lone_surrogates_is_stored(database_url: str) -> None:
    """The event handlers see, NUL and lone surrogates replaced, is what the ledger stores, raw included."""
    record = make_record("f", user_name="eve\x00\ud800", details={"a\x00": "\udc00"})
    event = parse_event(record)
    with transaction(database_url) as connection:
        record_attempt(connection, event, NOW, NOW)
    with session_scope(database_url) as session:
        row = session.scalars(select(Event).where(Event.log_id == event.log_id)).one()
        assert row.user_name == "eve\ufffd\ufffd"
        assert row.raw["data"]["details"] == {"a\ufffd": "\ufffd"}
