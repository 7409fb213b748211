"""Logging for every process: JSON lines (text on a terminal), event context on each line, PII masking."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO

from pythonjsonlogger.json import JsonEncoder, JsonFormatter

from kernel.pii import current_personal_values, mask, mask_text, set_mask_key
from kernel.settings import Settings

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


class Masker:
    """What AUTH0_EVENTS_LOG_MASK_PII does to each value a line carries; nothing when it is off.

    On, it masks the whole value of a personal field (user_name, ip …) and, in every other value, the
    message and the exception text included, each e-mail and IP address and each personal value of the
    event being processed (kernel/pii.py).
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def text(self, text: str) -> str:
        """``text`` with the personal data in it masked."""
        return mask_text(text, current_personal_values()) if self.enabled else text

    def field(self, key: str, value: Any, fallback: Callable[[Any], Any] = str) -> Any:
        """A line's field: a personal field's string masked whole, anything else as value() does."""
        if self.enabled and key in PERSONAL_FIELDS and isinstance(value, str) and value:
            return mask(value)
        return self.value(value, fallback) if self.enabled else value

    def value(self, value: Any, fallback: Callable[[Any], Any] = str) -> Any:
        """Strings masked, in containers too; other objects through ``fallback`` (to text or JSON) first."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes | bytearray):  # as text: JSON's base64 would hide an address from the mask
            return self.text(repr(value))
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, Mapping):
            return {self.text(str(key)): self.value(item, fallback) for key, item in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(item, fallback) for item in value]
        return self.value(fallback(value), str)


def _escapes(codes: Iterable[int]) -> dict[int, str]:
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return {
        code: named.get(chr(code), f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}") for code in codes
    }


# Characters that end a line for some reader (str.splitlines, terminals, JavaScript), or that a terminal
# acts on (escape sequences): C0, DEL, C1, U+2028 and U+2029.
_C0 = range(0x20)
_OTHER_BREAKS = (*range(0x7F, 0xA0), 0x2028, 0x2029)
_TEXT_ESCAPES = _escapes((*_C0, *_OTHER_BREAKS))
# json.dumps escapes C0 itself; with ensure_ascii=False it leaves the others raw.
_JSON_ESCAPES = {code: f"\\u{code:04x}" for code in _OTHER_BREAKS}
# A text field's value is quoted (JSON string syntax) when it holds any of these, so a value can
# neither end the line nor pass for another key=value pair.
_NEEDS_QUOTES = re.compile(r'[\s"=\\]|[\x00-\x1f\x7f-\x9f\u2028\u2029]')
_JSON_NEEDS_ESCAPES = re.compile(r"[\x7f-\x9f\u2028\u2029]")


class TextFormatter(logging.Formatter):
    """``time level [process] logger: message key=value …`` for people reading a terminal.

    One record is one line: control characters and line separators are escaped (``\\n``, ``\\x1b``), a
    field's value is quoted when it holds spaces, quotes or ``=``, and an exception's traceback is the
    ``exc_info`` field.
    """

    def __init__(self, masker: Masker | None = None) -> None:
        super().__init__()
        self.masker = masker or Masker(False)

    def format(self, record: logging.LogRecord) -> str:
        message = self.masker.text(record.getMessage())
        line = f"{self.formatTime(record)} {record.levelname} [{record.processName}] {record.name}: {message}"
        pairs = [
            f"{key}={_text_value(self.masker.field(key, value))}"
            for key in _TEXT_FIELDS
            if (value := getattr(record, key, None))
        ]
        if record.exc_info or record.exc_text:
            exc_text = self.formatException(record.exc_info) if record.exc_info else str(record.exc_text)
            pairs.append(f"exc_info={_quoted(self.masker.text(exc_text))}")
        if record.stack_info:
            pairs.append(f"stack_info={_quoted(self.masker.text(self.formatStack(record.stack_info)))}")
        return " ".join((line, *pairs)).translate(_TEXT_ESCAPES)


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    return _quoted(text) if not text or _NEEDS_QUOTES.search(text) else text


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line; with a masking Masker, personal data masked in every value."""

    def __init__(self, masker: Masker | None = None) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(process)d %(processName)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            json_ensure_ascii=False,
        )
        self.masker = masker or Masker(False)
        self._encoder = JsonEncoder()

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        if not self.masker.enabled:
            return log_data
        return {key: self.masker.field(key, value, self._encoder.default) for key, value in log_data.items()}

    def jsonify_log_record(self, log_data: dict[str, Any]) -> str:
        line = super().jsonify_log_record(log_data)
        # Searched first: translate() looks up every character, a cost on each of the workers' lines.
        return line.translate(_JSON_ESCAPES) if _JSON_NEEDS_ESCAPES.search(line) else line


def make_formatter(log_format: str, stream: TextIO, mask_pii: bool = False) -> logging.Formatter:
    """JSON unless the format is ``text``, or ``auto`` and ``stream`` is a terminal; masking if asked."""
    masker = Masker(mask_pii)
    if log_format == "text" or (log_format == "auto" and stream.isatty()):
        return TextFormatter(masker)
    return JsonLineFormatter(masker)


def configure_logging(
    settings: Settings, level: int | str | None = None, stream: TextIO | None = None
) -> None:
    """Send every logger's lines to ``stream`` (stderr) in the configured format; replaces root handlers."""
    stream = stream or sys.stderr
    set_mask_key(settings.log_mask_key)
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(make_formatter(settings.log_format, stream, settings.log_mask_pii))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level or settings.log_level)


def celery_setup_logging(loglevel: Any = None, **_: Any) -> None:
    """Celery's setup_logging signal: our configuration instead of Celery's (--loglevel still applies)."""
    from kernel.settings import get_settings

    configure_logging(get_settings(), level=loglevel or None)
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # Celery's INFO line for each message received says what Flower's task-received event says; each
        # event is still logged when it ends ("succeeded in", with its log_id) and by the log handler. One
        # JSON line less per event is ~6 % of a threads worker's CPU (BENCHMARKS.md, "Workers").
        logging.getLogger("celery.worker.strategy").setLevel(logging.WARNING)
