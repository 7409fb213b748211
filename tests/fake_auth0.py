"""A local HTTPS stand-in for the Auth0 endpoints the Management API actions call; it records every request.

It answers the way Auth0 documents (client-credentials tokens, Bearer checks, scopes, Auth0-shaped JSON
errors, 429 with x-ratelimit-* headers), behind a certificate from a throwaway CA (trustme) that clients
trust through SSL_CERT_FILE, so the code under test runs its production path: real TLS, real HTTP.
"""

from __future__ import annotations

import json
import math
import secrets
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import trustme

ALL_SCOPES = ("update:users", "create:role_members")
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


@dataclass
class _Programmed:
    path_prefix: str
    status: int
    body: Any
    reset_in: float | None


@dataclass
class FakeAuth0:
    """Auth0's token endpoint and the two Management API calls, on https://127.0.0.1:<random port>.

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

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, frozenset[str]] = {}
        self._programmed: list[_Programmed] = []
        ca = trustme.CA()
        self.ca_file = self.directory / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-auth0", daemon=True)

    # -- lifecycle -------------------------------------------------------------------------------------

    def __enter__(self) -> FakeAuth0:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    @property
    def domain(self) -> str:
        """What AUTH0_DOMAIN is set to: https://<domain>/oauth/token and https://<domain>/api/v2/."""
        return f"127.0.0.1:{self._server.server_address[1]}"

    def env(self, *, client_secret: str | None = None) -> dict[str, str]:
        """The environment a process needs to use this fake as its Auth0 tenant."""
        return {
            "AUTH0_DOMAIN": self.domain,
            "AUTH0_CLIENT_ID": self.client_id,
            "AUTH0_CLIENT_SECRET": self.client_secret if client_secret is None else client_secret,
            "SSL_CERT_FILE": str(self.ca_file),
        }

    # -- arranging -------------------------------------------------------------------------------------

    def add_user(self, user_id: str, **fields: Any) -> None:
        """Create a user the way Auth0 stores one."""
        email = fields.pop("email", f"{user_id.split('|')[-1]}@example.com")
        with self._lock:
            self.users[user_id] = {
                "user_id": user_id,
                "email": email,
                "email_verified": True,
                "created_at": "2026-11-26T08:25:14.466Z",
                "updated_at": "2026-11-26T08:25:14.466Z",
                "identities": [{"connection": "Username-Password-Authentication", "provider": "auth0"}],
                **fields,
            }

    def add_roles(self, *role_ids: str) -> None:
        """Create roles that can be assigned."""
        with self._lock:
            self.roles.update(role_ids)

    def rate_limit(self, times: int = 1, reset_in: float = 2.0, path: str = "/api/v2/") -> None:
        """Answer the next ``times`` requests under ``path`` with 429; x-ratelimit-reset = now + reset_in."""
        body = {
            "statusCode": 429,
            "error": "Too Many Requests",
            "message": "Global limit has been reached",
            "errorCode": "too_many_requests",
        }
        if path.startswith("/oauth/"):
            body = {"error": "too_many_requests", "error_description": "Global limit has been reached"}
        self._program(times, _Programmed(path, 429, body, reset_in))

    def fail(self, status: int, times: int = 1, path: str = "/api/v2/") -> None:
        """Answer the next ``times`` requests under ``path`` with ``status`` and an Auth0-style error."""
        phrase = HTTPStatus(status).phrase
        body = {"statusCode": status, "error": phrase, "message": f"{phrase} (programmed by the test)"}
        self._program(times, _Programmed(path, status, body, None))

    def revoke_tokens(self) -> None:
        """Make every issued token invalid, as a revoked grant or a rotated signing key does."""
        with self._lock:
            self._tokens.clear()

    def _program(self, times: int, answer: _Programmed) -> None:
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

    # -- answering -------------------------------------------------------------------------------------

    def answer(self, method: str, raw_path: str, headers: dict[str, str], raw_body: bytes) -> Answer:
        """Answer one request and record it."""
        path = "/".join(unquote(segment) for segment in urlsplit(raw_path).path.split("/"))
        body = _parse_body(raw_body, headers.get("content-type", ""))
        with self._lock:
            status, response_headers, response_body = self._route(method, path, headers, body)
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
                )
            )
        return status, response_headers, response_body

    def _route(self, method: str, path: str, headers: dict[str, str], body: Any) -> Answer:
        programmed = next((p for p in self._programmed if path.startswith(p.path_prefix)), None)
        if programmed is not None:
            self._programmed.remove(programmed)
            return self._programmed_answer(programmed)
        if (method, path) == ("POST", "/oauth/token"):
            return self._token(body)
        if not path.startswith("/api/v2/"):
            return _api_error(404, "Not Found", "Not Found")
        scopes = self._tokens.get(headers.get("authorization", "").removeprefix("Bearer "))
        if scopes is None:
            return _api_error(401, "Unauthorized", "Invalid token")
        parts = path.removeprefix("/api/v2/").split("/")
        if method == "PATCH" and len(parts) == 2 and parts[0] == "users":
            return self._update_user(scopes, parts[1], body)
        if method == "POST" and len(parts) == 3 and parts[0] == "users" and parts[2] == "roles":
            return self._assign_roles(scopes, parts[1], body)
        return _api_error(404, "Not Found", "Not Found")

    def _programmed_answer(self, programmed: _Programmed) -> Answer:
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a client's idle keep-alive connection must not hold up stopping the fake
    fake: FakeAuth0


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


def _rate_headers(remaining: int, reset: int) -> dict[str, str]:
    return {
        "x-ratelimit-limit": str(RATE_LIMIT),
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


def _invalid_body(message: str) -> Answer:
    return _api_error(400, "Bad Request", message, "invalid_body")


def _inexistent_user() -> Answer:
    return _api_error(404, "Not Found", "The user does not exist.", "inexistent_user")


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def statuses(calls: Iterable[Call]) -> list[int]:
    """The statuses of ``calls``, for compact assertions."""
    return [call.status for call in calls]
