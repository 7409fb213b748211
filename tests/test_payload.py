"""Unit tests for app.payload.parse_body: Auth0's three body formats and the errors for everything else."""

from __future__ import annotations

import json

import pytest

from app.payload import PayloadError, UnreadValue, iter_records, iter_spans, parse_body
from kernel.record_limits import TOO_DEEP, too_long_integer

A = {"log_id": "900a", "data": {"type": "s", "log_id": "900a"}}
B = {"log_id": "900b", "data": {"type": "fp", "log_id": "900b"}}
C = {"log_id": "900c", "data": {"type": "ss", "log_id": "900c"}}


def _line(record: object) -> str:
    return json.dumps(record)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(f"{_line(A)}\n{_line(B)}\n{_line(C)}", id="jsonl"),
        pytest.param(f"{_line(A)}\n{_line(B)}\n{_line(C)}\n", id="jsonl-trailing-newline"),
        pytest.param(f"{_line(A)}\r\n{_line(B)}\r\n{_line(C)}\r\n", id="jsonl-crlf"),
        pytest.param(f"\n{_line(A)}\n\n\n{_line(B)}\n  \n{_line(C)}\n\n", id="jsonl-blank-lines"),
        pytest.param(json.dumps([A, B, C]), id="array"),
        pytest.param(json.dumps([A, B, C], indent=2), id="array-pretty"),
        pytest.param(f"  \n{json.dumps([A, B, C])}\n  ", id="array-surrounded-by-whitespace"),
        pytest.param("\n".join(json.dumps(r, indent=4) for r in (A, B, C)), id="pretty-printed-jsonl"),
    ],
)
def test_multi_record_formats_give_the_records_in_order(body: str) -> None:
    """JSON Lines (any line ending, blank lines) and JSON arrays give every record, in body order."""
    assert parse_body(body.encode()) == [A, B, C]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(json.dumps(A), id="compact"),
        pytest.param(json.dumps(A, indent=2), id="pretty"),
        pytest.param(json.dumps(A, indent="\t") + "\r\n", id="pretty-tabs-crlf"),
    ],
)
def test_single_object_is_one_record(body: str) -> None:
    """A JSON object body, compact or pretty-printed, is one record."""
    assert parse_body(body.encode()) == [A]


def test_utf8_bom_is_ignored() -> None:
    """A leading UTF-8 byte order mark does not stop the body from parsing."""
    assert parse_body(b"\xef\xbb\xbf" + json.dumps([A]).encode()) == [A]


def test_non_ascii_text_is_decoded_as_utf8() -> None:
    """Non-ASCII characters in UTF-8 come back as the same text."""
    record = {"log_id": "900x", "data": {"type": "s", "user_name": "zoë@exämple.com"}}
    assert parse_body(json.dumps(record, ensure_ascii=False).encode("utf-8")) == [record]


@pytest.mark.parametrize(
    ("body", "byte"),
    [
        pytest.param(b"\xff\xfe{}", 0, id="utf16-bom"),
        pytest.param(b'{"a": "caf\xe9"}', 10, id="latin1"),
        pytest.param(b'{"a": 1}\n{"b": "\x80"}', 16, id="stray-continuation-byte"),
    ],
)
def test_non_utf8_bytes_are_rejected_naming_the_byte(body: bytes, byte: int) -> None:
    """Bytes that are not UTF-8 raise PayloadError naming the first bad byte, with no line or column."""
    with pytest.raises(PayloadError) as caught:
        parse_body(body)
    assert caught.value.reason == f"body is not UTF-8 (byte {byte})"
    assert caught.value.line is None
    assert caught.value.column is None


@pytest.mark.parametrize(
    "body",
    [b"", b" ", b"\n", b"\r\n\r\n", b" \t\n\r ", b"\xef\xbb\xbf", b"\xef\xbb\xbf\n"],
    ids=["empty", "space", "newline", "crlfs", "mixed-whitespace", "bom-only", "bom-newline"],
)
def test_empty_or_whitespace_body_is_rejected(body: bytes) -> None:
    """An empty or whitespace-only body raises PayloadError("body is empty")."""
    with pytest.raises(PayloadError, match="^body is empty$") as caught:
        parse_body(body)
    assert caught.value.line is None


