"""The event archive on SQLite and PostgreSQL: search filters, pagination, GET /events and the CLI."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import delete

from cli import main
from kernel.events import parse_event
from kernel.storage.archive import (
    MAX_LIMIT,
    EventFilters,
    InvalidQuery,
    Page,
    encode_cursor,
    event_to_dict,
    get_event,
    parse_time,
    parse_types,
    search_events,
)
from kernel.storage.db import session_scope, transaction
from kernel.storage.models import Event
from tasks.ledger import record_attempt, record_outcome
from tests.helpers import TEST_TOKEN, make_record, private_postgres_database

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
API_TOKEN = "api-secret-3f7a9c1e5b2d8064f0a7c9e1"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
# No server listens on port 1: connecting is refused at once.
UNREACHABLE_URL = "postgresql://postgres@127.0.0.1:1/auth0_events"


@dataclass(frozen=True)
class Stored:
    """One event of the test archive, as stored."""

    name: str
    type: str
    user_id: str
    user_name: str
    ip: str
    date: str | None
    state: str
    attempts: int = 1


# In storage order (so ids rise down the list). Dates tie (b, c, d at D2; a, h at D1) and two events
# have no usable date (f none, g malformed), so the order relies on the id tie-break and NULLs last.
D1, D2, D3 = "2026-11-20T08:00:00.000Z", "2026-11-21T09:30:00.000Z", "2026-11-22T10:00:00.000Z"
DATASET = (
    Stored("a", "s", "auth0|alice", "alice@example.com", "198.51.100.1", D1, "processed"),
    Stored("b", "f", "auth0|bob", "bob@example.com", "203.0.113.7", D2, "processed"),
    Stored("c", "fp", "auth0|alice", "alice@example.com", "203.0.113.7", D2, "dead_lettered", 3),
    Stored("d", "f", "auth0|carol", "carol@example.com", "192.0.2.10", D2, "retrying", 2),
    Stored("e", "ss", "auth0|dave", "dave@example.com", "198.51.100.1", D3, "processed"),
    Stored("f", "fp", "", "", "203.0.113.7", None, "dead_lettered"),
    Stored("g", "f", "auth0|bob", "bob@example.com", "192.0.2.10", "not a date", "processing"),
    Stored("h", "s", "auth0|erin", "erin@example.com", "198.51.100.1", D1, "processed"),
)
BY_NAME = {stored.name: stored for stored in DATASET}
# Newest first: e (D3), the D2 ties by id desc, the D1 ties by id desc, then the undated by id desc.
NEWEST_FIRST = ["e", "d", "c", "b", "h", "a", "g", "f"]


def store(database_url: str, stored: Stored, log_id: str | None = None) -> str:
    """Record ``stored`` the way a worker does: one record_attempt per attempt, then its outcome."""
    record = make_record(
        stored.type,
        log_id,
        user_id=stored.user_id,
        user_name=stored.user_name,
        ip=stored.ip,
        date=stored.date,
        description=f"test event {stored.name}",
    )
    event = parse_event(record)
    for attempt in range(stored.attempts):
        with transaction(database_url) as connection:
            record_attempt(connection, event, NOW, NOW + timedelta(seconds=attempt))
    if stored.state != "processing":
        error = None if stored.state == "processed" else f"error of {stored.name}"
        with transaction(database_url) as connection:
            record_outcome(connection, event.log_id, stored.state, NOW, error=error)
    return event.log_id


@pytest.fixture(scope="module")
def archive_postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A PostgreSQL database of this module's own: its fixture empties the events table for each test."""
    with private_postgres_database(postgres_admin_url) as url:
        yield url


@pytest.fixture
def postgres_database(archive_postgres_url: str) -> str:
    """database_url's PostgreSQL database is this module's own."""
    return archive_postgres_url


@pytest.fixture
def archive(database_url: str) -> dict[str, str]:
    """An archive holding DATASET only; returns each event's log_id by name.

    The run's PostgreSQL database is shared by every test, so events other tests stored are removed first.
    """
    with session_scope(database_url) as session:
        session.execute(delete(Event))
    return {stored.name: store(database_url, stored) for stored in DATASET}


def names(archive: dict[str, str], log_ids: list[str]) -> list[str]:
    """Map log_ids back to the DATASET names, keeping the order."""
    by_log_id = {log_id: name for name, log_id in archive.items()}
    return [by_log_id[log_id] for log_id in log_ids]


