"""Flower against the real broker and a real worker: tasks by event type, state and runtime, behind a login.

One run of traffic per module (a succeeding event, a retried one, a dead-lettered one, and a few more so the
page looks like a real one) is checked twice: through Flower's HTTP API, and on Flower's tasks page in
headless Chromium. Set AUTH0_EVENTS_UPDATE_SCREENSHOT=1 to refresh docs/flower-tasks.png from that page.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import (
    ROOT,
    TEST_TOKEN,
    WorkerProcess,
    as_jsonl,
    free_port,
    make_record,
    stop_process_group,
    wait_for,
    with_action,
)

pytestmark = pytest.mark.worker

TASK_NAME = "auth0_events.handle_event"
LOGIN = ("flower-admin", "flower-test-password")
# The tasks page's columns, as .env.example sets them: the event type is in kwargs.
TASKS_COLUMNS = "name,uuid,state,kwargs,retries,received,runtime,worker"
DEAD_LETTER_REASON = "permanent error: PermanentError: user does not exist upstream"
CHROMIUM = os.environ.get("AUTH0_EVENTS_TEST_CHROMIUM", "/usr/bin/chromium")
# Headless as root (Playwright adds --headless and --no-sandbox, and a new empty profile of its own). Without
# the background-networking flags Chromium keeps calling Google's hosts, which a closed network refuses.
CHROMIUM_FLAGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = ROOT / "docs" / "flower-tasks.png"


@dataclass
class Traffic:
    """What the module's run sent, to which queues, and where Flower answers."""

    flower: str
    worker: WorkerProcess
    queues: dict[str, str]
    succeeded: dict[str, Any]
    retried: dict[str, Any]
    dead_lettered: dict[str, Any]
    others: list[dict[str, Any]]

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every record sent, in order."""
        return [self.succeeded, self.retried, self.dead_lettered, *self.others]


def flower_get(url: str, auth: tuple[str, str] | None = LOGIN, **params: Any) -> requests.Response | None:
    """GET from Flower, logged in unless ``auth`` is None; None while Flower is not listening yet."""
    try:
        return requests.get(url, params=params, auth=auth, timeout=5)
    except requests.ConnectionError:
        return None


def flower_tasks(flower: str, **params: Any) -> dict[str, dict[str, Any]]:
    """Flower's /api/tasks for the event task, keyed by the event's log_id (read from the task's kwargs)."""
    response = flower_get(f"{flower}/api/tasks", taskname=TASK_NAME, **params)
    assert response is not None
    assert response.status_code == 200, response.text
    by_log_id = {}
    for task in response.json().values():
        kwargs = ast.literal_eval(task["kwargs"])  # Flower shows kwargs as their repr
        by_log_id[kwargs["log_id"]] = {**task, "kwargs": kwargs}
    return by_log_id


def worker_online(flower: str, worker: WorkerProcess) -> bool:
    """Flower has received the worker's events (its online gauge is set by worker heartbeats)."""
    response = flower_get(f"{flower}/metrics", auth=None)
    if response is None or response.status_code != 200:
        return False
    return any(
        line.startswith(f'flower_worker_online{{worker="{worker.name}@') and line.endswith(" 1.0")
        for line in response.text.splitlines()
    )


def flower_command(port: int) -> list[str]:
    """The Procfile's flower line, on a port of the test's own."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tasks",
        "flower",
        "--address=127.0.0.1",
        f"--port={port}",
        f"--basic-auth={LOGIN[0]}:{LOGIN[1]}",
    ]


def flower_env(**overrides: str) -> dict[str, str]:
    """This run's environment without any FLOWER_* of the caller's, plus ``overrides``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("FLOWER_")}
    return {**env, **overrides}


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    """A worker on queues of this module's own, Flower watching, and a batch of events they have finished.

    Module-scoped so the API and the browser checks share one run; it therefore builds the worker and the
    receiver the way the function-scoped start_worker and make_app fixtures do.
    """
    from app import create_app
    from kernel.settings import load_settings

    directory = tmp_path_factory.mktemp("flower")
    suffix = uuid.uuid4().hex[:6]
    queues = {code: f"test.flower.{code}.{suffix}" for code in ("s", "ss", "fp", "scp", "pwd_leak")}
    routes = ",".join(f"{code}={queue}" for code, queue in queues.items())
    worker = WorkerProcess(
        list(queues.values()),
        f"events-{suffix}",
        directory / "worker.log",
        {"AUTH0_EVENTS_ROUTES": routes},
        concurrency=2,
    )
    port = free_port()
    flower_log = directory / "flower.log"
    with open(flower_log, "wb") as log:
        flower = subprocess.Popen(
            flower_command(port),
            cwd=ROOT,
            env=flower_env(AUTH0_EVENTS_ROUTES=routes, FLOWER_TASKS_COLUMNS=TASKS_COLUMNS),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    app = None

    def flower_up() -> bool:
        if flower.poll() is not None:
            raise AssertionError(f"Flower exited at start:\n{flower_log.read_text()[-5000:]}")
        response = flower_get(f"{url}/healthcheck", auth=None)
        return response is not None and response.status_code == 200

    try:
        worker.start()
        wait_for(flower_up, 30, 0.1, "Flower to answer /healthcheck")
        wait_for(lambda: worker_online(url, worker), 30, 0.2, "Flower to receive the worker's events")

        succeeded = make_record("s")
        retried = with_action(make_record("ss"), "fail_once")
        dead_lettered = with_action(make_record("fp"), "permanent")
        others = [make_record("scp"), make_record("pwd_leak"), make_record("s")]
        records = [succeeded, retried, dead_lettered, *others]
        app = create_app({"TESTING": True, "SETTINGS": load_settings(routes=routes)})
        response = app.test_client().post(
            "/webhooks/auth0", data=as_jsonl(records), headers={"Authorization": TEST_TOKEN}
        )
        assert response.status_code == 202, response.get_data(as_text=True)
        body = response.get_json()
        assert body is not None
        assert body["accepted"] == len(records)

        def all_finished() -> bool:
            tasks = flower_tasks(url)
            finished = all(tasks.get(r["log_id"], {}).get("state") in ("SUCCESS", "FAILURE") for r in records)
            # task-rejected follows task-failed
            return finished and tasks[dead_lettered["log_id"]]["rejected"] is not None

        wait_for(all_finished, 30, 0.2, f"Flower to show every task finished (worker log: {worker.log_path})")
        yield Traffic(url, worker, queues, succeeded, retried, dead_lettered, others)
    finally:
        if app is not None:
            app.extensions["auth0_events"].publisher.close()
        stop_process_group(flower)
        worker.stop()


def test_flower_api_requires_the_login(traffic: Traffic) -> None:
    """Without the basic-auth login, or with a wrong one, Flower's API and pages answer 401."""
    for path in ("/api/tasks", "/api/workers", "/tasks", "/"):
        for auth in (None, (LOGIN[0], "wrong-password")):
            response = flower_get(f"{traffic.flower}{path}", auth=auth)
            assert response is not None
            assert response.status_code == 401, (path, auth)
    response = flower_get(f"{traffic.flower}/api/tasks")
    assert response is not None
    assert response.status_code == 200


def test_flower_api_shows_each_task_with_event_type_state_and_runtime(traffic: Traffic) -> None:
    """/api/tasks: each event's task with its event type (kwargs), queue, worker, state and runtime."""
    tasks = flower_tasks(traffic.flower)
    for record in traffic.records:
        task = tasks[record["log_id"]]
        event_type = record["data"]["type"]
        assert task["name"] == TASK_NAME
        assert task["kwargs"]["event_type"] == event_type
        assert task["routing_key"] == traffic.queues[event_type]
        assert task["worker"].startswith(f"{traffic.worker.name}@")
        assert task["sent"] is not None  # task_send_sent_event: seen from the moment it was published
        assert task["received"] is not None
        assert task["started"] is not None

    succeeded = tasks[traffic.succeeded["log_id"]]
    assert succeeded["state"] == "SUCCESS"
    assert (succeeded["retries"], succeeded["retried"], succeeded["exception"]) == (0, None, None)
    assert succeeded["runtime"] > 0

    # A retry keeps the task id: one task, SUCCESS, with the retry's time, count and reason on it.
    retried = tasks[traffic.retried["log_id"]]
    assert retried["state"] == "SUCCESS"
    assert retried["retries"] == 1
    assert retried["retried"] is not None
    assert retried["succeeded"] > retried["retried"]
    assert retried["exception"] == "RetryableError('upstream said 503 (first attempt)')"
    assert retried["runtime"] > 0

    # Reject(requeue=False) is reported as task-failed, then task-rejected; Flower keeps FAILURE and the
    # reason. Celery's task-failed event carries no runtime, so Flower has started and failed times only.
    dead = tasks[traffic.dead_lettered["log_id"]]
    assert dead["state"] == "FAILURE"
    assert dead["exception"] == f"reject requeue=False: {DEAD_LETTER_REASON}"
    assert dead["retries"] == 0
    assert dead["rejected"] is not None
    assert dead["failed"] >= dead["started"]
    assert dead["runtime"] is None

    failed_only = flower_tasks(traffic.flower, state="FAILURE")
    assert traffic.dead_lettered["log_id"] in failed_only
    assert traffic.succeeded["log_id"] not in failed_only
    response = flower_get(f"{traffic.flower}/api/task/info/{dead['uuid']}")
    assert response is not None
    assert response.status_code == 200
    assert response.json()["state"] == "FAILURE"
    assert DEAD_LETTER_REASON in response.json()["exception"]


def test_flower_shows_no_record_in_args(traffic: Traffic) -> None:
    """The receiver's argsrepr keeps the record (user name, email, IP) out of Flower, on retries too."""
    tasks = flower_tasks(traffic.flower)
    shown = {r["log_id"]: tasks[r["log_id"]]["args"] for r in traffic.records}
    assert shown == {
        r["log_id"]: f"(<auth0 log {r['data']['type']} {r['log_id']}>,)" for r in traffic.records
    }


def chromium_or_fail() -> str:
    """The Chromium the browser check drives; when it is missing the test fails saying how to install it."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: the Flower browser check drives Debian's chromium package; "
            "install it with `apt-get update && apt-get install -y chromium` (or point "
            "AUTH0_EVENTS_TEST_CHROMIUM at a Chromium binary)",
            pytrace=False,
        )
    return CHROMIUM


def test_flower_tasks_page_in_headless_chromium(traffic: Traffic, tmp_path: Path) -> None:
    """Flower's tasks page wants a login; logged in, its rendered table lists every task by event type."""
    executable = chromium_or_fail()
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    tasks = flower_tasks(traffic.flower)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, chromium_sandbox=False, args=CHROMIUM_FLAGS
        )
        try:
            # Flower answers 401 and a browser with no credentials to offer gives up on the page.
            with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
                browser.new_page().goto(f"{traffic.flower}/tasks")

            context = browser.new_context(
                http_credentials={"username": LOGIN[0], "password": LOGIN[1]},
                viewport={"width": 1920, "height": 640},
            )
            page = context.new_page()
            response = page.goto(f"{traffic.flower}/tasks")
            assert response is not None
            assert response.status == 200
            # The rows come from the page's JavaScript (DataTables fetching /tasks/datatable).
            rows = page.locator("#tasks-table tbody tr")
            for record in traffic.records:
                rows.filter(has_text=record["log_id"]).wait_for(timeout=15_000)
            headers = page.locator("#tasks-table thead th").all_inner_texts()
            assert [header.lower() for header in headers] == TASKS_COLUMNS.split(",")
            for record in traffic.records:
                task = tasks[record["log_id"]]
                texts = rows.filter(has_text=record["log_id"]).locator("td").all_text_contents()
                cells = dict(zip(TASKS_COLUMNS.split(","), texts, strict=True))
                assert cells["name"] == TASK_NAME
                assert cells["uuid"].startswith(task["uuid"])  # the full uuid, then its first block
                assert ast.literal_eval(cells["kwargs"])["event_type"] == record["data"]["type"]
                assert cells["state"] == task["state"]
                assert cells["retries"] == str(task["retries"])
                assert cells["worker"] == task["worker"]
                assert bool(cells["runtime"].strip()) == (task["state"] == "SUCCESS")  # failures: no runtime
            retried = rows.filter(has_text=traffic.retried["log_id"]).locator("td").all_text_contents()
            assert dict(zip(TASKS_COLUMNS.split(","), retried, strict=True))["retries"] == "1"

            card = page.locator(".tasks-table-card").bounding_box()
            assert card is not None
            shot = tmp_path / "flower-tasks.png"
            page.screenshot(
                path=shot,
                full_page=True,
                clip={"x": 0, "y": 0, "width": 1920, "height": card["y"] + card["height"] + 24},
            )
            if os.environ.get("AUTH0_EVENTS_UPDATE_SCREENSHOT") == "1":
                SCREENSHOT.parent.mkdir(exist_ok=True)
                shutil.copyfile(shot, SCREENSHOT)
        finally:
            browser.close()


