"""The Celery app every process shares, configured from celeryconfig: it builds and sends task messages.

It has no worker start-up steps and no signal handlers; the worker adds its own to this same app
(tasks/celery_app.py), so the receiver and the command line publish without loading the worker, and a
process that runs both (the tests' embedded worker) still has one app.
"""

from __future__ import annotations

from celery import Celery

app = Celery("auth0_events")
app.config_from_object("celeryconfig")


def task_time_limits(celery: Celery) -> tuple[float | None, float | None]:
    """The (hard, soft) time limits a task message carries, as ``send_task`` copies them from the task.

    The task sets none of its own, so Celery gives it celeryconfig's ``task_time_limit`` and
    ``task_soft_time_limit``; reading them here spares the receiver from importing the task.
    """
    return celery.conf.task_time_limit, celery.conf.task_soft_time_limit
