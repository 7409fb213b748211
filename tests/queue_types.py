"""Run the core pipeline tests on classic and on quorum queues: a vhost of quorum queues, and its worker.

A test takes the ``queue_type`` fixture (parametrized with ``both_queue_types``); for ``quorum`` the
receivers it makes, the workers it starts and its ``broker`` connection use a vhost of their own, with
AUTH0_EVENTS_QUEUE_TYPE=quorum (the run's vhost holds classic queues; a queue's type cannot change).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import DEFAULT_QUEUES, WorkerProcess, private_vhost, use_broker

QUEUE_TYPES = ("classic", "quorum")
both_queue_types = pytest.mark.parametrize("queue_type", QUEUE_TYPES, indirect=True)


@pytest.fixture(scope="session")
def quorum_broker_url(broker_url: str) -> Iterator[str]:
    """A private vhost beside the run's, for quorum queues; deleted at the end."""
    with private_vhost("auth0-events-test-quorum") as url:
        yield url


@pytest.fixture
def queue_type(request: pytest.FixtureRequest) -> Iterator[str]:
    """``classic`` unless parametrized; ``quorum`` points this test's processes at the quorum vhost."""
    kind: str = getattr(request, "param", "classic")
    if kind != "quorum":
        yield kind
        return
    run_url = os.environ["BROKER_URL"]
    os.environ["AUTH0_EVENTS_QUEUE_TYPE"] = "quorum"
    use_broker(request.getfixturevalue("quorum_broker_url"))
    try:
        yield kind
    finally:
        del os.environ["AUTH0_EVENTS_QUEUE_TYPE"]
        use_broker(run_url)


@pytest.fixture(scope="session")
def quorum_session_worker(
    quorum_broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """The quorum vhost's counterpart of ``session_worker``."""
    log_path = tmp_path_factory.mktemp("workers") / "quorum-session-worker.log"
    env = {"BROKER_URL": quorum_broker_url, "AUTH0_EVENTS_QUEUE_TYPE": "quorum"}
    worker = WorkerProcess(DEFAULT_QUEUES, f"quorum-{uuid.uuid4().hex[:6]}", log_path, env, concurrency=2)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def pipeline_worker(request: pytest.FixtureRequest, queue_type: str) -> Any:
    """The shared worker of the test's queue type, consuming every default queue."""
    return request.getfixturevalue("session_worker" if queue_type == "classic" else "quorum_session_worker")
