"""Effects happen once per (log_id, handler) with real workers, on SQLite and on PostgreSQL.

Duplicate batches, a retry after a partial failure, and a worker killed mid-task each repeat delivery;
every test asserts the exact count of each handler's effect.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from kernel.storage.db import session_scope
from kernel.storage.models import Event
from tests.helpers import AUTH, as_jsonl, count_lines, make_record, wait_for
from tests.queue_types import both_queue_types

pytestmark = pytest.mark.worker


@pytest.fixture
def queue() -> str:
    """A queue of this test's own."""
    return f"test.once.{uuid.uuid4().hex[:8]}"


@pytest.fixture
def receiver(make_app: Any, queue: str) -> Any:
    """A receiver routing successful logins to the test's queue."""
    return make_app(routes=f"s={queue}").test_client()


@pytest.fixture
def worker_env(queue: str, database_url: str) -> dict[str, str]:
    """Environment of the test's workers: its queue and its database."""
    return {"AUTH0_EVENTS_ROUTES": f"s={queue}", "DATABASE_URL": database_url}


def post(client: Any, *records: dict[str, Any]) -> Any:
    """POST records and return the JSON summary."""
    response = client.post("/webhooks/auth0", data=as_jsonl(records), headers=AUTH)
    assert response.status_code == 202
    return response.json


def effects(effects_dir: Path, log_id: str) -> tuple[int, int]:
    """How many times the first and the second test handler completed their effect for ``log_id``."""
    return (
        count_lines(effects_dir, "effects.log", f"effect {log_id}"),
        count_lines(effects_dir, "effects.log", f"effect2 {log_id}"),
    )


def transactional_writes(database_url: str, log_id: str) -> int:
    """Rows the transactional test handler committed for ``log_id``."""
    with session_scope(database_url) as session:
        query = text("SELECT count(*) FROM test_plugin_writes WHERE log_id = :log_id")
        return int(session.execute(query, {"log_id": log_id}).scalar_one())


def event_row(database_url: str, log_id: str) -> Event | None:
    """The archived event, if recorded."""
    with session_scope(database_url) as session:
        return session.scalars(select(Event).where(Event.log_id == log_id)).one_or_none()


def processed(database_url: str, log_id: str, attempts: int) -> bool:
    """Whether the event is recorded as processed after ``attempts`` attempts."""
    row = event_row(database_url, log_id)
    return row is not None and row.state == "processed" and row.attempts == attempts


def test_same_batch_posted_twice_has_its_effects_once(
    receiver: Any,
    start_worker: Any,
    worker_env: dict[str, str],
    queue: str,
    database_url: str,
    effects_dir: Path,
) -> None:
    """Auth0 re-sending a whole batch: every handler's effect happens once per event."""
    records = [make_record("s") for _ in range(3)]
    start_worker([queue], worker_env, concurrency=2)
    post(receiver, *records)
    for record in records:
        wait_for(lambda r=record: processed(database_url, r["log_id"], 1), what="first delivery processed")  # type: ignore[misc]  # a default argument binds the loop turn's value
    post(receiver, *records)
    for record in records:
        log_id = record["log_id"]
        wait_for(lambda i=log_id: processed(database_url, i, 2), what="second delivery processed")  # type: ignore[misc]  # a default argument binds the loop turn's value
        assert effects(effects_dir, log_id) == (1, 1)
        assert transactional_writes(database_url, log_id) == 1


def test_same_log_id_twice_in_a_batch_and_in_flight_at_once(
    receiver: Any,
    start_worker: Any,
    worker_env: dict[str, str],
    queue: str,
    database_url: str,
    effects_dir: Path,
) -> None:
    """A log_id repeated in one batch, and again in a batch sent while the first is running: one effect."""
    record = make_record("s")
    record["data"]["details"]["test_action_second"] = "slow"
    log_id = record["log_id"]
    start_worker([queue], worker_env, concurrency=2)
    assert post(receiver, record, record)["duplicates"] == 1
    assert post(receiver, record)["accepted"] == 1
    wait_for(lambda: processed(database_url, log_id, 2), what="both deliveries attempted")
    wait_for(lambda: effects(effects_dir, log_id) == (1, 1), what="effects")
    assert transactional_writes(database_url, log_id) == 1


def test_retry_after_partial_failure_does_not_repeat_the_completed_handler(
    receiver: Any,
    start_worker: Any,
    worker_env: dict[str, str],
    queue: str,
    database_url: str,
    effects_dir: Path,
) -> None:
    """Handler 1 succeeds, handler 2 fails once: the retry runs only handler 2."""
    record = make_record("s")
    record["data"]["details"]["test_action_second"] = "fail_once"
    log_id = record["log_id"]
    start_worker([queue], worker_env)
    post(receiver, record)
    wait_for(lambda: processed(database_url, log_id, 2), what="retry processed")
    assert effects(effects_dir, log_id) == (1, 1)
    assert count_lines(effects_dir, "attempts.log", f"attempt {log_id}") == 1


