"""The Celery application shared by the receiver, the workers, Flower and the command line."""

from __future__ import annotations

from celery import Celery
from celery.signals import celeryd_after_setup, setup_logging, worker_process_shutdown

from kernel.logging_setup import celery_setup_logging
from tasks import metrics
from tasks.bootsteps import CheckDatabaseSchema, DeclareTopology, ReportRoutingGaps

app = Celery("auth0_events")
app.config_from_object("celeryconfig")
# Declare every DLQ before the worker takes its first message: a message rejected towards a DLX with no
# bound queue is dropped on classic queues (shared/reference/celery-rabbitmq.md §1, §3).
app.steps["consumer"].add(DeclareTopology)
# A worker whose database is not at the migrations' head exits before it consumes (tasks/bootsteps.py).
app.steps["worker"].add(CheckDatabaseSchema)
# One WARNING per enabled handler listening to codes the routes drop (it would never fire for them).
app.steps["worker"].add(ReportRoutingGaps)
# Each worker node serves its pool children's metrics on AUTH0_EVENTS_METRICS_PORT (tasks/metrics.py).
celeryd_after_setup.connect(metrics.serve)
worker_process_shutdown.connect(metrics.child_exited)
# JSON lines with each event's log_id, type, queue and task id (kernel/logging_setup.py), not Celery's format.
setup_logging.connect(celery_setup_logging)
