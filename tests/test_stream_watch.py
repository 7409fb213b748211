"""`auth0-events stream status` and `stream watch` against the local HTTPS Auth0 stand-in (fake_auth0.py).

The log streams' status, gaps filled once through the backfill's run, resuming, the lease, crashes, Auth0
down, hostile values. Real RabbitMQ, the Procfile's receiver (gunicorn) as the stream's endpoint, real
workers where processing matters; SQLite and PostgreSQL where the database matters.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import hypothesis.strategies as st
import pytest
from sqlalchemy import delete, select

from cli.management.api import AccessDenied, BackfillError, Credentials, QuotaPacer, RequestRetries
from cli.management.fill import CheckpointStore
from cli.management.logs import Checkpoint, iso_millis
from cli.stream import metrics
from cli.stream.command import watcher_for
from cli.stream.lease import NAME, Lease
from cli.stream.streams import StreamsClient
from kernel.routing import parse_routes
from kernel.settings import load_settings
from kernel.storage.db import dispose_engines, session_scope
from kernel.storage.models import Event, WatcherLease, utcnow
from tests.fake_auth0 import FakeAuth0, make_logs
from tests.helpers import ROOT, count_lines, free_port, procfile_receiver, take_messages, wait_for

# Each test runs the command line, the receiver or both.
pytestmark = pytest.mark.process

CLI = Path(sys.executable).parent / "auth0-events"
TOKEN = os.environ["AUTH0_LOG_STREAM_TOKENS"].split(",")[0]


@dataclass(frozen=True)
class Run:
    """One finished command."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def report(self) -> dict[str, Any]:
        """The --json output."""
        result: dict[str, Any] = json.loads(self.stdout)
        return result


@pytest.fixture(scope="module")
def queues() -> tuple[str, str]:
    """Two queues of this module's own: successful logins and signups; failed logins."""
    suffix = uuid.uuid4().hex[:8]
    return f"test.sw.ok.{suffix}", f"test.sw.failed.{suffix}"


@pytest.fixture(scope="module")
def routes(queues: tuple[str, str]) -> str:
    """AUTH0_EVENTS_ROUTES: s and ss to the first queue, the auth.login.fail category to the second."""
    return f"s={queues[0]},ss={queues[0]},auth.login.fail={queues[1]}"


