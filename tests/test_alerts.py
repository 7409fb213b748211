"""Suspicious-activity alerts: window counting, incidents, the webhook message and its delivery.

The plain functions run against both databases (``database_url``) and a real local HTTP server
(tests/fake_webhook.py); the end-to-end tests run a real worker fed by the receiver.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from kernel.events import Auth0Event, parse_event
from kernel.storage.db import session_scope
from kernel.storage.models import AlertHit, AlertIncident
from tasks.builtin import alerts
from tasks.builtin.alerts import (
    Alert,
    AlertConfig,
    AlertKey,
    Hit,
    IncidentState,
    WindowCount,
    alert_for_event,
    alert_keys,
    build_alert_message,
    count_in_window,
    event_time,
    open_or_extend_incident,
    prune_hits,
    record_hit,
    send_alert,
)
from tasks.handlers import PermanentError, RetryableError, registered, unregister
from tests.fake_webhook import FakeWebhook
from tests.helpers import TEST_TOKEN, as_jsonl, make_record, wait_for

# Importing the module registered its handler in this process; keep the registration for the test below
# and take it out, so in-process tests of other modules do not start sending alerts.
REGISTRATION = next(reg for reg in registered() if reg.name == alerts.HANDLER_NAME)
unregister(alerts.HANDLER_NAME)

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
WINDOW = timedelta(seconds=300)
THRESHOLD = 3


def seconds(value: float) -> timedelta:
    """A timedelta of ``value`` seconds."""
    return timedelta(seconds=value)


def iso(at: datetime) -> str:
    """Format a date the way Auth0 does."""
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def event(code: str, at: datetime | None, log_id: str | None = None, **data: Any) -> Auth0Event:
    """An Auth0 event of ``code`` dated ``at`` (no date when None)."""
    record = make_record(code, log_id, **data)
    if at is None:
        del record["data"]["date"]
    else:
        record["data"]["date"] = iso(at)
    return parse_event(record)


@pytest.fixture
def ip() -> str:
    """An IP no other test uses (PostgreSQL's database is shared by the whole run)."""
    raw = uuid.uuid4().bytes
    return f"10.{raw[0]}.{raw[1]}.{raw[2]}"


@pytest.fixture
def user() -> str:
    """A user_id no other test uses."""
    return f"auth0|{uuid.uuid4().hex}"


@pytest.fixture
def webhook() -> Iterator[FakeWebhook]:
    """A fresh fake alert webhook, closed after the test."""
    with FakeWebhook() as hook:
        yield hook


@pytest.fixture
def config(webhook: FakeWebhook) -> AlertConfig:
    """Threshold 3 within 300 s, posting to the fake webhook."""
    return AlertConfig(webhook.url, THRESHOLD, WINDOW, timeout=2.0)


def failed_login(ip: str, at: datetime, code: str = "f", log_id: str | None = None) -> Auth0Event:
    """A failed login from ``ip`` by a user of its own, so only the IP key can add up."""
    return event(code, at, log_id, ip=ip, user_id=f"auth0|{uuid.uuid4().hex}", user_name="")


def incident(url: str, key: str) -> AlertIncident | None:
    """The incident row of ``key``."""
    with session_scope(url) as session:
        return session.get(AlertIncident, key)


# --- keys and dates --------------------------------------------------------------------------------------


def test_failed_login_counts_against_its_ip_and_its_user() -> None:
    """f, fp and fu count against ip:<ip> and user:<user_id>, falling back to user:<user_name>."""
    keys = alert_keys(event("fp", T0, ip="1.2.3.4", user_id="auth0|1"))
    assert [(k.key, k.kind, k.immediate) for k in keys] == [
        ("ip:1.2.3.4", "ip", False),
        ("user:auth0|1", "user", False),
    ]
    assert [k.key for k in alert_keys(event("fu", T0, ip="", user_id="", user_name="eve@x"))] == [
        "user:eve@x"
    ]
    assert alert_keys(event("f", T0, ip="", user_id="", user_name="")) == []
    assert alert_keys(event("s", T0)) == []


def test_serious_codes_have_one_immediate_key_per_subject() -> None:
    """Serious codes key on code and user (limit_mu on the IP); without either, on the code alone."""
    assert alert_keys(event("pwd_leak", T0, ip="1.2.3.4", user_id="auth0|1")) == [
        AlertKey("pwd_leak:user:auth0|1", "user", "auth0|1", "pwd_leak")
    ]
    assert alert_keys(event("limit_mu", T0, ip="1.2.3.4", user_id="auth0|1"))[0].key == "limit_mu:ip:1.2.3.4"
    assert alert_keys(event("ferrt", T0, ip="1.2.3.4", user_id="", user_name=""))[0].key == "ferrt:ip:1.2.3.4"
    assert alert_keys(event("limit_wc", T0, ip="", user_id="", user_name=""))[0].key == "limit_wc:unknown"
    for code in alerts.IMMEDIATE_CODES:
        assert alert_keys(event(code, T0))[0].immediate, code


def test_overlong_subject_is_hashed_to_fit_the_key_column() -> None:
    """A key longer than the 320-character column is replaced by its prefix and a SHA-256."""
    [key] = alert_keys(event("fu", T0, ip="", user_id="", user_name="x" * 400))
    assert key.key.startswith("user:sha256:")
    assert len(key.key) <= alerts.MAX_KEY_LENGTH
    assert key.subject == "x" * 400


def test_window_uses_the_event_date_else_now() -> None:
    """The event's own date (in UTC) places it in the window; an event without one is placed now."""
    assert event_time(event("f", T0)) == T0
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert event_time(event("f", None), now=now) == now


def test_handler_subscribes_to_exactly_the_alerting_codes() -> None:
    """The registered handler runs for f, fp, fu and the seven serious codes, outside any transaction."""
    assert REGISTRATION.selectors == frozenset(alerts.WINDOW_CODES + alerts.IMMEDIATE_CODES)
    assert len(REGISTRATION.selectors) == 10
    assert not REGISTRATION.transactional


# --- hits and incidents ----------------------------------------------------------------------------------


def test_record_hit_counts_a_log_id_once(database_url: str, ip: str) -> None:
    """Recording the same (key, log_id) twice keeps one hit, and says so the second time."""
    key = f"ip:{ip}"
    with session_scope(database_url) as session:
        assert record_hit(session, key, "log-1", T0) is True
        assert record_hit(session, key, "log-1", T0) is False
        assert count_in_window(session, key, T0, WINDOW).count == 1


def test_count_in_window_slides_over_out_of_order_hits(database_url: str, ip: str) -> None:
    """The count is the most hits in any window holding the event, also when the event is the earliest."""
    key = f"ip:{ip}"
    with session_scope(database_url) as session:
        for n, offset in enumerate([100, 200, 250, 450]):
            record_hit(session, key, f"log-{n}", T0 + seconds(offset))
        record_hit(session, key, "early", T0)
        early = count_in_window(session, key, T0, WINDOW)
        late = count_in_window(session, key, T0 + seconds(450), WINDOW)
    assert early.count == 4  # 0, 100, 200, 250 fit in 300 s
    assert [hit.log_id for hit in early.hits] == ["early", "log-0", "log-1", "log-2"]
    assert [hit.log_id for hit in late.hits] == ["log-1", "log-2", "log-3"]  # 200, 250, 450 fit in 300 s


def test_concurrent_openers_open_one_incident(database_url: str, ip: str) -> None:
    """Two workers opening the same key at once: the second waits for the first and extends its incident."""
    key = f"ip:{ip}"
    result: dict[str, Any] = {}

    def second_worker() -> None:
        with session_scope(database_url) as session:
            result["decision"] = open_or_extend_incident(
                session, key, "log-2", T0 + seconds(1), WINDOW, reached=True, count=3
            )

    with session_scope(database_url) as session:
        first = open_or_extend_incident(session, key, "log-1", T0, WINDOW, reached=True, count=3)
        thread = threading.Thread(target=second_worker)
        thread.start()
        if database_url.startswith("postgresql"):
            wait_for(lambda: _waiting_on_a_lock(database_url), 10, what="the second worker to wait on a lock")
        assert "decision" not in result
    thread.join(timeout=30)
    assert first.action == "opened"
    assert result["decision"].action == "extended"
    row = incident(database_url, key)
    assert row is not None
    assert (row.opened_by, row.events, row.last_seen_at) == ("log-1", 4, T0 + seconds(1))


def _waiting_on_a_lock(url: str) -> bool:
    with session_scope(url) as session:
        waiting = session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
        )
    return bool(waiting)


