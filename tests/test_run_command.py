"""The README's run command: honcho starts the Procfile's receiver, workers and Flower, and they work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from kernel.settings import DEFAULT_ROUTES
from tests.helpers import ROOT, TEST_TOKEN, as_jsonl, free_port, make_record, procfile, wait_for

pytestmark = pytest.mark.worker


def procfile_processes() -> list[str]:
    """The processes scripts/run starts, as scripts/procfile-processes lists them."""
    listed = subprocess.run(
        [str(ROOT / "scripts" / "procfile-processes")], capture_output=True, text=True, check=True, timeout=30
    )
    names = listed.stdout.split()
    assert names == [name for name in procfile() if name != "release"]
    return names


@pytest.fixture
def procfile_service(new_vhost: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """`honcho start` on the Procfile, as scripts/run does, with every process on a private vhost."""
    web_port, flower_port = free_port(), free_port()
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    env = {
        **os.environ,
        "BROKER_URL": new_vhost,
        "FLOWER_PORT": str(flower_port),
        "FLOWER_BASIC_AUTH": "admin:flower-test",
        "WEB_CONCURRENCY": "2",
        "WORKER_CONCURRENCY": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "AUTH0_EVENTS_ROUTES": DEFAULT_ROUTES,  # what the Procfile's -Q lists are written for
    }
    log_path = tmp_path / "honcho.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "honcho",
                "start",
                "--port",
                str(web_port),
                "--env",
                str(empty_env_file),
                *procfile_processes(),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    service = {
        "web": f"http://127.0.0.1:{web_port}",
        "flower": f"http://127.0.0.1:{flower_port}",
        "log": log_path,
        "process": process,
    }
    try:
        yield service
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def get(url: str, **kwargs: Any) -> requests.Response | None:
    """GET that answers None while the server is not listening yet, or too busy starting to answer (the
    whole Procfile starts at once on two cores); the caller's deadline bounds the wait."""
    try:
        return requests.get(url, timeout=5, **kwargs)
    except (requests.ConnectionError, requests.Timeout):
        return None


def test_procfile_starts_receiver_workers_and_flower(
    procfile_service: dict[str, Any], effects_dir: Path
) -> None:
    """A batch POSTed over HTTP is answered 202 and each event is handled by its queue group's worker."""
    web, flower, log = procfile_service["web"], procfile_service["flower"], procfile_service["log"]
    log_text = log.read_text  # noqa: E731 - re-read on every poll
    wait_for(lambda: get(f"{web}/readyz"), 60, 0.2, "receiver to answer")
    wait_for(lambda: log_text().count(" ready.") >= 4, 90, 0.2, "four workers to be ready")
    records = {t: make_record(t) for t in ("s", "ss", "scp", "pwd_leak")}
    response = requests.post(
        f"{web}/webhooks/auth0",
        data=as_jsonl(records.values()),
        timeout=30,
        headers={"Authorization": f"Bearer {TEST_TOKEN}"},
    )
    assert response.status_code == 202
    assert response.json()["accepted"] == 4
    expected_worker = {
        "s": "worker_logins",
        "ss": "worker_signups",
        "scp": "worker_account",
        "pwd_leak": "worker_security",
    }
    for event_type, record in records.items():
        line = f"auth0 event {event_type} "
        wait_for(
            lambda line=line, r=record: any(  # type: ignore[misc]  # a default argument binds the loop turn's value
                line in entry and r["log_id"] in entry for entry in log_text().splitlines()
            ),
            30,
            0.2,
            line,
        )
        [entry] = [e for e in log_text().splitlines() if line in e and record["log_id"] in e]
        assert entry.split("|")[0].split()[-1].startswith(expected_worker[event_type])
    assert get(flower).status_code == 401  # type: ignore[union-attr]
    workers = wait_for(lambda: _flower_workers(flower), 30, 0.5, "Flower to list the workers")
    assert {name.split("@")[0] for name in workers} >= {"logins", "signups", "account", "security"}


def _flower_workers(flower: str) -> list[str]:
    response = get(f"{flower}/api/workers", params={"refresh": "1"}, auth=("admin", "flower-test"))
    if response is None or response.status_code != 200:
        return []
    names = list(response.json())
    return names if len(names) >= 4 else []