def search(database_url: str, archive: dict[str, str], **filters: Any) -> list[str]:
    """Search one page with ``filters`` and return the names of the events found, in order."""
    return names(archive, [event["log_id"] for event in page_of(database_url, **filters)[0]])


def page_of(database_url: str, **filters: Any) -> tuple[list[dict[str, Any]], str | None]:
    """Search one page and return its events as dicts and its next cursor."""
    with session_scope(database_url) as session:
        page: Page = search_events(session, EventFilters(**filters))
        return [event_to_dict(event) for event in page.events], page.next_cursor


def walk(database_url: str, limit: int, **filters: Any) -> tuple[list[str], int]:
    """Follow the cursors from the first page to the last; return every log_id seen and the page count."""
    seen: list[str] = []
    cursor, pages = None, 0
    while True:
        events, cursor = page_of(database_url, limit=limit, after=cursor, **filters)
        seen += [event["log_id"] for event in events]
        pages += 1
        assert len(events) <= limit
        if cursor is None:
            return seen, pages
        assert len(events) == limit, "only the last page may be short"


def walk_from(database_url: str, cursor: str | None, limit: int) -> tuple[list[str], int]:
    """Follow the cursors from ``cursor`` to the last page."""
    seen: list[str] = []
    pages = 0
    while cursor is not None:
        events, cursor = page_of(database_url, limit=limit, after=cursor)
        seen += [event["log_id"] for event in events]
        pages += 1
    return seen, pages


def expected(predicate: Callable[[Stored], bool]) -> list[str]:
    """The names matching ``predicate``, newest first."""
    return [name for name in NEWEST_FIRST if predicate(BY_NAME[name])]


# --- search_events -------------------------------------------------------------------------------------


def test_without_filters_every_event_comes_newest_first_undated_last(
    database_url: str, archive: dict[str, str]
) -> None:
    """No filter lists everything by date desc, ties by newest stored, events without a date last."""
    assert search(database_url, archive) == NEWEST_FIRST


@pytest.mark.parametrize(
    ("types", "wanted"),
    [
        pytest.param(("f",), {"f"}, id="one"),
        pytest.param(("f", "fp"), {"f", "fp"}, id="several"),
        pytest.param(("sapi",), set(), id="none-stored"),
    ],
)
def test_type_filter_matches_any_of_the_codes(
    database_url: str, archive: dict[str, str], types: tuple[str, ...], wanted: set[str]
) -> None:
    """A type filter keeps the events whose code is any of the given ones."""
    assert search(database_url, archive, types=types) == expected(lambda s: s.type in wanted)


@pytest.mark.parametrize("user", ["auth0|alice", "alice@example.com"], ids=["user_id", "user_name"])
def test_user_filter_matches_user_id_or_user_name(
    database_url: str, archive: dict[str, str], user: str
) -> None:
    """The user filter matches the user_id or the user_name."""
    assert search(database_url, archive, user=user) == ["c", "a"]


@pytest.mark.parametrize("user", ["alice", "auth0|ali", "ALICE@example.com", "auth0|alice "])
def test_user_filter_is_exact(database_url: str, archive: dict[str, str], user: str) -> None:
    """The user filter matches exactly: no prefixes, substrings, other case or padding."""
    assert search(database_url, archive, user=user) == []


def test_ip_filter(database_url: str, archive: dict[str, str]) -> None:
    """The ip filter keeps the events from that address, dated or not."""
    assert search(database_url, archive, ip="203.0.113.7") == ["c", "b", "f"]


@pytest.mark.parametrize("state", ["processed", "dead_lettered", "retrying", "processing"])
def test_state_filter(database_url: str, archive: dict[str, str], state: str) -> None:
    """The state filter keeps the events whose processing stands there."""
    assert search(database_url, archive, state=state) == expected(lambda s: s.state == state)


