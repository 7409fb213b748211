"""A worker whose database is not at the migrations' head refuses to start, before it consumes anything."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text

from kernel.storage.db import (
    SchemaUnreadable,
    alembic_config,
    dispose_engines,
    transaction,
    upgrade,
    wait_for_revisions,
)
from tests.helpers import (
    TEST_TOKEN,
    WorkerProcess,
    as_jsonl,
    make_record,
    wait_for,
)
from tests.tcp_proxy import TcpProxy

EX_CONFIG = os.EX_CONFIG


@pytest.fixture
def queue() -> str:
    """A work queue of the test's own, which no other worker consumes."""
    return f"test.schema.{uuid.uuid4().hex[:8]}"


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Workers the test makes (started by the test itself); any still running is stopped afterwards."""
    made: list[WorkerProcess] = []
    yield made
    for worker in made:
        worker.stop()


def publish_one(make_app: Any, queue: str) -> None:
    """One success-login event into ``queue``, through the receiver."""
    client = make_app(routes=f"s={queue}").test_client()
    response = client.post(
        "/webhooks/auth0", data=as_jsonl([make_record("s")]), headers={"Authorization": TEST_TOKEN}
    )
    assert response.json["accepted"] == 1


def depth(broker: Any, queue: str) -> int:
    """How many messages ``queue`` holds (ready or unacked)."""
    return int(broker.default_channel.queue_declare(queue, passive=True).message_count)


def new_worker(workers: list[WorkerProcess], tmp_path: Path, queue: str, database_url: str) -> WorkerProcess:
    """A real worker for ``queue`` on ``database_url`` (not started), without the test plug-in, which creates
    a table of its own when imported."""
    name = f"schema-{uuid.uuid4().hex[:6]}"
    env = {"AUTH0_EVENTS_ROUTES": f"s={queue}", "DATABASE_URL": database_url, "AUTH0_EVENTS_PLUGINS": ""}
    worker = WorkerProcess([queue], name, tmp_path / f"{name}.log", env)
    workers.append(worker)
    return worker


def refused_start(worker: WorkerProcess) -> str:
    """Start ``worker``, expecting it to exit with EX_CONFIG before it is ready; return its log."""
    with pytest.raises(AssertionError, match="exited at start"):
        worker.start()
    assert worker.process is not None
    assert worker.process.returncode == EX_CONFIG
    log = worker.log_text()
    assert " ready." not in log
    return log


def sqlite_database(tmp_path: Path, state: str) -> str:
    """A SQLite URL whose file is missing, migrated to the first revision only, or at an unknown one."""
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    if state == "behind":
        upgrade(url, "0001")
    elif state == "unknown":
        upgrade(url)
        with transaction(url) as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
        dispose_engines()
    return url


@pytest.mark.worker
@pytest.mark.parametrize(
    ("state", "says"),
    [
        ("missing", "has no schema (no migration applied)"),
        ("behind", "is at revision 0001; this release needs 0003"),
        ("unknown", "is at revision 9999_from_the_future, which this release does not have"),
    ],
)
def test_worker_on_a_sqlite_database_not_at_head_refuses_to_start(
    state: str,
    says: str,
    make_app: Any,
    broker: Any,
    queue: str,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    """`celery -A tasks worker` before `auth0-events db upgrade`: it exits non-zero naming the database and
    the command, without declaring or consuming anything; the event stays in its queue."""
    url = sqlite_database(tmp_path, state)
    publish_one(make_app, queue)
    log = refused_start(new_worker(workers, tmp_path, queue, url))
    assert f"the database {url} {says}" in log
    if state != "unknown":
        assert "run `auth0-events db upgrade`" in log
    assert depth(broker, queue) == 1
    assert depth(broker, f"{queue}.dlq") == 0
    if state == "missing":
        assert not (tmp_path / "ledger.sqlite3").exists()  # refusing creates no empty database file


@pytest.mark.worker
def test_worker_on_a_postgresql_database_behind_head_refuses_to_start_hiding_its_password(
    make_app: Any,
    broker: Any,
    queue: str,
    workers: list[WorkerProcess],
    tmp_path: Path,
    new_postgres_database: Any,
) -> None:
    """The same on PostgreSQL, with the URL's password hidden in the message."""
    with new_postgres_database() as url:
        command.downgrade(alembic_config(url), "0001")
        dispose_engines()
        with_password = url.replace("postgres@", "postgres:s3cret-pw@", 1)  # trust auth ignores it
        publish_one(make_app, queue)
        log = refused_start(new_worker(workers, tmp_path, queue, with_password))
        assert "s3cret-pw" not in log
        assert "postgres:***@127.0.0.1:5432/" in log
        assert "is at revision 0001; this release needs 0003: run `auth0-events db upgrade`" in log
        assert depth(broker, queue) == 1