def test_event_older_than_the_incident_neither_opens_nor_extends(database_url: str, ip: str) -> None:
    """An event dated more than a window before the key's latest incident is stale: no alert, no change."""
    key = f"ip:{ip}"
    with session_scope(database_url) as session:
        open_or_extend_incident(session, key, "new", T0, WINDOW, reached=True, count=3)
    with session_scope(database_url) as session:
        old = open_or_extend_incident(session, key, "old", T0 - seconds(301), WINDOW, reached=True, count=3)
    assert old.action == "stale"
    assert not old.should_alert
    row = incident(database_url, key)
    assert row is not None
    assert (row.opened_by, row.events) == ("new", 3)


def test_prune_hits_deletes_only_older_hits(database_url: str, ip: str) -> None:
    """prune_hits removes the key's hits before the cut-off and keeps the rest (and other keys')."""
    key, other = f"ip:{ip}", f"user:{ip}"
    with session_scope(database_url) as session:
        record_hit(session, key, "old", T0 - timedelta(days=2))
        record_hit(session, key, "new", T0)
        record_hit(session, other, "old", T0 - timedelta(days=2))
        assert prune_hits(session, T0 - timedelta(days=1), key=key) == 1
        kept = session.execute(select(AlertHit.key, AlertHit.log_id).where(AlertHit.key.in_([key, other])))
        assert sorted(tuple(row) for row in kept) == sorted([(key, "new"), (other, "old")])


