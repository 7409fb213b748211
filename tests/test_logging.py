"""JSON logs that follow each event: context on every line, readable text on a terminal, PII masking."""

from __future__ import annotations

import io
import json
import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from kernel.logging_setup import configure_logging, log_context
from kernel.pii import mask, personal_values, set_mask_key
from tests.helpers import TEST_TOKEN, as_jsonl, make_record, wait_for


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger back as pytest had it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers, root.level = handlers, level


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects among ``text``'s lines (a worker also prints its banner as plain text)."""
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_json_line_carries_the_context_and_extra_fields(settings_for: Any, restore_logging: None) -> None:
    """Inside log_context every line has the event's fields; extra fields are added and win."""
    stream = io.StringIO()
    configure_logging(settings_for(log_format="json"), stream=stream)
    with log_context(request_id="r-1", log_id="900123", event_type="fp", queue="auth0.fp", task_id="t-9"):
        logging.getLogger("auth0_events.test").warning("something %s", "happened", extra={"queue": "other"})
    [line] = json_lines(stream.getvalue())
    assert line["message"] == "something happened"
    assert (line["level"], line["logger"]) == ("WARNING", "auth0_events.test")
    assert {k: line[k] for k in ("request_id", "log_id", "event_type", "task_id")} == {
        "request_id": "r-1",
        "log_id": "900123",
        "event_type": "fp",
        "task_id": "t-9",
    }
    assert line["queue"] == "other"
    assert "time" in line


def test_context_ends_with_its_block(settings_for: Any, restore_logging: None) -> None:
    """A line logged after the block carries none of its fields."""
    stream = io.StringIO()
    configure_logging(settings_for(log_format="json"), stream=stream)
    with log_context(log_id="900123"):
        pass
    logging.getLogger("auth0_events.test").warning("after")
    assert "log_id" not in json_lines(stream.getvalue())[0]


def test_terminal_gets_readable_text_by_default(settings_for: Any, restore_logging: None) -> None:
    """With the default 'auto' format a terminal gets one readable line with key=value context."""
    stream = FakeTerminal()
    configure_logging(settings_for(), stream=stream)
    with log_context(log_id="900123", event_type="s"):
        logging.getLogger("auth0_events.test").info("auth0 event s")
    line = stream.getvalue().strip()
    assert not line.startswith("{")
    assert "INFO" in line
    assert "auth0 event s" in line
    assert line.endswith("log_id=900123 event_type=s")


def test_masking_hides_personal_data_but_keeps_the_event(settings_for: Any, restore_logging: None) -> None:
    """With AUTH0_EVENTS_LOG_MASK_PII names, emails, user ids and IPs become stable hashes."""
    stream = io.StringIO()
    configure_logging(settings_for(log_format="json", log_mask_pii=True), stream=stream)
    fields = {"user_name": "jane@example.com", "ip": "203.0.113.5", "user_id": "auth0|jane"}
    with log_context(log_id="900123"):
        logging.getLogger("auth0_events.test").info("auth0 event s", extra=fields)
    [line] = json_lines(stream.getvalue())
    assert "jane" not in stream.getvalue()
    assert "203.0.113.5" not in stream.getvalue()
    assert line["user_name"] == mask("jane@example.com") != mask("joe@example.com")
    assert line["log_id"] == "900123"


def test_masking_covers_the_message_the_exception_and_every_field(
    settings_for: Any, restore_logging: None
) -> None:
    """E-mail and IP addresses and the event's own values are masked in the message text, the traceback
    and fields nested at any depth, with the same hash as the personal fields, in JSON and in text."""
    for log_format in ("json", "text"):
        stream = io.StringIO()
        configure_logging(settings_for(log_format=log_format, log_mask_pii=True), stream=stream)
        with log_context(log_id="900123"), personal_values("auth0|jane", "198.51.100.5"):
            try:
                raise ValueError("no such user jane@example.com at 2001:db8::5 (auth0|jane)")
            except ValueError:
                logging.getLogger("auth0_events.test").exception(
                    "lookup of %s from %s failed",
                    "auth0|jane",
                    "198.51.100.5",
                    extra={
                        "details": {"request": {"body": ["jane@example.com"], "ip": "2001:db8::5"}},
                        "raw": b'{"email": "jane@example.com"}',
                    },
                )
        output = stream.getvalue()
        for value in ("jane@example.com", "2001:db8::5", "auth0|jane", "198.51.100.5"):
            assert value not in output, (log_format, value)
            assert mask(value) in output, (log_format, value)
        assert "900123" in output
        assert len(output.splitlines()) == 1, output
        if log_format == "json":  # bytes as their repr, masked: base64 would hide the address from the mask
            assert mask("jane@example.com") in json.loads(output)["raw"]


@pytest.mark.parametrize("log_format", ["json", "text"])
@pytest.mark.parametrize("breaker", ["\n", "\r\n", "\r", "\x0b", "\x1b[2J", "\x85", "\u2028", "\u2029"])
def test_a_value_cannot_forge_a_log_line(
    settings_for: Any, restore_logging: None, log_format: str, breaker: str
) -> None:
    """A line break or control character in log_id, user_name or the message stays inside its one line."""
    forged = f"{breaker}2026-01-01 00:00:00,000 INFO [MainProcess] app.receiver: forged log_id=1"
    stream = io.StringIO()
    configure_logging(settings_for(log_format=log_format), stream=stream)
    with log_context(log_id=f"900{forged}"):
        logging.getLogger("auth0_events.test").warning("seen %s", forged, extra={"user_name": forged})
    output = stream.getvalue()
    assert output.endswith("\n")
    assert len(output.splitlines()) == 1, output
    assert breaker not in output[:-1]  # the handler's own line end aside
    if log_format == "json":
        line = json.loads(output)
        assert (line["log_id"], line["user_name"], line["message"]) == (
            f"900{forged}",
            forged,
            f"seen {forged}",
        )


