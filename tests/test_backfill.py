"""`auth0-events backfill` against a local HTTPS Management API: paging, rate limits, resume, the ledger.

The command runs as operators run it: the console script in a subprocess, trusting the fake's CA through
SSL_CERT_FILE (httpx, the token and the pages), publishing to the real RabbitMQ, with a migrated database
of the test's own.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import certifi
import pytest
from sqlalchemy import delete

from app.intake import Intake
from app.publisher import PublishError
from cli.backfill.run import Checkpoint, CheckpointStore, Limits, QuotaPacer, ServiceUnavailable, run_backfill
from kernel.routing import parse_routes
from kernel.storage.db import session_scope, upgrade
from kernel.storage.models import BackfillCheckpoint, Event, utcnow
from tests.fake_auth0 import Call, FakeAuth0, make_logs, statuses
from tests.helpers import ROOT, free_port, take_messages, task_kwargs, wait_for

CLI = Path(sys.executable).parent / "auth0-events"
START = datetime(2026, 11, 20, tzinfo=UTC)
BEFORE_ALL = "900" + "20261119000000" + "0" * 39  # a log_id older than every log of the fake

Published = dict[str, list[str]]


@dataclass(frozen=True)
class Run:
    """One finished `auth0-events backfill`."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def summary(self) -> dict[str, Any]:
        """The --json summary."""
        result: dict[str, Any] = json.loads(self.stdout)
        return result


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeAuth0]:
    """A running fake tenant, its logs empty until the test adds some."""
    with FakeAuth0(tmp_path) as fake:
        yield fake


@pytest.fixture
def queues() -> tuple[str, str]:
    """Two queues of the test's own: successful logins and signups; failed logins."""
    suffix = uuid.uuid4().hex[:8]
    return f"test.bf.ok.{suffix}", f"test.bf.failed.{suffix}"


@pytest.fixture
def routes(queues: tuple[str, str]) -> str:
    """AUTH0_EVENTS_ROUTES: s and ss to the first queue, the auth.login.fail category to the second."""
    return f"s={queues[0]},ss={queues[0]},auth.login.fail={queues[1]}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite ledger of the test's own."""
    url = f"sqlite:///{tmp_path / 'backfill.sqlite3'}"
    upgrade(url)
    return url


@pytest.fixture
def backfill(broker_url: str, fake: FakeAuth0, routes: str, sqlite_url: str) -> Callable[..., Run]:
    """Run the command against the fake with --json and --rate 50, publishing to the run's vhost; keyword
    arguments override the env."""

    def run(*args: str, database_url: str = sqlite_url, **env: str) -> Run:
        environment = {
            **os.environ,
            **fake.env(),
            "DATABASE_URL": database_url,
            "AUTH0_EVENTS_ROUTES": routes,
            **env,
        }
        command = [str(CLI), "backfill", "--json", "--rate", "50", *args]
        result = subprocess.run(
            command, env=environment, capture_output=True, text=True, timeout=60, cwd=ROOT
        )
        assert "Traceback" not in result.stderr, result.stderr
        return Run(result.returncode, result.stdout, result.stderr)

    return run


def queued(broker: Any, queues: tuple[str, str]) -> Published:
    """Take every message from the test's queues: log_ids per queue, in order, checking each message."""
    found: Published = {}
    for queue in queues:
        found[queue] = []
        for message in take_messages(broker, queue):
            kwargs = task_kwargs(message)
            (record,), _kwargs, _embed = message.decode()
            assert record["log_id"] == kwargs["log_id"] == record["data"]["log_id"]
            assert record["data"]["type"] == kwargs["event_type"]
            found[queue].append(kwargs["log_id"])
    return found


def expected(logs: list[dict[str, Any]], routes: str) -> Published:
    """Where each routed log belongs, in log_id order; the others are filtered out."""
    table = parse_routes(routes)
    found: Published = {queue: [] for queue in table.queues}
    for log in logs:
        queue = table.queue_for(log["type"])
        if queue is not None:
            found[queue].append(log["log_id"])
    return found


def link_target(call: Call) -> str:
    """The request target of the Link rel="next" URL a logs page answered with."""
    link = call.response_headers["Link"]
    assert link.startswith("<https://"), link
    assert link.endswith('>; rel="next"'), link
    url = urlsplit(link.removeprefix("<").removesuffix('>; rel="next"'))
    return f"{url.path}?{url.query}"


