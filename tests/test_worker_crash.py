"""A SIGKILL mid-task loses no event, whether it hits the whole worker or only the pool child."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    AUTH,
    MAX_RETRIES,
    as_jsonl,
    count_lines,
    make_record,
    take_messages,
    task_kwargs,
    wait_for,
    with_action,
)
from tests.queue_types import both_queue_types

pytestmark = pytest.mark.worker


@pytest.fixture
def crash_queue() -> str:
    """A queue of this test's own, so only its dedicated workers consume it."""
    return f"test.crash.{uuid.uuid4().hex[:8]}"


@pytest.fixture
def receiver(make_app: Any, crash_queue: str) -> Any:
    """A receiver routing successful logins to the crash queue."""
    return make_app(routes=f"s={crash_queue}").test_client()


def routes_env(queue: str, pool: str = "threads") -> dict[str, str]:
    """Worker environment whose configuration knows the crash queue, with the given pool."""
    return {"AUTH0_EVENTS_ROUTES": f"s={queue}", "AUTH0_EVENTS_WORKER_POOL": pool}


def post(client: Any, record: dict[str, Any]) -> None:
    """POST one record and insist it was accepted."""
    assert client.post("/webhooks/auth0", data=as_jsonl([record]), headers=AUTH).status_code == 202


@both_queue_types
def test_worker_killed_mid_task_is_processed_by_the_next_worker(
    receiver: Any, crash_queue: str, start_worker: Any, effects_dir: Path
) -> None:
    """SIGKILL of the worker and its children mid-task: RabbitMQ redelivers, a new worker processes it."""
    record = with_action(make_record("s"), "block_once")
    log_id = record["log_id"]
    first = start_worker([crash_queue], routes_env(crash_queue))
    post(receiver, record)
    wait_for(lambda: count_lines(effects_dir, "started.log", f"started {log_id}") == 1, what="task start")
    first.kill()
    second = start_worker([crash_queue], routes_env(crash_queue))
    wait_for(lambda: count_lines(effects_dir, "effects.log", f"effect {log_id}") == 1, what="effect")
    assert count_lines(effects_dir, "attempts.log", f"attempt {log_id}") == 2
    assert "worker died while processing the event" in second.log_text()


@both_queue_types
def test_pool_child_killed_mid_task_is_processed(
    receiver: Any, crash_queue: str, start_worker: Any, effects_dir: Path
) -> None:
    """SIGKILL of only the pool child (as the OOM killer does): the event is requeued and processed.

    The prefork pool (AUTH0_EVENTS_WORKER_POOL=prefork); the threads pool has no child to lose.
    """
    record = with_action(make_record("s"), "kill_child_once")
    log_id = record["log_id"]
    worker = start_worker([crash_queue], routes_env(crash_queue, "prefork"))
    post(receiver, record)
    wait_for(lambda: count_lines(effects_dir, "effects.log", f"effect {log_id}") == 1, what="effect")
    assert count_lines(effects_dir, "attempts.log", f"attempt {log_id}") == 2
    assert "WorkerLostError" in worker.log_text() or "exited prematurely" in worker.log_text()


@both_queue_types
def test_event_that_kills_its_worker_every_time_ends_in_the_dlq(
    receiver: Any, crash_queue: str, start_worker: Any, broker: Any, effects_dir: Path
) -> None:
    """A poison event that always kills its pool child is dead-lettered after the retries, not looped."""
    record = with_action(make_record("s"), "kill_child_always")
    log_id = record["log_id"]
    worker = start_worker([crash_queue], routes_env(crash_queue, "prefork"))
    post(receiver, record)
    [message] = wait_for(lambda: take_messages(broker, f"{crash_queue}.dlq"), 60, 0.2, "poison in DLQ")
    assert task_kwargs(message)["log_id"] == log_id
    assert count_lines(effects_dir, "attempts.log", f"attempt {log_id}") == MAX_RETRIES + 1
    assert count_lines(effects_dir, "effects.log", f"effect {log_id}") == 0
    assert f"gave up after {MAX_RETRIES} retries: worker died" in worker.log_text()
    assert worker.process is not None
    assert worker.process.poll() is None


def test_threads_worker_ends_when_a_task_passes_the_hard_time_limit_and_the_event_is_processed_after(
    receiver: Any, crash_queue: str, start_worker: Any, effects_dir: Path
) -> None:
    """The threads pool cannot kill a stuck handler's thread: past the hard limit the worker exits (70),
    RabbitMQ redelivers, and the next worker processes the event (the death counted as an attempt)."""
    record = with_action(make_record("s"), "block_once")
    log_id = record["log_id"]
    env = {**routes_env(crash_queue), "AUTH0_EVENTS_TASK_TIME_LIMIT": "18"}
    first = start_worker([crash_queue], env)
    post(receiver, record)
    wait_for(lambda: first.process is not None and first.process.poll() is not None, 60, 0.2, "the exit")
    assert first.process is not None
    assert first.process.returncode == 70
    assert "past the soft time limit of 3 s" in first.log_text()
    assert "past the hard time limit of 18 s" in first.log_text()
    start_worker([crash_queue], routes_env(crash_queue))
    wait_for(lambda: count_lines(effects_dir, "effects.log", f"effect {log_id}") == 1, what="effect")
    assert count_lines(effects_dir, "attempts.log", f"attempt {log_id}") == 2
