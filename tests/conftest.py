"""Shared fixtures: a private RabbitMQ vhost per run, the receiver, real workers, broker reads."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

# Celery's own embedded-worker fixtures; pytest-celery's Docker ones are switched off (-p no:celery).
pytest_plugins = ("celery.contrib.pytest", "tests.queue_types")

BROKER_HOST = "amqp://guest:guest@127.0.0.1:5672"
TEST_TOKEN = "test-stream-token-4d1f-9b27c35e08a6f1d4"
# The default routes plus one queue that only the in-process worker test consumes.
TEST_ROUTES = (
    "s,f,fp,fu,ss,fs,slo,flo,scp,fcp,sdu,pwd_leak,signup_pwd_leak,reset_pwd_leak,limit_wc,limit_mu,limit_sul,ferrt"
    ",sapi=auth0.embedded"
)
DEFAULT_QUEUES = [f"auth0.{code}" for code in TEST_ROUTES.split(",")[:-1]]
MAX_RETRIES = 2


def _rabbitmqctl(*args: str) -> None:
    if shutil.which("rabbitmqctl") is None:
        raise pytest.UsageError(
            "rabbitmqctl not found: the tests create a private vhost on the RabbitMQ at 127.0.0.1:5672; "
            "install rabbitmq-server, or set AUTH0_EVENTS_TEST_BROKER_URL to a vhost the tests may use"
        )
    result = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise pytest.UsageError(
            f"RabbitMQ: `rabbitmqctl {' '.join(args)}` failed (is rabbitmq-server running? start it with "
            f"`rabbitmq-server -detached`):\n{result.stderr or result.stdout}"
        )


def _create_vhost() -> tuple[str, str | None]:
    url = os.environ.get("AUTH0_EVENTS_TEST_BROKER_URL")
    if url:
        return url, None
    vhost = f"auth0-events-test-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    # test.full refuses every message, so publishes to it are nacked (tests/test_publish_failures.py).
    _rabbitmqctl(
        "set_policy",
        "-p",
        vhost,
        "--apply-to",
        "queues",
        "refuse-all",
        r"^test\.full$",
        '{"max-length": 0, "overflow": "reject-publish"}',
    )
    return f"{BROKER_HOST}/{vhost}", vhost


def _check_broker(url: str) -> None:
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=2, interval_start=0.5)
    except Exception as exc:  # noqa: BLE001 - any failure means the same thing here
        raise pytest.UsageError(f"RabbitMQ at {url} is not reachable: {exc}") from exc


def pytest_configure(config: pytest.Config) -> None:
    """Point every process of the run (this one and the workers it starts) at a private vhost."""
    url, vhost = _create_vhost()
    _check_broker(url)
    config.stash[_VHOST] = vhost
    effects = Path(tempfile.mkdtemp(prefix="auth0-events-effects-"))
    config.stash[_EFFECTS] = effects
    os.environ.update(
        {
            "BROKER_URL": url,
            "AUTH0_LOG_STREAM_TOKENS": f"{TEST_TOKEN},rotated-stream-token-6a0e2f9c41b87d35",
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
    )
    from kernel.settings import get_settings
    from kernel.storage.db import upgrade

    get_settings.cache_clear()
    get_settings()  # cached now, so tests that empty the environment cannot change this process's settings
    upgrade(os.environ["DATABASE_URL"])


def pytest_unconfigure(config: pytest.Config) -> None:
    """Delete the run's vhost and its queues."""
    vhost = config.stash.get(_VHOST, None)
    if vhost:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=120)
    effects = config.stash.get(_EFFECTS, None)
    if effects:
        shutil.rmtree(effects, ignore_errors=True)


_VHOST = pytest.StashKey[str | None]()
_EFFECTS = pytest.StashKey[Path]()


@pytest.fixture(scope="session")
def broker_url() -> str:
    """The private vhost's URL."""
    return os.environ["BROKER_URL"]


@pytest.fixture(scope="session")
def effects_dir(pytestconfig: pytest.Config) -> Path:
    """Where tests/plugin_handlers.py records attempts and effects."""
    return pytestconfig.stash[_EFFECTS]


@pytest.fixture
def broker(broker_url: str, queue_type: str) -> Iterator[Any]:
    """A kombu connection to the private vhost (of the test's queue type), for reading queues directly."""
    from kombu import Connection

    with Connection(os.environ["BROKER_URL"]) as connection:
        yield connection


@pytest.fixture
def settings_for() -> Any:
    """Build Settings from the test environment with overrides."""
    from kernel.settings import load_settings

    return load_settings


@pytest.fixture
def make_app(settings_for: Any, queue_type: str) -> Iterator[Any]:
    """Create receivers with overridden settings; closes their broker connections afterwards."""
    from app import create_app

    created = []

    def make(**overrides: Any) -> Any:
        app = create_app({"TESTING": True, "SETTINGS": settings_for(**overrides)})
        created.append(app)
        return app

    yield make
    for app in created:
        app.extensions["auth0_events"].publisher.close()


@pytest.fixture
def client(make_app: Any) -> Any:
    """A test client of the receiver as configured by the test environment."""
    return make_app().test_client()


@pytest.fixture(scope="session")
def session_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real worker consuming every default queue, shared by the tests that only need processing."""
    from tests.helpers import WorkerProcess

    log_path = tmp_path_factory.mktemp("workers") / "session-worker.log"
    worker = WorkerProcess(DEFAULT_QUEUES, f"session-{uuid.uuid4().hex[:6]}", log_path, concurrency=2)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def start_worker(tmp_path: Path, queue_type: str) -> Iterator[Any]:
    """Start dedicated real workers (for kill tests); every one is stopped at the end of the test."""
    from tests.helpers import WorkerProcess

    started: list[WorkerProcess] = []

    def start(queues: list[str], env: dict[str, str] | None = None, concurrency: int = 1) -> WorkerProcess:
        name = f"w{len(started)}-{uuid.uuid4().hex[:6]}"
        worker = WorkerProcess(queues, name, tmp_path / f"{name}.log", env or {}, concurrency)
        started.append(worker.start())
        return worker

    yield start
    for worker in started:
        worker.stop()


POSTGRES_ADMIN_URL = os.environ.get(
    "AUTH0_EVENTS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@contextmanager
def private_postgres_database() -> Iterator[str]:
    """Create a migrated PostgreSQL database of the caller's own; drop it afterwards."""
    from kernel.storage.scratch_db import ScratchDatabaseError, scratch_postgres_database

    try:
        with scratch_postgres_database(POSTGRES_ADMIN_URL, "auth0_events_test") as url:
            yield url
    except ScratchDatabaseError as exc:  # raised only while creating it, before the yield
        pytest.fail(
            f"PostgreSQL at {POSTGRES_ADMIN_URL} is not usable ({exc}); start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` or set "
            "AUTH0_EVENTS_TEST_POSTGRES_URL",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database of this run's own, migrated; dropped at the end."""
    with private_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs twice: on a fresh migrated SQLite file, and on the run's PostgreSQL."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    from kernel.storage.db import upgrade

    url = f"sqlite:///{tmp_path / 'test.sqlite3'}"
    upgrade(url)
    return url