def test_thousands_of_logs_are_published_once_each_to_their_queue(
    fake: FakeAuth0,
    backfill: Callable[..., Run],
    broker: Any,
    routes: str,
    queues: tuple[str, str],
    sqlite_url: str,
) -> None:
    """2,500 logs over 25 pages and an empty page, following Link: every routed log once, to its queue."""
    logs = make_logs(2500, START)
    fake.add_logs(logs)

    run = backfill("--from", BEFORE_ALL)

    assert run.returncode == 0, run.stderr
    want = expected(logs, routes)
    assert queued(broker, queues) == want
    published = sum(len(ids) for ids in want.values())
    summary = run.summary
    assert summary["pages"] == 25
    assert summary["logs_read"] == 2500
    assert summary["published"] == published
    assert summary["filtered"] == 2500 - published
    assert (summary["quarantined"], summary["already_processed"], summary["duplicates"]) == (0, 0, 0)
    assert (summary["checkpoint"], summary["stopped"]) == (logs[-1]["log_id"], "end of logs")
    calls = fake.log_requests()
    assert statuses(calls) == [200] * 26
    assert calls[0].query == {"from": BEFORE_ALL, "take": "100"}
    assert all(call.target == link_target(previous) for previous, call in zip(calls, calls[1:], strict=False))
    assert calls[-1].response == []
    assert link_target(calls[-1]) == calls[-1].target
    [token] = fake.token_requests()
    assert {call.authorization for call in calls} == {f"Bearer {token.response['access_token']}"}
    saved = CheckpointStore(sqlite_url, fake.domain).load()
    assert saved == Checkpoint(logs[-1]["log_id"], START + timedelta(seconds=2499))


def test_rate_limit_in_the_middle_waits_for_the_reset_and_loses_nothing(
    fake: FakeAuth0, backfill: Callable[..., Run], broker: Any, routes: str, queues: tuple[str, str]
) -> None:
    """A 429 on the 5th page: the same request again at x-ratelimit-reset; no page lost or repeated."""
    logs = make_logs(800, START)
    fake.add_logs(logs)
    fake.rate_limit(times=1, reset_in=1.5, path="/api/v2/logs", after=4)

    run = backfill("--from", BEFORE_ALL)

    assert run.returncode == 0, run.stderr
    calls = fake.log_requests()
    assert statuses(calls) == [200] * 4 + [429] + [200] * 5
    limited, retried = calls[4], calls[5]
    assert retried.target == limited.target
    assert retried.at >= int(limited.response_headers["x-ratelimit-reset"])
    assert "rate limited by Auth0" in run.stderr
    assert "waiting" in run.stderr
    assert queued(broker, queues) == expected(logs, routes)
    assert (run.summary["pages"], run.summary["rate_limit_waits"]) == (8, 1)


def test_no_remaining_requests_pauses_until_the_reset_without_a_429(
    fake: FakeAuth0, backfill: Callable[..., Run], broker: Any, routes: str, queues: tuple[str, str]
) -> None:
    """x-ratelimit-remaining: 0 holds the next request until x-ratelimit-reset, so no 429 ever comes."""
    fake.logs_limit = (3, 1)
    logs = make_logs(700, START)
    fake.add_logs(logs)

    run = backfill("--from", BEFORE_ALL, "--rate", "100")

    assert run.returncode == 0, run.stderr
    assert statuses(fake.log_requests()) == [200] * 8
    assert "x-ratelimit-remaining: 0" in run.stderr
    assert queued(broker, queues) == expected(logs, routes)


