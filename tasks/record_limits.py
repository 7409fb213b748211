"""What a record may hold to travel the pipeline: a bounded nesting depth and values JSON can carry.

Checked by the receiver (a record over a limit is quarantined with the reason) and again by the worker
on every message it takes (published by anyone with broker access), so that no record can crash the
JSON encoder, the pickling of task arguments for the pool, or a database.
"""

from __future__ import annotations

import math
import sys

#: Deepest nesting of objects and arrays a record may have, the record itself being level 1.
#: Auth0's own records are shallow: the deepest documented shape is a Management API call (sapi:
#: record → data → details → request → body → user_metadata …), about 6 levels before the customer's
#: own metadata. 64 leaves ample room for that metadata while staying far below where Python's
#: recursive encoders and pickle fail (about 480 levels in a worker).
MAX_RECORD_DEPTH = 64


def carry_problem(record: object) -> str | None:
    """Return why ``record`` cannot be carried as a task message, or None when it can.

    Walks the record without recursion (a hostile one may nest thousands of levels): too deep, a
    non-finite number (NaN, Infinity, 1e999), an integer too long to print, or a value that is not JSON.
    """
    stack: list[tuple[object, int]] = [(record, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_RECORD_DEPTH:
                return f"record nests deeper than {MAX_RECORD_DEPTH} levels of objects and arrays"
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
            if isinstance(value, dict) and not all(isinstance(key, str) for key in value):
                return "record has an object key that is not a string"
        elif isinstance(value, bool) or value is None or isinstance(value, str):
            continue
        elif isinstance(value, int):
            if _too_long(value):
                return f"record has an integer of more than {sys.get_int_max_str_digits()} digits"
        elif isinstance(value, float):
            if not math.isfinite(value):
                return "record has a number JSON cannot carry (NaN, Infinity, or out of range)"
        else:
            return f"record holds a {type(value).__name__}, which is not a JSON value"
    return None


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
