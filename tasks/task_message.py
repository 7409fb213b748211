"""What a message on a work queue must be before Celery may take it: a task message as this service makes.

Only the receiver (and the stream watcher, through it), the task's own retries and ``dlq replay`` publish
to the work queues, and each publishes ``auth0_events.handle_event`` with one record and three string
keyword arguments. Anyone else with broker access can publish anything; Celery trusts what it takes, and
some messages crash or wedge its worker (pickling a deep record for the pool, a ``null`` body, an ETA in
year 9999 held unacked, an ``expires`` that has it acked unprocessed). So the worker's consumer
(tasks/consumer.py) checks each message here first, without trusting any part, and refuses with the
reason returned. The reasons name what is wrong, never the values (which may be personal data).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from kernel.amqp_properties import flaw
from kernel.events import InvalidRecord, normalize_record
from kernel.record_limits import carry_problem, deepest
from kernel.settings import MAX_SAFE_COUNTDOWN_SECONDS
from kernel.wire import SOURCES, TASK_NAME

#: The content type and encoding of every task message (task_serializer = "json").
CONTENT_TYPE = "application/json"
CONTENT_ENCODING = "utf-8"
#: Deepest nesting in the AMQP headers: x-death's entries hold a list (4 levels); Celery pickles the
#: headers for the pool, which fails near 480 levels.
MAX_HEADER_DEPTH = 16
#: The keyword arguments of the task; received_at and source (kernel.wire.SOURCES) are optional.
REQUIRED_KWARGS = frozenset({"event_type", "log_id"})
KNOWN_KWARGS = REQUIRED_KWARGS | {"received_at", "source"}
#: Celery's embedded canvas options: any other value makes the worker call further tasks.
EMBED_KEYS = frozenset({"callbacks", "errbacks", "chain", "chord"})
#: Longest text a header or keyword argument may hold; argsrepr and kwargsrepr are logged whole.
MAX_TEXT = 4096
#: Longest task id: the ledger's claims column (kernel/storage/models.py) holds 64 characters.
MAX_TASK_ID = 64
#: A retry's ETA is at most the retry backoff cap (itself capped at MAX_SAFE_COUNTDOWN_SECONDS) ahead;
#: the slack covers clocks of different hosts. Anything later would be held unacked past RabbitMQ's
#: consumer_timeout (30 min).
ETA_SLACK = timedelta(minutes=5)
MAX_ETA_AHEAD = timedelta(seconds=MAX_SAFE_COUNTDOWN_SECONDS) + ETA_SLACK
#: An accepted record is at most AUTH0_EVENTS_MAX_BODY_BYTES as received; re-encoded as ASCII JSON it
#: grows at most about 4.5 times (``é`` → ``\\u00e9``, ``1e15`` → ``1000000000000000.0``, separators).
BODY_GROWTH = 5
BODY_SLACK = 64 * 1024


def max_body_bytes(max_request_bytes: int) -> int:
    """The largest task message body the receiver can produce when requests are at most this large."""
    return BODY_GROWTH * max_request_bytes + BODY_SLACK


def message_problem(message: Any, now: datetime, largest_body: int) -> str | None:
    """Why the kombu ``message`` may not be handed to Celery, or None when it is this service's task.

    Decodes the body as kombu does, which caches the result for Celery. Never raises for any message:
    what cannot be checked is a problem too.
    """
    try:
        return _problem(message, now, largest_body)
    except Exception as exc:  # noqa: BLE001 - RecursionError, MemoryError: a message nobody could check
        return f"it could not be checked ({type(exc).__name__})"


def _problem(message: Any, now: datetime, largest_body: int) -> str | None:
    marker = flaw(message.headers)
    if marker is not None:
        return marker.reason
    content = (message.content_type, (message.content_encoding or "").lower())
    if content != (CONTENT_TYPE, CONTENT_ENCODING):
        return f"its content type is {_shown(content[0])} in {_shown(content[1])}, not {CONTENT_TYPE}"
    if len(message.body) > largest_body:
        # Characters when py-amqp decoded it, bytes otherwise: either way no smaller than its bytes / 4.
        return f"its body is over {largest_body} bytes, more than a task message can be"
    problem = headers_problem(message.headers, now)
    if problem is not None:
        return problem
    try:
        body = message.decode()
    except Exception as exc:  # noqa: BLE001 - kombu wraps every failure, RecursionError included
        return f"its body is not JSON ({decode_failure(exc)})"
    return body_problem(body)


def decode_failure(exc: BaseException) -> str:
    """What went wrong decoding a body, without quoting it."""
    inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
    if isinstance(inner, json.JSONDecodeError):
        return f"{inner.msg} at character {inner.pos}"
    if isinstance(inner, UnicodeDecodeError):
        return f"not UTF-8 at byte {inner.start}"
    return type(inner).__name__


def headers_problem(headers: Mapping[Any, Any], now: datetime) -> str | None:
    """Why ``headers`` are not those of this service's task message, or None when they are."""
    if deepest(headers) > MAX_HEADER_DEPTH:
        return f"its headers nest deeper than {MAX_HEADER_DEPTH} levels"
    task = headers.get("task")
    if task != TASK_NAME:
        if task is None:
            return "it is not a Celery task message (no task header)"
        return f"its task {_shown(task)} is not {TASK_NAME}"
    task_id = headers.get("id")
    if not isinstance(task_id, str) or not 0 < len(task_id) <= MAX_TASK_ID:
        return f"its task id is not a string of 1 to {MAX_TASK_ID} characters"
    retries = headers.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        return "its retries header is not a whole number of at least 0"
    for name in ("shadow", "group", "expires"):
        if headers.get(name) is not None:
            # An expiry has Celery ack the message unprocessed once it passed; shadow and group are
            # canvas and naming features the service never uses.
            return f"it carries {name!r}, a header this service never sets"
    return _schedule_problem(headers, now) or _texts_problem(headers)


