"""The one failure policy: which errors are retried, how long to wait, and when an event is dead-lettered."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from celery.exceptions import SoftTimeLimitExceeded
from pydantic import ValidationError
from sqlalchemy.exc import DataError, DBAPIError, StatementError

from kernel.error_text import describe_error
from kernel.events import InvalidRecord
from kernel.retry_after import requested_wait
from tasks.handlers import PermanentError, RetryableError

Kind = Literal["transient", "permanent"]

# Explicitly permanent: retrying the same input gives the same answer.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (PermanentError, InvalidRecord, ValidationError)
# Explicitly transient; any exception not listed in either tuple is treated as transient too, because
# dead-lettering a surprise is worse than retrying it a bounded number of times.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RetryableError,
    ConnectionError,
    TimeoutError,
    OSError,
    SoftTimeLimitExceeded,
)
TRANSIENT_HTTP_STATUSES = frozenset({408, 425, 429})
DATA_ERROR_REASON = "the database cannot store this event's data"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped, for at most ``max_retries`` retries."""

    max_retries: int
    backoff_base: float
    backoff_max: float
    #: Round each delay up to whole seconds: with quorum work queues a countdown goes through Celery's
    #: native delayed delivery, which delays by whole seconds only (kombu's calculate_routing_key truncates
    #: 1.7 s to 1 and refuses 0.4 s with ValueError, which would fail the retry's publish).
    whole_seconds: bool = False

    def backoff(self, retries: int, rng: Callable[[], float] = random.random) -> float:
        """Return the delay before retry number ``retries + 1``: uniform in [0, min(max, base·2^retries))."""
        return self.delay(rng() * min(self.backoff_max, self.backoff_base * 2**retries))

    def delay(self, seconds: float) -> float:
        """``seconds`` as the broker can delay it: rounded up to a whole second when ``whole_seconds``."""
        return float(math.ceil(seconds)) if self.whole_seconds else float(seconds)


@dataclass(frozen=True)
class Decision:
    """What to do with a failed attempt: retry after ``countdown`` seconds, or dead-letter."""

    action: Literal["retry", "dead_letter"]
    reason: str
    countdown: float = 0.0


def http_status(exc: BaseException) -> int | None:
    """Return the HTTP status an exception from requests, httpx or auth0-python carries, if any."""
    for holder in (exc, getattr(exc, "response", None)):
        status = getattr(holder, "status_code", None)
        if isinstance(status, int):
            return status
    return None


def is_data_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot store the values it was given: they fail every time.

    The database's own word (DataError: too long, a NUL, invalid JSON, out of range), text the driver
    cannot encode (a lone surrogate), or a value a column type could not convert (SQLAlchemy wraps what
    the type raised). A lost or refused connection (OperationalError, InterfaceError) is not one.
    """
    if isinstance(exc, DataError | UnicodeEncodeError):
        return True
    return (
        isinstance(exc, StatementError)
        and not isinstance(exc, DBAPIError)
        and isinstance(exc.orig, ValueError)
    )


def classify(exc: BaseException) -> Kind:
    """Return whether ``exc`` is worth retrying."""
    if isinstance(exc, PERMANENT_ERRORS) or is_data_error(exc):
        return "permanent"
    if isinstance(exc, RetryableError):
        return "transient"  # the handler's explicit word beats any status code it carries
    status = http_status(exc)
    if status is not None:
        transient = status >= 500 or status in TRANSIENT_HTTP_STATUSES
        return "transient" if transient else "permanent"
    return "transient"


def retry_after(exc: BaseException, now: Callable[[], float] = time.time) -> float | None:
    """Return how long the remote side asked us to wait: RetryableError's retry_after, else the headers of
    the exception (or of its response) as kernel.retry_after reads them (Retry-After, x-ratelimit-reset)."""
    if isinstance(exc, RetryableError) and exc.retry_after is not None:
        return max(0.0, exc.retry_after)
    headers = getattr(exc, "headers", None) or getattr(getattr(exc, "response", None), "headers", None)
    return requested_wait(headers, now())


def decide(policy: RetryPolicy, exc: BaseException, retries: int) -> Decision:
    """Decide the fate of an attempt that raised ``exc`` after ``retries`` earlier retries."""
    reason = describe_error(exc)
    if is_data_error(exc):
        return Decision("dead_letter", f"permanent error: {DATA_ERROR_REASON}: {reason}")
    if classify(exc) == "permanent":
        return Decision("dead_letter", f"permanent error: {reason}")
    if retries >= policy.max_retries:
        return Decision("dead_letter", f"gave up after {retries} retries: {reason}")
    asked = retry_after(exc)
    countdown = policy.backoff(retries) if asked is None else policy.delay(min(policy.backoff_max, asked))
    return Decision("retry", reason, countdown)


def decide_redelivery(policy: RetryPolicy, retries: int) -> Decision:
    """Decide the fate of a message RabbitMQ redelivered because its worker died while running it.

    The death counts as a failed attempt, so an event that kills its worker every time is dead-lettered
    after the retries run out instead of looping forever.
    """
    reason = "worker died while processing the event (killed, out of memory or time limit)"
    if retries >= policy.max_retries:
        return Decision("dead_letter", f"gave up after {retries} retries: {reason}")
    return Decision("retry", reason, policy.backoff(retries))
