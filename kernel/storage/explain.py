"""Database URLs and errors told to people: the password hidden, the driver's first line, a missing file."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from kernel.error_text import first_line


def safe_url(url: str) -> str:
    """``url`` with its password hidden, for messages and logs; never raises.

    A text that is not a database URL is shown as "the given URL": its password could not be found to hide.
    """
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "the given URL"


def error_reason(exc: BaseException) -> str:
    """``OperationalError: no such table: events``: the driver's error and the first line of its message.

    SQLAlchemy's own text adds the statement, its parameters (an event's user names and IPs) and a link.
    """
    cause = getattr(exc, "orig", None) or exc
    line = first_line(cause)
    return f"{type(cause).__name__}: {line}" if line else type(cause).__name__


def missing_sqlite_file(url: str) -> str | None:
    """The file a SQLite URL names when it does not exist, else None (a server, memory, an existing path).

    Opening it would create an empty database, only to find no table in it. Raises SQLAlchemy's
    ArgumentError when ``url`` is not a database URL.
    """
    parsed = make_url(url)
    path = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if not path or path == ":memory:" or Path(path).exists():
        return None
    return path
