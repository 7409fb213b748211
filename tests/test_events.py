"""Unit tests for kernel.events: record validation (normalize_record) and the typed Auth0Event."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from kernel.events import Auth0Event, InvalidRecord, normalize_record, parse_event, storable_text

LOG_ID = "90020211103082515482106767167326018758436529088273317970"


def envelope(**data: Any) -> dict[str, Any]:
    """Return a log stream envelope whose data holds ``type: fp`` plus ``data``."""
    fields: dict[str, Any] = {"type": "fp", "log_id": LOG_ID, **data}
    return {"log_id": LOG_ID, "data": fields}


def test_envelope_is_returned_unchanged() -> None:
    """A well-formed log stream envelope comes back equal to the input."""
    record = envelope(description="Wrong email or password.")
    assert normalize_record(record) == record


def test_normalize_does_not_modify_its_input() -> None:
    """normalize_record returns a new dict and leaves the caller's record alone."""
    record = {"data": {"type": "s", "log_id": LOG_ID}}
    result = normalize_record(record)
    assert result == {"log_id": LOG_ID, "data": {"type": "s", "log_id": LOG_ID}}
    assert "log_id" not in record


def test_envelope_extra_fields_are_kept() -> None:
    """Fields next to log_id and data in the envelope survive normalization."""
    record = {**envelope(), "extra": 1}
    assert normalize_record(record)["extra"] == 1


def test_bare_management_api_entry_is_wrapped() -> None:
    """A bare log entry (no data, has type) becomes {log_id, data: entry}."""
    entry = {"type": "s", "log_id": LOG_ID, "date": "2021-11-04T00:15:10.706Z"}
    assert normalize_record(entry) == {"log_id": LOG_ID, "data": entry}


def test_log_id_only_in_data_is_lifted_to_the_envelope() -> None:
    """An envelope without log_id takes data.log_id."""
    assert normalize_record({"data": {"type": "s", "log_id": LOG_ID}})["log_id"] == LOG_ID


def test_log_id_only_in_envelope_is_enough() -> None:
    """data without its own log_id is valid when the envelope has one."""
    record = {"log_id": LOG_ID, "data": {"type": "s"}}
    assert normalize_record(record) == record


@pytest.mark.parametrize(
    ("record", "message"),
    [
        pytest.param({"data": {"type": "s"}}, "record has no 'log_id' string", id="missing-log-id"),
        pytest.param({"type": "s"}, "record has no 'log_id' string", id="bare-missing-log-id"),
        pytest.param({"log_id": "", "data": {"type": "s"}}, "record has no 'log_id' string", id="empty"),
        pytest.param({"log_id": "  ", "data": {"type": "s"}}, "record has no 'log_id' string", id="blank"),
        pytest.param({"log_id": 900, "data": {"type": "s"}}, "record has no 'log_id' string", id="number"),
        pytest.param({"log_id": None, "data": {"type": "s"}}, "record has no 'log_id' string", id="null"),
        pytest.param({"type": "s", "log_id": ""}, "record has no 'log_id' string", id="bare-empty"),
        pytest.param({"log_id": LOG_ID}, "record has no 'data' object", id="missing-data"),
        pytest.param({}, "record has no 'data' object", id="empty-object"),
        pytest.param({"log_id": LOG_ID, "data": None}, "record has no 'data' object", id="data-null"),
        pytest.param(
            {"log_id": LOG_ID, "data": [{"type": "s"}]}, "record has no 'data' object", id="data-list"
        ),
        pytest.param(
            {"log_id": LOG_ID, "data": '{"type":"s"}'}, "record has no 'data' object", id="data-str"
        ),
        pytest.param({"log_id": LOG_ID, "data": {}}, "record has no 'data.type' string", id="missing-type"),
        pytest.param(
            {"log_id": LOG_ID, "data": {"type": ""}}, "record has no 'data.type' string", id="type-empty"
        ),
        pytest.param(
            {"log_id": LOG_ID, "data": {"type": " "}}, "record has no 'data.type' string", id="type-blank"
        ),
        pytest.param(
            {"log_id": LOG_ID, "data": {"type": 1}}, "record has no 'data.type' string", id="type-number"
        ),
        pytest.param(
            {"log_id": LOG_ID, "data": {"type": None}}, "record has no 'data.type' string", id="type-null"
        ),
        pytest.param(
            {"type": "", "log_id": LOG_ID}, "record has no 'data.type' string", id="bare-empty-type"
        ),
    ],
)
def test_invalid_records_are_refused_with_a_reason(record: dict[str, Any], message: str) -> None:
    """A record without a log_id string, a data object or a data.type string raises InvalidRecord."""
    with pytest.raises(InvalidRecord) as caught:
        normalize_record(record)
    assert str(caught.value) == message


