"""A body over AUTH0_EVENTS_MAX_BODY_BYTES is a 413 however it is framed, never truncated; within the limit
a chunked body is accepted whole (issue 10). Real HTTP against the Procfile's gunicorn: framing is what
the test client cannot show.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import (
    BEARER_AUTH,
    as_jsonl,
    make_record,
    procfile_receiver,
    take_messages,
)

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def gunicorn_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, str]]:
    """The Procfile's web line with a 64 KiB body limit, routing s to a queue of its own."""
    directory = tmp_path_factory.mktemp("hostile")
    queue = f"test.{uuid.uuid4().hex[:8]}.framing"
    env = {
        "AUTH0_EVENTS_ROUTES": f"s={queue}",
        "AUTH0_EVENTS_MAX_BODY_BYTES": str(LIMIT),
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
    }
    with procfile_receiver(directory / "gunicorn.log", env) as receiver:
        yield "127.0.0.1", receiver.port, queue


def post_raw(
    port: int, method: str, body: bytes, headers: dict[str, str], chunked: bool = False, path: str = ""
) -> tuple[int, dict[str, Any]]:
    """Send a real HTTP request with http.client, chunked (no Content-Length) or with a Content-Length.

    A receiver that refuses a body may answer before reading all of it; the answer is read all the same.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        payload: Any = body
        if chunked:
            payload = (body[start : start + 8192] for start in range(0, len(body), 8192))
        # A refusal may come before the whole body was read; the answer then waits in the socket.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.request(method, path or "/webhooks/auth0", payload, headers, encode_chunked=chunked)
        response = connection.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else {}
    finally:
        connection.close()


def body_of_size(size: int) -> tuple[bytes, int]:
    """JSON Lines of login records exactly ``size`` bytes long (the first one padded), ending after a whole
    record, so that a body cut there would still parse; returns the body and its record count."""
    records = [make_record("s")]
    while len(as_jsonl(records)) < size - 2000:
        records.append(make_record("s"))
    records[0]["data"]["description"] = "x" * (size - len(as_jsonl(records)))
    body = as_jsonl(records)
    assert len(body) == size
    return body, len(records)


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_a_body_over_the_limit_is_413_however_it_is_framed(
    gunicorn_url: tuple[str, int, str], broker: Any, chunked: bool
) -> None:
    """A body whose first LIMIT bytes end on a record boundary, plus more records: 413, nothing enqueued
    (chunked bodies were cut at the limit and the rest silently dropped)."""
    _host, port, queue = gunicorn_url
    head, _count = body_of_size(LIMIT)
    body = head + b"\n" + as_jsonl([make_record("s") for _ in range(20)])
    status, answer = post_raw(
        port, "POST", body, {**BEARER_AUTH, "Content-Type": "application/json"}, chunked
    )
    assert status == 413, answer
    assert answer["error"] == "request_entity_too_large"
    assert take_messages(broker, queue) == []


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
@pytest.mark.parametrize("size", [LIMIT, LIMIT - 1, LIMIT // 2])
def test_a_body_within_the_limit_is_accepted_whole_however_it_is_framed(
    gunicorn_url: tuple[str, int, str], broker: Any, chunked: bool, size: int
) -> None:
    """At the limit exactly, one byte under, or well under: every record of the body is enqueued."""
    _host, port, queue = gunicorn_url
    body, count = body_of_size(size)
    status, answer = post_raw(
        port, "POST", body, {**BEARER_AUTH, "Content-Type": "application/json"}, chunked
    )
    assert status == 202, answer
    assert answer["received"] == answer["accepted"] == count
    assert len(take_messages(broker, queue)) == count
