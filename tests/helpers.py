"""Test helpers: the test environment, realistic Auth0 records, posting batches, private vhosts and
databases, polling with a deadline, broker reads, real worker and receiver processes.

tests/conftest.py builds its hooks and fixtures from these; nothing here imports from it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from amqp.exceptions import NotFound
from kombu import Connection, Queue

from tasks.testing import make_record, new_log_id

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
__all__ = ["make_record", "new_log_id"]  # re-exported from tasks.testing for the tests

# --- the test environment -----------------------------------------------------------------------------------

TEST_TOKEN = "test-stream-token-4d1f-9b27c35e08a6f1d4"
ROTATED_TOKEN = "rotated-stream-token-6a0e2f9c41b87d35"
# Auth0 sends the stream's Authorization field verbatim; API clients send the token as a Bearer token.
AUTH = {"Authorization": TEST_TOKEN}
BEARER_AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}
# The default routes plus one queue that only the in-process worker test consumes.
TEST_ROUTES = (
    "s,f,fp,fu,ss,fs,slo,flo,scp,fcp,sdu,pwd_leak,signup_pwd_leak,reset_pwd_leak,limit_wc,limit_mu,limit_sul,ferrt"
    ",sapi=auth0.embedded"
)
DEFAULT_QUEUES = [f"auth0.{code}" for code in TEST_ROUTES.split(",")[:-1]]
MAX_RETRIES = 2

BROKER_HOST = "amqp://guest:guest@127.0.0.1:5672"
# BROKER_URL until a test asks for the broker (the broker_url fixture): nothing listens on port 1, so a test
# that reaches for RabbitMQ without saying so is refused at once instead of using it unseen.
UNREACHABLE_BROKER_URL = "amqp://guest:guest@127.0.0.1:1//"
POSTGRES_ADMIN_URL = os.environ.get(
    "AUTH0_EVENTS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def run_environment(effects: Path) -> dict[str, str]:
    """What every process of the test run sees (this one and those it starts): tokens, routes, quick
    retries, the test plug-in, the mask key, and a SQLite ledger in ``effects``; no reachable broker yet."""
    return {
        "BROKER_URL": UNREACHABLE_BROKER_URL,
        "AUTH0_LOG_STREAM_TOKENS": f"{TEST_TOKEN},{ROTATED_TOKEN}",
        "AUTH0_EVENTS_ROUTES": TEST_ROUTES,
        "AUTH0_EVENTS_MAX_RETRIES": str(MAX_RETRIES),
        "AUTH0_EVENTS_RETRY_BACKOFF_BASE": "0.05",
        "AUTH0_EVENTS_RETRY_BACKOFF_MAX": "0.2",
        "AUTH0_EVENTS_PLUGINS": "tests.plugin_handlers",
        "AUTH0_EVENTS_PUBLISH_TIMEOUT": "5",
        # Only used where a test turns AUTH0_EVENTS_LOG_MASK_PII on, which requires it.
        "AUTH0_EVENTS_LOG_MASK_KEY": "test-mask-key-0123456789abcdef0123",
        "AUTH0_EVENTS_TEST_EFFECTS": str(effects),
        "DATABASE_URL": f"sqlite:///{effects / 'ledger.sqlite3'}",
    }


def reload_settings() -> None:
    """Read this process's settings from the environment again, and keep them cached.

    Cached, so that tests that empty the environment cannot change this process's settings.
    """
    from kernel.settings import get_settings

    get_settings.cache_clear()
    get_settings()


def use_broker(url: str) -> None:
    """Point this process at ``url`` wherever it looks for the broker: the environment (which the processes
    it starts inherit), the cached settings, and the shared Celery app when it is already configured."""
    os.environ["BROKER_URL"] = url
    reload_settings()
    celery_app = sys.modules.get("kernel.celery_app")
    if celery_app is not None:
        celery_app.app.conf.broker_url = url


def post_batch(client: Any, *records: Any, headers: Mapping[str, str] = AUTH) -> Any:
    """POST ``records`` as one JSON Lines batch with the test token (or ``headers``); return the response."""
    return client.post("/webhooks/auth0", data=as_jsonl(records), headers=dict(headers))


# --- private RabbitMQ vhosts and PostgreSQL databases -------------------------------------------------------


def rabbitmqctl(*args: str) -> None:
    """Run ``rabbitmqctl -q <args>``; fail the test saying how to get RabbitMQ when it cannot."""
    try:
        result = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        pytest.fail(
            "rabbitmqctl not found: the tests create private vhosts on the RabbitMQ at 127.0.0.1:5672; "
            "install rabbitmq-server, or set AUTH0_EVENTS_TEST_BROKER_URL to a vhost the tests may use",
            pytrace=False,
        )
    if result.returncode != 0:
        pytest.fail(
            f"RabbitMQ: `rabbitmqctl {' '.join(args)}` failed (is rabbitmq-server running? start it with "
            f"`rabbitmq-server -detached`):\n{result.stderr or result.stdout}",
            pytrace=False,
        )


@contextmanager
def private_vhost(prefix: str) -> Iterator[str]:
    """Create a vhost named ``<prefix>-<random>`` on the local RabbitMQ, guest allowed everything; yield its
    URL; delete it and its queues afterwards."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"{BROKER_HOST}/{vhost}"
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=120)