@pytest.mark.parametrize(
    ("since", "until", "wanted"),
    [
        pytest.param(D2, None, ["e", "d", "c", "b"], id="since-is-inclusive"),
        pytest.param(None, D2, ["h", "a"], id="until-is-exclusive"),
        pytest.param(D1, D3, ["d", "c", "b", "h", "a"], id="window"),
        pytest.param("2026-11-21", "2026-11-22", ["d", "c", "b"], id="dates-are-midnight-utc"),
        pytest.param("2026-11-21T10:30:00+01:00", None, ["e", "d", "c", "b"], id="offset-is-honoured"),
        pytest.param("2026-11-21T09:30:00.001Z", None, ["e"], id="millisecond-precision"),
    ],
)
def test_date_window_excludes_undated_events(
    database_url: str, archive: dict[str, str], since: str | None, until: str | None, wanted: list[str]
) -> None:
    """since is inclusive, until exclusive, both compare in UTC, and undated events match neither."""
    window = {
        "since": parse_time(since, "since") if since else None,
        "until": parse_time(until, "until") if until else None,
    }
    assert search(database_url, archive, **window) == wanted


def test_filters_combine(database_url: str, archive: dict[str, str]) -> None:
    """Several filters must all match."""
    found = search(
        database_url,
        archive,
        types=("f", "fp"),
        ip="203.0.113.7",
        since=parse_time("2026-11-21", "since"),
        state="processed",
    )
    assert found == ["b"]


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 7, 8, 9, MAX_LIMIT])
def test_pagination_returns_every_event_once(database_url: str, archive: dict[str, str], limit: int) -> None:
    """Following the cursors visits every event once, in order, across date ties and undated events."""
    seen, pages = walk(database_url, limit)
    assert names(archive, seen) == NEWEST_FIRST
    assert pages == max(1, -(-len(DATASET) // limit))


def test_pagination_with_filters(database_url: str, archive: dict[str, str]) -> None:
    """Cursors page through a filtered result without leaving the filter."""
    seen, pages = walk(database_url, 1, types=("f", "fp"))
    assert names(archive, seen) == expected(lambda s: s.type in {"f", "fp"})
    assert pages == 5


def test_events_stored_while_paging_do_not_shift_pages(database_url: str, archive: dict[str, str]) -> None:
    """Events stored between two pages neither make an older event repeat nor be skipped."""
    first, cursor = page_of(database_url, limit=3)
    newest = Stored(
        "new", "s", "auth0|zed", "zed@example.com", "192.0.2.99", "2026-12-01T00:00:00Z", "processed"
    )
    tie = Stored("tie", "s", "auth0|zed", "zed@example.com", "192.0.2.99", D2, "processed")
    undated = Stored("undated", "s", "auth0|zed", "zed@example.com", "192.0.2.99", None, "processed")
    for stored in (newest, tie, undated):
        store(database_url, stored)
    rest, _pages = walk_from(database_url, cursor, limit=3)
    seen = [event["log_id"] for event in first] + rest
    assert len(seen) == len(set(seen))
    assert [log_id for log_id in seen if log_id in archive.values()] == [archive[n] for n in NEWEST_FIRST]


def test_exactly_full_last_page_has_no_next(database_url: str, archive: dict[str, str]) -> None:
    """A page that ends with the last match has no next cursor, even when it is full."""
    events, cursor = page_of(database_url, limit=len(DATASET))
    assert len(events) == len(DATASET)
    assert cursor is None


def test_default_limit_is_50(database_url: str) -> None:
    """Without a limit a page holds 50 events, and the next one the rest."""
    with session_scope(database_url) as session:
        session.execute(delete(Event))
    for n in range(51):
        store(database_url, Stored(f"n{n}", "s", "auth0|x", "x", "192.0.2.1", D1, "processed"))
    events, cursor = page_of(database_url)
    assert len(events) == 50
    assert cursor is not None
    assert len(page_of(database_url, after=cursor)[0]) == 1


@pytest.mark.parametrize("limit", [0, -1, MAX_LIMIT + 1])
def test_limit_out_of_range_is_refused(limit: int) -> None:
    """A limit below 1 or above 1000 raises InvalidQuery naming limit."""
    with pytest.raises(InvalidQuery, match="limit: must be between 1 and 1000") as caught:
        EventFilters(limit=limit)
    assert caught.value.parameter == "limit"


def b64(text: str | bytes) -> str:
    """Encode ``text`` as a cursor is encoded, without padding."""
    data = text.encode() if isinstance(text, str) else text
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "==",
        b64("not json"),
        b64(b"\xff\xfe"),
        b64("[1, 2, 3]"),
        b64('{"a": 1}'),
        b64('["not a date", 1]'),
        b64("[null, true]"),
        b64('[null, "1"]'),
        b64("[12, 1]"),
    ],
    ids=[
        "not-base64",
        "padding",
        "not-json",
        "not-utf8",
        "three-items",
        "object",
        "bad-date",
        "bool-id",
        "string-id",
        "number-date",
    ],
)
def test_bad_cursor_is_refused(cursor: str) -> None:
    """A cursor no page issued raises InvalidQuery naming after, whatever is wrong with it."""
    with pytest.raises(InvalidQuery, match="after: is not a cursor") as caught:
        EventFilters(after=cursor)
    assert caught.value.parameter == "after"


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01", "20/11/2026", "", "2026-11-20T25:00Z"])
def test_bad_time_is_refused(value: str) -> None:
    """A value that is not an ISO 8601 date or time raises InvalidQuery naming the parameter."""
    with pytest.raises(InvalidQuery, match="since: .* is not an ISO 8601 date or time") as caught:
        parse_time(value, "since")
    assert caught.value.parameter == "since"


