"""The Alembic migrations build exactly the schema the models describe, and go down again cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect, text

from kernel.storage.db import (
    alembic_config,
    dispose_engines,
    get_engine,
    schema_revisions,
    transaction,
)

CLI = str(Path(sys.executable).parent / "auth0-events")


@pytest.fixture
def postgres_database(new_postgres_database: Any) -> Iterator[str]:
    """database_url's PostgreSQL database is the test's own: the downgrade must not pull tables from under
    others."""
    with new_postgres_database() as url:
        yield url


def test_migrations_match_the_models(database_url: str) -> None:
    """After upgrade to head, autogenerate finds nothing to change (models and migrations agree)."""
    command.check(alembic_config(database_url))


def test_downgrade_to_base_and_upgrade_again(database_url: str) -> None:
    """Every migration can be reverted and re-applied."""
    config = alembic_config(database_url)
    command.downgrade(config, "base")
    assert "events" not in inspect(get_engine(database_url)).get_table_names()
    command.upgrade(config, "head")
    assert {"events", "handler_runs", "alert_hits", "alert_incidents"} <= set(
        inspect(get_engine(database_url)).get_table_names()
    )


def test_revisions_at_head_behind_empty_and_unknown(database_url: str) -> None:
    """At head: no problem. Downgraded, emptied or stamped by a newer release: the problem says which."""
    assert schema_revisions(database_url).problem(database_url) is None
    config = alembic_config(database_url)
    command.downgrade(config, "0001")
    assert schema_revisions(database_url).current == ("0001",)
    command.downgrade(config, "base")
    assert "has no schema" in str(schema_revisions(database_url).problem(database_url))
    command.upgrade(config, "head")
    with transaction(database_url) as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'abc123'"))
    revisions = schema_revisions(database_url)
    assert revisions.unknown == ("abc123",)
    assert "a newer release of auth0-events migrated it" in str(revisions.problem(database_url))
    dispose_engines()


@pytest.mark.process
def test_db_upgrade_command_says_the_revision_the_database_ends_at(tmp_path: Path) -> None:
    """`auth0-events db upgrade` names the revision reached (not "head"); --revision below it migrates down,
    as its help says, instead of claiming a revision the database is not at."""
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    env = {**os.environ, "DATABASE_URL": url}

    def db_upgrade(*args: str) -> str:
        result = subprocess.run(
            [CLI, "db", "upgrade", *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert db_upgrade() == f"database {url} is at revision 0002 (head)"
    assert db_upgrade("--revision", "0001") == f"database {url} is at revision 0001"
    assert schema_revisions(url).current == ("0001",)
    assert db_upgrade() == f"database {url} is at revision 0002 (head)"
    assert schema_revisions(url).current == ("0002",)
