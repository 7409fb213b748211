"""Handlers the worker tests load through AUTH0_EVENTS_PLUGINS; each record's details say how to behave.

Every attempt appends ``attempt <log_id>`` and every completed effect ``effect <log_id>`` to files in
AUTH0_EVENTS_TEST_EFFECTS, so tests count attempts and effects exactly, across processes.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tasks.events import Auth0Event
from tasks.handlers import ALL_EVENTS, PermanentError, RetryableError, handles


def _effects_dir() -> Path:
    return Path(os.environ["AUTH0_EVENTS_TEST_EFFECTS"])


def _append(name: str, line: str) -> None:
    # O_APPEND writes of one short line are atomic, so several pool processes can share the file.
    with open(_effects_dir() / name, "a", encoding="utf-8") as file:
        file.write(line + "\n")


def _first_time(marker: str) -> bool:
    try:
        (_effects_dir() / marker).touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


@handles(ALL_EVENTS)
def scripted_handler(event: Auth0Event) -> None:
    """Behave as ``details.test_action`` says, then record the effect."""
    action = event.details.get("test_action", "record")
    _append("attempts.log", f"attempt {event.log_id}")
    if action == "fail_once" and _first_time(f"failed-{event.log_id}"):
        raise RetryableError("upstream said 503 (first attempt)")
    if action == "always_fail":
        raise RuntimeError("this handler always fails")
    if action == "permanent":
        raise PermanentError("user does not exist upstream")
    if action == "kill_child_once" and _first_time(f"killed-{event.log_id}"):
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "kill_child_always":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "block_once" and _first_time(f"blocked-{event.log_id}"):
        _append("started.log", f"started {event.log_id}")
        time.sleep(120)
    _append("effects.log", f"effect {event.log_id}")