def test_log_id_mismatch_is_refused() -> None:
    """An envelope log_id that differs from data.log_id raises InvalidRecord naming both."""
    record = {"log_id": "900aaa", "data": {"type": "s", "log_id": "900bbb"}}
    with pytest.raises(InvalidRecord) as caught:
        normalize_record(record)
    assert str(caught.value) == "'log_id' '900aaa' differs from 'data.log_id' '900bbb'"


def test_data_log_id_of_another_json_type_is_a_mismatch() -> None:
    """data.log_id as a number never equals the envelope's string log_id."""
    with pytest.raises(InvalidRecord, match="differs from 'data.log_id' 900"):
        normalize_record({"log_id": "900", "data": {"type": "s", "log_id": 900}})


@pytest.mark.parametrize(
    ("record", "kind"),
    [
        pytest.param([], "array", id="empty-array"),
        pytest.param([{"log_id": LOG_ID}], "array", id="array"),
        pytest.param("900", "string", id="string"),
        pytest.param("", "string", id="empty-string"),
        pytest.param(42, "number", id="int"),
        pytest.param(4.2, "number", id="float"),
        pytest.param(None, "null", id="null"),
        pytest.param(True, "boolean", id="true"),
        pytest.param(False, "boolean", id="false"),
    ],
)
def test_non_object_record_names_its_json_kind(record: object, kind: str) -> None:
    """A record that is not a JSON object raises InvalidRecord naming what it is instead."""
    with pytest.raises(InvalidRecord) as caught:
        normalize_record(record)
    assert str(caught.value) == f"record is a JSON {kind}, not an object"


def test_invalid_record_is_a_value_error() -> None:
    """InvalidRecord is a ValueError."""
    assert issubclass(InvalidRecord, ValueError)


def test_parse_event_fills_the_common_fields() -> None:
    """parse_event types the common fields of a real failed-login record."""
    record = envelope(
        date="2021-11-03T08:25:14.466Z",
        description="Wrong email or password.",
        client_id="aI61p8I8aFjmYRliLWgvM9ev97kCCNDB",
        client_name="Default App",
        connection="Username-Password-Authentication",
        ip="81.2.69.143",
        user_id="auth0|61823277a44a21007221a59a",
        user_name="new@test.com",
        details={"error": {"message": "Wrong email or password."}},
    )
    event = parse_event(record)
    assert event.log_id == LOG_ID
    assert event.type == "fp"
    assert event.date == datetime(2021, 11, 3, 8, 25, 14, 466000, tzinfo=UTC)
    assert event.description == "Wrong email or password."
    assert event.client_id == "aI61p8I8aFjmYRliLWgvM9ev97kCCNDB"
    assert event.client_name == "Default App"
    assert event.connection == "Username-Password-Authentication"
    assert event.ip == "81.2.69.143"
    assert event.user_id == "auth0|61823277a44a21007221a59a"
    assert event.user_name == "new@test.com"
    assert event.details == {"error": {"message": "Wrong email or password."}}
    assert event.raw == record
    assert event.data is record["data"]


def test_parse_event_accepts_the_bare_form() -> None:
    """parse_event accepts a bare Management API entry and exposes it as data."""
    entry = {"type": "sapi", "log_id": LOG_ID, "description": "Create a log stream"}
    event = parse_event(entry)
    assert (event.log_id, event.type, event.description) == (LOG_ID, "sapi", "Create a log stream")
    assert event.data == entry
    assert event.raw == {"log_id": LOG_ID, "data": entry}