# --- the decisions, end to end through the fake webhook ----------------------------------------------------


def test_below_threshold_no_alert(
    database_url: str, config: AlertConfig, webhook: FakeWebhook, ip: str
) -> None:
    """N-1 failed logins from one IP within the window send nothing."""
    for n in range(THRESHOLD - 1):
        assert alert_for_event(failed_login(ip, T0 + seconds(n)), config, database_url) is None
    assert webhook.received() == []
    assert incident(database_url, f"ip:{ip}") is None


def test_nth_failure_alerts_once_and_later_ones_extend(
    database_url: str, config: AlertConfig, webhook: FakeWebhook, ip: str
) -> None:
    """The Nth failure from one IP within the window sends one alert; the N+1th to N+5th send none."""
    events = [
        failed_login(ip, T0 + seconds(10 * n), code=("f", "fp", "fu")[n % 3]) for n in range(THRESHOLD + 5)
    ]
    sent = [alert_for_event(e, config, database_url) for e in events]
    assert [message is not None for message in sent] == [n == THRESHOLD - 1 for n in range(len(events))]
    [body] = webhook.delivered()
    assert f"3 failed logins from IP {ip} within 5 min" in body["text"]
    row = incident(database_url, f"ip:{ip}")
    assert row is not None
    assert row.opened_by == events[THRESHOLD - 1].log_id
    assert row.events == THRESHOLD + 5
    assert row.last_seen_at == T0 + seconds(10 * (THRESHOLD + 4))
    assert row.alert_sent_at is not None


