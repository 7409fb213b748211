"""The project's Celery app runs in celery.contrib.pytest's embedded worker, with no Docker.

This is the fixture a plug-in author uses to test a handler in-process: pytest-celery's Docker-based
``celery_worker`` is switched off (-p no:celery), so celery.contrib.pytest's thread worker is the one here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Producer

from tasks.consumer import GuardedConsumer
from tests.helpers import TEST_TOKEN, as_jsonl, count_lines, make_record, take_messages, wait_for


@pytest.fixture
def celery_app() -> Iterator[Any]:
    """The project's own app (broker and queues from the test environment) instead of a test app."""
    import tests.plugin_handlers  # noqa: F401 - registers the handlers in this process
    from tasks import app

    heartbeat = app.conf.broker_heartbeat
    # As celery.contrib.pytest's own test app: heartbeats keep the worker thread from stopping in time.
    app.conf.broker_heartbeat = 0
    yield app
    app.conf.broker_heartbeat = heartbeat


@pytest.fixture
def celery_worker_parameters() -> dict[str, Any]:
    """Consume only the queue no real worker of the test run consumes."""
    return {"queues": ("auth0.embedded",), "perform_ping_check": False}


def test_embedded_worker_processes_an_event_from_the_receiver(
    celery_worker: Any, client: Any, effects_dir: Path
) -> None:
    """An event routed to auth0.embedded is handled by the in-process worker thread."""
    assert type(celery_worker).__module__.startswith("celery.contrib.testing")
    record = make_record("sapi")
    response = client.post("/webhooks/auth0", data=as_jsonl([record]), headers={"Authorization": TEST_TOKEN})
    assert response.json["accepted"] == 1
    wait_for(
        lambda: count_lines(effects_dir, "effects.log", f"effect {record['log_id']}") == 1,
        what="embedded worker effect",
    )


def test_the_embedded_worker_refuses_what_is_not_a_task_message_too(
    celery_worker: Any, broker: Any, client: Any, effects_dir: Path
) -> None:
    """Plug-in tests run the same check: a null body goes to auth0.embedded.dlq with the reason."""
    assert isinstance(celery_worker.consumer, GuardedConsumer)
    task_id = str(uuid.uuid4())
    with broker.channel() as channel:
        Producer(channel).publish(
            b"null",
            exchange="auth0.events",
            routing_key="auth0.embedded",
            headers={"task": "auth0_events.handle_event", "id": task_id},
            content_type="application/json",
            content_encoding="utf-8",
        )
    found: list[Any] = []

    def refused() -> Any:
        found.extend(take_messages(broker, "auth0.embedded.dlq"))
        return next((m for m in found if m.headers.get("id") == task_id), None)

    letter = wait_for(refused, what="the null body in auth0.embedded.dlq")
    assert letter.headers["x-auth0-events-refused"].startswith("its body is a JSON null")
    test_embedded_worker_processes_an_event_from_the_receiver(celery_worker, client, effects_dir)