def test_interrupted_run_resumes_from_its_checkpoint(
    fake: FakeAuth0,
    backfill: Callable[..., Run],
    broker: Any,
    routes: str,
    queues: tuple[str, str],
    database_url: str,
) -> None:
    """--max-pages 3 stops with its checkpoint saved; a run without a start resumes there: each log once."""
    url = database_url
    logs = make_logs(1000, START)
    fake.add_logs(logs)

    first = backfill("--from", BEFORE_ALL, "--max-pages", "3", database_url=url)

    assert first.returncode == 0, first.stderr
    assert (first.summary["stopped"], first.summary["checkpoint"]) == ("--max-pages", logs[299]["log_id"])
    assert len(fake.log_requests()) == 3  # the 4th page is not even fetched
    before = queued(broker, queues)
    assert before == expected(logs[:300], routes)

    second = backfill(database_url=url)

    assert second.returncode == 0, second.stderr
    assert fake.log_requests()[3].query["from"] == logs[299]["log_id"]
    after = queued(broker, queues)
    assert {queue: before[queue] + after[queue] for queue in queues} == expected(logs, routes)
    assert (second.summary["pages"], second.summary["checkpoint"]) == (7, logs[-1]["log_id"])
    if url.startswith("postgresql"):  # the run's database is shared: leave no checkpoint behind
        with session_scope(url) as session:
            session.execute(delete(BackfillCheckpoint).where(BackfillCheckpoint.domain == fake.domain))


def test_auth0_failing_mid_run_exits_3_and_the_next_run_resumes(
    fake: FakeAuth0,
    backfill: Callable[..., Run],
    broker: Any,
    routes: str,
    queues: tuple[str, str],
    sqlite_url: str,
) -> None:
    """503s on page 4 after its retries: exit 3 naming the checkpoint; the rerun resumes: each log once."""
    logs = make_logs(600, START)
    fake.add_logs(logs)
    fake.fail(503, times=3, path="/api/v2/logs", after=3)

    failed = backfill("--from", BEFORE_ALL, "--retries", "2")

    assert failed.returncode == 3, failed.stderr
    assert "HTTP 503" in failed.stderr
    assert "gave up after 3 attempts" in failed.stderr
    assert f"the checkpoint stays at log_id {logs[299]['log_id']}" in failed.stderr
    assert statuses(fake.log_requests()) == [200, 200, 200, 503, 503, 503]
    assert CheckpointStore(sqlite_url, fake.domain).load() == Checkpoint(
        logs[299]["log_id"], START + timedelta(seconds=299)
    )
    before = queued(broker, queues)

    resumed = backfill()

    assert resumed.returncode == 0, resumed.stderr
    after = queued(broker, queues)
    assert {queue: before[queue] + after[queue] for queue in queues} == expected(logs, routes)


def test_nothing_after_the_checkpoint_is_one_empty_page(
    fake: FakeAuth0, backfill: Callable[..., Run], broker: Any, queues: tuple[str, str]
) -> None:
    """From the newest log: one request answering [] and linking to itself; nothing published, exit 0."""
    logs = make_logs(50, START)
    fake.add_logs(logs)

    run = backfill("--from", logs[-1]["log_id"])

    assert run.returncode == 0, run.stderr
    assert run.summary["pages"] == run.summary["logs_read"] == 0
    assert (run.summary["stopped"], run.summary["checkpoint"]) == ("end of logs", None)
    [call] = fake.log_requests()
    assert call.response == []
    assert link_target(call) == call.target
    assert queued(broker, queues) == {queue: [] for queue in queues}


def test_since_starts_at_the_first_log_at_that_time_and_until_stops(
    fake: FakeAuth0, backfill: Callable[..., Run], broker: Any, routes: str, queues: tuple[str, str]
) -> None:
    """--since: a date search finds the first log, included; --until stops before; --rate spaces calls."""
    logs = make_logs(450, START, step=timedelta(minutes=1))  # logs[123] is dated 02:03, logs[360] 06:00
    fake.add_logs(logs)

    run = backfill("--since", "2026-11-20T02:03Z", "--until", "2026-11-20T06:00Z", "--rate", "4")

    assert run.returncode == 0, run.stderr
    search, *pages = fake.log_requests()
    assert search.query == {
        "q": "date:[2026-11-20T02:03:00.000Z TO *]",
        "sort": "date:1",
        "per_page": "1",
        "page": "0",
        "include_totals": "false",
    }
    assert [call.query.get("from") for call in pages] == [logs[i]["log_id"] for i in (123, 223, 323)]
    assert queued(broker, queues) == expected(logs[123:360], routes)
    assert (run.summary["stopped"], run.summary["checkpoint"]) == ("--until", logs[359]["log_id"])
    times = [call.at for call in pages]  # (the search's time includes the token request's)
    assert min(later - earlier for earlier, later in zip(times, times[1:], strict=False)) > 0.22


