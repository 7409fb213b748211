"""The worker's request class: Flower's task-retried and task-failed events read the same in every pool.

billiard's ExceptionInfo wraps a task's exception in ExceptionWithTraceback. The prefork pool pickles it to
the main process, which unwraps it on the way; the threads pool hands over the wrapper itself, and
Celery's Request then shows ``Retry(Retry(...), <cause>, <countdown>)`` for a retry and the wrapper's
object repr, without the (masked) reason, for a dead letter. Unwrapped here first, the events carry the
cause and the reason, as under prefork (tests/test_flower.py, tests/test_pii_masking.py).
"""

from __future__ import annotations

from typing import Any

from billiard.einfo import ExceptionWithTraceback
from celery.worker.request import Request


def _unwrapped(exc_info: Any) -> Any:
    if isinstance(getattr(exc_info, "exception", None), ExceptionWithTraceback):
        exc_info.exception = exc_info.exception.exc
    return exc_info


class EventRequest(Request):  # type: ignore[misc]
    """Celery's Request, with the task's exception unwrapped before its events are sent."""

    def on_retry(self, exc_info: Any) -> None:
        """Celery's handling of a retry, with the exception as prefork would give it."""
        super().on_retry(_unwrapped(exc_info))

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> Any:
        """Celery's handling of a failure (a dead letter among them), likewise."""
        return super().on_failure(_unwrapped(exc_info), send_failed_event, return_ok)
