"""The Management API actions against a local HTTPS Auth0: calls made, failures classified, retries, DLQ."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import httpx
import pytest

from cli.dlq.dead_letters import ledger_entries
from kernel.events import Auth0Event, parse_event
from kernel.settings import get_settings
from tasks.builtin import auth0_actions
from tasks.builtin.auth0_actions import assign_signup_roles, block_breached_user
from tasks.handlers import PermanentError, RetryableError
from tasks.metrics import REGISTRY
from tests.fake_auth0 import DATABASE_CONNECTION, FakeAuth0, breached_password_record, statuses
from tests.helpers import (
    ROOT,
    TEST_TOKEN,
    as_jsonl,
    free_port,
    make_record,
    take_messages,
    task_kwargs,
    wait_for,
)

USER = "auth0|61823277a44a21007221a59a"
ROLES = ("rol_reader", "rol_member")
USER_PATH = f"/api/v2/users/{USER}"
ROLES_PATH = f"{USER_PATH}/roles"
BREACHED_CODES = ("pwd_leak", "signup_pwd_leak", "reset_pwd_leak")
EMAIL = "jane.doe@example.com"
JANE = "auth0|64a0c2e1f1b2c3d4e5f60718"
BY_EMAIL = "/api/v2/users-by-email"


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeAuth0]:
    """A running fake tenant with one user and the signup roles."""
    with FakeAuth0(tmp_path) as fake:
        fake.add_user(USER)
        fake.add_roles(*ROLES)
        yield fake


@pytest.fixture
def configure(fake: FakeAuth0, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Point this process's settings at the fake through the environment, as a worker's would be."""

    def apply(**env: str) -> None:
        values = {**fake.env(), "AUTH0_EVENTS_SIGNUP_ROLES": ",".join(ROLES), **env}
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        auth0_actions.close_client()

    apply()
    yield apply
    auth0_actions.close_client()
    monkeypatch.undo()
    get_settings.cache_clear()
    get_settings()


def event(event_type: str, **data: Any) -> Auth0Event:
    """A parsed event of ``event_type`` for USER unless ``data`` says otherwise."""
    return parse_event(make_record(event_type, **{"user_id": USER, **data}))


@pytest.mark.usefixtures("configure")
def test_block_breached_user_blocks_once(fake: FakeAuth0) -> None:
    """pwd_leak: one PATCH {"blocked": true} with the token from one client-credentials grant."""
    block_breached_user(event("pwd_leak"))
    [call] = fake.calls_to("PATCH", USER_PATH)
    assert call.body == {"blocked": True}
    assert call.status == 200
    assert fake.users[USER]["blocked"] is True
    [token] = fake.token_requests()
    assert token.body["grant_type"] == "client_credentials"
    assert token.body["audience"] == f"https://{fake.domain}/api/v2/"
    assert call.authorization == f"Bearer {token.response['access_token']}"
    assert fake.calls_to("GET", BY_EMAIL) == []  # a user_id is used as it is


@pytest.mark.usefixtures("configure")
def test_signup_roles_are_assigned(fake: FakeAuth0) -> None:
    """ss: one POST {"roles": [...]} with the configured role ids, in order."""
    assign_signup_roles(event("ss"))
    [call] = fake.calls_to("POST", ROLES_PATH)
    assert call.body == {"roles": list(ROLES)}
    assert call.status == 204
    assert fake.user_roles[USER] == set(ROLES)


@pytest.mark.usefixtures("configure")
def test_client_and_token_are_reused_within_the_process(fake: FakeAuth0) -> None:
    """Several actions in one process fetch one token: the client is cached, and so is its token."""
    block_breached_user(event("pwd_leak"))
    assign_signup_roles(event("ss"))
    block_breached_user(event("pwd_leak"))
    assert len(fake.token_requests()) == 1
    assert statuses(fake.calls_to("PATCH", USER_PATH)) == [200, 200]


@pytest.mark.usefixtures("configure")
def test_unknown_user_is_permanent_with_auth0_message(fake: FakeAuth0) -> None:
    """404 inexistent_user: PermanentError whose reason has the status and Auth0's message."""
    with pytest.raises(PermanentError, match=r"HTTP 404: inexistent_user: The user does not exist\."):
        block_breached_user(event("pwd_leak", user_id="auth0|nobody"))
    assert statuses(fake.calls_to("PATCH", "/api/v2/users/auth0|nobody")) == [404]