# --- waiting for the database server -----------------------------------------------------------------


def test_an_unreachable_server_is_waited_for_then_refused_with_the_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing listens: a WARNING per attempt with doubling pauses, then SchemaUnreadable naming the
    database (password hidden) and the driver's reason."""
    url = "postgresql://auth0events:s3cret-pw@127.0.0.1:1/auth0events"
    pauses: list[float] = []
    caplog.set_level(logging.WARNING, logger="kernel.storage.db")

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        time.sleep(seconds / 10)

    with pytest.raises(SchemaUnreadable) as refused:
        wait_for_revisions(url, 3.5, sleep=sleep)
    assert pauses[:2] == [1.0, 2.0]
    message = str(refused.value)
    assert message.startswith(
        "cannot reach the database postgresql://auth0events:***@127.0.0.1:1/auth0events: "
    )
    assert "OperationalError" in message
    assert "s3cret-pw" not in message + caplog.text
    assert "trying again in 1 s" in caplog.text


def test_a_database_url_that_is_not_one_is_refused_without_repeating_it() -> None:
    """A DATABASE_URL SQLAlchemy cannot parse: refused at once, naming the variable, not its value."""
    with pytest.raises(SchemaUnreadable, match="^DATABASE_URL is not a database URL") as refused:
        wait_for_revisions("s3cret-pw@nowhere", 300, sleep=lambda _seconds: pytest.fail("waited"))
    assert "s3cret-pw" not in str(refused.value)


def test_a_sqlite_file_that_cannot_be_opened_is_refused_at_once(tmp_path: Path) -> None:
    """A SQLite "file" that cannot be opened (here a directory) is not waited for."""
    url = f"sqlite:///{tmp_path}"
    with pytest.raises(SchemaUnreadable, match="unable to open database file"):
        wait_for_revisions(url, 300, sleep=lambda _seconds: pytest.fail("waited for a SQLite file"))


# --- a real worker whose database server is not there yet -------------------------------------------------


@pytest.fixture
def postgres_proxy(new_postgres_database: Any) -> Iterator[tuple[TcpProxy, str]]:
    """A migrated PostgreSQL database reached through a TCP proxy the test can make refuse connections."""
    with new_postgres_database() as url:
        proxy = TcpProxy(("127.0.0.1", 5432))
        try:
            yield proxy, url.replace(":5432/", f":{proxy.port}/", 1)
        finally:
            proxy.close()


@pytest.mark.worker
def test_worker_waits_for_an_unreachable_database_consuming_nothing_then_starts(
    postgres_proxy: tuple[TcpProxy, str],
    make_app: Any,
    broker: Any,
    queue: str,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    """The database server refuses connections at start: the worker says so and waits, without consuming;
    once the server answers it checks the schema, starts and handles the waiting event."""
    proxy, url = postgres_proxy
    proxy.refusing = True
    publish_one(make_app, queue)
    worker = new_worker(workers, tmp_path, queue, url)
    with pytest.raises(AssertionError, match="timed out"):  # the process runs on, not ready
        worker.start(timeout=4)
    # A busy machine (a parallel test run) may take longer than that to import the worker and try once.
    wait_for(lambda: "cannot reach the database" in worker.log_text(), 30, 0.1, "the worker to say it waits")
    assert " ready." not in worker.log_text()
    assert depth(broker, queue) == 1
    proxy.refusing = False
    wait_for(lambda: " ready." in worker.log_text(), 30, 0.1, "the worker to start once the database answers")
    assert "is at revision 0003" in worker.log_text()
    wait_for(lambda: depth(broker, queue) == 0, 30, 0.1, "the event to be handled")
    assert depth(broker, f"{queue}.dlq") == 0


@pytest.mark.worker
def test_worker_waiting_for_its_database_stops_at_once_when_told(
    make_app: Any, queue: str, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    """SIGTERM while it waits for the database: a warm shutdown within seconds, exit code 0."""
    worker = new_worker(workers, tmp_path, queue, "postgresql://postgres@127.0.0.1:1/nothing")
    with pytest.raises(AssertionError, match="timed out"):
        worker.start(timeout=3)
    wait_for(lambda: "cannot reach the database" in worker.log_text(), 30, 0.1, "the worker to say it waits")
    began = time.monotonic()
    worker.stop()
    assert worker.process is not None
    assert worker.process.returncode == 0
    assert time.monotonic() - began < 5
