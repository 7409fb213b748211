"""When RabbitMQ cannot confirm a batch the receiver answers 503 with Retry-After, then recovers alone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import make_record, post_batch, take_messages, task_kwargs
from tests.tcp_proxy import TcpProxy


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    """A TCP proxy to the local RabbitMQ that the test can break."""
    with TcpProxy() as proxy:
        yield proxy


def test_unreachable_broker_is_503_with_retry_after(make_app: Any) -> None:
    """Nothing listening on the broker port: connecting is tried again until AUTH0_EVENTS_PUBLISH_TIMEOUT
    (a broker restarting comes back in seconds), then 503, Retry-After, a JSON reason; /healthz stays 200
    and /readyz answers 503 at once."""
    client = make_app(
        broker_url="amqp://guest:guest@127.0.0.1:1//", retry_after_seconds=17, publish_timeout=1
    ).test_client()
    started = time.monotonic()
    response = post_batch(client, make_record("s"))
    assert 0.5 < time.monotonic() - started < 1.5
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "17"
    assert response.json["error"] == "broker_unavailable"
    assert client.get("/healthz").status_code == 200
    started = time.monotonic()
    assert client.get("/readyz").status_code == 503
    assert time.monotonic() - started < 0.5


def test_receiver_reconnects_after_the_broker_comes_back(
    make_app: Any, broker_url: str, proxy: TcpProxy, broker: Any
) -> None:
    """Connection cut and broker refusing for longer than the publish timeout: 503; broker back: the next
    request is confirmed, no restart."""
    client = make_app(
        broker_url=proxy.url(broker_url), routes="s=test.reconnect", publish_timeout=1
    ).test_client()
    first, lost, third = make_record("s"), make_record("s"), make_record("s")
    assert post_batch(client, first).status_code == 202
    proxy.refusing = True
    proxy.cut()
    assert post_batch(client, lost).status_code == 503
    assert client.get("/readyz").status_code == 503
    proxy.refusing = False
    assert client.get("/readyz").status_code == 200
    assert post_batch(client, third).status_code == 202
    ids = [task_kwargs(m)["log_id"] for m in take_messages(broker, "test.reconnect")]
    assert ids == [first["log_id"], third["log_id"]]


def test_unanswered_confirms_time_out_into_503(make_app: Any, broker_url: str, proxy: TcpProxy) -> None:
    """The broker takes the messages but never confirms: 503 after AUTH0_EVENTS_PUBLISH_TIMEOUT."""
    client = make_app(
        broker_url=proxy.url(broker_url), routes="s=test.blackhole", publish_timeout=1
    ).test_client()
    assert client.get("/readyz").status_code == 200
    proxy.replies_flowing = False
    response = post_batch(client, make_record("s"))
    assert response.status_code == 503
    assert "unconfirmed after 1" in response.json["message"]


def test_nacked_publish_is_503(broker_url: str, make_app: Any) -> None:
    """A queue that refuses messages (overflow reject-publish) nacks them: 503, not a false 202."""
    client = make_app(routes="s=test.full").test_client()
    response = post_batch(client, make_record("s"), make_record("s"))
    assert response.status_code == 503
    assert "basic.nack" in response.json["message"]


def test_message_to_a_deleted_queue_is_503_then_queue_is_redeclared(make_app: Any, broker: Any) -> None:
    """An unroutable message (queue deleted under us) is returned, not silently dropped, and the next
    request redeclares the topology."""
    client = make_app(routes="s=test.deleted").test_client()
    assert post_batch(client, make_record("s")).status_code == 202
    broker.default_channel.queue_delete("test.deleted")
    response = post_batch(client, make_record("s"))
    assert response.status_code == 503
    assert "no queue bound" in response.json["message"]
    record = make_record("s")
    assert post_batch(client, record).status_code == 202
    assert [task_kwargs(m)["log_id"] for m in take_messages(broker, "test.deleted")] == [record["log_id"]]


def test_quarantine_message_to_a_deleted_queue_is_503_then_queue_is_redeclared(
    make_app: Any, broker: Any
) -> None:
    """The request's quarantine message is mandatory and confirmed with its events: with the quarantine
    queue deleted under us it comes back (503, so the bad records are not lost); the next request
    redeclares the queue and keeps them."""
    client = make_app(routes="s=test.quarantine-deleted").test_client()
    assert post_batch(client, make_record("s")).status_code == 202
    broker.default_channel.queue_delete("auth0.quarantine")
    response = post_batch(client, make_record("s"), {"log_id": "no-data"})
    assert response.status_code == 503
    assert "no queue bound for routing key 'auth0.quarantine'" in response.json["message"]
    assert post_batch(client, make_record("s"), {"log_id": "no-data"}).status_code == 202
    [message] = [m.decode() for m in take_messages(broker, "auth0.quarantine")]
    assert [entry["record"] for entry in message["records"]] == [{"log_id": "no-data"}]
    take_messages(broker, "test.quarantine-deleted")
