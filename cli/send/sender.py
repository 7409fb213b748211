"""POST batches of log records to a receiver the way an Auth0 log stream does, and sum up its answers.

Used by ``auth0-events send`` for demos, smoke checks and load tests: one keep-alive HTTP connection,
requests paced to a rate, 503 retried after its Retry-After, and a summary of what the receiver said.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from cli.send.samples import SampleBatch
from kernel.retry_after import retry_after_seconds

BODY_FORMATS = ("jsonlines", "array", "object")
RECEIVER_COUNTS = ("received", "accepted", "filtered", "quarantined", "duplicates")
DEFAULT_RETRY_WAIT = 1.0  # seconds, when a 503 says no Retry-After
MAX_ERROR_KINDS = 5


class SendAborted(Exception):
    """Raised when sending cannot go on: the receiver is unreachable or refuses the token.

    ``stats`` holds what was sent before; ``unreachable`` tells the two apart.
    """

    def __init__(self, message: str, stats: SendStats, unreachable: bool) -> None:
        super().__init__(message)
        self.stats = stats
        self.unreachable = unreachable


@dataclass
class SendStats:
    """What was sent and what the receiver answered, summed over the run."""

    url: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])  # in X-Request-Id: send-<run_id>-<n>
    requests: int = 0  # each counted once, however often a 503 made it retry
    records: int = 0  # records POSTed, whatever the answer (a refused connection sends nothing)
    failed_requests: int = 0
    retries: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    receiver: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    generated_duplicates: int = 0
    generated_invalid: int = 0
    elapsed: float = 0.0
    interrupted: bool = False

    @property
    def records_per_second(self) -> float:
        """Records sent per second of the run."""
        return self.records / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready values."""
        return {
            "url": self.url,
            "run_id": self.run_id,
            "requests": self.requests,
            "records": self.records,
            **{name: self.receiver[name] for name in RECEIVER_COUNTS},
            "generated": {"duplicates": self.generated_duplicates, "invalid": self.generated_invalid},
            "statuses": {str(status): count for status, count in sorted(self.statuses.items())},
            "retries": self.retries,
            "failed_requests": self.failed_requests,
            "errors": dict(self.errors.most_common(MAX_ERROR_KINDS)),
            "elapsed_seconds": round(self.elapsed, 3),
            "records_per_second": round(self.records_per_second, 1),
            "interrupted": self.interrupted,
        }


def parse_rate(text: str) -> float:
    """Parse ``--rate``: records per second as ``50``, ``50/s``, ``600/m`` or ``3600/h``.

    Raises ValueError for anything else, or a rate that is not positive.
    """
    number, _, unit = text.strip().partition("/")
    seconds = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}.get(unit.strip().lower())
    try:
        value = float(number)
    except ValueError:
        value = float("nan")
    if seconds is None or not value > 0 or value == float("inf"):
        raise ValueError(f"{text!r} is not a rate: use records per second (50, 50/s) or per minute (600/m)")
    return value / seconds


def payload_url(url: str) -> str:
    """Return the URL to POST to: a bare host gets the receiver's path ``/webhooks/auth0``.

    Raises ValueError for a URL that is not http(s).
    """
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    if parsed.path in ("", "/"):
        parsed = parsed.copy_with(path="/webhooks/auth0")
    return str(parsed)


def encode_body(records: list[Any], body_format: str) -> bytes:
    """Encode records as Auth0 sends them: JSON Lines, a JSON array, or one JSON object."""
    if body_format == "jsonlines":
        return "\n".join(json.dumps(record) for record in records).encode()
    if body_format == "array":
        return json.dumps(records).encode()
    if body_format == "object":
        if len(records) != 1:
            raise ValueError("the object format carries exactly one record per request")
        return json.dumps(records[0]).encode()
    raise ValueError(f"unknown body format {body_format!r}; use one of {', '.join(BODY_FORMATS)}")


