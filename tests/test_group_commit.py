"""Group commit on SQLite and PostgreSQL: concurrent ledger writes share transactions, each fails alone."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, event, select, text
from sqlalchemy.exc import OperationalError

from kernel.events import parse_event
from kernel.storage.db import PING_IDLE_SECONDS, dispose_engines, get_engine, session_scope
from kernel.storage.models import Event
from tasks.group_commit import GROUP_SIZE_KEY, GroupCommit, group_for
from tasks.ledger import record_attempt
from tasks.process import Attempt, Finish
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


@pytest.fixture
def statements(database_url: str) -> Any:
    """The SQL text of each statement sent to the database meanwhile (one per execute or executemany)."""
    seen: list[str] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    engine = get_engine(database_url)
    event.listen(engine, "before_cursor_execute", on_execute)
    yield seen
    event.remove(engine, "before_cursor_execute", on_execute)


def attempt_item(
    record: dict[str, Any], handlers: tuple[str, ...] = ("h",), task_id: str = "task-1"
) -> Attempt:
    """The ledger write of an attempt of the record's event, as process_event makes it."""
    return Attempt(parse_event(record), NOW, "stream", task_id, timedelta(minutes=6), handlers, handlers)


def test_attempts_of_one_batch_share_their_statements(
    database_url: str, sizes: list[int], statements: list[str]
) -> None:
    """Twelve attempts at once: each gets its own claims, and a batch of several sends one multi-row
    statement for the events and one for the claims, not one of each per attempt."""
    records = [make_record("s") for _ in range(THREADS)]
    results = run_at_once(GroupCommit(database_url), [attempt_item(record, ("a", "b")) for record in records])
    assert results == [{"a": "run", "b": "run"}] * THREADS
    assert stored(database_url) >= {record["log_id"] for record in records}
    inserts = [sql for sql in statements if sql.lstrip().upper().startswith("INSERT")]
    assert max(sizes) >= 2, sizes
    # One events statement and one claims statement per transaction, whatever its number of attempts.
    assert len(inserts) == 2 * len(sizes), (sizes, len(inserts))


def test_one_event_twice_in_a_batch_is_written_twice_and_claimed_once(database_url: str) -> None:
    """Two deliveries of one event in one batch: the second runs after the first, not in its statement
    (PostgreSQL refuses a statement that updates a row twice); one of them gets the claim."""
    record = make_record("s")
    items = [attempt_item(record, task_id="task-1"), attempt_item(record, task_id="task-2")]
    items += [attempt_item(make_record("s")) for _ in range(4)]
    results = run_at_once(GroupCommit(database_url), items)
    assert not [result for result in results if isinstance(result, Exception)], results
    assert sorted(result["h"] for result in results[:2]) == ["owned", "run"]
    assert all(result == {"h": "run"} for result in results[2:])
    with session_scope(database_url) as session:
        attempts = session.scalars(select(Event.attempts).where(Event.log_id == record["log_id"])).one()
    assert attempts == 2


def test_claims_already_taken_are_decided_in_a_shared_batch(database_url: str) -> None:
    """A batch meeting a done run, another task's fresh claim and the same task's own claim: skipped as
    done, left to its owner, taken over, as claim decides each alone."""
    done, owned, own = (make_record("s") for _ in range(3))
    group = GroupCommit(database_url)
    group.run(attempt_item(done, task_id="t-done"))
    group.run(Finish(done["log_id"], "h", "t-done"))
    group.run(attempt_item(owned, task_id="t-other"))
    group.run(attempt_item(own, task_id="t-own"))
    results = run_at_once(
        group,
        [
            attempt_item(done, task_id="t-new"),
            attempt_item(owned, task_id="t-new"),
            attempt_item(own, task_id="t-own"),
            attempt_item(make_record("s"), task_id="t-new"),
        ],
    )
    assert results == [{"h": "done"}, {"h": "owned"}, {"h": "run"}, {"h": "run"}]


def test_a_failing_bulk_statement_fails_only_its_own_write(database_url: str) -> None:
    """A multi-row statement that fails for one attempt's values: the batch runs again write by write,
    and only that attempt fails."""
    records = [make_record("s") for _ in range(6)]
    items = [attempt_item(record) for record in records]
    # A date the events' date column cannot take: the multi-row statement fails while binding it.
    items[2] = replace(items[2], event=replace(items[2].event, date="not a date"))  # type: ignore[arg-type]
    results = run_at_once(GroupCommit(database_url), items)
    failed = [index for index, result in enumerate(results) if isinstance(result, Exception)]
    assert failed == [2], results
    assert all(result == {"h": "run"} for index, result in enumerate(results) if index != 2)
    assert stored(database_url) >= {record["log_id"] for index, record in enumerate(records) if index != 2}


def test_the_connection_is_kept_between_batches_and_given_back_after_a_failure(database_url: str) -> None:
    """Batches in a row use one connection; one that fails gives it back and the next takes a fresh one."""
    group = GroupCommit(database_url)
    seen: list[int] = []

    def which(connection: Connection) -> None:
        seen.append(id(connection))

    def broken(connection: Connection) -> None:
        seen.append(id(connection))
        connection.execute(text("SELECT * FROM no_such_table"))

    group.run(which)
    group.run(which)
    with pytest.raises(Exception, match="no_such_table"):
        group.run(broken)
    group.run(which)
    assert seen[0] == seen[1] == seen[2] != seen[3]


def cut_kept_connection(database_url: str, group: GroupCommit) -> None:
    """End, server-side, the PostgreSQL session of the connection the group keeps, and wait until it ended."""
    pid = group.run(lambda connection: connection.execute(text("SELECT pg_backend_pid()")).scalar_one())
    with get_engine(database_url).connect() as other:
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        deadline = time.monotonic() + 10
        alive = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
        while other.execute(alive, {"pid": pid}).scalar_one() and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.mark.database
def test_a_kept_connection_cut_fails_one_batch_and_the_next_reconnects(postgres_database: str) -> None:
    """PostgreSQL ends the kept session: the next batch fails (its tasks retry), the one after commits."""
    group = GroupCommit(postgres_database)
    cut_kept_connection(postgres_database, group)
    group._used_at = time.monotonic()  # noqa: SLF001 - used just now, however long the cut took: no ping
    record = make_record("s")
    with pytest.raises(OperationalError):
        group.run(attempt_item(record))
    assert group.run(attempt_item(record)) == {"h": "run"}
    assert record["log_id"] in stored(postgres_database)


@pytest.mark.database
def test_a_kept_connection_idle_for_a_second_is_checked_before_use(postgres_database: str) -> None:
    """Idle longer than PING_IDLE_SECONDS, the kept connection is pinged first: found dead, it is dropped
    and the write commits on a fresh connection, without an error."""
    group = GroupCommit(postgres_database)
    cut_kept_connection(postgres_database, group)
    group._used_at -= PING_IDLE_SECONDS + 1  # noqa: SLF001 - the test's clock, instead of a sleep
    record = make_record("s")
    assert group.run(attempt_item(record)) == {"h": "run"}
    assert record["log_id"] in stored(postgres_database)


def test_disposing_the_engines_gives_the_kept_connection_back(database_url: str) -> None:
    """dispose_engines (run before a database is dropped) closes the connection a group keeps too."""
    group = group_for(database_url)
    kept: list[Connection] = []
    group.run(kept.append)
    assert not kept[0].closed
    dispose_engines()
    assert kept[0].closed
    assert group.run(attempt_item(make_record("s"))) == {"h": "run"}
