"""A RabbitMQ node of a test's own (name, ports, data, logs, cookie), which the test may stop and restart.

The shared broker on 127.0.0.1:5672 serves every test run and CI at once and must never be restarted; a
test about broker restarts or node loss starts one of these instead. Debian's rabbitmq-server runs extra
nodes from environment variables alone (RABBITMQ_NODENAME, RABBITMQ_NODE_PORT, RABBITMQ_MNESIA_BASE, …).
Nodes that share ``home`` share an Erlang cookie, so they can be clustered (``ctl("join_cluster", …)``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from kombu import Connection

from tests.helpers import free_port

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
CTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
# No plugins (enabled_plugins is empty), so a node boots in seconds; a test machine's small free disk
# must not raise the disk alarm and block publishers.
CONFIG = "disk_free_limit.absolute = 1MB\n"


class NodeError(Exception):
    """Raised when a private node cannot be started, controlled or stopped; the message says why."""


class RabbitNode:
    """One private RabbitMQ node under ``directory``; ``start()``, ``restart()``, ``stop()``, ``remove()``."""

    def __init__(self, directory: Path, name: str | None = None, home: Path | None = None) -> None:
        self.directory = directory
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

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -n <node> …`` against this node; NodeError when it fails."""
        command = [str(CTL), "-n", self.name, *args]
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

    def remove(self) -> None:
        """Stop the node and delete its data, logs and configuration."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _write_files(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        (self.directory / "enabled_plugins").write_text("[].\n")
        (self.directory / "rabbitmq.conf").write_text(CONFIG)
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
