"""Unit tests for app.intake.sort_records: every record accepted, filtered, quarantined or a duplicate."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from app.intake import AcceptedEvent, Intake, QuarantinedRecord, sort_records
from app.payload import UnreadValue
from kernel.record_limits import MAX_RECORD_DEPTH, NOT_FINITE, TOO_DEEP
from kernel.routing import parse_routes

ROUTES = parse_routes("s,f,fp,auth.signup.fail=auth0.signup_failed")


def record(event_type: str, log_id: str, **data: Any) -> dict[str, Any]:
    """Return a minimal log stream envelope."""
    return {"log_id": log_id, "data": {"type": event_type, "log_id": log_id, **data}}


def _assert_each_counted_once(intake: Intake) -> None:
    summary = intake.summary()
    assert summary["received"] == (
        summary["accepted"] + summary["filtered"] + summary["quarantined"] + summary["duplicates"]
    )


def test_summary_keys_and_empty_batch() -> None:
    """An empty batch gives a summary with the five counts, all zero."""
    intake = sort_records([], ROUTES)
    assert intake.summary() == {
        "received": 0,
        "accepted": 0,
        "filtered": 0,
        "quarantined": 0,
        "duplicates": 0,
    }


def test_accepted_records_carry_their_queue_and_envelope() -> None:
    """Routed records are accepted in order with log_id, type, queue and the normalized envelope."""
    records = [record("s", "1"), record("fs", "2"), record("fp", "3")]
    intake = sort_records(records, ROUTES)
    assert intake.accepted == [
        AcceptedEvent("1", "s", "auth0.s", records[0]),
        AcceptedEvent("2", "fs", "auth0.signup_failed", records[1]),
        AcceptedEvent("3", "fp", "auth0.fp", records[2]),
    ]
    assert intake.summary() == {
        "received": 3,
        "accepted": 3,
        "filtered": 0,
        "quarantined": 0,
        "duplicates": 0,
    }


def test_bare_management_api_entry_is_accepted_as_an_envelope() -> None:
    """A bare log entry is accepted and published as the {log_id, data} envelope."""
    entry = {"type": "s", "log_id": "77", "ip": "81.2.69.143"}
    intake = sort_records([entry], ROUTES)
    assert intake.accepted == [AcceptedEvent("77", "s", "auth0.s", {"log_id": "77", "data": entry})]


def test_filtered_records_are_counted_per_type() -> None:
    """Records of types no route accepts are counted per type, and not published."""
    records = [record("ss", "1"), record("sapi", "2"), record("ss", "3"), record("brand_new_code", "4")]
    intake = sort_records(records, ROUTES)
    assert intake.accepted == []
    assert intake.filtered == Counter({"ss": 2, "sapi": 1, "brand_new_code": 1})
    assert intake.summary()["filtered"] == 4
    _assert_each_counted_once(intake)


def test_invalid_records_are_quarantined_with_record_reason_and_index() -> None:
    """Invalid records keep the record as received, the validation reason and their position."""
    bad_data = {"log_id": "2", "data": []}
    records: list[Any] = [record("s", "1"), bad_data, "a string", record("f", "4"), None, {"log_id": "6"}]
    intake = sort_records(records, ROUTES)
    assert intake.quarantined == [
        QuarantinedRecord(bad_data, "record has no 'data' object", 1),
        QuarantinedRecord("a string", "record is a JSON string, not an object", 2),
        QuarantinedRecord(None, "record is a JSON null, not an object", 4),
        QuarantinedRecord({"log_id": "6"}, "record has no 'data' object", 5),
    ]
    assert intake.quarantined[0].record is bad_data
    assert [event.log_id for event in intake.accepted] == ["1", "4"]
    _assert_each_counted_once(intake)


def test_invalid_record_with_a_filtered_type_is_still_quarantined() -> None:
    """Validation comes before filtering: a broken record of a filtered type is quarantined, not filtered."""
    broken = {"log_id": "1", "data": {"type": "ss", "log_id": "2"}}
    intake = sort_records([broken], ROUTES)
    assert intake.filtered == Counter()
    assert intake.quarantined == [QuarantinedRecord(broken, "'log_id' '1' differs from 'data.log_id' '2'", 0)]


def test_duplicate_log_id_in_a_batch_is_published_once() -> None:
    """A log_id seen earlier in the same batch is counted as a duplicate and accepted only once."""
    first = record("s", "1", ip="first")
    again = record("s", "1", ip="again")
    intake = sort_records([first, record("f", "2"), again, record("s", "1")], ROUTES)
    assert [event.log_id for event in intake.accepted] == ["1", "2"]
    assert intake.accepted[0].record == first
    assert sum(intake.duplicates.values()) == 2
    assert intake.summary() == {
        "received": 4,
        "accepted": 2,
        "filtered": 0,
        "quarantined": 0,
        "duplicates": 2,
    }


def test_duplicates_of_filtered_records_count_as_filtered() -> None:
    """A filtered record repeated in the batch is counted as filtered each time, not as a duplicate."""
    intake = sort_records([record("ss", "1"), record("ss", "1")], ROUTES)
    assert intake.filtered == Counter({"ss": 2})
    assert sum(intake.duplicates.values()) == 0
    _assert_each_counted_once(intake)


def test_duplicate_of_a_quarantined_record_is_not_a_duplicate() -> None:
    """Only accepted log_ids count for duplicates: an invalid first copy does not hide a valid second one."""
    invalid = {"log_id": "1", "data": {"type": ""}}
    intake = sort_records([invalid, record("s", "1")], ROUTES)
    assert len(intake.quarantined) == 1
    assert [event.log_id for event in intake.accepted] == ["1"]
    assert sum(intake.duplicates.values()) == 0


def test_bare_and_envelope_forms_of_one_log_id_are_duplicates() -> None:
    """The same log_id in bare and envelope form is one event."""
    intake = sort_records([{"type": "s", "log_id": "9"}, record("s", "9")], ROUTES)
    assert len(intake.accepted) == 1
    assert sum(intake.duplicates.values()) == 1


def test_catch_all_accepts_unknown_codes() -> None:
    """With '*' in the routes an unknown code is accepted into the catch-all queue."""
    intake = sort_records([record("brand_new_code", "1")], parse_routes("s,*"))
    assert intake.accepted == [
        AcceptedEvent("1", "brand_new_code", "auth0.other", record("brand_new_code", "1"))
    ]


@pytest.mark.parametrize("size", [1, 7, 50])
def test_every_record_is_counted_exactly_once(size: int) -> None:
    """In a mixed batch, accepted + filtered + quarantined + duplicates equals received."""
    kinds: list[Any] = [
        lambda i: record("s", f"s{i}"),
        lambda i: record("ss", f"ss{i}"),
        lambda i: {"log_id": f"bad{i}"},
        lambda i: record("f", "same"),
        lambda i: [i],
    ]
    records = [kinds[i % len(kinds)](i) for i in range(size)]
    intake = sort_records(records, ROUTES)
    assert intake.received == size
    _assert_each_counted_once(intake)
    indexes = [q.index for q in intake.quarantined]
    assert indexes == sorted(indexes)
    assert all(records[q.index] is q.record for q in intake.quarantined)


def test_sort_records_never_raises_for_bad_records() -> None:
    """Any JSON value in the list is sorted, never raised on."""
    values: list[Any] = [1, 2.5, True, None, "x", [], {}, {"data": {}}, {"log_id": "", "data": {"type": "s"}}]
    intake = sort_records(values, ROUTES)
    assert len(intake.quarantined) == len(values)
    assert [q.index for q in intake.quarantined] == list(range(len(values)))


def test_records_that_cannot_be_carried_are_quarantined_before_routing() -> None:
    """A record too deep, holding NaN, or that the parser could not build is quarantined with the reason
    from kernel/record_limits.py, whatever its type's route (a filtered type included)."""
    deep: Any = []
    for _ in range(MAX_RECORD_DEPTH):
        deep = [deep]
    unread = UnreadValue(TOO_DEEP)
    records: list[Any] = [
        record("s", "1", details=deep),
        record("ss", "2", details=deep),  # a type these routes filter
        record("s", "3", n=float("nan")),
        unread,
        record("s", "5"),
    ]
    intake = sort_records(records, ROUTES)
    assert intake.quarantined == [
        QuarantinedRecord(records[0], TOO_DEEP, 0),
        QuarantinedRecord(records[1], TOO_DEEP, 1),
        QuarantinedRecord(records[2], NOT_FINITE, 2),
        QuarantinedRecord(unread, TOO_DEEP, 3),
    ]
    assert [(event.log_id, event.index) for event in intake.accepted] == [("5", 4)]
    _assert_each_counted_once(intake)


def test_the_source_of_the_records_is_kept_for_the_quarantine() -> None:
    """The text of each record, where the caller has it, travels with the intake by request-wide index."""
    texts = {7: '{"log_id": "x"}'}
    intake = sort_records([{"log_id": "x"}], ROUTES, first_index=7, source=texts.__getitem__)
    assert intake.source is not None
    assert intake.source(intake.quarantined[0].index) == '{"log_id": "x"}'
