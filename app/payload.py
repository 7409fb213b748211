"""Parse a log stream body in any of Auth0's three formats: JSON Lines, a JSON array, a JSON object."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from json.decoder import scanstring  # type: ignore[attr-defined]  # not in typeshed; the C scanner
from json.scanner import NUMBER_RE
from typing import Any

import msgspec

from kernel.record_limits import TOO_DEEP, too_long_integer

_DECODER = json.JSONDecoder()
# The C scanner behind json.loads, called directly: raw_decode's Python wrapper was a third of the cost
# of a body of tiny records.
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_BLANKS = frozenset(" \t\n\r")  # a set, so that the empty string (the end of the text) is not in it
_SEPARATOR = re.compile(r"[ \t\n\r]*([,\]])[ \t\n\r]*")
_STRUCTURE = re.compile(r'["\[\]{}]')
_CLOSER = {"[": "]", "{": "}"}

#: A record with its place in the decoded body: the value and the offsets of its text.
Span = tuple[Any, int, int]

# msgspec's decoder, for the JSON Lines fast path. Into plain Python values (no schema): the intake
# validates them, and a record must be whole to be quarantined as received.
_STRICT = msgspec.json.Decoder()
_BOM = "\ufeff".encode()
_LINE_BLANKS = b" \t\r"


class PayloadError(ValueError):
    """Raised when a body is not JSON in any accepted format; ``line`` and ``column`` say where (1-based)."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        where = f" at line {line}, column {column}" if line is not None else ""
        super().__init__(message + where)
        self.reason = message
        self.line = line
        self.column = column


@dataclass(frozen=True)
class UnreadValue:
    """Stands for a value Python's parser could not build although the body is JSON: nested past its
    recursion limit, or an integer over Python's digit limit. Its text is kept, and the intake quarantines
    it with ``reason``."""

    reason: str


def parse_body(body: bytes) -> list[Any]:
    """Return the records in ``body``, whatever the Content-Type said.

    The body is read as a sequence of JSON values separated by whitespace, which covers all three
    formats (and pretty-printed JSON Lines); an array's items are records, any other value is one
    record. Items that are not objects are returned as they are, for validation to quarantine.
    Raises PayloadError for bytes that are not UTF-8, an empty body, or malformed JSON.
    """
    return list(iter_records(decode_body(body)))


def strict_lines(body: bytes) -> tuple[list[dict[str, Any]], list[bytes]] | None:
    """The records of a JSON Lines body of objects and the bytes of each, or None: read it with parse_body.

    The fast path for what Auth0 sends (one object per line), through msgspec: about four times json's
    speed, and stricter in exactly the ways that matter here. It refuses what json reads as something
    no task message can carry (NaN and Infinity, numbers out of a double's range such as ``1e400``,
    integers over Python's digit limit), lone surrogates (``"\\ud800"``), and nesting past its recursion
    limit; for every record it accepts it builds the values json builds (duplicate keys: the last wins,
    big integers stay int, ``-0.0`` stays negative). So a record read here is known to be carriable but
    for its depth (which the intake bounds by counting brackets), and its text can travel as it came.

    None, and the caller reads the whole body with parse_body, when any line is not one JSON object that
    msgspec accepts: a pretty-printed record, an array, a value that is not an object, malformed JSON, a
    record with any of the values above, bytes that are not UTF-8, or a body without records. Those go
    the old way, with the same outcome as before, record for record.
    """
    records: list[dict[str, Any]] = []
    texts: list[bytes] = []
    decode = _STRICT.decode
    for line in body.removeprefix(_BOM).split(b"\n"):
        text = line.strip(_LINE_BLANKS)
        if not text:
            continue
        try:
            record = decode(text)
        except (msgspec.DecodeError, RecursionError):  # a ValidationError is a DecodeError
            return None
        if type(record) is not dict:
            return None
        records.append(record)
        texts.append(text)
    return (records, texts) if records else None