def test_failures_spread_wider_than_the_window_never_alert(
    database_url: str, config: AlertConfig, webhook: FakeWebhook, ip: str
) -> None:
    """Failures more than window/(N-1) apart never put N in one window, however many there are."""
    for n in range(10):
        alert_for_event(failed_login(ip, T0 + seconds(151 * n)), config, database_url)
    assert webhook.received() == []


def test_new_incident_after_the_window_passes_alerts_again(
    database_url: str, config: AlertConfig, webhook: FakeWebhook, ip: str
) -> None:
    """Once a window passes with no event, the next N failures open a new incident and alert again."""
    for n in range(THRESHOLD):
        alert_for_event(failed_login(ip, T0 + seconds(n)), config, database_url)
    later = T0 + seconds(THRESHOLD - 1) + WINDOW + seconds(1)
    # The first events after the gap extend nothing: the old incident is over.
    for n in range(THRESHOLD):
        alert_for_event(failed_login(ip, later + seconds(n)), config, database_url)
    assert len(webhook.delivered()) == 2
    row = incident(database_url, f"ip:{ip}")
    assert row is not None
    assert (row.opened_at, row.events) == (later + seconds(THRESHOLD - 1), THRESHOLD)


def test_events_within_the_window_of_the_last_keep_the_incident_open(
    database_url: str, config: AlertConfig, webhook: FakeWebhook, ip: str
) -> None:
    """A slow trickle after a burst, each within a window of the previous event, extends the one incident."""
    for n in range(THRESHOLD):
        alert_for_event(failed_login(ip, T0 + seconds(n)), config, database_url)
    for n in range(1, 6):  # 250 s apart: never 3 in a window, but each within the window of the last
        alert_for_event(failed_login(ip, T0 + seconds(250 * n)), config, database_url)
    assert len(webhook.delivered()) == 1
    row = incident(database_url, f"ip:{ip}")
    assert row is not None
    assert (row.events, row.last_seen_at) == (THRESHOLD + 5, T0 + seconds(1250))


def test_same_log_id_processed_twice_counts_once(
    database_url: str, config: AlertConfig, webhook: FakeWebhook, ip: str
) -> None:
    """Redelivering one failed login N times counts it once: no alert."""
    login = failed_login(ip, T0)
    for _ in range(THRESHOLD + 1):
        alert_for_event(login, config, database_url)
    assert webhook.received() == []
    with session_scope(database_url) as session:
        assert count_in_window(session, f"ip:{ip}", T0, WINDOW).count == 1


def test_burst_delivered_out_of_order_alerts_once(
    database_url: str, config: AlertConfig, webhook: FakeWebhook, ip: str
) -> None:
    """A burst whose earliest event arrives last still alerts, once."""
    offsets = [200, 100, 0, 150]
    sent = [alert_for_event(failed_login(ip, T0 + seconds(o)), config, database_url) for o in offsets]
    assert [message is not None for message in sent] == [False, False, True, False]
    assert len(webhook.delivered()) == 1


def test_ip_and_user_crossing_together_send_one_alert(
    database_url: str, config: AlertConfig, webhook: FakeWebhook, ip: str, user: str
) -> None:
    """When the IP's and the user's incidents open on the same event, one alert names both."""
    for n in range(THRESHOLD + 2):
        alert_for_event(event("fp", T0 + seconds(n), ip=ip, user_id=user), config, database_url)
    [body] = webhook.delivered()
    assert f"from IP {ip}" in body["text"]
    assert f"against user {user}" in body["text"]
    for key in (f"ip:{ip}", f"user:{user}"):
        row = incident(database_url, key)
        assert row is not None
        assert row.alert_sent_at is not None


