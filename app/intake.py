"""Sort a request's records: accepted (with their queue), filtered out, quarantined, or duplicates."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tasks.events import InvalidRecord, normalize_record
from tasks.routing import RouteTable


@dataclass(frozen=True)
class AcceptedEvent:
    """A valid record that configuration routes to ``queue``, with the id its task message will carry."""

    log_id: str
    event_type: str
    queue: str
    record: dict[str, Any]
    # Chosen here, before publishing, so the receiver's log line and the worker's share it.
    task_id: str = field(default_factory=lambda: str(uuid.uuid4()), compare=False)


@dataclass(frozen=True)
class QuarantinedRecord:
    """A record that failed validation, kept as received with the reason."""

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
        for name, count in intake.summary().items():
            setattr(self, name, getattr(self, name) + count)

    def summary(self) -> dict[str, int]:
        """Return the counts the receiver answers with."""
        return dict(vars(self))


def sort_records(
    records: list[Any], routes: RouteTable, seen: set[str] | None = None, first_index: int = 0
) -> Intake:
    """Validate, filter and route each record; never raises for bad records, it quarantines them.

    A log_id in ``seen`` (the log_ids accepted earlier in the same request, updated here) counts as a
    duplicate and is published once. ``first_index`` is the position of ``records[0]`` in the request.
    """
    intake = Intake(received=len(records))
    seen = set() if seen is None else seen
    for index, record in enumerate(records, start=first_index):
        try:
            envelope = normalize_record(record)
        except InvalidRecord as exc:
            intake.quarantined.append(QuarantinedRecord(record, str(exc), index))
            continue
        log_id, event_type = envelope["log_id"], envelope["data"]["type"]
        queue = routes.queue_for(event_type)
        if queue is None:
            intake.filtered[event_type] += 1
        elif log_id in seen:
            intake.duplicates[event_type] += 1
        else:
            seen.add(log_id)
            intake.accepted.append(AcceptedEvent(log_id, event_type, queue, envelope))
    return intake
