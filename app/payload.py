"""Parse a log stream body in any of Auth0's three formats: JSON Lines, a JSON array, a JSON object."""

from __future__ import annotations

import json
from typing import Any

_DECODER = json.JSONDecoder()
_WHITESPACE = " \t\n\r"


class PayloadError(ValueError):
    """Raised when a body is not JSON in any accepted format; ``line`` and ``column`` say where (1-based)."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        where = f" at line {line}, column {column}" if line is not None else ""
        super().__init__(message + where)
        self.reason = message
        self.line = line
        self.column = column


def parse_body(body: bytes) -> list[Any]:
    """Return the records in ``body``, whatever the Content-Type said.

    The body is read as a sequence of JSON values separated by whitespace, which covers all three
    formats (and pretty-printed JSON Lines); an array's items are records, any other value is one
    record. Items that are not objects are returned as they are, for validation to quarantine.
    Raises PayloadError for bytes that are not UTF-8, an empty body, or malformed JSON.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not UTF-8 (byte {exc.start})") from exc
    text = text.removeprefix("\ufeff")
    records: list[Any] = []
    for value in _json_values(text):
        records.extend(value if isinstance(value, list) else [value])
    return records


def _json_values(text: str) -> list[Any]:
    values = []
    position = _skip_whitespace(text, 0)
    if position == len(text):
        raise PayloadError("body is empty")
    while position < len(text):
        try:
            value, position = _DECODER.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise PayloadError(exc.msg, exc.lineno, exc.colno) from exc
        except RecursionError as exc:
            # Python's decoder recurses per nesting level; a hostile body must still get a 400.
            raise PayloadError("JSON is nested too deeply") from exc
        values.append(value)
        position = _skip_whitespace(text, position)
    return values


def _skip_whitespace(text: str, position: int) -> int:
    while position < len(text) and text[position] in _WHITESPACE:
        position += 1
    return position