def test_text_fields_are_quoted_when_they_could_pass_for_other_fields(
    settings_for: Any, restore_logging: None
) -> None:
    """A value holding spaces, quotes or '=' is quoted, so it cannot pose as another key=value pair."""
    stream = FakeTerminal()
    configure_logging(settings_for(), stream=stream)
    with log_context(log_id="900 log_id=1", event_type="s"):
        logging.getLogger("auth0_events.test").info("auth0 event s", extra={"user_name": 'a "b"'})
    assert stream.getvalue().rstrip().endswith('log_id="900 log_id=1" event_type=s user_name="a \\"b\\""')


@pytest.mark.worker
def test_one_log_id_can_be_followed_through_receiver_and_worker(
    make_app: Any, start_worker: Any, settings_for: Any, restore_logging: None
) -> None:
    """The receiver's lines and the worker's share the event's task_id; a request_id ties the batch."""
    queue = f"test.logs.{uuid.uuid4().hex[:8]}"
    worker = start_worker(
        [queue], {"AUTH0_EVENTS_ROUTES": f"s={queue},ss={queue}", "AUTH0_EVENTS_LOG_FORMAT": "json"}
    )
    receiver_log = io.StringIO()
    configure_logging(settings_for(log_format="json"), stream=receiver_log)
    records = [make_record("s"), make_record("ss"), make_record("w")]
    client = make_app(routes=f"s={queue},ss={queue}").test_client()
    response = client.post(
        "/webhooks/auth0",
        data=as_jsonl(records),
        headers={"Authorization": TEST_TOKEN, "X-Request-Id": "req-42"},
    )
    assert response.status_code == 202
    log_id = records[0]["log_id"]
    received = [line for line in json_lines(receiver_log.getvalue()) if line.get("request_id") == "req-42"]
    [accepted] = [line for line in received if line.get("log_id") == log_id]
    assert (accepted["event_type"], accepted["queue"]) == ("s", queue)
    assert len([line for line in received if line["message"].startswith("accepted event")]) == 2
    assert any(line["message"].startswith("received batch") for line in received)

    def worker_lines() -> list[dict[str, Any]]:
        lines = [line for line in json_lines(worker.log_text()) if line.get("log_id") == log_id]
        return lines if any(line["message"].startswith("auth0 event s") for line in lines) else []

    lines = wait_for(worker_lines, what="the worker's lines for the log_id")
    assert {line["task_id"] for line in lines} == {accepted["task_id"]}
    assert {(line["event_type"], line["queue"]) for line in lines} == {("s", queue)}


@pytest.mark.worker
def test_masked_worker_logs_hold_no_personal_data(make_app: Any, start_worker: Any) -> None:
    """A worker with AUTH0_EVENTS_LOG_MASK_PII logs neither the user's name nor the IP, anywhere."""
    queue = f"test.logs.{uuid.uuid4().hex[:8]}"
    worker = start_worker(
        [queue],
        {
            "AUTH0_EVENTS_ROUTES": f"s={queue}",
            "AUTH0_EVENTS_LOG_FORMAT": "json",
            "AUTH0_EVENTS_LOG_MASK_PII": "true",
        },
    )
    name = f"{uuid.uuid4().hex[:10]}@example.org"
    record = make_record("s", user_name=name, ip="198.51.100.77", user_id=f"auth0|{name}")
    client = make_app(routes=f"s={queue}").test_client()
    assert (
        client.post(
            "/webhooks/auth0", data=as_jsonl([record]), headers={"Authorization": TEST_TOKEN}
        ).status_code
        == 202
    )
    wait_for(
        lambda: any(
            line.get("log_id") == record["log_id"] and line["message"].startswith("auth0 event")
            for line in json_lines(worker.log_text())
        ),
        what="the event's line",
    )
    assert name not in worker.log_text()
    assert "198.51.100.77" not in worker.log_text()
    # The worker's key (the run's): an earlier test in this process may have keyed mask() otherwise.
    set_mask_key(os.environ["AUTH0_EVENTS_LOG_MASK_KEY"])
    assert mask(name) in worker.log_text()


def test_masks_are_keyed(settings_for: Any, restore_logging: None) -> None:
    """The mask of a value is an HMAC under AUTH0_EVENTS_LOG_MASK_KEY: the same value gives the same mask
    under one key (lines still correlate) and another under another key, and it is not the plain SHA-256
    anyone could compute for each of the 2**32 IPv4 addresses."""
    import hashlib

    ip = "203.0.113.9"
    plain = "masked:" + hashlib.sha256(ip.encode()).hexdigest()[:8]
    configure_logging(settings_for(log_mask_pii=True, log_mask_key="k" * 32), stream=io.StringIO())
    first = mask(ip)
    assert first == mask(ip)
    assert first != plain
    configure_logging(settings_for(log_mask_pii=True, log_mask_key="j" * 32), stream=io.StringIO())
    assert mask(ip) not in (first, plain)
