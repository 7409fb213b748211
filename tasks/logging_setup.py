"""Logging for every process: JSON lines (text on a terminal), event context on each line, PII masking."""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

from tasks.settings import Settings

#: What ties a line to an event and a request; set with log_context(), added to every line in that context.
CONTEXT_FIELDS = ("request_id", "log_id", "event_type", "queue", "task_id")
#: Fields that identify a person; AUTH0_EVENTS_LOG_MASK_PII replaces their values with a stable hash.
PERSONAL_FIELDS = ("user_name", "user_email", "email", "ip", "user_id")
# Shown after the message in text mode, so a terminal shows what the JSON carries.
_TEXT_FIELDS = (*CONTEXT_FIELDS, *PERSONAL_FIELDS, "reason", "client_id")

_context: ContextVar[dict[str, str] | None] = ContextVar("auth0_events_log_context", default=None)


@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Add ``fields`` (request_id, log_id, event_type, queue, task_id) to every line logged inside."""
    merged = {**(_context.get() or {}), **{key: value for key, value in fields.items() if value is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Copies the current log context onto each record; fields passed with ``extra`` win."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class MaskPersonalData(logging.Filter):
    """Replaces user names, emails, user ids and IPs on a record with ``masked:<8 hex>``.

    A hash rather than asterisks, so lines about the same person can still be correlated.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        for key in PERSONAL_FIELDS:
            value = getattr(record, key, None)
            if isinstance(value, str) and value:
                setattr(record, key, mask(value))
        return True


def mask(value: str) -> str:
    """A stable, non-reversible stand-in for a personal value."""
    return "masked:" + hashlib.sha256(value.encode()).hexdigest()[:8]


class TextFormatter(logging.Formatter):
    """``time level [process] logger: message key=value …`` for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s [%(processName)s] %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        pairs = [f"{key}={getattr(record, key)}" for key in _TEXT_FIELDS if getattr(record, key, None)]
        return f"{line} {' '.join(pairs)}" if pairs else line


def make_formatter(log_format: str, stream: TextIO) -> logging.Formatter:
    """JSON unless the format is ``text``, or ``auto`` and ``stream`` is a terminal."""
    if log_format == "text" or (log_format == "auto" and stream.isatty()):
        return TextFormatter()
    return JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s %(process)d %(processName)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        json_ensure_ascii=False,
    )


def configure_logging(
    settings: Settings, level: int | str | None = None, stream: TextIO | None = None
) -> None:
    """Send every logger's lines to ``stream`` (stderr) in the configured format; replaces root handlers."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    if settings.log_mask_pii:
        handler.addFilter(MaskPersonalData())
    handler.setFormatter(make_formatter(settings.log_format, stream))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level or settings.log_level)


def celery_setup_logging(loglevel: Any = None, **_: Any) -> None:
    """Celery's setup_logging signal: our configuration instead of Celery's (--loglevel still applies)."""
    from tasks.settings import get_settings

    configure_logging(get_settings(), level=loglevel or None)