def test_events_already_processed_are_not_published_again(
    fake: FakeAuth0,
    backfill: Callable[..., Run],
    broker: Any,
    routes: str,
    queues: tuple[str, str],
    sqlite_url: str,
) -> None:
    """Logs the ledger marks processed are counted, not published; a retrying one is published."""
    logs = make_logs(200, START)
    fake.add_logs(logs)
    table = parse_routes(routes)
    routed = [log for log in logs if table.queue_for(log["type"])]
    processed, retrying = routed[::3], routed[1]
    with session_scope(sqlite_url) as session:
        for log, state in [*((log, "processed") for log in processed), (retrying, "retrying")]:
            now = utcnow()
            session.add(
                Event(log_id=log["log_id"], type=log["type"], raw={"log_id": log["log_id"], "data": log},
                      received_at=now, updated_at=now, state=state)
            )  # fmt: skip

    run = backfill("--from", BEFORE_ALL)

    assert run.returncode == 0, run.stderr
    assert run.summary["already_processed"] == len(processed)
    assert run.summary["published"] == len(routed) - len(processed)
    done = {log["log_id"] for log in processed}
    assert queued(broker, queues) == expected([log for log in logs if log["log_id"] not in done], routes)


def test_expired_token_is_renewed_once_mid_run(
    fake: FakeAuth0, backfill: Callable[..., Run], broker: Any, routes: str, queues: tuple[str, str]
) -> None:
    """A 401 for a token that worked before: a new token, the same request again, nothing lost."""
    logs = make_logs(400, START)
    fake.add_logs(logs)
    fake.fail(401, times=1, path="/api/v2/logs", after=2)

    run = backfill("--from", BEFORE_ALL)

    assert run.returncode == 0, run.stderr
    assert statuses(fake.token_requests()) == [200, 200]
    calls = fake.log_requests()
    assert statuses(calls) == [200, 200, 401, 200, 200, 200]
    assert calls[3].target == calls[2].target
    assert queued(broker, queues) == expected(logs, routes)


@pytest.mark.parametrize(
    ("problem", "says"),
    [
        ("wrong secret", ["/oauth/token refused", "HTTP 401", "AUTH0_CLIENT_SECRET"]),
        ("no read:logs", ["refused to list logs", "HTTP 403", "insufficient_scope", "read:logs scope"]),
    ],
)
def test_refused_credentials_fail_cleanly_naming_the_fix(
    fake: FakeAuth0,
    backfill: Callable[..., Run],
    broker: Any,
    queues: tuple[str, str],
    sqlite_url: str,
    problem: str,
    says: list[str],
) -> None:
    """A wrong client secret (token 401) or a grant without read:logs (403): exit 1 saying what to fix."""
    fake.add_logs(make_logs(10, START))
    env = {"AUTH0_CLIENT_SECRET": "not-the-secret"} if problem == "wrong secret" else {}
    if problem == "no read:logs":
        fake.granted_scopes = ("update:users",)

    run = backfill("--from", BEFORE_ALL, **env)

    assert run.returncode == 1, run.stderr
    assert all(text in run.stderr for text in says), run.stderr
    assert len(fake.token_requests()) == 1  # no retries of a refusal
    assert CheckpointStore(sqlite_url, fake.domain).load() is None
    assert queued(broker, queues) == {queue: [] for queue in queues}


def test_unreachable_auth0_exits_3_after_retries(backfill: Callable[..., Run]) -> None:
    """Connection refused at AUTH0_DOMAIN: retries with backoff, then exit 3 naming the domain."""
    domain = f"127.0.0.1:{free_port()}"

    run = backfill("--from", BEFORE_ALL, "--retries", "1", AUTH0_DOMAIN=domain)

    assert run.returncode == 3, run.stderr
    assert f"token endpoint https://{domain}/oauth/token" in run.stderr
    assert "gave up after 2 attempts" in run.stderr
    assert "retry 1/1" in run.stderr