def test_serious_code_alerts_at_once_and_once_per_incident(
    database_url: str, config: AlertConfig, webhook: FakeWebhook, user: str
) -> None:
    """A pwd_leak alerts at once; a second for the user within the window does not; after it, one does."""
    first = alert_for_event(event("pwd_leak", T0, user_id=user), config, database_url)
    assert first is not None
    assert alert_for_event(event("pwd_leak", T0 + seconds(200), user_id=user), config, database_url) is None
    assert alert_for_event(event("pwd_leak", T0 + seconds(500), user_id=user), config, database_url) is None
    assert len(webhook.delivered()) == 1
    assert alert_for_event(event("pwd_leak", T0 + seconds(802), user_id=user), config, database_url)
    assert len(webhook.delivered()) == 2
    assert f"Breached password (pwd_leak) for user {user}" in webhook.delivered()[0]["text"]


def test_webhook_500_then_retry_sends_exactly_one_alert(
    database_url: str, config: AlertConfig, webhook: FakeWebhook, ip: str
) -> None:
    """A 500 on the alert is retryable and leaves it unsent; the retry of the same event sends it once."""
    events = [failed_login(ip, T0 + seconds(n)) for n in range(THRESHOLD)]
    for e in events[:-1]:
        alert_for_event(e, config, database_url)
    webhook.answer_next(1, 500, "upstream exploded")
    with pytest.raises(RetryableError, match="500: upstream exploded"):
        alert_for_event(events[-1], config, database_url)
    row = incident(database_url, f"ip:{ip}")
    assert row is not None
    assert (row.opened_by, row.alert_sent_at) == (events[-1].log_id, None)
    # Another event of the incident in between does not send it: only its opener does.
    assert alert_for_event(failed_login(ip, T0 + seconds(10)), config, database_url) is None
    assert alert_for_event(events[-1], config, database_url) is not None
    assert alert_for_event(events[-1], config, database_url) is None  # redelivered once more: already sent
    assert len(webhook.received()) == 2
    assert len(webhook.delivered()) == 1
    assert all(f"from IP {ip}" in post.json["text"] for post in webhook.received())


def test_webhook_400_is_permanent_and_leaves_the_alert_unsent(
    database_url: str, config: AlertConfig, webhook: FakeWebhook, user: str
) -> None:
    """A 400 raises PermanentError with status and body; replaying the event later still sends the alert."""
    leak = event("reset_pwd_leak", T0, user_id=user)
    webhook.answer_next(1, 400, "invalid_payload")
    with pytest.raises(PermanentError, match="400: invalid_payload"):
        alert_for_event(leak, config, database_url)
    assert alert_for_event(leak, config, database_url) is not None
    assert len(webhook.delivered()) == 1


# --- the webhook call ------------------------------------------------------------------------------------


def test_send_alert_posts_the_message_as_json(webhook: FakeWebhook) -> None:
    """send_alert POSTs the body as application/json and returns on 200."""
    send_alert(webhook.url, {"text": "hello", "blocks": []}, timeout=2.0)
    [post] = webhook.received()
    assert post.json == {"text": "hello", "blocks": []}
    assert post.headers["Content-Type"] == "application/json"
    assert post.headers["User-Agent"] == alerts.USER_AGENT


def test_send_alert_timeout_is_retryable(webhook: FakeWebhook) -> None:
    """A webhook that does not answer within the timeout raises RetryableError."""
    webhook.hang_next(1, seconds=10)
    with pytest.raises(RetryableError, match="did not answer within 0.3s"):
        send_alert(webhook.url, {"text": "x"}, timeout=0.3)


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
def test_send_alert_transient_statuses_are_retryable(webhook: FakeWebhook, status: int) -> None:
    """5xx, 408 and 429 raise RetryableError carrying the Retry-After the webhook asked for."""
    webhook.answer_next(1, status, "busy", {"Retry-After": "7"})
    with pytest.raises(RetryableError, match=f"answered {status}: busy") as raised:
        send_alert(webhook.url, {"text": "x"}, timeout=2.0)
    assert raised.value.retry_after == 7.0


