"""Database engine and sessions: SQLite by default, PostgreSQL by DATABASE_URL; migrations by Alembic."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from kernel.settings import get_settings
from kernel.storage.explain import error_reason, missing_sqlite_file, safe_url

logger = logging.getLogger(__name__)

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
        # A worker's ledger writes share one connection at a time (tasks/group_commit.py); transactional
        # handlers take one each, up to WORKER_CONCURRENCY threads at once, beyond the two kept open.
        engine = create_engine(url, pool_size=2, max_overflow=30, hide_parameters=hide_parameters)
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


_dispose_hooks: list[Callable[[], None]] = []


def on_dispose(hook: Callable[[], None]) -> None:
    """Call ``hook`` first each time dispose_engines runs: a part that keeps a connection out of the
    pool (the worker's group commit) gives it back, since disposing an engine closes only pooled ones."""
    _dispose_hooks.append(hook)


def dispose_engines() -> None:
    """Close every pooled connection of this process (tests use it before dropping a database)."""
    for hook in _dispose_hooks:
        hook()
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
    """Alembic configuration pointing at kernel/storage/migrations and ``url``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", (url or get_settings().database_url).replace("%", "%%"))
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Apply the migrations up to ``revision``; safe to run at every start."""
    command.upgrade(alembic_config(url), revision)


def migrate(url: str, revision: str = "head") -> SchemaRevisions:
    """Migrate the database at ``url`` up to ``revision``, or down when the database is past it (Alembic's
    upgrade to an older revision does nothing); return the revisions it ends at."""
    config = alembic_config(url)
    current = schema_revisions(url).current
    script = ScriptDirectory.from_config(config)
    below = (
        {rev.revision for rev in script.iterate_revisions(current, "base")} - set(current)
        if current
        else set()
    )
    if revision in below or (revision == "base" and current):
        command.downgrade(config, revision)
    else:
        command.upgrade(config, revision)
    return schema_revisions(url)


UPGRADE_COMMAND = "auth0-events db upgrade"
# How long a revision check waits for PostgreSQL to accept a connection before that attempt fails.
CONNECT_TIMEOUT_SECONDS = 10
# Pauses between attempts to reach a database server double up to this.
RETRY_DELAY_MAX_SECONDS = 30.0


class SchemaUnreadable(Exception):
    """Raised when a database's schema revision cannot be read: the server stayed unreachable for the whole
    wait, a SQLite file cannot be opened, or the database refused the read."""


@dataclass(frozen=True)
class SchemaRevisions:
    """The revisions a database is at, and the heads of the migrations this release ships."""

    current: tuple[str, ...]
    heads: tuple[str, ...]
    #: Those of ``current`` that no migration of this release has (a newer release applied them).
    unknown: tuple[str, ...] = ()

    @property
    def at_head(self) -> bool:
        """Whether the database has exactly the schema this release's code expects."""
        return set(self.current) == set(self.heads)

    def problem(self, url: str) -> str | None:
        """Why a worker cannot run on the database at ``url`` (password hidden), or None at head."""
        where = f"the database {safe_url(url)}"
        needs = ", ".join(self.heads)
        fix = f"run `{UPGRADE_COMMAND}` with this DATABASE_URL, then start the worker again"
        if self.at_head:
            return None
        if not self.current:
            return f"{where} has no schema (no migration applied): {fix}"
        if self.unknown:
            return (
                f"{where} is at revision {', '.join(self.unknown)}, which this release does not have (a "
                f"newer release of auth0-events migrated it; this one needs {needs}): run the workers of "
                "the release that migrated it"
            )
        return f"{where} is at revision {', '.join(self.current)}; this release needs {needs}: {fix}"


def is_sqlite(url: str) -> bool:
    """Whether ``url`` names a SQLite database (a file the process opens, not a server it connects to)."""
    return make_url(normalize_url(url)).get_backend_name() == "sqlite"


def schema_revisions(url: str) -> SchemaRevisions:
    """Read the revisions the database at ``url`` is at, without changing it.

    A SQLite file that does not exist is reported as having no schema and is not created. Raises
    SQLAlchemy's OperationalError (or InterfaceError) when the database cannot be reached.
    """
    script = ScriptDirectory.from_config(alembic_config(url))
    heads = tuple(script.get_heads())
    current = () if missing_sqlite_file(url) else _current_revisions(url)
    known = {revision.revision for revision in script.walk_revisions()}
    return SchemaRevisions(current, heads, tuple(rev for rev in current if rev not in known))


def _current_revisions(url: str) -> tuple[str, ...]:
    # An engine of its own, without the pool or SQLite's WAL pragma: one read, then closed.
    connect_args = {} if is_sqlite(url) else {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    engine = create_engine(normalize_url(url), poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as connection:
            return tuple(MigrationContext.configure(connection).get_current_heads())
    finally:
        engine.dispose()


def wait_for_revisions(
    url: str, wait_seconds: float, sleep: Callable[[float], None] = time.sleep
) -> SchemaRevisions:
    """``schema_revisions(url)``, tried again with doubling pauses while the server cannot be reached.

    Logs a WARNING naming the database (password hidden) and the error before each pause. SQLite is not
    waited for: a file that cannot be opened does not open by itself. Raises SchemaUnreadable, naming the
    database and the last error, once ``wait_seconds`` have passed or at once for any other database error.
    """
    try:
        sqlite = is_sqlite(url)
    except ArgumentError as exc:  # the text is not repeated: it may hold a password
        raise SchemaUnreadable(
            "DATABASE_URL is not a database URL: use sqlite:///<file> or postgresql://user:password@host/db"
        ) from exc
    deadline = time.monotonic() + (0 if sqlite else wait_seconds)
    delay = 1.0
    while True:
        try:
            return schema_revisions(url)
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() + delay > deadline:
                reason = error_reason(exc)
                raise SchemaUnreadable(f"cannot reach the database {safe_url(url)}: {reason}") from exc
            logger.warning(
                "cannot reach the database %s (%s); trying again in %.0f s",
                safe_url(url),
                error_reason(exc),
                delay,
            )
        except SQLAlchemyError as exc:
            raise SchemaUnreadable(
                f"cannot read the schema revision of the database {safe_url(url)}: {error_reason(exc)}"
            ) from exc
        sleep(delay)
        delay = min(delay * 2, RETRY_DELAY_MAX_SECONDS)
