"""A handler from an outside package (examples/welcome-plugin) runs after installation alone."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text

from kernel.storage.db import get_engine, session_scope
from tests.helpers import ROOT, TEST_TOKEN, as_jsonl, make_record, wait_for

pytestmark = pytest.mark.worker
EXAMPLE = ROOT / "examples" / "welcome-plugin"


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plug-in pip-installed into a directory of its own (with its entry point metadata)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


def welcome_list_user(database_url: str, log_id: str) -> str | None:
    """The user the plug-in put on its welcome list for ``log_id``, if any (the plug-in makes the table)."""
    if not inspect(get_engine(database_url)).has_table("welcome_list"):
        return None
    with session_scope(database_url) as session:
        query = text("SELECT user_id FROM welcome_list WHERE log_id = :log_id")
        return session.execute(query, {"log_id": log_id}).scalar_one_or_none()


def test_installed_plugin_handles_signups_in_a_real_worker(
    installed_plugin: Path, start_worker: Any, make_app: Any, database_url: str
) -> None:
    """Installed where the worker runs, the plug-in's entry point registers its handler: no other setup."""
    queue = f"test.plugin.{uuid.uuid4().hex[:8]}"
    start_worker(
        [queue],
        {
            "AUTH0_EVENTS_ROUTES": f"ss={queue}",
            "DATABASE_URL": database_url,
            "PYTHONPATH": str(installed_plugin),
        },
    )
    record = make_record("ss", user_id="auth0|welcome-me")
    client = make_app(routes=f"ss={queue}").test_client()
    response = client.post("/webhooks/auth0", data=as_jsonl([record]), headers={"Authorization": TEST_TOKEN})
    assert response.status_code == 202
    user = wait_for(lambda: welcome_list_user(database_url, record["log_id"]), 30, 0.1, "the welcome row")
    assert user == "auth0|welcome-me"


def test_plugin_tests_pass_with_the_project_fixtures(installed_plugin: Path, tmp_path: Path) -> None:
    """The example's own tests, written with tasks.testing's fixtures, pass without a broker."""
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("AUTH0_EVENTS_", "DATABASE"))
    }
    env["PYTHONPATH"] = str(installed_plugin)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
