"""Bare Celery, the end-to-end baseline: the project's Celery configuration (queues with their arguments,
acks_late, prefetch 1, task events) and a task of the same name and signature that does nothing.

bench/end_to_end.py starts the Procfile's worker lines with ``-A bench.bare_celery`` instead of
``-A tasks``: same processes, same queues, same messages, no ledger and no handlers.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, Task

# The receiver's task name (tasks.event_task.TASK_NAME), so the same messages run here.
TASK_NAME = "auth0_events.handle_event"

# With the worker's task-event dispatcher (tasks/task_events.py): with Celery's own, a threads-pool worker
# deadlocks flushing task events from a pool thread, and a bare Celery drain on threads never ends.
app = Celery("auth0_events_bare", events="tasks.task_events:WorkerEvents")
app.config_from_object("celeryconfig")
# No handler registry here: the no-op task needs none of the plug-ins celeryconfig imports.
app.conf.imports = []


class NoOpEventTask(Task):  # type: ignore[misc]
    """Takes the project's task arguments and does nothing: what is left is Celery's own cost per task."""

    name = TASK_NAME
    acks_late = True

    def run(
        self, record: dict[str, Any], event_type: str, log_id: str, received_at: str | None = None
    ) -> None:
        """Do nothing."""


# celeryconfig imports tasks.*, whose @app.task is shared with every app: reading the registry finalizes
# this app with the project's handle_event in it, which the no-op task then replaces.
app.tasks.pop(TASK_NAME, None)
handle_event = app.register_task(NoOpEventTask())
