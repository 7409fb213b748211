"""AUTH0_EVENTS_LOG_MASK_PII: no e-mail or IP address of a record in any process's lines, nor in a reason."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st
from kombu import Connection
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from kernel.pii import current_personal_values, mask, mask_text, personal_values, set_mask_key
from kernel.storage.archive import get_event
from kernel.storage.db import make_engine, session_scope
from tasks.celery_app import app as celery_app
from tests.helpers import (
    ROOT,
    TEST_TOKEN,
    as_jsonl,
    free_port,
    make_record,
    procfile_receiver,
    stop_process_group,
    wait_for,
)
from tests.test_flower import flower_command, flower_env

API_TOKEN = "pii-api-token-6c1e0b9d4f2a8e7c3b5d1f0a"
MASKED = {"AUTH0_EVENTS_LOG_MASK_PII": "true"}


@pytest.mark.parametrize(
    ("line", "address"),
    [
        ("login by jane@example.org failed", "jane@example.org"),
        ('{"user_name": "Jane.Doe+tag@Example.CO.UK"}', "Jane.Doe+tag@Example.CO.UK"),
        ("[parameters: ('jane@example.org', 51)]", "jane@example.org"),
        ("GET /events?user=jane@example.org&ip=", "jane@example.org"),
        ("mailto:o.reilly@b\u00fccher.de,", "o.reilly@b\u00fccher.de"),
    ],
)
def test_an_email_address_is_masked_wherever_it_stands(line: str, address: str) -> None:
    """Inside JSON, a Python repr, a query string: the address becomes its mask, what is around it stays."""
    assert mask_text(line) == line.replace(address, mask(address))


@pytest.mark.parametrize(
    "address",
    [
        "198.51.100.77",
        "2001:db8:85a3::8a2e:370:7334",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "2001:DB8::1",
        "::ffff:198.51.100.77",
        "fe80::1",
        "::2",
    ],
)
@pytest.mark.parametrize("template", ["from {} at", "ip={}.", "ip:{}", '"ip": "{}"', "[{}]:443", "({})"])
def test_an_ip_address_is_masked_in_every_form(address: str, template: str) -> None:
    """IPv4, IPv6 full, compressed and IPv4-mapped, behind a key, a bracket, or ending a sentence."""
    assert mask_text(template.format(address)) == template.format(mask(address))


def test_percent_encoded_values_are_masked_like_the_plain_ones() -> None:
    """A URL in an error or a request line carries them encoded; the mask is the plain value's."""
    line = "GET /events?user=jane%2Btag%40example.org&ip=2001%3Adb8%3A%3A1 HTTP/1.1"
    masked = f"GET /events?user={mask('jane+tag@example.org')}&ip={mask('2001:db8::1')} HTTP/1.1"
    assert mask_text(line) == masked


@pytest.mark.parametrize(
    "line",
    [
        "2026-11-29 16:08:11,506 at 10:00:00 and 2026-11-29T16:08:11.506Z",
        "celery 5.7.0, kombu 5.7.0 on 1.2.3.4.5, 999.1.1.1",
        "task 4f1c2a9e-8b7d-4c3a-9e1f-2b3c4d5e6f70 mac aa:bb:cc:dd:ee:ff",
        "Connected to amqp://guest:**@127.0.0.1:5672// listening at http://0.0.0.0:8000 and [::1]:80",
        f"w0-1a2b3c@{socket.gethostname()} ready.",
        "Retry in 0.0047472073494879315s: Deprecated::name at 0x7f60b8a9f150",
        "@handles(ALL_EVENTS) in <module> 100%",
    ],
)
def test_times_versions_ids_and_this_machine_are_not_masked(line: str) -> None:
    """What only looks like an address stays readable: times, versions, ids, loopback, the node name."""
    assert mask_text(line) == line


def test_known_values_are_masked_whole_and_as_words_only() -> None:
    """The event's user id (also percent-encoded in a URL) and user name; "ann" does not mask "annual"."""
    line = "PATCH /api/v2/users/auth0%7C61823 for auth0|61823 (ann): annual check"
    user_id, name = mask("auth0|61823"), mask("ann")
    masked = f"PATCH /api/v2/users/{user_id} for {user_id} ({name}): annual check"
    assert mask_text(line, ["auth0|61823", "ann"]) == masked


