"""The handler registry: plain functions subscribe to event types with ``@handles``.

Public API::

    from tasks.handlers import handles, RetryableError, PermanentError

    @handles("ss", "s")              # event codes, stream categories such as "auth.login.fail", or "*"
    def welcome(event: Auth0Event) -> None: ...

    @handles("sdu", transactional=True)   # writes to the service's database atomically with its ledger mark
    def forget_user(event: Auth0Event, session: Session) -> None: ...
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kernel.catalogue import describe, is_category
from kernel.routing import RouteTable

Handler = Callable[..., object]

ALL_EVENTS = "*"


class RetryableError(Exception):
    """Raise from a handler when the failure is transient: the event is retried with backoff.

    ``retry_after`` (seconds), when the remote side said how long to wait, replaces the computed delay.
    """

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(Exception):
    """Raise from a handler when retrying cannot help: the event goes to its dead-letter queue at once."""


@dataclass(frozen=True)
class Registration:
    """One handler and the event codes, categories or ``*`` it subscribed to."""

    name: str
    func: Handler
    selectors: frozenset[str]
    #: Called as ``func(event, session)`` inside the ledger's transaction, which commits its writes and
    #: its "done" mark together; otherwise called as ``func(event)``.
    transactional: bool = False

    def wants(self, event_type: str) -> bool:
        """Whether this handler runs for events of ``event_type``."""
        category = describe(event_type).category or "other"
        return bool({ALL_EVENTS, event_type, category} & self.selectors)


_registry: dict[str, Registration] = {}


def handles(*selectors: str, transactional: bool = False) -> Callable[[Handler], Handler]:
    """Subscribe the decorated function to events of the given codes or categories.

    With ``transactional=True`` the function also receives the ledger's SQLAlchemy session; what it writes
    there commits in the same transaction as its "done" mark, so the write happens exactly once.
    Raises ValueError at import time for no selector or an unknown category, so typos fail loudly.
    """
    if not selectors or not all(isinstance(s, str) and s for s in selectors):
        raise ValueError("@handles needs at least one event code, stream category or '*'")
    for selector in selectors:
        # Codes may be newer than our catalogue, but a dotted name can only be a stream category.
        if "." in selector and not is_category(selector):
            raise ValueError(f"@handles: {selector!r} is not a stream category such as 'auth.login.fail'")

    def register(func: Handler) -> Handler:
        name = f"{func.__module__}.{func.__qualname__}"
        _registry[name] = Registration(name, func, frozenset(selectors), transactional)
        return func

    return register


def handlers_for(event_type: str) -> list[Registration]:
    """Return the registrations that run for ``event_type``, in registration order."""
    return [reg for reg in _registry.values() if reg.wants(event_type)]


def registered() -> list[Registration]:
    """Return every registration, in registration order."""
    return list(_registry.values())


@dataclass(frozen=True)
class RoutingGap:
    """An enabled handler and the event codes it listens to that the routes drop: it never sees those."""

    name: str
    dropped: tuple[str, ...]

    def warning(self) -> str:
        """One line for the worker's log and `auth0-events routes`."""
        return (
            f"handler {self.name} listens to {', '.join(self.dropped)}, which AUTH0_EVENTS_ROUTES drops: it "
            "never sees those events. Route them in AUTH0_EVENTS_ROUTES (and their queues in a worker's -Q "
            "list), or stop subscribing to them"
        )


def dropped_codes(registration: Registration, table: RouteTable) -> tuple[str, ...]:
    """The codes ``registration`` subscribes to (itself or through a category) that ``table`` drops."""
    return tuple(sorted({code for selector in registration.selectors for code in table.dropped_by(selector)}))


def routing_gaps(table: RouteTable) -> list[RoutingGap]:
    """Every registered handler that listens to codes ``table`` drops, in registration order."""
    gaps = (RoutingGap(reg.name, dropped_codes(reg, table)) for reg in _registry.values())
    return [gap for gap in gaps if gap.dropped]


def unregister(name: str) -> None:
    """Remove a handler by its dotted name; tests use this to leave the registry as they found it."""
    _registry.pop(name, None)


def import_handler_modules(module_names: Iterable[str], source: str = "") -> None:
    """Import each module so its ``@handles`` functions register.

    Raises ImportError naming the module (and ``source``, the setting that named it) when one cannot be
    imported, so a worker fails at start-up rather than running without a handler its operator configured.
    """
    for module_name in module_names:
        try:
            importlib.import_module(module_name)
        except ImportError as exc:
            named_in = f" named in {source}" if source else ""
            raise ImportError(f"cannot import handler module {module_name!r}{named_in}: {exc}") from exc