def test_transactional_write_is_rolled_back_with_its_failure(
    receiver: Any,
    start_worker: Any,
    worker_env: dict[str, str],
    queue: str,
    database_url: str,
) -> None:
    """A transactional handler failing after its write leaves no row; its retry writes exactly one."""
    record = make_record("s")
    record["data"]["details"]["test_action_tx"] = "fail_after_write"
    log_id = record["log_id"]
    start_worker([queue], worker_env)
    post(receiver, record)
    wait_for(lambda: processed(database_url, log_id, 2), what="retry processed")
    assert transactional_writes(database_url, log_id) == 1


@both_queue_types
def test_worker_killed_mid_task_repeats_no_completed_effect(
    receiver: Any,
    start_worker: Any,
    worker_env: dict[str, str],
    queue: str,
    database_url: str,
    effects_dir: Path,
) -> None:
    """SIGKILL while handler 2 runs: the next worker skips handler 1 (done) and completes handler 2."""
    record = make_record("s")
    record["data"]["details"]["test_action_second"] = "block_once"
    log_id = record["log_id"]
    first = start_worker([queue], worker_env)
    post(receiver, record)
    wait_for(lambda: count_lines(effects_dir, "started.log", f"started-second {log_id}") == 1, what="block")
    first.kill()
    start_worker([queue], worker_env)
    wait_for(lambda: processed(database_url, log_id, 2), what="redelivery processed")
    assert effects(effects_dir, log_id) == (1, 1)
    assert transactional_writes(database_url, log_id) == 1


SCRIPTED = "tests.plugin_handlers.scripted_handler"
SECOND = "tests.plugin_handlers.second_handler"


def ledger_runs(database_url: str) -> dict[tuple[str, str], str]:
    """Every (log_id, handler) the ledger holds, with its state (claimed or done)."""
    with session_scope(database_url) as session:
        rows = session.execute(text("SELECT log_id, handler, state FROM handler_runs")).all()
    return {(log_id, handler): state for log_id, handler, state in rows}


def test_worker_killed_while_a_shared_commit_is_in_flight_loses_nothing_and_repeats_no_completed_effect(
    receiver: Any,
    start_worker: Any,
    worker_env: dict[str, str],
    queue: str,
    database_url: str,
    effects_dir: Path,
) -> None:
    """SIGKILL while a commit shared by several events' ledger writes is in flight (statements sent, COMMIT
    not): every effect that happened had its claim committed, the next worker processes every event, and
    no effect whose done mark had committed happens again."""
    records = [make_record("s") for _ in range(8)]
    threads = {**worker_env, "AUTH0_EVENTS_WORKER_POOL": "threads"}  # commits are shared only there
    pausing = {
        **threads,
        "AUTH0_EVENTS_PLUGINS": "tests.plugin_handlers,tests.pause_commit",
        "AUTH0_EVENTS_TEST_PAUSE_COMMIT": "1",
    }
    first = start_worker([queue], pausing, concurrency=8)
    post(receiver, *records)
    [line] = wait_for(lambda: _lines(effects_dir / "paused.log"), what="a shared commit paused")
    assert int(line.split()[1]) >= 2
    # Nothing may happen while the commit is paused; a caller released early would act within this time.
    time.sleep(2)
    first.kill()
    runs = ledger_runs(database_url)
    names = {"effect": SCRIPTED, "effect2": SECOND}
    before = {
        (record["log_id"], handler): count_lines(effects_dir, "effects.log", f"{prefix} {record['log_id']}")
        for record in records
        for prefix, handler in names.items()
    }
    # A claim is durable before the effect: no effect without its committed claim (or done mark).
    assert all(key in runs for key, count in before.items() if count), (before, runs)
    start_worker([queue], threads, concurrency=8)
    log_ids = [record["log_id"] for record in records]
    wait_for(lambda: all(_is_processed(database_url, i) for i in log_ids), 60, what="every event processed")
    for (log_id, handler), count in before.items():
        prefix = "effect" if handler == SCRIPTED else "effect2"
        after = count_lines(effects_dir, "effects.log", f"{prefix} {log_id}")
        if runs.get((log_id, handler)) == "done":
            assert after == count == 1, (log_id, handler)  # completed before the kill: not repeated
        else:
            assert after >= 1, (log_id, handler)  # lost nothing (repeated only if the mark was in flight)
    for record in records:
        assert transactional_writes(database_url, record["log_id"]) == 1


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def _is_processed(database_url: str, log_id: str) -> bool:
    row = event_row(database_url, log_id)
    return row is not None and row.state == "processed"
