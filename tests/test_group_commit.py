"""Group commit on SQLite and PostgreSQL: concurrent ledger writes share transactions, each fails alone."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, event, select, text

from kernel.events import parse_event
from kernel.storage.db import get_engine, session_scope
from kernel.storage.models import Event
from tasks.group_commit import GROUP_SIZE_KEY, GroupCommit
from tasks.ledger import record_attempt
from tests.helpers import make_record

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
THREADS = 12


def stored(database_url: str) -> set[str]:
    """The log_ids the events table holds."""
    with session_scope(database_url) as session:
        return set(session.scalars(select(Event.log_id)))


def attempt_of(record: dict[str, Any]) -> Any:
    """A ledger write recording the record's event."""
    event_ = parse_event(record)

    def work(connection: Connection) -> str:
        record_attempt(connection, event_, NOW - timedelta(seconds=1), NOW)
        return event_.log_id

    return work


def run_at_once(group: GroupCommit, works: list[Any]) -> list[Any]:
    """Run each write from a thread of its own, all released at once; the results (or errors) in order."""
    barrier = threading.Barrier(len(works))
    results: list[Any] = [None] * len(works)

    def call(index: int) -> None:
        barrier.wait()
        try:
            results[index] = group.run(works[index])
        except Exception as exc:  # noqa: BLE001 - the test compares what each caller got
            results[index] = exc

    threads = [threading.Thread(target=call, args=(index,)) for index in range(len(works))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


@pytest.fixture
def sizes(database_url: str) -> Any:
    """The number of writes of each transaction committed on the database meanwhile."""
    seen: list[int] = []

    def on_commit(connection: Connection) -> None:
        if GROUP_SIZE_KEY in connection.info:
            seen.append(connection.info[GROUP_SIZE_KEY])

    engine = get_engine(database_url)
    event.listen(engine, "commit", on_commit)
    yield seen
    event.remove(engine, "commit", on_commit)


def test_concurrent_writes_share_commits_and_each_returns_its_own_result(
    database_url: str, sizes: list[int]
) -> None:
    """Twelve threads writing at once: every write committed, fewer commits than writes, own results."""
    records = [make_record("s") for _ in range(THREADS)]
    group = GroupCommit(database_url)
    results = run_at_once(group, [attempt_of(record) for record in records])
    assert results == [record["log_id"] for record in records]
    assert stored(database_url) >= set(results)
    assert sum(sizes) == THREADS
    assert len(sizes) < THREADS, sizes  # at least one commit carried several writes
    assert (group.batches, group.writes) == (len(sizes), THREADS)


def test_a_lone_write_commits_at_once_in_the_callers_thread(database_url: str, sizes: list[int]) -> None:
    """No other writer: the caller leads its own transaction (no hand-off to another thread)."""
    threads: list[str] = []

    def work(connection: Connection) -> int:
        threads.append(threading.current_thread().name)
        return int(connection.execute(text("SELECT 1")).scalar_one())

    assert GroupCommit(database_url).run(work) == 1
    assert threads == [threading.current_thread().name]
    assert sizes == [1]


def test_a_failing_write_fails_alone_and_the_others_commit(database_url: str) -> None:
    """One write raises inside a shared transaction: it gets its error, every other write commits."""
    records = [make_record("s") for _ in range(THREADS)]
    works = [attempt_of(record) for record in records]

    def broken(connection: Connection) -> None:
        connection.execute(text("SELECT * FROM no_such_table"))

    works[5] = broken
    results = run_at_once(GroupCommit(database_url), works)
    assert "no_such_table" in str(results[5])
    expected = {record["log_id"] for index, record in enumerate(records) if index != 5}
    assert [result for index, result in enumerate(results) if index != 5] == [
        record["log_id"] for index, record in enumerate(records) if index != 5
    ]
    assert stored(database_url) >= expected
    assert records[5]["log_id"] not in stored(database_url)


def test_a_failed_commit_fails_every_write_of_its_batch(database_url: str) -> None:
    """A COMMIT that fails (here: the listener raises before it) reaches each caller; nothing is stored."""
    records = [make_record("s") for _ in range(4)]
    engine = get_engine(database_url)

    def refuse(connection: Connection) -> None:
        raise RuntimeError("the commit failed")

    event.listen(engine, "commit", refuse)
    try:
        results = run_at_once(GroupCommit(database_url), [attempt_of(record) for record in records])
    finally:
        event.remove(engine, "commit", refuse)
    assert all(isinstance(result, RuntimeError) for result in results), results
    assert not stored(database_url) & {record["log_id"] for record in records}


def test_no_caller_returns_before_the_commit_of_its_write(database_url: str) -> None:
    """While the COMMIT of a shared transaction is held, none of its writes' callers has returned."""
    group = GroupCommit(database_url)
    queued, in_commit, release = threading.Event(), threading.Event(), threading.Event()
    returned: list[int] = []

    def first(connection: Connection) -> None:
        queued.wait(30)  # the others queue meanwhile, for the next transaction: one of five writes

    def hold(connection: Connection) -> None:
        if connection.info.get(GROUP_SIZE_KEY, 0) >= 2:
            in_commit.set()
            release.wait(30)

    def call(index: int, work: Any) -> None:
        group.run(work)
        returned.append(index)

    engine = get_engine(database_url)
    event.listen(engine, "commit", hold)
    try:
        threads = [threading.Thread(target=call, args=(0, first))]
        threads[0].start()
        threads += [
            threading.Thread(target=call, args=(index, attempt_of(make_record("s")))) for index in range(1, 6)
        ]
        for thread in threads[1:]:
            thread.start()
        deadline = time.monotonic() + 30
        while len(group._queued) < 5 and time.monotonic() < deadline:  # noqa: SLF001 - the test's probe
            time.sleep(0.01)
        queued.set()
        assert in_commit.wait(30)
        time.sleep(0.5)  # a caller released early would return within this
        assert returned == [0]
    finally:
        release.set()
        for thread in threads:
            thread.join(30)
        event.remove(engine, "commit", hold)
    assert sorted(returned) == [0, 1, 2, 3, 4, 5]