@pytest.mark.parametrize(
    ("path", "status"),
    [("/oauth/token", 307), ("/oauth/token", 308), ("/api/v2/logs", 307)],
    ids=["token-307", "token-308", "logs-307"],
)
def test_redirect_to_another_origin_is_refused_without_sending_credentials(
    fake: FakeAuth0,
    backfill: Callable[..., Run],
    broker: Any,
    queues: tuple[str, str],
    sqlite_url: str,
    path: str,
    status: int,
) -> None:
    """A 307/308 from the token or logs endpoint elsewhere: not followed; exit 1 saying so, nothing sent."""
    fake.add_logs(make_logs(10, START))
    with fake.other_origin() as other:
        fake.redirect(other.origin, path, status)

        run = backfill("--from", BEFORE_ALL)

    tokens = [call.response["access_token"] for call in fake.token_requests() if call.status == 200]
    assert not [secret for secret in [fake.client_secret, *tokens] if other.saw(secret)]
    assert other.received == []
    assert run.returncode == 1, run.stderr
    assert f"HTTP {status} redirect to {other.origin}{path}" in run.stderr
    assert "not followed" in run.stderr
    assert CheckpointStore(sqlite_url, fake.domain).load() is None
    assert queued(broker, queues) == {queue: [] for queue in queues}


def test_certificates_are_verified(fake: FakeAuth0, backfill: Callable[..., Run]) -> None:
    """Without the fake's CA in SSL_CERT_FILE, TLS verification fails at the token endpoint: exit 3."""
    run = backfill("--from", BEFORE_ALL, "--retries", "0", SSL_CERT_FILE=certifi.where())

    assert run.returncode == 3, run.stderr
    assert f"token endpoint https://{fake.domain}/oauth/token" in run.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in run.stderr
    assert fake.calls == []


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        (
            "BROKER_URL",
            "amqp://guest:guest@127.0.0.1:{port}//",
            "cannot reach the broker at amqp://guest:**@",
        ),
        ("database_url", "postgresql://someone:secret@127.0.0.1:{port}/x", "in postgresql://someone:***@"),
        ("database_url", "sqlite:///{tmp}/empty.sqlite3", "no such table: backfill_checkpoints"),
    ],
    ids=["broker refusing", "database refusing", "database not migrated"],
)
def test_unreachable_broker_or_database_exits_3_before_asking_auth0(
    fake: FakeAuth0, backfill: Callable[..., Run], tmp_path: Path, variable: str, value: str, says: str
) -> None:
    """Broker or database refusing connections, or not migrated: exit 3 naming it, and no Auth0 call."""
    run = backfill("--from", BEFORE_ALL, **{variable: value.format(port=free_port(), tmp=tmp_path)})

    assert run.returncode == 3, run.stderr
    assert says in run.stderr
    assert fake.calls == []


def test_start_must_be_given_once_or_saved(fake: FakeAuth0, backfill: Callable[..., Run]) -> None:
    """No --from/--since and no checkpoint: exit 1 saying how to start; both options: a usage error."""
    missing = backfill()
    both = backfill("--from", BEFORE_ALL, "--since", "2026-11-20")

    assert missing.returncode == 1, missing.stderr
    assert "no checkpoint is saved for this tenant yet" in missing.stderr
    assert "--since" in missing.stderr
    assert "--from LOG_ID" in missing.stderr
    assert both.returncode == 2, both.stderr
    assert "--from and --since exclude each other" in both.stderr
    assert fake.calls == []


def test_progress_is_drawn_when_stderr_is_a_terminal(
    broker_url: str, fake: FakeAuth0, routes: str, sqlite_url: str, tmp_path: Path
) -> None:
    """On a terminal: a line per page with pages, logs, logs/s and the current log_id and date."""
    logs = make_logs(300, START)
    fake.add_logs(logs)
    env = {
        **os.environ,
        **fake.env(),
        "DATABASE_URL": sqlite_url,
        "AUTH0_EVENTS_ROUTES": routes,
    }
    controller, terminal = pty.openpty()
    with open(tmp_path / "stdout", "w") as stdout:
        process = subprocess.Popen(
            [str(CLI), "backfill", "--from", BEFORE_ALL, "--rate", "50"],
            stdout=stdout,
            stderr=terminal,
            env=env,
        )
    os.close(terminal)
    drawn = read_until_closed(controller)
    assert process.wait(timeout=30) == 0, drawn
    assert "page 3 · 300 logs" in drawn
    assert f"logs/s · at {logs[-1]['log_id']} 2026-11-20T00:04:59.000Z" in drawn
    text = (tmp_path / "stdout").read_text()
    assert text.startswith(f"backfill of {fake.domain} done: end of logs")
    assert f"checkpoint         {logs[-1]['log_id']}" in text


