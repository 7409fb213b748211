"""The Auth0 log record as handlers see it, and the validation every record passes first."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tasks.catalogue import EventType, describe


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
    if "log_id" in data and data["log_id"] != log_id:
        raise InvalidRecord(f"'log_id' {log_id!r} differs from 'data.log_id' {data['log_id']!r}")
    event_type = data.get("type")
    if not isinstance(event_type, str) or not event_type.strip():
        raise InvalidRecord("record has no 'data.type' string")
    return {**record, "log_id": log_id}


def parse_event(record: object) -> Auth0Event:
    """Validate ``record`` and return it as an Auth0Event; raises InvalidRecord when it is not one."""
    envelope = normalize_record(record)
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


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _scopes(value: object) -> tuple[str, ...]:
    # Auth0's schemas allow a space-separated string or an array of strings (shared/reference/auth0.md §1).
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
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _json_kind(value: object) -> str:
    kinds = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)
