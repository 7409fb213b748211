"""Values no database stores as sent, end to end: a real worker on SQLite and on PostgreSQL.

An over-long user name, IP or client id, a NUL or a lone surrogate in a string: the worker stores what the
columns hold, runs the handlers once and marks the event processed, on the first attempt. A record it can
never store (a log_id over 128 characters, NaN or Infinity, which the receiver quarantines but anyone with
broker access can still publish) is dead-lettered at once, without retries, with the reason.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from kernel.storage.db import session_scope
from kernel.storage.models import Event
from kernel.topology import work_queue
from kernel.wire import TASK_NAME
from tasks.celery_app import app as celery_app
from tests.helpers import TEST_TOKEN, as_jsonl, count_lines, make_record, take_messages, task_kwargs, wait_for

pytestmark = pytest.mark.worker

LONG = "x" * 299 + "y"
REPLACED = "\ufffd"
#: Field values as sent, and what the event archive's indexed column holds for them.
STORED_VALUES: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "long user_name": ({"user_name": LONG}, {"user_name": LONG[:255]}),
    "long user_id": ({"user_id": LONG}, {"user_id": LONG[:255]}),
    "long client_id": ({"client_id": LONG}, {"client_id": LONG[:255]}),
    "long ip": ({"ip": "1" * 65}, {"ip": "1" * 64}),
    "NUL in user_name": ({"user_name": "eve\x00@example.com"}, {"user_name": f"eve{REPLACED}@example.com"}),
    "NUL in a detail": ({"details": {"note\x00": "a\x00b"}}, {}),
    "lone surrogate in user_name": ({"user_name": "eve\ud800"}, {"user_name": f"eve{REPLACED}"}),
    "lone surrogate in a detail": ({"details": {"note": "\udfff"}}, {}),
}


@pytest.fixture
def queue() -> str:
    """A queue of this test's own, every event code routed to it."""
    return f"test.storage.{uuid.uuid4().hex[:8]}"


@pytest.fixture
def worker(start_worker: Any, queue: str, database_url: str) -> Any:
    """A real worker on ``database_url`` consuming ``queue``."""
    return start_worker([queue], {"DATABASE_URL": database_url, "AUTH0_EVENTS_ROUTES": f"*={queue}"})


def stored(database_url: str, log_id: str) -> Event | None:
    """The archived event of ``log_id``, once it is processed."""
    with session_scope(database_url) as session:
        event = session.scalar(select(Event).where(Event.log_id == log_id))
    return event if event is not None and event.state == "processed" else None


def test_unstorable_text_is_stored_as_the_columns_hold_it_and_handled_once(
    worker: Any, make_app: Any, queue: str, database_url: str, effects_dir: Path
) -> None:
    """Each value through the receiver: processed on the first attempt, the indexed copy cut, raw whole."""
    records = {name: make_record("f", **data) for name, (data, _) in STORED_VALUES.items()}
    client = make_app(routes=f"*={queue}").test_client()
    response = client.post(
        "/webhooks/auth0", data=as_jsonl(records.values()), headers={"Authorization": TEST_TOKEN}
    )
    assert response.json["accepted"] == len(records), response.json
    raw = {}
    for name, record in records.items():
        log_id = record["log_id"]
        event = wait_for(lambda i=log_id: stored(database_url, i), 30, 0.1, f"{name} to be processed")  # type: ignore[misc]  # a default argument binds the loop turn's value
        for column, value in STORED_VALUES[name][1].items():
            assert getattr(event, column) == value, name
        assert count_lines(effects_dir, "attempts.log", f"attempt {log_id}") == 1, name
        assert count_lines(effects_dir, "effects.log", f"effect {log_id}") == 1, name
        assert event is not None
        assert event.attempts == 1
        raw[name] = event.raw["data"]
    assert "retrying event" not in worker.log_text()
    assert raw["long user_name"]["user_name"] == LONG
    assert raw["long ip"]["ip"] == "1" * 65
    assert raw["NUL in a detail"]["details"] == {f"note{REPLACED}": f"a{REPLACED}b"}
    assert raw["lone surrogate in a detail"]["details"] == {"note": REPLACED}


def publish(queue: str, record: dict[str, Any]) -> None:
    """Publish a task message for ``record`` straight to ``queue``, as anyone with broker access can."""
    celery_app.send_task(
        TASK_NAME,
        args=(record,),
        kwargs={"event_type": record["data"]["type"], "log_id": record["log_id"]},
        queue=work_queue(queue),
    )


def test_long_type_is_cut_in_the_archive_and_handled(
    worker: Any, queue: str, database_url: str, effects_dir: Path
) -> None:
    """An event code longer than the 64-character column: the archive holds its first 64 characters."""
    record = make_record("t" * 65)
    publish(queue, record)
    event = wait_for(lambda: stored(database_url, record["log_id"]), 30, 0.1, "the event to be processed")
    assert event is not None
    assert event.type == "t" * 64
    assert event.raw["data"]["type"] == "t" * 65
    assert count_lines(effects_dir, "effects.log", f"effect {record['log_id']}") == 1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"log_id": "9" * 129}, "'log_id' is longer than 128 characters"),
        ({"details": {"score": float("nan")}}, "a number JSON cannot carry"),
        ({"details": {"score": float("inf")}}, "a number JSON cannot carry"),  # what 1e999 parses to
    ],
    ids=["log_id-129", "NaN", "1e999"],
)
def test_record_no_database_stores_is_dead_lettered_at_once(
    worker: Any, queue: str, broker: Any, effects_dir: Path, data: dict[str, Any], reason: str
) -> None:
    """Published straight to the queue: dead-lettered on the first attempt, no handler run, reason logged.

    (The worker's message guard may refuse NaN and Infinity before the task runs, with the same reason.)
    """
    record = make_record("f", **data)
    log_id = record["log_id"]
    publish(queue, record)
    [message] = wait_for(lambda: take_messages(broker, f"{queue}.dlq"), 30, 0.1, "the dead-lettered message")
    assert task_kwargs(message)["log_id"] == log_id
    assert message.headers["retries"] == 0
    assert count_lines(effects_dir, "attempts.log", f"attempt {log_id}") == 0
    log = wait_for(lambda: reason in worker.log_text() and worker.log_text(), 10, 0.1, "the reason logged")
    assert isinstance(log, str)
    assert "retrying event" not in log