@pytest.mark.parametrize("status", [400, 403, 404, 410])
def test_send_alert_other_4xx_is_permanent(webhook: FakeWebhook, status: int) -> None:
    """Any other 4xx raises PermanentError naming the status and an excerpt of the body."""
    webhook.answer_next(1, status, "no_service\n" + "x" * 500)
    with pytest.raises(PermanentError, match=f"answered {status}: no_service x") as raised:
        send_alert(webhook.url, {"text": "x"}, timeout=2.0)
    assert len(str(raised.value)) < 250
    assert webhook.url not in str(raised.value)


def test_send_alert_connection_refused_is_retryable() -> None:
    """A webhook that refuses the connection raises RetryableError."""
    with FakeWebhook() as closed:
        url = closed.url
    with pytest.raises(RetryableError, match="unreachable"):
        send_alert(url, {"text": "x"}, timeout=2.0)


def test_send_alert_unusable_url_is_permanent() -> None:
    """A URL httpx cannot send to (no http(s) scheme) is a configuration error: PermanentError."""
    with pytest.raises(PermanentError, match="AUTH0_EVENTS_ALERT_WEBHOOK_URL"):
        send_alert("hooks.slack.com/services/x", {"text": "x"}, timeout=2.0)


# --- the message -----------------------------------------------------------------------------------------


def _window_alert(login: Auth0Event, count: int) -> Alert:
    hits = tuple(Hit(f"log-{n}", T0 + seconds(n), "fp" if n % 2 else "f") for n in range(count))
    state = IncidentState(f"ip:{login.ip}", login.log_id, T0, T0, count, None)
    return Alert(alert_keys(login)[0], THRESHOLD, WindowCount(count, hits), state)


def test_message_is_slack_compatible_json() -> None:
    """The body is JSON with a text summary and header, section, fields and context blocks within limits."""
    login = event(
        "fp", T0, ip="81.2.69.143", user_id="auth0|1", user_name="eve@example.com", tenant_name="acme"
    )
    message = json.loads(json.dumps(build_alert_message(login, [_window_alert(login, 14)], WINDOW)))
    assert message["text"] == (
        "Auth0 alert: 14 failed logins from IP 81.2.69.143 within 5 min (tenant acme, client Default App)"
    )
    assert [block["type"] for block in message["blocks"]] == ["header", "section", "section", "context"]
    header, summary, details, context = message["blocks"]
    assert header["text"]["type"] == "plain_text"
    assert len(header["text"]["text"]) <= 150
    assert summary["text"] == {
        "type": "mrkdwn",
        "text": "*14 failed logins from IP 81.2.69.143 within 5 min*",
    }
    fields = {f["text"].split("\n")[0]: f["text"].split("\n", 1)[1] for f in details["fields"]}
    assert fields["*User*"] == "auth0|1 (eve@example.com)"
    assert fields["*IP*"] == "81.2.69.143"
    assert fields["*Tenant*"] == "acme"
    assert fields["*Client*"] == "Default App (aI61p8I8aFjmYRliLWgvM9ev97kCCNDB)"
    assert fields["*Failures (ip)*"].startswith("14 in 5 min (threshold 3); 2026-11-26 08:00:00 UTC to ")
    assert len(details["fields"]) <= 10
    codes, log_ids, keys = (element["text"] for element in context["elements"])
    assert codes == "*codes:* f, fp"
    assert log_ids.startswith(f"*log_ids:* `{login.log_id}`, `log-0`")
    assert log_ids.endswith(" and 5 more")  # 15 log_ids, 10 listed
    assert keys == "*incident:* ip:81.2.69.143"


