"""Hooks and fixtures: the run's environment, RabbitMQ and PostgreSQL made ready only for the tests that use
them, real workers, and each test's tier from the fixtures it uses."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    DEFAULT_QUEUES,
    POSTGRES_ADMIN_URL,
    WorkerProcess,
    check_broker,
    private_postgres_database,
    private_vhost,
    refuse_publishes_to_test_full,
    reload_settings,
    run_environment,
    sqlite_database,
    use_broker,
)

# Celery's own embedded-worker fixtures; pytest-celery's Docker ones are switched off (-p no:celery).
pytest_plugins = ("celery.contrib.pytest", "tests.queue_types")

# A test that uses one of these fixtures, directly or through others, is in that tier; so is a test marked
# with a tier (a worker test that starts its processes itself, a test that runs the CLI, the benchmarks). A
# test in no tier is `fast`: it needs neither RabbitMQ nor PostgreSQL nor a process of its own, which
# _fast_tests_start_no_process enforces. The tiers are listed in pyproject.toml.
TIER_OF_FIXTURE = {
    # local: no shared service, but a file database, a server on loopback or a thread: tens of milliseconds
    # to seconds each, where a fast test takes about one.
    "migrated_sqlite_file": "local",
    "fake": "local",  # the HTTPS stand-in of Auth0 (test_auth0_actions, test_backfill)
    "webhook": "local",  # the alert webhook's stand-in (test_alerts)
    "serve": "local",  # real receivers over HTTP (test_send)
    "broker_url": "broker",
    "new_vhost": "broker",
    "postgres_admin_url": "database",
    "session_worker": "worker",
    "start_worker": "worker",
}
SERVICE_TIERS = frozenset({"broker", "database", "worker", "process", "bench"})
SLOW_TIERS = SERVICE_TIERS | {"local"}
# scripts/test runs the service tiers in parallel processes (pytest-xdist), then these markers' tests alone:
# a benchmark's --quick run starts its own workers and receivers and runs for its time budget, which a
# machine busy with other tests would stretch past the test's timeout; the cluster tests' three RabbitMQ
# nodes and clients miss heartbeats on a machine busy with other tests (a client then fails over unasked).
SERIAL_MARKERS = frozenset({"bench", "cluster"})


def pytest_configure(config: pytest.Config) -> None:
    """Give every process of the run (this one and those it starts) the test environment and a migrated
    SQLite ledger; BROKER_URL names a closed port until the broker_url fixture creates the private vhost."""
    effects = Path(tempfile.mkdtemp(prefix="auth0-events-effects-"))
    config.stash[_EFFECTS] = effects
    os.environ.update(run_environment(effects))
    from kernel.storage.db import upgrade

    upgrade(os.environ["DATABASE_URL"])
    reload_settings()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (a CI timeout, `kill`) ends the run as Ctrl-C does: the fixtures' teardowns still stop the
    workers, receivers and RabbitMQ nodes the tests started in sessions of their own, which it misses."""
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Delete the run's effects directory and ledger."""
    effects = config.stash.get(_EFFECTS, None)
    if effects:
        shutil.rmtree(effects, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)  # before -m deselects, and before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tiers (from its fixtures and markers), or `fast` when it has none; and
    group the tests that share a module's fixture for pytest-xdist."""
    grouped: set[str] = set()
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        tiers = {tier for fixture, tier in TIER_OF_FIXTURE.items() if fixture in fixtures}
        tiers |= {mark.name for mark in item.iter_markers() if mark.name in SLOW_TIERS}
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            tiers.add("local")  # a property runs its body for many generated examples
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("database_url") == "sqlite":
            tiers.add("local")
        if tiers & SERVICE_TIERS:
            tiers.discard("local")  # `-m local` runs with the services out of reach
        for tier in sorted(tiers):
            item.add_marker(tier)
        if not tiers:
            item.add_marker("fast")
        if any(item.get_closest_marker(name) for name in SERIAL_MARKERS):
            item.add_marker("serial")
        if (shared := _module_fixture_user(item)) is not None:
            # --dist loadgroup sends the tests sharing a module's fixture (a cluster, a receiver) to one
            # process, which sets it up once; other tests go wherever a process is free.
            item.add_marker(pytest.mark.xdist_group(shared))
            grouped.add(item.nodeid)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # pytest-xdist hands out work in collection order: the groups, each minutes long (a cluster, a
        # receiver's tests), go first, and the single tests fill the processes' time around them.
        items.sort(key=lambda item: item.nodeid not in grouped)