def test_missing_scope_is_permanent(fake: FakeAuth0, configure: Any) -> None:
    """403 insufficient_scope (the M2M grant lacks update:users): PermanentError naming the scope."""
    fake.granted_scopes = ("create:role_members",)
    with pytest.raises(PermanentError, match=r"HTTP 403: insufficient_scope: .*update:users"):
        block_breached_user(event("pwd_leak"))
    assert "blocked" not in fake.users[USER]


@pytest.mark.usefixtures("configure")
def test_unknown_role_is_permanent(fake: FakeAuth0) -> None:
    """400 for a configured role id the tenant does not have: PermanentError naming the role."""
    fake.roles.discard("rol_member")
    with pytest.raises(PermanentError, match=r"HTTP 400: invalid_body: .*rol_member"):
        assign_signup_roles(event("ss"))
    assert USER not in fake.user_roles


@pytest.mark.usefixtures("configure")
def test_rate_limit_is_retried_after_auth0_reset(fake: FakeAuth0) -> None:
    """429: RetryableError with retry_after = x-ratelimit-reset - now, and the SDK did not retry itself."""
    fake.rate_limit(times=1, reset_in=2.0)
    with pytest.raises(RetryableError, match="HTTP 429: too_many_requests") as raised:
        block_breached_user(event("pwd_leak"))
    [call] = fake.calls_to("PATCH", USER_PATH)
    reset = int(call.response_headers["x-ratelimit-reset"])
    assert raised.value.retry_after is not None
    assert reset - time.time() - 0.5 < raised.value.retry_after <= reset - call.at
    assert "blocked" not in fake.users[USER]


@pytest.mark.usefixtures("configure")
def test_server_error_is_retryable_without_sdk_retries(fake: FakeAuth0) -> None:
    """500: RetryableError after exactly one request (the SDK's own retries are off)."""
    fake.fail(500)
    with pytest.raises(RetryableError, match="HTTP 500") as raised:
        assign_signup_roles(event("ss"))
    assert raised.value.retry_after is None  # no reset header: the policy's backoff applies
    assert statuses(fake.calls_to("POST", ROLES_PATH)) == [500]


def test_wrong_client_secret_is_permanent_and_says_so(fake: FakeAuth0, configure: Any) -> None:
    """Token endpoint 401 access_denied: PermanentError naming the token endpoint and the credentials."""
    configure(AUTH0_CLIENT_SECRET="not-the-secret")
    with pytest.raises(PermanentError) as raised:
        block_breached_user(event("pwd_leak"))
    reason = str(raised.value)
    assert f"token endpoint https://{fake.domain}/oauth/token answered HTTP 401" in reason
    assert "access_denied: Unauthorized" in reason
    assert "AUTH0_CLIENT_SECRET" in reason
    assert statuses(fake.token_requests()) == [401]
    assert fake.calls_to("PATCH", USER_PATH) == []


@pytest.mark.usefixtures("configure")
@pytest.mark.parametrize("status", [429, 503])
def test_token_endpoint_overload_is_retryable(fake: FakeAuth0, status: int) -> None:
    """Token endpoint 429 (with its reset time) or 503: RetryableError."""
    if status == 429:
        fake.rate_limit(times=1, reset_in=3.0, path="/oauth/token")
    else:
        fake.fail(status, path="/oauth/token")
    with pytest.raises(RetryableError, match=f"token endpoint .* answered HTTP {status}") as raised:
        block_breached_user(event("pwd_leak"))
    assert (raised.value.retry_after is not None) == (status == 429)
    block_breached_user(event("pwd_leak"))  # the next attempt gets a token and succeeds
    assert statuses(fake.token_requests()) == [status, 200]


@pytest.mark.usefixtures("configure")
def test_revoked_token_is_dropped_after_401(fake: FakeAuth0) -> None:
    """Management API 401: PermanentError, and the cached token is dropped so the next event recovers."""
    block_breached_user(event("pwd_leak"))
    fake.revoke_tokens()
    with pytest.raises(PermanentError, match="HTTP 401"):
        block_breached_user(event("pwd_leak"))
    block_breached_user(event("pwd_leak"))
    assert statuses(fake.calls_to("PATCH", USER_PATH)) == [200, 401, 200]
    assert len(fake.token_requests()) == 2


