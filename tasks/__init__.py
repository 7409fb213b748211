"""Event processing: the Celery app, its task, the handler registry and the failure policy.

``celery -A tasks worker -Q auth0.ss`` finds the app here.
"""

from tasks.celery_app import app
from tasks.event_task import handle_event

__all__ = ["app", "handle_event"]
