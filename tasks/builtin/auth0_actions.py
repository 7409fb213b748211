"""Built-in Management API actions: block users with breached passwords, give new users their roles."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import httpx
from auth0.management import ManagementClient
from auth0.management.core import ApiError, ParsingError, RequestOptions

from tasks.events import Auth0Event
from tasks.handlers import PermanentError, RetryableError, handles
from tasks.retry_policy import classify, retry_after
from tasks.settings import Settings, get_settings

# The SDK would retry 429/5xx itself, sleeping in the worker slot for up to a minute per try; with no SDK
# retries the failure reaches the retry policy, whose backoff releases the slot while it waits.
NO_SDK_RETRIES: RequestOptions = {"max_retries": 0}
# Bounds one Management API call well inside the task's time limit (the token endpoint has httpx's 5 s).
HTTP_TIMEOUT_SECONDS = 30.0
# Added to a 401/403 from the token endpoint: the operator's fix is in the configuration, not in Auth0.
CREDENTIALS_HINT = (
    " (check AUTH0_CLIENT_ID and AUTH0_CLIENT_SECRET, and that the application is authorized for the"
    " Management API)"
)
# A redirect is never followed: it would carry the token (or, from the token endpoint, the client secret)
# and the change to another address, and the action would count as done whatever happened there.
REDIRECT_HINT = (
    "not followed, as it would carry the access token or client secret to another address (check"
    " AUTH0_DOMAIN: the tenant's own domain, e.g. tenant.eu.auth0.com)"
)

_lock = threading.Lock()
_cached: tuple[int, ManagementClient, httpx.Client] | None = None


def block_breached_user(event: Auth0Event) -> None:
    """Block the user whose password was found in a breach (``pwd_leak``): PATCH blocked=true."""
    user_id = _user_id(event)
    with _auth0_errors(f"blocking user {user_id}"):
        management_client().users.update(user_id, blocked=True, request_options=NO_SDK_RETRIES)


def assign_signup_roles(event: Auth0Event) -> None:
    """Assign the roles of AUTH0_EVENTS_SIGNUP_ROLES to the user who just signed up (``ss``)."""
    user_id = _user_id(event)
    roles = list(get_settings().signup_roles)
    with _auth0_errors(f"assigning roles {','.join(roles)} to user {user_id}"):
        management_client().users.roles.assign(user_id, roles=roles, request_options=NO_SDK_RETRIES)


def management_client() -> ManagementClient:
    """Return this process's Management API client, created on first use from the settings.

    It caches its client-credentials token until shortly before expiry. Keyed on the pid: a pool child
    forked from a process that already had a client must not share that client's connections.
    """
    global _cached
    with _lock:
        if _cached is None or _cached[0] != os.getpid():
            # Ours rather than the SDK's, so close_client() can close it, and so it follows no redirect
            # (the SDK's own would); the SDK's token provider uses a client of its own that follows none.
            http = httpx.Client(timeout=HTTP_TIMEOUT_SECONDS, follow_redirects=False)
            _cached = (os.getpid(), _new_client(get_settings(), http), http)
        return _cached[1]


def close_client() -> None:
    """Close this process's client; the next action creates a new one, with a new token."""
    global _cached
    with _lock:
        if _cached is not None and _cached[0] == os.getpid():
            _cached[2].close()
        _cached = None


def _new_client(settings: Settings, http: httpx.Client) -> ManagementClient:
    return ManagementClient(
        domain=settings.auth0_domain,
        client_id=settings.auth0_client_id,
        client_secret=settings.auth0_client_secret,
        httpx_client=http,
    )


def _user_id(event: Auth0Event) -> str:
    if not event.user_id.strip():
        raise PermanentError(f"{event.type} event log_id={event.log_id} has no user_id")
    return event.user_id


@contextmanager
def _auth0_errors(action: str) -> Iterator[None]:
    """Re-raise Auth0 failures as RetryableError or PermanentError with a reason an operator can act on."""
    try:
        yield
    except ParsingError as exc:
        if not 200 <= (exc.status_code or 0) < 300:
            raise
        # Auth0 made the change; only the SDK's model of its answer is out of date. Not a failure.
    except ApiError as exc:
        context = f"{action}: Management API answered"
        if _is_redirect(exc.status_code):
            raise _redirect(context, exc.status_code, _location(exc.headers)) from exc
        if exc.status_code == 401:
            close_client()  # a revoked or rotated token stays cached otherwise; the next event gets a new one
        raise _failure(context, exc, exc.status_code, exc.body) from exc
    except httpx.HTTPStatusError as exc:  # only the SDK's token provider raises this (raise_for_status)
        status = exc.response.status_code
        context = f"{action}: token endpoint {exc.request.url} answered"
        if _is_redirect(status):
            location = _location(exc.response.headers)
            raise _redirect(context, status, location and str(exc.request.url.join(location))) from exc
        hint = CREDENTIALS_HINT if status in (401, 403) else ""
        raise _failure(context, exc, status, _body(exc.response), hint) from exc
    except httpx.TransportError as exc:  # timeouts, refused connections, TLS failures: worth retrying
        raise RetryableError(f"{action}: {type(exc).__name__}: {exc}") from exc


def _is_redirect(status: int | None) -> bool:
    return status is not None and 300 <= status < 400


def _location(headers: Mapping[str, str] | None) -> str | None:
    return next((value for key, value in (headers or {}).items() if key.lower() == "location"), None)


def _redirect(context: str, status: int | None, location: str | None) -> PermanentError:
    target = location or "(no Location header)"
    return PermanentError(f"{context} HTTP {status} redirect to {target}: {REDIRECT_HINT}")


def _failure(
    context: str, exc: Exception, status: int | None, body: object, hint: str = ""
) -> RetryableError | PermanentError:
    """Classify by the one retry policy, keeping Auth0's own words and its rate-limit reset time."""
    reason = f"{context} HTTP {status}: {_auth0_message(body)}{hint}"
    if classify(exc) == "transient":
        return RetryableError(reason, retry_after=retry_after(exc))
    return PermanentError(reason)


def _auth0_message(body: object) -> str:
    # Management API errors carry errorCode/message, Authentication API errors error/error_description.
    if not isinstance(body, Mapping):
        return str(body)[:300] or "(empty body)"
    code = body.get("errorCode") or body.get("error") or ""
    message = body.get("message") or body.get("error_description") or ""
    return f"{code}: {message}" if code and message else f"{code}{message}" or json.dumps(body)[:300]


def _body(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return response.text


def _register(settings: Settings) -> None:
    # Each action subscribes only when configured, so an event type nobody asked to act on costs nothing.
    if settings.block_breached_users:
        handles("pwd_leak")(block_breached_user)
    if settings.signup_roles:
        handles("ss")(assign_signup_roles)


_register(get_settings())
