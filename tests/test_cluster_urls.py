"""BROKER_URL listing a cluster's nodes (kombu's ``amqp://a;amqp://b``): accepted, shown without passwords,
and every process connects to the first node that answers.

The nodes that do not answer here are ports nothing listens on (a node that is down) and a relay that
never answers (a node whose machine is gone); the one that answers is the shared test broker's vhost.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.common import safe_broker_url
from kernel.broker_url import broker_nodes, broker_url_problem, hide_passwords
from kernel.settings import ConfigurationError, load_settings
from tests.helpers import ROOT, TEST_TOKEN, as_jsonl, free_port, make_record, take_messages
from tests.tcp_proxy import TcpProxy

CLI = str(Path(sys.executable).parent / "auth0-events")
SECRETS = ("first-secret", "second-secret", "third-secret")
CLUSTER = ";".join(
    f"amqp://auth0events:{secret}@rabbit{number}:5672/prod" for number, secret in enumerate(SECRETS, 1)
)


def down(broker_url: str) -> str:
    """``broker_url`` on a port nothing listens on: a node that is down."""
    return broker_url.replace(":5672/", f":{free_port()}/", 1)


def test_settings_accept_the_nodes_of_a_cluster() -> None:
    """Three nodes in kombu's failover form, as the compose cluster profile sets them."""
    assert load_settings(broker_url=CLUSTER).broker_url == CLUSTER
    assert broker_nodes(CLUSTER)[2] == "amqp://auth0events:third-secret@rabbit3:5672/prod"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (CLUSTER + ";", "node 4 of 4 is empty"),
        (";" + CLUSTER, "node 1 of 4 is empty"),
        (CLUSTER.replace(";", ";;", 1), "node 2 of 4 is empty"),
        (CLUSTER.replace("rabbit3:5672/prod", "rabbit3:5672/other"), "different virtual hosts"),
        (
            CLUSTER.replace("amqp://auth0events:second", "http://auth0events:second"),
            "node 2 of 3 is not an AMQP",
        ),
        ("amqp://auth0events:first-secret@:5672/prod", "the URL names no host"),
        ("amqp://auth0events:first-secret@rabbit1:port/prod", "the URL is not a valid URL"),
        ("rabbit1:5672", "the URL is not an AMQP URL"),
    ],
)
def test_settings_refuse_a_broken_node_list_without_showing_a_password(url: str, problem: str) -> None:
    """Each refusal names the node and the fault, and no password of any node."""
    assert problem in (broker_url_problem(url) or "")
    with pytest.raises(ConfigurationError) as refused:
        load_settings(broker_url=url)
    assert "BROKER_URL" in str(refused.value)
    assert problem in str(refused.value)
    assert not any(secret in str(refused.value) for secret in SECRETS)


def test_every_nodes_password_is_hidden_in_messages() -> None:
    """kombu's sanitizer alone hides only the first node's password."""
    shown = safe_broker_url(CLUSTER)
    assert shown == hide_passwords(CLUSTER)
    assert shown.count("auth0events:**@") == 3
    assert not any(secret in shown for secret in SECRETS)
    assert "rabbit1:5672/prod;amqp://auth0events:**@rabbit2" in shown


def command(broker_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``auth0-events <args>`` as an operator would, with ``broker_url``."""
    env = {**os.environ, "BROKER_URL": broker_url}
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)


@pytest.mark.parametrize("args", [("dlq", "list"), ("topology", "status")])
def test_a_command_reaches_the_first_node_that_answers(broker_url: str, args: tuple[str, ...]) -> None:
    """Two nodes down, the third answers: the command does its work (kombu counts each node it moves to
    as a retry, so one retry would have stopped at the second)."""
    nodes = f"{down(broker_url)};{down(broker_url)};{broker_url}"
    result = command(nodes, *args)
    assert result.returncode in (0, 1), result.stderr  # status exits 1 when a queue is missing
    assert "cannot reach the broker" not in result.stderr


def test_a_command_with_no_node_answering_names_them_all_without_passwords(broker_url: str) -> None:
    """Every node down: exit 3, naming each node with its password hidden."""
    nodes = ";".join(down(broker_url).replace("guest:guest", f"guest:{secret}") for secret in SECRETS)
    result = command(nodes, "dlq", "list")
    assert result.returncode == 3, result.stderr
    assert "cannot reach the broker" in result.stderr
    assert result.stderr.count("guest:**@127.0.0.1:") == 3
    assert not any(secret in result.stderr for secret in SECRETS)


@pytest.fixture
def silent_node() -> Iterator[TcpProxy]:
    """A node whose machine is gone: TCP connects, nothing ever answers."""
    with TcpProxy() as proxy:
        proxy.replies_flowing = False
        yield proxy


def test_the_receiver_is_ready_with_the_first_two_nodes_down(make_app: Any, broker_url: str) -> None:
    """/readyz connects through the third node; a batch is accepted and queued."""
    queue = f"test.failover.{os.urandom(4).hex()}"
    nodes = f"{down(broker_url)};{down(broker_url)};{broker_url}"
    client = make_app(broker_url=nodes, routes=f"s={queue}").test_client()
    assert client.get("/readyz").status_code == 200
    record = make_record("s")
    response = client.post("/webhooks/auth0", data=as_jsonl([record]), headers={"Authorization": TEST_TOKEN})
    assert response.status_code == 202, response.json
    assert make_app_queue(broker_url, queue) == [record]


def test_a_silent_first_node_leaves_time_for_the_others(
    make_app: Any, broker_url: str, silent_node: TcpProxy
) -> None:
    """The first node takes the connection but never answers (its machine is gone): the receiver gives it
    its share of the publish timeout, then connects to the next node, within the one timeout."""
    queue = f"test.failover.{os.urandom(4).hex()}"
    timeout = 3.0
    nodes = f"{silent_node.url(broker_url)};{down(broker_url)};{broker_url}"
    client = make_app(broker_url=nodes, routes=f"s={queue}", publish_timeout=timeout).test_client()
    record = make_record("s")
    started = time.monotonic()
    response = client.post("/webhooks/auth0", data=as_jsonl([record]), headers={"Authorization": TEST_TOKEN})
    assert response.status_code == 202, response.json
    assert time.monotonic() - started < timeout
    assert make_app_queue(broker_url, queue) == [record]


def make_app_queue(broker_url: str, queue: str) -> list[dict[str, Any]]:
    """The records now in ``queue`` of the test vhost, taken out."""
    from kombu import Connection

    with Connection(broker_url) as connection:
        return [message.decode()[0][0] for message in take_messages(connection, queue)]


def test_metrics_read_the_queues_through_the_first_node_that_answers(make_app: Any, broker_url: str) -> None:
    """/metrics with the first node down: broker_up is 1 and the queue gauges are there."""
    from prometheus_client.parser import text_string_to_metric_families

    app = make_app(broker_url=f"{down(broker_url)};{broker_url}")
    assert app.test_client().get("/readyz").status_code == 200  # the receiver declared its queues
    response = app.test_client().get("/metrics")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    assert [sample.value for sample in families["auth0_events_broker_up"].samples] == [1]
    assert families["auth0_events_queue_messages"].samples