def decode_body(body: bytes) -> str:
    """Return the body as text, without a byte order mark; raises PayloadError if it is not UTF-8."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not UTF-8 (byte {exc.start})") from exc
    return text.removeprefix("\ufeff")


def iter_records(text: str) -> Iterator[Any]:
    """Yield the records of a decoded body one at a time, as parse_body returns them."""
    for value, _start, _end in iter_spans(text):
        yield value


def iter_spans(text: str) -> Iterator[Span]:
    """Yield each record of a decoded body with the offsets of its text, ``text[start:end]``.

    A top-level array is read item by item, so a large body never exists as Python objects all at once
    (the receiver handles it in slices). A value Python cannot build is yielded as an UnreadValue.
    Raises PayloadError when it reaches malformed JSON: a caller that must not act on half a body reads
    it through once before acting.
    """
    position = _skip_whitespace(text, 0)
    if position == len(text):
        raise PayloadError("body is empty")
    while position < len(text):
        if text[position] == "[":
            position = yield from _array_items(text, position + 1)
        else:
            try:
                value, end = _SCAN(text, position)
            except (StopIteration, ValueError, RecursionError) as failure:
                value, end = _unscanned(text, position, failure)
            yield value, position, end
            position = end
        if text[position : position + 1] in _BLANKS:  # one newline between JSON Lines: no regex for it
            position += 1
            if text[position : position + 1] in _BLANKS:
                position = _skip_whitespace(text, position)


def value_at(text: str, start: int) -> Any:
    """The value whose text starts at ``start`` (of a span iter_spans yielded), parsed again."""
    return _SCAN(text, start)[0]


def _array_items(text: str, position: int) -> Generator[Span, None, int]:
    # json has no incremental parser for an array's items; this is the grammar of one, with the
    # standard decoder for each item and its messages for the errors. It runs once per record (millions
    # of times for a body of tiny ones), so the compact separators are checked before any regex.
    position = _skip_whitespace(text, position)
    if text.startswith("]", position):
        return position + 1
    while True:
        try:
            value, end = _SCAN(text, position)
        except (StopIteration, ValueError, RecursionError) as failure:
            value, end = _unscanned(text, position, failure)
        yield value, position, end
        following = text[end : end + 1]
        if following == ",":
            position = end + 1
            if text[position : position + 1] in _BLANKS:
                position = _skip_whitespace(text, position)
        elif following == "]":
            return end + 1
        elif separator := _SEPARATOR.match(text, end):
            if separator.group(1) == "]":
                return separator.end(1)
            position = separator.end()
        else:
            raise _error("Expecting ',' delimiter", text, _skip_whitespace(text, end))


def _unscanned(text: str, position: int, failure: Exception) -> tuple[Any, int]:
    """The value at ``position`` after json's scanner refused it: an UnreadValue and where it ends when
    the JSON is valid but Python cannot build it, else PayloadError saying where the JSON is wrong."""
    if isinstance(failure, StopIteration):
        raise _error("Expecting value", text, failure.value) from None
    if isinstance(failure, json.JSONDecodeError):
        raise PayloadError(failure.msg, failure.lineno, failure.colno) from failure
    if isinstance(failure, RecursionError):
        # Python's decoder recurses per nesting level; the value is delimited without recursion instead.
        return UnreadValue(TOO_DEEP), _value_end(text, position)
    # The only other refusal of valid JSON: int() of more digits than sys.get_int_max_str_digits().
    if "integer string conversion" not in str(failure):
        raise _error(str(failure), text, position) from failure
    return UnreadValue(too_long_integer()), _value_end(text, position)


def _value_end(text: str, start: int) -> int:
    """Where the value at ``start`` ends, found without recursion: strings are skipped with json's own
    scanner and brackets matched on a stack. Only the brackets are checked, not what lies between them
    (the value is kept as text, not used). Raises PayloadError at a mismatched or missing bracket."""
    if text[start] not in _CLOSER:
        number = NUMBER_RE.match(text, start)
        if number is None:
            raise _error("Expecting value", text, start)
        return number.end()
    expected: list[str] = []
    position = start
    while match := _STRUCTURE.search(text, position):
        char, position = match.group(), match.end()
        if char == '"':
            try:
                position = scanstring(text, position)[1]
            except json.JSONDecodeError as exc:
                raise PayloadError(exc.msg, exc.lineno, exc.colno) from exc
        elif char in _CLOSER:
            expected.append(_CLOSER[char])
        else:
            closer = expected.pop()  # never empty here: the search starts at the opening bracket
            if char != closer:
                raise _error(f"Expecting {closer!r}", text, match.start())
            if not expected:
                return position
    raise _error(f"Unterminated value starting with {text[start]!r}", text, start)


def _error(message: str, text: str, position: int) -> PayloadError:
    where = json.JSONDecodeError(message, text, position)  # computes the line and column
    return PayloadError(message, where.lineno, where.colno)


def _skip_whitespace(text: str, position: int) -> int:
    return _WHITESPACE.match(text, position).end()  # type: ignore[union-attr]  # matches the empty string
