"""Worker start-up step that declares the whole topology, dead-letter queues included."""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

from tasks.routing import parse_routes
from tasks.settings import get_settings
from tasks.topology import declare_all

logger = logging.getLogger(__name__)


class DeclareTopology(bootsteps.StartStopStep):  # type: ignore[misc]
    """Declare exchanges, work queues, DLQs and the quarantine queue each time the worker connects."""

    requires = ("celery.worker.consumer.connection:Connection",)

    def start(self, consumer: Any) -> None:
        """Declare on the consumer's connection; runs again after every reconnection."""
        queues = parse_routes(get_settings().routes).queues
        declared = declare_all(consumer.connection, queues)
        logger.info("declared %d queues (work queues, their DLQs and the quarantine queue)", len(declared))
