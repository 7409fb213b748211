"""`auth0-events topology declare` and `status` against the real RabbitMQ, each test on a vhost of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from amqp.exceptions import NotFound
from kombu import Connection, Exchange, Queue

from kernel.broker_status import declare_topology, queue_state
from kernel.topology import DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE
from tests.helpers import ROOT, free_port, wait_for

CLI = str(Path(sys.executable).parent / "auth0-events")
ROUTES = "s,ss,f=auth0.failed,fp=auth0.failed"
WORK_QUEUES = ["auth0.failed", "auth0.s", "auth0.ss"]
ALL_QUEUES = [*WORK_QUEUES, *(f"{name}.dlq" for name in WORK_QUEUES), "auth0.quarantine"]


@pytest.fixture
def vhost(new_vhost: str) -> Iterator[Connection]:
    """A kombu connection to the test's vhost."""
    with Connection(new_vhost) as connection:
        yield connection


def topology(broker_url: str, *args: str, routes: str = ROUTES) -> subprocess.CompletedProcess[str]:
    """Run `auth0-events topology ...` as an operator would, with its own broker and routes."""
    env = {**os.environ, "BROKER_URL": broker_url, "AUTH0_EVENTS_ROUTES": routes}
    return subprocess.run(
        [CLI, "topology", *args], capture_output=True, text=True, timeout=60, cwd=ROOT, env=env
    )


def exists(connection: Connection, queue: str) -> bool:
    """Whether ``queue`` exists, by a passive declare."""
    return queue_state(connection, queue).exists


def exchange_exists(connection: Connection, exchange: Exchange) -> bool:
    """Whether ``exchange`` exists with its type, by a passive declare."""
    with connection.channel() as channel:
        try:
            channel.exchange_declare(exchange.name, exchange.type, passive=True)
        except NotFound:
            return False
    return True


def publish(connection: Connection, exchange: Exchange, routing_key: str, count: int = 1) -> None:
    """Publish ``count`` messages on ``connection``, each confirmed; mandatory, so an unrouted one fails."""
    with Connection(
        connection.as_uri(include_password=True), transport_options={"confirm_publish": True}
    ) as c:
        producer = c.Producer()
        for number in range(count):
            producer.publish({"n": number}, exchange=exchange.name, routing_key=routing_key, mandatory=True)


