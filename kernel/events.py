"""The Auth0 log record as handlers see it, and the validation every record passes first."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kernel.catalogue import EventType, describe

#: The ledger is keyed on log_id (events.log_id, handler_runs.log_id are this long). Auth0's are 56 digits.
MAX_LOG_ID_LENGTH = 128
#: What a character no database stores becomes.
REPLACEMENT_CHARACTER = "\ufffd"


class InvalidRecord(ValueError):
    """Raised when a log record lacks what every Auth0 record has (a log_id and data.type)."""


@dataclass(frozen=True, slots=True)
class Auth0Event:
    """One Auth0 log event: the common fields, typed, plus the raw record as Auth0 sent it."""

    log_id: str
    type: str
    raw: Mapping[str, Any] = field(repr=False)
    date: datetime | None = None
    description: str = ""
    client_id: str = ""
    client_name: str = ""
    connection: str = ""
    ip: str = ""
    user_id: str = ""
    user_name: str = ""
    scopes: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def data(self) -> Mapping[str, Any]:
        """The record's ``data`` object: every field Auth0 sent for this type."""
        data: Mapping[str, Any] = self.raw["data"]
        return data

    @property
    def event_type(self) -> EventType:
        """The catalogue entry for this event's code (a placeholder for codes Auth0 added since)."""
        return describe(self.type)


def normalize_record(record: object) -> dict[str, Any]:
    """Return the record as Auth0's envelope ``{"log_id", "data": {...}}``.

    Accepts the log stream envelope and the bare log entry the Management API returns. Raises
    InvalidRecord, naming the problem, for anything else.
    """
    if not isinstance(record, dict):
        raise InvalidRecord(f"record is a JSON {_json_kind(record)}, not an object")
    if "data" not in record and "type" in record:
        record = {"log_id": record.get("log_id"), "data": record}
    data = record.get("data")
    if not isinstance(data, dict):
        raise InvalidRecord("record has no 'data' object")
    log_id = record.get("log_id", data.get("log_id"))
    if not isinstance(log_id, str) or not log_id.strip():
        raise InvalidRecord("record has no 'log_id' string")
    _check_log_id(log_id)
    if "log_id" in data and data["log_id"] != log_id:
        raise InvalidRecord(f"'log_id' {log_id!r} differs from 'data.log_id' {data['log_id']!r}")
    event_type = data.get("type")
    if not isinstance(event_type, str) or not event_type.strip():
        raise InvalidRecord("record has no 'data.type' string")
    return {**record, "log_id": log_id}


def _check_log_id(log_id: str) -> None:
    # The ledger's key can be neither cut (two events would share it) nor cleaned (the same): refuse it.
    if len(log_id) > MAX_LOG_ID_LENGTH:
        raise InvalidRecord(f"'log_id' is longer than {MAX_LOG_ID_LENGTH} characters")
    if storable_text(log_id) != log_id:
        raise InvalidRecord("'log_id' holds a character no database stores (NUL or a lone surrogate)")


def parse_event(record: object) -> Auth0Event:
    """Validate ``record`` and return it as an Auth0Event; raises InvalidRecord when it is not one.

    Every string of the event, raw included, is storable_text: handlers and the ledger get text every
    database stores. A number JSON cannot carry (NaN, Infinity) makes the record invalid.
    """
    envelope = storable_record(normalize_record(record))
    data = envelope["data"]
    return Auth0Event(
        log_id=envelope["log_id"],
        type=data["type"],
        raw=envelope,
        date=_parse_date(data.get("date")),
        description=_text(data.get("description")),
        client_id=_text(data.get("client_id")),
        client_name=_text(data.get("client_name")),
        connection=_text(data.get("connection")),
        ip=_text(data.get("ip")),
        user_id=_text(data.get("user_id")),
        user_name=_text(data.get("user_name")),
        scopes=_scopes(data.get("scope")),
        details=data["details"] if isinstance(data.get("details"), dict) else {},
    )


def storable_text(value: str) -> str:
    """Return ``value`` with each character no database stores replaced by U+FFFD.

    PostgreSQL refuses NUL in text, and no UTF-8 database takes a lone surrogate (what JSON's
    ``"\\ud800"`` decodes to). Replacing rather than removing keeps apart names that differ only there
    (``"ad\\0min"`` does not become ``"admin"``) and shows that something was replaced.
    """
    if "\x00" in value:
        value = value.replace("\x00", REPLACEMENT_CHARACTER)
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # Through UTF-16: the halves of a pair held as two code points join, a lone half becomes U+FFFD.
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return value


def storable_record(record: dict[str, Any]) -> dict[str, Any]:
    """Return ``record`` with every string, keys included, made storable_text.

    The record itself when nothing needs replacing, else a copy (the caller's record is left alone).
    Raises InvalidRecord for a number JSON cannot carry (NaN, Infinity: what ``1e999`` parses to).
    Walks without recursion, so a deeply nested record cannot exhaust the stack here.
    """
    return _storable_copy(record) if _needs_replacing(record) else record


def _needs_replacing(record: dict[str, Any]) -> bool:
    # Every event passes here, so the common case is kept to C-level checks: text that is ASCII without
    # NUL needs nothing, and a dict's keys are checked joined (measured: 7 µs for a typical record,
    # against 45 µs calling storable_text on each string and key).
    stack: list[Any] = [record]
    found = False
    while stack:
        container = stack.pop()
        if isinstance(container, dict):
            found = found or _needs_replacing_text("".join(k for k in container if isinstance(k, str)))
            values = container.values()
        else:
            values = container
        for value in values:
            if isinstance(value, str):
                found = found or "\x00" in value or (not value.isascii() and _needs_replacing_text(value))
            elif isinstance(value, (dict, list)):
                stack.append(value)
            elif isinstance(value, float) and not math.isfinite(value):
                raise InvalidRecord("record has a number JSON cannot carry (NaN, Infinity, or out of range)")
    return found


def _needs_replacing_text(text: str) -> bool:
    return "\x00" in text or (not text.isascii() and storable_text(text) != text)


def _storable_copy(record: dict[str, Any]) -> dict[str, Any]:
    copy: dict[str, Any] = {}
    stack: list[tuple[Any, Any]] = [(record, copy)]
    while stack:
        source, target = stack.pop()
        items = source.items() if isinstance(source, dict) else enumerate(source)
        for key, value in items:
            if isinstance(value, dict | list):
                child: Any = {} if isinstance(value, dict) else []
                stack.append((value, child))
                value = child
            elif isinstance(value, str):
                value = storable_text(value)
            if isinstance(target, dict):
                target[storable_text(key) if isinstance(key, str) else key] = value
            else:
                target.append(value)
    return copy


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _scopes(value: object) -> tuple[str, ...]:
    # Auth0's log schemas allow a space-separated string or an array of strings (anyOf in f.schema.json).
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list):
        return tuple(item for item in value if isinstance(item, str))
    return ()


def _parse_date(value: object) -> datetime | None:
    # A malformed date is kept in raw but does not make the record invalid: only log_id and type are needed.
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is not None:
            parsed.astimezone(UTC)  # a date near year 1 or 9999 may lie outside them in UTC
    except (ValueError, OverflowError):
        return None
    return parsed


def _json_kind(value: object) -> str:
    kinds = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)