def _module_fixture_user(item: pytest.Item) -> str | None:
    """The test's module path when it uses a fixture set up once per module or class, else None."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    for name in getattr(item, "fixturenames", ()):
        definitions = info.name2fixturedefs.get(name)
        if definitions and definitions[-1].scope in ("module", "class", "package"):
            return item.nodeid.split("::", 1)[0]
    return None


_EFFECTS = pytest.StashKey[Path]()


@pytest.fixture(autouse=True)
def _fast_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `fast` test that starts a program fails, naming the marker it needs: the tier stays fast."""
    if request.node.get_closest_marker("fast") is None:
        return

    def refuse(*args: Any, **kwargs: Any) -> None:
        pytest.fail(
            f"{request.node.nodeid} starts a program ({args[1] if len(args) > 1 else kwargs.get('args')!r}): "
            "mark it @pytest.mark.process, or use the fixture that makes it a broker/database/worker test",
            pytrace=False,
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    """The run's private vhost (AUTH0_EVENTS_TEST_BROKER_URL, or one created now and deleted at the end).

    From here on this process's settings, its Celery app and every process it starts use it.
    """
    given = os.environ.get("AUTH0_EVENTS_TEST_BROKER_URL")
    vhost: AbstractContextManager[str] = nullcontext(given) if given else private_vhost("auth0-events-test")
    with vhost as url:
        if not given:
            refuse_publishes_to_test_full(url)
        check_broker(url)
        use_broker(url)
        yield url


@pytest.fixture
def new_vhost() -> Iterator[str]:
    """A fresh, empty vhost of this test's own on the local RabbitMQ (its URL); deleted afterwards."""
    with private_vhost("auth0-events-own") as url:
        yield url


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
    """Create receivers with overridden settings; closes their broker connections afterwards.

    A receiver publishes to the run's vhost only when the test uses the broker (``broker_url``, ``broker``,
    ``client``); otherwise its BROKER_URL refuses connections.
    """
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
def client(broker_url: str, make_app: Any) -> Any:
    """A test client of the receiver as configured by the test environment, publishing to the run's vhost."""
    return make_app().test_client()


@pytest.fixture(scope="session")
def session_worker(broker_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """One real worker consuming every default queue, shared by the tests that only need processing."""
    log_path = tmp_path_factory.mktemp("workers") / "session-worker.log"
    worker = WorkerProcess(DEFAULT_QUEUES, f"session-{uuid.uuid4().hex[:6]}", log_path, concurrency=2)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def start_worker(broker_url: str, tmp_path: Path, queue_type: str) -> Iterator[Any]:
    """Start dedicated real workers (for kill tests); every one is stopped at the end of the test."""
    started: list[WorkerProcess] = []

    def start(queues: list[str], env: dict[str, str] | None = None, concurrency: int = 1) -> WorkerProcess:
        name = f"w{len(started)}-{uuid.uuid4().hex[:6]}"
        worker = WorkerProcess(queues, name, tmp_path / f"{name}.log", env or {}, concurrency)
        started.append(worker.start())
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """The PostgreSQL login the tests create their databases with (AUTH0_EVENTS_TEST_POSTGRES_URL)."""
    return POSTGRES_ADMIN_URL


@pytest.fixture(scope="session")
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A PostgreSQL database of this run's own, migrated; dropped at the end."""
    with private_postgres_database(postgres_admin_url) as url:
        yield url


@pytest.fixture
def new_postgres_database(postgres_admin_url: str) -> Any:
    """Make migrated PostgreSQL databases of the test's own: ``with new_postgres_database() as url:``."""
    return lambda: private_postgres_database(postgres_admin_url)


@pytest.fixture
def postgres_database(postgres_url: str) -> str:
    """The PostgreSQL database of database_url's postgresql case: the run's. A test module whose tests
    need a database of their own (migrations going down, tables emptied) overrides this fixture."""
    return postgres_url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.database)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs twice: on a fresh migrated SQLite file, and on PostgreSQL
    (``postgres_database``: the run's database unless the module says otherwise)."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_database"))
    path = tmp_path / "test.sqlite3"
    shutil.copyfile(request.getfixturevalue("migrated_sqlite_file"), path)
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def migrated_sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite ledger migrated to head once per run; database_url hands each test a copy (migrating takes
    a large part of a second, copying none)."""
    path = tmp_path_factory.mktemp("sqlite") / "migrated.sqlite3"
    sqlite_database(path)
    return path
