"""Throwaway PostgreSQL databases, migrated, for the test suite and the benchmarks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from kernel.storage.db import dispose_engines, upgrade


class ScratchDatabaseError(RuntimeError):
    """Raised when the server at the admin URL cannot create a database (not running, no rights)."""


@contextmanager
def scratch_postgres_database(admin_url: str, prefix: str) -> Iterator[str]:
    """Create a migrated database named ``<prefix>_<random>`` next to ``admin_url``'s; drop it afterwards.

    Yields its URL. Raises ScratchDatabaseError when the database cannot be created.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any failure means the same thing here
        admin.dispose()
        raise ScratchDatabaseError(str(exc)) from exc
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        dispose_engines()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
