"""The tenant's log streams through auth0-python's log-streams client, paced and retried like the logs.

auth0-python (6.8) sends the requests over our httpx client (no redirects followed, SSL_CERT_FILE), with
the token of our TokenSource and its own retries off: ManagementApi's loop retries, waits for
x-ratelimit-reset and shares the QuotaPacer with the logs client. Each answer becomes a Stream with
bounded, printable values, whatever Auth0 sent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from auth0.management import Auth0
from auth0.management.core import ApiError, ParsingError
from auth0.management.core.http_response import HttpResponse
from pydantic import ValidationError

from cli.management.api import (
    BackfillError,
    ManagementApi,
    Need,
    Transient,
    describe,
    error_body_message,
    scope_hint,
)

READ_LOG_STREAMS = Need("to read the log streams", scope_hint("read:log_streams"))
UPDATE_LOG_STREAMS = Need("to update the log stream", scope_hint("update:log_streams"))
STATUSES = ("active", "paused", "suspended")  # Auth0's LogStreamStatusEnum
WEBHOOK_PATH = "/webhooks/auth0"
MAX_SHOWN = 120  # characters of a name or endpoint shown (a name can be as long as Auth0 lets it be)

T = TypeVar("T")
# Auth0's stream ids are lst_ and letters or digits; anything else is refused rather than shown or labelled.
_STREAM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Stream:
    """One log stream as `stream status` shows it; every text printable and bounded."""

    id: str
    name: str
    type: str
    status: str  # active, paused, suspended, or "unknown" for anything else Auth0 may answer
    endpoint: str  # the http stream's httpEndpoint, "" for the other types
    filters: tuple[str, ...]
    ours: bool = False

    @property
    def active(self) -> bool:
        """Whether Auth0 delivers to it."""
        return self.status == "active"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "status": self.status,
            "endpoint": self.endpoint,
            "filters": list(self.filters),
            "points_at_us": self.ours,
        }


def printable(value: object, limit: int = MAX_SHOWN) -> str:
    """``value`` as one line of at most ``limit`` characters: every character Python does not call printable
    (controls, line breaks, bidi and other format marks, unassigned code points) replaced with U+FFFD."""
    text = value if isinstance(value, str) else str(value)
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return "".join(char if char.isprintable() else "\N{REPLACEMENT CHARACTER}" for char in text)


def to_stream(model: Any) -> Stream:
    """A Stream from auth0-python's model (of any stream type); raises BackfillError for a bad id."""
    data = model.model_dump(by_alias=True, mode="json") if hasattr(model, "model_dump") else dict(model)
    stream_id = data.get("id")
    if not isinstance(stream_id, str) or not stream_id.strip():
        raise BackfillError("Auth0 answered a log stream without an id")
    if not _STREAM_ID.fullmatch(stream_id):
        raise BackfillError(f"Auth0 answered a log stream id that is not one: {printable(stream_id, 40)!r}")
    sink = data.get("sink")
    sink = sink if isinstance(sink, dict) else {}
    endpoint = sink.get("httpEndpoint") if data.get("type") == "http" else ""
    status = data.get("status")
    filters = data.get("filters")
    filters = filters if isinstance(filters, list) else []
    return Stream(
        id=stream_id,
        name=printable(data.get("name") or ""),
        type=printable(data.get("type") or "", 32),
        status=status if status in STATUSES else "unknown",
        endpoint=endpoint if isinstance(endpoint, str) else "",
        filters=tuple(printable(f.get("name", ""), 64) for f in filters[:50] if isinstance(f, dict)),
    )


def points_at_us(stream: Stream, stream_id: str) -> bool:
    """Whether ``stream`` delivers to this service: it is AUTH0_EVENTS_STREAM_ID when that is set, else it is
    an http stream whose endpoint's path is /webhooks/auth0."""
    if stream_id:
        return stream.id == stream_id
    if stream.type != "http" or not stream.endpoint:
        return False
    try:
        path = urlsplit(stream.endpoint.strip()).path
    except ValueError:
        return False
    return path.rstrip("/") == WEBHOOK_PATH


class StreamsClient(ManagementApi):
    """GET /api/v2/log-streams, GET and PATCH /api/v2/log-streams/{id}, through auth0-python."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sdk = Auth0(
            base_url=self.credentials.base_url + "/api/v2",
            token=self.tokens.get,
            httpx_client=self.http,
            max_retries=0,  # ManagementApi retries, paced and within the quota
        )

    def list(self) -> list[Stream]:
        """Every log stream of the tenant."""
        answer = self._call(
            self._sdk.log_streams.with_raw_response.list, READ_LOG_STREAMS, "GET /api/v2/log-streams"
        )
        if not isinstance(answer.data, list):
            raise BackfillError("GET /api/v2/log-streams: Auth0 answered something that is not a list")
        return [to_stream(model) for model in answer.data]

    def stream(self, stream_id: str) -> Stream:
        """One log stream by id."""
        raw = self._sdk.log_streams.with_raw_response
        return to_stream(
            self._call(lambda: raw.get(stream_id), READ_LOG_STREAMS, "GET /api/v2/log-streams/{id}").data
        )

    def activate(self, stream_id: str) -> Stream:
        """PATCH the stream's status to active (needs update:log_streams); the stream as Auth0 answers it."""
        raw = self._sdk.log_streams.with_raw_response
        answer = self._call(
            lambda: raw.update(stream_id, status="active"),
            UPDATE_LOG_STREAMS,
            "PATCH /api/v2/log-streams/{id}",
        )
        return to_stream(answer.data)

    def _call(self, call: Callable[[], HttpResponse[T]], need: Need, what: str) -> HttpResponse[T]:
        return self.retrying(lambda: self._once(call, need, what), what)

    def _once(self, call: Callable[[], HttpResponse[T]], need: Need, what: str) -> HttpResponse[T]:
        self.stats.requests += 1
        try:
            answer = call()
        except httpx.TransportError as exc:
            raise Transient(f"{self.credentials.domain}: {describe(exc)}") from exc
        except ParsingError as exc:
            self.check(exc.status_code or 200, exc.headers or {}, "", None, need)
            raise BackfillError(f"{what}: {unreadable(exc)}") from exc
        except ApiError as exc:
            status = exc.status_code or 0
            self.check(status, exc.headers or {}, error_body_message(exc.body), None, need)
            raise BackfillError(f"{what}: Auth0 answered HTTP {status}") from exc
        self.check(answer.status_code, _headers(answer.headers), "", None, need)
        return answer


def unreadable(exc: ParsingError) -> str:
    """What was wrong with an answer auth0-python could not read: the first fields, never their values."""
    cause = exc.cause
    if isinstance(cause, ValidationError):
        fields = sorted({".".join(str(part) for part in error["loc"][:3]) for error in cause.errors()})
        shown = ", ".join(printable(field, 60) for field in fields[:5])
        return f"Auth0 answered a log stream that is not in Auth0's documented shape (fields: {shown})"
    return "Auth0 answered a log stream that is not in Auth0's documented shape"


def _headers(headers: Mapping[str, str]) -> Mapping[str, str]:
    return {key.lower(): value for key, value in headers.items()}
