"""A local HTTPS stand-in for the Auth0 endpoints the Management API actions call; it records every request.

It answers the way Auth0 documents (client-credentials tokens, Bearer checks, scopes, Auth0-shaped JSON
errors, 429 with x-ratelimit-* headers), behind a certificate from a throwaway CA (trustme) that clients
trust through SSL_CERT_FILE (httpx), so the code under test runs its production path: real TLS, real HTTP.

``GET /api/v2/logs`` serves ``logs`` by checkpoint (``from``/``take``, ordered by log_id, with a
``Link: <…>; rel="next"`` header; an empty page links to its own URL) and by a date search
(``q=date:[X TO *]``, ``sort``, ``page``, ``per_page``, at most 1,000 results), as Auth0's
"Retrieve Log Events Using the Management API" page describes them.

``GET /api/v2/users-by-email`` answers as Auth0 documents it: scope read:users, an exact and
case-sensitive match on the stored address, a JSON array of user objects (empty when no one matches), 400
for a missing or malformed address. Like Auth0, ``add_user`` stores the address of a user whose identity
Auth0 holds (provider ``auth0``: database connections) in lower case, and a social user's as given.

``redirect()`` makes it answer 307/308 to ``OtherOrigin``, a second HTTPS server on another port that
trusts nothing and records whatever reaches it, so a test can show a secret or token never does.
"""

from __future__ import annotations

import bisect
import json
import math
import re
import secrets
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, unquote, urlsplit

import trustme

from tasks.testing import make_record, new_log_id

ALL_SCOPES = ("read:users", "update:users", "create:role_members", "read:logs")
DATABASE_CONNECTION = "Username-Password-Authentication"
# What this fake takes for an e-mail address (Auth0's own rule is unpublished): something@domain.tld.
_EMAIL_FORMAT = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
RATE_LIMIT = 50

Answer = tuple[int, dict[str, str], Any]


@dataclass(frozen=True)
class Call:
    """One request the fake received, and its answer."""

    method: str
    path: str  # with each segment percent-decoded: /api/v2/users/auth0|1/roles
    body: Any  # parsed JSON or form fields; None when empty
    authorization: str
    status: int
    response_headers: dict[str, str]
    response: Any
    at: float  # time.time() when answered
    query: dict[str, str] = field(default_factory=dict)  # the decoded query string
    target: str = ""  # the request line's target, as sent: /api/v2/logs?from=…&take=…


@dataclass
class _Programmed:
    path_prefix: str
    status: int
    body: Any
    reset_in: float | None
    after: int = 0  # matching requests still to let through before answering this
    redirect_to: str | None = None  # an origin: answer a redirect to the same target there


class _Serving:
    """An HTTPS server on 127.0.0.1 in a thread of its own: started on entering, stopped on leaving."""

    _server: _Server
    _thread: threading.Thread

    def _serve(self, ca: trustme.CA, name: str) -> None:
        self._server = _https_server(ca, self)
        # shutdown() waits for the next poll: 0.05 s instead of serve_forever's default 0.5 s per test.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
        )

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    def answer(self, method: str, raw_path: str, headers: dict[str, str], raw_body: bytes) -> Answer:
        """Answer one request: (status, headers, JSON body or None)."""
        raise NotImplementedError


