"""Sort a request's records: accepted (with their queue), filtered out, quarantined, or duplicates."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.payload import UnreadValue
from kernel.events import InvalidRecord, normalize_record
from kernel.record_limits import MAX_RECORD_DEPTH, carry_problem
from kernel.routing import RouteTable
from kernel.wire import STREAM

#: Gives the text of the record at a (request-wide) index as it was received, where a caller has it.
Source = Callable[[int], str]


@dataclass(frozen=True)
class AcceptedEvent:
    """A valid record that configuration routes to ``queue``, with the id its task message will carry."""

    log_id: str
    event_type: str
    queue: str
    record: dict[str, Any]
    # Chosen here, before publishing, so the receiver's log line and the worker's share it.
    task_id: str = field(default_factory=lambda: str(uuid.uuid4()), compare=False)
    #: The record's position in its request, for the quarantine should its message prove unsendable.
    index: int = field(default=-1, compare=False)
    #: The record's JSON text as received, when it is the envelope itself and was read strictly
    #: (app.payload.strict_lines): the task message carries these bytes instead of encoding it again.
    text: bytes | None = field(default=None, compare=False, repr=False)
    #: Where the event came from, kept in the archive: the stream, or a fill from the Management API.
    source: str = field(default=STREAM, compare=False)


@dataclass(slots=True)
class QuarantinedRecord:
    """A record that failed validation or cannot be carried, kept as received with the reason.

    Not frozen: a hostile body may bring millions of them, and a frozen dataclass takes three times as
    long to build.
    """

    record: Any
    reason: str
    index: int


@dataclass
class Intake:
    """Where every record of one request ended up; each record is counted exactly once."""

    received: int = 0
    accepted: list[AcceptedEvent] = field(default_factory=list)
    quarantined: list[QuarantinedRecord] = field(default_factory=list)
    filtered: Counter[str] = field(default_factory=Counter)
    #: Records repeating a log_id seen earlier in the request, by event type.
    duplicates: Counter[str] = field(default_factory=Counter)
    #: The records' text as received, when the caller has it (the quarantine keeps what JSON cannot carry).
    source: Source | None = field(default=None, repr=False, compare=False)

    def summary(self) -> dict[str, int]:
        """Return the counts the receiver answers with."""
        return {
            "received": self.received,
            "accepted": len(self.accepted),
            "filtered": sum(self.filtered.values()),
            "quarantined": len(self.quarantined),
            "duplicates": sum(self.duplicates.values()),
        }


@dataclass
class BatchCounts:
    """A request's counts added up over the slices a large body is handled in (the response's body)."""

    received: int = 0
    accepted: int = 0
    filtered: int = 0
    quarantined: int = 0
    duplicates: int = 0

    def add(self, intake: Intake) -> None:
        """Add one slice's counts."""
        self.add_counts(intake)

    def add_counts(self, counts: Intake | BatchCounts) -> None:
        """Add the counts of a slice or of other slices."""
        for name, count in counts.summary().items():
            setattr(self, name, getattr(self, name) + count)

    def summary(self) -> dict[str, int]:
        """Return the counts the receiver answers with."""
        return dict(vars(self))


def sort_records(
    records: list[Any],
    routes: RouteTable,
    seen: set[str] | None = None,
    first_index: int = 0,
    source: Source | None = None,
    texts: list[bytes] | None = None,
) -> Intake:
    """Validate, filter and route each record; never raises for bad records, it quarantines them.

    A record is quarantined when it is not an Auth0 record, or when it cannot be carried as a task
    message (kernel/record_limits.py: too deep, a number JSON cannot carry, a value that is not JSON).
    A log_id in ``seen`` (the log_ids accepted earlier in the same request, updated here) counts as a
    duplicate and is published once. ``first_index`` is the position of ``records[0]`` in the request;
    ``source``, when given, returns a record's text by that position.

    ``texts``, given only for records read by app.payload.strict_lines (whose values are known to be
    carriable but for their depth), holds each record's JSON text: a record with no more opening brackets
    than MAX_RECORD_DEPTH cannot nest deeper, so its walk by carry_problem is skipped (it was the largest
    cost of sorting), and an accepted record that is its own envelope keeps its text for the task message.
    """
    intake = Intake(received=len(records), source=source)
    seen = set() if seen is None else seen
    quarantine = intake.quarantined.append
    # A value that is not an object is refused for its JSON type alone, so normalize_record is asked once
    # per type: a body of millions of bare numbers cost a raise and a message each (a third of its time).
    not_objects: dict[type, str] = {}
    for index, record in enumerate(records, start=first_index):
        if not isinstance(record, dict):
            kind = type(record)
            if kind not in not_objects:
                not_objects[kind] = _refusal(record)
            reason = record.reason if kind is UnreadValue else not_objects[kind]
            quarantine(QuarantinedRecord(record, reason, index))
            continue
        try:
            envelope = normalize_record(record)
        except InvalidRecord as exc:
            quarantine(QuarantinedRecord(record, str(exc), index))
            continue
        text = None if texts is None else texts[index - first_index]
        if text is None or text.count(b"{") + text.count(b"[") > MAX_RECORD_DEPTH:
            problem = carry_problem(envelope)
            if problem is not None:
                quarantine(QuarantinedRecord(record, problem, index))
                continue
        log_id, data = envelope["log_id"], envelope["data"]
        event_type = data["type"]
        queue = routes.queue_for(event_type)
        if queue is None:
            intake.filtered[event_type] += 1
        elif log_id in seen:
            intake.duplicates[event_type] += 1
        else:
            seen.add(log_id)
            if text is not None and (record.get("log_id") is not log_id or record.get("data") is not data):
                text = None  # a bare entry, or a log_id only in data: the envelope is not the record's text
            intake.accepted.append(AcceptedEvent(log_id, event_type, queue, envelope, index=index, text=text))
    return intake


def _refusal(record: object) -> str:
    try:
        normalize_record(record)
    except InvalidRecord as exc:
        return str(exc)
    return "record is not an object"  # normalize_record takes only objects; kept apart should it change


def restore_event(record: Any, queue: str, index: int) -> AcceptedEvent:
    """The AcceptedEvent sort_records made of ``record`` at ``index``, made again from the record.

    For a large body the receiver keeps only where an accepted event's text is between sorting the body
    and publishing it (so that the body's records never all exist as objects), and parses it again.
    """
    envelope = normalize_record(record)
    return AcceptedEvent(envelope["log_id"], envelope["data"]["type"], queue, envelope, index=index)
