"""The Celery application shared by the receiver, the workers, Flower and the command line."""

from __future__ import annotations

from celery import Celery

from tasks.bootsteps import DeclareTopology

app = Celery("auth0_events")
app.config_from_object("celeryconfig")
# Declare every DLQ before the worker takes its first message: a message rejected towards a DLX with no
# bound queue is dropped on classic queues (shared/reference/celery-rabbitmq.md §1, §3).
app.steps["consumer"].add(DeclareTopology)
