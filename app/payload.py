"""Parse a log stream body in any of Auth0's three formats: JSON Lines, a JSON array, a JSON object."""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
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
    return list(iter_records(decode_body(body)))


def decode_body(body: bytes) -> str:
    """Return the body as text, without a byte order mark; raises PayloadError if it is not UTF-8."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not UTF-8 (byte {exc.start})") from exc
    return text.removeprefix("\ufeff")


def iter_records(text: str) -> Iterator[Any]:
    """Yield the records of a decoded body one at a time, as parse_body returns them.

    A top-level array is read item by item, so a large body never exists as Python objects all at once
    (the receiver handles it in slices). Raises PayloadError when it reaches malformed JSON: a caller
    that must not act on half a body reads it through once before acting.
    """
    position = _skip_whitespace(text, 0)
    if position == len(text):
        raise PayloadError("body is empty")
    while position < len(text):
        if text[position] == "[":
            position = yield from _array_items(text, position + 1)
        else:
            value, position = _decode_value(text, position)
            yield value
        position = _skip_whitespace(text, position)


def _array_items(text: str, position: int) -> Generator[Any, None, int]:
    # json has no incremental parser for an array's items; this is the grammar of one, with the
    # standard decoder for each item and its messages for the errors.
    position = _skip_whitespace(text, position)
    if text.startswith("]", position):
        return position + 1
    while True:
        value, position = _decode_value(text, position)
        yield value
        position = _skip_whitespace(text, position)
        if text.startswith("]", position):
            return position + 1
        if not text.startswith(",", position):
            raise _error("Expecting ',' delimiter", text, position)
        position = _skip_whitespace(text, position + 1)


def _decode_value(text: str, position: int) -> tuple[Any, int]:
    try:
        value, end = _DECODER.raw_decode(text, position)
    except json.JSONDecodeError as exc:
        raise PayloadError(exc.msg, exc.lineno, exc.colno) from exc
    except RecursionError as exc:
        # Python's decoder recurses per nesting level; a hostile body must still get a 400.
        raise PayloadError("JSON is nested too deeply") from exc
    return value, end


def _error(message: str, text: str, position: int) -> PayloadError:
    where = json.JSONDecodeError(message, text, position)  # computes the line and column
    return PayloadError(message, where.lineno, where.colno)


def _skip_whitespace(text: str, position: int) -> int:
    while position < len(text) and text[position] in _WHITESPACE:
        position += 1
    return position
