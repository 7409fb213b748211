"""Imported by every worker at start-up (Celery ``imports``): registers built-in and plug-in handlers."""

from __future__ import annotations

from tasks.builtin import builtin_modules
from tasks.handlers import import_handler_modules
from tasks.settings import get_settings


def load_handlers() -> None:
    """Import the enabled built-ins and every AUTH0_EVENTS_PLUGINS module.

    Raises ImportError naming the module and the variable, which stops the worker at start-up.
    """
    settings = get_settings()
    import_handler_modules(builtin_modules(settings))
    import_handler_modules(settings.plugins, source="AUTH0_EVENTS_PLUGINS")


load_handlers()