def test_personal_values_hold_inside_their_block_only() -> None:
    """The task binds the event's values for its run's lines; values too short to name anyone are left."""
    with personal_values("auth0|61823", "jo", None, ""):
        assert current_personal_values() == ("auth0|61823",)
    assert current_personal_values() == ()


text_around = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
separators = st.sampled_from([" ", "=", "(", "[", "'", '"', ",", "/", "<", "\n"])


@given(
    address=st.ip_addresses().filter(lambda ip: not (ip.is_loopback or ip.is_unspecified)),
    exploded=st.booleans(),
    before=text_around,
    after=text_around,
    left=separators,
    right=separators,
)
def test_no_ip_address_survives_in_any_surrounding(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    exploded: bool,
    before: str,
    after: str,
    left: str,
    right: str,
) -> None:
    """Any IPv4 or IPv6 address, written compressed or in full, between separators and any text."""
    value = address.exploded if exploded else str(address)
    assert value not in mask_text(f"{before}{left}{value}{right}{after}")


@given(address=st.emails(), before=text_around, after=text_around, left=separators, right=separators)
def test_no_email_address_survives_in_any_surrounding(
    address: str, before: str, after: str, left: str, right: str
) -> None:
    """Any address RFC 5322 allows, between separators and any text."""
    assert address not in mask_text(f"{before}{left}{address}{right}{after}")


def test_database_errors_hide_their_parameters_when_asked(tmp_path: Path) -> None:
    """hide_parameters (AUTH0_EVENTS_LOG_MASK_PII) keeps a statement's values out of its error's text."""
    statement = text("INSERT INTO no_such_table VALUES (:user_name)")
    for hide, shown in ((False, True), (True, False)):
        engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}", hide_parameters=hide)
        with pytest.raises(OperationalError) as failure, engine.begin() as connection:
            connection.execute(statement, {"user_name": "jane@example.org"})
        engine.dispose()
        assert ("jane@example.org" in str(failure.value)) is shown


@contextmanager
def celery_events() -> Iterator[list[dict[str, Any]]]:
    """Every Celery event on the broker while the block runs: what Flower receives and shows."""
    received: list[dict[str, Any]] = []
    with celery_app.connection_for_read() as connection:
        receiver = celery_app.events.Receiver(connection, handlers={"*": received.append})
        thread = threading.Thread(target=receiver.capture, kwargs={"limit": None, "wakeup": False})
        thread.start()
        try:
            # Workers send a heartbeat every 2 s: the first one shows the capture has begun.
            wait_for(lambda: received, 30, 0.1, "a first Celery event")
            yield received
        finally:
            receiver.should_stop = True
            thread.join(timeout=30)


def leaking_record(event_type: str, email: str, ip: str) -> dict[str, Any]:
    """A record tests/pii_handlers.py fails on, with ``email`` and ``ip`` in every error text."""
    user_id = f"auth0|{uuid.uuid4().hex[:24]}"
    return make_record(event_type, user_name=email, ip=ip, user_id=user_id, details={"pii_action": "leak"})


def forms(values: list[str]) -> set[str]:
    """The ways the values show up in a line: as they are, and percent-encoded in a URL."""
    return {form for value in values for form in (value, quote(value), quote(value, safe=""))}


def dead_lettered(log_id: str) -> Any:
    """The archived event once the worker has dead-lettered it, else None."""
    with session_scope(os.environ["DATABASE_URL"], read_only=True) as session:
        event = get_event(session, log_id)
        return event if event is not None and event.state == "dead_lettered" else None


def publish_undecodable(queue: str, record: dict[str, Any]) -> None:
    """A body the worker cannot decode, holding the record's e-mail and IP (Celery logs the body)."""
    body = f'{{"user": "{record["data"]["user_name"]}", "ip": "{record["data"]["ip"]}"'
    with Connection(os.environ["BROKER_URL"]) as connection:
        connection.Producer().publish(
            body.encode(), routing_key=queue, content_type="application/json", content_encoding="utf-8"
        )


def keyed_mask(value: str) -> str:
    """mask(value) as a process with the run's AUTH0_EVENTS_LOG_MASK_KEY computes it."""
    set_mask_key(os.environ["AUTH0_EVENTS_LOG_MASK_KEY"])
    try:
        return mask(value)
    finally:
        set_mask_key("")