def test_naive_time_is_utc() -> None:
    """A time without an offset is read as UTC."""
    assert parse_time("2026-11-20T08:00", "since") == datetime(2026, 11, 20, 8, tzinfo=UTC)


def test_empty_window_is_refused() -> None:
    """since at or after until raises InvalidQuery naming until."""
    with pytest.raises(InvalidQuery, match="until: must be later than since"):
        EventFilters(since=parse_time(D2, "since"), until=parse_time(D1, "until"))


def test_unknown_state_is_refused() -> None:
    """A state the workers never write raises InvalidQuery listing the states."""
    with pytest.raises(InvalidQuery, match="state: must be one of .*dead_lettered"):
        EventFilters(state="dead-lettered")


def test_types_split_on_commas_and_repeats() -> None:
    """Event codes come repeated, comma-separated or both; blanks are dropped."""
    assert parse_types(["f,fp", " s ", "", "ss,"]) == ("f", "fp", "s", "ss")


def test_cursor_of_undated_event_round_trips(database_url: str, archive: dict[str, str]) -> None:
    """The cursor of an undated event continues with the older undated events only."""
    with session_scope(database_url) as session:
        undated = get_event(session, archive["g"])
        assert undated is not None
        page = search_events(session, EventFilters(after=encode_cursor(undated)))
        assert names(archive, [event.log_id for event in page.events]) == ["f"]


# --- get_event and the serializer ----------------------------------------------------------------------


def test_get_event_returns_the_record_or_none(database_url: str, archive: dict[str, str]) -> None:
    """get_event finds an event by log_id, and returns None for an unknown one."""
    with session_scope(database_url) as session:
        event = get_event(session, archive["c"])
        assert event is not None
        assert (event.type, event.user_id, event.state, event.attempts) == (
            "fp",
            "auth0|alice",
            "dead_lettered",
            3,
        )
        assert get_event(session, "no-such-log-id") is None


def test_serializer_is_json_safe_with_iso_dates(database_url: str, archive: dict[str, str]) -> None:
    """Dates are ISO 8601 UTC strings with Z, a missing date is null, raw is left out unless asked."""
    with session_scope(database_url) as session:
        dated, undated = get_event(session, archive["c"]), get_event(session, archive["f"])
        assert dated is not None
        assert undated is not None
        result = event_to_dict(dated)
        assert json.loads(json.dumps(result)) == result
        assert result == {
            "log_id": archive["c"],
            "type": "fp",
            "date": "2026-11-21T09:30:00Z",
            "user_id": "auth0|alice",
            "user_name": "alice@example.com",
            "client_id": "aI61p8I8aFjmYRliLWgvM9ev97kCCNDB",
            "ip": "203.0.113.7",
            "state": "dead_lettered",
            "attempts": 3,
            "last_error": "error of c",
            "received_at": "2026-11-26T12:00:00Z",
            "updated_at": "2026-11-26T12:00:00Z",
        }
        assert event_to_dict(undated)["date"] is None
        with_raw = event_to_dict(dated, include_raw=True)
        assert with_raw["raw"]["data"]["description"] == "test event c"
        assert json.loads(json.dumps(with_raw)) == with_raw


# --- GET /events ---------------------------------------------------------------------------------------