def _schedule_problem(headers: Mapping[Any, Any], now: datetime) -> str | None:
    eta = headers.get("eta")
    if eta is not None:
        when = _instant(eta)
        if when is None:
            return "its eta is not an ISO 8601 time"
        if when - now > MAX_ETA_AHEAD:
            return (
                f"its eta is more than {int(MAX_ETA_AHEAD.total_seconds())} s ahead, further than any "
                "retry of this service waits"
            )
    limits = headers.get("timelimit")
    if limits is not None and not _time_limits(limits):
        return f"its timelimit is not two limits of at most {MAX_SAFE_COUNTDOWN_SECONDS} s (or null)"
    return None


def _texts_problem(headers: Mapping[Any, Any]) -> str | None:
    for name in ("argsrepr", "kwargsrepr", "root_id", "parent_id", "origin"):
        value = headers.get(name)
        if value is not None and not _text(value, MAX_TEXT):
            return f"its {name} header is not a UTF-8 string of at most {MAX_TEXT} characters"
    return None


def body_problem(body: object) -> str | None:
    """Why a decoded body is not ``[[record], {event_type, log_id, received_at}, embed]``, or None."""
    if not isinstance(body, list) or len(body) != 3:
        return f"its body is a JSON {_kind(body)}, not Celery's [args, kwargs, embed]"
    args, kwargs, embed = body
    if not isinstance(args, list) or len(args) != 1 or not isinstance(args[0], dict):
        return "its task arguments are not one record object"
    if not isinstance(kwargs, dict):
        return "its task keyword arguments are not an object"
    if not isinstance(embed, dict) or set(embed) - EMBED_KEYS or any(v is not None for v in embed.values()):
        return (
            "it asks for further tasks (callbacks, errbacks, chain or chord), which this service never sets"
        )
    return _kwargs_problem(kwargs) or _record_problem(args[0], kwargs)


def _kwargs_problem(kwargs: Mapping[str, Any]) -> str | None:
    names = set(kwargs)
    if not REQUIRED_KWARGS <= names <= KNOWN_KWARGS:
        return f"its keyword arguments are not {', '.join(sorted(REQUIRED_KWARGS))} (and received_at, source)"
    if "source" in names and kwargs["source"] not in SOURCES:
        return f"its source is not one of {', '.join(SOURCES)}"
    for name in sorted(names):
        value = kwargs[name]
        if not (value is None and name == "received_at") and not _text(value, MAX_TEXT, empty=False):
            return f"its {name} is not a non-empty UTF-8 string of at most {MAX_TEXT} characters"
    return None


def _record_problem(record: dict[str, Any], kwargs: Mapping[str, Any]) -> str | None:
    problem = carry_problem(record)
    if problem is not None:
        return problem
    try:
        envelope = normalize_record(record)
    except InvalidRecord as exc:
        return f"its record is invalid: {exc}"
    if envelope["log_id"] != kwargs["log_id"] or envelope["data"]["type"] != kwargs["event_type"]:
        return "its log_id or event_type differs from the record's"
    return None


def _instant(value: object) -> datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    # Celery reads a naive ETA as UTC (enable_utc); one before 1970 cannot be a timestamp everywhere.
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when
    return when if when.year >= 1970 else None


def _time_limits(value: object) -> bool:
    if not isinstance(value, list | tuple) or len(value) != 2:
        return False
    return all(
        limit is None
        or (
            isinstance(limit, int | float)
            and not isinstance(limit, bool)
            and math.isfinite(limit)
            and 0 < limit <= MAX_SAFE_COUNTDOWN_SECONDS
        )
        for limit in value
    )


def _text(value: object, longest: int, empty: bool = True) -> bool:
    if not isinstance(value, str) or len(value) > longest or (not empty and not value.strip()):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which neither the ledger nor a log line can hold
        return False
    return True


def _shown(value: object) -> str:
    """A header value short enough, and escaped enough, to name in a reason."""
    text = value if isinstance(value, str) else type(value).__name__
    return ascii(text[:100])


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    names = {dict: "object", list: "array", str: "string", int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)