def test_parse_event_refuses_invalid_records() -> None:
    """parse_event raises InvalidRecord for a record normalize_record refuses."""
    with pytest.raises(InvalidRecord, match="no 'data.type'"):
        parse_event({"log_id": LOG_ID, "data": {}})


def test_missing_optional_fields_default_to_empty() -> None:
    """Fields a record lacks become "", (), {} or None, never errors."""
    event = parse_event({"log_id": LOG_ID, "data": {"type": "s"}})
    assert event.date is None
    assert (event.description, event.client_id, event.client_name, event.connection) == ("", "", "", "")
    assert (event.ip, event.user_id, event.user_name) == ("", "", "")
    assert event.scopes == ()
    assert event.details == {}


def test_non_string_text_fields_become_empty() -> None:
    """A text field holding a non-string (null, number, object) becomes ""."""
    event = parse_event(envelope(user_id=None, ip=12345, client_name={"x": 1}, description=["a"]))
    assert (event.user_id, event.ip, event.client_name, event.description) == ("", "", "", "")


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        pytest.param("openid profile email", ("openid", "profile", "email"), id="string"),
        pytest.param("  openid   profile\t", ("openid", "profile"), id="string-extra-whitespace"),
        pytest.param("", (), id="empty-string"),
        pytest.param(["openid", "profile"], ("openid", "profile"), id="array"),
        pytest.param(["openid", 3, None, "email"], ("openid", "email"), id="array-non-strings-dropped"),
        pytest.param([], (), id="empty-array"),
        pytest.param(None, (), id="null"),
        pytest.param(7, (), id="number"),
        pytest.param({"openid": True}, (), id="object"),
    ],
)
def test_scope_as_string_or_array(scope: object, expected: tuple[str, ...]) -> None:
    """scope may be a space-separated string or an array of strings; anything else gives no scopes."""
    assert parse_event(envelope(scope=scope)).scopes == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(
            "2021-11-03T08:25:14.466Z", datetime(2021, 11, 3, 8, 25, 14, 466000, tzinfo=UTC), id="z"
        ),
        pytest.param("2021-11-03T08:25:14+00:00", datetime(2021, 11, 3, 8, 25, 14, tzinfo=UTC), id="offset"),
        pytest.param("2021-11-03T08:25:14Z", datetime(2021, 11, 3, 8, 25, 14, tzinfo=UTC), id="no-fraction"),
    ],
)
def test_iso_dates_are_parsed(value: str, expected: datetime) -> None:
    """An ISO-8601 date with Z or an offset becomes an aware datetime."""
    assert parse_event(envelope(date=value)).date == expected


@pytest.mark.parametrize(
    "value",
    ["yesterday", "", "2021-13-45T99:00:00Z", "03/11/2021", 1635927914, None, ["2021-11-03"]],
    ids=["word", "empty", "out-of-range", "us-format", "epoch-number", "null", "array"],
)
def test_bad_date_becomes_none_and_raw_keeps_it(value: object) -> None:
    """An unparsable date gives date=None without invalidating the record; raw keeps the original."""
    event = parse_event(envelope(date=value))
    assert event.date is None
    assert event.raw["data"]["date"] == value
    assert event.data["date"] == value


@pytest.mark.parametrize("details", [None, "text", ["a", "b"], 5, True])
def test_non_object_details_become_empty(details: object) -> None:
    """details that is not an object becomes {} (raw still holds it)."""
    event = parse_event(envelope(details=details))
    assert event.details == {}
    assert event.data["details"] == details


def test_event_type_for_a_known_code() -> None:
    """event_type looks the code up in the catalogue."""
    event = parse_event(envelope())
    assert event.event_type.code == "fp"
    assert event.event_type.name == "Failed Login (Incorrect Password)"
    assert event.event_type.category == "auth.login.fail"


def test_unknown_code_parses_and_gets_a_placeholder_type() -> None:
    """A code missing from the catalogue is a valid event with a placeholder catalogue entry."""
    event = parse_event({"log_id": LOG_ID, "data": {"type": "brand_new_code_2031", "log_id": LOG_ID}})
    assert event.type == "brand_new_code_2031"
    assert event.event_type.code == "brand_new_code_2031"
    assert event.event_type.name == "Unknown event type"
    assert event.event_type.category is None