@pytest.mark.worker
def test_no_email_or_ip_reaches_any_log_line_or_stored_reason(tmp_path: Path, start_worker: Any) -> None:
    """Receiver (gunicorn) and worker, masking on: handler errors, database errors with parameters, retries,
    a dead letter, an archive search by e-mail and IP that fails, a body the worker cannot decode. The
    records' e-mails, IPs and user ids are in no line, no stored reason and no event Flower gets; log_ids
    and the masks are."""
    queue = f"test.pii.{uuid.uuid4().hex[:8]}"
    routes = f"s={queue},ss={queue}"
    tag = uuid.uuid4().hex[:8]
    records = [
        leaking_record("s", f"jane.{tag}@example.org", "198.51.100.77"),
        leaking_record("ss", f"joe+{tag}@example.com", "2001:db8:85a3::8a2e:370:7334"),
    ]
    personal = forms([record["data"][key] for record in records for key in ("user_name", "ip", "user_id")])
    worker_env = {"AUTH0_EVENTS_LOG_FORMAT": "json", "AUTH0_EVENTS_PLUGINS": "tests.pii_handlers"}
    worker = start_worker([queue], {**MASKED, **worker_env, "AUTH0_EVENTS_ROUTES": routes})
    publish_undecodable(queue, records[0])  # handled before the records published after it
    receiver_log = tmp_path / "receiver.log"
    receiver_env = {
        **MASKED,
        "AUTH0_EVENTS_ROUTES": routes,
        "AUTH0_EVENTS_LOG_FORMAT": "text",
        "AUTH0_EVENTS_API_TOKENS": API_TOKEN,
        # A database without the archive's tables: every search fails with its parameters in the error.
        "DATABASE_URL": f"sqlite:///{tmp_path / 'not-migrated.sqlite3'}",
    }
    with procfile_receiver(receiver_log, receiver_env) as running, celery_events() as events:
        response = requests.post(
            f"{running.url}/webhooks/auth0",
            data=as_jsonl(records),
            headers={"Authorization": TEST_TOKEN},
            timeout=30,
        )
        assert response.status_code == 202, response.text
        search = requests.get(
            f"{running.url}/events",
            params={"user": records[0]["data"]["user_name"], "ip": records[0]["data"]["ip"]},
            headers={"Authorization": f"Bearer {API_TOKEN}"},
            timeout=30,
        )
        assert search.status_code == 503, search.text
        stored = [wait_for(lambda r=r: dead_lettered(r["log_id"]), 60, 0.2, "a dead letter") for r in records]  # type: ignore[misc]  # a default argument binds the loop turn's value
        wait_for(lambda: [e for e in events if e["type"] == "task-failed"][1:], 30, 0.1, "the failed events")
    worker.stop()
    lines = {"receiver": receiver_log.read_text(), "worker": worker.log_text()}

    assert "event archive query failed" in lines["receiver"]
    assert "GET /events HTTP/1.1" in lines["receiver"]  # the access line without the query string
    assert "retrying event" in lines["worker"]
    assert "dead-lettering event" in lines["worker"]
    for record in records:
        assert record["log_id"] in lines["worker"]
        # Lines about one person still correlate: the worker's mask under the run's key.
        assert keyed_mask(record["data"]["user_name"]) in lines["worker"]
    for process, output in lines.items():
        assert not [form for form in personal if form in output], f"personal data in the {process}'s log"
    for event in stored:
        assert "masked:" in event.last_error
        assert not [form for form in personal if form in event.last_error], event.last_error
    failures = [event for event in events if event["type"] in ("task-retried", "task-failed")]
    assert len(failures) == 6  # two retries and a dead letter each
    assert all("MaskedError" in event["exception"] for event in failures if event["type"] == "task-retried")
    assert all("masked:" in event["exception"] for event in failures if event["type"] == "task-failed")
    assert not [form for form in personal if form in json.dumps(failures)]


@pytest.mark.process
def test_flower_logs_through_the_same_formatter(tmp_path: Path) -> None:
    """Flower reads flowerconfig.py from the working directory: its lines are the service's JSON lines."""
    log_path = tmp_path / "flower.log"
    env = flower_env(AUTH0_EVENTS_LOG_FORMAT="json", **MASKED)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            flower_command(free_port()),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: "Visit me at" in log_path.read_text(), 60, 0.2, "Flower to start")
    finally:
        stop_process_group(process)
    [visit] = [line for line in log_path.read_text().splitlines() if "Visit me at" in line]
    assert json.loads(visit)["logger"] == "flower.command"
