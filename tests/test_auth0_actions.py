"""The Management API actions against a local HTTPS Auth0: calls made, failures classified, retries, DLQ."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest

from tasks.builtin import auth0_actions
from tasks.builtin.auth0_actions import assign_signup_roles, block_breached_user
from tasks.events import Auth0Event, parse_event
from tasks.handlers import PermanentError, RetryableError
from tasks.settings import get_settings
from tests.conftest import TEST_TOKEN
from tests.fake_auth0 import FakeAuth0, statuses
from tests.helpers import ROOT, as_jsonl, make_record, take_messages, task_kwargs, wait_for

USER = "auth0|61823277a44a21007221a59a"
ROLES = ("rol_reader", "rol_member")
USER_PATH = f"/api/v2/users/{USER}"
ROLES_PATH = f"{USER_PATH}/roles"


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
def test_event_without_user_id_is_permanent(fake: FakeAuth0, user_id: str | None) -> None:
    """An event with an empty or absent user_id: PermanentError before any call to Auth0."""
    record = make_record("pwd_leak")
    record["data"].pop("user_id")
    if user_id is not None:
        record["data"]["user_id"] = user_id
    with pytest.raises(PermanentError, match=r"pwd_leak event log_id=\d+ has no user_id"):
        block_breached_user(parse_event(record))
    with pytest.raises(PermanentError, match="has no user_id"):
        assign_signup_roles(parse_event({**record, "data": {**record["data"], "type": "ss"}}))
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


REGISTRATIONS = """
import json
from tasks.builtin import auth0_actions
from tasks.handlers import handlers_for
def ours(code):
    return [r.name.rsplit(".", 1)[1] for r in handlers_for(code) if r.name.startswith(auth0_actions.__name__)]
print(json.dumps({"pwd_leak": ours("pwd_leak"), "ss": ours("ss"), "s": ours("s")}))
"""


@pytest.mark.parametrize(
    ("block", "roles", "expected"),
    [
        ("false", "", {"pwd_leak": [], "ss": [], "s": []}),
        ("true", "", {"pwd_leak": ["block_breached_user"], "ss": [], "s": []}),
        ("false", "rol_a,rol_b", {"pwd_leak": [], "ss": ["assign_signup_roles"], "s": []}),
        ("true", "rol_a", {"pwd_leak": ["block_breached_user"], "ss": ["assign_signup_roles"], "s": []}),
    ],
    ids=["both-off", "block-only", "roles-only", "both-on"],
)
def test_each_action_registers_only_when_configured(block: str, roles: str, expected: dict[str, Any]) -> None:
    """Importing the module under given settings subscribes exactly the configured actions."""
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
    """AUTH0_EVENTS_ROUTES sending pwd_leak and ss to the test's queues."""
    return f"pwd_leak={queues[0]},ss={queues[1]}"


@pytest.fixture
def worker(start_worker: Any, fake: FakeAuth0, queues: tuple[str, str], routes: str) -> Any:
    """A real worker with both actions on, trusting the fake's CA through SSL_CERT_FILE."""
    env = {
        **fake.env(),
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
