"""Real-format Auth0 records (tests/data/records, one file per public source) through the receiver and a real
worker: each valid record archived with its fields and handled once though posted in all three formats,
each invalid one quarantined with its reason. On SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from kernel.storage.db import session_scope
from kernel.storage.models import Event
from tests.helpers import AUTH, as_jsonl, take_messages, wait_for

pytestmark = pytest.mark.worker
DATA = Path(__file__).parent / "data"
SOURCES = sorted((DATA / "records").glob("*.json"))
#: Fields the archive keeps in columns, compared with the record's own.
TEXT_COLUMNS = ("type", "user_id", "user_name", "ip", "client_id")


def corpus(source: Path) -> list[dict[str, Any]]:
    """The records of one source file, each with its provenance and, when invalid, the expected reason."""
    items: list[dict[str, Any]] = json.loads(source.read_text(encoding="utf-8"))["records"]
    return items


def load_corpus() -> list[dict[str, Any]]:
    """Every source's records, after checking that each file names its origin and licence and that the
    corpus holds a record of every code in Auth0's list."""
    for source in SOURCES:
        origin = json.loads(source.read_text(encoding="utf-8"))["origin"]
        assert origin["repository"].startswith("https://github.com/"), source.name
        assert origin["licence"], source.name
    items = [item for source in SOURCES for item in corpus(source)]
    auth0_list = json.loads((DATA / "auth0-log-schemas" / "codes.json").read_text(encoding="utf-8"))
    types = {data_of(item["record"]).get("type") for item in items}
    assert {entry["code"] for entry in auth0_list["codes"]} <= types
    return items


def data_of(record: dict[str, Any]) -> dict[str, Any]:
    """The log entry: the stream envelope's ``data``, or the Management API's bare entry itself."""
    data: dict[str, Any] = record.get("data", record)
    return data


def expected_date(value: str) -> datetime:
    """The record's date as the archive should hold it, in UTC (Auth0 writes UTC; Panther drops the Z)."""
    # Worked out here rather than with the code under test, so that a parsing mistake there shows.
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def archived_as(record: dict[str, Any]) -> dict[str, Any]:
    """The archive row a valid record should leave: its own values, text or "" where it has none."""
    data = data_of(record)
    row = {column: data[column] if isinstance(data.get(column), str) else "" for column in TEXT_COLUMNS}
    return {
        "log_id": record.get("log_id", data.get("log_id")),
        "date": expected_date(data["date"]),
        **row,
    }


def row_of(event: Event) -> dict[str, Any]:
    """The archived values that archived_as predicts."""
    columns = {column: getattr(event, column) for column in TEXT_COLUMNS}
    return {"log_id": event.log_id, "date": event.date, **columns}


def post(client: Any, body: bytes | str, valid: int, invalid: int) -> None:
    """POST one body and check the receiver's count of accepted and quarantined records."""
    response = client.post("/webhooks/auth0", data=body, headers=AUTH)
    assert response.status_code == 202, response.get_data(as_text=True)
    assert (response.json["accepted"], response.json["quarantined"]) == (valid, invalid)


def post_in_every_format(client: Any, items: list[dict[str, Any]]) -> None:
    """Send a source's records as Auth0 can: JSON Lines, one JSON array, and one object per request."""
    records = [item["record"] for item in items]
    invalid = sum("invalid" in item for item in items)
    post(client, as_jsonl(records), len(records) - invalid, invalid)
    post(client, json.dumps(records), len(records) - invalid, invalid)
    for item in items:
        bad = "invalid" in item
        post(client, json.dumps(item["record"]), int(not bad), int(bad))


def effect_counts(effects_dir: Path) -> Counter[str]:
    """How often the test handler completed its effect, by log_id."""
    path = effects_dir / "effects.log"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return Counter(line.removeprefix("effect ") for line in lines if line.startswith("effect "))


def archived(database_url: str, log_ids: set[str]) -> dict[str, Event]:
    """The archived events of ``log_ids``, by log_id."""
    with session_scope(database_url) as session:
        events = session.scalars(select(Event).where(Event.log_id.in_(log_ids))).all()
        session.expunge_all()
    return {event.log_id: event for event in events}


def quarantined(broker: Any) -> Counter[tuple[str, str]]:
    """Every record the receiver quarantined since the last call, with its reason, counted."""
    kept: Counter[tuple[str, str]] = Counter()
    for message in take_messages(broker, "auth0.quarantine"):
        for entry in message.decode()["records"]:
            kept[(json.dumps(entry["record"], sort_keys=True), entry["reason"])] += 1
    return kept


def test_every_source_record_is_archived_and_handled_once_or_quarantined(
    make_app: Any, start_worker: Any, broker: Any, database_url: str, effects_dir: Path
) -> None:
    """Each valid record, posted three times (once per format), is archived with its own log_id, type,
    date, user, IP and client and its raw record, and its effect happens once; each invalid one is
    quarantined with the reason its file states, once per post."""
    items = load_corpus()
    valid = {archived_as(item["record"])["log_id"]: item["record"] for item in items if "invalid" not in item}
    assert len(valid) == sum("invalid" not in item for item in items), "a log_id appears twice in the corpus"
    queue = f"test.corpus.{uuid.uuid4().hex[:8]}"
    routes = f"*={queue}"
    client = make_app(routes=routes).test_client()
    quarantined(broker)  # what earlier tests left there
    before = effect_counts(effects_dir)
    start_worker([queue], {"AUTH0_EVENTS_ROUTES": routes, "DATABASE_URL": database_url}, concurrency=2)

    for source in SOURCES:
        post_in_every_format(client, corpus(source))

    def all_delivered() -> dict[str, Event] | None:
        events = archived(database_url, set(valid))
        done = len(events) == len(valid) and all(
            e.state == "processed" and e.attempts == 3 for e in events.values()
        )
        return events if done else None

    events = wait_for(all_delivered, timeout=90, interval=0.5, what="every record processed three times")
    assert events is not None
    assert {log_id: row_of(events[log_id]) for log_id in valid} == {
        log_id: archived_as(record) for log_id, record in valid.items()
    }
    assert all(data_of(events[log_id].raw) == data_of(record) for log_id, record in valid.items())
    after = effect_counts(effects_dir)
    assert {log_id: after[log_id] - before[log_id] for log_id in valid} == dict.fromkeys(valid, 1)
    expected_quarantine = Counter(
        {
            (json.dumps(item["record"], sort_keys=True), item["invalid"]): 3
            for item in items
            if "invalid" in item
        }
    )
    assert quarantined(broker) == expected_quarantine
