"""Time limits under the threads pool, which enforces none: a task past the hard limit ends the worker.

Celery's prefork pool kills the process of a task past its hard time limit and requeues the message
(task_reject_on_worker_lost); the threads pool cannot kill a thread, and ignores both limits. Here a
watchdog thread of the worker's process notes when each task started (Celery's task_prerun and
task_postrun signals, sent in the task's own thread) and, once one has run past the hard limit, logs it at
CRITICAL and ends the whole process, as the prefork pool ends the task's: RabbitMQ redelivers every
unacked message, each redelivery counts as a failed attempt (tasks/retry_policy.decide_redelivery), so an
event that hangs every time ends in its DLQ, and the ledger skips every effect already done. The
supervisor (docker compose's restart policy, systemd, the platform) starts the worker again. At the soft
limit it logs a WARNING naming the task: a thread cannot be interrupted safely while it may hold the
ledger's shared transaction.

Hand-written: Celery has no time limits for the threads pool.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import concurrency

logger = logging.getLogger(__name__)

#: The worker's exit status when a task ran past the hard time limit (EX_SOFTWARE).
EXIT_CODE = 70
CHECK_SECONDS = 1.0


class Watchdog:
    """Running tasks and their start; a thread that acts on those past the soft and hard limits."""

    def __init__(
        self,
        soft: float,
        hard: float,
        exit_process: Callable[[int], Any] = os._exit,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.soft, self.hard = soft, hard
        self._exit, self._clock = exit_process, clock
        self._running: dict[str, tuple[float, str]] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def started(self, task_id: str, what: str) -> None:
        """Note that ``task_id`` (described by ``what``) started now."""
        with self._lock:
            self._running[task_id] = (self._clock(), what)

    def finished(self, task_id: str) -> None:
        """Forget ``task_id``."""
        with self._lock:
            self._running.pop(task_id, None)
            self._warned.discard(task_id)

    def check(self) -> None:
        """Warn about tasks past the soft limit; end the process when one is past the hard limit."""
        now = self._clock()
        with self._lock:
            running = list(self._running.items())
        for task_id, (since, what) in running:
            age = now - since
            if age >= self.hard:
                logger.critical(
                    "task %s (%s) has run %.0f s, past the hard time limit of %.0f s: a thread cannot be "
                    "killed, so the worker exits; RabbitMQ redelivers its unacked events, each counted as "
                    "a failed attempt",
                    task_id,
                    what,
                    age,
                    self.hard,
                )
                logging.shutdown()
                self._exit(EXIT_CODE)
                return
            if age >= self.soft and task_id not in self._warned:
                self._warned.add(task_id)
                logger.warning(
                    "task %s (%s) has run %.0f s, past the soft time limit of %.0f s; the worker exits at "
                    "%.0f s",
                    task_id,
                    what,
                    age,
                    self.soft,
                    self.hard,
                )

    def start(self) -> None:
        """Check every second in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="time-limits", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(CHECK_SECONDS)
            self.check()


_watchdog: Watchdog | None = None


def install(sender: Any = None, **_: Any) -> None:
    """Start the watchdog in a worker that runs the threads pool (Celery's worker_init signal)."""
    global _watchdog
    app = getattr(sender, "app", None)
    if app is None or _watchdog is not None:
        return
    pool = concurrency.get_implementation(getattr(sender, "pool_cls", None) or app.conf.worker_pool)
    if pool.__module__ != "celery.concurrency.thread":
        return  # prefork enforces the limits itself
    hard = float(app.conf.task_time_limit)
    _watchdog = Watchdog(float(app.conf.task_soft_time_limit or hard), hard)
    _watchdog.start()


def task_started(task_id: str | None = None, task: Any = None, kwargs: Any = None, **_: Any) -> None:
    """task_prerun: note the task's start (threads pool only)."""
    if _watchdog is not None and task_id:
        what = ", ".join(f"{key}={(kwargs or {}).get(key)}" for key in ("event_type", "log_id"))
        _watchdog.started(task_id, what)


def task_finished(task_id: str | None = None, **_: Any) -> None:
    """task_postrun: forget the task (threads pool only)."""
    if _watchdog is not None and task_id:
        _watchdog.finished(task_id)
