"""Imported by every worker at start-up (Celery ``imports``): registers built-in and plug-in handlers."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from kernel.settings import get_settings
from tasks.builtin import builtin_modules
from tasks.handlers import import_handler_modules

ENTRY_POINT_GROUP = "auth0_events.handlers"

logger = logging.getLogger(__name__)


def load_handlers() -> None:
    """Import the enabled built-ins, every installed plug-in and every AUTH0_EVENTS_PLUGINS module.

    Raises ImportError naming the module and where it was named, which stops the worker at start-up.
    """
    settings = get_settings()
    import_handler_modules(builtin_modules(settings))
    load_entry_points()
    import_handler_modules(settings.plugins, source="AUTH0_EVENTS_PLUGINS")


def load_entry_points() -> None:
    """Import the handler modules installed packages declare in the ``auth0_events.handlers`` group.

    Installing such a package is its configuration: ``pip install`` it where the workers run.
    """
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        package = entry_point.dist.name if entry_point.dist else "an installed package"
        try:
            entry_point.load()
        except ImportError as exc:
            raise ImportError(
                f"cannot import handler module {entry_point.value!r} that {package} declares in the "
                f"{ENTRY_POINT_GROUP!r} entry points: {exc}"
            ) from exc
        logger.info("loaded handlers %r from %s", entry_point.value, package)


load_handlers()
