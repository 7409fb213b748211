"""Unit tests for tasks.retry_policy: backoff, error classification, Retry-After and the retry decision."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from celery.exceptions import SoftTimeLimitExceeded
from psycopg import errors
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import text
from sqlalchemy.exc import DataError, DisconnectionError, InterfaceError, OperationalError, StatementError

from kernel.error_text import describe_error
from kernel.events import InvalidRecord
from kernel.storage.db import transaction
from tasks.handlers import PermanentError, RetryableError
from tasks.retry_policy import (
    Decision,
    RetryPolicy,
    classify,
    decide,
    decide_redelivery,
    http_status,
    retry_after,
)

POLICY = RetryPolicy(max_retries=5, backoff_base=2.0, backoff_max=60.0)
HIGH = 0.999999


def _high() -> float:
    return HIGH


def _low() -> float:
    return 0.0


class StatusError(Exception):
    """Like an auth0-python ApiError: the status code (and headers) on the exception itself."""

    def __init__(self, status_code: object, headers: Any = None) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code
        self.headers = headers


class FakeResponse:
    """Like a requests/httpx response: status_code and headers."""

    def __init__(self, status_code: int, headers: Any = None) -> None:
        self.status_code = status_code
        self.headers = headers if headers is not None else {}


class ResponseError(Exception):
    """Like requests.HTTPError / httpx.HTTPStatusError: the status code on .response."""

    def __init__(self, status_code: int, headers: Any = None) -> None:
        super().__init__(f"response {status_code}")
        self.response = FakeResponse(status_code, headers)


def _validation_error() -> ValidationError:
    try:
        TypeAdapter(int).validate_python("not a number")
    except ValidationError as exc:
        return exc
    raise AssertionError("expected a ValidationError")


@pytest.mark.parametrize("retries", range(10))
def test_backoff_is_never_above_the_exponential_bound(retries: int) -> None:
    """backoff stays below min(max, base * 2**retries) even with the largest random draw."""
    bound = min(POLICY.backoff_max, POLICY.backoff_base * 2**retries)
    delay = POLICY.backoff(retries, rng=_high)
    assert 0 <= delay < bound
    assert delay == pytest.approx(HIGH * bound)


@pytest.mark.parametrize("retries", range(10))
def test_backoff_can_be_zero(retries: int) -> None:
    """Full jitter: the smallest random draw gives no wait at all."""
    assert POLICY.backoff(retries, rng=_low) == 0.0


@pytest.mark.parametrize(("retries", "bound"), [(0, 2.0), (1, 4.0), (2, 8.0), (3, 16.0), (4, 32.0)])
def test_backoff_doubles_per_retry(retries: int, bound: float) -> None:
    """Below the cap, the upper bound doubles with each retry, starting at backoff_base."""
    assert POLICY.backoff(retries, rng=lambda: 0.5) == pytest.approx(bound / 2)


@pytest.mark.parametrize("retries", [5, 6, 10, 50, 100])
def test_backoff_is_capped_at_backoff_max(retries: int) -> None:
    """From the retry where base * 2**retries passes backoff_max, the bound is backoff_max."""
    assert POLICY.backoff(retries, rng=_high) == pytest.approx(HIGH * POLICY.backoff_max)
    assert POLICY.backoff(retries, rng=_high) < POLICY.backoff_max


def test_backoff_uses_the_default_random_source_within_bounds() -> None:
    """Without rng, backoff still stays within [0, bound)."""
    for retries in range(8):
        assert 0 <= POLICY.backoff(retries) < min(POLICY.backoff_max, POLICY.backoff_base * 2**retries)


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(PermanentError("user does not exist"), id="PermanentError"),
        pytest.param(InvalidRecord("record has no 'data' object"), id="InvalidRecord"),
        pytest.param(_validation_error(), id="pydantic-ValidationError"),
        pytest.param(StatusError(400), id="status-400"),
        pytest.param(StatusError(401), id="status-401"),
        pytest.param(StatusError(403), id="status-403"),
        pytest.param(StatusError(404), id="status-404"),
        pytest.param(StatusError(409), id="status-409"),
        pytest.param(StatusError(422), id="status-422"),
        pytest.param(ResponseError(400), id="response-400"),
        pytest.param(ResponseError(403), id="response-403"),
        pytest.param(ResponseError(404), id="response-404"),
    ],
)
def test_permanent_errors(exc: BaseException) -> None:
    """Errors that retrying cannot fix are classified permanent."""
    assert classify(exc) == "permanent"


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(RetryableError("upstream 503"), id="RetryableError"),
        pytest.param(ConnectionError("refused"), id="ConnectionError"),
        pytest.param(ConnectionResetError("reset"), id="ConnectionResetError"),
        pytest.param(TimeoutError("timed out"), id="TimeoutError"),
        pytest.param(OSError("network is unreachable"), id="OSError"),
        pytest.param(SoftTimeLimitExceeded(), id="SoftTimeLimitExceeded"),
        pytest.param(RuntimeError("surprise"), id="RuntimeError"),
        pytest.param(KeyError("missing"), id="KeyError"),
        pytest.param(StatusError(500), id="status-500"),
        pytest.param(StatusError(502), id="status-502"),
        pytest.param(StatusError(503), id="status-503"),
        pytest.param(StatusError(408), id="status-408"),
        pytest.param(StatusError(425), id="status-425"),
        pytest.param(StatusError(429), id="status-429"),
        pytest.param(ResponseError(500), id="response-500"),
        pytest.param(ResponseError(503), id="response-503"),
        pytest.param(ResponseError(429), id="response-429"),
        pytest.param(ResponseError(408), id="response-408"),
    ],
)
def test_transient_errors(exc: BaseException) -> None:
    """Network trouble, 5xx, 408/425/429, RetryableError and unexpected exceptions are transient."""
    assert classify(exc) == "transient"


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (StatusError(503), 503),
        (ResponseError(404), 404),
        (StatusError("503"), None),
        (StatusError(None), None),
        (RuntimeError("no status"), None),
    ],
    ids=["on-exception", "on-response", "string-status-ignored", "none", "absent"],
)
def test_http_status(exc: BaseException, status: int | None) -> None:
    """http_status reads an int status_code from the exception or its response, else None."""
    assert http_status(exc) == status


def test_non_int_status_code_falls_back_to_transient() -> None:
    """A status_code that is not an int is ignored, leaving the default (transient)."""
    assert classify(StatusError("404")) == "transient"


def test_permanent_exception_type_beats_a_transient_status() -> None:
    """An InvalidRecord/PermanentError is permanent even when it carries a 503 status."""

    class PermanentWithStatus(PermanentError):
        status_code = 503

    assert classify(PermanentWithStatus("no")) == "permanent"


def test_retry_after_from_retryable_error() -> None:
    """RetryableError(retry_after=…) is the wait the handler asked for; negatives become 0."""
    assert retry_after(RetryableError("slow down", retry_after=12.5)) == 12.5
    assert retry_after(RetryableError("slow down", retry_after=0)) == 0.0
    assert retry_after(RetryableError("slow down", retry_after=-3)) == 0.0
    assert retry_after(RetryableError("no hint")) is None


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(StatusError(429, {"Retry-After": "30"}), id="exception-headers"),
        pytest.param(ResponseError(429, {"Retry-After": "30"}), id="response-headers"),
        pytest.param(StatusError(503, {"retry-after": "30"}), id="lowercase-name"),
        pytest.param(StatusError(503, {"RETRY-AFTER": "30.0"}), id="uppercase-name-float"),
        pytest.param(StatusError(503, {"Retry-After": 30}), id="int-value"),
    ],
)
def test_retry_after_header(exc: BaseException) -> None:
    """A Retry-After header (any case, on the exception or its response) gives the wait in seconds."""
    assert retry_after(exc) == 30.0


def test_retry_after_header_beats_ratelimit_reset() -> None:
    """When both headers are present, Retry-After wins."""
    exc = StatusError(429, {"x-ratelimit-reset": "1000100", "Retry-After": "7"})
    assert retry_after(exc, now=lambda: 1_000_000.0) == 7.0


def test_retry_after_from_ratelimit_reset() -> None:
    """x-ratelimit-reset (a UNIX time) gives the seconds from now until then."""
    exc = StatusError(429, {"X-RateLimit-Reset": "1700000045"})
    assert retry_after(exc, now=lambda: 1_700_000_000.0) == 45.0


def test_ratelimit_reset_in_the_past_is_zero() -> None:
    """A reset time already past gives 0, never a negative wait."""
    exc = ResponseError(429, {"x-ratelimit-reset": "1699999990"})
    assert retry_after(exc, now=lambda: 1_700_000_000.0) == 0.0


def test_negative_retry_after_header_is_zero() -> None:
    """A negative Retry-After is clamped to 0."""
    assert retry_after(StatusError(429, {"Retry-After": "-5"})) == 0.0


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Retry-After": "soon"}, id="word"),
        pytest.param({"Retry-After": ""}, id="empty"),
        pytest.param({"Retry-After": None}, id="none"),
        pytest.param({"Retry-After": ["30"]}, id="list"),
        pytest.param({"x-ratelimit-reset": "tomorrow"}, id="reset-word"),
        pytest.param({}, id="no-headers"),
        pytest.param({"Content-Type": "application/json"}, id="unrelated-headers"),
        pytest.param("Retry-After: 30", id="headers-not-a-mapping"),
        pytest.param(None, id="headers-none"),
    ],
)
def test_garbage_or_missing_headers_give_none(headers: Any) -> None:
    """Unparsable, missing or oddly typed headers give None rather than raising."""
    assert retry_after(StatusError(429, headers), now=lambda: 0.0) is None
    assert retry_after(ResponseError(429, headers), now=lambda: 0.0) is None


def test_retry_after_for_plain_exceptions_is_none() -> None:
    """An exception with no headers and no retry_after gives None."""
    assert retry_after(RuntimeError("boom")) is None
    assert retry_after(ConnectionError()) is None


def test_permanent_error_is_dead_lettered_immediately() -> None:
    """A permanent error is dead-lettered on the first attempt, with a reason starting "permanent error"."""
    decision = decide(POLICY, PermanentError("user does not exist upstream"), retries=0)
    assert decision.action == "dead_letter"
    assert decision.reason == "permanent error: PermanentError: user does not exist upstream"
    assert decision.countdown == 0.0


@pytest.mark.parametrize(
    "exc", [InvalidRecord("bad"), StatusError(404), ResponseError(400), _validation_error()]
)
def test_every_permanent_kind_is_dead_lettered(exc: BaseException) -> None:
    """Each permanent kind is dead-lettered at once, whatever the retry count."""
    decision = decide(POLICY, exc, retries=0)
    assert decision.action == "dead_letter"
    assert decision.reason.startswith("permanent error")


@pytest.mark.parametrize("retries", range(POLICY.max_retries))
def test_transient_error_under_the_limit_is_retried_within_bounds(retries: int) -> None:
    """A transient error before the limit is retried, the countdown within [0, backoff bound)."""
    decision = decide(POLICY, RuntimeError("flaky"), retries=retries)
    assert decision.action == "retry"
    assert decision.reason == "RuntimeError: flaky"
    assert 0 <= decision.countdown < min(POLICY.backoff_max, POLICY.backoff_base * 2**retries)


@pytest.mark.parametrize("retries", [POLICY.max_retries, POLICY.max_retries + 3])
def test_transient_error_at_the_limit_is_dead_lettered(retries: int) -> None:
    """Once retries reach max_retries the event is dead-lettered saying how many retries were made."""
    decision = decide(POLICY, ConnectionError("refused"), retries=retries)
    assert decision == Decision("dead_letter", f"gave up after {retries} retries: ConnectionError: refused")


def test_zero_max_retries_dead_letters_the_first_failure() -> None:
    """With max_retries=0 a transient failure is dead-lettered at once."""
    policy = RetryPolicy(max_retries=0, backoff_base=1.0, backoff_max=10.0)
    decision = decide(policy, TimeoutError(), retries=0)
    assert decision == Decision("dead_letter", "gave up after 0 retries: TimeoutError")


def test_requested_wait_replaces_the_backoff() -> None:
    """A wait the remote side asked for (under the cap) is used as the countdown."""
    decision = decide(POLICY, RetryableError("rate limited", retry_after=42), retries=0)
    assert decision == Decision("retry", "RetryableError: rate limited", 42.0)


def test_requested_wait_is_capped_by_backoff_max() -> None:
    """A Retry-After longer than backoff_max is cut to backoff_max."""
    assert decide(POLICY, RetryableError("later", retry_after=3600), retries=1).countdown == 60.0
    assert decide(POLICY, StatusError(429, {"Retry-After": "86400"}), retries=1).countdown == 60.0


def test_requested_wait_does_not_extend_the_retry_limit() -> None:
    """A Retry-After hint at the limit still dead-letters."""
    decision = decide(POLICY, RetryableError("later", retry_after=1), retries=POLICY.max_retries)
    assert decision.action == "dead_letter"


def test_redelivery_under_the_limit_is_retried() -> None:
    """A message redelivered after a worker death is retried while retries remain."""
    decision = decide_redelivery(POLICY, retries=2)
    assert decision.action == "retry"
    assert decision.reason.startswith("worker died while processing the event")
    assert 0 <= decision.countdown < min(POLICY.backoff_max, POLICY.backoff_base * 2**2)


@pytest.mark.parametrize("retries", [POLICY.max_retries, POLICY.max_retries + 1])
def test_redelivery_at_the_limit_is_dead_lettered(retries: int) -> None:
    """A message whose worker died on every attempt is dead-lettered once retries run out."""
    decision = decide_redelivery(POLICY, retries=retries)
    assert decision.action == "dead_letter"
    assert decision.reason.startswith(f"gave up after {retries} retries: worker died")


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (RuntimeError("boom"), "RuntimeError: boom"),
        (RuntimeError("  padded  "), "RuntimeError: padded"),
        (TimeoutError(), "TimeoutError"),
        (RetryableError(""), "RetryableError"),
        (StatusError(503), "StatusError: HTTP 503"),
    ],
)
def test_describe_error(exc: BaseException, text: str) -> None:
    """describe_error gives "Type: message", or just the type when there is no message."""
    assert describe_error(exc) == text


# --- data the database cannot store ------------------------------------------------------------------------

SECRET = "eve@example.com"
INSERT = "INSERT INTO events (user_name) VALUES (%(user_name)s)"


def _data_error(orig: Exception) -> DataError:
    return DataError(INSERT, {"user_name": SECRET}, orig)


def _unicode_error() -> UnicodeEncodeError:
    try:
        "eve\ud800".encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc
    raise AssertionError("expected a UnicodeEncodeError")


def _bind_error() -> StatementError:
    # What SQLAlchemy raises when a type cannot convert a parameter (the JSON column's json.dumps here).
    return StatementError("could not bind", INSERT, {"raw": 10**5000}, ValueError("Exceeds the limit"))


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(_data_error(errors.StringDataRightTruncation("value too long")), id="too-long"),
        pytest.param(_data_error(psycopg.DataError("cannot contain NUL (0x00) bytes")), id="nul"),
        pytest.param(_data_error(errors.NumericValueOutOfRange("integer out of range")), id="out-of-range"),
        pytest.param(_unicode_error(), id="UnicodeEncodeError"),
        pytest.param(_bind_error(), id="unbindable-parameter"),
    ],
)
def test_data_the_database_cannot_store_is_permanent(exc: BaseException) -> None:
    """The same data fails the same way on every retry: dead-lettered at once, saying it is the data."""
    decision = decide(POLICY, exc, retries=0)
    assert decision.action == "dead_letter"
    assert decision.reason.startswith("permanent error: the database cannot store this event's data: ")


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(
            OperationalError(INSERT, {}, psycopg.OperationalError("server closed")), id="operational"
        ),
        pytest.param(InterfaceError(INSERT, {}, psycopg.InterfaceError("connection lost")), id="interface"),
        pytest.param(DisconnectionError("failed its ping"), id="disconnection"),
    ],
)
def test_database_connection_trouble_stays_transient(exc: BaseException) -> None:
    """A lost or refused connection is retried."""
    assert classify(exc) == "transient"


def test_database_error_reason_is_its_first_line_without_sql_or_values() -> None:
    """The reason names the error, not the statement, its parameters or the values the database quotes."""
    orig = errors.NumericValueOutOfRange(
        f'value "{SECRET}" is out of range for type integer\n'
        f"CONTEXT:  unnamed portal parameter $1 = '{SECRET}'"
    )
    reason = decide(POLICY, _data_error(orig), retries=0).reason
    assert reason == (
        "permanent error: the database cannot store this event's data: "
        'DataError (NumericValueOutOfRange): value "…" is out of range for type integer'
    )
    assert describe_error(
        OperationalError(INSERT, {"user_name": SECRET}, psycopg.OperationalError("gone"))
    ) == ("OperationalError: gone")


def test_describing_an_error_never_fails() -> None:
    """An error whose own text cannot be built (SQLAlchemy prints an integer too long to print) is named."""
    assert describe_error(_bind_error()) == "StatementError (ValueError): Exceeds the limit"
    wrapped = StatementError("could not bind", INSERT, {"raw": 10**5000}, RuntimeError("x"))
    with pytest.raises(ValueError, match="integer string conversion"):
        str(wrapped)
    assert describe_error(wrapped) == "StatementError (RuntimeError): x"


def test_a_real_postgresql_data_error_is_permanent(postgres_url: str) -> None:
    """PostgreSQL refusing a NUL is classified permanent, its reason free of the value."""
    with pytest.raises(DataError) as caught, transaction(postgres_url) as connection:
        connection.execute(text("SELECT CAST(:value AS text)"), {"value": f"{SECRET}\x00"})
    decision = decide(POLICY, caught.value, retries=0)
    assert decision.action == "dead_letter"
    assert SECRET not in decision.reason
    assert "NUL" in decision.reason
