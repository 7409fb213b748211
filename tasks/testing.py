"""Test helpers and pytest fixtures for handler authors: realistic records, handlers run through the ledger.

Installed with auth0-events as a pytest plug-in (entry point ``pytest11``): a plug-in's tests use the
``auth0_database`` fixture and ``run_handlers(make_event("ss"), database_url=auth0_database)``. No broker
is needed: handlers run in-process, once each, exactly as a worker runs them.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from kernel.events import Auth0Event, parse_event
from kernel.settings import get_settings
from kernel.storage.db import upgrade
from kernel.storage.models import utcnow
from tasks.process import Outcome, process_event

_sequence = itertools.count(1)


def new_log_id() -> str:
    """Return a fresh log_id shaped like Auth0's (900 + UTC timestamp + digits, 56 characters)."""
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    return f"900{stamp}{os.getpid():07d}{next(_sequence):010d}".ljust(56, "0")


def make_record(event_type: str, log_id: str | None = None, **data: Any) -> dict[str, Any]:
    """Return a log stream envelope carrying the fields a real record of ``event_type`` has."""
    log_id = log_id or new_log_id()
    fields: dict[str, Any] = {
        "date": "2026-11-26T08:25:14.466Z",
        "type": event_type,
        "description": "",
        "connection": "Username-Password-Authentication",
        "connection_id": "con_1a5wCUmAs6VOU17n",
        "client_id": "aI61p8I8aFjmYRliLWgvM9ev97kCCNDB",
        "client_name": "Default App",
        "ip": "81.2.69.143",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
        "details": {},
        "user_id": "auth0|61823277a44a21007221a59a",
        "user_name": "new@test.com",
        "strategy": "auth0",
        "strategy_type": "database",
        "scope": ["openid", "profile"],
        "log_id": log_id,
    }
    fields.update(data)
    return {"log_id": log_id, "data": fields}


def make_event(event_type: str, log_id: str | None = None, **data: Any) -> Auth0Event:
    """Return the Auth0Event a handler receives for a realistic record of ``event_type``."""
    return parse_event(make_record(event_type, log_id, **data))


def run_handlers(event: Auth0Event, task_id: str | None = None, database_url: str | None = None) -> Outcome:
    """Run the registered handlers for ``event`` through the ledger, as one worker attempt does.

    Raises what a handler raises; call it again with the same ``task_id`` to act as the retry.
    """
    return process_event(
        event,
        task_id or uuid.uuid4().hex,
        utcnow(),
        timedelta(seconds=get_settings().task_time_limit + 60),
        database_url,
    )


@pytest.fixture
def auth0_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A migrated SQLite ledger of the test's own; DATABASE_URL points at it while the test runs."""
    url = f"sqlite:///{tmp_path / 'auth0-events.sqlite3'}"
    upgrade(url)
    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()