def test_message_escapes_what_auth0_sent() -> None:
    """User-controlled fields cannot mention the channel or forge links: &, < and > are escaped."""
    leak = event("pwd_leak", T0, user_id="", user_name="<!channel> & <http://evil|click>")
    message = build_alert_message(
        leak,
        [Alert(alert_keys(leak)[0], 1, WindowCount(1, ()), IncidentState("k", "l", T0, T0, 1, None))],
        WINDOW,
    )
    body = json.dumps(message)
    assert "<!channel>" not in body
    assert "<http" not in body
    assert "&lt;!channel&gt; &amp; &lt;http://evil|click&gt;" in message["text"]


# --- end to end: receiver → RabbitMQ → real worker → fake webhook ------------------------------------------


@pytest.fixture
def alert_queue() -> str:
    """A queue of this test's own, consumed only by its dedicated worker."""
    return f"test.alerts.{uuid.uuid4().hex[:8]}"


def start_alert_worker(
    start_worker: Any, queue: str, webhook: FakeWebhook, database_url: str | None = None
) -> Any:
    """A real worker with the alerts enabled: threshold 3 in 300 s, posting to the fake webhook."""
    env = {
        **({"DATABASE_URL": database_url} if database_url else {}),
        "AUTH0_EVENTS_ROUTES": f"f={queue},pwd_leak={queue}",
        "AUTH0_EVENTS_ALERT_WEBHOOK_URL": webhook.url,
        "AUTH0_EVENTS_ALERT_THRESHOLD": "3",
        "AUTH0_EVENTS_ALERT_WINDOW": "300",
        "AUTH0_EVENTS_ALERT_TIMEOUT": "5",
    }
    return start_worker([queue], env)


def post_failed_logins(make_app: Any, queue: str, ip: str, user: str, count: int) -> None:
    """POST ``count`` failed logins from one IP against one user, in one batch, to a receiver."""
    client = make_app(routes=f"f={queue},pwd_leak={queue}").test_client()
    records = [
        make_record("f", ip=ip, user_id=user, date=iso(datetime.now(UTC) + seconds(n))) for n in range(count)
    ]
    response = client.post("/webhooks/auth0", data=as_jsonl(records), headers={"Authorization": TEST_TOKEN})
    assert response.status_code == 202
    assert response.json["accepted"] == count


def succeeded(worker: Any) -> int:
    """How many tasks the worker has finished successfully."""
    return int(worker.log_text().count("] succeeded in "))


@pytest.mark.worker
def test_worker_sends_one_alert_for_five_failed_logins(
    start_worker: Any, make_app: Any, alert_queue: str, webhook: FakeWebhook, ip: str, user: str
) -> None:
    """Five failed logins from one IP in one batch, threshold 3: the worker sends exactly one alert."""
    worker = start_alert_worker(start_worker, alert_queue, webhook)
    post_failed_logins(make_app, alert_queue, ip, user, 5)
    [body] = wait_for(webhook.delivered, 60, 0.1, "the alert")
    wait_for(lambda: succeeded(worker) == 5, 60, 0.1, "the worker to process all five events")
    assert len(webhook.received()) == 1
    assert f"failed logins from IP {ip}" in body["text"]
    assert f"against user {user}" in body["text"]
    assert f"ip:{ip}, user:{user}" in worker.log_text()  # the "sent alert for log_id=…" line


@pytest.mark.worker
def test_worker_retries_an_alert_the_webhook_refused_with_503(
    start_worker: Any, make_app: Any, alert_queue: str, webhook: FakeWebhook, ip: str, user: str
) -> None:
    """The webhook answering 503 to the first POST: the event is retried and exactly one alert arrives."""
    webhook.answer_next(1, 503, "try later")
    worker = start_alert_worker(start_worker, alert_queue, webhook)
    post_failed_logins(make_app, alert_queue, ip, user, 5)
    wait_for(lambda: succeeded(worker) == 5, 60, 0.1, "the worker to process all five events")
    [body] = wait_for(webhook.delivered, 30, 0.1, "the alert")
    assert [post.reply.status for post in webhook.received()] == [503, 200]
    assert f"failed logins from IP {ip}" in body["text"]
    assert "alert webhook answered 503: try later" in worker.log_text()


