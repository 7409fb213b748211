"""Handlers that listen to codes the routes drop are named: at worker start-up and by `auth0-events routes`.

The built-ins and plug-ins register in the process that imports them, so every check that loads them runs
in a process of its own (the CLI, a worker), leaving this test process's registry as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT

CLI = str(Path(sys.executable).parent / "auth0-events")
ALERTS = "tasks.builtin.alerts.alert_on_suspicious_event"
# What the alerts listen to and routes of s and f drop, sorted.
ALERT_CODES_DROPPED = (
    "ferrt, fp, fu, limit_mu, limit_sul, limit_wc, pwd_leak, reset_pwd_leak, signup_pwd_leak"
)
ALERT_URL = "http://127.0.0.1:9/alerts"
# Every built-in on: the log line, the alerts and both Management API actions.
ALL_BUILTINS = {
    "AUTH0_EVENTS_BUILTIN_HANDLERS": "log",
    "AUTH0_EVENTS_ALERT_WEBHOOK_URL": ALERT_URL,
    "AUTH0_EVENTS_BLOCK_BREACHED_USERS": "true",
    "AUTH0_EVENTS_SIGNUP_ROLES": "rol_test",
    "AUTH0_DOMAIN": "tenant.example.com",
    "AUTH0_CLIENT_ID": "client",
    "AUTH0_CLIENT_SECRET": "secret",
}


def default_environment(**env: str) -> dict[str, str]:
    """This process's environment without the test run's AUTH0_EVENTS_* choices (routes, plug-ins), plus
    ``env``: what a deployment with the default routes sees."""
    kept = {
        k: v for k, v in os.environ.items() if not k.startswith("AUTH0_EVENTS_") or k.endswith("MASK_KEY")
    }
    return {**kept, **env}


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``command`` from the repository with ``env``; its output as text."""
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.process
def test_default_routes_carry_every_code_an_enabled_builtin_listens_to() -> None:
    """With every built-in enabled and the default routes, each code a built-in subscribes to is routed."""
    code = (
        "import json, tasks.plugins\n"
        "from tasks.handlers import registered\n"
        "from kernel.routing import parse_routes\n"
        "from kernel.settings import get_settings\n"
        "table = parse_routes(get_settings().routes)\n"
        "print(json.dumps({r.name: sorted(s for s in r.selectors if s != '*' and table.queue_for(s) is None)"
        " for r in registered()}))\n"
    )
    result = run([sys.executable, "-c", code], default_environment(**ALL_BUILTINS))
    assert result.returncode == 0, result.stderr
    dropped = json.loads(result.stdout)
    assert {ALERTS, "tasks.builtin.auth0_actions.block_breached_user"} <= set(dropped)
    assert {name: codes for name, codes in dropped.items() if codes} == {}


@pytest.mark.process
def test_routes_command_names_a_handler_whose_codes_are_dropped() -> None:
    """`auth0-events routes` loads the enabled built-ins and plug-ins, and says which codes each listens to
    that the routes drop; a handler of every event is said to see only the routed ones."""
    env = default_environment(AUTH0_EVENTS_ALERT_WEBHOOK_URL=ALERT_URL, AUTH0_EVENTS_ROUTES="s,f")
    result = run([CLI, "routes"], env)
    assert result.returncode == 0, result.stderr
    warning = f"warning: handler {ALERTS} listens to {ALERT_CODES_DROPPED}, which AUTH0_EVENTS_ROUTES drops"
    assert warning in result.stdout, result.stdout
    assert "tasks.builtin.log_event.log_event" in result.stdout
    assert result.stdout.count("warning:") == 1
    as_json = json.loads(run([CLI, "routes", "--json"], env).stdout)
    handlers = {handler["name"]: handler for handler in as_json["handlers"]}
    assert handlers[ALERTS]["dropped"] == ALERT_CODES_DROPPED.split(", ")
    assert handlers["tasks.builtin.log_event.log_event"]["dropped"] == []
    assert handlers["tasks.builtin.log_event.log_event"]["selectors"] == ["*"]


@pytest.mark.worker
def test_worker_warns_once_per_handler_whose_codes_the_routes_drop(start_worker: Any) -> None:
    """At start-up a worker logs one WARNING per enabled handler listening to codes no route carries, naming
    the handler and the codes; handlers of every event (the log line, the test plug-in) get none."""
    queue = f"test.coverage.{uuid.uuid4().hex[:8]}"
    env = {
        "AUTH0_EVENTS_ROUTES": f"s={queue},f={queue}",
        "AUTH0_EVENTS_ALERT_WEBHOOK_URL": ALERT_URL,
        "AUTH0_EVENTS_LOG_FORMAT": "json",
    }
    worker = start_worker([queue], env)
    lines = [json.loads(line) for line in worker.log_text().splitlines() if line.startswith("{")]
    warnings = [
        line["message"] for line in lines if line["level"] == "WARNING" and "listens to" in line["message"]
    ]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(
        f"handler {ALERTS} listens to {ALERT_CODES_DROPPED}, which AUTH0_EVENTS_ROUTES"
    )
