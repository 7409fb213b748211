"""Exceptions described for logs and dead-letter reasons, without the personal data a database error holds."""

from __future__ import annotations

import re

from sqlalchemy.exc import DataError, StatementError


def describe_error(exc: BaseException) -> str:
    """Return ``ExceptionType: message`` for logs and dead-letter reasons; never raises.

    A database error is named with the driver's error and the first line of its message only: not the
    statement and its parameters (the event's user names and IPs), nor, for a DataError, the values the
    database quotes in that line.
    """
    if isinstance(exc, StatementError):
        return _describe_statement_error(exc)
    message = _message(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _describe_statement_error(exc: StatementError) -> str:
    orig = exc.orig
    name = type(exc).__name__
    if orig is None:
        return name
    if type(orig).__name__ != name:
        name = f"{name} ({type(orig).__name__})"
    message = first_line(orig)
    if isinstance(exc, DataError):
        message = _QUOTED.sub('"…"', message)
    return f"{name}: {message}" if message else name


# What PostgreSQL quotes in a data error's message is the offending value.
_QUOTED = re.compile(r'"[^"]*"')


def first_line(exc: BaseException) -> str:
    """The first line of the exception's text, stripped; "" when it has none or cannot be printed."""
    return next(iter(_message(exc).splitlines()), "")


def _message(exc: BaseException) -> str:
    try:
        return str(exc).strip()
    except Exception:  # noqa: BLE001 - e.g. SQLAlchemy printing a parameter too long to print
        return ""