@pytest.mark.parametrize(
    ("body", "reason", "line", "column"),
    [
        pytest.param(b'{"log_id": "1"', "Expecting ',' delimiter", 1, 15, id="object-cut-before-brace"),
        pytest.param(b'{"log_id": ', "Expecting value", 1, 12, id="object-cut-after-colon"),
        pytest.param(b'{"a": 1}\n{"b": ', "Expecting value", 2, 7, id="second-line-cut"),
        pytest.param(b'{"a": 1}\r\n{"b" 2}', "Expecting ':' delimiter", 2, 6, id="crlf-missing-colon"),
        pytest.param(b'[{"a": 1},\n {"b": 2},\n', "Expecting value", 3, 1, id="array-cut-after-comma"),
        pytest.param(b'{"a": 1}\n\n\n{"b": tru}', "Expecting value", 4, 7, id="blank-lines-counted"),
        pytest.param(b'{"a": 1}\nnot json', "Expecting value", 2, 1, id="garbage-line"),
        pytest.param(b'{"a": 1}x', "Expecting value", 1, 9, id="garbage-after-object"),
        pytest.param(b'{"a": "unterminated}', "Unterminated string starting at", 1, 7, id="string"),
        pytest.param(b'[{"a": 1}\n {"b": 2}]', "Expecting ',' delimiter", 2, 2, id="array-missing-comma"),
        pytest.param(b'[{"a": 1},\n]', "Expecting value", 2, 1, id="array-trailing-comma"),
        pytest.param(b'[{"a": 1}', "Expecting ',' delimiter", 1, 10, id="array-unterminated"),
        pytest.param(b"[", "Expecting value", 1, 2, id="array-only-bracket"),
        pytest.param(b'[{"a": 1}]\n[{"b": }]', "Expecting value", 2, 8, id="second-array-item"),
    ],
)
def test_malformed_json_says_where(body: bytes, reason: str, line: int, column: int) -> None:
    """Malformed JSON raises PayloadError with the decoder's reason and the exact 1-based line and column."""
    with pytest.raises(PayloadError) as caught:
        parse_body(body)
    assert caught.value.reason == reason
    assert (caught.value.line, caught.value.column) == (line, column)
    assert str(caught.value) == f"{reason} at line {line}, column {column}"


def test_bom_does_not_shift_the_reported_column() -> None:
    """The BOM is not counted as a column: positions refer to the text after it."""
    with pytest.raises(PayloadError) as caught:
        parse_body(b'\xef\xbb\xbf{"a" 1}')
    assert (caught.value.line, caught.value.column) == (1, 6)


def test_payload_error_is_a_value_error() -> None:
    """PayloadError is a ValueError, so generic callers can treat it as bad input."""
    assert issubclass(PayloadError, ValueError)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(b'[1, "x", {"log_id": "9"}]', [1, "x", {"log_id": "9"}], id="array-of-mixed"),
        pytest.param(b"[null, true, 2.5, [3]]", [None, True, 2.5, [3]], id="nested-array-kept-whole"),
        pytest.param(b'"just a string"', ["just a string"], id="string"),
        pytest.param(b"42", [42], id="number"),
        pytest.param(b"null", [None], id="null"),
        pytest.param(b'1\n"two"\n{"three": 3}', [1, "two", {"three": 3}], id="jsonl-of-mixed"),
        pytest.param(b"[]", [], id="empty-array"),
        pytest.param(b"{}", [{}], id="empty-object"),
    ],
)
def test_non_object_items_are_returned_as_they_are(body: bytes, expected: list[object]) -> None:
    """Items that are not objects are returned unchanged, for validation to quarantine."""
    assert parse_body(body) == expected


def test_array_and_objects_mixed_in_one_body() -> None:
    """An array followed and preceded by objects is flattened one level, keeping body order."""
    body = f"{_line(A)}\n{json.dumps([B, C])}\n{_line(A)}\n".encode()
    assert parse_body(body) == [A, B, C, A]


def test_several_arrays_are_concatenated() -> None:
    """Two arrays in one body give the items of both, in order."""
    assert parse_body(f"{json.dumps([A])}\n{json.dumps([B, C])}".encode()) == [A, B, C]