@pytest.fixture
def api(make_app: Any, database_url: str, archive: dict[str, str]) -> Any:
    """A test client of a receiver serving the test archive with API token api-secret."""
    return make_app(database_url=database_url, api_tokens=API_TOKEN).test_client()


def api_names(archive: dict[str, str], response: Any) -> list[str]:
    """The DATASET names of the events in a GET /events answer."""
    assert response.status_code == 200, response.json
    return names(archive, [event["log_id"] for event in response.json["events"]])


@pytest.mark.parametrize("path", ["/events", "/events/123"])
def test_api_without_configured_token_is_403(make_app: Any, path: str) -> None:
    """With no AUTH0_EVENTS_API_TOKENS the API answers 403 naming the variable, whatever is sent."""
    client = make_app().test_client()
    for headers in ({}, AUTH, {"Authorization": TEST_TOKEN}):
        response = client.get(path, headers=headers)
        assert response.status_code == 403
        assert response.json["error"] == "api_disabled"
        assert "AUTH0_EVENTS_API_TOKENS" in response.json["message"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "wrong"}, {"Authorization": f"Bearer {TEST_TOKEN}"}, {"Authorization": "Bearer "}],
    ids=["missing", "wrong", "log-stream-token", "empty-bearer"],
)
@pytest.mark.parametrize("path", ["/events", "/events/123"])
def test_api_with_wrong_token_is_401(make_app: Any, headers: dict[str, str], path: str) -> None:
    """A missing or wrong token, the log stream's included, is answered 401 JSON."""
    client = make_app(api_tokens=f"{API_TOKEN},other-api-token-5c8e1b7d2a9f4036").test_client()
    response = client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.json["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header", [API_TOKEN, f"Bearer {API_TOKEN}", "Bearer other-api-token-5c8e1b7d2a9f4036"]
)
def test_api_accepts_each_token_verbatim_or_bearer(
    make_app: Any, database_url: str, archive: dict[str, str], header: str
) -> None:
    """Any configured API token is accepted, verbatim or as Bearer <token>."""
    client = make_app(
        database_url=database_url, api_tokens=f"{API_TOKEN},other-api-token-5c8e1b7d2a9f4036"
    ).test_client()
    assert api_names(archive, client.get("/events", headers={"Authorization": header})) == NEWEST_FIRST


def test_api_lists_events_newest_first_without_raw(api: Any, archive: dict[str, str]) -> None:
    """GET /events lists the archive newest first, without raw records, and no next page."""
    response = api.get("/events", headers=AUTH)
    assert api_names(archive, response) == NEWEST_FIRST
    assert response.json["next"] is None
    assert all("raw" not in event for event in response.json["events"])


@pytest.mark.parametrize(
    ("query", "wanted"),
    [
        pytest.param("type=f&type=fp", expected(lambda s: s.type in {"f", "fp"}), id="type-repeated"),
        pytest.param("type=f,fp", expected(lambda s: s.type in {"f", "fp"}), id="type-comma-separated"),
        pytest.param("user=bob@example.com", ["b", "g"], id="user"),
        pytest.param("ip=198.51.100.1", ["e", "h", "a"], id="ip"),
        pytest.param("since=2026-11-21T00:00Z&until=2026-11-22", ["d", "c", "b"], id="window"),
        pytest.param("state=dead_lettered", ["c", "f"], id="state"),
        pytest.param("type=f&state=processed&user=", ["b"], id="combined-blank-ignored"),
    ],
)
def test_api_filters(api: Any, archive: dict[str, str], query: str, wanted: list[str]) -> None:
    """Each filter is a query parameter; type is repeatable or comma-separated; a blank one is ignored."""
    assert api_names(archive, api.get(f"/events?{query}", headers=AUTH)) == wanted


def test_api_next_url_pages_through_with_the_same_filters(api: Any, archive: dict[str, str]) -> None:
    """Following "next" keeps the filters and visits each match once; the last page's next is null."""
    url: str | None = "/events?type=f&type=fp&limit=2&include_raw=true"
    seen: list[str] = []
    while url is not None:
        response = api.get(url, headers=AUTH)
        seen += api_names(archive, response)
        assert all("raw" in event for event in response.json["events"])
        url = response.json["next"]
        if url is not None:
            query = parse_qs(urlsplit(url).query)
            assert urlsplit(url).path == "/events"
            assert (query["type"], query["limit"], query["include_raw"]) == (["f", "fp"], ["2"], ["true"])
    assert seen == expected(lambda s: s.type in {"f", "fp"})


