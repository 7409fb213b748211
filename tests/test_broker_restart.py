"""A restart of RabbitMQ costs no 503; a broker that stays away is a 503 with Retry-After within the timeout.

Against a private node (tests/rabbitmq_node.py), never the shared broker other tests and CI use.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from tests import rabbitmq_node
from tests.helpers import make_record, post_batch, take_messages
from tests.rabbitmq_node import NodeError, RabbitNode

pytestmark = [pytest.mark.broker, pytest.mark.process]  # a RabbitMQ node of its own

PUBLISH_TIMEOUT = 8.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """A RabbitMQ node of this module's own, removed afterwards."""
    node = RabbitNode(tmp_path_factory.mktemp("rabbitmq-node"))
    try:
        node.start()
    except NodeError as exc:
        node.remove()
        pytest.fail(f"cannot start a private RabbitMQ node: {exc}", pytrace=False)
    yield node
    node.remove()


@pytest.fixture
def running(node: RabbitNode) -> Iterator[RabbitNode]:
    """The node, serving; started again after the test if the test left it stopped."""
    yield node
    if not node.serving():
        node.start_app()


@pytest.fixture
def queue() -> str:
    """A queue of this test's own."""
    return f"test.restart.{uuid.uuid4().hex[:8]}"


@pytest.fixture
def client(make_app: Any, running: RabbitNode, queue: str) -> Any:
    """A receiver publishing to the private node."""
    app = make_app(broker_url=running.url, routes=f"s={queue}", publish_timeout=PUBLISH_TIMEOUT)
    return app.test_client()


def queued(node: RabbitNode, queue: str) -> list[dict[str, Any]]:
    """Take the records now in ``queue``."""
    with Connection(node.url) as connection:
        return [message.decode()[0][0] for message in take_messages(connection, queue)]


def test_the_request_after_a_broker_restart_is_accepted(client: Any, running: RabbitNode, queue: str) -> None:
    """RabbitMQ restarted between two requests: the second one reconnects and gets its 202."""
    first, second = make_record("s"), make_record("s")
    assert post_batch(client, first).status_code == 202
    running.restart()
    response = post_batch(client, second)
    assert response.status_code == 202, response.json
    assert queued(running, queue) == [first, second]


def test_a_request_during_a_short_outage_waits_for_the_broker(
    client: Any, running: RabbitNode, queue: str
) -> None:
    """The broker is down when the request comes and back within the publish timeout: 202, not 503."""
    first, second = make_record("s"), make_record("s")
    assert post_batch(client, first).status_code == 202
    running.stop_app()
    back = threading.Timer(0.5, running.start_app)
    back.start()
    try:
        response = post_batch(client, second)
    finally:
        back.join()
    assert response.status_code == 202, response.json
    assert queued(running, queue) == [first, second]


def test_a_broker_that_stays_away_is_a_503_within_the_publish_timeout(
    make_app: Any, running: RabbitNode, queue: str
) -> None:
    """The broker is stopped: the request ends within AUTH0_EVENTS_PUBLISH_TIMEOUT with a 503 and
    Retry-After (Auth0 sends the batch again); /readyz answers 503 at once."""
    timeout = 2.0
    client = make_app(broker_url=running.url, routes=f"s={queue}", publish_timeout=timeout).test_client()
    assert post_batch(client, make_record("s")).status_code == 202
    running.stop_app()
    started = time.monotonic()
    response = post_batch(client, make_record("s"))
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert response.json["error"] == "broker_unavailable"
    assert timeout - 0.5 < elapsed < timeout + 0.5
    started = time.monotonic()
    assert client.get("/readyz").status_code == 503
    assert time.monotonic() - started < 2.0


def test_a_node_that_cannot_start_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without rabbitmq-server, start() raises NodeError saying what to install, and leaves nothing."""
    monkeypatch.setattr(rabbitmq_node, "SERVER", tmp_path / "no-such-rabbitmq-server")
    node = RabbitNode(tmp_path / "node")
    with pytest.raises(NodeError, match="install Debian's rabbitmq-server"):
        node.start()
    node.remove()
    assert not node.directory.exists()