@dataclass(frozen=True)
class SendOptions:
    """How to send: pacing, retries of a 503, timeouts."""

    body_format: str = "jsonlines"
    rate: float | None = None  # records per second; None sends as fast as the receiver answers
    max_retries: int = 3  # per request, after a 503
    max_retry_wait: float = 60.0  # seconds; a longer Retry-After is cut to this
    timeout: float = 30.0  # seconds per request


def send_batches(
    url: str,
    token: str,
    batches: Iterable[SampleBatch],
    options: SendOptions | None = None,
    progress: Callable[[SendStats], None] | None = None,
    *,
    transport: httpx.BaseTransport | None = None,
) -> SendStats:
    """POST each batch to ``url`` with ``Authorization: <token>`` and return the summed answers.

    Each request carries ``X-Request-Id: send-<run>-<n>``. A 503 is retried after its Retry-After, at
    most ``max_retries`` times; any other non-2xx (or a timeout) fails that request and sending goes on.
    Ctrl-C stops early with ``interrupted`` set. Raises SendAborted (with the stats so far) when the
    receiver cannot be reached or answers 401/403, since no later request could succeed.
    """
    options = options or SendOptions()
    stats = SendStats(url=url)
    headers = {
        "Authorization": token,
        "Content-Type": "application/json",
        "User-Agent": "auth0-events-send",
    }
    started = time.monotonic()
    next_start = started
    try:
        with httpx.Client(headers=headers, timeout=options.timeout, transport=transport) as client:
            for batch in batches:
                _wait_until(next_start)
                request_started = time.monotonic()
                if options.rate:
                    next_start = request_started + len(batch.records) / options.rate
                request_id = f"send-{stats.run_id}-{stats.requests + 1}"  # the receiver logs it
                body = encode_body(batch.records, options.body_format)
                _send_one(client, url, body, request_id, batch, stats, options)
                stats.elapsed = time.monotonic() - started
                if progress is not None:
                    progress(stats)
    except KeyboardInterrupt:
        stats.interrupted = True
    finally:
        stats.elapsed = time.monotonic() - started
    return stats


def _send_one(
    client: httpx.Client,
    url: str,
    body: bytes,
    request_id: str,
    batch: SampleBatch,
    stats: SendStats,
    options: SendOptions,
) -> None:
    attempt = 0
    while True:
        try:
            response = client.post(url, content=body, headers={"X-Request-Id": request_id})
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # Nothing reached the receiver, so nothing is counted as sent.
            raise SendAborted(f"cannot reach the receiver at {url}: {exc}", stats, unreachable=True) from exc
        except httpx.TransportError as exc:
            _count_sent(stats, batch)
            stats.failed_requests += 1
            stats.errors[f"{type(exc).__name__}: {exc}"] += 1
            return
        if response.status_code == 503 and attempt < options.max_retries:
            attempt += 1
            stats.retries += 1
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            wait = DEFAULT_RETRY_WAIT if wait is None else wait
            _wait_until(time.monotonic() + min(options.max_retry_wait, wait))
            continue
        break
    _count_sent(stats, batch)
    stats.statuses[response.status_code] += 1
    if response.is_success:
        _add_receiver_counts(stats, response)
        return
    stats.failed_requests += 1
    message = f"HTTP {response.status_code}: {_error_message(response)}"
    stats.errors[message] += 1
    if response.status_code in (401, 403):
        raise SendAborted(f"the receiver refused the token ({message})", stats, unreachable=False)


def _count_sent(stats: SendStats, batch: SampleBatch) -> None:
    stats.requests += 1
    stats.records += len(batch.records)
    stats.generated_duplicates += batch.duplicates
    stats.generated_invalid += batch.invalid


def _add_receiver_counts(stats: SendStats, response: httpx.Response) -> None:
    try:
        answer = response.json()
    except ValueError:
        return
    if isinstance(answer, dict):
        for name in RECEIVER_COUNTS:
            value = answer.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                stats.receiver[name] += value


def _error_message(response: httpx.Response) -> str:
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("message"), str):
        return str(answer["message"])
    return response.text.strip()[:200] or response.reason_phrase


def _wait_until(moment: float) -> None:
    remaining = moment - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