def read_until_closed(fd: int, timeout: float = 30.0) -> str:
    """Everything written to a pty until its other end closes."""
    chunks: list[bytes] = []

    def closed() -> bool:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            return False
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: every writer has gone
            return True
        chunks.append(chunk)
        return not chunk

    wait_for(closed, timeout, 0, "the command's terminal to close")
    os.close(fd)
    return b"".join(chunks).decode(errors="replace")


# -- the plain functions, in-process -------------------------------------------------------------------


class FakeClock:
    """time.time and time.sleep for a Pacer, without waiting."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        """Advance the clock."""
        self.slept.append(round(seconds, 3))
        self.now += seconds


def test_pacer_spaces_requests_and_holds_them_while_none_remain() -> None:
    """--rate spaces requests; x-ratelimit-remaining: 0 holds the next one until x-ratelimit-reset."""
    clock, notes = FakeClock(), list[str]()
    pacer = QuotaPacer(4, notes.append, max_wait=60, clock=lambda: clock.now, sleep=clock.sleep)
    pacer.wait()
    pacer.wait()
    pacer.observe({"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(clock.now + 3)})
    pacer.wait()
    pacer.observe({"x-ratelimit-remaining": "5", "x-ratelimit-reset": str(clock.now + 3)})
    pacer.wait()
    assert clock.slept == [0.25, 3.0, 0.25]
    assert notes == ["Auth0 says no requests remain (x-ratelimit-remaining: 0): pausing 3.0 s"]


@dataclass
class MemoryStore:
    """A Store in memory: saved checkpoints in order, and the log_ids the ledger calls processed."""

    done: set[str]
    saved: list[Checkpoint]

    def save(self, checkpoint: Checkpoint) -> None:
        """Remember the checkpoint."""
        self.saved.append(checkpoint)

    def processed(self, log_ids: Collection[str]) -> set[str]:
        """The processed ones among ``log_ids``."""
        return self.done & set(log_ids)


@dataclass
class RecordingPublisher:
    """A Publisher that keeps what it was given, or fails on a given page."""

    published: list[list[str]]
    fail_on: str = ""

    def publish(self, intake: Intake, request_id: str) -> None:
        """Record the page's accepted log_ids."""
        if request_id.endswith(self.fail_on) and self.fail_on:
            raise PublishError("broker refused 1 message(s) (basic.nack)")
        self.published.append([event.log_id for event in intake.accepted])


def test_run_counts_every_log_once_and_saves_after_each_confirmed_page() -> None:
    """Repeats of the start or of the previous page are duplicates; --until cuts a page; counts add up."""
    logs = make_logs(12, START, step=timedelta(minutes=1))
    pages = [[logs[0], *logs[1:5]], [logs[4], *logs[5:9]], logs[9:12], []]  # page 2 repeats logs[4]
    store, publisher = MemoryStore({logs[5]["log_id"]}, []), RecordingPublisher([])
    routes = parse_routes("*=test.all")

    summary = run_backfill(
        pages,
        routes,
        publisher,
        store,
        Limits(until=START + timedelta(minutes=10)),
        after_log_id=logs[0]["log_id"],
    )

    assert publisher.published == [[log["log_id"] for log in logs[i:j]] for i, j in ((1, 5), (6, 9), (9, 10))]
    assert [checkpoint.log_id for checkpoint in store.saved] == [logs[i]["log_id"] for i in (4, 8, 9)]
    counts = summary.as_dict()
    assert (counts["pages"], counts["logs_read"], counts["duplicates"], counts["already_processed"]) == (
        3,
        11,
        2,
        1,
    )
    assert counts["logs_read"] == sum(
        counts[key] for key in ("published", "filtered", "quarantined", "already_processed", "duplicates")
    )
    assert counts["stopped"] == "--until"


def test_unconfirmed_page_is_not_checkpointed() -> None:
    """A page the broker does not confirm: ServiceUnavailable naming the last confirmed checkpoint."""
    logs = make_logs(6, START)
    store, publisher = MemoryStore(set(), []), RecordingPublisher([], fail_on="-p2")

    with pytest.raises(
        ServiceUnavailable, match=f"did not confirm page 2.*stays at log_id {logs[2]['log_id']}"
    ):
        run_backfill([logs[:3], logs[3:], []], parse_routes("*=test.all"), publisher, store)

    assert [checkpoint.log_id for checkpoint in store.saved] == [logs[2]["log_id"]]
