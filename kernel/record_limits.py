"""What a record may hold to travel the pipeline: a bounded nesting depth and values JSON can carry.

Checked by the receiver (a record over a limit is quarantined with the reason) and again by the worker
on every message it takes (published by anyone with broker access), so that no record can crash the
JSON encoder, the pickling of task arguments for the pool, or a database.
"""

from __future__ import annotations

import math
import sys
from itertools import repeat

#: Deepest nesting of objects and arrays a record may have, the record itself being level 1.
#: Auth0's own records are shallow: the deepest documented shape is a Management API call (sapi:
#: record → data → details → request → body → user_metadata …), about 6 levels before the customer's
#: own metadata. 64 leaves ample room for that metadata while staying far below where Python's
#: recursive encoders and pickle fail (about 480 levels in a worker).
MAX_RECORD_DEPTH = 64

TOO_DEEP = f"record nests deeper than {MAX_RECORD_DEPTH} levels of objects and arrays"
NOT_FINITE = "record has a number JSON cannot carry (NaN, Infinity, or out of range)"
NON_STRING_KEY = "record has an object key that is not a string"

# Values that need no further look: by exact type, the common case, before any isinstance.
_PLAIN = frozenset({str, bool, type(None)})


def too_long_integer() -> str:
    """The reason for an integer longer than Python converts to or from text (its limit may change)."""
    return f"record has an integer of more than {sys.get_int_max_str_digits()} digits"


def carry_problem(record: object) -> str | None:
    """Return why ``record`` cannot be carried as a task message, or None when it can.

    Walks the record without recursion (a hostile one may nest thousands of levels): too deep, a
    non-finite number (NaN, Infinity, 1e999), an integer too long to print, or a value that is not JSON.
    """
    if not isinstance(record, dict | list):
        return _scalar_problem(record)
    stack: list[tuple[dict[object, object] | list[object], int]] = [(record, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > MAX_RECORD_DEPTH:
            return TOO_DEEP
        if isinstance(container, dict):
            if not all(map(isinstance, container, repeat(str))):
                return NON_STRING_KEY
            children: object = container.values()
        else:
            children = container
        for child in children:  # type: ignore[attr-defined]
            if type(child) in _PLAIN:
                continue
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
            elif (problem := _scalar_problem(child)) is not None:
                return problem
    return None


def _scalar_problem(value: object) -> str | None:
    if isinstance(value, bool | str) or value is None:
        return None
    if isinstance(value, int):
        return too_long_integer() if _too_long(value) else None
    if isinstance(value, float):
        return None if math.isfinite(value) else NOT_FINITE
    return f"record holds a {type(value).__name__}, which is not a JSON value"


def _too_long(value: int) -> bool:
    limit = sys.get_int_max_str_digits()
    if limit == 0 or abs(value).bit_length() * 0.30103 + 1 <= limit:  # log10(2) digits per bit
        return False
    try:
        str(value)
    except ValueError:
        return True
    return False


def deepest(record: object) -> int:
    """Return the nesting depth of ``record`` (0 for a scalar), without recursion."""
    deepest_seen = 0
    stack: list[tuple[object, int]] = [(record, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            deepest_seen = max(deepest_seen, depth)
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
    return deepest_seen
