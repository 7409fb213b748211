"""The Celery task: a thin wrapper that runs the handlers and applies the failure policy."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from celery import Task
from celery.exceptions import Reject

from kernel.events import InvalidRecord, normalize_record, parse_event
from kernel.logging_setup import log_context
from kernel.pii import current_personal_values, mask_text, personal_values
from kernel.settings import get_settings
from kernel.storage.models import utcnow
from kernel.topology import source_queue
from kernel.wire import STREAM, TASK_NAME
from tasks import metrics
from tasks.celery_app import app
from tasks.process import process_event, record_failure
from tasks.retry_policy import Decision, RetryPolicy, decide, decide_redelivery

logger = logging.getLogger(__name__)

#: The record fields whose values AUTH0_EVENTS_LOG_MASK_PII masks wherever they appear while it is processed.
PERSONAL_RECORD_FIELDS = ("user_id", "user_name", "ip")


class MaskedError(Exception):
    """Raised in place of a handler's exception when AUTH0_EVENTS_LOG_MASK_PII is on.

    Celery's retry and reject carry it to the worker's log and to Flower's events: its text is the masked
    reason and its traceback the handler's, so neither holds the personal data of the original's text.
    """


def retry_policy() -> RetryPolicy:
    """Return the retry policy configured by AUTH0_EVENTS_MAX_RETRIES and AUTH0_EVENTS_RETRY_BACKOFF_*."""
    settings = get_settings()
    return RetryPolicy(
        settings.max_retries,
        settings.retry_backoff_base,
        settings.retry_backoff_max,
        whole_seconds=settings.queue_type == "quorum",
    )


# Request: the same retry and failure events in Flower whichever pool runs the task (tasks/request.py).
@app.task(bind=True, name=TASK_NAME, acks_late=True, max_retries=None, Request="tasks.request:EventRequest")
def handle_event(
    self: Task,
    record: dict[str, Any],
    event_type: str,
    log_id: str,
    received_at: str | None = None,
    source: str | None = None,
) -> None:
    """Run the handlers subscribed to one Auth0 log event (type and log_id label it in Flower)."""
    queue = _source_queue(self)
    with (
        log_context(log_id=log_id, event_type=event_type, queue=queue, task_id=self.request.id),
        personal_values(*_personal_values(record)),
    ):
        _handle(self, record, event_type, log_id, received_at, source)


def _source_queue(task: Task) -> str | None:
    routing_key = task.request.delivery_info.get("routing_key")
    return source_queue(routing_key) if routing_key else None


def _personal_values(record: object) -> list[str]:
    if not get_settings().log_mask_pii:
        return []
    try:
        data = normalize_record(record)["data"]
    except InvalidRecord:
        return []  # dead-lettered as invalid; its values are still masked where they look like addresses
    return [value for key in PERSONAL_RECORD_FIELDS if isinstance(value := data.get(key), str)]


def _handle(
    task: Task,
    record: dict[str, Any],
    event_type: str,
    log_id: str,
    received_at: str | None,
    source: str | None = None,
) -> None:
    policy = retry_policy()
    retries = task.request.retries
    if task.request.delivery_info.get("redelivered"):
        _apply(task, decide_redelivery(policy, retries), None, log_id, event_type)
    try:
        process_event(
            parse_event(record),
            task.request.id,
            _received(received_at),
            _stale_claim_age(),
            source=source if isinstance(source, str) and source else STREAM,
        )
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
    """Raise Retry or Reject as ``decision`` says; Celery acks or rejects the message accordingly.

    With AUTH0_EVENTS_LOG_MASK_PII the reason is masked before it is stored, logged or handed to Celery,
    and Celery gets a MaskedError instead of ``exc``.
    """
    reason, cause = decision.reason, exc
    if get_settings().log_mask_pii:
        reason = mask_text(reason, current_personal_values())
        cause = MaskedError(reason).with_traceback(exc.__traceback__) if exc is not None else None
    failure = _Failure(task, log_id, event_type, reason, cause)
    if decision.action == "retry":
        _retry(failure, decision.countdown)
    _dead_letter(failure)


@dataclass(frozen=True)
class _Failure:
    """A task's failed attempt: the reason (masked when asked) and the exception Celery is handed."""

    task: Task
    log_id: str
    event_type: str
    reason: str
    cause: BaseException | None

    def log_context(self) -> dict[str, Any]:
        """The fields of the log line that reports it."""
        request = self.task.request
        return {
            "log_id": self.log_id,
            "event_type": self.event_type,
            "task_id": request.id,
            "queue": _source_queue(self.task),
            "retries": request.retries,
            "reason": self.reason,
        }


def _retry(failure: _Failure, countdown: float) -> NoReturn:
    """Record and log the retry, and raise Celery's Retry for it ``countdown`` seconds from now."""
    task = failure.task
    record_failure(failure.log_id, task.request.id, "retrying", failure.reason)
    metrics.count_task(failure.event_type, "retried")
    logger.warning(
        "retrying event log_id=%s type=%s in %.2fs (retry %d): %s",
        failure.log_id,
        failure.event_type,
        countdown,
        task.request.retries + 1,
        failure.reason,
        extra=failure.log_context(),
    )
    # max_retries=None: the policy above already bounded the count; Celery's own check must not
    # turn the last permitted retry into a re-raise that skips the dead-letter reason.
    # argsrepr again: Celery's retry would otherwise show the whole record (names, emails) in Flower.
    # throw=False and "from cause": raised inside retry(), the Retry would chain the original
    # exception, whose text Celery's log line and Flower's traceback would then show.
    # queue: Celery would otherwise route a delayed retry (quorum queues) by task_default_queue's
    # routing key, sending every queue's retries to the first queue (celery.app.routes adds the
    # default queue to options that name only an exchange and routing key).
    retry = task.retry(
        exc=failure.cause,
        countdown=countdown,
        queue=_source_queue(task),
        max_retries=None,
        argsrepr=task.request.argsrepr,
        throw=False,
    )
    raise retry from failure.cause


def _dead_letter(failure: _Failure) -> NoReturn:
    """Record and log the dead-lettering, and raise Reject without requeue (the queue's DLX takes it)."""
    task = failure.task
    record_failure(failure.log_id, task.request.id, "dead_lettered", failure.reason)
    metrics.count_task(failure.event_type, "dead_lettered")
    logger.error(
        "dead-lettering event log_id=%s type=%s task_id=%s: %s",
        failure.log_id,
        failure.event_type,
        task.request.id,
        failure.reason,
        extra=failure.log_context(),
    )
    raise Reject(failure.reason, requeue=False) from failure.cause