@pytest.fixture(scope="module")
def receiver(broker_url: str, routes: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The Procfile's receiver on these routes: where the stand-in's stream delivers."""
    log = tmp_path_factory.mktemp("receiver") / "gunicorn.log"
    with procfile_receiver(log, {"AUTH0_EVENTS_ROUTES": routes}) as process:
        yield process


@pytest.fixture
def fake(broker_url: str, tmp_path: Path) -> Iterator[FakeAuth0]:
    """A running stand-in tenant without streams or logs (and the run's vhost, where a fill publishes)."""
    with FakeAuth0(tmp_path) as fake:
        yield fake


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite ledger of the test's own."""
    from kernel.storage.db import upgrade

    url = f"sqlite:///{tmp_path / 'watch.sqlite3'}"
    upgrade(url)
    return url


@pytest.fixture
def postgres_database(new_postgres_database: Any) -> Iterator[str]:
    """database_url's PostgreSQL database is the test's own: a watcher's first pass starts at the oldest
    event the ledger holds, which in the run's shared database is another test's."""
    with new_postgres_database() as url:
        yield url
        dispose_engines()  # closes this process's pooled connections before the database is dropped


@pytest.fixture
def ledger(database_url: str) -> str:
    """database_url: a ledger of the test's own, SQLite, then PostgreSQL."""
    return database_url


def fresh_logs(count: int, age: timedelta = timedelta(hours=1)) -> list[dict[str, Any]]:
    """``count`` log entries a second apart, the first ``age`` ago, log_ids no other test has."""
    start = (datetime.now(UTC) - age).replace(microsecond=0)
    return make_logs(count, start, first=random.randrange(10**12) * 1000)


def env_for(fake: FakeAuth0, database_url: str, routes: str, **extra: str) -> dict[str, str]:
    """The environment of a `stream` command against ``fake``: grace 0, a fast rate."""
    return {
        **os.environ,
        **fake.env(),
        "DATABASE_URL": database_url,
        "AUTH0_EVENTS_ROUTES": routes,
        "AUTH0_EVENTS_WATCH_GRACE": "0",
        "AUTH0_EVENTS_WATCH_RATE": "50",
        "AUTH0_EVENTS_LOG_FORMAT": "text",
        **extra,
    }


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> Run:
    """Run `auth0-events <args>`; no traceback, whatever the outcome."""
    result = subprocess.run(
        [str(CLI), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    assert "Traceback" not in result.stderr, result.stderr
    return Run(result.returncode, result.stdout, result.stderr)


def routed(logs: list[dict[str, Any]], routes: str) -> list[str]:
    """The log_ids the routes accept, in order."""
    table = parse_routes(routes)
    return [log["log_id"] for log in logs if table.queue_for(log["type"]) is not None]


def archived(url: str, log_ids: list[str]) -> dict[str, tuple[str, str, int]]:
    """(state, source, attempts) of each of ``log_ids`` the archive holds."""
    with session_scope(url, read_only=True) as session:
        rows = session.execute(
            select(Event.log_id, Event.state, Event.source, Event.attempts).where(Event.log_id.in_(log_ids))
        )
        return {row.log_id: (row.state, row.source, row.attempts) for row in rows}


def seed(url: str, logs: list[dict[str, Any]], source: str = "stream") -> None:
    """Put ``logs`` in the archive as processed events, as the workers would have."""
    now = utcnow()
    with session_scope(url) as session:
        for log in logs:
            session.add(
                Event(
                    log_id=log["log_id"],
                    type=log["type"],
                    date=datetime.fromisoformat(log["date"].replace("Z", "+00:00")),
                    raw={"log_id": log["log_id"], "data": log},
                    received_at=now,
                    source=source,
                    state="processed",
                    attempts=1,
                    updated_at=now,
                )
            )


def queued(broker: Any, queues: tuple[str, str]) -> list[str]:
    """Take every message of the test's queues: their log_ids, with the source each carries."""
    found = []
    for queue in queues:
        for message in take_messages(broker, queue):
            _args, kwargs, _embed = message.decode()
            assert kwargs.get("source") == "backfill", kwargs
            found.append(kwargs["log_id"])
    return found


def watch_settings(fake: FakeAuth0, database_url: str, routes: str) -> dict[str, Any]:
    """load_settings' overrides for an in-process watcher on ``fake``: grace 0, a fast rate."""
    return {
        "auth0_domain": fake.domain,
        "auth0_client_id": fake.client_id,
        "auth0_client_secret": fake.client_secret,
        "database_url": database_url,
        "routes": routes,
        "watch_grace": 0,
        "watch_rate": 50,
    }


def worker_env(database_url: str, routes: str) -> dict[str, str]:
    """A worker's environment on the test's ledger and routes."""
    return {"DATABASE_URL": database_url, "AUTH0_EVENTS_ROUTES": routes}


# -- the stand-in's log-streams endpoints --------------------------------------------------------------------


def streams_client(fake: FakeAuth0, monkeypatch: pytest.MonkeyPatch, http: httpx.Client) -> StreamsClient:
    """A StreamsClient on ``fake`` (its CA trusted), retrying fast."""
    monkeypatch.setenv("SSL_CERT_FILE", str(fake.ca_file))
    notes: list[str] = []
    policy = RequestRetries(retries=1, backoff=0.01)
    credentials = Credentials(fake.domain, fake.client_id, fake.client_secret)
    return StreamsClient(credentials, http, QuotaPacer(100, notes.append, 5), notes.append, policy)


def test_log_streams_answer_auth0s_shapes_and_errors(
    fake: FakeAuth0, monkeypatch: pytest.MonkeyPatch
) -> None:
    """List and get answer the SDK's shapes; 404, 400 (suspended, a bad body), 429 (waited out), 401 (renewed)
    and 403 (a missing scope, named) each come back as Auth0 documents them."""
    ours = fake.add_stream("https://events.example.com/webhooks/auth0", TOKEN)
    monkeypatch.setenv("SSL_CERT_FILE", str(fake.ca_file))
    with httpx.Client() as http:
        client = streams_client(fake, monkeypatch, http)
        [listed] = client.list()
        assert (listed.id, listed.status, listed.endpoint) == (
            ours,
            "active",
            "https://events.example.com/webhooks/auth0",
        )
        assert client.stream(ours) == listed
        with pytest.raises(BackfillError, match="HTTP 404: inexistent_log_stream"):
            client.stream("lst_does_not_exist")
        fake.set_stream_status(ours, "suspended")
        token = {"Authorization": f"Bearer {client.tokens.get()}"}
        target = f"https://{fake.domain}/api/v2/log-streams/{ours}"
        bodies: list[Any] = [{"status": "suspended"}, [], {"colour": "red"}]
        for body in bodies:
            refused = http.patch(target, json=body, headers=token)
            assert refused.status_code == 400, body
            assert refused.json()["errorCode"] == "invalid_body"
            assert refused.json()["message"].startswith("Payload validation error")
        fake.rate_limit(times=1, reset_in=1.0, path="/api/v2/log-streams")
        started = time.time()
        assert client.activate(ours).active
        limited, patched = fake.stream_requests("PATCH")[-2:]
        assert (limited.status, patched.status) == (429, 200)
        assert patched.at >= int(limited.response_headers["x-ratelimit-reset"])
        assert time.time() - started < 10
        fake.revoke_tokens()
        assert client.list()[0].active  # a 401 for a token that worked: a new one, once
        assert [call.status for call in fake.stream_requests()][-2:] == [401, 200]
    fake.granted_scopes = ("read:logs",)
    with httpx.Client() as http, pytest.raises(AccessDenied, match="read:log_streams scope"):
        streams_client(fake, monkeypatch, http).list()
    assert fake.stream_requests()[-1].response["errorCode"] == "insufficient_scope"


# -- stream status -------------------------------------------------------------------------------------------


def test_status_marks_our_streams_and_exits_1_for_a_stopped_stream_or_an_open_gap(
    fake: FakeAuth0, sqlite_url: str, routes: str
) -> None:
    """The http stream to /webhooks/auth0 is ours (or the one AUTH0_EVENTS_STREAM_ID names); exit 0 while
    it is active and Auth0's newest log was received, 1 once it is paused or the newest was never received."""
    ours = fake.add_stream("https://events.example.com/webhooks/auth0/", TOKEN, name="ours")
    other = fake.add_stream("https://elsewhere.example.com/ingest", "x", name="siem")
    fake.add_stream("", name="datadog", stream_type="datadog")
    logs = [log for log in fresh_logs(40) if log["type"] == "s"]
    fake.add_logs(logs)
    seed(sqlite_url, logs)
    env = env_for(fake, sqlite_url, routes)

    healthy = cli(env, "stream", "status", "--json")

    assert healthy.returncode == 0, healthy.stderr
    report = healthy.report
    assert {s["id"]: s["points_at_us"] for s in report["streams"]} == {
        ours: True,
        other: False,
        "lst_0000000000000003": False,
    }
    assert report["last_received"]["log_id"] in {log["log_id"] for log in logs}
    assert report["newest_log"]["log_id"] == logs[-1]["log_id"]
    assert report["gap"]["open"] is False
    assert report["healthy"] is True

    fake.set_stream_status(ours, "paused")
    paused = cli(env, "stream", "status")
    assert paused.returncode == 1
    assert f"* {ours}  paused" in paused.stdout

    fake.set_stream_status(ours, "active")
    missing = fresh_logs(3, age=timedelta(minutes=30))
    missing = [{**log, "type": "s"} for log in missing]
    fake.add_logs(missing)
    gap = cli(env, "stream", "status", "--json")
    assert gap.returncode == 1
    assert gap.report["gap"]["open"] is True
    assert gap.report["newest_log"]["log_id"] == missing[-1]["log_id"]
    assert gap.report["gap"]["seconds"] > 0

    within_grace = cli({**env, "AUTH0_EVENTS_WATCH_GRACE": "3600"}, "stream", "status", "--json")
    assert within_grace.returncode == 0
    assert "within AUTH0_EVENTS_WATCH_GRACE" in within_grace.report["gap"]["reason"]

    by_id = cli(
        {**env, "AUTH0_EVENTS_STREAM_ID": other, "AUTH0_EVENTS_WATCH_GRACE": "3600"},
        "stream",
        "status",
        "--json",
    )
    assert [s["id"] for s in by_id.report["streams"] if s["points_at_us"]] == [other]


@pytest.mark.parametrize(
    ("stream", "says"),
    [
        ({"name": 12345, "status": "active"}, "not in Auth0's documented shape"),
        ({"status": ["active"]}, "unknown"),  # the SDK takes any status: shown as unknown, not active
        ({"sink": "https://events.example.com/webhooks/auth0"}, "not in Auth0's documented shape"),
        ({"id": "lst_" + "9" * 5000}, "log stream id that is not one"),
        ({"id": ""}, "without an id"),
    ],
)
def test_status_refuses_streams_of_the_wrong_shape_clearly(
    fake: FakeAuth0, sqlite_url: str, routes: str, stream: dict[str, Any], says: str
) -> None:
    """A stream Auth0 should never answer (wrong types, an absurd id): exit 1 with one line naming the
    problem, never the value, and no traceback."""
    stream_id = fake.add_stream("https://events.example.com/webhooks/auth0", TOKEN)
    fake.streams[stream_id].update(stream)

    run = cli(env_for(fake, sqlite_url, routes), "stream", "status")

    assert run.returncode == 1
    assert says in run.stderr + run.stdout
    assert "9" * 200 not in run.stderr
    assert len(run.stderr) < 1000


def test_status_shows_a_huge_or_odd_stream_name_bounded_and_printable(
    fake: FakeAuth0, sqlite_url: str, routes: str
) -> None:
    """A megabyte of name with newlines, ANSI escapes and bidi overrides: one bounded, inert line each."""
    name = "\x1b[31mred\nforged line\u202e" + "n" * 1_000_000
    fake.add_stream("https://events.example.com/webhooks/auth0", TOKEN, name=name)

    run = cli(env_for(fake, sqlite_url, routes), "stream", "status")

    lines = run.stdout.splitlines()
    assert lines[1].startswith("* lst_0000000000000001  active")
    assert "\x1b" not in run.stdout
    assert "\u202e" not in run.stdout
    assert "forged line" not in "".join(lines[2:])
    assert max(len(line) for line in lines) < 400
    as_json = cli(env_for(fake, sqlite_url, routes), "stream", "status", "--json")
    assert len(as_json.report["streams"][0]["name"]) <= 120


# -- stream watch: gaps --------------------------------------------------------------------------------------


def test_an_active_stream_without_a_gap_costs_the_status_call_and_one_page(
    fake: FakeAuth0, ledger: str, routes: str, broker: Any, queues: tuple[str, str]
) -> None:
    """Every routed log received: one GET /log-streams, one checkpoint page from the oldest received
    log, nothing published; the next pass reads one page from the checkpoint."""
    fake.add_stream("https://events.example.com/webhooks/auth0", TOKEN)
    logs = fresh_logs(60)
    fake.add_logs(logs)
    accepted = routed(logs, routes)
    seed(ledger, [log for log in logs if log["log_id"] in accepted])
    env = env_for(fake, ledger, routes)

    first = cli(env, "stream", "watch", "--once", "--json")

    assert first.returncode == 0, first.stderr
    assert first.report["fill"]["published"] == 0
    assert [call.path for call in fake.stream_requests()] == ["/api/v2/log-streams"]
    [page] = fake.log_requests()
    assert page.query == {"from": accepted[0], "take": "100"}
    assert fake.stream_requests("PATCH") == []
    assert queued(broker, queues) == []

    second = cli(env, "stream", "watch", "--once", "--json")

    assert second.returncode == 0, second.stderr
    assert [call.query for call in fake.log_requests()[1:]] == [{"from": logs[-1]["log_id"], "take": "100"}]


@pytest.mark.worker
def test_a_gap_the_stream_never_delivered_is_filled_once_and_tagged(
    fake: FakeAuth0,
    receiver: Any,
    ledger: str,
    routes: str,
    queues: tuple[str, str],
    start_worker: Any,
    effects_dir: Path,
) -> None:
    """40 logs, 12 deliveries dropped: the watch publishes exactly the routed dropped ones, the ledger
    skips the delivered ones; each is handled once, and the archive says which were backfilled."""
    fake.add_stream(f"{receiver.url}/webhooks/auth0", TOKEN)
    logs = fresh_logs(40)
    fake.drop_deliveries(12, after=15)
    fake.emit(logs)
    accepted = set(routed(logs, routes))
    dropped = accepted & set(fake.dropped)
    delivered = accepted - dropped
    assert len(fake.dropped) == 12
    assert dropped
    assert delivered
    start_worker(list(queues), env=worker_env(ledger, routes))
    wait_for(lambda: len(archived(ledger, sorted(delivered))) == len(delivered), 60, 0.2, "delivered ones")

    run = cli(env_for(fake, ledger, routes), "stream", "watch", "--once", "--json")

    assert run.returncode == 0, run.stderr
    assert run.report["fill"]["published"] == len(dropped)
    every = sorted(accepted)

    def all_processed() -> bool:
        rows = archived(ledger, every)
        return len(rows) == len(every) and all(state == "processed" for state, _s, _a in rows.values())

    wait_for(all_processed, 60, 0.2, "every routed log processed")
    rows = archived(ledger, every)
    assert {log_id for log_id, (_state, source, _a) in rows.items() if source == "backfill"} == dropped
    assert all(attempts == 1 for _state, _source, attempts in rows.values())
    assert all(count_lines(effects_dir, "effects.log", f"effect {log_id}") == 1 for log_id in every)
    shown = cli(env_for(fake, ledger, routes), "events", "show", sorted(dropped)[0])
    assert "source" in shown.stdout
    assert "backfill" in shown.stdout


def test_a_suspended_stream_alerts_is_filled_by_polling_and_resumed_only_when_allowed(
    fake: FakeAuth0,
    receiver: Any,
    sqlite_url: str,
    routes: str,
    broker: Any,
    queues: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Suspended: stream_up 0, the gap published by polling, no PATCH while AUTH0_EVENTS_WATCH_RESUME is off;
    on, with /readyz red: none either; with /readyz green: exactly one PATCH, and the stream is active."""
    stream_id = fake.add_stream(f"{receiver.url}/webhooks/auth0", TOKEN, status="suspended")
    logs = fresh_logs(30)
    assert fake.emit(logs) == []  # a suspended stream delivers nothing
    monkeypatch.setenv("SSL_CERT_FILE", str(fake.ca_file))
    base = watch_settings(fake, sqlite_url, routes)
    filled = metrics.GAP_FILLED._value.get()  # noqa: SLF001 - prometheus-client's counter value
    since = datetime.fromisoformat(logs[0]["date"].replace("Z", "+00:00"))

    with watcher_for(load_settings(**base), since) as watcher:
        report = watcher.run_pass()
        again = watcher.run_pass()

    assert (report.outcome, again.outcome) == ("ok", "ok")
    labels = {"stream": stream_id, "name": "auth0-events"}
    assert metrics.REGISTRY.get_sample_value("auth0_events_stream_up", labels) == 0
    assert sorted(queued(broker, queues)) == sorted(routed(logs, routes))
    assert metrics.GAP_FILLED._value.get() - filled == len(routed(logs, routes))  # noqa: SLF001
    assert report.resumes == again.resumes == {stream_id: "disabled"}
    assert fake.stream_requests("PATCH") == []

    red = {**base, "watch_resume": True, "watch_readyz_url": f"http://127.0.0.1:{free_port()}/readyz"}
    with watcher_for(load_settings(**red)) as watcher:
        assert watcher.run_pass().resumes == {stream_id: "receiver_not_ready"}
    assert fake.stream_requests("PATCH") == []

    green = {**base, "watch_resume": True, "watch_readyz_url": f"{receiver.url}/readyz"}
    with watcher_for(load_settings(**green)) as watcher:
        resumed = watcher.run_pass()
        after = watcher.run_pass()

    assert resumed.resumes == {stream_id: "activated"}
    assert after.resumes == {}
    [patch] = fake.stream_requests("PATCH")
    assert (patch.path, patch.body, patch.status) == (
        f"/api/v2/log-streams/{stream_id}",
        {"status": "active"},
        200,
    )
    assert metrics.REGISTRY.get_sample_value("auth0_events_stream_up", labels) == 1
    assert (
        metrics.REGISTRY.get_sample_value(
            "auth0_events_stream_resume_attempts_total", {"outcome": "activated"}
        )
        or 0 >= 1
    )


# -- one watcher acts ----------------------------------------------------------------------------------------


def test_one_watcher_holds_the_lease_until_it_expires_or_is_released(ledger: str) -> None:
    """Of eight asking at once, one gets it; the others get it only once it expired or was released."""
    leases = [Lease(ledger, 60, f"watcher-{number}") for number in range(8)]
    barrier = threading.Barrier(len(leases))
    results: dict[str, bool] = {}

    def ask(lease: Lease) -> None:
        barrier.wait()
        results[lease.holder] = lease.acquire()

    threads = [threading.Thread(target=ask, args=(lease,)) for lease in leases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    [holder] = [name for name, got in results.items() if got]
    first = next(lease for lease in leases if lease.holder == holder)
    other = next(lease for lease in leases if lease.holder != holder)
    assert first.acquire()
    assert not other.acquire()
    assert other.acquire(now=utcnow() + timedelta(seconds=61))  # expired: taken over
    assert not first.acquire()
    other.release()
    assert first.acquire()
    with session_scope(ledger) as session:
        session.execute(delete(WatcherLease).where(WatcherLease.name == NAME))


def test_a_second_watcher_stands_by_without_asking_auth0(fake: FakeAuth0, ledger: str, routes: str) -> None:
    """While one watcher holds the lease, another's pass makes no Management API request at all."""
    fake.add_stream("https://events.example.com/webhooks/auth0", TOKEN)
    fake.add_logs(fresh_logs(5))
    Lease(ledger, 60, "the-other-watcher").acquire()

    run = cli(env_for(fake, ledger, routes), "stream", "watch", "--once", "--json")

    assert run.returncode == 0, run.stderr
    assert (run.report["outcome"], run.report["leader"]) == ("standby", False)
    assert fake.calls == []


# -- crashes and outages -------------------------------------------------------------------------------------


@pytest.mark.worker
def test_a_watcher_killed_mid_fill_loses_and_repeats_nothing(
    fake: FakeAuth0,
    ledger: str,
    routes: str,
    queues: tuple[str, str],
    start_worker: Any,
    effects_dir: Path,
) -> None:
    """SIGKILL once the first page's checkpoint is saved: the next watcher (after the lease expired) walks on
    from it; every routed log is processed, each handler effect happens once."""
    fake.add_stream("https://unreachable.example.com/webhooks/auth0", TOKEN, status="paused")
    logs = fresh_logs(450)
    fake.add_logs(logs)
    accepted = routed(logs, routes)
    start_worker(list(queues), env=worker_env(ledger, routes))
    env = env_for(fake, ledger, routes, AUTH0_EVENTS_WATCH_RATE="2", AUTH0_EVENTS_WATCH_LEASE="2")
    since = iso_millis(datetime.fromisoformat(logs[0]["date"].replace("Z", "+00:00")))
    store = CheckpointStore(ledger, fake.domain)
    first = subprocess.Popen(
        [str(CLI), "stream", "watch", "--once", "--since", since],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: store.load() is not None, 60, 0.02, "the first confirmed page")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    killed_at = store.load()
    assert killed_at is not None
    assert killed_at.log_id != logs[-1]["log_id"]  # killed mid-fill

    def finished() -> bool:
        run = cli(env, "stream", "watch", "--once", "--json")
        return run.returncode == 0 and run.report["outcome"] == "ok"

    wait_for(finished, 60, 0.5, "a second watcher to take over and finish")

    def all_processed() -> bool:
        rows = archived(ledger, accepted)
        return len(rows) == len(accepted) and all(state == "processed" for state, _s, _a in rows.values())

    wait_for(all_processed, 90, 0.2, "every routed log processed")
    assert all(count_lines(effects_dir, "effects.log", f"effect {log_id}") == 1 for log_id in accepted)
    assert store.load() == Checkpoint(
        logs[-1]["log_id"], datetime.fromisoformat(logs[-1]["date"].replace("Z", "+00:00"))
    )


@contextmanager
def running_watch(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`auth0-events stream watch` with its output in ``log``; SIGTERM at the end must end it cleanly."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(CLI), "stream", "watch"], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(30)
    text = log.read_text()
    assert returncode == 0, text
    assert "Traceback" not in text


def watch_metrics(port: int) -> str:
    """The watcher's metrics page, or "" while it does not answer."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return ""


def test_without_credentials_the_watch_runs_idle_and_says_so(sqlite_url: str, tmp_path: Path) -> None:
    """No AUTH0_DOMAIN/CLIENT_ID/CLIENT_SECRET: `stream watch` (a Procfile process, which honcho would stop
    every other one for by exiting) logs that it is off and why, serves configured 0, and ends on SIGTERM;
    `--once` still refuses with exit 1."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AUTH0_CLIENT") and k != "AUTH0_DOMAIN"},
        "DATABASE_URL": sqlite_url,
        "AUTH0_EVENTS_METRICS_PORT": str(port),
        "AUTH0_EVENTS_LOG_FORMAT": "text",
    }
    once = subprocess.run(
        [str(CLI), "stream", "watch", "--once"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert once.returncode == 1
    assert "AUTH0_DOMAIN, AUTH0_CLIENT_ID, AUTH0_CLIENT_SECRET not set" in once.stderr
    log = tmp_path / "watch.log"
    with running_watch(env, log) as process:
        wait_for(
            lambda: "auth0_events_stream_watch_configured 0.0" in watch_metrics(port),
            60,
            0.2,
            "the idle watcher's metrics",
        )
        assert process.poll() is None
    assert (
        "stream watch is off: AUTH0_DOMAIN, AUTH0_CLIENT_ID, AUTH0_CLIENT_SECRET not set" in log.read_text()
    )


def test_auth0_unreachable_the_watch_runs_on_and_says_so(
    sqlite_url: str, routes: str, tmp_path: Path
) -> None:
    """Nothing listens at AUTH0_DOMAIN: passes end auth0_unavailable, counted and logged, the process lives
    on; SIGTERM ends it cleanly."""
    port = free_port()
    env = {
        **os.environ,
        "AUTH0_DOMAIN": f"127.0.0.1:{free_port()}",
        "AUTH0_CLIENT_ID": "id",
        "AUTH0_CLIENT_SECRET": "secret",
        "DATABASE_URL": sqlite_url,
        "AUTH0_EVENTS_ROUTES": routes,
        "AUTH0_EVENTS_WATCH_INTERVAL": "0.2",
        "AUTH0_EVENTS_METRICS_PORT": str(port),
        "AUTH0_EVENTS_LOG_FORMAT": "text",
    }
    log = tmp_path / "watch.log"
    with running_watch(env, log) as process:

        def unavailable_passes() -> float:
            text = watch_metrics(port)
            for line in text.splitlines():
                if line.startswith('auth0_events_stream_watch_passes_total{outcome="auth0_unavailable"}'):
                    return float(line.split()[-1]) >= 2 and "auth0_events_stream_watch_auth0_up 0.0" in text
            return 0

        wait_for(unavailable_passes, 60, 0.2, "two passes that found Auth0 unreachable")
        assert process.poll() is None
    text = log.read_text()
    assert "Auth0 unreachable" in text
    assert "ConnectError" in text


@pytest.mark.parametrize(("source", "problem"), [("backfill", None), ("stream", None), ("evil", "source")])
def test_the_worker_accepts_only_known_sources_of_an_event(source: str, problem: str | None) -> None:
    """A task message's optional source is stream or backfill; anything else is refused, named."""
    from tasks.task_message import body_problem
    from tests.helpers import make_record

    record = make_record("s")
    kwargs = {"event_type": "s", "log_id": record["log_id"], "received_at": None, "source": source}
    found = body_problem(
        [[record], kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    )
    assert (found if found is None else "source") == problem
    if problem:
        assert found == "its source is not one of stream, backfill"


def _nested(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # A def, not a lambda: Hypothesis reads the source of `extend`, which a lambda over lines defeats.
    return st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=300),
    _nested,
    max_leaves=12,
)
STREAM_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "id": JSON_VALUES | st.text(min_size=1, max_size=80),
        "name": JSON_VALUES,
        "type": st.sampled_from(["http", "datadog", "eventbridge"]) | JSON_VALUES,
        "status": st.sampled_from(["active", "paused", "suspended"]) | JSON_VALUES,
        "sink": st.fixed_dictionaries({}, optional={"httpEndpoint": JSON_VALUES}) | JSON_VALUES,
        "filters": JSON_VALUES,
    },
)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(fields=STREAM_FIELDS)
def test_any_answer_for_a_stream_becomes_a_bounded_stream_or_a_clear_error(fields: dict[str, Any]) -> None:
    """Whatever Auth0 answers for a stream, auth0-python's model of it becomes a Stream whose texts are
    printable and bounded, or a BackfillError; deciding whether it points at us never raises."""
    from auth0.management.core import ParsingError
    from auth0.management.core.pydantic_utilities import parse_obj_as
    from auth0.management.types import LogStreamResponseSchema
    from pydantic import ValidationError

    from cli.stream.streams import STATUSES, points_at_us, to_stream

    try:
        model: Any = parse_obj_as(type_=LogStreamResponseSchema, object_=fields)  # type: ignore[arg-type]
    except (ValidationError, ParsingError):
        return  # StreamsClient turns these into "not in Auth0's documented shape"
    try:
        stream = to_stream(model)
    except BackfillError:
        return
    for text in (stream.id, stream.name, stream.type, *stream.filters):
        assert len(text) <= 120
        assert text.isprintable() or "…" in text or "\N{REPLACEMENT CHARACTER}" in text
    assert stream.status in (*STATUSES, "unknown")
    assert isinstance(points_at_us(stream, ""), bool)


def test_a_watcher_that_lost_its_lease_mid_fill_stops_after_its_confirmed_page(
    fake: FakeAuth0,
    sqlite_url: str,
    routes: str,
    broker: Any,
    queues: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another watcher takes the expired lease while this one fills: it stops after the page it confirmed
    (standby), the checkpoint at that page's last log, nothing after it published."""
    logs = fresh_logs(250)
    fake.add_logs(logs)
    monkeypatch.setenv("SSL_CERT_FILE", str(fake.ca_file))
    settings = load_settings(**watch_settings(fake, sqlite_url, routes), watch_lease=30)
    since = datetime.fromisoformat(logs[0]["date"].replace("Z", "+00:00"))
    with watcher_for(settings, since) as watcher:
        renew, renewals = watcher.lease.renew, []

        def taken_over() -> None:  # after the 2nd page ([the first log found by --since], then 100 more)
            renewals.append(1)
            if len(renewals) == 2:
                Lease(sqlite_url, 30, "the-other-watcher").acquire(now=utcnow() + timedelta(seconds=31))
            renew()

        monkeypatch.setattr(watcher.lease, "renew", taken_over)
        report = watcher.run_pass()

    assert report.outcome == "standby"
    assert "another watcher took it" in report.problems[-1]
    assert CheckpointStore(sqlite_url, fake.domain).load() == Checkpoint(
        logs[100]["log_id"], datetime.fromisoformat(logs[100]["date"].replace("Z", "+00:00"))
    )
    assert sorted(queued(broker, queues)) == sorted(routed(logs[:101], routes))