def test_flower_reads_broker_api_from_the_environment(tmp_path: Path) -> None:
    """FLOWER_BROKER_API is Flower's --broker_api (compose sets it): Flower validates it at start-up."""
    log_path = tmp_path / "flower.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            flower_command(free_port()),
            cwd=ROOT,
            env=flower_env(FLOWER_BROKER_API="rabbitmq:15672/api/"),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        assert process.wait(timeout=30) != 0
    finally:
        stop_process_group(process)
    assert "Invalid '--broker-api' option: invalid scheme" in log_path.read_text()


def env_example_flower_lines() -> dict[str, str]:
    """FLOWER_* variables of .env.example, set or commented out, with their values."""
    found = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.fullmatch(r"#?\s*(FLOWER_[A-Z0-9_]+)=(.*)", line.strip())
        if match:
            found[match[1]] = match[2]
    return found


def test_env_example_names_only_real_flower_options() -> None:
    """Flower silently ignores a FLOWER_* name that is not one of its options, so a typo would go unseen."""
    from flower.options import default_options

    lines = env_example_flower_lines()
    assert {"FLOWER_BASIC_AUTH", "FLOWER_BROKER_API", "FLOWER_AUTH", "FLOWER_AUTH_PROVIDER"} <= set(lines)
    unknown = [name for name in lines if name.removeprefix("FLOWER_").lower() not in default_options]
    assert not unknown, f"not Flower options: {unknown}"
    assert lines["FLOWER_TASKS_COLUMNS"] == TASKS_COLUMNS
    # The vhost comes from BROKER_URL and is appended to this base, which needs its trailing slash.
    assert re.fullmatch(r"https?://[^/]+/api/", lines["FLOWER_BROKER_API"])


def test_readme_screenshot_exists_and_is_small() -> None:
    """docs/flower-tasks.png (AUTH0_EVENTS_UPDATE_SCREENSHOT=1 refreshes it) is a small PNG."""
    data = SCREENSHOT.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) < 300_000
