"""Handlers the worker tests load through AUTH0_EVENTS_PLUGINS; each record's details say how to behave.

Every attempt appends ``attempt <log_id>`` and every completed effect ``effect <log_id>`` to files in
AUTH0_EVENTS_TEST_EFFECTS, so tests count attempts and effects exactly, across processes.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from sqlalchemy import Column, MetaData, String, Table
from sqlalchemy.orm import Session

from tasks.db import get_engine
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
    if action == "permanent_once" and _first_time(f"permanent-{event.log_id}"):
        raise PermanentError("user does not exist upstream (yet)")
    if action == "kill_child_once" and _first_time(f"killed-{event.log_id}"):
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "kill_child_always":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "block_once" and _first_time(f"blocked-{event.log_id}"):
        _append("started.log", f"started {event.log_id}")
        time.sleep(120)
    _append("effects.log", f"effect {event.log_id}")


@handles(ALL_EVENTS)
def second_handler(event: Auth0Event) -> None:
    """A second effect per event, behaving as ``details.test_action_second`` says."""
    action = event.details.get("test_action_second", "record")
    if action == "fail_once" and _first_time(f"second-failed-{event.log_id}"):
        raise RetryableError("second handler: upstream said 503 (first attempt)")
    if action == "block_once" and _first_time(f"second-blocked-{event.log_id}"):
        _append("started.log", f"started-second {event.log_id}")
        time.sleep(120)
    if action == "slow":
        time.sleep(1)
    _append("effects.log", f"effect2 {event.log_id}")


# A table of the test plug-in's own, written by the transactional handler in the ledger's transaction.
metadata = MetaData()
written = Table("test_plugin_writes", metadata, Column("log_id", String(128)), Column("handler", String(64)))
metadata.create_all(get_engine())


@handles(ALL_EVENTS, transactional=True)
def transactional_handler(event: Auth0Event, session: Session) -> None:
    """Write a row in the same transaction as the ledger's done mark; ``fail_after_write`` raises after."""
    session.execute(written.insert().values(log_id=event.log_id, handler="transactional"))
    if event.details.get("test_action_tx") == "fail_after_write" and _first_time(f"tx-{event.log_id}"):
        raise RetryableError("failed after writing, before commit")
