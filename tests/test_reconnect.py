"""A broker connection lost between or during requests is reconnected within the publish timeout: no 503."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from amqp.basic_message import Message

from app.publisher import _Batch
from kernel.routing import QUARANTINE_QUEUE
from tests.helpers import AUTH, as_jsonl, make_record, take_messages, wait_for
from tests.tcp_proxy import TcpProxy
from tests.test_effects_once import effects, processed


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    """A TCP proxy to the local RabbitMQ that the test can break."""
    with TcpProxy() as proxy:
        yield proxy


@pytest.fixture
def queue() -> str:
    """A queue of this test's own."""
    return f"test.reconnect.{uuid.uuid4().hex[:8]}"


@dataclass
class ConfirmsLost:
    """A receiver whose broker connection, through ``proxy``, loses the confirms of a request."""

    client: Any
    proxy: TcpProxy
    thread: ThreadPoolExecutor

    def post(self, taken: Callable[[], bool], *records: dict[str, Any], request_id: str = "") -> Any:
        """POST with the broker's replies black-holed; once ``taken()`` (the broker holds the messages),
        cut the connection, their confirms lost with it, and return the answer."""
        self.proxy.replies_flowing = False
        answer = self.thread.submit(post, self.client, *records, request_id=request_id)
        wait_for(taken, 10, what="the broker to take the first copies")
        self.proxy.cut(restore_replies=True)
        return answer.result(timeout=30)


@pytest.fixture
def confirms_lost(make_app: Any, broker_url: str, proxy: TcpProxy, queue: str) -> Iterator[ConfirmsLost]:
    """A receiver routing successful logins to ``queue``, through ``proxy``."""
    client = make_app(broker_url=proxy.url(broker_url), routes=f"s={queue}").test_client()
    # One thread makes every request, as a gunicorn worker would (a link per thread); its link is
    # connected and the topology declared before the replies go.
    with ThreadPoolExecutor(max_workers=1) as thread:
        assert thread.submit(client.get, "/readyz").result().status_code == 200
        yield ConfirmsLost(client, proxy, thread)


def post(client: Any, *records: dict[str, Any], request_id: str = "") -> Any:
    """POST records as JSON Lines with the test token (and a request id, when given)."""
    headers = {**AUTH, "X-Request-Id": request_id} if request_id else AUTH
    return client.post("/webhooks/auth0", data=as_jsonl(records), headers=headers)


def depth(broker: Any, queue: str) -> int:
    """How many messages ``queue`` holds now."""
    return int(broker.default_channel.queue_declare(queue, passive=True).message_count)


def test_a_connection_cut_between_requests_is_reconnected_before_publishing(
    make_app: Any, broker_url: str, proxy: TcpProxy, broker: Any, queue: str
) -> None:
    """The connection dies while idle (broker restart, NAT or load balancer drop): the next request finds
    it dead before writing anything, reconnects, and gets its 202; each event is in its queue once, as
    accepted."""
    client = make_app(broker_url=proxy.url(broker_url), routes=f"s={queue}").test_client()
    first, second = make_record("s"), [make_record("s"), make_record("s")]
    assert post(client, first).status_code == 202
    proxy.cut()
    response = post(client, *second)
    assert response.status_code == 202, response.json
    messages = take_messages(broker, queue)
    assert [message.decode()[0][0] for message in messages] == [first, *second]
    assert len({message.headers["id"] for message in messages}) == 3


def test_a_connection_lost_before_the_confirms_publishes_again_what_was_not_confirmed(
    confirms_lost: ConfirmsLost, broker: Any, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    """RabbitMQ took the messages but its confirms were lost with the connection: the receiver reconnects
    and publishes them again, under new task ids (two deliveries of one task id could both run a handler;
    of one log_id under two task ids, the ledger runs it once). The quarantine message goes again too,
    with the same request id and records. The receiver logs the task ids of the copies it confirmed."""
    caplog.set_level(logging.INFO, logger="app.receiver")
    records = [make_record("s"), make_record("s")]
    quarantined_before = depth(broker, QUARANTINE_QUEUE)
    request_id = uuid.uuid4().hex

    def all_taken() -> bool:
        return depth(broker, queue) == 2 and depth(broker, QUARANTINE_QUEUE) == quarantined_before + 1

    response = confirms_lost.post(all_taken, *records, {"log_id": "no-data"}, request_id=request_id)
    assert response.status_code == 202, response.json
    assert response.json["accepted"] == 2
    messages = take_messages(broker, queue)
    assert [message.decode()[0][0] for message in messages] == records * 2
    assert len({message.headers["id"] for message in messages}) == 4
    logged = [
        getattr(line, "task_id", None) for line in caplog.records if line.msg.startswith("accepted event")
    ]
    assert logged == [message.headers["id"] for message in messages[2:]]
    reports = [m for m in take_messages(broker, QUARANTINE_QUEUE) if m.headers["x-request-id"] == request_id]
    assert len(reports) == 2
    assert reports[0].body == reports[1].body


@pytest.mark.worker
def test_a_republished_event_has_its_effects_once(
    confirms_lost: ConfirmsLost,
    broker: Any,
    queue: str,
    start_worker: Any,
    database_url: str,
    effects_dir: Path,
) -> None:
    """Both copies of a republished event run at once in two worker processes: one effect per handler."""
    record = make_record("s")
    record["data"]["details"]["test_action_second"] = "slow"  # both copies in flight together
    response = confirms_lost.post(lambda: depth(broker, queue) == 1, record)
    assert response.status_code == 202
    assert depth(broker, queue) == 2
    env = {"AUTH0_EVENTS_ROUTES": f"s={queue}", "DATABASE_URL": database_url}
    worker = start_worker([queue], env, concurrency=2)
    log_id = record["log_id"]
    wait_for(lambda: worker.log_text().count("succeeded in") == 2, what="both copies handled")
    assert processed(database_url, log_id, 2)
    assert effects(effects_dir, log_id) == (1, 1)


def test_after_a_lost_connection_only_what_was_not_confirmed_goes_again() -> None:
    """The messages whose delivery tags were not acked stay, with those never sent; the quarantine
    message stays only while unconfirmed, so a confirmed one is never duplicated."""
    report = Message(b"{}")
    batch = _Batch.of("req-1", cast(Any, [None] * 5), report)  # what the messages are does not matter here
    batch.tags, batch.report_tag = [7, 8, 9], 10  # the first three and the report were sent
    batch.keep_unconfirmed(outstanding={8})
    assert (batch.pending, batch.report, len(batch)) == ([1, 3, 4], None, 3)
    assert (batch.tags, batch.report_tag) == ([], None)  # type: ignore[comparison-overlap]  # reset by the call

    batch.tags, batch.report_tag = [11, 12], 13
    batch.report = report
    batch.keep_unconfirmed(outstanding={12, 13})
    assert (batch.pending, batch.report, len(batch)) == ([3, 4], report, 3)

    batch.tags = [14]  # the connection went before the rest was sent
    batch.keep_unconfirmed(outstanding=set())
    assert (batch.pending, batch.report) == ([4], report)
