"""Worker start-up steps: refuse a database not at the migrations' head, name handlers the routes starve,
declare the whole topology."""

from __future__ import annotations

import logging
import os
import time
from typing import Any, NoReturn

from celery import bootsteps
from celery.worker.state import maybe_shutdown

from kernel.routing import parse_routes
from kernel.settings import get_settings
from kernel.storage.db import SchemaUnreadable, wait_for_revisions
from kernel.storage.explain import safe_url
from kernel.topology import declare_all
from tasks.handlers import ALL_EVENTS, registered, routing_gaps

logger = logging.getLogger(__name__)

# A worker started while its database server restarts, or before the server's container is up, waits this
# long before refusing, as Celery waits for the broker; a supervisor's restart then makes it visible.
DATABASE_WAIT_SECONDS = 300.0


class CheckDatabaseSchema(bootsteps.StartStopStep):  # type: ignore[misc]
    """Refuse to start a worker whose database is not at this release's migration head.

    A worker step, so it runs before the Consumer (which Celery starts last): when it refuses, the worker
    has not connected to the broker, and no message is consumed only to fail with ``no such table``.
    """

    def start(self, worker: Any) -> None:
        """Exit with EX_CONFIG naming the database and `auth0-events db upgrade` unless it is at head."""
        url = get_settings().database_url
        try:
            revisions = wait_for_revisions(url, DATABASE_WAIT_SECONDS, sleep=_sleep_unless_stopping)
        except SchemaUnreadable as exc:
            _refuse(str(exc), os.EX_UNAVAILABLE)
        problem = revisions.problem(url)
        if problem:
            _refuse(problem, os.EX_CONFIG)
        logger.info("the database %s is at revision %s", safe_url(url), ", ".join(revisions.current))


def _refuse(message: str, exit_code: int) -> NoReturn:
    logger.critical("the worker refuses to start: %s", message)
    # WorkController.start turns SystemExit into a shutdown with this exit code, without a traceback.
    raise SystemExit(exit_code)


def _sleep_unless_stopping(seconds: float) -> None:
    """Sleep, ending the worker at once when it is told to stop (Ctrl-C, SIGTERM) meanwhile."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        maybe_shutdown()  # Celery's signal handlers only set a flag; the consumer's loop is not running yet
        time.sleep(min(left, 0.2))
    maybe_shutdown()


class ReportRoutingGaps(bootsteps.StartStopStep):  # type: ignore[misc]
    """Log one WARNING per enabled handler that listens to codes AUTH0_EVENTS_ROUTES drops.

    Such a handler never fires for those codes, and nothing else would say so: the receiver counts the
    events as filtered. Runs once the built-ins and plug-ins are imported (Celery's ``imports``).
    """

    def start(self, worker: Any) -> None:
        """Log the gaps; a handler of every event (``*``) gets an INFO line when the routes filter."""
        table = parse_routes(get_settings().routes)
        for gap in routing_gaps(table):
            logger.warning("%s", gap.warning())
        every_event = [reg.name for reg in registered() if ALL_EVENTS in reg.selectors]
        if every_event and table.catch_all is None:
            logger.info("handlers of every event see only the routed codes: %s", ", ".join(every_event))


class DeclareTopology(bootsteps.StartStopStep):  # type: ignore[misc]
    """Declare exchanges, work queues, DLQs and the quarantine queue each time the worker connects."""

    requires = ("celery.worker.consumer.connection:Connection",)

    def start(self, consumer: Any) -> None:
        """Declare on the consumer's connection; runs again after every reconnection."""
        settings = get_settings()
        queues = parse_routes(settings.routes).queues
        declared = declare_all(consumer.connection, queues, settings.queue_type)
        logger.info("declared %d queues (work queues, their DLQs and the quarantine queue)", len(declared))