@pytest.mark.local  # seconds, not milliseconds
def test_a_value_nested_past_the_parsers_recursion_is_delimited_without_recursion() -> None:
    """A value nested deeper than Python's decoder can recurse is yielded as an UnreadValue with its span
    (the intake quarantines it with its text); the records around it are read as usual."""
    deep = "[" * 100_000 + r'"]\\\"["' + "]" * 100_000  # a string with brackets and escapes inside
    text = f"[{json.dumps(A)}, {deep},\n{json.dumps(B)}]"
    spans = list(iter_spans(text))
    assert [value for value, _start, _end in spans] == [A, UnreadValue(TOO_DEEP), B]
    assert [text[start:end] for _value, start, end in spans] == [json.dumps(A), deep, json.dumps(B)]


@pytest.mark.parametrize("number", ["9" * 5000, "-" + "1" * 4301, '{"x": [1, {"n": ' + "7" * 4301 + "}]}"])
def test_an_integer_over_pythons_digit_limit_is_delimited_not_an_error(number: str) -> None:
    """An integer json cannot convert (ValueError, not a JSONDecodeError) is an UnreadValue with its span."""
    text = f"{json.dumps(A)}\n{number}\n{json.dumps(B)}"
    spans = list(iter_spans(text))
    assert [value for value, _start, _end in spans] == [A, UnreadValue(too_long_integer()), B]
    assert text[spans[1][1] : spans[1][2]] == number


@pytest.mark.parametrize(
    ("deep", "reason", "column"),
    [
        ("[" * 5000 + "}" + "]" * 4999, "Expecting ']'", 5001),
        ('{"a": ' + "[" * 5000 + "]" * 5000, "Unterminated value starting with '{'", 1),
        ("[" * 5000 + '"open', "Unterminated string starting at", 5001),
    ],
)
def test_a_malformed_deep_value_is_a_payload_error_saying_where(deep: str, reason: str, column: int) -> None:
    """Delimiting a deep value checks its brackets and strings: a mismatch or an unterminated value is a
    PayloadError with line and column, as any other malformed JSON."""
    with pytest.raises(PayloadError) as caught:
        parse_body(f"{json.dumps(A)}\n{deep}".encode())
    assert (caught.value.reason, caught.value.line, caught.value.column) == (reason, 2, column)


def test_spans_are_the_text_of_each_record() -> None:
    """Each record's offsets give its text in the body, in every format."""
    text = f" {json.dumps(A)}\n[ {json.dumps(B)} ,{json.dumps(C)}]\r\n7"
    assert [text[start:end] for _value, start, end in iter_spans(text)] == [
        json.dumps(A),
        json.dumps(B),
        json.dumps(C),
        "7",
    ]


def test_non_utf8_byte_offset_counts_the_bom() -> None:
    """The byte named for a non-UTF-8 body is its offset in the body as sent, BOM included."""
    body = b'\xef\xbb\xbf{"a": "\xff"}'
    with pytest.raises(PayloadError) as caught:
        parse_body(body)
    assert caught.value.reason == "body is not UTF-8 (byte 10)"


@pytest.mark.parametrize(
    "body", [b'[{"a": 1}\n {"b": 2}]', b'[{"a": 1},\n]', b'[{"a": 1}', b"[", b"[1, [2, 3}"]
)
def test_array_errors_match_the_standard_decoder(body: bytes) -> None:
    """Arrays are read item by item, with the same reason and position json.loads reports."""
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(body)
    with pytest.raises(PayloadError) as caught:
        parse_body(body)
    assert (caught.value.reason, caught.value.line, caught.value.column) == (
        expected.value.msg,
        expected.value.lineno,
        expected.value.colno,
    )


def test_iter_records_reads_an_array_item_by_item() -> None:
    """The items before a malformed one are yielded before the error: the array is not parsed whole."""
    records = iter_records('[{"a": 1}, {"b": 2}, {"c": ')
    assert [next(records), next(records)] == [{"a": 1}, {"b": 2}]
    with pytest.raises(PayloadError, match="Expecting value"):
        next(records)
