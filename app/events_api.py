"""GET /events and GET /events/<log_id>: search the event archive, behind AUTH0_EVENTS_API_TOKENS."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.auth import is_authorized
from app.errors import ApiError, Unauthorized
from kernel.error_text import describe_error
from kernel.settings import Settings
from kernel.storage import archive
from kernel.storage.db import session_scope

logger = logging.getLogger(__name__)

bp = Blueprint("events_api", __name__)

SEARCH_PARAMETERS = frozenset(
    {"type", "user", "ip", "since", "until", "state", "limit", "after", "include_raw"}
)
_TRUE, _FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"", "0", "false", "no", "off"})


class ApiDisabled(ApiError):
    """Raised when no API token is configured: the archive is not served to anyone."""

    status_code = 403
    code = "api_disabled"


class InvalidParameter(ApiError):
    """Raised when a query parameter has a value the search cannot use; names the parameter."""

    status_code = 400
    code = "invalid_parameter"


class EventNotFound(ApiError):
    """Raised when no archived event has the requested log_id."""

    status_code = 404
    code = "not_found"


class DatabaseUnavailable(ApiError):
    """Raised when the archive's database cannot be queried (unreachable, not migrated)."""

    status_code = 503
    code = "database_unavailable"


@bp.before_request
def authenticate() -> None:
    """Refuse every request unless it carries one of AUTH0_EVENTS_API_TOKENS (403 when none is set)."""
    settings = _settings()
    if not settings.api_tokens:
        raise ApiDisabled(
            "the events API is disabled: set AUTH0_EVENTS_API_TOKENS to one or more comma-separated "
            "tokens (not the log stream's) and send one in the Authorization header"
        )
    if not is_authorized(request.headers.get("Authorization"), settings.api_tokens):
        raise Unauthorized("missing or wrong API token in the Authorization header")


@bp.get("/events")
def search_events() -> tuple[Response, int]:
    """Archived events matching the query parameters, newest first, and the URL of the next page.

    400 naming the parameter when one is unknown or malformed.
    """
    filters, include_raw = _filters_from_query()
    with _archive_session() as session:
        page = archive.search_events(session, filters)
        events = [archive.event_to_dict(event, include_raw) for event in page.events]
    return jsonify({"events": events, "next": _next_url(page.next_cursor)}), 200


@bp.get("/events/<log_id>")
def get_event(log_id: str) -> tuple[Response, int]:
    """The archived event with its raw record; 404 when the log_id is unknown, 400 when none can have it."""
    try:
        archive.check_text(log_id, "log_id")
    except archive.InvalidQuery as exc:
        raise InvalidParameter(str(exc), parameter=exc.parameter) from exc
    with _archive_session() as session:
        event = archive.get_event(session, log_id)
        if event is None:
            raise EventNotFound(f"no archived event has log_id {log_id!r}", log_id=log_id)
        return jsonify(archive.event_to_dict(event, include_raw=True)), 200


def _settings() -> Settings:
    settings: Settings = current_app.extensions["auth0_events"].settings
    return settings


def _filters_from_query() -> tuple[archive.EventFilters, bool]:
    args = request.args
    unknown = sorted(set(args) - SEARCH_PARAMETERS)
    if unknown:
        raise InvalidParameter(
            f"unknown query parameter {unknown[0]!r}; known: {', '.join(sorted(SEARCH_PARAMETERS))}",
            parameter=unknown[0],
        )
    try:
        filters = archive.EventFilters(
            types=archive.parse_types(args.getlist("type")),
            # A blank parameter (?user=) filters nothing, as an absent one.
            user=args.get("user") or None,
            ip=args.get("ip") or None,
            since=archive.parse_time(args["since"], "since") if args.get("since") else None,
            until=archive.parse_time(args["until"], "until") if args.get("until") else None,
            state=args.get("state") or None,
            limit=_integer(args.get("limit"), "limit", archive.DEFAULT_LIMIT),
            after=args.get("after") or None,
        )
    except archive.InvalidQuery as exc:
        raise InvalidParameter(str(exc), parameter=exc.parameter) from exc
    return filters, _boolean(args.get("include_raw", ""), "include_raw")


def _integer(value: str | None, parameter: str, default: int) -> int:
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise InvalidParameter(f"{parameter}: {value!r} is not a whole number", parameter=parameter) from None


def _boolean(value: str, parameter: str) -> bool:
    if value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise InvalidParameter(f"{parameter}: {value!r} is not true or false", parameter=parameter)


def _next_url(cursor: str | None) -> str | None:
    # A relative URL: behind a TLS-terminating proxy the request's own scheme and host may not be the
    # client's, and a relative reference resolves against whatever URL the client used.
    if cursor is None:
        return None
    args: dict[str, Any] = request.args.to_dict(flat=False)
    args["after"] = cursor
    return url_for("events_api.search_events", **args)


@contextmanager
def _archive_session() -> Iterator[Session]:
    try:
        with session_scope(_settings().database_url, read_only=True) as session:
            yield session
    except SQLAlchemyError as exc:
        # describe_error leaves out the statement's parameters: the searched user names and IPs.
        logger.error("event archive query failed: %s", describe_error(exc))
        raise DatabaseUnavailable("the event archive's database cannot be queried now") from exc
