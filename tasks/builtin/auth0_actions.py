"""Built-in Management API actions: block users with breached passwords, give new users their roles."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple
from urllib.parse import quote, quote_plus

import httpx
from auth0.management import ManagementClient
from auth0.management.core import ApiError, ParsingError, RequestOptions

from kernel.events import Auth0Event
from kernel.metrics import event_type_label
from kernel.settings import Settings, get_settings
from tasks import metrics
from tasks.handlers import PermanentError, RetryableError, handles
from tasks.retry_policy import classify, retry_after

logger = logging.getLogger(__name__)

#: Auth0's breached-password codes: a login (pwd_leak), a signup (signup_pwd_leak) or a password reset
#: (reset_pwd_leak) used a password found in a breach. block_breached_user listens to all three.
BREACHED_PASSWORD_CODES = ("pwd_leak", "signup_pwd_leak", "reset_pwd_leak")
# Confirmed from Auth0's documents: the three codes' schemas (auth0-log-schemas) require none of user_id,
# user_name, connection, and user_id "may be ... empty string" on failure logs; a captured pwd_leak has
# user_id "" and the address in user_name. GET /api/v2/users-by-email needs read:users, matches exactly
# and case-sensitively, is immediately consistent and answers an array of users; a database user's
# address is kept in lower case (auth0-python's docstring of the endpoint). Not confirmed against a real
# tenant: whether user_name keeps the case typed, whether signup_pwd_leak and reset_pwd_leak carry
# user_name and connection as pwd_leak does (no captured record of either was found), what a login by
# username puts in user_name, and the exact text of the 400 for a malformed address.

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

# Something@something without spaces: Auth0 judges the rest (a 400). A '*' is far likelier the log
# stream's masking than part of a real address, and looking that up would find no one, silently.
_EMAIL_SHAPE = re.compile(r"[^@\s*]+@[^@\s*]+")
# In exception texts (dead-letter reasons, logged as they are) in place of the address looked up.
EMAIL_PLACEHOLDER = "<e-mail address>"

_lock = threading.Lock()
_cached: tuple[int, ManagementClient, httpx.Client] | None = None


class _Match(NamedTuple):
    """A user users-by-email answered with: its id and its identities' connections."""

    user_id: str
    connections: frozenset[str]  # of all the user's identities: linked accounts count


def block_breached_user(event: Auth0Event) -> None:
    """Block the user(s) behind a breached-password event (BREACHED_PASSWORD_CODES): PATCH blocked=true.

    The event's user_id when it has one. Auth0 leaves it empty on these failure logs (the user was not
    signed in), so otherwise every user with the address in user_name, on the event's connection when it
    names one, is found through users-by-email. No such user (a refused signup) is nothing to block:
    logged and counted, and the action is done.
    """
    user_ids = [event.user_id] if event.user_id.strip() else find_users_by_email(event)
    label = event_type_label(event.type)
    if not user_ids:
        where = f" on connection {event.connection}" if event.connection else ""
        logger.info(
            "log_id=%s type=%s: nothing to block: no user has the event's e-mail address%s",
            event.log_id,
            event.type,
            where,
        )
        metrics.BREACHED_PASSWORD_EVENTS.labels(label, "nothing_to_block").inc()
        return
    # Each PATCH is idempotent: a retry after a failure part-way blocks the earlier users again, harmlessly.
    for user_id in user_ids:
        with _auth0_errors(f"blocking user {user_id}"):
            management_client().users.update(user_id, blocked=True, request_options=NO_SDK_RETRIES)
    logger.info("log_id=%s type=%s: blocked %s", event.log_id, event.type, ", ".join(user_ids))
    metrics.BREACHED_PASSWORD_EVENTS.labels(label, "blocked").inc()


def find_users_by_email(event: Auth0Event) -> list[str]:
    """The ids of the users with the event's address (user_name), on its connection when it names one.

    Auth0 matches the address exactly and case-sensitively, and keeps a database user's in lower case
    (unconfirmed whether user_name keeps what the person typed): the lower-case form is looked up
    first, then the address as written when it differs. Raises PermanentError when user_name is no
    address, without its value.
    """
    email = _email_of(event)
    found: dict[str, None] = {}  # ordered, no repeats: a user can match both forms
    for address in dict.fromkeys((email.lower(), email)):
        for match in _users_by_email(address):
            if not event.connection or event.connection in match.connections:
                found[match.user_id] = None
    return list(found)


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


def _email_of(event: Auth0Event) -> str:
    email = event.user_name.strip()
    if not _EMAIL_SHAPE.fullmatch(email):
        raise PermanentError(
            f"{event.type} event log_id={event.log_id} names no user: user_id is empty and user_name is not"
            " an e-mail address (empty, a username, or masked or hashed by the log stream's PII"
            " obfuscation, which blocking needs off for user_name)"
        )
    return email


def _users_by_email(address: str) -> list[_Match]:
    """GET /api/v2/users-by-email (scope read:users), the address kept out of any error's text."""
    with _auth0_errors("looking up users by the event's e-mail address", personal=address):
        return _list_users_by_email(address)


def _list_users_by_email(address: str) -> list[_Match]:
    client = management_client()
    try:
        users = client.users.list_users_by_email(email=address, request_options=NO_SDK_RETRIES)
    except ParsingError as exc:
        # One user the SDK's models reject fails the whole answer; Auth0's own JSON still names them all.
        if 200 <= (exc.status_code or 0) < 300 and isinstance(exc.body, list):
            return [match for user in exc.body if (match := _match_of(user)) is not None]
        raise PermanentError(
            f"looking up users by the event's e-mail address: Management API answered HTTP"
            f" {exc.status_code} with a body that is not a list of users"
        ) from None  # the body holds the users' personal data
    return [
        _Match(user.user_id, frozenset(i.connection for i in user.identities or () if i.connection))
        for user in users
        if user.user_id
    ]


def _match_of(user: object) -> _Match | None:
    if not isinstance(user, Mapping) or not isinstance(user.get("user_id"), str) or not user["user_id"]:
        return None
    identities = user.get("identities")
    connections = (i.get("connection") for i in _list(identities) if isinstance(i, Mapping))
    return _Match(user["user_id"], frozenset(c for c in connections if isinstance(c, str) and c))


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


@contextmanager
def _auth0_errors(action: str, personal: str = "") -> Iterator[None]:
    """Re-raise Auth0 failures as RetryableError or PermanentError with a reason an operator can act on.

    ``personal`` (an e-mail address the call sent) is replaced in the reason: Auth0 quotes a malformed
    one in its 400, and a redirect's Location repeats the query string.
    """
    try:
        with _classified(action):
            yield
    except (RetryableError, PermanentError) as exc:
        if not personal:
            raise
        # Not chained: the SDK's exception prints the answer, address included, in a logged traceback.
        raise _without(exc, personal) from None


def _without(exc: RetryableError | PermanentError, personal: str) -> RetryableError | PermanentError:
    text = str(exc)
    for form in {personal, quote(personal, safe=""), quote_plus(personal, safe="")}:
        text = text.replace(form, EMAIL_PLACEHOLDER)
    if isinstance(exc, RetryableError):
        return RetryableError(text, retry_after=exc.retry_after)
    return PermanentError(text)


@contextmanager
def _classified(action: str) -> Iterator[None]:
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
        handles(*BREACHED_PASSWORD_CODES)(block_breached_user)
    if settings.signup_roles:
        handles("ss")(assign_signup_roles)


_register(get_settings())
