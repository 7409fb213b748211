"""Database engine and sessions: SQLite by default, PostgreSQL by DATABASE_URL; migrations by Alembic."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from tasks.settings import get_settings

MIGRATIONS = Path(__file__).with_name("migrations")
# Several worker processes write one SQLite file: wait for the lock instead of failing at once.
SQLITE_BUSY_TIMEOUT_MS = 30_000

_engines: dict[tuple[str, int], Engine] = {}


def normalize_url(url: str) -> str:
    """Use the psycopg 3 driver for ``postgres://`` and ``postgresql://`` URLs (Heroku writes the former)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def make_engine(url: str, hide_parameters: bool = False) -> Engine:
    """Create an engine for ``url``; SQLite files get WAL mode and a busy timeout.

    ``hide_parameters`` (AUTH0_EVENTS_LOG_MASK_PII) keeps a statement's values, an event's user and IP
    among them, out of the text of its errors, which are logged and stored as dead-letter reasons.
    """
    url = normalize_url(url)
    if not url.startswith("sqlite"):
        engine = create_engine(url, pool_size=2, max_overflow=2, hide_parameters=hide_parameters)
        event.listen(engine, "checkin", _note_checkin)
        event.listen(engine, "checkout", _ping_if_idle)
        return engine
    engine = create_engine(
        url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, hide_parameters=hide_parameters
    )
    event.listen(engine, "connect", _sqlite_pragmas)
    # pysqlite's own transaction handling would defer BEGIN; issue it ourselves (see _sqlite_begin).
    event.listen(engine, "begin", _sqlite_begin)
    return engine


# SQLAlchemy's pool_pre_ping pings on every checkout: a round trip per transaction, 18% of a worker's time
# per event on PostgreSQL (BENCHMARKS.md). A connection used within the last PING_IDLE_SECONDS is used
# without one; the rare one that died meanwhile (a database restart then) fails its statement, the pool
# is invalidated, and the task is retried like any other transient database error.
PING_IDLE_SECONDS = 1.0


def _note_checkin(_dbapi_connection: Any, record: Any) -> None:
    record.info["checked_in_at"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Ping a connection idle for a while; raising DisconnectionError makes the pool take a fresh one."""
    if time.monotonic() - record.info.get("checked_in_at", float("-inf")) < PING_IDLE_SECONDS:
        return
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        dbapi_connection.rollback()
    except Exception as exc:  # noqa: BLE001 - any failure of a ping means the connection is unusable
        raise DisconnectionError(f"database connection failed its ping: {exc}") from exc


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    # BEGIN IMMEDIATE takes the write lock up front, so a read-then-write ledger check cannot interleave
    # with another process's (SQLite has no SELECT … FOR UPDATE). Read-only sessions need no lock.
    read_only = connection.get_execution_options().get("read_only", False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def get_engine(url: str | None = None) -> Engine:
    """Return this process's engine for ``url`` (DATABASE_URL by default).

    Keyed by process id: a pool child forked by Celery must not share its parent's connections.
    """
    settings = get_settings()
    url = url or settings.database_url
    key = (url, os.getpid())
    if key not in _engines:
        _engines[key] = make_engine(url, hide_parameters=settings.log_mask_pii)
    return _engines[key]


def dispose_engines() -> None:
    """Close every pooled connection of this process (tests use it before dropping a database)."""
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()
    _factories.clear()


@contextmanager
def session_scope(url: str | None = None, read_only: bool = False) -> Iterator[Session]:
    """A session whose transaction commits when the block ends and rolls back if it raises.

    ``read_only`` sessions (searches) do not take SQLite's write lock, so they never wait for workers.
    """
    with _session_factory(get_engine(url), read_only).begin() as session:
        yield session


@contextmanager
def transaction(url: str | None = None) -> Iterator[Connection]:
    """A connection whose transaction commits when the block ends and rolls back if it raises.

    The ledger's path: plain Core statements, without a Session's unit of work around them.
    """
    with get_engine(url).begin() as connection:
        yield connection


_factories: dict[tuple[int, bool], sessionmaker[Session]] = {}


def _session_factory(engine: Engine, read_only: bool) -> sessionmaker[Session]:
    # One factory per engine: building a sessionmaker for every transaction was a measured share of each
    # event's cost in the workers (BENCHMARKS.md, end to end).
    key = (id(engine), read_only)
    if key not in _factories:
        bind = engine.execution_options(read_only=True) if read_only else engine
        _factories[key] = sessionmaker(bind, expire_on_commit=False)
    return _factories[key]


def alembic_config(url: str | None = None) -> Config:
    """Alembic configuration pointing at tasks/migrations and ``url``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", (url or get_settings().database_url).replace("%", "%%"))
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Apply the migrations up to ``revision``; safe to run at every start."""
    command.upgrade(alembic_config(url), revision)
