"""A configuration the service cannot run with stops it at start-up with a message naming the variable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app import create_app
from kernel.settings import ConfigurationError
from tests.helpers import ROOT, as_jsonl, free_port, make_record, procfile


def test_receiver_without_a_token_refuses_to_start(settings_for: Any) -> None:
    """No AUTH0_LOG_STREAM_TOKENS: create_app raises, naming the variable and the development switch."""
    with pytest.raises(ConfigurationError, match="AUTH0_LOG_STREAM_TOKENS is not set") as error:
        create_app({"SETTINGS": settings_for(log_stream_tokens="")})
    assert "AUTH0_EVENTS_ALLOW_UNAUTHENTICATED" in str(error.value)


@pytest.mark.parametrize(
    ("token", "says"),
    [("x", "token 1 has 1 character"), ("change-me-to-a-long-random-token", "token 1 is the placeholder")],
    ids=["one-character", "env-example"],
)
def test_receiver_with_a_placeholder_or_short_token_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, token: str, says: str
) -> None:
    """The stream token of .env.example, or one too short to be a secret, stops the receiver's start."""
    from kernel.settings import get_settings

    monkeypatch.setenv("AUTH0_LOG_STREAM_TOKENS", token)
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigurationError, match=f"AUTH0_LOG_STREAM_TOKENS: {says}"):
            create_app()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        get_settings()


def test_development_switch_accepts_requests_without_a_token(make_app: Any, broker: Any) -> None:
    """With the explicit development switch and no token, a request without Authorization is accepted."""
    client = make_app(log_stream_tokens="", allow_unauthenticated=True, routes="s=test.devmode").test_client()
    assert client.post("/webhooks/auth0", data=as_jsonl([make_record("s")])).status_code == 202


def test_development_switch_does_not_disable_configured_tokens(make_app: Any) -> None:
    """The switch only matters when no token is configured: with one, a wrong token is still a 401."""
    client = make_app(allow_unauthenticated=True).test_client()
    response = client.post(
        "/webhooks/auth0", data=as_jsonl([make_record("s")]), headers={"Authorization": "x"}
    )
    assert response.status_code == 401


def test_receiver_with_bad_routes_refuses_to_start(settings_for: Any) -> None:
    """An AUTH0_EVENTS_ROUTES the receiver cannot understand stops it, naming the variable and entry."""
    with pytest.raises(ConfigurationError, match=r"AUTH0_EVENTS_ROUTES: route 'f=amq\.x'"):
        create_app({"SETTINGS": settings_for(routes="s,f=amq.x")})


def worker_start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Start a real worker with ``env`` and return how it ended (it is expected to stop by itself)."""
    command = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", "auth0.s", "-n", "bad@%h"]
    return subprocess.run(
        command, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )


@pytest.mark.worker
@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"AUTH0_EVENTS_PLUGINS": "no_such_pkg.handlers"},
            "cannot import handler module 'no_such_pkg.handlers' named in AUTH0_EVENTS_PLUGINS",
        ),
        (
            {"AUTH0_EVENTS_BUILTIN_HANDLERS": "log,nope"},
            "AUTH0_EVENTS_BUILTIN_HANDLERS: unknown handler 'nope'",
        ),
        ({"AUTH0_EVENTS_MAX_RETRIES": "many"}, "AUTH0_EVENTS_MAX_RETRIES: Input should be a valid integer"),
        ({"AUTH0_EVENTS_ROUTES": "auth.login.failed"}, "'auth.login.failed' is not a stream category"),
        ({"AUTH0_LOG_STREAM_TOKENS": "x"}, "AUTH0_LOG_STREAM_TOKENS: token 1 has 1 character"),
    ],
)
def test_worker_with_bad_configuration_exits_naming_it(env: dict[str, str], message: str) -> None:
    """A worker whose configuration is wrong exits non-zero, saying which variable is wrong."""
    result = worker_start(env)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("login", "says"),
    [
        ("admin:change-me", "FLOWER_BASIC_AUTH: login 1 has the placeholder password of .env.example"),
        ("admin:", "FLOWER_BASIC_AUTH: login 1 has an empty password"),
    ],
    ids=["env-example", "empty-password"],
)
@pytest.mark.process
def test_flower_with_a_placeholder_or_empty_password_refuses_to_start(login: str, says: str) -> None:
    """The Procfile's flower line exits at once, naming FLOWER_BASIC_AUTH, instead of serving that login."""
    port = free_port()
    env = {**os.environ, "FLOWER_BASIC_AUTH": login, "FLOWER_PORT": str(port)}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    process = subprocess.Popen(
        ["sh", "-c", procfile()["flower"]],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"Flower started with FLOWER_BASIC_AUTH={login!r}:\n{output[-2000:]}")
    assert process.returncode != 0
    assert says in output