@pytest.mark.usefixtures("configure")
def test_success_the_sdk_cannot_parse_still_counts_as_done(fake: FakeAuth0) -> None:
    """A 2xx whose body the SDK's model rejects is not a failure: Auth0 made the change."""
    fake.users[USER]["created_at"] = "not a date"
    block_breached_user(event("pwd_leak"))
    assert fake.users[USER]["blocked"] is True


@pytest.mark.usefixtures("configure")
@pytest.mark.parametrize("user_id", ["", None], ids=["empty", "absent"])
def test_signup_without_user_id_is_permanent(fake: FakeAuth0, user_id: str | None) -> None:
    """An ss event with an empty or absent user_id: PermanentError before any call to Auth0."""
    record = make_record("ss")
    record["data"].pop("user_id")
    if user_id is not None:
        record["data"]["user_id"] = user_id
    with pytest.raises(PermanentError, match=r"ss event log_id=\d+ has no user_id"):
        assign_signup_roles(parse_event(record))
    assert fake.calls == []


@pytest.mark.usefixtures("configure")
@pytest.mark.parametrize(
    ("path", "status"),
    [(USER_PATH, 307), (USER_PATH, 308), ("/oauth/token", 307)],
    ids=["patch-307", "patch-308", "token-307"],
)
def test_redirect_to_another_origin_is_permanent_and_not_followed(
    fake: FakeAuth0, path: str, status: int
) -> None:
    """A 307/308 elsewhere from the Management API or token endpoint: PermanentError, nothing sent there."""
    with fake.other_origin() as other:
        fake.redirect(other.origin, path, status)
        with pytest.raises(PermanentError) as raised:
            block_breached_user(event("pwd_leak"))
    assert other.received == []
    [redirected] = [call for call in fake.calls if call.status == status]
    assert f"HTTP {status} redirect to {other.origin}{redirected.target}" in str(raised.value)
    assert "not followed" in str(raised.value)
    assert "blocked" not in fake.users[USER]


def test_unreachable_auth0_is_retryable(configure: Any) -> None:
    """Connection refused: RetryableError (a transport error, not a verdict on the event)."""
    with socket.socket() as probe:  # a port that was free a moment ago, so nothing listens on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    configure(AUTH0_DOMAIN=f"127.0.0.1:{port}")
    with pytest.raises(RetryableError, match="ConnectError"):
        block_breached_user(event("pwd_leak"))


def test_certificate_is_verified(fake: FakeAuth0, configure: Any) -> None:
    """Without SSL_CERT_FILE naming the fake's CA the TLS handshake fails: verification is on."""
    configure(SSL_CERT_FILE=certifi.where())  # the public CAs httpx trusts by default
    with pytest.raises(RetryableError, match="CERTIFICATE_VERIFY_FAILED"):
        block_breached_user(event("pwd_leak"))
    assert fake.calls == []


# -- breached passwords: the user found by e-mail address ---------------------------------------------


def breached(event_type: str = "pwd_leak", user_name: str = EMAIL, **data: Any) -> Auth0Event:
    """A parsed breached-password event as Auth0 streams it: no user_id, the address in user_name."""
    return parse_event(breached_password_record(event_type, user_name, **data))


def queried_addresses(fake: FakeAuth0) -> list[str]:
    """The addresses looked up with GET /api/v2/users-by-email, in order."""
    return [call.query.get("email", "") for call in fake.calls_to("GET", BY_EMAIL)]


def breached_count(event_type: str, outcome: str) -> float:
    """The worker metric of the blocking action's outcomes, in this process."""
    labels = {"event_type": event_type, "outcome": outcome}
    return REGISTRY.get_sample_value("auth0_events_breached_password_events_total", labels) or 0.0


@pytest.mark.usefixtures("configure")
@pytest.mark.parametrize("event_type", BREACHED_CODES)
def test_real_breached_password_record_blocks_the_user_with_that_address(
    fake: FakeAuth0, event_type: str
) -> None:
    """user_id "" and the address in user_name (a real record): users-by-email, then PATCH blocked=true.

    signup_pwd_leak finds a user when Auth0 only monitors signups (the account was created).
    """
    fake.add_user(JANE, email=EMAIL)
    before = breached_count(event_type, "blocked")
    block_breached_user(breached(event_type))
    [lookup] = fake.calls_to("GET", BY_EMAIL)
    assert (lookup.status, lookup.query["email"]) == (200, EMAIL)
    [patch] = fake.calls_to("PATCH", f"/api/v2/users/{JANE}")
    assert (patch.status, patch.body) == (200, {"blocked": True})
    assert fake.users[JANE]["blocked"] is True
    assert "blocked" not in fake.users[USER]
    assert breached_count(event_type, "blocked") == before + 1