@dataclass
class FakeAuth0(_Serving):
    """Auth0's token endpoint and the Management API calls used here, on https://127.0.0.1:<random port>.

    Writes its CA certificate to ``directory/ca.pem``; ``env()`` gives the variables a process needs to
    reach it. Tests arrange state (``users``, ``roles``, ``granted_scopes``) and program failures.
    """

    directory: Path
    client_id: str = "fake-client-id"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    granted_scopes: tuple[str, ...] = ALL_SCOPES
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    roles: set[str] = field(default_factory=set)
    user_roles: dict[str, set[str]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)  # bare log entries, kept in log_id order
    #: (requests, seconds): a fixed-window limit on GET /api/v2/logs; None answers every request
    logs_limit: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, frozenset[str]] = {}
        self._programmed: list[_Programmed] = []
        self._window = (-1, 0)  # (window number, requests counted in it) for logs_limit
        self._ca = trustme.CA()
        self.ca_file = self.directory / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_file))
        self._serve(self._ca, "fake-auth0")

    @property
    def domain(self) -> str:
        """What AUTH0_DOMAIN is set to: https://<domain>/oauth/token and https://<domain>/api/v2/."""
        return f"127.0.0.1:{self.port}"

    def env(self, *, client_secret: str | None = None) -> dict[str, str]:
        """The environment a process needs to use this fake as its Auth0 tenant."""
        return {
            "AUTH0_DOMAIN": self.domain,
            "AUTH0_CLIENT_ID": self.client_id,
            "AUTH0_CLIENT_SECRET": self.client_secret if client_secret is None else client_secret,
            "SSL_CERT_FILE": str(self.ca_file),
        }

    # -- arranging -------------------------------------------------------------------------------------

    def add_user(self, user_id: str, connection: str = DATABASE_CONNECTION, **fields: Any) -> None:
        """Create a user the way Auth0 stores one, its identity on ``connection``.

        The identity's provider is ``auth0`` (a database connection) unless ``user_id`` names another
        (``google-oauth2|…``). Auth0 keeps the e-mail address of a user it is the identity provider of in
        lower case (auth0-python's ``list_users_by_email`` docstring), so this fake does too.
        """
        provider, _, identity_id = user_id.rpartition("|")
        provider = provider or "auth0"
        email = fields.pop("email", f"{identity_id}@example.com")
        identity = {
            "connection": connection,
            "user_id": identity_id,
            "provider": provider,
            "isSocial": provider != "auth0",
        }
        with self._lock:
            self.users[user_id] = {
                "user_id": user_id,
                "email": email.lower() if provider == "auth0" else email,
                "email_verified": True,
                "created_at": "2026-11-26T08:25:14.466Z",
                "updated_at": "2026-11-26T08:25:14.466Z",
                "identities": [identity],
                **fields,
            }

    def add_roles(self, *role_ids: str) -> None:
        """Create roles that can be assigned."""
        with self._lock:
            self.roles.update(role_ids)

    def add_logs(self, entries: Iterable[dict[str, Any]]) -> None:
        """Store log entries (bare, as the Management API returns them)."""
        with self._lock:
            self.logs = sorted([*self.logs, *entries], key=lambda entry: entry["log_id"])

    def rate_limit(
        self, times: int = 1, reset_in: float = 2.0, path: str = "/api/v2/", after: int = 0
    ) -> None:
        """Answer the next ``times`` requests under ``path`` with 429; x-ratelimit-reset = now + reset_in.

        ``after``: let that many matching requests through first (the reset counts from the 429).
        """
        body = {
            "statusCode": 429,
            "error": "Too Many Requests",
            "message": "Global limit has been reached",
            "errorCode": "too_many_requests",
        }
        if path.startswith("/oauth/"):
            body = {"error": "too_many_requests", "error_description": "Global limit has been reached"}
        self._program(times, _Programmed(path, 429, body, reset_in, after))

    def fail(self, status: int, times: int = 1, path: str = "/api/v2/", after: int = 0) -> None:
        """Answer the next ``times`` requests under ``path`` with ``status`` and an Auth0-style error.

        ``after``: let that many matching requests through first.
        """
        phrase = HTTPStatus(status).phrase
        body = {"statusCode": status, "error": phrase, "message": f"{phrase} (programmed by the test)"}
        self._program(times, _Programmed(path, status, body, None, after))

    def redirect(self, origin: str, path: str, status: int = 307, times: int = 1) -> None:
        """Answer the next ``times`` requests under ``path`` with a ``status`` redirect to ``origin``."""
        body = {"statusCode": status, "message": f"moved to {origin} (programmed by the test)"}
        self._program(times, _Programmed(path, status, body, None, redirect_to=origin))

    def other_origin(self) -> OtherOrigin:
        """A second HTTPS server on another port, with a certificate from this fake's CA (not started)."""
        return OtherOrigin(self._ca)

    def revoke_tokens(self) -> None:
        """Make every issued token invalid, as a revoked grant or a rotated signing key does."""
        with self._lock:
            self._tokens.clear()

    def _program(self, times: int, answer: _Programmed) -> None:
        # The copies are one object, so ``after`` counts down once for all of them.
        with self._lock:
            self._programmed.extend([answer] * times)

    # -- inspecting ------------------------------------------------------------------------------------

    def calls_to(self, method: str, path: str) -> list[Call]:
        """The recorded calls of ``method`` to exactly ``path`` (decoded), oldest first."""
        with self._lock:
            return [call for call in self.calls if call.method == method and call.path == path]

    def token_requests(self) -> list[Call]:
        """The recorded calls to the token endpoint."""
        return self.calls_to("POST", "/oauth/token")

    def log_requests(self) -> list[Call]:
        """The recorded calls to GET /api/v2/logs (either mode), oldest first."""
        return self.calls_to("GET", "/api/v2/logs")

    # -- answering -------------------------------------------------------------------------------------

    def answer(self, method: str, raw_path: str, headers: dict[str, str], raw_body: bytes) -> Answer:
        """Answer one request and record it."""
        path = "/".join(unquote(segment) for segment in urlsplit(raw_path).path.split("/"))
        query = dict(parse_qsl(urlsplit(raw_path).query, keep_blank_values=True))
        body = _parse_body(raw_body, headers.get("content-type", ""))
        with self._lock:
            status, response_headers, response_body = self._route(
                method, path, headers, body, query, raw_path
            )
            self.calls.append(
                Call(
                    method,
                    path,
                    body,
                    headers.get("authorization", ""),
                    status,
                    response_headers,
                    response_body,
                    time.time(),
                    query,
                    raw_path,
                )
            )
        return status, response_headers, response_body

    def _route(
        self, method: str, path: str, headers: dict[str, str], body: Any, query: dict[str, str], target: str
    ) -> Answer:
        programmed = next((p for p in self._programmed if path.startswith(p.path_prefix)), None)
        if programmed is not None and programmed.after > 0:
            programmed.after -= 1
        elif programmed is not None:
            self._programmed.remove(programmed)
            return self._programmed_answer(programmed, target)
        if (method, path) == ("POST", "/oauth/token"):
            return self._token(body)
        if not path.startswith("/api/v2/"):
            return _api_error(404, "Not Found", "Not Found")
        scopes = self._tokens.get(headers.get("authorization", "").removeprefix("Bearer "))
        if scopes is None:
            return _api_error(401, "Unauthorized", "Invalid token")
        parts = path.removeprefix("/api/v2/").split("/")
        if (method, path) == ("GET", "/api/v2/logs"):
            return self._list_logs(scopes, query, target)
        if (method, path) == ("GET", "/api/v2/users-by-email"):
            return self._users_by_email(scopes, query)
        if method == "PATCH" and len(parts) == 2 and parts[0] == "users":
            return self._update_user(scopes, parts[1], body)
        if method == "POST" and len(parts) == 3 and parts[0] == "users" and parts[2] == "roles":
            return self._assign_roles(scopes, parts[1], body)
        return _api_error(404, "Not Found", "Not Found")

    def _programmed_answer(self, programmed: _Programmed, target: str) -> Answer:
        if programmed.redirect_to is not None:
            return programmed.status, {"Location": programmed.redirect_to + target}, programmed.body
        if programmed.reset_in is None:
            return programmed.status, {}, programmed.body
        reset = math.ceil(time.time() + programmed.reset_in)
        return programmed.status, _rate_headers(0, reset), programmed.body

    def _token(self, body: Any) -> Answer:
        if not isinstance(body, dict) or body.get("grant_type") != "client_credentials":
            grant = body.get("grant_type") if isinstance(body, dict) else None
            return (
                400,
                {},
                {"error": "unsupported_grant_type", "error_description": f"Unsupported grant: {grant}"},
            )
        if body.get("client_id") != self.client_id or body.get("client_secret") != self.client_secret:
            return 401, {}, {"error": "access_denied", "error_description": "Unauthorized"}
        audience = body.get("audience")
        if audience != f"https://{self.domain}/api/v2/":
            return (
                403,
                {},
                {
                    "error": "access_denied",
                    "error_description": f"Service not enabled within domain: {audience}",
                },
            )
        token = secrets.token_urlsafe(24)
        self._tokens[token] = frozenset(self.granted_scopes)
        scope = " ".join(self.granted_scopes)
        return 200, {}, {"access_token": token, "token_type": "Bearer", "expires_in": 86400, "scope": scope}

    def _update_user(self, scopes: frozenset[str], user_id: str, body: Any) -> Answer:
        if "update:users" not in scopes:
            return _insufficient_scope("update:users")
        if not isinstance(body, dict) or not body:
            return _invalid_body("Payload validation error: 'Expected type object but found type null'.")
        if "blocked" in body and not isinstance(body["blocked"], bool):
            kind = type(body["blocked"]).__name__
            expected = f"'Expected type boolean but found type {kind}' on property blocked."
            return _invalid_body(f"Payload validation error: {expected}")
        if user_id not in self.users:
            return _inexistent_user()
        self.users[user_id].update(body, updated_at=_now_iso())
        return 200, _rate_headers(RATE_LIMIT - 1, math.ceil(time.time() + 1)), self.users[user_id]

    def _users_by_email(self, scopes: frozenset[str], query: dict[str, str]) -> Answer:
        if "read:users" not in scopes:
            return _insufficient_scope("read:users")
        email = query.get("email")
        # Auth0's status and error shape for a bad query are documented; the exact wording is unconfirmed.
        if not email:
            return _invalid_query("Query validation error: 'Missing required property: email'.")
        if not _EMAIL_FORMAT.fullmatch(email):
            return _invalid_query(
                f"Query validation error: 'Object didn't pass validation for format email: {email}' on"
                " property email (Email address to search for (case-sensitive))."
            )
        found = [dict(user) for user in self.users.values() if user.get("email") == email]
        return 200, _rate_headers(RATE_LIMIT - 1, math.ceil(time.time() + 1)), found

    def _assign_roles(self, scopes: frozenset[str], user_id: str, body: Any) -> Answer:
        if not scopes & {"update:users", "create:role_members"}:
            return _insufficient_scope("update:users,create:role_members")
        roles = body.get("roles") if isinstance(body, dict) else None
        if not isinstance(roles, list) or not roles or not all(isinstance(r, str) and r for r in roles):
            return _invalid_body(
                "Payload validation error: 'Array is too short (0), minimum 1' on property roles."
            )
        if user_id not in self.users:
            return _inexistent_user()
        unknown = [role for role in roles if role not in self.roles]
        if unknown:
            # Auth0's exact wording for an unknown role id is unconfirmed; its status (400) and shape are.
            return _invalid_body(f"One or more of the roles do not exist: {', '.join(unknown)}")
        self.user_roles.setdefault(user_id, set()).update(roles)
        return 204, _rate_headers(RATE_LIMIT - 1, math.ceil(time.time() + 1)), None

    def _list_logs(self, scopes: frozenset[str], query: dict[str, str], target: str) -> Answer:
        if "read:logs" not in scopes:
            return _insufficient_scope("read:logs")
        remaining, reset, limit = self._count_in_window()
        if remaining < 0:
            body = {
                "statusCode": 429,
                "error": "Too Many Requests",
                "message": "Global limit has been reached",
            }
            return 429, _rate_headers(0, reset, limit), {**body, "errorCode": "too_many_requests"}
        # "If you use from at the same time as q, from takes precedence and q is ignored."
        status, headers, body = self._checkpoint(query, target) if "from" in query else self._search(query)
        return status, {**_rate_headers(remaining, reset, limit), **headers}, body

    def _count_in_window(self) -> tuple[int, int, int]:
        """Count a logs request: (remaining, reset as UNIX time, limit); remaining < 0 when over."""
        if self.logs_limit is None:
            return RATE_LIMIT - 1, math.ceil(time.time() + 1), RATE_LIMIT
        limit, seconds = self.logs_limit
        window = int(time.time() // seconds)
        count = self._window[1] + 1 if self._window[0] == window else 1
        self._window = (window, count)
        return limit - count, (window + 1) * seconds, limit

    def _checkpoint(self, query: dict[str, str], target: str) -> Answer:
        take = _int(query.get("take"), 50)
        if take is None or not 1 <= take <= 100:
            return _invalid_query("'take' must be an integer from 1 to 100")
        start = bisect.bisect_right([entry["log_id"] for entry in self.logs], query["from"])
        page = [dict(entry) for entry in self.logs[start : start + take]]
        # The next cursor is the page's last log_id; an empty page links to the URL just requested.
        # (Parameter order deliberately differs from what clients send: they must follow the link.)
        next_url = f"https://{self.domain}" + (
            f"/api/v2/logs?take={take}&from={page[-1]['log_id']}" if page else target
        )
        return 200, {"Link": f'<{next_url}>; rel="next"'}, page

    def _search(self, query: dict[str, str]) -> Answer:
        match = re.fullmatch(r"date:\[(\S+) TO \*\]", query.get("q", "date:[* TO *]"))
        per_page, page = _int(query.get("per_page"), 50), _int(query.get("page"), 0)
        if match is None:
            return _invalid_query("this fake only searches q=date:[<date> TO *]")
        if per_page is None or page is None or not 0 <= per_page <= 100 or page < 0:
            return _invalid_query("'per_page' must be from 0 to 100 and 'page' at least 0")
        if (page + 1) * per_page > 1000:
            return _invalid_query(f"Requesting page {page} exceeds the allowed maximum of 1000 records")
        since = None if match[1] == "*" else _parse_date(match[1])
        hits = [entry for entry in self.logs if since is None or _parse_date(entry["date"]) >= since]
        hits.sort(key=lambda entry: entry["date"], reverse=query.get("sort", "date:-1") != "date:1")
        items = [dict(entry) for entry in hits[page * per_page : (page + 1) * per_page]]
        if query.get("include_totals") == "true":
            return (
                200,
                {},
                {
                    "start": page * per_page,
                    "limit": per_page,
                    "length": len(items),
                    "total": len(hits),
                    "logs": items,
                },
            )
        return 200, {}, items


@dataclass(frozen=True)
class Received:
    """One request that reached the other origin, as it arrived."""

    method: str
    target: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


class OtherOrigin(_Serving):
    """An HTTPS server at another origin that records every request and answers 200 with a token-like body.

    The answer would satisfy a client that followed a redirect here (a token response, a user), so a test
    sees the difference between "refused to follow" and "followed and believed the answer".
    """

    def __init__(self, ca: trustme.CA) -> None:
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._serve(ca, "other-origin")

    @property
    def origin(self) -> str:
        """https://127.0.0.1:<its port>: another origin than the fake tenant's."""
        return f"https://127.0.0.1:{self.port}"

    def answer(self, method: str, raw_path: str, headers: dict[str, str], raw_body: bytes) -> Answer:
        """Record the request; answer as a compliant Auth0 would (a token, a user), to tempt the client."""
        with self._lock:
            self.received.append(Received(method, raw_path, headers, raw_body))
        body = {"access_token": "token-from-the-other-origin", "token_type": "Bearer", "expires_in": 86400}
        return 200, {}, {**body, "user_id": "auth0|other", "blocked": True}

    def saw(self, secret: str) -> bool:
        """Whether ``secret`` arrived in any request line, header or body."""
        with self._lock:
            return any(
                secret in request.target
                or any(secret in value for value in request.headers.values())
                or secret.encode() in request.body
                for request in self.received
            )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a client's idle keep-alive connection must not hold up stopping the fake
    fake: _Serving


def _https_server(ca: trustme.CA, answering: _Serving) -> _Server:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.fake = answering
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Auth0 and httpx's pool use it
    timeout = 10  # an idle connection's thread ends instead of lingering after its client went away
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
        self._serve()

    def do_PATCH(self) -> None:  # noqa: N802
        self._serve()

    def do_GET(self) -> None:  # noqa: N802
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw_body = self.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        status, extra_headers, body = self.server.fake.answer(self.command, self.path, headers, raw_body)
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for key, value in extra_headers.items():
            self.send_header(key, value)
        if payload:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        """Stay quiet: the fake records its calls instead."""


def _parse_body(raw: bytes, content_type: str) -> Any:
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    if "application/x-www-form-urlencoded" in content_type:
        return dict(parse_qsl(text, keep_blank_values=True))
    try:
        return json.loads(text)
    except ValueError:
        return text


def _rate_headers(remaining: int, reset: int, limit: int = RATE_LIMIT) -> dict[str, str]:
    return {
        "x-ratelimit-limit": str(limit),
        "x-ratelimit-remaining": str(remaining),
        "x-ratelimit-reset": str(reset),
    }


def _api_error(status: int, error: str, message: str, error_code: str | None = None) -> Answer:
    body: dict[str, Any] = {"statusCode": status, "error": error, "message": message}
    if error_code:
        body["errorCode"] = error_code
    return status, {}, body


def _insufficient_scope(expected: str) -> Answer:
    message = f"Insufficient scope, expected any of: {expected}"
    return _api_error(403, "Forbidden", message, "insufficient_scope")


def _invalid_query(message: str) -> Answer:
    return _api_error(400, "Bad Request", message, "invalid_query_string")


def _int(value: str | None, default: int) -> int | None:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        return None


def _parse_date(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _invalid_body(message: str) -> Answer:
    return _api_error(400, "Bad Request", message, "invalid_body")


def _inexistent_user() -> Answer:
    return _api_error(404, "Not Found", "The user does not exist.", "inexistent_user")


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def statuses(calls: Iterable[Call]) -> list[int]:
    """The statuses of ``calls``, for compact assertions."""
    return [call.status for call in calls]


# -- realistic log entries -------------------------------------------------------------------------------

# A tenant's day, roughly: mostly logins, some failures, signups, token exchanges, Management API calls,
# notifications, and a code newer than any catalogue.
LOG_MIX = (
    "s", "s", "seacft", "s", "f", "fp", "s", "ss", "sapi", "seccft",
    "s", "fu", "slo", "w", "s", "pwd_leak", "mgmt_api_read", "fs", "gd_send_sms", "sys_brand_new_code",
)  # fmt: skip


def make_logs(
    count: int, start: datetime, step: timedelta = timedelta(seconds=1), first: int = 0
) -> list[dict[str, Any]]:
    """``count`` bare log entries as GET /api/v2/logs returns them, dated ``start``, ``start + step``, …

    log_ids are Auth0-shaped (900 + UTC timestamp + digits, 56 characters), so log_id order is date order.
    """
    return [
        _log_entry(LOG_MIX[index % len(LOG_MIX)], index, start + step * (index - first))
        for index in range(first, first + count)
    ]


BREACHED_PASSWORD_VERBS = {"pwd_leak": "login", "signup_pwd_leak": "signup", "reset_pwd_leak": "reset"}


def breached_password_record(
    event_type: str, user_name: str, log_id: str | None = None, **data: Any
) -> dict[str, Any]:
    """A breached-password record (pwd_leak, signup_pwd_leak, reset_pwd_leak) as Auth0 streams one.

    The fields of a captured pwd_leak (Panther's rule Auth0.Leaked.Password.Login.Attempt): ``user_id``
    empty, the address typed in ``user_name``, no ``details``; the schemas of the three codes
    (auth0/auth0-log-schemas) require none of user_id, user_name, connection. The description is the
    schema's, with the captured record's wording.
    """
    log_id = log_id or new_log_id()
    verb = BREACHED_PASSWORD_VERBS[event_type]
    fields: dict[str, Any] = {
        "date": "2026-11-26T08:25:14.466Z",
        "type": event_type,
        "description": f"Someone behind the IP address: 81.2.69.143 attempted to {verb} with a leaked"
        " password. A shield to prevent this action was enabled, further attempts are blocked.",
        "connection": DATABASE_CONNECTION,
        "connection_id": "con_BvGURiLLdngYaT0D",
        "client_id": "11Qpq1o8fbGgnZuFJnQCyjuC1ll8YFt0",
        "client_name": "Default App",
        "ip": "81.2.69.143",
        "hostname": "fake-tenant.auth0.com",
        "user_id": "",
        "user_name": user_name,
        "user_agent": "Chrome 120.0.0 / Mac OS X 10.15.7",
        "tenant_name": "fake-tenant",
        "environment_name": "prod-eu-1",
        "log_id": log_id,
        **data,
    }
    return {"log_id": log_id, "data": fields}


def _log_entry(event_type: str, index: int, date: datetime) -> dict[str, Any]:
    log_id = f"900{date:%Y%m%d%H%M%S}{index:039d}"
    entry = make_record(
        event_type, log_id, date=date.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )["data"]
    entry.update(_TYPE_FIELDS.get(event_type, {}))
    entry["isMobile"] = False
    entry["tenant_name"] = "fake-tenant"
    return {key: value for key, value in entry.items() if value is not None}  # None: a field it lacks


_MACHINE = {
    "user_id": "",
    "user_name": "",
    "connection": "",
    "connection_id": "",
    "strategy": "",
    "strategy_type": "",
}
_TYPE_FIELDS: dict[str, dict[str, Any]] = {
    "s": {
        "description": "",
        "details": {"prompts": [], "stats": {"loginsCount": 4}},
        "hostname": "fake-tenant.auth0.com",
    },
    "f": {
        "description": "Wrong email or password.",
        "details": {"error": {"message": "Wrong email or password."}},
    },
    "fp": {
        "description": "Wrong email or password.",
        "details": {"error": {"message": "Wrong email or password."}},
    },
    "fu": {
        "description": "Wrong email or password.",
        "user_id": "",
        "details": {"error": {"message": "Wrong email or password."}},
    },
    "sapi": {
        **_MACHINE,
        "description": "Update a user",
        "details": {
            "request": {
                "method": "patch",
                "path": "/api/v2/users/auth0|1",
                "channel": "api",
                "body": {"blocked": True},
            },
            "response": {"statusCode": 200, "body": {}},
        },
    },
    "seccft": {
        **_MACHINE,
        "description": "Client Credentials for Access Token",
        "scope": "read:users update:users",
        "audience": "https://fake-tenant.auth0.com/api/v2/",
    },
    "seacft": {"description": "Authorization Code for Access Token", "scope": "openid profile email"},
    "mgmt_api_read": {
        **_MACHINE,
        "description": "Get a client",
        "details": {"request": {"method": "get", "path": "/api/v2/clients/abc"}},
    },
    # As Auth0 writes one (auth0-log-schemas pwd_leak.schema.json; a captured record in Panther's rule
    # Auth0.Leaked.Password.Login.Attempt): no user_id, the e-mail address in user_name, no details.
    "pwd_leak": {
        "description": "Someone behind the IP address: 81.2.69.143 attempted to login with a leaked password."
        " A shield to prevent this action was enabled, further attempts are blocked.",
        "user_id": "",
        "user_name": "new@test.com",
        "hostname": "fake-tenant.auth0.com",
        "details": None,
    },
    "gd_send_sms": {"description": "Guardian - Second factor SMS sent", "details": {"to": "+1******1234"}},
    "sys_brand_new_code": {**_MACHINE, "description": "A code newer than the catalogue"},
}
