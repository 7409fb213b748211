"""The worker's Celery app: the shared app (kernel/celery_app.py) plus the worker's steps and signals."""

from __future__ import annotations

from celery.signals import (
    celeryd_after_setup,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_shutdown,
)

from kernel.celery_app import app
from kernel.logging_setup import celery_setup_logging
from tasks import metrics, time_limits
from tasks.bootsteps import CheckDatabaseSchema, DeclareTopology, ReportRoutingGaps
from tasks.task_events import WorkerEvents

# Flower's task events are published by the consumer's thread only: under the threads pool a pool thread
# flushing them deadlocked the consumer (tasks/task_events.py). Set before anything builds app.events.
if "events" in vars(app):
    raise RuntimeError("app.events was built before the worker's WorkerEvents could be set")
app.events_cls = WorkerEvents
# Declare every DLQ before the worker takes its first message: a message rejected towards a DLX with no
# bound queue is dropped on classic queues (and stays stuck in a quorum queue until one is bound).
app.steps["consumer"].add(DeclareTopology)
# A worker whose database is not at the migrations' head exits before it consumes (tasks/bootsteps.py).
app.steps["worker"].add(CheckDatabaseSchema)
# One WARNING per enabled handler listening to codes the routes drop (it would never fire for them).
app.steps["worker"].add(ReportRoutingGaps)
# Each worker node serves its pool children's metrics on AUTH0_EVENTS_METRICS_PORT (tasks/metrics.py).
celeryd_after_setup.connect(metrics.serve)
worker_process_shutdown.connect(metrics.child_exited)
# The threads pool enforces no time limit: a task past the hard limit ends the worker (tasks/time_limits.py).
worker_init.connect(time_limits.install)
task_prerun.connect(time_limits.task_started)
task_postrun.connect(time_limits.task_finished)
# JSON lines with each event's log_id, type, queue and task id (kernel/logging_setup.py), not Celery's format.
setup_logging.connect(celery_setup_logging)

__all__ = ["app"]

# The app's one task, registered with it: whatever imports the worker's app can run and send it.
import tasks.event_task  # noqa: E402, F401 - after `app` is complete, since tasks.event_task imports it

# Finalized now, as a worker finalizes it when it starts: send_task then finds the task in the registry
# and copies its options (the time limits) into the message, in any process that imports the worker.
app.finalize()
