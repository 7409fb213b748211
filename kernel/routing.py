"""Which Auth0 events are accepted and the queue each goes to, parsed from AUTH0_EVENTS_ROUTES."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from kernel.catalogue import CATALOGUE, CATEGORIES, codes_in_category, describe, is_category

QUEUE_PREFIX = "auth0."
DLQ_SUFFIX = ".dlq"
QUARANTINE_QUEUE = "auth0.quarantine"
CATCH_ALL = "*"

_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,200}$")
_CODE = re.compile(r"^[a-z0-9_]+$")


class RouteSpecError(ValueError):
    """Raised when AUTH0_EVENTS_ROUTES cannot be understood; the message names the offending entry."""


@dataclass(frozen=True)
class RouteTable:
    """Queue per accepted event: an exact code wins over its category, which wins over ``*``."""

    by_code: Mapping[str, str]
    by_category: Mapping[str, str]
    catch_all: str | None = None

    def queue_for(self, code: str) -> str | None:
        """Return the queue for events of ``code``, or None when configuration filters them out."""
        if code in self.by_code:
            return self.by_code[code]
        # Auth0 files codes it lists under no filter, and codes newer than our catalogue, under "other".
        category = describe(code).category or "other"
        if category in self.by_category:
            return self.by_category[category]
        return self.catch_all

    def dropped_by(self, selector: str) -> tuple[str, ...]:
        """The event codes a handler selector names that no route carries, sorted.

        ``*`` names no code in particular: it sees whatever is routed. A category counts as itself when it
        is not routed and the catalogue knows none of its codes, since it can only match newer ones.
        """
        if selector == CATCH_ALL:
            return ()
        if not is_category(selector):
            return () if self.queue_for(selector) else (selector,)
        if selector in self.by_category or self.catch_all is not None:
            return ()
        codes = codes_in_category(selector)
        return tuple(sorted(code for code in codes if not self.queue_for(code))) if codes else (selector,)

    def filtered_codes(self) -> tuple[str, ...]:
        """The catalogue's codes no route carries, sorted: events of these are counted and dropped."""
        return tuple(sorted(code for code in CATALOGUE if not self.queue_for(code)))

    @property
    def queues(self) -> tuple[str, ...]:
        """Every work queue a route points at, sorted, each once."""
        names = {*self.by_code.values(), *self.by_category.values()}
        if self.catch_all is not None:
            names.add(self.catch_all)
        return tuple(sorted(names))


def default_queue_for(selector: str) -> str:
    """Return the queue a selector gets when no ``=queue`` is given: ``auth0.<code or category>``."""
    return "auth0.other" if selector == CATCH_ALL else QUEUE_PREFIX + selector


def parse_routes(spec: str) -> RouteTable:
    """Parse ``code[=queue],category[=queue],*[=queue],…`` into a RouteTable.

    Raises RouteSpecError for an empty spec, an unknown category, a bad queue name, or one selector
    routed to two different queues.
    """
    by_code: dict[str, str] = {}
    by_category: dict[str, str] = {}
    catch_all: str | None = None
    entries = [entry.strip() for entry in spec.split(",") if entry.strip()]
    if not entries:
        raise RouteSpecError("AUTH0_EVENTS_ROUTES is empty: name at least one event code or category")
    for entry in entries:
        selector, queue = _split_entry(entry)
        if selector == CATCH_ALL:
            if catch_all not in (None, queue):
                raise RouteSpecError(f"route {entry!r}: '*' is already routed to {catch_all!r}")
            catch_all = queue
        elif is_category(selector):
            _add_once(by_category, selector, queue, entry)
        else:
            _add_once(by_code, selector, queue, entry)
    return RouteTable(by_code=by_code, by_category=by_category, catch_all=catch_all)


def _split_entry(entry: str) -> tuple[str, str]:
    selector, _, queue = (part.strip() for part in entry.partition("="))
    if not selector:
        raise RouteSpecError(f"route {entry!r}: missing event code or category before '='")
    if selector != CATCH_ALL and not is_category(selector) and not _CODE.match(selector):
        if "." in selector:
            known = ", ".join(sorted(CATEGORIES))
            raise RouteSpecError(f"route {entry!r}: {selector!r} is not a stream category; known: {known}")
        raise RouteSpecError(f"route {entry!r}: {selector!r} is not an event code (lowercase, digits, _)")
    queue = queue or default_queue_for(selector)
    if not _QUEUE_NAME.match(queue):
        raise RouteSpecError(f"route {entry!r}: {queue!r} is not a valid queue name")
    if queue.startswith("amq."):
        raise RouteSpecError(f"route {entry!r}: RabbitMQ reserves queue names starting with 'amq.'")
    if queue.endswith(DLQ_SUFFIX) or queue == QUARANTINE_QUEUE:
        raise RouteSpecError(f"route {entry!r}: {queue!r} is reserved for failed or invalid events")
    return selector, queue


def _add_once(table: dict[str, str], selector: str, queue: str, entry: str) -> None:
    if table.get(selector, queue) != queue:
        raise RouteSpecError(f"route {entry!r}: {selector!r} is already routed to {table[selector]!r}")
    table[selector] = queue
