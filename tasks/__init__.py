"""The worker: the Celery task, processing, the ledger, the handler registry (the plug-in API), the retry
policy, the built-in handlers and plug-in loading.

``celery -A tasks worker -Q auth0.ss`` finds the app here (``tasks.app``). The app and the task are imported
when first asked for, so a handler package importing ``tasks.handlers`` or ``tasks.events`` does not build
the worker's Celery app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasks.celery_app import app
    from tasks.event_task import handle_event

__all__ = ["app", "handle_event"]


def __getattr__(name: str) -> Any:
    """``app`` and ``handle_event``, imported on first use (PEP 562)."""
    if name == "app":
        from tasks.celery_app import app

        return app
    if name == "handle_event":
        from tasks.event_task import handle_event

        return handle_event
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
