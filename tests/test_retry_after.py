"""kernel.retry_after: the one reading of Retry-After and x-ratelimit-reset, for every caller.

The cases are the union of what the three readers it replaces handled (the worker's retry policy, the
alert webhook's, ``send``'s) and the backfill's x-ratelimit-reset; where they disagreed, the module
docstring says what was decided.
"""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from kernel.retry_after import requested_wait, reset_in_seconds, retry_after_seconds

NOW = 1_700_000_000.0  # a UNIX time
IMF_FIXDATE = "Tue, 14 Nov 2023 22:13:40 GMT"  # NOW + 20 s


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param("7", 7.0, id="delay-seconds"),
        pytest.param(" 30 ", 30.0, id="spaces-around"),
        pytest.param("30.0", 30.0, id="with-a-fraction"),
        pytest.param("1.5", 1.5, id="fraction-of-a-second"),
        pytest.param(30, 30.0, id="int-value"),
        pytest.param(12.5, 12.5, id="float-value"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param("-5", 0.0, id="negative-is-zero"),
        pytest.param(-3, 0.0, id="negative-int-is-zero"),
        pytest.param(IMF_FIXDATE, 20.0, id="imf-fixdate"),
        pytest.param("Tuesday, 14-Nov-23 22:13:40 GMT", 20.0, id="rfc850-date"),
        pytest.param("Tue Nov 14 22:13:40 2023", 20.0, id="asctime-date"),
        pytest.param("Tue, 14 Nov 2023 22:13:40 -0000", 20.0, id="date-without-zone-is-utc"),
        pytest.param("Tue, 14 Nov 2023 22:13:00 GMT", 0.0, id="past-date-is-zero"),
    ],
)
def test_retry_after_reads_delay_seconds_or_an_http_date(value: Any, seconds: float) -> None:
    """Delay-seconds (a fraction too) or an HTTP-date in any of RFC 9110's three forms; never negative."""
    assert retry_after_seconds(value, now=NOW) == seconds


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="absent"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("soon", id="word"),
        pytest.param("5 minutes", id="words"),
        pytest.param("inf", id="inf-word"),
        pytest.param("nan", id="nan-word"),
        pytest.param("1e3", id="exponent"),
        pytest.param(float("nan"), id="nan-value"),
        pytest.param(["30"], id="list"),
        pytest.param(True, id="bool"),
        pytest.param(b"30", id="bytes"),
        pytest.param("Mon, 99 Nov 2026 08:25:24 GMT", id="impossible-date"),
    ],
)
def test_a_retry_after_that_cannot_be_read_is_none(value: Any) -> None:
    """What is neither a number nor a date is None: the caller's own backoff applies."""
    assert retry_after_seconds(value, now=NOW) is None


def test_a_huge_retry_after_is_returned_as_it_is() -> None:
    """No cap here: each caller caps the wait at its own maximum (a number past a float is infinity)."""
    assert retry_after_seconds("86400000", now=NOW) == 86_400_000.0
    assert retry_after_seconds("9" * 400, now=NOW) == math.inf
    assert retry_after_seconds(10**400, now=NOW) == math.inf
    assert retry_after_seconds(-(10**400), now=NOW) == 0.0


def test_the_clock_is_read_when_no_time_is_given() -> None:
    """Without ``now``, a date is measured from the clock: one far ahead is a long wait."""
    wait = retry_after_seconds("Fri, 01 Jan 2100 00:00:00 GMT")
    assert wait is not None
    assert wait > 365 * 86400


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param("1700000045", 45.0, id="unix-time"),
        pytest.param(1_700_000_045, 45.0, id="int-value"),
        pytest.param("1700000000.5", 0.5, id="fraction"),
        pytest.param("1699999990", 0.0, id="past-is-zero"),
        pytest.param("tomorrow", None, id="word"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_ratelimit_reset_is_the_time_until_the_reset(value: Any, seconds: float | None) -> None:
    """x-ratelimit-reset is a UNIX time: the wait is until then, 0 once past, None when unreadable."""
    assert reset_in_seconds(value, now=NOW) == seconds


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        pytest.param({"Retry-After": "7"}, 7.0, id="retry-after"),
        pytest.param({"RETRY-AFTER": "7"}, 7.0, id="any-case"),
        pytest.param({"X-RateLimit-Reset": "1700000045"}, 45.0, id="ratelimit-reset"),
        pytest.param({"x-ratelimit-reset": "1700000100", "Retry-After": "7"}, 7.0, id="retry-after-wins"),
        pytest.param({"Retry-After": "soon", "x-ratelimit-reset": "1700000045"}, 45.0, id="bad-retry-after"),
        pytest.param(httpx.Headers({"retry-after": IMF_FIXDATE}), 20.0, id="httpx-headers-date"),
        pytest.param({"Content-Type": "application/json"}, None, id="neither"),
        pytest.param({}, None, id="empty"),
        pytest.param("Retry-After: 30", None, id="not-a-mapping"),
        pytest.param(None, None, id="none"),
    ],
)
def test_requested_wait_prefers_retry_after_then_the_ratelimit_reset(
    headers: Any, seconds: float | None
) -> None:
    """Retry-After when it can be read, else x-ratelimit-reset; header names in any case."""
    assert requested_wait(headers, now=NOW) == seconds
