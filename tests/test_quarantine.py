"""The request's one quarantine message (app/quarantine.py): what it keeps, what it counts, its bounds."""

from __future__ import annotations

import json
from typing import Any

from app.intake import Intake, QuarantinedRecord
from app.quarantine import MAX_KEPT_RECORDS, MAX_REASON_CHARS, MAX_REASONS, OTHER_REASONS, QuarantineReport
from kernel.record_limits import MAX_RECORD_DEPTH


def intake_of(*bad: QuarantinedRecord, source: Any = None) -> Intake:
    """An intake holding only ``bad`` records."""
    return Intake(received=len(bad), quarantined=list(bad), source=source)


def body_of(report: QuarantineReport) -> dict[str, Any]:
    """The message body as a consumer reads it (strict JSON: no NaN)."""
    return dict(json.loads(report.body(), parse_constant=refuse_constant))


def refuse_constant(name: str) -> None:
    """A body must never hold NaN or Infinity."""
    raise AssertionError(f"{name} in a quarantine message")


def test_an_empty_report_is_false_and_counts_nothing() -> None:
    """No bad records: nothing to publish."""
    report = QuarantineReport("r")
    report.add(Intake())
    assert not report
    assert body_of(report)["quarantined"] == 0


def test_reasons_beyond_the_cap_are_counted_together() -> None:
    """Reasons quoting values could be as many as the records: MAX_REASONS by name, the rest together."""
    report = QuarantineReport("r")
    report.add(intake_of(*(QuarantinedRecord({}, f"reason {n}", n) for n in range(MAX_REASONS + 5))))
    body = body_of(report)
    assert len(body["reasons"]) == MAX_REASONS + 1
    assert body["reasons"][OTHER_REASONS] == 5
    assert sum(body["reasons"].values()) == body["quarantined"] == MAX_REASONS + 5


def test_a_long_reason_is_shortened_in_the_message_not_the_count() -> None:
    """A reason quoting a long value is cut to MAX_REASON_CHARS; both records still count under it."""
    reason = "'log_id' '" + "9" * 1000 + "' differs"
    report = QuarantineReport("r")
    report.add(intake_of(QuarantinedRecord({}, reason, 0), QuarantinedRecord({}, reason, 1)))
    body = body_of(report)
    [(short, count)] = body["reasons"].items()
    assert (len(short), count) == (MAX_REASON_CHARS, 2)
    assert body["records"][0]["reason"] == short


def test_records_are_kept_across_slices_up_to_the_count_cap() -> None:
    """Slices add to one report; the first MAX_KEPT_RECORDS are kept in order, the rest counted."""
    report = QuarantineReport("r")
    for first in range(0, 3 * MAX_KEPT_RECORDS, 50):
        report.add(intake_of(*(QuarantinedRecord([n], "bad", n) for n in range(first, first + 50))))
    body = body_of(report)
    assert [entry["index"] for entry in body["records"]] == list(range(MAX_KEPT_RECORDS))
    assert (body["quarantined"], body["omitted"]) == (3 * MAX_KEPT_RECORDS, 2 * MAX_KEPT_RECORDS)


def test_a_record_json_cannot_carry_is_kept_as_its_text_or_its_bounded_repr() -> None:
    """With the source, the text the record came as; without (the backfill's pages), a repr that stops at
    the carry depth however deep the record is."""
    deep: Any = []
    for _ in range(10_000):
        deep = [deep]
    nan = {"n": float("nan")}
    with_text = QuarantineReport("r")
    with_text.add(intake_of(QuarantinedRecord(nan, "NaN", 4), source={4: '{"n": NaN}'}.__getitem__))
    assert body_of(with_text)["records"] == [{"index": 4, "reason": "NaN", "record_text": '{"n": NaN}'}]
    without = QuarantineReport("r")
    without.add(intake_of(QuarantinedRecord(nan, "NaN", 0), QuarantinedRecord(deep, "deep", 1)))
    kept = body_of(without)["records"]
    assert kept[0]["record_repr"] == "{'n': nan}"
    assert kept[1]["record_repr"].count("[") == MAX_RECORD_DEPTH + 1  # levels 0 to the limit, then "..."
    assert "[...]" in kept[1]["record_repr"]


def test_the_body_is_ascii_json_whatever_the_records_hold() -> None:
    """Lone surrogates and non-ASCII text travel escaped."""
    report = QuarantineReport("r")
    report.add(intake_of(QuarantinedRecord({"u": "\ud800 zoë"}, "bad", 0)))
    assert report.body().isascii()
    assert body_of(report)["records"][0]["record"] == {"u": "\ud800 zoë"}
