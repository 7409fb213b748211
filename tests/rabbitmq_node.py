"""A RabbitMQ node of a test's own (name, ports, data, logs, cookie), which the test may stop and restart.

The shared broker on 127.0.0.1:5672 serves every test run and CI at once and must never be restarted; a
test about broker restarts or node loss starts one of these instead. Debian's rabbitmq-server runs extra
nodes from environment variables alone (RABBITMQ_NODENAME, RABBITMQ_NODE_PORT, RABBITMQ_MNESIA_BASE, …).
Nodes that share ``home`` share an Erlang cookie, so they can be clustered (``ctl("join_cluster", …)``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kombu import Connection

from tests.helpers import free_port

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
CTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
QUEUES = Path("/usr/lib/rabbitmq/bin/rabbitmq-queues")
# No plugins (enabled_plugins is empty), so a node boots in seconds; a test machine's small free disk
# must not raise the disk alarm and block publishers.
CONFIG = "disk_free_limit.absolute = 1MB\n"


class NodeError(Exception):
    """Raised when a private node cannot be started, controlled or stopped; the message says why."""


class RabbitNode:
    """One private RabbitMQ node under ``directory``; ``start()``, ``restart()``, ``stop()``, ``remove()``."""

    def __init__(
        self, directory: Path, name: str | None = None, home: Path | None = None, config: str = ""
    ) -> None:
        self.directory = directory
        self.config = CONFIG + config
        self.name = name or f"test-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.home = home or directory / "home"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The AMQP URL of the node's default vhost."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    @property
    def log_path(self) -> Path:
        """Where the server's standard output and error go (its own logs are under ``directory/log``)."""
        return self.directory / "server.out"

    def environment(self) -> dict[str, str]:
        """The variables that make rabbitmq-server and rabbitmqctl use this node and nothing shared."""
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.directory / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.directory / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.directory / "node.pid"),
            "RABBITMQ_CONFIG_FILE": str(self.directory / "rabbitmq.conf"),
            # Not the machine's /etc/rabbitmq/rabbitmq-env.conf, which names the shared node.
            "RABBITMQ_CONF_ENV_FILE": str(self.directory / "rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            # An Erlang VM that fails writes a crash dump into its working directory by default.
            "ERL_CRASH_DUMP": str(self.directory / "erl_crash.dump"),
            "HOME": str(self.home),
        }

    def start(self, timeout: float = 90.0) -> RabbitNode:
        """Start the node and return once it accepts AMQP connections; NodeError when it cannot."""
        if not SERVER.exists():
            raise NodeError(f"{SERVER} not found: install Debian's rabbitmq-server to run a private node")
        self._write_files()
        log = open(self.log_path, "ab")  # noqa: SIM115 - the server process owns it from here
        self.process = subprocess.Popen(
            [str(SERVER)],
            env=self.environment(),
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.wait_until_serving(timeout)
        return self

    def wait_until_serving(self, timeout: float = 90.0) -> None:
        """Poll until the node accepts an AMQP connection; NodeError (with its log) after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self.serving():
            if self.process is not None and self.process.poll() is not None:
                raise NodeError(f"RabbitMQ node {self.name} exited at start:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                raise NodeError(
                    f"RabbitMQ node {self.name} not serving after {timeout}s:\n{self._log_tail()}"
                )
            time.sleep(0.2)

    def serving(self) -> bool:
        """Whether the node accepts an AMQP connection now."""
        try:
            with Connection(self.url, connect_timeout=1) as connection:
                connection.connect()
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            return False
        return True

    def ctl(self, *args: str, timeout: float = 60.0, tool: Path = CTL) -> str:
        """Run ``rabbitmqctl -n <node> …`` (or another of RabbitMQ's command-line ``tool``s) against this
        node; NodeError when it fails."""
        command = [str(tool), "-n", self.name, *args]
        result = subprocess.run(
            command,
            env=self.environment(),
            cwd=self._workdir(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise NodeError(f"`{' '.join(command)}` failed:\n{result.stderr or result.stdout}")
        return result.stdout

    def stop_app(self) -> None:
        """Stop RabbitMQ on the node (its clients are disconnected), leaving the Erlang node running."""
        self.ctl("stop_app")

    def start_app(self, timeout: float = 60.0) -> None:
        """Start RabbitMQ again after ``stop_app`` and wait until it accepts AMQP connections."""
        self.ctl("start_app", timeout=timeout)
        self.wait_until_serving(timeout)

    def restart(self) -> None:
        """A broker restart as clients see it: every connection closed, then the node back."""
        self.stop_app()
        self.start_app()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the node (politely, then SIGKILL to its process group)."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.ctl("stop", timeout=timeout)
            self.process.wait(timeout=timeout)
        except (NodeError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the node's Erlang VM and its helpers at once, as a crash or a lost machine would; its data
        stays, so ``start()`` brings the same node back."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def running(self) -> bool:
        """Whether the node's Erlang VM is running (started and not stopped or killed)."""
        return self.process is not None and self.process.poll() is None

    def remove(self) -> None:
        """Stop the node and delete its data, logs and configuration."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _write_files(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        (self.directory / "enabled_plugins").write_text("[].\n")
        (self.directory / "rabbitmq.conf").write_text(self.config)
        (self.directory / "rabbitmq-env.conf").write_text("")
        cookie = self.home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(20))
            cookie.chmod(0o400)

    def _workdir(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        return self.directory

    def _log_tail(self, size: int = 4000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no output)"
        return text[-size:]


def peer_discovery_config(names: list[str]) -> str:
    """rabbitmq.conf lines that make nodes form one cluster of ``names`` by themselves at first boot."""
    lines = ["cluster_formation.peer_discovery_backend = rabbit_peer_discovery_classic_config"]
    lines += [f"cluster_formation.classic_config.nodes.{n} = {name}" for n, name in enumerate(names, 1)]
    return "\n".join(lines) + "\n"


class RabbitCluster:
    """``size`` private nodes sharing one Erlang cookie, clustered with ``join_cluster``.

    Each node can be killed and started again (``nodes[i].kill()``, ``bring_back(node)``); ``remove()``
    stops them all and deletes their data.
    """

    def __init__(self, directory: Path, size: int = 3) -> None:
        self.directory = directory
        prefix = f"test-{uuid.uuid4().hex[:6]}"
        home = directory / "home"  # one HOME, one cookie: the nodes may talk to each other
        names = [f"{prefix}-{number}@localhost" for number in range(1, size + 1)]
        config = peer_discovery_config(names)
        self.nodes = [
            RabbitNode(directory / f"node{number}", name, home, config)
            for number, name in enumerate(names, start=1)
        ]

    @property
    def url(self) -> str:
        """Every node's AMQP URL, kombu's failover form (``amqp://…;amqp://…``), in node order."""
        return ";".join(node.url for node in self.nodes)

    def start(self, timeout: float = 120.0) -> RabbitCluster:
        """Start every node at once and return once all run as one cluster (they find each other by
        their configuration, as deploy/rabbitmq-cluster.conf has it for docker compose)."""
        # In parallel: each boot is seconds of Erlang VM start-up. Peer discovery takes a cluster-wide
        # lock (RabbitMQ 3.8.18 and later), so one node forms the cluster and the others join it.
        with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            list(pool.map(lambda node: node.start(timeout), self.nodes))
        self.wait_until_clustered(timeout)
        return self

    def running_nodes(self, via: RabbitNode | None = None) -> set[str]:
        """The names of the nodes the cluster sees running, asked of ``via`` (a running node by default)."""
        node = via or self.any_running()
        status = json.loads(node.ctl("cluster_status", "--formatter", "json"))
        return set(status["running_nodes"])

    def wait_until_clustered(self, timeout: float = 60.0) -> None:
        """Poll until every node runs in the cluster; NodeError after ``timeout``."""
        expected = {node.name for node in self.nodes}
        deadline = time.monotonic() + timeout
        while (seen := self.running_nodes()) != expected:
            if time.monotonic() > deadline:
                raise NodeError(f"cluster not formed after {timeout}s: running {sorted(seen)}")
            time.sleep(0.5)

    def any_running(self) -> RabbitNode:
        """A node whose VM runs, to ask the cluster things; NodeError when none does."""
        for node in self.nodes:
            if node.running():
                return node
        raise NodeError("no node of the cluster is running")

    def node_named(self, name: str) -> RabbitNode:
        """The node called ``name`` (``rabbit@host``), as RabbitMQ names it in its answers."""
        return next(node for node in self.nodes if node.name == name)

    def queue_info(self, queue: str) -> dict[str, Any]:
        """``rabbitmqctl list_queues`` of ``queue``: its type, and for a quorum queue its leader, members and
        the members online; NodeError when the cluster has no such queue."""
        rows = json.loads(
            self.any_running().ctl(
                "list_queues", "name", "type", "leader", "members", "online", "--formatter", "json"
            )
        )
        for row in rows:
            if row["name"] == queue:
                return dict(row)
        raise NodeError(f"no queue {queue!r} in the cluster")

    def leader(self, queue: str) -> RabbitNode:
        """The node leading the quorum queue ``queue`` now."""
        return self.node_named(self.queue_info(queue)["leader"])

    def raft_members(self, queue: str) -> list[dict[str, Any]]:
        """``rabbitmq-queues quorum_status``: each member's Raft state, log and commit index, term."""
        answer = self.any_running().ctl("quorum_status", queue, "--formatter", "json", tool=QUEUES)
        return list(json.loads(answer))

    def caught_up(self, queue: str) -> bool:
        """Whether every node is a member of ``queue``, online, and holds every entry the leader has
        committed (a follower learns the commit index itself only with the leader's next write)."""
        info = self.queue_info(queue)
        everyone = {node.name for node in self.nodes}
        if set(info["members"]) != everyone or set(info["online"]) != everyone:
            return False
        members = self.raft_members(queue)
        leaders = [member for member in members if member["Raft State"] == "leader"]
        if len(leaders) != 1:
            return False
        return all(member["Log Index"] >= leaders[0]["Commit Index"] for member in members)

    def bring_back(self, node: RabbitNode, timeout: float = 120.0) -> None:
        """Start a killed or stopped node again (its data kept: it rejoins) and wait until it runs in the
        cluster."""
        node.start(timeout)
        self.wait_until_clustered(timeout)

    def remove(self) -> None:
        """Stop every node (at once: each stop is seconds of rabbitmqctl) and delete the cluster's data,
        logs and configuration."""
        with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            list(pool.map(lambda node: node.remove(), self.nodes))
        shutil.rmtree(self.directory, ignore_errors=True)
