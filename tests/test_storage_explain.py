"""kernel.storage.explain: the one set of helpers that tell people about a database URL or error.

The archive commands, the dead-letter ledger look-up, the backfill's checkpoints and the worker's schema
check all name a database and its failure through these.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ArgumentError, OperationalError

from kernel.storage.explain import error_reason, missing_sqlite_file, safe_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        pytest.param("postgresql://ops:hunter2@db.example/events", "postgresql://ops:***@db.example/events"),
        pytest.param("postgresql://ops@db.example/events", "postgresql://ops@db.example/events"),
        pytest.param("sqlite:///auth0-events.sqlite3", "sqlite:///auth0-events.sqlite3"),
        pytest.param("hunter2@nowhere", "the given URL", id="not-a-url"),
    ],
)
def test_safe_url_hides_the_password_and_never_raises(url: str, shown: str) -> None:
    """The password becomes ***; a text that is not a URL is not repeated, since it may hold one."""
    assert safe_url(url) == shown


def sqlite_error(tmp_path: Path) -> OperationalError:
    """A real SQLAlchemy error: a query of a table that does not exist, with a parameter."""
    engine = create_engine(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    try:
        with engine.connect() as connection, pytest.raises(OperationalError) as raised:
            connection.execute(
                text("SELECT * FROM events WHERE user_name = :name"), {"name": "eve@example.com"}
            )
    finally:
        engine.dispose()
    return raised.value


def test_error_reason_is_the_drivers_first_line_without_statement_or_values(tmp_path: Path) -> None:
    """The driver's error type and first line: no SQL, no parameters, no link to SQLAlchemy's docs."""
    error = sqlite_error(tmp_path)
    assert "eve@example.com" in str(error)
    assert error_reason(error) == "OperationalError: no such table: events"


def test_error_reason_of_other_exceptions() -> None:
    """An exception without a driver error is named by itself; without a message, by its type alone."""
    assert error_reason(ValueError("first\nsecond")) == "ValueError: first"
    assert error_reason(TimeoutError()) == "TimeoutError"


def test_missing_sqlite_file_names_only_a_file_that_is_not_there(tmp_path: Path) -> None:
    """A SQLite URL whose file does not exist names it; the rest (opened without creating one) is None."""
    missing = tmp_path / "nowhere.sqlite3"
    existing = tmp_path / "here.sqlite3"
    existing.touch()
    assert missing_sqlite_file(f"sqlite:///{missing}") == str(missing)
    assert missing_sqlite_file(f"sqlite:///{existing}") is None
    assert missing_sqlite_file(f"sqlite:///{tmp_path}") is None  # a directory: opening it fails with a reason
    assert missing_sqlite_file("sqlite://") is None
    assert missing_sqlite_file("sqlite:///:memory:") is None
    assert missing_sqlite_file("postgresql://ops@db.example/events") is None
    assert not missing.exists()


def test_missing_sqlite_file_refuses_what_is_not_a_url() -> None:
    """A text that is not a database URL raises SQLAlchemy's ArgumentError for the caller to explain."""
    with pytest.raises(ArgumentError):
        missing_sqlite_file("hunter2@nowhere")