@pytest.mark.parametrize("flag", ["1", "true", "yes", "on", "True"])
def test_api_include_raw(api: Any, archive: dict[str, str], flag: str) -> None:
    """include_raw adds each event's record as Auth0 sent it."""
    response = api.get(f"/events?ip=192.0.2.10&include_raw={flag}", headers=AUTH)
    assert [event["raw"]["data"]["description"] for event in response.json["events"]] == [
        "test event d",
        "test event g",
    ]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("since=yesterday", "since"),
        ("until=2026-11-32", "until"),
        ("since=2026-11-22&until=2026-11-21", "until"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("after=not-a-cursor", "after"),
        ("state=done", "state"),
        ("include_raw=maybe", "include_raw"),
        ("types=f", "types"),
    ],
)
def test_api_bad_parameter_is_400_naming_it(api: Any, query: str, parameter: str) -> None:
    """A malformed or unknown query parameter is answered 400 JSON naming it."""
    response = api.get(f"/events?{query}", headers=AUTH)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_parameter"
    assert response.json["parameter"] == parameter
    assert parameter in response.json["message"]


def test_api_get_event_with_raw(api: Any, archive: dict[str, str]) -> None:
    """GET /events/<log_id> answers the whole archived record, raw included."""
    response = api.get(f"/events/{archive['c']}", headers=AUTH)
    assert response.status_code == 200
    assert response.json["log_id"] == archive["c"]
    assert response.json["attempts"] == 3
    assert response.json["raw"]["data"]["user_id"] == "auth0|alice"


def test_api_unknown_event_is_404_json(api: Any) -> None:
    """An unknown log_id is answered 404 JSON naming it."""
    response = api.get("/events/90020261126000000000000000000000000000000000000000000000", headers=AUTH)
    assert response.status_code == 404
    assert response.json["error"] == "not_found"
    assert response.json["log_id"] == "90020261126000000000000000000000000000000000000000000000"


def test_api_unreachable_database_is_503_json(make_app: Any) -> None:
    """When the database cannot be reached the API answers 503 JSON without its URL or a traceback."""
    client = make_app(database_url=UNREACHABLE_URL, api_tokens=API_TOKEN).test_client()
    response = client.get("/events", headers=AUTH)
    assert response.status_code == 503
    assert response.json == {
        "error": "database_unavailable",
        "message": "the event archive's database cannot be queried now",
    }


# --- auth0-events events -------------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run ``auth0-events events …`` in-process."""
    return CliRunner().invoke(main, ["events", *args], env=env)


