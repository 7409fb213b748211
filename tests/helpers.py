"""Test helpers: realistic Auth0 records, polling with a deadline, broker reads, real worker processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests
from amqp.exceptions import NotFound
from kombu import Connection, Queue

from tasks.testing import make_record, new_log_id

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
__all__ = ["make_record", "new_log_id"]  # re-exported from tasks.testing for the tests


def with_action(record: dict[str, Any], action: str) -> dict[str, Any]:
    """Tell tests/plugin_handlers.py how to behave for this record."""
    record["data"]["details"]["test_action"] = action
    return record


def as_jsonl(records: Iterable[Any]) -> bytes:
    """Encode records the way Auth0's JSONLINES format sends them."""
    return "\n".join(json.dumps(record) for record in records).encode()


def wait_for(check: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> T:
    """Poll ``check`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(interval)


def take_messages(connection: Connection, queue_name: str) -> list[Any]:
    """Remove and return every message now in ``queue_name``; [] when the queue was never declared."""
    messages = []
    with connection.channel() as channel:
        queue = Queue(queue_name).bind(channel)
        try:
            while (message := queue.get(no_ack=True)) is not None:
                messages.append(message)
        except NotFound:
            return []
    return messages


def task_kwargs(message: Any) -> dict[str, Any]:
    """Return the kwargs of a Celery (protocol 2) task message."""
    _args, kwargs, _embed = message.decode()
    return dict(kwargs)


def count_lines(directory: Path, file_name: str, line: str) -> int:
    """Count exact occurrences of ``line`` in a file the test handlers write."""
    path = directory / file_name
    if not path.exists():
        return 0
    return path.read_text(encoding="utf-8").splitlines().count(line)


@dataclass
class WorkerProcess:
    """A real ``celery -A tasks worker`` in its own process group, logging to a file."""

    queues: list[str]
    name: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    concurrency: int = 1
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> WorkerProcess:
        """Start the worker and return once it logged that it is ready."""
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tasks",
            "worker",
            "-Q",
            ",".join(self.queues),
            "-n",
            f"{self.name}@%h",
            "-c",
            str(self.concurrency),
            "--loglevel=INFO",
            "--without-mingle",
            "--without-gossip",
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child process owns it from here
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_for(self._ready, timeout, 0.1, f"worker {self.name} to start; log:\n{self.log_text()[-3000:]}")
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"worker {self.name} exited at start:\n{self.log_text()[-5000:]}")
        return f"{self.name}@" in self.log_text() and " ready." in self.log_text()

    def log_text(self) -> str:
        """Everything the worker has logged so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children) at once, as a crash would."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """Warm shutdown; SIGKILL if it takes longer than 20 s."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def procfile() -> dict[str, str]:
    """Process name to command, from the Procfile."""
    processes = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            processes[name.strip()] = command.strip()
    return processes


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group; SIGKILL it if it is still there after 20 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


@dataclass
class ReceiverProcess:
    """The Procfile's web line (gunicorn) running on ``port``, logging to ``log_path``."""

    url: str
    port: int
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        """Everything gunicorn and its workers have logged so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@contextmanager
def procfile_receiver(
    log_path: Path, env: dict[str, str], workers: int = 1, ready: str = "/readyz"
) -> Iterator[ReceiverProcess]:
    """Run the Procfile's web line with ``env`` added to this process's environment; yield it once
    ``ready`` answers 200, stop its process group afterwards."""
    port = free_port()
    full_env = {
        **os.environ,
        **env,
        "PORT": str(port),
        "WEB_CONCURRENCY": str(workers),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["sh", "-c", procfile()["web"]],
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    receiver = ReceiverProcess(f"http://127.0.0.1:{port}", port, log_path, full_env, process)

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited:\n{receiver.log_text()[-3000:]}")
        try:
            return requests.get(f"{receiver.url}{ready}", timeout=10).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_for(answers, 60, 0.1, f"the receiver to answer {ready}")
        yield receiver
    finally:
        stop_process_group(process)
