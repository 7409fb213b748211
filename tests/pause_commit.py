"""A plug-in module for the group-commit crash test: the worker's first shared commit stops before COMMIT.

Loaded through AUTH0_EVENTS_PLUGINS with AUTH0_EVENTS_TEST_PAUSE_COMMIT set: the first transaction of
tasks/group_commit.py carrying two writes or more appends ``paused <writes>`` to paused.log in
AUTH0_EVENTS_TEST_EFFECTS and then sleeps inside SQLAlchemy's commit event, its statements sent and its
COMMIT not, until the test kills the worker.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from tasks.group_commit import GROUP_SIZE_KEY

_paused = threading.Event()


def _pause_shared_commit(connection: Any) -> None:
    writes = connection.info.get(GROUP_SIZE_KEY, 0)
    if writes < 2 or _paused.is_set():
        return
    _paused.set()
    path = Path(os.environ["AUTH0_EVENTS_TEST_EFFECTS"]) / "paused.log"
    with open(path, "a", encoding="utf-8") as file:
        file.write(f"paused {writes}\n")
    time.sleep(120)


if os.environ.get("AUTH0_EVENTS_TEST_PAUSE_COMMIT"):
    event.listen(Engine, "commit", _pause_shared_commit)