def test_event_is_immutable() -> None:
    """Auth0Event is frozen: handlers cannot change the event for each other."""
    event = parse_event(envelope())
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.user_id = "someone-else"  # type: ignore[misc]


def test_repr_leaves_out_raw_and_details() -> None:
    """The repr omits raw and details, so logging an event does not dump the whole record."""
    event = parse_event(envelope(details={"secret": "do-not-log"}))
    assert "do-not-log" not in repr(event)
    assert isinstance(event, Auth0Event)


# --- text and numbers no database stores ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        pytest.param("eve\x00@example.com", "eve\ufffd@example.com", id="nul"),
        pytest.param("eve\ud800", "eve\ufffd", id="lone-high-surrogate"),
        pytest.param("\udfffeve", "\ufffdeve", id="lone-low-surrogate"),
        pytest.param("\ud83d\ude00", "\U0001f600", id="split-pair-joined"),
        pytest.param("ascii only", "ascii only", id="unchanged"),
        pytest.param("Zoë 日本", "Zoë 日本", id="unicode-unchanged"),
    ],
)
def test_text_no_database_stores_is_replaced_everywhere(sent: str, kept: str) -> None:
    """NUL and lone surrogates become U+FFFD in the typed fields and in raw, keys included."""
    record = envelope(user_name=sent, details={sent: [sent, {"deep": sent}]}, scope=["openid", sent])
    event = parse_event(record)
    assert event.user_name == kept
    assert event.data["user_name"] == kept
    assert event.details == {kept: [kept, {"deep": kept}]}
    assert event.scopes[-1] == kept
    assert record["data"]["user_name"] == sent  # the caller's record is left alone


def test_storable_text_is_encodable_for_every_database() -> None:
    """storable_text's result always encodes as UTF-8 and holds no NUL."""
    for value in ["\x00", "\ud800\x00\udc00", "a\udcff", "\ud800\ud800\udc00"]:
        kept = storable_text(value)
        assert "\x00" not in kept
        kept.encode("utf-8")


def test_a_deep_record_is_cleaned_without_recursion() -> None:
    """Cleaning walks the record iteratively: a nesting deeper than Python's recursion limit is no crash."""
    deep: Any = "\x00"
    for _ in range(5000):
        deep = [deep]
    event = parse_event(envelope(details={"deep": deep}))
    inner = event.details["deep"]
    for _ in range(5000):
        inner = inner[0]
    assert inner == "\ufffd"


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_a_number_json_cannot_carry_makes_the_record_invalid(number: float) -> None:
    """NaN and Infinity (what 1e999 parses to) are no JSON: InvalidRecord, dead-lettered at once."""
    with pytest.raises(InvalidRecord, match="a number JSON cannot carry"):
        parse_event(envelope(details={"score": [1, {"x": number}]}))


@pytest.mark.parametrize(
    ("log_id", "message"),
    [
        pytest.param("9" * 129, "'log_id' is longer than 128 characters", id="too-long"),
        pytest.param("900\x0012", "'log_id' holds a character no database stores", id="nul"),
        pytest.param("900\ud80012", "'log_id' holds a character no database stores", id="lone-surrogate"),
    ],
)
def test_a_log_id_the_ledger_cannot_key_on_is_invalid(log_id: str, message: str) -> None:
    """The log_id is the ledger's key: it is refused rather than cut or changed into another event's."""
    with pytest.raises(InvalidRecord, match=message):
        normalize_record({"log_id": log_id, "data": {"type": "s"}})


def test_a_log_id_of_128_characters_is_valid() -> None:
    """128 characters, the column's length, is the longest accepted."""
    assert normalize_record({"log_id": "9" * 128, "data": {"type": "s"}})["log_id"] == "9" * 128


@pytest.mark.parametrize("value", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_date_outside_the_utc_range_becomes_none(value: str) -> None:
    """A date in year 10000 or 0 once in UTC is unparsable: date None, raw keeps it."""
    event = parse_event(envelope(date=value))
    assert event.date is None
    assert event.data["date"] == value
