"""The Celery task: a thin wrapper that runs the handlers and applies the failure policy."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from celery import Task
from celery.exceptions import Reject

from tasks import metrics
from tasks.celery_app import app
from tasks.events import parse_event
from tasks.logging_setup import log_context
from tasks.models import utcnow
from tasks.process import process_event, record_failure
from tasks.retry_policy import Decision, RetryPolicy, decide, decide_redelivery
from tasks.settings import get_settings

logger = logging.getLogger(__name__)

TASK_NAME = "auth0_events.handle_event"


def retry_policy() -> RetryPolicy:
    """Return the retry policy configured by AUTH0_EVENTS_MAX_RETRIES and AUTH0_EVENTS_RETRY_BACKOFF_*."""
    settings = get_settings()
    return RetryPolicy(settings.max_retries, settings.retry_backoff_base, settings.retry_backoff_max)


@app.task(bind=True, name=TASK_NAME, acks_late=True, max_retries=None)
def handle_event(
    self: Task, record: dict[str, Any], event_type: str, log_id: str, received_at: str | None = None
) -> None:
    """Run the handlers subscribed to one Auth0 log event (type and log_id label it in Flower)."""
    queue = self.request.delivery_info.get("routing_key")
    with log_context(log_id=log_id, event_type=event_type, queue=queue, task_id=self.request.id):
        _handle(self, record, event_type, log_id, received_at)


def _handle(
    task: Task, record: dict[str, Any], event_type: str, log_id: str, received_at: str | None
) -> None:
    policy = retry_policy()
    retries = task.request.retries
    if task.request.delivery_info.get("redelivered"):
        _apply(task, decide_redelivery(policy, retries), None, log_id, event_type)
    try:
        process_event(parse_event(record), task.request.id, _received(received_at), _stale_claim_age())
    except Exception as exc:  # noqa: BLE001 - the policy decides for every exception, unknown ones included
        _apply(task, decide(policy, exc, retries), exc, log_id, event_type)
    else:
        metrics.count_task(event_type, "succeeded")


def _received(received_at: str | None) -> datetime:
    try:
        return datetime.fromisoformat(received_at) if received_at else utcnow()
    except ValueError:
        return utcnow()


def _stale_claim_age() -> timedelta:
    # A claim older than the hard time limit (plus slack) belongs to a task that can no longer be running.
    return timedelta(seconds=get_settings().task_time_limit + 60)


def _apply(task: Task, decision: Decision, exc: Exception | None, log_id: str, event_type: str) -> None:
    """Raise Retry or Reject as ``decision`` says; Celery acks or rejects the message accordingly."""
    context = {
        "log_id": log_id,
        "event_type": event_type,
        "task_id": task.request.id,
        "queue": task.request.delivery_info.get("routing_key"),
        "retries": task.request.retries,
        "reason": decision.reason,
    }
    record_failure(
        log_id,
        task.request.id,
        "retrying" if decision.action == "retry" else "dead_lettered",
        decision.reason,
    )
    metrics.count_task(event_type, "retried" if decision.action == "retry" else "dead_lettered")
    if decision.action == "retry":
        logger.warning(
            "retrying event log_id=%s type=%s in %.2fs (retry %d): %s",
            log_id,
            event_type,
            decision.countdown,
            task.request.retries + 1,
            decision.reason,
            extra=context,
        )
        # max_retries=None: the policy above already bounded the count; Celery's own check must not
        # turn the last permitted retry into a re-raise that skips the dead-letter reason.
        # argsrepr again: Celery's retry would otherwise show the whole record (names, emails) in Flower.
        raise task.retry(
            exc=exc, countdown=decision.countdown, max_retries=None, argsrepr=task.request.argsrepr
        )
    logger.error(
        "dead-lettering event log_id=%s type=%s task_id=%s: %s",
        log_id,
        event_type,
        task.request.id,
        decision.reason,
        extra=context,
    )
    raise Reject(decision.reason, requeue=False)