def test_declare_creates_everything_on_a_fresh_vhost(new_vhost: str, vhost: Connection) -> None:
    """Both exchanges, every work queue bound and dead-lettering to its DLQ, and the quarantine queue."""
    result = topology(new_vhost, "declare", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert [d["name"] for d in report["declarations"] if d["kind"] == "queue"] == [
        "auth0.failed", "auth0.failed.dlq", "auth0.s", "auth0.s.dlq", "auth0.ss", "auth0.ss.dlq",
        "auth0.quarantine",
    ]  # fmt: skip
    assert exchange_exists(vhost, EVENTS_EXCHANGE)
    assert exchange_exists(vhost, DEAD_LETTER_EXCHANGE)
    assert all(exists(vhost, name) for name in ALL_QUEUES)

    # The bindings and dead-letter arguments work: routed in, rejected, dead-lettered to the DLQ.
    publish(vhost, EVENTS_EXCHANGE, "auth0.ss")
    publish(vhost, EVENTS_EXCHANGE, "auth0.quarantine")
    with vhost.channel() as channel:
        message = wait_for(lambda: Queue("auth0.ss").bind(channel).get(), 10, what="the routed message")
        message.reject(requeue=False)
    dead = wait_for(lambda: queue_state(vhost, "auth0.ss.dlq").messages, 10, what="the dead-lettered message")
    assert dead == 1
    assert queue_state(vhost, "auth0.quarantine").messages == 1


def test_declare_is_idempotent_and_keeps_messages(new_vhost: str, vhost: Connection) -> None:
    """Declaring again changes nothing: same report, exit 0, messages still queued."""
    first = topology(new_vhost, "declare", "--json")
    publish(vhost, EVENTS_EXCHANGE, "auth0.failed", count=3)
    second = topology(new_vhost, "declare", "--json")
    assert first.returncode == second.returncode == 0
    assert json.loads(first.stdout) == json.loads(second.stdout)
    assert queue_state(vhost, "auth0.failed").messages == 3


def test_queue_with_other_arguments_is_reported_and_the_rest_declared(
    new_vhost: str, vhost: Connection
) -> None:
    """A work queue made without the DLX arguments: named with RabbitMQ's reason, exit 1, rest declared."""
    with vhost.channel() as channel:
        Queue("auth0.s", EVENTS_EXCHANGE, routing_key="auth0.s", durable=True).bind(channel).declare()

    result = topology(new_vhost, "declare", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    [refused] = [d for d in report["declarations"] if not d["ok"]]
    assert refused["name"] == "auth0.s"
    assert refused["role"] == "work"
    assert refused["error"].startswith("PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange'")
    assert "auth0.s" in result.stderr
    assert "rabbitmqctl delete_queue" in result.stderr
    assert "Traceback" not in result.stderr
    assert all(exists(vhost, name) for name in ALL_QUEUES)
    assert exchange_exists(vhost, EVENTS_EXCHANGE)

    human = topology(new_vhost, "declare")
    assert human.returncode == 1
    assert "REFUSED   work       auth0.s  ->  auth0.events auth0.s: PRECONDITION_FAILED" in human.stdout
    assert human.stdout.count("declared  ") == len(ALL_QUEUES) - 1 + 2


def test_exchange_of_another_type_is_reported_and_queues_still_declared(vhost: Connection) -> None:
    """An events exchange that exists as `direct` is refused alone; every queue is declared and bound."""
    with vhost.channel() as channel:
        Exchange(EVENTS_EXCHANGE.name, type="direct", durable=True).bind(channel).declare()
    report = declare_topology(vhost, ["auth0.s"])
    assert [(d.kind, d.name) for d in report.refused] == [("exchange", "auth0.events")]
    assert "inequivalent arg 'type'" in str(report.refused[0].error)
    assert all(exists(vhost, name) for name in ("auth0.s", "auth0.s.dlq", "auth0.quarantine"))
    publish(vhost, EVENTS_EXCHANGE, "auth0.s")  # the binding exists: mandatory publish is routed
    assert queue_state(vhost, "auth0.s").messages == 1


def test_status_shows_depths_consumers_and_missing_queues(
    new_vhost: str, vhost: Connection, start_worker: Any
) -> None:
    """Depth and consumers per work queue, DLQ depth, quarantine; queues never declared are missing."""
    declare_topology(vhost, ["auth0.s", "auth0.ss"])
    publish(vhost, EVENTS_EXCHANGE, "auth0.ss", count=3)
    publish(vhost, DEAD_LETTER_EXCHANGE, "auth0.ss", count=2)
    publish(vhost, EVENTS_EXCHANGE, "auth0.quarantine")
    start_worker(["auth0.s"], env={"BROKER_URL": new_vhost, "AUTH0_EVENTS_ROUTES": "s,ss"})
    wait_for(lambda: queue_state(vhost, "auth0.s").consumers == 1, 30, what="the worker to consume auth0.s")

    result = topology(new_vhost, "status", "--json", routes="s,ss,f=auth0.failed")
    assert result.returncode == 1, "a configured queue is missing"
    assert "2 configured queue(s) missing" in result.stderr
    state = json.loads(result.stdout)
    by_name = {item["name"]: item for item in state["work_queues"]}
    assert by_name["auth0.s"]["messages"] == 0
    assert by_name["auth0.s"]["consumers"] == 1
    assert by_name["auth0.ss"]["messages"] == 3
    assert by_name["auth0.ss"]["consumers"] == 0
    assert by_name["auth0.ss"]["dlq"] == {
        "name": "auth0.ss.dlq",
        "messages": 2,
        "consumers": 0,
        "exists": True,
    }
    assert by_name["auth0.failed"]["exists"] is False
    assert by_name["auth0.failed"]["dlq"]["exists"] is False
    assert state["quarantine"] == {"name": "auth0.quarantine", "messages": 1, "consumers": 0, "exists": True}
    assert state["missing"] == ["auth0.failed", "auth0.failed.dlq"]

    table = topology(new_vhost, "status", routes="s,ss,f=auth0.failed").stdout.splitlines()
    assert table[0].split() == ["queue", "messages", "consumers", "dlq", "messages"]
    assert table[1].split() == ["auth0.failed", "missing", "missing"]
    assert table[2].split() == ["auth0.s", "0", "1", "0"]
    assert table[3].split() == ["auth0.ss", "3", "0", "2"]
    assert table[4].split() == ["auth0.quarantine", "1", "0"]

    complete = topology(new_vhost, "status", routes="s,ss")
    assert complete.returncode == 0
    assert complete.stderr == ""


@pytest.mark.process
def test_unreachable_broker_exits_3() -> None:
    """No broker at BROKER_URL: both commands exit 3 naming it (password hidden), without a traceback."""
    url = f"amqp://guest:secret-pw@127.0.0.1:{free_port()}//"
    for command in ("declare", "status"):
        result = topology(url, command)
        assert result.returncode == 3
        assert "cannot reach the broker at amqp://guest:**@127.0.0.1:" in result.stderr
        assert "secret-pw" not in result.stderr
        assert "Traceback" not in result.stderr


def test_bad_configuration_and_options_are_clear_errors(new_vhost: str) -> None:
    """A wrong AUTH0_EVENTS_ROUTES exits 1 naming it; an unknown option exits 2; --help documents exits."""
    bad_routes = topology(new_vhost, "declare", routes="s=amq.nope")
    assert bad_routes.returncode == 1
    assert "AUTH0_EVENTS_ROUTES" in bad_routes.stderr
    assert "Traceback" not in bad_routes.stderr
    unknown = topology(new_vhost, "status", "--depth")
    assert unknown.returncode == 2
    assert "No such option '--depth'" in unknown.stderr
    assert "Exit 3" in topology(new_vhost, "declare", "--help").stdout
    assert "missing" in topology(new_vhost, "status", "--help").stdout
