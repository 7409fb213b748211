"""How long a server asked us to wait: Retry-After (RFC 9110) and Auth0's x-ratelimit-reset.

One reading for every caller (the worker's retry policy, the alert webhook, the backfill, ``send``):

- Retry-After is delay-seconds or an HTTP-date (IMF-fixdate, and the obsolete RFC 850 and asctime forms
  RFC 9110 asks recipients to accept). A fraction of a second is accepted too.
- x-ratelimit-reset, which Auth0 sends, is the UNIX time the quota resets at; the wait is until then.
- A negative delay, or a date or reset already past, is 0: wait no longer.
- Anything else is None, and the caller's own backoff applies: a word, an empty or absent value, NaN, a
  list, a bool.
- A huge value is returned as it is (infinity for a number too large for a float). Each caller caps the wait
  at its own maximum.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping
from datetime import UTC

# RFC 9110's delay-seconds is 1*DIGIT; a sign and a fraction are accepted, since servers write them.
_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?")


def retry_after_seconds(value: object, now: float | None = None) -> float | None:
    """The seconds a Retry-After value asks to wait (see the module docstring); ``now`` is a UNIX time."""
    if isinstance(value, str) and not _NUMBER.fullmatch(value.strip()):
        return _until(_http_date(value), now)
    return _delay(value)


def reset_in_seconds(value: object, now: float | None = None) -> float | None:
    """The seconds from ``now`` (a UNIX time) until an x-ratelimit-reset value, 0 once it is past."""
    return _until(_number(value), now)


def requested_wait(headers: object, now: float | None = None) -> float | None:
    """What an answer's headers ask: Retry-After when it can be read, else x-ratelimit-reset, else None.

    ``headers`` is any mapping (httpx's, requests', a dict), its names in any case; anything else gives None.
    """
    if not isinstance(headers, Mapping):
        return None
    named = {str(name).lower(): value for name, value in headers.items()}
    wait = retry_after_seconds(named.get("retry-after"), now)
    return wait if wait is not None else reset_in_seconds(named.get("x-ratelimit-reset"), now)


def _delay(value: object) -> float | None:
    seconds = _number(value)
    return None if seconds is None else max(0.0, seconds)


def _number(value: object) -> float | None:
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, float) and not math.isnan(value):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    return None


def _http_date(text: str) -> float | None:
    try:
        moment = email.utils.parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, OverflowError):
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _until(moment: float | None, now: float | None) -> float | None:
    if moment is None:
        return None
    return max(0.0, moment - (time.time() if now is None else now))
