"""Handlers shipped with the service, each enabled by name in AUTH0_EVENTS_BUILTIN_HANDLERS."""

from __future__ import annotations

from collections.abc import Iterable

BUILTIN_MODULES = {
    "log": "tasks.builtin.log_event",
}


def builtin_modules(names: Iterable[str]) -> list[str]:
    """Return the modules of the named built-in handlers; raises ValueError naming an unknown one."""
    modules = []
    for name in names:
        if name not in BUILTIN_MODULES:
            known = ", ".join(sorted(BUILTIN_MODULES))
            raise ValueError(f"AUTH0_EVENTS_BUILTIN_HANDLERS: unknown handler {name!r}; known: {known}")
        modules.append(BUILTIN_MODULES[name])
    return modules
