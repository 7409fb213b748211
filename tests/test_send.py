"""`auth0-events send`: realistic sample records, POSTed over real HTTP to a real receiver and broker."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from cli.send.samples import INVALID_KINDS, SampleBatch, SampleGenerator, parse_types
from cli.send.sender import (
    SendOptions,
    encode_body,
    parse_rate,
    payload_url,
    send_batches,
)
from kernel.events import InvalidRecord, parse_event
from kernel.retry_after import retry_after_seconds
from tests.helpers import ROOT, TEST_TOKEN, free_port, take_messages, task_kwargs

CLI = str(Path(sys.executable).parent / "auth0-events")
FIXED_NOW = datetime(2026, 11, 26, 8, 25, 14, 466000, tzinfo=UTC)


def fixed_clock() -> datetime:
    """Always the same moment, so a seed alone decides the records."""
    return FIXED_NOW


def is_valid(record: Any) -> bool:
    """Whether the receiver's validation accepts ``record``."""
    try:
        parse_event(record)
    except InvalidRecord:
        return False
    return True


# -- the sample generator ----------------------------------------------------------------------------


def test_same_seed_gives_the_same_records() -> None:
    """With a seed (and a fixed clock) the generator is deterministic; another seed gives other records."""

    def records(seed: int) -> list[Any]:
        batches = SampleGenerator(seed=seed, clock=fixed_clock).batches(300, 7, duplicates=0.1, invalid=0.1)
        return [batch.records for batch in batches]

    assert records(7) == records(7)
    assert records(7) != records(8)


def test_every_generated_record_passes_validation() -> None:
    """Every record of the mix is a valid envelope with a 56-digit log_id and an Auth0-style date."""
    generator = SampleGenerator(seed=1)
    for _ in range(3000):
        record = generator.record()
        event = parse_event(record)
        assert len(event.log_id) == 56
        assert event.log_id.isdigit()
        assert event.log_id.startswith("900")
        assert record["data"]["log_id"] == event.log_id
        assert event.date is not None
        assert event.log_id[3:17] == event.date.strftime("%Y%m%d%H%M%S")
        assert record["data"]["date"].endswith("Z")
        assert len(record["data"]["date"]) == 24
        assert event.client_id
        assert event.ip
        assert event.data["hostname"] == "acme.eu.auth0.com"


def test_mix_is_mostly_logins_with_bursts_of_failures_and_type_specific_fields() -> None:
    """The mix: s most common, failed logins in runs from one IP, and each type's own fields."""
    generator = SampleGenerator(seed=2)
    records = [generator.record()["data"] for _ in range(4000)]
    types = Counter(data["type"] for data in records)
    assert types.most_common(1)[0][0] == "s"
    assert types["s"] > 0.35 * len(records)
    assert {"ss", "slo", "scp", "sapi", "pwd_leak", "limit_wc", "seacft", "fs"} <= set(types)
    failures = sum(types[code] for code in ("f", "fp", "fu"))
    assert 0.03 * len(records) < failures < 0.2 * len(records)

    runs = _failure_runs(records)
    assert sum(len(run) for run in runs if len(run) >= 3) > 0.6 * failures, "failed logins come in bursts"
    failing_ips = Counter(data["ip"] for run in runs for data in run)
    assert sum(count for _ip, count in failing_ips.most_common(3)) > 0.6 * failures, "from a few IPs"

    by_type = {data["type"]: data for data in records}
    assert by_type["s"]["details"]["stats"]["loginsCount"] >= 1
    assert by_type["fp"]["details"]["error"]["message"] == "Wrong email or password."
    assert by_type["fu"]["user_id"] == ""
    assert "@" in by_type["fu"]["user_name"]
    assert by_type["ss"]["details"]["body"]["email"] == by_type["ss"]["user_name"]
    assert by_type["sapi"]["details"]["request"]["path"].startswith("/api/v2/")
    assert by_type["sapi"]["details"]["response"]["statusCode"] in (200, 201, 204)
    assert by_type["slo"]["description"] == "User successfully logged out."
    scopes = [data["scope"] for data in records if "scope" in data]
    assert any(isinstance(scope, str) for scope in scopes)
    assert any(isinstance(s, list) for s in scopes)
    users = [data["user_id"] for data in records if data["user_id"]]
    assert any(u.startswith("auth0|") for u in users)
    assert any(u.startswith("google-oauth2|") for u in users)