def assert_clean_error(result: Result, exit_code: int, message: str) -> None:
    """The command failed with ``exit_code`` and ``message`` on stderr, without a traceback."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit)
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_cli_search_prints_a_table(database_url: str, archive: dict[str, str]) -> None:
    """search prints a header and one aligned row per event, newest first."""
    result = run_cli("search", "--database-url", database_url)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["date", "type", "log_id", "user", "ip", "state", "attempts"]
    assert [line.split()[2] for line in lines[1:]] == [archive[n] for n in NEWEST_FIRST]
    assert lines[3].split() == [
        "2026-11-21T09:30:00Z", "fp", archive["c"], "alice@example.com", "203.0.113.7", "dead_lettered", "3"
    ]  # fmt: skip
    assert lines[-1].split()[0] == "-"  # an undated event
    log_id_columns = {line.index(archive[name]) for line, name in zip(lines[1:], NEWEST_FIRST, strict=True)}
    assert log_id_columns == {lines[0].index("log_id")}


def test_cli_search_filters_and_json_lines(database_url: str, archive: dict[str, str]) -> None:
    """--json prints one event per line; the filters work as in the API."""
    result = run_cli(
        "search", "--database-url", database_url, "--type", "f", "--type", "fp", "--ip", "203.0.113.7",
        "--since", "2026-11-21", "--until", "2026-11-22T00:00Z", "--state", "processed", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["log_id"] for row in rows] == [archive["b"]]
    assert "raw" not in rows[0]
    result = run_cli(
        "search", "--database-url", database_url, "--user", "auth0|alice", "--json", "--include-raw"
    )
    assert [json.loads(line)["raw"]["log_id"] for line in result.stdout.splitlines()] == [
        archive["c"],
        archive["a"],
    ]


def test_cli_search_pages_with_after(database_url: str, archive: dict[str, str]) -> None:
    """With more events than --limit, stderr gives the --after cursor that continues the list."""
    seen: list[str] = []
    after: list[str] = []
    for _ in range(len(DATASET)):
        result = run_cli("search", "--database-url", database_url, "--limit", "3", "--json", *after)
        assert result.exit_code == 0, result.output
        seen += [json.loads(line)["log_id"] for line in result.stdout.splitlines()]
        if "--after" not in result.stderr:
            break
        after = ["--after", result.stderr.split("--after", 1)[1].split()[0]]
    assert names(archive, seen) == NEWEST_FIRST


def test_cli_reads_database_url_from_the_environment(database_url: str, archive: dict[str, str]) -> None:
    """Without --database-url the commands use DATABASE_URL."""
    result = run_cli("search", "--json", "--limit", "1", env={"DATABASE_URL": database_url})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["log_id"] == archive["e"]


def test_cli_search_with_no_match(database_url: str, archive: dict[str, str]) -> None:
    """A search that matches nothing says so on stderr and succeeds."""
    result = run_cli("search", "--database-url", database_url, "--ip", "10.9.9.9")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "no events match" in result.stderr


def test_cli_show_prints_the_whole_record(database_url: str, archive: dict[str, str]) -> None:
    """show prints every field and the raw record; --json prints it as one JSON object."""
    result = run_cli("show", archive["c"], "--database-url", database_url)
    assert result.exit_code == 0, result.output
    assert "last_error   error of c" in result.stdout
    assert '"description": "test event c"' in result.stdout
    result = run_cli("show", archive["c"], "--database-url", database_url, "--json")
    record = json.loads(result.stdout)
    assert (record["state"], record["attempts"], record["raw"]["log_id"]) == (
        "dead_lettered",
        3,
        archive["c"],
    )


def test_cli_show_unknown_log_id_fails_cleanly(database_url: str, archive: dict[str, str]) -> None:
    """show of an unknown log_id exits 1 with a message naming it."""
    result = run_cli("show", "no-such-log-id", "--database-url", database_url)
    assert_clean_error(result, 1, "no archived event has log_id 'no-such-log-id'")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "Invalid value for '--since'"),
        (["--since", "2026-11-22", "--until", "2026-11-21"], "Invalid value for '--until'"),
        (["--after", "not-a-cursor"], "Invalid value for '--after'"),
        (["--limit", "1001"], "Invalid value for '--limit'"),
        (["--state", "done"], "Invalid value for '--state'"),
    ],
)
def test_cli_search_bad_option_fails_cleanly(args: list[str], message: str) -> None:
    """A malformed option exits 2 naming the option, before touching the database."""
    result = run_cli("search", "--database-url", UNREACHABLE_URL, *args)
    assert_clean_error(result, 2, message)


@pytest.mark.parametrize("command", [["search"], ["show", "123"]])
def test_cli_unreachable_database_fails_cleanly(command: list[str]) -> None:
    """An unreachable database exits 1 saying which one (password hidden) and why."""
    url = UNREACHABLE_URL.replace("postgres@", "postgres:hunter2@")
    result = run_cli(*command, "--database-url", url)
    assert_clean_error(result, 1, "cannot read the event archive at postgresql://postgres:***@127.0.0.1:1/")
    assert "hunter2" not in result.output


def test_cli_missing_sqlite_file_fails_cleanly(tmp_path: Path) -> None:
    """A SQLite URL naming no file exits 1 instead of creating an empty database."""
    result = run_cli("search", "--database-url", f"sqlite:///{tmp_path / 'nowhere.sqlite3'}")
    assert_clean_error(result, 1, "does not exist")
    assert not (tmp_path / "nowhere.sqlite3").exists()


def test_cli_unmigrated_database_fails_cleanly(tmp_path: Path) -> None:
    """A database without the archive's table exits 1 suggesting the migration."""
    (tmp_path / "empty.sqlite3").touch()
    result = run_cli("show", "123", "--database-url", f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    assert_clean_error(result, 1, "auth0-events db upgrade")


# --- edge values: every one is a 400 (API) or a usage error (CLI) naming its parameter ------------------

NESTED_CURSOR = b64("[" * 1500)
EDGE_QUERIES = [
    pytest.param("since=9999-12-31T23:59:59-14:00", "since", id="since-past-year-9999-in-utc"),
    pytest.param("until=0001-01-01T00:00:00%2B14:00", "until", id="until-before-year-1-in-utc"),
    pytest.param("after=" + b64('["9999-12-31T23:59:59-14:00", 5]'), "after", id="cursor-date-past-9999"),
    pytest.param("after=" + NESTED_CURSOR, "after", id="cursor-nested-1500-deep"),
    pytest.param("after=" + b64('["2026-11-21T09:30:00Z", 2147483648]'), "after", id="cursor-id-2**31"),
    pytest.param("after=" + b64("[null, 99999999999999999999]"), "after", id="cursor-id-huge"),
    pytest.param("after=" + b64("[null, 0]"), "after", id="cursor-id-0"),
    pytest.param("user=eve%00", "user", id="nul-in-user"),
    pytest.param("ip=192.0.2.1%00", "ip", id="nul-in-ip"),
    pytest.param("type=f%00", "type", id="nul-in-type"),
]


@pytest.mark.parametrize(("query", "parameter"), EDGE_QUERIES)
def test_api_edge_value_is_400_naming_it(api: Any, query: str, parameter: str) -> None:
    """Values no stored event could match or no database takes are answered 400, on both databases."""
    response = api.get(f"/events?{query}", headers=AUTH)
    assert response.status_code == 400, response.json
    assert (response.json["error"], response.json["parameter"]) == ("invalid_parameter", parameter)


def test_api_log_id_with_nul_is_400(api: Any) -> None:
    """GET /events/<log_id> with a NUL in the log_id: 400 naming log_id (PostgreSQL refused it: 503)."""
    response = api.get("/events/9002026%00", headers=AUTH)
    assert response.status_code == 400, response.json
    assert (response.json["error"], response.json["parameter"]) == ("invalid_parameter", "log_id")


def test_api_finds_an_event_by_the_whole_of_an_over_long_user_name(api: Any, database_url: str) -> None:
    """The column holds the first 255 characters of a long user name: a search for all of it finds it."""
    long = "x" * 299 + "y"
    log_id = store(database_url, Stored("long", "f", "", long, "192.0.2.77", D1, "processed"))
    for value in (long, long[:255]):
        response = api.get(f"/events?user={value}", headers=AUTH)
        assert [event["log_id"] for event in response.json["events"]] == [log_id]


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--since", "9999-12-31T23:59:59-14:00"], "'--since'"),
        (["--after", NESTED_CURSOR], "'--after'"),
        (["--after", b64('["2026-11-21T09:30:00Z", 2147483648]')], "'--after'"),
        (["--user", "eve\udcff"], "'--user'"),  # a byte that is not UTF-8 in argv becomes a lone surrogate
        (["--ip", "192.0.2.1\x00"], "'--ip'"),
    ],
    ids=["since-past-9999", "nested-cursor", "cursor-id-2**31", "user-not-utf8", "ip-nul"],
)
def test_cli_search_edge_value_fails_cleanly(args: list[str], option: str) -> None:
    """Each edge value exits 2 naming the option, before touching the database."""
    result = run_cli("search", "--database-url", UNREACHABLE_URL, *args)
    assert_clean_error(result, 2, f"Invalid value for {option}")


@pytest.mark.parametrize("log_id", ["9002026\udcff", "9002026\x00"], ids=["not-utf8", "nul"])
def test_cli_show_unstorable_log_id_fails_cleanly(log_id: str) -> None:
    """show of a log_id no event can have exits 2 naming it, before touching the database."""
    result = run_cli("show", log_id, "--database-url", UNREACHABLE_URL)
    assert_clean_error(result, 2, "Invalid value for 'LOG_ID'")


@pytest.mark.parametrize(
    ("filters", "parameter"),
    [({"user": "eve\x00"}, "user"), ({"ip": "\ud800"}, "ip"), ({"types": ("f", "f\x00")}, "type")],
)
def test_filters_no_database_takes_are_refused(filters: dict[str, Any], parameter: str) -> None:
    """A NUL or a lone surrogate in a text filter raises InvalidQuery naming it."""
    with pytest.raises(InvalidQuery, match="no stored event holds") as caught:
        EventFilters(**filters)
    assert caught.value.parameter == parameter