def refuse_publishes_to_test_full(broker_url: str) -> None:
    """Make the vhost refuse every message to queue test.full, so publishes to it are nacked
    (tests/test_publish_failures.py)."""
    vhost = broker_url.rsplit("/", 1)[1]
    rabbitmqctl(
        "set_policy",
        "-p",
        vhost,
        "--apply-to",
        "queues",
        "refuse-all",
        r"^test\.full$",
        '{"max-length": 0, "overflow": "reject-publish"}',
    )


def check_broker(url: str) -> None:
    """Fail the test saying so when the broker at ``url`` does not answer."""
    try:
        with Connection(url, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=2, interval_start=0.5)
    except Exception as exc:  # noqa: BLE001 - any failure means the same thing here
        pytest.fail(f"RabbitMQ at {url} is not reachable: {exc}", pytrace=False)


@contextmanager
def private_postgres_database(admin_url: str = POSTGRES_ADMIN_URL) -> Iterator[str]:
    """Create a migrated PostgreSQL database of the caller's own; drop it afterwards."""
    from kernel.storage.scratch_db import ScratchDatabaseError, scratch_postgres_database

    try:
        with scratch_postgres_database(admin_url, "auth0_events_test") as url:
            yield url
    except ScratchDatabaseError as exc:  # raised only while creating it, before the yield
        pytest.fail(
            f"PostgreSQL at {admin_url} is not usable ({exc}); start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` or set "
            "AUTH0_EVENTS_TEST_POSTGRES_URL",
            pytrace=False,
        )


def sqlite_database(path: Path) -> str:
    """A SQLite ledger at ``path``, migrated to head; returns its URL."""
    from kernel.storage.db import upgrade

    url = f"sqlite:///{path}"
    upgrade(url)
    return url


# --- records, polling, broker reads -------------------------------------------------------------------------


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


# free_port() hands out ports below Linux's ephemeral range (32768 and up), where no outgoing connection
# takes one between the pick and the bind (a RabbitMQ node binds its ports seconds after); each pytest-xdist
# worker (PYTEST_XDIST_WORKER gw0, gw1, …) picks from its own slice, so two workers never pick the same.
PORT_RANGE = (20000, 32768)
PORT_SLICE = 1000
_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port nothing listens on right now and not handed out before by this process."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    slices = (PORT_RANGE[1] - PORT_RANGE[0]) // PORT_SLICE
    low = PORT_RANGE[0] + (int(worker) % slices if worker.isdigit() else 0) * PORT_SLICE
    candidates = [port for port in range(low, low + PORT_SLICE) if port not in _handed_out]
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise AssertionError(f"no free TCP port left in {low}-{low + PORT_SLICE - 1}")


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
        # Not yet: a timeout is a gunicorn worker still importing the app on a busy machine.
        except (requests.ConnectionError, requests.Timeout):
            return False

    try:
        wait_for(answers, 60, 0.1, f"the receiver to answer {ready}")
        yield receiver
    finally:
        stop_process_group(process)
