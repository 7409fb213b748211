"""Database connections: a PostgreSQL connection that died while idle in the pool is replaced, not used."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from kernel.storage import db
from tests.helpers import POSTGRES_ADMIN_URL


def backend_pid(url: str) -> int:
    """The server process behind the connection the pool hands out next."""
    with db.transaction(url) as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def terminate(pid: int) -> None:
    """Kill one server process, as a database restart or an idle-connection reaper would."""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
    finally:
        admin.dispose()


def test_connection_killed_while_idle_is_replaced_on_checkout(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After its server process is killed, the next transaction runs on a fresh connection, without error."""
    monkeypatch.setattr(db, "PING_IDLE_SECONDS", 0.0)  # every checkout counts as idle
    db.dispose_engines()
    first = backend_pid(postgres_url)
    assert backend_pid(postgres_url) == first  # the pool reuses its connection
    terminate(first)
    assert backend_pid(postgres_url) != first


def test_connection_used_just_now_is_not_pinged(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection checked in moments ago is handed out as it is: no ping round trip per transaction."""
    monkeypatch.setattr(db, "PING_IDLE_SECONDS", 3600.0)
    db.dispose_engines()
    first = backend_pid(postgres_url)
    terminate(first)
    # Unpinged, the dead connection fails its statement; the pool is invalidated, and the next one works.
    with pytest.raises(Exception, match="terminat|closed|connection"):
        backend_pid(postgres_url)
    assert backend_pid(postgres_url) != first


def test_scratch_database_on_an_unreachable_server_says_so() -> None:
    """No server at the admin URL: ScratchDatabaseError with the driver's reason, nothing yielded."""
    from kernel.storage.scratch_db import ScratchDatabaseError, scratch_postgres_database

    database = scratch_postgres_database("postgresql+psycopg://postgres@127.0.0.1:1/test", "unused")
    with pytest.raises(ScratchDatabaseError, match="127.0.0.1"):
        database.__enter__()


def test_scratch_database_is_migrated_and_dropped_afterwards(postgres_url: str) -> None:
    """The yielded database has the ledger's tables; after the block it no longer exists."""
    from kernel.storage.scratch_db import scratch_postgres_database

    with scratch_postgres_database(POSTGRES_ADMIN_URL, "auth0_events_test_scratch") as url:
        with db.transaction(url) as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM events").scalar_one() == 0
        name = url.rsplit("/", 1)[1]
    admin = create_engine(POSTGRES_ADMIN_URL)
    try:
        with admin.connect() as connection:
            exists = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
            assert exists.first() is None
    finally:
        admin.dispose()
