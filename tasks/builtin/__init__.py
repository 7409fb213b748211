"""Handlers shipped with the service, each enabled by configuration."""

from __future__ import annotations

from kernel.settings import Settings

BUILTIN_MODULES = {
    "log": "tasks.builtin.log_event",
}


def builtin_modules(settings: Settings) -> list[str]:
    """Return the modules of the built-in handlers the settings enable.

    ``log`` is named in AUTH0_EVENTS_BUILTIN_HANDLERS; the alerts are on when AUTH0_EVENTS_ALERT_WEBHOOK_URL
    is set, the Management API actions when AUTH0_EVENTS_BLOCK_BREACHED_USERS or AUTH0_EVENTS_SIGNUP_ROLES
    is. Raises ValueError naming an unknown name in AUTH0_EVENTS_BUILTIN_HANDLERS.
    """
    modules = []
    for name in settings.builtin_handlers:
        if name not in BUILTIN_MODULES:
            known = ", ".join(sorted(BUILTIN_MODULES))
            raise ValueError(f"AUTH0_EVENTS_BUILTIN_HANDLERS: unknown handler {name!r}; known: {known}")
        modules.append(BUILTIN_MODULES[name])
    if settings.alert_webhook_url:
        modules.append("tasks.builtin.alerts")
    if settings.block_breached_users or settings.signup_roles:
        modules.append("tasks.builtin.auth0_actions")
    return modules