# --- user names typed by an attacker: too long, NUL, lone surrogates ---------------------------------------


@pytest.fixture
def hostile_user_names() -> dict[str, str]:
    """User names the ledger cannot store as typed, of this test's own; each must count against its own key.

    The two long ones differ only past the 255 characters the archive's column holds.
    """
    tag = uuid.uuid4().hex
    return {
        "300 characters": tag + "x" * 267 + "1",
        "300 characters, another": tag + "x" * 267 + "2",
        "NUL": f"{tag}\x00a@example.com",
        "lone surrogate": f"{tag}\ud800b@example.com",
    }


def failed_logins_by_name(user_name: str, count: int, start: datetime) -> list[dict[str, Any]]:
    """``count`` failed logins against ``user_name`` (no user_id), each from an IP of its own."""
    return [
        make_record("f", ip=f"10.{n}.{uuid.uuid4().int % 256}.{uuid.uuid4().int % 256}", user_id="",
                    user_name=user_name, date=iso(start + seconds(n)))
        for n in range(count)
    ]  # fmt: skip


def test_hostile_user_names_alert_once_each(
    database_url: str, config: AlertConfig, webhook: FakeWebhook, hostile_user_names: dict[str, str]
) -> None:
    """THRESHOLD failures against each name send one alert each; two long names never share a key."""
    start = datetime.now(UTC)
    for user_name in hostile_user_names.values():
        for record in failed_logins_by_name(user_name, THRESHOLD, start):
            alert_for_event(parse_event(record), config, database_url)
    bodies = webhook.delivered()
    assert len(bodies) == len(hostile_user_names)
    assert all(f"{THRESHOLD} failed logins against user" in body["text"] for body in bodies)


@pytest.mark.worker
def test_worker_alerts_on_failed_logins_with_hostile_user_names(
    start_worker: Any,
    make_app: Any,
    alert_queue: str,
    webhook: FakeWebhook,
    database_url: str,
    hostile_user_names: dict[str, str],
) -> None:
    """Through the receiver and a real worker on each database: one alert per hostile user name."""
    worker = start_alert_worker(start_worker, alert_queue, webhook, database_url)
    client = make_app(routes=f"f={alert_queue}").test_client()
    start = datetime.now(UTC)
    records = [
        record
        for user_name in hostile_user_names.values()
        for record in failed_logins_by_name(user_name, THRESHOLD, start)
    ]
    response = client.post("/webhooks/auth0", data=as_jsonl(records), headers={"Authorization": TEST_TOKEN})
    assert response.json["accepted"] == len(records), response.json
    wait_for(lambda: succeeded(worker) == len(records), 60, 0.1, "the worker to process every event")
    bodies = webhook.delivered()
    assert len(bodies) == len(hostile_user_names)
    texts = " ".join(body["text"] for body in bodies)
    tag = hostile_user_names["NUL"][:32]
    assert f"against user {tag}\ufffda@example.com" in texts
    assert f"against user {tag}\ufffdb@example.com" in texts
    assert "retrying event" not in worker.log_text()


@pytest.mark.parametrize(
    "date", ["9999-12-31T23:59:59.999Z", "0001-01-01T00:00:00.000Z"], ids=["last", "first"]
)
def test_failures_dated_at_the_edge_of_time_alert_once(
    database_url: str, config: AlertConfig, webhook: FakeWebhook, user: str, date: str
) -> None:
    """Events dated at the first or last instant a date can hold: the window around them does not overflow."""
    for _ in range(THRESHOLD + 1):
        record = make_record("f", ip="", user_id=user, date=date)
        alert_for_event(parse_event(record), config, database_url)
    [body] = webhook.delivered()
    assert f"{THRESHOLD} failed logins against user {user}" in body["text"]
