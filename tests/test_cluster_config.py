"""docker-compose.yml's cluster profile, deploy/rabbitmq's configuration and start script agree.

What can be checked without Docker: the three nodes and their names, peer discovery naming the same three,
every process's BROKER_URL listing all of them, the queue type the nodes insist on, and the start script's
refusals (run here with a stand-in for the image's entrypoint).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kernel.broker_url import broker_nodes
from kernel.settings import load_settings
from tests.helpers import ROOT, procfile

NODES = ("rabbitmq", "rabbitmq2", "rabbitmq3")
CONFIG = ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf"
START = ROOT / "deploy" / "rabbitmq" / "start-node.sh"
APP_SERVICES = sorted(set(procfile()) - {"release"})


def services() -> dict[str, Any]:
    """docker-compose.yml's services, parsed."""
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"])


def interpolated(value: str, **variables: str) -> str:
    """``value`` as compose would pass it, with ``variables`` set and the others at their defaults."""

    def substitute(match: re.Match[str]) -> str:
        name, operator, rest = match.group(1), match.group(2) or "", match.group(3) or ""
        if name in variables:
            return variables[name]
        return rest if operator == ":-" else ""

    return re.sub(r"\$\{([A-Z0-9_]+)(:[-?])?([^}]*)\}", substitute, value)


def test_the_cluster_profile_adds_two_nodes_to_rabbitmq() -> None:
    """Three nodes of one image, each with its hostname (its node name) and its own data; the profile
    brings the second and third, the first runs in both."""
    found = services()
    assert "profiles" not in found["rabbitmq"]
    for name in NODES:
        node = found[name]
        assert node["image"] == found["rabbitmq"]["image"]
        assert node["hostname"] == name
        assert node.get("profiles", ["cluster"]) == ["cluster"]
        assert f"{name}-data:/var/lib/rabbitmq" in node["volumes"]
        assert (
            "./deploy/rabbitmq/rabbitmq.conf:/etc/rabbitmq/conf.d/20-auth0-events.conf:ro" in node["volumes"]
        )
        assert node["entrypoint"] == ["/usr/local/bin/start-node.sh"]
        assert "healthcheck" in node
    assert {found[name].get("environment", {}).get("CLUSTER_NODE") for name in NODES} == {None, "yes"}
    assert "ports" not in found["rabbitmq2"]
    assert "ports" not in found["rabbitmq3"]


def test_peer_discovery_names_the_three_nodes() -> None:
    """deploy/rabbitmq/rabbitmq.conf lists rabbit@<hostname> of each compose node, by classic config."""
    settings = dict(
        line.split(" = ", 1)
        for line in CONFIG.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert settings["cluster_formation.peer_discovery_backend"] == "rabbit_peer_discovery_classic_config"
    listed = [
        value for key, value in settings.items() if key.startswith("cluster_formation.classic_config.nodes.")
    ]
    assert listed == [f"rabbit@{services()[name]['hostname']}" for name in NODES]


@pytest.mark.parametrize("service", APP_SERVICES)
def test_every_process_is_given_every_node(service: str) -> None:
    """The receiver, each worker and Flower get all three nodes in BROKER_URL (one vhost), which the
    settings accept, and the queue type the nodes check."""
    environment = services()[service]["environment"]
    url = interpolated(environment["BROKER_URL"], RABBITMQ_PASSWORD="secret-password")
    nodes = broker_nodes(url)
    assert nodes == [f"amqp://auth0events:secret-password@{name}:5672//" for name in NODES]
    assert load_settings(broker_url=url).broker_url == url
    assert (
        environment["AUTH0_EVENTS_QUEUE_TYPE"]
        == services()["rabbitmq2"]["environment"]["AUTH0_EVENTS_QUEUE_TYPE"]
    )


def test_the_nodes_share_one_cookie_from_env() -> None:
    """Each node gets the same cookie variable; nothing defaults it to a value of the file's own."""
    cookies = {services()[name]["environment"]["RABBITMQ_COOKIE"] for name in NODES}
    assert cookies == {"${RABBITMQ_CLUSTER_COOKIE:-}"}
    example = (ROOT / ".env.example").read_text()
    assert re.search(r"^RABBITMQ_CLUSTER_COOKIE=$", example, re.MULTILINE)


def start_node(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run deploy/rabbitmq/start-node.sh with a stand-in docker-entrypoint.sh that prints its arguments."""
    entrypoint = tmp_path / "docker-entrypoint.sh"
    entrypoint.write_text('#!/bin/sh\necho "entrypoint $*"\n')
    entrypoint.chmod(0o755)
    path = f"{tmp_path}:{os.environ['PATH']}"
    return subprocess.run(
        ["sh", str(START)], env={"PATH": path, **env}, capture_output=True, text=True, timeout=30
    )


@pytest.mark.process
def test_a_cluster_node_refuses_classic_queues(tmp_path: Path) -> None:
    """A second or third node with the default queue type stops at once, saying what to set."""
    result = start_node(tmp_path, CLUSTER_NODE="yes", RABBITMQ_COOKIE="cookie")
    assert result.returncode == 1
    assert "AUTH0_EVENTS_QUEUE_TYPE=quorum" in result.stderr
    assert "entrypoint" not in result.stdout


@pytest.mark.process
def test_a_cluster_node_refuses_to_start_without_the_cookie(tmp_path: Path) -> None:
    """Without RABBITMQ_CLUSTER_COOKIE a node could never join the others: it stops, saying so."""
    result = start_node(tmp_path, CLUSTER_NODE="yes", AUTH0_EVENTS_QUEUE_TYPE="quorum")
    assert result.returncode == 1
    assert "RABBITMQ_CLUSTER_COOKIE" in result.stderr


@pytest.mark.process
def test_the_single_node_starts_as_before_without_a_cookie(tmp_path: Path) -> None:
    """Without the profile, rabbitmq needs neither the cookie nor quorum queues: the image's entrypoint
    starts the server."""
    result = start_node(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "entrypoint rabbitmq-server"
