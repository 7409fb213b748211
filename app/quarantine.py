"""The request's one quarantine message: its first bad records with index and reason, and counts of all.

One message per request, whatever its number of bad records, published and confirmed with the request's
task messages: a body of a million bad records costs one message, not a million (issue 10). The records
kept are the first ones in body order, up to MAX_KEPT_RECORDS and MAX_KEPT_BYTES; the rest are counted,
in total and by reason, and never cut short.
"""

from __future__ import annotations

import json
import reprlib
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from app.intake import Intake, QuarantinedRecord, Source
from kernel.record_limits import MAX_RECORD_DEPTH, carry_problem

#: Bad records kept per request. A page of the Management API is 100 logs, and Auth0's stream batches
#: are smaller: an ordinary batch's bad records are all kept; only a hostile or broken sender's are cut.
MAX_KEPT_RECORDS = 100
#: Bytes of kept records per request (their JSON). The first bad record is kept whatever its size (at most
#: the body limit), so every request with bad records keeps an example of them.
MAX_KEPT_BYTES = 1024 * 1024
#: Distinct reasons counted by name; reasons quote values (a mismatched log_id), so there can be as many
#: as records. The rest are counted together under OTHER_REASONS.
MAX_REASONS = 20
MAX_REASON_CHARS = 200
OTHER_REASONS = "(other reasons)"

# For a record that JSON cannot encode and whose text the caller does not have (the backfill's pages):
# Python's repr, bounded in depth by the carry limit so that it does not recurse without end.
_REPR = reprlib.Repr()
_REPR.maxlevel = MAX_RECORD_DEPTH
_REPR.maxdict = _REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = 10_000
_REPR.maxstring = MAX_KEPT_BYTES
_REPR.maxlong = _REPR.maxother = 200


class QuarantineReport:
    """Collects one request's bad records, over all its slices, into the message kept in auth0.quarantine.

    The message body is JSON::

        {"request_id": …, "received_at": …, "quarantined": <count>, "reasons": {<reason>: <count>, …},
         "records": [{"index": <position in the body>, "reason": …, "record": <the record>}, …],
         "omitted": <bad records counted but not kept>}

    A record that JSON cannot carry (too deep, NaN, a 5,000-digit integer) is kept as ``record_text``,
    the text it arrived as, or as ``record_repr`` when that text is not known.
    """

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.total = 0
        self.reasons: Counter[str] = Counter()
        self.kept: list[dict[str, Any]] = []
        self._kept_bytes = 0
        self._full = False

    def __bool__(self) -> bool:
        return self.total > 0

    def add(self, intake: Intake) -> None:
        """Count every quarantined record of ``intake`` and keep those that still fit."""
        bad = intake.quarantined
        self.total += len(bad)
        self._count_reasons(bad)
        for record in bad:
            if self._full:
                break
            self._keep(record, intake.source)

    def body(self) -> bytes:
        """The message body (ASCII JSON, so lone surrogates in kept records travel too)."""
        document = {
            "request_id": self.request_id,
            "received_at": datetime.now(UTC).isoformat(),
            "quarantined": self.total,
            "reasons": dict(self.reasons),
            "records": self.kept,
            "omitted": self.total - len(self.kept),
        }
        return json.dumps(document, allow_nan=False).encode("ascii")

    def _count_reasons(self, bad: list[QuarantinedRecord]) -> None:
        tally = Counter(record.reason for record in bad)
        for reason, count in tally.items():
            reason = _short(reason)
            if reason in self.reasons or len(self.reasons) < MAX_REASONS:
                self.reasons[reason] += count
            else:
                self.reasons[OTHER_REASONS] += count

    def _keep(self, bad: QuarantinedRecord, source: Source | None) -> None:
        if len(self.kept) >= MAX_KEPT_RECORDS:
            self._full = True
            return
        entry = {"index": bad.index, "reason": _short(bad.reason), **_as_kept(bad, source)}
        size = len(json.dumps(entry, allow_nan=False))
        if self.kept and self._kept_bytes + size > MAX_KEPT_BYTES:
            self._full = True  # the kept records stay the first ones in body order, none skipped
            return
        self.kept.append(entry)
        self._kept_bytes += size


def _as_kept(bad: QuarantinedRecord, source: Source | None) -> dict[str, Any]:
    """The record as JSON when it can be, else the text it came as, else its bounded repr."""
    if carry_problem(bad.record) is None:
        return {"record": bad.record}
    if source is not None:
        return {"record_text": source(bad.index)}
    return {"record_repr": _REPR.repr(bad.record)}


def _short(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"