@pytest.mark.usefixtures("configure")
@pytest.mark.parametrize("event_type", BREACHED_CODES)
def test_no_user_with_the_address_is_nothing_to_block(
    fake: FakeAuth0, event_type: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No user has the address (a refused signup): the action returns, says so at INFO and counts it."""
    event = breached(event_type, "nobody.yet@example.com")
    before = breached_count(event_type, "nothing_to_block")
    with caplog.at_level(logging.INFO, logger=auth0_actions.__name__):
        block_breached_user(event)
    assert statuses(fake.calls_to("GET", BY_EMAIL)) == [200]
    assert [call for call in fake.calls if call.method == "PATCH"] == []
    [line] = [r.getMessage() for r in caplog.records if r.name == auth0_actions.__name__]
    assert f"log_id={event.log_id} type={event_type}: nothing to block" in line
    assert f"on connection {DATABASE_CONNECTION}" in line
    assert "nobody.yet" not in line
    assert breached_count(event_type, "nothing_to_block") == before + 1


@pytest.mark.usefixtures("configure")
def test_address_in_another_case_finds_the_database_user(fake: FakeAuth0) -> None:
    """Auth0 keeps a database user's address in lower case and matches exactly: both forms are looked up."""
    fake.add_user(JANE, email="Jane.Doe@Example.com")  # stored as jane.doe@example.com
    block_breached_user(breached("pwd_leak", "Jane.Doe@Example.COM"))
    assert queried_addresses(fake) == ["jane.doe@example.com", "Jane.Doe@Example.COM"]
    assert fake.users[JANE]["blocked"] is True


@pytest.mark.usefixtures("configure")
@pytest.mark.parametrize(
    ("connection", "expected"),
    [(DATABASE_CONNECTION, {"db", "linked"}), ("", {"db", "linked", "social", "other-db"})],
    ids=["event-names-connection", "event-names-none"],
)
def test_every_user_with_the_address_on_the_event_connection_is_blocked(
    fake: FakeAuth0, connection: str, expected: set[str]
) -> None:
    """Several users share the address: those with an identity on the event's connection are blocked.

    An event naming no connection blocks them all.
    """
    users = {
        "db": JANE,
        "social": "google-oauth2|105261262156475850461",
        "other-db": "auth0|7e1d2c3b4a5968778695a4b3",
        "linked": "google-oauth2|208374655647382910476",
    }
    fake.add_user(users["db"], email=EMAIL)
    fake.add_user(users["social"], connection="google-oauth2", email=EMAIL)
    fake.add_user(users["other-db"], connection="Other-Database", email=EMAIL)
    fake.add_user(users["linked"], connection="google-oauth2", email=EMAIL)
    linked_identity = {"connection": DATABASE_CONNECTION, "provider": "auth0", "user_id": "5f0e1d2c3b4a"}
    fake.users[users["linked"]]["identities"].append(linked_identity)
    block_breached_user(breached("pwd_leak", connection=connection))
    blocked = {name for name, user_id in users.items() if fake.users[user_id].get("blocked")}
    assert blocked == expected
    assert len(fake.calls_to("GET", BY_EMAIL)) == 1


@pytest.mark.usefixtures("configure")
def test_retry_after_a_failed_block_blocks_every_user(fake: FakeAuth0) -> None:
    """A 5xx blocking the second of two users: RetryableError; the retry blocks both (PATCH is idempotent)."""
    second = "auth0|7e1d2c3b4a5968778695a4b3"
    fake.add_user(JANE, email=EMAIL)
    fake.add_user(second, email=EMAIL)
    fake.fail(503, path=f"/api/v2/users/{second}")
    with pytest.raises(RetryableError, match=f"blocking user {re.escape(second)}: .*HTTP 503"):
        block_breached_user(breached())
    block_breached_user(breached())
    assert fake.users[JANE]["blocked"] is fake.users[second]["blocked"] is True


def test_lookup_without_read_users_scope_is_permanent_and_names_it(fake: FakeAuth0, configure: Any) -> None:
    """403 insufficient_scope on users-by-email: PermanentError naming read:users, not the address."""
    fake.add_user(JANE, email=EMAIL)
    fake.granted_scopes = ("update:users",)
    with pytest.raises(PermanentError, match=r"HTTP 403: insufficient_scope: .*read:users") as raised:
        block_breached_user(breached())
    assert EMAIL not in str(raised.value)
    assert "blocked" not in fake.users[JANE]


@pytest.mark.usefixtures("configure")
def test_lookup_rate_limit_is_retried_after_auth0_reset(fake: FakeAuth0) -> None:
    """429 on users-by-email: RetryableError with retry_after from x-ratelimit-reset, one request only."""
    fake.rate_limit(times=1, reset_in=2.0, path=BY_EMAIL)
    with pytest.raises(RetryableError, match="HTTP 429: too_many_requests") as raised:
        block_breached_user(breached())
    [call] = fake.calls_to("GET", BY_EMAIL)
    assert raised.value.retry_after is not None
    assert 0 < raised.value.retry_after <= int(call.response_headers["x-ratelimit-reset"]) - call.at


@pytest.mark.usefixtures("configure")
def test_address_auth0_refuses_is_permanent_without_the_address(fake: FakeAuth0) -> None:
    """400 for a malformed address (Auth0 quotes it): PermanentError whose text leaves it out."""
    with pytest.raises(PermanentError, match="HTTP 400: invalid_query_string: ") as raised:
        block_breached_user(breached("pwd_leak", "jane@localhost"))
    assert statuses(fake.calls_to("GET", BY_EMAIL)) == [400]
    assert "jane@localhost" in fake.calls_to("GET", BY_EMAIL)[0].response["message"]
    assert "jane" not in str(raised.value)
    assert "<e-mail address>" in str(raised.value)


@pytest.mark.usefixtures("configure")
@pytest.mark.parametrize(
    "user_name",
    ["", "janedoe", "6f1c0b3e9a2d4f57", "j***@e******.com", "jane doe@example.com"],
    ids=["empty", "username", "hashed", "masked", "spaced"],
)
def test_event_naming_no_user_is_permanent_before_any_call(fake: FakeAuth0, user_name: str) -> None:
    """No user_id and no address in user_name (a username, or hidden by the stream's PII obfuscation).

    PermanentError saying so, without the value, and nothing asked of Auth0.
    """
    with pytest.raises(PermanentError, match=r"pwd_leak event log_id=\d+ names no user: ") as raised:
        block_breached_user(breached("pwd_leak", user_name))
    assert "user_name is not an e-mail address" in str(raised.value)
    assert not user_name or user_name not in str(raised.value)
    assert fake.calls == []


@pytest.mark.usefixtures("configure")
def test_user_the_sdk_cannot_parse_is_still_found(fake: FakeAuth0) -> None:
    """A user object the SDK's models reject does not hide the matches: Auth0's JSON is read instead."""
    fake.add_user(JANE, email=EMAIL, created_at="not a date")
    block_breached_user(breached())
    assert fake.users[JANE]["blocked"] is True


@pytest.mark.usefixtures("configure")
def test_redirected_lookup_is_permanent_and_keeps_the_address_out(fake: FakeAuth0) -> None:
    """A 307 from users-by-email: not followed, PermanentError whose Location has the address cut out."""
    fake.add_user(JANE, email=EMAIL)
    with fake.other_origin() as other:
        fake.redirect(other.origin, BY_EMAIL)
        with pytest.raises(PermanentError, match=f"HTTP 307 redirect to {other.origin}") as raised:
            block_breached_user(breached())
    assert other.received == []
    assert "jane.doe" not in str(raised.value)
    assert "blocked" not in fake.users[JANE]


REGISTRATIONS = """
import json
from tasks.builtin import auth0_actions
from tasks.handlers import handlers_for
def ours(code):
    return [r.name.rsplit(".", 1)[1] for r in handlers_for(code) if r.name.startswith(auth0_actions.__name__)]
print(json.dumps({code: ours(code) for code in ("pwd_leak", "signup_pwd_leak", "reset_pwd_leak", "ss", "s")}))
"""
BLOCKS = dict.fromkeys(BREACHED_CODES, ["block_breached_user"])
BLOCKS_NOT: dict[str, list[str]] = dict.fromkeys(BREACHED_CODES, [])


@pytest.mark.parametrize(
    ("block", "roles", "expected"),
    [
        ("false", "", {**BLOCKS_NOT, "ss": [], "s": []}),
        ("true", "", {**BLOCKS, "ss": [], "s": []}),
        ("false", "rol_a,rol_b", {**BLOCKS_NOT, "ss": ["assign_signup_roles"], "s": []}),
        ("true", "rol_a", {**BLOCKS, "ss": ["assign_signup_roles"], "s": []}),
    ],
    ids=["both-off", "block-only", "roles-only", "both-on"],
)
@pytest.mark.process
def test_each_action_registers_only_when_configured(block: str, roles: str, expected: dict[str, Any]) -> None:
    """Importing the module under given settings subscribes exactly the configured actions.

    Blocking listens to the three breached-password codes: pwd_leak, signup_pwd_leak, reset_pwd_leak.
    """
    env = {
        **os.environ,
        "AUTH0_DOMAIN": "tenant.example.com",
        "AUTH0_CLIENT_ID": "id",
        "AUTH0_CLIENT_SECRET": "secret",
        "AUTH0_EVENTS_BLOCK_BREACHED_USERS": block,
        "AUTH0_EVENTS_SIGNUP_ROLES": roles,
    }
    result = subprocess.run(
        [sys.executable, "-c", REGISTRATIONS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected


# -- end to end: receiver → RabbitMQ → real worker → fake Auth0 ----------------------------------------


@pytest.fixture
def queues() -> tuple[str, str]:
    """Queues of this test's own for pwd_leak and ss, consumed only by its worker."""
    suffix = uuid.uuid4().hex[:8]
    return f"test.a0.pwd_leak.{suffix}", f"test.a0.ss.{suffix}"


@pytest.fixture
def routes(queues: tuple[str, str]) -> str:
    """AUTH0_EVENTS_ROUTES sending the breached-password codes to the test's first queue, ss to its second."""
    return ",".join([*(f"{code}={queues[0]}" for code in BREACHED_CODES), f"ss={queues[1]}"])


@pytest.fixture
def metrics_port() -> int:
    """The port the test's worker serves its metrics on."""
    return free_port()


@pytest.fixture
def worker(
    start_worker: Any, fake: FakeAuth0, queues: tuple[str, str], routes: str, metrics_port: int
) -> Any:
    """A real worker with both actions on, trusting the fake's CA through SSL_CERT_FILE."""
    env = {
        **fake.env(),
        "AUTH0_EVENTS_METRICS_PORT": str(metrics_port),
        "AUTH0_EVENTS_ROUTES": routes,
        "AUTH0_EVENTS_BLOCK_BREACHED_USERS": "true",
        "AUTH0_EVENTS_SIGNUP_ROLES": ",".join(ROLES),
        "AUTH0_EVENTS_RETRY_BACKOFF_MAX": "5",  # the cap on retry_after: room for Auth0's reset time
        "AUTH0_EVENTS_PLUGINS": "",
    }
    return start_worker(list(queues), env)


def post(make_app: Any, routes: str, *records: dict[str, Any]) -> None:
    """POST records to a receiver routing like the worker, and insist they were accepted."""
    client = make_app(routes=routes).test_client()
    response = client.post("/webhooks/auth0", data=as_jsonl(records), headers={"Authorization": TEST_TOKEN})
    assert response.status_code == 202, response.get_data(as_text=True)


@pytest.mark.worker
def test_worker_blocks_user_once_after_rate_limit(
    worker: Any, fake: FakeAuth0, make_app: Any, routes: str
) -> None:
    """pwd_leak through a real worker: Auth0's 429 is retried at its reset time, the user blocked once."""
    fake.rate_limit(times=1, reset_in=1.5)
    record = make_record("pwd_leak", user_id=USER)
    post(make_app, routes, record)
    wait_for(
        lambda: "succeeded" in worker.log_text(), 30, 0.1, f"the task to succeed; log:\n{worker.log_text()}"
    )
    first, second = fake.calls_to("PATCH", USER_PATH)
    assert (first.status, second.status) == (429, 200)
    reset = int(first.response_headers["x-ratelimit-reset"])
    assert second.at >= reset - 0.25, "the retry came before Auth0's reset time"
    assert fake.users[USER]["blocked"] is True
    assert f"retrying event log_id={record['log_id']} type=pwd_leak" in worker.log_text()


@pytest.mark.worker
def test_worker_dead_letters_a_redirected_block_instead_of_reporting_it_done(
    worker: Any, fake: FakeAuth0, make_app: Any, routes: str, queues: tuple[str, str], broker: Any
) -> None:
    """pwd_leak whose PATCH is redirected to another origin: dead-lettered with the reason, not done."""
    with fake.other_origin() as other:
        fake.redirect(other.origin, USER_PATH)
        record = make_record("pwd_leak", user_id=USER)
        post(make_app, routes, record)
        [message] = wait_for(lambda: take_messages(broker, f"{queues[0]}.dlq"), 30, 0.2, "the DLQ message")
    assert task_kwargs(message)["log_id"] == record["log_id"]
    assert other.received == []
    assert "blocked" not in fake.users[USER]
    line = next(
        line
        for line in worker.log_text().splitlines()
        if f"dead-lettering event log_id={record['log_id']}" in line
    )
    [redirected] = fake.calls_to("PATCH", USER_PATH)
    assert f"HTTP 307 redirect to {other.origin}{redirected.target}" in line


@pytest.mark.worker
def test_worker_dead_letters_signup_of_unknown_user(
    worker: Any, fake: FakeAuth0, make_app: Any, routes: str, queues: tuple[str, str], broker: Any
) -> None:
    """ss through a real worker: roles assigned to a known user; an unknown user goes to the DLQ at once."""
    known = make_record("ss", user_id=USER)
    unknown = make_record("ss", user_id="auth0|nobody")
    post(make_app, routes, known, unknown)
    [message] = wait_for(lambda: take_messages(broker, f"{queues[1]}.dlq"), 30, 0.2, "the DLQ message")
    assert task_kwargs(message)["log_id"] == unknown["log_id"]
    assert statuses(fake.calls_to("POST", "/api/v2/users/auth0|nobody/roles")) == [404]
    wait_for(lambda: fake.user_roles.get(USER) == set(ROLES), 30, 0.1, "roles of the known user")
    line = next(
        line
        for line in worker.log_text().splitlines()
        if f"dead-lettering event log_id={unknown['log_id']}" in line
    )
    assert "permanent error: PermanentError: assigning roles" in line
    assert "HTTP 404: inexistent_user: The user does not exist." in line


@pytest.mark.worker
def test_worker_handles_real_breached_password_records_of_each_code(
    worker: Any,
    fake: FakeAuth0,
    make_app: Any,
    routes: str,
    queues: tuple[str, str],
    broker: Any,
    metrics_port: int,
) -> None:
    """Real records (no user_id) through a real worker: users found by address blocked, none dead-lettered.

    pwd_leak and reset_pwd_leak block the user with the address; a refused signup finds no user:
    nothing to block, done in the ledger and said in the log.
    """
    resetting = "auth0|7e1d2c3b4a5968778695a4b3"
    fake.add_user(JANE, email=EMAIL)
    fake.add_user(resetting, email="reset.me@example.com")
    records = [
        breached_password_record("pwd_leak", EMAIL),
        breached_password_record("signup_pwd_leak", "new.person@example.com"),
        breached_password_record("reset_pwd_leak", "reset.me@example.com"),
    ]
    log_ids = [record["log_id"] for record in records]
    post(make_app, routes, *records)
    database_url = os.environ["DATABASE_URL"]

    def settled() -> dict[str, tuple[str, str | None]]:
        entries = ledger_entries(database_url, log_ids)
        ended = len(entries) == 3 and all(e.state in ("processed", "dead_lettered") for e in entries.values())
        return {log_id: (e.state, e.last_error) for log_id, e in entries.items()} if ended else {}

    outcomes = wait_for(settled, 30, 0.2, f"the three events to end; log:\n{worker.log_text()[-3000:]}")
    assert outcomes == dict.fromkeys(log_ids, ("processed", None))
    assert fake.users[JANE]["blocked"] is fake.users[resetting]["blocked"] is True
    assert take_messages(broker, f"{queues[0]}.dlq") == []
    assert f"log_id={log_ids[1]} type=signup_pwd_leak: nothing to block" in worker.log_text()
    exposition = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    for event_type, outcome in [
        ("pwd_leak", "blocked"),
        ("signup_pwd_leak", "nothing_to_block"),
        ("reset_pwd_leak", "blocked"),
    ]:
        sample = (
            f'auth0_events_breached_password_events_total{{event_type="{event_type}",outcome="{outcome}"}}'
        )
        assert f"{sample} 1.0" in exposition
