"""The JSON Lines fast path against the path it shortcuts: same records, same sorting, same task bodies.

The receiver reads JSON Lines bodies with msgspec (app.payload.strict_lines), skips the carry walk for
records that cannot nest too deep, and puts each accepted record's own text into its task message
instead of encoding the record again (app.publisher). These properties hold for arbitrary bodies,
valid records and invalid ones mixed, and values chosen to differ between parsers: unicode, escapes,
lone surrogates, duplicate keys, big integers, ``-0.0``, ``1e400``, NaN, numbers in every spelling.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu.serialization import dumps
from kombu.utils.json import loads as kombu_loads

from app.intake import Intake, sort_records
from app.payload import UnreadValue, parse_body, strict_lines
from app.publisher import EventPublisher
from app.receiver import sort_body
from kernel.celery_app import app as celery_app
from kernel.record_limits import MAX_RECORD_DEPTH, NOT_FINITE, TOO_DEEP
from kernel.routing import parse_routes
from kernel.wire import TASK_NAME

ROUTES = parse_routes("s,f,fp,*")
# Never connects: only its serializer is used.
PUBLISHER = EventPublisher(celery_app, "amqp://guest:guest@127.0.0.1:1//", ROUTES.queues, 1.0, "classic")

#: Number spellings that parsers disagree on, or that json reads as values no message can carry.
LITERALS = ("1e400", "-1e400", "1E2", "-0", "-0.0", "0.1e-400", "2.5e-324", "1.7976931348623157e308",
            "18446744073709551616", "-9223372036854775809", "1" * 40, "9" * 4301, "NaN", "-Infinity",
            "1.0", "0e0", "12345678901234567890.5")  # fmt: skip

characters = st.characters(codec=None)  # every code point, lone surrogates included
texts = st.text(characters, max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.0, -0.0, 5e-324, 1.7976931348623157e308])
    | texts
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
log_ids = st.text(characters, min_size=1, max_size=20) | st.from_regex(r"\A9[0-9]{55}\Z")
event_types = st.sampled_from(["s", "f", "fp", "sapi", "brand_new", " ", ""]) | texts


@st.composite
def records(draw: st.DrawFn) -> Any:
    """An Auth0 record, usually valid; sometimes a bare entry, a mismatched log_id or no data."""
    data: dict[str, Any] = {"type": draw(event_types), **draw(st.dictionaries(texts, values, max_size=4))}
    shape = draw(st.sampled_from(["envelope"] * 6 + ["bare", "data_log_id", "no_data", "not_object"]))
    log_id = draw(log_ids)
    if shape == "bare":
        return {**data, "log_id": log_id}
    if shape == "data_log_id":
        return {"data": {**data, "log_id": log_id}}
    if shape == "no_data":
        return {"log_id": log_id, "type_": data["type"]}
    if shape == "not_object":
        return draw(scalars)
    extra = draw(st.dictionaries(texts, values, max_size=3))
    return {"log_id": log_id, "data": data, **extra}


@st.composite
def lines(draw: st.DrawFn) -> str:
    """One record as a line of JSON, spelled one of the ways a sender might spell it."""
    record = draw(records())
    style = draw(st.sampled_from(["python", "compact", "unicode", "nested"]))
    if style == "python":
        line = json.dumps(record)
    elif style == "compact":
        line = json.dumps(record, separators=(",", ":"))
    elif style == "unicode":
        line = json.dumps(record, ensure_ascii=False)
        if any("\ud800" <= char <= "\udfff" for char in line):
            line = json.dumps(record)  # a lone surrogate has no UTF-8: only its escape can travel
    else:
        depth = draw(st.sampled_from([MAX_RECORD_DEPTH - 2, MAX_RECORD_DEPTH, MAX_RECORD_DEPTH + 3]))
        record = (
            {**record, "deep": json.loads("[" * depth + "]" * depth)} if isinstance(record, dict) else record
        )
        line = json.dumps(record)
    if line.startswith("{") and draw(st.booleans()):
        literal = draw(st.sampled_from(LITERALS))
        line = '{"n": ' + literal + ", " + line[1:] if line != "{}" else '{"n": ' + literal + "}"
    if line.startswith('{"log_id"') and draw(st.integers(0, 4)) == 0:
        line = '{"log_id": "shadowed", "data": {"type": "s"}, ' + line[1:]  # duplicate keys: the last wins
    return line


bodies = st.lists(lines(), min_size=1, max_size=6).map(lambda found: "\n".join(found).encode())


def canonical(value: Any) -> str:
    """A text that tells apart what == does not: -0.0 and 0.0, 1 and 1.0, key order."""
    if isinstance(value, UnreadValue):
        return repr(value)
    return json.dumps(value, allow_nan=True)


def old_path(body: bytes) -> Intake:
    """The intake as the receiver sorted a body before the fast path: parse_body, then sort_records."""
    text = body.decode("utf-8").removeprefix("\ufeff")
    return sort_records(parse_body(body), ROUTES, source=lambda index: _old_text(text, index))


def _old_text(text: str, index: int) -> str:
    from app.payload import iter_spans

    for position, (_value, start, end) in enumerate(iter_spans(text)):
        if position == index:
            return text[start:end]
    raise IndexError(index)


def task_bodies(event: Any) -> tuple[bytes, bytes]:
    """The task message body the old path encoded for ``event``, and the one the fast path assembles."""
    kwargs = {"event_type": event.event_type, "log_id": event.log_id, "received_at": "2026-01-01T00:00:00"}
    body = celery_app.amqp.as_task_v2(event.task_id, TASK_NAME, args=(event.record,), kwargs=kwargs)[2]
    _type, _encoding, old = dumps(body, serializer="json")
    _type, _encoding, new = PUBLISHER._serialized(body, event.text)
    as_bytes = [data.encode() if isinstance(data, str) else data for data in (old, new)]
    return as_bytes[0], as_bytes[1]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies)
def test_fast_path_sorts_and_builds_what_the_old_path_did(body: bytes) -> None:
    fast, old = sort_body(body, ROUTES), old_path(body)
    assert fast.summary() == old.summary()
    assert fast.filtered == old.filtered
    assert fast.duplicates == old.duplicates
    assert [(bad.index, bad.reason, canonical(bad.record)) for bad in fast.quarantined] == [
        (bad.index, bad.reason, canonical(bad.record)) for bad in old.quarantined
    ]
    for bad in fast.quarantined:  # kept as the text it came as, when JSON cannot carry it
        assert fast.source is not None
        assert old.source is not None
        assert fast.source(bad.index) == old.source(bad.index)
    assert [(e.log_id, e.event_type, e.queue, e.index, canonical(e.record)) for e in fast.accepted] == [
        (e.log_id, e.event_type, e.queue, e.index, canonical(e.record)) for e in old.accepted
    ]
    for event in fast.accepted:
        old_body, new_body = task_bodies(event)
        # What the worker decodes (kombu's json) is the same document, value for value.
        assert canonical(kombu_loads(new_body)) == canonical(kombu_loads(old_body))
        if event.text is not None and event.text == json.dumps(event.record).encode():
            assert new_body == old_body  # spelled as Python spells it: the same bytes


@settings(max_examples=60, deadline=None)
@given(st.lists(records(), min_size=1, max_size=4))
def test_bodies_spelled_as_python_spells_them_are_byte_for_byte_the_same(found: list[Any]) -> None:
    body = "\n".join(json.dumps(record) for record in found).encode()
    for event in sort_body(body, ROUTES).accepted:
        old_body, new_body = task_bodies(event)
        assert new_body == old_body


def test_the_fast_path_takes_auth0s_json_lines_and_carries_their_text() -> None:
    line = b'{"log_id":"90020","data":{"type":"s","user_name":"J\\u00e9r\\u00f4me",'
    line += b'"n":-0.0,"big":18446744073709551616}}'
    intake = sort_body(line + b"\r\n\n" + line.replace(b"90020", b"90021") + b"\n", ROUTES)
    assert [event.text for event in intake.accepted] == [line, line.replace(b"90020", b"90021")]
    old_body, new_body = task_bodies(intake.accepted[0])
    assert new_body.startswith(b"[[" + line + b"], {")
    assert canonical(kombu_loads(new_body)) == canonical(kombu_loads(old_body))
    record = kombu_loads(new_body)[0][0]
    assert record["data"]["big"] == 18446744073709551616
    assert str(record["data"]["n"]) == "-0.0"


def test_what_msgspec_refuses_goes_the_old_way_and_is_quarantined_as_before() -> None:
    ok = '{"log_id": "1", "data": {"type": "s"}}'
    for literal, reason in (("1e400", NOT_FINITE), ("NaN", NOT_FINITE), ("9" * 4301, None)):
        body = f'{ok}\n{{"log_id": "2", "data": {{"type": "s", "n": {literal}}}}}'.encode()
        assert strict_lines(body) is None
        intake = sort_body(body, ROUTES)
        assert [event.log_id for event in intake.accepted] == ["1"]
        assert [bad.index for bad in intake.quarantined] == [1]
        if reason is not None:
            assert intake.quarantined[0].reason == reason
    lone = '{"log_id": "3", "data": {"type": "s", "name": "\\ud800"}}'
    assert strict_lines(lone.encode()) is None
    assert sort_body(lone.encode(), ROUTES).accepted[0].record["data"]["name"] == "\ud800"


def test_a_record_past_the_depth_limit_is_walked_and_quarantined() -> None:
    deep = "[" * MAX_RECORD_DEPTH + "]" * MAX_RECORD_DEPTH
    body = f'{{"log_id": "1", "data": {{"type": "s", "deep": {deep}}}}}'.encode()
    assert strict_lines(body) is not None
    intake = sort_body(body, ROUTES)
    assert [(bad.reason, bad.index) for bad in intake.quarantined] == [(TOO_DEEP, 0)]


def test_an_entry_that_is_not_its_own_envelope_is_encoded_again() -> None:
    bare = b'{"type": "s", "log_id": "7"}'
    nested = b'{"data": {"type": "s", "log_id": "8"}}'
    intake = sort_body(bare + b"\n" + nested, ROUTES)
    assert [(event.log_id, event.text) for event in intake.accepted] == [("7", None), ("8", None)]
