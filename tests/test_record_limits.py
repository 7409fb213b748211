"""What a record may hold to be carried: depth, numbers, JSON types (kernel/record_limits.py)."""

from __future__ import annotations

import sys

import pytest

from kernel.record_limits import MAX_RECORD_DEPTH, carry_problem, deepest


def nested(levels: int) -> object:
    """A record whose nesting is ``levels`` deep (the record itself being level 1)."""
    value: object = {}
    for _ in range(levels - 1):
        value = [value]
    return value


def test_a_record_at_the_depth_limit_is_carried() -> None:
    """Exactly MAX_RECORD_DEPTH levels passes; one more is refused with the limit in the reason."""
    assert deepest(nested(MAX_RECORD_DEPTH)) == MAX_RECORD_DEPTH
    assert carry_problem(nested(MAX_RECORD_DEPTH)) is None
    reason = carry_problem(nested(MAX_RECORD_DEPTH + 1))
    assert reason is not None
    assert str(MAX_RECORD_DEPTH) in reason


@pytest.mark.local  # seconds, not milliseconds
def test_thousands_of_levels_do_not_recurse() -> None:
    """The walk is iterative: 100,000 levels give a reason, not a RecursionError."""
    assert carry_problem(nested(100_000)) is not None
    assert deepest(nested(100_000)) == 100_000


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused(number: float) -> None:
    """NaN and Infinity are not JSON; no database column takes them."""
    assert "NaN" in (carry_problem({"data": {"n": number}}) or "")


def test_an_integer_too_long_to_print_is_refused() -> None:
    """An integer above Python's str-conversion limit would fail every encoder downstream."""
    limit = sys.get_int_max_str_digits()
    assert carry_problem({"n": int("9" * limit)}) is None
    sys.set_int_max_str_digits(0)
    try:
        huge = int("9" * (limit + 1))
    finally:
        sys.set_int_max_str_digits(limit)
    assert "digits" in (carry_problem({"n": huge}) or "")


def test_non_json_values_are_refused() -> None:
    """Only what JSON decodes to may travel (a message published by hand could hold anything else)."""
    assert carry_problem({"a": b"bytes"}) is not None
    assert carry_problem({1: "non-string key"}) is not None
    assert carry_problem({"a": [1, 2.5, True, None, "text", {"b": []}]}) is None