def _failure_runs(records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    runs: list[list[dict[str, Any]]] = [[]]
    for data in records:
        if data["type"] in ("f", "fp", "fu"):
            runs[-1].append(data)
        elif runs[-1]:
            runs.append([])
    return [run for run in runs if run]


def test_explicit_types_are_the_only_ones_sent() -> None:
    """`--types ss,pwd_leak,brand_new` gives those codes only, each often; an unknown code is still valid."""
    generator = SampleGenerator(parse_types("ss, pwd_leak,brand_new"), seed=3)
    types = Counter(generator.record()["data"]["type"] for _ in range(300))
    assert set(types) == {"ss", "pwd_leak", "brand_new"}
    assert min(types.values()) > 60
    assert parse_types("mix") is None
    for bad in ("", "S", "s;f", "mix,s!"):
        with pytest.raises(ValueError, match="event code"):
            parse_types(bad)


def test_invalid_records_are_the_three_kinds_and_fail_validation() -> None:
    """An invalid record lacks data.type or log_id, or is not an object; the batch counts them exactly."""
    generator = SampleGenerator(seed=4)
    batches = list(generator.batches(400, 10, invalid=0.2))
    invalid = [record for batch in batches for record in batch.records if not is_valid(record)]
    assert len(invalid) == sum(batch.invalid for batch in batches) > 40
    kinds = {
        "not_object" if not isinstance(r, dict) else "missing_type" if "log_id" in r else "missing_log_id"
        for r in invalid
    }
    assert kinds == set(INVALID_KINDS)
    assert sum(len(batch.records) for batch in batches) == 400
    assert [len(batch.records) for batch in batches] == [10] * 40


def test_duplicates_repeat_a_log_id_of_the_same_request() -> None:
    """A duplicate repeats a log_id of its own batch, or of the previous request with one record each."""
    for batch in SampleGenerator(seed=5).batches(500, 25, duplicates=0.1):
        log_ids = [record["log_id"] for record in batch.records]
        assert len(log_ids) - len(set(log_ids)) == batch.duplicates
    singles = list(SampleGenerator(seed=5).batches(200, 1, duplicates=0.1))
    repeats = [b for b, previous in zip(singles[1:], singles, strict=False) if b.records == previous.records]
    assert len(repeats) == sum(batch.duplicates for batch in singles) > 5


def test_options_are_parsed_strictly() -> None:
    """Rates, URLs, Retry-After and body formats are read the way the command documents them."""
    assert parse_rate("50") == parse_rate("50/s") == 50
    assert parse_rate("600/m") == 10
    for bad in ("0", "-1", "fast", "5/d", "inf", "nan"):
        with pytest.raises(ValueError, match="not a rate"):
            parse_rate(bad)
    assert payload_url("http://localhost:8000") == "http://localhost:8000/webhooks/auth0"
    assert payload_url("https://h.example/hooks/x") == "https://h.example/hooks/x"
    with pytest.raises(ValueError, match="not an http"):
        payload_url("ftp://h.example/")
    assert retry_after_seconds("7") == 7
    assert retry_after_seconds("Thu, 26 Nov 2026 08:25:24 GMT", now=FIXED_NOW.timestamp()) == pytest.approx(
        9.534
    )
    assert retry_after_seconds("soon") is None
    records = [{"log_id": "1", "data": {"type": "s"}}, {"log_id": "2", "data": {"type": "s"}}]
    assert encode_body(records, "jsonlines").count(b"\n") == 1
    assert json.loads(encode_body(records, "array")) == records
    with pytest.raises(ValueError, match="one record"):
        encode_body(records, "object")


# -- sending to a real receiver over HTTP ------------------------------------------------------------


@pytest.fixture
def serve() -> Iterator[Callable[[Any], str]]:
    """Serve WSGI apps over real HTTP on free ports, each in a thread; returns the base URL."""
    servers = []

    def start(app: Any) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def prefix() -> str:
    """A queue-name prefix of this test's own."""
    return f"test.send.{uuid.uuid4().hex[:8]}"


@pytest.fixture
def receiver_url(make_app: Any, serve: Callable[[Any], str], prefix: str) -> str:
    """A real receiver routing logins, signups and failed logins to the test's queues; the rest filtered."""
    routes = f"s={prefix}.logins,ss={prefix}.signups,auth.login.fail={prefix}.failed"
    return serve(make_app(routes=routes)) + "/webhooks/auth0"


def queued_log_ids(broker: Any, prefix: str) -> dict[str, list[str]]:
    """Take every task message from the test's queues: log_ids per queue, in order."""
    return {
        name: [task_kwargs(message)["log_id"] for message in take_messages(broker, f"{prefix}.{name}")]
        for name in ("logins", "signups", "failed")
    }


def expected_log_ids(batches: list[SampleBatch]) -> tuple[dict[str, list[str]], int]:
    """What the routes should enqueue (valid routed records, each log_id once per request); duplicates."""
    queue_of = {"s": "logins", "ss": "signups", "f": "failed", "fp": "failed", "fu": "failed"}
    expected: dict[str, list[str]] = {"logins": [], "signups": [], "failed": []}
    duplicates = 0
    for batch in batches:
        seen = set()
        for record in filter(is_valid, batch.records):
            queue = queue_of.get(record["data"]["type"])
            if queue and record["log_id"] in seen:
                duplicates += 1
            elif queue:
                seen.add(record["log_id"])
                expected[queue].append(record["log_id"])
    return expected, duplicates


def quarantined(broker: Any, run_id: str) -> list[dict[str, Any]]:
    """Take the quarantine queue's messages (one per request) and return the records one send run kept."""
    bodies = [message.decode() for message in take_messages(broker, "auth0.quarantine")]
    mine = [body for body in bodies if body["request_id"].startswith(f"send-{run_id}-")]
    return [entry for body in mine for entry in body["records"]]


@pytest.mark.parametrize(("body_format", "batch_size"), [("jsonlines", 9), ("array", 16), ("object", 1)])
def test_sent_records_are_counted_and_enqueued(
    receiver_url: str, broker: Any, prefix: str, body_format: str, batch_size: int
) -> None:
    """Each format: the receiver's counts add up, routed records are in their queues, invalid quarantined."""
    count = 30 if body_format == "object" else 80
    batches = list(SampleGenerator(seed=11).batches(count, batch_size, duplicates=0.1, invalid=0.1))
    stats = send_batches(receiver_url, TEST_TOKEN, batches, SendOptions(body_format=body_format))

    assert stats.requests == len(batches)
    assert stats.records == count
    assert stats.statuses == {202: len(batches)}
    assert stats.failed_requests == 0
    assert not stats.errors
    counts = stats.to_dict()
    assert counts["received"] == count
    assert counts["accepted"] + counts["filtered"] + counts["quarantined"] + counts["duplicates"] == count
    assert counts["quarantined"] == stats.generated_invalid == sum(b.invalid for b in batches) > 0
    assert stats.generated_duplicates == sum(b.duplicates for b in batches) > 0
    expected, duplicates = expected_log_ids(batches)
    # The receiver counts a repeat of a filtered type as filtered; with one record per request it
    # cannot see repeats at all (the workers' ledger does).
    assert counts["duplicates"] == duplicates
    if body_format == "object":
        assert duplicates == 0
    else:
        assert duplicates > 0
    assert counts["filtered"] > 0

    assert queued_log_ids(broker, prefix) == expected
    assert sum(map(len, expected.values())) == counts["accepted"]
    bad = [record for batch in batches for record in batch.records if not is_valid(record)]
    assert [body["record"] for body in quarantined(broker, stats.run_id)] == bad


def test_rate_bounds_records_per_second(receiver_url: str, broker: Any, prefix: str) -> None:
    """At 100 records/s in batches of 5, 30 records cannot take less than the 25 before the last batch."""
    batches = list(SampleGenerator(["s"], seed=12).batches(30, 5))
    stats = send_batches(receiver_url, TEST_TOKEN, batches, SendOptions(rate=100))
    assert stats.statuses == {202: 6}
    assert stats.elapsed >= 25 / 100
    assert len(queued_log_ids(broker, prefix)["logins"]) == 30


class AnswerFirst:
    """WSGI middleware: answer the first ``times`` requests with 503 and Retry-After, then pass through."""

    def __init__(self, app: Any, times: int, retry_after: str) -> None:
        self.app, self.times, self.retry_after, self.calls = app, times, retry_after, 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        self.calls += 1
        if self.calls <= self.times:
            environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            body = json.dumps({"error": "broker_unavailable", "message": "the broker did not confirm"})
            start_response(
                "503 SERVICE UNAVAILABLE",
                [("Content-Type", "application/json"), ("Retry-After", self.retry_after)],
            )
            return [body.encode()]
        return self.app(environ, start_response)


def test_503_is_retried_after_its_retry_after(
    make_app: Any, serve: Callable[[Any], str], broker: Any, prefix: str
) -> None:
    """A receiver answering 503 (Retry-After: 1) and then 202 gets the batch again, a second later."""
    app = AnswerFirst(make_app(routes=f"s={prefix}.logins"), times=1, retry_after="1")
    [batch] = SampleGenerator(["s"], seed=13).batches(3, 3)
    stats = send_batches(serve(app) + "/webhooks/auth0", TEST_TOKEN, [batch])
    assert app.calls == 2
    assert stats.retries == 1
    assert stats.statuses == {202: 1}
    assert stats.failed_requests == 0
    assert stats.elapsed >= 1.0
    assert stats.to_dict()["accepted"] == 3
    assert queued_log_ids(broker, prefix)["logins"] == [record["log_id"] for record in batch.records]


def test_503_fails_the_request_after_the_retries(
    make_app: Any, serve: Callable[[Any], str], broker: Any, prefix: str
) -> None:
    """Still 503 after the retries: that request fails with the receiver's message; sending goes on."""
    app = AnswerFirst(make_app(routes=f"s={prefix}.logins"), times=3, retry_after="0")
    batches = list(SampleGenerator(["s"], seed=14).batches(4, 2))
    stats = send_batches(serve(app) + "/webhooks/auth0", TEST_TOKEN, batches, SendOptions(max_retries=2))
    assert app.calls == 4
    assert stats.retries == 2
    assert stats.statuses == {503: 1, 202: 1}
    assert stats.failed_requests == 1
    assert stats.errors == {"HTTP 503: the broker did not confirm": 1}
    assert queued_log_ids(broker, prefix)["logins"] == [record["log_id"] for record in batches[1].records]


# -- the command ---------------------------------------------------------------------------------------


def run_send(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `auth0-events send` as an operator would."""
    return subprocess.run(
        [CLI, "send", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=dict(os.environ)
    )


def test_command_sends_and_prints_a_json_summary(receiver_url: str, broker: Any, prefix: str) -> None:
    """`send --json` exits 0 and its summary matches what the broker received."""
    result = run_send(
        receiver_url,
        "--token",
        TEST_TOKEN,
        "--count=45",
        "--batch-size=10",
        "--format=array",
        "--types=s,ss,fp",
        "--invalid=0.1",
        "--duplicates=0.1",
        "--seed=15",
        "--rate=1000/s",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["requests"] == 5
    assert summary["records"] == summary["received"] == 45
    assert summary["statuses"] == {"202": 5}
    assert summary["failed_requests"] == 0
    assert summary["quarantined"] == summary["generated"]["invalid"]
    assert summary["duplicates"] == summary["generated"]["duplicates"] > 0
    assert summary["filtered"] == 0
    queued = queued_log_ids(broker, prefix)
    assert sum(map(len, queued.values())) == summary["accepted"] > 20
    assert len(quarantined(broker, summary["run_id"])) == summary["quarantined"]
    assert "\r" not in result.stderr, "no progress when stderr is not a terminal"


def test_command_draws_progress_only_on_a_terminal(receiver_url: str, broker: Any, prefix: str) -> None:
    """With stderr on a terminal, a progress line is redrawn; the summary stays on stdout."""
    controller, terminal = pty.openpty()
    try:
        result = subprocess.run(
            [
                CLI,
                "send",
                receiver_url,
                "--token",
                TEST_TOKEN,
                "--count=40",
                "--batch-size=2",
                "--rate=100",
                "--types=s",
            ],
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        os.close(terminal)
        terminal = -1
        drawn = _read_all(controller)
    finally:
        os.close(controller)
        if terminal != -1:
            os.close(terminal)
    assert result.returncode == 0
    assert "\rsent 40/40 records in 20 requests" in drawn
    assert drawn.count("\rsent ") >= 2
    assert result.stdout.startswith("sent 40 records in 20 requests to " + receiver_url)
    assert "receiver: " in result.stdout
    assert "HTTP statuses: 202: 20" in result.stdout
    assert len(queued_log_ids(broker, prefix)["logins"]) == 40


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the terminal's other end is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.process
def test_wrong_token_stops_with_the_receivers_401_message(receiver_url: str) -> None:
    """A token the receiver does not know: exit 1 after the first request, saying what the receiver said."""
    result = run_send(receiver_url, "--token", "not-the-token", "--count=50", "--batch-size=5", "--json")
    assert result.returncode == 1
    assert "HTTP 401: missing or wrong log stream token in the Authorization header" in result.stderr
    assert json.loads(result.stdout)["requests"] == 1
    assert "Traceback" not in result.stderr


@pytest.mark.process
def test_unreachable_receiver_exits_3() -> None:
    """Nothing listening at the URL: exit 3 with a message naming it, no traceback."""
    url = f"http://127.0.0.1:{free_port()}/webhooks/auth0"
    result = run_send(url, "--token", TEST_TOKEN, "--count=3")
    assert result.returncode == 3
    assert f"cannot reach the receiver at {url}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "fast"], "'fast' is not a rate"),
        (["--types", "S,f"], "'S' is not an event code"),
        (["--format", "object", "--batch-size", "5"], "one record per request"),
        (["--format", "xml"], "'xml' is not one of"),
        (["--count", "0"], "0 is not in the range x>=1"),
        (["--invalid", "0.6", "--duplicates", "0.6"], "add up to more than 1"),
        (["--url-is-missing"], "No such option"),
    ],
)
@pytest.mark.process
def test_bad_options_exit_2_naming_the_problem(args: list[str], message: str) -> None:
    """A bad option is a usage error (exit 2) that says what is wrong, before anything is sent."""
    result = run_send("http://127.0.0.1:9/", "--token", TEST_TOKEN, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.process
def test_bad_url_and_missing_token_are_usage_errors() -> None:
    """A URL that is not http(s), or no token at all, is refused with exit 2; --help explains the command."""
    result = run_send("ftp://example.com/", "--token", TEST_TOKEN)
    assert result.returncode == 2
    assert "not an http:// or https:// URL" in result.stderr
    env = {key: value for key, value in os.environ.items() if key != "AUTH0_EVENTS_SEND_TOKEN"}
    missing = subprocess.run(
        [CLI, "send", "http://127.0.0.1:9/"], capture_output=True, text=True, env=env, timeout=60, cwd=ROOT
    )
    assert missing.returncode == 2
    assert "Missing option '--token'" in missing.stderr
    help_text = run_send("--help").stdout
    assert "--format [jsonlines|array|object]" in help_text
    assert "AUTH0_EVENTS_SEND_TOKEN" in help_text
